//! `connect`: every TCP connection and every UDP association to an IPv4/IPv6 address.

use libc::{c_int, c_long, sockaddr, socklen_t};

use super::{action_for, check};
use crate::channel::{self, Attempt, Kind};
use crate::decide;
use crate::dns_sockets;
use crate::fd_kinds;
use crate::kernel;
use crate::real;
use crate::sock::{self, Dest};
use crate::state::{deny_as, Loaded};
use crate::verdict::{fault, refused_call, Action};

/// Decides one connect. Shared with TCP Fast Open sends, which connect too.
pub fn decide_connect(loaded: &Loaded, fd: c_int, dest: Dest, call: &'static str) -> Action {
    let Dest::Inet { ip, port } = dest else {
        return Action::Proceed; // Unix, netlink, AF_UNSPEC: not egress
    };
    // What socket() made, else ask the kernel; not a socket: it answers ENOTSOCK/EBADF.
    // (Port 53 always asks: a stale entry must not hide a UDP socket to a DNS server.)
    let kind = match fd_kinds::kind(fd) {
        Some(kind) if port != 53 => Some(kind),
        _ => sock::socket_kind(fd),
    };
    let Some((_, proto)) = kind else {
        return Action::Proceed;
    };
    let (verdict, host) = decide::destination(loaded, dest);
    channel::record(
        loaded,
        &Attempt {
            kind: Kind::Connect,
            call,
            proto: Some(proto),
            dest: Some((ip, port)),
            host,
            verdict,
        },
    );
    let action = action_for(loaded, verdict);
    if port == 53 && proto == sock::Proto::Udp && action == Action::Proceed {
        dns_sockets::remember(fd);
    }
    action
}

crate::caller::exported_with_caller!(
    connect => connect_from, (fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int, reg "rcx"
);

/// # Safety
/// Called by the `connect` stub with connect(2)'s arguments and the caller's address.
unsafe extern "C" fn connect_from(
    fd: c_int,
    addr: *const sockaddr,
    len: socklen_t,
    caller: usize,
) -> c_int {
    let _caller = crate::caller::Set::new(caller);
    if sock::unreadable(addr, len) {
        return fault();
    }
    // SAFETY: the caller promises `len` readable bytes at `addr`; `read` stays within them.
    let dest = unsafe { sock::read(addr, len) };
    match check(|loaded| decide_connect(loaded, fd, dest, "connect")) {
        Action::Refuse => refused_call(deny_as()),
        Action::Proceed => {
            let args = [fd as c_long, addr as c_long, len as c_long, 0, 0, 0];
            // SAFETY: connect's arguments, through the stub that passes the kernel layer's
            // filter (`--seccomp`: this call is decided already).
            if let Some(r) = unsafe { kernel::decided(libc::SYS_connect, args) } {
                return r as c_int;
            }
            // SAFETY: forwarding the caller's own arguments to the real connect.
            match unsafe { real::func::<real::ConnectFn>(&real::CONNECT) } {
                // SAFETY: as above.
                Some(f) => unsafe { f(fd, addr, len) },
                None => refused_call(deny_as()),
            }
        }
    }
}

/// `__connect`: glibc's public alias of `connect` (same function), which a program can link
/// against directly.
///
/// # Safety
/// As for `connect`.
#[no_mangle]
pub unsafe extern "C" fn __connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: the caller's own arguments.
    unsafe { connect(fd, addr, len) }
}
