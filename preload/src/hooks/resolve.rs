//! Name lookups: `getaddrinfo` and the `gethostbyname` family. A denied name is refused
//! before libc sends any query; an allowed name's addresses become allowed destinations of
//! this process on the rule's ports.

use std::ffi::CStr;
use std::net::IpAddr;

use libc::{addrinfo, c_char, c_int, hostent, size_t};

use super::{after, check_with};
use crate::channel;
use crate::decide::{self, Lookup};
use crate::learned;
use crate::real;
use crate::sock::{self, Dest};
use crate::state::{deny_as, Loaded};
use crate::verdict::{self, DenyReason, Verdict};

/// What a lookup hook does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    Refuse,
    Resolve {
        /// Resolve with `AI_NUMERICHOST`: the name is an address, no query may leave.
        numeric: bool,
        /// Remember the results for this name (with the rule that allows it at each level).
        learn: bool,
        /// Resolve the loopback address instead of the name (a `localhost` name that glibc
        /// would otherwise ask DNS for).
        loopback: bool,
    },
}

pub(crate) const UNCHECKED: Plan = Plan::Resolve {
    numeric: false,
    learn: false,
    loopback: false,
};

pub(crate) fn plan(
    loaded: &Loaded,
    name: &[u8],
    call: &'static str,
    numeric_hint: bool,
    family: c_int,
) -> Plan {
    let looked_up = if family == LOOKUP_AS_QUERIED {
        libc::AF_UNSPEC
    } else {
        family
    };
    let verdict = match decide::name(loaded, name, numeric_hint, looked_up) {
        // A call that cannot be answered with another name (getaddrinfo_a queues the
        // caller's own request) decides it as the lookup it would be.
        Lookup::Loopback if family == LOOKUP_AS_QUERIED => Verdict::Deny(DenyReason::NoRule),
        Lookup::Numeric => {
            return Plan::Resolve {
                numeric: true,
                learn: false,
                loopback: false,
            }
        }
        Lookup::Local => {
            return Plan::Resolve {
                numeric: false,
                learn: true,
                loopback: false,
            }
        }
        Lookup::Loopback => {
            return Plan::Resolve {
                numeric: true,
                learn: false,
                loopback: true,
            }
        }
        Lookup::Dns(verdict) => verdict,
    };
    channel::record_lookup(loaded, call, name, verdict);
    if loaded.refuses(verdict) {
        return Plan::Refuse;
    }
    Plan::Resolve {
        numeric: false,
        learn: true,
        loopback: false,
    }
}

/// `plan`'s family for getaddrinfo_a: any family (as AF_UNSPEC), and a `localhost` name that
/// glibc would ask DNS for is decided as that lookup (the request cannot be rewritten).
const LOOKUP_AS_QUERIED: c_int = -1;

/// The name libc is asked for: the caller's, or the loopback address of `family` for a
/// `localhost` name glibc would ask DNS for.
fn asked(name: *const c_char, plan: Plan, family: c_int) -> *const c_char {
    match plan {
        Plan::Resolve { loopback: true, .. } if family == libc::AF_INET6 => c"::1".as_ptr(),
        Plan::Resolve { loopback: true, .. } => c"127.0.0.1".as_ptr(),
        _ => name,
    }
}

/// Whether libc may send a query for this plan (under `--seccomp` it then opens a lookup
/// window with the supervisor, `kernel::LookupWindow`).
fn may_query(plan: Plan) -> bool {
    matches!(
        plan,
        Plan::Resolve {
            numeric: false,
            loopback: false,
            ..
        }
    )
}

/// Plans a lookup of the C string `name` for `family`.
///
/// # Safety
/// `name` must be null or a NUL-terminated string.
unsafe fn plan_for(
    name: *const c_char,
    call: &'static str,
    numeric_hint: bool,
    family: c_int,
) -> Plan {
    if name.is_null() {
        return UNCHECKED; // libc rejects it itself
    }
    // SAFETY: a NUL-terminated string from the caller.
    let bytes = unsafe { CStr::from_ptr(name) }.to_bytes();
    check_with(UNCHECKED, Plan::Refuse, |loaded| {
        plan(loaded, bytes, call, numeric_hint, family)
    })
}

/// A nested run's levels combine their plans: a refusal wins; otherwise every level plans the
/// same resolution (whether the name is numeric does not depend on the policy).
impl super::Stricter for Plan {
    fn stricter(self, other: Self) -> Self {
        match self {
            Plan::Refuse => self,
            Plan::Resolve { .. } if other == Plan::Refuse => other,
            Plan::Resolve { .. } => self,
        }
    }
}

/// Remembers the addresses `name` resolved to, at each level with the name rule that allows
/// it there (rule numbers belong to one level's policy).
fn learn(name: *const c_char, addrs: impl Iterator<Item = IpAddr> + Clone) {
    after(|loaded| {
        // SAFETY: the same NUL-terminated string the caller passed in.
        let name = unsafe { CStr::from_ptr(name) }.to_bytes();
        let rule = match decide::name(loaded, name, false, libc::AF_UNSPEC) {
            Lookup::Dns(Verdict::Allow { rule }) => Some(rule),
            _ => None,
        };
        for ip in addrs.clone() {
            learned::remember(loaded.level, ip, name, rule);
        }
    });
}

crate::caller::exported_with_caller!(
    getaddrinfo => getaddrinfo_from,
    (node: *const c_char, service: *const c_char, hints: *const addrinfo, res: *mut *mut addrinfo)
        -> c_int,
    reg "r8"
);

/// # Safety
/// Called by the `getaddrinfo` stub with getaddrinfo(3)'s arguments and the caller's address.
unsafe extern "C" fn getaddrinfo_from(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
    caller: usize,
) -> c_int {
    let _caller = crate::caller::Set::new(caller);
    // SAFETY: hints is null or the caller's addrinfo.
    let numeric_only = !hints.is_null() && unsafe { (*hints).ai_flags } & libc::AI_NUMERICHOST != 0;
    let family = if hints.is_null() {
        libc::AF_UNSPEC
    } else {
        // SAFETY: hints is the caller's addrinfo (non-null).
        unsafe { (*hints).ai_family }
    };
    // getaddrinfo(NULL, ...) and AI_NUMERICHOST never query a resolver.
    let plan = if node.is_null() || numeric_only {
        UNCHECKED
    } else {
        // SAFETY: node is a NUL-terminated string from the caller.
        unsafe { plan_for(node, "getaddrinfo", true, family) }
    };
    let Plan::Resolve {
        numeric,
        learn: learn_results,
        ..
    } = plan
    else {
        return verdict::refused_eai(deny_as());
    };
    let node = asked(node, plan, family);
    // SAFETY: getaddrinfo's C signature.
    let Some(real_fn) = (unsafe { real::func::<real::GetaddrinfoFn>(&real::GETADDRINFO) }) else {
        return verdict::refused_eai(deny_as());
    };
    let _window =
        crate::kernel::LookupWindow::open(!node.is_null() && !numeric_only && may_query(plan));
    let rc = if numeric {
        // The same request, but libc may only parse the name as an address.
        let mut h: addrinfo = if hints.is_null() {
            // SAFETY: an all-zero addrinfo is a valid value.
            let mut h: addrinfo = unsafe { std::mem::zeroed() };
            h.ai_family = libc::AF_UNSPEC;
            h.ai_flags = libc::AI_V4MAPPED | libc::AI_ADDRCONFIG; // glibc's default for NULL hints
            h
        } else {
            // SAFETY: the caller's hints, copied.
            unsafe { std::ptr::read(hints) }
        };
        h.ai_flags |= libc::AI_NUMERICHOST;
        // SAFETY: forwarding the caller's arguments with our copy of the hints.
        unsafe { real_fn(node, service, &h, res) }
    } else {
        // SAFETY: forwarding the caller's arguments.
        unsafe { real_fn(node, service, hints, res) }
    };
    if rc == 0 && learn_results && !res.is_null() {
        // SAFETY: on success *res heads a list libc built; we only read it.
        let mut ai = unsafe { *res };
        let addrs = std::iter::from_fn(move || {
            while !ai.is_null() {
                // SAFETY: ai is a node of libc's list.
                let (addr, len, next) = unsafe { ((*ai).ai_addr, (*ai).ai_addrlen, (*ai).ai_next) };
                ai = next;
                // SAFETY: ai_addr/ai_addrlen from libc describe a readable address.
                if let Dest::Inet { ip, .. } = unsafe { sock::read(addr, len) } {
                    return Some(ip);
                }
            }
            None
        });
        learn(node, addrs);
    }
    rc
}

/// The addresses of a hostent, read without copying the list.
///
/// # Safety
/// `h` must be null or a hostent libc filled in.
unsafe fn hostent_addrs(h: *const hostent) -> impl Iterator<Item = IpAddr> + Clone {
    let (ty, len, mut list) = if h.is_null() {
        (0, 0, std::ptr::null_mut())
    } else {
        // SAFETY: a hostent from libc.
        unsafe { ((*h).h_addrtype, (*h).h_length, (*h).h_addr_list) }
    };
    std::iter::from_fn(move || {
        if list.is_null() {
            return None;
        }
        // SAFETY: h_addr_list is a NULL-terminated array of pointers to h_length bytes.
        let p = unsafe { *list };
        if p.is_null() {
            return None;
        }
        // SAFETY: advancing within the NULL-terminated array.
        list = unsafe { list.add(1) };
        // SAFETY: each entry points to h_length bytes of an address of type h_addrtype.
        unsafe { sock::ip_from_raw(ty, len as usize, p.cast()) }
    })
}

/// # Safety
/// Called by C with gethostbyname(3)'s argument.
#[no_mangle]
pub unsafe extern "C" fn gethostbyname(name: *const c_char) -> *mut hostent {
    // SAFETY: name is the caller's NUL-terminated string (or null).
    let plan = unsafe { plan_for(name, "gethostbyname", false, libc::AF_INET) };
    let Plan::Resolve { learn: l, .. } = plan else {
        verdict::set_h_errno(verdict::refused_h_errno(deny_as()));
        return std::ptr::null_mut();
    };
    let name = asked(name, plan, libc::AF_INET);
    let _window = crate::kernel::LookupWindow::open(may_query(plan));
    // SAFETY: gethostbyname's C signature, forwarding the caller's argument.
    let h = match unsafe { real::func::<real::GethostbynameFn>(&real::GETHOSTBYNAME) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(name) },
        None => std::ptr::null_mut(),
    };
    if l && !h.is_null() {
        // SAFETY: h was filled in by libc.
        learn(name, unsafe { hostent_addrs(h) });
    }
    h
}

/// # Safety
/// Called by C with gethostbyname2(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent {
    // SAFETY: name is the caller's NUL-terminated string (or null).
    let plan = unsafe { plan_for(name, "gethostbyname2", false, af) };
    let Plan::Resolve { learn: l, .. } = plan else {
        verdict::set_h_errno(verdict::refused_h_errno(deny_as()));
        return std::ptr::null_mut();
    };
    let name = asked(name, plan, af);
    let _window = crate::kernel::LookupWindow::open(may_query(plan));
    // SAFETY: gethostbyname2's C signature, forwarding the caller's arguments.
    let h = match unsafe { real::func::<real::Gethostbyname2Fn>(&real::GETHOSTBYNAME2) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(name, af) },
        None => std::ptr::null_mut(),
    };
    if l && !h.is_null() {
        // SAFETY: h was filled in by libc.
        learn(name, unsafe { hostent_addrs(h) });
    }
    h
}

/// A refused `gethostbyname*_r`, with the codes `--deny-as` chose.
///
/// # Safety
/// As for `refuse_r`.
unsafe fn refused_lookup_r(result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int {
    let how = deny_as();
    // SAFETY: as the caller promises.
    unsafe {
        refuse_r(
            result,
            h_errnop,
            verdict::refused_h_errno(how),
            verdict::refused_r_errno(how),
        )
    }
}

/// A refused `*_r` lookup: no result, `h_errno` in the caller's slot and in the thread's
/// `h_errno` (glibc's resolver sets both, and CPython reads the thread's), `ret` returned.
///
/// # Safety
/// `result` and `h_errnop` must be null or writable.
pub(crate) unsafe fn refuse_r(
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
    h_errno: c_int,
    ret: c_int,
) -> c_int {
    if !result.is_null() {
        // SAFETY: writable per the caller.
        unsafe { *result = std::ptr::null_mut() };
    }
    verdict::set_h_errno(h_errno);
    if !h_errnop.is_null() {
        // SAFETY: writable per the caller.
        unsafe { *h_errnop = h_errno };
    }
    ret
}

/// # Safety
/// Called by C with gethostbyname_r(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn gethostbyname_r(
    name: *const c_char,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    // SAFETY: name is the caller's NUL-terminated string (or null).
    let plan = unsafe { plan_for(name, "gethostbyname_r", false, libc::AF_INET) };
    let Plan::Resolve { learn: l, .. } = plan else {
        // SAFETY: the caller's out-pointers.
        return unsafe { refused_lookup_r(result, h_errnop) };
    };
    let name = asked(name, plan, libc::AF_INET);
    let _window = crate::kernel::LookupWindow::open(may_query(plan));
    // SAFETY: gethostbyname_r's C signature, forwarding the caller's arguments.
    let rc = match unsafe { real::func::<real::GethostbynameRFn>(&real::GETHOSTBYNAME_R) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(name, ret, buf, buflen, result, h_errnop) },
        // SAFETY: the caller's out-pointers.
        None => return unsafe { refused_lookup_r(result, h_errnop) },
    };
    // SAFETY: result is the caller's out-pointer, filled in by libc on success.
    if rc == 0 && l && !result.is_null() && !unsafe { *result }.is_null() {
        // SAFETY: *result points to a hostent libc filled in.
        learn(name, unsafe { hostent_addrs(*result) });
    }
    rc
}

/// # Safety
/// Called by C with gethostbyname2_r(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn gethostbyname2_r(
    name: *const c_char,
    af: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    // SAFETY: name is the caller's NUL-terminated string (or null).
    let plan = unsafe { plan_for(name, "gethostbyname2_r", false, af) };
    let Plan::Resolve { learn: l, .. } = plan else {
        // SAFETY: the caller's out-pointers.
        return unsafe { refused_lookup_r(result, h_errnop) };
    };
    let name = asked(name, plan, af);
    let _window = crate::kernel::LookupWindow::open(may_query(plan));
    // SAFETY: gethostbyname2_r's C signature, forwarding the caller's arguments.
    let rc = match unsafe { real::func::<real::Gethostbyname2RFn>(&real::GETHOSTBYNAME2_R) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(name, af, ret, buf, buflen, result, h_errnop) },
        // SAFETY: the caller's out-pointers.
        None => return unsafe { refused_lookup_r(result, h_errnop) },
    };
    // SAFETY: result is the caller's out-pointer, filled in by libc on success.
    if rc == 0 && l && !result.is_null() && !unsafe { *result }.is_null() {
        // SAFETY: *result points to a hostent libc filled in.
        learn(name, unsafe { hostent_addrs(*result) });
    }
    rc
}

/// glibc's `struct gaicb` (netdb.h), the request of `getaddrinfo_a`.
#[repr(C)]
pub struct Gaicb {
    ar_name: *const c_char,
    ar_service: *const c_char,
    ar_request: *const addrinfo,
    ar_result: *mut addrinfo,
    ret: c_int,
    reserved: [c_int; 5],
}

type GetaddrinfoAFn =
    unsafe extern "C" fn(c_int, *mut *mut Gaicb, c_int, *mut libc::sigevent) -> c_int;

/// `getaddrinfo_a`'s mode that waits for the whole batch (netdb.h).
const GAI_WAIT: c_int = 0;

/// Asynchronous lookups: every name of the batch is checked now, before libc queues any. A
/// batch with a refused name is refused whole, none of it queued (`verdict::refused_batch`
/// says how that looks). Results arrive later, so names allowed by a name rule do not make
/// their addresses allowed destinations (documented limit).
///
/// # Safety
/// Called by C with getaddrinfo_a(3)'s arguments.
#[no_mangle]
pub unsafe extern "C" fn getaddrinfo_a(
    mode: c_int,
    list: *mut *mut Gaicb,
    nitems: c_int,
    sevp: *mut libc::sigevent,
) -> c_int {
    let mut refused = false;
    for i in 0..nitems.max(0) as usize {
        // SAFETY: the caller passes `nitems` entries, each null or a gaicb.
        let req = unsafe { *list.add(i) };
        if req.is_null() {
            continue;
        }
        // SAFETY: a gaicb from the caller; ar_name is null or NUL-terminated.
        let name = unsafe { (*req).ar_name };
        // SAFETY: as above.
        if unsafe { plan_for(name, "getaddrinfo_a", true, LOOKUP_AS_QUERIED) } == Plan::Refuse {
            refused = true;
        }
    }
    if refused {
        let refusal = verdict::refused_batch(deny_as(), mode == GAI_WAIT);
        if let Some(status) = refusal.request_status {
            for i in 0..nitems.max(0) as usize {
                // SAFETY: as above: the caller's `nitems` entries, each null or a gaicb.
                let req = unsafe { *list.add(i) };
                if !req.is_null() {
                    // SAFETY: a gaicb of the caller's, which gai_error reads: done, no result.
                    unsafe {
                        (*req).ar_result = std::ptr::null_mut();
                        (*req).ret = status;
                    }
                }
            }
        }
        if let Some(errno) = refusal.errno {
            verdict::set_errno(errno);
        }
        return refusal.ret;
    }
    // SAFETY: getaddrinfo_a's C signature; the caller's arguments.
    match unsafe { real::func::<GetaddrinfoAFn>(&real::GETADDRINFO_A) } {
        // SAFETY: as above.
        Some(f) => unsafe { f(mode, list, nitems, sevp) },
        None => libc::EAI_SYSTEM,
    }
}
