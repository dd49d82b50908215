//! Reverse lookups: `gethostbyaddr`, `gethostbyaddr_r`, `getnameinfo`. Each sends a PTR query
//! for `<address>.in-addr.arpa` / `.ip6.arpa`: a lookup of that name, allowed only by a name
//! rule that matches it (`*.in-addr.arpa`). Addresses listed in /etc/hosts resolve locally.
//! Block mode answers a refused one as if no PTR record existed (or with the numeric form,
//! where the caller accepts it), without a query leaving.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libc::{c_char, c_int, c_void, hostent, size_t, sockaddr, socklen_t};

use super::resolve::refuse_r;
use super::{action_for, check_with};
use crate::channel;
use crate::fmt::Buf;
use crate::names;
use crate::real;
use crate::sock::{self, Dest};
use crate::state::{deny_as, Loaded};
use crate::verdict::{self, Action, DenyReason, Verdict};

/// The address whose PTR name glibc's DNS backend asks for, given `gethostbyaddr`'s family and
/// the first bytes of its buffer (`len` long; `bytes` holds its first 16, or all of a shorter
/// one), and whether the lookup can be answered from /etc/hosts (only an exact length can).
/// glibc reads the first 4 (IPv4) or 16 (IPv6) bytes of any longer buffer; with exactly 16
/// bytes it answers `::` itself and reads an IPv4-mapped or -compatible address (other than
/// `::1`) as IPv4. None: glibc refuses or answers without a query.
fn ptr_addr(family: c_int, len: usize, bytes: &[u8]) -> Option<(IpAddr, bool)> {
    let first16: Option<[u8; 16]> = bytes.get(..16).and_then(|b| b.try_into().ok());
    if len == 16 && first16 == Some([0; 16]) {
        return None;
    }
    match family {
        libc::AF_INET if len >= 4 => {
            let b: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
            Some((IpAddr::V4(Ipv4Addr::from(b)), len == 4))
        }
        libc::AF_INET6 if len >= 16 => {
            let b = first16?;
            let v4 = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
            let compatible = b[..12] == [0; 12] && v4 != Ipv4Addr::new(0, 0, 0, 1);
            let mapped = b[..10] == [0; 10] && b[10..12] == [0xff, 0xff];
            if len == 16 && (mapped || compatible) {
                Some((IpAddr::V4(v4), true))
            } else {
                Some((IpAddr::V6(Ipv6Addr::from(b)), len == 16))
            }
        }
        _ => None,
    }
}

/// `ptr_addr` of a C buffer.
///
/// # Safety
/// `p` must be null or point to `len` readable bytes.
unsafe fn ptr_addr_raw(family: c_int, len: socklen_t, p: *const c_void) -> Option<(IpAddr, bool)> {
    if p.is_null() {
        return None;
    }
    let len = len as usize;
    let mut b = [0u8; 16];
    let n = len.min(16);
    // SAFETY: n <= len readable bytes, per the caller, into a local of 16 bytes.
    unsafe { std::ptr::copy_nonoverlapping(p.cast::<u8>(), b.as_mut_ptr(), n) };
    ptr_addr(family, len, &b[..n])
}

/// Writes the PTR name of `ip` into `out`; returns its length.
fn arpa_name(ip: IpAddr, out: &mut [u8; 80]) -> usize {
    let mut w = Buf::new(out);
    match ip {
        IpAddr::V4(v4) => {
            for octet in v4.octets().iter().rev() {
                w.uint(u64::from(*octet));
                w.str(".");
            }
            w.str("in-addr.arpa");
        }
        IpAddr::V6(v6) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for byte in v6.octets().iter().rev() {
                w.bytes(&[
                    HEX[usize::from(byte & 0xf)],
                    b'.',
                    HEX[usize::from(byte >> 4)],
                    b'.',
                ]);
            }
            w.str("ip6.arpa");
        }
    }
    w.as_bytes().len()
}

fn decide_reverse(loaded: &Loaded, (ip, hosts): (IpAddr, bool), call: &'static str) -> Action {
    let mut name = [0u8; 80];
    let n = arpa_name(ip, &mut name);
    let name = &name[..n];
    let verdict = match loaded.policy {
        Err(_) => Verdict::Deny(DenyReason::NoPolicy),
        Ok(_) if hosts && names::addr_in_etc_hosts(ip) => return Action::Proceed,
        Ok(view) => match view.match_name(name) {
            Some(rule) => Verdict::Allow { rule },
            None => Verdict::Deny(DenyReason::NoRule),
        },
    };
    channel::record_lookup(loaded, call, name, verdict);
    action_for(loaded, verdict)
}

fn check_reverse(ip: Option<(IpAddr, bool)>, call: &'static str) -> Action {
    match ip {
        Some(ip) => check_with(Action::Proceed, Action::Refuse, |l| {
            decide_reverse(l, ip, call)
        }),
        None => Action::Proceed, // libc answers malformed requests itself
    }
}

type GethostbyaddrFn = unsafe extern "C" fn(*const c_void, socklen_t, c_int) -> *mut hostent;
type GethostbyaddrRFn = unsafe extern "C" fn(
    *const c_void,
    socklen_t,
    c_int,
    *mut hostent,
    *mut c_char,
    size_t,
    *mut *mut hostent,
    *mut c_int,
) -> c_int;
type GetnameinfoFn = unsafe extern "C" fn(
    *const sockaddr,
    socklen_t,
    *mut c_char,
    socklen_t,
    *mut c_char,
    socklen_t,
    c_int,
) -> c_int;

/// # Safety
/// Called by C with gethostbyaddr(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn gethostbyaddr(
    addr: *const c_void,
    len: socklen_t,
    ty: c_int,
) -> *mut hostent {
    // SAFETY: the caller's address of `len` bytes.
    let ip = unsafe { ptr_addr_raw(ty, len, addr) };
    if check_reverse(ip, "gethostbyaddr") == Action::Refuse {
        verdict::set_h_errno(verdict::refused_reverse_h_errno(deny_as()));
        return std::ptr::null_mut();
    }
    // SAFETY: gethostbyaddr's C signature; the caller's arguments.
    match unsafe { real::func::<GethostbyaddrFn>(&real::GETHOSTBYADDR) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(addr, len, ty) },
        None => std::ptr::null_mut(),
    }
}

/// # Safety
/// Called by C with gethostbyaddr_r(3)'s arguments.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn gethostbyaddr_r(
    addr: *const c_void,
    len: socklen_t,
    ty: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    // SAFETY: the caller's address of `len` bytes.
    let ip = unsafe { ptr_addr_raw(ty, len, addr) };
    if check_reverse(ip, "gethostbyaddr_r") == Action::Refuse {
        let how = deny_as();
        let (h_errno, ret) = (
            verdict::refused_reverse_h_errno(how),
            verdict::refused_reverse_r_errno(how),
        );
        // SAFETY: the caller's out-pointers.
        return unsafe { refuse_r(result, h_errnop, h_errno, ret) };
    }
    // SAFETY: gethostbyaddr_r's C signature; the caller's arguments.
    match unsafe { real::func::<GethostbyaddrRFn>(&real::GETHOSTBYADDR_R) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(addr, len, ty, ret, buf, buflen, result, h_errnop) },
        None => libc::ENOENT,
    }
}

/// # Safety
/// Called by C with getnameinfo(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn getnameinfo(
    sa: *const sockaddr,
    salen: socklen_t,
    host: *mut c_char,
    hostlen: socklen_t,
    serv: *mut c_char,
    servlen: socklen_t,
    flags: c_int,
) -> c_int {
    let wants_name = !host.is_null() && hostlen > 0 && flags & libc::NI_NUMERICHOST == 0;
    // SAFETY: the caller's address of `salen` bytes.
    // glibc asks its gethostbyaddr for the 4 or 16 bytes of the address.
    let ip = match unsafe { sock::read(sa, salen) } {
        Dest::Inet {
            ip: IpAddr::V4(v4), ..
        } if wants_name => ptr_addr(libc::AF_INET, 4, &v4.octets()),
        Dest::Inet {
            ip: IpAddr::V6(v6), ..
        } if wants_name => ptr_addr(libc::AF_INET6, 16, &v6.octets()),
        _ => None,
    };
    let mut flags = flags;
    if check_reverse(ip, "getnameinfo") == Action::Refuse {
        let name_required = flags & libc::NI_NAMEREQD != 0;
        if let Some(status) = verdict::refused_getnameinfo(deny_as(), name_required) {
            return status;
        }
        flags |= libc::NI_NUMERICHOST; // the numeric form, with no query
    }
    // SAFETY: getnameinfo's C signature; the caller's arguments.
    match unsafe { real::func::<GetnameinfoFn>(&real::GETNAMEINFO) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(sa, salen, host, hostlen, serv, servlen, flags) },
        None => libc::EAI_FAIL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_reads_the_first_bytes_and_unmaps_only_sixteen() {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut buf = [0u8; 16];
        buf[..4].copy_from_slice(&[198, 51, 100, 20]);
        assert_eq!(
            ptr_addr(libc::AF_INET, 4, &buf[..4]),
            Some((v4("198.51.100.20"), true))
        );
        assert_eq!(
            ptr_addr(libc::AF_INET, 8, &buf[..8]),
            Some((v4("198.51.100.20"), false))
        );
        assert_eq!(ptr_addr(libc::AF_INET, 3, &buf[..3]), None);
        let mapped: Ipv6Addr = "::ffff:198.51.100.20".parse().unwrap();
        let m = mapped.octets();
        assert_eq!(
            ptr_addr(libc::AF_INET6, 16, &m),
            Some((v4("198.51.100.20"), true))
        );
        assert_eq!(
            ptr_addr(libc::AF_INET6, 20, &m),
            Some((IpAddr::V6(mapped), false))
        );
        let compat: Ipv6Addr = "::198.51.100.20".parse().unwrap();
        assert_eq!(
            ptr_addr(libc::AF_INET6, 16, &compat.octets()),
            Some((v4("198.51.100.20"), true))
        );
        let one = Ipv6Addr::LOCALHOST;
        assert_eq!(
            ptr_addr(libc::AF_INET6, 16, &one.octets()),
            Some((IpAddr::V6(one), true))
        );
        assert_eq!(ptr_addr(libc::AF_INET6, 16, &[0; 16]), None);
        assert_eq!(ptr_addr(libc::AF_INET6, 15, &[1; 15]), None);
    }

    #[test]
    fn ptr_names() {
        let mut out = [0u8; 80];
        let n = arpa_name("198.51.100.20".parse().unwrap(), &mut out);
        assert_eq!(&out[..n], b"20.100.51.198.in-addr.arpa");
        let n = arpa_name("2001:db8::10".parse().unwrap(), &mut out);
        assert_eq!(
            &out[..n],
            b"0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }
}
