//! The policy service: hands the sealed policy memfd to a process of this run that lost its
//! descriptor and may not reopen it through `/proc/<launcher>/fd/N` (it changed uid, or lives
//! in another PID namespace).
//!
//! Protocol (`egress_policy::POLICY_SERVICE_SUFFIX`): a `SOCK_SEQPACKET` socket at the abstract
//! address `egress-run.<launcher pid>.<policy st_ino>.policy`. A client connects and sends
//! nothing; the service reads the peer's pid from `SO_PEERCRED` (the kernel's, taken at
//! `connect`, in this process's PID namespace), walks its parents in `/proc/<pid>/stat`, and
//! answers one message before closing: `ok` with the memfd attached (`SCM_RIGHTS`) when the
//! launcher is an ancestor, else `refused: <why>` with no descriptor. The client verifies the
//! descriptor as an inherited one (inode, seals, contents), so a squatter at the name can give
//! it nothing it would accept.
//!
//! One thread of its own, started after the launcher blocked its signals (so it never takes
//! one), answering one client at a time; kept apart from the event loop.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use egress_policy::{Locator, POLICY_SERVICE_OK, POLICY_SERVICE_REFUSED};

/// How many parent links are followed before giving up (deeper than any real tree).
const MAX_DEPTH: usize = 4096;

/// A blocked client cannot hold the service longer than this.
const SEND_TIMEOUT_S: libc::time_t = 1;

/// Starts the service for the policy `locator` names (the launcher's own descriptor
/// `locator.fd`). None when the socket cannot be made or its name is taken: processes that
/// need the service then fail closed, saying the launcher does not answer.
pub fn start(locator: &Locator) -> Option<std::thread::JoinHandle<()>> {
    let listener = listen(locator)?;
    // The thread's own copy: the launcher's may be closed while the thread still answers.
    // SAFETY: F_DUPFD_CLOEXEC with an int argument on the launcher's policy descriptor.
    let policy = unsafe { libc::fcntl(locator.fd, libc::F_DUPFD_CLOEXEC, 3) };
    if policy < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor we own.
    let policy = unsafe { OwnedFd::from_raw_fd(policy) };
    let launcher = std::process::id() as libc::pid_t;
    std::thread::Builder::new()
        .name("policy-service".into())
        .stack_size(64 << 10)
        .spawn(move || serve(&listener, &policy, launcher))
        .ok()
}

fn listen(locator: &Locator) -> Option<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_un is valid; family and an abstract name are filled in.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let mut name = [0u8; 64];
    let n = locator.policy_service_name(&mut name);
    for (dst, src) in addr.sun_path[1..].iter_mut().zip(&name[..n]) {
        *dst = *src as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + 1 + n) as libc::socklen_t;
    // SAFETY: a valid sockaddr_un of `len` bytes; listen on our socket.
    let ok = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        ) == 0
            && libc::listen(fd.as_raw_fd(), 64) == 0
    };
    ok.then_some(fd)
}

fn serve(listener: &OwnedFd, policy: &OwnedFd, launcher: libc::pid_t) {
    loop {
        // SAFETY: accept4 on our listening socket; the peer address is not wanted.
        let conn = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if conn < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR | libc::ECONNABORTED | libc::EMFILE | libc::ENFILE) => {
                    // Out of descriptors: let others close theirs rather than spin.
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
                _ => return,
            }
        }
        // SAFETY: a fresh descriptor we own.
        let conn = unsafe { OwnedFd::from_raw_fd(conn) };
        answer(&conn, policy.as_raw_fd(), launcher);
    }
}

/// One answer to one client (errors ignored: the client then fails closed, saying so).
fn answer(conn: &OwnedFd, policy: RawFd, launcher: libc::pid_t) {
    let timeout = libc::timeval {
        tv_sec: SEND_TIMEOUT_S,
        tv_usec: 0,
    };
    // SAFETY: a timeval of its size on our socket.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    match peer_pid(conn) {
        Some(pid) if descends_from(pid, launcher, &read_ppid) => {
            send(conn, POLICY_SERVICE_OK, Some(policy));
        }
        _ => {
            let mut msg = POLICY_SERVICE_REFUSED.to_vec();
            msg.extend_from_slice(b"not a process of this run");
            send(conn, &msg, None);
        }
    }
}

fn peer_pid(conn: &OwnedFd) -> Option<libc::pid_t> {
    // SAFETY: an all-zero ucred is valid to overwrite.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writes of their sizes.
    let ok = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    } == 0;
    // 0: the peer's pid has no number in our PID namespace.
    (ok && cred.pid > 0).then_some(cred.pid)
}

/// Whether `ancestor` is `pid` or one of its parents, following `parent_of`.
fn descends_from(
    pid: libc::pid_t,
    ancestor: libc::pid_t,
    parent_of: &dyn Fn(libc::pid_t) -> Option<libc::pid_t>,
) -> bool {
    let mut at = pid;
    for _ in 0..MAX_DEPTH {
        if at == ancestor {
            return true;
        }
        match parent_of(at) {
            Some(parent) if parent > 0 && parent != at => at = parent,
            _ => return false,
        }
    }
    false
}

/// The parent of `pid`, from `/proc/<pid>/stat`.
fn read_ppid(pid: libc::pid_t) -> Option<libc::pid_t> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_ppid(&stat)
}

/// The fourth field of a `/proc/<pid>/stat` line; the command name (second field, in
/// parentheses) may hold spaces and parentheses itself, so fields are counted after the last
/// `)`.
fn parse_ppid(stat: &[u8]) -> Option<libc::pid_t> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

fn send(conn: &OwnedFd, payload: &[u8], fd: Option<RawFd>) {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // Room for one descriptor's control message, aligned for cmsghdr.
    let mut control = [0u64; 4];
    // SAFETY: an all-zero msghdr is valid; its buffers are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE/CMSG_LEN only compute sizes; the control buffer (32 bytes) holds
        // CMSG_SPACE(4) (24 on 64-bit Linux); CMSG_FIRSTHDR of a msghdr whose control is set
        // points into it, and CMSG_DATA has room for one c_int.
        unsafe {
            let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
            debug_assert!(space <= std::mem::size_of_val(&control));
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
            libc::CMSG_DATA(cmsg).cast::<RawFd>().write_unaligned(fd);
        }
    }
    // SAFETY: msg points at live buffers of the sizes it states. MSG_NOSIGNAL: a client gone
    // already must not kill the launcher.
    unsafe { libc::sendmsg(conn.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_the_field_after_the_state() {
        assert_eq!(parse_ppid(b"123 (bash) S 45 123 123 0 -1"), Some(45));
        // A command name with spaces and parentheses of its own.
        assert_eq!(parse_ppid(b"7 (a) b (c)) R 1 7 7"), Some(1));
        assert_eq!(parse_ppid(b"7 (x"), None);
        assert_eq!(parse_ppid(b"7 (x) S"), None);
        assert_eq!(parse_ppid(b"7 (x) S abc"), None);
        assert_eq!(parse_ppid(b""), None);
    }

    proptest::proptest! {
        #[test]
        fn any_command_name_leaves_the_parent_readable(
            pid in 1i32..i32::MAX,
            ppid in 0i32..i32::MAX,
            comm in proptest::collection::vec(proptest::num::u8::ANY, 0..32),
            tail in "[ 0-9]{0,40}",
        ) {
            let mut line = format!("{pid} (").into_bytes();
            // The kernel shows at most 15 bytes of the name, any bytes but NUL.
            line.extend(comm.iter().filter(|&&b| b != 0).take(15));
            line.extend_from_slice(format!(") S {ppid} {tail}").as_bytes());
            proptest::prop_assert_eq!(parse_ppid(&line), Some(ppid));
        }

        #[test]
        fn any_bytes_parse_or_fail_without_panicking(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..128),
        ) {
            let _ = parse_ppid(&bytes);
        }
    }

    #[test]
    fn only_descendants_are_of_the_tree() {
        // 10 is the launcher; 11 and 12 its descendants; 20 was reparented to 1.
        let parents = |pid| match pid {
            12 => Some(11),
            11 => Some(10),
            10 => Some(5),
            20 => Some(1),
            5 | 1 => Some(0),
            _ => None,
        };
        assert!(descends_from(12, 10, &parents));
        assert!(descends_from(10, 10, &parents));
        assert!(!descends_from(20, 10, &parents));
        assert!(!descends_from(5, 10, &parents));
        assert!(!descends_from(99, 10, &parents));
        // A loop (pid reuse while walking) ends.
        let looping = |pid| Some(if pid == 30 { 31 } else { 30 });
        assert!(!descends_from(30, 10, &looping));
    }
}
