//! Reverse lookups: `gethostbyaddr`, `gethostbyaddr_r`, `getnameinfo`. Each sends a PTR query
//! for `<address>.in-addr.arpa` / `.ip6.arpa`: a lookup of that name, allowed only by a name
//! rule that matches it (`*.in-addr.arpa`). Addresses listed in /etc/hosts resolve locally.
//! Block mode answers a refused one as if no PTR record existed (or with the numeric form,
//! where the caller accepts it), without a query leaving.

use std::net::IpAddr;

use libc::{c_char, c_int, c_void, hostent, size_t, sockaddr, socklen_t};

use super::resolve::refuse_r;
use super::{action_for, check_with};
use crate::events;
use crate::fmt::Buf;
use crate::names;
use crate::real;
use crate::sock::{self, Dest};
use crate::state::{deny_as, Loaded};
use crate::verdict::{self, Action, DenyReason, Verdict};

/// Writes the PTR name of `ip` into `out`; returns its length.
fn arpa_name(ip: IpAddr, out: &mut [u8; 80]) -> usize {
    let mut w = Buf::new(out);
    match egress_policy::canonical_ip(ip) {
        IpAddr::V4(v4) => {
            for octet in v4.octets().iter().rev() {
                w.uint(u64::from(*octet));
                w.str(".");
            }
            w.str("in-addr.arpa");
        }
        IpAddr::V6(v6) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for byte in v6.octets().iter().rev() {
                w.bytes(&[
                    HEX[usize::from(byte & 0xf)],
                    b'.',
                    HEX[usize::from(byte >> 4)],
                    b'.',
                ]);
            }
            w.str("ip6.arpa");
        }
    }
    w.as_bytes().len()
}

fn decide_reverse(loaded: &Loaded, ip: IpAddr, call: &'static str) -> Action {
    let mut name = [0u8; 80];
    let n = arpa_name(ip, &mut name);
    let name = &name[..n];
    let verdict = match loaded.policy {
        Err(_) => Verdict::Deny(DenyReason::NoPolicy),
        Ok(_) if names::addr_in_etc_hosts(ip) => return Action::Proceed,
        Ok(view) => match view.match_name(name) {
            Some(rule) => Verdict::Allow { rule },
            None => Verdict::Deny(DenyReason::NoRule),
        },
    };
    events::record_lookup(loaded, call, name, verdict);
    action_for(loaded, verdict)
}

fn check_reverse(ip: Option<IpAddr>, call: &'static str) -> Action {
    match ip {
        Some(ip) => check_with(Action::Proceed, Action::Refuse, |l| {
            decide_reverse(l, ip, call)
        }),
        None => Action::Proceed, // libc answers malformed requests itself
    }
}

type GethostbyaddrFn = unsafe extern "C" fn(*const c_void, socklen_t, c_int) -> *mut hostent;
type GethostbyaddrRFn = unsafe extern "C" fn(
    *const c_void,
    socklen_t,
    c_int,
    *mut hostent,
    *mut c_char,
    size_t,
    *mut *mut hostent,
    *mut c_int,
) -> c_int;
type GetnameinfoFn = unsafe extern "C" fn(
    *const sockaddr,
    socklen_t,
    *mut c_char,
    socklen_t,
    *mut c_char,
    socklen_t,
    c_int,
) -> c_int;

/// # Safety
/// Called by C with gethostbyaddr(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn gethostbyaddr(
    addr: *const c_void,
    len: socklen_t,
    ty: c_int,
) -> *mut hostent {
    // SAFETY: the caller's address of `len` bytes.
    let ip = unsafe { sock::ip_from_raw(ty, len as usize, addr.cast()) };
    if check_reverse(ip, "gethostbyaddr") == Action::Refuse {
        verdict::set_h_errno(verdict::refused_reverse_h_errno(deny_as()));
        return std::ptr::null_mut();
    }
    // SAFETY: gethostbyaddr's C signature; the caller's arguments.
    match unsafe { real::func::<GethostbyaddrFn>(&real::GETHOSTBYADDR) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(addr, len, ty) },
        None => std::ptr::null_mut(),
    }
}

/// # Safety
/// Called by C with gethostbyaddr_r(3)'s arguments.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn gethostbyaddr_r(
    addr: *const c_void,
    len: socklen_t,
    ty: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    // SAFETY: the caller's address of `len` bytes.
    let ip = unsafe { sock::ip_from_raw(ty, len as usize, addr.cast()) };
    if check_reverse(ip, "gethostbyaddr_r") == Action::Refuse {
        let how = deny_as();
        let (h_errno, ret) = (
            verdict::refused_reverse_h_errno(how),
            verdict::refused_reverse_r_errno(how),
        );
        // SAFETY: the caller's out-pointers.
        return unsafe { refuse_r(result, h_errnop, h_errno, ret) };
    }
    // SAFETY: gethostbyaddr_r's C signature; the caller's arguments.
    match unsafe { real::func::<GethostbyaddrRFn>(&real::GETHOSTBYADDR_R) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(addr, len, ty, ret, buf, buflen, result, h_errnop) },
        None => libc::ENOENT,
    }
}

/// # Safety
/// Called by C with getnameinfo(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn getnameinfo(
    sa: *const sockaddr,
    salen: socklen_t,
    host: *mut c_char,
    hostlen: socklen_t,
    serv: *mut c_char,
    servlen: socklen_t,
    flags: c_int,
) -> c_int {
    let wants_name = !host.is_null() && hostlen > 0 && flags & libc::NI_NUMERICHOST == 0;
    // SAFETY: the caller's address of `salen` bytes.
    let ip = match unsafe { sock::read(sa, salen) } {
        Dest::Inet { ip, .. } if wants_name => Some(ip),
        _ => None,
    };
    let mut flags = flags;
    if check_reverse(ip, "getnameinfo") == Action::Refuse {
        let name_required = flags & libc::NI_NAMEREQD != 0;
        if let Some(status) = verdict::refused_getnameinfo(deny_as(), name_required) {
            return status;
        }
        flags |= libc::NI_NUMERICHOST; // the numeric form, with no query
    }
    // SAFETY: getnameinfo's C signature; the caller's arguments.
    match unsafe { real::func::<GetnameinfoFn>(&real::GETNAMEINFO) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(sa, salen, host, hostlen, serv, servlen, flags) },
        None => libc::EAI_FAIL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptr_names() {
        let mut out = [0u8; 80];
        let n = arpa_name("198.51.100.20".parse().unwrap(), &mut out);
        assert_eq!(&out[..n], b"20.100.51.198.in-addr.arpa");
        let n = arpa_name("2001:db8::10".parse().unwrap(), &mut out);
        assert_eq!(
            &out[..n],
            b"0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }
}
