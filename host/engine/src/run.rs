//! The scheduler: jobs as a DAG by `needs`, up to N at once, steps in order inside a job,
//! fail-fast cancellation, outputs between steps.

use crate::event::{Event, FailureKind, JobInfo, Reporter, Status};
use crate::log::{Masker, StepLog};
use crate::record::{RunRecord, RunSummary, new_run_id, sanitize};
use ferry_model::pipeline::DEFAULT_STEP_TIMEOUT;
use ferry_model::{Job, Pipeline, Plan, Scope, Step};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Extra time the scheduler gives a runner past a step's time limit before it stops waiting:
/// the runner enforces the limit itself once the step is loaded (compiling a large
/// component on a cold cache takes seconds) and reports the timeout.
const DEADLINE_GRACE: Duration = Duration::from_secs(60);

/// Longest time limit accepted, so that instants never overflow.
const MAX_STEP_TIME: Duration = Duration::from_secs(60 * 60 * 24 * 7);

/// Everything a runner needs to run one step.
pub struct StepRequest {
    /// Id of the run, as in `.ferry/runs/<id>`.
    pub run_id: Arc<str>,
    pub pipeline: Arc<Pipeline>,
    pub job_index: usize,
    pub step_index: usize,
    /// Inputs after expressions were evaluated.
    pub inputs: BTreeMap<String, String>,
    /// The pipeline's `env:` values (pipeline, job and step) after evaluation.
    pub env: BTreeMap<String, String>,
    /// Secrets granted to this step, by name.
    pub secrets: BTreeMap<String, String>,
    /// The job's workspace on the host.
    pub workspace: PathBuf,
    /// File whose `name=value` lines become outputs (`$FERRY_OUTPUT`); created by whoever
    /// writes it first.
    pub output_file: PathBuf,
    /// Where files the step keeps (`outputs.keep`) go: `.ferry/runs/<run>/files/<job>/<step>`.
    pub kept_dir: PathBuf,
    /// How long the step may run once it is loaded (`timeout-minutes`, bounded by what is
    /// left of the job's).
    pub timeout: Duration,
    pub log: StepLog,
    pub cancel: CancellationToken,
}

impl StepRequest {
    pub fn job(&self) -> &Job {
        &self.pipeline.jobs[self.job_index]
    }

    pub fn step(&self) -> &Step {
        &self.job().steps[self.step_index]
    }
}

/// Why a step did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl StepFailure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        StepFailure {
            kind,
            message: message.into(),
        }
    }
}

/// What a runner reports for a step.
#[derive(Debug, Default)]
pub struct StepOutcome {
    pub result: Option<StepFailure>,
    /// Outputs set through the `outputs` interface.
    pub outputs: BTreeMap<String, String>,
}

impl StepOutcome {
    pub fn failed(kind: FailureKind, message: impl Into<String>) -> Self {
        StepOutcome {
            result: Some(StepFailure::new(kind, message)),
            outputs: BTreeMap::new(),
        }
    }
}

/// Runs steps. The engine knows nothing about WebAssembly: the sandbox implements this, and
/// tests use a fake.
pub trait StepRunner: Send + Sync + 'static {
    fn run_step(&self, request: StepRequest) -> impl Future<Output = StepOutcome> + Send;
}

/// How to run.
#[derive(Clone)]
pub struct RunOptions {
    /// Jobs that may run at once.
    pub parallel: usize,
    /// Cancel running jobs when one fails (the default).
    pub fail_fast: bool,
    /// `.ferry/` beside the pipeline file.
    pub state_dir: PathBuf,
    /// What each job's workspace is copied from.
    pub source_dir: PathBuf,
    /// Secret values by name; masked in every log.
    pub secrets: BTreeMap<String, String>,
    /// Cancelled on Ctrl-C.
    pub cancel: CancellationToken,
    /// `git.*` when the run starts: the repository's commit, where there is one.
    pub git: BTreeMap<String, String>,
}

/// How a run went.
#[derive(Debug)]
pub struct RunResult {
    pub id: String,
    pub status: Status,
    pub dir: PathBuf,
    pub summary: RunSummary,
}

/// Errors that stop a run from starting or being recorded.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot write the run record under `{dir}`: {source}")]
    Record {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs a plan to the end and returns its result.
pub async fn run<R: StepRunner>(
    plan: Plan,
    runner: Arc<R>,
    reporter: Arc<dyn Reporter>,
    options: RunOptions,
) -> Result<RunResult, RunError> {
    let started = Instant::now();
    let id = new_run_id();
    let Plan {
        pipeline,
        order,
        needs: plan_needs,
    } = plan;
    let record_err = |source| RunError::Record {
        dir: options.state_dir.clone(),
        source,
    };
    let record =
        Arc::new(RunRecord::create(&options.state_dir, &id, &pipeline.name).map_err(record_err)?);
    let run_dir = record.dir().to_path_buf();
    let reporter: Arc<dyn Reporter> = Arc::new(crate::event::Fanout(vec![
        record.clone() as Arc<dyn Reporter>,
        reporter,
    ]));
    let pipeline = Arc::new(pipeline);
    reporter.event(&Event::RunStarted {
        run: id.clone(),
        pipeline: pipeline.name.clone(),
        jobs: order
            .iter()
            .map(|&i| {
                let job = &pipeline.jobs[i];
                JobInfo {
                    id: job.id.clone(),
                    name: job.name.clone(),
                    needs: job.needs.clone(),
                    steps: job.steps.iter().map(|s| s.name.clone()).collect(),
                }
            })
            .collect(),
        at: crate::record::now_ms(),
    });

    let shared = Arc::new(Shared {
        pipeline: pipeline.clone(),
        reporter: reporter.clone(),
        masker: Arc::new(Masker::new(options.secrets.values().cloned())),
        secrets: options.secrets.clone(),
        run_id: id.as_str().into(),
        run_dir: run_dir.clone(),
        source_dir: options.source_dir.clone(),
        work_dir: options.state_dir.join("work"),
        git: options.git.clone(),
    });
    let run_cancel = options.cancel.child_token();
    let semaphore = Arc::new(Semaphore::new(options.parallel.max(1)));
    let mut state: HashMap<usize, Option<Status>> = order.iter().map(|&i| (i, None)).collect();
    let mut running = JoinSet::new();
    let mut any_failed = false;
    loop {
        for &i in &order {
            if state[&i].is_some() {
                continue;
            }
            let needs = &plan_needs[i];
            let waiting = |n: &usize| matches!(state.get(n), Some(None | Some(Status::Running)));
            if needs.iter().any(waiting) {
                continue;
            }
            let blocked = needs.iter().any(|n| {
                let ok = state.get(n) == Some(&Some(Status::Passed))
                    || (pipeline.jobs[*n].continue_on_error
                        && state.get(n) == Some(&Some(Status::Failed)));
                !ok
            });
            if blocked || run_cancel.is_cancelled() {
                skip_job(&shared, i);
                state.insert(i, Some(Status::Skipped));
                continue;
            }
            state.insert(i, Some(Status::Running));
            let shared = shared.clone();
            let runner = runner.clone();
            let cancel = run_cancel.child_token();
            let semaphore = semaphore.clone();
            running.spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                // A job still waiting for a slot when the run was cancelled never started.
                if cancel.is_cancelled() {
                    skip_job(&shared, i);
                    return (i, Status::Skipped);
                }
                (i, run_job(&shared, runner, i, cancel).await)
            });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (i, status) = match joined {
            Ok(done) => done,
            // A job task cannot panic unless the host has a bug; stop the run cleanly.
            Err(e) => {
                run_cancel.cancel();
                eprintln!("ferry: internal error in a job task: {e}");
                any_failed = true;
                continue;
            }
        };
        state.insert(i, Some(status));
        if status == Status::Failed && !pipeline.jobs[i].continue_on_error {
            any_failed = true;
            if options.fail_fast {
                run_cancel.cancel();
            }
        }
    }
    let status = if options.cancel.is_cancelled() {
        Status::Cancelled
    } else if any_failed {
        Status::Failed
    } else {
        Status::Passed
    };
    reporter.event(&Event::RunFinished {
        run: id.clone(),
        status,
        duration_ms: millis(started.elapsed()),
    });
    if let Some(source) = record.take_error() {
        return Err(RunError::Record {
            dir: run_dir,
            source,
        });
    }
    let _ = std::fs::remove_dir_all(run_dir.join("outputs"));
    let summary = std::fs::read(run_dir.join("run.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| RunError::Record {
            dir: run_dir.clone(),
            source: std::io::Error::other("run.json is unreadable"),
        })?;
    Ok(RunResult {
        id,
        status,
        dir: run_dir,
        summary,
    })
}

struct Shared {
    pipeline: Arc<Pipeline>,
    reporter: Arc<dyn Reporter>,
    masker: Arc<Masker>,
    secrets: BTreeMap<String, String>,
    run_id: Arc<str>,
    run_dir: PathBuf,
    source_dir: PathBuf,
    /// Where job workspaces are kept between runs.
    work_dir: PathBuf,
    git: BTreeMap<String, String>,
}

fn skip_job(shared: &Shared, i: usize) {
    let job = &shared.pipeline.jobs[i];
    let id: Arc<str> = job.id.as_str().into();
    for step in &job.steps {
        shared.reporter.event(&Event::StepFinished {
            job: id.clone(),
            step: step.key().into(),
            status: Status::Skipped,
            failure: None,
            message: None,
            duration_ms: 0.0,
        });
    }
    shared.reporter.event(&Event::JobFinished {
        job: id,
        status: Status::Skipped,
        duration_ms: 0.0,
    });
}

async fn run_job<R: StepRunner>(
    shared: &Shared,
    runner: Arc<R>,
    job_index: usize,
    cancel: CancellationToken,
) -> Status {
    let started = Instant::now();
    let job = &shared.pipeline.jobs[job_index];
    let job_id: Arc<str> = job.id.as_str().into();
    shared.reporter.event(&Event::JobStarted {
        job: job_id.clone(),
    });
    let finish = |status: Status| {
        shared.reporter.event(&Event::JobFinished {
            job: job_id.clone(),
            status,
            duration_ms: millis(started.elapsed()),
        });
        status
    };
    let outputs_dir = shared.run_dir.join("outputs").join(sanitize(&job.id));
    let (src, root, name) = (
        shared.source_dir.clone(),
        shared.work_dir.clone(),
        sanitize(&job.id),
    );
    let prepared = tokio::task::spawn_blocking(move || {
        let (workspace, _) = crate::workspace::Workspace::prepare(&src, &root, &name)?;
        std::fs::create_dir_all(&outputs_dir)?;
        Ok::<_, std::io::Error>((workspace, outputs_dir))
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    let (workspace_guard, outputs_dir) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            report_setup_failure(shared, job, &format!("cannot prepare the workspace: {e}"));
            return finish(Status::Failed);
        }
    };
    let workspace = workspace_guard.path().to_path_buf();
    let job_deadline = job.timeout.map(|t| started + t);
    let mut scope = JobScope {
        env: BTreeMap::new(),
        outputs: HashMap::new(),
        git: shared.git.clone(),
    };
    let mut failed = false;
    let mut cancelled = false;
    for (index, step) in job.steps.iter().enumerate() {
        let key: Arc<str> = step.key().into();
        if failed || cancel.is_cancelled() {
            cancelled |= cancel.is_cancelled() && !failed;
            shared.reporter.event(&Event::StepFinished {
                job: job_id.clone(),
                step: key,
                status: Status::Skipped,
                failure: None,
                message: None,
                duration_ms: 0.0,
            });
            continue;
        }
        let step_started = Instant::now();
        shared.reporter.event(&Event::StepStarted {
            job: job_id.clone(),
            step: key.clone(),
            index,
            name: step.name.clone(),
        });
        let log = StepLog::new(
            job_id.clone(),
            key.clone(),
            shared.reporter.clone(),
            shared.masker.clone(),
            step.permissions.log_limit(),
        );
        let output_file = outputs_dir.join(format!("{}.out", sanitize(&key)));
        let timeout = match (step.timeout, job_deadline) {
            (Some(limit), None) => limit,
            (Some(limit), Some(job_end)) => {
                limit.min(job_end.saturating_duration_since(step_started))
            }
            (None, Some(job_end)) => job_end.saturating_duration_since(step_started),
            (None, None) => DEFAULT_STEP_TIMEOUT,
        }
        .min(MAX_STEP_TIME);
        let outcome = match prepare_step(shared, job, step, &mut scope) {
            Err(failure) => StepOutcome {
                result: Some(failure),
                outputs: BTreeMap::new(),
            },
            Ok((inputs, env)) => {
                let secrets = step
                    .permissions
                    .secrets
                    .iter()
                    .filter_map(|name| shared.secrets.get(name).map(|v| (name.clone(), v.clone())))
                    .collect();
                let request = StepRequest {
                    run_id: shared.run_id.clone(),
                    pipeline: shared.pipeline.clone(),
                    job_index,
                    step_index: index,
                    inputs,
                    env,
                    secrets,
                    workspace: workspace.clone(),
                    output_file: output_file.clone(),
                    kept_dir: shared
                        .run_dir
                        .join("files")
                        .join(sanitize(&job.id))
                        .join(sanitize(&key)),
                    timeout,
                    log: log.clone(),
                    cancel: cancel.clone(),
                };
                let backstop = tokio::time::Instant::now() + timeout + DEADLINE_GRACE;
                tokio::select! {
                    outcome = runner.run_step(request) => outcome,
                    _ = tokio::time::sleep_until(backstop) => StepOutcome::failed(
                        FailureKind::Timeout,
                        "the step did not stop at its deadline and was abandoned",
                    ),
                    _ = cancel.cancelled() => StepOutcome::failed(FailureKind::Internal, "cancelled"),
                }
            }
        };
        log.flush();
        let mut outputs = outcome.outputs;
        match read_output_file(&output_file) {
            Ok(from_file) => outputs.extend(from_file),
            Err(e) => log.line(
                crate::event::Level::Warn,
                &format!("[ferry] ignoring $FERRY_OUTPUT: {e}"),
            ),
        }
        for (name, value) in &outputs {
            shared.reporter.event(&Event::Output {
                job: job_id.clone(),
                step: key.clone(),
                name: name.clone(),
                value: log.mask(value),
            });
        }
        // A checkout moves the job to another commit: `git.*` follows it.
        if matches!(&step.uses, ferry_model::Uses::Builtin(name) if name == "checkout")
            && outcome.result.is_none()
        {
            for field in ferry_model::expr::GIT_FIELDS {
                if let Some(value) = outputs.get(field) {
                    scope.git.insert(field.to_string(), value.clone());
                }
            }
        }
        if let Some(id) = &step.id {
            scope.outputs.insert(id.clone(), outputs);
        }
        let step_cancelled = cancel.is_cancelled() && outcome.result.is_some();
        let (status, failure, message) = match (&outcome.result, step_cancelled) {
            (None, _) => (Status::Passed, None, None),
            (Some(_), true) => (Status::Cancelled, None, Some("cancelled".to_string())),
            (Some(f), false) => (Status::Failed, Some(f.kind), Some(log.mask(&f.message))),
        };
        if step_cancelled {
            cancelled = true;
        }
        shared.reporter.event(&Event::StepFinished {
            job: job_id.clone(),
            step: key,
            status,
            failure,
            message,
            duration_ms: millis(step_started.elapsed()),
        });
        if status == Status::Failed && !step.continue_on_error {
            failed = true;
        }
        if status == Status::Cancelled {
            failed = true;
        }
    }
    drop(workspace_guard);
    finish(if cancelled {
        Status::Cancelled
    } else if failed {
        Status::Failed
    } else {
        Status::Passed
    })
}

fn report_setup_failure(shared: &Shared, job: &Job, message: &str) {
    let id: Arc<str> = job.id.as_str().into();
    for (i, step) in job.steps.iter().enumerate() {
        let first = i == 0;
        shared.reporter.event(&Event::StepFinished {
            job: id.clone(),
            step: step.key().into(),
            status: if first {
                Status::Failed
            } else {
                Status::Skipped
            },
            failure: first.then_some(FailureKind::Internal),
            message: first.then(|| message.to_string()),
            duration_ms: 0.0,
        });
    }
}

struct JobScope {
    env: BTreeMap<String, String>,
    outputs: HashMap<String, BTreeMap<String, String>>,
    git: BTreeMap<String, String>,
}

impl Scope for JobScope {
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }

    fn step_output(&self, step: &str, name: &str) -> Option<String> {
        self.outputs.get(step)?.get(name).cloned()
    }

    fn git(&self, name: &str) -> Option<String> {
        self.git.get(name).cloned()
    }
}

type Prepared = (BTreeMap<String, String>, BTreeMap<String, String>);

/// Evaluates a step's env and inputs; an expression without a value fails the step.
fn prepare_step(
    shared: &Shared,
    job: &Job,
    step: &Step,
    scope: &mut JobScope,
) -> Result<Prepared, StepFailure> {
    let bad = |e: String| StepFailure::new(FailureKind::InvalidInput, e);
    // Each level may read the ones above it.
    scope.env.clear();
    for map in [&shared.pipeline.env, &job.env, &step.env] {
        for (name, template) in map {
            let value = template.render(scope).map_err(bad)?;
            scope.env.insert(name.clone(), value);
        }
    }
    let inputs = ferry_model::expr::render_map(&step.with, scope).map_err(bad)?;
    Ok((inputs, scope.env.clone()))
}

/// Reads `name=value` lines and `name<<DELIMITER` blocks, as `$GITHUB_OUTPUT` works.
pub fn read_output_file(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e.to_string()),
    };
    parse_outputs(&text)
}

fn parse_outputs(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut outputs = BTreeMap::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some((name, delimiter)) = line.split_once("<<") {
            let mut value = Vec::new();
            loop {
                match lines.next() {
                    Some((_, l)) if l == delimiter => break,
                    Some((_, l)) => value.push(l),
                    None => {
                        return Err(format!(
                            "line {}: `{name}<<{delimiter}` is never closed by `{delimiter}`",
                            n + 1
                        ));
                    }
                }
            }
            outputs.insert(name.trim().to_string(), value.join("\n"));
        } else if let Some((name, value)) = line.split_once('=') {
            outputs.insert(name.trim().to_string(), value.to_string());
        } else {
            return Err(format!(
                "line {}: expected `name=value` or `name<<DELIMITER`, found `{line}`",
                n + 1
            ));
        }
    }
    Ok(outputs)
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_file_formats() {
        let outputs = parse_outputs("a=1\nb=x=y\n\nnotes<<EOF\nline 1\nline 2\nEOF\n").unwrap();
        assert_eq!(outputs["a"], "1");
        assert_eq!(outputs["b"], "x=y");
        assert_eq!(outputs["notes"], "line 1\nline 2");
        assert!(
            parse_outputs("x<<END\nnever closed")
                .unwrap_err()
                .contains("never closed")
        );
        assert!(parse_outputs("garbage").unwrap_err().contains("line 1"));
    }
}
