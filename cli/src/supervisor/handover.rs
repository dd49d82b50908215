//! Listeners handed over from deeper in the tree: a guarded process about to exec a program
//! the library cannot enter puts itself under the filter, connects here (before, so that the
//! connect is not trapped), writes the listener's descriptor number, and waits for one byte.
//! The launcher takes the listener with `pidfd_getfd` from the connecting process (its
//! credentials, not its word, name it), answers, and supervises it; the process then closes
//! its own copy and execs. A process that gets no answer closes its listener, and its trapped
//! calls fail with ENOSYS: closed, never open.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::Arc;

use egress_policy::Locator;

use super::Layer;

/// Opens the handover socket and serves it from a thread of its own.
pub fn start(layer: &Arc<Layer>, locator: &Locator) -> std::io::Result<()> {
    let mut name = [0u8; 64];
    let n = locator.kernel_socket_name(&mut name);
    let addr = SocketAddr::from_abstract_name(&name[..n])?;
    let listener = UnixListener::bind_addr(&addr)?;
    let layer = Arc::clone(layer);
    std::thread::Builder::new()
        .name("egress-seccomp-handover".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                take(&layer, stream);
            }
        })
        .map(|_| ())
}

/// Takes one listener; answers `k` when it is supervised from now on.
fn take(layer: &Arc<Layer>, mut stream: UnixStream) {
    let Some(pid) = peer_pid(&stream) else { return };
    let mut number = [0u8; 4];
    if stream.read_exact(&mut number).is_err() {
        return;
    }
    let fd = i32::from_ne_bytes(number);
    let Some(listener) = grab(pid, fd) else {
        return;
    };
    if !is_seccomp_listener(&listener) || layer.supervise(listener).is_err() {
        return;
    }
    let _ = stream.write_all(b"k");
}

fn peer_pid(stream: &UnixStream) -> Option<i32> {
    // SAFETY: ucred is plain data filled in by getsockopt.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are writable and sized for SO_PEERCRED.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0 && cred.pid > 0).then_some(cred.pid)
}

/// A duplicate of descriptor `fd` of process `pid`.
fn grab(pid: i32, fd: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open with a pid and no flags.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd with our pidfd, a number in its table, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_getfd,
            pidfd.as_raw_fd(),
            fd,
            0 as libc::c_uint,
        )
    };
    // SAFETY: a fresh descriptor we own.
    (r >= 0).then(|| unsafe { OwnedFd::from_raw_fd(r as i32) })
}

fn is_seccomp_listener(fd: &OwnedFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .is_ok_and(|p| p.as_os_str() == "anon_inode:seccomp notify")
}
