//! Each thread's memory of its last allowed datagram send: a program that sends many datagrams
//! to one destination on one socket (a metrics client, a game loop, a UDP benchmark) pays for
//! the decision once; each repeat compares its arguments and adds 1 to the same shared counter
//! the full path would have found (docs/design.md, *Fast paths*).
//!
//! A hit needs everything the decision and the report line depend on to be the same: the
//! descriptor and the socket kind the descriptor table records for it (the only way a send
//! reaches this cache is through a datagram entry there), the flags, the destination's bytes
//! and length, and the process's epoch, which moves when anything else that could change the
//! answer or the line changes: a learned address (a lookup), a fork (the child's attempts are
//! its own lines). Only an allowed send of a single-level run with no DNS port is remembered,
//! and only after its event was sent and its counter slot published.
//!
//! A signal handler may send while the thread is updating its entry: a per-thread sequence
//! number (odd while writing) makes such a read a miss, never a mix of two entries.

use std::cell::Cell;
use std::sync::atomic::{compiler_fence, AtomicU64, Ordering};

use libc::c_int;

use crate::sock::Proto;

/// The process's epoch; 0 is never current.
static EPOCH: AtomicU64 = AtomicU64::new(1);

/// Something a remembered decision depends on changed: every thread's entry is stale.
pub fn invalidate() {
    EPOCH.fetch_add(1, Ordering::AcqRel);
}

const ADDR_WORDS: usize = 4; // 32 bytes: a sockaddr_in6 (28) fits

#[derive(Clone, Copy)]
struct Entry {
    epoch: u64,
    fd: c_int,
    flags: c_int,
    len: u32,
    kind: Option<(c_int, Proto)>,
    addr: [u64; ADDR_WORDS],
    counter: usize,
}

const EMPTY: Entry = Entry {
    epoch: 0,
    fd: -1,
    flags: 0,
    len: 0,
    kind: None,
    addr: [0; ADDR_WORDS],
    counter: 0,
};

thread_local! {
    static SEQ: Cell<u64> = const { Cell::new(0) };
    static LAST: Cell<Entry> = const { Cell::new(EMPTY) };
    /// The counter slot the last recorded allowed send of this thread counts into, set by the
    /// decision path for `remember` (0 when that send may not be remembered).
    static PENDING: Cell<usize> = const { Cell::new(0) };
}

/// The destination's bytes, zero-padded; None when it is not a size we remember.
///
/// # Safety
/// `addr` must be readable for `len` bytes (the caller checked it is plausible).
unsafe fn words(addr: *const libc::sockaddr, len: libc::socklen_t) -> Option<[u64; ADDR_WORDS]> {
    let len = len as usize;
    if addr.is_null() || len == 0 || len > ADDR_WORDS * 8 {
        return None;
    }
    let mut out = [0u64; ADDR_WORDS];
    // SAFETY: `len` readable bytes at addr (the caller's promise) into out's 32 bytes.
    unsafe { std::ptr::copy_nonoverlapping(addr.cast::<u8>(), out.as_mut_ptr().cast::<u8>(), len) };
    Some(out)
}

/// The shared counter of this thread's last allowed send if this one repeats it exactly.
///
/// # Safety
/// `addr` must be null or readable for `len` bytes.
pub unsafe fn hit(
    fd: c_int,
    flags: c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> Option<&'static AtomicU64> {
    // A thread inside a scope decides with its scope's rules and logs each attempt there.
    if crate::scope::stack::in_scope() {
        return None;
    }
    let seq = SEQ.try_with(Cell::get).ok()?;
    if seq & 1 == 1 {
        return None;
    }
    compiler_fence(Ordering::SeqCst);
    let e = LAST.try_with(Cell::get).ok()?;
    compiler_fence(Ordering::SeqCst);
    if SEQ.try_with(Cell::get).ok()? != seq
        || e.epoch != EPOCH.load(Ordering::Acquire)
        || e.fd != fd
        || e.flags != flags
        || e.len != len
        || e.counter == 0
    {
        return None;
    }
    // SAFETY: the caller's promise.
    if unsafe { words(addr, len) }? != e.addr || crate::fd_kinds::kind(fd) != e.kind {
        return None;
    }
    // SAFETY: `counter` was a slot of the shared counters mapping, which is never unmapped.
    Some(unsafe { &*(e.counter as *const AtomicU64) })
}

/// Called by the decision path: the send being decided was allowed and counts into `counter`
/// (a published slot); `remember` may keep it.
pub fn note(counter: &'static AtomicU64) {
    let _ = PENDING.try_with(|p| p.set(counter as *const AtomicU64 as usize));
}

/// Forgets a pending note (at the start of every decision).
pub fn clear_note() {
    let _ = PENDING.try_with(|p| p.set(0));
}

/// After a send was decided: remembers it if the decision path noted its counter.
///
/// # Safety
/// `addr` must be null or readable for `len` bytes.
pub unsafe fn remember(
    fd: c_int,
    flags: c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    epoch: u64,
) {
    let Ok(counter) = PENDING.try_with(|p| p.replace(0)) else {
        return;
    };
    // SAFETY: the caller's promise.
    let Some(words) = (unsafe { words(addr, len) }) else {
        return;
    };
    // A scope may widen (within the grantable set): what it allowed must be decided again
    // once the thread has left it.
    if counter == 0 || crate::scope::stack::in_scope() {
        return;
    }
    let entry = Entry {
        epoch,
        fd,
        flags,
        len,
        kind: crate::fd_kinds::kind(fd),
        addr: words,
        counter,
    };
    let Ok(seq) = SEQ.try_with(Cell::get) else {
        return;
    };
    if seq & 1 == 1 {
        return; // interrupted another update (a signal handler): leave it
    }
    let _ = SEQ.try_with(|s| s.set(seq + 1));
    compiler_fence(Ordering::SeqCst);
    let _ = LAST.try_with(|l| l.set(entry));
    compiler_fence(Ordering::SeqCst);
    let _ = SEQ.try_with(|s| s.set(seq + 2));
}

/// The epoch now: read before deciding, so that a change during the decision is not missed.
pub fn epoch() -> u64 {
    EPOCH.load(Ordering::Acquire)
}
