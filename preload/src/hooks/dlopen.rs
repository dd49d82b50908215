//! `dlopen`: a library opened with `RTLD_DEEPBIND` binds its own `connect` straight to libc's,
//! past this library. The hook lets the loader keep the flag's meaning (the plugin's own
//! definitions win over the program's) and then points the plugin's, and its new
//! dependencies', slots for the functions the guard hooks back at the guard (`rebind`).
//!
//! `dlmopen` into any namespace but the base one loads a library with its own copy of libc and
//! without this library: its `connect` would go out unchecked. Block mode refuses it (NULL,
//! with a `dlerror` message saying why) and every mode records it as an unguarded program;
//! `dlmopen(LM_ID_BASE, ...)` is `dlopen` (there `RTLD_DEEPBIND` is still cleared).
//!
//! glibc's `dlopen` looks at its return address to find the caller (whose namespace it loads
//! into, whose RPATH/RUNPATH and `$ORIGIN` it searches), so the hook must not become the
//! caller. On x86-64 it is a naked function: without `RTLD_DEEPBIND` it jumps (not calls) to
//! the real function. With it, the hook must run again after the real `dlopen`, so it calls the
//! real function with a return address inside the caller's object: a `ret` byte (0xC3) found in
//! the caller's executable segment, under which the hook's own return address sits. glibc
//! sees the caller; the `ret` comes back to the hook. (Not with a shadow stack, which would
//! refuse that `ret`: there, and when the caller is in no object, the hook is the caller.)
//! Elsewhere it is not interposed yet.

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::dynsym;
    use crate::mem;
    use crate::real;
    use crate::rebind;
    use crate::verdict::{errno, set_errno};

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
        // Without RTLD_DEEPBIND (0x8): tail-jump, the real dlopen sees the program's return
        // address, as if called directly. The atomic is read as a plain aligned 8-byte load,
        // which is atomic on x86-64. With it: tail-jump to `deep` with the return address as a
        // third argument; `deep` returns to the program.
        core::arch::naked_asm!(
            "test esi, 8",
            "jnz 3f",
            "mov rax, qword ptr [rip + {real}]",
            "test rax, rax",
            "jz 2f",
            "jmp rax",
            "2:",
            "jmp {slow}",
            "3:",
            "mov rdx, qword ptr [rsp]",
            "jmp {deep}",
            real = sym EGRESS_REAL_DLOPEN,
            slow = sym slow_path,
            deep = sym deep,
        )
    }

    /// `dlopen` with `RTLD_DEEPBIND`: the real one (glibc seeing `caller`'s object as the
    /// caller when it can), then the new objects' hooked slots redirected to the guard.
    unsafe extern "C" fn deep(
        file: *const libc::c_char,
        flags: libc::c_int,
        caller: usize,
    ) -> *mut libc::c_void {
        let mut real = EGRESS_REAL_DLOPEN.load(Ordering::Acquire);
        if real == 0 {
            resolve();
            real = EGRESS_REAL_DLOPEN.load(Ordering::Acquire);
        }
        if real == 0 {
            return std::ptr::null_mut();
        }
        let mark = std::panic::catch_unwind(rebind::mark).ok();
        let gadget = std::panic::catch_unwind(|| return_gadget(caller)).unwrap_or(0);
        let handle = if gadget != 0 {
            // SAFETY: `real` is dlopen; `gadget` is the address of a `ret` instruction.
            unsafe { call_through(file, flags, real, gadget) }
        } else {
            // SAFETY: `real` is dlopen, with its C signature.
            unsafe { std::mem::transmute::<usize, real::DlopenFn>(real)(file, flags) }
        };
        if let (false, Some(mark)) = (handle.is_null(), mark) {
            let saved = errno();
            let _ = std::panic::catch_unwind(|| rebind::redirect(&mark));
            set_errno(saved);
        }
        handle
    }

    /// The address of a `ret` byte in the executable segment of the object holding `caller`
    /// (0: none, the caller is in no object, or a shadow stack is on).
    fn return_gadget(caller: usize) -> usize {
        const ARCH_SHSTK_STATUS: libc::c_int = 0x5005;
        let mut features: u64 = 0;
        // SAFETY: ARCH_SHSTK_STATUS writes one u64 (older kernels fail with EINVAL).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_SHSTK_STATUS,
                &mut features as *mut u64,
            )
        };
        if rc == 0 && features & 1 != 0 {
            return 0;
        }
        let mut found = 0;
        dynsym::walk(|object, span| {
            if !span.contains(caller) {
                return false;
            }
            for ph in object.phdrs() {
                let start = object.bias().wrapping_add(ph.p_vaddr as usize);
                let end = start.wrapping_add(ph.p_memsz as usize);
                // PT_LOAD, readable and executable, holding the caller.
                if ph.p_type != 1 || ph.p_flags & 5 != 5 || !(start <= caller && caller < end) {
                    continue;
                }
                found = scan_for_ret(start, end, caller);
            }
            true
        });
        found
    }

    /// The first 0xC3 byte at or after `caller` in `start..end`, else the last one before it;
    /// one page at a time, each checked readable first (a segment the program made
    /// execute-only is not read). 0: none.
    fn scan_for_ret(start: usize, end: usize, caller: usize) -> usize {
        const PAGE: usize = 4096;
        let find = |from: usize, to: usize, backwards: bool| -> usize {
            let mut page = if backwards {
                (to - 1) & !(PAGE - 1)
            } else {
                from & !(PAGE - 1)
            };
            loop {
                let lo = page.max(from);
                let hi = (page + PAGE).min(to);
                if lo < hi {
                    if !mem::readable(lo as *const u8, hi - lo) {
                        return 0;
                    }
                    // SAFETY: `lo..hi` lies in one readable page of a loaded segment.
                    let bytes = unsafe { std::slice::from_raw_parts(lo as *const u8, hi - lo) };
                    let hit = if backwards {
                        bytes.iter().rposition(|&b| b == 0xc3)
                    } else {
                        bytes.iter().position(|&b| b == 0xc3)
                    };
                    if let Some(i) = hit {
                        return lo + i;
                    }
                }
                if backwards {
                    if page <= from {
                        return 0;
                    }
                    page -= PAGE;
                } else {
                    page += PAGE;
                    if page >= to {
                        return 0;
                    }
                }
            }
        };
        match find(caller, end, false) {
            0 if caller > start => find(start, caller, true),
            found => found,
        }
    }

    /// Calls `real` (dlopen) with `gadget` as its return address and this function's return
    /// point under it: the real function returns to the `ret` at `gadget`, which returns here.
    /// Two pushes keep the alignment a call would give.
    ///
    /// # Safety
    /// `real` must be dlopen, `gadget` the address of a 0xC3 byte in executable memory.
    #[unsafe(naked)]
    unsafe extern "C" fn call_through(
        _file: *const libc::c_char,
        _flags: libc::c_int,
        _real: usize,
        _gadget: usize,
    ) -> *mut libc::c_void {
        core::arch::naked_asm!(
            "lea rax, [rip + 2f]",
            "push rax",
            "push rcx",
            "jmp rdx",
            "2:",
            "ret",
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

    #[cfg(test)]
    mod tests {
        use super::scan_for_ret;

        #[test]
        fn finds_the_next_ret_byte_else_the_one_before() {
            let mut code = vec![0x90u8; 3 * 4096];
            let start = code.as_ptr() as usize;
            let end = start + code.len();
            code[100] = 0xc3;
            assert_eq!(scan_for_ret(start, end, start + 5000), start + 100);
            code[9000] = 0xc3;
            assert_eq!(scan_for_ret(start, end, start + 5000), start + 9000);
            assert_eq!(scan_for_ret(start, end, start + 9000), start + 9000);
            code[100] = 0x90;
            code[9000] = 0x90;
            assert_eq!(scan_for_ret(start, end, start + 5000), 0);
        }
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
