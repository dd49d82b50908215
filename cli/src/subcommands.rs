//! `egress-run report`, `egress-run suggest` (reading reports) and their exit statuses.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::args::FormatArg;
use crate::reports::baseline::Baseline;
use crate::reports::group::ephemeral_from;
use crate::reports::view::{self, Format};
use crate::reports::{suggest, Reports};
use crate::Fatal;

/// A report had lines that could not be read (what was readable was still shown).
pub const EXIT_UNREADABLE: i32 = 1;

/// Names every unreadable line on stderr; true when there was one.
fn tell_problems(r: &Reports) -> bool {
    let mut any = false;
    for (f, p) in r.problems() {
        any = true;
        crate::to_stderr(&format!(
            "egress-run: {}:{}: {}; the rest of the report is shown\n",
            f.name, p.line, p.what
        ));
    }
    any
}

pub fn report(files: &[PathBuf], format: FormatArg, baseline: Option<&Path>) -> Result<i32, Fatal> {
    let baseline = baseline.map(Baseline::load).transpose()?;
    let r = Reports::read(files)?;
    let mut dests = r.destinations();
    if let Some(b) = &baseline {
        b.mark(&mut dests);
    }
    let format = match format {
        FormatArg::Table => Format::Table,
        FormatArg::Markdown => Format::Markdown,
        FormatArg::Github => Format::Github,
        FormatArg::Json => Format::Json,
    };
    crate::to_stdout(&view::render(&r, &dests, format, ephemeral_from()));
    Ok(if tell_problems(&r) {
        EXIT_UNREADABLE
    } else {
        0
    })
}

pub fn suggest(files: &[PathBuf], output: Option<&Path>) -> Result<i32, Fatal> {
    let r = Reports::read(files)?;
    let text = suggest::allow_file(&r, ephemeral_from());
    match output {
        Some(path) => std::fs::write(path, &text).map_err(|e| {
            Fatal::new(
                format!("cannot write {}: {e}", path.display()),
                "choose a writable -o path",
            )
        })?,
        None => crate::to_stdout(&text),
    }
    if let Some(path) = output {
        if std::io::stderr().is_terminal() {
            crate::to_stderr(&format!(
                "egress-run: allow file written to {}\n",
                path.display()
            ));
        }
    }
    Ok(if tell_problems(&r) {
        EXIT_UNREADABLE
    } else {
        0
    })
}
