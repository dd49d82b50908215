//! What each descriptor is, as far as this process made it a socket with `socket()`: lets
//! `connect` and `sendto` skip a getsockopt system call (about 1 µs here, the guard's largest
//! per-call cost) in the common case.
//!
//! The `socket` hook sets an entry; `close`, `dup`, `dup2`, `dup3` and `close_range` (hooks/fd.rs)
//! clear or copy it. A number can still be reused without passing through those hooks (a
//! close inside libc, a descriptor received over a Unix socket, `fcntl(F_DUPFD)`), so an entry
//! is trusted only where a stale one can let nothing through unchecked: a datagram entry makes
//! `sendto` check the destination (which it would check for any datagram socket), and a
//! stream entry, on which a send's address would be ignored, is confirmed with getsockopt by
//! the send path. At worst a stale entry mislabels the protocol of a report line.
//!
//! Plain atomics in static memory: no lock, no allocation, safe in signal handlers and after
//! fork (a forked child inherits both the descriptors and the table; exec starts empty).

use std::sync::atomic::{AtomicU8, Ordering};

use libc::c_int;

use crate::sock::Proto;

/// Descriptors at or above this number are always looked up with getsockopt.
const TRACKED: usize = 4096;

const UNKNOWN: u8 = 0;
const TCP: u8 = 1;
const UDP: u8 = 2;

#[allow(clippy::declare_interior_mutable_const)]
const UNSET: AtomicU8 = AtomicU8::new(UNKNOWN);
static KINDS: [AtomicU8; TRACKED] = [UNSET; TRACKED];

fn entry(fd: c_int) -> Option<&'static AtomicU8> {
    usize::try_from(fd).ok().and_then(|i| KINDS.get(i))
}

/// Records the socket `socket(domain, ty, protocol)` returned as `fd`.
pub fn created(fd: c_int, domain: c_int, ty: c_int, protocol: c_int) {
    let Some(e) = entry(fd) else { return };
    let inet = domain == libc::AF_INET || domain == libc::AF_INET6;
    let kind = match (ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC), protocol) {
        (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) if inet => TCP,
        (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) if inet => UDP,
        _ => UNKNOWN,
    };
    e.store(kind, Ordering::Relaxed);
}

/// `fd` is being closed or replaced: its entry no longer says anything.
pub fn forget(fd: c_int) {
    if let Some(e) = entry(fd) {
        e.store(UNKNOWN, Ordering::Relaxed);
    }
}

/// Forgets every descriptor in `first..=last` (`close_range`).
pub fn forget_range(first: u32, last: u32) {
    let end = (last as usize).min(TRACKED - 1);
    for e in KINDS.iter().take(end + 1).skip(first as usize) {
        e.store(UNKNOWN, Ordering::Relaxed);
    }
}

/// `to` is now a duplicate of `from`.
pub fn copy(from: c_int, to: c_int) {
    let kind = entry(from).map_or(UNKNOWN, |e| e.load(Ordering::Relaxed));
    if let Some(e) = entry(to) {
        e.store(kind, Ordering::Relaxed);
    }
}

/// The socket type and protocol recorded for `fd`, if any.
pub fn kind(fd: c_int) -> Option<(c_int, Proto)> {
    match entry(fd)?.load(Ordering::Relaxed) {
        TCP => Some((libc::SOCK_STREAM, Proto::Tcp)),
        UDP => Some((libc::SOCK_DGRAM, Proto::Udp)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_close_dup_keep_the_table_right() {
        created(7, libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        assert_eq!(kind(7), Some((libc::SOCK_DGRAM, Proto::Udp)));
        copy(7, 9);
        assert_eq!(kind(9), Some((libc::SOCK_DGRAM, Proto::Udp)));
        forget(7);
        assert_eq!(kind(7), None);
        created(7, libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_TCP);
        assert_eq!(kind(7), Some((libc::SOCK_STREAM, Proto::Tcp)));
        forget_range(0, u32::MAX);
        assert_eq!(kind(7), None);
        assert_eq!(kind(9), None);
        // Unix sockets, raw sockets, odd protocols and big numbers are never trusted.
        created(7, libc::AF_UNIX, libc::SOCK_DGRAM, 0);
        created(8, libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP);
        created(100_000, libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert_eq!(kind(7), None);
        assert_eq!(kind(8), None);
        assert_eq!(kind(100_000), None);
        assert_eq!(kind(-1), None);
    }
}
