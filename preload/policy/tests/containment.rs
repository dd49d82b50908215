//! Property tests of rule containment (`Rule::contains`), which bounds what a scope may grant:
//! a rule found within another never allows what the other does not, every rule lies within
//! itself, and a rule narrowed by prefix, port or name lies within the rule it came from.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use egress_policy::{parse_rule, Rule};

/// Addresses near the interesting ones: loopback, the documentation ranges, mapped forms.
fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..4, any::<u8>()).prop_map(|(c, d)| IpAddr::V4(Ipv4Addr::new(127, 0, c, d))),
        (0u8..2, any::<u8>()).prop_map(|(c, d)| IpAddr::V4(Ipv4Addr::new(203, 0, 112 + c, d))),
        Just(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        Just(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        Just(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        any::<u16>().prop_map(|x| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, x))),
        any::<u8>().prop_map(|d| IpAddr::V6(Ipv4Addr::new(127, 0, 0, d).to_ipv6_mapped())),
        any::<u32>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
    ]
}

fn ports() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        (1u16..100).prop_map(|p| format!(":{p}")),
        (1u16..100, 0u16..100).prop_map(|(lo, w)| format!(":{lo}-{}", lo + w)),
    ]
}

fn name() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![Just("a"), Just("b"), Just("test"), Just("localhost")],
        1..4,
    )
    .prop_map(|labels| labels.join("."))
}

/// A valid rule near the interesting ones.
fn rule() -> impl Strategy<Value = Rule> {
    let v4 = (address(), 0u8..=32).prop_filter_map("IPv4", |(ip, p)| match ip {
        IpAddr::V4(v4) => Some(format!(
            "{}/{p}",
            egress_policy::rule::mask(IpAddr::V4(v4), p)
        )),
        _ => None,
    });
    let v6 = (address(), 96u8..=128).prop_filter_map("IPv6", |(ip, p)| match ip {
        IpAddr::V6(v6) => Some(format!(
            "[{}/{p}]",
            egress_policy::rule::mask(IpAddr::V6(v6), p)
        )),
        _ => None,
    });
    let target = prop_oneof![
        Just("loopback".to_string()),
        Just("loopback:own".to_string()), // valid without a port suffix only
        v4,
        v6,
        name(),
        name().prop_map(|n| format!("*.{n}")),
    ];
    (target, ports()).prop_filter_map("valid", |(t, p)| {
        let text = if t.starts_with('[') {
            if p.is_empty() {
                t.trim_matches(|c| c == '[' || c == ']').to_string()
            } else {
                format!("{t}{p}")
            }
        } else {
            format!("{t}{p}")
        };
        parse_rule(&text).ok()
    })
}

proptest! {
    #[test]
    fn a_rule_lies_within_itself(r in rule()) {
        prop_assert!(r.contains(&r), "{}", r.text);
    }

    #[test]
    fn containment_never_widens_addresses(
        outer in rule(), inner in rule(), ip in address(), port in 0u16..200,
    ) {
        if outer.contains(&inner) && inner.matches_addr(ip, port) {
            prop_assert!(outer.matches_addr(ip, port), "{} within {} at {ip}:{port}", inner.text, outer.text);
        }
    }

    #[test]
    fn containment_never_widens_names(outer in rule(), inner in rule(), n in name()) {
        // The one exception, by design: `localhost` names lie within `loopback` (they only
        // ever mean this host, and are answered locally without a rule).
        let local = egress_policy::is_localhost_name(&n);
        if outer.contains(&inner) && inner.matches_name(&n) && !local {
            prop_assert!(outer.matches_name(&n), "{} within {} for {n}", inner.text, outer.text);
        }
    }

    #[test]
    fn a_longer_prefix_and_fewer_ports_lie_within(
        ip in address(), p in 0u8..=32, extra in 0u8..=32, lo in 1u16..100, w in 0u16..100,
    ) {
        let IpAddr::V4(v4) = egress_policy::canonical_ip(ip) else { return Ok(()) };
        let q = p.saturating_add(extra).min(32);
        let m = |n: u8| egress_policy::rule::mask(IpAddr::V4(v4), n);
        let outer = parse_rule(&format!("{}/{p}:{lo}-{}", m(p), lo + w)).unwrap();
        let inner = parse_rule(&format!("{}/{q}:{lo}", m(q))).unwrap();
        prop_assert!(outer.contains(&inner), "{} within {}", inner.text, outer.text);
        prop_assert!(!inner.contains(&outer) || (p == q && w == 0));
    }

    #[test]
    fn a_name_below_a_wildcard_lies_within_it(n in name(), sub in name()) {
        let outer = parse_rule(&format!("*.{n}")).unwrap();
        let below = parse_rule(&format!("{sub}.{n}")).unwrap();
        let wild_below = parse_rule(&format!("*.{sub}.{n}")).unwrap();
        prop_assert!(outer.contains(&below));
        prop_assert!(outer.contains(&wild_below));
        prop_assert!(!outer.contains(&parse_rule(&n).unwrap()));
    }
}
