//! Tests of the policy's rule index (wire.rs, "index"): its exact layout, that `PolicyView::parse`
//! refuses every inconsistent index, and that indexed matching returns the first matching rule,
//! for small policies and for a policy of 10,000 rules.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use egress_policy::wire::{GROUP_LEN, HEADER_LEN, INDEX_HEADER_LEN, RULE_LEN, SLOT_LEN};
use egress_policy::{encode, parse_rule, DecodeError, Mode, PolicyView, Rule};

const H_COUNT: usize = 20;
const H_TOTAL: usize = 24;
const H_INDEX_OFF: usize = 44;
const R_KIND: usize = 0;
const R_PREFIX: usize = 1;
const R_ADDR: usize = 8;
const V4_ENTRY_LEN: usize = 8;
const V6_ENTRY_LEN: usize = 20;

/// Recomputes the checksum after a test edited the bytes.
fn fix_checksum(bytes: &mut [u8]) {
    egress_policy::wire::reseal(bytes);
}

fn get_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
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

/// Offsets of the parts of an encoded index.
struct Layout {
    /// The index header.
    at: usize,
    groups_at: usize,
    slots_at: usize,
    v4_at: usize,
    v6_at: usize,
}

fn layout(b: &[u8]) -> Layout {
    let at = get_u32(b, H_INDEX_OFF) as usize;
    let count = |k: usize| get_u32(b, at + 4 * k) as usize;
    let groups = count(3) + count(4);
    let groups_at = at + INDEX_HEADER_LEN;
    let slots_at = groups_at + groups * GROUP_LEN;
    let v4_entries: usize = (0..count(3))
        .map(|g| get_u32(b, groups_at + g * GROUP_LEN + 4) as usize)
        .sum();
    let v4_at = slots_at + (count(0) + count(1) + count(2)) * SLOT_LEN;
    Layout {
        at,
        groups_at,
        slots_at,
        v4_at,
        v6_at: v4_at + v4_entries * V4_ENTRY_LEN,
    }
}

/// Rules of every kind, with duplicates, groups out of prefix order and names out of
/// alphabetical order.
const MIXED: &[&str] = &[
    "10.1.0.0/16:443",      // 0  v4 /16
    "b.example.com",        // 1  name
    "loopback:5432",        // 2  loopback
    "[2001:db8::/32]:443",  // 3  v6 /32
    "*.example.org",        // 4  below
    "10.0.0.0/8",           // 5  v4 /8
    "10.1.2.3:80",          // 6  v4 /32
    "a.example.com:443",    // 7  name
    "loopback",             // 8  loopback
    "10.1.0.0/16:80",       // 9  v4 /16, the same network as rule 0
    "::ffff:192.0.2.0/120", // 10 v4 /24 (IPv4-mapped)
    "*.a.example.org",      // 11 below, under rule 4
    "2001:db8::1",          // 12 v6 /128
    "A.Example.com.",       // 13 name, the same as rule 7
];

fn mixed() -> Vec<u8> {
    encode(Mode::Block, 1, &rules(MIXED))
}

/// Applies `edit` to the encoded MIXED policy, reseals it and returns the decode error.
fn err_after(edit: impl FnOnce(&mut Vec<u8>, &Layout)) -> DecodeError {
    let mut b = mixed();
    let l = layout(&b);
    edit(&mut b, &l);
    fix_checksum(&mut b);
    match PolicyView::parse(&b) {
        Ok(_) => panic!("the edited policy was accepted"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------------------------------

#[test]
fn index_layout_is_sections_of_sorted_rule_indices() {
    let b = mixed();
    let l = layout(&b);
    let counts: Vec<u32> = (0..6).map(|k| get_u32(&b, l.at + 4 * k)).collect();
    // loopback, names, below, IPv4 groups, IPv6 groups, reserved
    assert_eq!(counts, [2, 3, 2, 4, 2, 0]);
    // Groups in order of their lowest rule: (prefix, len, first_rule).
    let groups: Vec<(u8, u32, u32)> = (0..6)
        .map(|g| {
            let at = l.groups_at + g * GROUP_LEN;
            assert_eq!(b[at + 1..at + 4], [0, 0, 0]);
            (b[at], get_u32(&b, at + 4), get_u32(&b, at + 8))
        })
        .collect();
    assert_eq!(
        groups,
        [
            (16, 2, 0),
            (8, 1, 5),
            (32, 1, 6),
            (24, 1, 10),
            (32, 1, 3),
            (128, 1, 12)
        ]
    );
    let slots: Vec<u32> = (0..7).map(|s| get_u32(&b, l.slots_at + 4 * s)).collect();
    // Loopback in rule order; names sorted (a.example.com twice, then b.example.com); below
    // names sorted (a.example.org before example.org).
    assert_eq!(slots, [2, 8, 7, 13, 1, 11, 4]);
    let v4: Vec<(Ipv4Addr, u32)> = (0..5)
        .map(|e| {
            let at = l.v4_at + e * V4_ENTRY_LEN;
            (Ipv4Addr::from(get_u32(&b, at)), get_u32(&b, at + 4))
        })
        .collect();
    let v4_expected = [
        ("10.1.0.0", 0),
        ("10.1.0.0", 9),
        ("10.0.0.0", 5),
        ("10.1.2.3", 6),
        ("192.0.2.0", 10),
    ];
    for (got, (net, rule)) in v4.iter().zip(v4_expected) {
        assert_eq!(*got, (net.parse().unwrap(), rule));
    }
    let v6: Vec<(Ipv6Addr, u32)> = (0..2)
        .map(|e| {
            let at = l.v6_at + e * V6_ENTRY_LEN;
            let net = u128::from_le_bytes(b[at..at + 16].try_into().unwrap());
            (Ipv6Addr::from(net), get_u32(&b, at + 16))
        })
        .collect();
    assert_eq!(v6, [(ip6("2001:db8::"), 3), (ip6("2001:db8::1"), 12)]);
    assert_eq!(l.v6_at + 2 * V6_ENTRY_LEN, b.len());
}

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

#[test]
fn the_index_is_covered_by_the_checksum() {
    let b = mixed();
    let l = layout(&b);
    for at in [l.at, l.groups_at, l.slots_at, l.v4_at, l.v6_at, b.len() - 1] {
        let mut bad = b.clone();
        bad[at] ^= 1;
        assert_eq!(
            PolicyView::parse(&bad).unwrap_err(),
            DecodeError::BadChecksum,
            "byte {at}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Matching
// ---------------------------------------------------------------------------------------------

/// The reference: the first rule that matches, by a scan of the parsed rules.
fn first_addr_rule(rs: &[Rule], ip: IpAddr, port: u16) -> Option<usize> {
    rs.iter().position(|r| r.matches_addr(ip, port))
}

fn first_name_rule(rs: &[Rule], name: &str) -> Option<usize> {
    rs.iter().position(|r| r.matches_name(name))
}

#[test]
fn mixed_policy_matches_the_first_rule() {
    let rs = rules(MIXED);
    let b = encode(Mode::Block, 1, &rs);
    let v = PolicyView::parse(&b).unwrap();
    let cases: &[(&str, u16, Option<usize>)] = &[
        ("10.1.9.9", 443, Some(0)),
        ("10.1.9.9", 80, Some(5)), // rule 5 (/8) comes before rule 9 (same /16, port 80)
        ("10.1.2.3", 80, Some(5)),
        ("10.1.2.3", 443, Some(0)),
        ("::ffff:10.1.2.3", 443, Some(0)),
        ("10.200.0.1", 1, Some(5)),
        ("11.0.0.1", 80, None),
        ("127.0.0.1", 5432, Some(2)),
        ("127.0.0.1", 80, Some(8)),
        ("::1", 5432, Some(2)),
        ("0.0.0.0", 7, Some(8)),
        ("::ffff:127.0.0.1", 7, Some(8)),
        ("192.0.2.200", 7, Some(10)),
        ("::ffff:192.0.2.200", 7, Some(10)),
        ("192.0.3.1", 7, None),
        ("2001:db8::1", 443, Some(3)),
        ("2001:db8::1", 80, Some(12)),
        ("2001:db8::2", 80, None),
        ("2001:db9::1", 443, None),
    ];
    for &(addr, port, expect) in cases {
        assert_eq!(v.match_addr(ip(addr), port), expect, "{addr}:{port}");
        assert_eq!(
            first_addr_rule(&rs, ip(addr), port),
            expect,
            "{addr}:{port}"
        );
    }
    let names: &[(&str, Option<usize>)] = &[
        ("a.example.com", Some(7)),
        ("A.EXAMPLE.COM.", Some(7)),
        ("b.example.com", Some(1)),
        ("c.example.com", None),
        ("example.com", None),
        ("example.org", None),
        ("x.example.org", Some(4)),
        ("x.a.example.org", Some(4)),
        ("X.A.Example.Org.", Some(4)),
        ("a.example.org", Some(4)),
        (".example.org", None),
        ("example.org.", None),
        ("a.example.org..", None),
        ("", None),
        (".", None),
        ("..", None),
    ];
    for &(name, expect) in names {
        assert_eq!(v.match_name(name.as_bytes()), expect, "{name:?}");
        assert_eq!(first_name_rule(&rs, name), expect, "{name:?}");
    }
}

#[test]
fn the_lowest_rule_wins_across_groups_and_sections() {
    // The /32 comes last but three other groups and a loopback rule also match.
    let rs = rules(&[
        "*.b.test",
        "127.0.0.0/8:22",
        "0.0.0.0/0:1-100",
        "127.0.0.1/32",
        "loopback",
        "127.0.0.0/16",
        "a.b.test",
    ]);
    let b = encode(Mode::Audit, 1, &rs);
    let v = PolicyView::parse(&b).unwrap();
    assert_eq!(v.match_addr(ip("127.0.0.1"), 22), Some(1));
    assert_eq!(v.match_addr(ip("127.0.0.1"), 50), Some(2));
    assert_eq!(v.match_addr(ip("127.0.0.1"), 500), Some(3));
    assert_eq!(v.match_addr(ip("127.0.0.2"), 500), Some(4));
    assert_eq!(v.match_addr(ip("::1"), 500), Some(4));
    assert_eq!(v.match_addr(ip("203.0.113.7"), 100), Some(2));
    assert_eq!(v.match_addr(ip("203.0.113.7"), 101), None);
    assert_eq!(v.match_name(b"a.b.test"), Some(0));
    assert_eq!(v.match_name(b"b.test"), None);
}

#[test]
fn names_compare_case_insensitively_without_matching_near_misses() {
    let rs = rules(&[
        "abc.test",
        "ab.test",
        "abd.test",
        "*.ab",
        "*.a-b.test",
        "*.a_b.test",
        "abc.tes",
        "zz.test",
    ]);
    let b = encode(Mode::Block, 1, &rs);
    let v = PolicyView::parse(&b).unwrap();
    for name in [
        "ABC.test",
        "abC.TEST.",
        "ab.test",
        "abd.test",
        "abe.test",
        "abc.tes",
        "abc.testx",
        "x.ab",
        "x.AB.",
        "ab",
        "x.a-b.test",
        "x.a_b.test",
        "x.a.b.test",
        "zz.test",
        "zz.tesT",
        "\u{e9}.ab",
        "x\0.ab",
        "ab.test\0",
    ] {
        assert_eq!(
            v.match_name(name.as_bytes()),
            first_name_rule(&rs, name),
            "{name:?}"
        );
    }
    // Bytes that are not UTF-8 are compared as they are.
    assert_eq!(v.match_name(b"\xff.ab"), Some(3));
    assert_eq!(v.match_name(b"\xff\xfe"), None);
}

#[test]
fn many_rules_with_one_network_and_different_ports_keep_rule_order() {
    let texts: Vec<String> = (1..=40)
        .rev()
        .map(|p| format!("198.51.100.7:{}", p * 100))
        .chain(["198.51.100.0/24:150-250".to_string()])
        .collect();
    let rs: Vec<Rule> = texts.iter().map(|t| parse_rule(t).unwrap()).collect();
    let b = encode(Mode::Block, 1, &rs);
    let v = PolicyView::parse(&b).unwrap();
    for port in [0, 100, 150, 200, 250, 300, 3900, 4000, 4001] {
        let a = ip("198.51.100.7");
        assert_eq!(
            v.match_addr(a, port),
            first_addr_rule(&rs, a, port),
            "{port}"
        );
    }
    assert_eq!(v.match_addr(ip("198.51.100.7"), 4000), Some(0));
    assert_eq!(v.match_addr(ip("198.51.100.7"), 200), Some(38));
    assert_eq!(v.match_addr(ip("198.51.100.7"), 150), Some(40));
}

// ---------------------------------------------------------------------------------------------
// Refused indices
// ---------------------------------------------------------------------------------------------

#[test]
fn index_offset_outside_the_policy_is_bad_index() {
    let records_end = HEADER_LEN + MIXED.len() * RULE_LEN;
    let len = mixed().len() as u32;
    for off in [
        0,
        HEADER_LEN as u32,
        records_end as u32 - 1,
        len + 1,
        u32::MAX,
    ] {
        assert_eq!(
            err_after(|b, _| put_u32(b, H_INDEX_OFF, off)),
            DecodeError::BadIndex,
            "{off}"
        );
    }
    // Moved within the strings, the index header reads as garbage.
    for delta in [-1i64, 1, -8] {
        let err = err_after(|b, l| put_u32(b, H_INDEX_OFF, (l.at as i64 + delta) as u32));
        assert!(
            matches!(err, DecodeError::BadIndex | DecodeError::BadRule),
            "{delta}: {err:?}"
        );
    }
    // A policy too short for the index header.
    let err = err_after(|b, l| {
        b.truncate(l.at + INDEX_HEADER_LEN - 1);
        let n = b.len() as u32;
        put_u32(b, H_TOTAL, n);
    });
    // (The grantable section, which follows the index, is found missing first.)
    assert!(
        matches!(err, DecodeError::BadIndex | DecodeError::BadGrantable),
        "{err:?}"
    );
}

#[test]
fn wrong_counts_are_bad_index() {
    for k in 0..6 {
        for delta in [1u32, u32::MAX] {
            assert_eq!(
                err_after(|b, l| {
                    let at = l.at + 4 * k;
                    let v = get_u32(b, at).wrapping_add(delta);
                    put_u32(b, at, v);
                }),
                DecodeError::BadIndex,
                "count {k} + {delta}"
            );
        }
    }
    // Moving a slot from one section to the next keeps the total but not the kinds.
    assert_eq!(
        err_after(|b, l| {
            put_u32(b, l.at, 1);
            put_u32(b, l.at + 4, 4);
        }),
        DecodeError::BadIndex
    );
    // More groups than prefix lengths.
    assert_eq!(
        err_after(|b, l| put_u32(b, l.at + 12, 34)),
        DecodeError::BadIndex
    );
    assert_eq!(
        err_after(|b, l| put_u32(b, l.at + 16, 130)),
        DecodeError::BadIndex
    );
}

/// A named change to an encoded policy.
type Edit = Box<dyn Fn(&mut Vec<u8>, &Layout)>;

/// Swaps `len` bytes at `x` with those at `y` (not overlapping).
fn swap(b: &mut [u8], x: usize, y: usize, len: usize) {
    let tmp: Vec<u8> = b[x..x + len].to_vec();
    b.copy_within(y..y + len, x);
    b[y..y + len].copy_from_slice(&tmp);
}

#[test]
fn bad_group_descriptors_are_bad_index() {
    let g = |l: &Layout, g: usize| l.groups_at + g * GROUP_LEN;
    let cases: Vec<(&str, Edit)> = vec![
        ("IPv4 prefix 33", Box::new(move |b, l| b[g(l, 0)] = 33)),
        ("IPv6 prefix 129", Box::new(move |b, l| b[g(l, 4)] = 129)),
        ("another prefix", Box::new(move |b, l| b[g(l, 0)] = 17)),
        ("a repeated prefix", Box::new(move |b, l| b[g(l, 3)] = 8)),
        ("padding", Box::new(move |b, l| b[g(l, 1) + 2] = 1)),
        (
            "a longer group",
            Box::new(move |b, l| put_u32(b, g(l, 0) + 4, 3)),
        ),
        (
            "lengths moved between groups",
            Box::new(move |b, l| {
                put_u32(b, g(l, 0) + 4, 1);
                put_u32(b, g(l, 1) + 4, 2);
            }),
        ),
        (
            "an empty group",
            Box::new(move |b, l| {
                put_u32(b, g(l, 0) + 4, 0);
                put_u32(b, g(l, 1) + 4, 3);
            }),
        ),
        (
            "first_rule not the lowest",
            Box::new(move |b, l| put_u32(b, g(l, 0) + 8, 9)),
        ),
        (
            // Groups 2 and 3 (one entry each) swapped with their entries: consistent but for
            // the order of their lowest rules.
            "groups out of order",
            Box::new(move |b, l| {
                swap(b, g(l, 2), g(l, 3), GROUP_LEN);
                let e = |i: usize| l.v4_at + i * V4_ENTRY_LEN;
                swap(b, e(3), e(4), V4_ENTRY_LEN);
            }),
        ),
    ];
    for (what, edit) in cases {
        assert_eq!(
            err_after(|b, l| edit(b, l)),
            DecodeError::BadIndex,
            "{what}"
        );
    }
}

#[test]
fn bad_slots_and_entries_are_bad_index() {
    let slot = |l: &Layout, s: usize| l.slots_at + s * SLOT_LEN;
    let v4 = |l: &Layout, e: usize| l.v4_at + e * V4_ENTRY_LEN;
    let v6 = |l: &Layout, e: usize| l.v6_at + e * V6_ENTRY_LEN;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "slot past the rules",
            Box::new(move |b, l| put_u32(b, slot(l, 0), 14)),
        ),
        (
            "slot far out",
            Box::new(move |b, l| put_u32(b, slot(l, 4), u32::MAX)),
        ),
        (
            "loopback slot of a name",
            Box::new(move |b, l| put_u32(b, slot(l, 1), 1)),
        ),
        (
            "loopback twice",
            Box::new(move |b, l| put_u32(b, slot(l, 1), 2)),
        ),
        (
            "loopback out of order",
            Box::new(move |b, l| swap(b, slot(l, 0), slot(l, 1), 4)),
        ),
        (
            "name slot of a below rule",
            Box::new(move |b, l| put_u32(b, slot(l, 4), 4)),
        ),
        (
            "the same name twice",
            Box::new(move |b, l| put_u32(b, slot(l, 3), 7)),
        ),
        (
            "names out of order",
            Box::new(move |b, l| swap(b, slot(l, 3), slot(l, 4), 4)),
        ),
        (
            "duplicate names out of rule order",
            Box::new(move |b, l| swap(b, slot(l, 2), slot(l, 3), 4)),
        ),
        (
            "below names out of order",
            Box::new(move |b, l| swap(b, slot(l, 5), slot(l, 6), 4)),
        ),
        (
            "entry of another group",
            Box::new(move |b, l| put_u32(b, v4(l, 2) + 4, 6)),
        ),
        (
            "entry of a v6 rule",
            Box::new(move |b, l| put_u32(b, v4(l, 3) + 4, 12)),
        ),
        (
            "entry network changed",
            Box::new(move |b, l| b[v4(l, 3)] ^= 1),
        ),
        (
            "v6 network changed",
            Box::new(move |b, l| b[v6(l, 1) + 15] ^= 0x80),
        ),
        (
            "v6 entry of a v4 rule",
            Box::new(move |b, l| put_u32(b, v6(l, 1) + 16, 6)),
        ),
        (
            "entries of one network out of rule order",
            Box::new(move |b, l| swap(b, v4(l, 0), v4(l, 1), V4_ENTRY_LEN)),
        ),
        (
            "records reordered but not the index",
            Box::new(move |b, _| {
                let (x, y) = (HEADER_LEN + RULE_LEN, HEADER_LEN + 7 * RULE_LEN);
                swap(b, x, y, RULE_LEN); // rules 1 and 7, both names
            }),
        ),
        (
            "a record's kind changed to another address family",
            Box::new(move |b, _| b[HEADER_LEN + 6 * RULE_LEN + R_KIND] = 2),
        ),
        (
            "a record's prefix changed",
            Box::new(move |b, _| b[HEADER_LEN + 5 * RULE_LEN + R_PREFIX] = 9),
        ),
        (
            "a record's network changed",
            Box::new(move |b, _| b[HEADER_LEN + 6 * RULE_LEN + R_ADDR + 3] ^= 1),
        ),
    ];
    for (what, edit) in cases {
        assert_eq!(
            err_after(|b, l| edit(b, l)),
            DecodeError::BadIndex,
            "{what}"
        );
    }
}

#[test]
fn every_change_to_the_index_alone_is_refused() {
    // For given records the index is canonical: no other index bytes are valid.
    let b = mixed();
    let l = layout(&b);
    for at in l.at..b.len() {
        for x in [0x01u8, 0x02, 0x10, 0x80, 0xff] {
            let mut bad = b.clone();
            bad[at] ^= x;
            fix_checksum(&mut bad);
            assert_eq!(
                PolicyView::parse(&bad).unwrap_err(),
                DecodeError::BadIndex,
                "byte {at} ^ {x:#x}"
            );
        }
    }
}

#[test]
fn a_record_count_that_disagrees_with_the_index_is_refused() {
    let err = err_after(|b, _| put_u32(b, H_COUNT, 13));
    assert!(
        matches!(err, DecodeError::BadIndex | DecodeError::BadRule),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 10,000 rules: indexed matching agrees with a scan of the rules
// ---------------------------------------------------------------------------------------------

/// SplitMix64: a fixed pseudo-random sequence, so the test is the same on every run.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A port suffix: none, one port or a range.
fn ports(r: &mut Random) -> String {
    match r.below(4) {
        0 | 1 => String::new(),
        2 => format!(":{}", 1 + r.below(1024)),
        _ => {
            let lo = 1 + r.below(1024);
            format!(":{lo}-{}", lo + r.below(64))
        }
    }
}

/// One of 10,000 rules, drawn from narrow address and name spaces so that rules overlap,
/// nest and repeat.
fn random_rule(r: &mut Random) -> String {
    let p = ports(r);
    match r.below(16) {
        0..=4 => {
            let prefix = [32, 32, 32, 24, 16, 8, 0, 28, 20, 31][r.below(10) as usize];
            let bits = (0x0a00_0000 | r.below(1 << 16) as u32) & mask4(prefix);
            format!("{}/{prefix}{p}", Ipv4Addr::from(bits))
        }
        5..=7 => {
            let prefix = [128, 128, 64, 48, 32, 0, 127, 96][r.below(8) as usize];
            let bits = (0x2001_0db8_u128 << 96
                | u128::from(r.below(1 << 12)) << 64
                | u128::from(r.below(1 << 8)))
                & mask6(prefix);
            let net = format!("{}/{prefix}", Ipv6Addr::from(bits));
            if p.is_empty() {
                net
            } else {
                format!("[{net}]{p}")
            }
        }
        8 => {
            let prefix = 96 + [32, 24, 16][r.below(3) as usize];
            let v4 = Ipv4Addr::from((0x0a00_0000 | r.below(1 << 16) as u32) & mask4(prefix - 96));
            format!("::ffff:{v4}/{prefix}")
        }
        9..=11 => format!("h{}.d{}.test{p}", r.below(800), r.below(8)),
        12..=14 => format!("*.d{}.test{p}", r.below(400)),
        _ => format!("loopback{p}"),
    }
}

fn mask4(prefix: u32) -> u32 {
    u32::MAX.checked_shl(32 - prefix).unwrap_or(0)
}

fn mask6(prefix: u32) -> u128 {
    u128::MAX.checked_shl(128 - prefix).unwrap_or(0)
}

#[test]
fn ten_thousand_rules_match_like_a_scan_of_the_rules() {
    let mut r = Random(5);
    let texts: Vec<String> = (0..10_000).map(|_| random_rule(&mut r)).collect();
    let rs: Vec<Rule> = texts
        .iter()
        .map(|t| parse_rule(t).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let b = encode(Mode::Block, 1, &rs);
    let v = PolicyView::parse(&b).expect("10,000 rules encode to a valid policy");
    assert_eq!(v.rule_count(), 10_000);

    let mut hits = 0;
    for _ in 0..4000 {
        let port = match r.below(3) {
            0 => 0,
            1 => 1 + r.below(1100) as u16,
            _ => r.next() as u16,
        };
        let v4 = Ipv4Addr::from(0x0a00_0000 | r.below(1 << 17) as u32);
        let addr = match r.below(6) {
            0 | 1 => IpAddr::V4(v4),
            2 => IpAddr::V6(v4.to_ipv6_mapped()),
            3 | 4 => IpAddr::V6(Ipv6Addr::from(
                0x2001_0db8_u128 << 96
                    | u128::from(r.below(1 << 12)) << 64
                    | u128::from(r.below(1 << 9)),
            )),
            _ => ip(["127.0.0.1", "::1", "0.0.0.0", "127.3.2.1", "::"][r.below(5) as usize]),
        };
        let expect = first_addr_rule(&rs, addr, port);
        hits += usize::from(expect.is_some());
        assert_eq!(v.match_addr(addr, port), expect, "{addr}:{port}");
    }
    assert!(hits > 1000, "only {hits} address probes matched");

    let mut hits = 0;
    for _ in 0..4000 {
        let mut name = match r.below(4) {
            0 => format!("h{}.d{}.test", r.below(900), r.below(9)),
            1 => format!("x.h{}.d{}.test", r.below(900), r.below(9)),
            2 => format!("d{}.test", r.below(450)),
            _ => format!("a.b.d{}.test", r.below(450)),
        };
        if r.below(2) == 0 {
            name = name.to_ascii_uppercase();
        }
        if r.below(3) == 0 {
            name.push('.');
        }
        let expect = first_name_rule(&rs, &name);
        hits += usize::from(expect.is_some());
        assert_eq!(v.match_name(name.as_bytes()), expect, "{name}");
    }
    assert!(hits > 1000, "only {hits} name probes matched");

    // Only the last rules match (the /0 rules, which would match first, are left out).
    let target = ip("203.0.113.7");
    let mut last: Vec<Rule> = rs
        .iter()
        .filter(|r| !r.matches_addr(target, 443) && !r.matches_addr(target, 444))
        .cloned()
        .collect();
    last.push(parse_rule("203.0.113.7:443").unwrap());
    last.push(parse_rule("*.only-last.test").unwrap());
    let n = last.len();
    assert!(n > 9_000);
    let b = encode(Mode::Block, 1, &last);
    let v = PolicyView::parse(&b).unwrap();
    assert_eq!(v.match_addr(target, 443), Some(n - 2));
    assert_eq!(v.match_addr(target, 444), None);
    assert_eq!(v.match_name(b"a.Only-Last.test."), Some(n - 1));
}
