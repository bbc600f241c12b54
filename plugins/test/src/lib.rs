//! ferry's built-in `test` step.
//!
//! Runs a test command (or a preset for a common runner), reads the results from the
//! runner's report (JUnit XML, TAP, `go test -json`, libtest output), prints a summary with
//! the slowest tests, annotates each failure with its message and location, reruns failed
//! tests on request to tell flaky ones apart, and refuses results that contradict the
//! runner's exit status.

mod report;

use ferry_sdk::exec::Command;
use ferry_sdk::log::{Annotation, group};
use ferry_sdk::{
    Capabilities, Error, Info, Input, Inputs, Step, info, keep_file, set_output, warn,
};
use report::{Case, Outcome};
use std::time::{Duration, SystemTime};

/// A runner ferry knows: its command, the format of its results, where a JUnit report is.
/// The program a preset's command line starts.
fn program_of(command: &str) -> &str {
    command.split(' ').next().unwrap_or(command)
}

struct Preset {
    name: &'static str,
    command: &'static str,
    format: &'static str,
    report: Option<&'static str>,
}

const PRESETS: [Preset; 6] = [
    Preset {
        name: "cargo",
        command: "cargo test --no-fail-fast",
        format: "libtest",
        report: None,
    },
    Preset {
        name: "nextest",
        command: "cargo nextest run --no-fail-fast",
        format: "junit",
        report: Some("target/nextest/default/junit.xml"),
    },
    Preset {
        name: "pytest",
        command: "pytest -rX --junitxml=target/ferry-pytest.xml",
        format: "junit",
        report: Some("target/ferry-pytest.xml"),
    },
    Preset {
        name: "go",
        command: "go test -json ./...",
        format: "go-json",
        report: None,
    },
    Preset {
        name: "node",
        command: "node --test --test-reporter=tap",
        format: "tap",
        report: None,
    },
    // The command and format depend on the runner package.json's test script starts; see
    // `npm_test`.
    Preset {
        name: "npm",
        command: "npm test",
        format: "tap",
        report: None,
    },
];

struct TestStep;

impl Step for TestStep {
    fn info() -> Info {
        Info::new(
            "test",
            env!("CARGO_PKG_VERSION"),
            "Runs tests and reports each failure with its message and place, the slowest tests \
             and flaky ones.",
        )
        .input(
            Input::string(
                "preset",
                "A known runner: cargo, nextest, pytest, go, node, or npm (`npm test` with the \
                 reporter of the runner its test script starts: node --test, mocha or vitest).",
            )
            .runs_choice(PRESETS.iter().map(|p| (p.name, program_of(p.command)))),
        )
        .input(
            Input::string(
                "command",
                "The test command line, run without a shell (overrides the preset's).",
            )
            .runs_command(),
        )
        .input(
            Input::string(
                "directory",
                "Where to run the command, relative to the workspace.",
            )
            .default("."),
        )
        .input(Input::string(
            "format",
            "How to read results: junit, tap, go-json or libtest; default the preset's.",
        ))
        .input(Input::string(
            "report",
            "The JUnit report the command writes: a path or a glob (`reports/*.xml`), relative to where it runs.",
        ))
        .input(
            Input::integer(
                "retry-failed",
                "Rerun failed tests up to this many times; those that then pass are flaky.",
            )
            .default("0"),
        )
        .input(
            Input::string("flaky", "What a flaky test does to the step: warn or fail.")
                .default("warn"),
        )
        .input(Input::integer("slowest", "How many of the slowest tests to list.").default("5"))
        .output("passed", "Tests that passed (flaky ones included).")
        .output("failed", "Tests that failed on every try.")
        .output("skipped", "Tests that were skipped.")
        .output("xfailed", "Tests marked as expected to fail that failed (counted as skipped).")
        .output("xpassed", "Tests marked as expected to fail that passed (counted as passed).")
        .output("flaky", "Tests that failed and then passed on a retry.")
        .output("total", "All tests.")
        .output(
            "report",
            "The JUnit report read, when there was one; it is kept with the run record.",
        )
        .capabilities(
            // The runner is the user's: it writes the tree if the pipeline grants
            // `workspace: write`, and reaches the hosts and paths the pipeline grants.
            Capabilities::read_workspace()
                .exec(["*"])
                .network(["*"])
                .path("*", false),
        )
    }

    fn run(inputs: &Inputs) -> Result<(), Error> {
        let preset = match inputs.optional("preset") {
            None => None,
            Some(name) => Some(PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "unknown preset `{name}`; presets: {}",
                    PRESETS.map(|p| p.name).join(", ")
                ))
            })?),
        };
        let directory = inputs.string("directory")?;
        let mut preset_command = preset.map(|p| (p.command.to_string(), p.format, p.report));
        if preset.is_some_and(|p| p.name == "npm") && inputs.optional("command").is_none() {
            preset_command = Some(npm_test(&directory)?);
        }
        let command = inputs
            .optional("command")
            .or(preset_command.as_ref().map(|p| p.0.clone()))
            .ok_or_else(|| Error::InvalidInput("give `preset` or `command`".into()))?;
        let format = inputs
            .optional("format")
            .or(preset_command.as_ref().map(|p| p.1.to_string()))
            .unwrap_or_else(|| "junit".into());
        if !report::FORMATS.contains(&format.as_str()) {
            return Err(Error::InvalidInput(format!(
                "unknown format `{format}`; formats: {}",
                report::FORMATS.join(", ")
            )));
        }
        let report_path = inputs
            .optional("report")
            .or(preset_command.and_then(|p| p.2.map(String::from)));
        if format == "junit" && report_path.is_none() {
            return Err(Error::InvalidInput(
                "format `junit` reads a report file: give `report` (the path the command writes)"
                    .into(),
            ));
        }
        let flaky_fails = match inputs.string("flaky")?.as_str() {
            "warn" => false,
            "fail" => true,
            other => {
                return Err(Error::InvalidInput(format!(
                    "`flaky: {other}` is not warn or fail"
                )));
            }
        };
        let retries = inputs.integer("retry-failed")?.clamp(0, u32::MAX.into()) as u32;
        let argv = ferry_sdk::exec::split_command_line(&command)?;

        // The report path is the command's, so it starts where the command runs.
        let report_path = report_path.map(|r| match directory.as_str() {
            "." => r,
            dir => format!("{}/{r}", dir.trim_end_matches('/')),
        });
        let run = Runner {
            format: &format,
            report: report_path.as_deref(),
            directory: &directory,
        };
        let started = SystemTime::now();
        let mut cases = run.once(&argv, "tests")?;
        let took = started.elapsed().unwrap_or_default();
        let mut flaky = Vec::new();
        for attempt in 1..=retries {
            let failing: Vec<Case> = cases
                .iter()
                .filter(|c| c.outcome == Outcome::Failed)
                .cloned()
                .collect();
            if failing.is_empty() {
                break;
            }
            let exists = |file: &str| std::path::Path::new(&directory).join(file).is_file();
            let Some(rerun) = preset.and_then(|p| retry_command(p.name, &argv, &failing, &exists))
            else {
                warn!(
                    "retry-failed needs a preset that can select tests (cargo, nextest, pytest, go, node)"
                );
                break;
            };
            let again = run.once(
                &rerun,
                &format!("retry {attempt}: {} failed tests", failing.len()),
            )?;
            for case in cases.iter_mut().filter(|c| c.outcome == Outcome::Failed) {
                if again
                    .iter()
                    .any(|a| a.full_name() == case.full_name() && a.outcome == Outcome::Passed)
                {
                    case.outcome = Outcome::Passed;
                    flaky.push(case.full_name());
                }
            }
        }
        summarize(
            &cases,
            (took, &flaky),
            inputs.integer("slowest")?.max(0) as usize,
            report_path.as_deref(),
            &directory,
        )?;
        let failed = cases
            .iter()
            .filter(|c| c.outcome == Outcome::Failed)
            .count();
        if failed > 0 {
            let first = cases
                .iter()
                .find(|c| c.outcome == Outcome::Failed)
                .map(|c| {
                    format!(
                        ": {} ({})",
                        c.full_name(),
                        c.message.lines().next().unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            return Err(Error::failed(format!(
                "{failed} of {} tests failed{first}",
                cases.len()
            )));
        }
        if flaky_fails && !flaky.is_empty() {
            return Err(Error::failed(format!(
                "{} flaky tests (flaky: fail): {}",
                flaky.len(),
                flaky.join(", ")
            )));
        }
        Ok(())
    }
}

struct Runner<'a> {
    format: &'a str,
    /// The JUnit report, relative to the workspace.
    report: Option<&'a str>,
    directory: &'a str,
}

impl Runner<'_> {
    /// Runs the command once and reads its results, checking that they agree with its exit.
    fn once(&self, argv: &[String], title: &str) -> Result<Vec<Case>, Error> {
        let started = SystemTime::now();
        // Machine-readable output on stdout stays out of the log; a report file leaves it
        // for people.
        let echo = self.format == "junit" || self.format == "libtest";
        let mut cmd = Command::new(&argv[0]).args(&argv[1..]).cwd(self.directory);
        if !echo {
            cmd = cmd.quiet();
        }
        let out = group(&format!("{title}: $ {}", argv.join(" ")), || cmd.run())?;
        let cases = match self.report {
            Some(pattern) if self.format == "junit" => {
                // Only reports written by this run count: one left from an earlier run
                // would pass a crash off as results.
                let all = report_files(pattern)?;
                let fresh: Vec<&String> = all
                    .iter()
                    .filter(|f| {
                        std::fs::metadata(f)
                            .and_then(|m| m.modified())
                            .is_ok_and(|m| m + Duration::from_secs(2) >= started)
                    })
                    .collect();
                if fresh.is_empty() {
                    let stale = !all.is_empty();
                    return Err(Error::failed(format!(
                        "`{}` {} and wrote no report at `{pattern}`{}",
                        argv[0],
                        exit_text(out.exit_code),
                        if stale {
                            " (the one there is from an earlier run)"
                        } else {
                            ""
                        }
                    )));
                }
                let mut cases = Vec::new();
                for file in &fresh {
                    let text = std::fs::read_to_string(file)?;
                    // The report outlives the workspace, whatever it says.
                    if let Err(e) = keep_file(file) {
                        warn!("{e}");
                    }
                    cases.extend(
                        report::parse("junit", &text)
                            .map_err(|e| Error::failed(format!("{file}: {e}")))?,
                    );
                }
                report::mark_xpasses(&mut cases, &out.stdout_text());
                cases
            }
            _ => {
                let mut text = out.stdout_text();
                text.push('\n');
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                // What the runner said, in its own words, behind a group a reader opens when
                // the table and annotations are not enough.
                group(&format!("{} output ({})", argv[0], self.format), || {
                    for line in text.trim_end().lines() {
                        ferry_sdk::log::write(ferry_sdk::log::Level::Info, line);
                    }
                });
                report::parse(self.format, &text).map_err(Error::Failed)?
            }
        };
        let failed = cases
            .iter()
            .filter(|c| c.outcome == Outcome::Failed)
            .count();
        if !out.success() && failed == 0 {
            let tail: Vec<String> = String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(5)
                .map(String::from)
                .collect();
            return Err(Error::failed(format!(
                "`{}` {} but its results show no failed test ({} read): the runner crashed or the \
                 results are incomplete{}",
                argv[0],
                exit_text(out.exit_code),
                cases.len(),
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; it said:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                }
            )));
        }
        if out.success() && failed > 0 {
            warn!("`{}` exited 0 although {failed} tests failed", argv[0]);
        }
        Ok(cases)
    }
}

/// `npm test` runs whatever package.json's test script says, so the flags that make its
/// results readable depend on the runner the script starts.
fn npm_test(directory: &str) -> Result<(String, &'static str, Option<&'static str>), Error> {
    let path = match directory {
        "." => "package.json".to_string(),
        dir => format!("{}/package.json", dir.trim_end_matches('/')),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::InvalidInput(format!(
            "preset `npm` reads the test script from `{path}`: {e}"
        ))
    })?;
    let package: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::InvalidInput(format!("`{path}` is not valid JSON: {e}")))?;
    let script = package["scripts"]["test"].as_str().ok_or_else(|| {
        Error::InvalidInput(format!(
            "`{path}` has no `scripts.test`: add one, or give `command` instead of the preset"
        ))
    })?;
    // `NODE_ENV=test mocha`, `npx vitest`, `cross-env X=1 mocha`: the runner is the first
    // word that is neither an assignment nor a launcher.
    let runner = script
        .split_whitespace()
        .find(|w| !w.contains('=') && !matches!(*w, "npx" | "cross-env" | "env"));
    let (flags, format, report) = match runner {
        Some("node") if script.split_whitespace().any(|w| w == "--test") => {
            ("--test-reporter=tap", "tap", None)
        }
        Some("mocha") => ("--reporter=tap", "tap", None),
        Some("vitest") => (
            "--reporter=junit --outputFile=target/ferry-vitest.xml",
            "junit",
            Some("target/ferry-vitest.xml"),
        ),
        _ => {
            return Err(Error::InvalidInput(format!(
                "preset `npm` knows the reporters of `node --test`, mocha and vitest, but the \
                 test script in `{path}` is `{script}`: give `command` and `format` instead \
                 (for jest: `command: npx jest --ci --reporters=default --reporters=jest-junit`, \
                 `format: junit`, `report: junit.xml`)"
            )));
        }
    };
    // `--silent` keeps npm's own banner out of the results on stdout.
    Ok((format!("npm test --silent -- {flags}"), format, report))
}

fn exit_text(code: Option<i32>) -> String {
    code.map_or("was killed by a signal".into(), |c| {
        format!("exited with {c}")
    })
}

/// The report files a `report` input names: a path, or a glob (`target/reports/*.xml`,
/// `**/TEST-*.xml`) over the workspace, sorted.
fn report_files(pattern: &str) -> Result<Vec<String>, Error> {
    if !pattern.contains(['*', '?', '[']) {
        return Ok(vec![pattern.to_string()]
            .into_iter()
            .filter(|p| std::path::Path::new(p).is_file())
            .collect());
    }
    let glob = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| Error::InvalidInput(format!("`report: {pattern}`: {e}")))?
        .compile_matcher();
    let mut found = ferry_sdk::workspace_files(|_| false)?;
    found.retain(|path| glob.is_match(path));
    Ok(found)
}

/// The command again, selecting only the failed tests, for runners that can.
/// The command that runs only the `failing` tests again; `exists` says whether a file
/// (relative to where the command runs) exists, to name pytest's tests by node id.
fn retry_command(
    preset: &str,
    argv: &[String],
    failing: &[Case],
    exists: &dyn Fn(&str) -> bool,
) -> Option<Vec<String>> {
    let names: Vec<String> = failing.iter().map(|c| c.name.clone()).collect();
    let mut cmd = argv.to_vec();
    match preset {
        "cargo" => {
            if !cmd.iter().any(|a| a == "--") {
                cmd.push("--".into());
            }
            cmd.push("--exact".into());
            cmd.extend(names);
        }
        "nextest" => {
            let filter: Vec<String> = names.iter().map(|n| format!("test(={n})")).collect();
            cmd.extend(["-E".to_string(), filter.join(" | ")]);
        }
        // By node id (`tests/test_x.py::TestY::test_basic`): `-k test_basic` would also run
        // `test_basic_auth` and every test in a class or file of that name.
        "pytest" => match failing
            .iter()
            .map(|c| pytest_node_id(c, exists))
            .collect::<Option<Vec<_>>>()
        {
            Some(ids) => cmd.extend(ids),
            None => cmd.extend(["-k".to_string(), names.join(" or ")]),
        },
        "go" => cmd.extend(["-run".to_string(), format!("^({})$", names.join("|"))]),
        "node" => {
            for n in names {
                cmd.push(format!("--test-name-pattern=^{}$", escape_regex(&n)));
            }
        }
        _ => return None,
    }
    Some(cmd)
}

/// A pytest test's node id from its JUnit `classname` (`tests.test_x.TestY`, the module's
/// dotted path then its classes) and name: the longest dotted prefix that is a file is the
/// module.
fn pytest_node_id(case: &Case, exists: &dyn Fn(&str) -> bool) -> Option<String> {
    let parts: Vec<&str> = case.suite.split('.').filter(|p| !p.is_empty()).collect();
    (1..=parts.len()).rev().find_map(|i| {
        let file = format!("{}.py", parts[..i].join("/"));
        exists(&file).then(|| {
            std::iter::once(file.as_str())
                .chain(parts[i..].iter().copied())
                .chain(std::iter::once(case.name.as_str()))
                .collect::<Vec<_>>()
                .join("::")
        })
    })
}

fn escape_regex(text: &str) -> String {
    text.chars().fold(String::new(), |mut out, c| {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
        out
    })
}

/// The summary table, the slowest tests, an annotation per failure, and the outputs.
fn summarize(
    cases: &[Case],
    (took, flaky): (Duration, &[String]),
    slowest: usize,
    report: Option<&str>,
    directory: &str,
) -> Result<(), Error> {
    let count = |o: Outcome| cases.iter().filter(|c| c.outcome == o).count();
    let (passed, failed, skipped) = (
        count(Outcome::Passed),
        count(Outcome::Failed),
        count(Outcome::Skipped),
    );
    // The tests' own times when the runner gives them; else (libtest, TAP) how long the
    // runner took, rather than a sum of nothing.
    let total_time: Duration = match cases.iter().any(|c| c.duration.is_some()) {
        true => cases.iter().filter_map(|c| c.duration).sum(),
        false => took,
    };
    info!(
        "{:>8} {:>8} {:>8} {:>8} {:>10}",
        "passed", "failed", "skipped", "flaky", "time"
    );
    info!(
        "{passed:>8} {failed:>8} {skipped:>8} {:>8} {:>9.2}s",
        flaky.len(),
        total_time.as_secs_f64()
    );
    let mut timed: Vec<&Case> = cases.iter().filter(|c| c.duration.is_some()).collect();
    timed.sort_by_key(|c| std::cmp::Reverse(c.duration));
    if slowest > 0 && !timed.is_empty() {
        info!("slowest:");
        for case in timed.iter().take(slowest) {
            info!(
                "  {:>8.3}s  {}",
                case.duration.unwrap_or_default().as_secs_f64(),
                case.full_name()
            );
        }
    }
    for name in flaky {
        Annotation::warning(format!(
            "{name} is flaky: it failed, then passed on a retry"
        ))
        .rule("flaky")
        .emit();
    }
    let (xfailed, xpassed): (Vec<&Case>, Vec<&Case>) = cases
        .iter()
        .filter(|c| c.xfail.is_some())
        .partition(|c| c.xfail == Some(true));
    if !xfailed.is_empty() || !xpassed.is_empty() {
        info!(
            "{} expected to fail and failed (xfail), {} passed though expected to fail (xpass)",
            xfailed.len(),
            xpassed.len()
        );
    }
    for case in &xpassed {
        Annotation::warning(format!(
            "{} passed though it is marked as expected to fail: remove the mark",
            case.full_name()
        ))
        .rule("xpass")
        .emit();
    }
    for case in cases.iter().filter(|c| c.outcome == Outcome::Failed) {
        let message = format!("{} failed: {}", case.full_name(), case.message);
        let annotation = Annotation::error(message).rule("test");
        match case.location() {
            Some((file, line, column)) => annotation.at(
                ferry_sdk::workspace_path(directory, &file),
                Some(line),
                column,
            ),
            None => annotation,
        }
        .emit();
    }
    for (name, value) in [
        ("passed", passed.to_string()),
        ("failed", failed.to_string()),
        ("skipped", skipped.to_string()),
        ("flaky", flaky.len().to_string()),
        ("xfailed", xfailed.len().to_string()),
        ("xpassed", xpassed.len().to_string()),
        ("total", cases.len().to_string()),
        ("report", report.unwrap_or_default().to_string()),
    ] {
        set_output(name, &value)?;
    }
    Ok(())
}

ferry_sdk::export!(TestStep);

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(names: &[&str]) -> Vec<Case> {
        report::parse(
            "libtest",
            &names
                .iter()
                .map(|n| format!("test {n} ... FAILED\n"))
                .collect::<String>(),
        )
        .unwrap()
    }

    #[test]
    fn retries_select_only_the_failed_tests() {
        let argv: Vec<String> = ["cargo", "test", "--no-fail-fast"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            retry_command("cargo", &argv, &failing(&["a::b", "c"]), &|_| false).unwrap(),
            [
                "cargo",
                "test",
                "--no-fail-fast",
                "--",
                "--exact",
                "a::b",
                "c"
            ]
        );
        assert_eq!(
            retry_command("go", &["go".into()], &failing(&["TestA", "TestB"]), &|_| {
                false
            })
            .unwrap(),
            ["go", "-run", "^(TestA|TestB)$"]
        );
        assert_eq!(
            retry_command("node", &["node".into()], &failing(&["adds (1+1)"]), &|_| {
                false
            })
            .unwrap(),
            ["node", "--test-name-pattern=^adds \\(1\\+1\\)$"]
        );
        assert!(retry_command("custom", &argv, &failing(&["x"]), &|_| false).is_none());
    }

    #[test]
    fn pytest_retries_name_each_test_by_node_id() {
        let case = |suite: &str, name: &str| Case {
            suite: suite.into(),
            name: name.into(),
            outcome: Outcome::Failed,
            duration: None,
            message: String::new(),
            detail: String::new(),
            xfail: None,
        };
        let files = ["tests/test_basic.py", "test_top.py"];
        let exists = |f: &str| files.contains(&f);
        let argv = vec!["pytest".to_string()];
        assert_eq!(
            retry_command(
                "pytest",
                &argv,
                &[
                    case("tests.test_basic.TestAuth", "test_basic"),
                    case("test_top", "test_x[1-2]"),
                ],
                &exists
            )
            .unwrap(),
            [
                "pytest",
                "tests/test_basic.py::TestAuth::test_basic",
                "test_top.py::test_x[1-2]"
            ]
        );
        // A module it cannot find: by name, as before, rather than not at all.
        assert_eq!(
            retry_command("pytest", &argv, &[case("gone.test_y", "test_y")], &exists).unwrap(),
            ["pytest", "-k", "test_y"]
        );
    }
}
