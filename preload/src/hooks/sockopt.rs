//! `setsockopt`: the options that make packets go somewhere no connect or sendto named. A
//! source route (`IP_OPTIONS` with a loose/strict source route, `IPV6_RTHDR`) is refused in
//! block mode whatever the rules say, and recorded as a `connect` of the socket to the route's
//! first hop, port 0. Every other option is forwarded after a compare or two.

use std::net::IpAddr;

use libc::{c_int, c_void, socklen_t};

use super::send::bytes;
use super::{action_for, check};
use crate::events::{self, Attempt, Kind};
use crate::real;
use crate::route;
use crate::sock;
use crate::state::{deny_as, Loaded};
use crate::verdict::{refused_call, Action, DenyReason, Verdict};

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
    events::record(
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
    match route::option_route(level, name, value) {
        Some(hop) => decide_route(loaded, fd, hop, Kind::Connect, call),
        None => Action::Proceed,
    }
}

/// Whether the guard reads this option at all (the rest pass after these compares).
#[inline]
pub(crate) fn watched(level: c_int, name: c_int) -> bool {
    route::is_route_option(level, name)
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
        // SAFETY: the caller's option value of `len` bytes (or null).
        let value_bytes = unsafe { bytes(value, len as usize) };
        if check(|l| decide_sockopt(l, fd, level, name, value_bytes, "setsockopt"))
            == Action::Refuse
        {
            return refused_call(deny_as());
        }
    }
    // SAFETY: SetsockoptFn is setsockopt's C signature; the caller's arguments are forwarded.
    match unsafe { real::func::<real::SetsockoptFn>(&real::SETSOCKOPT) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(fd, level, name, value, len) },
        None => refused_call(deny_as()),
    }
}
