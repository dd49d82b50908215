//! `dlopen`: a library opened with `RTLD_DEEPBIND` binds its own `connect` straight to libc's,
//! past this library. The hook clears that flag and continues in the real `dlopen`.
//!
//! `dlmopen` into any namespace but the base one loads a library with its own copy of libc and
//! without this library: its `connect` would go out unchecked. Block mode refuses it (NULL,
//! with a `dlerror` message saying why) and every mode records it as an unguarded program;
//! `dlmopen(LM_ID_BASE, ...)` is `dlopen`.
//!
//! glibc's `dlopen` looks at its return address to find the caller (whose RUNPATH it searches),
//! so the hook must not become the caller: on x86-64 it is a naked function that edits the flag
//! register and jumps (not calls) to the real function. Elsewhere it is not interposed yet.

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::real;

    /// The real dlopen, resolved by `resolve` (called at initialisation) or by `slow_path`.
    /// Local to this library, so the jump reads it PC-relative.
    static EGRESS_REAL_DLOPEN: AtomicUsize = AtomicUsize::new(0);

    /// The real dlmopen, likewise.
    static EGRESS_REAL_DLMOPEN: AtomicUsize = AtomicUsize::new(0);

    pub fn resolve() {
        EGRESS_REAL_DLOPEN.store(real::DLOPEN.get(), Ordering::Release);
        EGRESS_REAL_DLMOPEN.store(real::DLMOPEN.get(), Ordering::Release);
    }

    /// Reached only before initialisation resolved the real function: resolves it and calls it
    /// (here the hook is the caller: RUNPATH lookups of the program's own objects are not
    /// applied to bare names in that window).
    unsafe extern "C" fn slow_path(
        file: *const libc::c_char,
        flags: libc::c_int,
    ) -> *mut libc::c_void {
        resolve();
        // SAFETY: dlopen's C signature; the caller's arguments.
        match unsafe { real::func::<real::DlopenFn>(&real::DLOPEN) } {
            // SAFETY: as above.
            Some(f) => unsafe { f(file, flags) },
            None => std::ptr::null_mut(),
        }
    }

    /// # Safety
    /// Called by C with dlopen(3)'s arguments (`file` in rdi, `flags` in esi).
    #[unsafe(naked)]
    #[no_mangle]
    pub unsafe extern "C" fn dlopen(
        _file: *const libc::c_char,
        _flags: libc::c_int,
    ) -> *mut libc::c_void {
        // Clear RTLD_DEEPBIND (0x8) in the flags and tail-jump: the real dlopen sees the
        // program's return address, as if called directly. The atomic is read as a plain
        // aligned 8-byte load, which is atomic on x86-64.
        core::arch::naked_asm!(
            "and esi, -9",
            "mov rax, qword ptr [rip + {real}]",
            "test rax, rax",
            "jz 2f",
            "jmp rax",
            "2:",
            "jmp {slow}",
            real = sym EGRESS_REAL_DLOPEN,
            slow = sym slow_path,
        )
    }

    /// Reached only when the real dlmopen is not resolved yet (before initialisation):
    /// resolves it and calls it.
    unsafe extern "C" fn dlmopen_slow_path(
        lmid: libc::Lmid_t,
        file: *const libc::c_char,
        flags: libc::c_int,
    ) -> *mut libc::c_void {
        resolve();
        // SAFETY: dlmopen's C signature; the caller's arguments.
        match unsafe { real::func::<DlmopenFn>(&real::DLMOPEN) } {
            // SAFETY: as above.
            Some(f) => unsafe { f(lmid, file, flags) },
            None => std::ptr::null_mut(),
        }
    }

    type DlmopenFn =
        unsafe extern "C" fn(libc::Lmid_t, *const libc::c_char, libc::c_int) -> *mut libc::c_void;

    /// # Safety
    /// Called by C with dlmopen(3)'s arguments (`lmid` in rdi, `file` in rsi, `flags` in edx).
    #[unsafe(naked)]
    #[no_mangle]
    pub unsafe extern "C" fn dlmopen(
        _lmid: libc::Lmid_t,
        _file: *const libc::c_char,
        _flags: libc::c_int,
    ) -> *mut libc::c_void {
        // The base namespace (lmid 0) is dlopen: clear RTLD_DEEPBIND and tail-jump. Any other
        // asks `dlmopen_elsewhere` (three pushes keep the stack aligned), which records it and
        // says whether it may go ahead; if not, return NULL.
        core::arch::naked_asm!(
            "test rdi, rdi",
            "jz 2f",
            "push rdi",
            "push rsi",
            "push rdx",
            "mov rdi, rsi",
            "call {decide}",
            "pop rdx",
            "pop rsi",
            "pop rdi",
            "test rax, rax",
            "jnz 2f",
            "ret",
            "2:",
            "and edx, -9",
            "mov rax, qword ptr [rip + {real}]",
            "test rax, rax",
            "jz 3f",
            "jmp rax",
            "3:",
            "jmp {slow}",
            decide = sym super::dlmopen_elsewhere,
            real = sym EGRESS_REAL_DLMOPEN,
            slow = sym dlmopen_slow_path,
        )
    }
}

use crate::real;

/// Decides a `dlmopen` into a namespace other than the base one: records it, and returns
/// whether it may go ahead (audit mode, or `--allow-unguarded` at every level).
///
/// # Safety
/// `file` must be null or NUL-terminated.
unsafe extern "C" fn dlmopen_elsewhere(file: *const libc::c_char) -> usize {
    let name = if file.is_null() {
        &b"(null)"[..]
    } else {
        // SAFETY: as the caller promises: a NUL-terminated string.
        unsafe { std::ffi::CStr::from_ptr(file) }.to_bytes()
    };
    let allowed = super::check_with(true, false, |loaded| {
        let allowed = match loaded.policy {
            Ok(view) => view.mode() == egress_policy::Mode::Audit || view.allow_unguarded(),
            Err(_) => false,
        };
        // SAFETY: getpid has no preconditions; no argv.
        unsafe {
            crate::channel::unguarded(
                loaded,
                libc::getpid(),
                name,
                std::ptr::null(),
                "dlmopen into a new link-map namespace: its own libc, without the guard",
                !allowed,
            )
        };
        allowed
    });
    if allowed {
        #[cfg(target_arch = "x86_64")]
        x86_64::resolve();
        return 1;
    }
    // dlerror() must say why: a failed open of a path that names the reason sets it.
    if let Some(dlopen) = {
        // SAFETY: DlopenFn is dlopen's C signature.
        unsafe { real::func::<real::DlopenFn>(&real::DLOPEN) }
    } {
        let why = c"/egress-run refused dlmopen into a new namespace (the guard cannot enter it)";
        // SAFETY: a NUL-terminated path that does not exist; dlopen fails and sets dlerror.
        unsafe { dlopen(why.as_ptr(), libc::RTLD_LAZY) };
    }
    0
}

/// Resolves the real function the hook jumps to (called once at initialisation).
pub fn resolve() {
    #[cfg(target_arch = "x86_64")]
    x86_64::resolve();
}
