//! The thread whose system call waits for a decision: its memory, its descriptors, and the
//! notification that must still be pending for either to be trusted.

use std::io::Error;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A failure, as the errno to answer or to decide on.
pub type Errno = i32;

fn last_errno() -> Errno {
    Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// The trapped thread of one notification.
pub struct Target {
    /// Thread id, in the launcher's pid namespace.
    pub tid: i32,
    id: u64,
    listener: RawFd,
    pidfd: OwnedFd,
}

impl Target {
    /// Opens a pidfd for the thread that made notification `id`, and checks that the
    /// notification is still pending (so the pidfd names that thread, not a reused id).
    pub fn open(listener: RawFd, id: u64, tid: u32) -> Result<Target, Errno> {
        let tid = tid as i32;
        // A thread's own pidfd (Linux 6.9): Go dials from any thread.
        // SAFETY: pidfd_open takes a pid and flags.
        let mut fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid, libc::PIDFD_THREAD) };
        if fd < 0 {
            // Older kernels: the thread group leader's (the descriptor table is shared).
            let tgid = tgid_of(tid).ok_or(libc::ESRCH)?;
            // SAFETY: as above.
            fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tgid, 0) };
        }
        if fd < 0 {
            return Err(last_errno());
        }
        // SAFETY: a fresh descriptor we own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let target = Target {
            tid,
            id,
            listener,
            pidfd,
        };
        if !target.pending() {
            return Err(libc::ESRCH);
        }
        Ok(target)
    }

    /// True while the notification is pending: the thread still waits in that call.
    pub fn pending(&self) -> bool {
        let mut id = self.id;
        // SAFETY: ID_VALID reads a u64.
        unsafe { libc::ioctl(self.listener, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id) == 0 }
    }

    /// `len` bytes of the target's memory at `addr`, all or nothing: EFAULT when some are not
    /// mapped (what the kernel would have answered), another errno when the launcher may not
    /// read them (a non-dumpable program).
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, Errno> {
        let mut buf = vec![0u8; len];
        if len == 0 {
            return Ok(buf);
        }
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len,
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        };
        // SAFETY: local describes our buffer of `len` bytes; remote is only read by the kernel.
        let n = unsafe { libc::process_vm_readv(self.tid, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(last_errno());
        }
        if n as usize != len {
            return Err(libc::EFAULT);
        }
        // The thread id may have been reused between the read and now: only a pending
        // notification proves the bytes are the caller's.
        if !self.pending() {
            return Err(libc::ESRCH);
        }
        Ok(buf)
    }

    /// Writes `bytes` into the target's memory (sendmmsg's `msg_len`); best effort.
    pub fn write(&self, addr: u64, bytes: &[u8]) {
        let local = libc::iovec {
            iov_base: bytes.as_ptr().cast_mut().cast(),
            iov_len: bytes.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        if self.pending() {
            // SAFETY: local describes `bytes`; remote is the caller's array it passed to us.
            unsafe { libc::process_vm_writev(self.tid, &local, 1, &remote, 1, 0) };
        }
    }

    /// A duplicate of the target's descriptor `fd` (same open file description: the same
    /// socket, flags and state).
    pub fn descriptor(&self, fd: u64) -> Result<OwnedFd, Errno> {
        let Ok(fd) = i32::try_from(fd as i64) else {
            return Err(libc::EBADF);
        };
        // SAFETY: pidfd_getfd takes our pidfd, a number in the target's table and flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_getfd,
                self.pidfd.as_raw_fd(),
                fd,
                0 as libc::c_uint,
            )
        };
        if r < 0 {
            return Err(last_errno());
        }
        // SAFETY: a fresh descriptor we own (pidfd_getfd sets close-on-exec).
        Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
    }

    /// Sends the target thread `sig` (SIGPIPE that a send of ours caught instead of it).
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: pidfd_send_signal with our pidfd, no siginfo, no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0 as libc::c_uint,
            )
        };
    }
}

/// The process (thread group) of thread `tid`, from /proc.
pub fn tgid_of(tid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}
