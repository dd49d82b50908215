//! Each thread's scope stack, and what a scope says about an attempt.
//!
//! A scope is entered and left in ordinary code (the Python package, the pytest plugin, a C
//! caller), where allocating is fine: its rules are parsed and checked against the run's
//! bound there. The decision path only reads one thread-local pointer to the innermost
//! scope (null outside scopes) and walks that scope's few rules: no allocation, no lock.
//! Threads start without a scope, and a forked child drops the forking thread's
//! (`forked`), so scopes never pass to other threads or to children.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use egress_policy::{contained_in, is_localhost_name, is_loopback, parse_rule, PolicyView};
use egress_policy::{Rule, Target};

/// Scope flag: refuse what the scope's rules do not allow (else only record it).
pub const FLAG_BLOCK: u32 = 1;
/// Scope flag: the run's own rules apply inside the scope too (the pytest plugin's test
/// scope: a test may reach what the run allows, plus what it was granted).
pub const FLAG_WITH_RUN_RULES: u32 = 2;
const KNOWN_FLAGS: u32 = FLAG_BLOCK | FLAG_WITH_RUN_RULES;

/// At most this many scopes on one thread.
pub const MAX_DEPTH: usize = 64;

struct ScopeRule {
    rule: Rule,
    /// The run or grantable rule that bounds it, numbered as reports number rules (the run's
    /// rules, then the grantable ones).
    bound: usize,
}

pub struct Scope {
    rules: Vec<ScopeRule>,
    pub block: bool,
    with_run: bool,
    /// A number no other scope of this process has: the attempt log keys on it.
    pub serial: u64,
    /// The attempt log's sequence number when the scope was entered.
    pub start_seq: u64,
}

thread_local! {
    // Read on every decision: a plain pointer with const initialisation and no destructor.
    static CURRENT: Cell<*const Scope> = const { Cell::new(std::ptr::null()) };
    // Only touched on entry and exit, in ordinary code. Boxed: CURRENT points at the
    // innermost scope, which must not move when the vector grows.
    #[allow(clippy::vec_box)]
    static STACK: RefCell<Vec<Box<Scope>>> = const { RefCell::new(Vec::new()) };
}

static SERIAL: AtomicU64 = AtomicU64::new(0);

/// The innermost scope of this thread, if any.
pub fn current() -> Option<&'static Scope> {
    let p = CURRENT.try_with(|c| c.get()).unwrap_or(std::ptr::null());
    // SAFETY: CURRENT points into a Box owned by this thread's STACK, which is popped (and
    // CURRENT updated first) only by this thread; the reference does not outlive the
    // decision it is read for, on this thread.
    unsafe { p.as_ref() }
}

/// A token naming this thread while it lives (the address of one of its thread-locals).
pub fn thread_token() -> usize {
    CURRENT
        .try_with(|c| c as *const Cell<*const Scope> as usize)
        .unwrap_or(0)
}

/// Whether this thread is inside a scope (one thread-local read; no borrow).
pub fn in_scope() -> bool {
    CURRENT.try_with(|c| !c.get().is_null()).unwrap_or(false)
}

/// The depth of this thread's scope stack.
pub fn depth() -> usize {
    STACK.try_with(|s| s.borrow().len()).unwrap_or(0)
}

/// In a forked child: the forking thread's scopes stay with its parent. (Leaked, not freed:
/// the allocator's state after fork is not to be relied on here.)
pub fn forked() {
    let _ = CURRENT.try_with(|c| c.set(std::ptr::null()));
    let _ = STACK.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            std::mem::forget(std::mem::take(&mut *s));
        }
    });
}

/// The run's rules then the grantable ones, parsed.
pub fn bound_rules(view: &PolicyView) -> Vec<Rule> {
    view.rules()
        .map(|r| r.text)
        .chain(view.grantable())
        .filter_map(|t| parse_rule(t).ok())
        .collect()
}

/// Enters a scope on this thread with `rules` (one per line, blank lines ignored). Returns the
/// new depth, or an error naming the first rule that is malformed or outside the bound.
pub fn enter(view: &PolicyView, rules: &str, flags: u32, start_seq: u64) -> Result<usize, String> {
    if flags & !KNOWN_FLAGS != 0 {
        return Err(format!("unknown scope flags {:#x}", flags & !KNOWN_FLAGS));
    }
    if depth() >= MAX_DEPTH {
        return Err(format!("more than {MAX_DEPTH} nested scopes on one thread"));
    }
    let bound = bound_rules(view);
    let mut parsed = Vec::new();
    for text in rules.lines().map(str::trim).filter(|t| !t.is_empty()) {
        let rule = parse_rule(text).map_err(|e| e.to_string())?;
        let Some(b) = contained_in(&bound, &rule) else {
            return Err(format!(
                "rule '{}' is outside what this run allows or declares grantable; \
                 allow it in the run (--allow) or declare it grantable (--grantable)",
                rule.text
            ));
        };
        parsed.push(ScopeRule { rule, bound: b });
    }
    let scope = Box::new(Scope {
        rules: parsed,
        block: flags & FLAG_BLOCK != 0,
        with_run: flags & FLAG_WITH_RUN_RULES != 0,
        serial: SERIAL.fetch_add(1, Ordering::Relaxed) + 1,
        start_seq,
    });
    STACK
        .try_with(|s| {
            let mut s = s.borrow_mut();
            let top: *const Scope = &*scope;
            s.push(scope);
            let _ = CURRENT.try_with(|c| c.set(top));
            s.len()
        })
        .map_err(|_| "this thread is exiting".to_string())
}

/// Leaves the innermost scope, which must be `depth`.
pub fn leave(depth: usize) -> Result<(), String> {
    STACK
        .try_with(|s| {
            let mut s = s.borrow_mut();
            if s.len() != depth || depth == 0 {
                return Err(format!(
                    "scope {depth} is not this thread's innermost scope (depth {})",
                    s.len()
                ));
            }
            let top = s.len().checked_sub(2).map_or(std::ptr::null(), |i| {
                let p: *const Scope = &*s[i];
                p
            });
            let _ = CURRENT.try_with(|c| c.set(top));
            s.pop();
            Ok(())
        })
        .unwrap_or_else(|_| Err("this thread is exiting".to_string()))
}

/// The scope at `depth` (1-based) of this thread: its serial and start.
pub fn at(depth: usize) -> Option<(u64, u64)> {
    STACK
        .try_with(|s| {
            let s = s.borrow();
            s.get(depth.checked_sub(1)?)
                .map(|x| (x.serial, x.start_seq))
        })
        .ok()
        .flatten()
}

/// What a scope says: allowed by a rule (numbered as reports number rules), or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Says {
    Allow(usize),
    Deny,
}

impl Scope {
    /// `ip:port`, which came from a lookup of `host` when known; `run` is the run's rule
    /// that allows it, if any.
    pub fn judge_dest(
        &self,
        ip: IpAddr,
        port: u16,
        host: Option<&[u8]>,
        run: Option<usize>,
    ) -> Says {
        for r in &self.rules {
            if !r.rule.ports.contains(port) {
                continue;
            }
            let hit = match &r.rule.target {
                Target::Loopback | Target::Net { .. } => r.rule.matches_addr(ip, port),
                Target::LoopbackOwn => is_loopback(ip) && crate::own::owned_here(ip, port),
                Target::Name(n) | Target::Below(n) => {
                    (is_localhost_name(n) && is_loopback(ip))
                        || host
                            .and_then(|h| std::str::from_utf8(h).ok())
                            .is_some_and(|h| r.rule.matches_name(h))
                }
            };
            if hit {
                return Says::Allow(r.bound);
            }
        }
        match run {
            Some(rule) if self.with_run => Says::Allow(rule),
            _ => Says::Deny,
        }
    }

    /// A lookup of `name`; `run` is the run's rule that allows it, if any.
    pub fn judge_name(&self, name: &[u8], run: Option<usize>) -> Says {
        let name = std::str::from_utf8(name).unwrap_or("");
        for r in &self.rules {
            if r.rule.matches_name(name) {
                return Says::Allow(r.bound);
            }
        }
        match run {
            Some(rule) if self.with_run => Says::Allow(rule),
            _ => Says::Deny,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egress_policy::wire::{encode_with_grantable, Settings};

    fn policy(run: &[&str], grantable: &[&str]) -> Vec<u8> {
        let parse = |v: &[&str]| v.iter().map(|t| parse_rule(t).unwrap()).collect::<Vec<_>>();
        encode_with_grantable(Settings::default(), 1, &parse(run), &parse(grantable))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn entry_is_bounded_by_run_and_grantable_rules() {
        let bytes = policy(&["*.example.test"], &["loopback"]);
        let view = PolicyView::parse(&bytes).unwrap();
        let err = enter(&view, "203.0.113.7", FLAG_BLOCK, 0).unwrap_err();
        assert!(err.contains("'203.0.113.7' is outside"), "{err}");
        let err = enter(&view, "loopback\nexample.test", FLAG_BLOCK, 0).unwrap_err();
        assert!(err.contains("'example.test' is outside"), "{err}");
        let err = enter(&view, "not a rule", FLAG_BLOCK, 0).unwrap_err();
        assert!(err.contains("invalid rule"), "{err}");
        assert!(enter(&view, "", 8, 0).is_err(), "unknown flags");
        assert_eq!(depth(), 0, "refused entries leave nothing behind");
        assert!(current().is_none());
    }

    #[test]
    fn the_innermost_scope_decides_and_leaving_restores_the_outer() {
        let bytes = policy(&["*.example.test"], &["loopback"]);
        let view = PolicyView::parse(&bytes).unwrap();
        let d1 = enter(&view, "127.0.0.1:8080\na.example.test", FLAG_BLOCK, 0).unwrap();
        let s = current().unwrap();
        // Numbered as reports number rules: run rule 0, then grantable rule 0 as 1.
        assert_eq!(
            s.judge_dest(ip("127.0.0.1"), 8080, None, None),
            Says::Allow(1)
        );
        assert_eq!(s.judge_dest(ip("127.0.0.1"), 8081, None, None), Says::Deny);
        assert_eq!(
            s.judge_dest(ip("::ffff:127.0.0.1"), 8080, None, None),
            Says::Allow(1)
        );
        let host = Some(&b"a.example.test"[..]);
        assert_eq!(
            s.judge_dest(ip("203.0.113.7"), 443, host, None),
            Says::Allow(0)
        );
        assert_eq!(s.judge_name(b"A.Example.Test.", None), Says::Allow(0));
        assert_eq!(
            s.judge_name(b"b.example.test", Some(0)),
            Says::Deny,
            "narrows the run"
        );
        let d2 = enter(&view, "localhost", FLAG_BLOCK | FLAG_WITH_RUN_RULES, 0).unwrap();
        assert_eq!((d1, d2, depth()), (1, 2, 2));
        let s = current().unwrap();
        assert_eq!(s.judge_dest(ip("::1"), 5432, None, None), Says::Allow(1));
        assert_eq!(
            s.judge_dest(ip("127.0.0.1"), 8080, None, None),
            Says::Allow(1)
        );
        assert_eq!(
            s.judge_name(b"b.example.test", Some(0)),
            Says::Allow(0),
            "with run rules"
        );
        assert!(leave(d1).is_err(), "not the innermost");
        leave(d2).unwrap();
        assert_eq!(
            current().unwrap().judge_dest(ip("::1"), 5432, None, None),
            Says::Deny
        );
        leave(d1).unwrap();
        assert!(current().is_none() && depth() == 0);
        assert!(leave(1).is_err());
    }

    #[test]
    fn other_threads_and_forked_children_have_no_scope() {
        let bytes = policy(&[], &["loopback"]);
        let view = PolicyView::parse(&bytes).unwrap();
        let d = enter(&view, "loopback", FLAG_BLOCK, 0).unwrap();
        assert!(std::thread::spawn(|| current().is_none()).join().unwrap());
        forked();
        assert!(current().is_none() && depth() == 0);
        assert!(leave(d).is_err());
    }
}
