//! The `res_*` resolver family and `getaddrinfo_a`. `res_query` of an arbitrary name is a DNS
//! exfiltration channel, so every one of these is a lookup: allowed only when a name rule
//! matches, refused (block mode) before any query leaves. `<resolv.h>` renames `res_query` to
//! `__res_query` (and so on), so both names are interposed.

use std::ffi::CStr;

use libc::{c_char, c_int, c_uchar, c_void};

use super::{action_for, check_with};
use crate::channel;
use crate::dnsmsg;
use crate::real;
use crate::state::{self, Loaded};
use crate::verdict::{self, Action, DenyReason, Verdict};

/// Records and decides one query of `name`: only a name rule allows it (a query of a numeric
/// or /etc/hosts name still goes to the DNS server).
pub(crate) fn decide_query(loaded: &Loaded, name: Option<&[u8]>, call: &'static str) -> Action {
    let verdict = match (loaded.policy, name) {
        (Err(_), _) => Verdict::Deny(DenyReason::NoPolicy),
        (Ok(view), Some(n)) => match view.match_name(n) {
            Some(rule) => Verdict::Allow { rule },
            None => Verdict::Deny(DenyReason::NoRule),
        },
        (Ok(_), None) => Verdict::Deny(DenyReason::NoRule),
    };
    channel::record_lookup(
        loaded,
        call,
        name.unwrap_or(b"<unreadable DNS message>"),
        verdict,
    );
    action_for(loaded, verdict)
}

/// The decision for a query of the C string `name` (joined with `domain` when given).
///
/// # Safety
/// `name` and `domain` must be null or NUL-terminated.
unsafe fn query(name: *const c_char, domain: *const c_char, call: &'static str) -> Action {
    if name.is_null() {
        return Action::Proceed; // libc rejects it itself
    }
    // SAFETY: NUL-terminated strings from the caller.
    let (name, domain) = unsafe {
        (
            CStr::from_ptr(name).to_bytes(),
            (!domain.is_null()).then(|| CStr::from_ptr(domain).to_bytes()),
        )
    };
    check_with(Action::Proceed, Action::Refuse, |loaded| {
        let mut full = [0u8; 1026];
        let joined = match domain {
            None => Some(name),
            Some(d) => {
                let n = name.len() + 1 + d.len();
                (n <= full.len()).then(|| {
                    full[..name.len()].copy_from_slice(name);
                    full[name.len()] = b'.';
                    full[name.len() + 1..n].copy_from_slice(d);
                    &full[..n]
                })
            }
        };
        decide_query(loaded, joined, call)
    })
}

/// The decision for sending the DNS message `msg` of `len` bytes.
///
/// # Safety
/// `msg` must be null or point to `len` readable bytes.
unsafe fn send_query(msg: *const c_uchar, len: c_int, call: &'static str) -> Action {
    let msg: &[u8] = if msg.is_null() || len <= 0 {
        &[]
    } else {
        // SAFETY: the caller's message of `len` bytes.
        unsafe { std::slice::from_raw_parts(msg, len as usize) }
    };
    check_with(Action::Proceed, Action::Refuse, |loaded| {
        let mut name = [0u8; 256];
        let n = dnsmsg::question_name(msg, &mut name);
        decide_query(loaded, n.map(|n| &name[..n]), call)
    })
}

fn refused() -> c_int {
    verdict::set_h_errno(verdict::refused_h_errno(state::deny_as()));
    -1
}

type QueryFn = unsafe extern "C" fn(*const c_char, c_int, c_int, *mut c_uchar, c_int) -> c_int;
type QueryDomainFn =
    unsafe extern "C" fn(*const c_char, *const c_char, c_int, c_int, *mut c_uchar, c_int) -> c_int;
type SendFn = unsafe extern "C" fn(*const c_uchar, c_int, *mut c_uchar, c_int) -> c_int;
type NQueryFn =
    unsafe extern "C" fn(*mut c_void, *const c_char, c_int, c_int, *mut c_uchar, c_int) -> c_int;
type NQueryDomainFn = unsafe extern "C" fn(
    *mut c_void,
    *const c_char,
    *const c_char,
    c_int,
    c_int,
    *mut c_uchar,
    c_int,
) -> c_int;
type NSendFn =
    unsafe extern "C" fn(*mut c_void, *const c_uchar, c_int, *mut c_uchar, c_int) -> c_int;

/// Defines a hook under both its public name and glibc's `__` name.
macro_rules! both_names {
    ($public:ident, $private:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        /// # Safety
        /// Called by C with the libc function's arguments.
        #[no_mangle]
        pub unsafe extern "C" fn $public($($arg: $ty),*) -> c_int {
            // SAFETY: the caller's arguments, passed on unchanged.
            unsafe { $body(stringify!($public), $($arg),*) }
        }

        /// # Safety
        /// Called by C with the libc function's arguments.
        #[no_mangle]
        pub unsafe extern "C" fn $private($($arg: $ty),*) -> c_int {
            // SAFETY: the caller's arguments, passed on unchanged.
            unsafe { $body(stringify!($public), $($arg),*) }
        }
    };
}

/// # Safety
/// res_query(3)/res_search(3) arguments.
unsafe fn query_impl(
    call: &'static str,
    dname: *const c_char,
    class: c_int,
    ty: c_int,
    answer: *mut c_uchar,
    anslen: c_int,
) -> c_int {
    // SAFETY: dname from the caller.
    if unsafe { query(dname, std::ptr::null(), call) } == Action::Refuse {
        return refused();
    }
    let realf = if call == "res_search" {
        &real::RES_SEARCH
    } else {
        &real::RES_QUERY
    };
    // SAFETY: the C signature of res_query/res_search; the caller's arguments.
    match unsafe { real::func::<QueryFn>(realf) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(dname, class, ty, answer, anslen) },
        None => refused(),
    }
}

/// # Safety
/// res_querydomain(3) arguments.
unsafe fn querydomain_impl(
    call: &'static str,
    name: *const c_char,
    domain: *const c_char,
    class: c_int,
    ty: c_int,
    answer: *mut c_uchar,
    anslen: c_int,
) -> c_int {
    // SAFETY: name and domain from the caller.
    if unsafe { query(name, domain, call) } == Action::Refuse {
        return refused();
    }
    // SAFETY: res_querydomain's C signature; the caller's arguments.
    match unsafe { real::func::<QueryDomainFn>(&real::RES_QUERYDOMAIN) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(name, domain, class, ty, answer, anslen) },
        None => refused(),
    }
}

/// # Safety
/// res_send(3) arguments.
unsafe fn send_impl(
    call: &'static str,
    msg: *const c_uchar,
    msglen: c_int,
    answer: *mut c_uchar,
    anslen: c_int,
) -> c_int {
    // SAFETY: the caller's message.
    if unsafe { send_query(msg, msglen, call) } == Action::Refuse {
        return refused();
    }
    // SAFETY: res_send's C signature; the caller's arguments.
    match unsafe { real::func::<SendFn>(&real::RES_SEND) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(msg, msglen, answer, anslen) },
        None => refused(),
    }
}

/// # Safety
/// res_nquery(3)/res_nsearch(3) arguments.
unsafe fn nquery_impl(
    call: &'static str,
    statp: *mut c_void,
    dname: *const c_char,
    class: c_int,
    ty: c_int,
    answer: *mut c_uchar,
    anslen: c_int,
) -> c_int {
    // SAFETY: dname from the caller.
    if unsafe { query(dname, std::ptr::null(), call) } == Action::Refuse {
        return refused();
    }
    let realf = if call == "res_nsearch" {
        &real::RES_NSEARCH
    } else {
        &real::RES_NQUERY
    };
    // SAFETY: the C signature of res_nquery/res_nsearch; the caller's arguments.
    match unsafe { real::func::<NQueryFn>(realf) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(statp, dname, class, ty, answer, anslen) },
        None => refused(),
    }
}

/// # Safety
/// res_nquerydomain(3) arguments.
#[allow(clippy::too_many_arguments)]
unsafe fn nquerydomain_impl(
    call: &'static str,
    statp: *mut c_void,
    name: *const c_char,
    domain: *const c_char,
    class: c_int,
    ty: c_int,
    answer: *mut c_uchar,
    anslen: c_int,
) -> c_int {
    // SAFETY: name and domain from the caller.
    if unsafe { query(name, domain, call) } == Action::Refuse {
        return refused();
    }
    // SAFETY: res_nquerydomain's C signature; the caller's arguments.
    match unsafe { real::func::<NQueryDomainFn>(&real::RES_NQUERYDOMAIN) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(statp, name, domain, class, ty, answer, anslen) },
        None => refused(),
    }
}

/// # Safety
/// res_nsend(3) arguments.
unsafe fn nsend_impl(
    call: &'static str,
    statp: *mut c_void,
    msg: *const c_uchar,
    msglen: c_int,
    answer: *mut c_uchar,
    anslen: c_int,
) -> c_int {
    // SAFETY: the caller's message.
    if unsafe { send_query(msg, msglen, call) } == Action::Refuse {
        return refused();
    }
    // SAFETY: res_nsend's C signature; the caller's arguments.
    match unsafe { real::func::<NSendFn>(&real::RES_NSEND) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(statp, msg, msglen, answer, anslen) },
        None => refused(),
    }
}

both_names!(res_query, __res_query, query_impl, (dname: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int));
both_names!(res_search, __res_search, query_impl, (dname: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int));
both_names!(res_querydomain, __res_querydomain, querydomain_impl, (name: *const c_char, domain: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int));
both_names!(res_send, __res_send, send_impl, (msg: *const c_uchar, msglen: c_int, answer: *mut c_uchar, anslen: c_int));
both_names!(res_nquery, __res_nquery, nquery_impl, (statp: *mut c_void, dname: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int));
both_names!(res_nsearch, __res_nsearch, nquery_impl, (statp: *mut c_void, dname: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int));
both_names!(res_nquerydomain, __res_nquerydomain, nquerydomain_impl, (statp: *mut c_void, name: *const c_char, domain: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int));
both_names!(res_nsend, __res_nsend, nsend_impl, (statp: *mut c_void, msg: *const c_uchar, msglen: c_int, answer: *mut c_uchar, anslen: c_int));
