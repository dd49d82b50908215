//! Which shared object's code made a call: the report's `caller` field.
//!
//! On x86-64 the exported `connect`, `sendto`, `sendmsg` and `getaddrinfo` are small naked
//! stubs that pass their return address to the hook as one more argument (`exported_with_caller!`);
//! the hook keeps it in a thread-local for the call's duration (`Set`). Folding keys on the
//! address itself (one word); only an attempt's first line looks the address up among the
//! loaded objects (`dl_iterate_phdr`, whose lock is recursive and reset in forked children),
//! and names the object unless it is the program itself or this library.

use std::cell::Cell;

thread_local! {
    static CALLER: Cell<usize> = const { Cell::new(0) };
    // The Python code behind this thread's next hooked call (`module:function`), set by the
    // Python package's audit hook just before the call. Cleared (its length set to 0) when
    // that call's hook returns, so it never names a later call of native code. The length
    // alone is read on every hooked call.
    static PY_CALLER_LEN: Cell<u8> = const { Cell::new(0) };
    static PY_CALLER: Cell<[u8; PY_CALLER_MAX]> = const { Cell::new([0; PY_CALLER_MAX]) };
}

/// The longest `py_caller` kept (longer ones are cut).
pub const PY_CALLER_MAX: usize = 127;

/// Sets (or, empty, clears) the Python caller of this thread's next hooked call.
pub fn set_py_caller(name: &[u8]) {
    let n = name.len().min(PY_CALLER_MAX);
    if n > 0 {
        let mut v = [0u8; PY_CALLER_MAX];
        v[..n].copy_from_slice(&name[..n]);
        let _ = PY_CALLER.try_with(|c| c.set(v));
    }
    let _ = PY_CALLER_LEN.try_with(|c| c.set(n as u8));
}

/// Runs `f` with this thread's Python caller, if one is set.
pub fn with_py_caller<T>(f: impl FnOnce(&[u8]) -> T) -> Option<T> {
    let n = usize::from(PY_CALLER_LEN.try_with(|c| c.get()).unwrap_or(0));
    if n == 0 {
        return None;
    }
    let v = PY_CALLER.try_with(|c| c.get()).ok()?;
    Some(f(&v[..n.min(PY_CALLER_MAX)]))
}

/// The return address of the hooked call running on this thread (0: unknown).
pub fn current() -> usize {
    CALLER.try_with(|c| c.get()).unwrap_or(0)
}

/// Sets this thread's caller until dropped (then restores the previous one: a signal handler's
/// hook may run inside another).
pub struct Set(usize);

impl Set {
    pub fn new(addr: usize) -> Set {
        Set(CALLER.try_with(|c| c.replace(addr)).unwrap_or(0))
    }
}

impl Drop for Set {
    fn drop(&mut self) {
        let _ = CALLER.try_with(|c| c.set(self.0));
        if self.0 == 0 {
            // The outermost hooked call is over: its Python caller is spent.
            let _ = PY_CALLER_LEN.try_with(|c| c.set(0));
        }
    }
}

struct Search<'a> {
    addr: usize,
    out: &'a mut [u8],
    len: usize,
    found: bool,
    main: bool,
}

unsafe extern "C" fn visit(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: `data` is the Search that `name_of` passed, alive for the whole iteration.
    let s = unsafe { &mut *data.cast::<Search>() };
    // SAFETY: the loader passes a valid dl_phdr_info for the duration of the callback.
    let info = unsafe { &*info };
    let base = info.dlpi_addr as usize;
    let headers: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() {
        &[]
    } else {
        // SAFETY: dlpi_phdr points to dlpi_phnum program headers of a loaded object.
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
    };
    let inside = headers.iter().any(|h| {
        let start = base.wrapping_add(h.p_vaddr as usize);
        h.p_type == libc::PT_LOAD && s.addr >= start && s.addr - start < h.p_memsz as usize
    });
    if !inside {
        return 0;
    }
    s.found = true;
    let name: &[u8] = if info.dlpi_name.is_null() {
        b""
    } else {
        // SAFETY: dlpi_name is a NUL-terminated path (empty for the program).
        unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }.to_bytes()
    };
    s.main = name.is_empty();
    let base_name = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
    let n = base_name.len().min(s.out.len());
    s.out[..n].copy_from_slice(&base_name[..n]);
    s.len = n;
    1
}

/// The file name of the shared object holding `addr`, written into `out`; None for the program
/// itself, this library, or an address in no loaded object.
pub fn name_of(addr: usize, out: &mut [u8]) -> Option<usize> {
    if addr == 0 {
        return None;
    }
    let mut s = Search {
        addr,
        out,
        len: 0,
        found: false,
        main: false,
    };
    // SAFETY: `visit` matches dl_iterate_phdr's callback type and reads only what the loader
    // passes; `s` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut s as *mut Search).cast()) };
    let ours = name_of_self(&s.out[..s.len]);
    (s.found && !s.main && s.len > 0 && !ours).then_some(s.len)
}

/// True for this library's own file name.
fn name_of_self(name: &[u8]) -> bool {
    name == b"libegress_preload.so"
}

/// Defines an exported libc function as a stub passing its return address as one more
/// argument to `$inner` (an `unsafe extern "C" fn` with the same arguments plus `usize`).
/// Up to five arguments the address goes in the next register and the stub jumps; with six it
/// goes on the stack, as the seventh argument.
macro_rules! exported_with_caller {
    ($name:ident => $inner:path, ($($arg:ident : $ty:ty),*) -> $ret:ty, reg $reg:literal) => {
        /// # Safety
        /// Called by C with the libc function's arguments.
        #[cfg(target_arch = "x86_64")]
        #[unsafe(naked)]
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            core::arch::naked_asm!(
                concat!("mov ", $reg, ", qword ptr [rsp]"),
                "jmp {inner}",
                inner = sym $inner,
            )
        }

        /// # Safety
        /// Called by C with the libc function's arguments.
        #[cfg(not(target_arch = "x86_64"))]
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            // SAFETY: the caller's own arguments.
            unsafe { $inner($($arg),*, 0) }
        }
    };
    ($name:ident => $inner:path, ($($arg:ident : $ty:ty),*) -> $ret:ty, stack) => {
        /// # Safety
        /// Called by C with the libc function's arguments.
        #[cfg(target_arch = "x86_64")]
        #[unsafe(naked)]
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            // The return address pushed again is the seventh argument; one push keeps the
            // stack 16-byte aligned at the call.
            core::arch::naked_asm!(
                "push qword ptr [rsp]",
                "call {inner}",
                "add rsp, 8",
                "ret",
                inner = sym $inner,
            )
        }

        /// # Safety
        /// Called by C with the libc function's arguments.
        #[cfg(not(target_arch = "x86_64"))]
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            // SAFETY: the caller's own arguments.
            unsafe { $inner($($arg),*, 0) }
        }
    };
}
pub(crate) use exported_with_caller;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_libc_address_is_named_and_unknown_ones_are_not() {
        let mut out = [0u8; 256];
        let n =
            name_of(libc::getpid as *const () as usize, &mut out).expect("libc is a shared object");
        assert!(out[..n].starts_with(b"libc.so"), "{:?}", &out[..n]);
        assert_eq!(name_of(0, &mut out), None);
        assert_eq!(name_of(8, &mut out), None);
    }

    #[test]
    fn the_caller_is_set_for_a_call_and_restored() {
        assert_eq!(current(), 0);
        {
            let _a = Set::new(10);
            {
                let _b = Set::new(20);
                assert_eq!(current(), 20);
            }
            assert_eq!(current(), 10);
        }
        assert_eq!(current(), 0);
    }

    #[test]
    fn the_python_caller_lasts_until_the_outermost_hooked_call_returns() {
        assert_eq!(with_py_caller(|p| p.to_vec()), None);
        set_py_caller(b"pkg.mod:send");
        {
            let _outer = Set::new(10);
            {
                let _inner = Set::new(20);
            }
            assert_eq!(
                with_py_caller(|p| p.to_vec()),
                Some(b"pkg.mod:send".to_vec())
            );
        }
        assert_eq!(with_py_caller(|p| p.to_vec()), None);
        set_py_caller(&[b'x'; 300]);
        assert_eq!(with_py_caller(|p| p.len()), Some(PY_CALLER_MAX));
        set_py_caller(b"");
        assert_eq!(with_py_caller(|p| p.len()), None);
    }
}
