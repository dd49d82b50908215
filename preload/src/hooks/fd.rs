//! Descriptor bookkeeping: `socket` records what it made, and the calls that close or replace
//! a descriptor forget it (see fd_kinds). Only `socket` decides anything, and only for packet
//! sockets (one compare for every other call); each forwards the caller's arguments and
//! leaves errno as the real call set it. `close_range` closes around the guard's own policy
//! descriptor (`state::held_policy_fds`), so that children keep their policy.

use std::net::{IpAddr, Ipv4Addr};

use libc::{c_int, c_uint};

use super::{action_for, check};
use crate::channel::{self, Attempt, Kind};
use crate::fd_kinds;
use crate::real;
use crate::sock::Proto;
use crate::state::{self, deny_as, Loaded};
use crate::verdict::{refused_call, set_errno, Action, DenyReason, Verdict};

/// What a shim returns when libc lacks the real function (never on glibc 2.34 or later).
fn missing() -> c_int {
    set_errno(libc::ENOSYS);
    -1
}

/// A packet socket (`AF_PACKET`, or the obsolete `AF_INET`/`SOCK_PACKET` the kernel maps to
/// it): it sends hand-built link-layer frames to anywhere on the link.
pub(crate) fn is_packet(domain: c_int, ty: c_int) -> bool {
    const SOCK_PACKET: c_int = 10;
    domain == libc::AF_PACKET || (domain == libc::AF_INET && ty & 0xf == SOCK_PACKET)
}

/// A packet socket is refused in block mode whatever the rules say (no rule grammar names
/// frames); audit mode lets it be made. Recorded as a raw `send` to 0.0.0.0, port 0, by
/// `call`: the frames it would send name their own destinations.
pub(crate) fn decide_packet_socket(loaded: &Loaded, call: &'static str) -> Action {
    let verdict = match loaded.policy {
        Ok(_) => Verdict::Deny(DenyReason::PacketSocket),
        Err(_) => Verdict::Deny(DenyReason::NoPolicy),
    };
    channel::record(
        loaded,
        &Attempt {
            kind: Kind::Send,
            call,
            proto: Some(Proto::Raw),
            dest: Some((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
            host: None,
            verdict,
        },
    );
    action_for(loaded, verdict)
}

/// # Safety
/// Called by C with socket(2)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    if is_packet(domain, ty) && check(|l| decide_packet_socket(l, "socket")) == Action::Refuse {
        return refused_call(deny_as());
    }
    // SAFETY: SocketFn is socket's C signature; the caller's arguments are forwarded.
    let fd = match unsafe { real::func::<real::SocketFn>(&real::SOCKET) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(domain, ty, protocol) },
        None => return missing(),
    };
    if fd >= 0 {
        fd_kinds::created(fd, domain, ty, protocol);
    }
    fd
}

/// # Safety
/// Called by C with close(2)'s argument.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    // Forget first: once the real close returns, the number may be handed out again.
    fd_kinds::forget(fd);
    // SAFETY: CloseFn is close's C signature; the caller's argument is forwarded.
    match unsafe { real::func::<real::CloseFn>(&real::CLOSE) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(fd) },
        None => missing(),
    }
}

/// # Safety
/// Called by C with dup(2)'s argument.
#[no_mangle]
pub unsafe extern "C" fn dup(old: c_int) -> c_int {
    // SAFETY: CloseFn has dup's C signature too (int -> int); the argument is forwarded.
    let new = match unsafe { real::func::<real::CloseFn>(&real::DUP) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(old) },
        None => return missing(),
    };
    if new >= 0 {
        fd_kinds::copy(old, new);
    }
    new
}

/// # Safety
/// Called by C with dup2(2)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    if old != new {
        fd_kinds::forget(new);
    }
    // SAFETY: Dup2Fn is dup2's C signature; the caller's arguments are forwarded.
    let rc = match unsafe { real::func::<real::Dup2Fn>(&real::DUP2) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(old, new) },
        None => return missing(),
    };
    if rc >= 0 {
        fd_kinds::copy(old, rc);
    }
    rc
}

/// # Safety
/// Called by C with dup3(2)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    if old != new {
        fd_kinds::forget(new);
    }
    // SAFETY: Dup3Fn is dup3's C signature; the caller's arguments are forwarded.
    let rc = match unsafe { real::func::<real::Dup3Fn>(&real::DUP3) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(old, new, flags) },
        None => return missing(),
    };
    if rc >= 0 {
        fd_kinds::copy(old, rc);
    }
    rc
}

/// # Safety
/// Called by C with close_range(2)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
        fd_kinds::forget_range(first, last);
    }
    // SAFETY: CloseRangeFn is close_range's C signature.
    let Some(real_close_range) = (unsafe { real::func::<real::CloseRangeFn>(&real::CLOSE_RANGE) })
    else {
        return missing();
    };
    // The guard's policy descriptors in the range stay open (state::held_policy_fds): the
    // program's children find their policy there. Only for the flags whose meaning survives
    // splitting the range (none, or CLOEXEC); anything else goes to the kernel as it is.
    let mut held = [0; state::MAX_HELD];
    let plain = flags & !(libc::CLOSE_RANGE_CLOEXEC as c_int) == 0;
    let n = if plain && first <= last {
        state::held_policy_fds(first, last, &mut held)
    } else {
        0
    };
    let mut from = first;
    for &fd in &held[..n] {
        let fd = fd as c_uint;
        // SAFETY: the real close_range with the caller's flags on a part of its range.
        if fd > from && unsafe { real_close_range(from, fd - 1, flags) } != 0 {
            return -1;
        }
        // fd came from a c_int, so fd + 1 cannot overflow.
        from = fd + 1;
    }
    if n > 0 && from > last {
        return 0;
    }
    // SAFETY: as above, on the rest of the range (all of it when nothing is held).
    unsafe { real_close_range(from, last, flags) }
}
