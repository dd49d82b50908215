//! `dlsym` and `dlvsym`: a function looked up in a library handle (`dlopen("libc.so.6")` +
//! `dlsym`, as Python ctypes, cffi, .NET P/Invoke and LuaJIT do) is searched in that object and
//! its dependencies, never in the preload, so libc's own `connect` would come back. For every
//! function the guard hooks, these return the guard's function instead.
//!
//! glibc's `dlsym` reads its return address to know the caller (`RTLD_NEXT` means "after the
//! caller's object", `RTLD_DEFAULT` searches the caller's namespace), so the hook must not
//! become the caller: on x86-64 each is a naked stub that asks `decide` with the caller's
//! return address and then either returns the answer or tail-jumps to the real function with
//! the caller's arguments and return address intact. Elsewhere they are not interposed yet.
//!
//! Which answer (`decide`):
//! - a name the guard does not hook, or a call from this library: the real `dlsym`, untouched;
//! - a caller loaded after this library that defines the name itself is a wrapper the guard's
//!   own hook chains to (a user's preload, after ours): it must get the real function, or the
//!   chain would loop back into the guard;
//! - `RTLD_NEXT` from anyone else: the guard's function (which chains to the next one);
//! - a handle, or `RTLD_DEFAULT` in this namespace: what the real `dlsym` finds, replaced by the
//!   guard's function when it is libc's (any version) or the definition the guard chains to.

use std::ffi::CStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{c_char, c_void};

use crate::dynsym::{self, Span};
use crate::real::{self, Real};
use crate::verdict::{errno, set_errno};

/// A name `dlsym` may be asked for, the guard's export that stands for it, and the real
/// function that export chains to (None: compared with libc's span only).
struct Hooked {
    name: &'static [u8],
    ours: &'static CStr,
    real: Option<&'static Real>,
}

const fn h(name: &'static [u8], ours: &'static CStr, real: Option<&'static Real>) -> Hooked {
    Hooked { name, ours, real }
}

/// Every function this library exports, and libc's public aliases of them, sorted by name
/// (a unit test checks the order; an end-to-end test that every name resolves into this library).
static HOOKED: [Hooked; 72] = [
    h(b"__close", c"close", Some(&real::CLOSE)),
    h(b"__connect", c"__connect", Some(&real::CONNECT)),
    h(b"__dup2", c"dup2", Some(&real::DUP2)),
    h(b"__res_nquery", c"__res_nquery", Some(&real::RES_NQUERY)),
    h(
        b"__res_nquerydomain",
        c"__res_nquerydomain",
        Some(&real::RES_NQUERYDOMAIN),
    ),
    h(b"__res_nsearch", c"__res_nsearch", Some(&real::RES_NSEARCH)),
    h(b"__res_nsend", c"__res_nsend", Some(&real::RES_NSEND)),
    h(b"__res_query", c"__res_query", Some(&real::RES_QUERY)),
    h(
        b"__res_querydomain",
        c"__res_querydomain",
        Some(&real::RES_QUERYDOMAIN),
    ),
    h(b"__res_search", c"__res_search", Some(&real::RES_SEARCH)),
    h(b"__res_send", c"__res_send", Some(&real::RES_SEND)),
    h(b"__send", c"__send", Some(&real::SEND)),
    h(b"__sendmmsg", c"sendmmsg", Some(&real::SENDMMSG)),
    h(b"__socket", c"socket", Some(&real::SOCKET)),
    h(b"bind", c"bind", Some(&real::BIND)),
    h(b"close", c"close", Some(&real::CLOSE)),
    h(b"close_range", c"close_range", Some(&real::CLOSE_RANGE)),
    h(b"connect", c"connect", Some(&real::CONNECT)),
    h(b"dlmopen", c"dlmopen", Some(&real::DLMOPEN)),
    h(b"dlopen", c"dlopen", Some(&real::DLOPEN)),
    h(b"dlsym", c"dlsym", None),
    h(b"dlvsym", c"dlvsym", Some(&real::DLVSYM)),
    h(b"dup", c"dup", Some(&real::DUP)),
    h(b"dup2", c"dup2", Some(&real::DUP2)),
    h(b"dup3", c"dup3", Some(&real::DUP3)),
    h(b"execl", c"execl", Some(&real::EXECL)),
    h(b"execle", c"execle", Some(&real::EXECLE)),
    h(b"execlp", c"execlp", Some(&real::EXECLP)),
    h(b"execv", c"execv", Some(&real::EXECV)),
    h(b"execve", c"execve", Some(&real::EXECVE)),
    h(b"execveat", c"execveat", Some(&real::EXECVEAT)),
    h(b"execvp", c"execvp", Some(&real::EXECVP)),
    h(b"execvpe", c"execvpe", Some(&real::EXECVPE)),
    h(b"fexecve", c"fexecve", Some(&real::FEXECVE)),
    h(b"getaddrinfo", c"getaddrinfo", Some(&real::GETADDRINFO)),
    h(
        b"getaddrinfo_a",
        c"getaddrinfo_a",
        Some(&real::GETADDRINFO_A),
    ),
    h(
        b"gethostbyaddr",
        c"gethostbyaddr",
        Some(&real::GETHOSTBYADDR),
    ),
    h(
        b"gethostbyaddr_r",
        c"gethostbyaddr_r",
        Some(&real::GETHOSTBYADDR_R),
    ),
    h(
        b"gethostbyname",
        c"gethostbyname",
        Some(&real::GETHOSTBYNAME),
    ),
    h(
        b"gethostbyname2",
        c"gethostbyname2",
        Some(&real::GETHOSTBYNAME2),
    ),
    h(
        b"gethostbyname2_r",
        c"gethostbyname2_r",
        Some(&real::GETHOSTBYNAME2_R),
    ),
    h(
        b"gethostbyname_r",
        c"gethostbyname_r",
        Some(&real::GETHOSTBYNAME_R),
    ),
    h(b"getnameinfo", c"getnameinfo", Some(&real::GETNAMEINFO)),
    h(b"iruserok", c"iruserok", Some(&real::IRUSEROK)),
    h(b"iruserok_af", c"iruserok_af", Some(&real::IRUSEROK_AF)),
    h(b"listen", c"listen", Some(&real::LISTEN)),
    h(b"popen", c"popen", Some(&real::POPEN)),
    h(b"posix_spawn", c"posix_spawn", Some(&real::POSIX_SPAWN)),
    h(b"posix_spawnp", c"posix_spawnp", Some(&real::POSIX_SPAWNP)),
    h(b"rcmd", c"rcmd", Some(&real::RCMD)),
    h(b"rcmd_af", c"rcmd_af", Some(&real::RCMD_AF)),
    h(b"res_nquery", c"res_nquery", Some(&real::RES_NQUERY)),
    h(
        b"res_nquerydomain",
        c"res_nquerydomain",
        Some(&real::RES_NQUERYDOMAIN),
    ),
    h(b"res_nsearch", c"res_nsearch", Some(&real::RES_NSEARCH)),
    h(b"res_nsend", c"res_nsend", Some(&real::RES_NSEND)),
    h(b"res_query", c"res_query", Some(&real::RES_QUERY)),
    h(
        b"res_querydomain",
        c"res_querydomain",
        Some(&real::RES_QUERYDOMAIN),
    ),
    h(b"res_search", c"res_search", Some(&real::RES_SEARCH)),
    h(b"res_send", c"res_send", Some(&real::RES_SEND)),
    h(b"rexec", c"rexec", Some(&real::REXEC)),
    h(b"rexec_af", c"rexec_af", Some(&real::REXEC_AF)),
    h(b"ruserok", c"ruserok", Some(&real::RUSEROK)),
    h(b"ruserok_af", c"ruserok_af", Some(&real::RUSEROK_AF)),
    h(b"send", c"send", Some(&real::SEND)),
    h(b"sendmmsg", c"sendmmsg", Some(&real::SENDMMSG)),
    h(b"sendmsg", c"sendmsg", Some(&real::SENDMSG)),
    h(b"sendto", c"sendto", Some(&real::SENDTO)),
    h(b"setsockopt", c"setsockopt", Some(&real::SETSOCKOPT)),
    h(b"socket", c"socket", Some(&real::SOCKET)),
    h(b"syscall", c"syscall", Some(&real::SYSCALL)),
    h(b"system", c"system", Some(&real::SYSTEM)),
    h(b"wordexp", c"wordexp", Some(&real::WORDEXP)),
];

fn hooked(name: &[u8]) -> Option<&'static Hooked> {
    HOOKED
        .binary_search_by(|e| e.name.cmp(name))
        .ok()
        .map(|i| &HOOKED[i])
}

/// For a name the guard hooks: its own function's export name, and the real function it chains
/// to (0 when not resolved yet: `resolve_chained` first).
pub(crate) fn guard_function(name: &[u8]) -> Option<(&'static CStr, usize)> {
    hooked(name).map(|e| (e.ours, e.real.map_or(0, Real::cached)))
}

/// Calls `each` with every name the guard hooks and the real function it chains to (0: none
/// resolved).
pub(crate) fn each_hooked(mut each: impl FnMut(&'static [u8], usize)) {
    for entry in &HOOKED {
        each(entry.name, entry.real.map_or(0, Real::cached));
    }
}

/// Resolves every real function the hooked names chain to (a look-up each the first time).
pub(crate) fn resolve_chained() {
    for entry in &HOOKED {
        if let Some(real) = entry.real {
            real.get();
        }
    }
}

/// What the stub does: return `value`, or (`forward` != 0) jump to the real function.
/// Two integer words: returned in rax and rdx.
#[repr(C)]
pub struct Answer {
    forward: usize,
    value: usize,
}

const FORWARD: Answer = Answer {
    forward: 1,
    value: 0,
};

fn answer(value: usize) -> Answer {
    Answer { forward: 0, value }
}

/// Where the caller of `dlsym` stands relative to this library, from one walk of the loaded
/// objects of this namespace.
#[derive(Default)]
struct Survey {
    ours: usize,
    caller_seen: bool,
    caller_is_us: bool,
    /// The caller is loaded after this library and defines `name` itself.
    caller_wraps: bool,
}

fn survey(name: &CStr, ours: &CStr, caller: usize) -> Survey {
    let here = survey as *const () as usize;
    let mut s = Survey::default();
    let mut passed_us = false;
    dynsym::walk(|object, span: Span| {
        if span.contains(here) {
            passed_us = true;
            s.ours = object.function(ours).unwrap_or(0);
            s.caller_is_us = span.contains(caller);
        } else if span.contains(caller) {
            s.caller_seen = true;
            s.caller_wraps = passed_us && object.function(name).is_some();
        }
        s.caller_is_us || (passed_us && s.caller_seen)
    });
    s.caller_seen |= s.caller_is_us;
    s
}

/// The decision, for `dlsym` (`version` null) and `dlvsym`.
fn decide(
    handle: *mut c_void,
    name: *const c_char,
    version: *const c_char,
    caller: usize,
) -> Answer {
    // Forwarding needs the real function; without it nothing can be answered but "not found".
    let real = if version.is_null() {
        real::dlsym_addr()
    } else {
        real::DLVSYM.get()
    };
    if real == 0 {
        return answer(0);
    }
    if version.is_null() {
        REAL_DLSYM.store(real, Ordering::Release);
    } else {
        REAL_DLVSYM.store(real, Ordering::Release);
    }
    if name.is_null() {
        return FORWARD;
    }
    // SAFETY: dlsym's `name` is a NUL-terminated string (checked non-null above).
    let name = unsafe { CStr::from_ptr(name) };
    let Some(entry) = hooked(name.to_bytes()) else {
        return FORWARD;
    };
    let saved = errno();
    // A panic (never expected) must not cross into C: answer "not found" for a hooked name.
    let value = std::panic::catch_unwind(|| substitute(handle, name, version, caller, entry))
        .unwrap_or(answer(0));
    set_errno(saved);
    value
}

fn substitute(
    handle: *mut c_void,
    name: &CStr,
    version: *const c_char,
    caller: usize,
    entry: &Hooked,
) -> Answer {
    let s = survey(name, entry.ours, caller);
    if s.caller_is_us || s.caller_wraps {
        return FORWARD;
    }
    if s.ours == 0 {
        // This library's own function cannot be found (never expected): fail closed, "not
        // found", rather than hand out the unguarded one.
        return answer(0);
    }
    let chained = entry.real.map_or(0, |r| r.get());
    if handle == libc::RTLD_NEXT {
        // Whatever comes after the caller, the guard's function chains to it.
        return if s.caller_seen && (chained != 0 || entry.real.is_none()) {
            answer(s.ours)
        } else {
            FORWARD
        };
    }
    if handle == libc::RTLD_DEFAULT && !s.caller_seen {
        // Code of another namespace (dlmopen): its own scope, which this library is not in.
        return FORWARD;
    }
    let found = real_lookup(handle, name, version);
    if found != 0 && (real::libc_span().contains(found) || found == chained) {
        answer(s.ours)
    } else {
        answer(found)
    }
}

/// The real `dlsym`/`dlvsym`, called from this library (right for handles and RTLD_DEFAULT,
/// whose answer does not depend on the caller within one namespace).
fn real_lookup(handle: *mut c_void, name: &CStr, version: *const c_char) -> usize {
    if version.is_null() {
        match real::dlsym() {
            // SAFETY: the real dlsym with the caller's handle and a valid name.
            Some(f) => unsafe { f(handle, name.as_ptr()) as usize },
            None => 0,
        }
    } else {
        // SAFETY: DLVSYM is resolved (checked by `decide`), and has dlvsym's signature.
        match unsafe { real::func::<real::DlvsymFn>(&real::DLVSYM) } {
            // SAFETY: the caller's handle, name and version string.
            Some(f) => unsafe { f(handle, name.as_ptr(), version) as usize },
            None => 0,
        }
    }
}

/// The real functions the stubs jump to, stored by `decide` before it answers FORWARD. Local
/// to this library, so the stubs read them PC-relative.
static REAL_DLSYM: AtomicUsize = AtomicUsize::new(0);
static REAL_DLVSYM: AtomicUsize = AtomicUsize::new(0);

extern "C" fn decide_dlsym(handle: *mut c_void, name: *const c_char, caller: usize) -> Answer {
    decide(handle, name, std::ptr::null(), caller)
}

extern "C" fn decide_dlvsym(
    handle: *mut c_void,
    name: *const c_char,
    version: *const c_char,
    caller: usize,
) -> Answer {
    if version.is_null() {
        // dlvsym with no version is a caller bug; let the real function say so.
        return match real::DLVSYM.get() {
            0 => answer(0),
            f => {
                REAL_DLVSYM.store(f, Ordering::Release);
                FORWARD
            }
        };
    }
    decide(handle, name, version, caller)
}

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    use libc::{c_char, c_void};

    /// # Safety
    /// Called by C with dlsym(3)'s arguments.
    #[unsafe(naked)]
    #[no_mangle]
    pub unsafe extern "C" fn dlsym(_handle: *mut c_void, _name: *const c_char) -> *mut c_void {
        // Keep the arguments, pass the return address (the caller) as the third argument, and
        // either return decide's value (rdx) or jump to the real dlsym as if called directly.
        // Two pushes and 8 bytes keep the stack 16-byte aligned at the call.
        core::arch::naked_asm!(
            "push rdi",
            "push rsi",
            "mov rdx, qword ptr [rsp + 16]",
            "sub rsp, 8",
            "call {decide}",
            "add rsp, 8",
            "pop rsi",
            "pop rdi",
            "test rax, rax",
            "jnz 2f",
            "mov rax, rdx",
            "ret",
            "2:",
            "mov rax, qword ptr [rip + {real}]",
            "jmp rax",
            decide = sym super::decide_dlsym,
            real = sym super::REAL_DLSYM,
        )
    }

    /// # Safety
    /// Called by C with dlvsym(3)'s arguments.
    #[unsafe(naked)]
    #[no_mangle]
    pub unsafe extern "C" fn dlvsym(
        _handle: *mut c_void,
        _name: *const c_char,
        _version: *const c_char,
    ) -> *mut c_void {
        // As `dlsym`, with three arguments kept (three pushes keep the alignment) and the
        // answer saved in r11 (a scratch register) before rdx is restored.
        core::arch::naked_asm!(
            "push rdi",
            "push rsi",
            "push rdx",
            "mov rcx, qword ptr [rsp + 24]",
            "call {decide}",
            "mov r11, rdx",
            "pop rdx",
            "pop rsi",
            "pop rdi",
            "test rax, rax",
            "jnz 2f",
            "mov rax, r11",
            "ret",
            "2:",
            "mov rax, qword ptr [rip + {real}]",
            "jmp rax",
            decide = sym super::decide_dlvsym,
            real = sym super::REAL_DLVSYM,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_for_binary_search() {
        for pair in HOOKED.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{:?} before {:?}",
                pair[0].name,
                pair[1].name
            );
        }
    }

    #[test]
    fn hooked_names_are_found_and_others_are_not() {
        assert_eq!(hooked(b"connect").map(|e| e.ours), Some(c"connect"));
        assert_eq!(hooked(b"__connect").map(|e| e.ours), Some(c"__connect"));
        assert_eq!(hooked(b"__sendmmsg").map(|e| e.ours), Some(c"sendmmsg"));
        assert!(hooked(b"PyInit__socket").is_none());
        assert!(hooked(b"").is_none());
        assert!(hooked(b"connectx").is_none());
    }
}
