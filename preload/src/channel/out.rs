//! The channel's one way out: every record leaves through `send` (a datagram to the
//! launcher of the record's level) or `check_in` (a process record, into the shared check-in
//! area when there is one, else `send`).
//!
//! Datagrams go on a socket of our own, never on a descriptor of the program's: before each
//! send the socket's inode is checked, because the program may have closed our descriptor and
//! reused its number. Each is framed with the run's event key (`egress_policy::event`) and sent
//! before the guarded call proceeds or is refused, so nothing is lost to a crash, `SIGKILL`,
//! `_exit` or `exec`.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use egress_policy::{Locator, MAX_LEVELS};
use libc::c_int;

use crate::real;
use crate::state::Loaded;

/// Each level's event socket (a nested run reports to every level's launcher).
static SOCK_FD: [AtomicI32; MAX_LEVELS] = [const { AtomicI32::new(-1) }; MAX_LEVELS];
static SOCK_INO: [AtomicU64; MAX_LEVELS] = [const { AtomicU64::new(0) }; MAX_LEVELS];

/// Each level's launcher died before its run ended (its socket is gone, and it never said the
/// run was over): that level refuses every new attempt in block mode (`lost`).
static LOST: [AtomicBool; MAX_LEVELS] = [const { AtomicBool::new(false) }; MAX_LEVELS];

/// Whether `level`'s launcher was found dead before its run ended.
pub fn lost(level: usize) -> bool {
    LOST.get(level).is_some_and(|l| l.load(Ordering::Relaxed))
}

fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The launcher's socket refused an event. After a normal end of the run (the launcher says
/// so in the shared area) that only means nobody records this process any more (a daemon that
/// outlived the run); otherwise the launcher was killed, and this level fails closed.
#[cold]
fn launcher_gone(loaded: &Loaded) {
    let ended = loaded.counters().is_some_and(|c| c.run_ended());
    if !ended {
        if let Some(l) = LOST.get(loaded.level) {
            l.store(true, Ordering::Relaxed);
        }
    }
}

/// A `process` record: into the shared check-in area when the process has one (no system
/// call, and the launcher need not wake up for it), else as a datagram.
pub fn check_in(loaded: &Loaded, body: &[u8]) {
    let written = loaded.counters().is_some_and(|c| c.check_in(body));
    if !written {
        send(loaded, body);
    }
}

fn inode_of(fd: c_int) -> Option<u64> {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is valid for writes.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st.st_ino)
}

/// Our connected event socket, opened (again) if the program closed or replaced it, and kept
/// at a high number (`highfd`). Returns the descriptor and whether it is private to this one
/// send (to be closed after).
fn socket(loc: &Locator, level: usize) -> Option<(c_int, bool)> {
    let (sock_fd, sock_ino) = (&SOCK_FD[level], &SOCK_INO[level]);
    let fd = sock_fd.load(Ordering::Acquire);
    if fd >= 0 && inode_of(fd) == Some(sock_ino.load(Ordering::Acquire)) {
        return Some((fd, false));
    }
    let new = open_socket(loc)?;
    // Kept only at a high number, out of the program's way (a soft RLIMIT_NOFILE too low for
    // one: a socket for this one send, so the program still gets its native numbers).
    let (new, parked) = crate::highfd::park(new);
    if !parked {
        return Some((new, true));
    }
    let Some(ino) = inode_of(new) else {
        crate::highfd::close(new);
        return None;
    };
    // The old number is never closed by us: it may belong to the program by now.
    match sock_fd.compare_exchange(fd, new, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            sock_ino.store(ino, Ordering::Release);
            Some((new, false))
        }
        // Another thread replaced it first: use ours for this one send, then close it.
        Err(_) => Some((new, true)),
    }
}

fn open_socket(loc: &Locator) -> Option<c_int> {
    // SAFETY: plain socket(2); not hooked.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    let mut name = [0u8; 64];
    let n = loc.socket_name(&mut name);
    let (addr, len) = crate::sock::abstract_addr(&name[..n]);
    let args = [
        fd as libc::c_long,
        (&addr as *const libc::sockaddr_un) as libc::c_long,
        len as libc::c_long,
        0,
        0,
        0,
    ];
    // SAFETY: connect with a valid sockaddr_un of `len` bytes, through the kernel layer's stub
    // under `--seccomp` (our own socket and address: nothing to decide).
    if let Some(r) = unsafe { crate::kernel::decided(libc::SYS_connect, args) } {
        if r == 0 {
            return Some(fd);
        }
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        return None;
    }
    // SAFETY: the real connect, with a valid sockaddr_un of `len` bytes.
    let ok = unsafe { real::func::<real::ConnectFn>(&real::CONNECT) }.is_some_and(|connect| {
        // SAFETY: as above.
        unsafe { connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) == 0 }
    });
    if ok {
        Some(fd)
    } else {
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        None
    }
}

/// Sends one event to the launcher of `loaded`'s level, framed with the run's event key
/// (`egress_policy::event`): the launcher drops datagrams without it. A process without a
/// valid policy has no key and sends zeros; the launcher then checks who sent it.
pub fn send(loaded: &Loaded, msg: &[u8]) {
    let Some(loc) = loaded.locator else { return };
    let key = match &loaded.policy {
        Ok(view) => view.event_key(),
        Err(_) => [0; egress_policy::wire::EVENT_KEY_LEN],
    };
    let header = egress_policy::event::header(&key);
    let Some((fd, private)) = socket(&loc, loaded.level) else {
        if errno() == libc::ECONNREFUSED {
            launcher_gone(loaded);
        }
        return;
    };
    let Some(sendmsg) = (unsafe {
        // SAFETY: SendmsgFn is sendmsg's C signature.
        real::func::<real::SendmsgFn>(&real::SENDMSG)
    }) else {
        return;
    };
    let mut iov = [
        libc::iovec {
            iov_base: header.as_ptr() as *mut libc::c_void,
            iov_len: header.len(),
        },
        libc::iovec {
            iov_base: msg.as_ptr() as *mut libc::c_void,
            iov_len: msg.len(),
        },
    ];
    // SAFETY: an all-zero msghdr is valid (no address, no control data).
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = iov.as_mut_ptr();
    hdr.msg_iovlen = iov.len() as _;
    // SAFETY: hdr names two iovecs over buffers valid for reads of their lengths; one datagram
    // on our connected socket. MSG_NOSIGNAL: a gone launcher must not kill the program.
    // Blocking when the launcher's queue is full is intended back-pressure.
    let sent = unsafe { sendmsg(fd, &hdr, libc::MSG_NOSIGNAL) };
    if sent < 0 && errno() == libc::ECONNREFUSED {
        launcher_gone(loaded);
    }
    if private {
        // A socket we opened for this send only (lost the race to publish it, or no high
        // number was free).
        crate::highfd::close(fd);
    }
}
