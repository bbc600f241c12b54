//! ferry's built-in `lint` step.
//!
//! Runs a linter the user names (or a preset for a common one) and turns its output into
//! annotations with file, line, column, severity and rule; and runs checks that need no tool
//! on the host (whitespace, final newline, conflict markers, large files, JSON/YAML/TOML
//! syntax, likely secrets) over the workspace. `fail-on` decides which severity fails it.

mod checks;
mod finding;
mod matchers;

use ferry_sdk::exec::Command;
use ferry_sdk::log::{Annotation, group};
use ferry_sdk::{Capabilities, Error, Info, Input, Inputs, Step, info, set_output};
use finding::{Finding, Severity};
use std::collections::BTreeMap;

/// A preset: the command that runs the tool in the workspace and the format it prints.
const PRESETS: [(&str, &str, &str); 7] = [
    (
        "clippy",
        "cargo clippy --all-targets --message-format=json",
        "clippy",
    ),
    ("rustfmt", "cargo fmt --all --check", "rustfmt"),
    ("flake8", "flake8 .", "flake8"),
    (
        "ruff",
        "ruff check --no-cache --output-format=json .",
        "ruff",
    ),
    ("eslint", "eslint -f json .", "eslint"),
    ("shellcheck", "shellcheck -f json1", "shellcheck"),
    ("yamllint", "yamllint -f parsable .", "yamllint"),
];

struct Lint;

/// The clippy preset's command: every target, except benches that need a nightly compiler
/// (`#![feature(test)]` in `benches/`), which stable refuses to build. Those crates get
/// every other target, and the log says why.
fn clippy_command(directory: &str) -> String {
    let dir = std::path::Path::new(directory);
    let nightly_benches: Vec<String> = std::fs::read_dir(dir.join("benches"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|text| text.contains("#![feature(")))
        .map(|p| p.display().to_string())
        .collect();
    if nightly_benches.is_empty() {
        return PRESETS[0].1.to_string();
    }
    info!(
        "{} need a nightly compiler (`#![feature]`): clippy checks every target but the benches",
        nightly_benches.join(", ")
    );
    let lib = if dir.join("src/lib.rs").is_file() {
        "--lib "
    } else {
        ""
    };
    format!("cargo clippy {lib}--bins --tests --examples --message-format=json")
}

impl Step for Lint {
    fn info() -> Info {
        Info::new(
            "lint",
            env!("CARGO_PKG_VERSION"),
            "Runs a linter and annotates what it finds, plus built-in checks that need no tool: \
             whitespace, final newline, conflict markers, large files, JSON/YAML/TOML syntax and \
             likely secrets.",
        )
        .input(
            Input::string(
                "preset",
                "A known linter: clippy, rustfmt, flake8, ruff, eslint, shellcheck or yamllint.",
            )
            .runs_choice(
                PRESETS
                    .iter()
                    .map(|p| (p.0, p.1.split(' ').next().unwrap_or(p.1))),
            ),
        )
        .input(
            Input::string(
                "command",
                "The linter's command line, run without a shell (overrides the preset's).",
            )
            .runs_command(),
        )
        .input(Input::string(
            "format",
            "How to read the linter's output: clippy, rustfmt, flake8, ruff, eslint, shellcheck, \
             yamllint or generic (`file:line:col: message`); default the preset's, else generic.",
        ))
        .input(
            Input::string(
                "directory",
                "Where to run the command, relative to the workspace.",
            )
            .default("."),
        )
        .input(Input::list(
            "checks",
            "Built-in checks to run: whitespace, final-newline, conflict-markers, large-files, \
             syntax, secrets. Default: all of them when no linter is given, none otherwise.",
        ))
        .input(
            Input::list("include", "Globs of files the built-in checks read.").default(r#"["**"]"#),
        )
        .input(Input::list(
            "exclude",
            "Globs of files they skip (`.git` always is).",
        ))
        .input(
            Input::string(
                "max-size",
                "Largest file size for `large-files`, e.g. 512KiB.",
            )
            .default("1MiB"),
        )
        .input(
            Input::string(
                "fail-on",
                "Fail on findings of this severity or worse: error, warning or never.",
            )
            .default("error"),
        )
        .output("errors", "How many errors were found.")
        .output("warnings", "How many warnings were found.")
        .output("notices", "How many notices were found.")
        .output("rules", "Findings per rule, as a JSON object.")
        // The linter is the user's choice: it may run whatever `permissions.exec` grants.
        .capabilities(
            Capabilities::read_workspace()
                .exec(["*"])
                .network(["*"])
                .path("*", false),
        )
    }

    fn run(inputs: &Inputs) -> Result<(), Error> {
        let fail_on = match inputs.string("fail-on")?.as_str() {
            "error" => Some(Severity::Error),
            "warning" => Some(Severity::Warning),
            "never" => None,
            other => {
                return Err(Error::InvalidInput(format!(
                    "`fail-on: {other}` is not one of error, warning, never"
                )));
            }
        };
        let preset = match inputs.optional("preset") {
            None => None,
            Some(name) => Some(PRESETS.iter().find(|p| p.0 == name).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "unknown preset `{name}`; presets: {}",
                    PRESETS.map(|p| p.0).join(", ")
                ))
            })?),
        };
        let command = inputs.optional("command").or(preset.map(|p| match p.0 {
            "clippy" => clippy_command(&inputs.string("directory").unwrap_or_else(|_| ".".into())),
            _ => p.1.to_string(),
        }));
        let format = inputs
            .optional("format")
            .or(preset.map(|p| p.2.to_string()))
            .unwrap_or_else(|| "generic".into());
        if !matchers::FORMATS.contains(&format.as_str()) {
            return Err(Error::InvalidInput(format!(
                "unknown format `{format}`; formats: {}",
                matchers::FORMATS.join(", ")
            )));
        }
        let checks = match inputs.optional("checks") {
            Some(_) => inputs.list("checks")?,
            None if command.is_none() => checks::CHECKS.map(String::from).to_vec(),
            None => Vec::new(),
        };
        if let Some(bad) = checks
            .iter()
            .find(|c| !checks::CHECKS.contains(&c.as_str()))
        {
            return Err(Error::InvalidInput(format!(
                "unknown check `{bad}`; checks: {}",
                checks::CHECKS.join(", ")
            )));
        }
        let max_size = parse_size(&inputs.string("max-size")?)?;
        // Walking the workspace costs time on large trees: only the built-in checks and the
        // shellcheck preset (which takes files as arguments) need the list.
        let needs_files = !checks.is_empty() || preset.is_some_and(|p| p.0 == "shellcheck");
        let files = if needs_files {
            workspace_files(
                &inputs.list("include")?,
                &inputs
                    .optional("exclude")
                    .map_or(Ok(Vec::new()), |_| inputs.list("exclude"))?,
            )?
        } else {
            Vec::new()
        };

        let mut findings = Vec::new();
        if !checks.is_empty() {
            group(
                &format!(
                    "built-in checks on {} files: {}",
                    files.len(),
                    checks.join(", ")
                ),
                || {
                    let options = checks::Options {
                        checks: &checks,
                        max_size,
                    };
                    for file in &files {
                        match std::fs::read(file) {
                            Ok(bytes) => checks::check_file(file, &bytes, &options, &mut findings),
                            Err(e) => ferry_sdk::warn!("{file}: {e}"),
                        }
                    }
                },
            );
        }
        if let Some(command) = command {
            let directory = inputs.string("directory")?;
            findings.extend(run_linter(
                &command,
                &format,
                preset.map(|p| p.0),
                &files,
                &directory,
            )?);
        }
        report(&findings);
        let worst = findings.iter().map(|f| f.severity).max();
        match (fail_on, worst) {
            (Some(threshold), Some(worst)) if worst >= threshold => {
                let counted = findings.iter().filter(|f| f.severity >= threshold).count();
                Err(Error::failed(format!(
                    "{counted} finding{} at `{}` or worse (fail-on: {})",
                    if counted == 1 { "" } else { "s" },
                    threshold.name(),
                    threshold.name()
                )))
            }
            _ => Ok(()),
        }
    }
}

/// Runs the linter without a shell and reads its output. A linter that fails without
/// saying anything ferry can read fails the step with its own words.
fn run_linter(
    command: &str,
    format: &str,
    preset: Option<&str>,
    files: &[String],
    directory: &str,
) -> Result<Vec<Finding>, Error> {
    let mut argv = ferry_sdk::exec::split_command_line(command)?;
    if preset == Some("shellcheck") {
        argv.extend(
            files
                .iter()
                .filter(|f| f.ends_with(".sh") || f.ends_with(".bash"))
                .cloned(),
        );
    }
    let program = argv.remove(0);
    let out = group(&format!("$ {command}"), || {
        Command::new(&program)
            .args(argv)
            .cwd(directory)
            .quiet()
            .run()
    })?;
    let stdout = out.stdout_text();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // cargo prints rustfmt's diff on stdout but compiler errors on stderr.
    let text =
        if format == "rustfmt" || format == "generic" || format == "flake8" || format == "yamllint"
        {
            format!("{stdout}\n{stderr}")
        } else {
            stdout.clone()
        };
    let mut findings = matchers::parse(format, &text).map_err(Error::Failed)?;
    for f in &mut findings {
        if let Some(file) = &f.file {
            f.file = Some(ferry_sdk::workspace_path(directory, file));
        }
    }
    if !out.success() && findings.is_empty() {
        let tail: Vec<&str> = stderr
            .lines()
            .chain(stdout.lines())
            .filter(|l| !l.trim().is_empty())
            .collect();
        let tail = tail[tail.len().saturating_sub(10)..].join("\n");
        return Err(Error::failed(format!(
            "`{program}` exited with {} but reported nothing ferry could read as `{format}`:\n{tail}",
            out.exit_code.map_or("a signal".into(), |c| c.to_string())
        )));
    }
    info!(
        "{program}: {} finding{}",
        findings.len(),
        if findings.len() == 1 { "" } else { "s" }
    );
    Ok(findings)
}

fn parse_size(text: &str) -> Result<u64, Error> {
    let t = text.trim();
    let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
    let unit = t[digits.len()..].trim();
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => 0,
    };
    match digits.parse::<u64>() {
        Ok(n) if scale > 0 => Ok(n * scale),
        _ => Err(Error::InvalidInput(format!(
            "`max-size: {text}` is not a size like 512KiB or 2MiB"
        ))),
    }
}

/// Files of the workspace matching `include` and not `exclude`, sorted; `.git` and symbolic
/// links are never read.
fn workspace_files(include: &[String], exclude: &[String]) -> Result<Vec<String>, Error> {
    let set = |globs: &[String], what: &str| {
        let mut builder = globset::GlobSetBuilder::new();
        for g in globs {
            let glob = globset::GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::InvalidInput(format!("`{what}` glob `{g}`: {e}")))?;
            builder.add(glob);
        }
        builder
            .build()
            .map_err(|e| Error::InvalidInput(e.to_string()))
    };
    let include = set(include, "include")?;
    let exclude = set(exclude, "exclude")?;
    let mut files = ferry_sdk::workspace_files(|dir| exclude.is_match(dir))?;
    files.retain(|path| include.is_match(path) && !exclude.is_match(path));
    Ok(files)
}

/// Annotations, then counts per severity and rule in the log and as outputs.
fn report(findings: &[Finding]) {
    for f in findings {
        let annotation = match f.severity {
            Severity::Error => Annotation::error(&f.message),
            Severity::Warning => Annotation::warning(&f.message),
            Severity::Notice => Annotation::notice(&f.message),
        }
        .rule(&f.rule);
        match &f.file {
            Some(file) => annotation.at(file.clone(), f.line, f.column),
            None => annotation,
        }
        .emit();
    }
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let (errors, warnings, notices) = (
        count(Severity::Error),
        count(Severity::Warning),
        count(Severity::Notice),
    );
    let mut rules: BTreeMap<&str, usize> = BTreeMap::new();
    for f in findings {
        *rules.entry(&f.rule).or_default() += 1;
    }
    info!(
        "{}, {}, {}",
        plural(errors, "error"),
        plural(warnings, "warning"),
        plural(notices, "notice")
    );
    for (rule, n) in &rules {
        info!("  {n:>5}  {rule}");
    }
    for (name, value) in [
        ("errors", errors.to_string()),
        ("warnings", warnings.to_string()),
        ("notices", notices.to_string()),
        ("rules", serde_json::to_string(&rules).unwrap_or_default()),
    ] {
        if let Err(e) = set_output(name, &value) {
            ferry_sdk::warn!("output `{name}`: {e}");
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

ferry_sdk::export!(Lint);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512KiB").unwrap(), 512 * 1024);
        assert_eq!(parse_size("2 MiB").unwrap(), 2 << 20);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("lots").is_err());
    }
}
