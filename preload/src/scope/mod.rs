//! Scopes: per-thread narrowing (and bounded widening) of what a guarded process may reach,
//! and the current test's id, behind a small versioned C ABI (docs/scopes.md).
//!
//! The `extern "C"` shims below only convert C arguments and call `stack` (the scope stack
//! and its judgements) and `log` (the attempts kept for read-back). Decisions reach scopes
//! through `narrow_dest` and `narrow_name` (called by `decide`) and `note` (called by
//! `events::record`).

mod log;
pub(crate) mod stack;

use std::ffi::CStr;
use std::net::IpAddr;

use libc::{c_char, c_int, c_uint, size_t, ssize_t};

use crate::channel::{Attempt, Kind};
use crate::fmt::Buf;
use crate::guard;
use crate::sock::Proto;
use crate::state::{self, Loaded};
use crate::verdict::{DenyReason, Verdict};

pub use stack::forked;
use stack::Says;

/// The ABI version `egress_run_abi_version` returns; symbols carry it in their names.
pub const ABI_VERSION: c_uint = 1;

/// The run's rule behind a verdict, if it is one of the run's own (not a grant).
fn run_rule(loaded: &Loaded, v: Verdict) -> Option<usize> {
    match (v, loaded.policy) {
        (Verdict::Allow { rule }, Ok(view)) if rule < view.rule_count() => Some(rule),
        _ => None,
    }
}

/// Whether a scope may decide this verdict: refusals no rule can lift stay.
fn scope_decides(v: Verdict) -> bool {
    matches!(v, Verdict::Allow { .. } | Verdict::Deny(DenyReason::NoRule))
}

fn apply(says: Says) -> Verdict {
    match says {
        Says::Allow(rule) => Verdict::Allow { rule },
        Says::Deny => Verdict::Deny(DenyReason::Scope),
    }
}

/// The verdict for `ip:port` on this thread, given the run's: a blocking scope decides it
/// (within the bound it was checked against at entry), a recording scope leaves it.
pub fn narrow_dest(
    loaded: &Loaded,
    ip: IpAddr,
    port: u16,
    host: Option<&[u8]>,
    v: Verdict,
) -> Verdict {
    if loaded.level != 0 || !scope_decides(v) {
        return v;
    }
    match stack::current() {
        Some(s) if s.block => apply(s.judge_dest(ip, port, host, run_rule(loaded, v))),
        _ => v,
    }
}

/// The verdict for a DNS lookup of `name` on this thread, given the run's.
pub fn narrow_name(loaded: &Loaded, name: &[u8], v: Verdict) -> Verdict {
    if loaded.level != 0 || !scope_decides(v) {
        return v;
    }
    match stack::current() {
        Some(s) if s.block => apply(s.judge_name(name, run_rule(loaded, v))),
        _ => v,
    }
}

/// Keeps an attempt for read-back when this thread is in a scope or a test is set.
pub fn note(loaded: &Loaded, a: &Attempt) {
    let scope = stack::current();
    let test = log::test();
    if loaded.level != 0 || (scope.is_none() && test == 0) {
        return;
    }
    let (denied, rule) = match a.verdict {
        Verdict::Allow { rule } => (false, Some(rule)),
        Verdict::Deny(_) => (true, None),
        Verdict::PassThrough => return,
    };
    let run = run_rule(loaded, a.verdict);
    let scope_denied = match (scope, a.kind, a.dest) {
        (None, ..) => denied,
        (Some(_), _, _) if !scope_decides(a.verdict) => denied,
        (Some(s), Kind::Resolve, _) => s.judge_name(a.host.unwrap_or(&[]), run) == Says::Deny,
        (Some(s), _, Some((ip, port))) => s.judge_dest(ip, port, a.host, run) == Says::Deny,
        (Some(_), _, None) => denied,
    };
    let (host_len, host) = log::host_field(a.host);
    log::add(log::Entry {
        thread: stack::thread_token(),
        scope: scope.map_or(0, |s| s.serial),
        test,
        kind: a.kind as u8,
        proto: a.proto.map(Proto::as_str),
        dest: a
            .dest
            .map(|(ip, port)| (egress_policy::canonical_ip(ip), port)),
        host_len,
        host,
        denied,
        scope_denied,
        rule,
        ..log::Entry::EMPTY
    });
}

/// The current test's number, for the attempt fold key (0: none).
pub fn test_number() -> u64 {
    log::test()
}

/// A fork child: the forking thread's scopes are not the child's.
pub fn forked_child() {
    forked();
}

// ---------------------------------------------------------------------------------------------
// The C ABI, version 1 (docs/scopes.md)
// ---------------------------------------------------------------------------------------------

/// Runs `f` inside the guard (hooks pass straight through, a panic becomes `fallback`) with
/// the innermost level's policy state.
fn in_guard<T>(fallback: T, f: impl FnOnce(&'static Loaded) -> T) -> T {
    let mut fallback = Some(fallback);
    let mut f = Some(f);
    let out = guard::with_guard(
        || None,
        || {
            let loaded = state::ensure_init();
            f.take().map(|f| f(loaded))
        },
    );
    out.or_else(|| fallback.take())
        .unwrap_or_else(|| unreachable_fallback())
}

#[cold]
fn unreachable_fallback<T>() -> T {
    // `in_guard` always has either the body's value or the fallback.
    std::process::abort()
}

/// Copies `msg` into the caller's buffer, NUL-terminated and cut to fit.
fn put_c(buf: *mut c_char, len: size_t, msg: &[u8]) -> usize {
    if buf.is_null() || len == 0 {
        return msg.len();
    }
    let n = msg.len().min(len - 1);
    // SAFETY: the caller promises `len` writable bytes at `buf`; we write n + 1 <= len.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
    msg.len()
}

/// The ABI version of this library: 1. Its symbols carry the version in their names
/// (`egress_run_v1_*`); a later incompatible ABI gets new names beside these.
#[no_mangle]
pub extern "C" fn egress_run_abi_version() -> c_uint {
    ABI_VERSION
}

/// The run's mode: 0 block, 1 audit; -1 when this process has no valid policy.
#[no_mangle]
pub extern "C" fn egress_run_v1_mode() -> c_int {
    in_guard(-1, |loaded| match loaded.policy {
        Ok(view) => view.mode() as c_int,
        Err(_) => -1,
    })
}

/// Enters a scope on the calling thread. `rules`: rules one per line (NULL: none); `flags`:
/// 1 block, 2 with the run's rules. Returns the new depth (1 for the outermost scope), or -1
/// with a message in `err` (`err_len` bytes, NUL-terminated) naming the rule at fault.
///
/// # Safety
/// `rules` is NULL or a NUL-terminated string; `err` is NULL or `err_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn egress_run_v1_scope_enter(
    rules: *const c_char,
    flags: c_uint,
    err: *mut c_char,
    err_len: size_t,
) -> c_int {
    let text = if rules.is_null() {
        ""
    } else {
        // SAFETY: the caller passes a NUL-terminated string.
        match unsafe { CStr::from_ptr(rules) }.to_str() {
            Ok(t) => t,
            Err(_) => {
                put_c(err, err_len, b"the rules are not UTF-8");
                return -1;
            }
        }
    };
    let result = in_guard(Err("internal error".to_string()), |loaded| {
        let view = loaded
            .policy
            .map_err(|why| format!("this process has no valid policy ({why})"))?;
        stack::enter(&view, text, flags, log::now())
    });
    match result {
        Ok(depth) => depth as c_int,
        Err(msg) => {
            put_c(err, err_len, msg.as_bytes());
            -1
        }
    }
}

/// Leaves the calling thread's innermost scope, which must be `depth`. 0, or -1 when it is
/// not the innermost scope (nothing changes then).
#[no_mangle]
pub extern "C" fn egress_run_v1_scope_leave(depth: c_int) -> c_int {
    let Ok(depth) = usize::try_from(depth) else {
        return -1;
    };
    in_guard(-1, |_| match stack::leave(depth) {
        Ok(()) => 0,
        Err(_) => -1,
    })
}

/// Writes the attempts this thread made inside its scope at `depth` (including its inner
/// scopes), as JSON lines, into `buf` (`len` bytes, NUL-terminated, cut to fit). Returns the
/// full length (call again with a larger buffer when it is not less than `len`), or -1 when
/// there is no such scope.
///
/// # Safety
/// `buf` is NULL or `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn egress_run_v1_scope_attempts(
    depth: c_int,
    buf: *mut c_char,
    len: size_t,
) -> ssize_t {
    let Ok(depth) = usize::try_from(depth) else {
        return -1;
    };
    let text = in_guard(None, |loaded| {
        let (_, start) = stack::at(depth)?;
        let me = stack::thread_token();
        let (entries, lost) = log::select(|e| e.thread == me && e.seq >= start);
        Some(format_entries(loaded, &entries, lost))
    });
    match text {
        Some(t) => put_c(buf, len, t.as_bytes()) as ssize_t,
        None => -1,
    }
}

/// Writes the attempts every thread of this process made since the current test was set, as
/// `egress_run_v1_scope_attempts` does. Returns -1 when no test is set.
///
/// # Safety
/// `buf` is NULL or `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn egress_run_v1_test_attempts(buf: *mut c_char, len: size_t) -> ssize_t {
    let text = in_guard(None, |loaded| {
        let test = log::test();
        if test == 0 {
            return None;
        }
        let (entries, lost) = log::select(|e| e.test == test);
        Some(format_entries(loaded, &entries, lost))
    });
    match text {
        Some(t) => put_c(buf, len, t.as_bytes()) as ssize_t,
        None => -1,
    }
}

/// Sets the process's current test (`id` NULL or empty: none). Report lines of this process,
/// and of processes it starts from now on, carry it as `test`. 0, or -1 when `id` is not
/// UTF-8 or longer than 1024 bytes.
///
/// # Safety
/// `id` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn egress_run_v1_set_test(id: *const c_char) -> c_int {
    let id: &[u8] = if id.is_null() {
        b""
    } else {
        // SAFETY: the caller passes a NUL-terminated string.
        unsafe { CStr::from_ptr(id) }.to_bytes()
    };
    if std::str::from_utf8(id).is_err() || id.len() > 1024 {
        return -1;
    }
    in_guard(-1, |_| {
        let number = log::set_test(!id.is_empty());
        // The lines a remembered send counts into belong to the previous test.
        crate::channel::repeat::invalidate();
        for loaded in state::levels() {
            if loaded.locator.is_none() {
                continue;
            }
            let mut out = [0u8; 4096];
            let mut w = Buf::new(&mut out);
            w.str("{\"type\":\"test\",\"pid\":");
            // SAFETY: getpid has no preconditions.
            w.int(i64::from(unsafe { libc::getpid() }));
            w.str(",\"test\":");
            if id.is_empty() {
                w.str("null");
            } else {
                w.json_str(id);
            }
            if number != 0 {
                w.str(",\"number\":");
                w.uint(number);
            }
            w.str("}");
            if !w.truncated() {
                // Through the check-in area when there is one: ordered with the check-ins of
                // the processes this one starts next, which inherit the test id.
                crate::channel::check_in(loaded, w.as_bytes());
            }
        }
        0
    })
}

/// Names the Python code (`module:function`) behind this thread's next connect, send or
/// lookup, for the report's `py_caller` (NULL or empty: none). It lasts until that call's
/// hook returns. Set by the Python package's audit hook (PEP 578) just before the call.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn egress_run_v1_set_py_caller(name: *const c_char) -> c_int {
    let name: &[u8] = if name.is_null() {
        b""
    } else {
        // SAFETY: the caller passes a NUL-terminated string.
        unsafe { CStr::from_ptr(name) }.to_bytes()
    };
    crate::caller::set_py_caller(name);
    0
}

/// The rule numbered as reports number them: the run's rules, then the grantable ones.
fn rule_text(loaded: &Loaded, i: usize) -> Option<String> {
    let view = loaded.policy.ok()?;
    match view.rule(i) {
        Some(r) => Some(r.text.to_string()),
        None => view
            .grantable()
            .nth(i.checked_sub(view.rule_count())?)
            .map(str::to_string),
    }
}

fn json_str(s: &[u8]) -> String {
    let mut out = [0u8; 1024];
    let mut w = Buf::new(&mut out);
    w.json_str(s);
    String::from_utf8_lossy(w.as_bytes()).into_owned()
}

/// Attempts as JSON lines shaped like report lines, plus `scope_decision` (what the scope's
/// rules say) and, last, a `{"type":"lost","count":N}` line when entries were dropped.
fn format_entries(loaded: &Loaded, entries: &[log::Entry], lost: u64) -> String {
    let mut out = String::new();
    for e in entries {
        let kind = ["connect", "send", "resolve"]
            .get(usize::from(e.kind))
            .copied()
            .unwrap_or("connect");
        out.push_str(&format!("{{\"type\":\"{kind}\""));
        if let Some(p) = e.proto {
            out.push_str(&format!(",\"proto\":\"{p}\""));
        }
        if let Some((ip, port)) = e.dest {
            out.push_str(&format!(",\"addr\":\"{ip}\",\"port\":{port}"));
        }
        out.push_str(",\"host\":");
        match e.host() {
            Some(h) => out.push_str(&json_str(h)),
            None => out.push_str("null"),
        }
        let word = |d: bool| if d { "deny" } else { "allow" };
        out.push_str(&format!(
            ",\"decision\":\"{}\",\"scope_decision\":\"{}\",\"rule\":",
            word(e.denied),
            word(e.scope_denied)
        ));
        match e.rule.and_then(|r| rule_text(loaded, r)) {
            Some(t) => out.push_str(&json_str(t.as_bytes())),
            None => out.push_str("null"),
        }
        out.push_str(&format!(",\"count\":{}}}\n", e.count));
    }
    if lost > 0 {
        out.push_str(&format!("{{\"type\":\"lost\",\"count\":{lost}}}\n"));
    }
    out
}
