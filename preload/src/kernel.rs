//! Entering the kernel layer before an exec of a program the library cannot enter (static,
//! Go): this thread puts itself under the run's seccomp filter and hands the listener to the
//! launcher, which from then on decides the trapped calls of the program and of everything it
//! starts (cli/src/supervisor). Plain system calls on stack buffers only: this runs in
//! `vfork` children.

use egress_policy::seccomp::{filter, MAX_LEN, PROBE_ADDR, PROBE_LEN};
use egress_policy::Locator;
use libc::{c_int, c_long};

use crate::real;

type SyscallFn = unsafe extern "C" fn(c_long, ...) -> c_long;

/// How long the launcher may take to answer a handover: it answers at once unless it is gone
/// or stopped.
const ANSWER_MS: c_int = 10_000;

/// Why the layer could not be entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Nothing changed: the launcher's handover socket cannot be reached, or the kernel
    /// refused the filter.
    NotEntered(&'static str),
    /// The filter is on but the launcher did not take its listener: this thread's network
    /// calls now fail with ENOSYS (closed).
    Orphaned,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::NotEntered(why) => why,
            Failure::Orphaned => {
                "the kernel layer is unavailable (the launcher did not take the seccomp listener)"
            }
        }
    }
}

fn errno() -> c_int {
    crate::verdict::errno()
}

struct Fd(c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: our own descriptor.
        unsafe { libc::close(self.0) };
    }
}

/// Puts the calling thread under the run's filter, the listener taken over by the launcher of
/// `loc`.
pub fn enter(loc: &Locator) -> Result<(), Failure> {
    let sock = connect(loc).ok_or(Failure::NotEntered(
        "the kernel layer is unavailable (the launcher's handover socket cannot be reached)",
    ))?;
    let listener = match install() {
        Ok(fd) => Fd(fd),
        // Already under a filter with a listener: ours (an ancestor entered the layer, or
        // `--seccomp`) covers this exec too.
        Err(Busy) if whose_filter() == Some(loc.launcher_pid) => return Ok(()),
        Err(Busy) => return Err(Failure::NotEntered(ANOTHER_LISTENER)),
        Err(Refused(f)) => return Err(f),
    };
    let number = listener.0.to_ne_bytes();
    // SAFETY: writing 4 bytes of a stack buffer to our socket; not trapped (no address).
    let sent = unsafe { libc::write(sock.0, number.as_ptr().cast(), 4) } == 4;
    let mut pfd = libc::pollfd {
        fd: sock.0,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut answer = [0u8; 1];
    // SAFETY: one pollfd; a one-byte read into a stack buffer.
    let taken = sent
        && unsafe { libc::poll(&mut pfd, 1, ANSWER_MS) } == 1
        && unsafe { libc::read(sock.0, answer.as_mut_ptr().cast(), 1) } == 1
        && answer[0] == b'k';
    // Our copy of the listener goes in either case: a program holding its own listener could
    // answer its own calls.
    drop(listener);
    if taken {
        Ok(())
    } else {
        Err(Failure::Orphaned)
    }
}

/// Before spawning a trampoline that will [`enter`] the layer: refuses at once (as `enter`
/// would) when this process is under another run's listener already, which the trampoline
/// inherits.
pub fn may_enter(loc: &Locator) -> Result<(), Failure> {
    match whose_filter() {
        Some(pid) if pid != loc.launcher_pid => Err(Failure::NotEntered(ANOTHER_LISTENER)),
        _ => Ok(()),
    }
}

const ANOTHER_LISTENER: &str =
    "the kernel layer is unavailable (the process is already under another seccomp listener)";

fn connect(loc: &Locator) -> Option<Fd> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    let fd = Fd(fd);
    let mut name = [0u8; 64];
    let n = loc.kernel_socket_name(&mut name);
    let (addr, len) = crate::sock::abstract_addr(&name[..n]);
    // SAFETY: ConnectFn is connect's C signature.
    let connect = unsafe { real::func::<real::ConnectFn>(&real::CONNECT) }?;
    // SAFETY: the real connect with a valid sockaddr_un of `len` bytes.
    let ok = unsafe { connect(fd.0, (&addr as *const libc::sockaddr_un).cast(), len) } == 0;
    ok.then_some(fd)
}

/// Why `install` failed.
enum Install {
    /// The thread is under a filter that has a listener already.
    Busy,
    Refused(Failure),
}
use Install::{Busy, Refused};

/// The pid of the launcher whose supervisor answers this thread's trapped calls, if any.
fn whose_filter() -> Option<u32> {
    // SAFETY: SyscallFn is syscall's C signature.
    let syscall = unsafe { real::func::<SyscallFn>(&real::SYSCALL) }?;
    // SAFETY: connect(-1, PROBE_ADDR, PROBE_LEN): no memory is read by anyone.
    let r = unsafe {
        syscall(
            libc::SYS_connect,
            -1 as c_long,
            PROBE_ADDR as c_long,
            PROBE_LEN as c_long,
        )
    };
    u32::try_from(r).ok().filter(|&pid| pid > 0)
}

/// no-new-privs, then the filter with a new listener (waiting killably where the kernel
/// can: Go's preemption signals).
fn install() -> Result<c_int, Install> {
    let program = filter(None);
    let mut insns = [libc::sock_filter {
        code: 0,
        jt: 0,
        jf: 0,
        k: 0,
    }; MAX_LEN];
    for (out, i) in insns.iter_mut().zip(program.as_slice()) {
        *out = libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        };
    }
    let prog = libc::sock_fprog {
        len: program.len as libc::c_ushort,
        filter: insns.as_mut_ptr(),
    };
    // SAFETY: SyscallFn is syscall's C signature.
    let syscall = unsafe { real::func::<SyscallFn>(&real::SYSCALL) }.ok_or(Refused(
        Failure::NotEntered("the kernel layer is unavailable (libc's syscall not found)"),
    ))?;
    // SAFETY: prctl with plain arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Refused(Failure::NotEntered(
            "the kernel layer is unavailable (no-new-privs could not be set)",
        )));
    }
    let mut flags =
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    loop {
        // SAFETY: seccomp(SET_MODE_FILTER, flags, &prog); prog and insns outlive the call.
        let fd = unsafe {
            syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as c_long,
                flags as c_long,
                &prog as *const libc::sock_fprog,
            )
        };
        if fd >= 0 {
            return Ok(fd as c_int);
        }
        match errno() {
            libc::EINVAL if flags & libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV != 0 => {
                flags &= !libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
            }
            libc::EBUSY => return Err(Busy),
            _ => {
                return Err(Refused(Failure::NotEntered(
                    "the kernel layer is unavailable (this kernel refused the seccomp filter)",
                )))
            }
        }
    }
}

/// The stub's address in this process (0: not mapped), for calls the library has decided.
static STUB: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

type StubFn =
    unsafe extern "C" fn(c_long, c_long, c_long, c_long, c_long, c_long, c_long) -> c_long;

/// Under `--seccomp`: maps the run's system call stub at its fixed address (once per process
/// image; a forked child inherits it). Where the page is taken, the library's calls go through
/// libc and pay the supervisor's round trip instead (decided there again).
pub fn map_stub(loc: &Locator) {
    use egress_policy::seccomp::STUB_CODE;
    use std::sync::atomic::Ordering;
    let at = loc.stub_addr() as usize;
    if STUB.load(Ordering::Acquire) == at {
        return;
    }
    // SAFETY: a fresh private anonymous page at an address nothing else uses
    // (MAP_FIXED_NOREPLACE fails rather than replace a mapping).
    let p = unsafe {
        libc::mmap(
            at as *mut libc::c_void,
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED || p as usize != at {
        return;
    }
    // SAFETY: the page is ours, writable, 4096 bytes; then made executable and read-only.
    let ok = unsafe {
        std::ptr::copy_nonoverlapping(STUB_CODE.as_ptr(), p.cast::<u8>(), STUB_CODE.len());
        libc::mprotect(p, 4096, libc::PROT_READ | libc::PROT_EXEC) == 0
    };
    if ok {
        STUB.store(at, Ordering::Release);
    }
}

/// Makes system call `nr` through the stub, as libc's functions return (-1 and errno on
/// failure); None where there is no stub (not `--seccomp`, or the page was taken).
///
/// # Safety
/// The arguments of system call `nr`, as its libc wrapper would pass them.
pub unsafe fn decided(nr: c_long, a: [c_long; 6]) -> Option<c_long> {
    let at = STUB.load(std::sync::atomic::Ordering::Acquire);
    if at == 0 {
        return None;
    }
    // SAFETY: the page holds STUB_CODE, a function of this signature.
    let stub: StubFn = unsafe { std::mem::transmute::<usize, StubFn>(at) };
    // SAFETY: as the caller promises.
    let r = unsafe { stub(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if (-4095..0).contains(&r) {
        crate::verdict::set_errno(-r as c_int);
        return Some(-1);
    }
    Some(r)
}

/// Around an allowed name lookup under `--seccomp`: libc's resolver sends through internal
/// calls no hook sees, which the filter traps; this tells the supervisor that this thread may
/// reach the name servers until the window closes.
pub struct LookupWindow(bool);

impl LookupWindow {
    pub fn open(dns: bool) -> LookupWindow {
        let open = dns && STUB.load(std::sync::atomic::Ordering::Acquire) != 0;
        if open {
            lookup_call(egress_policy::seccomp::LOOKUP_BEGIN);
        }
        LookupWindow(open)
    }
}

impl Drop for LookupWindow {
    fn drop(&mut self) {
        if self.0 {
            lookup_call(egress_policy::seccomp::LOOKUP_END);
        }
    }
}

fn lookup_call(what: u64) {
    let saved = errno();
    // SAFETY: SyscallFn is syscall's C signature; connect(-1, WHAT, 0) reads no memory. Not
    // through the stub: the filter must trap it for the supervisor to see it.
    if let Some(syscall) = unsafe { real::func::<SyscallFn>(&real::SYSCALL) } {
        // SAFETY: as above.
        unsafe { syscall(libc::SYS_connect, -1 as c_long, what as c_long, 0 as c_long) };
    }
    crate::verdict::set_errno(saved);
}
