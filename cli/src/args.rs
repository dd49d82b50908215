//! Command line (CONTRACT "Command line") and rule loading.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
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
    after_help = "Rules: loopback, example.com, *.example.com, 203.0.113.7, 203.0.113.0/24, \
2001:db8::/32, each optionally with :PORT or :LOW-HIGH ([2001:db8::7]:443 for IPv6).\n\
Kernel layer: programs the library cannot enter (static, Go) run under a seccomp filter whose \
network calls egress-run decides with the same address rules (name rules need the library); \
io_uring_setup fails with EPERM in block mode. --seccomp applies it to every process.\n\
Exit status: COMMAND's own; 3 when block mode denied an attempt and COMMAND exited 0; \
125 when egress-run failed before starting COMMAND; 126/127 when COMMAND could not be run."
)]
struct Cli {
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

    /// Write the JSON-lines report to PATH (created or truncated)
    #[arg(long, value_name = "PATH")]
    report: Option<PathBuf>,

    /// No summary and no per-denial messages on stderr
    #[arg(long, short = 'q')]
    quiet: bool,

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

/// Everything egress-run was asked to do, validated.
#[derive(Debug)]
pub struct Config {
    pub mode: Mode,
    pub deny_as: DenyAs,
    pub rules: Vec<Rule>,
    pub report: Option<PathBuf>,
    pub quiet: bool,
    pub allow_unguarded: bool,
    pub seccomp: bool,
    pub command_status: bool,
    pub command: Vec<OsString>,
}

const RESERVED: [&str; 2] = ["report", "suggest"];

pub fn parse(raw: Vec<OsString>) -> Result<Config, Fatal> {
    let cli = match Cli::try_parse_from(&raw) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_string();
            return Err(Fatal::new(first, what_to_do(&e)));
        }
    };
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
                format!("'{first}' is reserved for a subcommand this version does not have"),
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
    Ok(Config {
        mode,
        deny_as: match cli.deny_as {
            DenyAsArg::Eacces => DenyAs::Eacces,
            DenyAsArg::Offline => DenyAs::Offline,
        },
        rules,
        report: cli.report,
        quiet: cli.quiet,
        allow_unguarded: cli.allow_unguarded,
        seccomp: cli.seccomp,
        command_status: cli.exit_status == Some(ExitStatusArg::Command),
        command: cli.command,
    })
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
