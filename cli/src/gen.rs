//! `egress-run-gen DIR`: writes the man pages (`DIR/man/egress-run.1` and one per subcommand)
//! and the bash, zsh and fish completions (`DIR/completions/`) from egress-run's own clap
//! definition, so that they cannot drift from `--help`. `make` runs it; it is not installed.

#[allow(dead_code)]
#[path = "args.rs"]
mod args;

use std::path::{Path, PathBuf};

/// What `args.rs` expects of its crate (egress-run's own is in main.rs).
#[allow(dead_code)]
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

fn man_page(cmd: &clap::Command, path: &Path) -> std::io::Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    std::fs::write(path, buf)
}

fn generate(out: &Path) -> std::io::Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let mut cmd = args::command();
    cmd.build();
    man_page(&cmd, &man.join("egress-run.1"))?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // A page named egress-run-SUB; a one-shot tool may leak the name clap keeps.
        let name: &'static str = Box::leak(format!("egress-run-{}", sub.get_name()).into());
        let named = sub.clone().name(name);
        man_page(
            &named,
            &man.join(format!("egress-run-{}.1", sub.get_name())),
        )?;
    }
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        let path = clap_complete::generate_to(shell, &mut cmd, "egress-run", &completions)?;
        if shell == clap_complete::Shell::Bash {
            fix_bash_hyphen(&path)?;
        }
    }
    Ok(())
}

/// clap_complete's bash script names the subcommand states of a hyphenated program two ways
/// (`egress__run__subcmd__report` where it walks the words, `egress__subcmd__run__subcmd__report`
/// in the `case` arms), so no subcommand's options ever complete: clap-rs/clap#6421 and #6529,
/// open at the time of writing. Spell the arms as the walk does; once fixed upstream this
/// replaces nothing. tests/e2e/test_man_and_completions.py checks `report --format <TAB>`.
fn fix_bash_hyphen(path: &Path) -> std::io::Result<()> {
    let text = std::fs::read_to_string(path)?;
    std::fs::write(
        path,
        text.replace("egress__subcmd__run__subcmd__", "egress__run__subcmd__"),
    )
}

fn main() {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("egress-run-gen: no output directory; usage: egress-run-gen DIR");
        std::process::exit(2);
    };
    if let Err(e) = generate(&out) {
        eprintln!("egress-run-gen: cannot write into {}: {e}", out.display());
        std::process::exit(1);
    }
}
