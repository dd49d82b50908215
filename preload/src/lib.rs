//! `libegress_preload.so`: loaded with `LD_PRELOAD` into every process egress-run guards.
//!
//! Hooks live in `hooks/`, one module per family; their `extern "C"` shims only call safe
//! decision code in `decide`, record through `events`, and map the verdict to errno or EAI
//! codes in `verdict`. Nothing here allocates or takes a lock on a path a hook can reach, so
//! the hooks are safe after `fork`, in signal handlers and before this library's constructor.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod caller;
mod carray;
mod chain;
mod channel;
mod decide;
mod dns_sockets;
mod dnsmsg;
mod dynsym;
mod fd_kinds;
mod fmt;
mod guard;
mod highfd;
mod hooks;
mod kernel;
mod learned;
mod mem;
mod names;
mod own;
mod policy_request;
mod real;
#[cfg(target_arch = "x86_64")]
mod rebind;
mod route;
mod scope;
mod scratch;
mod sock;
mod state;
mod verdict;

/// Runs when the library is loaded, with the arguments glibc passes to `.init_array`
/// functions (argc, argv, envp). Hooks that run earlier (from another library's constructor)
/// initialise lazily through the same idempotent path.
extern "C" fn egress_preload_init(
    _argc: libc::c_int,
    argv: *const *const libc::c_char,
    _envp: *const *const libc::c_char,
) {
    state::note_startup_argv(argv);
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
static INIT: extern "C" fn(libc::c_int, *const *const libc::c_char, *const *const libc::c_char) =
    egress_preload_init;

/// The library's version, for `egress-run --version` and `egress-run doctor`, which find it
/// by reading the file (never by loading it): a launcher and a library of different builds
/// may disagree on the policy format.
#[used]
static VERSION_MARK: &[u8] = concat!(
    "EGRESS_RUN_LIBRARY_VERSION=",
    env!("CARGO_PKG_VERSION"),
    "\0"
)
.as_bytes();

/// A probe for the end-to-end tests: panics and catches the panic inside this library, and
/// returns 1 when the unwinder (linked in statically, see build.rs) brought it back. A program
/// may call it; it changes nothing.
#[no_mangle]
pub extern "C" fn egress_preload_unwind_selftest() -> libc::c_int {
    struct SelftestPanic;
    let caught = std::panic::catch_unwind(|| std::panic::panic_any(SelftestPanic)).is_err();
    libc::c_int::from(caught)
}

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
