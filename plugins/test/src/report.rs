//! Test results as the runners report them: JUnit XML (pytest, nextest, most runners), TAP,
//! `go test -json` and libtest's human output (`cargo test`).

use quick_xml::events::Event;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
}

/// One test's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Suite or class, when the format has one.
    pub suite: String,
    pub name: String,
    pub outcome: Outcome,
    pub duration: Option<Duration>,
    /// First line of the failure, for the summary.
    pub message: String,
    /// The whole failure text (assertion, diff, stack).
    pub detail: String,
}

impl Case {
    fn new(suite: &str, name: &str, outcome: Outcome) -> Case {
        Case {
            suite: suite.to_string(),
            name: name.to_string(),
            outcome,
            duration: None,
            message: String::new(),
            detail: String::new(),
        }
    }

    /// `suite::name`, or the name alone.
    pub fn full_name(&self) -> String {
        if self.suite.is_empty() {
            self.name.clone()
        } else {
            format!("{}::{}", self.suite, self.name)
        }
    }

    /// Where the failure happened, from the texts runners print: `panicked at src/lib.rs:16:9`,
    /// `test_x.py:7: AssertionError`, `location: 'file.mjs:4:1'`.
    pub fn location(&self) -> Option<(String, u32, Option<u32>)> {
        let text = format!("{}\n{}", self.message, self.detail);
        for line in text.lines() {
            let line = line
                .trim()
                .trim_start_matches("location:")
                .trim()
                .trim_matches('\'');
            let candidate = line
                .rsplit_once(" at ")
                .map_or(line, |(_, tail)| tail)
                .trim_end_matches(':');
            let candidate = candidate.strip_prefix("at ").unwrap_or(candidate);
            if let Some(found) = file_line(candidate) {
                return Some(found);
            }
        }
        None
    }
}

/// `path/file.ext:LINE[:COL]` at the start of `text`.
fn file_line(text: &str) -> Option<(String, u32, Option<u32>)> {
    let text = text.strip_prefix("file://").unwrap_or(text);
    let mut parts = text.split(':');
    let file = parts.next()?;
    if !file.contains('.') || file.contains(' ') || file.contains('(') {
        return None;
    }
    let line: u32 = parts.next()?.trim().parse().ok()?;
    let column = parts.next().and_then(|c| c.trim().parse().ok());
    Some((file.to_string(), line, column))
}

/// Reads a report in `format`. An error says why the report cannot be trusted.
pub fn parse(format: &str, text: &str) -> Result<Vec<Case>, String> {
    match format {
        "junit" => junit(text),
        "tap" => Ok(tap(text)),
        "go-json" => Ok(go_json(text)),
        "libtest" => Ok(libtest(text)),
        other => Err(format!("unknown format `{other}`")),
    }
}

pub const FORMATS: [&str; 4] = ["junit", "tap", "go-json", "libtest"];

fn junit(text: &str) -> Result<Vec<Case>, String> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut cases = Vec::new();
    let mut suite = String::new();
    let mut current: Option<Case> = None;
    let mut in_failure = false;
    let mut depth = 0usize;
    let mut saw_root = false;
    loop {
        let event = reader.read_event().map_err(|e| {
            format!(
                "the JUnit report is not valid XML at byte {}: {e}",
                reader.error_position()
            )
        })?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let tag = e.name().as_ref().to_vec();
                let attr = |name: &str| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == name.as_bytes())
                        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
                        .unwrap_or_default()
                };
                match tag.as_slice() {
                    b"testsuites" | b"testsuite" => {
                        saw_root = true;
                        if tag == b"testsuite" {
                            suite = attr("name");
                        }
                    }
                    b"testcase" => {
                        let class = attr("classname");
                        let mut case = Case::new(
                            if class.is_empty() { &suite } else { &class },
                            &attr("name"),
                            Outcome::Passed,
                        );
                        case.duration = attr("time")
                            .parse::<f64>()
                            .ok()
                            .map(Duration::from_secs_f64);
                        if empty {
                            cases.push(case);
                        } else {
                            current = Some(case);
                        }
                    }
                    b"failure" | b"error" | b"skipped" => {
                        if let Some(case) = &mut current {
                            case.outcome = if tag == b"skipped" {
                                Outcome::Skipped
                            } else {
                                Outcome::Failed
                            };
                            case.message = attr("message");
                            in_failure = !empty;
                        }
                    }
                    _ => {}
                }
                if !empty {
                    depth += 1;
                }
            }
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                match e.name().as_ref() {
                    b"testcase" => cases.extend(current.take()),
                    b"failure" | b"error" | b"skipped" => in_failure = false,
                    _ => {}
                }
            }
            Event::Text(t) if in_failure => {
                if let (Some(case), Ok(text)) = (&mut current, t.decode()) {
                    case.detail.push_str(
                        &quick_xml::escape::unescape(&text)
                            .map(|c| c.into_owned())
                            .unwrap_or_default(),
                    );
                }
            }
            Event::GeneralRef(r) if in_failure => {
                if let (Some(case), Ok(name)) = (&mut current, r.decode()) {
                    let resolved = quick_xml::escape::unescape(&format!("&{name};"))
                        .map(|c| c.into_owned())
                        .unwrap_or_default();
                    case.detail.push_str(&resolved);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_root {
        return Err("the file has no <testsuites> or <testsuite>: not a JUnit report".into());
    }
    if depth != 0 || current.is_some() {
        return Err("the JUnit report ends in the middle of an element: it was cut off (did the runner crash?)".into());
    }
    for case in &mut cases {
        if case.message.is_empty() {
            case.message = case
                .detail
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default()
                .trim()
                .to_string();
        }
    }
    Ok(cases)
}

/// TAP 13/14: `ok N - name`, `not ok N - name`, `# SKIP`, with a YAML block of details.
fn tap(text: &str) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    let mut in_yaml = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        // Subtests are indented; only top-level results count.
        let top = !line.starts_with(' ');
        if top && (trimmed.starts_with("ok ") || trimmed.starts_with("not ok ")) {
            in_yaml = false;
            let passed = trimmed.starts_with("ok ");
            let rest = trimmed
                .trim_start_matches("not ok ")
                .trim_start_matches("ok ");
            let rest = rest
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start();
            let rest = rest.strip_prefix("- ").unwrap_or(rest);
            let (name, directive) = rest.split_once(" # ").map_or((rest, ""), |(n, d)| (n, d));
            let outcome = if directive.to_ascii_uppercase().starts_with("SKIP")
                || directive.to_ascii_uppercase().starts_with("TODO")
            {
                Outcome::Skipped
            } else if passed {
                Outcome::Passed
            } else {
                Outcome::Failed
            };
            cases.push(Case::new("", name.trim(), outcome));
            continue;
        }
        if trimmed == "---" {
            in_yaml = true;
            continue;
        }
        if trimmed == "..." {
            in_yaml = false;
            continue;
        }
        if in_yaml && let Some(case) = cases.last_mut() {
            if let Some(ms) = trimmed.strip_prefix("duration_ms:") {
                case.duration = ms
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .map(|ms| Duration::from_secs_f64(ms / 1000.0));
            }
            if case.outcome == Outcome::Failed {
                case.detail.push_str(trimmed);
                case.detail.push('\n');
            }
        }
    }
    for case in &mut cases {
        if case.outcome == Outcome::Failed {
            // The `error:` block holds the message.
            let mut lines = case.detail.lines().skip_while(|l| !l.starts_with("error:"));
            let first = lines
                .next()
                .unwrap_or_default()
                .trim_start_matches("error:")
                .trim();
            case.message = if first.is_empty() || first == "|-" {
                lines
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            } else {
                first.trim_matches('\'').to_string()
            };
        }
    }
    cases
}

/// `go test -json`: one event a line; `pass`, `fail` and `skip` actions end a test.
fn go_json(text: &str) -> Vec<Case> {
    let mut output: std::collections::HashMap<(String, String), String> = Default::default();
    let mut cases = Vec::new();
    for line in text.lines() {
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(pkg), Some(test)) = (ev["Package"].as_str(), ev["Test"].as_str()) else {
            continue;
        };
        let key = (pkg.to_string(), test.to_string());
        let outcome = match ev["Action"].as_str() {
            Some("output") => {
                output
                    .entry(key)
                    .or_default()
                    .push_str(ev["Output"].as_str().unwrap_or_default());
                continue;
            }
            Some("pass") => Outcome::Passed,
            Some("fail") => Outcome::Failed,
            Some("skip") => Outcome::Skipped,
            _ => continue,
        };
        let mut case = Case::new(pkg, test, outcome);
        case.duration = ev["Elapsed"].as_f64().map(Duration::from_secs_f64);
        if outcome == Outcome::Failed {
            case.detail = output.remove(&key).unwrap_or_default();
            case.message = case
                .detail
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with("=== ") && !l.starts_with("--- "))
                .unwrap_or_default()
                .to_string();
        }
        cases.push(case);
    }
    cases
}

/// libtest's human output: `test name ... ok|FAILED|ignored`, then a `---- name stdout ----`
/// section per failure.
fn libtest(text: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let Some((name, result)) = rest.split_once(" ... ") else {
            continue;
        };
        let outcome = match result.split([',', ' ']).next() {
            Some("ok") => Outcome::Passed,
            Some("FAILED") => Outcome::Failed,
            Some("ignored") => Outcome::Skipped,
            _ => continue,
        };
        cases.push(Case::new("", name.trim(), outcome));
    }
    // Failure details: from `---- name stdout ----` to the next blank-line-separated header.
    let mut current: Option<usize> = None;
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            current = cases.iter().position(|c| c.name == name);
            continue;
        }
        if line == "failures:" || line.starts_with("test result:") {
            current = None;
        }
        if let Some(i) = current {
            cases[i].detail.push_str(line);
            cases[i].detail.push('\n');
        }
    }
    for case in &mut cases {
        let lines: Vec<&str> = case
            .detail
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        // `thread 'x' panicked at file:line:col:` then the message, which goes on for as
        // many lines as the panic wrote (`assert_eq!`'s `left:` and `right:`), up to the
        // backtrace note.
        case.message = match lines.iter().position(|l| l.contains("panicked at")) {
            Some(i) => {
                let message: Vec<&str> = lines[i + 1..]
                    .iter()
                    .take_while(|l| {
                        !l.starts_with("note: run with `RUST_BACKTRACE")
                            && !l.starts_with("stack backtrace:")
                            && !l.contains("panicked at")
                    })
                    .map(|l| l.trim_end())
                    .collect();
                match message.is_empty() {
                    true => lines[i].trim().to_string(),
                    false => message.join("\n").trim().to_string(),
                }
            }
            None => lines
                .first()
                .copied()
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
    }
    cases
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

    fn outcomes(cases: &[Case]) -> Vec<(String, Outcome)> {
        cases.iter().map(|c| (c.full_name(), c.outcome)).collect()
    }

    #[test]
    fn pytest_junit() {
        let cases = parse("junit", &fixture("pytest.xml")).unwrap();
        assert_eq!(
            outcomes(&cases),
            [
                ("test_sample::test_passes".to_string(), Outcome::Passed),
                ("test_sample::test_fails".to_string(), Outcome::Failed),
                ("test_sample::test_skipped".to_string(), Outcome::Skipped),
                ("test_sample::test_errors".to_string(), Outcome::Failed),
            ]
        );
        assert_eq!(
            cases[1].message,
            "AssertionError: dicts differ\nassert {'a': 1} == {'a': 2}\n  \n  Differing items:\n  {'a': 1} != {'a': 2}\n  Use -v to get more diff"
        );
        assert_eq!(
            cases[1].location(),
            Some(("test_sample.py".into(), 7, None))
        );
        assert!(
            cases[1]
                .detail
                .contains(">       assert {\"a\": 1} == {\"a\": 2}")
        );
    }

    #[test]
    fn nextest_junit() {
        let cases = parse("junit", &fixture("nextest.xml")).unwrap();
        assert_eq!(
            outcomes(&cases),
            [
                ("sample::tests::adds".to_string(), Outcome::Passed),
                ("sample::tests::subtracts".to_string(), Outcome::Failed),
            ]
        );
        assert_eq!(
            cases[1].location(),
            Some(("src/lib.rs".into(), 16, Some(9)))
        );
    }

    #[test]
    fn a_cut_off_report_is_refused() {
        let err = parse("junit", &fixture("partial.xml")).unwrap_err();
        assert!(
            err.contains("cut off") || err.contains("not valid XML"),
            "{err}"
        );
        assert!(
            parse("junit", "<html></html>")
                .unwrap_err()
                .contains("not a JUnit report")
        );
    }

    #[test]
    fn node_tap() {
        let cases = parse("tap", &fixture("node.tap")).unwrap();
        assert_eq!(
            outcomes(&cases),
            [
                ("adds".to_string(), Outcome::Passed),
                ("subtracts".to_string(), Outcome::Failed),
                ("later".to_string(), Outcome::Skipped),
            ]
        );
        assert_eq!(cases[1].message, "Expected values to be strictly equal:");
        assert_eq!(
            cases[1].location(),
            Some(("/tmp/ws/sample.test.mjs".into(), 4, Some(1)))
        );
    }

    #[test]
    fn cargo_libtest() {
        let cases = parse("libtest", &fixture("libtest.txt")).unwrap();
        assert_eq!(
            outcomes(&cases),
            [
                ("tests::slow".to_string(), Outcome::Skipped),
                ("tests::subtracts".to_string(), Outcome::Failed),
                ("tests::adds".to_string(), Outcome::Passed),
            ]
        );
        assert_eq!(
            cases[1].message,
            "assertion `left == right` failed: two minus one\n  left: 1\n right: 3"
        );
        assert_eq!(
            cases[1].location(),
            Some(("src/lib.rs".into(), 16, Some(9)))
        );
    }

    #[test]
    fn go_test_json() {
        // The documented `go test -json` event stream (test2json).
        let text = r#"{"Action":"run","Package":"ex","Test":"TestA"}
{"Action":"output","Package":"ex","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"output","Package":"ex","Test":"TestA","Output":"    a_test.go:9: want 2, got 3\n"}
{"Action":"output","Package":"ex","Test":"TestA","Output":"--- FAIL: TestA (0.00s)\n"}
{"Action":"fail","Package":"ex","Test":"TestA","Elapsed":0.01}
{"Action":"pass","Package":"ex","Test":"TestB","Elapsed":0}
{"Action":"skip","Package":"ex","Test":"TestC","Elapsed":0}
{"Action":"fail","Package":"ex","Elapsed":0.02}"#;
        let cases = parse("go-json", text).unwrap();
        assert_eq!(
            outcomes(&cases),
            [
                ("ex::TestA".to_string(), Outcome::Failed),
                ("ex::TestB".to_string(), Outcome::Passed),
                ("ex::TestC".to_string(), Outcome::Skipped),
            ]
        );
        assert_eq!(cases[0].message, "a_test.go:9: want 2, got 3");
        assert_eq!(cases[0].location(), Some(("a_test.go".into(), 9, None)));
    }
}
