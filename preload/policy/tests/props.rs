//! Property tests of the rule parser, suggestions, the wire format, its rule index and its
//! decoder.
//! The number of cases follows `PROPTEST_CASES` (proptest's default configuration).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use egress_policy::wire::{encode_full, Settings, HEADER_LEN};
use egress_policy::{
    encode, parse_rule, suggest_rule, DecodeError, DenyAs, Mode, PolicyView, PortRange, Rule,
    Target,
};

const H_INDEX_OFF: usize = 44;
const H_DENY_AS: usize = 64;

/// Recomputes the checksum after a test edited the bytes.
fn fix_checksum(bytes: &mut [u8]) {
    egress_policy::wire::reseal(bytes);
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

fn v4_mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn v6_mask(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

/// A port suffix as written, and the range it means.
fn port_spec() -> impl Strategy<Value = (String, PortRange)> {
    prop_oneof![
        2 => Just((String::new(), PortRange::ALL)),
        2 => (1u16..=65535).prop_map(|p| (format!(":{p}"), PortRange { lo: p, hi: p })),
        1 => (1u16..=65535, 1u16..=65535).prop_map(|(a, b)| {
            let (lo, hi) = (a.min(b), a.max(b));
            (format!(":{lo}-{hi}"), PortRange { lo, hi })
        }),
        1 => prop_oneof![Just(1u16), Just(65535u16)]
            .prop_map(|p| (format!(":{p}"), PortRange { lo: p, hi: p })),
    ]
}

/// A DNS label of letters, digits, '-' and '_' (not at the ends for '-').
fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_]",
        "[a-zA-Z0-9_][a-zA-Z0-9_-]{0,20}[a-zA-Z0-9_]",
        "[a-z0-9]{63}",
    ]
}

/// A valid host name (its last label is not numeric), any case, maybe with a trailing dot.
fn host_name() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(label(), 0..4),
        "[a-zA-Z][a-zA-Z0-9-]{0,8}[a-zA-Z0-9]|[a-zA-Z]",
        any::<bool>(),
    )
        .prop_map(|(mut labels, last, dot)| {
            labels.push(last);
            let mut s = labels.join(".");
            if dot {
                s.push('.');
            }
            s
        })
}

/// Rules with their expected meaning: (text, target, ports).
fn rule_case() -> impl Strategy<Value = (String, Target, PortRange)> {
    let v4 = (any::<u32>(), 0u8..=32, any::<bool>(), port_spec()).prop_map(
        |(bits, prefix, bare, (pspec, ports))| {
            let addr = Ipv4Addr::from(bits & v4_mask(prefix));
            let text = if prefix == 32 && bare {
                format!("{addr}{pspec}")
            } else {
                format!("{addr}/{prefix}{pspec}")
            };
            let target = Target::Net {
                addr: IpAddr::V4(addr),
                prefix,
            };
            (text, target, ports)
        },
    );
    let v6 = (any::<u128>(), 0u8..=128, any::<bool>(), port_spec()).prop_map(
        |(bits, prefix, bare, (pspec, ports))| {
            let addr = Ipv6Addr::from(bits & v6_mask(prefix));
            let body = if prefix == 128 && bare {
                addr.to_string()
            } else {
                format!("{addr}/{prefix}")
            };
            let text = if pspec.is_empty() {
                body
            } else {
                format!("[{body}]{pspec}")
            };
            let target = match addr.to_ipv4_mapped() {
                Some(v4) if prefix >= 96 => Target::Net {
                    addr: IpAddr::V4(v4),
                    prefix: prefix - 96,
                },
                _ => Target::Net {
                    addr: IpAddr::V6(addr),
                    prefix,
                },
            };
            (text, target, ports)
        },
    );
    // IPv4-mapped IPv6 rules, which become IPv4 rules.
    let mapped = (any::<u32>(), 0u8..=32, port_spec()).prop_map(|(bits, p4, (pspec, ports))| {
        let v4 = Ipv4Addr::from(bits & v4_mask(p4));
        let body = format!("::ffff:{v4}/{}", u32::from(p4) + 96);
        let text = if pspec.is_empty() {
            body
        } else {
            format!("[{body}]{pspec}")
        };
        let target = Target::Net {
            addr: IpAddr::V4(v4),
            prefix: p4,
        };
        (text, target, ports)
    });
    let name =
        (host_name(), any::<bool>(), port_spec()).prop_map(|(host, below, (pspec, ports))| {
            let stored = host.strip_suffix('.').unwrap_or(&host).to_ascii_lowercase();
            if below {
                (format!("*.{host}{pspec}"), Target::Below(stored), ports)
            } else {
                (format!("{host}{pspec}"), Target::Name(stored), ports)
            }
        });
    let loopback = ("[lL][oO][oO][pP][bB][aA][cC][kK]", port_spec())
        .prop_map(|(word, (pspec, ports))| (format!("{word}{pspec}"), Target::Loopback, ports));
    prop_oneof![3 => v4, 3 => v6, 1 => mapped, 3 => name, 1 => loopback]
}

fn rule() -> impl Strategy<Value = Rule> {
    rule_case().prop_map(|(text, _, _)| parse_rule(&text).expect("generated rules are valid"))
}

/// Networks that nest: one address under several prefix lengths (with /0 and the full length
/// often among them), each with its own ports, as IPv4, IPv6 or IPv4-mapped IPv6 rules.
fn nested_nets() -> impl Strategy<Value = Vec<Rule>> {
    let v4 = (
        any::<u32>(),
        proptest::collection::vec(
            (prop_oneof![0u8..=32, Just(0u8), Just(32u8)], port_spec()),
            1..6,
        ),
        any::<bool>(),
    )
        .prop_map(|(bits, nets, mapped)| {
            nets.into_iter()
                .map(|(prefix, (pspec, _))| {
                    let net = Ipv4Addr::from(bits & v4_mask(prefix));
                    let text = match (mapped, pspec.is_empty()) {
                        (false, _) => format!("{net}/{prefix}{pspec}"),
                        (true, true) => format!("::ffff:{net}/{}", u32::from(prefix) + 96),
                        (true, false) => {
                            format!("[::ffff:{net}/{}]{pspec}", u32::from(prefix) + 96)
                        }
                    };
                    parse_rule(&text).expect("generated rules are valid")
                })
                .collect::<Vec<_>>()
        });
    let v6 = (
        any::<u128>(),
        proptest::collection::vec(
            (
                prop_oneof![0u8..=128, Just(0u8), Just(128u8), 96u8..=128],
                port_spec(),
            ),
            1..6,
        ),
    )
        .prop_map(|(bits, nets)| {
            nets.into_iter()
                .map(|(prefix, (pspec, _))| {
                    let net = Ipv6Addr::from(bits & v6_mask(prefix));
                    let text = if pspec.is_empty() {
                        format!("{net}/{prefix}")
                    } else {
                        format!("[{net}/{prefix}]{pspec}")
                    };
                    parse_rule(&text).expect("generated rules are valid")
                })
                .collect::<Vec<_>>()
        });
    prop_oneof![v4, v6]
}

/// A policy of independent rules, nested networks and repeats of earlier rules (some with
/// other ports), in random order.
fn policy_rules(max: usize) -> impl Strategy<Value = Vec<Rule>> {
    (
        proptest::collection::vec(rule(), 0..max),
        proptest::collection::vec(nested_nets(), 0..4),
        proptest::collection::vec(
            (any::<proptest::sample::Index>(), port_spec(), any::<bool>()),
            0..max / 3 + 1,
        ),
    )
        .prop_flat_map(|(mut rules, nested, repeats)| {
            rules.extend(nested.into_iter().flatten());
            if !rules.is_empty() {
                for (pick, (_, ports), same) in repeats {
                    let mut again = pick.get(&rules).clone();
                    if !same {
                        again.ports = ports;
                    }
                    rules.push(again);
                }
            }
            Just(rules).prop_shuffle()
        })
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<u128>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
        any::<u32>().prop_map(|b| IpAddr::V6(Ipv4Addr::from(b).to_ipv6_mapped())),
        prop_oneof![
            Just("127.0.0.1"),
            Just("127.9.9.9"),
            Just("0.0.0.0"),
            Just("::"),
            Just("::1"),
            Just("::ffff:127.0.0.1"),
            Just("::ffff:0.0.0.0"),
            Just("128.0.0.1"),
        ]
        .prop_map(|s| s.parse::<IpAddr>().unwrap()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Reference matcher, with plain u128 arithmetic
// ---------------------------------------------------------------------------------------------

/// (is IPv4, value) of the canonical form of `ip`.
fn ref_canonical(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(v4) => (true, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => {
            let v = u128::from(v6);
            if v >> 32 == 0xffff {
                (true, v & 0xffff_ffff)
            } else {
                (false, v)
            }
        }
    }
}

fn ref_matches_addr(rule: &Rule, ip: IpAddr, port: u16) -> bool {
    if port < rule.ports.lo || port > rule.ports.hi {
        return false;
    }
    let (is4, val) = ref_canonical(ip);
    match &rule.target {
        Target::Loopback => {
            if is4 {
                val >> 24 == 127 || val == 0
            } else {
                val == 1 || val == 0
            }
        }
        Target::Net { addr, prefix } => {
            let (net4, net) = ref_canonical(*addr);
            let width: u32 = if net4 { 32 } else { 128 };
            net4 == is4 && (*prefix == 0 || (val ^ net) >> (width - u32::from(*prefix)) == 0)
        }
        // Decided by the library (the run's listeners), never by the policy alone.
        Target::Name(_) | Target::Below(_) | Target::LoopbackOwn => false,
    }
}

fn ref_matches_name(rule: &Rule, name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    match &rule.target {
        Target::Name(n) => name == *n,
        Target::Below(n) => {
            name.len() > n.len() + 1 && name.ends_with(n.as_str()) && {
                let dot = name.len() - n.len() - 1;
                name.as_bytes()[dot] == b'.'
            }
        }
        _ => false,
    }
}

/// An address inside (or next to) rule `rules[pick % len]`, so probes often hit.
fn probe_near(rules: &[Rule], pick: usize, noise: u128) -> Option<IpAddr> {
    let rule = rules.get(pick % rules.len().max(1))?;
    match &rule.target {
        Target::Net {
            addr: IpAddr::V4(a),
            prefix,
        } => {
            let host = (noise as u32) & !v4_mask(*prefix);
            let v4 = Ipv4Addr::from(u32::from(*a) | host);
            Some(if noise >> 127 == 1 {
                IpAddr::V6(v4.to_ipv6_mapped())
            } else {
                IpAddr::V4(v4)
            })
        }
        Target::Net {
            addr: IpAddr::V6(a),
            prefix,
        } => Some(IpAddr::V6(Ipv6Addr::from(
            u128::from(*a) | (noise & !v6_mask(*prefix)),
        ))),
        Target::Loopback => Some(IpAddr::V4(Ipv4Addr::from(
            0x7f00_0000 | (noise as u32 & 0xff),
        ))),
        _ => None,
    }
}

/// A name that a name rule `rules[pick % len]` is about, in random case, maybe below it.
fn name_near(rules: &[Rule], pick: usize, prefix: &str, upper: bool) -> Option<String> {
    let rule = rules.get(pick % rules.len().max(1))?;
    let base = match &rule.target {
        Target::Name(n) | Target::Below(n) => n.clone(),
        _ => return None,
    };
    let n = if prefix.is_empty() {
        base
    } else {
        format!("{prefix}.{base}")
    };
    Some(if upper { n.to_ascii_uppercase() } else { n })
}

/// Calls every accessor of an accepted policy; none may panic, and `rule(i)` is `Some` for
/// every index below `rule_count`.
fn exercise(v: &PolicyView<'_>, probes: &[(IpAddr, u16)]) {
    let _ = v.mode().as_str();
    let _ = v.launcher_pid();
    let n = v.rule_count();
    assert_eq!(v.rules().count(), n);
    for i in 0..n {
        let r = v.rule(i).expect("index below rule_count");
        let _ = (r.text.len(), r.ports, r.is_name_rule());
        assert!(r.ports.lo <= r.ports.hi);
        for &(ip, port) in probes {
            let _ = r.matches_addr(ip, port);
        }
        let _ = r.matches_name(b"a.example.com");
        let _ = r.matches_name(r.text.as_bytes());
    }
    assert!(v.rule(n).is_none());
    // Whatever was accepted, the index agrees with the rules it indexes.
    for &(ip, port) in probes {
        let expect = v.rules().position(|r| r.matches_addr(ip, port));
        assert_eq!(v.match_addr(ip, port), expect, "{ip}:{port}");
    }
    let mut names: Vec<Vec<u8>> = [&b"example.com"[..], b"", b".", b"A.B.C."]
        .iter()
        .map(|n| n.to_vec())
        .collect();
    for r in v.rules() {
        // The rule's own text and a name below it, whatever they are.
        let host = r
            .text
            .split(':')
            .next()
            .unwrap_or("")
            .trim_start_matches("*.");
        names.push(host.as_bytes().to_vec());
        names.push(format!("x.{host}").into_bytes());
    }
    for name in &names {
        let expect = v.rules().position(|r| r.matches_name(name));
        assert_eq!(
            v.match_name(name),
            expect,
            "{:?}",
            String::from_utf8_lossy(name)
        );
    }
}

fn fixed_probes() -> Vec<(IpAddr, u16)> {
    [
        "127.0.0.1",
        "::1",
        "203.0.113.7",
        "2001:db8::7",
        "::ffff:10.0.0.1",
        "0.0.0.0",
    ]
    .iter()
    .flat_map(|s| [0u16, 80, 65535].map(|p| (s.parse().unwrap(), p)))
    .collect()
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    // (a) The parser never panics, and errors always name the trimmed rule.

    #[test]
    fn parse_rule_never_panics_on_arbitrary_strings(s in any::<String>()) {
        match parse_rule(&s) {
            Ok(rule) => prop_assert_eq!(rule.text.as_str(), s.trim()),
            Err(e) => {
                prop_assert_eq!(e.rule.as_str(), s.trim());
                prop_assert!(!e.why.is_empty());
                let shown = e.to_string();
                let prefix = format!("invalid rule '{}': ", s.trim());
                prop_assert!(shown.starts_with(&prefix));
            }
        }
    }

    #[test]
    fn parse_rule_never_panics_on_rule_alphabet_strings(s in r"[a-z0-9.:*/\[\]-]{0,48}") {
        match parse_rule(&s) {
            Ok(rule) => {
                // Whatever is accepted re-parses to itself.
                prop_assert_eq!(parse_rule(&rule.text), Ok(rule.clone()));
            }
            Err(e) => {
                prop_assert_eq!(e.rule.as_str(), s.as_str());
                prop_assert!(!e.why.is_empty());
            }
        }
    }

    #[test]
    fn parse_rule_never_panics_on_mutated_valid_rules(
        (text, _, _) in rule_case(),
        at in any::<proptest::sample::Index>(),
        ch in r"[a-z0-9.:*/\[\] _!-]",
        delete in any::<bool>(),
    ) {
        let mut chars: Vec<char> = text.chars().collect();
        let i = at.index(chars.len() + 1);
        if delete && i < chars.len() {
            chars.remove(i);
        } else {
            chars.insert(i, ch.chars().next().unwrap());
        }
        let s: String = chars.into_iter().collect();
        if let Ok(rule) = parse_rule(&s) {
            prop_assert_eq!(parse_rule(&rule.text), Ok(rule.clone()));
        }
    }

    // (b) Generated rules parse to what they mean and re-parse to the same rule.

    #[test]
    fn generated_rules_parse_to_their_meaning_and_reparse_identically(
        (text, target, ports) in rule_case(),
        pad in r"[ \t]{0,2}",
    ) {
        let padded = format!("{pad}{text}{pad}");
        let rule = parse_rule(&padded);
        prop_assert!(rule.is_ok(), "{:?} rejected: {}", padded, rule.unwrap_err());
        let rule = rule.unwrap();
        prop_assert_eq!(&rule.text, &text);
        prop_assert_eq!(&rule.target, &target);
        prop_assert_eq!(rule.ports, ports);
        prop_assert_eq!(parse_rule(&rule.text), Ok(rule.clone()));
    }

    #[test]
    fn generated_rules_match_like_the_reference(
        rule in rule(),
        ip in any_ip(),
        port in any::<u16>(),
    ) {
        prop_assert_eq!(rule.matches_addr(ip, port), ref_matches_addr(&rule, ip, port));
    }

    #[test]
    fn net_rules_match_every_address_inside_them(
        rule in rule(),
        noise in any::<u128>(),
    ) {
        if let Some(ip) = probe_near(std::slice::from_ref(&rule), 0, noise) {
            let port = if rule.ports.is_all() { noise as u16 } else { rule.ports.lo };
            prop_assert!(rule.matches_addr(ip, port), "{} should allow {}:{}", rule.text, ip, port);
        }
    }

    #[test]
    fn name_rules_match_names_like_the_reference(
        rule in rule(),
        sub in "[a-zA-Z0-9-]{0,6}",
        upper in any::<bool>(),
        dot in any::<bool>(),
        other in "[a-zA-Z0-9.-]{0,20}",
    ) {
        let mut names = vec![other];
        if let Some(mut n) = name_near(std::slice::from_ref(&rule), 0, &sub, upper) {
            if dot {
                n.push('.');
            }
            names.push(n);
        }
        for name in names {
            prop_assert_eq!(rule.matches_name(&name), ref_matches_name(&rule, &name), "{}", name);
        }
    }

    // (c) Suggestions parse and allow what they were made for.

    #[test]
    fn suggested_rule_for_an_address_allows_it(
        ip in any_ip(),
        port in proptest::option::of(any::<u16>()),
        other_port in any::<u16>(),
        bad_host in proptest::option::of(prop_oneof![
            Just(""), Just("bad host"), Just("1.2.3.4"), Just("::1"), Just("a..b"), Just("-x.com"),
        ]),
    ) {
        let text = suggest_rule(bad_host, Some(ip), port);
        let rule = parse_rule(&text);
        prop_assert!(rule.is_ok(), "suggestion {:?} does not parse", text);
        let rule = rule.unwrap();
        let p = port.unwrap_or(other_port);
        prop_assert!(rule.matches_addr(ip, p), "{} should allow {}:{}", text, ip, p);
        if port.is_none() || port == Some(0) {
            prop_assert!(rule.ports.is_all());
        }
    }

    #[test]
    fn suggested_rule_for_a_name_allows_it(
        host in host_name(),
        ip in proptest::option::of(any_ip()),
        port in proptest::option::of(any::<u16>()),
    ) {
        let text = suggest_rule(Some(&host), ip, port);
        let rule = parse_rule(&text);
        prop_assert!(rule.is_ok(), "suggestion {:?} does not parse", text);
        let rule = rule.unwrap();
        prop_assert!(matches!(rule.target, Target::Name(_)), "{} is an exact name", text);
        prop_assert!(rule.matches_name(&host), "{} should allow {}", text, host);
        match port {
            Some(p) if p != 0 => prop_assert_eq!(rule.ports, PortRange { lo: p, hi: p }),
            _ => prop_assert!(rule.ports.is_all()),
        }
    }

    // (d) Encoding round-trips and the view matches like the reference.

    #[test]
    fn encode_then_parse_round_trips(
        rules in proptest::collection::vec(rule(), 0..24),
        audit in any::<bool>(),
        offline in any::<bool>(),
        pid in any::<u32>(),
    ) {
        let mode = if audit { Mode::Audit } else { Mode::Block };
        let deny_as = if offline { DenyAs::Offline } else { DenyAs::Eacces };
        let settings = Settings { mode, deny_as, ..Settings::default() };
        let bytes = encode_full(settings, pid, &rules);
        // The setting lives in the header only: the rest is what `encode` writes.
        prop_assert_eq!(&bytes[HEADER_LEN..], &encode(mode, pid, &rules)[HEADER_LEN..]);
        let v = PolicyView::parse(&bytes);
        prop_assert!(v.is_ok(), "{:?}", v.err());
        let v = v.unwrap();
        prop_assert_eq!(v.mode(), mode);
        prop_assert_eq!(v.deny_as(), deny_as);
        prop_assert_eq!(v.launcher_pid(), pid);
        prop_assert_eq!(v.rule_count(), rules.len());
        prop_assert_eq!(v.rules().count(), rules.len());
        for (i, rule) in rules.iter().enumerate() {
            let view = v.rule(i).unwrap();
            prop_assert_eq!(view.text, rule.text.as_str());
            prop_assert_eq!(view.ports, rule.ports);
            prop_assert_eq!(
                view.is_name_rule(),
                matches!(rule.target, Target::Name(_) | Target::Below(_))
            );
        }
        prop_assert!(v.rule(rules.len()).is_none());
    }

    #[test]
    fn a_deny_as_word_other_than_0_or_1_is_refused_even_when_sealed(
        rules in proptest::collection::vec(rule(), 0..8),
        value in prop_oneof![2u64..16, any::<u64>().prop_filter("not 0 or 1", |v| *v > 1)],
    ) {
        let mut bytes = encode(Mode::Block, 1, &rules);
        bytes[H_DENY_AS..H_DENY_AS + 8].copy_from_slice(&value.to_le_bytes());
        fix_checksum(&mut bytes);
        prop_assert_eq!(PolicyView::parse(&bytes).err(), Some(DecodeError::BadDenyAs));
    }

    #[test]
    fn view_match_addr_equals_the_reference(
        rules in proptest::collection::vec(rule(), 0..16),
        probes in proptest::collection::vec(
            (any::<usize>(), any::<u128>(), any::<u16>(), any_ip(), any::<bool>()),
            1..24,
        ),
    ) {
        let bytes = encode(Mode::Block, 1, &rules);
        let v = PolicyView::parse(&bytes).unwrap();
        for (pick, noise, port, random_ip, near) in probes {
            let ip = if near {
                probe_near(&rules, pick, noise).unwrap_or(random_ip)
            } else {
                random_ip
            };
            // Often use a port of the picked rule, so that port ranges are exercised at edges.
            let port = match rules.get(pick % rules.len().max(1)) {
                Some(r) if noise & 3 == 0 => r.ports.lo,
                Some(r) if noise & 3 == 1 => r.ports.hi,
                Some(r) if noise & 7 == 2 => r.ports.hi.wrapping_add(1),
                _ => port,
            };
            let expect = rules.iter().position(|r| ref_matches_addr(r, ip, port));
            prop_assert_eq!(v.match_addr(ip, port), expect, "{}:{}", ip, port);
            prop_assert_eq!(
                rules.iter().position(|r| r.matches_addr(ip, port)),
                expect,
                "{}:{}", ip, port
            );
        }
    }

    #[test]
    fn view_match_name_equals_the_reference(
        rules in proptest::collection::vec(rule(), 0..16),
        probes in proptest::collection::vec(
            (any::<usize>(), "[a-z0-9-]{0,5}", any::<bool>(), any::<bool>(), "[a-zA-Z0-9.-]{0,16}"),
            1..24,
        ),
    ) {
        let bytes = encode(Mode::Audit, 1, &rules);
        let v = PolicyView::parse(&bytes).unwrap();
        for (pick, sub, upper, dot, random) in probes {
            let mut name = name_near(&rules, pick, &sub, upper).unwrap_or(random);
            if dot {
                name.push('.');
            }
            let expect = rules.iter().position(|r| ref_matches_name(r, &name));
            prop_assert_eq!(v.match_name(name.as_bytes()), expect, "{}", name);
            prop_assert_eq!(rules.iter().position(|r| r.matches_name(&name)), expect, "{}", name);
        }
    }

    // (e) The index: matching through it is the first matching rule of a plain scan.

    #[test]
    fn indexed_matching_returns_the_first_matching_rule(
        rules in policy_rules(48),
        addr_probes in proptest::collection::vec(
            (any::<usize>(), any::<u128>(), any::<u16>(), any_ip(), 0u8..4),
            1..24,
        ),
        name_probes in proptest::collection::vec(
            (
                any::<usize>(),
                prop_oneof!["", "[a-zA-Z0-9-]{1,5}", "[a-z]{1,3}\\.[a-z]{1,3}"],
                any::<bool>(),
                any::<bool>(),
                "[a-zA-Z0-9.-]{0,16}",
            ),
            1..24,
        ),
    ) {
        let bytes = encode(Mode::Block, 1, &rules);
        let v = PolicyView::parse(&bytes);
        prop_assert!(v.is_ok(), "{:?}", v.err());
        let v = v.unwrap();
        for (pick, noise, port, random_ip, how) in addr_probes {
            let ip = match (how, probe_near(&rules, pick, noise)) {
                (0, _) | (_, None) => random_ip,
                // The IPv4-mapped form of an IPv4 address near a rule.
                (1, Some(IpAddr::V4(v4))) => IpAddr::V6(v4.to_ipv6_mapped()),
                (_, Some(ip)) => ip,
            };
            // Often a port at or just outside the edges of the picked rule's ports.
            let port = match rules.get(pick % rules.len().max(1)) {
                Some(r) if noise & 3 == 0 => r.ports.lo,
                Some(r) if noise & 3 == 1 => r.ports.hi,
                Some(r) if noise & 7 == 2 => r.ports.hi.wrapping_add(1),
                Some(r) if noise & 7 == 3 => r.ports.lo.wrapping_sub(1),
                _ => port,
            };
            let expect = rules.iter().position(|r| r.matches_addr(ip, port));
            prop_assert_eq!(v.match_addr(ip, port), expect, "{}:{}", ip, port);
            prop_assert_eq!(
                rules.iter().position(|r| ref_matches_addr(r, ip, port)),
                expect,
                "{}:{}", ip, port
            );
        }
        for (pick, sub, upper, dot, random) in name_probes {
            let mut name = name_near(&rules, pick, &sub, upper).unwrap_or(random);
            if dot {
                name.push('.');
            }
            let expect = rules.iter().position(|r| r.matches_name(&name));
            prop_assert_eq!(v.match_name(name.as_bytes()), expect, "{}", name);
            prop_assert_eq!(
                rules.iter().position(|r| ref_matches_name(r, &name)),
                expect,
                "{}", name
            );
        }
    }

    // (f) The decoder never panics and accepted policies are safe to use.

    #[test]
    fn policy_parse_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        if let Ok(v) = PolicyView::parse(&bytes) {
            exercise(&v, &fixed_probes());
        }
    }

    #[test]
    fn policy_parse_never_panics_on_arbitrary_bodies_behind_a_valid_header(
        count in 0u32..8,
        mode in 0u32..3,
        deny_as in prop_oneof![0u64..3, any::<u64>()],
        body in proptest::collection::vec(any::<u8>(), 0..600),
        index_at in proptest::option::of(any::<proptest::sample::Index>()),
        index_skip in 0usize..64,
    ) {
        let mut bytes = encode(Mode::Block, 7, &[]);
        bytes.truncate(HEADER_LEN);
        bytes.extend_from_slice(&body);
        let len = bytes.len() as u32;
        // Often right after the records, sometimes anywhere.
        let index_off = match index_at {
            Some(at) => at.index(bytes.len() + 1),
            None => HEADER_LEN + count as usize * 48 + index_skip,
        } as u32;
        bytes[12..16].copy_from_slice(&mode.to_le_bytes());
        bytes[H_DENY_AS..H_DENY_AS + 8].copy_from_slice(&deny_as.to_le_bytes());
        bytes[20..24].copy_from_slice(&count.to_le_bytes());
        bytes[24..28].copy_from_slice(&len.to_le_bytes());
        bytes[H_INDEX_OFF..H_INDEX_OFF + 4].copy_from_slice(&index_off.to_le_bytes());
        // No grantable rules: the index runs to the end.
        bytes[72..76].copy_from_slice(&len.to_le_bytes());
        bytes[76..80].copy_from_slice(&0u32.to_le_bytes());
        fix_checksum(&mut bytes);
        match PolicyView::parse(&bytes) {
            Ok(v) => {
                prop_assert!(deny_as < 2, "deny_as {} accepted", deny_as);
                exercise(&v, &fixed_probes());
            }
            Err(e) => prop_assert!(matches!(
                e,
                DecodeError::BadMode
                    | DecodeError::BadDenyAs
                    | DecodeError::BadLength
                    | DecodeError::BadRule
                    | DecodeError::BadIndex
                    | DecodeError::BadGrantable
            ), "{:?}", e),
        }
    }

    #[test]
    fn policy_parse_never_panics_on_mutated_encodings(
        rules in proptest::collection::vec(rule(), 0..8),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), 1u8..=255), 0..6),
        truncate in proptest::option::of(any::<proptest::sample::Index>()),
        reseal in any::<bool>(),
        probes in proptest::collection::vec((any_ip(), any::<u16>()), 0..8),
    ) {
        let mut bytes = encode(Mode::Audit, 3, &rules);
        let original = bytes.clone();
        for (at, x) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        if let Some(at) = truncate {
            let n = at.index(bytes.len() + 1);
            bytes.truncate(n);
        }
        if reseal {
            fix_checksum(&mut bytes);
        }
        let mut all_probes = fixed_probes();
        all_probes.extend(probes);
        let parsed = PolicyView::parse(&bytes);
        // Without resealing, any real change is caught (by the length or the checksum).
        if !reseal && bytes != original {
            prop_assert!(parsed.is_err(), "unsealed change accepted");
        }
        if let Ok(v) = parsed {
            exercise(&v, &all_probes);
        }
    }

    #[test]
    fn changes_to_the_index_alone_are_always_refused(
        rules in policy_rules(16),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), 1u8..=255), 1..4),
    ) {
        // For given records the index is canonical, so no other index bytes are accepted.
        let mut bytes = encode(Mode::Block, 3, &rules);
        let at = u32::from_le_bytes(bytes[H_INDEX_OFF..H_INDEX_OFF + 4].try_into().unwrap());
        let index = at as usize..bytes.len();
        let original = bytes.clone();
        for (pick, x) in &flips {
            let i = index.start + pick.index(index.len());
            bytes[i] ^= x;
        }
        fix_checksum(&mut bytes);
        if bytes != original {
            prop_assert_eq!(PolicyView::parse(&bytes).err(), Some(DecodeError::BadIndex));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The event channel's framing
// ---------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn any_datagram_splits_without_panic_and_only_framed_ones_pass(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        use egress_policy::event::{split, HEADER_LEN as EV, MAGIC, VERSION};
        match split(&bytes) {
            Some((key, body)) => {
                prop_assert!(bytes.len() >= EV && bytes[..4] == MAGIC && bytes[4] == VERSION);
                prop_assert_eq!(key, &bytes[8..EV]);
                prop_assert_eq!(body, &bytes[EV..]);
            }
            None => prop_assert!(
                bytes.len() < EV || bytes[..4] != MAGIC || bytes[4] != VERSION || bytes[5..8] != [0, 0, 0]
            ),
        }
    }

    #[test]
    fn a_framed_event_keeps_its_key_and_body(
        key in any::<[u8; 16]>(),
        body in proptest::collection::vec(any::<u8>(), 0..64),
        other in any::<[u8; 16]>(),
    ) {
        use egress_policy::event::{header, same_key, split};
        let mut d = header(&key).to_vec();
        d.extend_from_slice(&body);
        let (k, b) = split(&d).expect("framed");
        prop_assert!(same_key(k, &key));
        prop_assert_eq!(same_key(k, &other), key == other);
        prop_assert_eq!(b, &body[..]);
    }
}
