//! The exec family: a program that starts a child with a scrubbed environment (`env -i`,
//! Python's `subprocess.run(..., env={})`, `os.execve(path, args, {})`) would drop
//! `LD_PRELOAD` and the policy locator, and its child would run unguarded. These hooks put both
//! back into the new environment.
//!
//! This runs in `vfork` children, where the heap and locks belong to the parent: the new
//! environment is built in an anonymous `mmap` (a plain system call), never on the heap.
//! glibc's own `execl*`, `system` and `popen` call its internal exec and never reach these hooks
//! (they pass the current `environ`, which still carries both variables).

use std::ffi::CStr;

use libc::{c_char, c_int, pid_t, posix_spawn_file_actions_t, posix_spawnattr_t};

use crate::guard;
use crate::real;
use crate::state;

const PRELOAD_KEY: &[u8] = b"LD_PRELOAD=";
const POLICY_KEY: &[u8] = b"EGRESS_RUN_POLICY=";

extern "C" {
    static environ: *const *const c_char;
}

/// An environment with the guard restored, in an anonymous mapping of its own.
struct GuardedEnv {
    map: *mut libc::c_void,
    len: usize,
}

impl GuardedEnv {
    fn envp(&self) -> *const *const c_char {
        self.map.cast()
    }
}

impl Drop for GuardedEnv {
    fn drop(&mut self) {
        // SAFETY: our own mapping of `len` bytes, no longer referenced (the exec failed or the
        // spawn returned).
        unsafe { libc::munmap(self.map, self.len) };
    }
}

fn has_token(list: &[u8], item: &[u8]) -> bool {
    list.split(|b| *b == b':' || *b == b' ').any(|t| t == item)
}

/// The entries of a NULL-terminated environment array.
///
/// # Safety
/// `envp` must be null or a NULL-terminated array of NUL-terminated strings.
unsafe fn entries(envp: *const *const c_char) -> impl Iterator<Item = *const c_char> {
    let mut at = envp;
    std::iter::from_fn(move || {
        if at.is_null() {
            return None;
        }
        // SAFETY: within the NULL-terminated array, per the caller.
        let entry = unsafe { *at };
        if entry.is_null() {
            return None;
        }
        // SAFETY: the next slot exists because this one was not the terminator.
        at = unsafe { at.add(1) };
        Some(entry)
    })
}

/// `envp` with this library in `LD_PRELOAD` and our policy locator, or None when it already
/// has both (or the guard has nothing to restore).
///
/// # Safety
/// `envp` must be null or a NULL-terminated array of NUL-terminated strings.
unsafe fn restore(envp: *const *const c_char) -> Option<GuardedEnv> {
    if guard::active() {
        return None;
    }
    guard::with_guard(
        || None,
        || {
            state::ensure_init();
            let saved = state::exec_env()?;
            let lib = saved.library();
            let policy = saved.policy();
            if lib.is_empty() {
                return None;
            }
            let (mut count, mut preload, mut policy_ok) = (0usize, None, policy.is_empty());
            // SAFETY: envp as the caller promises.
            for entry in unsafe { entries(envp) } {
                count += 1;
                // SAFETY: a NUL-terminated string from the array.
                let bytes = unsafe { CStr::from_ptr(entry) }.to_bytes();
                if let Some(v) = bytes.strip_prefix(PRELOAD_KEY) {
                    preload = Some(v);
                } else if let Some(v) = bytes.strip_prefix(POLICY_KEY) {
                    policy_ok = policy_ok || v == policy;
                }
            }
            let preload_ok = preload.is_some_and(|v| has_token(v, lib));
            if preload_ok && policy_ok {
                return None;
            }
            let kept = preload.filter(|v| !v.is_empty()).unwrap_or(b"");
            let preload_len = PRELOAD_KEY.len() + kept.len() + 1 + lib.len() + 1;
            let policy_len = POLICY_KEY.len() + policy.len() + 1;
            let ptrs = (count + 3) * std::mem::size_of::<*const c_char>();
            let len = ptrs + preload_len + policy_len;
            // SAFETY: a fresh private anonymous mapping; checked for failure below.
            let map = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if map == libc::MAP_FAILED {
                return None;
            }
            let env = GuardedEnv { map, len };
            // SAFETY: the mapping is `len` writable bytes: the pointer array, then the strings.
            let (table, text) = unsafe {
                (
                    std::slice::from_raw_parts_mut(map.cast::<*const c_char>(), count + 3),
                    std::slice::from_raw_parts_mut(map.cast::<u8>().add(ptrs), len - ptrs),
                )
            };
            let mut n = 0;
            // SAFETY: envp as the caller promises.
            for entry in unsafe { entries(envp) } {
                // SAFETY: a NUL-terminated string from the array.
                let bytes = unsafe { CStr::from_ptr(entry) }.to_bytes();
                let replaced = (!preload_ok && bytes.starts_with(PRELOAD_KEY))
                    || (!policy_ok && bytes.starts_with(POLICY_KEY));
                if !replaced {
                    table[n] = entry;
                    n += 1;
                }
            }
            let mut at = 0;
            let mut put = |parts: &[&[u8]]| -> *const c_char {
                let start = at;
                for p in parts {
                    text[at..at + p.len()].copy_from_slice(p);
                    at += p.len();
                }
                text[at] = 0;
                at += 1;
                text[start..].as_ptr().cast()
            };
            if !preload_ok {
                let sep: &[u8] = if kept.is_empty() { b"" } else { b":" };
                table[n] = put(&[PRELOAD_KEY, kept, sep, lib]);
                n += 1;
            }
            if !policy_ok {
                table[n] = put(&[POLICY_KEY, policy]);
                n += 1;
            }
            table[n] = std::ptr::null();
            Some(env)
        },
    )
}

/// # Safety
/// Called by C with execve(2)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: envp is the caller's environment array.
    let fixed = unsafe { restore(envp) };
    let envp = fixed.as_ref().map_or(envp, GuardedEnv::envp);
    // SAFETY: execve's C signature, with the caller's arguments and a valid environment.
    match unsafe { real::func::<real::ExecveFn>(&real::EXECVE) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(path, argv, envp) },
        None => -1,
    }
}

/// # Safety
/// Called by C with execvpe(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: envp is the caller's environment array.
    let fixed = unsafe { restore(envp) };
    let envp = fixed.as_ref().map_or(envp, GuardedEnv::envp);
    // SAFETY: execvpe's C signature, with the caller's arguments and a valid environment.
    match unsafe { real::func::<real::ExecveFn>(&real::EXECVPE) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(file, argv, envp) },
        None => -1,
    }
}

/// # Safety
/// Called by C with execv(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: environ is the process's environment array.
    let fixed = unsafe { restore(environ) };
    // SAFETY: execve's C signature; environ or our restored copy of it.
    let envp = fixed.as_ref().map_or(unsafe { environ }, GuardedEnv::envp);
    // SAFETY: as above.
    match unsafe { real::func::<real::ExecveFn>(&real::EXECVE) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(path, argv, envp) },
        None => -1,
    }
}

/// # Safety
/// Called by C with execvp(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: environ is the process's environment array.
    let fixed = unsafe { restore(environ) };
    // SAFETY: environ or our restored copy of it.
    let envp = fixed.as_ref().map_or(unsafe { environ }, GuardedEnv::envp);
    // SAFETY: execvpe's C signature, searching PATH like execvp.
    match unsafe { real::func::<real::ExecveFn>(&real::EXECVPE) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(file, argv, envp) },
        None => -1,
    }
}

/// # Safety
/// Called by C with fexecve(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn fexecve(
    fd: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    // SAFETY: envp is the caller's environment array.
    let fixed = unsafe { restore(envp) };
    let envp = fixed.as_ref().map_or(envp, GuardedEnv::envp);
    // SAFETY: fexecve's C signature, with the caller's arguments and a valid environment.
    match unsafe { real::func::<real::FexecveFn>(&real::FEXECVE) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(fd, argv, envp) },
        None => -1,
    }
}

/// # Safety
/// Called by C with posix_spawn(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut pid_t,
    path: *const c_char,
    actions: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    // SAFETY: envp is the caller's environment array.
    let fixed = unsafe { restore(envp.cast()) };
    let envp = fixed.as_ref().map_or(envp, |e| e.envp().cast());
    // SAFETY: posix_spawn's C signature, with the caller's arguments and a valid environment.
    match unsafe { real::func::<real::PosixSpawnFn>(&real::POSIX_SPAWN) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(pid, path, actions, attr, argv, envp) },
        None => libc::ENOSYS,
    }
}

/// # Safety
/// Called by C with posix_spawnp(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut pid_t,
    file: *const c_char,
    actions: *const posix_spawn_file_actions_t,
    attr: *const posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    // SAFETY: envp is the caller's environment array.
    let fixed = unsafe { restore(envp.cast()) };
    let envp = fixed.as_ref().map_or(envp, |e| e.envp().cast());
    // SAFETY: posix_spawnp's C signature, with the caller's arguments and a valid environment.
    match unsafe { real::func::<real::PosixSpawnFn>(&real::POSIX_SPAWNP) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(pid, file, actions, attr, argv, envp) },
        None => libc::ENOSYS,
    }
}

#[cfg(test)]
mod tests {
    use super::has_token;

    #[test]
    fn preload_lists_split_on_colons_and_spaces() {
        assert!(has_token(b"/a.so:/lib/x.so", b"/lib/x.so"));
        assert!(has_token(b"/a.so /lib/x.so", b"/lib/x.so"));
        assert!(!has_token(b"/lib/x.so.1", b"/lib/x.so"));
    }
}
