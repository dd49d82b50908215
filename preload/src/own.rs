//! `loopback:own`: a loopback destination is allowed while a process of this run listens
//! (TCP) or is bound (UDP) there, and no process outside the run does.
//!
//! Recording: after a successful `listen` (TCP) or `bind` (UDP) on a loopback or wildcard
//! address, the process creates an empty file named by the socket's inode in the run's
//! directory (`Locator::own_dir`, made by the launcher, 0700). Checking, at each attempt to a
//! loopback destination no other rule allows: the kernel's socket table (`sock_diag` over
//! netlink) lists every TCP listener and UDP socket on that port that could take the attempt
//! (bound to the destination address, to `0.0.0.0`, or to `::`, which may be dual-stack);
//! the destination is the run's own when there is at least one and every one has a record.
//! So a listener that closed no longer counts (its inode is gone from the table), and a
//! foreign one sharing the port (`SO_REUSEPORT`, or `[::]:P` beside our `127.0.0.1:P`) makes
//! the destination foreign. Sockets in other network namespaces are not seen (nor reachable).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use egress_policy::{canonical_ip, Locator};
use libc::c_int;

use crate::real;
use crate::scratch::Scratch;
use crate::state::{self, Loaded};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_LISTEN: u32 = 10;
const NLMSG_HDR: usize = 16;
/// inet_diag_msg: family state timer retrans, sockid (48 bytes), expires rqueue wqueue uid
/// inode.
const DIAG_MSG_LEN: usize = 72;

/// True when some level of this process has a `loopback:own` rule (else nothing is recorded).
fn wanted(loaded: &Loaded) -> bool {
    loaded.policy.is_ok_and(|v| v.loopback_own_rule().is_some())
        || loaded.policy.is_ok_and(|v| {
            v.grantable()
                .any(|g| g.eq_ignore_ascii_case("loopback:own"))
        })
}

/// The record path of `inode` in `loc`'s directory, NUL-terminated.
fn record_path(loc: &Locator, inode: u64, buf: &mut [u8; 96]) {
    let mut dir = [0u8; 64];
    let n = loc.own_dir_into(&mut dir);
    let mut w = crate::fmt::Buf::new(&mut buf[..95]);
    w.bytes(&dir[..n]);
    w.str("/");
    w.uint(inode);
    let len = w.as_bytes().len();
    buf[len] = 0;
}

/// The local address of socket `fd`, if IPv4 or IPv6.
fn local_addr(fd: c_int) -> Option<(IpAddr, u16)> {
    // SAFETY: an all-zero sockaddr_storage is valid to be overwritten.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: ss is valid for writes of len bytes.
    if unsafe {
        libc::getsockname(
            fd,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    } != 0
    {
        return None;
    }
    match c_int::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for an AF_INET socket.
            let sin =
                unsafe { &*(&ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some((IpAddr::V4(ip), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for an AF_INET6 socket.
            let sin6 =
                unsafe { &*(&ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some((IpAddr::V6(ip), u16::from_be(sin6.sin6_port)))
        }
        _ => None,
    }
}

/// After a successful `listen`, or `bind` of a UDP socket: records the socket when it is on a
/// loopback or wildcard address (`is_loopback` covers both) and the run uses `loopback:own`.
pub fn note_listener(fd: c_int) {
    let Some(loaded) = state::current() else {
        return;
    };
    if !state::levels().iter().any(wanted)
        || !local_addr(fd).is_some_and(|(ip, _)| egress_policy::is_loopback(ip))
    {
        return;
    }
    // SAFETY: an all-zero stat is valid to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is valid for writes.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return;
    }
    let _ = loaded;
    for level in state::levels() {
        let Some(loc) = level.locator else { continue };
        let mut path = [0u8; 96];
        record_path(&loc, st.st_ino, &mut path);
        // SAFETY: a NUL-terminated path; open/close are not hooked.
        unsafe {
            let rec = libc::open(
                path.as_ptr().cast(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                0o600,
            );
            if rec >= 0 {
                libc::close(rec);
            }
        }
    }
}

/// Whether `ip:port` (loopback) is the run's own for the innermost level.
pub fn owned_here(ip: IpAddr, port: u16) -> bool {
    state::current()
        .and_then(|l| l.locator)
        .is_some_and(|loc| owned(&loc, ip, port))
}

/// Whether `ip:port` (loopback) is the run's own: some listener or bound socket could take it,
/// and every one that could is recorded in `loc`'s directory.
pub fn owned(loc: &Locator, ip: IpAddr, port: u16) -> bool {
    let ip = canonical_ip(ip);
    let mut any = false;
    let mut all_ours = true;
    let mut visit = |inode: u64| {
        any = true;
        let mut path = [0u8; 96];
        record_path(loc, inode, &mut path);
        // SAFETY: an all-zero stat is valid to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path; st is valid for writes.
        if unsafe { libc::stat(path.as_ptr().cast(), &mut st) } != 0 {
            all_ours = false;
        }
    };
    for (family, protocol, states) in [
        (libc::AF_INET, libc::IPPROTO_TCP, 1u32 << TCP_LISTEN),
        (libc::AF_INET6, libc::IPPROTO_TCP, 1u32 << TCP_LISTEN),
        (libc::AF_INET, libc::IPPROTO_UDP, u32::MAX),
        (libc::AF_INET6, libc::IPPROTO_UDP, u32::MAX),
    ] {
        if dump(family, protocol, states, ip, port, &mut visit).is_none() {
            return false; // the table could not be read: not known to be ours
        }
    }
    any && all_ours
}

/// Whether a socket bound to `bound` (of `family`) may take an attempt to `dest`.
fn may_take(family: c_int, bound: &[u8; 16], dest: IpAddr) -> bool {
    match family {
        libc::AF_INET => {
            let b = Ipv4Addr::new(bound[0], bound[1], bound[2], bound[3]);
            b.is_unspecified() || dest == IpAddr::V4(b)
        }
        _ => {
            let b = Ipv6Addr::from(*bound);
            // `::` may be dual-stack (taking IPv4 too): counted either way, to be safe.
            b.is_unspecified() || canonical_ip(IpAddr::V6(b)) == dest
        }
    }
}

/// Lists the sockets of `family`/`protocol` in `states` on local port `port` that may take an
/// attempt to `dest`, calling `visit` with each one's inode. None when the kernel's table could
/// not be read.
fn dump(
    family: c_int,
    protocol: c_int,
    states: u32,
    dest: IpAddr,
    port: u16,
    visit: &mut impl FnMut(u64),
) -> Option<()> {
    let mut buf = Scratch::<[u8; 16384]>::new()?;
    // SAFETY: plain socket(2) (the guard's own, as in events.rs), closed below.
    let nl = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if nl < 0 {
        return None;
    }
    let result = query(
        nl,
        family,
        protocol,
        states,
        dest,
        port,
        &mut buf[..],
        visit,
    );
    // SAFETY: nl is ours.
    unsafe { libc::close(nl) };
    result
}

#[allow(clippy::too_many_arguments)]
fn query(
    nl: c_int,
    family: c_int,
    protocol: c_int,
    states: u32,
    dest: IpAddr,
    port: u16,
    buf: &mut [u8],
    visit: &mut impl FnMut(u64),
) -> Option<()> {
    // nlmsghdr (16) + inet_diag_req_v2 (56): family protocol ext pad states, then the socket
    // id (all zero: every socket of the family; filtered below).
    let mut req = [0u8; NLMSG_HDR + 56];
    let len = req.len() as u32;
    req[0..4].copy_from_slice(&len.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[16] = family as u8;
    req[17] = protocol as u8;
    req[20..24].copy_from_slice(&states.to_ne_bytes());
    // SAFETY: SendtoFn is sendto's C signature (the real one: netlink is not egress anyway).
    let sendto = unsafe { real::func::<real::SendtoFn>(&real::SENDTO) }?;
    // SAFETY: req is valid for reads of its length; no destination (the kernel).
    if unsafe { sendto(nl, req.as_ptr().cast(), req.len(), 0, std::ptr::null(), 0) } < 0 {
        return None;
    }
    loop {
        // SAFETY: buf is valid for writes of its length; recv is not hooked.
        let n = unsafe { libc::recv(nl, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            return None;
        }
        let mut at = 0usize;
        let n = n as usize;
        while at + NLMSG_HDR <= n {
            let msg_len = u32::from_ne_bytes(buf[at..at + 4].try_into().ok()?) as usize;
            let ty = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().ok()?);
            if msg_len < NLMSG_HDR || at + msg_len > n {
                return None;
            }
            match ty {
                NLMSG_DONE => return Some(()),
                NLMSG_ERROR => return None,
                _ if msg_len >= NLMSG_HDR + DIAG_MSG_LEN => {
                    let m = &buf[at + NLMSG_HDR..at + NLMSG_HDR + DIAG_MSG_LEN];
                    let sport = u16::from_be_bytes([m[4], m[5]]);
                    let mut src = [0u8; 16];
                    src.copy_from_slice(&m[8..24]);
                    let inode = u32::from_ne_bytes(m[68..72].try_into().ok()?);
                    if sport == port && may_take(c_int::from(m[0]), &src, dest) {
                        visit(u64::from(inode));
                    }
                }
                _ => {}
            }
            // Messages are 4-byte aligned.
            at += (msg_len + 3) & !3;
        }
    }
}
