//! `egress-run __exec-under-layer PATH ARG0 ARGS...`: the spawn trampoline. The guard library
//! spawns the launcher so in place of a program only the kernel layer can guard (posix_spawn's
//! child execs inside libc, out of the hooks' reach); the spawn's file actions and attributes
//! apply to this process and survive its exec. It runs before `main` changes anything
//! (descriptors, SIGPIPE), and execs PATH with argv `ARG0 ARGS...` and its environment
//! through libc's execve, which the guard's hook puts under the layer. On failure it exits
//! as a shell does: 127 when PATH is not found, else 126.

use std::ffi::CStr;

use libc::{c_char, c_int};

use crate::{EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND};

extern "C" {
    static environ: *const *const c_char;
}

/// Execs the program when `argv` asks for the trampoline; returns the exit status when that
/// fails, None for any other invocation.
///
/// # Safety
/// `argv` must be main's argument vector of `argc` entries.
pub unsafe fn exec_under_layer(argc: c_int, argv: *const *const c_char) -> Option<c_int> {
    if argc < 3 || argv.is_null() {
        return None;
    }
    // SAFETY: main's argv has argc > 2 NUL-terminated entries.
    let first = unsafe { CStr::from_ptr(*argv.add(1)) };
    if first != egress_policy::EXEC_UNDER_LAYER {
        return None;
    }
    // SAFETY: argv[2] is a NUL-terminated path; argv + 3 is the NULL-terminated rest of
    // main's argv; environ is this process's environment.
    unsafe { libc::execve(*argv.add(2), argv.add(3), environ) };
    let missing = std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOENT);
    Some(if missing {
        EXIT_NOT_FOUND
    } else {
        EXIT_CANNOT_EXECUTE
    })
}
