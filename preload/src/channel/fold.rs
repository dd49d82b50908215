//! Folding repeated identical attempts without a system call.
//!
//! The first attempt with a given key in a process is sent to the launcher as an event that
//! names a slot of the launcher's shared counters; later identical attempts only add 1 to that
//! slot. The counters are shared memory, so a crash or `SIGKILL` loses nothing, and the launcher
//! adds each slot to its report line at the end.
//!
//! The key table is fixed, static and lock-free: an entry is claimed by a CAS of its key hash
//! and published by storing its slot, which happens only after the event naming the slot was
//! sent. Until then other threads see slot 0 and send their own events (counted 1 each).
//! A forked child starts with an empty table (its attempts are its own lines).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::state::CounterMap;

const ENTRIES: usize = 4096;
const MAX_PROBE: usize = 32;

struct Entry {
    hash: AtomicU64,
    slot: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Entry = Entry {
    hash: AtomicU64::new(0),
    slot: AtomicU64::new(0),
};

static TABLE: [Entry; ENTRIES] = [EMPTY; ENTRIES];

/// What to do with an attempt.
pub enum Fold {
    /// Counted in shared memory, in this slot: nothing to send.
    Counted(u64),
    /// First of its kind: send the event naming this slot, then `publish`.
    New { entry: usize, slot: u64 },
    /// Cannot be folded (table or counters full, or being published): send a plain event.
    Unfolded,
}

/// An attempt's key hash, never 0 (0 marks a free entry). Mixes eight bytes at a time: this
/// runs on every attempt, and a byte-at-a-time hash was the largest item of the per-send
/// profile.
pub struct KeyHash(u64);

impl KeyHash {
    pub fn new() -> Self {
        KeyHash(0xcbf2_9ce4_8422_2325)
    }

    pub fn word(&mut self, w: u64) {
        let h = (self.0 ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 29);
    }

    /// Adds one piece of the key; its length is mixed in too, so pieces cannot run together.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
        let tail = chunks
            .remainder()
            .iter()
            .enumerate()
            .fold(0u64, |w, (i, &b)| w | u64::from(b) << (8 * i));
        self.word(tail);
        self.word(b.len() as u64);
        self
    }

    fn value(&self) -> u64 {
        self.0 | 1
    }
}

pub fn fold(counters: CounterMap, key: &KeyHash) -> Fold {
    let h = key.value();
    let start = (h as usize) % ENTRIES;
    for probe in 0..MAX_PROBE {
        let index = (start + probe) % ENTRIES;
        let e = &TABLE[index];
        let mut cur = e.hash.load(Ordering::Acquire);
        if cur == 0 {
            match e
                .hash
                .compare_exchange(0, h, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return match counters.allocate() {
                        Some(slot) => Fold::New { entry: index, slot },
                        None => Fold::Unfolded, // counters exhausted: this key stays unfolded
                    };
                }
                Err(now) => cur = now,
            }
        }
        if cur == h {
            let slot = e.slot.load(Ordering::Acquire);
            if slot == 0 {
                return Fold::Unfolded;
            }
            counters.add(slot);
            return Fold::Counted(slot);
        }
    }
    Fold::Unfolded
}

/// Makes a new entry's slot visible, after its event was sent.
pub fn publish(entry: usize, slot: u64) {
    TABLE[entry].slot.store(slot, Ordering::Release);
}

/// Empties the table: in a forked child, the parent's slots are the parent's.
pub fn reset() {
    for e in &TABLE {
        e.slot.store(0, Ordering::Relaxed);
        e.hash.store(0, Ordering::Release);
    }
}
