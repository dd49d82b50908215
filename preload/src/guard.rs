//! The thread-local re-entrancy guard: anything the guard itself calls that reaches a hooked
//! function (dlsym, an NSS module, our own event socket) goes straight to libc.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    // `const` initialisation: no lazy-init machinery, no allocation, no destructor to register.
    static IN_GUARD: Cell<bool> = const { Cell::new(false) };
}

/// True when this thread is already inside the guard.
pub fn active() -> bool {
    // `try_with` fails only while this thread's TLS is being torn down; then nothing of ours
    // is on the stack.
    IN_GUARD.try_with(|g| g.get()).unwrap_or(false)
}

struct Reset(bool);

impl Drop for Reset {
    fn drop(&mut self) {
        let prev = self.0;
        let _ = IN_GUARD.try_with(|g| g.set(prev));
    }
}

/// Runs `body` with the guard set. A panic inside never crosses into C: it yields
/// `on_panic()` instead.
pub fn with_guard<T>(on_panic: impl FnOnce() -> T, body: impl FnOnce() -> T) -> T {
    let prev = IN_GUARD.try_with(|g| g.replace(true)).unwrap_or(false);
    let _reset = Reset(prev);
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| on_panic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_the_guard_yields_the_fallback_and_resets_the_flag() {
        std::panic::set_hook(Box::new(|_| {})); // keep the test output clean
        let got = with_guard(|| "fallback", || -> &str { panic!("boom") });
        let _ = std::panic::take_hook();
        assert_eq!(got, "fallback");
        assert!(!active(), "the guard flag must be reset after a panic");
    }

    #[test]
    fn the_flag_is_set_only_inside() {
        assert!(!active());
        assert!(with_guard(|| false, active));
        assert!(!active());
    }
}
