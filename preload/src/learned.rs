//! Addresses this process learned from name lookups: which name they came from (for the
//! report's `host`) and, when a name rule allowed the lookup, that rule (so the process may
//! connect to those addresses on the rule's ports).
//!
//! A fixed table in static memory, append-only and lock-free: a writer claims a slot with one
//! atomic add, fills it, then publishes it; readers only look at published slots. Forked
//! children inherit it; `exec` starts empty.

use std::cell::UnsafeCell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use egress_policy::canonical_ip;

const CAPACITY: usize = 1024;
const MAX_HOST: usize = 255;

#[derive(Clone, Copy)]
struct Data {
    /// The level of a nested run whose policy `rule_plus_one` indexes.
    level: usize,
    ip: IpAddr,
    /// The allowing rule's index plus one; 0 for none. Zero-based encodings would put the
    /// 300 KiB table in .data instead of .bss (a file-backed mapping every process pays for).
    rule_plus_one: usize,
    host_len: usize,
    host: [u8; MAX_HOST],
}

struct Entry {
    ready: AtomicBool,
    data: UnsafeCell<Data>,
}

struct Table {
    claimed: AtomicUsize,
    entries: [Entry; CAPACITY],
}

// SAFETY: each entry's data is written only by the thread that claimed its index (unique, from
// fetch_add) before `ready` is set with Release; readers read it only after observing `ready`
// with Acquire, and it is never written again.
unsafe impl Sync for Table {}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Entry = Entry {
    ready: AtomicBool::new(false),
    data: UnsafeCell::new(Data {
        level: 0,
        ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        rule_plus_one: 0,
        host_len: 0,
        host: [0; MAX_HOST],
    }),
};

static TABLE: Table = Table {
    claimed: AtomicUsize::new(0),
    entries: [EMPTY; CAPACITY],
};

/// What a published entry says.
#[derive(Clone, Copy)]
pub struct Found {
    /// The allowing rule, if a name rule allowed the lookup.
    pub rule: Option<usize>,
    index: usize,
}

impl Found {
    pub fn host(&self) -> &'static [u8] {
        let e = &TABLE.entries[self.index];
        // SAFETY: `Found` is only made for entries observed ready (see Table's Sync).
        let d = unsafe { &*e.data.get() };
        &d.host[..d.host_len]
    }
}

fn published() -> impl Iterator<Item = (usize, &'static Data)> {
    let n = TABLE.claimed.load(Ordering::Acquire).min(CAPACITY);
    (0..n).filter_map(|i| {
        let e = &TABLE.entries[i];
        if e.ready.load(Ordering::Acquire) {
            // SAFETY: observed ready with Acquire; never written again.
            Some((i, unsafe { &*e.data.get() }))
        } else {
            None
        }
    })
}

/// Remembers that `host` resolved to `ip`, allowed by `rule` of `level`'s policy (or by none).
pub fn remember(level: usize, ip: IpAddr, host: &[u8], rule: Option<usize>) {
    let ip = canonical_ip(ip);
    let host = &host[..host.len().min(MAX_HOST)];
    let rule_plus_one = rule.map_or(0, |r| r + 1);
    let known = published().any(|(_, d)| {
        d.level == level
            && d.ip == ip
            && d.rule_plus_one == rule_plus_one
            && d.host[..d.host_len].eq_ignore_ascii_case(host)
    });
    if known {
        return;
    }
    let i = TABLE.claimed.fetch_add(1, Ordering::AcqRel);
    if i >= CAPACITY {
        // Full: later connects to addresses only a name rule would allow are denied (closed).
        TABLE.claimed.store(CAPACITY, Ordering::Release);
        return;
    }
    let e = &TABLE.entries[i];
    // SAFETY: index i was claimed by this thread alone and is not yet ready.
    let d = unsafe { &mut *e.data.get() };
    d.level = level;
    d.ip = ip;
    d.rule_plus_one = rule_plus_one;
    d.host_len = host.len();
    d.host[..host.len()].copy_from_slice(host);
    e.ready.store(true, Ordering::Release);
    // A send remembered before may now be decided or named differently.
    crate::channel::repeat::invalidate();
}

/// The entry of `level` for `ip` that a rule accepting `port_ok` allows, else any entry naming
/// `ip`.
pub fn lookup(
    level: usize,
    ip: IpAddr,
    mut rule_allows: impl FnMut(usize) -> bool,
) -> Option<Found> {
    let ip = canonical_ip(ip);
    let mut named = None;
    for (i, d) in published() {
        if d.level != level || d.ip != ip {
            continue;
        }
        if d.rule_plus_one != 0 && rule_allows(d.rule_plus_one - 1) {
            return Some(Found {
                rule: Some(d.rule_plus_one - 1),
                index: i,
            });
        }
        named.get_or_insert(Found {
            rule: None,
            index: i,
        });
    }
    named
}
