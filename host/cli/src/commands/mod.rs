//! One module per subcommand: its arguments and an `execute` that calls into the crates.

pub mod approve;
pub mod artifacts;
pub mod cache;
pub mod completions;
pub mod deployments;
pub mod graph;
pub mod lock;
pub mod plugin;
pub mod remote;
pub mod rollback;
pub mod run;
pub mod runs;
pub mod serve;
pub mod trigger;
pub mod validate;

use crate::exit;
use crate::report::style::Style;
use ferry_compose::plugins::{Mode, PinProblem};
use ferry_model::{Diagnostic, Pipeline, Report};
use ferry_sandbox::Sandbox;
use std::path::{Path, PathBuf};

/// The pipeline file to use: the one given, or `ferry.yaml` in the current directory.
pub fn pipeline_path(file: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(file) = file {
        return Ok(file);
    }
    for name in ["ferry.yaml", "ferry.yml", ".ferry.yaml"] {
        if Path::new(name).is_file() {
            return Ok(PathBuf::from(name));
        }
    }
    Err("no `ferry.yaml` in the current directory\nhint: pass the pipeline file, e.g. `ferry run examples/ferry.yaml`".into())
}

/// Loads and validates a pipeline, printing every error to stderr.
pub fn load(file: Option<PathBuf>) -> Result<Pipeline, u8> {
    let path = pipeline_path(file).map_err(|e| {
        eprintln!("{}", Style::stderr().error(&e));
        exit::USAGE
    })?;
    let builtins: Vec<&str> = ferry_builtins::BUILTINS.iter().map(|(n, _)| *n).collect();
    ferry_model::load(&path, &builtins).map_err(|report| {
        print_report(&report);
        exit::USAGE
    })
}

pub fn print_report(report: &Report) {
    let style = Style::stderr();
    for diagnostic in &report.diagnostics {
        eprintln!("{}", style.diagnostic(&diagnostic.render(&report.source)));
    }
    let count = report.error_count();
    if count == 0 {
        return;
    }
    eprintln!(
        "{}",
        style.error(&format!(
            "`{}` has {count} error{}",
            report.source.name.display(),
            if count == 1 { "" } else { "s" }
        ))
    );
}

/// The sandbox every command that touches components uses, sized for `concurrency` steps
/// at once.
pub fn sandbox(concurrency: usize) -> Result<Sandbox, u8> {
    ferry_compose::sandbox(concurrency).map_err(fail)
}

/// Pins the pipeline's registry plugins (see [`ferry_compose::plugins::pin`]), printing
/// what changed and every problem with its location; returns whether ferry.lock was
/// written.
pub fn pin(pipeline: &mut Pipeline, mode: Mode) -> Result<bool, u8> {
    let style = Style::stderr();
    let (warnings, outcome) = match ferry_compose::plugins::pin(pipeline, mode) {
        Ok(mut pinned) => (std::mem::take(&mut pinned.warnings), Ok(pinned)),
        Err(e) => (e.warnings, Err(e.problem)),
    };
    for warning in &warnings {
        eprintln!("{}", style.warning(warning));
    }
    match outcome {
        Ok(pinned) => {
            if let Some(path) = &pinned.wrote {
                for note in &pinned.notes {
                    eprintln!("{note}");
                }
                eprintln!("wrote {}", path.display());
            }
            Ok(pinned.wrote.is_some())
        }
        Err(PinProblem::Invalid(report)) => {
            print_report(&report);
            Err(exit::USAGE)
        }
        Err(PinProblem::Failed(message)) => Err(fail(message)),
    }
}

/// Checks the pipeline against its plugins (inputs, needs and grants), printing every
/// problem with its location.
pub async fn check_plugins(sandbox: &Sandbox, pipeline: &Pipeline) -> Result<(), u8> {
    let host_path = std::env::var("PATH").ok();
    let diagnostics = sandbox.preflight(pipeline, host_path.as_deref()).await;
    if diagnostics.is_empty() {
        return Ok(());
    }
    let failed = diagnostics.iter().any(Diagnostic::is_error);
    let text = std::fs::read_to_string(&pipeline.file).unwrap_or_default();
    print_report(&Report {
        source: ferry_model::Source::new(&pipeline.file, text),
        diagnostics,
    });
    match failed {
        true => Err(exit::USAGE),
        false => Ok(()),
    }
}

/// `.ferry/` beside the pipeline file, absolute: where runs, workspaces, locks and the
/// deployment history live.
pub fn state_dir(pipeline: &Pipeline) -> PathBuf {
    ferry_compose::state_dir(pipeline)
}

/// The state directory for commands that read it without running anything: beside the
/// pipeline file given, or `ferry.yaml` here.
pub fn state_dir_of(file: Option<PathBuf>) -> Result<PathBuf, u8> {
    let path = pipeline_path(file).map_err(fail)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok(ferry_model::pipeline::host_path(dir, ".ferry"))
}

/// The ids of the runs under `state_dir`, oldest first. Ids sort by the second a run
/// started; runs of the same second are ordered by the millisecond in their record.
pub fn run_ids(state_dir: &Path) -> Vec<String> {
    let runs = state_dir.join("runs");
    let mut ids: Vec<(String, String)> = std::fs::read_dir(&runs)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| {
            let id = e.file_name().to_string_lossy().into_owned();
            let started = std::fs::read(e.path().join("run.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<ferry_engine::record::RunSummary>(&b).ok())
                .map(|s| s.started_at)
                .unwrap_or_default();
            (id, started)
        })
        .collect();
    ids.sort_by(|(a, a_at), (b, b_at)| {
        a.get(..15)
            .cmp(&b.get(..15))
            .then(a_at.cmp(b_at))
            .then(a.cmp(b))
    });
    ids.into_iter().map(|(id, _)| id).collect()
}

/// The state directory of the pipeline `file` and the folder of its run `id`.
pub fn find_run(file: Option<PathBuf>, id: &str) -> Result<(PathBuf, PathBuf), u8> {
    let state_dir = state_dir_of(file)?;
    let dir = run_dir(&state_dir, id).map_err(fail)?;
    Ok((state_dir, dir))
}

/// `.ferry/runs/<id>`; `latest` is the newest run.
pub fn run_dir(state_dir: &Path, id: &str) -> Result<PathBuf, String> {
    let runs = state_dir.join("runs");
    let id = match id {
        "latest" => run_ids(state_dir)
            .pop()
            .ok_or_else(|| format!("there are no runs under `{}`", runs.display()))?,
        id => ferry_engine::record::sanitize(id),
    };
    let dir = runs.join(&id);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!(
            "there is no run `{id}` under `{}`\nhint: `ferry run` prints the id of each run; `latest` picks the newest",
            runs.display()
        ))
    }
}

/// Prints an error with its hint lines and returns the usage exit code.
pub fn fail(message: impl AsRef<str>) -> u8 {
    eprintln!("{}", Style::stderr().error(message.as_ref()));
    exit::USAGE
}
