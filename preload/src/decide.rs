//! The decisions, in safe code: given what a hook saw, what block mode would do.

use crate::learned;
use crate::names;
use crate::scope;
use crate::sock::Dest;
use crate::state::Loaded;
use crate::verdict::{DenyReason, Verdict};

/// The verdict for a connection or datagram to `dest`, and the name it came from if this
/// process looked it up. Non-IP destinations (Unix, netlink, `AF_UNSPEC`) pass through. The
/// calling thread's scope, if any, narrows the run's verdict (scope/).
pub fn destination(loaded: &Loaded, dest: Dest) -> (Verdict, Option<&'static [u8]>) {
    let (verdict, host) = by_run_rules(loaded, dest);
    match dest {
        Dest::Inet { ip, port } => (scope::narrow_dest(loaded, ip, port, host, verdict), host),
        _ => (verdict, host),
    }
}

fn by_run_rules(loaded: &Loaded, dest: Dest) -> (Verdict, Option<&'static [u8]>) {
    let Dest::Inet { ip, port } = dest else {
        return (Verdict::PassThrough, None);
    };
    let view = match loaded.policy {
        Ok(view) => view,
        Err(_) => return (Verdict::Deny(DenyReason::NoPolicy), None),
    };
    let by_name = learned::lookup(loaded.level, ip, |rule| {
        view.rule_ports(rule).is_some_and(|p| p.contains(port))
    });
    let host = by_name.map(|f| f.host());
    if let Some(rule) = view.match_addr(ip, port) {
        return (Verdict::Allow { rule }, host);
    }
    if let Some(rule) = by_name.and_then(|f| f.rule) {
        return (Verdict::Allow { rule }, host);
    }
    // `loopback:own`: only while a process of this run listens there (own.rs).
    if let Some(rule) = view.loopback_own_rule() {
        let ours = |loc| crate::own::owned(&loc, ip, port);
        if egress_policy::is_loopback(ip) && loaded.locator.is_some_and(ours) {
            return (Verdict::Allow { rule }, host);
        }
    }
    (Verdict::Deny(DenyReason::NoRule), host)
}

/// How a name lookup is treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A numeric address: no lookup at all (resolve with `AI_NUMERICHOST`).
    Numeric,
    /// A name /etc/hosts answers for the family asked: resolved locally, unrecorded.
    Local,
    /// A `localhost` name /etc/hosts does not answer for the family (`localhost.`,
    /// `db.localhost`): loopback (RFC 6761), answered without asking DNS, unrecorded.
    Loopback,
    /// A DNS lookup with this verdict.
    Dns(Verdict),
}

/// How a lookup of `name` for `family` (`AF_UNSPEC`, `AF_INET`, `AF_INET6`) is treated. Only
/// what glibc will answer without DNS is local: anything else is a lookup to decide.
pub fn name(loaded: &Loaded, name: &[u8], numeric_hint: bool, family: libc::c_int) -> Lookup {
    if names::is_numeric(name) || (numeric_hint && names::looks_numeric(name)) {
        return Lookup::Numeric;
    }
    let view = match loaded.policy {
        Ok(view) => view,
        Err(_) => return Lookup::Dns(Verdict::Deny(DenyReason::NoPolicy)),
    };
    if let Some(rule) = view.match_name(name) {
        return Lookup::Dns(scope::narrow_name(loaded, name, Verdict::Allow { rule }));
    }
    if names::in_etc_hosts(name, family) {
        return Lookup::Local;
    }
    if names::is_localhost(name) {
        return Lookup::Loopback;
    }
    let verdict = Verdict::Deny(DenyReason::NoRule);
    Lookup::Dns(scope::narrow_name(loaded, name, verdict))
}
