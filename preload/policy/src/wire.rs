//! The policy's binary form: written once by the launcher into a sealed memfd, read in place by
//! every guarded process. Reading never allocates, so it is safe before `main`, after `fork` and
//! in a signal handler.
//!
//! Layout (little-endian):
//! ```text
//! header  64 bytes  magic[8] version:u32 mode:u32 launcher_pid:u32 rule_count:u32
//!                   total_len:u32 flags:u32 checksum:u64 counters_fd:i32 reserved:u32
//!                   counters_ino:u64 counters_slots:u64
//! rules   48 bytes each
//!                   kind:u8 prefix:u8 port_lo:u16 port_hi:u16 pad:u16 addr[16]
//!                   text_off:u32 text_len:u32 name_off:u32 name_len:u32 reserved[8]
//! strings           rule texts and lower-case names, offsets relative to the strings area
//! ```
//! The checksum is FNV-1a 64 over the whole policy with the checksum field zeroed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::rule::{is_loopback, name_matches, net_contains, PortRange, Rule, Target};

pub const MAGIC: [u8; 8] = *b"EGRSPOL\x01";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 64;
pub const RULE_LEN: usize = 48;
/// Far above any real allowlist; bounds what a corrupt header can make a reader walk.
pub const MAX_RULES: usize = 1 << 20;
pub const MAX_POLICY_LEN: usize = 256 << 20;

const CHECKSUM_AT: usize = 32;

const KIND_LOOPBACK: u8 = 0;
const KIND_NET4: u8 = 1;
const KIND_NET6: u8 = 2;
const KIND_NAME: u8 = 3;
const KIND_BELOW: u8 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
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
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for DecodeError {}

fn fnv1a(bytes: &[u8], skip: std::ops::Range<usize>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, b) in bytes.iter().enumerate() {
        let b = if skip.contains(&i) { 0 } else { *b };
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Policy flag: run programs the library cannot enter (`--allow-unguarded`).
pub const FLAG_ALLOW_UNGUARDED: u32 = 1;

/// Where the launcher's shared attempt counters are: a memfd every guarded process maps, so
/// that repeated identical attempts are counted without a system call and survive `SIGKILL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters {
    pub fd: i32,
    pub ino: u64,
    /// Number of 8-byte slots; slot 0 holds the next free slot index.
    pub slots: u64,
}

/// Encodes a policy. Rules keep their order: the first matching rule is the one reported.
pub fn encode(mode: Mode, launcher_pid: u32, rules: &[Rule]) -> Vec<u8> {
    encode_with_flags(mode, launcher_pid, rules, 0)
}

/// `encode_with_flags`, naming the shared counters too.
pub fn encode_full(
    mode: Mode,
    launcher_pid: u32,
    rules: &[Rule],
    flags: u32,
    counters: Counters,
) -> Vec<u8> {
    let mut out = encode_with_flags(mode, launcher_pid, rules, flags);
    out[40..44].copy_from_slice(&counters.fd.to_le_bytes());
    out[48..56].copy_from_slice(&counters.ino.to_le_bytes());
    out[56..64].copy_from_slice(&counters.slots.to_le_bytes());
    let sum = fnv1a(&out, CHECKSUM_AT..CHECKSUM_AT + 8);
    out[CHECKSUM_AT..CHECKSUM_AT + 8].copy_from_slice(&sum.to_le_bytes());
    out
}

/// `encode` with policy flags (`FLAG_*`).
pub fn encode_with_flags(mode: Mode, launcher_pid: u32, rules: &[Rule], flags: u32) -> Vec<u8> {
    let mut strings = Vec::new();
    let mut records = Vec::with_capacity(rules.len() * RULE_LEN);
    for rule in rules {
        let mut rec = [0u8; RULE_LEN];
        let (kind, prefix, addr, name): (u8, u8, [u8; 16], &str) = match &rule.target {
            Target::Loopback => (KIND_LOOPBACK, 0, [0; 16], ""),
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
    let total = HEADER_LEN + records.len() + strings.len();
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
    out.extend_from_slice(&records);
    out.extend_from_slice(&strings);
    let sum = fnv1a(&out, CHECKSUM_AT..CHECKSUM_AT + 8);
    out[CHECKSUM_AT..CHECKSUM_AT + 8].copy_from_slice(&sum.to_le_bytes());
    out
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
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

/// A validated policy, borrowed from its bytes.
#[derive(Clone, Copy, Debug)]
pub struct PolicyView<'a> {
    bytes: &'a [u8],
    mode: Mode,
    launcher_pid: u32,
    rule_count: usize,
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
        let stored = u64::from_le_bytes(
            bytes[CHECKSUM_AT..CHECKSUM_AT + 8]
                .try_into()
                .map_err(|_| DecodeError::TooShort)?,
        );
        if fnv1a(bytes, CHECKSUM_AT..CHECKSUM_AT + 8) != stored {
            return Err(DecodeError::BadChecksum);
        }
        let mode = match u32_at(bytes, 12) {
            0 => Mode::Block,
            1 => Mode::Audit,
            _ => return Err(DecodeError::BadMode),
        };
        let rule_count = u32_at(bytes, 20) as usize;
        if rule_count > MAX_RULES {
            return Err(DecodeError::TooManyRules);
        }
        if HEADER_LEN + rule_count * RULE_LEN > total {
            return Err(DecodeError::BadLength);
        }
        let view = PolicyView {
            bytes,
            mode,
            launcher_pid: u32_at(bytes, 16),
            rule_count,
        };
        for i in 0..rule_count {
            view.read_rule(i).ok_or(DecodeError::BadRule)?;
        }
        Ok(view)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// True when programs the library cannot enter may run (`--allow-unguarded`).
    pub fn allow_unguarded(&self) -> bool {
        u32_at(self.bytes, 28) & FLAG_ALLOW_UNGUARDED != 0
    }

    pub fn launcher_pid(&self) -> u32 {
        self.launcher_pid
    }

    /// The shared counters, when the launcher made them (none: every attempt is an event).
    pub fn counters(&self) -> Option<Counters> {
        let slots = u64::from_le_bytes(self.bytes[56..64].try_into().ok()?);
        (slots > 1).then(|| Counters {
            fd: i32::from_le_bytes([
                self.bytes[40],
                self.bytes[41],
                self.bytes[42],
                self.bytes[43],
            ]),
            ino: u64::from_le_bytes(self.bytes[48..56].try_into().unwrap_or([0; 8])),
            slots,
        })
    }

    pub fn rule_count(&self) -> usize {
        self.rule_count
    }

    fn strings(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN + self.rule_count * RULE_LEN..]
    }

    fn read_rule(&self, i: usize) -> Option<RuleView<'a>> {
        if i >= self.rule_count {
            return None;
        }
        let at = HEADER_LEN + i * RULE_LEN;
        let r = self.bytes.get(at..at + RULE_LEN)?;
        let (kind, prefix) = (r[0], r[1]);
        let ports = PortRange {
            lo: u16_at(r, 2),
            hi: u16_at(r, 4),
        };
        let prefix_ok = match kind {
            KIND_LOOPBACK | KIND_NAME | KIND_BELOW => prefix == 0,
            KIND_NET4 => prefix <= 32,
            KIND_NET6 => prefix <= 128,
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
                    && name
                        .iter()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(b))
            }
            _ => name.is_empty(),
        };
        if !name_ok {
            return None;
        }
        let mut addr = [0u8; 16];
        addr.copy_from_slice(&r[8..24]);
        Some(RuleView {
            kind,
            prefix,
            ports,
            addr,
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
        let at = HEADER_LEN + i * RULE_LEN;
        self.bytes.get(at..at + RULE_LEN)
    }

    /// The ports rule `i` allows.
    pub fn rule_ports(&self, i: usize) -> Option<PortRange> {
        let r = self.record(i).filter(|_| i < self.rule_count)?;
        Some(PortRange {
            lo: u16_at(r, 2),
            hi: u16_at(r, 4),
        })
    }

    /// The first address or loopback rule that allows `ip:port`.
    pub fn match_addr(&self, ip: IpAddr, port: u16) -> Option<usize> {
        (0..self.rule_count).find(|&i| {
            self.record(i).is_some_and(|r| {
                let ports = PortRange {
                    lo: u16_at(r, 2),
                    hi: u16_at(r, 4),
                };
                let mut addr = [0u8; 16];
                addr.copy_from_slice(&r[8..24]);
                addr_matches(r[0], r[1], ports, &addr, ip, port)
            })
        })
    }

    /// The first name rule that allows looking up `name`.
    pub fn match_name(&self, name: &[u8]) -> Option<usize> {
        let strings = self.strings();
        (0..self.rule_count).find(|&i| {
            self.record(i).is_some_and(|r| {
                let (off, len) = (u32_at(r, 32) as usize, u32_at(r, 36) as usize);
                matches!(r[0], KIND_NAME | KIND_BELOW)
                    && strings
                        .get(off..off.saturating_add(len))
                        .is_some_and(|rule_name| name_rule_matches(r[0], rule_name, name))
            })
        })
    }
}
