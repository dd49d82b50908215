//! Asking the launcher for the policy: the last way a process obtains it, after its inherited
//! descriptor and `/proc/<launcher>/fd/N` (see `state::load_level`), for a process that lost
//! the descriptor and may not open the launcher's copy (it changed uid, or lives in another PID
//! namespace). The launcher's policy service (`egress_policy::POLICY_SERVICE_SUFFIX` says the
//! protocol) answers processes of its own tree with the sealed memfd; the caller verifies it
//! exactly as an inherited descriptor.
//!
//! Runs once, during initialisation: a few system calls, small stack buffers, no allocation.

use egress_policy::{Locator, POLICY_SERVICE_OK, POLICY_SERVICE_REFUSED};
use libc::c_int;

use crate::real;

/// Why no descriptor came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Nothing listens at the service's name (the launcher has exited), or no socket.
    Unreachable,
    /// The launcher answered that this process is not of its tree.
    Refused,
    /// An answer without a descriptor, or none within the wait.
    NoAnswer,
}

/// The most a process waits for the answer. The launcher answers at once (a thread of its own
/// does nothing else); this only bounds a stopped launcher.
const ANSWER_TIMEOUT_S: libc::time_t = 5;

/// Descriptors room is made for in one answer: one is expected, more are closed.
const MAX_FDS: usize = 4;

/// Asks the launcher of `loc` for its policy memfd; the descriptor is close-on-exec.
pub fn request(loc: &Locator) -> Result<c_int, Failure> {
    let fd = connect(loc)?;
    let answer = receive(fd);
    crate::highfd::close(fd);
    answer
}

fn connect(loc: &Locator) -> Result<c_int, Failure> {
    // SAFETY: SocketFn is socket's C signature.
    let socket =
        unsafe { real::func::<real::SocketFn>(&real::SOCKET) }.ok_or(Failure::Unreachable)?;
    // SAFETY: plain socket(2) through libc's own function.
    let fd = unsafe { socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Failure::Unreachable);
    }
    let timeout = libc::timeval {
        tv_sec: ANSWER_TIMEOUT_S,
        tv_usec: 0,
    };
    // SAFETY: SetsockoptFn is setsockopt's C signature; a timeval of its size.
    if let Some(setsockopt) = unsafe { real::func::<real::SetsockoptFn>(&real::SETSOCKOPT) } {
        // SAFETY: as above; fd is ours.
        unsafe {
            setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
    }
    let mut name = [0u8; 64];
    let n = loc.policy_service_name(&mut name);
    let (addr, len) = crate::sock::abstract_addr(&name[..n]);
    // SAFETY: ConnectFn is connect's C signature; the real connect with a valid sockaddr_un of
    // `len` bytes (not our hook: this is no egress, and the policy is being loaded).
    let ok = unsafe { real::func::<real::ConnectFn>(&real::CONNECT) }.is_some_and(|connect| {
        // SAFETY: as above.
        unsafe { connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) == 0 }
    });
    if ok {
        Ok(fd)
    } else {
        crate::highfd::close(fd);
        Err(Failure::Unreachable)
    }
}

/// Room for the control message of up to MAX_FDS descriptors, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Control([u8; 64]);

fn receive(fd: c_int) -> Result<c_int, Failure> {
    let mut data = [0u8; 128];
    let mut control = Control([0; 64]);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<c_int>()) as u32) };
    debug_assert!(space as usize <= control.0.len());
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the buffers are filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = space as usize;
    let n = loop {
        // SAFETY: msg points at live buffers of the sizes it states; descriptors arrive
        // close-on-exec (MSG_CMSG_CLOEXEC).
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 || crate::verdict::errno() != libc::EINTR {
            break n;
        }
    };
    if n < 0 {
        // Timed out or failed: nothing was received, descriptors neither.
        return Err(Failure::NoAnswer);
    }
    let mut got = -1;
    // SAFETY: msg was filled by recvmsg (or is as set above); the CMSG_* walk stays within
    // msg_controllen, and each SCM_RIGHTS payload holds whole c_ints.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let fds = libc::CMSG_DATA(cmsg).cast::<c_int>();
                for i in 0..bytes / std::mem::size_of::<c_int>() {
                    let one = fds.add(i).read_unaligned();
                    if got < 0 {
                        got = one;
                    } else {
                        crate::highfd::close(one);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let text = &data[..n as usize];
    if got >= 0 && text.starts_with(POLICY_SERVICE_OK) {
        return Ok(got);
    }
    if got >= 0 {
        crate::highfd::close(got);
    }
    if text.starts_with(POLICY_SERVICE_REFUSED) {
        Err(Failure::Refused)
    } else {
        Err(Failure::NoAnswer)
    }
}
