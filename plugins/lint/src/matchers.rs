//! Problem matchers: a linter's output turned into findings. JSON where the tool offers it,
//! its documented text format otherwise, and a generic `file:line:col: message` reader.

use crate::finding::{Finding, Severity};
use serde_json::Value;

/// The output formats ferry reads.
pub const FORMATS: [&str; 8] = [
    "clippy",
    "rustfmt",
    "flake8",
    "ruff",
    "eslint",
    "shellcheck",
    "yamllint",
    "generic",
];

/// Reads `output` in `format`. Paths are returned as the tool printed them; the caller
/// makes them relative to the workspace.
pub fn parse(format: &str, output: &str) -> Result<Vec<Finding>, String> {
    match format {
        "clippy" => Ok(clippy(output)),
        "rustfmt" => Ok(rustfmt(output)),
        "flake8" => Ok(generic(output, flake8_severity)),
        "ruff" => ruff(output),
        "eslint" => eslint(output),
        "shellcheck" => shellcheck(output),
        "yamllint" => Ok(generic(output, |_| None)),
        "generic" => Ok(generic(output, |_| None)),
        other => Err(format!("unknown format `{other}`")),
    }
}

fn num(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// `cargo clippy --message-format=json` (and `cargo build`'s): one JSON object a line.
fn clippy(output: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    // With `--all-targets` a library is checked twice, as itself and as its test harness,
    // and each finding in it comes once for each: count it once.
    let mut seen = std::collections::HashSet::new();
    for line in output.lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-message" {
            continue;
        }
        let m = &msg["message"];
        let Some(severity) = m["level"].as_str().and_then(Severity::from_word) else {
            continue;
        };
        let Some(span) = m["spans"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["is_primary"] == true))
        else {
            // "aborting due to..." and summaries have no place and repeat the rest.
            continue;
        };
        let rule = m["code"]["code"].as_str().unwrap_or("rustc");
        let place = (
            span["file_name"].as_str().unwrap_or_default().to_string(),
            num(&span["line_start"]),
            num(&span["column_start"]),
            rule.to_string(),
            m["message"].as_str().unwrap_or_default().to_string(),
        );
        if !seen.insert(place) {
            continue;
        }
        findings.push(
            Finding::new(severity, rule, m["message"].as_str().unwrap_or_default()).at(
                span["file_name"].as_str().unwrap_or_default(),
                num(&span["line_start"]),
                num(&span["column_start"]),
            ),
        );
    }
    findings
}

/// `cargo fmt --check`: a `Diff in <file>:<line>:` header before each hunk.
fn rustfmt(output: &str) -> Vec<Finding> {
    output
        .lines()
        .filter_map(|line| line.strip_prefix("Diff in "))
        .filter_map(|rest| {
            let rest = rest.trim_end().strip_suffix(':')?;
            let (file, line) = rest.rsplit_once(':')?;
            Some(
                Finding::new(Severity::Error, "rustfmt", "not formatted as rustfmt would").at(
                    file,
                    line.parse().ok(),
                    None,
                ),
            )
        })
        .collect()
}

/// flake8's codes: `E9`/`F63`/`F7`/`F82` are errors that stop the code from running.
fn flake8_severity(rule: &str) -> Option<Severity> {
    let fatal = ["E9", "F63", "F7", "F82"];
    Some(if fatal.iter().any(|p| rule.starts_with(p)) {
        Severity::Error
    } else {
        Severity::Warning
    })
}

/// `ruff check --output-format=json`: an array of diagnostics.
fn ruff(output: &str) -> Result<Vec<Finding>, String> {
    let items: Vec<Value> = json(output, "ruff")?;
    Ok(items
        .iter()
        .map(|d| {
            let rule = d["code"].as_str().unwrap_or("syntax");
            // Newer ruff says how serious a finding is; older ones only mark syntax errors
            // (no code).
            let severity = match d["severity"].as_str().and_then(Severity::from_word) {
                Some(severity) => severity,
                None if d["code"].is_null() => Severity::Error,
                None => Severity::Warning,
            };
            Finding::new(severity, rule, d["message"].as_str().unwrap_or_default()).at(
                d["filename"].as_str().unwrap_or_default(),
                num(&d["location"]["row"]),
                num(&d["location"]["column"]),
            )
        })
        .collect())
}

/// `eslint -f json`: files, each with its messages (severity 2 is an error).
fn eslint(output: &str) -> Result<Vec<Finding>, String> {
    let files: Vec<Value> = json(output, "eslint")?;
    let mut findings = Vec::new();
    for file in &files {
        for m in file["messages"].as_array().into_iter().flatten() {
            let severity = if m["severity"] == 2 || m["fatal"] == true {
                Severity::Error
            } else {
                Severity::Warning
            };
            findings.push(
                Finding::new(
                    severity,
                    m["ruleId"].as_str().unwrap_or("parse"),
                    m["message"].as_str().unwrap_or_default(),
                )
                .at(
                    file["filePath"].as_str().unwrap_or_default(),
                    num(&m["line"]),
                    num(&m["column"]),
                ),
            );
        }
    }
    Ok(findings)
}

/// `shellcheck -f json1`: `{ "comments": [...] }`.
fn shellcheck(output: &str) -> Result<Vec<Finding>, String> {
    let doc: Value = json(output, "shellcheck")?;
    Ok(doc["comments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let severity = c["level"]
                .as_str()
                .and_then(Severity::from_word)
                .unwrap_or(Severity::Warning);
            let rule = c["code"]
                .as_u64()
                .map_or("shellcheck".to_string(), |n| format!("SC{n}"));
            Finding::new(severity, rule, c["message"].as_str().unwrap_or_default()).at(
                c["file"].as_str().unwrap_or_default(),
                num(&c["line"]),
                num(&c["column"]),
            )
        })
        .collect())
}

fn json<T: serde::de::DeserializeOwned>(output: &str, tool: &str) -> Result<T, String> {
    let text = output.trim();
    if text.is_empty() {
        return serde_json::from_str("[]").map_err(|e| e.to_string());
    }
    serde_json::from_str(text).map_err(|e| {
        format!(
            "{tool} did not print the JSON report ferry reads ({e}); check its output format flag"
        )
    })
}

/// `file:line[:col]: [severity:] message`, as compilers and most linters print, and
/// yamllint's `file:line:col: [level] message (rule)`. A leading code (`E302 ...`) or a
/// trailing `(rule)` or `[rule]` becomes the rule.
fn generic(output: &str, severity_of_rule: fn(&str) -> Option<Severity>) -> Vec<Finding> {
    output
        .lines()
        .filter_map(|line| generic_line(line.trim_end(), severity_of_rule))
        .collect()
}

fn generic_line(line: &str, severity_of_rule: fn(&str) -> Option<Severity>) -> Option<Finding> {
    let mut parts = line.splitn(4, ':');
    let file = parts.next()?.trim();
    if file.is_empty() || file.contains(' ') {
        return None;
    }
    let line_no: u32 = parts.next()?.trim().parse().ok()?;
    let third = parts.next()?;
    let (column, rest) = match third.trim().parse::<u32>() {
        Ok(col) => (Some(col), parts.next()?.to_string()),
        Err(_) => (
            None,
            match parts.next() {
                Some(more) => format!("{third}:{more}"),
                None => third.to_string(),
            },
        ),
    };
    let mut message = rest.trim().to_string();
    let mut severity = None;
    // `error: msg`, `warning: msg` or yamllint's `[error] msg`.
    if let Some((word, tail)) = message.split_once(':')
        && let Some(s) = Severity::from_word(word.trim())
    {
        severity = Some(s);
        message = tail.trim().to_string();
    } else if let Some(tail) = message.strip_prefix('[')
        && let Some((word, tail)) = tail.split_once(']')
        && let Some(s) = Severity::from_word(word)
    {
        severity = Some(s);
        message = tail.trim().to_string();
    }
    // A leading code (flake8's `E501 line too long (96 > 79 characters)`) names the rule;
    // else a trailing one-word `(rule)` does (yamllint's `(line-length)`). A parenthesis
    // with spaces in it is part of the message.
    let mut rule = "lint".to_string();
    if let Some((code, tail)) = message.split_once(' ')
        && is_code(code)
    {
        rule = code.to_string();
        message = tail.to_string();
    } else if let Some(open) = message.rfind(" (")
        && message.ends_with(')')
        && !message[open + 2..message.len() - 1].contains(char::is_whitespace)
    {
        rule = message[open + 2..message.len() - 1].to_string();
        message.truncate(open);
    }
    let severity = severity
        .or_else(|| severity_of_rule(&rule))
        .unwrap_or(Severity::Warning);
    Some(Finding::new(severity, rule, message).at(file, Some(line_no), column))
}

/// `E302`, `F401`, `W0611`, `SC2086`: letters then digits.
fn is_code(word: &str) -> bool {
    let letters = word.chars().take_while(|c| c.is_ascii_uppercase()).count();
    letters >= 1 && word.len() > letters && word[letters..].chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn short(f: &Finding) -> String {
        format!(
            "{} {}:{}:{} {} {}",
            f.severity.name(),
            f.file.as_deref().unwrap_or("-"),
            f.line.unwrap_or(0),
            f.column.unwrap_or(0),
            f.rule,
            f.message
        )
    }

    fn all(format: &str, file: &str) -> Vec<String> {
        parse(format, &fixture(file))
            .unwrap()
            .iter()
            .map(short)
            .collect()
    }

    #[test]
    fn clippy_json() {
        assert_eq!(
            all("clippy", "clippy.json"),
            [
                "warning src/lib.rs:2:5 clippy::needless_return unneeded `return` statement",
                "warning src/lib.rs:5:17 clippy::ptr_arg writing `&Vec` instead of `&[_]` involves a new object where a slice will do",
                "warning src/lib.rs:6:5 clippy::len_zero length comparison to zero",
            ]
        );
    }

    #[test]
    fn rustfmt_check() {
        assert_eq!(
            all("rustfmt", "rustfmt.txt"),
            ["error /tmp/ws/src/lib.rs:5:0 rustfmt not formatted as rustfmt would"]
        );
    }

    #[test]
    fn clippy_counts_a_finding_in_a_library_once_with_all_targets() {
        assert_eq!(
            all("clippy", "clippy-all-targets.json"),
            [
                "warning src/lib.rs:1:13 clippy::ptr_arg writing `&Vec` instead of `&[_]` involves a new object where a slice will do"
            ]
        );
    }

    #[test]
    fn flake8_text() {
        let found = all("flake8", "flake8.txt");
        assert_eq!(found.len(), 9);
        assert_eq!(
            found[8],
            "warning py/long.py:1:80 E501 line too long (96 > 79 characters)"
        );
        assert_eq!(
            found[0],
            "warning py/app.py:1:1 F401 'os' imported but unused"
        );
        assert_eq!(
            found[6],
            "warning py/app.py:5:13 E711 comparison to None should be 'if cond is None:'"
        );
    }

    #[test]
    fn ruff_json() {
        let found = all("ruff", "ruff.json");
        assert_eq!(found.len(), 4);
        assert_eq!(
            found[0],
            "error /tmp/ws/py/app.py:1:1 I001 Import block is un-sorted or un-formatted"
        );
        assert!(
            parse("ruff", "not json")
                .unwrap_err()
                .contains("output format")
        );
        assert!(parse("ruff", "").unwrap().is_empty());
    }

    #[test]
    fn eslint_json() {
        let found = all("eslint", "eslint.json");
        assert!(found.contains(
            &"error /tmp/ws/web/app.js:1:7 no-unused-vars 'unused' is assigned a value but never used."
                .to_string()
        ));
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("warning /tmp/ws/web/app.js:2:7 eqeqeq"))
        );
        assert!(found.iter().any(|f| f.contains("no-debugger")));
    }

    #[test]
    fn shellcheck_json1() {
        let found = all("shellcheck", "shellcheck.json");
        assert_eq!(found.len(), 5);
        assert_eq!(
            found[0],
            "error sh/run.sh:2:10 SC2045 Iterating over ls output is fragile. Use globs."
        );
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("notice sh/run.sh:2:15 SC2035"))
        );
    }

    #[test]
    fn yamllint_parsable() {
        assert_eq!(
            all("yamllint", "yamllint.txt"),
            [
                "warning config.yaml:1:1 document-start missing document start \"---\"",
                "error config.yaml:2:1 key-duplicates duplication of key \"key\" in mapping",
                "error config.yaml:4:1 indentation wrong indentation: expected at least 1",
                "error config.yaml:5:4 hyphens too many spaces after hyphen",
                "error config.yaml:5:6 trailing-spaces trailing spaces",
            ]
        );
    }

    #[test]
    fn generic_compiler_lines() {
        let found: Vec<String> = parse(
            "generic",
            "src/a.c:3:7: error: expected ';'\nnot a finding\nlib/b.go:10: unused variable x\nC:drive is not a file:1\n",
        )
        .unwrap()
        .iter()
        .map(short)
        .collect();
        assert_eq!(
            found,
            [
                "error src/a.c:3:7 lint expected ';'",
                "warning lib/b.go:10:0 lint unused variable x",
            ]
        );
    }
}
