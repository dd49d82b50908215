//! The interposed libc functions, one module per family. Each `extern "C"` shim reads its C
//! arguments, asks `check` for an action, and calls the real function or refuses.

pub mod connect;
pub mod dlopen;
pub mod dlsym;
pub mod exec;
pub mod fd;
pub mod res;
pub mod resolve;
pub mod reverse;
pub mod send;
pub mod shell;
pub mod syscall;

use egress_policy::Mode;

use crate::guard;
use crate::state::{self, Loaded};
use crate::verdict::{errno, set_errno, Action};

/// Runs a hook's decision: initialises the policy if needed, keeps errno as the caller left
/// it, and turns a panic into a refusal in block mode.
pub fn check(decide: impl FnOnce(&Loaded) -> Action) -> Action {
    check_with(Action::Proceed, Action::Refuse, decide)
}

/// `check` for decisions that are not a plain action: `open` is what a panic in audit mode
/// gets, `closed` what a panic in block mode (or an undecidable re-entrant call) gets.
///
/// A re-entrant call comes from a signal handler that interrupted a hook on this thread (the
/// guard's own work never calls a hooked function). It is decided like any other: the
/// decision path takes no lock and allocates nothing. Only while this thread is still
/// initialising the policy can it not be decided: it fails closed.
pub fn check_with<T: Copy>(open: T, closed: T, decide: impl FnOnce(&Loaded) -> T) -> T {
    if guard::active() {
        let saved = errno();
        let value = match state::current() {
            Some(loaded) => decide(loaded),
            None => closed,
        };
        set_errno(saved);
        return value;
    }
    let saved = errno();
    let on_panic = || match state::current().map(|l| l.mode()) {
        Some(Mode::Audit) => open,
        _ => closed,
    };
    let value = guard::with_guard(on_panic, || decide(state::ensure_init()));
    set_errno(saved);
    value
}

/// Runs bookkeeping after an allowed call (learning lookup results), with the same guarantees.
pub fn after(work: impl FnOnce(&Loaded)) {
    if guard::active() {
        return;
    }
    let saved = errno();
    guard::with_guard(
        || (),
        || {
            if let Some(loaded) = state::current() {
                work(loaded)
            }
        },
    );
    set_errno(saved);
}

/// Block mode refuses a denial; audit mode lets everything proceed.
pub fn action_for(loaded: &Loaded, verdict: crate::verdict::Verdict) -> Action {
    if verdict.refuses(loaded.mode()) {
        Action::Refuse
    } else {
        Action::Proceed
    }
}
