//! `listen` and `bind`: not egress, never refused. A TCP listener, or a bound UDP socket, on a
//! loopback or wildcard address is recorded for `loopback:own` (own.rs) after the call
//! succeeded.

use libc::{c_int, sockaddr, socklen_t};

use super::after;
use crate::own;
use crate::real;
use crate::sock::{self, Proto};
use crate::verdict::set_errno;

/// # Safety
/// Called by C with listen(2)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    // SAFETY: ListenFn is listen's C signature.
    let Some(real_listen) = (unsafe { real::func::<real::ListenFn>(&real::LISTEN) }) else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    // SAFETY: the caller's own arguments.
    let rc = unsafe { real_listen(fd, backlog) };
    if rc == 0 {
        after(|loaded| {
            if loaded.level == 0 {
                own::note_listener(fd);
            }
        });
    }
    rc
}

/// # Safety
/// Called by C with bind(2)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: BindFn is bind's C signature.
    let Some(real_bind) = (unsafe { real::func::<real::BindFn>(&real::BIND) }) else {
        set_errno(libc::ENOSYS);
        return -1;
    };
    // SAFETY: the caller's own arguments.
    let rc = unsafe { real_bind(fd, addr, len) };
    if rc == 0 {
        after(|loaded| {
            if loaded.level == 0 && sock::socket_kind(fd).is_some_and(|(_, p)| p == Proto::Udp) {
                own::note_listener(fd);
            }
        });
    }
    rc
}
