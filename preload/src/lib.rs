//! `libegress_preload.so`: loaded with `LD_PRELOAD` into every process egress-run guards.
//!
//! Hooks live in `hooks/`, one module per family; their `extern "C"` shims only call safe
//! decision code in `decide`, record through `events`, and map the verdict to errno or EAI
//! codes in `verdict`. Nothing here allocates or takes a lock on a path a hook can reach, so
//! the hooks are safe after `fork`, in signal handlers and before this library's constructor.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod decide;
mod dns_sockets;
mod dnsmsg;
mod events;
mod fmt;
mod fold;
mod guard;
mod hooks;
mod learned;
mod names;
mod real;
mod sock;
mod state;
mod verdict;

/// Runs when the library is loaded. Hooks that run earlier (from another library's
/// constructor) initialise lazily through the same idempotent path.
extern "C" fn egress_preload_init() {
    let _ = std::panic::catch_unwind(|| {
        guard::with_guard(
            || (),
            || {
                state::ensure_init();
            },
        )
    });
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = egress_preload_init;

extern "C" {
    fn execl(path: *const libc::c_char, arg: *const libc::c_char, ...) -> libc::c_int;
}

/// Links the C shim (csrc/variadic.c) into the library: nothing in Rust calls it.
#[used]
static LINK_VARIADIC_SHIM: unsafe extern "C" fn(
    *const libc::c_char,
    *const libc::c_char,
    ...
) -> libc::c_int = execl;
