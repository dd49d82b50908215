//! The JSON-lines report (docs/report.md, docs/report.schema.json) and the human summary.

use std::fs::File;
use std::io::Write;

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
    /// Extension: the `--grantable` rules (what scopes may grant), when any.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub grantable: Vec<String>,
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

#[derive(Serialize, Clone)]
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
    /// The pytest node id of the test running in that process (or in the process that
    /// started it) when the attempt was made (docs/scopes.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    /// The file name of the shared object whose code made the call, when not the program.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// For Python code: `module:function` of the first frame outside the standard library.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub py_caller: Option<String>,
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

// Attempt lines are most lines: boxing them would add an allocation each and save nothing.
#[allow(clippy::large_enum_variant)]
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
    /// Extension (`--baseline`): a denied destination the baseline does not know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<bool>,
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
    /// Datagrams dropped because they did not come from the run's tree (no or a wrong event
    /// key, not framed as events): forged, replayed from another run, or stray.
    pub events_rejected: u64,
    /// Extension (`--baseline`): denied attempts to destinations outside the baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_denied: Option<u64>,
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
                    new: None,
                });
            }
        }
    }
    (attempts, denied, dests)
}

/// The report file, written as the run goes: each line with one `write(2)` of the whole line
/// to a descriptor opened with `O_APPEND`, so that whenever egress-run is killed the file holds
/// only whole lines (docs/report.md, *A report written as the run goes*).
pub struct Journal {
    file: Option<File>,
    /// The first write error; later lines are not attempted.
    failed: Option<std::io::Error>,
}

impl Journal {
    /// Creates or truncates `path`, for appending.
    pub fn create(path: &std::path::Path) -> std::io::Result<Journal> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_APPEND)
            .open(path)?;
        Ok(Journal {
            file: Some(file),
            failed: None,
        })
    }

    /// No report file (no `--report`).
    pub fn none() -> Journal {
        Journal {
            file: None,
            failed: None,
        }
    }

    /// Appends one line.
    pub fn line(&mut self, value: &impl Serialize) {
        let (Some(file), None) = (&mut self.file, &self.failed) else {
            return;
        };
        let mut text = match serde_json::to_vec(value) {
            Ok(text) => text,
            Err(e) => {
                self.failed = Some(e.into());
                return;
            }
        };
        text.push(b'\n');
        // One write(2) for the whole line; the loop only continues after a short write
        // (a full disk), which the next attempt then reports.
        let mut rest = &text[..];
        while !rest.is_empty() {
            match file.write(rest) {
                Ok(0) => {
                    self.failed = Some(std::io::ErrorKind::WriteZero.into());
                    return;
                }
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.failed = Some(e);
                    return;
                }
            }
        }
    }

    /// After the last line: the first error, if any write failed, else the file's flush to disk.
    pub fn finish(self) -> std::io::Result<()> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        match self.file {
            // A pipe or a terminal (`--report /dev/stdout`) has nothing to flush to disk, and
            // fsync would fail on it (EINVAL).
            Some(file) if file.metadata()?.is_file() => file.sync_all(),
            _ => Ok(()),
        }
    }
}

/// The short human summary printed on stderr at exit. Loopback ports are grouped by program
/// and port class when there are many (crate::reports::group); colour only when `colour`.
pub fn human_summary(
    mode: Mode,
    summary: &SummaryLine,
    lines: &[Line],
    baseline: Option<&crate::reports::baseline::Baseline>,
    report: Option<&std::path::Path>,
    colour: bool,
) -> String {
    use crate::reports::group::{ephemeral_from, rows, Row};
    let paint = |code: &str, text: &str| {
        if colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let mut out = format!(
        "egress-run: {} mode: {} process{}, {} attempt{}, {} denied{}",
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
    if let Some(new) = summary.new_denied {
        out.push_str(&format!(", {new} outside the baseline"));
    }
    out.push('\n');
    let seen = crate::reports::Reports::from_lines(lines);
    let mut dests = seen.destinations();
    if let Some(b) = baseline {
        b.mark(&mut dests);
    }
    let rows = rows(&dests, ephemeral_from());
    const SHOWN: usize = 20;
    for row in rows.iter().take(SHOWN) {
        let (what, count, new) = match row {
            Row::One(d) => {
                let what = if d.key.lookup {
                    format!("dns {}", d.key.host.as_deref().unwrap_or("?"))
                } else {
                    let name = d
                        .key
                        .host
                        .as_ref()
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default();
                    format!(
                        "{} {}{name}",
                        d.key.proto.as_deref().unwrap_or("?"),
                        d.key.shown()
                    )
                };
                (what, d.count, d.new)
            }
            Row::Group(g) => (
                format!(
                    "{} {} by {}",
                    g.proto.as_deref().unwrap_or("?"),
                    g.shown(),
                    g.program
                ),
                g.count,
                g.new,
            ),
        };
        let decision = if row.deny() {
            paint("1;31", "DENIED ")
        } else {
            paint("32", "allowed")
        };
        let new = if new {
            paint("1;33", " NEW")
        } else {
            String::new()
        };
        out.push_str(&format!("  {decision} {what} x{count}{new}\n"));
    }
    if rows.len() > SHOWN {
        out.push_str(&format!(
            "  ... and {} more destinations\n",
            rows.len() - SHOWN
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
