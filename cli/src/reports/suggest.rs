//! `egress-run suggest`: an allow file that lets the same run pass in block mode.
//!
//! Every attempt of the report(s) needs a rule: an allowed one keeps the rule that allowed it
//! (as given), a denied one gets the rule the denial message suggests, with names rather than
//! addresses where the attempt carries the name it was looked up by, ports kept, and loopback
//! as `loopback:PORT` when few fixed ports were used, or `loopback` when many were or any of them
//! is ephemeral (a server on port 0 gets another port next run).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::group::{PortClass, GROUP_MIN};
use super::{Attempt, Kind, Reports};

/// One rule of the allow file and what needed it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Entry {
    count: u64,
    programs: BTreeSet<String>,
    given: bool,
}

/// Sorts loopback first, then names, then IPv4 and IPv6 addresses in numeric order; ports in
/// numeric order within each.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SortKey {
    Loopback(u32),
    Name(String, u32),
    Addr(IpAddr, u32),
    Other(String),
}

fn sort_key(rule: &str) -> SortKey {
    let Ok(parsed) = egress_policy::parse_rule(rule) else {
        return SortKey::Other(rule.to_string());
    };
    let port = if parsed.ports.is_all() {
        0
    } else {
        u32::from(parsed.ports.lo) + 1
    };
    match parsed.target {
        egress_policy::Target::Loopback | egress_policy::Target::LoopbackOwn => {
            SortKey::Loopback(port)
        }
        egress_policy::Target::Name(n) => SortKey::Name(n, port),
        egress_policy::Target::Below(n) => SortKey::Name(format!("*.{n}"), port),
        egress_policy::Target::Net { addr, .. } => SortKey::Addr(addr, port),
    }
}

/// The rule for one denied attempt; `None` for loopback (decided over all of them).
fn rule_for(a: &Attempt) -> Option<String> {
    let ip = a.ip();
    if a.kind != Kind::Resolve
        && ip.is_some_and(|ip| egress_policy::is_loopback(egress_policy::canonical_ip(ip)))
    {
        return None;
    }
    let port = a.port.filter(|_| a.kind != Kind::Resolve);
    Some(egress_policy::suggest_rule(a.host.as_deref(), ip, port))
}

/// The allow file's text.
pub fn allow_file(r: &Reports, ephemeral_from: u16) -> String {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut loopback_ports: BTreeMap<u16, Entry> = BTreeMap::new();
    let mut cannot: BTreeSet<String> = BTreeSet::new();
    // Names that get `name:PORT` rules: their lookups need no rule of their own.
    let connected_names: BTreeSet<String> = r
        .attempts
        .iter()
        .filter(|a| a.deny && a.kind != Kind::Resolve)
        .filter_map(|a| rule_for(a).filter(|_| a.host.is_some()))
        .filter_map(|rule| egress_policy::parse_rule(&rule).ok())
        .filter_map(|rule| match rule.target {
            egress_policy::Target::Name(n) => Some(n),
            _ => None,
        })
        .collect();
    let add = |e: &mut Entry, a: &Attempt| {
        e.count += a.count;
        e.programs.insert(a.program().to_string());
    };
    // Connections first: a lookup of a name that gets `name:PORT` rules counts towards them.
    let ordered = r
        .attempts
        .iter()
        .filter(|a| a.kind != Kind::Resolve)
        .chain(r.attempts.iter().filter(|a| a.kind == Kind::Resolve));
    for a in ordered {
        if !a.deny {
            if let Some(rule) = &a.rule {
                let e = entries.entry(rule.clone()).or_default();
                e.given = true;
                add(e, a);
            }
            continue;
        }
        if a.unliftable() {
            cannot.insert(format!(
                "{} {} by {}: {}",
                a.proto.as_deref().unwrap_or("dns"),
                super::DestKey::of(a).shown(),
                a.program(),
                a.reason.as_deref().unwrap_or("")
            ));
            continue;
        }
        match rule_for(a) {
            None => add(loopback_ports.entry(a.port.unwrap_or(0)).or_default(), a),
            Some(rule) => {
                if a.kind == Kind::Resolve
                    && a.host.as_deref().is_some_and(|h| {
                        connected_names
                            .contains(h.trim_end_matches('.').to_ascii_lowercase().as_str())
                    })
                {
                    // Still counted: the lookup is part of what the name's rules allow.
                    if let Some(e) = entries
                        .iter_mut()
                        .find(|(k, _)| k.split(':').next() == Some(rule.as_str()))
                        .map(|(_, e)| e)
                    {
                        add(e, a);
                    }
                    continue;
                }
                add(entries.entry(rule).or_default(), a);
            }
        }
    }
    if !loopback_ports.is_empty() {
        let whole = loopback_ports.len() >= GROUP_MIN
            || loopback_ports.contains_key(&0)
            || loopback_ports
                .keys()
                .any(|&p| PortClass::of(p, ephemeral_from) == PortClass::Ephemeral);
        for (port, e) in loopback_ports {
            let rule = if whole {
                "loopback".to_string()
            } else {
                format!("loopback:{port}")
            };
            let into = entries.entry(rule).or_default();
            into.count += e.count;
            into.programs.extend(e.programs);
        }
    }
    // `loopback` covers every `loopback:PORT`.
    if entries.contains_key("loopback") {
        let covered: Vec<String> = entries
            .keys()
            .filter(|k| k.starts_with("loopback:"))
            .cloned()
            .collect();
        for k in covered {
            if let Some(e) = entries.remove(&k) {
                let into = entries.get_mut("loopback").expect("present");
                into.count += e.count;
                into.programs.extend(e.programs);
            }
        }
    }
    render(r, entries, cannot)
}

fn render(r: &Reports, entries: BTreeMap<String, Entry>, cannot: BTreeSet<String>) -> String {
    let mut out = String::new();
    let names: Vec<&str> = r.files.iter().map(|f| f.name.as_str()).collect();
    out.push_str(&format!(
        "# Allow file written by egress-run suggest from {} ({} mode).\n",
        names.join(", "),
        r.mode()
    ));
    for f in &r.files {
        if let Some(run) = &f.run {
            if !run.argv.is_empty() {
                out.push_str(&format!("#   {}: {}\n", f.name, run.argv.join(" ")));
            }
        }
        if f.summary.is_none() {
            out.push_str(&format!(
                "#   {}: an interrupted run (no summary): its later attempts are not here\n",
                f.name
            ));
        }
    }
    if r.mode() != "audit" {
        out.push_str(
            "# Not only audit runs: in block mode a refused lookup hides the connections that\n\
             # would have followed it; an --audit run gives the complete rules.\n",
        );
    }
    out.push_str(
        "# Review it: each rule is a destination the run reached or tried to reach; keep only\n\
         # what it should. Use: egress-run --allow-file THIS_FILE -- COMMAND\n",
    );
    let mut sorted: Vec<(String, Entry)> = entries.into_iter().collect();
    sorted.sort_by_key(|(rule, _)| sort_key(rule));
    let width = sorted
        .iter()
        .map(|(r, _)| r.len())
        .max()
        .unwrap_or(0)
        .max(20);
    for (rule, e) in &sorted {
        let programs: Vec<&str> = e.programs.iter().map(String::as_str).collect();
        out.push_str(&format!(
            "{rule:<width$}  # {} attempt{}{}: {}\n",
            e.count,
            if e.count == 1 { "" } else { "s" },
            if e.given { ", already given" } else { "" },
            programs.join(", ")
        ));
    }
    if sorted.is_empty() {
        out.push_str("# (no attempts: nothing to allow)\n");
    }
    for c in &cannot {
        out.push_str(&format!("# no rule can allow: {c}\n"));
    }
    let unguarded: BTreeSet<&str> = r
        .processes
        .iter()
        .filter(|p| !p.guarded)
        .map(|p| p.exe.as_str())
        .collect();
    for exe in unguarded {
        out.push_str(&format!(
            "# ran unguarded (block mode refuses it without --allow-unguarded): {exe}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reports(lines: &[&str]) -> Reports {
        let mut text = String::from(
            "{\"type\":\"run\",\"version\":1,\"mode\":\"audit\",\"rules\":[],\"argv\":[\"t\"],\"started\":\"x\"}\n",
        );
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        let mut r = Reports::default();
        r.add("a.jsonl", text.as_bytes());
        assert!(r.files[0].problems.is_empty(), "{:?}", r.files[0].problems);
        r
    }

    fn conn(addr: &str, port: u16, host: &str, decision: &str, rule: &str) -> String {
        let host = if host.is_empty() {
            "null".into()
        } else {
            format!("\"{host}\"")
        };
        let rule = if rule.is_empty() {
            "null".into()
        } else {
            format!("\"{rule}\"")
        };
        format!("{{\"type\":\"connect\",\"pid\":9,\"exe\":\"/usr/bin/curl\",\"proto\":\"tcp\",\"addr\":\"{addr}\",\"port\":{port},\"host\":{host},\"decision\":\"{decision}\",\"enforced\":false,\"rule\":{rule},\"count\":1}}")
    }

    fn rules(text: &str) -> Vec<String> {
        text.lines()
            .map(|l| l.split('#').next().unwrap().trim())
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn names_ports_and_order() {
        let resolve = r#"{"type":"resolve","pid":9,"exe":"/usr/bin/curl","host":"Allowed.Test","decision":"deny","enforced":false,"rule":null,"count":1}"#;
        let lonely = r#"{"type":"resolve","pid":9,"exe":"/usr/bin/curl","host":"other.test","decision":"deny","enforced":false,"rule":null,"count":1}"#;
        let r = reports(&[
            resolve,
            &conn("203.0.113.10", 80, "allowed.test", "deny", ""),
            lonely,
            &conn("2001:db8::10", 443, "", "deny", ""),
            &conn("198.51.100.20", 9999, "", "deny", ""),
            &conn("127.0.0.1", 5432, "", "deny", ""),
        ]);
        let text = allow_file(&r, 32768);
        assert_eq!(
            rules(&text),
            [
                "loopback:5432",
                "allowed.test:80",
                "other.test",
                "198.51.100.20:9999",
                "[2001:db8::10]:443"
            ],
            "{text}"
        );
        for rule in rules(&text) {
            egress_policy::parse_rule(&rule).expect("every suggested rule parses");
        }
        assert!(text.contains("curl"), "commented with programs: {text}");
    }

    #[test]
    fn ephemeral_or_many_loopback_ports_become_loopback() {
        let r = reports(&[
            &conn("127.0.0.1", 41234, "", "deny", ""),
            &conn("::1", 80, "", "deny", ""),
        ]);
        assert_eq!(rules(&allow_file(&r, 32768)), ["loopback"]);
        let many: Vec<String> = (8000..8005)
            .map(|p| conn("127.0.0.1", p, "", "deny", ""))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(rules(&allow_file(&reports(&many), 32768)), ["loopback"]);
    }

    #[test]
    fn allowed_attempts_keep_their_rule() {
        let r = reports(&[
            &conn("127.0.0.1", 8080, "", "allow", "loopback"),
            &conn("127.0.0.1", 8081, "", "deny", ""),
        ]);
        let text = allow_file(&r, 32768);
        assert_eq!(rules(&text), ["loopback"], "{text}");
        assert!(text.contains("already given"));
    }

    #[test]
    fn unliftable_denials_are_comments() {
        let raw = r#"{"type":"send","pid":9,"exe":"/usr/bin/x","call":"socket","proto":"raw","addr":"0.0.0.0","port":0,"host":null,"decision":"deny","enforced":false,"rule":null,"reason":"packet sockets: no rule can allow them","count":1}"#;
        let text = allow_file(&reports(&[raw]), 32768);
        assert!(rules(&text).is_empty(), "{text}");
        assert!(text.contains("# no rule can allow"));
    }

    mod props {
        use super::super::super::baseline::Baseline;
        use super::super::super::{Attempt, DestKey, Kind, Reports};
        use super::super::allow_file;
        use proptest::prelude::*;

        fn attempt() -> impl Strategy<Value = Attempt> {
            let addr = prop_oneof![
                Just("127.0.0.1".to_string()),
                Just("::1".to_string()),
                Just("203.0.113.10".to_string()),
                Just("198.51.100.20".to_string()),
                Just("2001:db8::10".to_string()),
                Just("::ffff:192.0.2.1".to_string()),
            ];
            let host = prop_oneof![
                Just(None),
                Just(Some("allowed.test".to_string())),
                Just(Some("Other.Test.".to_string())),
                Just(Some("a.b.example".to_string())),
            ];
            (0u8..3, addr, host, any::<u16>(), any::<bool>(), 1u64..5).prop_map(
                |(kind, addr, host, port, deny, count)| {
                    let kind = [Kind::Connect, Kind::Send, Kind::Resolve][kind as usize];
                    let resolve = kind == Kind::Resolve;
                    Attempt {
                        kind,
                        pid: 1,
                        exe: "/bin/p".into(),
                        proto: (!resolve).then(|| "tcp".into()),
                        addr: (!resolve).then_some(addr),
                        port: (!resolve).then_some(port),
                        host: if resolve {
                            Some(host.unwrap_or_else(|| "x.test".into()))
                        } else {
                            host
                        },
                        deny,
                        enforced: false,
                        rule: (!deny).then(|| "loopback".into()),
                        reason: None,
                        count,
                        file: 0,
                    }
                },
            )
        }

        proptest! {
            /// Every line `suggest` writes is a valid rule, and the rules cover every attempt
            /// the report denied (so the same run passes in block mode).
            #[test]
            fn the_allow_file_parses_and_covers_every_denial(
                attempts in proptest::collection::vec(attempt(), 0..30),
                ephemeral in 1024u16..65535,
            ) {
                let r = Reports { attempts: attempts.clone(), ..Reports::default() };
                let text = allow_file(&r, ephemeral);
                let mut rules = Vec::new();
                for line in text.lines() {
                    let rule = line.split('#').next().unwrap().trim();
                    if !rule.is_empty() {
                        rules.push(egress_policy::parse_rule(rule).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?);
                    }
                }
                let b = Baseline { rules };
                for a in attempts.iter().filter(|a| a.deny) {
                    prop_assert!(b.knows_dest(&DestKey::of(a)), "{a:?} not covered by:\n{text}");
                }
            }
        }
    }
}
