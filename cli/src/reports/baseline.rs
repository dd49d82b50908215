//! `--baseline FILE`: known destinations, from a report or an allow file.
//!
//! Both become rules: an allow file is read as `--allow-file` reads it, a report as the allow
//! file `egress-run suggest` would write from it. A destination is *known* when one of those
//! rules would allow it; only a denial of an unknown (new) one fails the gate.

use std::net::IpAddr;
use std::path::Path;

use egress_policy::Rule;

use super::{suggest, Dest, DestKey, Reports};
use crate::Fatal;

pub struct Baseline {
    pub rules: Vec<Rule>,
}

impl Baseline {
    pub fn load(path: &Path) -> Result<Baseline, Fatal> {
        let bytes = std::fs::read(path).map_err(|e| {
            Fatal::new(
                format!("cannot read the baseline {}: {e}", path.display()),
                "give a report or an allow file to --baseline",
            )
        })?;
        let first = bytes
            .split(|&b| b == b'\n')
            .map(|l| l.trim_ascii())
            .find(|l| !l.is_empty() && !l.starts_with(b"#"));
        if first.is_some_and(|l| l.starts_with(b"{")) {
            let mut r = Reports::default();
            r.add(&path.display().to_string(), &bytes);
            if let Some((f, p)) = r.problems().next() {
                return Err(Fatal::new(
                    format!("the baseline {}:{}: {}", f.name, p.line, p.what),
                    "give a whole report or an allow file to --baseline",
                ));
            }
            let text = suggest::allow_file(&r, super::group::ephemeral_from());
            let rules = text
                .lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .filter_map(|l| egress_policy::parse_rule(l).ok())
                .collect();
            return Ok(Baseline { rules });
        }
        let rules = crate::args::read_allow_file(path).map_err(|f| {
            Fatal::new(
                format!("baseline: {}", f.what),
                "give a report or an allow file to --baseline",
            )
        })?;
        Ok(Baseline { rules })
    }

    fn knows(
        &self,
        host: Option<&str>,
        ip: Option<IpAddr>,
        port: Option<u16>,
        lookup: bool,
    ) -> bool {
        self.rules.iter().any(|r| {
            let by_name = host.is_some_and(|h| {
                r.matches_name(h.trim_end_matches('.'))
                    && (lookup || !matches!(port, Some(p) if !r.ports.contains(p)))
            });
            let by_addr = !lookup
                && ip.is_some_and(|ip| {
                    r.matches_addr(egress_policy::canonical_ip(ip), port.unwrap_or(0))
                });
            by_name || by_addr
        })
    }

    pub fn knows_dest(&self, k: &DestKey) -> bool {
        self.knows(k.host.as_deref(), k.ip(), k.port, k.lookup)
    }

    /// Marks this run's summary destinations (`new`: denied and unknown); returns the attempts
    /// to new destinations (the summary's `new_denied`).
    pub fn mark_summary(&self, dests: &mut [crate::report::Destination]) -> u64 {
        let mut new_denied = 0;
        for d in dests {
            let key = DestKey {
                deny: d.decision == "deny",
                lookup: d.addr.is_none(),
                host: d.host.clone(),
                addr: d.addr.clone(),
                port: d.port,
                proto: d.proto.clone(),
            };
            let new = key.deny && !self.knows_dest(&key);
            d.new = Some(new);
            if new {
                new_denied += d.count;
            }
        }
        new_denied
    }

    /// Marks the denied destinations the baseline does not know as new.
    pub fn mark(&self, dests: &mut [Dest]) {
        for d in dests {
            d.new = d.key.deny && !self.knows_dest(&d.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline(rules: &[&str]) -> Baseline {
        Baseline {
            rules: rules
                .iter()
                .map(|r| egress_policy::parse_rule(r).unwrap())
                .collect(),
        }
    }

    fn key(host: Option<&str>, addr: Option<&str>, port: Option<u16>) -> DestKey {
        DestKey {
            deny: true,
            lookup: addr.is_none(),
            host: host.map(str::to_string),
            addr: addr.map(str::to_string),
            port,
            proto: addr.map(|_| "tcp".to_string()),
        }
    }

    #[test]
    fn names_addresses_and_ports() {
        let b = baseline(&["allowed.test:80", "198.51.100.0/24", "loopback"]);
        assert!(b.knows_dest(&key(Some("allowed.test"), None, None)));
        assert!(b.knows_dest(&key(Some("allowed.test"), Some("203.0.113.10"), Some(80))));
        assert!(!b.knows_dest(&key(Some("allowed.test"), Some("203.0.113.10"), Some(443))));
        assert!(b.knows_dest(&key(None, Some("198.51.100.20"), Some(9999))));
        assert!(b.knows_dest(&key(None, Some("::ffff:127.0.0.1"), Some(1))));
        assert!(!b.knows_dest(&key(Some("other.test"), None, None)));
        assert!(!b.knows_dest(&key(None, Some("203.0.113.10"), Some(80))));
    }
}
