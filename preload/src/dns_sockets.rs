//! UDP sockets this process connected to port 53 (c-ares, a program's own resolver). Their
//! later address-less sends carry DNS questions the report should name. A small lock-free
//! table of descriptor numbers; an entry may go stale when the program closes and reuses the
//! number, so a hit is confirmed with getpeername before use.

use std::net::IpAddr;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use libc::c_int;

const SLOTS: usize = 64;
const EMPTY: i32 = -1;

#[allow(clippy::declare_interior_mutable_const)]
const FREE: AtomicI32 = AtomicI32::new(EMPTY);
static FDS: [AtomicI32; SLOTS] = [FREE; SLOTS];
static USED: AtomicUsize = AtomicUsize::new(0);

/// Remembers `fd` as connected to a DNS server.
pub fn remember(fd: c_int) {
    if FDS.iter().any(|s| s.load(Ordering::Relaxed) == fd) {
        return;
    }
    for slot in &FDS {
        if slot
            .compare_exchange(EMPTY, fd, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            USED.fetch_add(1, Ordering::Release);
            return;
        }
    }
    // Full: later questions on this socket go unnamed (reporting only; decisions unchanged).
}

/// True when any socket was remembered: the one check on the hot path of `send`.
pub fn any() -> bool {
    USED.load(Ordering::Acquire) != 0
}

/// The DNS server `fd` is connected to, if it is one of ours and still connected to port 53.
pub fn peer(fd: c_int) -> Option<(IpAddr, u16)> {
    if USED.load(Ordering::Acquire) == 0 || !FDS.iter().any(|s| s.load(Ordering::Acquire) == fd) {
        return None;
    }
    // SAFETY: an all-zero sockaddr_storage is valid; getpeername writes at most `len` bytes.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: ss and len are valid for writes; getpeername is not hooked.
    if unsafe {
        libc::getpeername(
            fd,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    } != 0
    {
        return None;
    }
    // SAFETY: the kernel wrote `len` bytes of address into ss.
    match unsafe { crate::sock::read((&ss as *const libc::sockaddr_storage).cast(), len) } {
        crate::sock::Dest::Inet { ip, port: 53 } => Some((ip, 53)),
        _ => None,
    }
}
