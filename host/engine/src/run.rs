//! The scheduler: jobs as a DAG by `needs`, up to N at once, steps in order inside a job,
//! fail-fast cancellation, outputs between steps.

use crate::cache::Cache;
use crate::event::{Cached, Event, FailureKind, JobInfo, Level, Reporter, Status};
use crate::files::Digests;
use crate::timings::{Phase, span};
use caching::{
    Capture, cache_keys, download, may_write, restore_dependency_cache, reuse, save_step,
    step_files, step_key, upload,
};

mod caching;
mod job_env;
mod keep;
pub mod services;
use crate::log::{Masker, StepLog};
use crate::record::{RunRecord, RunSummary, sanitize};
use ferry_model::pipeline::DEFAULT_STEP_TIMEOUT;
use ferry_model::{Job, Pipeline, Plan, Progress, Scope, Step};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Host variables granted to this step (`permissions.env`) that the host has, by name.
    pub host_env: BTreeMap<String, String>,
    /// The job's workspace on the host.
    pub workspace: PathBuf,
    /// See [`RunOptions::untrusted`].
    pub untrusted: bool,
    /// The private `HOME` of the job's host programs, kept between runs so tool caches
    /// survive: `.ferry/home/<job>`. Created by whoever uses it first.
    pub home: PathBuf,
    /// File whose `name=value` lines become outputs (`$FERRY_OUTPUT`); created by whoever
    /// writes it first.
    pub output_file: PathBuf,
    /// The `PATH` the step's programs are looked up on and see: what earlier steps added
    /// (`$FERRY_PATH`), then the pipeline's `env: PATH` or the host's.
    pub path: String,
    /// Files whose lines add to later steps' `PATH` (`$FERRY_PATH`) and environment
    /// (`$FERRY_ENV`, as `$FERRY_OUTPUT`'s lines); created by whoever writes them first.
    pub path_file: PathBuf,
    pub env_file: PathBuf,
    /// Markdown the step's programs write for people (`$FERRY_STEP_SUMMARY`), shown with
    /// the run; created by whoever writes it first.
    pub summary_file: PathBuf,
    /// Where files the step keeps (`outputs.keep`) go: `.ferry/runs/<run>/files/<job>/<step>`.
    pub kept_dir: PathBuf,
    /// How long the step may run once it is loaded (`timeout-minutes`, bounded by what is
    /// left of the job's).
    pub timeout: Duration,
    pub log: StepLog,
    pub cancel: CancellationToken,
    /// The job's running services, as the runner started them.
    pub services: Option<Arc<dyn services::JobServices>>,
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

    /// What the step cache needs to know about the component `step` runs; `None` (the
    /// default) when its results cannot be reused.
    fn identity(&self, step: &Step) -> impl Future<Output = Option<Identity>> + Send {
        let _ = step;
        std::future::ready(None)
    }

    /// Starts a job's `services:` and waits until each is ready, before the job's first
    /// step; a runner that cannot says why.
    fn start_services(
        &self,
        request: services::ServicesRequest,
    ) -> impl Future<Output = Result<Arc<dyn services::JobServices>, String>> + Send {
        let _ = request;
        std::future::ready(Err("this runner cannot start services".to_string()))
    }
}

/// The component behind a step, as far as the step cache is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// sha256 of the component: a new version of the plugin is a new key.
    pub digest: String,
    /// The step declares itself a function of its inputs and files (a built-in that needs no
    /// programs, hosts, secrets or host paths): cached without `cache: true`.
    pub pure: bool,
    /// The step can read the workspace: without `inputs:`, every file in it is part of the
    /// key.
    pub reads_workspace: bool,
}

/// How to run.
#[derive(Clone)]
pub struct RunOptions {
    /// Jobs that may run at once.
    pub parallel: usize,
    /// Slots shared with other runs, used instead of `parallel`: `ferry serve` bounds the
    /// jobs of every run it executes together.
    pub slots: Option<Arc<Semaphore>>,
    /// Cancel running jobs when one fails (the default).
    pub fail_fast: bool,
    /// `.ferry/` beside the pipeline file.
    pub state_dir: PathBuf,
    /// What each job's workspace is copied from.
    pub source_dir: PathBuf,
    /// Secret values by name; masked in every log.
    pub secrets: BTreeMap<String, String>,
    /// The host's variables, which `permissions.env` grants by name. `ferry run` passes its
    /// own environment; nothing else reads the process environment for a step.
    pub host_env: Arc<BTreeMap<String, String>>,
    /// Cancelled on Ctrl-C.
    pub cancel: CancellationToken,
    /// `git.*` when the run starts: the repository's commit, where there is one.
    pub git: BTreeMap<String, String>,
    /// `vars.*`: values given on the command line (`--var NAME=VALUE`).
    pub vars: BTreeMap<String, String>,
    /// `inputs.*`: the inputs of a manual run (`--input NAME=VALUE`).
    pub inputs: BTreeMap<String, String>,
    /// The step and dependency caches; `None` turns both off.
    pub cache: Option<Cache>,
    /// Whether cached results are used. `false` (`--no-cache`) runs every step and restores
    /// no dependency cache, but still stores what the run produces.
    pub reuse: bool,
    /// Start every job from a fresh workspace, throwing away what `keep:` kept (`--clean`).
    pub clean: bool,
    /// The run's code is not trusted (a pull request from a fork): its steps and their
    /// programs reach no loopback, private or link-local address, whatever they are granted.
    pub untrusted: bool,
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
    let Plan {
        pipeline,
        mut order,
        needs: mut plan_needs,
    } = plan;
    let record_err = |source| RunError::Record {
        dir: options.state_dir.clone(),
        source,
    };
    let record =
        Arc::new(RunRecord::create(&options.state_dir, &pipeline.name).map_err(record_err)?);
    let id = record.id();
    let run_dir = record.dir().to_path_buf();
    let reporter: Arc<dyn Reporter> = Arc::new(crate::event::Fanout(vec![
        record.clone() as Arc<dyn Reporter>,
        reporter,
    ]));
    let mut pipeline = Arc::new(pipeline);
    reporter.event(&Event::RunStarted {
        run: id.clone(),
        pipeline: pipeline.name.clone(),
        jobs: order.iter().map(|&i| job_info(&pipeline.jobs[i])).collect(),
        at: crate::record::now_ms(),
    });

    let shared = Arc::new(Shared {
        pipeline: std::sync::RwLock::new(pipeline.clone()),
        reporter: reporter.clone(),
        masker: Arc::new(Masker::new(options.secrets.values().cloned())),
        secrets: options.secrets.clone(),
        host_env: options.host_env.clone(),
        untrusted: options.untrusted,
        run_id: id.as_str().into(),
        run_dir: run_dir.clone(),
        source_dir: options.source_dir.clone(),
        state_dir: options.state_dir.clone(),
        // An untrusted run (a fork's pull request) works in folders of its own, removed when
        // it ends: what it leaves in a workspace or a HOME (a `target/` build script, a
        // `.gitconfig`) must not run in a trusted run of the same job.
        work_dir: if options.untrusted {
            run_dir.join("work")
        } else {
            options.state_dir.join("work")
        },
        home_dir: if options.untrusted {
            run_dir.join("home")
        } else {
            options.state_dir.join("home")
        },
        git: options.git.clone(),
        vars: options.vars.clone(),
        inputs: options.inputs.clone(),
        finished: Default::default(),
        cache: options.cache.clone(),
        reuse: options.reuse,
        clean: options.clean,
        saved: Default::default(),
        programs: Arc::new(Digests::load(options.state_dir.join("programs.digests"))),
    });
    // Another run (`cancel-in-progress`) or `ferry cancel` may ask this one to stop.
    let watcher = {
        let reporter = reporter.clone();
        crate::gate::watch_cancel_requests(run_dir.clone(), options.cancel.clone(), move |why| {
            reporter.event(&Event::Notice {
                job: None,
                text: format!("cancelling: {}", why.trim()),
            });
        })
    };
    let run_cancel = options.cancel.child_token();
    let semaphore = options
        .slots
        .clone()
        .unwrap_or_else(|| Arc::new(Semaphore::new(options.parallel.max(1))));
    // Each matrix's combinations share a token their fail-fast cancels and a bound on how
    // many run at once.
    let mut matrices = Matrices::new();
    add_matrices(&mut matrices, &run_cancel, &pipeline.jobs);
    let mut state: HashMap<usize, Option<Status>> = order.iter().map(|&i| (i, None)).collect();
    let mut running = JoinSet::new();
    let mut any_failed = false;
    // Whether a job, or one it needs directly or through others, failed or was cancelled.
    let mut failed_above: HashMap<usize, bool> = HashMap::new();
    loop {
        // Matrices known only at run time, resolved in this pass: the job, and its
        // combinations' jobs.
        let mut resolved: Vec<(usize, Vec<Job>)> = Vec::new();
        for &i in &order {
            if state[&i].is_some() {
                continue;
            }
            let needs = &plan_needs[i];
            let waiting = |n: &usize| matches!(state.get(n), Some(None | Some(Status::Running)));
            if needs.iter().any(waiting) {
                continue;
            }
            let tolerated =
                |n: &usize| pipeline.jobs[*n].continue_on_error && state[n] == Some(Status::Failed);
            let all_passed = needs
                .iter()
                .all(|n| state[n] == Some(Status::Passed) || tolerated(n));
            let above = needs.iter().any(|n| {
                matches!(state[n], Some(Status::Failed | Status::Cancelled)) && !tolerated(n)
                    || failed_above.get(n) == Some(&true)
            });
            failed_above.insert(i, above);
            let progress = progress(options.cancel.is_cancelled(), above);
            let job = &pipeline.jobs[i];
            let reads_status = job.condition.as_ref().is_some_and(|c| c.reads_status);
            let matrix = job.instance.as_ref().map(|m| &matrices[&m.group]);
            let skip_reason = if options.cancel.is_cancelled() && !reads_status {
                Some("the run was cancelled".to_string())
            } else if job.condition.is_none() && !all_passed {
                Some("a job it needs did not pass".to_string())
            } else if run_cancel.is_cancelled() && !reads_status {
                Some("another job failed and the run stops (fail-fast)".to_string())
            } else if matrix.is_some_and(|(token, _)| token.is_cancelled()) && !reads_status {
                Some("another combination of the matrix failed (fail-fast)".to_string())
            } else if job.matrix_at_run.is_some()
                && job
                    .condition
                    .as_ref()
                    .is_some_and(|c| c.paths.iter().any(|(path, _)| path[0] == "matrix"))
            {
                // A condition that reads `matrix` is tested by each combination's job.
                None
            } else {
                match &job.condition {
                    None if all_passed => None,
                    None => Some("a job it needs did not pass".to_string()),
                    Some(condition) => match condition.test(&job_scope(&shared, job, progress)) {
                        Ok(true) => None,
                        Ok(false) => Some(format!("`if: {}` is false", condition.text)),
                        Err(e) => {
                            finish_unstarted(&shared, i, Status::Failed, &format!("`if:` {e}"));
                            state.insert(i, Some(Status::Failed));
                            any_failed |= !job.continue_on_error;
                            continue;
                        }
                    },
                }
            };
            if let Some(reason) = skip_reason {
                finish_unstarted(&shared, i, Status::Skipped, &reason);
                state.insert(i, Some(Status::Skipped));
                continue;
            }
            if let Some(at_run) = &job.matrix_at_run {
                let made = at_run
                    .resolve(&job_scope(&shared, job, progress))
                    .and_then(|matrix| combination_jobs(&pipeline, job, matrix));
                match made {
                    Ok(jobs) => resolved.push((i, jobs)),
                    Err(e) => {
                        let message = format!("the matrix cannot be made: {e}");
                        finish_unstarted(&shared, i, Status::Failed, &message);
                        state.insert(i, Some(Status::Failed));
                        if !job.continue_on_error {
                            any_failed = true;
                            if options.fail_fast {
                                run_cancel.cancel();
                            }
                        }
                    }
                }
                continue;
            }
            state.insert(i, Some(Status::Running));
            let shared = shared.clone();
            let runner = runner.clone();
            // A job that asked to run after failures is not cancelled by fail-fast.
            let cancel = match (reads_status, matrix) {
                (true, _) => options.cancel.child_token(),
                (false, Some((token, _))) => token.child_token(),
                (false, None) => run_cancel.child_token(),
            };
            let semaphore = semaphore.clone();
            let limit = matrix.and_then(|(_, limit)| limit.clone());
            running.spawn(async move {
                let _in_matrix = match limit {
                    Some(limit) => Some(limit.acquire_owned().await),
                    None => None,
                };
                // Waiting for a group or a person does not take one of the `parallel` slots.
                let _group = match gate(&shared, i, &cancel).await {
                    Ok(lock) => lock,
                    Err(status) => return (i, status),
                };
                let _permit = semaphore.acquire_owned().await;
                // A job still waiting for a slot when the run was cancelled never started.
                if cancel.is_cancelled() {
                    finish_unstarted(&shared, i, Status::Skipped, "the run was cancelled");
                    return (i, Status::Skipped);
                }
                (i, run_job(&shared, runner, i, cancel).await)
            });
        }
        if !resolved.is_empty() {
            for (i, jobs) in resolved {
                // The combinations take the job's place: in the order, in what the jobs
                // after it wait for, and in the record.
                let first = pipeline.jobs.len();
                let mut grown = Pipeline::clone(&pipeline);
                grown.jobs.extend(jobs);
                pipeline = Arc::new(grown);
                *shared.pipeline.write().unwrap_or_else(|e| e.into_inner()) = pipeline.clone();
                let added: Vec<usize> = (first..pipeline.jobs.len()).collect();
                add_matrices(&mut matrices, &run_cancel, &pipeline.jobs[first..]);
                let needs = plan_needs[i].clone();
                plan_needs.extend(added.iter().map(|_| needs.clone()));
                for needs in plan_needs.iter_mut() {
                    if let Some(at) = needs.iter().position(|&n| n == i) {
                        needs.splice(at..=at, added.iter().copied());
                    }
                }
                if let Some(at) = order.iter().position(|&o| o == i) {
                    order.splice(at..=at, added.iter().copied());
                }
                state.remove(&i);
                state.extend(added.iter().map(|&a| (a, None)));
                reporter.event(&Event::MatrixExpanded {
                    job: pipeline.jobs[i].id.as_str().into(),
                    jobs: added.iter().map(|&a| job_info(&pipeline.jobs[a])).collect(),
                });
            }
            continue;
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
        let job = &pipeline.jobs[i];
        if status == Status::Failed && !job.continue_on_error {
            any_failed = true;
            match &job.instance {
                // A matrix with `fail-fast: false` wants every combination's result.
                Some(m) if !m.fail_fast => {}
                Some(m) => {
                    matrices[&m.group].0.cancel();
                    if options.fail_fast {
                        run_cancel.cancel();
                    }
                }
                None if options.fail_fast => run_cancel.cancel(),
                None => {}
            }
        }
    }
    watcher.abort();
    {
        // Programs that are gone are forgotten, so the record does not grow for ever.
        let programs = shared.programs.clone();
        let _ = tokio::task::spawn_blocking(move || programs.save(&|path| path.exists())).await;
    }
    if let Some(cache) = shared
        .cache
        .clone()
        .filter(|_| shared.saved.load(Ordering::Relaxed))
    {
        let _t = span(Phase::CacheSave);
        let limit = cache.limit();
        match tokio::task::spawn_blocking(move || cache.prune(limit)).await {
            Ok(Ok(p)) if p.entries > 0 => reporter.event(&Event::Notice {
                job: None,
                text: format!(
                    "cache: evicted {} least recently used entries ({}) to stay under {}",
                    p.entries,
                    ferry_model::pipeline::format_size(p.bytes),
                    ferry_model::pipeline::format_size(limit)
                ),
            }),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => reporter.event(&Event::Notice {
                job: None,
                text: format!("cache: cannot evict old entries: {e}"),
            }),
            Err(_) => {}
        }
    }
    for error in shared.cache.iter().flat_map(Cache::take_remote_errors) {
        reporter.event(&Event::Notice {
            job: None,
            text: format!("cache: {error}"),
        });
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
    // Outputs may hold secrets, and an untrusted run's folders what it planted: they go
    // whether or not the record could be written.
    let _ = std::fs::remove_dir_all(run_dir.join("outputs"));
    if options.untrusted {
        let _ = std::fs::remove_dir_all(run_dir.join("work"));
        let _ = std::fs::remove_dir_all(run_dir.join("home"));
    }
    if let Some(source) = record.take_error() {
        return Err(RunError::Record {
            dir: run_dir,
            source,
        });
    }
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

/// Each matrix's token, which its fail-fast cancels, and its bound on combinations at once.
type Matrices = HashMap<String, (CancellationToken, Option<Arc<Semaphore>>)>;

/// Adds the matrices of `jobs` that `matrices` does not hold yet.
fn add_matrices(matrices: &mut Matrices, run: &CancellationToken, jobs: &[Job]) {
    for m in jobs.iter().filter_map(|job| job.instance.as_ref()) {
        matrices.entry(m.group.clone()).or_insert_with(|| {
            let limit = m.max_parallel.map(|n| Arc::new(Semaphore::new(n)));
            (run.child_token(), limit)
        });
    }
}

/// The jobs of a matrix made at run time. Refused when two jobs would share folders: the
/// folders of a job are named after its id with what a file name cannot hold replaced
/// (`deploy (prod/eu)` and `deploy (prod_eu)` are both `deploy__prod_eu_`).
fn combination_jobs(
    pipeline: &Pipeline,
    job: &Job,
    matrix: ferry_model::Matrix,
) -> Result<Vec<Job>, String> {
    let jobs = ferry_model::graph::instances(job, matrix);
    let mut folders: HashMap<String, &str> = pipeline
        .jobs
        .iter()
        .map(|j| (sanitize(&j.id), j.id.as_str()))
        .collect();
    for made in &jobs {
        if let Some(other) = folders.insert(sanitize(&made.id), &made.id) {
            return Err(format!(
                "`{}` and `{other}` would share folders (`{}`); make their values differ in more than punctuation",
                made.id,
                sanitize(&made.id)
            ));
        }
    }
    Ok(jobs)
}

/// A job as the run announces it.
fn job_info(job: &Job) -> JobInfo {
    JobInfo {
        id: job.id.clone(),
        name: job.name.clone(),
        needs: job.needs.clone(),
        steps: job.steps.iter().map(|s| s.name.clone()).collect(),
        keys: job.steps.iter().map(|s| s.key().to_string()).collect(),
    }
}

/// Before a step that starts host programs: throws the job's kept directories away when the
/// programs resolve otherwise than in the job's last run (see [`keep`]).
async fn keep_or_discard(
    shared: &Shared,
    step: &Step,
    path: &str,
    kept: &mut keep::Kept,
    workspace: &crate::workspace::Workspace,
    dirs: &[String],
    log: &StepLog,
) {
    if !step.is_run && step.permissions.exec.is_empty() {
        return;
    }
    let why = match caching::host_programs(shared, step, path, workspace.path()).await {
        Ok(programs) => kept.check(&step.key(), programs),
        // Unknown counts as changed, unless it was as unknown last time.
        Err(e) => kept
            .check(
                &step.key(),
                BTreeMap::from([("\0error".to_string(), e.clone())]),
            )
            .map(|_| e),
    };
    let Some(why) = why else {
        return;
    };
    match workspace.discard(dirs) {
        Ok(gone) if gone.is_empty() => {}
        Ok(gone) => {
            let names: Vec<String> = gone.iter().map(|d| format!("`{d}`")).collect();
            log.line(
                Level::Info,
                &format!("[ferry] kept {} thrown away: {why}", names.join(", ")),
            );
        }
        Err(e) => {
            // Nothing may vouch for folders that are still there.
            kept.forget();
            log.line(
                Level::Warn,
                &format!("[ferry] cannot throw the kept directories away ({why}): {e}"),
            )
        }
    }
}

struct Shared {
    /// The pipeline as planned; a matrix known only at run time adds its jobs at the end
    /// when it is resolved, so a job's index never changes.
    pipeline: std::sync::RwLock<Arc<Pipeline>>,
    reporter: Arc<dyn Reporter>,
    masker: Arc<Masker>,
    secrets: BTreeMap<String, String>,
    host_env: Arc<BTreeMap<String, String>>,
    untrusted: bool,
    run_id: Arc<str>,
    run_dir: PathBuf,
    source_dir: PathBuf,
    /// `.ferry/`: workspaces, concurrency locks, the deployment history.
    state_dir: PathBuf,
    /// Where job workspaces are kept between runs.
    work_dir: PathBuf,
    /// Where the private `HOME`s of jobs' host programs are kept, one per job.
    home_dir: PathBuf,
    vars: BTreeMap<String, String>,
    inputs: BTreeMap<String, String>,
    /// Jobs that ended: their status and outputs, for `needs.*` and `jobs.*`.
    finished: std::sync::Mutex<HashMap<String, Ended>>,
    git: BTreeMap<String, String>,
    cache: Option<Cache>,
    reuse: bool,
    /// Every job starts from a fresh workspace (`--clean`).
    clean: bool,
    /// Digests of the host programs steps may run, by absolute path, kept between runs so
    /// that an unchanged program is a `stat`, not a read (see [`caching::step_key`]).
    programs: Arc<Digests>,
    /// Something was added to the cache: the run ends with an eviction.
    saved: AtomicBool,
}

impl Shared {
    /// The pipeline with every job added so far.
    fn pipeline(&self) -> Arc<Pipeline> {
        self.pipeline
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The host's `PATH` for a run: the one it was given, else ferry's own. A run given none
    /// (a fork's, which gets none of the host's variables) still finds the host's programs
    /// where ferry does.
    fn host_path(&self) -> String {
        self.host_env
            .get("PATH")
            .cloned()
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_default()
    }

    /// The secrets `permissions` grants that the run has, by name.
    fn granted_secrets(&self, permissions: &ferry_model::Permissions) -> BTreeMap<String, String> {
        permissions
            .secrets
            .iter()
            .filter_map(|name| self.secrets.get(name).map(|v| (name.clone(), v.clone())))
            .collect()
    }
}

/// How a job ended and the outputs it left.
type Ended = (Status, BTreeMap<String, String>);

impl Shared {
    /// Records how a job ended under the name `needs.*` and `jobs.*` know it by: the
    /// combinations of a matrix together, failed if one failed, their outputs merged.
    fn record_job(&self, job: &Job, status: Status, outputs: BTreeMap<String, String>) {
        let name = job.instance.as_ref().map_or(&job.id, |m| &m.group);
        let mut finished = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        let rank = |s: Status| match s {
            Status::Failed | Status::Interrupted => 3,
            Status::Cancelled => 2,
            Status::Skipped => 1,
            _ => 0,
        };
        let entry = finished
            .entry(name.clone())
            .or_insert((Status::Passed, BTreeMap::new()));
        if rank(status) >= rank(entry.0) {
            entry.0 = status;
        }
        entry.1.extend(outputs);
    }
}

/// Holds a job until it may start: its concurrency group is free, and, behind
/// `approval: required`, someone approved it. `Err` when the job ended without starting.
async fn gate(
    shared: &Shared,
    i: usize,
    cancel: &CancellationToken,
) -> Result<Option<crate::gate::GroupLock>, Status> {
    use crate::gate::{Holder, Pending, acquire_group, await_approval};
    let pipeline = shared.pipeline();
    let job = &pipeline.jobs[i];
    let id: Arc<str> = job.id.as_str().into();
    let notice = |text: String| {
        shared.reporter.event(&Event::Notice {
            job: Some(id.clone()),
            text,
        })
    };
    let end = |status: Status, message: String| {
        finish_unstarted(shared, i, status, &message);
        Err(status)
    };
    let mut lock = None;
    if let Some(c) = &job.concurrency {
        let group = match c
            .group
            .render(&job_scope(shared, job, progress(false, false)))
        {
            Ok(group) => group,
            Err(e) => return end(Status::Failed, format!("`concurrency`: {e}")),
        };
        let me = Holder {
            run: shared.run_id.to_string(),
            job: job.id.clone(),
            since: crate::record::rfc3339(crate::record::now_ms()),
        };
        let waiting = |holder: Option<Holder>| {
            notice(match holder {
                Some(h) => format!(
                    "waits for concurrency group `{group}`, held by job `{}` of run {}",
                    h.job, h.run
                ),
                None => format!("waits for concurrency group `{group}`"),
            })
        };
        match acquire_group(
            &shared.state_dir,
            &group,
            me,
            c.cancel_in_progress,
            cancel,
            waiting,
        )
        .await
        {
            Ok(Some(held)) => lock = Some(held),
            Ok(None) => {
                return end(
                    Status::Cancelled,
                    format!("cancelled while waiting for concurrency group `{group}`"),
                );
            }
            Err(e) => {
                return end(
                    Status::Failed,
                    format!("cannot take concurrency group `{group}`: {e}"),
                );
            }
        }
    }
    if let Some(env) = job.environment.as_ref().filter(|e| e.approval) {
        let run = shared.run_id.to_string();
        let pending = Pending {
            run: run.clone(),
            job: job.id.clone(),
            environment: env.name.clone(),
            since: crate::record::rfc3339(crate::record::now_ms()),
        };
        if let Err(e) = crate::gate::ask(&shared.run_dir, &pending) {
            return end(
                Status::Failed,
                format!("cannot ask for approval to deploy to `{}`: {e}", env.name),
            );
        }
        shared.reporter.event(&Event::Approval {
            job: id.clone(),
            environment: env.name.clone(),
            decision: None,
        });
        notice(format!(
            "waits for approval to deploy to `{}`: run `ferry approve {run} {}` or `ferry reject {run} {}`",
            env.name, job.id, job.id
        ));
        match await_approval(&shared.run_dir, &job.id, cancel).await {
            Ok(Some(decision)) => {
                shared.reporter.event(&Event::Approval {
                    job: id.clone(),
                    environment: env.name.clone(),
                    decision: Some(decision.clone()),
                });
                if !decision.approved {
                    let why = decision
                        .reason
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default();
                    return end(Status::Failed, format!("rejected by {}{why}", decision.by));
                }
                notice(format!("approved by {}", decision.by));
            }
            Ok(None) => {
                return end(
                    Status::Cancelled,
                    "cancelled while waiting for approval".to_string(),
                );
            }
            Err(e) => return end(Status::Failed, format!("approval: {e}")),
        }
    }
    Ok(lock)
}

/// Reports a job that did not start: skipped by its condition or the run, or failed
/// because its condition could not be evaluated.
fn finish_unstarted(shared: &Shared, i: usize, status: Status, message: &str) {
    let pipeline = shared.pipeline();
    let job = &pipeline.jobs[i];
    let id: Arc<str> = job.id.as_str().into();
    skip_steps(shared, job);
    shared.record_job(job, status, BTreeMap::new());
    shared.reporter.event(&Event::JobFinished {
        job: id,
        status,
        duration_ms: 0.0,
        message: Some(message.to_string()),
        outputs: BTreeMap::new(),
    });
}

/// Reports every step of `job` skipped: none of them ran.
fn skip_steps(shared: &Shared, job: &Job) {
    let id: Arc<str> = job.id.as_str().into();
    for step in &job.steps {
        shared.reporter.event(&Event::StepFinished {
            job: id.clone(),
            step: step.key().into(),
            status: Status::Skipped,
            failure: None,
            message: None,
            duration_ms: 0.0,
            cached: None,
        });
    }
}

/// What a job's `if:` reads: the pipeline's `env`, `vars`, `inputs`, `git`, `runner`, and
/// the results and outputs of the jobs that ended.
fn job_scope(shared: &Shared, job: &Job, progress: Progress) -> Scope {
    let mut scope = base_scope(shared, job, progress);
    let _ = render_env(&[&shared.pipeline().env], &mut scope);
    scope
}

fn base_scope(shared: &Shared, job: &Job, progress: Progress) -> Scope {
    let mut scope = Scope {
        progress,
        ..Scope::default()
    };
    scope
        .contexts
        .insert("vars", serde_json::json!(shared.vars));
    scope.contexts.insert("git", serde_json::json!(shared.git));
    if let Some(m) = &job.instance {
        let values: serde_json::Map<String, serde_json::Value> = m.values.iter().cloned().collect();
        scope
            .contexts
            .insert("matrix", serde_json::Value::Object(values));
    }
    scope
        .contexts
        .insert("inputs", serde_json::json!(shared.inputs));
    scope.contexts.insert(
        "runner",
        serde_json::json!({"os": std::env::consts::OS, "arch": std::env::consts::ARCH}),
    );
    let finished = shared.finished.lock().unwrap_or_else(|e| e.into_inner());
    for (id, (status, outputs)) in finished.iter() {
        let entry = serde_json::json!({"result": result_name(*status), "outputs": outputs});
        if job.needs.contains(id) {
            scope.set("needs", &[id], entry.clone());
        }
        scope.set("jobs", &[id], entry);
    }
    scope
}

/// How things are going, as the status functions see it.
fn progress(cancelled: bool, failed: bool) -> Progress {
    if cancelled {
        Progress::Cancelled
    } else if failed {
        Progress::Failure
    } else {
        Progress::Success
    }
}

/// Evaluates `env` levels in order, each reading the ones above it, into the scope's `env`.
fn render_env(
    levels: &[&BTreeMap<String, ferry_model::Template>],
    scope: &mut Scope,
) -> Result<BTreeMap<String, String>, String> {
    let mut env = BTreeMap::new();
    scope.contexts.insert("env", serde_json::json!(env));
    for level in levels {
        env.extend(ferry_model::expr::render_map(level, scope)?);
        scope.contexts.insert("env", serde_json::json!(env));
    }
    Ok(env)
}

/// A status as expressions name it (`needs.build.result == 'success'`), as in GitHub
/// Actions.
fn result_name(status: Status) -> &'static str {
    match status {
        Status::Passed => "success",
        Status::Failed | Status::Interrupted => "failure",
        Status::Cancelled => "cancelled",
        Status::Skipped => "skipped",
        Status::Running => "running",
    }
}

async fn run_job<R: StepRunner>(
    shared: &Shared,
    runner: Arc<R>,
    job_index: usize,
    cancel: CancellationToken,
) -> Status {
    let started = Instant::now();
    let pipeline = shared.pipeline();
    let job = &pipeline.jobs[job_index];
    let job_id: Arc<str> = job.id.as_str().into();
    shared.reporter.event(&Event::JobStarted {
        job: job_id.clone(),
    });
    let finish = |status: Status, outputs: BTreeMap<String, String>, message: Option<String>| {
        shared.record_job(job, status, outputs.clone());
        shared.reporter.event(&Event::JobFinished {
            job: job_id.clone(),
            status,
            duration_ms: millis(started.elapsed()),
            message,
            outputs,
        });
        status
    };
    let outputs_dir = shared.run_dir.join("outputs").join(sanitize(&job.id));
    let (src, root, name, keep, clean) = (
        shared.source_dir.clone(),
        shared.work_dir.clone(),
        sanitize(&job.id),
        job.keep.clone(),
        shared.clean,
    );
    let timed = span(Phase::Workspace);
    let prepared = tokio::task::spawn_blocking(move || {
        let (workspace, _) =
            crate::workspace::Workspace::prepare(&src, &root, &name, &keep, clean)?;
        std::fs::create_dir_all(&outputs_dir)?;
        Ok::<_, std::io::Error>((workspace, outputs_dir))
    })
    .await
    .map_err(std::io::Error::other)
    .and_then(|r| r);
    drop(timed);
    let (workspace_guard, outputs_dir) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            report_setup_failure(shared, job, &format!("cannot prepare the workspace: {e}"));
            return finish(Status::Failed, BTreeMap::new(), None);
        }
    };
    let workspace = workspace_guard.path().to_path_buf();
    let job_deadline = job.timeout.map(|t| started + t);
    let mut scope = JobScope {
        steps: serde_json::Map::new(),
        git: shared.git.clone(),
        hash_files: {
            let workspace = workspace.clone();
            Arc::new(move |globs: &[String]| crate::workspace::hash_files(&workspace, globs))
        },
    };
    // Dependency caches to save when the job passes: the job's own, then its steps'.
    let mut to_save: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(dc) = &job.cache {
        let keys = {
            let mut view = scope.scope_for_job(shared, job, progress(false, false));
            render_env(&[&shared.pipeline().env, &job.env], &mut view)
                .and_then(|_| cache_keys(dc, &view))
        };
        let restored = match keys {
            Ok(keys) => restore_dependency_cache(shared, dc, keys, &workspace).await,
            Err(e) => Err(e),
        };
        match restored {
            Ok((said, save)) => {
                shared.reporter.event(&Event::Notice {
                    job: Some(job_id.clone()),
                    text: said,
                });
                to_save.extend(save);
            }
            Err(e) => {
                report_setup_failure(shared, job, &format!("`cache`: {e}"));
                return finish(Status::Failed, BTreeMap::new(), None);
            }
        }
    }
    if !job.artifacts.is_empty() {
        let _t = span(Phase::Artifacts);
        let (state_dir, run_dir, ws, wanted) = (
            shared.state_dir.clone(),
            shared.run_dir.clone(),
            workspace.clone(),
            job.artifacts.clone(),
        );
        let extracted =
            tokio::task::spawn_blocking(move || download(&state_dir, &run_dir, &ws, &wanted))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
        match extracted {
            Ok(said) => {
                for text in said {
                    shared.reporter.event(&Event::Notice {
                        job: Some(job_id.clone()),
                        text,
                    });
                }
            }
            Err(e) => {
                report_setup_failure(shared, job, &e);
                return finish(Status::Failed, BTreeMap::new(), None);
            }
        }
    }
    // What the job's workspace files hash to, kept beside the workspace between runs.
    let digests: Arc<Digests> = Arc::new(Digests::load(workspace_guard.beside("digests")));
    // The workspace as the sync left it, while nothing has written to it since: the step
    // cache then needs no walk of its own.
    // A service granted `workspace: write` may change it at any time.
    let services_write = job
        .services
        .iter()
        .any(|s| s.permissions.workspace == ferry_model::Access::Write);
    let mut view = Some(workspace_guard.view())
        .filter(|_| job.cache.is_none() && job.artifacts.is_empty() && !services_write);
    // What a step without `inputs:` depends on: the repository's files as the sync left
    // them, and what the pipeline declares is put in the workspace (artifacts, dependency
    // caches, earlier steps' `outputs.files`); not whatever else an earlier step left.
    let mut job_env = job_env::JobEnv::default();
    let mut defaults = caching::DefaultInputs {
        source: workspace_guard.view(),
        declared: job
            .artifacts
            .iter()
            .map(|a| a.path.clone())
            .chain(job.cache.iter().flat_map(|c| c.paths.iter().cloned()))
            .collect(),
    };
    // What the kept directories were built with, checked before each step that starts a
    // program.
    let mut kept = (!job.keep.is_empty()).then(|| keep::Kept::take(workspace_guard.beside("kept")));
    // What the job's services are, for the keys of its cached steps: a test step that passed
    // against one database is not passed against another.
    let mut services_key = String::new();
    let services = match job.services.is_empty() {
        true => None,
        false => {
            let starting = start_services(shared, &runner, job_index, &scope, &workspace, &cancel);
            // The job's time limit holds while its services start, as while its steps run;
            // services half started are stopped as the future is dropped.
            let outcome = match job_deadline {
                Some(end) => tokio::time::timeout_at(end.into(), starting)
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "the job's `timeout-minutes` ran out while its services started (after {:.1}s)",
                            started.elapsed().as_secs_f64()
                        ))
                    }),
                None => starting.await,
            };
            match outcome {
                Ok((services, key)) => {
                    services_key = key;
                    Some(services)
                }
                // Stopped while its services started: cancelled, as its steps would be.
                Err(_) if cancel.is_cancelled() => {
                    skip_steps(shared, job);
                    return finish(
                        Status::Cancelled,
                        BTreeMap::new(),
                        Some("cancelled while its services started".into()),
                    );
                }
                Err(message) => {
                    report_setup_failure(shared, job, &message);
                    return finish(Status::Failed, BTreeMap::new(), None);
                }
            }
        }
    };
    let mut failed = false;
    let mut cancelled = false;
    let mut deploys: Vec<DeployCall> = Vec::new();
    for (index, step) in job.steps.iter().enumerate() {
        if let Some(earlier) = index.checked_sub(1).and_then(|i| job.steps.get(i)) {
            defaults.declared.extend(caching::stored_files(earlier));
        }
        let key: Arc<str> = step.key().into();
        let job_cancelled = cancel.is_cancelled();
        let progress = progress(job_cancelled, failed);
        let skip = |message: Option<String>, scope: &mut JobScope| {
            scope.record_step(step, "skipped", &BTreeMap::new());
            shared.reporter.event(&Event::StepFinished {
                job: job_id.clone(),
                step: key.clone(),
                status: Status::Skipped,
                failure: None,
                message,
                duration_ms: 0.0,
                cached: None,
            });
        };
        // After a cancel only cleanup runs: steps whose condition reads `always()` or
        // `cancelled()`, with a token of their own (a second Ctrl-C quits the process).
        let cleanup = step.condition.as_ref().is_some_and(|c| c.reads_status);
        if job_cancelled {
            cancelled |= !failed;
            if !cleanup {
                skip(None, &mut scope);
                continue;
            }
        }
        let step_cancel = match job_cancelled {
            true => CancellationToken::new(),
            false => cancel.clone(),
        };
        let run = match &step.condition {
            None => Ok(!failed),
            Some(condition) => condition
                .test(&scope.scope(shared, job, step, progress))
                .map_err(|e| StepFailure::new(FailureKind::InvalidInput, format!("`if:` {e}"))),
        };
        match (&run, &step.condition) {
            (Ok(false), None) => {
                skip(None, &mut scope);
                continue;
            }
            (Ok(false), Some(c)) => {
                skip(Some(format!("`if: {}` is false", c.text)), &mut scope);
                continue;
            }
            _ => {}
        }
        let step_started = Instant::now();
        // A name that cannot be evaluated is shown as written; its inputs will say why.
        let name = step
            .name_template
            .as_ref()
            .and_then(|t| t.render(&scope.scope(shared, job, step, progress)).ok())
            .map_or_else(|| step.name.clone(), |n| shared.masker.mask(&n));
        shared.reporter.event(&Event::StepStarted {
            job: job_id.clone(),
            step: key.clone(),
            index,
            name,
        });
        // A step whose result may be stored has its log kept as it is shown.
        let identity = match (&shared.cache, step.cache) {
            (None, _) | (_, Some(false)) => None,
            _ => runner
                .identity(step)
                .await
                .filter(|i| step.cache == Some(true) || i.pure),
        };
        let capture = identity.as_ref().map(|_| {
            Arc::new(Capture {
                inner: shared.reporter.clone(),
                lines: Default::default(),
                annotations: Default::default(),
                summary: Default::default(),
            })
        });
        let log = StepLog::new(
            job_id.clone(),
            key.clone(),
            capture
                .clone()
                .map_or_else(|| shared.reporter.clone(), |c| c as Arc<dyn Reporter>),
            shared.masker.clone(),
            step.permissions.log_limit(),
        );
        let output_file = outputs_dir.join(format!("{}.out", sanitize(&key)));
        let path_file = outputs_dir.join(format!("{}.path", sanitize(&key)));
        let env_file = outputs_dir.join(format!("{}.env", sanitize(&key)));
        let summary_file = outputs_dir.join(format!("{}.md", sanitize(&key)));
        let timeout = match (step.timeout, job_deadline) {
            (Some(limit), None) => limit,
            (Some(limit), Some(job_end)) => {
                limit.min(job_end.saturating_duration_since(step_started))
            }
            (None, Some(job_end)) => job_end.saturating_duration_since(step_started),
            (None, None) => DEFAULT_STEP_TIMEOUT,
        }
        .min(MAX_STEP_TIME);
        let prepared = run.and_then(|_| prepare_step(shared, job, step, &scope, progress));
        // The step's dependency cache is restored before it runs.
        let prepared = match (prepared, &step.dependency_cache) {
            (Ok(p), Some(dc)) => {
                let keys = cache_keys(dc, &scope.scope(shared, job, step, progress));
                let restored = match keys {
                    Ok(keys) => restore_dependency_cache(shared, dc, keys, &workspace).await,
                    Err(e) => Err(e),
                };
                match restored {
                    Ok((said, save)) => {
                        log.line(Level::Info, &format!("[ferry] {said}"));
                        to_save.extend(save);
                        Ok(p)
                    }
                    Err(e) => Err(StepFailure::new(
                        FailureKind::InvalidInput,
                        format!("`cache`: {e}"),
                    )),
                }
            }
            (prepared, _) => prepared,
        };
        let mut deploy_call = None;
        let mut cache_key = None;
        let mut cached = None;
        let mut outcome = match prepared {
            Err(failure) => StepOutcome {
                result: Some(failure),
                outputs: BTreeMap::new(),
            },
            Ok((inputs, env)) => {
                // What earlier steps added to the job's environment and PATH; the PATH is
                // given apart, so a pipeline's `env: PATH` is where programs are found.
                let mut env = job_env.env(env);
                let base = env.remove("PATH").unwrap_or_else(|| shared.host_path());
                let path = job_env.path(&base);
                let mut hit = None;
                if step.dependency_cache.is_some() {
                    view = None;
                }
                if let (Some(identity), Some(cache)) = (&identity, &shared.cache) {
                    let files = step_files(step, identity);
                    match step_key(
                        shared,
                        step,
                        identity,
                        (&inputs, &env, &path, &services_key),
                        &workspace,
                        (files, view.clone(), &defaults),
                        &digests,
                    )
                    .await
                    {
                        Ok(k) => {
                            if shared.reuse {
                                hit = reuse(cache, &k, &workspace, &log).await;
                            }
                            cache_key = Some(k);
                        }
                        Err(e) => log.line(
                            Level::Warn,
                            &format!("[ferry] not cached: cannot hash what the step reads: {e}"),
                        ),
                    }
                }
                match hit {
                    Some(result) => {
                        if !result.files.entries.is_empty() {
                            view = None;
                        }
                        for (level, text) in &result.log {
                            log.line(*level, text);
                        }
                        for annotation in &result.annotations {
                            log.annotate(annotation.clone());
                        }
                        if let Some(summary) = &result.summary {
                            log.summary(summary, false);
                        }
                        cached = Some(Cached {
                            run: result.run,
                            saved_ms: result.duration_ms,
                        });
                        StepOutcome {
                            result: None,
                            outputs: result.outputs,
                        }
                    }
                    None => {
                        if may_write(step) {
                            view = None;
                        }
                        if let Some(kept) = &mut kept {
                            keep_or_discard(
                                shared,
                                step,
                                &path,
                                kept,
                                &workspace_guard,
                                &job.keep,
                                &log,
                            )
                            .await;
                        }
                        let secrets = granted(&shared.secrets, &step.permissions.secrets);
                        if is_deploy(step) && job.environment.is_some() {
                            deploy_call = Some(DeployCall {
                                index,
                                inputs: inputs.clone(),
                                env: env.clone(),
                                path: path.clone(),
                                secrets: BTreeMap::clone(&secrets),
                                outputs: BTreeMap::new(),
                                passed: false,
                                rollback: None,
                            });
                        }
                        let request = StepRequest {
                            run_id: shared.run_id.clone(),
                            pipeline: pipeline.clone(),
                            job_index,
                            step_index: index,
                            inputs,
                            env,
                            secrets,
                            host_env: granted(&shared.host_env, &step.permissions.env),
                            path,
                            path_file: path_file.clone(),
                            env_file: env_file.clone(),
                            summary_file: summary_file.clone(),
                            workspace: workspace.clone(),
                            untrusted: shared.untrusted,
                            home: shared.home_dir.join(sanitize(&job.id)),
                            output_file: output_file.clone(),
                            kept_dir: shared
                                .run_dir
                                .join("files")
                                .join(sanitize(&job.id))
                                .join(sanitize(&key)),
                            timeout,
                            log: log.clone(),
                            cancel: step_cancel.clone(),
                            services: services.clone(),
                        };
                        let backstop = tokio::time::Instant::now() + timeout + DEADLINE_GRACE;
                        let _t = span(Phase::Steps);
                        tokio::select! {
                            outcome = runner.run_step(request) => outcome,
                            _ = tokio::time::sleep_until(backstop) => StepOutcome::failed(
                                FailureKind::Timeout,
                                "the step did not stop at its deadline and was abandoned",
                            ),
                            _ = step_cancel.cancelled() => StepOutcome::failed(FailureKind::Internal, "cancelled"),
                        }
                    }
                }
            }
        };
        let mut outputs = std::mem::take(&mut outcome.outputs);
        match read_output_file(&output_file) {
            Ok(from_file) => outputs.extend(from_file),
            Err(e) => log.line(
                crate::event::Level::Warn,
                &format!("[ferry] ignoring $FERRY_OUTPUT: {e}"),
            ),
        }
        if cached.is_none() {
            match crate::log::read_summary(&summary_file) {
                Ok(read) => log.summary(&read.text, read.more),
                Err(e) => log.line(
                    Level::Warn,
                    &format!("[ferry] ignoring $FERRY_STEP_SUMMARY: {e}"),
                ),
            }
        }
        // A step that changed the job's PATH or environment is not stored: a cached result
        // could not give later steps what it added.
        let mut changed_job = false;
        if outcome.result.is_none() && cached.is_none() {
            let home = shared.home_dir.join(sanitize(&job.id));
            changed_job = job_env.take(step, (&workspace, &home), (&path_file, &env_file), &log);
        }
        if outcome.result.is_none()
            && !step.artifacts.is_empty()
            && let Err(e) = upload(shared, job, step, &workspace, &log).await
        {
            outcome.result = Some(StepFailure::new(FailureKind::Internal, e));
        }
        if outcome.result.is_none()
            && cached.is_none()
            && !changed_job
            && let (Some(k), Some(cache), Some(capture)) = (&cache_key, &shared.cache, &capture)
        {
            save_step(
                shared,
                cache,
                k,
                (job, step),
                &workspace,
                &outputs,
                capture,
                &log,
                step_started.elapsed(),
            )
            .await;
        }
        log.flush();
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
        let step_cancelled = step_cancel.is_cancelled() && outcome.result.is_some();
        let outcome_name = match (&outcome.result, step_cancelled) {
            (None, _) => "success",
            (Some(_), true) => "cancelled",
            (Some(_), false) => "failure",
        };
        scope.record_step(step, outcome_name, &outputs);
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
            cached,
        });
        if let Some(mut call) = deploy_call {
            call.passed = status == Status::Passed;
            call.outputs = outputs;
            deploys.push(call);
        } else if status == Status::Failed && job.environment.is_some() {
            // A check after a deploy failed: put back what served before, newest first.
            view = None;
            for call in deploys
                .iter_mut()
                .rev()
                .filter(|d| d.passed && d.rollback.is_none())
            {
                let what = format!("`{}`", step.name);
                call.rollback = Some(
                    rollback(
                        shared,
                        &runner,
                        job_index,
                        call,
                        &workspace,
                        &outputs_dir,
                        &what,
                    )
                    .await,
                );
            }
        }
        if status == Status::Failed && !step.continue_on_error {
            failed = true;
        }
        if status == Status::Cancelled {
            failed = true;
        }
    }
    let status = if cancelled {
        Status::Cancelled
    } else if failed {
        Status::Failed
    } else {
        Status::Passed
    };
    if let Some(services) = services {
        for text in services.stop().await {
            shared.reporter.event(&Event::Notice {
                job: Some(job_id.clone()),
                text,
            });
        }
    }
    if let Some(cache) = &shared.cache {
        if status == Status::Passed {
            for (key, paths) in to_save {
                let _t = span(Phase::CacheSave);
                let (cache_, ws, k) = (cache.clone(), workspace.clone(), key.clone());
                // A file any step of the job could have written a secret into is checked.
                let secrets: Vec<String> = job
                    .steps
                    .iter()
                    .flat_map(|step| caching::granted_secrets(shared, step))
                    .collect();
                let saved = tokio::task::spawn_blocking(move || {
                    cache_.save_deps(&k, &ws, &paths, &secrets)
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                shared.saved.store(true, Ordering::Relaxed);
                let text = match saved {
                    Ok(size) => format!(
                        "cache `{key}`: saved ({})",
                        ferry_model::pipeline::format_size(size)
                    ),
                    Err(e) => format!("cache `{key}`: cannot save: {e}"),
                };
                shared.reporter.event(&Event::Notice {
                    job: Some(job_id.clone()),
                    text,
                });
            }
        }
        let digests = digests.clone();
        let synced = workspace_guard.view();
        let _ =
            tokio::task::spawn_blocking(move || digests.save(&|rel| synced.contains(rel))).await;
    }
    if let Some(kept) = kept
        && let Err(e) = kept.save()
    {
        shared.reporter.event(&Event::Notice {
            job: Some(job_id.clone()),
            text: format!("`keep`: cannot record the toolchain, so the next run starts cold: {e}"),
        });
    }
    drop(workspace_guard);
    // Outputs are evaluated whatever happened, so a later job can read what was set before
    // a failure; one that cannot be evaluated is left out and said so.
    let mut outputs = BTreeMap::new();
    let mut message = None;
    if !job.outputs.is_empty() {
        let progress = progress(cancel.is_cancelled(), failed);
        let mut view = scope.scope_for_job(shared, job, progress);
        // An env that cannot be evaluated leaves `env.*` unset; outputs reading it say so.
        let _ = render_env(&[&shared.pipeline().env, &job.env], &mut view);
        for (name, template) in &job.outputs {
            match template.render(&view) {
                Ok(value) => {
                    outputs.insert(name.clone(), shared.masker.mask(&value));
                }
                Err(e) => message = Some(format!("output `{name}`: {e}")),
            }
        }
    }
    let status = match (&message, status) {
        (Some(_), Status::Passed) => Status::Failed,
        (_, status) => status,
    };
    let message = match &job.environment {
        Some(env) => {
            let view = scope.scope_for_job(shared, job, progress(cancel.is_cancelled(), failed));
            let url = env.url.as_ref().and_then(|u| u.render(&view).ok());
            let said = record_deployments(shared, job, &env.name, url, &deploys, status, &outputs);
            match (message, said) {
                (Some(m), Some(d)) => Some(format!("{m}; {d}")),
                (m, d) => m.or(d),
            }
        }
        None => message,
    };
    finish(status, outputs, message)
}

/// A call of the built-in `deploy` step in a job with an `environment`, kept so that a
/// failed check later in the job can undo it.
struct DeployCall {
    index: usize,
    inputs: BTreeMap<String, String>,
    env: BTreeMap<String, String>,
    path: String,
    secrets: BTreeMap<String, String>,
    outputs: BTreeMap<String, String>,
    passed: bool,
    /// The version restored, or why it could not be.
    rollback: Option<Result<String, String>>,
}

/// The values of `names` that `values` has.
fn granted(
    values: &BTreeMap<String, String>,
    names: &std::collections::BTreeSet<String>,
) -> BTreeMap<String, String> {
    names
        .iter()
        .filter_map(|name| values.get(name).map(|v| (name.clone(), v.clone())))
        .collect()
}

fn is_deploy(step: &Step) -> bool {
    matches!(&step.uses, ferry_model::Uses::Builtin(name) if name == "deploy")
}

/// Runs a deploy step again with `rollback: <previous>`. It runs even when the run was
/// cancelled: leaving a release that failed its checks in place is the worse outcome.
async fn rollback<R: StepRunner>(
    shared: &Shared,
    runner: &Arc<R>,
    job_index: usize,
    call: &DeployCall,
    workspace: &Path,
    outputs_dir: &Path,
    cause: &str,
) -> Result<String, String> {
    let pipeline = shared.pipeline();
    let job = &pipeline.jobs[job_index];
    let step = &job.steps[call.index];
    let environment = job.environment.as_ref().map_or("", |e| e.name.as_str());
    let job_id: Arc<str> = job.id.as_str().into();
    let Some(previous) = call.outputs.get("previous").filter(|p| !p.is_empty()) else {
        let why = "there is no earlier release to roll back to".to_string();
        shared.reporter.event(&Event::Notice {
            job: Some(job_id),
            text: format!("{cause} failed and `{environment}` keeps the new release: {why}"),
        });
        return Err(why);
    };
    shared.reporter.event(&Event::Notice {
        job: Some(job_id.clone()),
        text: format!("{cause} failed: rolling `{environment}` back to {previous}"),
    });
    let key: Arc<str> = format!("{}.rollback", step.key()).into();
    let log = StepLog::new(
        job_id.clone(),
        key.clone(),
        shared.reporter.clone(),
        shared.masker.clone(),
        step.permissions.log_limit(),
    );
    let mut inputs = call.inputs.clone();
    inputs.insert("rollback".into(), previous.clone());
    let request = StepRequest {
        run_id: shared.run_id.clone(),
        pipeline: pipeline.clone(),
        job_index,
        step_index: call.index,
        inputs,
        env: call.env.clone(),
        secrets: call.secrets.clone(),
        host_env: granted(&shared.host_env, &step.permissions.env),
        workspace: workspace.to_path_buf(),
        untrusted: shared.untrusted,
        home: shared.home_dir.join(sanitize(&job.id)),
        output_file: outputs_dir.join(format!("{}.out", sanitize(&key))),
        // A rollback puts the old release back; what it adds to the job goes nowhere.
        path: call.path.clone(),
        path_file: outputs_dir.join(format!("{}.path", sanitize(&key))),
        env_file: outputs_dir.join(format!("{}.env", sanitize(&key))),
        summary_file: outputs_dir.join(format!("{}.md", sanitize(&key))),
        kept_dir: shared
            .run_dir
            .join("files")
            .join(sanitize(&job.id))
            .join(sanitize(&key)),
        timeout: step
            .timeout
            .unwrap_or(DEFAULT_STEP_TIMEOUT)
            .min(MAX_STEP_TIME),
        log: log.clone(),
        cancel: CancellationToken::new(),
        services: None,
    };
    let outcome = runner.run_step(request).await;
    log.flush();
    let result = match outcome.result {
        None => Ok(previous.clone()),
        Some(f) => Err(log.mask(&f.message)),
    };
    shared.reporter.event(&Event::Notice {
        job: Some(job_id),
        text: match &result {
            Ok(v) => format!("rolled `{environment}` back to {v}"),
            Err(e) => format!("the rollback of `{environment}` failed: {e}"),
        },
    });
    result
}

/// Appends what a job did to its environment to the deployment history; returns what the
/// job's summary should say about it.
fn record_deployments(
    shared: &Shared,
    job: &Job,
    environment: &str,
    url: Option<String>,
    deploys: &[DeployCall],
    status: Status,
    job_outputs: &BTreeMap<String, String>,
) -> Option<String> {
    use crate::deployments::{Deployment, Outcome, append};
    let entry = |outcome: Outcome, version: String, call: Option<&DeployCall>| Deployment {
        environment: environment.to_string(),
        outcome,
        version,
        digest: call
            .and_then(|c| c.outputs.get("digest"))
            .filter(|d| !d.is_empty())
            .cloned(),
        target: call.and_then(|c| c.outputs.get("target")).cloned(),
        url: url.clone(),
        at: crate::record::rfc3339(crate::record::now_ms()),
        run: shared.run_id.to_string(),
        job: job.id.clone(),
        step: call.map(|c| job.steps[c.index].key()),
        inputs: call
            .map(|c| {
                c.inputs
                    .iter()
                    .filter(|(k, _)| *k != "rollback")
                    .map(|(k, v)| (k.clone(), shared.masker.mask(v)))
                    .collect()
            })
            .unwrap_or_default(),
        message: None,
    };
    let at = url
        .as_deref()
        .map(|u| format!(" ({u})"))
        .unwrap_or_default();
    let mut entries = Vec::new();
    let mut said = None;
    for call in deploys {
        let version = call
            .outputs
            .get("version")
            .or_else(|| call.inputs.get("version"))
            .cloned()
            .unwrap_or_default();
        match (&call.rollback, call.passed) {
            (_, false) => entries.push(entry(Outcome::Failed, version, Some(call))),
            (Some(Ok(restored)), true) => {
                entries.push(entry(Outcome::RolledBack, version, Some(call)));
                entries.push(entry(Outcome::Rollback, restored.clone(), Some(call)));
                said = Some(format!("rolled `{environment}` back to {restored}"));
            }
            (Some(Err(why)), true) => {
                // The new release still serves: the history must say so.
                let mut e = entry(Outcome::Deployed, version, Some(call));
                e.message = Some(format!("a later step failed; not rolled back: {why}"));
                entries.push(e);
                said = Some(format!("`{environment}` was not rolled back: {why}"));
            }
            (None, true) => {
                let action = call.outputs.get("action").map(String::as_str);
                let (outcome, verb) = match action {
                    Some("rollback") => (Outcome::Rollback, "restored"),
                    _ => (Outcome::Deployed, "deployed"),
                };
                if status == Status::Passed {
                    said = Some(format!("{verb} {version} to `{environment}`{at}"));
                }
                entries.push(entry(outcome, version, Some(call)));
            }
        }
    }
    if deploys.is_empty() && matches!(status, Status::Passed | Status::Failed) {
        // A job that deploys its own way (`run: ./deploy.sh`): the job's `version` output,
        // or the commit.
        let version = job_outputs
            .get("version")
            .or_else(|| shared.git.get("short-sha"))
            .cloned()
            .unwrap_or_else(|| shared.run_id.to_string());
        let outcome = if status == Status::Passed {
            said = Some(format!("deployed {version} to `{environment}`{at}"));
            Outcome::Deployed
        } else {
            Outcome::Failed
        };
        entries.push(entry(outcome, version, None));
    }
    for e in entries {
        if let Err(err) = append(&shared.state_dir, &e) {
            shared.reporter.event(&Event::Notice {
                job: Some(job.id.as_str().into()),
                text: format!("cannot write the deployment history: {err}"),
            });
        }
    }
    said
}

/// Starts the job's services, or says which did not start and what its log ended with.
async fn start_services<R: StepRunner>(
    shared: &Shared,
    runner: &Arc<R>,
    job_index: usize,
    scope: &JobScope,
    workspace: &Path,
    cancel: &CancellationToken,
) -> Result<(Arc<dyn services::JobServices>, String), String> {
    let pipeline = shared.pipeline();
    let job = &pipeline.jobs[job_index];
    let dir = shared.run_dir.join("services").join(sanitize(&job.id));
    let started = services::prepare(shared, job, scope, &dir)?;
    let key = services::key(shared, &started);
    let path = shared.host_path();
    let request = services::ServicesRequest {
        run_id: shared.run_id.clone(),
        pipeline: pipeline.clone(),
        job_index,
        services: started,
        workspace: workspace.to_path_buf(),
        scratch: dir.join("home"),
        dir: dir.clone(),
        path,
        untrusted: shared.untrusted,
        cancel: cancel.clone(),
    };
    let names: Vec<String> = job.services.iter().map(|s| s.name.clone()).collect();
    let started = runner.start_services(request).await;
    started.map(|services| (services, key)).map_err(|message| {
        // The runner names the service that failed first in its message.
        let failed = names
            .iter()
            .find(|name| message.starts_with(&format!("service `{name}`")));
        match failed.map(|name| (name, services::tail(&dir, name))) {
            Some((name, tail)) if !tail.trim().is_empty() => {
                format!("{message}\nthe last lines of service `{name}`'s log:\n{tail}")
            }
            _ => message,
        }
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
            cached: None,
        });
    }
}

/// What a job's steps have done so far, for their expressions.
struct JobScope {
    /// `steps.<id>`: `outputs`, `outcome` and `conclusion` of the steps with an id.
    steps: serde_json::Map<String, serde_json::Value>,
    git: BTreeMap<String, String>,
    hash_files: ferry_model::expr::HashFiles,
}

impl JobScope {
    fn record_step(&mut self, step: &Step, outcome: &str, outputs: &BTreeMap<String, String>) {
        let Some(id) = &step.id else {
            return;
        };
        // `conclusion` is the outcome after `continue-on-error`, as in GitHub Actions.
        let conclusion = match outcome {
            "failure" if step.continue_on_error => "success",
            other => other,
        };
        self.steps.insert(
            id.clone(),
            serde_json::json!({"outputs": outputs, "outcome": outcome, "conclusion": conclusion}),
        );
    }

    /// The values a step's expressions read. `secrets` holds only what the step is granted.
    fn scope(&self, shared: &Shared, job: &Job, step: &Step, progress: Progress) -> Scope {
        let mut scope = self.scope_for_job(shared, job, progress);
        let secrets = shared.granted_secrets(&step.permissions);
        scope.contexts.insert("secrets", serde_json::json!(secrets));
        scope
    }

    fn scope_for_job(&self, shared: &Shared, job: &Job, progress: Progress) -> Scope {
        let mut scope = base_scope(shared, job, progress);
        scope
            .contexts
            .insert("steps", serde_json::Value::Object(self.steps.clone()));
        scope.contexts.insert("git", serde_json::json!(self.git));
        scope.hash_files = Some(self.hash_files.clone());
        scope
    }
}

type Prepared = (BTreeMap<String, String>, BTreeMap<String, String>);

/// Evaluates a step's env and inputs; an expression without a value fails the step.
fn prepare_step(
    shared: &Shared,
    job: &Job,
    step: &Step,
    job_scope: &JobScope,
    progress: Progress,
) -> Result<Prepared, StepFailure> {
    let bad = |e: String| StepFailure::new(FailureKind::InvalidInput, e);
    let pipeline = shared.pipeline();
    let levels = [&pipeline.env, &job.env, &step.env];
    // Most steps hold no expression: literals need no evaluation context.
    let literal = levels
        .iter()
        .chain([&&step.with])
        .all(|m| m.values().all(|t| t.as_literal().is_some()));
    let mut scope = match literal {
        true => Scope::default(),
        false => job_scope.scope(shared, job, step, progress),
    };
    let env = render_env(&levels, &mut scope).map_err(bad)?;
    let inputs = ferry_model::expr::render_map(&step.with, &scope).map_err(bad)?;
    Ok((inputs, env))
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

pub(crate) fn parse_outputs(text: &str) -> Result<BTreeMap<String, String>, String> {
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
