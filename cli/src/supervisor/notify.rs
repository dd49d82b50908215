//! Answering notifications: read what the trapped call names, decide, and either refuse it,
//! perform it on the supervisor's own copies, or (only where no decision depends on the
//! program's memory) let the kernel continue it.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use egress_policy::seccomp::{
    nr, AUDIT_ARCH_X86_64, LOOKUP_BEGIN, LOOKUP_END, PROBE_ADDR, PROBE_LEN, X32_BIT,
};
use egress_policy::Mode;

use super::sockaddr::{destination, MAX_ADDR};
use super::target::{tgid_of, Errno, Target};
use super::Layer;

/// What the trapped call returns.
enum Reply {
    /// The kernel runs the call as the program made it. Only for calls whose decision rests
    /// on nothing in the program's memory (a Unix socket, found from the descriptor itself).
    Continue,
    Value(i64),
    Error(Errno),
}

/// The largest payload copied for one send: a stream send beyond it is sent in part (a short
/// count, as a stream send may return); a datagram beyond it cannot be sent anyway.
const MAX_PAYLOAD: usize = 1 << 20;
/// `UIO_MAXIOV`: more iovecs or messages than this the kernel refuses (or cuts, for sendmmsg).
const MAX_IOV: usize = 1024;
const MAX_CONTROL: usize = 64 * 1024;
const MSGHDR_LEN: usize = 56;
const MMSGHDR_LEN: usize = 64;

/// Why the report says a call was denied (as the library words it).
const NO_RULE: &str = "no rule allows it";
const SOURCE_ROUTE: &str = "source routing is refused (no rule can allow it)";
const PACKET: &str = "packet sockets are refused (no rule can allow them)";
const FOREIGN_ABI: &str =
    "a 32-bit or x32 system call: the kernel layer cannot check it (no rule can allow it)";
const IO_URING: &str =
    "io_uring: its network operations cannot be checked; block mode refuses io_uring_setup (no rule can allow it)";

#[derive(Clone, Copy)]
enum Verdict {
    Allow(usize),
    Deny(&'static str),
}

/// Receives until no process uses the filter any more (the listener hangs up).
pub(super) fn serve(layer: Arc<Layer>, listener: Arc<OwnedFd>) {
    let fd = listener.as_raw_fd();
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if pfd.revents & libc::POLLIN == 0 {
            if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                return;
            }
            continue;
        }
        // SAFETY: the kernel requires a zeroed buffer and fills it.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV writes one seccomp_notif.
        if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                // Interrupted, or the caller went away before we took it.
                Some(libc::EINTR) | Some(libc::ENOENT) => continue,
                _ => return,
            }
        }
        handle(&layer, &listener, &req);
    }
}

fn respond(listener: RawFd, id: u64, reply: Reply) {
    // SAFETY: plain data, filled below.
    let mut resp: libc::seccomp_notif_resp = unsafe { std::mem::zeroed() };
    resp.id = id;
    match reply {
        Reply::Continue => resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        Reply::Value(v) => resp.val = v,
        Reply::Error(e) => resp.error = -e,
    }
    // SAFETY: SEND reads one seccomp_notif_resp. ENOENT (the caller died or was interrupted)
    // leaves nothing to do.
    unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
}

fn handle(layer: &Arc<Layer>, listener: &Arc<OwnedFd>, req: &libc::seccomp_notif) {
    let fd = listener.as_raw_fd();
    let d = &req.data;
    let number = d.nr as u32;
    if d.arch != AUDIT_ARCH_X86_64 || number & X32_BIT != 0 {
        respond(fd, req.id, layer.foreign(req));
        return;
    }
    let reply = match number {
        nr::IO_URING_SETUP => layer.io_uring(req),
        nr::CONNECT | nr::SENDTO | nr::SENDMSG | nr::SENDMMSG | nr::SETSOCKOPT => {
            match layer.prepare(fd, req) {
                Prepared::Reply(r) => r,
                Prepared::Perform(op, false) => op.run(),
                Prepared::Perform(op, true) => {
                    let listener = Arc::clone(listener);
                    let id = req.id;
                    layer.pool.submit(Box::new(move || {
                        respond(listener.as_raw_fd(), id, op.run())
                    }));
                    return;
                }
            }
        }
        // Not trapped by our filter: decided by its number alone.
        _ => Reply::Continue,
    };
    respond(fd, req.id, reply);
}

enum Prepared {
    Reply(Reply),
    /// Perform it; true when it may block (a worker does it).
    Perform(Op, bool),
}

/// A call to perform on the duplicate of the program's socket, with our own copies.
enum Op {
    Connect {
        sock: OwnedFd,
        addr: Vec<u8>,
    },
    SetSockopt {
        sock: OwnedFd,
        level: i32,
        name: i32,
        value: Option<Vec<u8>>,
    },
    SendTo {
        sock: OwnedFd,
        target: Target,
        payload: Vec<u8>,
        flags: i32,
        addr: Vec<u8>,
    },
    /// sendmsg (`mmsg` None) or sendmmsg (the array's address, for each `msg_len`).
    SendMsg {
        sock: OwnedFd,
        target: Target,
        msgs: Vec<Msg>,
        flags: i32,
        mmsg: Option<u64>,
    },
}

/// One message, copied.
struct Msg {
    name: Option<Vec<u8>>,
    data: Vec<u8>,
    control: Vec<u8>,
}

fn errno() -> Errno {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn result(r: isize) -> Reply {
    if r < 0 {
        Reply::Error(errno())
    } else {
        Reply::Value(r as i64)
    }
}

impl Op {
    fn run(self) -> Reply {
        match self {
            Op::Connect { sock, addr } => {
                // SAFETY: our own socket and address copy of addr.len() bytes. Through libc:
                // inside an outer egress-run, its library checks this call too.
                let r = unsafe {
                    libc::connect(
                        sock.as_raw_fd(),
                        addr.as_ptr().cast(),
                        addr.len() as libc::socklen_t,
                    )
                };
                result(r as isize)
            }
            Op::SetSockopt {
                sock,
                level,
                name,
                value,
            } => {
                let (ptr, len) = value
                    .as_ref()
                    .map_or((std::ptr::null(), 0), |v| (v.as_ptr(), v.len()));
                // SAFETY: our own socket (the same as the program's) and value copy.
                let r = unsafe {
                    libc::setsockopt(
                        sock.as_raw_fd(),
                        level,
                        name,
                        ptr.cast(),
                        len as libc::socklen_t,
                    )
                };
                result(r as isize)
            }
            Op::SendTo {
                sock,
                target,
                payload,
                flags,
                addr,
            } => {
                // SAFETY: our own socket, payload and address copies.
                let r = unsafe {
                    libc::sendto(
                        sock.as_raw_fd(),
                        payload.as_ptr().cast(),
                        payload.len(),
                        flags | libc::MSG_NOSIGNAL,
                        addr.as_ptr().cast(),
                        addr.len() as libc::socklen_t,
                    )
                };
                let reply = result(r);
                pass_sigpipe(&reply, flags, &target);
                reply
            }
            Op::SendMsg {
                sock,
                target,
                msgs,
                flags,
                mmsg,
            } => {
                let mut sent = 0;
                for (i, m) in msgs.iter().enumerate() {
                    let r = send_one(&sock, m, flags);
                    if r < 0 {
                        let reply = result(r);
                        pass_sigpipe(&reply, flags, &target);
                        return if i == 0 {
                            reply
                        } else {
                            Reply::Value(i as i64)
                        };
                    }
                    match mmsg {
                        Some(base) => {
                            let at = base + (i * MMSGHDR_LEN) as u64 + MSGHDR_LEN as u64;
                            target.write(at, &(r as u32).to_ne_bytes());
                        }
                        None => return Reply::Value(r as i64),
                    }
                    sent = i + 1;
                }
                Reply::Value(sent as i64)
            }
        }
    }
}

fn send_one(sock: &OwnedFd, m: &Msg, flags: i32) -> isize {
    let mut iov = libc::iovec {
        iov_base: m.data.as_ptr().cast_mut().cast(),
        iov_len: m.data.len(),
    };
    // SAFETY: plain data, filled below.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    if let Some(name) = &m.name {
        hdr.msg_name = name.as_ptr().cast_mut().cast();
        hdr.msg_namelen = name.len() as libc::socklen_t;
    }
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = usize::from(!m.data.is_empty());
    if !m.control.is_empty() {
        hdr.msg_control = m.control.as_ptr().cast_mut().cast();
        hdr.msg_controllen = m.control.len();
    }
    // SAFETY: every pointer in hdr is ours and valid for its length.
    unsafe { libc::sendmsg(sock.as_raw_fd(), &hdr, flags | libc::MSG_NOSIGNAL) }
}

/// A send that broke a pipe would have sent the program SIGPIPE: ours went to us (ignored).
fn pass_sigpipe(reply: &Reply, flags: i32, target: &Target) {
    if matches!(reply, Reply::Error(libc::EPIPE)) && flags & libc::MSG_NOSIGNAL == 0 {
        target.signal(libc::SIGPIPE);
    }
}

fn sockopt(sock: &OwnedFd, opt: libc::c_int) -> Result<libc::c_int, Errno> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are writable and sized for an int option.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        Err(errno())
    } else {
        Ok(v)
    }
}

/// The report's protocol name of an IP socket (as the library names it).
fn proto(sock: &OwnedFd) -> &'static str {
    const IPPROTO_MPTCP: i32 = 262;
    const IPPROTO_UDPLITE: i32 = 136;
    match sockopt(sock, libc::SO_PROTOCOL) {
        Ok(libc::IPPROTO_TCP) | Ok(IPPROTO_MPTCP) => return "tcp",
        Ok(libc::IPPROTO_UDP) | Ok(IPPROTO_UDPLITE) => return "udp",
        Ok(libc::IPPROTO_ICMP) | Ok(libc::IPPROTO_ICMPV6) => return "icmp",
        _ => {}
    }
    match sockopt(sock, libc::SO_TYPE) {
        Ok(libc::SOCK_STREAM) => "tcp",
        Ok(libc::SOCK_RAW) => "raw",
        _ => "udp",
    }
}

fn nonblocking(sock: &OwnedFd) -> bool {
    // SAFETY: F_GETFL on our own descriptor (the flags belong to the shared description).
    let fl = unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_GETFL) };
    fl >= 0 && fl & libc::O_NONBLOCK != 0
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(w)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(w)
}

/// True when IPv4 options hold a loose or strict source route (or cannot be walked).
fn has_ipv4_source_route(opts: &[u8]) -> bool {
    const LSRR: u8 = 131;
    const SSRR: u8 = 137;
    let mut at = 0;
    while at < opts.len() {
        match opts[at] {
            0 => return false,
            1 => at += 1,
            LSRR | SSRR => return true,
            _ => {
                let len = usize::from(*opts.get(at + 1).unwrap_or(&0));
                if len < 2 {
                    // Malformed: the kernel refuses it, but do not bet on that.
                    return true;
                }
                at += len;
            }
        }
    }
    false
}

/// True when control messages ask for a source route (IPv4 options, IPv6 routing header):
/// the packet would go first to an address no rule was asked about.
fn has_source_route(control: &[u8]) -> bool {
    const IP_RETOPTS: i32 = 7;
    const IPV6_2292RTHDR: i32 = 5;
    const IPV6_RTHDR: i32 = 57;
    let mut at = 0;
    while at + 16 <= control.len() {
        let len = u64_at(control, at) as usize;
        let level = u32_at(control, at + 8) as i32;
        let ty = u32_at(control, at + 12) as i32;
        let routed = (level == libc::IPPROTO_IP && ty == IP_RETOPTS)
            || (level == libc::IPPROTO_IPV6 && (ty == IPV6_RTHDR || ty == IPV6_2292RTHDR));
        if routed {
            return true;
        }
        if len < 16 {
            break;
        }
        at += len.next_multiple_of(8);
    }
    false
}

impl Layer {
    fn refused(&self) -> Reply {
        Reply::Error(self.deny_as().refused_errno())
    }

    /// Reports one attempt, as the library's events look, with `"layer":"kernel"`.
    fn record(
        &self,
        kind: &str,
        tid: i32,
        call: &str,
        proto: Option<&str>,
        dest: Option<(IpAddr, u16)>,
        verdict: Verdict,
    ) {
        let pid = tgid_of(tid).unwrap_or(tid);
        let (decision, rule, reason) = match verdict {
            Verdict::Allow(rule) => ("allow", Some(rule), None),
            Verdict::Deny(why) => ("deny", None, Some(why)),
        };
        let line = serde_json::json!({
            "type": kind,
            "pid": pid,
            "call": call,
            // No destination known (as the library shows a packet socket): 0.0.0.0, port 0.
            "proto": proto.unwrap_or("raw"),
            "addr": dest.map_or_else(|| "0.0.0.0".to_string(), |(ip, _)| ip.to_string()),
            "port": dest.map_or(0, |(_, port)| port),
            "host": null,
            "decision": decision,
            "rule": rule,
            "reason": reason,
            "enforced": self.mode() == Mode::Block,
            "layer": "kernel",
        });
        // Blocking when the launcher's queue is full: back-pressure, as for the library.
        // Framed with the run's event key, as the library frames its events.
        let mut datagram = egress_policy::event::header(&self.policy.event_key()).to_vec();
        datagram.extend_from_slice(line.to_string().as_bytes());
        let _ = self.events.send(&datagram);
    }

    /// Records and answers a denial, or lets audit mode go on.
    fn deny(&self, kind: &str, tid: i32, call: &str, why: &'static str) -> Reply {
        self.record(kind, tid, call, None, None, Verdict::Deny(why));
        match self.mode() {
            Mode::Block => self.refused(),
            Mode::Audit => Reply::Continue,
        }
    }

    /// A 32-bit or x32 system call: its network entry points are refused in block mode.
    fn foreign(&self, req: &libc::seccomp_notif) -> Reply {
        const SOCKETCALL_EGRESS: [u64; 4] = [3, 11, 16, 20];
        let d = &req.data;
        let number = d.nr as u32 & !X32_BIT;
        let egress = if d.arch == AUDIT_ARCH_X86_64 {
            // x32: connect and sendto keep their numbers; sendmsg, sendmmsg are 518, 538.
            matches!(number, 42 | 44 | 518 | 538 | nr::IO_URING_SETUP)
        } else {
            number != egress_policy::seccomp::nr32::SOCKETCALL
                || SOCKETCALL_EGRESS.contains(&(d.args[0] & 0xffff_ffff))
        };
        if !egress {
            return Reply::Continue;
        }
        self.deny("connect", req.pid as i32, "syscall", FOREIGN_ABI)
    }

    /// io_uring_setup: refused in block mode (EPERM, as with `kernel.io_uring_disabled=2` or
    /// a container's default seccomp profile, which runtimes fall back from), recorded and
    /// allowed in audit mode.
    fn io_uring(&self, req: &libc::seccomp_notif) -> Reply {
        match self.mode() {
            Mode::Block => Reply::Error(libc::EPERM),
            Mode::Audit => {
                self.record(
                    "send",
                    req.pid as i32,
                    "io_uring_setup",
                    None,
                    None,
                    Verdict::Deny(IO_URING),
                );
                Reply::Continue
            }
        }
    }

    fn decide(&self, ip: IpAddr, port: u16) -> Verdict {
        match self.policy.match_addr(ip, port) {
            Some(rule) => Verdict::Allow(rule),
            None => Verdict::Deny(NO_RULE),
        }
    }

    /// Something the supervisor needs failed (the target's memory or descriptor could not
    /// be read): refused, in either mode, never continued with unchecked memory.
    fn unreadable(&self, kind: &str, tid: i32, call: &str, e: Errno) -> Reply {
        let why: &'static str = match e {
            libc::EPERM | libc::EACCES => {
                "the kernel layer may not read the caller's memory or descriptor (fail closed)"
            }
            _ => "the kernel layer could not read the call (fail closed)",
        };
        self.record(kind, tid, call, None, None, Verdict::Deny(why));
        self.refused()
    }

    fn prepare(&self, listener: RawFd, req: &libc::seccomp_notif) -> Prepared {
        let a = req.data.args;
        let number = req.data.nr as u32;
        let (kind, call) = match number {
            nr::CONNECT => ("connect", "connect"),
            nr::SENDTO => ("send", "sendto"),
            nr::SENDMSG => ("send", "sendmsg"),
            nr::SETSOCKOPT => ("connect", "setsockopt"),
            _ => ("send", "sendmmsg"),
        };
        let tid = req.pid as i32;
        if number == nr::CONNECT
            && a[0] as i32 == -1
            && a[1] == PROBE_ADDR
            && a[2] as u32 == PROBE_LEN
        {
            // Whose filter is this? (No memory is read: the arguments are registers.)
            return Prepared::Reply(Reply::Value(i64::from(std::process::id())));
        }
        if number == nr::CONNECT
            && a[0] as i32 == -1
            && (a[1] == LOOKUP_BEGIN || a[1] == LOOKUP_END)
        {
            let mut open = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
            if a[1] == LOOKUP_BEGIN {
                open.insert(tid);
            } else {
                open.remove(&tid);
            }
            return Prepared::Reply(Reply::Value(0));
        }
        let target = match Target::open(listener, req.id, req.pid) {
            Ok(t) => t,
            // Gone: nobody waits for the answer.
            Err(libc::ESRCH) => return Prepared::Reply(Reply::Error(libc::ESRCH)),
            Err(e) => return Prepared::Reply(self.unreadable(kind, tid, call, e)),
        };
        let sock = match target.descriptor(a[0]) {
            Ok(s) => s,
            // What the kernel answers for a number that is no descriptor.
            Err(libc::EBADF) => return Prepared::Reply(Reply::Error(libc::EBADF)),
            Err(e) => return Prepared::Reply(self.unreadable(kind, tid, call, e)),
        };
        let domain = match sockopt(&sock, libc::SO_DOMAIN) {
            Ok(d) => d,
            Err(e) => return Prepared::Reply(Reply::Error(e)),
        };
        match domain {
            libc::AF_INET | libc::AF_INET6 => {}
            libc::AF_PACKET if number != nr::CONNECT => {
                return Prepared::Reply(self.deny(kind, tid, call, PACKET))
            }
            // Unix, netlink and the like: not network egress, decided by the socket itself
            // (a later dup2 over the number is a door the threat model names).
            _ => return Prepared::Reply(Reply::Continue),
        }
        let proto = proto(&sock);
        let step = match number {
            nr::CONNECT => self.connect(&target, sock, domain, proto, a),
            nr::SENDTO => self.sendto(target, sock, domain, proto, a),
            nr::SENDMSG => self.sendmsg(target, sock, domain, proto, a, false),
            nr::SETSOCKOPT => self.setsockopt(&target, sock, a),
            _ => self.sendmsg(target, sock, domain, proto, a, true),
        };
        match step {
            Ok(p) => p,
            Err(Fail::Answer(e)) => Prepared::Reply(Reply::Error(e)),
            Err(Fail::Unreadable(e)) => Prepared::Reply(self.unreadable(kind, tid, call, e)),
        }
    }

    /// Reads `len` bytes at `addr` of the target; EFAULT is the kernel's own answer, anything
    /// else is a failure to check (fail closed).
    fn read(target: &Target, addr: u64, len: usize) -> Result<Vec<u8>, Fail> {
        target.read(addr, len).map_err(|e| match e {
            libc::EFAULT | libc::ESRCH => Fail::Answer(e),
            e => Fail::Unreadable(e),
        })
    }

    /// Decides a destination: records it; Err(answer) when block mode refuses it.
    fn judge(
        &self,
        kind: &str,
        target: &Target,
        call: &str,
        proto: &str,
        dest: (IpAddr, u16),
    ) -> Result<(), Fail> {
        // libc's own resolver in a lookup the library allowed (and recorded): not an attempt
        // of its own.
        if dest.1 == 53
            && self.nameservers.contains(&dest.0)
            && self
                .lookups
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&target.tid)
        {
            return Ok(());
        }
        let verdict = self.decide(dest.0, dest.1);
        self.record(kind, target.tid, call, Some(proto), Some(dest), verdict);
        match verdict {
            Verdict::Deny(_) if self.mode() == Mode::Block => {
                Err(Fail::Answer(self.deny_as().refused_errno()))
            }
            _ => Ok(()),
        }
    }

    fn connect(
        &self,
        target: &Target,
        sock: OwnedFd,
        domain: i32,
        proto: &str,
        a: [u64; 6],
    ) -> Result<Prepared, Fail> {
        let len = a[2] as u32 as usize;
        if len > MAX_ADDR {
            return Err(Fail::Answer(libc::EINVAL));
        }
        let addr = Self::read(target, a[1], len)?;
        if let Some(dest) = destination(domain, &addr, false) {
            self.judge("connect", target, "connect", proto, dest)?;
        }
        let blocking = !nonblocking(&sock);
        Ok(Prepared::Perform(Op::Connect { sock, addr }, blocking))
    }

    /// A socket option that may set a source route: refused when it does (whatever the rules
    /// say), else set by the supervisor from its own copy of the value.
    fn setsockopt(&self, target: &Target, sock: OwnedFd, a: [u64; 6]) -> Result<Prepared, Fail> {
        let (level, name, at, len) = (a[1] as i32, a[2] as i32, a[3], a[4] as u32 as usize);
        if len > 4096 {
            return Err(Fail::Answer(libc::EINVAL));
        }
        let value = if at == 0 {
            None
        } else {
            Some(Self::read(target, at, len)?)
        };
        let bytes = value.as_deref().unwrap_or(&[]);
        let routed = match (level, name) {
            (libc::IPPROTO_IP, _) => has_ipv4_source_route(bytes),
            (_, 6) => has_source_route(bytes),
            _ => !bytes.is_empty(),
        };
        if routed {
            self.record(
                "connect",
                target.tid,
                "setsockopt",
                None,
                None,
                Verdict::Deny(SOURCE_ROUTE),
            );
            if self.mode() == Mode::Block {
                return Err(Fail::Answer(self.deny_as().refused_errno()));
            }
        }
        let op = Op::SetSockopt {
            sock,
            level,
            name,
            value,
        };
        Ok(Prepared::Perform(op, false))
    }

    fn sendto(
        &self,
        target: Target,
        sock: OwnedFd,
        domain: i32,
        proto: &str,
        a: [u64; 6],
    ) -> Result<Prepared, Fail> {
        let (buf, mut len, flags) = (a[1], a[2] as usize, a[3] as i32);
        let alen = a[5] as u32 as usize;
        if alen > MAX_ADDR {
            return Err(Fail::Answer(libc::EINVAL));
        }
        let addr = Self::read(&target, a[4], alen)?;
        if let Some(dest) = destination(domain, &addr, true) {
            self.judge("send", &target, "sendto", proto, dest)?;
        }
        if len > MAX_PAYLOAD {
            if proto != "tcp" {
                return Err(Fail::Answer(libc::EMSGSIZE));
            }
            len = MAX_PAYLOAD;
        }
        let payload = Self::read(&target, buf, len)?;
        let blocking = !nonblocking(&sock) && flags & libc::MSG_DONTWAIT == 0;
        Ok(Prepared::Perform(
            Op::SendTo {
                sock,
                target,
                payload,
                flags,
                addr,
            },
            blocking,
        ))
    }

    /// One `struct msghdr` at `at` of the target, copied with everything it points to.
    fn message(target: &Target, hdr: &[u8], stream: bool) -> Result<Msg, Fail> {
        let (name_at, namelen) = (u64_at(hdr, 0), u32_at(hdr, 8) as usize);
        let (iov_at, iovlen) = (u64_at(hdr, 16), u64_at(hdr, 24) as usize);
        let (control_at, controllen) = (u64_at(hdr, 32), u64_at(hdr, 40) as usize);
        let name = if name_at != 0 && namelen > 0 {
            // The kernel cuts a longer name to the size of sockaddr_storage.
            Some(Self::read(target, name_at, namelen.min(MAX_ADDR))?)
        } else {
            None
        };
        if iovlen > MAX_IOV {
            return Err(Fail::Answer(libc::EMSGSIZE));
        }
        let iovs = Self::read(target, iov_at, iovlen * 16)?;
        let mut data = Vec::new();
        for i in 0..iovlen {
            let (base, len) = (u64_at(&iovs, i * 16), u64_at(&iovs, i * 16 + 8) as usize);
            let room = MAX_PAYLOAD - data.len();
            if len > room && !stream {
                return Err(Fail::Answer(libc::EMSGSIZE));
            }
            data.extend(Self::read(target, base, len.min(room))?);
            if data.len() == MAX_PAYLOAD {
                break;
            }
        }
        if controllen > MAX_CONTROL {
            return Err(Fail::Answer(libc::ENOBUFS));
        }
        let control = if control_at != 0 && controllen > 0 {
            Self::read(target, control_at, controllen)?
        } else {
            Vec::new()
        };
        Ok(Msg {
            name,
            data,
            control,
        })
    }

    fn sendmsg(
        &self,
        target: Target,
        sock: OwnedFd,
        domain: i32,
        proto: &str,
        a: [u64; 6],
        many: bool,
    ) -> Result<Prepared, Fail> {
        let (at, flags) = (a[1], if many { a[3] } else { a[2] } as i32);
        let (count, stride, call) = if many {
            ((a[2] as u32 as usize).min(MAX_IOV), MMSGHDR_LEN, "sendmmsg")
        } else {
            (1, MSGHDR_LEN, "sendmsg")
        };
        if count == 0 {
            return Ok(Prepared::Reply(Reply::Value(0)));
        }
        let hdrs = Self::read(&target, at, count * stride)?;
        let stream = proto == "tcp";
        let mut msgs = Vec::with_capacity(count);
        for i in 0..count {
            let hdr = &hdrs[i * stride..i * stride + MSGHDR_LEN];
            let msg = match Self::message(&target, hdr, stream) {
                Ok(m) => m,
                Err(e) if msgs.is_empty() => return Err(e),
                // A later message the kernel would fail on: send those before it.
                Err(_) => break,
            };
            let judged = if has_source_route(&msg.control) {
                let r = self.deny("send", target.tid, call, SOURCE_ROUTE);
                match r {
                    Reply::Continue => Ok(()),
                    _ => Err(Fail::Answer(self.deny_as().refused_errno())),
                }
            } else {
                match msg
                    .name
                    .as_deref()
                    .and_then(|n| destination(domain, n, true))
                {
                    Some(dest) => self.judge("send", &target, call, proto, dest),
                    None => Ok(()),
                }
            };
            match judged {
                Ok(()) => msgs.push(msg),
                Err(e) if msgs.is_empty() => return Err(e),
                // sendmmsg: the allowed messages before the refused one are sent.
                Err(_) => break,
            }
        }
        let blocking = !nonblocking(&sock) && flags & libc::MSG_DONTWAIT == 0;
        Ok(Prepared::Perform(
            Op::SendMsg {
                sock,
                target,
                msgs,
                flags,
                mmsg: many.then_some(at),
            },
            blocking,
        ))
    }
}

/// Why a call is answered without being performed.
enum Fail {
    /// The errno to return (the kernel's own answer, or a refusal).
    Answer(Errno),
    /// The call could not be checked: fail closed.
    Unreadable(Errno),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmsg(level: i32, ty: i32, data: usize) -> Vec<u8> {
        let len = 16 + data;
        let mut c = Vec::new();
        c.extend((len as u64).to_ne_bytes());
        c.extend(level.to_ne_bytes());
        c.extend(ty.to_ne_bytes());
        c.resize(len.next_multiple_of(8), 0);
        c
    }

    #[test]
    fn ipv4_source_routes_are_found_among_options() {
        assert!(!has_ipv4_source_route(&[]));
        assert!(!has_ipv4_source_route(&[1, 1, 68, 4, 5, 0x10]));
        assert!(has_ipv4_source_route(&[1, 131, 7, 4, 192, 0, 2, 1]));
        assert!(has_ipv4_source_route(&[137, 7, 4, 192, 0, 2, 1]));
        assert!(!has_ipv4_source_route(&[0, 131, 7]));
        assert!(has_ipv4_source_route(&[68, 0]));
    }

    #[test]
    fn source_routes_are_found_among_control_messages() {
        let ttl = cmsg(libc::IPPROTO_IP, libc::IP_TTL, 4);
        assert!(!has_source_route(&ttl));
        let mut both = ttl.clone();
        both.extend(cmsg(libc::IPPROTO_IP, 7, 12));
        assert!(has_source_route(&both));
        assert!(has_source_route(&cmsg(libc::IPPROTO_IPV6, 57, 24)));
        assert!(!has_source_route(&[0u8; 7]));
        // A zero length stops the walk instead of looping.
        assert!(!has_source_route(&[0u8; 32]));
    }
}
