//! Source routes: IPv4 options (loose/strict source route) and IPv6 routing headers make
//! packets go to addresses no connect or sendto named. Parsed from the bytes a program hands
//! to `setsockopt` or puts in `sendmsg` control data; no system call, no allocation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libc::c_int;

const IPOPT_END: u8 = 0;
const IPOPT_NOOP: u8 = 1;
const IPOPT_LSRR: u8 = 131;
const IPOPT_SSRR: u8 = 137;
const IPV6_SRCRT_TYPE_4: u8 = 4;
/// RFC 2292 sticky options: a buffer of control messages (may hold a routing header).
pub const IPV6_2292PKTOPTIONS: c_int = 6;

/// The first hop of a loose or strict source route in IPv4 options (`0.0.0.0` when the option
/// is too short to name one: the kernel refuses those anyway).
pub fn ipv4_options(opts: &[u8]) -> Option<IpAddr> {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            IPOPT_END => return None,
            IPOPT_NOOP => i += 1,
            t => {
                let len = usize::from(*opts.get(i + 1)?);
                if t == IPOPT_LSRR || t == IPOPT_SSRR {
                    let hop = opts
                        .get(i + 3..i + 7)
                        .filter(|_| len >= 7)
                        .map_or(Ipv4Addr::UNSPECIFIED, |b| {
                            Ipv4Addr::new(b[0], b[1], b[2], b[3])
                        });
                    return Some(IpAddr::V4(hop));
                }
                if len < 2 {
                    return None; // malformed: the kernel refuses it
                }
                i += len;
            }
        }
    }
    None
}

/// The first hop of an IPv6 routing header (any header at least two bytes long: an empty one
/// removes a sticky header). `::` when it names none.
pub fn ipv6_rthdr(hdr: &[u8]) -> Option<IpAddr> {
    if hdr.len() < 2 {
        return None;
    }
    // Type 4 (segment routing) lists the segments last first: the next one is at index
    // segments-left. The others list the first hop first.
    let index = match (hdr.get(2), hdr.get(3)) {
        (Some(&IPV6_SRCRT_TYPE_4), Some(&left)) => usize::from(left),
        _ => 0,
    };
    let start = 8 + 16 * index;
    let hop = hdr
        .get(start..start + 16)
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map_or(Ipv6Addr::UNSPECIFIED, Ipv6Addr::from);
    Some(IpAddr::V6(hop))
}

/// Whether `setsockopt(level, name)` may set a source route (the only options the guard reads).
pub fn is_route_option(level: c_int, name: c_int) -> bool {
    match level {
        libc::IPPROTO_IP => name == libc::IP_OPTIONS || name == libc::IP_RETOPTS,
        libc::IPPROTO_IPV6 => {
            name == libc::IPV6_RTHDR || name == libc::IPV6_2292RTHDR || name == IPV6_2292PKTOPTIONS
        }
        _ => false,
    }
}

/// The first hop of the route that `setsockopt(level, name, value)` would set, if any.
pub fn option_route(level: c_int, name: c_int, value: &[u8]) -> Option<IpAddr> {
    match (level, name) {
        (libc::IPPROTO_IP, _) => ipv4_options(value),
        (libc::IPPROTO_IPV6, IPV6_2292PKTOPTIONS) => control_route(value),
        (libc::IPPROTO_IPV6, _) => ipv6_rthdr(value),
        _ => None,
    }
}

/// The first hop of a source route among control messages (`sendmsg`'s `msg_control`).
pub fn control_route(control: &[u8]) -> Option<IpAddr> {
    let head = std::mem::size_of::<libc::cmsghdr>();
    let align = std::mem::size_of::<libc::size_t>();
    let mut off = 0;
    while let Some(h) = control.get(off..off + head) {
        let mut len_bytes = [0u8; std::mem::size_of::<libc::size_t>()];
        len_bytes.copy_from_slice(&h[..align]);
        let len = libc::size_t::from_ne_bytes(len_bytes);
        let field = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&h[at..at + 4]);
            c_int::from_ne_bytes(b)
        };
        let (level, ty) = (field(align), field(align + 4));
        if len < head || len > control.len() - off {
            return None; // the kernel refuses a malformed message
        }
        let data = &control[off + head..off + len];
        let route = match (level, ty) {
            (libc::IPPROTO_IP, libc::IP_RETOPTS | libc::IP_OPTIONS) => ipv4_options(data),
            (libc::IPPROTO_IPV6, libc::IPV6_RTHDR | libc::IPV6_2292RTHDR) => ipv6_rthdr(data),
            _ => None,
        };
        if route.is_some() {
            return route;
        }
        off += len.div_ceil(align) * align;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_source_routes() {
        let hop = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            ipv4_options(&[1, 131, 7, 4, 198, 51, 100, 20]),
            hop("198.51.100.20")
        );
        assert_eq!(ipv4_options(&[137, 7, 4, 10, 0, 0, 1, 0]), hop("10.0.0.1"));
        assert_eq!(ipv4_options(&[131, 3, 4, 0]), hop("0.0.0.0"));
        assert_eq!(ipv4_options(&[1, 1, 1, 0]), None);
        assert_eq!(ipv4_options(&[0, 131, 7, 4, 1, 2, 3, 4]), None);
        assert_eq!(ipv4_options(&[]), None);
        // A timestamp option, then a route.
        assert_eq!(
            ipv4_options(&[68, 4, 5, 0, 131, 7, 4, 1, 2, 3, 4, 0]),
            hop("1.2.3.4")
        );
        assert_eq!(ipv4_options(&[68, 0, 131, 7]), None);
    }

    #[test]
    fn ipv6_routing_headers() {
        let mut h = [0u8; 40];
        h[1] = 4;
        h[2] = 4;
        h[3] = 1;
        h[8 + 15] = 1;
        h[24 + 15] = 2;
        assert_eq!(ipv6_rthdr(&h), Some("::2".parse().unwrap()));
        h[2] = 0;
        assert_eq!(ipv6_rthdr(&h), Some("::1".parse().unwrap()));
        assert_eq!(ipv6_rthdr(&h[..4]), Some("::".parse().unwrap()));
        assert_eq!(ipv6_rthdr(&[]), None);
    }

    #[test]
    fn control_messages() {
        fn cmsg(level: c_int, ty: c_int, data: &[u8]) -> Vec<u8> {
            let head = std::mem::size_of::<libc::cmsghdr>();
            let mut v = (head + data.len()).to_ne_bytes().to_vec();
            v.extend(level.to_ne_bytes());
            v.extend(ty.to_ne_bytes());
            v.extend(data);
            while !v.len().is_multiple_of(8) {
                v.push(0);
            }
            v
        }
        let mut buf = cmsg(libc::SOL_SOCKET, libc::SCM_RIGHTS, &[3, 0, 0, 0]);
        assert_eq!(control_route(&buf), None);
        buf.extend(cmsg(
            libc::IPPROTO_IP,
            libc::IP_RETOPTS,
            &[131, 7, 4, 198, 51, 100, 9, 0],
        ));
        assert_eq!(control_route(&buf), Some("198.51.100.9".parse().unwrap()));
        assert_eq!(control_route(&buf[..buf.len() - 1]), None);
        assert!(is_route_option(libc::IPPROTO_IPV6, libc::IPV6_RTHDR));
        assert!(!is_route_option(libc::SOL_SOCKET, libc::IP_OPTIONS));
    }
}
