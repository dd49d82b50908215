//! One report file's bytes into the model. Never panics, whatever the bytes (a property test
//! says so): a line that cannot be used becomes a [`Problem`] naming it, and reading goes on.

use serde_json::{Map, Value};

use super::{Attempt, FileReport, Kind, Problem, Process, RunInfo, SummaryInfo};

pub struct Parsed {
    pub file: FileReport,
    pub attempts: Vec<Attempt>,
    pub processes: Vec<Process>,
}

/// At most this many problems are kept per file (a binary file would give one per line).
const MAX_PROBLEMS: usize = 20;

pub fn parse(name: &str, bytes: &[u8], file: usize) -> Parsed {
    let mut out = Parsed {
        file: FileReport {
            name: name.to_string(),
            ..FileReport::default()
        },
        attempts: Vec::new(),
        processes: Vec::new(),
    };
    let mut problems = 0usize;
    let mut note = |out: &mut Parsed, line: usize, what: String| {
        problems += 1;
        if out.file.problems.len() < MAX_PROBLEMS {
            out.file.problems.push(Problem { line, what });
        }
    };
    let ends_whole = bytes.is_empty() || bytes.ends_with(b"\n");
    let mut segments: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if ends_whole {
        // The empty piece after the final newline is not a line.
        segments.pop();
    }
    let last = segments.len();
    for (i, raw) in segments.into_iter().enumerate() {
        let n = i + 1;
        out.file.lines = n;
        let cut = n == last && !ends_whole;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            if cut {
                continue;
            }
            note(&mut out, n, "empty line".into());
            continue;
        }
        let value: Value = match serde_json::from_slice(raw) {
            Ok(v) => v,
            Err(e) if cut || e.is_eof() => {
                note(
                    &mut out,
                    n,
                    "cut short (the file ends in the middle of this line)".into(),
                );
                continue;
            }
            Err(e) => {
                note(&mut out, n, format!("not a JSON object ({e})"));
                continue;
            }
        };
        let Value::Object(obj) = value else {
            note(&mut out, n, "not a JSON object".into());
            continue;
        };
        let kind = obj.get("type").and_then(Value::as_str).unwrap_or("");
        if n == 1 && kind != "run" {
            note(
                &mut out,
                n,
                "the first line is not a \"run\" line: is this an egress-run report?".into(),
            );
        }
        match kind {
            "run" => out.file.run = Some(run_info(&obj)),
            "summary" => {
                out.file.summary = Some(SummaryInfo {
                    exit_code: obj.get("exit_code").and_then(Value::as_i64),
                    command_status: obj.get("command_status").and_then(Value::as_i64),
                    duration_ms: obj.get("duration_ms").and_then(Value::as_u64),
                })
            }
            "process" => out.processes.push(Process {
                pid: obj.get("pid").and_then(Value::as_i64).unwrap_or(0),
                exe: text(&obj, "exe").unwrap_or_default(),
                guarded: obj.get("guarded").and_then(Value::as_bool).unwrap_or(true),
                reason: text(&obj, "reason"),
                refused: obj.get("refused").and_then(Value::as_bool) == Some(true),
                file,
            }),
            "" => note(&mut out, n, "no \"type\" field".into()),
            other => {
                // A line type of a later version is ignored, as docs/report.md asks of readers.
                if let Some(kind) = Kind::parse(other) {
                    match attempt(kind, &obj, file) {
                        Ok(a) => out.attempts.push(a),
                        Err(why) => note(&mut out, n, format!("{other} line {why}")),
                    }
                }
            }
        }
    }
    if problems > MAX_PROBLEMS {
        out.file.problems.push(Problem {
            line: out.file.lines,
            what: format!("and {} more unreadable lines", problems - MAX_PROBLEMS),
        });
    }
    out
}

fn text(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_string)
}

fn strings(obj: &Map<String, Value>, key: &str) -> Vec<String> {
    obj.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn run_info(obj: &Map<String, Value>) -> RunInfo {
    RunInfo {
        mode: text(obj, "mode"),
        rules: strings(obj, "rules"),
        argv: strings(obj, "argv"),
        started: text(obj, "started"),
    }
}

fn attempt(kind: Kind, obj: &Map<String, Value>, file: usize) -> Result<Attempt, String> {
    let deny = match obj.get("decision").and_then(Value::as_str) {
        Some("deny") => true,
        Some("allow") => false,
        _ => return Err("without a decision of \"allow\" or \"deny\"".into()),
    };
    let port = match obj.get("port") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or("with a port outside 0-65535")?,
        ),
    };
    let addr = text(obj, "addr");
    if let Some(a) = &addr {
        if a.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("with an address that is not one ('{a}')"));
        }
    }
    let host = text(obj, "host");
    if kind == Kind::Resolve && host.is_none() {
        return Err("without a host".into());
    }
    if kind != Kind::Resolve && addr.is_none() {
        return Err("without an addr".into());
    }
    Ok(Attempt {
        kind,
        pid: obj.get("pid").and_then(Value::as_i64).unwrap_or(0),
        exe: text(obj, "exe").unwrap_or_default(),
        proto: text(obj, "proto"),
        addr,
        port,
        host,
        deny,
        enforced: obj.get("enforced").and_then(Value::as_bool).unwrap_or(true),
        rule: text(obj, "rule"),
        reason: text(obj, "reason"),
        count: obj.get("count").and_then(Value::as_u64).unwrap_or(1).max(1),
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RUN: &str = r#"{"type":"run","version":1,"mode":"audit","rules":[],"argv":["x"],"started":"2026-11-23T12:00:00Z"}"#;
    const DENY: &str = r#"{"type":"connect","pid":7,"exe":"/bin/x","proto":"tcp","addr":"198.51.100.20","port":443,"host":null,"decision":"deny","enforced":false,"rule":null,"count":2}"#;

    #[test]
    fn a_cut_last_line_is_named_and_the_rest_is_read() {
        let text = format!("{RUN}\n{DENY}\n{}", &DENY[..30]);
        let p = parse("r", text.as_bytes(), 0);
        assert_eq!(p.attempts.len(), 1);
        assert_eq!(p.file.problems.len(), 1);
        assert_eq!(p.file.problems[0].line, 3);
        assert!(p.file.problems[0].what.contains("cut short"));
        assert!(p.file.summary.is_none());
    }

    #[test]
    fn a_corrupt_middle_line_is_named() {
        let text = format!("{RUN}\n{{\"type\":\"connect\",,}}\n{DENY}\n");
        let p = parse("r", text.as_bytes(), 0);
        assert_eq!(p.attempts.len(), 1);
        assert_eq!(p.file.problems[0].line, 2);
    }

    #[test]
    fn an_attempt_without_a_decision_is_a_problem() {
        let bad = DENY.replace(r#""decision":"deny","#, "");
        let p = parse("r", format!("{RUN}\n{bad}\n").as_bytes(), 0);
        assert!(p.attempts.is_empty());
        assert!(
            p.file.problems[0].what.contains("decision"),
            "{:?}",
            p.file.problems
        );
    }

    #[test]
    fn unknown_line_types_and_fields_are_ignored() {
        let text = format!(
            "{RUN}\n{{\"type\":\"later\",\"x\":1}}\n{}\n",
            DENY.replace("\"count\"", "\"layer\":\"kernel\",\"count\"")
        );
        let p = parse("r", text.as_bytes(), 0);
        assert!(p.file.problems.is_empty(), "{:?}", p.file.problems);
        assert_eq!(p.attempts[0].count, 2);
    }

    #[test]
    fn not_a_report_says_so() {
        let p = parse("r", b"hello\n", 0);
        assert_eq!(p.file.problems.len(), 1);
        let p = parse("r", b"{\"a\":1}\n", 0);
        assert!(p.file.problems[0].what.contains("run"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let p = parse("r", &bytes, 0);
            prop_assert!(p.file.problems.len() <= MAX_PROBLEMS + 1);
        }

        #[test]
        fn mutated_reports_never_panic(cut in 0usize..400, flip in 0usize..400, byte in any::<u8>()) {
            let mut text = format!("{RUN}\n{DENY}\n{DENY}\n").into_bytes();
            if flip < text.len() { text[flip] = byte; }
            text.truncate(cut.min(text.len()));
            let p = parse("r", &text, 0);
            prop_assert!(p.attempts.len() <= 2);
        }
    }
}
