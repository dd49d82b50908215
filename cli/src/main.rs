//! `egress-run`: runs COMMAND with the guard library preloaded into its whole process tree,
//! collects what every process attempted, and writes the report and summary.
//!
//! `no_main`: every guarded run starts this program, so its start-up cost counts. std's
//! runtime set-up reads `/proc/self/maps` to place a stack guard and maps a signal stack for
//! overflow messages: about 0.15 ms of a ~1 ms start here. `main` below does the parts of it
//! that matter to egress-run (descriptors 0-2, SIGPIPE); `std::env::args_os` still works (glibc
//! hands the arguments to std's `.init_array` hook).
#![cfg_attr(not(test), no_main)]

mod args;
mod collector;
mod doctor;
mod handover;
mod own_dir;
mod policy_service;
mod report;
mod reports;
mod spawn;
mod subcommands;
mod supervisor;
mod trampoline;
mod unguarded;

use std::ffi::OsString;
use std::io::ErrorKind;
use std::time::{Instant, SystemTime};

use collector::{Collector, EventSocket};
use egress_policy::{Mode, POLICY_ENV};
use spawn::Signals;

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

/// How egress-run ends: with an exit status, or killed by the signal that killed COMMAND
/// (CONTRACT Additions, "Signals and exit status").
enum Exit {
    Code(i32),
    Signal(libc::c_int),
}

const EXIT_DENIED: i32 = 3;
pub const EXIT_OWN_FAILURE: i32 = 125;
const EXIT_CANNOT_EXECUTE: i32 = 126;
const EXIT_NOT_FOUND: i32 = 127;

#[cfg_attr(not(test), no_mangle)]
// C's main: argc and argv are the process's own argument count and vector.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub extern "C" fn main(argc: libc::c_int, argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: main's own arguments.
    if let Some(code) = unsafe { trampoline::exec_under_layer(argc, argv) } {
        return code;
    }
    open_missing_stdio();
    // Before anything changes them: COMMAND gets the caller's mask and ignored signals.
    spawn::save_inherited();
    // As std's runtime does: a closed stderr must give EPIPE, not kill egress-run before it
    // writes the report. COMMAND gets the caller's disposition back (spawn.rs).
    // SAFETY: setting a signal's disposition to SIG_IGN has no memory-safety preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // A panic must not unwind into C; the hook has printed it. 101 as under std's runtime.
    let code = std::panic::catch_unwind(|| match run() {
        Ok(code) => code,
        Err(fatal) => {
            to_stderr(&format!("egress-run: {}; {}\n", fatal.what, fatal.todo));
            Exit::Code(EXIT_OWN_FAILURE)
        }
    })
    .unwrap_or(Exit::Code(101));
    match code {
        Exit::Code(code) => std::process::exit(code),
        Exit::Signal(sig) => {
            // Returns only for a signal that cannot end a process by default.
            spawn::die_of(sig);
            std::process::exit(128 + sig)
        }
    }
}

/// Writes `text` to stderr with one write: COMMAND's tree shares the descriptor, and a line
/// written piecemeal (as `eprintln!` does on unbuffered stderr) can be split by its output.
pub fn to_stderr(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
}

/// Writes `text` to stdout (the subcommands' output); a closed pipe is not an error.
pub fn to_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, text.as_bytes());
    let _ = std::io::Write::flush(&mut out);
}

/// Opens /dev/null on whichever of descriptors 0-2 is closed, as std's runtime does, so that
/// the memfds and the socket never take those numbers (stderr output would land in them, and
/// COMMAND would inherit them as its stdio).
fn open_missing_stdio() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: fds holds three valid pollfd entries; a zero timeout never blocks.
    let polled = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } >= 0;
    for pfd in fds {
        let closed = if polled {
            pfd.revents & libc::POLLNVAL != 0
        } else {
            // SAFETY: F_GETFD only queries the descriptor.
            let flags = unsafe { libc::fcntl(pfd.fd, libc::F_GETFD) };
            flags < 0
        };
        // In order 0, 1, 2: the lowest free number is the one being replaced.
        // SAFETY: a NUL-terminated path; the descriptor is deliberately left open.
        if closed && unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) } < 0 {
            // Without it nothing is safe to write; std's runtime aborts too.
            std::process::abort();
        }
    }
}

fn run() -> Result<Exit, Fatal> {
    let raw: Vec<OsString> = std::env::args_os().collect();
    let config = match args::parse(raw)? {
        args::Invocation::Run(config) => config,
        args::Invocation::Report {
            files,
            format,
            baseline,
        } => return subcommands::report(&files, format, baseline.as_deref()).map(Exit::Code),
        args::Invocation::Suggest { files, output } => {
            return subcommands::suggest(&files, output.as_deref()).map(Exit::Code)
        }
        args::Invocation::Doctor => return doctor::run().map(Exit::Code),
        args::Invocation::DoctorProbe(port) => return Ok(Exit::Code(doctor::probe(port))),
        args::Invocation::Version => {
            to_stdout(&doctor::version_text());
            return Ok(Exit::Code(0));
        }
    };
    let library = handover::find_library()?;
    // Read before COMMAND starts: a bad baseline is egress-run's own failure (125).
    let baseline = config
        .baseline
        .as_deref()
        .map(reports::baseline::Baseline::load)
        .transpose()?;
    let journal = match &config.report {
        Some(path) => report::Journal::create(path).map_err(|e| {
            Fatal::new(
                format!("cannot write the report {}: {e}", path.display()),
                "choose a writable --report path",
            )
        })?,
        None => report::Journal::none(),
    };
    let sealed = handover::seal_policy(
        config.mode,
        config.deny_as,
        &config.rules,
        &config.grantable,
        config.allow_unguarded,
        config.seccomp,
    )?;
    let events = EventSocket::bind(&sealed.locator, sealed.event_key)?;
    // `loopback:own`: where the run's processes record their loopback listeners.
    let _own_dir = own_dir::OwnDir::create(&config.rules, &config.grantable, &sealed.locator)?;
    let signals = Signals::block()?;
    // After the signals are blocked: its thread inherits the mask and never takes one.
    let _policy_service = policy_service::start(&sealed.locator);
    spawn::become_subreaper();

    let started = SystemTime::now();
    let clock = Instant::now();
    let rule_texts: Vec<String> = config.rules.iter().map(|r| r.text.clone()).collect();
    // Attempts name grantable rules (a scope's grants) by numbers after the run's rules.
    let numbered: Vec<String> = rule_texts
        .iter()
        .cloned()
        .chain(config.grantable.iter().map(|r| r.text.clone()))
        .collect();
    let mut collector = Collector::new(config.mode, numbered, config.quiet, journal);
    let command_argv: Vec<String> = config
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();

    // A program the library cannot enter is found before it runs (CONTRACT "Unguarded
    // programs"): refused in block mode unless --allow-unguarded, else run and reported.
    let found = unguarded::resolve(&config.command[0]);
    let checked = found
        .as_ref()
        .map(|path| (path, unguarded::reason(path, &config.command)));
    let unguarded = checked
        .as_ref()
        .and_then(|(path, (why, _))| why.map(|why| ((*path).clone(), why)));
    // A sanitizer runtime the program links must lead LD_PRELOAD (ASan aborts otherwise).
    let runtime = checked.and_then(|(_, (_, rt))| rt.get().map(<[u8]>::to_vec));
    // Static and Go programs run under the kernel layer instead (where the kernel has it).
    let layered = cfg!(target_arch = "x86_64")
        && unguarded
            .as_ref()
            .is_some_and(|(_, why)| egress_policy::elf::kernel_layer_applies(why));
    let may_run_unguarded = config.mode == Mode::Audit || config.allow_unguarded;
    let mut refuse = unguarded.is_some() && !layered && !may_run_unguarded;
    let mut layer_failed: Option<String> = None;
    // The supervisor serves COMMAND and any process deeper in the tree that puts itself under
    // the filter before it execs a program the library cannot enter.
    let layer = if cfg!(target_arch = "x86_64") {
        let bytes: &'static [u8] = Box::leak(sealed.bytes.clone().into_boxed_slice());
        supervisor::Layer::new(bytes, &sealed.locator)
            .and_then(|layer| layer.accept_handovers(&sealed.locator).map(|()| layer))
            .map_err(|e| {
                format!("the kernel layer is unavailable (its supervisor could not start: {e})")
            })
    } else {
        Err("the kernel layer is unavailable (it supports x86-64 only)".to_string())
    };
    let layer = match layer {
        Ok(layer) => Some(layer),
        Err(why) if config.seccomp => {
            return Err(Fatal::new(
                format!("--seccomp cannot be honoured: {why}"),
                "run without --seccomp (the library still guards dynamic programs)",
            ))
        }
        Err(why) => {
            if layered {
                layer_failed = Some(why);
                refuse = !may_run_unguarded;
            }
            None
        }
    };
    // With --seccomp every COMMAND is under the filter, and the calls the library decided
    // pass it by the address of the library's stub.
    let fast_ip = config
        .seccomp
        .then(|| sealed.locator.stub_addr() + egress_policy::seccomp::STUB_IP_OFFSET);
    let filter = layer
        .as_ref()
        .filter(|_| layered || config.seccomp)
        .map(|_| supervisor::Filter::new(fast_ip));
    let prog = filter.as_ref().map(supervisor::Filter::prog);
    let user_preload = std::env::var_os("LD_PRELOAD");
    // Inside a guarded tree (a nested run): the outer runs' levels stay, ours goes in front,
    // and the guard library already in LD_PRELOAD serves every level.
    let outer_chain = std::env::var_os(POLICY_ENV).filter(|v| !v.is_empty());
    let nested_in = handover::chain_launchers(outer_chain.as_deref());
    // The report is written as the run goes (docs/report.md): the run line first, now.
    collector.write_line(&report::RunLine {
        kind: "run",
        version: 1,
        mode: config.mode.as_str(),
        deny_as: config.deny_as.as_str(),
        rules: &rule_texts,
        grantable: config.grantable.iter().map(|r| r.text.clone()).collect(),
        argv: command_argv.clone(),
        started: humantime::format_rfc3339_millis(started).to_string(),
        egress_run: env!("CARGO_PKG_VERSION"),
        launcher_pid: std::process::id(),
        nested_in,
    });
    let preloaded = outer_chain.is_some() && handover::has_guard(user_preload.as_deref());
    let preload = match &unguarded {
        // Its loader would fail on our library: it runs without it (and so do the programs
        // it starts, unless they restore it themselves). Nested, the outer run's exec hook
        // strips its own copy too.
        Some((_, why)) if egress_policy::elf::preload_is_fatal(why) => {
            handover::ld_preload_without(user_preload.as_deref(), &library)
        }
        _ if preloaded => user_preload.clone(),
        _ => Some(handover::ld_preload(user_preload.as_deref(), &library)),
    };
    let added = std::env::var_os(handover::SANITIZER_ENV);
    let (preload, sanitizer) =
        handover::runtime_first(preload, added.as_deref(), runtime.as_deref());
    let mut locator = OsString::from(sealed.locator.to_env_value());
    if let Some(outer) = &outer_chain {
        locator.push(";");
        locator.push(outer);
    }
    let mut child_pid = 0;
    let spawned = if refuse {
        Err(std::io::Error::from(ErrorKind::PermissionDenied))
    } else {
        spawn::environment(&[
            ("LD_PRELOAD", preload.as_deref()),
            (POLICY_ENV, Some(locator.as_os_str())),
            (handover::SANITIZER_ENV, sanitizer.as_deref()),
        ])
        .and_then(|env| {
            // Under the filter the child execs the path found here (the system call itself).
            let first = match (prog.as_ref(), found.as_deref()) {
                (Some(prog), Some(path)) => spawn::spawn(&config.command, &env, Some((prog, path))),
                (Some(_), None) => Err(spawn::SpawnError::Exec(ErrorKind::NotFound.into())),
                (None, _) => spawn::spawn(&config.command, &env, None),
            };
            let plain = |r: Result<spawn::Spawned, spawn::SpawnError>| match r {
                Ok(s) => Ok(s),
                Err(spawn::SpawnError::Exec(e)) => Err(e),
                Err(spawn::SpawnError::Layer(_)) => Err(ErrorKind::PermissionDenied.into()),
            };
            match first {
                Err(spawn::SpawnError::Layer(errno)) => {
                    // Where the kernel lacks the layer: today's behaviour, saying why.
                    layer_failed = Some(supervisor::unavailable_reason(errno));
                    // --seccomp was asked for: no run without it.
                    refuse = !may_run_unguarded || config.seccomp;
                    if refuse {
                        Err(ErrorKind::PermissionDenied.into())
                    } else {
                        plain(spawn::spawn(&config.command, &env, None))
                    }
                }
                other => plain(other),
            }
        })
    };
    if let Ok(s) = &spawned {
        child_pid = s.pid;
    }
    // Its process line goes first: nothing of it can have checked in before.
    if let Some((path, why)) = &unguarded {
        let exe = path
            .canonicalize()
            .unwrap_or_else(|_| path.clone())
            .to_string_lossy()
            .into_owned();
        let layered = layer.is_some() && matches!(&spawned, Ok(s) if s.listener.is_some());
        if layered {
            let launcher = std::process::id() as i32;
            collector.kernel_layer(
                child_pid,
                launcher,
                exe,
                command_argv.clone(),
                why.to_string(),
            );
        } else {
            let why = match &layer_failed {
                Some(failed) => format!("{why}; {failed}"),
                None => why.to_string(),
            };
            collector.unguarded(
                if refuse { 0 } else { child_pid },
                std::process::id() as i32,
                exe,
                command_argv.clone(),
                why,
                refuse,
            );
        }
    }
    collector.attach(sealed.counters.clone());
    let mut death_signal = None;
    let command_status = match spawned {
        Ok(spawn::Spawned { pid, listener }) => {
            child_pid = pid;
            if let (Some(layer), Some(listener)) = (&layer, listener) {
                if let Err(e) = layer.supervise(listener) {
                    // The listener is closed with the thread's closure: COMMAND's trapped
                    // calls fail with ENOSYS (closed, not open).
                    to_stderr(&format!(
                        "egress-run: the kernel layer's supervisor did not start ({e}); COMMAND's network calls will fail\n"
                    ));
                }
            }
            let status = events.run(&mut collector, &signals, pid);
            if libc::WIFSIGNALED(status) {
                death_signal = Some(libc::WTERMSIG(status));
            }
            Ok(spawn::exit_code(status))
        }
        Err(e) => {
            events.finish(&mut collector);
            Err(e)
        }
    };

    // Processes that outlive the run (daemons) are not orphaned by a killed launcher.
    sealed.counters.end_run();
    // The final fold: every count that grew since the file last said.
    collector.add_shared_counts();
    let _ = collector.write_counts();
    let program = config.command[0].to_string_lossy().into_owned();
    // Coverage record: only a check-in proves COMMAND was guarded. One that never checked in
    // (its loader ignored or rejected the library: an unrecognised loader, a broken install)
    // ran unguarded, whatever the detection above said.
    // The loader run only to list or verify (`ld.so --list`) runs no program: nothing to check in.
    let inspects_only = found
        .as_deref()
        .is_some_and(|p| unguarded::runs_no_program(p, &config.command));
    let never_checked_in = unguarded.is_none()
        && !inspects_only
        && child_pid > 0
        && !collector.pids.contains(&child_pid);
    if never_checked_in {
        let exe = found
            .map(|p| p.canonicalize().unwrap_or(p).to_string_lossy().into_owned())
            .unwrap_or_else(|| program.clone());
        collector.unguarded(
            child_pid,
            std::process::id() as i32,
            exe,
            command_argv.clone(),
            "never checked in: the guard library did not load into it".to_string(),
            false,
        );
    }
    let (command_status, exit_code) = match command_status {
        Ok(status) => (Some(status), status),
        Err(_) if refuse => (None, EXIT_CANNOT_EXECUTE),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            to_stderr(&format!(
                "egress-run: {program}: command not found; check the name and PATH\n"
            ));
            (None, EXIT_NOT_FOUND)
        }
        Err(e) => {
            to_stderr(&format!(
                "egress-run: {program}: cannot execute ({e}); check that it is an executable file\n"
            ));
            (None, EXIT_CANNOT_EXECUTE)
        }
    };
    let (attempts, denied, mut destinations) = report::summarize(&collector.lines);
    // --baseline: only denials of destinations it does not know fail the run, in either mode.
    let new_denied = baseline.as_ref().map(|b| b.mark_summary(&mut destinations));
    let gate_denied = new_denied.map_or(denied > 0, |n| n > 0);
    // A refused unguarded exec deep in the tree fails the gate like a denied connect.
    let unverified = never_checked_in && !config.allow_unguarded;
    let block = collector.mode() == Mode::Block;
    let exit_code = if (block || baseline.is_some())
        && (gate_denied || (block && (collector.refused_unguarded > 0 || unverified)))
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
        events_rejected: collector.rejected,
        new_denied,
    };
    // A command that never started has nothing to summarise; its error was printed above.
    if !config.quiet && command_status.is_some() {
        to_stderr(&report::human_summary(
            config.mode,
            &summary,
            &collector.lines,
            baseline.as_ref(),
            config.report.as_deref(),
            doctor::colour_on_stderr(),
        ));
    }
    collector.write_line(&summary);
    if let Err(e) = collector.into_journal().finish() {
        let path = config
            .report
            .as_deref()
            .unwrap_or(std::path::Path::new("?"));
        return Err(Fatal::new(
            format!("cannot write the report {}: {e}", path.display()),
            "check free space and permissions",
        ));
    }
    // The summary says 128+N either way; the caller sees COMMAND's death by signal N.
    Ok(match death_signal {
        Some(sig) => Exit::Signal(sig),
        None => Exit::Code(exit_code),
    })
}
