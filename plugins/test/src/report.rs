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
    /// Marked as expected to fail (pytest's `xfail`, a failing TAP `# TODO`): `Some(true)`
    /// when it failed as expected (counted as skipped), `Some(false)` when it passed anyway
    /// (pytest's unexpected pass, counted as passed).
    pub xfail: Option<bool>,
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
            xfail: None,
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
    /// `test_x.py:7: AssertionError`, `location: 'file.mjs:4:1'`. When a traceback passes
    /// through the test's own file more than once (a decorator such as Hypothesis's `@given`
    /// wraps the test, or the test calls a helper of its file), the deepest frame in that file
    /// is where it raised.
    pub fn location(&self) -> Option<(String, u32, Option<u32>)> {
        let found = self.places();
        // pytest names the module (`tests.test_x`) as the suite: its file.
        let own = format!("{}.py", self.suite.replace('.', "/"));
        found
            .iter()
            .rev()
            .find(|(file, ..)| !self.suite.is_empty() && file.ends_with(&own))
            .or(found.first())
            .cloned()
    }

    /// Every `file:line[:col]` the failure texts name, in order.
    fn places(&self) -> Vec<(String, u32, Option<u32>)> {
        let mut found = Vec::new();
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
            if let Some(place) = file_line(candidate) {
                found.push(place);
            }
        }
        found
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

/// pytest's short summary (`-rX`) names the tests that passed though marked `xfail`, which
/// its JUnit report writes as plain passes: `XPASS test_x.py::test_y - reason`. Marks them.
pub fn mark_xpasses(cases: &mut [Case], output: &str) {
    // Only the summary counts: a test's own output could print anything.
    let Some((_, summary)) = output.rsplit_once("short test summary info") else {
        return;
    };
    for line in summary.lines() {
        let Some(rest) = line.trim().strip_prefix("XPASS ") else {
            continue;
        };
        let id = rest.split(" - ").next().unwrap_or(rest).trim();
        // `tests/test_x.py::Class::test_y` against JUnit's `tests.test_x.Class` and `test_y`.
        let Some((file, name)) = id.split_once("::") else {
            continue;
        };
        let (classes, test) = name.rsplit_once("::").map_or(("", name), |(c, t)| (c, t));
        let module = file.trim_end_matches(".py").replace(['/', '\\'], ".");
        let suite = if classes.is_empty() {
            module
        } else {
            format!("{module}.{}", classes.replace("::", "."))
        };
        for case in cases.iter_mut() {
            if case.name == test && case.suite == suite && case.outcome == Outcome::Passed {
                case.xfail = Some(false);
            }
        }
    }
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
                            // pytest writes an expected failure as skipped, of this type.
                            if tag == b"skipped" && attr("type") == "pytest.xfail" {
                                case.xfail = Some(true);
                            }
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

/// TAP 13/14 as tape and `node --test` write it.
///
/// - `ok N - name` / `not ok N - name`, with `# SKIP` and `# TODO` directives (skipped);
/// - node's subtests: indented results, each followed by its parent's result line. Only the
///   innermost are tests; the parent names their suite (`math › adds`), and is a test itself
///   only if it failed for a reason of its own (a hook), not because a subtest did;
/// - tape's tests: a `# name` comment before the assertions that are its results;
/// - the YAML block after a result: `error` (node) or the assertion's name (tape) is the
///   message, followed by `operator`, `expected` and `actual`; the place is the first frame
///   of `stack` in the suite's own files, else tape's `at:` or node's `location:`.
fn tap(text: &str) -> Vec<Case> {
    let mut found: Vec<Case> = Vec::new();
    // Tests not yet taken by a parent, by index into `found`, with the level they are now
    // at: a parent takes the ones below its level and leaves them at its own, for its
    // parent in turn. Each test is taken once per level, however long the output.
    let mut open: Vec<(usize, usize)> = Vec::new();
    let mut group = String::new();
    let mut planned = false;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let depth = line.len() - trimmed.len();
        if let Some(comment) = trimmed.strip_prefix('#') {
            // tape names a test in a comment at the top level; node says `# Subtest:` and
            // then repeats the name on the result line. The summary after the plan is not a
            // test's name.
            let comment = comment.trim();
            if depth == 0 && !planned && !comment.starts_with("Subtest:") {
                group = comment.to_string();
            }
            continue;
        }
        if depth == 0 && trimmed.starts_with("1..") {
            planned = true;
            continue;
        }
        let (passed, rest) = if let Some(rest) = trimmed.strip_prefix("ok") {
            (true, rest)
        } else if let Some(rest) = trimmed.strip_prefix("not ok") {
            (false, rest)
        } else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with(' ')) {
            continue;
        }
        let rest = rest
            .trim_start()
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
        let rest = rest.strip_prefix("- ").unwrap_or(rest);
        let (name, directive) = rest.split_once(" # ").unwrap_or((rest, ""));
        let directive = directive.to_ascii_uppercase();
        // `# TODO` marks a test not done yet: skipped either way, and one that fails does
        // so as expected. (A passing one is often a placeholder with no body, as node's
        // `test.todo`: not worth a warning.)
        let todo = directive.starts_with("TODO");
        let outcome = if directive.starts_with("SKIP") || todo {
            Outcome::Skipped
        } else if passed {
            Outcome::Passed
        } else {
            Outcome::Failed
        };
        let mut case = Case::new("", name.trim(), outcome);
        if todo && !passed {
            case.xfail = Some(true);
        }
        // The YAML block, when one follows: `---` indented past the result, to `...`.
        let mut yaml = Vec::new();
        if lines
            .peek()
            .is_some_and(|l| l.trim() == "---" && l.len() - l.trim_start().len() > depth)
        {
            let open = lines.next().unwrap_or_default();
            let indent = open.len() - open.trim_start().len();
            for l in lines.by_ref() {
                if l.trim() == "..." && l.len() - l.trim_start().len() == indent {
                    break;
                }
                yaml.push(l);
            }
        }
        // Keys sit at the block's first line's indent (node: the `---`'s, tape: two more).
        let keys_at = yaml
            .iter()
            .find(|l| !l.trim().is_empty())
            .map_or(0, |l| l.len() - l.trim_start().len());
        let yaml: Vec<&str> = yaml
            .iter()
            .map(|l| {
                l.get(keys_at.min(l.len() - l.trim_start().len())..)
                    .unwrap_or("")
            })
            .collect();
        let fields = yaml_fields(&yaml);
        if let Some(ms) = fields
            .get("duration_ms")
            .and_then(|v| v.parse::<f64>().ok())
        {
            case.duration = Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
        }
        let for_subtests = fields.get("failureType").map(String::as_str) == Some("subtestsFailed");
        if outcome == Outcome::Failed {
            describe_tap_failure(&mut case, &fields);
        }
        // The results just before this one at a deeper level are its subtests.
        let mut children = Vec::new();
        while let Some(&(index, level)) = open.last() {
            if level <= depth {
                break;
            }
            open.pop();
            children.push(index);
        }
        for &index in children.iter().rev() {
            let child = &mut found[index];
            child.suite = if child.suite.is_empty() {
                case.name.clone()
            } else {
                format!("{} › {}", case.name, child.suite)
            };
            open.push((index, depth));
        }
        // A parent is a test only if it failed for a reason of its own; node's "a subtest
        // failed" is its children's failure, counted there.
        if for_subtests || (!children.is_empty() && outcome != Outcome::Failed) {
            continue;
        }
        if depth == 0 && children.is_empty() && group != case.name {
            case.suite = group.clone();
        }
        found.push(case);
        open.push((found.len() - 1, depth));
    }
    found
}

/// The top-level keys of a TAP YAML block, with their values as text: a quoted scalar
/// unquoted, a block scalar (`|-`) or a nested mapping as its lines, de-indented.
fn yaml_fields(lines: &[&str]) -> std::collections::BTreeMap<String, String> {
    let mut fields = std::collections::BTreeMap::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        if line.starts_with(' ') {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let mut block = Vec::new();
        while i < lines.len() && (lines[i].starts_with(' ') || lines[i].trim().is_empty()) {
            block.push(lines[i]);
            i += 1;
        }
        let text = if value.is_empty() || value.starts_with('|') || value.starts_with('>') {
            let cut = block
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.len() - l.trim_start().len())
                .min()
                .unwrap_or(0);
            let joined: Vec<&str> = block.iter().map(|l| l.get(cut..).unwrap_or("")).collect();
            joined.join("\n").trim_end().to_string()
        } else {
            let v = value;
            let unquoted = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .map(|v| v.replace("''", "'"))
                .or_else(|| {
                    v.strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .map(str::to_string)
                });
            unquoted.unwrap_or_else(|| v.to_string())
        };
        fields.insert(key.trim().to_string(), text);
    }
    fields
}

/// A failed TAP result's message and place from its YAML fields.
fn describe_tap_failure(case: &mut Case, fields: &std::collections::BTreeMap<String, String>) {
    let error = fields
        .get("error")
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| case.name.clone());
    let mut message = error;
    for key in ["operator", "expected", "actual"] {
        if let Some(value) = fields.get(key) {
            let value = value.replace('\n', "\n    ");
            message.push_str(&format!("\n  {key}: {value}"));
        }
    }
    case.message = message;
    // The first frame in the suite's own files, else where the runner says the test is.
    let own = |frame: &&str| {
        !frame.contains("node:") && !frame.contains("node_modules") && !frame.contains("(native)")
    };
    let frame = fields
        .get("stack")
        .and_then(|stack| {
            stack
                .lines()
                .map(str::trim)
                .filter(|l| !l.starts_with("Error") && !l.is_empty())
                .find(own)
                .map(str::to_string)
        })
        .or_else(|| fields.get("at").cloned())
        .or_else(|| fields.get("location").cloned());
    let mut detail = String::new();
    if let Some(frame) = frame {
        // `Test.<anonymous> (/ws/a.js:4:5)`, `at Object.<anonymous> (file:///ws/a.mjs:9:3)`:
        // the place is inside the parentheses.
        let place = frame
            .rsplit_once('(')
            .map_or(frame.as_str(), |(_, p)| p.trim_end_matches(')'));
        let place = place
            .trim_start_matches("at ")
            .trim_start_matches("file://");
        detail.push_str(&format!("location: {place}\n"));
    }
    for (key, value) in fields {
        if key != "duration_ms" {
            detail.push_str(&format!("{key}: {value}\n"));
        }
    }
    case.detail = detail;
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
        // The runner's words whole, and the assertion's own line (the stack's first frame in
        // the suite), not the line the test starts on.
        assert_eq!(
            cases[1].message,
            "Expected values to be strictly equal:\n\n1 !== 0\n  operator: strictEqual\n  expected: 0\n  actual: 1"
        );
        assert_eq!(
            cases[1].location(),
            Some(("/tmp/ws/sample.test.mjs".into(), 4, Some(32)))
        );
    }

    #[test]
    fn node_tap_subtests_are_the_tests_and_their_parent_names_the_suite() {
        let cases = parse("tap", &fixture("node-subtests.tap")).unwrap();
        assert_eq!(
            outcomes(&cases),
            [
                ("math::adds".to_string(), Outcome::Passed),
                ("math::fails".to_string(), Outcome::Failed),
                ("top".to_string(), Outcome::Failed),
                ("later".to_string(), Outcome::Skipped),
                ("xf".to_string(), Outcome::Skipped),
            ]
        );
        assert_eq!(
            cases[1].message,
            "one plus one\n\n2 !== 3\n  operator: strictEqual\n  expected: 3\n  actual: 2"
        );
        assert_eq!(
            cases[1].location(),
            Some(("/tmp/ws/t.mjs".into(), 5, Some(38)))
        );
        // A nested value keeps its lines.
        assert!(
            cases[2].message.contains("expected: a: 2\n  actual: a: 1"),
            "{}",
            cases[2].message
        );
        assert!(cases[0].duration.is_some());
    }

    #[test]
    fn tape_assertions_belong_to_the_test_their_comment_names() {
        let cases = parse("tap", &fixture("tape.tap")).unwrap();
        assert_eq!(
            outcomes(&cases),
            [
                (
                    "adds::should be strictly equal".to_string(),
                    Outcome::Passed
                ),
                ("fails::one plus one".to_string(), Outcome::Failed),
                (
                    "fails::should be deeply equivalent".to_string(),
                    Outcome::Failed
                ),
                ("inner::inner broke".to_string(), Outcome::Failed),
            ]
        );
        assert_eq!(
            cases[1].message,
            "one plus one\n  operator: equal\n  expected: 3\n  actual: 2"
        );
        assert_eq!(
            cases[1].location(),
            Some(("/tmp/ws/tape.js".into(), 4, Some(5)))
        );
        assert_eq!(
            cases[2].message,
            "should be deeply equivalent\n  operator: deepEqual\n  expected: { a: 2 }\n  actual: { a: 1 }"
        );
        assert_eq!(
            cases[3].location(),
            Some(("/tmp/ws/tape.js".into(), 9, Some(38)))
        );
    }

    #[test]
    fn a_decorated_pytest_test_fails_at_the_deepest_frame_of_its_file() {
        // The shape of a failing Hypothesis test: `@given` wraps the test, so the traceback
        // enters the test file at the decorator, passes through Hypothesis, and raises in
        // the test's body.
        let junit = r#"<testsuites><testsuite name="pytest" tests="1"><testcase classname="tests.test_props" name="test_sorted" time="0.2"><failure message="AssertionError: assert [1, 0] == [0, 1]">tests/test_props.py:8: in test_sorted
    @given(st.lists(st.integers()))
.venv/lib/python3.11/site-packages/hypothesis/core.py:1620: in wrapped_test
    raise the_error_hypothesis_found
tests/test_props.py:11: in test_sorted
    assert my_sort(xs) == sorted(xs)
E   AssertionError: assert [1, 0] == [0, 1]
E   Falsifying example: test_sorted(
E       xs=[1, 0],
E   )</failure></testcase></testsuite></testsuites>"#;
        let cases = parse("junit", junit).unwrap();
        assert_eq!(
            cases[0].location(),
            Some(("tests/test_props.py".into(), 11, None))
        );
    }

    #[test]
    fn deep_subtests_name_every_parent_and_long_output_stays_linear() {
        let text = "TAP version 13\n        ok 1 - leaf\n    ok 1 - inner\nok 1 - outer\n1..1\n";
        assert_eq!(
            outcomes(&tap(text)),
            [("outer › inner::leaf".to_string(), Outcome::Passed)]
        );
        // 50,000 parents of one child each (matching each parent against every earlier
        // test was quadratic here).
        let many = "    ok 1 - c\nok 1 - p\n".repeat(50_000);
        let cases = tap(&many);
        assert_eq!(cases.len(), 50_000);
        assert!(cases.iter().all(|c| c.suite == "p"));
    }

    #[test]
    fn pytest_xfail_and_xpass() {
        // pytest 8's JUnit report and `-rX` summary for an xfail that failed, one that
        // passed, a strict one that passed, and a plain test.
        let junit = r#"<testsuites name="pytest tests"><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="4"><testcase classname="tests.test_x" name="test_known_bug" time="0.001"><skipped type="pytest.xfail" message="known bug 12" /></testcase><testcase classname="tests.test_x" name="test_unexpectedly_passes" time="0.000" /><testcase classname="tests.test_x" name="test_strict_passes" time="0.000"><failure message="[XPASS(strict)] must fail">[XPASS(strict)] must fail</failure></testcase><testcase classname="tests.test_x" name="test_ok" time="0.000" /></testsuite></testsuites>"#;
        let mut cases = parse("junit", junit).unwrap();
        mark_xpasses(
            &mut cases,
            "==== short test summary info ====\nXPASS tests/test_x.py::test_unexpectedly_passes - fixed upstream?\n",
        );
        let marks: Vec<(Outcome, Option<bool>)> =
            cases.iter().map(|c| (c.outcome, c.xfail)).collect();
        assert_eq!(
            marks,
            [
                (Outcome::Skipped, Some(true)),
                (Outcome::Passed, Some(false)),
                (Outcome::Failed, None),
                (Outcome::Passed, None),
            ]
        );
    }

    #[test]
    fn tap_todo_is_an_expected_failure() {
        let cases = tap(
            "TAP version 13\nnot ok 1 - known # TODO fix later\nok 2 - fixed # TODO\nok 3 - plain\n1..3\n",
        );
        let marks: Vec<(Outcome, Option<bool>)> =
            cases.iter().map(|c| (c.outcome, c.xfail)).collect();
        assert_eq!(
            marks,
            [
                (Outcome::Skipped, Some(true)),
                (Outcome::Skipped, None),
                (Outcome::Passed, None)
            ]
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
