//! `sendto`, `sendmsg`, `sendmmsg`: datagrams that carry their own destination, and TCP Fast
//! Open sends, which connect.

use std::net::{IpAddr, Ipv4Addr};

use libc::{c_int, c_long, c_uint, c_void, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use super::connect::decide_connect;
use super::sockopt::decide_route;
use super::{action_for, check, check_with};
use crate::channel::repeat;
use crate::channel::{self, Attempt, Kind};
use crate::decide;
use crate::dns_sockets;
use crate::dnsmsg;
use crate::fd_kinds;
use crate::kernel;
use crate::mem;
use crate::real;
use crate::route;
use crate::sock::{self, Dest};
use crate::state::{deny_as, Loaded};
use crate::verdict::{fault, refused_call, Action, DenyReason, Verdict};

pub(crate) fn decide_send(
    loaded: &Loaded,
    fd: c_int,
    dest: Dest,
    flags: c_int,
    call: &'static str,
    payload: Payload,
) -> Action {
    // A family-0 address: what the kernel will send to on this socket.
    let dest = match dest {
        Dest::Unspec { .. } => sock::unspec_as_sent(fd, dest),
        _ => dest,
    };
    // An address-less send on a socket connected to a DNS server: its connect was checked;
    // record the question it carries, under the same decision.
    let dest = match (dest, dns_sockets::peer(fd)) {
        (Dest::Other, Some((ip, port))) => Dest::Inet { ip, port },
        _ => dest,
    };
    let Dest::Inet { port, .. } = dest else {
        return Action::Proceed;
    };
    // A datagram socket made by socket() needs no system call to say so: a stale entry only
    // means this send is checked. Anything else (a stream socket, on which the address is
    // ignored unless it opens the connection) is confirmed by the kernel, and so is whether
    // it is a raw socket that builds its own IP header (a raw socket opened for TCP or UDP
    // reads as that protocol): then the header's destination decides.
    let from_table = matches!(fd_kinds::kind(fd), Some((libc::SOCK_DGRAM, _)));
    let (ty, proto) = match fd_kinds::kind(fd) {
        Some(kind @ (libc::SOCK_DGRAM, _)) => kind,
        _ => match sock::socket_kind(fd) {
            None => return Action::Proceed,
            Some(kind) => match sock::header_dest(fd, payload.read()) {
                sock::Header::None => kind,
                sock::Header::Raw => (libc::SOCK_RAW, sock::Proto::Raw),
                header => return decide_header(loaded, fd, header, call),
            },
        },
    };
    if ty == libc::SOCK_STREAM {
        // The kernel ignores the address on a stream socket unless this send opens the
        // connection (TCP Fast Open): then it is a connect.
        return if flags & libc::MSG_FASTOPEN != 0 {
            decide_connect(loaded, fd, dest, call)
        } else {
            Action::Proceed
        };
    }
    let (verdict, learned_host) = decide::destination(loaded, dest);
    // A DNS question sent straight to a resolver (c-ares, a program's own resolver): the
    // report names what it asked for.
    let mut qname = [0u8; 256];
    let host = match learned_host {
        None if port == 53 => {
            dnsmsg::question_name(payload.read(), &mut qname).map(|n| &qname[..n])
        }
        h => h,
    };
    let Dest::Inet { ip, .. } = dest else {
        return Action::Proceed;
    };
    let counter = channel::record(
        loaded,
        &Attempt {
            kind: Kind::Send,
            call,
            proto: Some(proto),
            dest: Some((ip, port)),
            host,
            verdict,
        },
    );
    // What the next identical send of this thread may skip to (channel/repeat.rs): a datagram
    // socket the table knows, no DNS question in the line, one level, allowed.
    if let Some(counter) = counter {
        if from_table
            && port != 53
            && matches!(verdict, Verdict::Allow { .. })
            && crate::state::levels().len() == 1
        {
            repeat::note(counter);
        }
    }
    action_for(loaded, verdict)
}

/// A send on a raw socket that builds its own IP header: decided by the header's destination
/// (port 0, as raw sockets are recorded), after any source route among its options. A header
/// the guard cannot read (not in the first buffer) is denied.
#[cold]
#[inline(never)]
fn decide_header(loaded: &Loaded, fd: c_int, header: sock::Header, call: &'static str) -> Action {
    let (verdict, dest) = match header {
        sock::Header::Dest(ip, route) => {
            if let Some(hop) = route {
                if decide_route(loaded, fd, hop, Kind::Send, call) == Action::Refuse {
                    return Action::Refuse;
                }
            }
            let dest = Dest::Inet { ip, port: 0 };
            (decide::destination(loaded, dest).0, dest)
        }
        _ => {
            let unknown = Dest::Inet {
                ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                port: 0,
            };
            let verdict = match loaded.policy {
                Ok(_) => Verdict::Deny(DenyReason::NoRule),
                Err(_) => Verdict::Deny(DenyReason::NoPolicy),
            };
            (verdict, unknown)
        }
    };
    record_send(loaded, call, sock::Proto::Raw, dest, None, verdict)
}

fn record_send(
    loaded: &Loaded,
    call: &'static str,
    proto: sock::Proto,
    dest: Dest,
    host: Option<&[u8]>,
    verdict: Verdict,
) -> Action {
    let Dest::Inet { ip, port } = dest else {
        return Action::Proceed;
    };
    channel::record(
        loaded,
        &Attempt {
            kind: Kind::Send,
            call,
            proto: Some(proto),
            dest: Some((ip, port)),
            host,
            verdict,
        },
    );
    action_for(loaded, verdict)
}

/// `decide_send` for a message that may carry a source route in its control data (the
/// route's first hop, `route`): a route is refused first.
pub(crate) fn decide_msg(
    loaded: &Loaded,
    fd: c_int,
    (dest, route): (Dest, Option<IpAddr>),
    flags: c_int,
    call: &'static str,
    payload: Payload,
) -> Action {
    if let Some(hop) = route {
        if decide_route(loaded, fd, hop, Kind::Send, call) == Action::Refuse {
            return Action::Refuse;
        }
    }
    decide_send(loaded, fd, dest, flags, call, payload)
}

/// The destination of a msghdr and the first hop of a source route in its control data.
///
/// # Safety
/// `msg` must be null or point to a readable msghdr whose name and control fields describe
/// readable memory.
pub(crate) unsafe fn msg_dest_route(msg: *const msghdr) -> (Dest, Option<IpAddr>) {
    if msg.is_null() {
        return (Dest::Other, None);
    }
    // SAFETY: non-null msghdr from the caller.
    let m = unsafe { &*msg };
    let route = if m.msg_controllen == 0 {
        None
    } else {
        // SAFETY: msg_control/msg_controllen describe the caller's control buffer.
        route::control_route(unsafe { bytes(m.msg_control, m.msg_controllen) })
    };
    // SAFETY: as above.
    (unsafe { msg_dest(msg) }, route)
}

/// Whether the kernel would fail to read `msg`'s header, address, iovec array or control
/// data (EFAULT): `mem::readable` (a system call only for a page not seen before).
///
/// # Safety
/// `msg` must be null or point to a msghdr (checked readable here first).
pub(crate) unsafe fn msg_unreadable(msg: *const msghdr) -> bool {
    if msg.is_null() {
        return false; // nothing to read here: the kernel answers EFAULT
    }
    if !mem::readable(msg, std::mem::size_of::<msghdr>()) {
        return true;
    }
    // SAFETY: a readable msghdr pointer from the caller (`mem::readable`).
    let m = unsafe { &*msg };
    let iovs = m.msg_iovlen.min(libc::UIO_MAXIOV as usize);
    sock::unreadable(m.msg_name.cast_const().cast(), m.msg_namelen)
        || (m.msg_controllen > 0
            && !m.msg_control.is_null()
            && !mem::readable(m.msg_control, m.msg_controllen))
        || (iovs > 0
            && !m.msg_iov.is_null()
            && !mem::readable(m.msg_iov, iovs * std::mem::size_of::<libc::iovec>()))
}

/// How many of the `vlen` messages at `msgs` the guard can read (the kernel sends those and
/// stops at the first it cannot read: EFAULT if that is the first).
///
/// # Safety
/// `msgs` must point to `vlen` mmsghdr entries (each checked readable before it is read).
pub(crate) unsafe fn readable_msgs(msgs: *const mmsghdr, vlen: c_uint) -> c_uint {
    let mut n: c_uint = 0;
    while n < vlen {
        let entry = msgs.wrapping_add(n as usize);
        if !mem::readable(entry, std::mem::size_of::<mmsghdr>()) {
            break;
        }
        // SAFETY: a readable entry is the caller's mmsghdr; msg_hdr is its first field.
        if unsafe { msg_unreadable(std::ptr::addr_of!((*entry).msg_hdr)) } {
            break;
        }
        n += 1;
    }
    n
}

/// The bytes of `buf`/`len` (empty when null, or when the program cannot read them: then the
/// kernel answers EFAULT for it, and the guard must not read it).
///
/// # Safety
/// `buf` must be null, or point to `len` bytes that outlive the returned slice's use (if they
/// are readable now).
pub(crate) unsafe fn bytes<'a>(buf: *const c_void, len: usize) -> &'a [u8] {
    if buf.is_null() || len == 0 || !mem::readable(buf, len) {
        &[]
    } else {
        // SAFETY: `len` readable bytes at `buf`, per the caller and `mem::readable`.
        unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }
    }
}

/// The most of a payload the guard reads: a DNS question (a 12-byte header and a name of at
/// most 255 bytes), or an IP header with its options.
const PAYLOAD_READ: usize = 512;

/// A send's first buffer, read only when the decision needs it (a DNS question, a raw IP
/// header), and then only its first `PAYLOAD_READ` bytes, checked readable first: an allowed
/// datagram on the fast path costs no check of its buffer.
#[derive(Clone, Copy)]
pub(crate) struct Payload {
    buf: *const c_void,
    len: usize,
}

impl Payload {
    pub(crate) const EMPTY: Payload = Payload {
        buf: std::ptr::null(),
        len: 0,
    };

    /// The bytes the guard may read (empty when the program cannot read them: the kernel then
    /// answers EFAULT for the send).
    pub(crate) fn read(&self) -> &[u8] {
        // SAFETY: `new`'s caller promised `len` bytes at `buf` that outlive this value; `bytes`
        // reads them only when `mem::readable` says it can.
        unsafe { bytes(self.buf, self.len.min(PAYLOAD_READ)) }
    }
}

/// The payload of a send, `buf`/`len`.
///
/// # Safety
/// `buf` must be null or the caller's buffer of `len` bytes, alive while the payload is used.
pub(crate) unsafe fn payload(buf: *const c_void, len: usize) -> Payload {
    Payload { buf, len }
}

/// The first buffer of a msghdr (where a DNS question would start).
///
/// # Safety
/// `msg` must be null or a readable msghdr with a readable iovec array (`msg_unreadable`).
pub(crate) unsafe fn msg_payload(msg: *const msghdr) -> Payload {
    if msg.is_null() {
        return Payload::EMPTY;
    }
    // SAFETY: a readable msghdr from the caller.
    let m = unsafe { &*msg };
    if m.msg_iov.is_null() || m.msg_iovlen == 0 {
        return Payload::EMPTY;
    }
    // SAFETY: msg_iov points to msg_iovlen readable iovecs; the buffer is checked when read.
    unsafe {
        let iov = &*m.msg_iov;
        payload(iov.iov_base, iov.iov_len)
    }
}

/// Reads the destination of a msghdr.
///
/// # Safety
/// `msg` must be null or point to a readable msghdr whose name fields describe readable memory.
pub(crate) unsafe fn msg_dest(msg: *const msghdr) -> Dest {
    if msg.is_null() {
        return Dest::Other;
    }
    // SAFETY: non-null msghdr from the caller.
    let m = unsafe { &*msg };
    // SAFETY: msg_name/msg_namelen describe the caller's address buffer.
    unsafe { sock::read(m.msg_name.cast_const().cast(), m.msg_namelen) }
}

crate::caller::exported_with_caller!(
    sendto => sendto_from,
    (
        fd: c_int,
        buf: *const c_void,
        len: size_t,
        flags: c_int,
        addr: *const sockaddr,
        addrlen: socklen_t
    ) -> ssize_t,
    stack
);

/// # Safety
/// Called by the `sendto` stub with sendto(2)'s arguments and the caller's address.
unsafe extern "C" fn sendto_from(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    addrlen: socklen_t,
    caller: usize,
) -> ssize_t {
    let _caller = crate::caller::Set::new(caller);
    if sock::unreadable(addr, addrlen) {
        return fault::<i8>() as ssize_t;
    }
    let forward = || {
        let args = [
            fd as c_long,
            buf as c_long,
            len as c_long,
            flags as c_long,
            addr as c_long,
            addrlen as c_long,
        ];
        // SAFETY: sendto's arguments, through the kernel layer's stub (`--seccomp`).
        if let Some(r) = unsafe { kernel::decided(libc::SYS_sendto, args) } {
            return r as ssize_t;
        }
        // SAFETY: forwarding the caller's arguments to the real sendto.
        match unsafe { real::func::<real::SendtoFn>(&real::SENDTO) } {
            // SAFETY: as above.
            Some(f) => unsafe { f(fd, buf, len, flags, addr, addrlen) },
            None => refused_call::<i8>(deny_as()) as ssize_t,
        }
    };
    // A repeat of this thread's last allowed send: count it where the full path would.
    // SAFETY: `addrlen` readable bytes at `addr` (checked plausible above), or null.
    if let Some(counter) = unsafe { repeat::hit(fd, flags, addr, addrlen) } {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return forward();
    }
    let epoch = repeat::epoch();
    repeat::clear_note();
    // SAFETY: the caller promises `addrlen` readable bytes at `addr` (or null).
    let dest = unsafe { sock::read(addr, addrlen) };
    // SAFETY: the caller's buffer of `len` bytes.
    let payload = unsafe { payload(buf, len) };
    match check(|loaded| decide_send(loaded, fd, dest, flags, "sendto", payload)) {
        Action::Refuse => refused_call::<i8>(deny_as()) as ssize_t,
        Action::Proceed => {
            // SAFETY: as for `hit`.
            unsafe { repeat::remember(fd, flags, addr, addrlen, epoch) };
            forward()
        }
    }
}

/// `send` carries no address: it matters only on a socket connected to a DNS server, whose
/// questions the report names. Every other call costs one atomic load.
///
/// # Safety
/// Called by C with send(2)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    if dns_sockets::any() {
        // SAFETY: the caller's buffer of `len` bytes.
        let payload = unsafe { payload(buf, len) };
        if check(|loaded| decide_send(loaded, fd, Dest::Other, flags, "send", payload))
            == Action::Refuse
        {
            return refused_call::<i8>(deny_as()) as ssize_t;
        }
    }
    // SAFETY: forwarding the caller's arguments to the real send.
    match unsafe { real::func::<real::SendFn>(&real::SEND) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(fd, buf, len, flags) },
        None => refused_call::<i8>(deny_as()) as ssize_t,
    }
}

crate::caller::exported_with_caller!(
    sendmsg => sendmsg_from, (fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t, reg "rcx"
);

/// # Safety
/// Called by the `sendmsg` stub with sendmsg(2)'s arguments and the caller's address.
unsafe extern "C" fn sendmsg_from(
    fd: c_int,
    msg: *const msghdr,
    flags: c_int,
    caller: usize,
) -> ssize_t {
    let _caller = crate::caller::Set::new(caller);
    // SAFETY: the caller's msghdr.
    if unsafe { msg_unreadable(msg) } {
        return fault::<i8>() as ssize_t;
    }
    // SAFETY: the caller's msghdr.
    let dest = unsafe { msg_dest_route(msg) };
    // SAFETY: the caller's msghdr.
    let payload = unsafe { msg_payload(msg) };
    match check(|loaded| decide_msg(loaded, fd, dest, flags, "sendmsg", payload)) {
        Action::Refuse => refused_call::<i8>(deny_as()) as ssize_t,
        Action::Proceed => {
            let args = [fd as c_long, msg as c_long, flags as c_long, 0, 0, 0];
            // SAFETY: sendmsg's arguments, through the kernel layer's stub (`--seccomp`).
            if let Some(r) = unsafe { kernel::decided(libc::SYS_sendmsg, args) } {
                return r as ssize_t;
            }
            // SAFETY: forwarding the caller's arguments to the real sendmsg.
            match unsafe { real::func::<real::SendmsgFn>(&real::SENDMSG) } {
                // SAFETY: as above.
                Some(f) => unsafe { f(fd, msg, flags) },
                None => refused_call::<i8>(deny_as()) as ssize_t,
            }
        }
    }
}

/// # Safety
/// Called by C with sendmmsg(2)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn sendmmsg(
    fd: c_int,
    msgs: *mut mmsghdr,
    vlen: c_uint,
    flags: c_int,
) -> c_int {
    // Only the messages the guard can read (the kernel stops at the first it cannot).
    let readable = if msgs.is_null() {
        vlen // the kernel answers EFAULT
    } else {
        // SAFETY: the caller's `vlen` entries.
        unsafe { readable_msgs(msgs, vlen) }
    };
    if readable == 0 && vlen > 0 {
        return fault();
    }
    // Each message has its own destination: send the allowed ones before the first refusal.
    let allowed = check_with(readable, 0, |loaded| {
        if msgs.is_null() {
            return vlen;
        }
        let mut n: c_uint = 0;
        while n < readable {
            // SAFETY: the caller passes `vlen` readable mmsghdr entries.
            let (dest, payload) = unsafe {
                let hdr = &(*msgs.add(n as usize)).msg_hdr;
                (msg_dest_route(hdr), msg_payload(hdr))
            };
            if decide_msg(loaded, fd, dest, flags, "sendmmsg", payload) == Action::Refuse {
                break;
            }
            n += 1;
        }
        n
    });
    if allowed == 0 && vlen > 0 {
        return refused_call(deny_as());
    }
    let args = [
        fd as c_long,
        msgs as c_long,
        allowed as c_long,
        flags as c_long,
        0,
        0,
    ];
    // SAFETY: sendmmsg's arguments (vlen cut), through the kernel layer's stub (`--seccomp`).
    if let Some(r) = unsafe { kernel::decided(libc::SYS_sendmmsg, args) } {
        return r as c_int;
    }
    // SAFETY: forwarding the caller's arguments (vlen cut to the allowed prefix) to libc.
    match unsafe { real::func::<real::SendmmsgFn>(&real::SENDMMSG) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(fd, msgs, allowed, flags) },
        None => refused_call(deny_as()),
    }
}

/// `__send`: glibc's public alias of `send`.
///
/// # Safety
/// As for `send`.
#[no_mangle]
pub unsafe extern "C" fn __send(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
) -> ssize_t {
    // SAFETY: the caller's own arguments.
    unsafe { send(fd, buf, len, flags) }
}
