//! Reading reports back: `egress-run report` and `egress-run suggest`, and `--baseline`.
//!
//! A report is read line by line into a small model ([`Reports`]); a line that cannot be read
//! is a [`Problem`] naming it, and everything else is still used. Several files (the jobs of a
//! CI matrix) merge into one [`Reports`]. Views ([`view`]) and the allow-file writer
//! ([`suggest`]) work from that model only, so a report written by this run (the collector's
//! lines) and one read from disk are shown the same way.

pub mod baseline;
pub mod group;
pub mod parse;
pub mod suggest;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use crate::Fatal;

/// The kind of an attempt line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Connect,
    Send,
    Resolve,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "connect" => Some(Kind::Connect),
            "send" => Some(Kind::Send),
            "resolve" => Some(Kind::Resolve),
            _ => None,
        }
    }
}

/// One attempt line (connect, send, resolve).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub kind: Kind,
    pub pid: i64,
    pub exe: String,
    pub proto: Option<String>,
    pub addr: Option<String>,
    pub port: Option<u16>,
    pub host: Option<String>,
    pub deny: bool,
    pub enforced: bool,
    pub rule: Option<String>,
    pub reason: Option<String>,
    pub count: u64,
    /// Index of the file it came from in [`Reports::files`].
    pub file: usize,
}

impl Attempt {
    /// The program's file name (`/usr/bin/python3.11` -> `python3.11`).
    pub fn program(&self) -> &str {
        program_name(&self.exe)
    }

    pub fn ip(&self) -> Option<IpAddr> {
        self.addr.as_deref().and_then(|a| a.parse().ok())
    }

    /// A denial no rule can lift (a source route, a packet socket, a process without policy).
    pub fn unliftable(&self) -> bool {
        self.reason
            .as_deref()
            .is_some_and(|r| r.contains("no rule can allow") || r.contains("no valid policy"))
    }
}

pub fn program_name(exe: &str) -> &str {
    let name = exe.rsplit('/').next().unwrap_or(exe);
    if name.is_empty() {
        "?"
    } else {
        name
    }
}

/// One process line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: i64,
    pub exe: String,
    pub guarded: bool,
    pub reason: Option<String>,
    pub refused: bool,
    pub file: usize,
}

/// What a `run` line says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunInfo {
    pub mode: Option<String>,
    pub rules: Vec<String>,
    pub argv: Vec<String>,
    pub started: Option<String>,
}

/// What a `summary` line says (the totals are recomputed from the lines).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SummaryInfo {
    pub exit_code: Option<i64>,
    pub command_status: Option<i64>,
    pub duration_ms: Option<u64>,
}

/// A line that could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub what: String,
}

/// One report file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileReport {
    pub name: String,
    pub run: Option<RunInfo>,
    /// None: the run was interrupted (egress-run was killed before writing it).
    pub summary: Option<SummaryInfo>,
    pub problems: Vec<Problem>,
    pub lines: usize,
}

/// One or more reports, merged.
#[derive(Clone, Debug, Default)]
pub struct Reports {
    pub files: Vec<FileReport>,
    pub attempts: Vec<Attempt>,
    pub processes: Vec<Process>,
}

impl Reports {
    /// Reads every file; a file that cannot be opened at all is an error, a line that cannot
    /// be read is a [`Problem`] of its file.
    pub fn read(paths: &[impl AsRef<Path>]) -> Result<Reports, Fatal> {
        let mut all = Reports::default();
        for path in paths {
            let path = path.as_ref();
            let bytes = std::fs::read(path).map_err(|e| {
                Fatal::new(
                    format!("cannot read the report {}: {e}", path.display()),
                    "give the path of a report written with --report",
                )
            })?;
            all.add(&path.display().to_string(), &bytes);
        }
        Ok(all)
    }

    /// This run's lines, as the collector holds them (for the stderr summary).
    pub fn from_lines(lines: &[crate::report::Line]) -> Reports {
        use crate::report::Line;
        let mut r = Reports::default();
        for line in lines {
            match line {
                Line::Attempt(a) => r.attempts.push(Attempt {
                    kind: Kind::parse(a.kind).unwrap_or(Kind::Connect),
                    pid: i64::from(a.pid),
                    exe: a.exe.clone(),
                    proto: a.proto.clone(),
                    addr: a.addr.clone(),
                    port: a.port,
                    host: a.host.clone(),
                    deny: a.decision == "deny",
                    enforced: a.enforced,
                    rule: a.rule.clone(),
                    reason: a.reason.clone(),
                    count: a.count,
                    file: 0,
                }),
                Line::Process(p) => r.processes.push(Process {
                    pid: i64::from(p.pid),
                    exe: p.exe.clone(),
                    guarded: p.guarded,
                    reason: p.reason.clone(),
                    refused: p.refused == Some(true),
                    file: 0,
                }),
            }
        }
        r
    }

    /// Adds one report's bytes under `name`.
    pub fn add(&mut self, name: &str, bytes: &[u8]) {
        let file = self.files.len();
        let parsed = parse::parse(name, bytes, file);
        self.files.push(parsed.file);
        self.attempts.extend(parsed.attempts);
        self.processes.extend(parsed.processes);
    }

    pub fn problems(&self) -> impl Iterator<Item = (&FileReport, &Problem)> {
        self.files
            .iter()
            .flat_map(|f| f.problems.iter().map(move |p| (f, p)))
    }

    /// The mode the runs were in: `block`, `audit`, `mixed` or `unknown`.
    pub fn mode(&self) -> &str {
        let modes: BTreeSet<&str> = self
            .files
            .iter()
            .filter_map(|f| f.run.as_ref().and_then(|r| r.mode.as_deref()))
            .collect();
        match modes.len() {
            0 => "unknown",
            1 => modes.into_iter().next().unwrap_or("unknown"),
            _ => "mixed",
        }
    }

    pub fn interrupted(&self) -> Vec<&FileReport> {
        self.files.iter().filter(|f| f.summary.is_none()).collect()
    }

    /// Processes counted once per (file, pid).
    pub fn process_count(&self) -> usize {
        let mut seen: BTreeSet<(usize, i64)> = self
            .processes
            .iter()
            .filter(|p| p.pid > 0)
            .map(|p| (p.file, p.pid))
            .collect();
        seen.extend(self.attempts.iter().map(|a| (a.file, a.pid)));
        seen.len()
    }

    pub fn totals(&self) -> (u64, u64) {
        let attempts = self.attempts.iter().map(|a| a.count).sum();
        let denied = self
            .attempts
            .iter()
            .filter(|a| a.deny)
            .map(|a| a.count)
            .sum();
        (attempts, denied)
    }

    /// Attempts grouped by destination across processes and files.
    pub fn destinations(&self) -> Vec<Dest> {
        let mut map: BTreeMap<DestKey, Dest> = BTreeMap::new();
        for a in &self.attempts {
            let key = DestKey::of(a);
            let d = map.entry(key.clone()).or_insert_with(|| Dest {
                key,
                count: 0,
                programs: BTreeMap::new(),
                rules: BTreeSet::new(),
                enforced: false,
                unliftable: false,
                new: false,
            });
            d.count += a.count;
            *d.programs.entry(a.program().to_string()).or_insert(0) += a.count;
            if let Some(rule) = &a.rule {
                d.rules.insert(rule.clone());
            }
            d.enforced |= a.enforced;
            d.unliftable |= a.unliftable();
        }
        map.into_values().collect()
    }

    /// Programs with the processes, attempts and denials of each.
    pub fn programs(&self) -> Vec<ProgramRow> {
        let mut map: BTreeMap<&str, ProgramRow> = BTreeMap::new();
        let mut pids: BTreeMap<&str, BTreeSet<(usize, i64)>> = BTreeMap::new();
        for p in &self.processes {
            let name = program_name(&p.exe);
            let r = map.entry(name).or_default();
            if !p.guarded {
                r.unguarded += 1;
            }
            if p.pid > 0 {
                pids.entry(name).or_default().insert((p.file, p.pid));
            }
        }
        for a in &self.attempts {
            let name = a.program();
            let r = map.entry(name).or_default();
            r.attempts += a.count;
            if a.deny {
                r.denied += a.count;
            }
            pids.entry(name).or_default().insert((a.file, a.pid));
        }
        map.into_iter()
            .map(|(name, r)| ProgramRow {
                program: name.to_string(),
                processes: pids.get(name).map_or(0, |s| s.len()),
                ..r
            })
            .collect()
    }
}

/// How attempts are grouped into destinations: the summary's (host, addr, port, proto,
/// decision), with lookups keyed by name only.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DestKey {
    pub deny: bool,
    pub lookup: bool,
    pub host: Option<String>,
    pub addr: Option<String>,
    pub port: Option<u16>,
    pub proto: Option<String>,
}

impl DestKey {
    pub fn of(a: &Attempt) -> DestKey {
        DestKey {
            deny: a.deny,
            lookup: a.kind == Kind::Resolve,
            host: a.host.clone(),
            addr: a.addr.clone(),
            port: a.port,
            proto: a.proto.clone(),
        }
    }

    pub fn ip(&self) -> Option<IpAddr> {
        self.addr.as_deref().and_then(|a| a.parse().ok())
    }

    pub fn is_loopback(&self) -> bool {
        self.ip()
            .is_some_and(|ip| egress_policy::is_loopback(egress_policy::canonical_ip(ip)))
    }

    /// `203.0.113.10:80`, `[2001:db8::10]:443`, or the name for a lookup.
    pub fn shown(&self) -> String {
        match (&self.addr, self.port) {
            (Some(addr), Some(port)) if addr.contains(':') => format!("[{addr}]:{port}"),
            (Some(addr), Some(port)) => format!("{addr}:{port}"),
            (Some(addr), None) => addr.clone(),
            _ => self.host.clone().unwrap_or_else(|| "?".into()),
        }
    }

    /// The rule that would allow it, as the live denial lines suggest it; `loopback` for an
    /// ephemeral loopback port (a server on port 0 gets another one next run).
    pub fn suggested_rule(&self, ephemeral_from: u16) -> String {
        if self.is_loopback()
            && self.port.is_some_and(|p| {
                group::PortClass::of(p, ephemeral_from) == group::PortClass::Ephemeral
            })
        {
            return "loopback".to_string();
        }
        egress_policy::suggest_rule(
            self.host.as_deref(),
            self.ip(),
            self.port.filter(|_| !self.lookup),
        )
    }
}

/// Attempts to one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dest {
    pub key: DestKey,
    pub count: u64,
    /// Program name -> attempts.
    pub programs: BTreeMap<String, u64>,
    /// The rules that allowed it.
    pub rules: BTreeSet<String>,
    /// Denied for real (block mode) rather than only recorded (audit mode).
    pub enforced: bool,
    pub unliftable: bool,
    /// Outside the baseline (set by the caller when one was given).
    pub new: bool,
}

impl Dest {
    pub fn program_list(&self) -> String {
        self.programs.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramRow {
    pub program: String,
    pub processes: usize,
    pub attempts: u64,
    pub denied: u64,
    pub unguarded: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"type":"run","version":1,"mode":"block","rules":["allowed.test:80"],"argv":["python3","t.py"],"started":"2026-11-23T12:00:00.123Z"}
{"type":"process","pid":101,"ppid":100,"exe":"/usr/bin/python3.11","argv":["python3","t.py"],"guarded":true}
{"type":"resolve","pid":101,"exe":"/usr/bin/python3.11","call":"getaddrinfo","host":"allowed.test","decision":"allow","enforced":true,"rule":"allowed.test:80","count":1}
{"type":"connect","pid":101,"exe":"/usr/bin/python3.11","proto":"tcp","addr":"203.0.113.10","port":80,"host":"allowed.test","decision":"allow","enforced":true,"rule":"allowed.test:80","count":1}
{"type":"send","pid":101,"exe":"/usr/bin/python3.11","proto":"udp","addr":"198.51.100.20","port":9999,"host":null,"decision":"deny","enforced":true,"rule":null,"count":3}
{"type":"process","pid":102,"ppid":101,"exe":"/usr/bin/curl","argv":["curl"],"guarded":true}
{"type":"connect","pid":102,"exe":"/usr/bin/curl","proto":"tcp","addr":"127.0.0.1","port":8080,"host":null,"decision":"deny","enforced":true,"rule":null,"count":1}
{"type":"summary","exit_code":3,"command_status":0,"duration_ms":412,"processes":2,"attempts":6,"denied":4,"destinations":[]}
"#;

    pub fn sample() -> Reports {
        let mut r = Reports::default();
        r.add("a.jsonl", SAMPLE.as_bytes());
        r
    }

    #[test]
    fn totals_and_destinations_are_recomputed_from_the_lines() {
        let r = sample();
        assert!(r.files[0].problems.is_empty(), "{:?}", r.files[0].problems);
        assert_eq!(r.totals(), (6, 4));
        assert_eq!(r.process_count(), 2);
        let d = r.destinations();
        assert_eq!(d.len(), 4);
        assert_eq!(d.iter().filter(|d| d.key.deny).count(), 2);
        assert_eq!(r.mode(), "block");
        assert!(r.interrupted().is_empty());
    }

    #[test]
    fn two_files_merge_counts_per_destination() {
        let mut r = sample();
        r.add("b.jsonl", SAMPLE.as_bytes());
        assert_eq!(r.totals(), (12, 8));
        assert_eq!(
            r.process_count(),
            4,
            "the same pid in two files is two processes"
        );
        let udp = r
            .destinations()
            .into_iter()
            .find(|d| d.key.port == Some(9999))
            .unwrap();
        assert_eq!(udp.count, 6);
        let progs = r.programs();
        let py = progs.iter().find(|p| p.program == "python3.11").unwrap();
        assert_eq!((py.processes, py.attempts, py.denied), (2, 10, 6));
    }

    #[test]
    fn a_report_without_summary_is_interrupted() {
        let cut: String = SAMPLE.lines().take(5).map(|l| format!("{l}\n")).collect();
        let mut r = Reports::default();
        r.add("cut.jsonl", cut.as_bytes());
        assert!(r.files[0].problems.is_empty());
        assert_eq!(r.interrupted().len(), 1);
        assert_eq!(r.totals(), (5, 3));
    }
}
