//! Command line (CONTRACT "Command line") and rule loading.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use egress_policy::{parse_rule, DenyAs, Mode, Rule};

use crate::Fatal;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    Block,
    Audit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DenyAsArg {
    /// connect/send fail with EACCES, lookups with EAI_FAIL
    Eacces,
    /// connect/send fail with ENETUNREACH, getaddrinfo with EAI_AGAIN, gethostbyname and res_*
    /// with TRY_AGAIN, as on a machine without a network
    Offline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ExitStatusArg {
    /// Return COMMAND's own status even when an attempt was denied.
    Command,
}

/// Run COMMAND so that it and every process it starts make no network egress beyond the
/// allowlist.
#[derive(Parser, Debug)]
#[command(
    name = "egress-run",
    version,
    about,
    override_usage = "egress-run [OPTIONS] [--] COMMAND [ARGS]...\n       \
egress-run report [--format FORMAT] FILE...\n       \
egress-run suggest [-o PATH] FILE...\n       egress-run doctor",
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true,
    subcommand_negates_reqs = true,
    after_help = "Rules: loopback, example.com, *.example.com, 203.0.113.7, 203.0.113.0/24, \
2001:db8::/32, each optionally with :PORT or :LOW-HIGH ([2001:db8::7]:443 for IPv6).\n\
Kernel layer: programs the library cannot enter (static, Go) run under a seccomp filter whose \
network calls egress-run decides with the same address rules (name rules need the library); \
io_uring_setup fails with EPERM in block mode. --seccomp applies it to every process.\n\
Exit status: COMMAND's own; 3 when block mode denied an attempt and COMMAND exited 0; \
125 when egress-run failed before starting COMMAND; 126/127 when COMMAND could not be run.\n\n\
Examples:\n\
\x20 Guard a test suite; allow only servers it starts itself:\n\
\x20   egress-run --allow loopback --report egress.jsonl -- python -m pytest\n\
\x20 Record what it reaches, refusing nothing; write an allow file from it:\n\
\x20   egress-run --audit --report audit.jsonl -- make test\n\
\x20   egress-run suggest -o egress.allow audit.jsonl\n\
\x20 Then refuse everything else:\n\
\x20   egress-run --allow-file egress.allow -- make test\n\
\x20 Fail only on egress that is new since the baseline:\n\
\x20   egress-run --audit --baseline egress.allow -- make test\n\
\x20 Show a report (table, markdown, github, json):\n\
\x20   egress-run report --format markdown egress.jsonl >> \"$GITHUB_STEP_SUMMARY\"\n\
\x20 Check that the guard can work on this machine:\n\
\x20   egress-run doctor\n\n\
A program named report, suggest or doctor: egress-run [OPTIONS] -- report ..."
)]
struct Cli {
    #[command(subcommand)]
    sub: Option<Sub>,

    /// block: refuse every attempt no rule allows; audit: allow all, record what block would do
    #[arg(long, value_enum, value_name = "MODE")]
    mode: Option<ModeArg>,

    /// Same as --mode audit
    #[arg(long)]
    audit: bool,

    /// How a denial looks to the program; reports and exit status are the same either way
    #[arg(
        long = "deny-as",
        value_enum,
        value_name = "HOW",
        default_value = "eacces"
    )]
    deny_as: DenyAsArg,

    /// Allow a destination (repeatable)
    #[arg(long = "allow", value_name = "RULE")]
    allow: Vec<String>,

    /// Read rules from PATH, one per line; blank lines and # comments ignored (repeatable)
    #[arg(long = "allow-file", value_name = "PATH")]
    allow_file: Vec<PathBuf>,

    /// A rule code in the run may grant itself in a scope (repeatable; none by default)
    #[arg(long = "grantable", value_name = "RULE")]
    grantable: Vec<String>,

    /// Write the JSON-lines report to PATH (created or truncated)
    #[arg(long, value_name = "PATH")]
    report: Option<PathBuf>,

    /// No summary and no per-denial messages on stderr
    #[arg(long, short = 'q')]
    quiet: bool,

    /// Known destinations (a report or an allow file): exit 3 only when a destination outside
    /// it was denied (or, in audit mode, would have been)
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,

    /// Run programs neither layer can guard (setuid, 32-bit, ...); static and Go programs run
    /// under the kernel layer anyway where the kernel supports it
    #[arg(long)]
    allow_unguarded: bool,

    /// Put the whole tree under the kernel layer too (a seccomp filter egress-run supervises):
    /// raw system calls and io_uring of dynamic programs are checked as well
    #[arg(long)]
    seccomp: bool,

    /// `command`: return COMMAND's status even when an attempt was denied
    #[arg(long = "exit-status", value_enum, value_name = "WHOSE")]
    exit_status: Option<ExitStatusArg>,

    /// The program to run and its arguments
    #[arg(
        value_name = "COMMAND",
        required = true,
        trailing_var_arg = true,
        num_args = 1..
    )]
    command: Vec<OsString>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// Aligned columns for a terminal
    Table,
    /// A GitHub-flavoured markdown table, for a GitHub Actions job summary
    Markdown,
    /// GitHub Actions workflow commands: ::error per denied destination (::warning in audit mode)
    Github,
    /// The summary object, recomputed from the lines
    Json,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Show one or more reports (the jobs of a CI matrix merge into one view)
    Report {
        #[arg(long, value_enum, default_value = "table")]
        format: FormatArg,
        /// Mark the denied destinations outside FILE (a report or an allow file) as new
        #[arg(long, value_name = "FILE")]
        baseline: Option<PathBuf>,
        /// Report files written with --report
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
    /// Write an allow file that lets the same run(s) pass in block mode
    Suggest {
        /// Write it to PATH instead of stdout
        #[arg(short = 'o', long = "output", value_name = "PATH")]
        output: Option<PathBuf>,
        /// Report files written with --report (an audit run's are best)
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
    /// Check what this machine allows the guard to do; exit 0 when it can guard here
    Doctor,
}

/// What egress-run was asked to do.
#[derive(Debug)]
pub enum Invocation {
    Run(Config),
    Report {
        files: Vec<PathBuf>,
        format: FormatArg,
        baseline: Option<PathBuf>,
    },
    Suggest {
        files: Vec<PathBuf>,
        output: Option<PathBuf>,
    },
    Doctor,
    DoctorProbe(u16),
    /// `--version`: egress-run's and the library's.
    Version,
}

/// The command-line definition, for the man page and shell completions (`make`).
#[allow(dead_code)]
pub fn command() -> clap::Command {
    Cli::command()
}

/// Everything egress-run was asked to do, validated.
#[derive(Debug)]
pub struct Config {
    pub mode: Mode,
    pub deny_as: DenyAs,
    pub rules: Vec<Rule>,
    /// `--grantable`: what a scope may grant beyond `rules` (docs/scopes.md).
    pub grantable: Vec<Rule>,
    pub report: Option<PathBuf>,
    pub quiet: bool,
    pub allow_unguarded: bool,
    pub seccomp: bool,
    pub command_status: bool,
    pub baseline: Option<PathBuf>,
    pub command: Vec<OsString>,
}

const RESERVED: [&str; 3] = ["report", "suggest", "doctor"];

/// doctor's guarded check (not part of the clap definition, so not in `--help`, the man page
/// or completions): `egress-run __doctor-probe PORT`.
const DOCTOR_PROBE: &str = "__doctor-probe";

pub fn parse(raw: Vec<OsString>) -> Result<Invocation, Fatal> {
    if let [_, probe, port] = raw.as_slice() {
        if probe == DOCTOR_PROBE {
            if let Some(port) = port.to_str().and_then(|p| p.parse().ok()) {
                return Ok(Invocation::DoctorProbe(port));
            }
        }
    }
    let cli = match Cli::try_parse_from(&raw) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if e.kind() == ErrorKind::DisplayVersion {
                return Ok(Invocation::Version);
            }
            if e.kind() == ErrorKind::DisplayHelp {
                let _ = e.print();
                std::process::exit(0);
            }
            let rendered = e.render().to_string();
            let mut lines = rendered.lines().filter(|l| !l.trim().is_empty());
            let mut first = lines
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_string();
            // "the following required arguments were not provided:" names them next.
            if first.ends_with(':') {
                if let Some(next) = lines.next() {
                    first.push(' ');
                    first.push_str(next.trim());
                }
            }
            return Err(Fatal::new(first, what_to_do(&e)));
        }
    };
    match cli.sub {
        Some(Sub::Report {
            format,
            baseline,
            files,
        }) => {
            return Ok(Invocation::Report {
                files,
                format,
                baseline,
            })
        }
        Some(Sub::Suggest { output, files }) => return Ok(Invocation::Suggest { files, output }),
        Some(Sub::Doctor) => return Ok(Invocation::Doctor),
        None => {}
    }
    let mode = match (cli.audit, cli.mode) {
        (true, Some(ModeArg::Block)) => {
            return Err(Fatal::new(
                "--audit contradicts --mode block",
                "give one of them",
            ))
        }
        (true, _) | (false, Some(ModeArg::Audit)) => Mode::Audit,
        (false, _) => Mode::Block,
    };
    if let Some(first) = cli.command.first().and_then(|c| c.to_str()) {
        if RESERVED.contains(&first) && !after_double_dash(&raw, first) {
            return Err(Fatal::new(
                format!("'{first}' is a subcommand and takes no run options"),
                format!("to guard a program named {first}, write: egress-run -- {first} ..."),
            ));
        }
    }
    let mut rules = Vec::new();
    for text in &cli.allow {
        rules.push(parse_rule(text).map_err(|e| Fatal::new(e.to_string(), "fix or remove it"))?);
    }
    for path in &cli.allow_file {
        rules.extend(read_allow_file(path)?);
    }
    let mut grantable = Vec::new();
    for text in &cli.grantable {
        grantable.push(
            parse_rule(text)
                .map_err(|e| Fatal::new(format!("--grantable: {e}"), "fix or remove it"))?,
        );
    }
    Ok(Invocation::Run(Config {
        mode,
        deny_as: match cli.deny_as {
            DenyAsArg::Eacces => DenyAs::Eacces,
            DenyAsArg::Offline => DenyAs::Offline,
        },
        rules,
        grantable,
        report: cli.report,
        quiet: cli.quiet,
        allow_unguarded: cli.allow_unguarded,
        seccomp: cli.seccomp,
        command_status: cli.exit_status == Some(ExitStatusArg::Command),
        baseline: cli.baseline,
        command: cli.command,
    }))
}

/// The second half of a command-line error: for a value outside a fixed set (`--mode`,
/// `--deny-as`), the values to choose from.
fn what_to_do(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    match e.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(valid)) if !valid.is_empty() => {
            format!("give one of: {}", valid.join(", "))
        }
        _ => "run 'egress-run --help' for usage".to_string(),
    }
}

/// True when COMMAND was put after an explicit `--`.
fn after_double_dash(raw: &[OsString], first: &str) -> bool {
    raw.iter()
        .position(|a| a == "--")
        .is_some_and(|i| raw.get(i + 1).is_some_and(|a| a == first))
}

/// Reads an allow file: one rule per line; blank lines and `#` comments ignored.
pub fn read_allow_file(path: &Path) -> Result<Vec<Rule>, Fatal> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Fatal::new(
            format!("cannot read allow file {}: {e}", path.display()),
            "check the path given to --allow-file",
        )
    })?;
    let mut rules = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = match line.find('#') {
            Some(at) => &line[..at],
            None => line,
        }
        .trim();
        if line.is_empty() {
            continue;
        }
        let rule = parse_rule(line).map_err(|e| {
            Fatal::new(
                format!("{}:{}: {e}", path.display(), i + 1),
                "fix or remove that line",
            )
        })?;
        rules.push(rule);
    }
    Ok(rules)
}
