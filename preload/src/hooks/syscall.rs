//! `syscall()`: a program (or a runtime) that reaches the network through libc's generic
//! system-call function is checked like the named calls. Every other number is forwarded
//! untouched. (An inline `syscall` instruction never passes through libc: see the threat
//! model.)
//!
//! `syscall` is C-variadic, which stable Rust cannot define. On x86-64 and AArch64 Linux a
//! variadic call passes integer arguments exactly as a call with that many fixed `long`
//! parameters does (registers, then the stack), so a function of seven `long` parameters
//! receives them; words the caller did not pass read whatever is in those registers or stack
//! slots, which is what glibc's own `syscall` does too, and only the words the number uses
//! are interpreted.

use libc::{c_int, c_long, c_uint, mmsghdr, msghdr, sockaddr, socklen_t};

use super::connect::decide_connect;
use super::fd::{decide_packet_socket, is_packet};
use super::send::{
    bytes, decide_msg, decide_send, msg_dest_route, msg_payload, msg_unreadable, payload,
    readable_msgs,
};
use super::sockopt::{decide_sockopt, watched};
use super::{check, check_with};
use crate::real;
use crate::sock;
use crate::state::deny_as;
use crate::verdict::{fault, refused_call, Action};

type SyscallFn = unsafe extern "C" fn(c_long, ...) -> c_long;

/// # Safety
/// `number` and the argument words as the caller passed them to `syscall()`.
unsafe fn forward(number: c_long, a: [c_long; 6]) -> c_long {
    let decided = matches!(
        number,
        libc::SYS_connect
            | libc::SYS_sendto
            | libc::SYS_sendmsg
            | libc::SYS_sendmmsg
            | libc::SYS_setsockopt
    );
    if decided {
        // SAFETY: the caller's network call, decided, through the kernel layer's stub.
        if let Some(r) = unsafe { crate::kernel::decided(number, a) } {
            return r;
        }
    }
    // SAFETY: libc's syscall is C-variadic taking the number and argument words.
    match unsafe { real::func::<SyscallFn>(&real::SYSCALL) } {
        // SAFETY: as above; extra words are ignored by the kernel for shorter calls.
        Some(f) => unsafe { f(number, a[0], a[1], a[2], a[3], a[4], a[5]) },
        None => refused_call(deny_as()),
    }
}

/// # Safety
/// Called by C as `syscall(number, ...)` (see the module comment for why the fixed signature
/// receives the variadic arguments).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[no_mangle]
pub unsafe extern "C" fn syscall(
    number: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
    a6: c_long,
) -> c_long {
    let words = [a1, a2, a3, a4, a5, a6];
    let fd = a1 as c_int;
    let action = match number {
        libc::SYS_connect if sock::unreadable(a2 as *const sockaddr, a3 as socklen_t) => {
            return fault();
        }
        libc::SYS_sendto if sock::unreadable(a5 as *const sockaddr, a6 as socklen_t) => {
            return fault();
        }
        // SAFETY: sendmsg(fd, msg, flags): the caller's msghdr.
        libc::SYS_sendmsg if unsafe { msg_unreadable(a2 as *const msghdr) } => return fault(),
        libc::SYS_setsockopt
            if watched(a2 as c_int, a3 as c_int)
                && a4 != 0
                && a5 as socklen_t > 0
                && !crate::mem::readable(a4 as *const libc::c_void, a5 as socklen_t as usize) =>
        {
            return fault();
        }
        libc::SYS_connect => {
            // SAFETY: connect(fd, addr, len): the caller's address of `len` bytes.
            let dest = unsafe { sock::read(a2 as *const sockaddr, a3 as socklen_t) };
            check(|loaded| decide_connect(loaded, fd, dest, "syscall"))
        }
        libc::SYS_sendto => {
            // SAFETY: sendto(fd, buf, len, flags, addr, addrlen): the caller's address.
            let dest = unsafe { sock::read(a5 as *const sockaddr, a6 as socklen_t) };
            // SAFETY: sendto's buffer of a3 bytes.
            let payload = unsafe { payload(a2 as *const libc::c_void, a3 as usize) };
            check(|loaded| decide_send(loaded, fd, dest, a4 as c_int, "syscall", payload))
        }
        libc::SYS_sendmsg => {
            // SAFETY: sendmsg(fd, msg, flags): the caller's msghdr.
            let dest = unsafe { msg_dest_route(a2 as *const msghdr) };
            // SAFETY: the caller's msghdr.
            let payload = unsafe { msg_payload(a2 as *const msghdr) };
            check(|loaded| decide_msg(loaded, fd, dest, a3 as c_int, "syscall", payload))
        }
        libc::SYS_socket if is_packet(a1 as c_int, a2 as c_int) => {
            check(|loaded| decide_packet_socket(loaded, "syscall"))
        }
        libc::SYS_setsockopt if watched(a2 as c_int, a3 as c_int) => {
            // SAFETY: setsockopt(fd, level, name, value, len): the caller's value.
            let value = unsafe { bytes(a4 as *const libc::c_void, a5 as socklen_t as usize) };
            let (level, name) = (a2 as c_int, a3 as c_int);
            check(|loaded| decide_sockopt(loaded, fd, level, name, value, "syscall"))
        }
        libc::SYS_sendmmsg => {
            let (msgs, vlen, flags) = (a2 as *mut mmsghdr, a3 as c_uint, a4 as c_int);
            let readable = if msgs.is_null() {
                vlen
            } else {
                // SAFETY: the caller's `vlen` entries.
                unsafe { readable_msgs(msgs, vlen) }
            };
            if readable == 0 && vlen > 0 {
                return fault();
            }
            let allowed = check_with(readable, 0, |loaded| {
                if msgs.is_null() {
                    return vlen;
                }
                let mut n = 0;
                while n < readable {
                    // SAFETY: the caller passes `vlen` mmsghdr entries.
                    let (dest, payload) = unsafe {
                        let hdr = &(*msgs.add(n as usize)).msg_hdr;
                        (msg_dest_route(hdr), msg_payload(hdr))
                    };
                    if decide_msg(loaded, fd, dest, flags, "syscall", payload) == Action::Refuse {
                        break;
                    }
                    n += 1;
                }
                n
            });
            if allowed == 0 && vlen > 0 {
                Action::Refuse
            } else {
                let mut cut = words;
                cut[2] = c_long::from(allowed);
                // SAFETY: the caller's arguments, vlen cut to the allowed prefix.
                return unsafe { forward(number, cut) };
            }
        }
        _ => Action::Proceed,
    };
    match action {
        Action::Refuse => refused_call(deny_as()),
        // SAFETY: the caller's own number and arguments.
        Action::Proceed => unsafe { forward(number, words) },
    }
}
