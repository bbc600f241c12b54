//! How a run is shown: a live terminal board, plain prefixed lines, or JSON events.

pub mod style;
mod tty;

use ferry_engine::RunResult;
use ferry_engine::event::{Event, FailureKind, Level, Reporter, Status};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use style::Style;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// `tty` on a terminal, else `plain`
    Auto,
    /// Live job and step status with durations
    Tty,
    /// Every line prefixed with job/step
    Plain,
    /// One JSON event per line
    Json,
}

/// A reporter that also prints the end of a run.
pub trait RunReporter: Reporter {
    fn finish(&self, result: &RunResult);
}

pub fn reporter(output: Output) -> Arc<dyn RunReporter> {
    let output = match output {
        Output::Auto
            if std::io::stdout().is_terminal()
                && std::env::var("TERM").is_ok_and(|t| t != "dumb") =>
        {
            Output::Tty
        }
        Output::Auto => Output::Plain,
        other => other,
    };
    match output {
        Output::Json => Arc::new(Json),
        Output::Tty => tty::Tty::start(Style::stdout()),
        _ => Arc::new(Plain {
            style: Style::stdout(),
        }),
    }
}

/// Writes to stdout, ignoring a closed pipe (`ferry run | head` is not an error).
pub fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.write_all(b"\n");
}

struct Json;

impl Reporter for Json {
    fn event(&self, event: &Event) {
        if let Ok(line) = serde_json::to_string(event) {
            out(&line);
        }
    }
}

impl RunReporter for Json {
    fn finish(&self, _: &RunResult) {}
}

struct Plain {
    style: Style,
}

impl Reporter for Plain {
    fn event(&self, event: &Event) {
        let s = &self.style;
        let line = match event {
            Event::RunStarted { pipeline, run, .. } => {
                format!("{} {pipeline} (run {run})", s.bold("▶"))
            }
            Event::StepStarted {
                job, step, name, ..
            } => {
                format!(
                    "{} {} {}",
                    s.dim(&format!("[{job}/{step}]")),
                    s.cyan("▶"),
                    name
                )
            }
            Event::Log {
                job,
                step,
                level,
                text,
            } => {
                let prefix = s.dim(&format!("[{job}/{step}]"));
                match level {
                    Level::Warn => format!("{prefix} {}", s.yellow(&format!("warning: {text}"))),
                    Level::Error => format!("{prefix} {}", s.red(&format!("error: {text}"))),
                    Level::Debug => format!("{prefix} {}", s.dim(text)),
                    _ => format!("{prefix} {text}"),
                }
            }
            Event::GroupStart { job, step, title } => {
                format!("{} ▸ {title}", s.dim(&format!("[{job}/{step}]")))
            }
            Event::Annotation {
                job,
                step,
                annotation,
            } => format!(
                "{} {}",
                s.dim(&format!("[{job}/{step}]")),
                ferry_engine::record::annotation_line(annotation)
            ),
            Event::StepFinished {
                job,
                step,
                status,
                failure,
                message,
                duration_ms,
                cached,
            } => {
                let prefix = s.dim(&format!("[{job}/{step}]"));
                match (status, cached) {
                    (Status::Passed, Some(c)) => format!(
                        "{prefix} {} cached in {} (saved {}, result of run {})",
                        s.green("✓"),
                        ms(*duration_ms),
                        ms(c.saved_ms),
                        c.run
                    ),
                    (Status::Passed, None) => {
                        format!("{prefix} {} passed in {}", s.green("✓"), ms(*duration_ms))
                    }
                    (Status::Skipped, _) => format!("{prefix} {} skipped", s.dim("-")),
                    (Status::Cancelled, _) => format!("{prefix} {} cancelled", s.yellow("■")),
                    _ => format!(
                        "{prefix} {} {} in {}: {}",
                        s.red("✗"),
                        failure_label(*failure),
                        ms(*duration_ms),
                        message.as_deref().unwrap_or("")
                    ),
                }
            }
            Event::JobFinished {
                job,
                status,
                duration_ms,
                message,
                ..
            } => {
                let why = message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default();
                format!(
                    "{} job {}{why}",
                    s.dim(&format!("[{job}]")),
                    status_text(s, *status, *duration_ms)
                )
            }
            Event::Notice { job, text } => match job {
                Some(job) => format!("{} {text}", s.dim(&format!("[{job}]"))),
                None => text.clone(),
            },
            Event::MatrixExpanded { job, jobs } => {
                format!("{} {}", s.dim(&format!("[{job}]")), matrix_line(jobs))
            }
            Event::Summary {
                job,
                step,
                markdown,
            } => {
                let prefix = s.dim(&format!("[{job}/{step}]"));
                let mut text = format!("{prefix} ▸ summary");
                for line in markdown.lines() {
                    text.push_str(&format!("\n{prefix} │ {line}"));
                }
                text
            }
            Event::JobStarted { .. }
            | Event::Approval { .. }
            | Event::GroupEnd { .. }
            | Event::Output { .. }
            | Event::RunFinished { .. } => {
                return;
            }
        };
        out(&line);
    }
}

impl RunReporter for Plain {
    fn finish(&self, result: &RunResult) {
        summary(&self.style, result);
    }
}

pub fn failure_label(kind: Option<FailureKind>) -> &'static str {
    match kind {
        Some(FailureKind::Failed) | None => "failed",
        Some(FailureKind::InvalidInput) => "invalid input",
        Some(FailureKind::Denied) => "denied",
        Some(FailureKind::Timeout) => "timed out",
        Some(FailureKind::MemoryLimit) => "out of memory",
        Some(FailureKind::Trap) => "crashed",
        Some(FailureKind::Internal) => "could not run",
    }
}

pub fn ms(duration_ms: f64) -> String {
    if duration_ms < 1.0 {
        format!("{:.0}µs", duration_ms * 1000.0)
    } else if duration_ms < 1000.0 {
        format!("{duration_ms:.0}ms")
    } else if duration_ms < 60_000.0 {
        format!("{:.1}s", duration_ms / 1000.0)
    } else {
        let secs = (duration_ms / 1000.0).round() as u64;
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

fn status_text(s: &Style, status: Status, duration_ms: f64) -> String {
    match status {
        Status::Passed => s.green(&format!("passed in {}", ms(duration_ms))),
        Status::Failed => s.red(&format!("failed in {}", ms(duration_ms))),
        Status::Cancelled => s.yellow("cancelled"),
        Status::Skipped => s.dim("skipped"),
        other => other.as_str().to_string(),
    }
}

/// The closing lines of a run: verdict, counts, failures, where the record is.
pub fn summary(s: &Style, result: &RunResult) {
    let summary = &result.summary;
    let count = |status: Status| summary.jobs.values().filter(|j| j.status == status).count();
    let mut parts = vec![format!("{} passed", count(Status::Passed))];
    for (status, label) in [
        (Status::Failed, "failed"),
        (Status::Cancelled, "cancelled"),
        (Status::Skipped, "skipped"),
    ] {
        let n = count(status);
        if n > 0 {
            parts.push(format!("{n} {label}"));
        }
    }
    let duration = ms(summary.duration_ms.unwrap_or(0.0));
    let verdict = match result.status {
        Status::Passed => s.green(&s.bold(&format!("✓ passed in {duration}"))),
        Status::Cancelled => s.yellow(&s.bold(&format!("■ cancelled after {duration}"))),
        _ => s.red(&s.bold(&format!("✗ failed in {duration}"))),
    };
    out("");
    for (job, j) in &summary.jobs {
        // Why a job did not run (its `if:`, a failed need) or could not start, or what it
        // deployed where.
        match (j.status, &j.message) {
            (Status::Passed, Some(m)) => out(&format!("  {} {job}: {m}", s.green("✓"))),
            (Status::Failed, Some(m)) => out(&format!("  {} {job}: {m}", s.red("✗"))),
            (Status::Skipped, Some(m)) => out(&s.dim(&format!("  - {job} skipped: {m}"))),
            _ => {}
        }
        for step in &j.steps {
            if step.status == Status::Failed {
                out(&format!(
                    "  {} {job} › {}: {}",
                    s.red("✗"),
                    step.name,
                    step.message
                        .as_deref()
                        .unwrap_or("failed")
                        .lines()
                        .next()
                        .unwrap_or("")
                ));
            }
        }
    }
    let cached: Vec<f64> = summary
        .jobs
        .values()
        .flat_map(|j| &j.steps)
        .filter_map(|st| st.cached.as_ref().map(|c| c.saved_ms))
        .collect();
    let cached = match cached.len() {
        0 => String::new(),
        n => format!(
            " · {n} step{} cached (saved {})",
            if n == 1 { "" } else { "s" },
            ms(cached.iter().sum())
        ),
    };
    out(&format!("{verdict} · jobs: {}{cached}", parts.join(", ")));
    out(&s.dim(&format!("record: {}", result.dir.display())));
}

/// Asks at the terminal when a job waits for approval, if ferry runs in one; the answer is
/// written as `ferry approve` would write it, so whichever comes first decides.
pub struct Prompter {
    state_dir: std::path::PathBuf,
    run: std::sync::Mutex<Option<String>>,
    interactive: bool,
}

impl Prompter {
    pub fn new(state_dir: std::path::PathBuf) -> Prompter {
        Prompter {
            state_dir,
            run: std::sync::Mutex::new(None),
            interactive: std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
        }
    }
}

impl Reporter for Prompter {
    fn event(&self, event: &Event) {
        let mut run = self.run.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::RunStarted { run: id, .. } => *run = Some(id.clone()),
            Event::Approval {
                job,
                environment,
                decision: None,
            } if self.interactive => {
                let Some(id) = run.clone() else { return };
                let run_dir = self.state_dir.join("runs").join(&id);
                let (job, environment) = (job.to_string(), environment.clone());
                std::thread::spawn(move || {
                    eprint!("deploy job `{job}` to `{environment}`? [y/N] ");
                    let mut answer = String::new();
                    if std::io::stdin().read_line(&mut answer).is_err() {
                        return;
                    }
                    let approved = matches!(answer.trim(), "y" | "Y" | "yes");
                    let reason = (!approved).then(|| "declined at the prompt".to_string());
                    let decision = ferry_engine::gate::decision(approved, reason);
                    // Decided elsewhere in the meantime: that decision stands.
                    let _ = ferry_engine::gate::decide(&run_dir, &job, &decision);
                });
            }
            _ => {}
        }
    }
}

/// What a matrix known only at run time turned into: `matrix: 2 jobs: test (a), test (b)`.
pub(crate) fn matrix_line(jobs: &[ferry_engine::event::JobInfo]) -> String {
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    format!("matrix: {} jobs: {}", jobs.len(), names.join(", "))
}
