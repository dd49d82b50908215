//! Unit tests of the rule grammar (CONTRACT "Rules"): parsing, error messages, matching and
//! suggestions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use egress_policy::{
    canonical_ip, is_loopback, parse_rule, suggest_rule, PortRange, Rule, RuleError, Target,
};

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test address {s}: {e}"))
}

fn net(addr: &str, prefix: u8) -> Target {
    Target::Net {
        addr: ip(addr),
        prefix,
    }
}

fn ports(lo: u16, hi: u16) -> PortRange {
    PortRange { lo, hi }
}

fn ok(text: &str) -> Rule {
    parse_rule(text).unwrap_or_else(|e| panic!("{text:?} should parse, got: {e}"))
}

fn err(text: &str) -> RuleError {
    match parse_rule(text) {
        Ok(rule) => panic!("{text:?} should be rejected, parsed as {rule:?}"),
        Err(e) => e,
    }
}

/// Parses `text` and checks the target and ports it yields.
#[track_caller]
fn assert_parses(text: &str, target: Target, range: PortRange) {
    let rule = ok(text);
    assert_eq!(rule.target, target, "target of {text:?}");
    assert_eq!(rule.ports, range, "ports of {text:?}");
    assert_eq!(rule.text, text.trim(), "text of {text:?}");
}

// ---------------------------------------------------------------------------------------------
// Valid forms
// ---------------------------------------------------------------------------------------------

#[test]
fn loopback_rule_any_case_matches_all_ports() {
    assert_parses("loopback", Target::Loopback, PortRange::ALL);
    assert_parses("LoopBack", Target::Loopback, PortRange::ALL);
    assert!(ok("loopback").ports.is_all());
}

#[test]
fn loopback_rule_with_port() {
    assert_parses("loopback:5432", Target::Loopback, ports(5432, 5432));
    assert_parses("LOOPBACK:8000-8100", Target::Loopback, ports(8000, 8100));
}

#[test]
fn exact_name_is_stored_lowercase_without_trailing_dot() {
    assert_parses(
        "example.com",
        Target::Name("example.com".into()),
        PortRange::ALL,
    );
    assert_parses(
        "Example.COM",
        Target::Name("example.com".into()),
        PortRange::ALL,
    );
    assert_parses(
        "example.com.",
        Target::Name("example.com".into()),
        PortRange::ALL,
    );
    assert_parses(
        "WWW.Example.Com.",
        Target::Name("www.example.com".into()),
        PortRange::ALL,
    );
}

#[test]
fn rule_text_keeps_what_the_user_wrote_but_trimmed() {
    let rule = ok("  Example.COM.:443 \t");
    assert_eq!(rule.text, "Example.COM.:443");
    assert_eq!(rule.target, Target::Name("example.com".into()));
    assert_eq!(rule.ports, ports(443, 443));
}

#[test]
fn single_label_names_underscores_and_digits_are_names() {
    assert_parses(
        "localhost",
        Target::Name("localhost".into()),
        PortRange::ALL,
    );
    assert_parses(
        "_dmarc.example.com",
        Target::Name("_dmarc.example.com".into()),
        PortRange::ALL,
    );
    assert_parses(
        "123.example.com",
        Target::Name("123.example.com".into()),
        PortRange::ALL,
    );
    assert_parses("a-b.x1", Target::Name("a-b.x1".into()), PortRange::ALL);
}

#[test]
fn name_with_port_and_port_range() {
    assert_parses(
        "example.com:443",
        Target::Name("example.com".into()),
        ports(443, 443),
    );
    assert_parses(
        "example.com.:443",
        Target::Name("example.com".into()),
        ports(443, 443),
    );
    assert_parses(
        "example.com:8000-8100",
        Target::Name("example.com".into()),
        ports(8000, 8100),
    );
}

#[test]
fn wildcard_rule_stores_the_parent_domain() {
    assert_parses(
        "*.example.com",
        Target::Below("example.com".into()),
        PortRange::ALL,
    );
    assert_parses(
        "*.Example.COM.",
        Target::Below("example.com".into()),
        PortRange::ALL,
    );
    assert_parses(
        "*.example.com:443",
        Target::Below("example.com".into()),
        ports(443, 443),
    );
    assert_parses("*.com", Target::Below("com".into()), PortRange::ALL);
}

#[test]
fn ipv4_address_is_a_slash_32_network() {
    assert_parses("203.0.113.7", net("203.0.113.7", 32), PortRange::ALL);
    assert_parses("203.0.113.7:80", net("203.0.113.7", 32), ports(80, 80));
    assert_parses("203.0.113.7:1-1024", net("203.0.113.7", 32), ports(1, 1024));
}

#[test]
fn ipv6_address_is_a_slash_128_network() {
    assert_parses("2001:db8::7", net("2001:db8::7", 128), PortRange::ALL);
    assert_parses("::1", net("::1", 128), PortRange::ALL);
    assert_parses(
        "2001:DB8:0:0:0:0:0:7",
        net("2001:db8::7", 128),
        PortRange::ALL,
    );
}

#[test]
fn ipv4_cidr_with_and_without_port() {
    assert_parses("203.0.113.0/24", net("203.0.113.0", 24), PortRange::ALL);
    assert_parses("10.0.0.0/8:443", net("10.0.0.0", 8), ports(443, 443));
    assert_parses("0.0.0.0/0", net("0.0.0.0", 0), PortRange::ALL);
    assert_parses("203.0.113.7/32", net("203.0.113.7", 32), PortRange::ALL);
    assert_parses("203.0.113.0/024", net("203.0.113.0", 24), PortRange::ALL);
}

#[test]
fn ipv6_cidr_with_and_without_brackets() {
    assert_parses("2001:db8::/32", net("2001:db8::", 32), PortRange::ALL);
    assert_parses("::/0", net("::", 0), PortRange::ALL);
    assert_parses(
        "[2001:db8::/32]:443",
        net("2001:db8::", 32),
        ports(443, 443),
    );
    assert_parses("[2001:db8::/32]", net("2001:db8::", 32), PortRange::ALL);
}

#[test]
fn bracketed_ipv6_with_port_and_range() {
    assert_parses(
        "[2001:db8::7]:443",
        net("2001:db8::7", 128),
        ports(443, 443),
    );
    assert_parses(
        "[2001:db8::7]:8000-8100",
        net("2001:db8::7", 128),
        ports(8000, 8100),
    );
    assert_parses("[::1]:53", net("::1", 128), ports(53, 53));
    assert_parses("[2001:db8::7]", net("2001:db8::7", 128), PortRange::ALL);
}

#[test]
fn ipv4_mapped_ipv6_rules_become_ipv4() {
    assert_parses("::ffff:203.0.113.7", net("203.0.113.7", 32), PortRange::ALL);
    assert_parses("::FFFF:cb00:7107", net("203.0.113.7", 32), PortRange::ALL);
    assert_parses(
        "[::ffff:203.0.113.7]:443",
        net("203.0.113.7", 32),
        ports(443, 443),
    );
    assert_parses(
        "::ffff:203.0.113.0/120",
        net("203.0.113.0", 24),
        PortRange::ALL,
    );
    assert_parses("::ffff:0:0/96", net("0.0.0.0", 0), PortRange::ALL);
}

#[test]
fn port_edges_one_and_65535_and_full_range() {
    assert_parses(
        "example.com:1",
        Target::Name("example.com".into()),
        ports(1, 1),
    );
    assert_parses(
        "example.com:65535",
        Target::Name("example.com".into()),
        ports(65535, 65535),
    );
    assert_parses(
        "example.com:1-65535",
        Target::Name("example.com".into()),
        ports(1, 65535),
    );
    assert_parses(
        "example.com:80-80",
        Target::Name("example.com".into()),
        ports(80, 80),
    );
}

#[test]
fn longest_label_and_longest_name_are_accepted() {
    let label63 = "a".repeat(63);
    let name = format!("{label63}.com");
    assert_parses(&name, Target::Name(name.clone()), PortRange::ALL);

    // 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 characters.
    let name253 = format!("{l}.{l}.{l}.{}", "b".repeat(61), l = label63);
    assert_eq!(name253.len(), 253);
    assert_parses(&name253, Target::Name(name253.clone()), PortRange::ALL);
    // A trailing dot does not count towards the limit.
    assert_parses(
        &format!("{name253}."),
        Target::Name(name253.clone()),
        PortRange::ALL,
    );
}

#[test]
fn reparsing_a_rule_text_gives_the_same_rule() {
    for text in [
        "loopback",
        "loopback:5432",
        "Example.COM.",
        "*.example.com:443",
        "203.0.113.0/24:80-90",
        "[2001:db8::/32]:443",
        "::ffff:203.0.113.7",
    ] {
        let rule = ok(text);
        assert_eq!(ok(&rule.text), rule, "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed rules
// ---------------------------------------------------------------------------------------------

/// (rule, a phrase its `why` must contain).
fn malformed_table() -> Vec<(String, &'static str)> {
    let label64 = "a".repeat(64);
    let name254 = format!("{l}.{l}.{l}.{}", "b".repeat(62), l = "a".repeat(63));
    assert_eq!(name254.len(), 254);
    let mut v: Vec<(String, &'static str)> = vec![
        ("*.".into(), "'*.' needs a domain after it"),
        ("*.:443".into(), "'*.' needs a domain after it"),
        ("**.x".into(), "'*' may only stand alone as the first label"),
        (
            "a.*.b".into(),
            "'*' may only stand alone as the first label",
        ),
        ("*".into(), "'*' may only stand alone as the first label"),
        ("*.*.example.com".into(), "'*' may only stand alone"),
        ("*example.com".into(), "'*' may only stand alone"),
        (
            "10.0.0.0/33".into(),
            "prefix /33 is longer than an IPv4 address (/32)",
        ),
        (
            "10.0.0.1/24".into(),
            "has host bits set; the network is 10.0.0.0/24",
        ),
        (
            "2001:db8::/129".into(),
            "prefix /129 is longer than an IPv6 address (/128)",
        ),
        (
            "2001:db8::1/32".into(),
            "has host bits set; the network is 2001:db8::/32",
        ),
        ("10.0.0.0/".into(), "'/' is not a prefix length"),
        ("10.0.0.0/abc".into(), "'/abc' is not a prefix length"),
        ("10.0.0.0/1000".into(), "'/1000' is not a prefix length"),
        (
            "example.com/24".into(),
            "'example.com' is not an IPv4 or IPv6 address",
        ),
        ("example.com:0".into(), "port 0 is not a destination port"),
        ("example.com:70000".into(), "port 70000 is out of range"),
        ("example.com:99999999999999999999".into(), "is out of range"),
        (
            "example.com:90-80".into(),
            "port range 90-80 is reversed; write 80-90",
        ),
        ("example.com:http".into(), "'http' is not a port number"),
        ("example.com:+80".into(), "'+80' is not a port number"),
        (
            "example.com:80-".into(),
            "the port range '80-' lacks its last port",
        ),
        (
            "example.com:-80".into(),
            "the port range '-80' lacks its first port",
        ),
        (
            "example.com:80-90-100".into(),
            "'90-100' is not a port number",
        ),
        (
            "example.com:0-80".into(),
            "port 0 is not a destination port",
        ),
        ("x:".into(), "the port is missing after ':'"),
        (
            ":80".into(),
            "the address or name before the port is missing",
        ),
        (":".into(), "the port is missing after ':'"),
        ("1.2.3".into(), "neither a valid IP address nor a DNS name"),
        (
            "256.1.1.1".into(),
            "neither a valid IP address nor a DNS name",
        ),
        (
            "1.2.3.4.5".into(),
            "neither a valid IP address nor a DNS name",
        ),
        (
            "2001:db8:0:0:0:0:0:7:443".into(),
            "an IPv6 address with a port must be in brackets: [2001:db8:0:0:0:0:0:7]:443",
        ),
        (
            "2001:db8::/32:443".into(),
            "an IPv6 address with a port must be in brackets: [2001:db8::/32]:443",
        ),
        ("2001:db8::g".into(), "not a valid IPv6 address"),
        (
            "[1.2.3.4]:80".into(),
            "brackets are only for IPv6 addresses",
        ),
        (
            "[example.com]:80".into(),
            "brackets are only for IPv6 addresses",
        ),
        ("[]:80".into(), "brackets are only for IPv6 addresses"),
        ("[::1".into(), "'[' without a closing ']'"),
        ("::1]".into(), "']' without an opening '['"),
        ("[::1]80".into(), "unexpected '80' after ']'"),
        ("[2001:db8::7]:".into(), "the port is missing after ':'"),
        ("[2001:db8::7]:0".into(), "port 0 is not a destination port"),
        (
            "exa mple.com".into(),
            "cannot contain spaces or control characters",
        ),
        (
            "a\tb.com".into(),
            "cannot contain spaces or control characters",
        ),
        (
            "exam\u{7}ple.com".into(),
            "cannot contain spaces or control characters",
        ),
        ("ex_am!ple.com".into(), "'!' cannot appear in a DNS name"),
        ("exämple.com".into(), "'ä' cannot appear in a DNS name"),
        (
            "-bad.com".into(),
            "the label '-bad' starts or ends with '-'",
        ),
        (
            "bad-.com".into(),
            "the label 'bad-' starts or ends with '-'",
        ),
        ("example..com".into(), "empty label"),
        (".example.com".into(), "empty label"),
        ("example.com..".into(), "empty label"),
    ];
    v.push((format!("{label64}.com"), "is longer than 63 characters"));
    v.push((
        name254,
        "the name is 254 characters long; DNS names have at most 253",
    ));
    v
}

#[test]
fn malformed_rules_are_rejected_with_a_specific_reason() {
    let table = malformed_table();
    assert!(table.len() >= 20);
    for (rule, phrase) in &table {
        let e = err(rule);
        assert_eq!(&e.rule, rule, "error names the rule");
        let shown = e.to_string();
        let prefix = format!("invalid rule '{rule}': ");
        assert!(
            shown.starts_with(&prefix),
            "{rule:?}: display {shown:?} does not start with {prefix:?}"
        );
        assert_eq!(
            shown[prefix.len()..],
            e.why,
            "{rule:?}: display ends with why"
        );
        assert!(
            e.why.contains(phrase),
            "{rule:?}: reason {:?} does not contain {phrase:?}",
            e.why
        );
    }
}

#[test]
fn empty_and_blank_rules_are_rejected_as_empty() {
    for text in ["", " ", "   ", "\t\n"] {
        let e = err(text);
        assert_eq!(e.rule, "");
        assert_eq!(e.why, "the rule is empty");
        assert_eq!(e.to_string(), "invalid rule '': the rule is empty");
    }
}

#[test]
fn error_names_the_trimmed_rule() {
    let e = err("  10.0.0.1/24  ");
    assert_eq!(e.rule, "10.0.0.1/24");
    assert!(e.to_string().starts_with("invalid rule '10.0.0.1/24': "));
}

#[test]
fn rule_error_is_a_std_error() {
    let e: Box<dyn std::error::Error> = Box::new(err("*"));
    assert!(e.to_string().starts_with("invalid rule '*': "));
}

// ---------------------------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------------------------

#[test]
fn loopback_semantics_of_is_loopback() {
    for a in [
        "127.0.0.1",
        "127.0.0.2",
        "127.255.255.255",
        "0.0.0.0",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:127.1.2.3",
        "::ffff:0.0.0.0",
    ] {
        assert!(is_loopback(ip(a)), "{a} is loopback");
    }
    for a in [
        "128.0.0.1",
        "126.255.255.255",
        "0.0.0.1",
        "10.0.0.1",
        "::2",
        "fe80::1",
        "::ffff:128.0.0.1",
        "::127.0.0.1", // IPv4-compatible, not IPv4-mapped
    ] {
        assert!(!is_loopback(ip(a)), "{a} is not loopback");
    }
}

#[test]
fn loopback_rule_matches_loopback_destinations_on_its_ports() {
    let any = ok("loopback");
    for a in ["127.0.0.2", "0.0.0.0", "::", "::1", "::ffff:127.0.0.1"] {
        assert!(any.matches_addr(ip(a), 80), "{a}");
        assert!(any.matches_addr(ip(a), 0), "{a} port 0");
    }
    assert!(!any.matches_addr(ip("128.0.0.1"), 80));
    assert!(!any.matches_addr(ip("203.0.113.7"), 80));

    let pg = ok("loopback:5432");
    assert!(pg.matches_addr(ip("127.0.0.1"), 5432));
    assert!(pg.matches_addr(ip("::1"), 5432));
    assert!(!pg.matches_addr(ip("127.0.0.1"), 5433));
    assert!(!pg.matches_addr(ip("128.0.0.1"), 5432));
    assert!(!pg.matches_name("localhost"));
}

#[test]
fn ipv4_mapped_destinations_are_matched_as_ipv4() {
    let mapped = ip("::ffff:198.51.100.20");
    assert!(!ok("203.0.113.0/24").matches_addr(mapped, 80));
    assert!(ok("198.51.100.0/24").matches_addr(mapped, 80));
    assert!(ok("198.51.100.20").matches_addr(mapped, 80));
    assert!(ok("::ffff:198.51.100.20").matches_addr(mapped, 80));
    assert!(ok("::ffff:198.51.100.20").matches_addr(ip("198.51.100.20"), 80));
    // An IPv6 network never matches an IPv4(-mapped) destination, not even ::/0.
    assert!(!ok("::/0").matches_addr(mapped, 80));
    assert!(!ok("::/0").matches_addr(ip("198.51.100.20"), 80));
    assert!(ok("::/0").matches_addr(ip("2001:db8::1"), 80));
    // And an IPv4 network never matches a real IPv6 destination.
    assert!(!ok("0.0.0.0/0").matches_addr(ip("2001:db8::1"), 80));
    assert!(ok("0.0.0.0/0").matches_addr(mapped, 80));
}

#[test]
fn canonical_ip_unmaps_only_ipv4_mapped_addresses() {
    assert_eq!(
        canonical_ip(ip("::ffff:198.51.100.20")),
        ip("198.51.100.20")
    );
    assert_eq!(canonical_ip(ip("198.51.100.20")), ip("198.51.100.20"));
    assert_eq!(canonical_ip(ip("2001:db8::1")), ip("2001:db8::1"));
    assert_eq!(canonical_ip(ip("::198.51.100.20")), ip("::198.51.100.20"));
}

#[test]
fn cidr_rule_matches_its_network_boundaries() {
    let r = ok("203.0.113.0/24");
    assert!(r.matches_addr(ip("203.0.113.0"), 1));
    assert!(r.matches_addr(ip("203.0.113.255"), 65535));
    assert!(!r.matches_addr(ip("203.0.112.255"), 80));
    assert!(!r.matches_addr(ip("203.0.114.0"), 80));

    let r = ok("2001:db8::/32");
    assert!(r.matches_addr(ip("2001:db8::"), 443));
    assert!(r.matches_addr(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"), 443));
    assert!(!r.matches_addr(ip("2001:db9::"), 443));
    assert!(!r.matches_addr(ip("2001:db7:ffff::"), 443));

    let r = ok("0.0.0.0/0");
    assert!(r.matches_addr(ip("255.255.255.255"), 1));
    assert!(r.matches_addr(ip("0.0.0.0"), 1));

    let r = ok("10.0.0.0/31");
    assert!(r.matches_addr(ip("10.0.0.1"), 1));
    assert!(!r.matches_addr(ip("10.0.0.2"), 1));
}

#[test]
fn single_address_rule_matches_only_that_address() {
    let r = ok("203.0.113.7");
    assert!(r.matches_addr(ip("203.0.113.7"), 12345));
    assert!(!r.matches_addr(ip("203.0.113.8"), 12345));
    let r = ok("[2001:db8::7]:443");
    assert!(r.matches_addr(ip("2001:db8::7"), 443));
    assert!(!r.matches_addr(ip("2001:db8::8"), 443));
    assert!(!r.matches_addr(ip("2001:db8::7"), 444));
}

#[test]
fn port_range_edges_are_inclusive() {
    let r = ok("203.0.113.7:8000-8100");
    let a = ip("203.0.113.7");
    assert!(!r.matches_addr(a, 7999));
    assert!(r.matches_addr(a, 8000));
    assert!(r.matches_addr(a, 8050));
    assert!(r.matches_addr(a, 8100));
    assert!(!r.matches_addr(a, 8101));

    let r = ok("203.0.113.7:65535");
    assert!(r.matches_addr(a, 65535));
    assert!(!r.matches_addr(a, 65534));

    let r = ok("203.0.113.7:1");
    assert!(r.matches_addr(a, 1));
    assert!(!r.matches_addr(a, 0));
    assert!(!r.matches_addr(a, 2));

    // Without a port every port matches, 0 included (raw sockets report port 0).
    let r = ok("203.0.113.7");
    assert!(r.matches_addr(a, 0));
    assert!(r.matches_addr(a, 65535));
}

#[test]
fn port_range_contains_and_is_all() {
    assert!(PortRange::ALL.is_all());
    assert!(PortRange::ALL.contains(0));
    assert!(PortRange::ALL.contains(65535));
    let r = ports(10, 20);
    assert!(!r.is_all());
    assert!(!r.contains(9));
    assert!(r.contains(10));
    assert!(r.contains(20));
    assert!(!r.contains(21));
    assert!(!ports(1, 65535).is_all());
}

#[test]
fn exact_name_rule_matches_case_insensitively_with_optional_trailing_dot() {
    let r = ok("example.com");
    for n in ["example.com", "EXAMPLE.com", "Example.Com.", "example.com."] {
        assert!(r.matches_name(n), "{n}");
    }
    for n in [
        "a.example.com",
        "example.co",
        "example.com..",
        "xexample.com",
        "example.com.au",
        "",
        ".",
    ] {
        assert!(!r.matches_name(n), "{n}");
    }
    // Ports do not restrict lookups.
    assert!(ok("example.com:443").matches_name("example.com"));
}

#[test]
fn wildcard_rule_matches_names_strictly_below() {
    let r = ok("*.example.com");
    for n in [
        "a.example.com",
        "a.b.example.com",
        "A.Example.COM",
        "a.example.com.",
        "x-y_z.deep.er.example.com",
    ] {
        assert!(r.matches_name(n), "{n}");
    }
    for n in [
        "example.com",
        "example.com.",
        "badexample.com",
        "a.badexample.com",
        ".example.com",
        "a.example.com.evil",
        "a.example.co",
        "com",
        "",
    ] {
        assert!(!r.matches_name(n), "{n}");
    }
}

#[test]
fn name_rules_never_match_addresses_and_address_rules_never_match_names() {
    let name = ok("example.com");
    let below = ok("*.example.com");
    for a in ["127.0.0.1", "203.0.113.7", "::1", "2001:db8::7"] {
        assert!(!name.matches_addr(ip(a), 80));
        assert!(!below.matches_addr(ip(a), 80));
    }
    assert!(!ok("203.0.113.7").matches_name("203.0.113.7"));
    assert!(!ok("loopback").matches_name("loopback"));
    assert!(!ok("loopback").matches_name("localhost"));
}

// ---------------------------------------------------------------------------------------------
// Suggestions
// ---------------------------------------------------------------------------------------------

#[test]
fn suggest_rule_prefers_a_valid_host_name() {
    let a = Some(ip("203.0.113.7"));
    assert_eq!(
        suggest_rule(Some("Example.COM."), a, Some(443)),
        "example.com:443"
    );
    assert_eq!(suggest_rule(Some("example.com"), None, None), "example.com");
    assert_eq!(
        suggest_rule(Some("api.example.com"), None, Some(0)),
        "api.example.com"
    );
}

#[test]
fn suggest_rule_falls_back_to_the_address_for_unusable_host_names() {
    let a = Some(ip("203.0.113.7"));
    assert_eq!(
        suggest_rule(Some("bad name!"), a, Some(80)),
        "203.0.113.7:80"
    );
    assert_eq!(
        suggest_rule(Some("203.0.113.7"), a, Some(80)),
        "203.0.113.7:80"
    );
    assert_eq!(suggest_rule(Some(""), a, None), "203.0.113.7");
}

#[test]
fn suggest_rule_for_addresses() {
    assert_eq!(
        suggest_rule(None, Some(ip("203.0.113.7")), Some(80)),
        "203.0.113.7:80"
    );
    assert_eq!(
        suggest_rule(None, Some(ip("203.0.113.7")), None),
        "203.0.113.7"
    );
    assert_eq!(
        suggest_rule(None, Some(ip("198.51.100.1")), Some(0)),
        "198.51.100.1"
    );
    assert_eq!(
        suggest_rule(None, Some(ip("::ffff:203.0.113.7")), Some(80)),
        "203.0.113.7:80"
    );
    assert_eq!(
        suggest_rule(None, Some(ip("2001:db8::7")), Some(443)),
        "[2001:db8::7]:443"
    );
    assert_eq!(
        suggest_rule(None, Some(ip("2001:db8::7")), None),
        "2001:db8::7"
    );
}

#[test]
fn suggest_rule_uses_loopback_for_local_destinations() {
    assert_eq!(
        suggest_rule(None, Some(ip("127.0.0.2")), Some(5432)),
        "loopback:5432"
    );
    assert_eq!(suggest_rule(None, Some(ip("::1")), None), "loopback");
    assert_eq!(
        suggest_rule(None, Some(ip("::ffff:127.0.0.1")), Some(80)),
        "loopback:80"
    );
    assert_eq!(
        suggest_rule(None, Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), Some(80)),
        "loopback:80"
    );
    assert_eq!(
        suggest_rule(None, Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)), Some(80)),
        "loopback:80"
    );
}

#[test]
fn suggest_rule_without_anything_usable() {
    assert_eq!(suggest_rule(None, None, None), "");
    assert_eq!(suggest_rule(None, None, Some(80)), "");
}

#[test]
fn suggested_rules_parse_and_allow_the_attempt() {
    let cases: [(Option<&str>, Option<IpAddr>, Option<u16>); 6] = [
        (None, Some(ip("203.0.113.7")), Some(80)),
        (None, Some(ip("2001:db8::7")), Some(443)),
        (None, Some(ip("2001:db8::7")), None),
        (None, Some(ip("::ffff:198.51.100.20")), Some(53)),
        (None, Some(ip("127.0.0.9")), Some(8080)),
        (Some("bad host"), Some(ip("198.51.100.20")), Some(0)),
    ];
    for (host, addr, port) in cases {
        let text = suggest_rule(host, addr, port);
        let rule = ok(&text);
        assert!(
            rule.matches_addr(addr.unwrap(), port.unwrap_or(1)),
            "{text} should allow {addr:?}:{port:?}"
        );
    }
    let rule = ok(&suggest_rule(Some("Api.Example.com."), None, Some(443)));
    assert!(rule.matches_name("Api.Example.com."));
    assert_eq!(rule.ports, ports(443, 443));
}
