//! Destinations in the supervisor's own copy of a program's socket address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use egress_policy::canonical_ip;

/// The largest address the kernel accepts (`sizeof(struct sockaddr_storage)`).
pub const MAX_ADDR: usize = 128;

/// Where the kernel will send a datagram or connect a socket of `domain` given `addr`, or
/// None when the address names no IP destination (`AF_UNSPEC` dissolving an association, too
/// short, another family): the kernel then rejects the call or uses the socket's connected
/// peer, which was decided when it connected. `send`: a datagram send, where the kernel takes
/// family 0 on an IPv4 socket as IPv4 (a connect takes it as `AF_UNSPEC`).
pub fn destination(domain: i32, addr: &[u8], send: bool) -> Option<(IpAddr, u16)> {
    let family = i32::from(u16::from_ne_bytes([*addr.first()?, *addr.get(1)?]));
    let port = u16::from_be_bytes([*addr.get(2)?, *addr.get(3)?]);
    let v4 = |addr: &[u8]| -> Option<IpAddr> {
        let b: [u8; 4] = addr.get(4..8)?.try_into().ok()?;
        (addr.len() >= 16).then_some(IpAddr::V4(Ipv4Addr::from(b)))
    };
    let ip = match family {
        libc::AF_INET => v4(addr)?,
        libc::AF_INET6 if addr.len() >= 24 => {
            let b: [u8; 16] = addr.get(8..24)?.try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(b))
        }
        libc::AF_UNSPEC if send && domain == libc::AF_INET => v4(addr)?,
        _ => return None,
    };
    Some((canonical_ip(ip), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(family: u16, ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut a = vec![0u8; 16];
        a[..2].copy_from_slice(&family.to_ne_bytes());
        a[2..4].copy_from_slice(&port.to_be_bytes());
        a[4..8].copy_from_slice(&ip);
        a
    }

    #[test]
    fn ipv4_ipv6_and_mapped() {
        let a = v4(libc::AF_INET as u16, [203, 0, 113, 10], 80);
        assert_eq!(
            destination(libc::AF_INET, &a, false),
            Some(("203.0.113.10".parse().unwrap(), 80))
        );
        assert_eq!(destination(libc::AF_INET, &a[..15], false), None);
        let mut b = vec![0u8; 28];
        b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        b[2..4].copy_from_slice(&53u16.to_be_bytes());
        b[8..24].copy_from_slice(&"::ffff:198.51.100.20".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(
            destination(libc::AF_INET6, &b, true),
            Some(("198.51.100.20".parse().unwrap(), 53))
        );
        assert_eq!(destination(libc::AF_INET6, &b[..23], true), None);
    }

    #[test]
    fn family_zero_is_ipv4_only_for_sends_on_ipv4_sockets() {
        let a = v4(0, [198, 51, 100, 20], 9);
        assert_eq!(
            destination(libc::AF_INET, &a, true),
            Some(("198.51.100.20".parse().unwrap(), 9))
        );
        assert_eq!(destination(libc::AF_INET, &a, false), None);
        assert_eq!(destination(libc::AF_INET6, &a, true), None);
        assert_eq!(destination(libc::AF_INET, &[], true), None);
        assert_eq!(destination(libc::AF_INET, &[2], true), None);
    }

    mod props {
        use super::super::destination;
        use proptest::prelude::*;
        use std::net::{IpAddr, Ipv4Addr};

        proptest! {
            #[test]
            fn any_bytes_are_read_without_panic(
                domain in prop_oneof![Just(libc::AF_INET), Just(libc::AF_INET6), any::<i32>()],
                bytes in prop::collection::vec(any::<u8>(), 0..140),
                send in any::<bool>(),
            ) {
                let _ = destination(domain, &bytes, send);
            }

            #[test]
            fn an_ipv4_address_reads_back(ip in any::<u32>(), port in any::<u16>(), tail in 0usize..112) {
                let mut a = vec![0u8; 16 + tail];
                a[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
                a[2..4].copy_from_slice(&port.to_be_bytes());
                a[4..8].copy_from_slice(&ip.to_be_bytes());
                let want = Some((IpAddr::V4(Ipv4Addr::from(ip)), port));
                prop_assert_eq!(destination(libc::AF_INET, &a, false), want);
                prop_assert_eq!(destination(libc::AF_INET6, &a, true), want);
            }
        }
    }
}
