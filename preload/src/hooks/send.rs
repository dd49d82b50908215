//! `sendto`, `sendmsg`, `sendmmsg`: datagrams that carry their own destination, and TCP Fast
//! Open sends, which connect.

use std::net::{IpAddr, Ipv4Addr};

use libc::{c_int, c_long, c_uint, c_void, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use super::connect::decide_connect;
use super::sockopt::decide_route;
use super::{action_for, check, check_with};
use crate::decide;
use crate::dns_sockets;
use crate::dnsmsg;
use crate::events::{self, Attempt, Kind};
use crate::fd_kinds;
use crate::kernel;
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
    payload: &[u8],
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
    let (ty, proto) = match fd_kinds::kind(fd) {
        Some(kind @ (libc::SOCK_DGRAM, _)) => kind,
        _ => match sock::socket_kind(fd) {
            None => return Action::Proceed,
            Some(kind) => match sock::header_dest(fd, payload) {
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
        None if port == 53 => dnsmsg::question_name(payload, &mut qname).map(|n| &qname[..n]),
        h => h,
    };
    record_send(loaded, call, proto, dest, host, verdict)
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
    events::record(
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
    payload: &[u8],
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
/// data (EFAULT), as far as `sock::plausible` can tell without a system call.
///
/// # Safety
/// `msg` must be null, implausible, or point to a readable msghdr.
pub(crate) unsafe fn msg_unreadable(msg: *const msghdr) -> bool {
    if msg.is_null() {
        return false; // nothing to read here: the kernel answers EFAULT
    }
    if !sock::plausible(msg, std::mem::size_of::<msghdr>()) {
        return true;
    }
    // SAFETY: a plausible msghdr pointer from the caller.
    let m = unsafe { &*msg };
    let iovs = m.msg_iovlen.min(libc::UIO_MAXIOV as usize);
    sock::unreadable(m.msg_name.cast_const().cast(), m.msg_namelen)
        || (m.msg_controllen > 0
            && !m.msg_control.is_null()
            && !sock::plausible(m.msg_control, m.msg_controllen))
        || (iovs > 0
            && !m.msg_iov.is_null()
            && !sock::plausible(m.msg_iov, iovs * std::mem::size_of::<libc::iovec>()))
}

/// How many of the `vlen` messages at `msgs` the guard can read (the kernel sends those and
/// stops at the first it cannot read: EFAULT if that is the first).
///
/// # Safety
/// Each of the `vlen` entries must be implausible or a readable mmsghdr (see `msg_unreadable`).
pub(crate) unsafe fn readable_msgs(msgs: *const mmsghdr, vlen: c_uint) -> c_uint {
    let mut n: c_uint = 0;
    while n < vlen {
        let entry = msgs.wrapping_add(n as usize);
        if !sock::plausible(entry, std::mem::size_of::<mmsghdr>()) {
            break;
        }
        // SAFETY: a plausible entry is the caller's mmsghdr; msg_hdr is its first field.
        if unsafe { msg_unreadable(std::ptr::addr_of!((*entry).msg_hdr)) } {
            break;
        }
        n += 1;
    }
    n
}

/// The bytes of `buf`/`len` (empty when null, or when no user memory can be there: then the
/// kernel answers EFAULT for it, and the guard must not read it).
///
/// # Safety
/// `buf` must be null, implausible, or point to `len` readable bytes that outlive the
/// returned slice's use.
pub(crate) unsafe fn bytes<'a>(buf: *const c_void, len: usize) -> &'a [u8] {
    if buf.is_null() || len == 0 || !sock::plausible(buf, len) {
        &[]
    } else {
        // SAFETY: `len` readable bytes at `buf`, per the caller.
        unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }
    }
}

/// The first buffer of a msghdr (where a DNS question would start).
///
/// # Safety
/// `msg` must be null or a readable msghdr whose iovecs describe readable memory.
pub(crate) unsafe fn msg_payload<'a>(msg: *const msghdr) -> &'a [u8] {
    if msg.is_null() {
        return &[];
    }
    // SAFETY: a readable msghdr from the caller.
    let m = unsafe { &*msg };
    if m.msg_iov.is_null() || m.msg_iovlen == 0 {
        return &[];
    }
    // SAFETY: msg_iov points to msg_iovlen readable iovecs, each describing readable memory.
    unsafe {
        let iov = &*m.msg_iov;
        bytes(iov.iov_base, iov.iov_len)
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

/// # Safety
/// Called by C with sendto(2)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    addrlen: socklen_t,
) -> ssize_t {
    if sock::unreadable(addr, addrlen) {
        return fault::<i8>() as ssize_t;
    }
    // SAFETY: the caller promises `addrlen` readable bytes at `addr` (or null).
    let dest = unsafe { sock::read(addr, addrlen) };
    // SAFETY: the caller's buffer of `len` bytes.
    let payload = unsafe { bytes(buf, len) };
    match check(|loaded| decide_send(loaded, fd, dest, flags, "sendto", payload)) {
        Action::Refuse => refused_call::<i8>(deny_as()) as ssize_t,
        Action::Proceed => {
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
        let payload = unsafe { bytes(buf, len) };
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

/// # Safety
/// Called by C with sendmsg(2)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
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
