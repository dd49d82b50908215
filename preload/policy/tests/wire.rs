//! Tests of the policy's binary form (`encode` / `PolicyView`) and of `Locator`.

use std::net::IpAddr;

use egress_policy::wire::{
    encode_full, Counters, Settings, FLAG_ALLOW_UNGUARDED, HEADER_LEN, INDEX_HEADER_LEN, MAGIC,
    MAX_RULES, RULE_LEN, VERSION,
};
use egress_policy::{
    encode, parse_rule, DecodeError, DenyAs, Locator, Mode, PolicyView, PortRange, Rule,
};

const CHECKSUM_AT: usize = 32;
// Offsets of the header fields and of the fields of a rule record.
const H_VERSION: usize = 8;
const H_MODE: usize = 12;
const H_PID: usize = 16;
const H_COUNT: usize = 20;
const H_TOTAL: usize = 24;
const H_INDEX_OFF: usize = 44;
const H_DENY_AS: usize = 64;
const R_KIND: usize = 0;
const R_PREFIX: usize = 1;
const R_PORT_LO: usize = 2;
const R_PORT_HI: usize = 4;
const R_TEXT_OFF: usize = 24;
const R_TEXT_LEN: usize = 28;
const R_NAME_OFF: usize = 32;
const R_NAME_LEN: usize = 36;

/// Recomputes the checksum after a test edited the bytes.
fn fix_checksum(bytes: &mut [u8]) {
    egress_policy::wire::reseal(bytes);
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u16(bytes: &mut [u8], at: usize, v: u16) {
    bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn rule_at(i: usize) -> usize {
    HEADER_LEN + i * RULE_LEN
}

/// Where the strings area ends and the index starts.
fn index_off(bytes: &[u8]) -> usize {
    get_u32(bytes, H_INDEX_OFF) as usize
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn rules(texts: &[&str]) -> Vec<Rule> {
    texts
        .iter()
        .map(|t| parse_rule(t).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// One rule of every kind, in a known order:
/// 0 loopback, 1 v4 net, 2 v6 net, 3 name, 4 below, 5 v4 address.
const SAMPLE: &[&str] = &[
    "loopback:5432",
    "203.0.113.0/24:80-90",
    "[2001:db8::/32]:443",
    "Example.COM.:443",
    "*.example.org",
    "198.51.100.20",
];

fn sample() -> Vec<u8> {
    encode(Mode::Block, 4242, &rules(SAMPLE))
}

fn parse_err(bytes: &[u8]) -> DecodeError {
    match PolicyView::parse(bytes) {
        Ok(v) => panic!("expected an error, parsed {v:?}"),
        Err(e) => e,
    }
}

/// Applies `edit` to a valid sample, recomputes the checksum and returns the decode error.
fn err_after(edit: impl FnOnce(&mut Vec<u8>)) -> DecodeError {
    let mut b = sample();
    edit(&mut b);
    fix_checksum(&mut b);
    parse_err(&b)
}

// ---------------------------------------------------------------------------------------------
// Round trip
// ---------------------------------------------------------------------------------------------

#[test]
fn encoded_layout_has_header_records_strings_and_index() {
    let rs = rules(SAMPLE);
    let b = encode(Mode::Audit, 7, &rs);
    let strings: usize = rs
        .iter()
        .map(|r| {
            r.text.len()
                + match &r.target {
                    egress_policy::Target::Name(n) | egress_policy::Target::Below(n) => n.len(),
                    _ => 0,
                }
        })
        .sum();
    // The index: its header, 3 groups (two IPv4 prefix lengths, one IPv6), slots for the
    // loopback, name and below rules, and 2 IPv4 and 1 IPv6 group entries.
    let index = INDEX_HEADER_LEN + 3 * 12 + 3 * 4 + 2 * 8 + 20;
    assert_eq!(index_off(&b), HEADER_LEN + rs.len() * RULE_LEN + strings);
    assert_eq!(b.len(), index_off(&b) + index);
    assert_eq!(b[..8], MAGIC);
    assert_eq!(get_u32(&b, H_VERSION), VERSION);
    assert_eq!(get_u32(&b, H_MODE), 1);
    assert_eq!(get_u32(&b, H_PID), 7);
    assert_eq!(get_u32(&b, H_COUNT) as usize, rs.len());
    assert_eq!(get_u32(&b, H_TOTAL) as usize, b.len());
    // Our checksum helper agrees with the encoder.
    let mut again = b.clone();
    again[CHECKSUM_AT..CHECKSUM_AT + 8].fill(0xAA);
    fix_checksum(&mut again);
    assert_eq!(again, b);
}

#[test]
fn round_trip_keeps_mode_pid_and_rules() {
    let rs = rules(SAMPLE);
    for (mode, pid) in [
        (Mode::Block, 1),
        (Mode::Audit, u32::MAX),
        (Mode::Block, 4242),
    ] {
        let b = encode(mode, pid, &rs);
        let v = PolicyView::parse(&b).expect("valid policy");
        assert_eq!(v.mode(), mode);
        assert_eq!(v.launcher_pid(), pid);
        assert_eq!(v.rule_count(), rs.len());
        assert_eq!(v.rules().count(), rs.len());
        for (i, (view, rule)) in v.rules().zip(&rs).enumerate() {
            assert_eq!(view.text, rule.text, "rule {i}");
            assert_eq!(view.ports, rule.ports, "rule {i}");
            let by_index = v.rule(i).expect("in range");
            assert_eq!(by_index.text, rule.text);
            assert_eq!(by_index.ports, rule.ports);
            assert_eq!(
                view.is_name_rule(),
                matches!(
                    rule.target,
                    egress_policy::Target::Name(_) | egress_policy::Target::Below(_)
                ),
                "rule {i}"
            );
        }
        assert!(v.rule(rs.len()).is_none());
        assert!(v.rule(usize::MAX).is_none());
    }
}

#[test]
fn rule_texts_are_verbatim_including_case_and_trailing_dot() {
    let b = sample();
    let v = PolicyView::parse(&b).unwrap();
    assert_eq!(v.rule(3).unwrap().text, "Example.COM.:443");
    assert_eq!(v.rule(2).unwrap().text, "[2001:db8::/32]:443");
    assert_eq!(v.rule(0).unwrap().ports, PortRange { lo: 5432, hi: 5432 });
    assert_eq!(v.rule(1).unwrap().ports, PortRange { lo: 80, hi: 90 });
    assert_eq!(v.rule(5).unwrap().ports, PortRange::ALL);
}

#[test]
fn empty_policy_round_trips_and_allows_nothing() {
    for mode in [Mode::Block, Mode::Audit] {
        let b = encode(mode, 99, &[]);
        assert_eq!(b.len(), HEADER_LEN + INDEX_HEADER_LEN);
        assert_eq!(index_off(&b), HEADER_LEN);
        let v = PolicyView::parse(&b).unwrap();
        assert_eq!(v.mode(), mode);
        assert_eq!(v.rule_count(), 0);
        assert_eq!(v.rules().count(), 0);
        assert!(v.rule(0).is_none());
        assert_eq!(v.match_addr(ip("127.0.0.1"), 80), None);
        assert_eq!(v.match_name(b"example.com"), None);
    }
}

#[test]
fn view_matchers_agree_with_rule_matchers() {
    let rs = rules(SAMPLE);
    let b = encode(Mode::Block, 1, &rs);
    let v = PolicyView::parse(&b).unwrap();
    let addrs = [
        "127.0.0.1",
        "::1",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "128.0.0.1",
        "203.0.113.0",
        "203.0.113.255",
        "::ffff:203.0.113.9",
        "203.0.114.1",
        "2001:db8::1",
        "2001:db9::1",
        "198.51.100.20",
        "::ffff:198.51.100.20",
        "198.51.100.21",
    ];
    let ports = [0u16, 1, 79, 80, 85, 90, 91, 443, 5432, 65535];
    for a in addrs {
        for p in ports {
            let a = ip(a);
            let expect = rs.iter().position(|r| r.matches_addr(a, p));
            assert_eq!(v.match_addr(a, p), expect, "{a} port {p}");
            for (i, r) in rs.iter().enumerate() {
                assert_eq!(v.rule(i).unwrap().matches_addr(a, p), r.matches_addr(a, p));
            }
        }
    }
    let names = [
        "example.com",
        "EXAMPLE.com.",
        "a.example.com",
        "example.org",
        "a.example.org",
        "A.B.Example.Org.",
        "badexample.org",
        "localhost",
        "",
    ];
    for n in names {
        let expect = rs.iter().position(|r| r.matches_name(n));
        assert_eq!(v.match_name(n.as_bytes()), expect, "{n}");
        for (i, r) in rs.iter().enumerate() {
            assert_eq!(
                v.rule(i).unwrap().matches_name(n.as_bytes()),
                r.matches_name(n)
            );
        }
    }
}

#[test]
fn match_addr_and_match_name_return_the_first_matching_rule() {
    let rs = rules(&[
        "example.com:443",
        "10.0.0.0/8:443",
        "10.1.0.0/16",
        "10.1.2.3",
        "*.example.com",
        "example.com",
        "loopback",
        "127.0.0.1",
    ]);
    let b = encode(Mode::Audit, 5, &rs);
    let v = PolicyView::parse(&b).unwrap();
    assert_eq!(v.match_addr(ip("10.1.2.3"), 443), Some(1));
    assert_eq!(v.match_addr(ip("10.1.2.3"), 80), Some(2));
    assert_eq!(v.match_addr(ip("10.2.0.1"), 80), None);
    assert_eq!(v.match_addr(ip("127.0.0.1"), 80), Some(6));
    assert_eq!(v.match_name(b"example.com"), Some(0));
    assert_eq!(v.match_name(b"www.example.com"), Some(4));
    assert_eq!(v.match_name(b"other.test"), None);
    // The reported index names the rule text to quote.
    assert_eq!(
        v.rule(v.match_addr(ip("10.1.2.3"), 80).unwrap())
            .unwrap()
            .text,
        "10.1.0.0/16"
    );
}

#[test]
fn mode_strings() {
    assert_eq!(Mode::Block.as_str(), "block");
    assert_eq!(Mode::Audit.as_str(), "audit");
}

#[test]
fn deny_as_strings_and_default() {
    assert_eq!(DenyAs::Eacces.as_str(), "eacces");
    assert_eq!(DenyAs::Offline.as_str(), "offline");
    assert_eq!(DenyAs::default(), DenyAs::Eacces);
}

#[test]
fn plain_encode_denies_as_eacces() {
    let b = sample();
    assert_eq!(get_u64(&b, H_DENY_AS), 0);
    assert_eq!(PolicyView::parse(&b).unwrap().deny_as(), DenyAs::Eacces);
}

#[test]
fn every_setting_round_trips() {
    let rs = rules(SAMPLE);
    let counters = Counters {
        fd: 9,
        ino: 0x1234_5678_9abc,
        slots: 1 << 20,
    };
    for mode in [Mode::Block, Mode::Audit] {
        for deny_as in [DenyAs::Eacces, DenyAs::Offline] {
            for (flags, counters) in [(0, None), (FLAG_ALLOW_UNGUARDED, Some(counters))] {
                let event_key = [flags as u8 + 1; 16];
                let settings = Settings {
                    mode,
                    deny_as,
                    flags,
                    counters,
                    event_key,
                };
                let b = encode_full(settings, 77, &rs);
                assert_eq!(get_u64(&b, H_DENY_AS), (deny_as == DenyAs::Offline) as u64);
                let v = PolicyView::parse(&b).expect("valid policy");
                assert_eq!(v.mode(), mode);
                assert_eq!(v.deny_as(), deny_as, "{settings:?}");
                assert_eq!(v.allow_unguarded(), flags != 0);
                assert_eq!(v.counters(), counters);
                assert_eq!(v.launcher_pid(), 77);
                assert_eq!(v.event_key(), event_key);
                // deny_as changes nothing else: the rules and matching are the same.
                assert_eq!(b[HEADER_LEN..], sample()[HEADER_LEN..]);
                assert_eq!(v.match_addr(ip("203.0.113.5"), 85), Some(1));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decode errors
// ---------------------------------------------------------------------------------------------

#[test]
fn truncated_policies_are_too_short_or_bad_length() {
    let b = sample();
    assert_eq!(parse_err(&[]), DecodeError::TooShort);
    assert_eq!(parse_err(&b[..HEADER_LEN - 1]), DecodeError::TooShort);
    assert_eq!(parse_err(&b[..1]), DecodeError::TooShort);
    // A whole header but not the whole policy: the length field disagrees.
    assert_eq!(parse_err(&b[..HEADER_LEN]), DecodeError::BadLength);
    assert_eq!(parse_err(&b[..b.len() - 1]), DecodeError::BadLength);
}

#[test]
fn flipped_magic_is_bad_magic() {
    for i in 0..8 {
        let mut b = sample();
        b[i] ^= 0x20;
        assert_eq!(parse_err(&b), DecodeError::BadMagic, "byte {i}");
        fix_checksum(&mut b);
        assert_eq!(
            parse_err(&b),
            DecodeError::BadMagic,
            "byte {i}, checksum fixed"
        );
    }
}

#[test]
fn other_version_is_bad_version() {
    // 1 is the format before the index, 2 the one before `deny_as`, 3 the one before the
    // event key and the grantable rules.
    for version in [0, 1, 2, 3, 5, u32::MAX] {
        assert_eq!(
            err_after(|b| put_u32(b, H_VERSION, version)),
            DecodeError::BadVersion
        );
    }
}

#[test]
fn length_field_or_extra_bytes_are_bad_length() {
    let mut b = sample();
    b.push(0);
    assert_eq!(parse_err(&b), DecodeError::BadLength);
    let n = sample().len() as u32;
    assert_eq!(
        err_after(|b| put_u32(b, H_TOTAL, n + 1)),
        DecodeError::BadLength
    );
    assert_eq!(
        err_after(|b| put_u32(b, H_TOTAL, n - 1)),
        DecodeError::BadLength
    );
    assert_eq!(
        err_after(|b| put_u32(b, H_TOTAL, 0)),
        DecodeError::BadLength
    );
    assert_eq!(
        err_after(|b| put_u32(b, H_TOTAL, u32::MAX)),
        DecodeError::BadLength
    );
    // Extra bytes after the grantable rules, with a length field and checksum that agree, are
    // refused: the grantable section ends the policy.
    let mut b = sample();
    b.extend_from_slice(b"trailing");
    let len = b.len() as u32;
    put_u32(&mut b, H_TOTAL, len);
    fix_checksum(&mut b);
    assert_eq!(parse_err(&b), DecodeError::BadGrantable);
    // Extra bytes at the end of the strings area (before the index) are unused and harmless.
    let mut b = sample();
    let at = index_off(&b);
    b.splice(at..at, *b"unused");
    let len = b.len() as u32;
    put_u32(&mut b, H_TOTAL, len);
    put_u32(&mut b, H_INDEX_OFF, at as u32 + 6);
    let grantable_off = u32::from_le_bytes(b[88..92].try_into().unwrap());
    put_u32(&mut b, 88, grantable_off + 6);
    fix_checksum(&mut b);
    let v = PolicyView::parse(&b).expect("unused string bytes are valid");
    assert_eq!(v.match_name(b"www.example.org"), Some(4));
}

#[test]
fn rule_count_past_the_end_is_bad_length() {
    let n = SAMPLE.len() as u32;
    // Records past the end of the policy.
    assert_eq!(
        err_after(|b| put_u32(b, H_COUNT, 1000)),
        DecodeError::BadLength
    );
    let total = sample().len();
    let fits = ((total - HEADER_LEN) / RULE_LEN) as u32;
    assert_eq!(
        err_after(|b| put_u32(b, H_COUNT, fits + 1)),
        DecodeError::BadLength
    );
    assert!(fits > n);
}

#[test]
fn corrupt_checksum_or_body_is_bad_checksum() {
    let mut b = sample();
    b[CHECKSUM_AT] ^= 1;
    assert_eq!(parse_err(&b), DecodeError::BadChecksum);
    let mut b = sample();
    let last = b.len() - 1;
    b[last] ^= 1;
    assert_eq!(parse_err(&b), DecodeError::BadChecksum);
    let mut b = sample();
    b[rule_at(1) + 8] ^= 0x80; // the address of a rule
    assert_eq!(parse_err(&b), DecodeError::BadChecksum);
    let mut b = sample();
    b[H_MODE] = 1; // mode changed without resealing
    assert_eq!(parse_err(&b), DecodeError::BadChecksum);
    let mut b = sample();
    b[60] = 1; // the counters' fields are covered too
    assert_eq!(parse_err(&b), DecodeError::BadChecksum);
    let mut b = sample();
    b[H_DENY_AS] = 1; // eacces turned into offline without resealing
    assert_eq!(parse_err(&b), DecodeError::BadChecksum);
}

#[test]
fn unknown_deny_as_is_bad_deny_as() {
    for value in [2, 3, 0x100, 1 << 32, (1 << 32) | 1, u64::MAX] {
        assert_eq!(
            err_after(|b| put_u64(b, H_DENY_AS, value)),
            DecodeError::BadDenyAs,
            "{value:#x}"
        );
    }
    let mut b = sample();
    put_u64(&mut b, H_DENY_AS, 1);
    fix_checksum(&mut b);
    assert_eq!(PolicyView::parse(&b).unwrap().deny_as(), DenyAs::Offline);
}

#[test]
fn unknown_mode_is_bad_mode() {
    for mode in [2, 3, 0x100, u32::MAX] {
        assert_eq!(
            err_after(|b| put_u32(b, H_MODE, mode)),
            DecodeError::BadMode
        );
    }
}

#[test]
fn rule_count_above_limit_is_too_many_rules() {
    for count in [MAX_RULES as u32 + 1, u32::MAX] {
        assert_eq!(
            err_after(|b| put_u32(b, H_COUNT, count)),
            DecodeError::TooManyRules
        );
    }
}

#[test]
fn unknown_rule_kind_is_bad_rule() {
    // (5 is `loopback:own`, version 4.)
    for kind in [6u8, 9, 0xff] {
        assert_eq!(
            err_after(|b| b[rule_at(0) + R_KIND] = kind),
            DecodeError::BadRule
        );
    }
}

#[test]
fn out_of_range_prefix_is_bad_rule() {
    // Rule 1 is IPv4, rule 2 IPv6, rule 0 loopback, rule 3 a name.
    assert_eq!(
        err_after(|b| b[rule_at(1) + R_PREFIX] = 33),
        DecodeError::BadRule
    );
    assert_eq!(
        err_after(|b| b[rule_at(2) + R_PREFIX] = 129),
        DecodeError::BadRule
    );
    assert_eq!(
        err_after(|b| b[rule_at(0) + R_PREFIX] = 1),
        DecodeError::BadRule
    );
    assert_eq!(
        err_after(|b| b[rule_at(3) + R_PREFIX] = 8),
        DecodeError::BadRule
    );
    assert_eq!(
        err_after(|b| b[rule_at(4) + R_PREFIX] = 8),
        DecodeError::BadRule
    );
    // The maximum is fine (a record changed to it disagrees with the index instead).
    assert_eq!(
        err_after(|b| b[rule_at(1) + R_PREFIX] = 32),
        DecodeError::BadIndex
    );
    let b = encode(
        Mode::Block,
        1,
        &rules(&[
            "203.0.113.1/32",
            "[2001:db8::1/128]:443",
            "0.0.0.0/0:1",
            "::/0",
        ]),
    );
    assert_eq!(b[rule_at(0) + R_PREFIX], 32);
    assert_eq!(b[rule_at(1) + R_PREFIX], 128);
    let v = PolicyView::parse(&b).expect("/32 and /128 are valid");
    assert_eq!(v.match_addr(ip("203.0.113.1"), 9), Some(0));
    assert_eq!(v.match_addr(ip("2001:db8::1"), 443), Some(1));
    assert_eq!(v.match_addr(ip("2001:db8::1"), 444), Some(3));
    assert_eq!(v.match_addr(ip("198.51.100.1"), 1), Some(2));
}

#[test]
fn reversed_port_range_is_bad_rule() {
    assert_eq!(
        err_after(|b| {
            put_u16(b, rule_at(1) + R_PORT_LO, 91);
            put_u16(b, rule_at(1) + R_PORT_HI, 90);
        }),
        DecodeError::BadRule
    );
}

#[test]
fn string_offsets_or_lengths_outside_the_strings_are_bad_rule() {
    let strings_len = (index_off(&sample()) - rule_at(SAMPLE.len())) as u32;
    let last = SAMPLE.len() - 1;
    let cases: Vec<(usize, usize, u32)> = vec![
        (0, R_TEXT_OFF, strings_len),
        (0, R_TEXT_OFF, u32::MAX),
        (0, R_TEXT_LEN, strings_len + 1),
        (0, R_TEXT_LEN, u32::MAX),
        (
            last,
            R_TEXT_LEN,
            get_u32(&sample(), rule_at(last) + R_TEXT_LEN) + 1,
        ),
        (3, R_NAME_OFF, strings_len),
        (3, R_NAME_OFF, u32::MAX),
        (3, R_NAME_LEN, u32::MAX),
        (4, R_NAME_LEN, strings_len + 1),
    ];
    for (rule, field, value) in cases {
        assert_eq!(
            err_after(|b| put_u32(b, rule_at(rule) + field, value)),
            DecodeError::BadRule,
            "rule {rule} field {field} = {value}"
        );
    }
    // The end of the strings itself is a valid (empty) place.
    let mut b = sample();
    put_u32(&mut b, rule_at(0) + R_TEXT_OFF, strings_len);
    put_u32(&mut b, rule_at(0) + R_TEXT_LEN, 0);
    fix_checksum(&mut b);
    let v = PolicyView::parse(&b).expect("empty text at the end is in bounds");
    assert_eq!(v.rule(0).unwrap().text, "");
}

#[test]
fn invalid_utf8_text_is_bad_rule() {
    let mut b = sample();
    let off = rule_at(SAMPLE.len()) + get_u32(&b, rule_at(0) + R_TEXT_OFF) as usize;
    b[off] = 0xff;
    fix_checksum(&mut b);
    assert_eq!(parse_err(&b), DecodeError::BadRule);
}

#[test]
fn bad_stored_names_are_bad_rule() {
    let strings = rule_at(SAMPLE.len());
    // Upper case or a foreign character in a name.
    for byte in [b'E', b'*', b' ', 0, 0xc3] {
        let mut b = sample();
        let off = strings + get_u32(&b, rule_at(3) + R_NAME_OFF) as usize;
        b[off] = byte;
        fix_checksum(&mut b);
        assert_eq!(parse_err(&b), DecodeError::BadRule, "byte {byte:#x}");
    }
    // A name longer than a DNS name can be (the grammar refuses it; a record cannot hold it).
    for (len, ok) in [(253, true), (254, false)] {
        let long = Rule {
            text: "long".into(),
            target: egress_policy::Target::Below("a".repeat(len)),
            ports: PortRange::ALL,
        };
        let b = encode(Mode::Block, 1, &[long]);
        assert_eq!(PolicyView::parse(&b).is_ok(), ok, "{len}");
    }
    // A name rule without a name.
    assert_eq!(
        err_after(|b| put_u32(b, rule_at(3) + R_NAME_LEN, 0)),
        DecodeError::BadRule
    );
    assert_eq!(
        err_after(|b| put_u32(b, rule_at(4) + R_NAME_LEN, 0)),
        DecodeError::BadRule
    );
    // An address rule with a name.
    assert_eq!(
        err_after(|b| put_u32(b, rule_at(1) + R_NAME_LEN, 1)),
        DecodeError::BadRule
    );
    assert_eq!(
        err_after(|b| put_u32(b, rule_at(0) + R_NAME_LEN, 1)),
        DecodeError::BadRule
    );
}

#[test]
fn changing_a_rule_kind_is_checked_like_any_other() {
    // A name rule turned into an address rule keeps its name: malformed.
    assert_eq!(
        err_after(|b| b[rule_at(3) + R_KIND] = 1),
        DecodeError::BadRule
    );
    // An address rule turned into a name rule has no name: malformed.
    assert_eq!(
        err_after(|b| b[rule_at(1) + R_KIND] = 3),
        DecodeError::BadRule
    );
}

#[test]
fn decode_error_messages() {
    let all = [
        (DecodeError::TooShort, "policy is truncated"),
        (DecodeError::BadMagic, "policy has the wrong magic number"),
        (DecodeError::BadVersion, "policy has an unknown version"),
        (
            DecodeError::BadLength,
            "policy length does not match its header",
        ),
        (DecodeError::BadChecksum, "policy checksum does not match"),
        (DecodeError::BadMode, "policy has an unknown mode"),
        (DecodeError::TooManyRules, "policy declares too many rules"),
        (DecodeError::BadRule, "policy holds a malformed rule"),
        (DecodeError::BadIndex, "policy has a malformed rule index"),
        (
            DecodeError::BadDenyAs,
            "policy has an unknown deny-as setting",
        ),
    ];
    for (e, msg) in all {
        assert_eq!(e.as_str(), msg);
        assert_eq!(e.to_string(), msg);
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        assert_eq!(boxed.to_string(), msg);
    }
}

// ---------------------------------------------------------------------------------------------
// Locator
// ---------------------------------------------------------------------------------------------

#[test]
fn locator_parses_the_environment_value() {
    assert_eq!(
        Locator::parse(b"v1:1:3:4:5"),
        Some(Locator {
            launcher_pid: 1,
            fd: 3,
            dev: 4,
            ino: 5
        })
    );
    assert_eq!(
        Locator::parse(b"v1:4294967295:2147483647:18446744073709551615:0"),
        Some(Locator {
            launcher_pid: u32::MAX,
            fd: i32::MAX,
            dev: u64::MAX,
            ino: 0
        })
    );
    assert_eq!(egress_policy::POLICY_ENV, "EGRESS_RUN_POLICY");
}

#[test]
fn locator_rejects_garbage() {
    for bad in [
        &b""[..],
        b"v1",
        b"v1:",
        b"v2:1:3:4:5",
        b"V1:1:3:4:5",
        b"1:3:4:5",
        b"v1:1:3:4",
        b"v1:1:3:4:",
        b"v1:1:3:4:5:",
        b"v1:1:3:4:5:6",
        b"v1::3:4:5",
        b"v1:1:-3:4:5",
        b"v1:+1:3:4:5",
        b"v1: 1:3:4:5",
        b"v1:1:3:4:5 ",
        b"v1:1:3:0x4:5",
        b"v1:a:3:4:5",
        b"v1:1:3:4:5\n",
        b"v1:1:3:4:\xff",
    ] {
        assert_eq!(
            Locator::parse(bad),
            None,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn locator_rejects_overflowing_numbers() {
    for bad in [
        &b"v1:4294967296:3:4:5"[..],       // pid > u32
        b"v1:1:2147483648:4:5",            // fd > i32
        b"v1:1:3:18446744073709551616:5",  // dev > u64
        b"v1:1:3:4:18446744073709551616",  // ino > u64
        b"v1:1:3:4:99999999999999999999",  // 20 digits, > u64
        b"v1:1:3:4:000000000000000000001", // 21 digits
    ] {
        assert_eq!(
            Locator::parse(bad),
            None,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn locator_rejects_pid_zero() {
    assert_eq!(Locator::parse(b"v1:0:3:4:5"), None);
    assert_eq!(Locator::parse(b"v1:00:3:4:5"), None);
}

#[test]
fn locator_round_trips_through_its_env_value() {
    for loc in [
        Locator {
            launcher_pid: 1,
            fd: 0,
            dev: 0,
            ino: 0,
        },
        Locator {
            launcher_pid: 4242,
            fd: 7,
            dev: 2049,
            ino: 123_456_789,
        },
        Locator {
            launcher_pid: u32::MAX,
            fd: i32::MAX,
            dev: u64::MAX,
            ino: u64::MAX,
        },
    ] {
        let s = loc.to_env_value();
        assert!(s.starts_with("v1:"));
        assert_eq!(Locator::parse(s.as_bytes()), Some(loc), "{s}");
    }
    assert_eq!(
        Locator {
            launcher_pid: 12,
            fd: 3,
            dev: 4,
            ino: 5
        }
        .to_env_value(),
        "v1:12:3:4:5"
    );
}

#[test]
fn socket_name_is_egress_run_pid_dot_inode() {
    let mut buf = [0u8; 64];
    let loc = Locator::parse(b"v1:1234:3:4:5678").unwrap();
    let n = loc.socket_name(&mut buf);
    assert_eq!(&buf[..n], b"egress-run.1234.5678");

    let loc = Locator {
        launcher_pid: 1,
        fd: 3,
        dev: 99,
        ino: 0,
    };
    let mut buf = [0xAAu8; 64];
    let n = loc.socket_name(&mut buf);
    assert_eq!(&buf[..n], b"egress-run.1.0");

    // The longest name still fits the buffer.
    let loc = Locator {
        launcher_pid: u32::MAX,
        fd: 3,
        dev: u64::MAX,
        ino: u64::MAX,
    };
    let n = loc.socket_name(&mut buf);
    assert_eq!(&buf[..n], b"egress-run.4294967295.18446744073709551615");
    assert!(n <= 64);
}

#[test]
fn policy_service_name_is_the_event_socket_name_dot_policy() {
    let mut buf = [0u8; 64];
    let loc = Locator::parse(b"v1:1234:3:4:5678").unwrap();
    let n = loc.policy_service_name(&mut buf);
    assert_eq!(&buf[..n], b"egress-run.1234.5678.policy");

    // The longest name still fits, whole.
    let loc = Locator {
        launcher_pid: u32::MAX,
        fd: 3,
        dev: u64::MAX,
        ino: u64::MAX,
    };
    let n = loc.policy_service_name(&mut buf);
    assert_eq!(
        &buf[..n],
        b"egress-run.4294967295.18446744073709551615.policy"
    );
}

#[test]
fn grantable_rules_travel_as_text_after_the_index() {
    let run = rules(SAMPLE);
    let grantable = rules(&["loopback", "*.example.test:443"]);
    let bytes = egress_policy::wire::encode_with_grantable(
        egress_policy::wire::Settings::default(),
        4242,
        &run,
        &grantable,
    );
    let v = PolicyView::parse(&bytes).expect("valid");
    assert_eq!(
        v.grantable().collect::<Vec<_>>(),
        ["loopback", "*.example.test:443"]
    );
    assert_eq!(v.rule_count(), SAMPLE.len());
    // Grantable rules never match as run rules.
    assert_eq!(v.match_name(b"a.example.test"), None);
    assert_eq!(PolicyView::parse(&sample()).unwrap().grantable().count(), 0);
}

#[test]
fn malformed_grantable_sections_are_refused() {
    let grantable = rules(&["loopback"]);
    let good = egress_policy::wire::encode_with_grantable(
        egress_policy::wire::Settings::default(),
        1,
        &[],
        &grantable,
    );
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        fix_checksum(&mut b);
        PolicyView::parse(&b).map(|_| ()).unwrap_err()
    };
    let end = good.len();
    // Not ended by a newline, an empty entry, not UTF-8, an offset before the index.
    assert_eq!(edit(&|b| b[end - 1] = b'x'), DecodeError::BadGrantable);
    assert_eq!(edit(&|b| b[end - 2] = b'\n'), DecodeError::BadGrantable);
    assert_eq!(edit(&|b| b[end - 3] = 0xff), DecodeError::BadGrantable);
    assert_eq!(edit(&|b| put_u32(b, 88, 0)), DecodeError::BadGrantable);
    assert_eq!(edit(&|b| put_u32(b, 92, 1)), DecodeError::BadGrantable);
}

#[test]
fn loopback_own_rules_sit_in_the_loopback_section_and_never_match_there() {
    let bytes = encode(
        Mode::Block,
        1,
        &rules(&["loopback:own", "loopback:80", "203.0.113.7"]),
    );
    let v = PolicyView::parse(&bytes).expect("valid");
    assert_eq!(v.loopback_own_rule(), Some(0));
    assert_eq!(v.match_addr("127.0.0.1".parse().unwrap(), 80), Some(1));
    assert_eq!(v.match_addr("127.0.0.1".parse().unwrap(), 81), None);
    assert_eq!(v.rule(0).unwrap().text, "loopback:own");
    let plain = encode(Mode::Block, 1, &rules(&["loopback"]));
    assert_eq!(PolicyView::parse(&plain).unwrap().loopback_own_rule(), None);
}
