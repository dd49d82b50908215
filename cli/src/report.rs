//! The JSON-lines report (docs/report.md, docs/report.schema.json) and the human summary.

use std::fs::File;
use std::io::{BufWriter, Write};

use egress_policy::Mode;
use serde::Serialize;

#[derive(Serialize)]
pub struct RunLine<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub version: u32,
    pub mode: &'static str,
    /// Extension: how denials looked to the program (`--deny-as`).
    pub deny_as: &'static str,
    pub rules: &'a [String],
    pub argv: Vec<String>,
    pub started: String,
    pub egress_run: &'static str,
    /// Extension: this launcher's pid, which `denied_by` and `chain` of nested runs name.
    pub launcher_pid: u32,
    /// Extension: the launchers of the runs this one is nested in, innermost first.
    #[serde(skip_serializing_if = "<[u32]>::is_empty")]
    pub nested_in: Vec<u32>,
}

#[derive(Serialize)]
pub struct ProcessLine {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub pid: i32,
    pub ppid: i32,
    pub exe: String,
    pub argv: Vec<String>,
    pub guarded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_error: Option<String>,
    /// For an unguarded program: whether block mode refused to run it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<bool>,
    /// `kernel`: the library cannot enter it (`reason` says why); the kernel layer guards it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<&'static str>,
}

impl ProcessLine {
    /// A guarded process that checked in with its policy.
    pub fn new(pid: i32, ppid: i32, exe: String, argv: Vec<String>) -> Self {
        ProcessLine {
            kind: "process",
            pid,
            ppid,
            exe,
            argv,
            guarded: true,
            reason: None,
            policy_error: None,
            refused: None,
            layer: None,
        }
    }
}

#[derive(Serialize)]
pub struct AttemptLine {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub pid: i32,
    pub exe: String,
    pub call: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub host: Option<String>,
    pub decision: String,
    pub enforced: bool,
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Extension (nested runs): the launcher pid of the level that refused the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied_by: Option<u32>,
    /// Extension (nested runs): every level's decision, innermost first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<Vec<ChainLevel>>,
    /// Which layer decided it: `library` (the preloaded guard) or `kernel` (the seccomp
    /// supervisor).
    pub layer: &'static str,
    pub count: u64,
}

/// One level of a nested run, as an attempt line's `chain` shows it.
#[derive(Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChainLevel {
    pub run: u32,
    pub decision: Option<String>,
    pub enforced: bool,
}

pub enum Line {
    Process(ProcessLine),
    Attempt(AttemptLine),
}

#[derive(Serialize, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    pub host: Option<String>,
    pub addr: Option<String>,
    pub port: Option<u16>,
    pub proto: Option<String>,
    pub decision: String,
    pub count: u64,
}

#[derive(Serialize)]
pub struct SummaryLine {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub exit_code: i32,
    pub command_status: Option<i32>,
    pub duration_ms: u64,
    pub processes: usize,
    pub attempts: u64,
    pub denied: u64,
    pub destinations: Vec<Destination>,
    /// Guarded processes still alive when COMMAND ended (daemons); their later attempts are
    /// not in this report.
    pub still_running: Vec<i32>,
}

/// The pids among `pids` that are still alive (not zombies) now.
pub fn still_running(pids: &std::collections::HashSet<i32>) -> Vec<i32> {
    let mut alive: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|&pid| {
            // Nearly all are gone (reaped) by now, which kill(pid, 0) tells without a /proc
            // lookup per process; EPERM means it exists.
            // SAFETY: signal 0 only checks that the process exists.
            let exists = pid > 0
                && (unsafe { libc::kill(pid, 0) } == 0
                    || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM));
            exists
                && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    // The state follows the parenthesised command name.
                    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
                    !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X') | None)
                })
        })
        .collect();
    alive.sort_unstable();
    alive
}

/// Totals over the attempt lines, and destinations grouped across processes.
pub fn summarize(lines: &[Line]) -> (u64, u64, Vec<Destination>) {
    let (mut attempts, mut denied) = (0, 0);
    let mut dests: Vec<Destination> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for line in lines {
        let Line::Attempt(a) = line else { continue };
        attempts += a.count;
        if a.decision == "deny" {
            denied += a.count;
        }
        let key = (
            a.host.clone(),
            a.addr.clone(),
            a.port,
            a.proto.clone(),
            a.decision.clone(),
        );
        match index.get(&key) {
            Some(&i) => {
                let d: &mut Destination = &mut dests[i];
                d.count += a.count;
            }
            None => {
                index.insert(key, dests.len());
                dests.push(Destination {
                    host: a.host.clone(),
                    addr: a.addr.clone(),
                    port: a.port,
                    proto: a.proto.clone(),
                    decision: a.decision.clone(),
                    count: a.count,
                });
            }
        }
    }
    (attempts, denied, dests)
}

pub fn write(
    file: File,
    run: &RunLine,
    lines: &[Line],
    summary: &SummaryLine,
) -> std::io::Result<()> {
    let mut w = BufWriter::new(file);
    serde_json::to_writer(&mut w, run)?;
    w.write_all(b"\n")?;
    for line in lines {
        match line {
            Line::Process(p) => serde_json::to_writer(&mut w, p)?,
            Line::Attempt(a) => serde_json::to_writer(&mut w, a)?,
        }
        w.write_all(b"\n")?;
    }
    serde_json::to_writer(&mut w, summary)?;
    w.write_all(b"\n")?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()
}

fn show_dest(d: &Destination) -> String {
    match (&d.addr, d.port) {
        (Some(addr), Some(port)) if addr.contains(':') => format!("[{addr}]:{port}"),
        (Some(addr), Some(port)) => format!("{addr}:{port}"),
        _ => d.host.clone().unwrap_or_default(),
    }
}

/// The short human summary printed on stderr at exit.
pub fn human_summary(
    mode: Mode,
    summary: &SummaryLine,
    report: Option<&std::path::Path>,
) -> String {
    let mut out = format!(
        "egress-run: {} mode: {} process{}, {} attempt{}, {} denied{}\n",
        mode.as_str(),
        summary.processes,
        if summary.processes == 1 { "" } else { "es" },
        summary.attempts,
        if summary.attempts == 1 { "" } else { "s" },
        summary.denied,
        if mode == Mode::Audit && summary.denied > 0 {
            " (not enforced: audit)"
        } else {
            ""
        }
    );
    let mut dests: Vec<&Destination> = summary.destinations.iter().collect();
    dests.sort_by_key(|d| d.decision != "deny");
    const SHOWN: usize = 20;
    for d in dests.iter().take(SHOWN) {
        let what = if d.addr.is_some() {
            format!("{} {}", d.proto.as_deref().unwrap_or("?"), show_dest(d))
        } else {
            "dns".to_string()
        };
        let name = match (&d.host, &d.addr) {
            (Some(h), Some(_)) => format!(" ({h})"),
            (Some(h), None) => format!(" {h}"),
            _ => String::new(),
        };
        out.push_str(&format!(
            "  {:<7} {what}{name} x{}\n",
            if d.decision == "deny" {
                "DENIED"
            } else {
                "allowed"
            },
            d.count
        ));
    }
    if dests.len() > SHOWN {
        out.push_str(&format!(
            "  ... and {} more destinations\n",
            dests.len() - SHOWN
        ));
    }
    if !summary.still_running.is_empty() {
        let pids: Vec<String> = summary
            .still_running
            .iter()
            .map(|p| p.to_string())
            .collect();
        out.push_str(&format!(
            "egress-run: still running after the command ended: pid {}; their later attempts are not recorded\n",
            pids.join(", ")
        ));
    }
    if let Some(path) = report {
        out.push_str(&format!(
            "egress-run: report written to {}\n",
            path.display()
        ));
    }
    out
}
