//! The attempts made inside scopes and during the current test, kept in this process for
//! read-back (`egress_run_v1_scope_attempts`, `egress_run_v1_test_attempts`).
//!
//! A fixed table in static memory behind a try-lock: a hook that cannot take the lock within
//! a bounded number of tries (another thread holds it, or a signal handler interrupted this
//! thread while it held it) drops the entry and counts it as lost, so the decision path never
//! blocks or allocates. Identical attempts (same thread, scope, test and outcome) fold into
//! one entry with a count. Only kept while a test is set or the thread is in a scope.

use std::cell::UnsafeCell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub const CAPACITY: usize = 1024;
const MAX_HOST: usize = 128;
const TRIES: usize = 1000;

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub thread: usize,
    pub scope: u64,
    pub test: u64,
    /// 0 connect, 1 send, 2 resolve.
    pub kind: u8,
    pub proto: Option<&'static str>,
    pub dest: Option<(IpAddr, u16)>,
    pub host_len: usize,
    pub host: [u8; MAX_HOST],
    /// What happened.
    pub denied: bool,
    /// What the innermost scope's rules say (for a scope that only records).
    pub scope_denied: bool,
    /// The allowing rule, numbered as reports number rules.
    pub rule: Option<usize>,
    pub count: u64,
}

impl Entry {
    pub const EMPTY: Entry = Entry {
        seq: 0,
        thread: 0,
        scope: 0,
        test: 0,
        kind: 0,
        proto: None,
        dest: None,
        host_len: 0,
        host: [0; MAX_HOST],
        denied: false,
        scope_denied: false,
        rule: None,
        count: 0,
    };

    pub fn host(&self) -> Option<&[u8]> {
        (self.host_len > 0).then(|| &self.host[..self.host_len])
    }

    fn same_attempt(&self, o: &Entry) -> bool {
        Entry {
            seq: 0,
            count: 0,
            ..*self
        } == Entry {
            seq: 0,
            count: 0,
            ..*o
        }
    }
}

struct Table {
    len: usize,
    next_seq: u64,
    lost: u64,
    entries: [Entry; CAPACITY],
}

struct Locked(UnsafeCell<Table>);

// SAFETY: the table is only touched by the thread that holds LOCK (see `with_table`).
unsafe impl Sync for Locked {}

static LOCK: AtomicBool = AtomicBool::new(false);
static TABLE: Locked = Locked(UnsafeCell::new(Table {
    len: 0,
    next_seq: 1,
    lost: 0,
    entries: [Entry::EMPTY; CAPACITY],
}));

/// The current test's number (0: no test), changed by `set_test`.
static TEST: AtomicU64 = AtomicU64::new(0);

pub fn test() -> u64 {
    TEST.load(Ordering::Relaxed)
}

/// Runs `f` with the table, if the lock is had within `TRIES`.
fn with_table<T>(f: impl FnOnce(&mut Table) -> T) -> Option<T> {
    for i in 0..TRIES {
        if LOCK
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            // SAFETY: LOCK is ours until released below.
            let value = f(unsafe { &mut *TABLE.0.get() });
            LOCK.store(false, Ordering::Release);
            return Some(value);
        }
        if i % 64 == 63 {
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        } else {
            std::hint::spin_loop();
        }
    }
    None
}

/// A new test starts (`id` none: no test now). The table starts empty.
pub fn set_test(on: bool) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = if on {
        NEXT.fetch_add(1, Ordering::Relaxed)
    } else {
        0
    };
    TEST.store(n, Ordering::Relaxed);
    // Readers take the lock too: this waits as long as it must.
    while with_table(|t| {
        t.len = 0;
        t.lost = 0;
    })
    .is_none()
    {}
    n
}

/// The next sequence number (what a scope entered now starts after).
pub fn now() -> u64 {
    loop {
        if let Some(s) = with_table(|t| t.next_seq) {
            return s;
        }
    }
}

/// Adds one attempt (or counts it into its identical entry).
pub fn add(mut e: Entry) {
    let done = with_table(|t| {
        let len = t.len.min(CAPACITY);
        if let Some(old) = t.entries[..len]
            .iter_mut()
            .rev()
            .find(|o| o.same_attempt(&e))
        {
            old.count += 1;
            return;
        }
        if len == CAPACITY {
            t.lost += 1;
            return;
        }
        e.seq = t.next_seq;
        e.count = 1;
        t.next_seq += 1;
        t.entries[len] = e;
        t.len = len + 1;
    });
    if done.is_none() {
        // Contended for too long: counted nowhere but here.
        let _ = with_table(|t| t.lost += 1);
    }
}

/// Copies the entries `keep` selects into `out` (ordinary code; allocates).
pub fn select(keep: impl Fn(&Entry) -> bool) -> (Vec<Entry>, u64) {
    loop {
        if let Some(v) = with_table(|t| {
            let len = t.len.min(CAPACITY);
            let picked: Vec<Entry> = t.entries[..len]
                .iter()
                .filter(|e| keep(e))
                .copied()
                .collect();
            (picked, t.lost)
        }) {
            return v;
        }
    }
}

/// Makes an entry's host field.
pub fn host_field(host: Option<&[u8]>) -> (usize, [u8; MAX_HOST]) {
    let mut buf = [0u8; MAX_HOST];
    let h = host.unwrap_or(&[]);
    let n = h.len().min(MAX_HOST);
    buf[..n].copy_from_slice(&h[..n]);
    (n, buf)
}
