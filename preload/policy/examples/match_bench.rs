//! Times `PolicyView::match_addr` and `match_name` for policies of 1, 100 and 10,000 rules, in
//! their worst cases: only the last rule matches, or nothing does. Run it by hand:
//!
//! ```text
//! cargo run --release -p egress-policy --example match_bench
//! ```
//!
//! Matching must cost about the same for every size, up to 10,000 rules.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use egress_policy::{encode, parse_rule, Mode, PolicyView, Rule};

/// The `i`th of the other rules: IPv4 and IPv6 networks of many prefix lengths, loopback,
/// names and below names. Their networks lie on both sides of 10.128.0.0/16 and
/// 2001:db8:8000::/48 but never in them, and their names have the length of the queried ones,
/// so that the queries below fall within every group's range and every name search runs to
/// the end: the worst case for the index.
fn filler_rule(i: usize) -> String {
    let x = (i % 255 + usize::from(i % 255 >= 128)) as u32; // 0 to 255 but 128
    let (b, c) = ((i >> 8) & 0xff, i & 0xff);
    match i % 8 {
        0 | 1 => format!("10.{x}.{b}.{c}:{}", 1 + i % 1000),
        2 => {
            let prefix = 16 + (i / 8) % 9;
            let bits =
                (0x0a00_0000 | x << 16 | (i as u32 & 0xff) << 8) & (u32::MAX << (32 - prefix));
            format!("{}/{prefix}", Ipv4Addr::from(bits))
        }
        3 => format!(
            "[2001:db8:{:x}:{b:x}::{c:x}]:443",
            x << 8 | (i as u32 >> 8 & 0xff)
        ),
        4 => {
            let prefix = 48 + (i / 8) % 17;
            let hextets = u128::from(x << 8 | (i as u32 & 0xff)) << 16 | (i as u128 >> 8 & 0xffff);
            let bits = (0x2001_0db8_u128 << 96 | hextets << 64) & (u128::MAX << (128 - prefix));
            format!("{}/{prefix}", Ipv6Addr::from(bits))
        }
        5 => format!("host{i:05}.example.net:443"),
        6 => format!("*.zone{i:05}.example.net"),
        _ => "loopback:5432".to_string(),
    }
}

fn policy(n: usize, last: &str) -> Vec<Rule> {
    let mut texts: Vec<String> = (0..n.saturating_sub(1)).map(filler_rule).collect();
    texts.push(last.to_string());
    texts
        .iter()
        .map(|t| parse_rule(t).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// Nanoseconds per call of `f`: the best of five runs of at least 50 ms each, so that other
/// work on the machine disturbs the figure less.
fn ns_per_call(mut f: impl FnMut() -> Option<usize>) -> f64 {
    let mut iters: u64 = 16;
    let mut best = f64::INFINITY;
    let mut runs = 0;
    while runs < 5 {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(f());
        }
        let took = start.elapsed();
        if took < Duration::from_millis(50) {
            iters *= 2;
            continue;
        }
        best = best.min(took.as_nanos() as f64 / iters as f64);
        runs += 1;
    }
    best
}

fn main() {
    let sizes = [1usize, 100, 10_000];
    let among_v4: IpAddr = "10.128.0.1".parse().unwrap();
    let among_v6: IpAddr = "2001:db8:8000::7".parse().unwrap();
    let far_v4: IpAddr = "198.51.100.1".parse().unwrap();
    println!(
        "{:<44} {:>12} {:>12} {:>12}",
        "case (ns per lookup)", "1 rule", "100 rules", "10000 rules"
    );
    type Case = (
        &'static str,
        &'static str,
        Box<dyn Fn(&PolicyView<'_>) -> Option<usize>>,
    );
    let cases: Vec<Case> = vec![
        (
            "match_addr v4, only the last rule",
            "10.128.0.1:443",
            Box::new(move |v| v.match_addr(among_v4, 443)),
        ),
        (
            "match_addr v6, only the last rule",
            "2001:db8:8000::/48",
            Box::new(move |v| v.match_addr(among_v6, 443)),
        ),
        (
            "match_addr v4, no rule",
            "10.128.0.1:443",
            Box::new(move |v| v.match_addr(among_v4, 80)),
        ),
        (
            "match_addr v4, no rule, far from all",
            "10.128.0.1:443",
            Box::new(move |v| v.match_addr(far_v4, 80)),
        ),
        (
            "match_name exact, only the last rule",
            "hostlast0.example.net:443",
            Box::new(|v| v.match_name(b"HostLast0.example.net.")),
        ),
        (
            "match_name below, only the last rule",
            "*.zonelast.example.net",
            Box::new(|v| v.match_name(b"www.cdn.ZoneLast.example.net")),
        ),
        (
            "match_name, no rule",
            "*.zonelast.example.net",
            Box::new(|v| v.match_name(b"www.zone99999.example.net")),
        ),
    ];
    let mut row = format!("{:<44}", "PolicyView::parse (us per policy)");
    for &n in &sizes {
        let bytes = encode(Mode::Block, 1, &policy(n, "loopback"));
        let mut best = f64::INFINITY;
        for _ in 0..20 {
            let start = Instant::now();
            black_box(PolicyView::parse(black_box(&bytes)).is_ok());
            best = best.min(start.elapsed().as_secs_f64() * 1e6);
        }
        row.push_str(&format!(" {best:>12.1}"));
    }
    println!("{row}");
    for (label, last, run) in &cases {
        let mut row = format!("{label:<44}");
        for &n in &sizes {
            let rules = policy(n, last);
            let bytes = encode(Mode::Block, 1, &rules);
            let view = PolicyView::parse(&bytes).expect("valid policy");
            let found = run(&view);
            let expect = label.contains("last rule").then_some(n - 1);
            assert_eq!(found, expect, "{label}, {n} rules");
            let width = if n == 10_000 { 12 } else { 10 };
            row.push_str(&format!(
                " {:>width$.1}",
                ns_per_call(|| run(black_box(&view)))
            ));
        }
        println!("{row}");
    }
}
