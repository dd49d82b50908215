//! `system`, `popen` and `wordexp` (for a command substitution): glibc runs the shell through
//! its internal spawn, which the exec hooks never see, with the current `environ`. A program
//! that cleared its environment (`clearenv()`) would start an unguarded shell, so these hooks
//! first put `LD_PRELOAD` (with this library) and the policy locator back into `environ`. They
//! may allocate (setenv): like `system`, `popen` and `wordexp` themselves, they are not for
//! signal handlers or vfork children.

use std::ffi::CStr;

use libc::{c_char, c_int, c_void, FILE};

use egress_policy::chain_extends;

use crate::guard;
use crate::real;
use crate::state;

/// Writes `parts` and a NUL into `buf`; None when it does not fit.
fn c_string<'a>(buf: &'a mut [u8], parts: &[&[u8]]) -> Option<&'a CStr> {
    let mut at = 0;
    for p in parts {
        buf.get_mut(at..at + p.len())?.copy_from_slice(p);
        at += p.len();
    }
    *buf.get_mut(at)? = 0;
    CStr::from_bytes_with_nul(&buf[..=at]).ok()
}

fn getenv(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: a NUL-terminated name; the result is null or a string in the environment.
    let v = unsafe { libc::getenv(name.as_ptr()) };
    // SAFETY: non-null results of getenv are NUL-terminated.
    (!v.is_null()).then(|| unsafe { CStr::from_ptr(v) }.to_bytes())
}

/// Restores the guard's two variables in `environ` if the program removed or changed them.
fn repair_environ() {
    if guard::active() {
        return;
    }
    guard::with_guard(
        || (),
        || {
            state::ensure_init();
            let Some(saved) = state::exec_env() else {
                return;
            };
            let lib = saved.library();
            // Off the stack: system() and popen() are called from small thread stacks too.
            let Some(mut buf) = crate::scratch::Scratch::<[u8; 4096]>::new() else {
                return; // no memory: glibc's own spawn will fail the same way
            };
            let preload = getenv(c"LD_PRELOAD").unwrap_or(b"");
            if !lib.is_empty()
                && !preload
                    .split(|b| *b == b':' || *b == b' ')
                    .any(|t| t == lib)
            {
                let sep: &[u8] = if preload.is_empty() { b"" } else { b":" };
                if let Some(value) = c_string(&mut buf[..], &[preload, sep, lib]) {
                    // SAFETY: NUL-terminated name and value; setenv copies them.
                    unsafe { libc::setenv(c"LD_PRELOAD".as_ptr(), value.as_ptr(), 1) };
                }
            }
            let policy = saved.policy();
            let kept = getenv(c"EGRESS_RUN_POLICY").is_some_and(|v| chain_extends(v, policy));
            if !policy.is_empty() && !kept {
                if let Some(value) = c_string(&mut buf[..], &[policy]) {
                    // SAFETY: as above.
                    unsafe { libc::setenv(c"EGRESS_RUN_POLICY".as_ptr(), value.as_ptr(), 1) };
                }
            }
        },
    )
}

type SystemFn = unsafe extern "C" fn(*const c_char) -> c_int;
type PopenFn = unsafe extern "C" fn(*const c_char, *const c_char) -> *mut FILE;
type WordexpFn = unsafe extern "C" fn(*const c_char, *mut c_void, c_int) -> c_int;

/// wordexp(3)'s flag that forbids command substitution (no shell is run then).
const WRDE_NOCMD: c_int = 1 << 2;
/// wordexp(3)'s "out of memory" answer.
const WRDE_NOSPACE: c_int = 1;

/// # Safety
/// Called by C with system(3)'s argument.
#[no_mangle]
pub unsafe extern "C" fn system(command: *const c_char) -> c_int {
    repair_environ();
    // SAFETY: system's C signature; the caller's argument.
    match unsafe { real::func::<SystemFn>(&real::SYSTEM) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(command) },
        None => -1,
    }
}

/// # Safety
/// Called by C with popen(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn popen(command: *const c_char, mode: *const c_char) -> *mut FILE {
    repair_environ();
    // SAFETY: popen's C signature; the caller's arguments.
    match unsafe { real::func::<PopenFn>(&real::POPEN) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(command, mode) },
        None => std::ptr::null_mut(),
    }
}

/// # Safety
/// Called by C with wordexp(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn wordexp(words: *const c_char, we: *mut c_void, flags: c_int) -> c_int {
    // A shell runs only for a command substitution: `$(...)` or backquotes.
    let may_spawn = flags & WRDE_NOCMD == 0
        && !words.is_null()
        // SAFETY: a non-null argument is the caller's NUL-terminated string.
        && unsafe { CStr::from_ptr(words) }
            .to_bytes()
            .iter()
            .any(|&b| b == b'$' || b == b'`');
    if may_spawn {
        repair_environ();
    }
    // SAFETY: wordexp's C signature; the caller's arguments.
    match unsafe { real::func::<WordexpFn>(&real::WORDEXP) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(words, we, flags) },
        None => WRDE_NOSPACE,
    }
}
