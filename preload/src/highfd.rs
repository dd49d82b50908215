//! Keeping the guard's descriptors out of the program's way: a descriptor the library holds
//! between calls (an event socket) is moved up to `GUARD_FD_BASE` (or just below a lower soft
//! `RLIMIT_NOFILE`), so the program's own `open()`s get the numbers they get natively.

use egress_policy::{GUARD_FD_BASE, GUARD_FD_BELOW_LIMIT};
use libc::c_int;

use crate::real;
use crate::verdict::{errno, set_errno};

/// Moves `fd` (ours, close-on-exec) to a high number and closes the low one. Returns the new
/// number, or `fd` itself and false when the soft limit leaves no high number free: then the
/// caller must not keep it. errno is left as it was.
pub fn park(fd: c_int) -> (c_int, bool) {
    let saved = errno();
    let moved = dup_at(fd, GUARD_FD_BASE).or_else(|| {
        // SAFETY: an all-zero rlimit is valid to overwrite; getrlimit writes it.
        let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
        // SAFETY: lim is writable.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        let base = lim.rlim_cur.checked_sub(GUARD_FD_BELOW_LIMIT)?;
        if base < GUARD_FD_BELOW_LIMIT {
            return None;
        }
        dup_at(fd, c_int::try_from(base).ok()?)
    });
    let out = match moved {
        Some(high) if high > fd => {
            close(fd);
            (high, true)
        }
        Some(high) => {
            close(high);
            (fd, false)
        }
        None => (fd, false),
    };
    set_errno(saved);
    out
}

/// The lowest free number at or above `base`, as a close-on-exec copy of `fd`.
fn dup_at(fd: c_int, base: c_int) -> Option<c_int> {
    // SAFETY: F_DUPFD_CLOEXEC takes an int; fd is ours.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, base) };
    (r >= 0).then_some(r)
}

/// Closes one of our own descriptors with libc's close, not through this library's hook.
pub fn close(fd: c_int) {
    // SAFETY: CloseFn is close's C signature.
    match unsafe { real::func::<real::CloseFn>(&real::CLOSE) } {
        // SAFETY: fd is ours.
        Some(f) => unsafe { f(fd) },
        // SAFETY: fd is ours (our close hook only forgets what it knew of the number).
        None => unsafe { libc::close(fd) },
    };
}
