//! The rule grammar (CONTRACT "Rules"): parsing, validation and matching.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An inclusive port range. A rule without a port matches every port, 0 included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ALL: PortRange = PortRange { lo: 0, hi: 65535 };

    pub fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }

    pub fn is_all(self) -> bool {
        self == Self::ALL
    }
}

/// What a rule matches, apart from ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// 127.0.0.0/8, ::1, their IPv4-mapped forms, 0.0.0.0 and ::.
    Loopback,
    /// `loopback:own`: a loopback address and port where a process of this run listens (TCP)
    /// or is bound (UDP) at the moment of the attempt. Decided by the library, which knows
    /// the run's listeners; it never matches statically.
    LoopbackOwn,
    /// Exactly this DNS name (stored lower-case, without a trailing dot).
    Name(String),
    /// Any name strictly below this suffix (the rule `*.example.com` stores `example.com`).
    Below(String),
    /// An address or network. IPv4-mapped IPv6 rules are stored as IPv4.
    Net { addr: IpAddr, prefix: u8 },
}

/// One parsed `--allow` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The rule as the user wrote it (trimmed); reports quote it verbatim.
    pub text: String,
    pub target: Target,
    pub ports: PortRange,
}

/// Why a rule was refused. Displays as `invalid rule 'TEXT': WHY`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    pub rule: String,
    pub why: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid rule '{}': {}", self.rule, self.why)
    }
}

impl std::error::Error for RuleError {}

pub(crate) const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Parses one rule. Leading and trailing white space is ignored; everything else must be exact.
pub fn parse_rule(input: &str) -> Result<Rule, RuleError> {
    let text = input.trim();
    let fail = |why: String| RuleError {
        rule: text.to_string(),
        why,
    };
    if text.is_empty() {
        return Err(fail("the rule is empty".into()));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(fail(
            "a rule cannot contain spaces or control characters".into(),
        ));
    }
    let (host, ports) = split_host_port(text).map_err(fail)?;
    if host.eq_ignore_ascii_case("loopback") && ports.is_some_and(|p| p.eq_ignore_ascii_case("own"))
    {
        return Ok(Rule {
            text: text.to_string(),
            target: Target::LoopbackOwn,
            ports: PortRange::ALL,
        });
    }
    let ports = match ports {
        None => PortRange::ALL,
        Some(spec) => parse_ports(spec).map_err(fail)?,
    };
    let target = parse_target(host, text).map_err(fail)?;
    Ok(Rule {
        text: text.to_string(),
        target,
        ports,
    })
}

/// Splits `HOST[:PORTS]` and `[V6]:PORTS`; a bare IPv6 address has no port part.
fn split_host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let Some(close) = rest.find(']') else {
            return Err("'[' without a closing ']'".into());
        };
        let inner = &rest[..close];
        let after = &rest[close + 1..];
        if !inner.contains(':') {
            return Err("brackets are only for IPv6 addresses, as in [2001:db8::7]:443".into());
        }
        return match after {
            "" => Ok((inner, None)),
            _ => match after.strip_prefix(':') {
                Some(spec) => Ok((inner, Some(spec))),
                None => Err(format!(
                    "unexpected '{after}' after ']'; write [ADDRESS]:PORT"
                )),
            },
        };
    }
    if text.contains(']') {
        return Err("']' without an opening '['".into());
    }
    match text.matches(':').count() {
        0 => Ok((text, None)),
        1 => {
            let (host, spec) = text.split_once(':').unwrap_or((text, ""));
            Ok((host, Some(spec)))
        }
        _ => Ok((text, None)), // IPv6; parse_target explains a misplaced port
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    if s.is_empty() {
        return Err("the port is missing after ':'".into());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{s}' is not a port number"));
    }
    match s.parse::<u32>() {
        Ok(0) => Err("port 0 is not a destination port; ports are 1-65535".into()),
        Ok(n) if n <= 65535 => Ok(n as u16),
        _ => Err(format!("port {s} is out of range; ports are 1-65535")),
    }
}

fn parse_ports(spec: &str) -> Result<PortRange, String> {
    match spec.split_once('-') {
        None => {
            let p = parse_port(spec)?;
            Ok(PortRange { lo: p, hi: p })
        }
        Some((lo, hi)) => {
            if lo.is_empty() || hi.is_empty() {
                return Err(format!(
                    "the port range '{spec}' lacks its {} port; write LOW-HIGH",
                    if lo.is_empty() { "first" } else { "last" }
                ));
            }
            let (lo, hi) = (parse_port(lo)?, parse_port(hi)?);
            if lo > hi {
                return Err(format!("port range {lo}-{hi} is reversed; write {hi}-{lo}"));
            }
            Ok(PortRange { lo, hi })
        }
    }
}

fn parse_target(host: &str, whole: &str) -> Result<Target, String> {
    if host.is_empty() {
        return Err("the address or name before the port is missing".into());
    }
    if host.eq_ignore_ascii_case("loopback") {
        return Ok(Target::Loopback);
    }
    if let Some((addr, prefix)) = host.split_once('/') {
        if prefix.contains(':') {
            return Err(ipv6_hint(whole)); // e.g. 2001:db8::/32:443
        }
        return parse_net(addr, prefix);
    }
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return Ok(Target::Net {
            addr: IpAddr::V4(v4),
            prefix: 32,
        });
    }
    if host.contains(':') {
        return match host.parse::<Ipv6Addr>() {
            Ok(v6) => Ok(canonical_net(IpAddr::V6(v6), 128)),
            Err(_) => Err(ipv6_hint(whole)),
        };
    }
    parse_name(host)
}

/// Explains a string with colons that is not an IPv6 address.
fn ipv6_hint(whole: &str) -> String {
    if let Some((addr, port)) = whole.rsplit_once(':') {
        let addr_ok = addr.parse::<Ipv6Addr>().is_ok()
            || addr
                .split_once('/')
                .is_some_and(|(a, _)| a.parse::<Ipv6Addr>().is_ok());
        if addr_ok && parse_ports(port).is_ok() {
            return format!("an IPv6 address with a port must be in brackets: [{addr}]:{port}");
        }
    }
    "not a valid IPv6 address".into()
}

fn parse_net(addr: &str, prefix: &str) -> Result<Target, String> {
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 3 {
        return Err(format!("'/{prefix}' is not a prefix length"));
    }
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| format!("'/{prefix}' is not a prefix length"))?;
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("'{addr}' is not an IPv4 or IPv6 address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(format!(
            "prefix /{prefix} is longer than an {} address (/{max})",
            if ip.is_ipv4() { "IPv4" } else { "IPv6" }
        ));
    }
    let network = mask(ip, prefix);
    if network != ip {
        return Err(format!(
            "{addr}/{prefix} has host bits set; the network is {network}/{prefix}"
        ));
    }
    Ok(canonical_net(ip, prefix))
}

/// IPv4-mapped IPv6 rules (`::ffff:a.b.c.d`, `::ffff:0:0/96` and longer) become IPv4 rules.
fn canonical_net(ip: IpAddr, prefix: u8) -> Target {
    if let IpAddr::V6(v6) = ip {
        if let Some(v4) = v6.to_ipv4_mapped() {
            if prefix >= 96 {
                return Target::Net {
                    addr: IpAddr::V4(v4),
                    prefix: prefix - 96,
                };
            }
        }
    }
    Target::Net { addr: ip, prefix }
}

/// Keeps the first `prefix` bits of `ip`.
pub fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

fn parse_name(host: &str) -> Result<Target, String> {
    let (below, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    if name.contains('*') {
        return Err("'*' may only stand alone as the first label, as in *.example.com".into());
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err(if below {
            "'*.' needs a domain after it, as in *.example.com".into()
        } else {
            "the name is empty".into()
        });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the name is {} characters long; DNS names have at most {MAX_NAME_LEN}",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("the name has an empty label ('..' or a leading '.')".into());
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!(
                "the label '{label}' is longer than {MAX_LABEL_LEN} characters"
            ));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "'{bad}' cannot appear in a DNS name (letters, digits, '-' and '_' only)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("the label '{label}' starts or ends with '-'"));
        }
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("neither a valid IP address nor a DNS name (its last label is numeric)".into());
    }
    let name = name.to_ascii_lowercase();
    Ok(if below {
        Target::Below(name)
    } else {
        Target::Name(name)
    })
}

/// True for destinations that stay on this host: 127.0.0.0/8, ::1, 0.0.0.0, :: and the
/// IPv4-mapped forms of those.
pub fn is_loopback(ip: IpAddr) -> bool {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified(),
    }
}

/// Maps `::ffff:a.b.c.d` to `a.b.c.d`; every other address is returned as it is.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// True when `name` (any case, one trailing dot allowed) is matched by an exact or below rule
/// whose stored form is `rule_name` (lower-case, no trailing dot).
pub fn name_matches(below: bool, rule_name: &[u8], name: &[u8]) -> bool {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if below {
        if name.len() <= rule_name.len() + 1 {
            return false;
        }
        let split = name.len() - rule_name.len();
        name[split - 1] == b'.' && name[split..].eq_ignore_ascii_case(rule_name)
    } else {
        name.eq_ignore_ascii_case(rule_name)
    }
}

/// True when the canonical address `ip` lies in `net/prefix` (both of the same family).
pub fn net_contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    match (net, canonical_ip(ip)) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
            mask(canonical_ip(ip), prefix) == net
        }
        _ => false,
    }
}

impl Rule {
    /// True when this rule lets a connection or datagram go to `ip:port`. Name rules never
    /// match an address directly: they allow the addresses their lookups return.
    pub fn matches_addr(&self, ip: IpAddr, port: u16) -> bool {
        self.ports.contains(port)
            && match &self.target {
                Target::Loopback => is_loopback(ip),
                Target::Net { addr, prefix } => net_contains(*addr, *prefix, ip),
                Target::Name(_) | Target::Below(_) | Target::LoopbackOwn => false,
            }
    }

    /// True when this rule lets `name` be looked up.
    pub fn matches_name(&self, name: &str) -> bool {
        match &self.target {
            Target::Name(n) => name_matches(false, n.as_bytes(), name.as_bytes()),
            Target::Below(n) => name_matches(true, n.as_bytes(), name.as_bytes()),
            _ => false,
        }
    }
}

/// The `--allow` rule that would let this attempt through, for denial messages.
/// `port` is `None` for a lookup, which has no port.
pub fn suggest_rule(host: Option<&str>, ip: Option<IpAddr>, port: Option<u16>) -> String {
    let port_suffix = match port {
        Some(p) if p != 0 => format!(":{p}"),
        _ => String::new(),
    };
    if let Some(h) = host {
        let h = h.strip_suffix('.').unwrap_or(h);
        if matches!(parse_name(h), Ok(Target::Name(_))) {
            return format!("{}{port_suffix}", h.to_ascii_lowercase());
        }
    }
    match ip.map(canonical_ip) {
        Some(ip) if is_loopback(ip) => format!("loopback{port_suffix}"),
        Some(IpAddr::V6(v6)) if !port_suffix.is_empty() => format!("[{v6}]{port_suffix}"),
        Some(ip) => format!("{ip}{port_suffix}"),
        None => host.unwrap_or("").to_string(),
    }
}

/// The addresses `loopback` matches, as networks: a network rule within one of these lies
/// within `loopback`.
fn loopback_nets() -> [(IpAddr, u8); 4] {
    [
        (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
        (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 32),
        (IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
        (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128),
    ]
}

/// True for the names that only ever mean this host (`localhost`, `*.localhost`, RFC 6761):
/// a scope rule naming one is a loopback rule.
pub fn is_localhost_name(name: &str) -> bool {
    name_matches(false, b"localhost", name.as_bytes())
        || name_matches(true, b"localhost", name.as_bytes())
}

/// True when the network `inner/q` lies within `outer/p` (same family, at least as long).
fn net_within(inner: IpAddr, q: u8, outer: IpAddr, p: u8) -> bool {
    q >= p && net_contains(outer, p, inner)
}

impl Rule {
    /// True when everything `other` allows, this rule allows too: `127.0.0.1:8080` lies
    /// within `loopback`, `a.example.com` within `*.example.com`, a /28 within its /24,
    /// `host:443` within `host:1-1024`. A name rule never lies within an address rule, nor an
    /// address rule within a name rule (what a name resolves to is not known in advance),
    /// except `localhost` names, which lie within `loopback`.
    pub fn contains(&self, other: &Rule) -> bool {
        if other.ports.lo < self.ports.lo || other.ports.hi > self.ports.hi {
            return false;
        }
        match (&self.target, &other.target) {
            (Target::Loopback, Target::Loopback) => true,
            (Target::Loopback | Target::LoopbackOwn, Target::LoopbackOwn) => true,
            (Target::Loopback, Target::Net { addr, prefix }) => loopback_nets()
                .iter()
                .any(|&(net, p)| net_within(*addr, *prefix, net, p)),
            (Target::Loopback, Target::Name(n) | Target::Below(n)) => is_localhost_name(n),
            (Target::Net { addr, prefix }, Target::Net { addr: a, prefix: q }) => {
                net_within(*a, *q, *addr, *prefix)
            }
            (Target::Name(n), Target::Name(m)) => n == m,
            (Target::Below(n), Target::Name(m)) => name_matches(true, n.as_bytes(), m.as_bytes()),
            (Target::Below(n), Target::Below(m)) => {
                n == m || name_matches(true, n.as_bytes(), m.as_bytes())
            }
            _ => false,
        }
    }
}

/// The first rule of `bound` that contains `rule`, if any.
pub fn contained_in(bound: &[Rule], rule: &Rule) -> Option<usize> {
    bound.iter().position(|b| b.contains(rule))
}

#[cfg(test)]
mod containment_tests {
    use super::*;

    fn r(text: &str) -> Rule {
        parse_rule(text).expect(text)
    }

    fn within(inner: &str, outer: &str) -> bool {
        r(outer).contains(&r(inner))
    }

    #[test]
    fn loopback_holds_its_addresses_and_names() {
        for inner in [
            "127.0.0.1:8080",
            "127.0.0.0/8",
            "127.1.2.0/24:1-100",
            "::1",
            "[::1]:5432",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.1",
            "localhost",
            "localhost:80",
            "db.localhost",
            "*.localhost",
            "loopback:22",
        ] {
            assert!(within(inner, "loopback"), "{inner}");
        }
        for outer in ["127.0.0.0/8", "127.0.0.1"] {
            assert!(!within("loopback", outer), "{outer}");
        }
        for inner in [
            "126.0.0.0/7",
            "203.0.113.7",
            "::2",
            "0.0.0.0/0",
            "example.com",
            "*.example.com",
        ] {
            assert!(!within(inner, "loopback"), "{inner}");
        }
    }

    #[test]
    fn names_lie_below_wildcards_only() {
        assert!(within("a.example.com", "*.example.com"));
        assert!(within("b.a.example.com:443", "*.example.com"));
        assert!(within("*.a.example.com", "*.example.com"));
        assert!(within("*.example.com", "*.example.com"));
        assert!(within("EXAMPLE.com.", "example.com"));
        assert!(!within("example.com", "*.example.com"));
        assert!(!within("*.example.com", "example.com"));
        assert!(!within("a.example.com", "example.com"));
        assert!(!within("a.example.org", "*.example.com"));
        assert!(!within("aexample.com", "*.example.com"));
        assert!(!within("203.0.113.7", "example.com"));
        assert!(!within("example.com", "203.0.113.0/24"));
    }

    #[test]
    fn networks_hold_longer_networks_of_the_same_family() {
        assert!(within("203.0.113.16/28", "203.0.113.0/24"));
        assert!(within("203.0.113.7", "203.0.113.0/24"));
        assert!(within("203.0.113.0/24", "203.0.113.0/24"));
        assert!(within("203.0.113.7", "0.0.0.0/0"));
        assert!(within("[2001:db8::7]:443", "2001:db8::/32"));
        assert!(within("::ffff:203.0.113.7", "203.0.113.0/24"));
        assert!(!within("203.0.112.0/23", "203.0.113.0/24"));
        assert!(!within("198.51.100.0/28", "203.0.113.0/24"));
        assert!(!within("2001:db8::7", "0.0.0.0/0"));
        assert!(!within("203.0.113.7", "::/0"));
    }

    #[test]
    fn ports_must_lie_within_the_outer_ports() {
        assert!(within("203.0.113.7:443", "203.0.113.7"));
        assert!(within("203.0.113.7:443", "203.0.113.7:1-1024"));
        assert!(within("203.0.113.7:80-90", "203.0.113.7:80-90"));
        assert!(!within("203.0.113.7", "203.0.113.7:443"));
        assert!(!within("203.0.113.7:80-1025", "203.0.113.7:1-1024"));
        assert!(!within("loopback:8080", "loopback:80"));
        assert!(!within("localhost", "loopback:80"));
    }

    #[test]
    fn the_first_containing_rule_of_a_bound_is_found() {
        let bound = [r("*.example.com"), r("loopback"), r("203.0.113.0/24")];
        assert_eq!(contained_in(&bound, &r("127.0.0.1:8080")), Some(1));
        assert_eq!(contained_in(&bound, &r("a.example.com")), Some(0));
        assert_eq!(contained_in(&bound, &r("203.0.113.16/28")), Some(2));
        assert_eq!(contained_in(&bound, &r("198.51.100.20")), None);
        assert_eq!(contained_in(&[], &r("loopback")), None);
    }
}

#[cfg(test)]
mod loopback_own_tests {
    use super::*;

    #[test]
    fn loopback_own_parses_and_never_matches_statically() {
        for text in ["loopback:own", "LOOPBACK:OWN", " loopback:own "] {
            let r = parse_rule(text).unwrap();
            assert_eq!((r.target, r.ports), (Target::LoopbackOwn, PortRange::ALL));
        }
        let own = parse_rule("loopback:own").unwrap();
        assert!(!own.matches_addr("127.0.0.1".parse().unwrap(), 80));
        assert!(parse_rule("loopback:owner").is_err());
        assert!(parse_rule("localhost:own").is_err());
        // Within loopback and itself; nothing else lies within it.
        assert!(parse_rule("loopback").unwrap().contains(&own));
        assert!(own.contains(&own));
        assert!(!own.contains(&parse_rule("127.0.0.1:8080").unwrap()));
        assert!(!own.contains(&parse_rule("loopback").unwrap()));
        assert!(!parse_rule("127.0.0.0/8").unwrap().contains(&own));
    }
}
