//! The interposed libc functions, one module per family. Each `extern "C"` shim reads its C
//! arguments, asks `check` for an action, and calls the real function or refuses.

pub mod connect;
pub mod dlopen;
pub mod dlsym;
pub mod exec;
pub mod fd;
pub mod listen;
pub mod remote;
pub mod res;
pub mod resolve;
pub mod reverse;
pub mod send;
pub mod shell;
pub mod sockopt;
pub mod syscall;

use egress_policy::Mode;

use crate::chain;
use crate::guard;
use crate::state::{self, Loaded};
use crate::verdict::{errno, set_errno, Action};

/// Runs a hook's decision: initialises the policy if needed, keeps errno as the caller left
/// it, and turns a panic into a refusal in block mode.
pub fn check(decide: impl Fn(&Loaded) -> Action) -> Action {
    check_with(Action::Proceed, Action::Refuse, decide)
}

/// How the decisions of a nested run's levels combine: the stricter one wins.
pub trait Stricter: Copy {
    fn stricter(self, other: Self) -> Self;
}

impl Stricter for Action {
    fn stricter(self, other: Self) -> Self {
        if self == Action::Refuse {
            self
        } else {
            other
        }
    }
}

/// A yes/no answer: every level must say yes.
impl Stricter for bool {
    fn stricter(self, other: Self) -> Self {
        self && other
    }
}

/// sendmmsg: how many messages, from the first, may go.
impl Stricter for libc::c_uint {
    fn stricter(self, other: Self) -> Self {
        self.min(other)
    }
}

/// `check` for decisions that are not a plain action: `open` is what a panic in audit mode
/// gets, `closed` what a panic in block mode (or an undecidable re-entrant call) gets.
///
/// A re-entrant call comes from a signal handler that interrupted a hook on this thread (the
/// guard's own work never calls a hooked function). It is decided like any other: the
/// decision path takes no lock and allocates nothing. Only while this thread is still
/// initialising the policy can it not be decided: it fails closed.
pub fn check_with<T: Stricter>(open: T, closed: T, decide: impl Fn(&Loaded) -> T) -> T {
    if guard::active() {
        let saved = errno();
        let value = match state::levels() {
            [] => closed,
            levels => decide_levels(levels, &decide),
        };
        set_errno(saved);
        return value;
    }
    let saved = errno();
    let on_panic = || match state::current().map(|l| l.mode()) {
        Some(Mode::Audit) => open,
        _ => closed,
    };
    let value = guard::with_guard(on_panic, || {
        state::ensure_init();
        decide_levels(state::levels(), &decide)
    });
    set_errno(saved);
    value
}

/// Every level decides, innermost first, and the strictest decision wins. With more than one
/// level, a dry pass first learns every level's decision, so that the events of the recording
/// pass can name the level that refused the call (chain.rs).
fn decide_levels<T: Stricter>(levels: &[Loaded], decide: &impl Fn(&Loaded) -> T) -> T {
    let [first, outer @ ..] = levels else {
        unreachable!("initialised state has at least one level")
    };
    if outer.is_empty() {
        return decide(first);
    }
    let _restore = chain::begin_dry();
    for level in levels {
        decide(level);
    }
    chain::begin_record(levels);
    outer
        .iter()
        .fold(decide(first), |value, level| value.stricter(decide(level)))
}

/// Runs bookkeeping after an allowed call (learning lookup results) for every level, with the
/// same guarantees.
pub fn after(work: impl Fn(&Loaded)) {
    if guard::active() {
        return;
    }
    let saved = errno();
    guard::with_guard(
        || (),
        || {
            for loaded in state::levels() {
                work(loaded)
            }
        },
    );
    set_errno(saved);
}

/// Block mode refuses a denial; audit mode lets everything proceed.
pub fn action_for(loaded: &Loaded, verdict: crate::verdict::Verdict) -> Action {
    if loaded.refuses(verdict) {
        Action::Refuse
    } else {
        Action::Proceed
    }
}
