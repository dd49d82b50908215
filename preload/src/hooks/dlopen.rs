//! `dlopen`: a library opened with `RTLD_DEEPBIND` binds its own `connect` straight to libc's,
//! past this library. The hook clears that flag and continues in the real `dlopen`.
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

    pub fn resolve() {
        EGRESS_REAL_DLOPEN.store(real::DLOPEN.get(), Ordering::Release);
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
}

/// Resolves the real function the hook jumps to (called once at initialisation).
pub fn resolve() {
    #[cfg(target_arch = "x86_64")]
    x86_64::resolve();
}
