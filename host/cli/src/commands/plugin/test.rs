//! `ferry plugin test`: runs a step in throwaway workspaces, either once with inputs from
//! the command line or once per case of the project's `ferry-tests.yaml`.
//!
//! A case becomes a one-step pipeline run by the real engine and sandbox, so what passes
//! here behaves the same in `ferry run`: inputs are checked against `describe()`, grants
//! are enforced and the workspace is a copy.

use ferry_engine::{CancellationToken, Event, RunOptions, Status};
use ferry_model::yaml::{Kind, Node};
use ferry_model::{Diagnostic, Plan, Report, Source};
use ferry_sandbox::Sandbox;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The file of test cases in a step project.
pub const TESTS_FILE: &str = "ferry-tests.yaml";

const CASE_KEYS: [&str; 9] = [
    "with",
    "env",
    "secrets",
    "files",
    "fixture",
    "setup",
    "services",
    "permissions",
    "expect",
];
const EXPECT_KEYS: [&str; 4] = ["status", "outputs", "log", "error"];

/// One run of the step and what it must produce.
#[derive(Debug, Default)]
pub struct Case {
    pub name: String,
    with: Map<String, Value>,
    env: Map<String, Value>,
    secrets: BTreeMap<String, String>,
    /// Files to create in the workspace, by relative path.
    files: Vec<(String, String)>,
    /// A directory (relative to the project) copied into the workspace first.
    fixture: Option<PathBuf>,
    /// Host commands (argv) run in the workspace before the step, e.g. to make a git
    /// repository with tags. Without `setup` the workspace is a checkout of the case's
    /// files; with one (`setup: []` too) it is what the commands make of them.
    setup: Option<Vec<Vec<String>>>,
    /// `None`: grant what the step declares.
    permissions: Option<Value>,
    /// A job's `services:` beside the step (a database it talks to), as in a pipeline.
    services: Option<Value>,
    expect: Option<Expect>,
}

#[derive(Debug, Default)]
struct Expect {
    failed: bool,
    outputs: BTreeMap<String, String>,
    log: Vec<String>,
    error: Option<String>,
}

impl Case {
    /// A case from the command line: `--with name=value`, an optional workspace to copy,
    /// and no expectations beyond printing what happened.
    pub fn ad_hoc(with: &[String], workspace: Option<PathBuf>) -> Result<Case, String> {
        let mut case = Case {
            name: "run".into(),
            fixture: workspace,
            ..Case::default()
        };
        for pair in with {
            let (name, value) = pair.split_once('=').ok_or_else(|| {
                format!("`--with {pair}` is not NAME=VALUE\nhint: e.g. `--with who=ferry`")
            })?;
            case.with.insert(name.into(), Value::String(value.into()));
        }
        Ok(case)
    }
}

/// Reads `ferry-tests.yaml`; every problem comes back with its location.
pub fn load(path: &Path) -> Result<Vec<Case>, Report> {
    let text = std::fs::read_to_string(path).map_err(|e| Report {
        source: Source::new(path, ""),
        diagnostics: vec![Diagnostic::error(format!(
            "cannot read `{}`: {e}",
            path.display()
        ))],
    })?;
    let mut diags = Vec::new();
    let cases = match ferry_model::yaml::parse(&text) {
        Ok(Some(root)) => read_cases(&root, &mut diags),
        Ok(None) => {
            diags.push(
                Diagnostic::error("the file is empty")
                    .hint("add `cases:` with one mapping per case"),
            );
            Vec::new()
        }
        Err(d) => {
            diags.push(d);
            Vec::new()
        }
    };
    if diags.is_empty() {
        Ok(cases)
    } else {
        Err(Report {
            source: Source::new(path, text),
            diagnostics: diags,
        })
    }
}

fn read_cases(root: &Node, diags: &mut Vec<Diagnostic>) -> Vec<Case> {
    let Some(top) = mapping(root, "the file", diags) else {
        return Vec::new();
    };
    let mut cases = Vec::new();
    for (key, value) in top {
        if key.as_str() != Some("cases") {
            unknown(key, &["cases"], "at the top level", diags);
            continue;
        }
        for (name, body) in mapping(value, "`cases`", diags).unwrap_or_default() {
            let name = name.as_str().unwrap_or_default().to_string();
            let mut case = Case {
                name: name.clone(),
                ..Case::default()
            };
            for (key, value) in mapping(body, &format!("case `{name}`"), diags).unwrap_or_default()
            {
                let field = key.as_str().unwrap_or_default();
                match field {
                    "with" | "env" => {
                        let target = if field == "with" {
                            &mut case.with
                        } else {
                            &mut case.env
                        };
                        if let Value::Object(map) = to_json(value) {
                            *target = map;
                        } else {
                            diags.push(expected(value, "a mapping", field));
                        }
                    }
                    "secrets" | "files" => {
                        let mut pairs = Vec::new();
                        for (k, v) in
                            mapping(value, &format!("`{field}`"), diags).unwrap_or_default()
                        {
                            match v.as_str() {
                                Some(text) => pairs.push((
                                    k.as_str().unwrap_or_default().to_string(),
                                    text.to_string(),
                                )),
                                None => diags.push(expected(v, "text", field)),
                            }
                        }
                        if field == "files" {
                            case.files = pairs;
                        } else {
                            case.secrets = pairs.into_iter().collect();
                        }
                    }
                    "fixture" => match value.as_str() {
                        Some(dir) => case.fixture = Some(PathBuf::from(dir)),
                        None => diags.push(expected(value, "a directory path", field)),
                    },
                    "setup" => case.setup = Some(read_setup(value, diags)),
                    "permissions" => case.permissions = Some(to_json(value)),
                    "services" => case.services = Some(to_json(value)),
                    "expect" => case.expect = Some(read_expect(value, diags)),
                    _ => unknown(key, &CASE_KEYS, &format!("in case `{name}`"), diags),
                }
            }
            cases.push(case);
        }
    }
    if cases.is_empty() && diags.is_empty() {
        diags.push(
            Diagnostic::error("no test cases")
                .at(root.span)
                .hint("add `cases:` with one mapping per case, e.g.\n    cases:\n      works:\n        with: { who: ferry }"),
        );
    }
    cases
}

/// A list of commands, each a list of arguments or a string split at whitespace (no shell:
/// no quoting, globbing or variables).
fn read_setup(node: &Node, diags: &mut Vec<Diagnostic>) -> Vec<Vec<String>> {
    let Kind::Seq(items) = &node.kind else {
        diags.push(expected(node, "a list of commands", "setup"));
        return Vec::new();
    };
    let mut commands = Vec::new();
    for item in items {
        let argv: Vec<String> = match &item.kind {
            Kind::Scalar { text, .. } => text.split_whitespace().map(String::from).collect(),
            Kind::Seq(args) => args
                .iter()
                .filter_map(|a| a.as_str())
                .map(String::from)
                .collect(),
            Kind::Map(_) => Vec::new(),
        };
        if argv.is_empty() {
            diags.push(
                Diagnostic::error("a setup command must be a program and its arguments")
                    .at(item.span)
                    .hint("e.g. `- git init -q` or `- [git, tag, v1.0.0]`"),
            );
        } else {
            commands.push(argv);
        }
    }
    commands
}

fn read_expect(node: &Node, diags: &mut Vec<Diagnostic>) -> Expect {
    let mut expect = Expect::default();
    for (key, value) in mapping(node, "`expect`", diags).unwrap_or_default() {
        match key.as_str().unwrap_or_default() {
            "status" => match value.as_str() {
                Some("passed") => expect.failed = false,
                Some("failed") => expect.failed = true,
                _ => diags.push(
                    Diagnostic::error("`status` must be `passed` or `failed`").at(value.span),
                ),
            },
            "outputs" => {
                for (k, v) in mapping(value, "`outputs`", diags).unwrap_or_default() {
                    expect.outputs.insert(
                        k.as_str().unwrap_or_default().into(),
                        v.as_str().unwrap_or_default().into(),
                    );
                }
            }
            "log" => match &value.kind {
                Kind::Seq(items) => expect
                    .log
                    .extend(items.iter().filter_map(|i| i.as_str()).map(String::from)),
                Kind::Scalar { text, .. } => expect.log.push(text.clone()),
                Kind::Map(_) => diags.push(expected(value, "a list of texts", "log")),
            },
            "error" => expect.error = value.as_str().map(String::from),
            _ => unknown(key, &EXPECT_KEYS, "in `expect`", diags),
        }
    }
    if expect.error.is_some() {
        expect.failed = true;
    }
    expect
}

fn mapping<'a>(
    node: &'a Node,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<(&'a Node, &'a Node)>> {
    match &node.kind {
        Kind::Map(entries) => Some(entries.iter().map(|(k, v)| (k, v)).collect()),
        _ if node.is_null() => Some(Vec::new()),
        _ => {
            diags.push(
                Diagnostic::error(format!("{what} must be a mapping, not {}", node.describe()))
                    .at(node.span),
            );
            None
        }
    }
}

fn unknown(key: &Node, known: &[&str], place: &str, diags: &mut Vec<Diagnostic>) {
    let word = key.as_str().unwrap_or_default();
    let hint = match ferry_model::diag::suggest(word, known.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("known keys: {}", known.join(", ")),
    };
    diags.push(
        Diagnostic::error(format!("unknown key `{word}` {place}"))
            .at(key.span)
            .hint(hint),
    );
}

fn expected(node: &Node, what: &str, field: &str) -> Diagnostic {
    Diagnostic::error(format!("`{field}` must be {what}, not {}", node.describe())).at(node.span)
}

/// Scalars stay text in their YAML spelling, as `with:` values reach steps.
fn to_json(node: &Node) -> Value {
    match &node.kind {
        _ if node.is_null() => Value::Null,
        Kind::Scalar { text, .. } => Value::String(text.clone()),
        Kind::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        Kind::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), to_json(v)))
                .collect(),
        ),
    }
}

/// The `permissions:` that grant exactly what a step declares.
pub fn declared_permissions(info: &ferry_sandbox::PluginInfo) -> Value {
    let Some(needs) = &info.needs else {
        return json!({});
    };
    let mut p = Map::new();
    if let Some(access) = needs.workspace {
        p.insert("workspace".into(), json!(access.to_string()));
    }
    if !needs.paths.is_empty() {
        let paths: Map<String, Value> = needs
            .paths
            .iter()
            .map(|(path, access)| {
                (
                    path.to_string_lossy().into_owned(),
                    json!(access.to_string()),
                )
            })
            .collect();
        p.insert("paths".into(), Value::Object(paths));
    }
    for (key, items) in needs.lists() {
        // `exec: ["*"]` asks for whatever is granted: a case grants programs explicitly.
        let items: Vec<&String> = items
            .iter()
            .filter(|i| i.as_str() != ferry_sandbox::grant::ANY_PROGRAM)
            .collect();
        if !items.is_empty() {
            p.insert(key.into(), json!(items));
        }
    }
    Value::Object(p)
}

/// What one case produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub passed: bool,
    pub message: Option<String>,
    pub log: Vec<String>,
    pub outputs: BTreeMap<String, String>,
}

impl Outcome {
    /// Why the outcome does not meet the case's expectations; empty when it does.
    pub fn mismatches(&self, case: &Case) -> Vec<String> {
        let default = Expect::default();
        let expect = case.expect.as_ref().unwrap_or(&default);
        let mut problems = Vec::new();
        let message = self.message.as_deref().unwrap_or_default();
        match (expect.failed, self.passed) {
            (false, false) => problems.push(format!(
                "expected the step to pass; it failed:\n{}",
                indent(message)
            )),
            (true, true) => problems.push("expected the step to fail; it passed".to_string()),
            _ => {}
        }
        if let Some(error) = &expect.error
            && !self.passed
            && !message.contains(error.as_str())
        {
            problems.push(format!(
                "expected the error to contain {error:?}; it was:\n{}",
                indent(message)
            ));
        }
        for (name, want) in &expect.outputs {
            match self.outputs.get(name) {
                Some(got) if got == want => {}
                Some(got) => {
                    problems.push(format!("output `{name}`: expected {want:?}, got {got:?}"))
                }
                None => problems.push(format!("output `{name}` was not set (expected {want:?})")),
            }
        }
        for text in &expect.log {
            if !self.log.iter().any(|line| line.contains(text.as_str())) {
                problems.push(format!("no log line contains {text:?}"));
            }
        }
        problems
    }
}

/// Collects what the engine reports about the one step of a case.
#[derive(Default)]
struct Capture(Mutex<Outcome>);

impl ferry_engine::Reporter for Capture {
    fn event(&self, event: &Event) {
        let Ok(mut outcome) = self.0.lock() else {
            return;
        };
        match event {
            Event::Log { text, .. } => outcome.log.push(text.clone()),
            Event::GroupStart { title, .. } => outcome.log.push(format!("▸ {title}")),
            Event::Annotation { annotation, .. } => outcome
                .log
                .push(ferry_engine::record::annotation_line(annotation)),
            Event::Output { name, value, .. } => {
                outcome.outputs.insert(name.clone(), value.clone());
            }
            Event::StepFinished {
                status, message, ..
            } => {
                outcome.passed = *status == Status::Passed;
                outcome.message = message.clone();
            }
            _ => {}
        }
    }
}

/// Runs one case of the component at `wasm` (absolute) and returns what happened. `project`
/// is where `fixture:` paths start.
pub async fn run_case(
    sandbox: &Arc<Sandbox>,
    wasm: &Path,
    declared: &Value,
    project: &Path,
    case: &Case,
) -> Result<Outcome, String> {
    let tmp = tempfile::Builder::new()
        .prefix("ferry-test-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let workspace = tmp.path().join("workspace");
    std::fs::create_dir_all(&workspace).map_err(|e| e.to_string())?;
    if let Some(fixture) = &case.fixture {
        let from = project.join(fixture);
        ferry_engine::workspace::copy_tree(&from, &workspace)
            .map_err(|e| format!("cannot copy fixture `{}`: {e}", from.display()))?;
    }
    for (path, text) in &case.files {
        let rel = Path::new(path);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(format!(
                "file `{path}` must be a relative path inside the workspace"
            ));
        }
        super::project::write_files(&workspace, &[(path.as_str(), text.as_str())])?;
    }
    let git_config = tmp.path().join("gitconfig");
    std::fs::write(
        &git_config,
        "[user]\n\tname = ferry test\n\temail = test@ferry.invalid\n",
    )
    .map_err(|e| format!("cannot write `{}`: {e}", git_config.display()))?;
    match &case.setup {
        None if !workspace.join(".git").exists() => checkout(&workspace, &git_config),
        None => {}
        Some(setup) => {
            for argv in setup {
                setup_command(argv, &workspace, &git_config)?;
            }
        }
    }
    let mut step = Map::new();
    step.insert("id".into(), json!("step"));
    step.insert("uses".into(), json!(wasm.to_string_lossy()));
    if !case.with.is_empty() {
        step.insert("with".into(), Value::Object(case.with.clone()));
    }
    if !case.env.is_empty() {
        step.insert("env".into(), Value::Object(case.env.clone()));
    }
    step.insert(
        "permissions".into(),
        case.permissions.clone().unwrap_or_else(|| declared.clone()),
    );
    // JSON is YAML: the case goes through the same parser and checks as any pipeline.
    let mut job = Map::new();
    if let Some(services) = &case.services {
        job.insert("services".into(), services.clone());
    }
    job.insert("steps".into(), json!([Value::Object(step)]));
    let pipeline = json!({ "jobs": { "test": Value::Object(job) } });
    let file = tmp.path().join("ferry.yaml");
    std::fs::write(
        &file,
        serde_json::to_string_pretty(&pipeline).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    let builtins: Vec<&str> = ferry_builtins::BUILTINS.iter().map(|(n, _)| *n).collect();
    let pipeline = match ferry_model::load(&file, &builtins) {
        Ok(p) => p,
        Err(report) => return Ok(refused(&case.name, &report.diagnostics)),
    };
    // A case's programs are its author's to provide: only grants are checked here.
    let refusals: Vec<_> = sandbox
        .preflight(&pipeline, None)
        .await
        .into_iter()
        .filter(ferry_model::Diagnostic::is_error)
        .collect();
    if !refusals.is_empty() {
        return Ok(refused(&case.name, &refusals));
    }
    // `git.*` as a run in this repository would see it.
    let git = match pipeline.reads_git {
        true => ferry_compose::git_info_in(&workspace),
        false => BTreeMap::new(),
    };
    let plan = Plan::new(pipeline, &[]).map_err(|e| e.to_string())?;
    let capture = Arc::new(Capture::default());
    let options = RunOptions {
        slots: None,
        parallel: 1,
        fail_fast: true,
        state_dir: tmp.path().join("state"),
        source_dir: workspace,
        secrets: case.secrets.clone(),
        host_env: ferry_compose::host_env(),
        cancel: CancellationToken::new(),
        git,
        vars: Default::default(),
        inputs: Default::default(),
        cache: None,
        reuse: false,
        clean: false,
        untrusted: false,
    };
    ferry_engine::run(
        plan,
        sandbox.clone(),
        capture.clone() as Arc<dyn ferry_engine::Reporter>,
        options,
    )
    .await
    .map_err(|e| e.to_string())?;
    let outcome = std::mem::take(&mut *capture.0.lock().map_err(|e| e.to_string())?);
    Ok(outcome)
}

/// Makes a case's workspace what a job's is, a checkout: a repository on `main` with one
/// commit of the case's files. A case with `setup` makes the repository it wants instead
/// (tags, history), or none (`setup: []`). Best effort: where git is missing or fails, the workspace stays a
/// plain folder, and cases that need no git still run.
fn checkout(workspace: &Path, git_config: &Path) {
    let commands: [&[&str]; 3] = [
        &["-c", "init.defaultBranch=main", "init", "-q"],
        &["add", "-A"],
        &[
            "commit",
            "-q",
            "--allow-empty",
            "--no-verify",
            "-m",
            "ferry test",
        ],
    ];
    for args in commands {
        let argv: Vec<String> = std::iter::once("git")
            .chain(args.iter().copied())
            .map(str::to_string)
            .collect();
        if setup_command(&argv, workspace, git_config).is_err() {
            let _ = std::fs::remove_dir_all(workspace.join(".git"));
            return;
        }
    }
}

/// Runs one setup command on the host, in the workspace. Git gets an identity, as a fresh
/// machine has none and commits would fail.
fn setup_command(argv: &[String], workspace: &Path, git_config: &Path) -> Result<(), String> {
    let shown = argv.join(" ");
    let mut cmd = std::process::Command::new(&argv[0]);
    // A git identity for commits in the setup, as the lowest-ranked config: a case's
    // `git -c user.name=...` or a repository's own config wins over it.
    cmd.args(&argv[1..])
        .current_dir(workspace)
        .env("GIT_CONFIG_GLOBAL", git_config);
    let out = cmd
        .output()
        .map_err(|e| format!("setup `{shown}` could not start: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "setup `{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A case the checks refused before the step started counts as a failed run, so that
/// denials can be tested like any other failure.
/// `text` indented under a line that introduces it.
fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A case the checks refused, in the words of the case: the pipeline it became, its one
/// step and its temporary file are the harness's, not the author's.
fn refused(case: &str, diagnostics: &[Diagnostic]) -> Outcome {
    let ours = "step `step` of job `test`";
    let message = diagnostics
        .iter()
        .map(|d| {
            let message = d.message.replace(ours, &format!("case `{case}`"));
            match &d.hint {
                Some(hint) => {
                    // "grant it in `permissions:` at /tmp/…/ferry.yaml:9:7:" names the file
                    // the harness wrote: the case's own `permissions:` is where the grant goes.
                    let hint = match hint.strip_prefix("grant it in ") {
                        Some(rest) => match rest.split_once(":\n") {
                            Some((_, yaml)) => {
                                format!("grant it in the case's `permissions:`:\n{yaml}")
                            }
                            None => hint.clone(),
                        },
                        None => hint.clone(),
                    };
                    format!("{message}\nhint: {hint}")
                }
                None => message,
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    Outcome {
        passed: false,
        message: Some(format!("refused before start: {message}")),
        ..Outcome::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_case_and_where_its_grant_goes() {
        let refusal = Diagnostic::error(
            "step `step` of job `test` needs exec of `git` but the pipeline does not grant it",
        )
        .hint("grant it in `permissions:` at /tmp/ferry-test-x/ferry.yaml:9:7:\n    permissions:\n      exec: [git]");
        let message = refused("tags", &[refusal]).message.unwrap();
        assert_eq!(
            message,
            "refused before start: case `tags` needs exec of `git` but the pipeline does not grant it\nhint: grant it in the case's `permissions:`:\n    permissions:\n      exec: [git]"
        );
    }

    fn load_text(text: &str) -> Result<Vec<Case>, Report> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TESTS_FILE);
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    #[test]
    fn reads_cases() {
        let cases = load_text(
            "cases:\n  a:\n    with: { who: ferry, n: 3, tags: [x, y] }\n    files: { README.md: hi }\n    expect:\n      outputs: { greeting: hello }\n      log: [hello]\n  b:\n    expect: { error: boom }\n",
        )
        .unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].with["n"], json!("3"));
        assert_eq!(cases[0].with["tags"], json!(["x", "y"]));
        assert_eq!(cases[0].files, vec![("README.md".into(), "hi".into())]);
        assert!(cases[1].expect.as_ref().unwrap().failed);
    }

    #[test]
    fn reports_mistakes_with_locations() {
        let report =
            load_text("cases:\n  a:\n    wiht: {}\n    expect:\n      status: done\n").unwrap_err();
        let text = report.to_string();
        assert!(text.contains("unknown key `wiht` in case `a`"), "{text}");
        assert!(text.contains("did you mean `with`?"), "{text}");
        assert!(text.contains(":3:5"), "{text}");
        assert!(
            text.contains("`status` must be `passed` or `failed`"),
            "{text}"
        );
        assert!(load_text("").is_err());
        assert!(load_text("cases: {}\n").is_err());
    }

    #[test]
    fn checks_expectations() {
        let cases = load_text(
            "cases:\n  a:\n    expect:\n      outputs: { greeting: hello }\n      log: [hi]\n",
        )
        .unwrap();
        let mut outcome = Outcome {
            passed: true,
            log: vec!["hi there".into()],
            ..Outcome::default()
        };
        outcome.outputs.insert("greeting".into(), "hello".into());
        assert!(outcome.mismatches(&cases[0]).is_empty());
        outcome.outputs.insert("greeting".into(), "bye".into());
        outcome.passed = false;
        let problems = outcome.mismatches(&cases[0]);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
