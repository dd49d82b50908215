//! The BSD remote-command interfaces: `rcmd`, `rexec` (and their `_af` forms) resolve their
//! host and connect with glibc's internal calls, and `ruserok`/`iruserok` resolve names from
//! `.rhosts` and `/etc/hosts.equiv` the same way, past every other hook.
//!
//! `rcmd`/`rexec` are decided as a lookup of their host: only a name rule allows them (as for
//! `res_query`), recorded as a `resolve` line. The `ruserok` family is refused in block mode
//! (the answer "not trusted") and recorded: the names it would look up are read from files
//! the guard does not parse. glibc's `rcmd` calls `rcmd_af` internally (not through this
//! hook), so each entry point decides for itself.

use std::ffi::CStr;

use libc::{c_char, c_int, c_ushort};

use super::res::decide_query;
use super::{action_for, check_with};
use crate::channel;
use crate::real::{self, Real};
use crate::state::deny_as;
use crate::verdict::{refused_call, Action, DenyReason, Verdict};

/// The decision for `call` to the host `*ahost`.
///
/// # Safety
/// `ahost` must be null or point to null or a NUL-terminated string.
unsafe fn remote_host(ahost: *mut *mut c_char, call: &'static str) -> Action {
    // SAFETY: as the caller promises.
    let host = unsafe {
        if ahost.is_null() || (*ahost).is_null() {
            return Action::Proceed; // libc fails it itself
        }
        CStr::from_ptr(*ahost).to_bytes()
    };
    check_with(Action::Proceed, Action::Refuse, |loaded| {
        decide_query(loaded, Some(host), call)
    })
}

/// The decision for a `ruserok`-family check of `host` (a name, or an address as text).
fn trust_check(host: &[u8], call: &'static str) -> Action {
    check_with(Action::Proceed, Action::Refuse, |loaded| {
        let verdict = Verdict::Deny(DenyReason::NoRule);
        channel::record_lookup(loaded, call, host, verdict);
        action_for(loaded, verdict)
    })
}

/// Casts the real function, or None.
///
/// # Safety
/// `F` must be the C signature of `real`'s symbol.
unsafe fn real_fn<F: Copy>(real: &Real) -> Option<F> {
    // SAFETY: as the caller promises.
    unsafe { real::func::<F>(real) }
}

type RcmdFn = unsafe extern "C" fn(
    *mut *mut c_char,
    c_ushort,
    *const c_char,
    *const c_char,
    *const c_char,
    *mut c_int,
) -> c_int;
type RcmdAfFn = unsafe extern "C" fn(
    *mut *mut c_char,
    c_ushort,
    *const c_char,
    *const c_char,
    *const c_char,
    *mut c_int,
    libc::sa_family_t,
) -> c_int;
type RexecFn = unsafe extern "C" fn(
    *mut *mut c_char,
    c_int,
    *const c_char,
    *const c_char,
    *const c_char,
    *mut c_int,
) -> c_int;
type RexecAfFn = unsafe extern "C" fn(
    *mut *mut c_char,
    c_int,
    *const c_char,
    *const c_char,
    *const c_char,
    *mut c_int,
    libc::sa_family_t,
) -> c_int;
type RuserokFn = unsafe extern "C" fn(*const c_char, c_int, *const c_char, *const c_char) -> c_int;
type RuserokAfFn = unsafe extern "C" fn(
    *const c_char,
    c_int,
    *const c_char,
    *const c_char,
    libc::sa_family_t,
) -> c_int;
type IruserokFn = unsafe extern "C" fn(u32, c_int, *const c_char, *const c_char) -> c_int;
type IruserokAfFn = unsafe extern "C" fn(
    *const libc::c_void,
    c_int,
    *const c_char,
    *const c_char,
    libc::sa_family_t,
) -> c_int;

/// # Safety
/// Called by C with rcmd(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn rcmd(
    ahost: *mut *mut c_char,
    port: c_ushort,
    locuser: *const c_char,
    remuser: *const c_char,
    cmd: *const c_char,
    fd2p: *mut c_int,
) -> c_int {
    // SAFETY: the caller's ahost; then rcmd's C signature with the caller's arguments.
    unsafe {
        match (remote_host(ahost, "rcmd"), real_fn::<RcmdFn>(&real::RCMD)) {
            (Action::Proceed, Some(f)) => f(ahost, port, locuser, remuser, cmd, fd2p),
            _ => refused_call(deny_as()),
        }
    }
}

/// # Safety
/// Called by C with rcmd_af(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn rcmd_af(
    ahost: *mut *mut c_char,
    port: c_ushort,
    locuser: *const c_char,
    remuser: *const c_char,
    cmd: *const c_char,
    fd2p: *mut c_int,
    af: libc::sa_family_t,
) -> c_int {
    // SAFETY: as for `rcmd`.
    unsafe {
        match (
            remote_host(ahost, "rcmd_af"),
            real_fn::<RcmdAfFn>(&real::RCMD_AF),
        ) {
            (Action::Proceed, Some(f)) => f(ahost, port, locuser, remuser, cmd, fd2p, af),
            _ => refused_call(deny_as()),
        }
    }
}

/// # Safety
/// Called by C with rexec(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn rexec(
    ahost: *mut *mut c_char,
    port: c_int,
    user: *const c_char,
    passwd: *const c_char,
    cmd: *const c_char,
    fd2p: *mut c_int,
) -> c_int {
    // SAFETY: as for `rcmd`.
    unsafe {
        match (
            remote_host(ahost, "rexec"),
            real_fn::<RexecFn>(&real::REXEC),
        ) {
            (Action::Proceed, Some(f)) => f(ahost, port, user, passwd, cmd, fd2p),
            _ => refused_call(deny_as()),
        }
    }
}

/// # Safety
/// Called by C with rexec_af(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn rexec_af(
    ahost: *mut *mut c_char,
    port: c_int,
    user: *const c_char,
    passwd: *const c_char,
    cmd: *const c_char,
    fd2p: *mut c_int,
    af: libc::sa_family_t,
) -> c_int {
    // SAFETY: as for `rcmd`.
    unsafe {
        match (
            remote_host(ahost, "rexec_af"),
            real_fn::<RexecAfFn>(&real::REXEC_AF),
        ) {
            (Action::Proceed, Some(f)) => f(ahost, port, user, passwd, cmd, fd2p, af),
            _ => refused_call(deny_as()),
        }
    }
}

/// The bytes of a NUL-terminated string, or a placeholder.
///
/// # Safety
/// `s` must be null or NUL-terminated.
unsafe fn text<'a>(s: *const c_char) -> &'a [u8] {
    if s.is_null() {
        return b"(null)";
    }
    // SAFETY: as the caller promises.
    unsafe { CStr::from_ptr(s) }.to_bytes()
}

/// # Safety
/// Called by C with ruserok(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn ruserok(
    rhost: *const c_char,
    superuser: c_int,
    ruser: *const c_char,
    luser: *const c_char,
) -> c_int {
    // SAFETY: the caller's rhost; then ruserok's C signature with the caller's arguments.
    unsafe {
        match (
            trust_check(text(rhost), "ruserok"),
            real_fn::<RuserokFn>(&real::RUSEROK),
        ) {
            (Action::Proceed, Some(f)) => f(rhost, superuser, ruser, luser),
            _ => -1,
        }
    }
}

/// # Safety
/// Called by C with ruserok_af(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn ruserok_af(
    rhost: *const c_char,
    superuser: c_int,
    ruser: *const c_char,
    luser: *const c_char,
    af: libc::sa_family_t,
) -> c_int {
    // SAFETY: as for `ruserok`.
    unsafe {
        let check = trust_check(text(rhost), "ruserok_af");
        match (check, real_fn::<RuserokAfFn>(&real::RUSEROK_AF)) {
            (Action::Proceed, Some(f)) => f(rhost, superuser, ruser, luser, af),
            _ => -1,
        }
    }
}

/// # Safety
/// Called by C with iruserok(3)'s arguments (`raddr`: an IPv4 address, network order).
#[no_mangle]
pub unsafe extern "C" fn iruserok(
    raddr: u32,
    superuser: c_int,
    ruser: *const c_char,
    luser: *const c_char,
) -> c_int {
    let mut buf = [0u8; 16];
    let mut w = crate::fmt::Buf::new(&mut buf);
    // The address's bytes as they are in memory: network order.
    w.ip(std::net::IpAddr::from(raddr.to_ne_bytes()));
    let check = trust_check(w.as_bytes(), "iruserok");
    // SAFETY: iruserok's C signature with the caller's arguments.
    unsafe {
        match (check, real_fn::<IruserokFn>(&real::IRUSEROK)) {
            (Action::Proceed, Some(f)) => f(raddr, superuser, ruser, luser),
            _ => -1,
        }
    }
}

/// # Safety
/// Called by C with iruserok_af(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn iruserok_af(
    raddr: *const libc::c_void,
    superuser: c_int,
    ruser: *const c_char,
    luser: *const c_char,
    af: libc::sa_family_t,
) -> c_int {
    let len = if c_int::from(af) == libc::AF_INET6 {
        16
    } else {
        4
    };
    // SAFETY: the caller's address of the family's length (null is checked by ip_from_raw's
    // callers: here, by the test below).
    let ip = (!raddr.is_null())
        .then(|| unsafe { crate::sock::ip_from_raw(c_int::from(af), len, raddr.cast()) })
        .flatten();
    let mut buf = [0u8; 48];
    let mut w = crate::fmt::Buf::new(&mut buf);
    match ip {
        Some(ip) => w.ip(ip),
        None => w.str("(address)"),
    }
    let check = trust_check(w.as_bytes(), "iruserok_af");
    // SAFETY: iruserok_af's C signature with the caller's arguments.
    unsafe {
        match (check, real_fn::<IruserokAfFn>(&real::IRUSEROK_AF)) {
            (Action::Proceed, Some(f)) => f(raddr, superuser, ruser, luser, af),
            _ => -1,
        }
    }
}
