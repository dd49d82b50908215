//! The policy's binary form: written once by the launcher into a sealed memfd, read in place by
//! every guarded process. Reading never allocates, so it is safe before `main`, after `fork` and
//! in a signal handler.
//!
//! Layout (little-endian):
//! ```text
//! header  96 bytes  magic[8] version:u32 mode:u32 launcher_pid:u32 rule_count:u32
//!                   total_len:u32 flags:u32 checksum:u64 counters_fd:i32 index_off:u32
//!                   counters_ino:u64 counters_slots:u64 deny_as:u64 event_key[16]
//!                   grantable_off:u32 grantable_len:u32
//! rules   48 bytes each
//!                   kind:u8 prefix:u8 port_lo:u16 port_hi:u16 pad:u16 addr[16]
//!                   text_off:u32 text_len:u32 name_off:u32 name_len:u32 reserved[8]
//! strings           rule texts and lower-case names, offsets relative to the strings area,
//!                   which ends where the index starts
//! index   at index_off, to grantable_off; pad and reserved are zero
//!         24 bytes  loopback_count:u32 name_count:u32 below_count:u32
//!                   v4_group_count:u32 v6_group_count:u32 reserved:u32
//!         groups    12 bytes each, the IPv4 groups then the IPv6 groups
//!                   prefix:u8 pad[3] len:u32 first_rule:u32
//!         slots     rule:u32 each: the loopback rules, then the exact-name rules, then the
//!                   below rules
//!         v4        8 bytes each, the IPv4 groups' entries, group after group: net:u32 rule:u32
//!         v6        20 bytes each, the IPv6 groups' entries likewise: net:u128 rule:u32
//! grantable at grantable_off, grantable_len bytes, to the end of the policy: the texts of the
//!         `--grantable` rules, UTF-8, each ended by a newline
//! ```
//! The checksum (`checksum`) is a word-wise 64-bit hash of the whole policy with the checksum
//! field zeroed.
//!
//! `deny_as` (version 3) says how a refused call looks to the program: 0 `eacces`, 1
//! `offline`; any other value is refused. It is a field of the sealed policy, not an
//! environment variable, so that nothing a guarded program can set changes it.
//!
//! `event_key` (version 4) is the run's event key: 16 random bytes the launcher draws for each
//! run. Every event a guarded process sends starts with it (docs/design.md, *The event
//! channel's wire format*), and the launcher drops datagrams that do not: only a process that
//! holds this sealed policy can write to the run's report. An all-zero key means none.
//!
//! The grantable rules (version 4, `--grantable`) are what code inside the run may grant
//! itself in a scope (docs/scopes.md). They are kept as text: only scope entry reads them
//! (parsing them there, in ordinary code), never the decision path. In reports they are
//! numbered after the run's rules: grantable rule `g` is rule `rule_count + g`.
//!
//! The index lets matching cost O(groups · log n) instead of a scan of every rule (up to 10,000),
//! and still return the first matching rule in the user's order. Every rule is in it exactly
//! once. Loopback slots are in rule order. Exact-name and below slots are sorted by (stored name,
//! rule index), so a case-folded binary search for the query (or, for below rules, for each
//! suffix of it after a dot, as long as some below name) lands on the lowest matching rule
//! first. A group holds the network rules of one family and prefix length, its entries sorted by
//! (network, rule index) with the network copied from the rule (`net` is the address as a
//! number): the query masked to the group's prefix is found by binary search, and entries of
//! that network are walked in rule order until one allows the port. The groups of a family are
//! ordered by their lowest rule index (`first_rule`), so a lookup stops at the first group that
//! cannot beat the rule already found. For given rules only one index is valid:
//! `PolicyView::parse` checks it all once, so lookups cannot fail.

use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::rule::{
    canonical_ip, is_loopback, name_matches, net_contains, PortRange, Rule, Target, MAX_NAME_LEN,
};

pub const MAGIC: [u8; 8] = *b"EGRSPOL\x01";
/// Version 2 added the rule index; version 3 the `deny_as` field (the header grew by 8 bytes);
/// version 4 the event key (16 bytes more) and the grantable rules (8 more header bytes and
/// a section at the end).
pub const VERSION: u32 = 4;
pub const HEADER_LEN: usize = 96;
/// Length of the run's event key (`Settings::event_key`).
pub const EVENT_KEY_LEN: usize = 16;
pub const RULE_LEN: usize = 48;
pub const INDEX_HEADER_LEN: usize = 24;
pub const GROUP_LEN: usize = 12;
pub const SLOT_LEN: usize = 4;
/// Far above any real allowlist; bounds what a corrupt header can make a reader walk.
pub const MAX_RULES: usize = 1 << 20;
pub const MAX_POLICY_LEN: usize = 256 << 20;

const CHECKSUM_AT: usize = 32;
const COUNTERS_FD_AT: usize = 40;
const INDEX_OFF_AT: usize = 44;
const COUNTERS_INO_AT: usize = 48;
const COUNTERS_SLOTS_AT: usize = 56;
const DENY_AS_AT: usize = 64;
const EVENT_KEY_AT: usize = 72;
const GRANTABLE_OFF_AT: usize = 88;
const GRANTABLE_LEN_AT: usize = 92;
/// Longest grantable section accepted.
pub const MAX_GRANTABLE_LEN: usize = 1 << 20;

const KIND_LOOPBACK: u8 = 0;
const KIND_NET4: u8 = 1;
const KIND_NET6: u8 = 2;
const KIND_NAME: u8 = 3;
const KIND_BELOW: u8 = 4;
/// `loopback:own` (version 4): in the loopback section of the index, never matched there.
const KIND_LOOPBACK_OWN: u8 = 5;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Block,
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Block => "block",
            Mode::Audit => "audit",
        }
    }
}

/// How a refused call looks to the program (`--deny-as`). Only the errno and resolver codes
/// differ: the decision, the report and the exit status are the same either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DenyAs {
    /// `EACCES` for connects and sends, `EAI_FAIL` for lookups: plainly a refusal, and not
    /// retried by clients.
    #[default]
    Eacces,
    /// What a host without a network answers (`ENETUNREACH`, `EAI_AGAIN`, `TRY_AGAIN`), so
    /// that a suite that skips its network tests offline skips them here too.
    Offline,
}

impl DenyAs {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyAs::Eacces => "eacces",
            DenyAs::Offline => "offline",
        }
    }

    /// The errno a refused connect or send fails with (Linux numbers): the one mapping the
    /// library's hooks and the kernel layer's supervisor both use.
    pub fn refused_errno(self) -> i32 {
        const EACCES: i32 = 13;
        const ENETUNREACH: i32 = 101;
        match self {
            DenyAs::Eacces => EACCES,
            DenyAs::Offline => ENETUNREACH,
        }
    }

    fn to_wire(self) -> u64 {
        match self {
            DenyAs::Eacces => 0,
            DenyAs::Offline => 1,
        }
    }

    fn from_wire(v: u64) -> Option<DenyAs> {
        match v {
            0 => Some(DenyAs::Eacces),
            1 => Some(DenyAs::Offline),
            _ => None,
        }
    }
}

/// Why a byte string is not a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    TooShort,
    BadMagic,
    BadVersion,
    BadLength,
    BadChecksum,
    BadMode,
    TooManyRules,
    BadRule,
    BadIndex,
    BadDenyAs,
    BadGrantable,
}

impl DecodeError {
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeError::TooShort => "policy is truncated",
            DecodeError::BadMagic => "policy has the wrong magic number",
            DecodeError::BadVersion => "policy has an unknown version",
            DecodeError::BadLength => "policy length does not match its header",
            DecodeError::BadChecksum => "policy checksum does not match",
            DecodeError::BadMode => "policy has an unknown mode",
            DecodeError::TooManyRules => "policy declares too many rules",
            DecodeError::BadRule => "policy holds a malformed rule",
            DecodeError::BadIndex => "policy has a malformed rule index",
            DecodeError::BadDenyAs => "policy has an unknown deny-as setting",
            DecodeError::BadGrantable => "policy has malformed grantable rules",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for DecodeError {}

/// The policy's checksum: a multiply-xorshift hash of its little-endian 8-byte words (the last
/// one zero-padded), seeded with the length, with the checksum field read as zero. Word-wise
/// because every guarded process checks it at start: a byte-wise hash of a 10,000-rule policy
/// (~0.8 MB) cost most of a millisecond per exec. Any single changed word changes the result
/// (each step is a bijection of the state for a given word).
pub fn checksum(bytes: &[u8]) -> u64 {
    let mix = |h: u64, w: u64| {
        let h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    };
    let mut h = 0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for (i, word) in (&mut words).enumerate() {
        let w = if i == CHECKSUM_AT / 8 {
            0
        } else {
            let mut b = [0u8; 8];
            b.copy_from_slice(word);
            u64::from_le_bytes(b)
        };
        h = mix(h, w);
    }
    let tail = words
        .remainder()
        .iter()
        .enumerate()
        .fold(0u64, |w, (i, &b)| w | u64::from(b) << (8 * i));
    mix(h, tail)
}

/// Stores the checksum of `bytes` into its checksum field (for encoders and tests that edit
/// an encoded policy). Policies shorter than a header are left alone.
pub fn reseal(bytes: &mut [u8]) {
    if bytes.len() >= HEADER_LEN {
        let sum = checksum(bytes);
        bytes[CHECKSUM_AT..CHECKSUM_AT + 8].copy_from_slice(&sum.to_le_bytes());
    }
}

/// Policy flag: run programs the library cannot enter (`--allow-unguarded`).
pub const FLAG_ALLOW_UNGUARDED: u32 = 1;
/// `--seccomp`: every process is under the kernel layer; the library maps its system call stub.
pub const FLAG_SECCOMP: u32 = 2;

/// Where the launcher's shared attempt counters are: a memfd every guarded process maps, so
/// that repeated identical attempts are counted without a system call and survive `SIGKILL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters {
    pub fd: i32,
    pub ino: u64,
    /// Number of 8-byte slots; slot 0 holds the next free slot index.
    pub slots: u64,
}

/// Encodes a policy with no counters and the default `deny_as`. Rules keep their order: the
/// first matching rule is the one reported.
pub fn encode(mode: Mode, launcher_pid: u32, rules: &[Rule]) -> Vec<u8> {
    encode_full(
        Settings {
            mode,
            ..Settings::default()
        },
        launcher_pid,
        rules,
    )
}

/// Everything in a policy's header that the launcher chooses, besides its own pid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    pub deny_as: DenyAs,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// The shared counters; none: every attempt is sent as an event.
    pub counters: Option<Counters>,
    /// The run's event key: what every event must start with (all zero: none).
    pub event_key: [u8; EVENT_KEY_LEN],
}

/// Encodes a policy with every header setting.
pub fn encode_full(settings: Settings, launcher_pid: u32, rules: &[Rule]) -> Vec<u8> {
    encode_with_grantable(settings, launcher_pid, rules, &[])
}

/// Encodes a policy with every header setting and the rules code in the run may grant itself
/// in a scope (`--grantable`).
pub fn encode_with_grantable(
    settings: Settings,
    launcher_pid: u32,
    rules: &[Rule],
    grantable: &[Rule],
) -> Vec<u8> {
    let Settings {
        mode,
        deny_as,
        flags,
        counters,
        event_key,
    } = settings;
    let mut strings = Vec::new();
    let mut records = Vec::with_capacity(rules.len() * RULE_LEN);
    for rule in rules {
        let mut rec = [0u8; RULE_LEN];
        let (kind, prefix, addr, name): (u8, u8, [u8; 16], &str) = match &rule.target {
            Target::Loopback => (KIND_LOOPBACK, 0, [0; 16], ""),
            Target::LoopbackOwn => (KIND_LOOPBACK_OWN, 0, [0; 16], ""),
            Target::Net {
                addr: IpAddr::V4(v4),
                prefix,
            } => {
                let mut a = [0; 16];
                a[..4].copy_from_slice(&v4.octets());
                (KIND_NET4, *prefix, a, "")
            }
            Target::Net {
                addr: IpAddr::V6(v6),
                prefix,
            } => (KIND_NET6, *prefix, v6.octets(), ""),
            Target::Name(n) => (KIND_NAME, 0, [0; 16], n.as_str()),
            Target::Below(n) => (KIND_BELOW, 0, [0; 16], n.as_str()),
        };
        rec[0] = kind;
        rec[1] = prefix;
        rec[2..4].copy_from_slice(&rule.ports.lo.to_le_bytes());
        rec[4..6].copy_from_slice(&rule.ports.hi.to_le_bytes());
        rec[8..24].copy_from_slice(&addr);
        let text_off = strings.len() as u32;
        strings.extend_from_slice(rule.text.as_bytes());
        let name_off = strings.len() as u32;
        strings.extend_from_slice(name.as_bytes());
        rec[24..28].copy_from_slice(&text_off.to_le_bytes());
        rec[28..32].copy_from_slice(&(rule.text.len() as u32).to_le_bytes());
        rec[32..36].copy_from_slice(&name_off.to_le_bytes());
        rec[36..40].copy_from_slice(&(name.len() as u32).to_le_bytes());
        records.extend_from_slice(&rec);
    }
    let index = encode_index(rules);
    let index_off = HEADER_LEN + records.len() + strings.len();
    let grantable_text: Vec<u8> = grantable
        .iter()
        .flat_map(|r| r.text.bytes().chain(std::iter::once(b'\n')))
        .collect();
    let grantable_off = index_off + index.len();
    let total = grantable_off + grantable_text.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(mode as u32).to_le_bytes());
    out.extend_from_slice(&launcher_pid.to_le_bytes());
    out.extend_from_slice(&(rules.len() as u32).to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.resize(HEADER_LEN, 0);
    out[INDEX_OFF_AT..INDEX_OFF_AT + 4].copy_from_slice(&(index_off as u32).to_le_bytes());
    if let Some(c) = counters {
        out[COUNTERS_FD_AT..COUNTERS_FD_AT + 4].copy_from_slice(&c.fd.to_le_bytes());
        out[COUNTERS_INO_AT..COUNTERS_INO_AT + 8].copy_from_slice(&c.ino.to_le_bytes());
        out[COUNTERS_SLOTS_AT..COUNTERS_SLOTS_AT + 8].copy_from_slice(&c.slots.to_le_bytes());
    }
    out[DENY_AS_AT..DENY_AS_AT + 8].copy_from_slice(&deny_as.to_wire().to_le_bytes());
    out[EVENT_KEY_AT..EVENT_KEY_AT + EVENT_KEY_LEN].copy_from_slice(&event_key);
    out[GRANTABLE_OFF_AT..GRANTABLE_OFF_AT + 4]
        .copy_from_slice(&(grantable_off as u32).to_le_bytes());
    out[GRANTABLE_LEN_AT..GRANTABLE_LEN_AT + 4]
        .copy_from_slice(&(grantable_text.len() as u32).to_le_bytes());
    out.extend_from_slice(&records);
    out.extend_from_slice(&strings);
    out.extend_from_slice(&index);
    out.extend_from_slice(&grantable_text);
    reseal(&mut out);
    out
}

/// The network rules of one family and prefix length: (network, rule index).
struct Group<K> {
    prefix: u8,
    first_rule: u32,
    entries: Vec<(K, u32)>,
}

fn add_to_group<K>(groups: &mut Vec<Group<K>>, prefix: u8, net: K, rule: u32) {
    match groups.iter_mut().find(|g| g.prefix == prefix) {
        Some(g) => g.entries.push((net, rule)),
        // Rules arrive in order, so groups are created in the order of their lowest rule.
        None => groups.push(Group {
            prefix,
            first_rule: rule,
            entries: vec![(net, rule)],
        }),
    }
}

/// The index section (see the module documentation).
fn encode_index(rules: &[Rule]) -> Vec<u8> {
    let mut loopback = Vec::new();
    let mut names: Vec<(&[u8], u32)> = Vec::new();
    let mut below: Vec<(&[u8], u32)> = Vec::new();
    let mut v4: Vec<Group<u32>> = Vec::new();
    let mut v6: Vec<Group<u128>> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let i = i as u32;
        match &rule.target {
            Target::Loopback | Target::LoopbackOwn => loopback.push(i),
            Target::Name(n) => names.push((n.as_bytes(), i)),
            Target::Below(n) => below.push((n.as_bytes(), i)),
            Target::Net {
                addr: IpAddr::V4(a),
                prefix,
            } => add_to_group(&mut v4, *prefix, u32::from(*a), i),
            Target::Net {
                addr: IpAddr::V6(a),
                prefix,
            } => add_to_group(&mut v6, *prefix, u128::from(*a), i),
        }
    }
    names.sort_unstable();
    below.sort_unstable();
    v4.iter_mut().for_each(|g| g.entries.sort_unstable());
    v6.iter_mut().for_each(|g| g.entries.sort_unstable());

    let mut out = Vec::new();
    let put = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());
    for count in [
        loopback.len(),
        names.len(),
        below.len(),
        v4.len(),
        v6.len(),
        0,
    ] {
        put(&mut out, count as u32);
    }
    let descriptors = v4
        .iter()
        .map(|g| (g.prefix, g.entries.len(), g.first_rule))
        .chain(v6.iter().map(|g| (g.prefix, g.entries.len(), g.first_rule)));
    for (prefix, len, first_rule) in descriptors {
        out.extend_from_slice(&[prefix, 0, 0, 0]);
        put(&mut out, len as u32);
        put(&mut out, first_rule);
    }
    let name_slots = loopback
        .iter()
        .copied()
        .chain(names.iter().map(|e| e.1))
        .chain(below.iter().map(|e| e.1));
    for rule in name_slots {
        put(&mut out, rule);
    }
    for (net, rule) in v4.iter().flat_map(|g| &g.entries) {
        put(&mut out, *net);
        put(&mut out, *rule);
    }
    for (net, rule) in v6.iter().flat_map(|g| &g.entries) {
        out.extend_from_slice(&net.to_le_bytes());
        put(&mut out, *rule);
    }
    out
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(word)
}

/// `u32_at` for offsets that may lie outside `b`.
fn get_u32(b: &[u8], at: usize) -> Option<u32> {
    let v = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([v[0], v[1], v[2], v[3]]))
}

/// Orders a stored name (lower-case) against a query name of any case, as if the query were
/// lower-cased, without copying it. Eight bytes at a time: names are compared on every probe.
fn cmp_folded(stored: &[u8], query: &[u8]) -> Ordering {
    let words = stored.len().min(query.len()) / 8;
    for (s, q) in stored
        .chunks_exact(8)
        .zip(query.chunks_exact(8))
        .take(words)
    {
        // Big-endian, so that the numbers order like the bytes.
        let (s, q) = (be_u64(s), lower_case_word(be_u64(q)));
        if s != q {
            return s.cmp(&q);
        }
    }
    let rest = 8 * words;
    for (s, q) in stored[rest..].iter().zip(&query[rest..]) {
        match s.cmp(&q.to_ascii_lowercase()) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    stored.len().cmp(&query.len())
}

/// The 8 bytes of `b` (exactly 8) as a big-endian number.
fn be_u64(b: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(b);
    u64::from_be_bytes(word)
}

/// `to_ascii_lowercase` on each byte of `word`.
fn lower_case_word(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = ONES * 0x80;
    // Per byte, without carries between bytes: the high bit of `7 bits + (0x80 - c)` says
    // whether the byte's low 7 bits are at least `c`.
    let low7 = word & !HIGH;
    let at_least_a = low7 + ONES * (0x80 - u64::from(b'A'));
    let above_z = low7 + ONES * (0x80 - u64::from(b'Z') - 1);
    let upper = at_least_a & !above_z & !word & HIGH;
    word | upper >> 2
}

/// One rule, read in place.
#[derive(Clone, Copy, Debug)]
pub struct RuleView<'a> {
    kind: u8,
    prefix: u8,
    pub ports: PortRange,
    addr: [u8; 16],
    /// The rule as the user wrote it.
    pub text: &'a str,
    name: &'a [u8],
}

impl RuleView<'_> {
    pub fn is_name_rule(&self) -> bool {
        matches!(self.kind, KIND_NAME | KIND_BELOW)
    }

    pub fn matches_addr(&self, ip: IpAddr, port: u16) -> bool {
        addr_matches(self.kind, self.prefix, self.ports, &self.addr, ip, port)
    }

    pub fn matches_name(&self, name: &[u8]) -> bool {
        name_rule_matches(self.kind, self.name, name)
    }
}

/// The one address matcher, for validated rule fields.
fn addr_matches(
    kind: u8,
    prefix: u8,
    ports: PortRange,
    addr: &[u8; 16],
    ip: IpAddr,
    port: u16,
) -> bool {
    if !ports.contains(port) {
        return false;
    }
    match kind {
        KIND_LOOPBACK => is_loopback(ip),
        KIND_NET4 => net_contains(
            IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
            prefix,
            ip,
        ),
        KIND_NET6 => net_contains(IpAddr::V6(Ipv6Addr::from(*addr)), prefix, ip),
        _ => false,
    }
}

/// The one name matcher, for validated rule fields.
fn name_rule_matches(kind: u8, rule_name: &[u8], name: &[u8]) -> bool {
    match kind {
        KIND_NAME => name_matches(false, rule_name, name),
        KIND_BELOW => name_matches(true, rule_name, name),
        _ => false,
    }
}

/// A run of entries of one section: positions `start..start + len`.
#[derive(Clone, Copy, Debug, Default)]
struct Span {
    start: usize,
    len: usize,
}

impl Span {
    fn end(self) -> usize {
        self.start + self.len
    }

    fn positions(self) -> std::ops::Range<usize> {
        self.start..self.end()
    }
}

/// The first position in `span` for which `before` is false; `before` must be true for a
/// prefix of the span and false for the rest (the span is sorted).
fn partition(span: Span, before: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (span.start, span.end());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if before(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Where the parts of the index are, as `parse` found and checked them.
#[derive(Clone, Copy, Debug, Default)]
struct Index {
    /// Offset of the first group descriptor in the policy.
    groups_at: usize,
    v4_groups: usize,
    v6_groups: usize,
    /// Offset of the rule slots (loopback, names, below) in the policy.
    slots_at: usize,
    loopback: Span,
    names: Span,
    below: Span,
    /// Offsets of the IPv4 and IPv6 group entries in the policy.
    v4_at: usize,
    v6_at: usize,
    /// The lengths of the exact and of the below names: a query (or suffix) of another
    /// length needs no search.
    name_lengths: LengthSet,
    below_lengths: LengthSet,
}

/// A set of name lengths, which are at most `MAX_NAME_LEN` (`parse` checked).
#[derive(Clone, Copy, Debug, Default)]
struct LengthSet([u64; 4]);

impl LengthSet {
    fn insert(&mut self, len: usize) {
        if let Some(word) = self.0.get_mut(len / 64) {
            *word |= 1 << (len % 64);
        }
    }

    fn contains(&self, len: usize) -> bool {
        self.0
            .get(len / 64)
            .is_some_and(|word| word & (1 << (len % 64)) != 0)
    }

    /// The lengths in the set, shortest first.
    fn iter(self) -> impl Iterator<Item = usize> {
        let (mut w, mut bits) = (0, self.0[0]);
        std::iter::from_fn(move || {
            while bits == 0 {
                w += 1;
                bits = *self.0.get(w)?;
            }
            let len = w * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(len)
        })
    }
}

/// A group descriptor.
#[derive(Clone, Copy, Debug)]
struct GroupView {
    prefix: u8,
    len: usize,
    first_rule: usize,
}

/// What differs between the IPv4 and the IPv6 groups. An entry is the network (a
/// little-endian number of `NET_LEN` bytes) then the rule index (u32).
trait Family {
    type Net: Copy + Ord;
    const KIND: u8;
    const NET_LEN: usize;
    const ENTRY_LEN: usize = Self::NET_LEN + 4;
    /// Prefix lengths 0 to this.
    const MAX_PREFIX: u8;
    fn mask(ip: Self::Net, prefix: u8) -> Self::Net;
    /// The network at the start of `b` (at least `NET_LEN` bytes).
    fn net_le(b: &[u8]) -> Self::Net;
    /// The network of a rule record's address field.
    fn record_net(addr: &[u8; 16]) -> Self::Net;
    /// (first group, group count, entries offset).
    fn layout(index: &Index) -> (usize, usize, usize);
}

struct V4;
struct V6;

impl Family for V4 {
    type Net = u32;
    const KIND: u8 = KIND_NET4;
    const NET_LEN: usize = 4;
    const MAX_PREFIX: u8 = 32;

    fn mask(ip: u32, prefix: u8) -> u32 {
        32u32
            .checked_sub(u32::from(prefix))
            .and_then(|host_bits| u32::MAX.checked_shl(host_bits))
            .map_or(0, |mask| ip & mask)
    }

    fn net_le(b: &[u8]) -> u32 {
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn record_net(addr: &[u8; 16]) -> u32 {
        u32::from_be_bytes([addr[0], addr[1], addr[2], addr[3]])
    }

    fn layout(index: &Index) -> (usize, usize, usize) {
        (0, index.v4_groups, index.v4_at)
    }
}

impl Family for V6 {
    type Net = u128;
    const KIND: u8 = KIND_NET6;
    const NET_LEN: usize = 16;
    const MAX_PREFIX: u8 = 128;

    fn mask(ip: u128, prefix: u8) -> u128 {
        128u32
            .checked_sub(u32::from(prefix))
            .and_then(|host_bits| u128::MAX.checked_shl(host_bits))
            .map_or(0, |mask| ip & mask)
    }

    fn net_le(b: &[u8]) -> u128 {
        let mut le = [0u8; 16];
        le.copy_from_slice(&b[..16]);
        u128::from_le_bytes(le)
    }

    fn record_net(addr: &[u8; 16]) -> u128 {
        u128::from_be_bytes(*addr)
    }

    fn layout(index: &Index) -> (usize, usize, usize) {
        (index.v4_groups, index.v6_groups, index.v6_at)
    }
}

/// A validated policy, borrowed from its bytes.
#[derive(Clone, Copy, Debug)]
pub struct PolicyView<'a> {
    bytes: &'a [u8],
    mode: Mode,
    deny_as: DenyAs,
    launcher_pid: u32,
    rule_count: usize,
    /// Where the strings area ends and the index starts.
    index_off: usize,
    /// Where the index ends and the grantable rules start (they run to the end).
    grantable_off: usize,
    index: Index,
}

impl<'a> PolicyView<'a> {
    /// Checks everything a reader relies on, so that later accessors cannot fail.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::TooShort);
        }
        if bytes[..8] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if u32_at(bytes, 8) != VERSION {
            return Err(DecodeError::BadVersion);
        }
        let total = u32_at(bytes, 24) as usize;
        if total > MAX_POLICY_LEN || total != bytes.len() {
            return Err(DecodeError::BadLength);
        }
        if checksum(bytes) != u64_at(bytes, CHECKSUM_AT) {
            return Err(DecodeError::BadChecksum);
        }
        let mode = match u32_at(bytes, 12) {
            0 => Mode::Block,
            1 => Mode::Audit,
            _ => return Err(DecodeError::BadMode),
        };
        let deny_as = DenyAs::from_wire(u64_at(bytes, DENY_AS_AT)).ok_or(DecodeError::BadDenyAs)?;
        let rule_count = u32_at(bytes, 20) as usize;
        if rule_count > MAX_RULES {
            return Err(DecodeError::TooManyRules);
        }
        let records_end = HEADER_LEN + rule_count * RULE_LEN;
        if records_end > total {
            return Err(DecodeError::BadLength);
        }
        let index_off = u32_at(bytes, INDEX_OFF_AT) as usize;
        if index_off < records_end || index_off > total {
            return Err(DecodeError::BadIndex);
        }
        let grantable_off = u32_at(bytes, GRANTABLE_OFF_AT) as usize;
        let grantable_len = u32_at(bytes, GRANTABLE_LEN_AT) as usize;
        if grantable_off < index_off
            || grantable_len > MAX_GRANTABLE_LEN
            || grantable_off.checked_add(grantable_len) != Some(total)
        {
            return Err(DecodeError::BadGrantable);
        }
        let grantable = &bytes[grantable_off..];
        if std::str::from_utf8(grantable).is_err()
            || grantable.last().is_some_and(|&b| b != b'\n')
            || grantable
                .split(|&b| b == b'\n')
                .rev()
                .skip(1)
                .any(|t| t.is_empty())
        {
            return Err(DecodeError::BadGrantable);
        }
        let mut view = PolicyView {
            bytes,
            mode,
            deny_as,
            launcher_pid: u32_at(bytes, 16),
            rule_count,
            index_off,
            grantable_off,
            index: Index::default(),
        };
        for i in 0..rule_count {
            view.read_rule(i).ok_or(DecodeError::BadRule)?;
        }
        view.index = view.read_index().ok_or(DecodeError::BadIndex)?;
        Ok(view)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// How refused calls look to the program (`--deny-as`).
    pub fn deny_as(&self) -> DenyAs {
        self.deny_as
    }

    /// True when programs the library cannot enter may run (`--allow-unguarded`).
    pub fn allow_unguarded(&self) -> bool {
        u32_at(self.bytes, 28) & FLAG_ALLOW_UNGUARDED != 0
    }

    /// `--seccomp`: the whole tree is under the kernel layer.
    pub fn seccomp(&self) -> bool {
        u32_at(self.bytes, 28) & FLAG_SECCOMP != 0
    }

    pub fn launcher_pid(&self) -> u32 {
        self.launcher_pid
    }

    /// The run's event key (all zero when the launcher gave none).
    pub fn event_key(&self) -> [u8; EVENT_KEY_LEN] {
        let mut key = [0u8; EVENT_KEY_LEN];
        if let Some(bytes) = self.bytes.get(EVENT_KEY_AT..EVENT_KEY_AT + EVENT_KEY_LEN) {
            key.copy_from_slice(bytes);
        }
        key
    }

    /// The shared counters, when the launcher made them (none: every attempt is an event).
    pub fn counters(&self) -> Option<Counters> {
        let slots = u64_at(self.bytes, COUNTERS_SLOTS_AT);
        (slots > 1).then(|| Counters {
            fd: u32_at(self.bytes, COUNTERS_FD_AT) as i32,
            ino: u64_at(self.bytes, COUNTERS_INO_AT),
            slots,
        })
    }

    pub fn rule_count(&self) -> usize {
        self.rule_count
    }

    /// The first `loopback:own` rule, if any: the library decides it (it knows the run's
    /// listeners), `match_addr` never returns it.
    pub fn loopback_own_rule(&self) -> Option<usize> {
        self.index.loopback.positions().find_map(|pos| {
            let i = self.slot(pos)?;
            (self.record(i)?[0] == KIND_LOOPBACK_OWN).then_some(i)
        })
    }

    /// The texts of the grantable rules (`--grantable`), in order; each was a valid rule when
    /// the launcher wrote it. In reports, grantable rule `g` is rule `rule_count() + g`.
    pub fn grantable(&self) -> impl Iterator<Item = &'a str> {
        let section = self.bytes.get(self.grantable_off..).unwrap_or(&[]);
        let text = std::str::from_utf8(section).unwrap_or("");
        text.split_terminator('\n')
    }

    fn strings(&self) -> &'a [u8] {
        self.bytes
            .get(HEADER_LEN + self.rule_count * RULE_LEN..self.index_off)
            .unwrap_or(&[])
    }

    fn read_rule(&self, i: usize) -> Option<RuleView<'a>> {
        if i >= self.rule_count {
            return None;
        }
        let r = self.record(i)?;
        let (kind, prefix) = (r[0], r[1]);
        let ports = PortRange {
            lo: u16_at(r, 2),
            hi: u16_at(r, 4),
        };
        let prefix_ok = match kind {
            KIND_LOOPBACK | KIND_LOOPBACK_OWN | KIND_NAME | KIND_BELOW => prefix == 0,
            KIND_NET4 => prefix <= V4::MAX_PREFIX,
            KIND_NET6 => prefix <= V6::MAX_PREFIX,
            _ => false,
        };
        if !prefix_ok || ports.lo > ports.hi {
            return None;
        }
        let strings = self.strings();
        let slice = |off: usize, len: usize| strings.get(off..off.checked_add(len)?);
        let text = slice(u32_at(r, 24) as usize, u32_at(r, 28) as usize)?;
        let name = slice(u32_at(r, 32) as usize, u32_at(r, 36) as usize)?;
        let text = std::str::from_utf8(text).ok()?;
        let name_ok = match kind {
            KIND_NAME | KIND_BELOW => {
                !name.is_empty()
                    && name.len() <= MAX_NAME_LEN
                    && name
                        .iter()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(b))
            }
            _ => name.is_empty(),
        };
        if !name_ok {
            return None;
        }
        Some(RuleView {
            kind,
            prefix,
            ports,
            addr: record_addr(r),
            text,
            name,
        })
    }

    /// The rule at `index`; `None` only for an index past the end.
    pub fn rule(&self, index: usize) -> Option<RuleView<'a>> {
        self.read_rule(index)
    }

    pub fn rules(&self) -> impl Iterator<Item = RuleView<'a>> + '_ {
        (0..self.rule_count).filter_map(move |i| self.read_rule(i))
    }

    /// The raw record of rule `i`. Matching reads only the fields it needs from it, without
    /// re-validating: `parse` validated every rule once (this runs on every connect and send).
    fn record(&self, i: usize) -> Option<&'a [u8]> {
        let at = i.checked_mul(RULE_LEN)?.checked_add(HEADER_LEN)?;
        self.bytes.get(at..at.checked_add(RULE_LEN)?)
    }

    /// The ports rule `i` allows.
    pub fn rule_ports(&self, i: usize) -> Option<PortRange> {
        let r = self.record(i).filter(|_| i < self.rule_count)?;
        Some(PortRange {
            lo: u16_at(r, 2),
            hi: u16_at(r, 4),
        })
    }

    /// The stored (lower-case) name of rule `i`.
    fn rule_name(&self, i: usize) -> Option<&'a [u8]> {
        let r = self.record(i)?;
        let (off, len) = (u32_at(r, 32) as usize, u32_at(r, 36) as usize);
        self.strings().get(off..off.checked_add(len)?)
    }

    /// The rule index in slot `pos` (the loopback, name and below sections).
    fn slot(&self, pos: usize) -> Option<usize> {
        let at = pos
            .checked_mul(SLOT_LEN)?
            .checked_add(self.index.slots_at)?;
        get_u32(self.bytes, at).map(|i| i as usize)
    }

    /// The descriptor of group `g` (the IPv4 groups first, then the IPv6 groups).
    fn group(&self, g: usize) -> Option<GroupView> {
        let at = g
            .checked_mul(GROUP_LEN)?
            .checked_add(self.index.groups_at)?;
        let d = self.bytes.get(at..at.checked_add(GROUP_LEN)?)?;
        Some(GroupView {
            prefix: d[0],
            len: u32_at(d, 4) as usize,
            first_rule: u32_at(d, 8) as usize,
        })
    }

    /// Entry `pos` of family `F`'s groups: (network, rule index).
    fn entry<F: Family>(&self, entries_at: usize, pos: usize) -> Option<(F::Net, usize)> {
        let at = pos.checked_mul(F::ENTRY_LEN)?.checked_add(entries_at)?;
        let e = self.bytes.get(at..at.checked_add(F::ENTRY_LEN)?)?;
        Some((F::net_le(e), u32_at(e, F::NET_LEN) as usize))
    }

    /// The first address or loopback rule that allows `ip:port`.
    pub fn match_addr(&self, ip: IpAddr, port: u16) -> Option<usize> {
        let ip = canonical_ip(ip);
        let mut best = usize::MAX;
        if is_loopback(ip) {
            let lowest = self.index.loopback.positions().find_map(|pos| {
                let i = self.slot(pos)?;
                let plain = self.record(i)?[0] == KIND_LOOPBACK;
                (plain && self.rule_ports(i)?.contains(port)).then_some(i)
            });
            best = lowest.unwrap_or(best);
        }
        best = match ip {
            IpAddr::V4(v4) => self.lowest_in_groups::<V4>(u32::from(v4), port, best),
            IpAddr::V6(v6) => self.lowest_in_groups::<V6>(u128::from(v6), port, best),
        };
        (best < self.rule_count).then_some(best)
    }

    /// The lowest rule below `best` among family `F`'s groups that allows `ip:port`, or `best`.
    fn lowest_in_groups<F: Family>(&self, ip: F::Net, port: u16, mut best: usize) -> usize {
        let (first_group, groups, entries_at) = F::layout(&self.index);
        let mut start = 0;
        for g in first_group..first_group + groups {
            let Some(group) = self.group(g) else { break };
            // Groups come in order of their lowest rule: none after this one can do better.
            if group.first_rule >= best {
                break;
            }
            let span = Span {
                start,
                len: group.len,
            };
            start = span.end();
            let net = F::mask(ip, group.prefix);
            let entry = |pos| self.entry::<F>(entries_at, pos);
            // Networks often cluster: a query outside the group's range needs no search.
            let lowest = entry(span.start).map(|(n, _)| n);
            let highest = entry(span.end() - 1).map(|(n, _)| n);
            if lowest.is_none_or(|n| n > net) || highest.is_none_or(|n| n < net) {
                continue;
            }
            let first = partition(span, |pos| entry(pos).is_some_and(|(n, _)| n < net));
            // Rules of the same network follow in rule order: the first that allows the port
            // is this group's answer.
            for pos in first..span.end() {
                match entry(pos) {
                    Some((n, i)) if n == net && i < best => {
                        if self.rule_ports(i).is_some_and(|p| p.contains(port)) {
                            best = i;
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
        best
    }

    /// The first name rule that allows looking up `name`.
    pub fn match_name(&self, name: &[u8]) -> Option<usize> {
        let name = name.strip_suffix(b".").unwrap_or(name);
        let mut best = None;
        if self.index.name_lengths.contains(name.len()) {
            best = self.lowest_with_name(self.index.names, name);
        }
        // A below rule matches when its name follows a dot that has at least one byte before
        // it: only suffixes as long as some below name need a search.
        for len in self.index.below_lengths.iter() {
            if len + 2 > name.len() {
                break;
            }
            let dot = name.len() - len - 1;
            if name[dot] == b'.' {
                if let Some(i) = self.lowest_with_name(self.index.below, &name[dot + 1..]) {
                    best = Some(best.map_or(i, |b| b.min(i)));
                }
            }
        }
        best
    }

    /// The lowest rule in `span` (sorted by name, then rule) whose name is `query` lower-cased.
    fn lowest_with_name(&self, span: Span, query: &[u8]) -> Option<usize> {
        let (mut lo, mut hi) = (span.start, span.end());
        // What the entry at `hi` compared as, when it was probed: the search ends on the
        // first entry not below the query, so this says whether it is equal, with no second
        // comparison.
        let mut hi_equal = false;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let name = self.slot(mid).and_then(|i| self.rule_name(i));
            match name.map(|name| cmp_folded(name, query)) {
                Some(Ordering::Less) => lo = mid + 1,
                order => {
                    hi = mid;
                    hi_equal = order == Some(Ordering::Equal);
                }
            }
        }
        if hi_equal {
            self.slot(hi)
        } else {
            None
        }
    }

    /// Reads and checks the index: every rule in exactly one place, in the section of its kind
    /// (and group of its prefix), each section sorted as lookups expect. `None` when anything
    /// is off.
    fn read_index(&self) -> Option<Index> {
        let n = self.rule_count;
        let header = self
            .bytes
            .get(self.index_off..self.index_off.checked_add(INDEX_HEADER_LEN)?)?;
        let count = |k: usize| u32_at(header, 4 * k) as usize;
        let (loopback, names, below) = (count(0), count(1), count(2));
        let (v4_groups, v6_groups) = (count(3), count(4));
        // At most one group per prefix length.
        let v4_ok = v4_groups <= usize::from(V4::MAX_PREFIX) + 1;
        let v6_ok = v6_groups <= usize::from(V6::MAX_PREFIX) + 1;
        if count(5) != 0 || !v4_ok || !v6_ok {
            return None;
        }
        let groups_at = self.index_off + INDEX_HEADER_LEN;
        let slots_at = groups_at + (v4_groups + v6_groups) * GROUP_LEN;
        let mut index = Index {
            groups_at,
            v4_groups,
            v6_groups,
            slots_at,
            ..Index::default()
        };
        let view = PolicyView { index, ..*self };
        let group_entries = |mut groups: std::ops::Range<usize>| {
            groups.try_fold(0usize, |sum, g| sum.checked_add(view.group(g)?.len))
        };
        let v4_entries = group_entries(0..v4_groups)?;
        let v6_entries = group_entries(v4_groups..v4_groups + v6_groups)?;
        let name_slots = loopback.checked_add(names)?.checked_add(below)?;
        if name_slots
            .checked_add(v4_entries)?
            .checked_add(v6_entries)?
            != n
        {
            return None;
        }
        // Nothing after the last entry, so that the bytes have one meaning.
        index.v4_at = slots_at + name_slots * SLOT_LEN;
        index.v6_at = index.v4_at + v4_entries * V4::ENTRY_LEN;
        if index.v6_at + v6_entries * V6::ENTRY_LEN != self.grantable_off {
            return None;
        }
        index.loopback = Span {
            start: 0,
            len: loopback,
        };
        index.names = Span {
            start: loopback,
            len: names,
        };
        index.below = Span {
            start: loopback + names,
            len: below,
        };
        let view = PolicyView { index, ..*self };

        // Every entry names a rule of its section's kind (and its group's prefix), and the
        // entries of a section strictly increase by (key, rule) where the key is read from the
        // rule itself: so no rule is in a section twice, and no rule can be in two sections.
        // As there are exactly `n` entries, every rule is in exactly one.
        let kind_of = |i: usize| view.record(i).filter(|_| i < n).map(|r| r[0]);
        let mut prev = None;
        for pos in index.loopback.positions() {
            let i = view.slot(pos)?;
            let loopback_kind = matches!(kind_of(i), Some(KIND_LOOPBACK | KIND_LOOPBACK_OWN));
            if !loopback_kind || prev >= Some(i) {
                return None;
            }
            prev = Some(i);
        }
        for (span, kind) in [(index.names, KIND_NAME), (index.below, KIND_BELOW)] {
            let mut prev: Option<(&[u8], usize)> = None;
            for pos in span.positions() {
                let i = view.slot(pos)?;
                if kind_of(i) != Some(kind) {
                    return None;
                }
                let name = view.rule_name(i)?;
                if prev >= Some((name, i)) {
                    return None;
                }
                prev = Some((name, i));
                match kind {
                    KIND_NAME => index.name_lengths.insert(name.len()),
                    _ => index.below_lengths.insert(name.len()),
                }
            }
        }
        view.check_groups::<V4>()?;
        view.check_groups::<V6>()?;
        Some(index)
    }

    /// Checks family `F`'s groups: distinct prefixes that fit the family, zero padding, at
    /// least one entry each, `first_rule` the group's lowest rule and above the previous
    /// group's, and entries that agree with their rules, sorted by (network, rule).
    fn check_groups<F: Family>(&self) -> Option<()> {
        let (first_group, groups, entries_at) = F::layout(&self.index);
        let mut seen = [false; 129];
        let mut prev_first = None;
        let mut start = 0;
        for g in first_group..first_group + groups {
            let at = g * GROUP_LEN + self.index.groups_at;
            let group = self.group(g)?;
            if group.prefix > F::MAX_PREFIX || seen[usize::from(group.prefix)] {
                return None;
            }
            seen[usize::from(group.prefix)] = true;
            if self.bytes.get(at + 1..at + 4)? != [0, 0, 0] || group.len == 0 {
                return None;
            }
            if prev_first >= Some(group.first_rule) {
                return None;
            }
            prev_first = Some(group.first_rule);
            let span = Span {
                start,
                len: group.len,
            };
            start = span.end();
            let mut prev = None;
            let mut lowest = usize::MAX;
            for pos in span.positions() {
                let (net, i) = self.entry::<F>(entries_at, pos)?;
                let r = self.record(i).filter(|_| i < self.rule_count)?;
                if r[0] != F::KIND || r[1] != group.prefix || F::record_net(&record_addr(r)) != net
                {
                    return None;
                }
                if prev >= Some((net, i)) {
                    return None;
                }
                prev = Some((net, i));
                lowest = lowest.min(i);
            }
            if lowest != group.first_rule {
                return None;
            }
        }
        Some(())
    }
}

/// The address field of a rule record.
fn record_addr(r: &[u8]) -> [u8; 16] {
    let mut addr = [0u8; 16];
    addr.copy_from_slice(&r[8..24]);
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmp_folded_orders_like_the_lower_cased_query() {
        let words: &[&[u8]] = &[
            b"",
            b"a",
            b"A",
            b"a.b",
            b"a-b",
            b"ab",
            b"aB",
            b"b",
            b"Z",
            b"z",
            b"_",
            b"[",
            b"@",
            b"\0",
            b"a\0",
            b"\xff",
            b"\xc3\xa9",
        ];
        for &stored in words {
            let stored = stored.to_ascii_lowercase();
            for &query in words {
                let expect = stored.as_slice().cmp(query.to_ascii_lowercase().as_slice());
                assert_eq!(cmp_folded(&stored, query), expect, "{stored:?} {query:?}");
            }
        }
    }

    #[test]
    fn lower_case_word_lowers_every_byte_like_to_ascii_lowercase() {
        for byte in 0..=255u8 {
            for at in 0..8 {
                let mut bytes = *b"aZ@[`{\x7f\x80";
                bytes[at] = byte;
                let expect = u64::from_be_bytes(bytes.map(|b| b.to_ascii_lowercase()));
                assert_eq!(
                    lower_case_word(u64::from_be_bytes(bytes)),
                    expect,
                    "{bytes:?}"
                );
            }
        }
    }

    #[test]
    fn masks_keep_the_prefix_bits() {
        assert_eq!(V4::mask(u32::MAX, 0), 0);
        assert_eq!(V4::mask(u32::MAX, 1), 0x8000_0000);
        assert_eq!(V4::mask(u32::MAX, 24), 0xffff_ff00);
        assert_eq!(V4::mask(0x0a01_0203, 32), 0x0a01_0203);
        assert_eq!(V6::mask(u128::MAX, 0), 0);
        assert_eq!(V6::mask(u128::MAX, 64), u128::MAX << 64);
        assert_eq!(V6::mask(u128::MAX, 127), u128::MAX - 1);
        assert_eq!(V6::mask(u128::MAX, 128), u128::MAX);
    }

    #[test]
    fn length_sets_hold_lengths_up_to_255() {
        let mut set = LengthSet::default();
        assert_eq!(set.iter().count(), 0);
        let lengths = [0, 1, 63, 64, 127, 128, 253, 255];
        for len in lengths {
            set.insert(len);
        }
        set.insert(256); // ignored
        for len in lengths {
            assert!(set.contains(len), "{len}");
        }
        for len in [2, 62, 65, 126, 129, 254, 256, 300, usize::MAX] {
            assert!(!set.contains(len), "{len}");
        }
        assert_eq!(set.iter().collect::<Vec<_>>(), lengths);
    }

    #[test]
    fn partition_finds_the_first_position_not_before() {
        let sorted = [1, 3, 3, 3, 7, 9];
        let span = Span {
            start: 0,
            len: sorted.len(),
        };
        for target in 0..11 {
            let expect = sorted.iter().position(|&v| v >= target).unwrap_or(6);
            assert_eq!(partition(span, |pos| sorted[pos] < target), expect);
        }
        let tail = Span { start: 2, len: 3 };
        assert_eq!(partition(tail, |pos| sorted[pos] < 3), 2);
        assert_eq!(partition(tail, |pos| sorted[pos] < 8), 5);
        assert_eq!(partition(Span { start: 4, len: 0 }, |_| true), 4);
    }
}
