//! `egress-run report`: one or more reports as a table, markdown, GitHub workflow commands or
//! the summary object as JSON.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::group::{rows, Row};
use super::{Dest, Reports};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Markdown,
    Github,
    Json,
}

pub fn render(r: &Reports, dests: &[Dest], format: Format, ephemeral_from: u16) -> String {
    match format {
        Format::Table => table(r, dests, ephemeral_from),
        Format::Markdown => markdown(r, dests, ephemeral_from),
        Format::Github => github(r, dests, ephemeral_from),
        Format::Json => json_summary(r, dests).to_string() + "\n",
    }
}

/// What a row shows: decision, protocol, destination, name, count, programs, rule.
struct Cells {
    decision: String,
    proto: String,
    dest: String,
    name: String,
    count: u64,
    programs: String,
    rule: String,
    new: bool,
}

fn cells(row: &Row, ephemeral_from: u16) -> Cells {
    match row {
        Row::One(d) => {
            let decision = match (d.key.deny, d.enforced) {
                (false, _) => "allowed",
                (true, true) => "DENIED",
                (true, false) => "would deny",
            };
            let rule = if !d.key.deny {
                d.rules.iter().cloned().collect::<Vec<_>>().join(", ")
            } else if d.unliftable {
                "(no rule can allow it)".to_string()
            } else {
                format!("--allow {}", d.key.suggested_rule(ephemeral_from))
            };
            let (dest, name) = if d.key.lookup {
                (d.key.host.clone().unwrap_or_default(), String::new())
            } else {
                (d.key.shown(), d.key.host.clone().unwrap_or_default())
            };
            Cells {
                decision: decision.into(),
                proto: if d.key.lookup {
                    "dns".into()
                } else {
                    d.key.proto.clone().unwrap_or_else(|| "?".into())
                },
                dest,
                name,
                count: d.count,
                programs: d.program_list(),
                rule,
                new: d.new,
            }
        }
        Row::Group(g) => Cells {
            decision: match (g.deny, g.enforced) {
                (false, _) => "allowed",
                (true, true) => "DENIED",
                (true, false) => "would deny",
            }
            .into(),
            proto: g.proto.clone().unwrap_or_else(|| "?".into()),
            dest: g.shown(),
            name: String::new(),
            count: g.count,
            programs: g.program.clone(),
            rule: if g.deny {
                "--allow loopback".into()
            } else {
                String::new()
            },
            new: g.new,
        },
    }
}

/// `text` cut to at most `max` characters, with `...` when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max.saturating_sub(3)).collect();
    format!("{cut}...")
}

/// The programs the guard could not enter, one line each.
fn unguarded_lines(r: &Reports) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    r.processes
        .iter()
        .filter(|p| !p.guarded)
        .filter(|p| seen.insert((p.exe.clone(), p.refused)))
        .map(|p| {
            format!(
                "{} {}: {}",
                p.exe,
                if p.refused {
                    "was refused"
                } else {
                    "ran unguarded"
                },
                p.reason.as_deref().unwrap_or("")
            )
        })
        .collect()
}

fn header(r: &Reports) -> Vec<String> {
    let mut out = Vec::new();
    for f in &r.files {
        let mut line = format!("{}: ", f.name);
        match &f.run {
            Some(run) => {
                line.push_str(&format!(
                    "{} mode, command: {}",
                    run.mode.as_deref().unwrap_or("?"),
                    if run.argv.is_empty() {
                        "?".into()
                    } else {
                        shorten(&run.argv.join(" "), 100)
                    }
                ));
            }
            None => line.push_str("no run line"),
        }
        match &f.summary {
            Some(s) => {
                if let Some(code) = s.exit_code {
                    line.push_str(&format!(", exit {code}"));
                }
                if let (Some(c), Some(e)) = (s.command_status, s.exit_code) {
                    if c != e {
                        line.push_str(&format!(" (command {c})"));
                    }
                }
                if let Some(ms) = s.duration_ms {
                    line.push_str(&format!(", {ms} ms"));
                }
            }
            None => line.push_str(
                ", INTERRUPTED: no summary line (egress-run was killed); showing the lines written",
            ),
        }
        out.push(line);
    }
    out
}

fn totals_line(r: &Reports, dests: &[Dest]) -> String {
    let (attempts, denied) = r.totals();
    let new = dests.iter().filter(|d| d.new).count();
    let mut line = format!(
        "{} mode: {} process{}, {} attempt{}, {} denied",
        r.mode(),
        r.process_count(),
        if r.process_count() == 1 { "" } else { "es" },
        attempts,
        if attempts == 1 { "" } else { "s" },
        denied
    );
    if r.mode() == "audit" && denied > 0 {
        line.push_str(" (not enforced: audit)");
    }
    if new > 0 {
        line.push_str(&format!(
            ", {new} new destination{} outside the baseline",
            if new == 1 { "" } else { "s" }
        ));
    }
    line
}

fn pad_table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == cols {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn table(r: &Reports, dests: &[Dest], ephemeral_from: u16) -> String {
    let mut out = String::new();
    for h in header(r) {
        let _ = writeln!(out, "{h}");
    }
    let _ = writeln!(out, "{}\n", totals_line(r, dests));
    let mut grid = vec![[
        "DECISION",
        "PROTO",
        "DESTINATION",
        "NAME",
        "COUNT",
        "PROGRAMS",
        "RULE",
    ]
    .map(String::from)
    .to_vec()];
    for row in rows(dests, ephemeral_from) {
        let c = cells(&row, ephemeral_from);
        grid.push(vec![
            if c.new {
                format!("{} NEW", c.decision)
            } else {
                c.decision
            },
            c.proto,
            c.dest,
            c.name,
            c.count.to_string(),
            c.programs,
            c.rule,
        ]);
    }
    if grid.len() == 1 {
        out.push_str("no attempts recorded\n");
    } else {
        out.push_str(&pad_table(&grid));
    }
    let programs = r.programs();
    if !programs.is_empty() {
        out.push('\n');
        let mut grid = vec![["PROGRAM", "PROCESSES", "ATTEMPTS", "DENIED", "UNGUARDED"]
            .map(String::from)
            .to_vec()];
        for p in programs {
            grid.push(vec![
                p.program,
                p.processes.to_string(),
                p.attempts.to_string(),
                p.denied.to_string(),
                if p.unguarded > 0 {
                    p.unguarded.to_string()
                } else {
                    String::new()
                },
            ]);
        }
        out.push_str(&pad_table(&grid));
    }
    let unguarded = unguarded_lines(r);
    if !unguarded.is_empty() {
        out.push_str("\nPrograms the guard could not enter:\n");
        for line in unguarded {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn code(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("`{}`", md_escape(s).replace('`', "'"))
    }
}

fn markdown(r: &Reports, dests: &[Dest], ephemeral_from: u16) -> String {
    let mut out = String::new();
    let (_, denied) = r.totals();
    let _ = writeln!(
        out,
        "### egress-run: {}\n",
        if denied == 0 {
            "no egress denied"
        } else if r.mode() == "audit" {
            "egress that block mode would deny"
        } else {
            "egress denied"
        }
    );
    let _ = writeln!(out, "{}\n", md_escape(&totals_line(r, dests)));
    for h in header(r) {
        let _ = writeln!(out, "- {}", md_escape(&h));
    }
    out.push('\n');
    let all = rows(dests, ephemeral_from);
    if all.is_empty() {
        out.push_str("No attempts recorded.\n");
    } else {
        out.push_str("| decision | proto | destination | name | count | programs | rule |\n");
        out.push_str("| --- | --- | --- | --- | ---: | --- | --- |\n");
        for row in all {
            let c = cells(&row, ephemeral_from);
            let decision = match (c.decision.as_str(), c.new) {
                ("allowed", _) => "allowed".to_string(),
                (d, true) => format!("**{d}** (new)"),
                (d, false) => format!("**{d}**"),
            };
            let _ = writeln!(
                out,
                "| {decision} | {} | {} | {} | {} | {} | {} |",
                md_escape(&c.proto),
                code(&c.dest),
                md_escape(&c.name),
                c.count,
                md_escape(&c.programs),
                code(&c.rule)
            );
        }
    }
    let unguarded: Vec<String> = unguarded_lines(r)
        .iter()
        .map(|l| format!("- {}", md_escape(l)))
        .collect();
    if !unguarded.is_empty() {
        out.push_str("\nPrograms the guard could not enter:\n\n");
        out.push_str(&unguarded.join("\n"));
        out.push('\n');
    }
    out
}

/// A workflow command's message: `%`, CR and LF escaped as GitHub asks.
fn gh_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value: also `:` and `,`.
fn gh_prop(s: &str) -> String {
    gh_data(s).replace(':', "%3A").replace(',', "%2C")
}

fn github(r: &Reports, dests: &[Dest], ephemeral_from: u16) -> String {
    let mut out = String::new();
    for row in rows(dests, ephemeral_from) {
        if !row.deny() {
            continue;
        }
        let c = cells(&row, ephemeral_from);
        let enforced = c.decision == "DENIED";
        let what = if c.proto == "dns" {
            format!("lookup of {}", c.dest)
        } else if c.name.is_empty() {
            format!("{} {}", c.proto, c.dest)
        } else {
            format!("{} {} ({})", c.proto, c.dest, c.name)
        };
        let how = if c.rule.starts_with("--allow") {
            format!("to allow it: {}", c.rule)
        } else {
            "no rule can allow it".to_string()
        };
        let title = format!(
            "egress-run: {}{}",
            if enforced {
                "egress denied"
            } else {
                "egress block mode would deny"
            },
            if c.new { " (new)" } else { "" }
        );
        let _ = writeln!(
            out,
            "::{} title={}::{} {what} by {} (x{}); {how}",
            if enforced { "error" } else { "warning" },
            gh_prop(&title),
            if enforced { "denied" } else { "would deny" },
            gh_data(&c.programs),
            c.count
        );
    }
    for p in r.processes.iter().filter(|p| !p.guarded) {
        let _ = writeln!(
            out,
            "::warning title={}::{}",
            gh_prop("egress-run: unguarded program"),
            gh_data(&format!(
                "{} {}: {}",
                p.exe,
                if p.refused {
                    "was refused"
                } else {
                    "ran unguarded"
                },
                p.reason.as_deref().unwrap_or("")
            ))
        );
    }
    for f in r.interrupted() {
        let _ = writeln!(
            out,
            "::warning title={}::{}",
            gh_prop("egress-run: interrupted run"),
            gh_data(&format!(
                "{}: no summary line (egress-run was killed); later attempts are missing",
                f.name
            ))
        );
    }
    let _ = writeln!(
        out,
        "::notice title=egress-run::{}",
        gh_data(&totals_line(r, dests))
    );
    out
}

/// The summary object recomputed from the lines (shaped like the report's `summary` line).
pub fn json_summary(r: &Reports, dests: &[Dest]) -> Value {
    let (attempts, denied) = r.totals();
    let one = match r.files.as_slice() {
        [f] => f.summary.clone(),
        _ => None,
    };
    let destinations: Vec<Value> = dests
        .iter()
        .map(|d| {
            let mut v = json!({
                "host": d.key.host,
                "addr": d.key.addr,
                "port": d.key.port,
                "proto": d.key.proto,
                "decision": if d.key.deny { "deny" } else { "allow" },
                "count": d.count,
                "programs": d.programs.keys().collect::<Vec<_>>(),
            });
            if d.new {
                v["new"] = json!(true);
            }
            v
        })
        .collect();
    json!({
        "exit_code": one.as_ref().and_then(|s| s.exit_code),
        "command_status": one.as_ref().and_then(|s| s.command_status),
        "duration_ms": one.as_ref().and_then(|s| s.duration_ms),
        "mode": r.mode(),
        "processes": r.process_count(),
        "attempts": attempts,
        "denied": denied,
        "new_denied": dests.iter().filter(|d| d.new).map(|d| d.count).sum::<u64>(),
        "destinations": destinations,
        "files": r.files.iter().map(|f| json!({
            "name": f.name,
            "complete": f.summary.is_some(),
            "problems": f.problems.iter().map(|p| json!({"line": p.line, "what": p.what})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    #[test]
    fn table_names_destinations_programs_and_rules() {
        let r = sample();
        let out = render(&r, &r.destinations(), Format::Table, 32768);
        assert!(out.contains("198.51.100.20:9999"), "{out}");
        assert!(out.contains("--allow 198.51.100.20:9999"), "{out}");
        assert!(out.contains("--allow loopback:8080"), "{out}");
        assert!(out.contains("curl"), "{out}");
        let first_denied = out.find("DENIED").unwrap();
        let first_allowed = out.find("allowed ").unwrap();
        assert!(first_denied < first_allowed, "denied first: {out}");
    }

    #[test]
    fn github_has_one_error_per_denied_destination() {
        let r = sample();
        let out = render(&r, &r.destinations(), Format::Github, 32768);
        let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("::error ")).collect();
        assert_eq!(errors.len(), 2, "{out}");
        assert!(
            errors.iter().any(
                |l| l.contains("curl") && l.contains("--allow loopback%3A8080")
                    || l.contains("--allow loopback:8080")
            ),
            "{out}"
        );
    }

    #[test]
    fn github_escapes() {
        assert_eq!(gh_data("50%\nx"), "50%25%0Ax");
        assert_eq!(gh_prop("a:b,c"), "a%3Ab%2Cc");
    }

    #[test]
    fn json_recomputes_the_summary() {
        let r = sample();
        let v = json_summary(&r, &r.destinations());
        assert_eq!(v["attempts"], 6);
        assert_eq!(v["denied"], 4);
        assert_eq!(v["exit_code"], 3);
        assert_eq!(v["destinations"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn markdown_is_a_table() {
        let r = sample();
        let out = render(&r, &r.destinations(), Format::Markdown, 32768);
        assert!(
            out.contains("| **DENIED** | udp | `198.51.100.20:9999` |"),
            "{out}"
        );
    }
}
