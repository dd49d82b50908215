//! The one table of real libc functions, found with `dlsym(RTLD_NEXT, ...)`, and the real
//! `dlsym` itself, which the guard interposes too and so finds in libc's symbol table.
//!
//! Each entry is resolved on first use and cached in an atomic, so a hook that runs before the
//! constructor still reaches libc. `ensure_init` resolves the async-signal-safe ones up front
//! (`AT_INIT`), so that no look-up (which could allocate inside dlsym) happens in a signal
//! handler or a forked child of a threaded program.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::dynsym::{self, Span};

use libc::{
    addrinfo, c_char, c_int, c_uint, hostent, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t,
};

pub struct Real {
    name: &'static [u8],
    addr: AtomicUsize,
}

impl Real {
    const fn new(name: &'static [u8]) -> Self {
        Real {
            name,
            addr: AtomicUsize::new(0),
        }
    }

    /// The address `get` found, or 0 when it has not looked yet (or libc does not have it);
    /// never looks up (for code that may not call into the loader).
    pub fn cached(&self) -> usize {
        self.addr.load(Ordering::Acquire)
    }

    /// The real function's address, or 0 when libc does not have it.
    pub fn get(&self) -> usize {
        let cached = self.addr.load(Ordering::Acquire);
        if cached != 0 {
            return cached;
        }
        let Some(dlsym) = dlsym() else { return 0 };
        // SAFETY: `name` is a NUL-terminated literal; called from this library, RTLD_NEXT asks
        // for the next definition after it: libc's (or another preload's) symbol.
        let found = unsafe { dlsym(libc::RTLD_NEXT, self.name.as_ptr().cast()) } as usize;
        self.addr.store(found, Ordering::Release);
        found
    }
}

pub type DlsymFn = unsafe extern "C" fn(*mut libc::c_void, *const c_char) -> *mut libc::c_void;
pub type DlvsymFn =
    unsafe extern "C" fn(*mut libc::c_void, *const c_char, *const c_char) -> *mut libc::c_void;

static DLSYM_ADDR: AtomicUsize = AtomicUsize::new(0);
static LIBC_START: AtomicUsize = AtomicUsize::new(0);
static LIBC_END: AtomicUsize = AtomicUsize::new(0);

/// The real `dlsym`: the first definition after this library, read from the objects' own
/// symbol tables (asking `dlsym` would reach this library's hook). Cached; racing threads find
/// the same answer.
pub fn dlsym_addr() -> usize {
    let cached = DLSYM_ADDR.load(Ordering::Acquire);
    if cached != 0 {
        return cached;
    }
    let Some((addr, span)) = dynsym::next_function(c"dlsym", dlsym_addr as *const () as usize)
    else {
        return 0;
    };
    LIBC_START.store(span.start, Ordering::Relaxed);
    LIBC_END.store(span.end, Ordering::Relaxed);
    DLSYM_ADDR.store(addr, Ordering::Release);
    addr
}

pub fn dlsym() -> Option<DlsymFn> {
    let addr = dlsym_addr();
    // SAFETY: a non-zero address is the definition of `dlsym`, whose C signature DlsymFn is.
    (addr != 0).then(|| unsafe { std::mem::transmute::<usize, DlsymFn>(addr) })
}

/// The object that defines the real `dlsym`: libc (glibc 2.34 and later define every function
/// the guard hooks there).
pub fn libc_span() -> Span {
    dlsym_addr();
    Span {
        start: LIBC_START.load(Ordering::Relaxed),
        end: LIBC_END.load(Ordering::Relaxed),
    }
}

pub static CONNECT: Real = Real::new(b"connect\0");
pub static SENDTO: Real = Real::new(b"sendto\0");
pub static SENDMSG: Real = Real::new(b"sendmsg\0");
pub static SENDMMSG: Real = Real::new(b"sendmmsg\0");
pub static GETADDRINFO: Real = Real::new(b"getaddrinfo\0");
pub static GETHOSTBYNAME: Real = Real::new(b"gethostbyname\0");
pub static GETHOSTBYNAME2: Real = Real::new(b"gethostbyname2\0");
pub static GETHOSTBYNAME_R: Real = Real::new(b"gethostbyname_r\0");
pub static GETHOSTBYNAME2_R: Real = Real::new(b"gethostbyname2_r\0");

pub static EXECVE: Real = Real::new(b"execve\0");
pub static EXECVPE: Real = Real::new(b"execvpe\0");
pub static FEXECVE: Real = Real::new(b"fexecve\0");
pub static POSIX_SPAWN: Real = Real::new(b"posix_spawn\0");
pub static POSIX_SPAWNP: Real = Real::new(b"posix_spawnp\0");
pub static SYSCALL: Real = Real::new(b"syscall\0");
pub static RES_QUERY: Real = Real::new(b"res_query\0");
pub static RES_SEARCH: Real = Real::new(b"res_search\0");
pub static RES_QUERYDOMAIN: Real = Real::new(b"res_querydomain\0");
pub static RES_SEND: Real = Real::new(b"res_send\0");
pub static RES_NQUERY: Real = Real::new(b"res_nquery\0");
pub static RES_NSEARCH: Real = Real::new(b"res_nsearch\0");
pub static RES_NQUERYDOMAIN: Real = Real::new(b"res_nquerydomain\0");
pub static RES_NSEND: Real = Real::new(b"res_nsend\0");
pub static GETHOSTBYADDR: Real = Real::new(b"gethostbyaddr\0");
pub static GETHOSTBYADDR_R: Real = Real::new(b"gethostbyaddr_r\0");
pub static GETNAMEINFO: Real = Real::new(b"getnameinfo\0");
pub static SEND: Real = Real::new(b"send\0");
pub static GETADDRINFO_A: Real = Real::new(b"getaddrinfo_a\0");
pub static DLOPEN: Real = Real::new(b"dlopen\0");
pub static DLMOPEN: Real = Real::new(b"dlmopen\0");
pub static RCMD: Real = Real::new(b"rcmd\0");
pub static RCMD_AF: Real = Real::new(b"rcmd_af\0");
pub static REXEC: Real = Real::new(b"rexec\0");
pub static REXEC_AF: Real = Real::new(b"rexec_af\0");
pub static RUSEROK: Real = Real::new(b"ruserok\0");
pub static RUSEROK_AF: Real = Real::new(b"ruserok_af\0");
pub static IRUSEROK: Real = Real::new(b"iruserok\0");
pub static IRUSEROK_AF: Real = Real::new(b"iruserok_af\0");
pub static DLVSYM: Real = Real::new(b"dlvsym\0");
pub static EXECV: Real = Real::new(b"execv\0");
pub static EXECVP: Real = Real::new(b"execvp\0");
pub static EXECL: Real = Real::new(b"execl\0");
pub static EXECLE: Real = Real::new(b"execle\0");
pub static EXECLP: Real = Real::new(b"execlp\0");
pub static SYSTEM: Real = Real::new(b"system\0");
pub static POPEN: Real = Real::new(b"popen\0");
pub static WORDEXP: Real = Real::new(b"wordexp\0");
pub static EXECVEAT: Real = Real::new(b"execveat\0");
pub static SOCKET: Real = Real::new(b"socket\0");
pub static CLOSE: Real = Real::new(b"close\0");
pub static DUP: Real = Real::new(b"dup\0");
pub static DUP2: Real = Real::new(b"dup2\0");
pub static DUP3: Real = Real::new(b"dup3\0");
pub static CLOSE_RANGE: Real = Real::new(b"close_range\0");
pub static SETSOCKOPT: Real = Real::new(b"setsockopt\0");
/// `listen` and `bind` (for `loopback:own`, own.rs): resolved on first use.
pub static LISTEN: Real = Real::new(b"listen\0");
pub static BIND: Real = Real::new(b"bind\0");

/// The functions a program may call from a signal handler or between `fork` and `exec`
/// (async-signal-safe, or system-call wrappers used as such): resolved at initialisation, so
/// their hooks never run dlsym (which can take the loader's lock and allocate) in those
/// contexts. The rest (resolvers, `dlopen`, `system`, `popen`, `posix_spawn`, the PATH-searching
/// exec calls) must not be called there anyway, and resolve on first use: dlsym costs about
/// a microsecond each, paid by every process the guard enters.
static AT_INIT: [&Real; 16] = [
    &CONNECT,
    &SENDTO,
    &SENDMSG,
    &SENDMMSG,
    &SEND,
    &EXECVE,
    &EXECVEAT,
    &FEXECVE,
    &SYSCALL,
    &SOCKET,
    &CLOSE,
    &DUP,
    &DUP2,
    &DUP3,
    &CLOSE_RANGE,
    &SETSOCKOPT,
];

pub fn resolve_all() {
    dlsym_addr();
    for r in AT_INIT {
        r.get();
    }
    crate::hooks::dlopen::resolve();
}

pub type SetsockoptFn =
    unsafe extern "C" fn(c_int, c_int, c_int, *const libc::c_void, socklen_t) -> c_int;
pub type SocketFn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
/// `close` and `dup`: one descriptor in, an int out.
pub type CloseFn = unsafe extern "C" fn(c_int) -> c_int;
pub type Dup2Fn = unsafe extern "C" fn(c_int, c_int) -> c_int;
pub type Dup3Fn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
pub type CloseRangeFn = unsafe extern "C" fn(c_uint, c_uint, c_int) -> c_int;
pub type ConnectFn = unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int;
/// `bind` has connect's signature.
pub type BindFn = ConnectFn;
pub type ListenFn = unsafe extern "C" fn(c_int, c_int) -> c_int;
pub type SendtoFn = unsafe extern "C" fn(
    c_int,
    *const libc::c_void,
    size_t,
    c_int,
    *const sockaddr,
    socklen_t,
) -> ssize_t;
pub type DlopenFn = unsafe extern "C" fn(*const c_char, c_int) -> *mut libc::c_void;
pub type SendFn = unsafe extern "C" fn(c_int, *const libc::c_void, size_t, c_int) -> ssize_t;
pub type SendmsgFn = unsafe extern "C" fn(c_int, *const msghdr, c_int) -> ssize_t;
pub type SendmmsgFn = unsafe extern "C" fn(c_int, *mut mmsghdr, c_uint, c_int) -> c_int;
pub type GetaddrinfoFn = unsafe extern "C" fn(
    *const c_char,
    *const c_char,
    *const addrinfo,
    *mut *mut addrinfo,
) -> c_int;
pub type GethostbynameFn = unsafe extern "C" fn(*const c_char) -> *mut hostent;
pub type Gethostbyname2Fn = unsafe extern "C" fn(*const c_char, c_int) -> *mut hostent;
pub type GethostbynameRFn = unsafe extern "C" fn(
    *const c_char,
    *mut hostent,
    *mut c_char,
    size_t,
    *mut *mut hostent,
    *mut c_int,
) -> c_int;
pub type Gethostbyname2RFn = unsafe extern "C" fn(
    *const c_char,
    c_int,
    *mut hostent,
    *mut c_char,
    size_t,
    *mut *mut hostent,
    *mut c_int,
) -> c_int;

/// Casts a resolved address to its function type.
///
/// # Safety
/// `F` must be the C signature of the symbol `real` names.
pub unsafe fn func<F: Copy>(real: &Real) -> Option<F> {
    let addr = real.get();
    if addr == 0 {
        return None;
    }
    debug_assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<usize>());
    // SAFETY: the caller guarantees F is the symbol's function-pointer type; a non-null
    // address from dlsym is a valid function of that type.
    Some(unsafe { std::mem::transmute_copy::<usize, F>(&addr) })
}
pub type ExecveFn =
    unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;
pub type ExecveatFn = unsafe extern "C" fn(
    c_int,
    *const c_char,
    *const *const c_char,
    *const *const c_char,
    c_int,
) -> c_int;
pub type FexecveFn =
    unsafe extern "C" fn(c_int, *const *const c_char, *const *const c_char) -> c_int;
pub type PosixSpawnFn = unsafe extern "C" fn(
    *mut libc::pid_t,
    *const c_char,
    *const libc::posix_spawn_file_actions_t,
    *const libc::posix_spawnattr_t,
    *const *mut c_char,
    *const *mut c_char,
) -> c_int;
