//! Nested runs: what every level decided about the call being checked.
//!
//! `hooks::check_with` decides a call once per level. In a nested run it does so twice: a dry
//! pass in which `channel::record` only notes each level's decision here, then the recording
//! pass, whose events carry every level's decision and the level that refused the call, so
//! that each run's report can say who refused it. The state is per thread and saved around
//! each check (a signal handler's call, checked inside another, has its own).

use std::cell::Cell;

use egress_policy::{Mode, MAX_LEVELS};

use crate::state::Loaded;
use crate::verdict::Verdict;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// One level only: record as usual, nothing to add.
    Single,
    /// Note decisions, send nothing.
    Dry,
    /// Record, with every level's decision.
    Record,
}

const NONE: u8 = 0;
const ALLOW: u8 = 1;
const DENY: u8 = 2;

/// What the levels decided about the call being checked.
#[derive(Clone, Copy)]
pub struct Outcome {
    pass: Pass,
    /// Per level: NONE (nothing recorded), ALLOW or DENY; a denial of any attempt the call
    /// makes (sendmmsg sends several) wins.
    decisions: [u8; MAX_LEVELS],
    /// The first level, innermost first, that refused the call, plus one; 0 for none.
    refused_by: u8,
}

const SINGLE: Outcome = Outcome {
    pass: Pass::Single,
    decisions: [NONE; MAX_LEVELS],
    refused_by: 0,
};

thread_local! {
    static NOW: Cell<Outcome> = const { Cell::new(SINGLE) };
}

fn set(outcome: Outcome) {
    // Fails only while this thread's TLS is torn down; then no check is running on it.
    let _ = NOW.try_with(|c| c.set(outcome));
}

/// The current call's outcome (SINGLE outside a nested check).
pub fn now() -> Outcome {
    NOW.try_with(|c| c.get()).unwrap_or(SINGLE)
}

/// Puts the outcome of the enclosing check back when a nested check ends.
pub struct Restore(Outcome);

impl Drop for Restore {
    fn drop(&mut self) {
        set(self.0);
    }
}

/// Starts the dry pass of a nested check.
pub fn begin_dry() -> Restore {
    let saved = now();
    set(Outcome {
        pass: Pass::Dry,
        ..SINGLE
    });
    Restore(saved)
}

/// Ends the dry pass: the recording pass that follows carries what it found.
pub fn begin_record(levels: &[Loaded]) {
    let mut outcome = now();
    outcome.pass = Pass::Record;
    outcome.refused_by = levels
        .iter()
        .position(|l| outcome.decisions[l.level] == DENY && l.mode() == Mode::Block)
        .map_or(0, |i| i as u8 + 1);
    set(outcome);
}

impl Outcome {
    /// In a dry pass, notes `level`'s verdict and returns true: the caller sends nothing.
    pub fn noted(&self, level: usize, verdict: Verdict) -> bool {
        if self.pass != Pass::Dry {
            return false;
        }
        let mut outcome = *self;
        let d = &mut outcome.decisions[level.min(MAX_LEVELS - 1)];
        *d = match verdict {
            Verdict::Deny(_) => DENY,
            Verdict::Allow { .. } if *d == NONE => ALLOW,
            _ => *d,
        };
        set(outcome);
        true
    }

    /// True in the dry pass of a nested check: nothing may be sent.
    pub fn dry(&self) -> bool {
        self.pass == Pass::Dry
    }

    /// True while recording a nested check (its events carry the levels' decisions).
    pub fn nested(&self) -> bool {
        self.pass == Pass::Record
    }

    /// Level `level`'s decision: "allow", "deny", or None when it recorded nothing.
    pub fn decision(&self, level: usize) -> Option<&'static str> {
        match self.decisions.get(level) {
            Some(&ALLOW) => Some("allow"),
            Some(&DENY) => Some("deny"),
            _ => None,
        }
    }

    /// The first level, innermost first, that refused the call.
    pub fn refused_by(&self) -> Option<usize> {
        (self.refused_by > 0).then(|| usize::from(self.refused_by) - 1)
    }

    /// The outcome as one word, for the folding key (0 outside nested runs).
    pub fn key(&self) -> u64 {
        if !self.nested() {
            return 0;
        }
        self.decisions
            .iter()
            .fold(u64::from(self.refused_by) + 1, |k, &d| {
                k << 2 | u64::from(d)
            })
    }
}
