//! `egress-run`: runs COMMAND with the guard library preloaded into its whole process tree,
//! collects what every process attempted, and writes the report and summary.

mod args;
mod collector;
mod handover;
mod report;
mod unguarded;

use std::ffi::OsString;
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Instant, SystemTime};

use collector::{Collector, EventSocket};
use egress_policy::{Mode, POLICY_ENV};

/// A failure of egress-run itself: printed as `egress-run: <what>; <todo>`, exit 125.
#[derive(Debug)]
pub struct Fatal {
    what: String,
    todo: String,
}

impl Fatal {
    pub fn new(what: impl Into<String>, todo: impl Into<String>) -> Self {
        Fatal {
            what: what.into(),
            todo: todo.into(),
        }
    }
}

const EXIT_DENIED: i32 = 3;
const EXIT_OWN_FAILURE: i32 = 125;
const EXIT_CANNOT_EXECUTE: i32 = 126;
const EXIT_NOT_FOUND: i32 = 127;

fn main() {
    let code = match run() {
        Ok(code) => code,
        Err(fatal) => {
            eprintln!("egress-run: {}; {}", fatal.what, fatal.todo);
            EXIT_OWN_FAILURE
        }
    };
    std::process::exit(code);
}

/// The pid signals are forwarded to (0 until COMMAND runs).
static CHILD_PID: AtomicI32 = AtomicI32::new(0);

const FORWARDED: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Blocks the forwarded signals in this thread (and so in every thread started after) and
/// starts the thread that forwards them. COMMAND gets them unblocked again (`unblock_in_child`).
fn forward_signals() {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t; pthread_sigmask changes only this thread's mask.
    unsafe {
        libc::sigemptyset(&mut set);
        for sig in FORWARDED {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    std::thread::spawn(move || loop {
        // SAFETY: siginfo_t is plain data filled in by sigwaitinfo.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: set holds the blocked signals; info is writable.
        let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if sig < 0 {
            continue;
        }
        // A signal from the terminal (Ctrl-C, hang-up) reached COMMAND too, which shares our
        // foreground process group: sending it again would deliver it twice.
        if info.si_code == libc::SI_KERNEL {
            continue;
        }
        let pid = CHILD_PID.load(Ordering::Acquire);
        if pid > 0 {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, sig) };
        }
    });
}

/// Restores an empty signal mask in COMMAND between fork and exec: it must not inherit the
/// launcher's blocked SIGINT/SIGTERM/SIGHUP.
fn unblock_in_child(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls sigemptyset and pthread_sigmask on a stack value, both
    // async-signal-safe, as code between fork and exec must be.
    unsafe {
        cmd.pre_exec(|| {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        })
    };
}

fn run() -> Result<i32, Fatal> {
    let raw: Vec<OsString> = std::env::args_os().collect();
    let config = args::parse(raw)?;
    let library = handover::find_library()?;
    let report_file = match &config.report {
        Some(path) => Some(File::create(path).map_err(|e| {
            Fatal::new(
                format!("cannot write the report {}: {e}", path.display()),
                "choose a writable --report path",
            )
        })?),
        None => None,
    };
    let sealed = handover::seal_policy(config.mode, &config.rules, config.allow_unguarded)?;
    let events = EventSocket::bind(&sealed.locator)?;
    forward_signals();

    let started = SystemTime::now();
    let clock = Instant::now();
    let rule_texts: Vec<String> = config.rules.iter().map(|r| r.text.clone()).collect();
    let mut collector = Collector::new(config.mode, rule_texts.clone(), config.quiet);

    let mut cmd = Command::new(&config.command[0]);
    cmd.args(&config.command[1..])
        .env(
            "LD_PRELOAD",
            handover::ld_preload(std::env::var_os("LD_PRELOAD").as_deref(), &library),
        )
        .env(POLICY_ENV, sealed.locator.to_env_value());
    unblock_in_child(&mut cmd);

    // A program the library cannot enter is found before it runs (CONTRACT "Unguarded
    // programs"): refused in block mode unless --allow-unguarded, else run and reported.
    let unguarded = unguarded::resolve(&config.command[0])
        .and_then(|path| unguarded::reason(&path).map(|why| (path, why)));
    let refuse = unguarded.is_some() && config.mode == Mode::Block && !config.allow_unguarded;
    if let Some((_, why)) = unguarded {
        if egress_policy::elf::preload_is_fatal(why) {
            // Its loader would fail on our library: it runs without it (and so do the
            // programs it starts, unless they restore it themselves).
            match handover::ld_preload_without(std::env::var_os("LD_PRELOAD").as_deref(), &library)
            {
                Some(kept) => cmd.env("LD_PRELOAD", kept),
                None => cmd.env_remove("LD_PRELOAD"),
            };
        }
    }
    let mut child_pid = 0;

    let command_status = std::thread::scope(|scope| {
        let receiver = scope.spawn(|| events.run(&mut collector));
        let spawned = if refuse {
            Err(std::io::Error::from(ErrorKind::PermissionDenied))
        } else {
            cmd.spawn()
        };
        let status = match spawned {
            Ok(mut child) => {
                child_pid = child.id() as i32;
                CHILD_PID.store(child_pid, Ordering::Release);
                let status = loop {
                    match child.wait() {
                        Ok(status) => break status,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => break std::process::ExitStatus::from_raw(EXIT_OWN_FAILURE << 8),
                    }
                };
                CHILD_PID.store(0, Ordering::Release);
                Ok(status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
            }
            Err(e) => Err(e),
        };
        events.finish();
        let _ = receiver.join();
        status
    });

    collector.add_shared_counts(|slot| sealed.counters.get(slot));
    let program = config.command[0].to_string_lossy().into_owned();
    if let Some((path, why)) = &unguarded {
        // Its process line goes first: nothing of it can have checked in before.
        let line = std::mem::take(&mut collector.lines);
        collector.unguarded(
            if refuse { 0 } else { child_pid },
            std::process::id() as i32,
            path.canonicalize()
                .unwrap_or_else(|_| path.clone())
                .to_string_lossy()
                .into_owned(),
            config
                .command
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            why.to_string(),
            refuse,
        );
        collector.lines.extend(line);
    }
    // Coverage record: only a check-in proves COMMAND was guarded. One that never checked in
    // (its loader ignored or rejected the library: an unrecognised loader, a broken install)
    // ran unguarded, whatever the detection above said.
    let never_checked_in =
        unguarded.is_none() && child_pid > 0 && !collector.pids.contains(&child_pid);
    if never_checked_in {
        let exe = unguarded::resolve(&config.command[0])
            .map(|p| p.canonicalize().unwrap_or(p).to_string_lossy().into_owned())
            .unwrap_or_else(|| program.clone());
        collector.unguarded(
            child_pid,
            std::process::id() as i32,
            exe,
            config
                .command
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            "never checked in: the guard library did not load into it".to_string(),
            false,
        );
    }
    let (command_status, exit_code) = match command_status {
        Ok(status) => (Some(status), status),
        Err(_) if refuse => (None, EXIT_CANNOT_EXECUTE),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            eprintln!("egress-run: {program}: command not found; check the name and PATH");
            (None, EXIT_NOT_FOUND)
        }
        Err(e) => {
            eprintln!(
                "egress-run: {program}: cannot execute ({e}); check that it is an executable file"
            );
            (None, EXIT_CANNOT_EXECUTE)
        }
    };
    let (attempts, denied, destinations) = report::summarize(&collector.lines);
    // A refused unguarded exec deep in the tree fails the gate like a denied connect.
    let unverified = never_checked_in && !config.allow_unguarded;
    let exit_code = if collector.mode() == Mode::Block
        && (denied > 0 || collector.refused_unguarded > 0 || unverified)
        && exit_code == 0
        && !config.command_status
    {
        EXIT_DENIED
    } else {
        exit_code
    };
    let summary = report::SummaryLine {
        kind: "summary",
        exit_code,
        command_status,
        duration_ms: clock.elapsed().as_millis() as u64,
        processes: collector.pids.len(),
        attempts,
        denied,
        destinations,
        still_running: report::still_running(&collector.pids),
    };
    // A command that never started has nothing to summarise; its error was printed above.
    if !config.quiet && command_status.is_some() {
        eprint!(
            "{}",
            report::human_summary(config.mode, &summary, config.report.as_deref())
        );
    }
    if let (Some(file), Some(path)) = (report_file, &config.report) {
        let run_line = report::RunLine {
            kind: "run",
            version: 1,
            mode: config.mode.as_str(),
            rules: &rule_texts,
            argv: config
                .command
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            started: humantime::format_rfc3339_millis(started).to_string(),
            egress_run: env!("CARGO_PKG_VERSION"),
        };
        report::write(file, &run_line, &collector.lines, &summary).map_err(|e| {
            Fatal::new(
                format!("cannot write the report {}: {e}", path.display()),
                "check free space and permissions",
            )
        })?;
    }
    Ok(exit_code)
}
