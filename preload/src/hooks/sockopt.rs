//! `setsockopt`: the options that make packets go somewhere no connect or sendto named. A
//! source route (`IP_OPTIONS` with a loose/strict source route, `IPV6_RTHDR`) is refused in
//! block mode whatever the rules say, and recorded as a `connect` of the socket to the route's
//! first hop, port 0; a multicast join of a group beyond the link is decided like a
//! destination (`decide_join`). Every other option is forwarded after a few compares.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libc::{c_int, c_void, socklen_t};

use super::send::bytes;
use super::{action_for, check};
use crate::channel::{self, Attempt, Kind};
use crate::decide;
use crate::real;
use crate::route;
use crate::sock;
use crate::state::{deny_as, Loaded};
use crate::verdict::{fault, refused_call, Action, DenyReason, Verdict};

/// Decides a source route through `hop` on `fd` (set as an option, or given to one send):
/// denied, recorded as `kind` by `call`. Not a socket: the kernel answers.
pub(crate) fn decide_route(
    loaded: &Loaded,
    fd: c_int,
    hop: IpAddr,
    kind: Kind,
    call: &'static str,
) -> Action {
    let Some((_, proto)) = sock::socket_kind(fd) else {
        return Action::Proceed;
    };
    let verdict = match loaded.policy {
        Ok(_) => Verdict::Deny(DenyReason::SourceRoute),
        Err(_) => Verdict::Deny(DenyReason::NoPolicy),
    };
    channel::record(
        loaded,
        &Attempt {
            kind,
            call,
            proto: Some(proto),
            dest: Some((hop, 0)),
            host: None,
            verdict,
        },
    );
    action_for(loaded, verdict)
}

/// The decision about `setsockopt(fd, level, name, value)` (`call`: the function called).
pub(crate) fn decide_sockopt(
    loaded: &Loaded,
    fd: c_int,
    level: c_int,
    name: c_int,
    value: &[u8],
    call: &'static str,
) -> Action {
    if let Some(group) = joined_group(level, name, value) {
        return decide_join(loaded, fd, group, call);
    }
    match route::option_route(level, name, value) {
        Some(hop) => decide_route(loaded, fd, hop, Kind::Connect, call),
        None => Action::Proceed,
    }
}

/// A multicast join sends membership reports (IGMP, MLD) naming the group: decided like a
/// destination (a rule for the group's address allows it), recorded as a `connect` of the
/// socket to the group, port 0. Link-local groups (224.0.0.0/24, ff02::/16, and the
/// interface-local ff01::/16) stay on the link: unrecorded.
fn decide_join(loaded: &Loaded, fd: c_int, group: IpAddr, call: &'static str) -> Action {
    let local = match group {
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v6) => matches!(v6.segments()[0], 0xff01 | 0xff02),
    };
    let Some((_, proto)) = sock::socket_kind(fd).filter(|_| !local) else {
        return Action::Proceed;
    };
    let dest = sock::Dest::Inet { ip: group, port: 0 };
    let (verdict, _) = decide::destination(loaded, dest);
    channel::record(
        loaded,
        &Attempt {
            kind: Kind::Connect,
            call,
            proto: Some(proto),
            dest: Some((group, 0)),
            host: None,
            verdict,
        },
    );
    action_for(loaded, verdict)
}

const IP_ADD_SOURCE_MEMBERSHIP: c_int = 39;
const MCAST_JOIN_SOURCE_GROUP: c_int = 46;

/// The group a join option names (`IP_ADD_MEMBERSHIP`, `IP_ADD_SOURCE_MEMBERSHIP`,
/// `IPV6_JOIN_GROUP`, `MCAST_JOIN_GROUP`, `MCAST_JOIN_SOURCE_GROUP`), if `value` holds one.
pub(crate) fn joined_group(level: c_int, name: c_int, value: &[u8]) -> Option<IpAddr> {
    match (level, name) {
        (libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP | IP_ADD_SOURCE_MEMBERSHIP) => {
            let b = value.get(..4)?;
            Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
        }
        (libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP) => {
            let b: [u8; 16] = value.get(..16)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        (
            libc::IPPROTO_IP | libc::IPPROTO_IPV6,
            libc::MCAST_JOIN_GROUP | MCAST_JOIN_SOURCE_GROUP,
        ) => {
            // struct group_req / group_source_req: a u32 interface, then (aligned) the group's
            // sockaddr_storage.
            let at = std::mem::align_of::<libc::sockaddr_storage>().max(4);
            let sa = value.get(at..)?;
            let family = c_int::from(u16::from_ne_bytes([*sa.first()?, *sa.get(1)?]));
            match family {
                libc::AF_INET => {
                    let b = sa.get(4..8)?;
                    Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
                }
                libc::AF_INET6 => {
                    let b: [u8; 16] = sa.get(8..24)?.try_into().ok()?;
                    Some(IpAddr::V6(Ipv6Addr::from(b)))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether the guard reads this option at all (the rest pass after these compares).
#[inline]
pub(crate) fn watched(level: c_int, name: c_int) -> bool {
    route::is_route_option(level, name)
        || match level {
            libc::IPPROTO_IP => matches!(
                name,
                libc::IP_ADD_MEMBERSHIP
                    | IP_ADD_SOURCE_MEMBERSHIP
                    | libc::MCAST_JOIN_GROUP
                    | MCAST_JOIN_SOURCE_GROUP
            ),
            libc::IPPROTO_IPV6 => matches!(
                name,
                libc::IPV6_ADD_MEMBERSHIP | libc::MCAST_JOIN_GROUP | MCAST_JOIN_SOURCE_GROUP
            ),
            _ => false,
        }
}

/// # Safety
/// Called by C with setsockopt(2)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    if watched(level, name) {
        if !value.is_null() && len > 0 && !crate::mem::readable(value, len as usize) {
            return fault(); // the kernel's answer; an unchecked option must not pass
        }
        // SAFETY: the caller's option value of `len` bytes (or null).
        let value_bytes = unsafe { bytes(value, len as usize) };
        if check(|l| decide_sockopt(l, fd, level, name, value_bytes, "setsockopt"))
            == Action::Refuse
        {
            return refused_call(deny_as());
        }
    }
    let args = [
        fd as libc::c_long,
        level as libc::c_long,
        name as libc::c_long,
        value as libc::c_long,
        len as libc::c_long,
        0,
    ];
    // SAFETY: setsockopt's arguments, decided, through the kernel layer's stub (`--seccomp`).
    if let Some(r) = unsafe { crate::kernel::decided(libc::SYS_setsockopt, args) } {
        return r as c_int;
    }
    // SAFETY: SetsockoptFn is setsockopt's C signature; the caller's arguments are forwarded.
    match unsafe { real::func::<real::SetsockoptFn>(&real::SETSOCKOPT) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(fd, level, name, value, len) },
        None => refused_call(deny_as()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_options_name_their_group() {
        let g4 = [239, 1, 2, 3, 0, 0, 0, 0];
        assert_eq!(
            joined_group(libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &g4),
            Some("239.1.2.3".parse().unwrap())
        );
        assert_eq!(
            joined_group(libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &g4[..3]),
            None
        );
        // group_req: interface, padding, then a sockaddr_in6.
        let mut req = [0u8; 8 + 28];
        req[8..10].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        req[16] = 0xff;
        req[17] = 0x0e;
        req[31] = 1;
        assert_eq!(
            joined_group(libc::IPPROTO_IPV6, libc::MCAST_JOIN_GROUP, &req),
            Some("ff0e::1".parse().unwrap())
        );
        assert!(watched(libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP));
        assert!(!watched(libc::SOL_SOCKET, libc::IP_ADD_MEMBERSHIP));
        assert!(!watched(libc::IPPROTO_IP, libc::IP_TTL));
    }
}
