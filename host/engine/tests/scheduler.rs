//! The scheduler with a fake runner: no WebAssembly, milliseconds per test.
//!
//! Nothing here sleeps to order things. A step that must still be running when something
//! else happens blocks until the test (or another step) says so, and the test waits for
//! the step to have started or a job to have ended.

use ferry_engine::event::{Event, FailureKind, Level, Reporter, Status};
use ferry_engine::{
    CancellationToken, RunOptions, RunResult, StepOutcome, StepRequest, StepRunner,
};
use ferry_model::{Plan, Source};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long any wait may take before the test fails instead of hanging: a safety net for a
/// broken scheduler, never what orders the test.
const PATIENCE: Duration = Duration::from_secs(60);

/// A step as the runner saw it: `job/step`, inputs, env.
type Seen = (String, BTreeMap<String, String>, BTreeMap<String, String>);

#[derive(Default)]
struct State {
    /// Steps in the order they started.
    seen: Vec<Seen>,
    /// Every event, in the order the engine reported them.
    events: Vec<Event>,
    /// Arrivals at each `meet` point.
    arrived: BTreeMap<String, usize>,
    /// Names the test released with [`Board::release`].
    released: BTreeSet<String>,
    /// For each approval request, whether the job was found waiting on disk at the moment
    /// the request was reported.
    asked_on_disk: Vec<bool>,
}

impl State {
    fn started(&self, step: &str) -> bool {
        self.seen.iter().any(|(s, _, _)| s == step)
    }

    fn job_finished(&self, job: &str) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, Event::JobFinished { job: j, .. } if &**j == job))
    }
}

/// The fake runner and the reporter in one, shared with the test so that it can wait for
/// what happened.
///
/// Each step's script is one verb: `pass`, `fail`, `out NAME=VALUE`, `outs NAME=VALUE...`,
/// `echo TEXT`, `write-output NAME=VALUE` (through `$FERRY_OUTPUT`), `secret` (logs the
/// secret), `leak-out NAME` (sets an output to it), `leak-fail` (fails naming it), `block`
/// (runs until cancelled), `hold NAME` (until the test releases NAME), `meet NAME N` (until
/// N steps are at NAME together), `after JOB/STEP;...` (until those steps started) and
/// `wait-job JOB` (until that job ended). A step given `rollback: V` says it restored `V`.
struct Board {
    state: watch::Sender<State>,
    /// The state directory of the run reporting here, once it is known.
    state_dir: std::sync::OnceLock<std::path::PathBuf>,
}

impl Default for Board {
    fn default() -> Self {
        Board {
            state: watch::channel(State::default()).0,
            state_dir: std::sync::OnceLock::new(),
        }
    }
}

impl Reporter for Board {
    fn event(&self, event: &Event) {
        self.state.send_modify(|s| {
            if let (Event::Approval { decision: None, .. }, Some(dir)) =
                (event, self.state_dir.get())
            {
                // Whoever reacts to the request, as this reporter does, must find the job
                // waiting.
                let run = s.events.iter().find_map(|e| match e {
                    Event::RunStarted { run, .. } => Some(run.clone()),
                    _ => None,
                });
                let run_dir = dir.join("runs").join(run.unwrap_or_default());
                s.asked_on_disk
                    .push(!ferry_engine::gate::waiting_in(&run_dir).is_empty());
            }
            s.events.push(event.clone());
        });
    }
}

impl Board {
    /// Waits until `done` holds; `Err` after [`PATIENCE`].
    async fn until(&self, done: impl Fn(&State) -> bool) -> Result<(), String> {
        let mut rx = self.state.subscribe();
        match tokio::time::timeout(PATIENCE, rx.wait_for(|s| done(s))).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(format!("nothing happened within {PATIENCE:?}")),
        }
    }

    /// Waits until the step `job/step` has started.
    async fn started(&self, step: &str) {
        self.until(|s| s.started(step))
            .await
            .unwrap_or_else(|e| panic!("`{step}` never started: {e}"));
    }

    fn release(&self, name: &str) {
        self.state.send_modify(|s| {
            s.released.insert(name.to_string());
        });
    }

    /// Waits until the run reporting here asks for approval, and returns its directory
    /// under the state directory `dir`.
    async fn asked(&self, dir: &std::path::Path) -> std::path::PathBuf {
        self.until(|s| {
            s.events
                .iter()
                .any(|e| matches!(e, Event::Approval { decision: None, .. }))
        })
        .await
        .expect("the job asked for approval");
        let id = self
            .events()
            .into_iter()
            .find_map(|e| match e {
                Event::RunStarted { run, .. } => Some(run),
                _ => None,
            })
            .unwrap();
        dir.join(".ferry/runs").join(id)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.borrow().seen.clone()
    }

    fn events(&self) -> Vec<Event> {
        self.state.borrow().events.clone()
    }
}

impl StepRunner for Board {
    async fn run_step(&self, req: StepRequest) -> StepOutcome {
        let script = match req.inputs.get("rollback") {
            // A deploy asked to restore a version says it did.
            Some(v) => format!("outs version={v} action=rollback"),
            None => req.inputs.get("script").cloned().unwrap_or_default(),
        };
        self.state.send_modify(|s| {
            s.seen.push((
                format!("{}/{}", req.job().id, req.step().key()),
                req.inputs.clone(),
                req.env.clone(),
            ))
        });
        let secret = req.secrets.values().next().cloned().unwrap_or_default();
        let (verb, rest) = script.split_once(' ').unwrap_or((script.as_str(), ""));
        let waited = |result: Result<(), String>| match result {
            Ok(()) => StepOutcome::default(),
            Err(e) => StepOutcome::failed(FailureKind::Failed, format!("`{script}`: {e}")),
        };
        match verb {
            "pass" => StepOutcome::default(),
            "fail" => StepOutcome::failed(FailureKind::Failed, "it failed"),
            // Ends when the engine drops it; a broken cancel fails the step, not the suite.
            "block" => waited(
                tokio::time::timeout(PATIENCE, std::future::pending::<()>())
                    .await
                    .map_err(|_| format!("never cancelled within {PATIENCE:?}")),
            ),
            "hold" => waited(self.until(|s| s.released.contains(rest)).await),
            "meet" => {
                let (name, n) = rest.split_once(' ').unwrap();
                let n: usize = n.parse().unwrap();
                let mut me = 0;
                self.state.send_modify(|s| {
                    let arrived = s.arrived.entry(name.to_string()).or_default();
                    me = *arrived;
                    *arrived += 1;
                });
                // Arrivals meet in groups of `n`: the k-th waits for the rest of its group.
                let group_full = (me / n + 1) * n;
                waited(
                    self.until(|s| s.arrived.get(name).copied().unwrap_or(0) >= group_full)
                        .await,
                )
            }
            "after" => waited(
                self.until(|s| rest.split(';').all(|step| s.started(step)))
                    .await,
            ),
            "wait-job" => waited(self.until(|s| s.job_finished(rest)).await),
            "out" => {
                let (k, v) = rest.split_once('=').unwrap();
                StepOutcome {
                    result: None,
                    outputs: BTreeMap::from([(k.to_string(), v.to_string())]),
                }
            }
            "outs" => StepOutcome {
                result: None,
                outputs: rest
                    .split_whitespace()
                    .filter_map(|p| p.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            "write-output" => {
                std::fs::write(&req.output_file, format!("{rest}\n")).unwrap();
                StepOutcome::default()
            }
            "echo" => {
                req.log.line(Level::Info, rest);
                StepOutcome::default()
            }
            "secret" => {
                req.log.line(Level::Info, &format!("leaking {secret}"));
                StepOutcome::default()
            }
            "leak-out" => StepOutcome {
                result: None,
                outputs: BTreeMap::from([(rest.to_string(), format!("it is {secret}"))]),
            },
            "leak-fail" => {
                StepOutcome::failed(FailureKind::Failed, format!("the server refused {secret}"))
            }
            other => {
                StepOutcome::failed(FailureKind::InvalidInput, format!("unknown script {other}"))
            }
        }
    }
}

struct Run {
    result: RunResult,
    board: Arc<Board>,
    _dir: tempfile::TempDir,
}

impl Run {
    fn job(&self, id: &str) -> Status {
        self.result.summary.jobs[id].status
    }

    fn steps(&self, id: &str) -> Vec<Status> {
        self.result.summary.jobs[id]
            .steps
            .iter()
            .map(|s| s.status)
            .collect()
    }

    fn events(&self) -> Vec<Event> {
        self.board.events()
    }

    /// Where the first event `pred` matches comes in the run's order of events.
    fn at(&self, pred: impl Fn(&Event) -> bool) -> usize {
        self.events().iter().position(pred).expect("event")
    }

    fn started(&self, id: &str) -> usize {
        self.at(|e| matches!(e, Event::JobStarted { job } if &**job == id))
    }

    fn finished(&self, id: &str) -> usize {
        self.at(|e| matches!(e, Event::JobFinished { job, .. } if &**job == id))
    }
}

/// How a test runs a pipeline: defaults, then what it changes.
struct Options {
    parallel: usize,
    fail_fast: bool,
    secrets: BTreeMap<String, String>,
    cancel: CancellationToken,
    git: BTreeMap<String, String>,
    board: Arc<Board>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            parallel: 4,
            fail_fast: true,
            secrets: BTreeMap::new(),
            cancel: CancellationToken::new(),
            git: BTreeMap::new(),
            board: Arc::default(),
        }
    }
}

async fn run(yaml: &str, parallel: usize, fail_fast: bool) -> Run {
    run_with(
        yaml,
        Options {
            parallel,
            fail_fast,
            ..Options::default()
        },
    )
    .await
}

async fn run_with(yaml: &str, o: Options) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let source = Source::new(dir.path().join("ferry.yaml"), yaml);
    let pipeline =
        ferry_model::parse(&source, dir.path(), &["shell"]).unwrap_or_else(|r| panic!("{r}"));
    let plan = Plan::new(pipeline, &[]).unwrap();
    let options = RunOptions {
        slots: None,
        parallel: o.parallel,
        fail_fast: o.fail_fast,
        state_dir: dir.path().join(".ferry"),
        source_dir: dir.path().to_path_buf(),
        secrets: o.secrets,
        host_env: Default::default(),
        cancel: o.cancel,
        git: o.git,
        vars: Default::default(),
        inputs: Default::default(),
        cache: None,
        reuse: false,
        clean: false,
        untrusted: false,
    };
    let result = ferry_engine::run(plan, o.board.clone(), o.board.clone(), options)
        .await
        .unwrap();
    Run {
        result,
        board: o.board,
        _dir: dir,
    }
}

#[tokio::test]
async fn independent_jobs_run_in_parallel_and_dependents_wait() {
    // `a` and `b` can only pass if they run at the same time.
    let yaml = "jobs:\n  a: { steps: [{ run: meet ab 2 }] }\n  b: { steps: [{ run: meet ab 2 }] }\n  c: { needs: [a, b], steps: [{ run: pass }] }\n";
    let run = run(yaml, 4, true).await;
    assert_eq!(
        run.result.status,
        Status::Passed,
        "{:?}",
        run.result.summary
    );
    for dep in ["a", "b"] {
        assert!(
            run.finished(dep) < run.started("c"),
            "c started before {dep} finished"
        );
    }
}

#[tokio::test]
async fn jobs_limit_bounds_parallelism() {
    let board = Arc::new(Board::default());
    let yaml = "jobs:\n  a: { steps: [{ run: hold a }] }\n  b: { steps: [{ run: hold b }] }\n";
    let run = tokio::spawn(run_with(
        yaml,
        Options {
            parallel: 1,
            board: board.clone(),
            ..Options::default()
        },
    ));
    // Whichever job starts first is held; the other must not start until it ends.
    board
        .until(|s| !s.seen.is_empty())
        .await
        .expect("a job started");
    let first = board.seen()[0].0.clone();
    let (first, second) = if first == "a/step-1" {
        ("a", "b")
    } else {
        ("b", "a")
    };
    board.release(first);
    board.started(&format!("{second}/step-1")).await;
    board.release(second);
    let run = run.await.unwrap();
    assert_eq!(run.result.status, Status::Passed);
    assert!(
        run.started(second) > run.finished(first),
        "one job at a time: {:?}",
        run.events()
    );
}

#[tokio::test]
async fn fail_fast_cancels_running_jobs_and_skips_the_rest() {
    // `bad` fails once `slow` is running; `slow` runs until it is cancelled.
    let yaml = "jobs:\n  bad: { steps: [{ run: after slow/step-1 }, { run: fail }, { run: pass }] }\n  slow: { steps: [{ run: block }, { run: pass }] }\n  later: { needs: [slow], steps: [{ run: pass }] }\n";
    let run = run(yaml, 4, true).await;
    assert_eq!(run.result.status, Status::Failed);
    assert_eq!(run.job("bad"), Status::Failed);
    assert_eq!(
        run.steps("bad"),
        [Status::Passed, Status::Failed, Status::Skipped]
    );
    assert_eq!(run.job("slow"), Status::Cancelled);
    assert_eq!(run.steps("slow"), [Status::Cancelled, Status::Skipped]);
    assert_eq!(run.job("later"), Status::Skipped);
}

#[tokio::test]
async fn without_fail_fast_siblings_finish_and_dependents_of_failures_are_skipped() {
    // `good` is still running when `bad` fails, and finishes.
    let yaml = "jobs:\n  bad: { steps: [{ run: fail }] }\n  good: { steps: [{ run: wait-job bad }] }\n  after-bad: { needs: bad, steps: [{ run: pass }] }\n  after-good: { needs: good, steps: [{ run: pass }] }\n";
    let run = run(yaml, 4, false).await;
    assert_eq!(run.result.status, Status::Failed);
    assert_eq!(run.job("good"), Status::Passed);
    assert_eq!(run.job("after-good"), Status::Passed);
    assert_eq!(run.job("after-bad"), Status::Skipped);
}

#[tokio::test]
async fn continue_on_error_lets_the_job_and_run_go_on() {
    let yaml = "jobs:\n  a:\n    steps:\n      - run: fail\n        continue-on-error: true\n      - run: pass\n  b:\n    continue-on-error: true\n    steps: [{ run: fail }]\n  c: { needs: b, steps: [{ run: pass }] }\n";
    let run = run(yaml, 4, true).await;
    assert_eq!(run.steps("a"), [Status::Failed, Status::Passed]);
    assert_eq!(run.job("a"), Status::Passed);
    assert_eq!(run.job("b"), Status::Failed);
    assert_eq!(run.job("c"), Status::Passed);
    assert_eq!(run.result.status, Status::Passed);
}

#[tokio::test]
async fn outputs_flow_to_later_steps_from_both_sources() {
    let yaml = "env:\n  WHO: world\njobs:\n  a:\n    env: { GREETING: \"hello ${{ env.WHO }}\" }\n    steps:\n      - { id: one, run: out version=1.2.3 }\n      - { id: two, run: write-output sha=abc }\n      - run: \"echo ${{ env.GREETING }} ${{ steps.one.outputs.version }} ${{ steps.two.outputs.sha }}\"\n";
    let run = run(yaml, 1, true).await;
    assert_eq!(run.result.status, Status::Passed);
    let seen = run.board.seen();
    assert_eq!(seen[2].1["script"], "echo hello world 1.2.3 abc");
    assert_eq!(seen[2].2["GREETING"], "hello world");
    assert!(run.events().iter().any(
        |e| matches!(e, Event::Output { name, value, .. } if name == "sha" && value == "abc")
    ));
}

#[tokio::test]
async fn a_missing_output_fails_only_that_step_naming_the_expression() {
    let yaml = "jobs:\n  a:\n    steps:\n      - { id: one, run: pass }\n      - run: \"echo ${{ steps.one.outputs.nothing }}\"\n";
    let run = run(yaml, 1, true).await;
    let step = &run.result.summary.jobs["a"].steps[1];
    assert_eq!(step.failure, Some(FailureKind::InvalidInput));
    assert_eq!(
        step.message.as_deref(),
        Some(
            "`${{ steps.one.outputs.nothing }}`: `nothing` is not set (use `has(...)` to test whether a value is there)"
        )
    );
}

/// Every file under `dir`, with its path.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            out.push((path, text));
        }
    }
    out
}

#[tokio::test]
async fn secrets_are_masked_in_logs_and_records() {
    // The secret reaches a log line, a step's name, an output, a job output and a failure
    // message.
    let yaml = "jobs:\n  a:\n    outputs: { leaked: \"${{ steps.out.outputs.value }}\" }\n    permissions: { secrets: [TOKEN] }\n    steps:\n      - run: secret\n      - { id: out, name: \"push with ${{ secrets.TOKEN }}\", run: leak-out value }\n      - run: leak-fail\n";
    let secrets = BTreeMap::from([("TOKEN".to_string(), "tok-123456".to_string())]);
    let run = run_with(
        yaml,
        Options {
            secrets,
            ..Options::default()
        },
    )
    .await;
    let dir = &run.result.dir;
    assert_eq!(
        std::fs::read_to_string(dir.join("logs/a/step-1.log")).unwrap(),
        "leaking ***\n"
    );
    let recorded = files(dir);
    let names: Vec<String> = recorded
        .iter()
        .map(|(p, _)| p.strip_prefix(dir).unwrap().display().to_string())
        .collect();
    for (path, text) in &recorded {
        assert!(
            !text.contains("tok-123456"),
            "{} holds the secret:\n{text}",
            path.display()
        );
    }
    // What was masked is there, masked: the checks above read real records.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("run.json")).unwrap()).unwrap();
    let job = &summary["jobs"]["a"];
    assert_eq!(job["steps"][1]["name"], "push with ***", "{summary}");
    assert_eq!(job["outputs"]["leaked"], "it is ***", "{summary}");
    assert_eq!(
        job["steps"][2]["message"], "the server refused ***",
        "{summary}"
    );
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    // Log lines are kept in `logs/`, not in the events.
    for masked in [
        "\"push with ***\"",
        "\"it is ***\"",
        "\"the server refused ***\"",
    ] {
        assert!(
            events.contains(masked),
            "events.jsonl lacks {masked}:\n{events}"
        );
    }
    assert!(names.iter().any(|n| n == "events.jsonl"), "{names:?}");
    // And what reporters were told, as the terminal and `ferry serve` show it.
    let told = serde_json::to_string(&run.events()).unwrap();
    assert!(!told.contains("tok-123456"), "{told}");
    assert!(told.contains("it is ***"), "{told}");
}

#[tokio::test]
async fn the_run_record_is_complete() {
    let yaml = "name: recorded\njobs:\n  a: { steps: [{ run: echo hi }, { run: fail }] }\n";
    let run = run(yaml, 1, true).await;
    let dir = &run.result.dir;
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "failed");
    assert_eq!(summary["pipeline"], "recorded");
    assert_eq!(summary["jobs"]["a"]["steps"][1]["failure"], "failed");
    assert!(summary["finished_at"].is_string());
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let types: Vec<String> = events
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(types.first().unwrap(), "run-started");
    assert_eq!(types.last().unwrap(), "run-finished");
    assert_eq!(
        std::fs::read_to_string(dir.join("logs/a/step-1.log")).unwrap(),
        "hi\n"
    );
    assert!(
        !dir.join("outputs").exists(),
        "output files are removed after the run"
    );
    let work = dir.parent().unwrap().parent().unwrap().join("work");
    assert!(
        work.join("a").is_dir(),
        "the job's workspace stays for inspection until the job runs again"
    );
}

/// Runs `yaml` and cancels it once `step` has started.
async fn cancelled_once_started(yaml: &str, parallel: usize, step: &str) -> Run {
    let board = Arc::new(Board::default());
    let cancel = CancellationToken::new();
    let options = Options {
        parallel,
        cancel: cancel.clone(),
        board: board.clone(),
        ..Options::default()
    };
    let yaml = yaml.to_string();
    let run = tokio::spawn(async move { run_with(&yaml, options).await });
    board.started(step).await;
    cancel.cancel();
    run.await.unwrap()
}

#[tokio::test]
async fn cancelling_the_run_cancels_running_steps_and_records_it() {
    // `block` ends only when cancelled: that the run ends at all is the cancel's doing.
    let yaml = "jobs:\n  a: { steps: [{ run: block }, { run: pass }] }\n  b: { needs: a, steps: [{ run: pass }] }\n";
    let run = cancelled_once_started(yaml, 2, "a/step-1").await;
    assert_eq!(run.result.status, Status::Cancelled);
    assert_eq!(run.steps("a"), [Status::Cancelled, Status::Skipped]);
    assert_eq!(run.job("b"), Status::Skipped);
    assert_eq!(run.result.summary.status, Status::Cancelled);
}

fn message(run: &Run, job: &str) -> String {
    run.result.summary.jobs[job]
        .message
        .clone()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_deploy_job_runs_only_on_main() {
    let yaml = "jobs:\n  test: { steps: [{ run: pass }] }\n  deploy:\n    needs: test\n    if: git.branch == 'main' && success()\n    steps: [{ run: pass }]\n";
    for (branch, want) in [("main", Status::Passed), ("feature/x", Status::Skipped)] {
        let git = BTreeMap::from([("branch".to_string(), branch.to_string())]);
        let run = run_with(
            yaml,
            Options {
                parallel: 2,
                git,
                ..Options::default()
            },
        )
        .await;
        assert_eq!(run.job("deploy"), want, "on {branch}");
        assert_eq!(run.result.status, Status::Passed);
        if want == Status::Skipped {
            assert_eq!(
                message(&run, "deploy"),
                "`if: git.branch == 'main' && success()` is false"
            );
            assert_eq!(run.steps("deploy"), [Status::Skipped]);
        }
    }
}

#[tokio::test]
async fn cleanup_steps_run_after_a_failure_and_others_are_skipped() {
    let yaml = "jobs:\n  a:\n    steps:\n      - { id: build, run: fail }\n      - run: pass\n      - { if: always(), run: echo cleanup }\n      - { if: failure(), run: \"echo build was ${{ steps.build.outcome }}\" }\n      - { if: \"steps.build.outcome == 'success'\", run: pass }\n";
    let run = run(yaml, 1, true).await;
    assert_eq!(
        run.steps("a"),
        [
            Status::Failed,
            Status::Skipped,
            Status::Passed,
            Status::Passed,
            Status::Skipped
        ]
    );
    assert_eq!(run.job("a"), Status::Failed);
    let seen = run.board.seen();
    assert_eq!(seen.last().unwrap().1["script"], "echo build was failure");
    let skipped = &run.result.summary.jobs["a"].steps[4];
    assert_eq!(
        skipped.message.as_deref(),
        Some("`if: steps.build.outcome == 'success'` is false")
    );
}

#[tokio::test]
async fn a_version_computed_in_one_job_reaches_the_jobs_that_need_it() {
    let yaml = "jobs:\n  build:\n    env: { PREFIX: v }\n    outputs: { version: \"${{ steps.v.outputs.version }}\", tag: \"${{ env.PREFIX }}${{ steps.v.outputs.version }}\" }\n    steps: [{ id: v, run: out version=1.4.2 }]\n  publish:\n    needs: build\n    if: needs.build.result == 'success' && startsWith(needs.build.outputs.tag, 'v1.')\n    steps: [{ run: \"echo ${{ needs.build.outputs.version }} as ${{ needs.build.outputs.tag }}\" }]\n";
    let run = run(yaml, 2, true).await;
    assert_eq!(run.job("publish"), Status::Passed);
    let seen = run.board.seen();
    assert_eq!(seen.last().unwrap().1["script"], "echo 1.4.2 as v1.4.2");
    let outputs = &run.result.summary.jobs["build"].outputs;
    assert_eq!(outputs["version"], "1.4.2");
    assert!(run.events().iter().any(|e| matches!(e, Event::JobFinished { job, outputs, .. } if &**job == "build" && outputs["tag"] == "v1.4.2")));
}

#[tokio::test]
async fn jobs_after_a_failure_are_skipped_unless_they_ask_for_it() {
    // `build` fails once `unrelated` is running, and `unrelated` runs until it is cancelled.
    let yaml = "jobs:\n  build: { steps: [{ run: after unrelated/step-1 }, { run: fail }] }\n  test: { needs: build, steps: [{ run: pass }] }\n  report:\n    needs: test\n    if: failure()\n    steps: [{ run: \"echo ${{ needs.test.result }}\" }]\n  always:\n    needs: build\n    if: always()\n    steps: [{ run: pass }]\n  unrelated: { steps: [{ run: block }] }\n";
    // Fail-fast cancels the unrelated job, but not the jobs that asked to run after failures.
    let run = run(yaml, 4, true).await;
    assert_eq!(run.job("build"), Status::Failed);
    assert_eq!(run.job("test"), Status::Skipped);
    assert_eq!(message(&run, "test"), "a job it needs did not pass");
    assert_eq!(
        run.job("report"),
        Status::Passed,
        "failure() sees the failure two levels up"
    );
    assert_eq!(run.job("always"), Status::Passed);
    assert_eq!(run.job("unrelated"), Status::Cancelled);
    let seen = run.board.seen();
    assert!(seen.iter().any(|s| s.1["script"] == "echo skipped"));
}

#[tokio::test]
async fn a_condition_that_cannot_be_evaluated_fails_its_job_naming_it() {
    let yaml = "jobs:\n  a:\n    if: vars.level > 2\n    steps: [{ run: pass }]\n  b:\n    steps:\n      - { if: \"'on'\", run: pass }\n";
    let run = run(yaml, 2, false).await;
    assert_eq!(run.job("a"), Status::Failed);
    assert_eq!(
        message(&run, "a"),
        "`if:` `${{ vars.level > 2 }}`: `level` is not set (use `has(...)` to test whether a value is there)"
    );
    let step = &run.result.summary.jobs["b"].steps[0];
    assert_eq!(step.failure, Some(FailureKind::InvalidInput));
    assert!(
        step.message
            .as_deref()
            .unwrap()
            .contains("is a condition but gives"),
        "{step:?}"
    );
}

const MATRIX: &str = "jobs:\n  test:\n    matrix:\n      python: [\"3.11\", \"3.12\", \"3.13\"]\n      os: [linux, macos]\n      exclude: [{ python: \"3.11\", os: macos }]\n      include: [{ python: \"3.14\", os: linux }, { os: linux, python: \"3.12\", experimental: true }]\n      max-parallel: 2\n    steps:\n      - run: meet pairs 2\n      - run: \"echo ${{ matrix.os }}-${{ matrix.python }}${{ has(matrix.experimental) ? ' (experimental)' : '' }}\"\n  after:\n    needs: test\n    steps: [{ run: \"echo ${{ needs.test.result }}\" }]\n";

#[tokio::test]
async fn a_matrix_runs_each_combination_as_a_named_job_within_max_parallel() {
    let run = run(MATRIX, 8, true).await;
    let names: Vec<&String> = run.result.summary.jobs.keys().collect();
    assert_eq!(
        names,
        [
            "after",
            "test (3.11, linux)",
            "test (3.12, linux, true)",
            "test (3.12, macos)",
            "test (3.13, linux)",
            "test (3.13, macos)",
            "test (3.14, linux)",
        ]
    );
    assert_eq!(run.result.status, Status::Passed);
    let seen = run.board.seen();
    let echoed: Vec<&str> = seen
        .iter()
        .filter_map(|s| s.1["script"].strip_prefix("echo "))
        .collect();
    assert!(echoed.contains(&"linux-3.12 (experimental)"), "{echoed:?}");
    assert!(echoed.contains(&"macos-3.13"));
    assert_eq!(
        echoed.last(),
        Some(&"success"),
        "`after` waits for every combination"
    );
    // At most two combinations at once (and two did run together: they met).
    let mut running = 0;
    let mut most = 0;
    for e in &run.events() {
        match e {
            Event::JobStarted { job } if job.starts_with("test (") => running += 1,
            Event::JobFinished { job, .. } if job.starts_with("test (") => running -= 1,
            _ => continue,
        }
        most = most.max(running);
    }
    assert_eq!(most, 2);
}

#[tokio::test]
async fn matrix_fail_fast_cancels_the_other_combinations() {
    // `macos` fails once the other combinations run; they run until cancelled, and `lint`
    // runs until `macos` has ended.
    let yaml = "jobs:\n  test:\n    matrix:\n      os: [linux, macos, windows]\n    steps:\n      - run: \"${{ matrix.os == 'macos' ? 'after test (linux)/step-1;test (windows)/step-1' : 'block' }}\"\n      - run: fail\n  lint: { steps: [{ run: wait-job test (macos) }] }\n";
    // Without the run's own fail-fast, only the matrix's cancels, and only its siblings.
    let matrix_only = run(yaml, 8, false).await;
    assert_eq!(matrix_only.job("test (macos)"), Status::Failed);
    assert_eq!(matrix_only.job("test (linux)"), Status::Cancelled);
    assert_eq!(matrix_only.job("test (windows)"), Status::Cancelled);
    assert_eq!(matrix_only.job("lint"), Status::Passed);

    let keep_going = yaml
        .replace(
            "      os: [linux, macos, windows]\n",
            "      os: [linux, macos, windows]\n      fail-fast: false\n",
        )
        .replace("'block'", "'wait-job test (macos)'")
        .replace(
            "      - run: fail\n",
            "      - run: \"${{ matrix.os == 'macos' ? 'fail' : 'pass' }}\"\n",
        );
    let run = run(&keep_going, 8, true).await;
    assert_eq!(run.job("test (macos)"), Status::Failed);
    assert_eq!(run.job("test (linux)"), Status::Passed);
    assert_eq!(run.job("test (windows)"), Status::Passed);
    assert_eq!(run.job("lint"), Status::Passed);
}

#[tokio::test]
async fn a_matrix_from_a_job_s_outputs_is_made_when_that_job_ends() {
    let yaml = r#"
jobs:
  plan:
    outputs:
      matrix: ${{ steps.p.outputs.m }}
      versions: ${{ steps.p.outputs.v }}
    steps:
      - id: p
        run: 'outs m={"os":["linux","../../escape"],"include":[{"os":"linux","extra":true}]} v=["3.12","3.13"]'
  test:
    needs: plan
    name: "tests on ${{ matrix.os }}"
    matrix: ${{ fromJSON(needs.plan.outputs.matrix) }}
    steps: [{ run: "echo ${{ matrix.os }}${{ has(matrix.extra) ? ' extra' : '' }}" }]
  axis:
    needs: plan
    if: matrix.python != '3.13'
    matrix:
      python: ${{ fromJSON(needs.plan.outputs.versions) }}
      os: [linux]
    steps: [{ run: "echo python ${{ matrix.python }}" }]
  after:
    needs: test
    steps: [{ run: "echo after ${{ needs.test.result }}" }]
"#;
    let run = run(yaml, 4, true).await;
    assert_eq!(
        run.result.status,
        Status::Passed,
        "{:?}",
        run.result.summary.jobs
    );
    let names: Vec<&String> = run.result.summary.jobs.keys().collect();
    assert_eq!(
        names,
        [
            "after",
            "axis (3.12, linux)",
            "axis (3.13, linux)",
            "plan",
            "test (../../escape)",
            "test (linux, true)",
        ],
        "the combinations take the place of the job they were made from"
    );
    assert_eq!(
        run.job("axis (3.13, linux)"),
        Status::Skipped,
        "each combination tests `if:`"
    );
    let seen = run.board.seen();
    let echoed: Vec<&str> = seen
        .iter()
        .filter_map(|s| s.1["script"].strip_prefix("echo "))
        .collect();
    assert!(echoed.contains(&"linux extra"), "{echoed:?}");
    assert!(echoed.contains(&"../../escape"), "{echoed:?}");
    assert!(echoed.contains(&"python 3.12"), "{echoed:?}");
    let at = |text: &str| echoed.iter().position(|e| *e == text).unwrap();
    assert!(
        at("after success") > at("linux extra").max(at("../../escape")),
        "`after` waits for every combination: {echoed:?}"
    );
    let expanded: Vec<(String, Vec<String>)> = run
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::MatrixExpanded { job, jobs } => {
                Some((job.to_string(), jobs.into_iter().map(|j| j.name).collect()))
            }
            _ => None,
        })
        .collect();
    assert!(
        expanded.contains(&(
            "test".to_string(),
            vec![
                "tests on linux".to_string(),
                "tests on ../../escape".to_string()
            ]
        )),
        "{expanded:?}"
    );
    // A value from another job names a job, never a path: its folders stay in the run's.
    let outside = run._dir.path().parent().unwrap();
    assert!(!outside.join("escape").exists());
    assert!(!run._dir.path().join("escape").exists());
    assert!(!run._dir.path().join(".ferry/escape").exists());
}

#[tokio::test]
async fn a_matrix_that_cannot_be_made_fails_its_job_and_says_why() {
    // A few bytes of output must not make the host build a billion combinations.
    let axis = (0..1000)
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let huge = format!(r#"{{"a":[{axis}],"b":[{axis}],"c":[{axis}]}}"#);
    let long = format!(r#"{{"v":["{}"]}}"#, "x".repeat(200));
    let cases = [
        ("not JSON", "oops", "not JSON"),
        ("a string", r#""linux""#, "gives a string, not an object"),
        (
            "an empty axis",
            r#"{"os":[]}"#,
            "matrix axis `os` has no values",
        ),
        (
            "an axis that is no list",
            r#"{"os":"linux"}"#,
            "matrix axis `os` must be a list of values, not a string",
        ),
        (
            "a bad axis name",
            r#"{"../x":[1]}"#,
            "`../x` cannot be a matrix axis",
        ),
        (
            "a bad include",
            r#"{"include":[1]}"#,
            "each entry of `include` must be an object",
        ),
        (
            "an unknown exclude",
            r#"{"os":["a"],"exclude":[{"arch":"x"}]}"#,
            "`exclude` names `arch`, which is not an axis",
        ),
        (
            "duplicates",
            r#"{"os":["a","a"]}"#,
            "two combinations are both (a)",
        ),
        ("alike", r#"{"n":[1,"1"]}"#, "two combinations are both (1)"),
        ("nothing", r#"{"include":[]}"#, "it has no combination"),
        (
            "too many",
            r#"{"a":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17],"b":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}"#,
            "it has 272 combinations, more than the 256",
        ),
        (
            "axes that make too many",
            &huge,
            "make more than the 4096 combinations",
        ),
        (
            "names that share folders",
            r#"{"env":["prod/eu","prod_eu"]}"#,
            "`test (prod_eu)` and `test (prod/eu)` would share folders (`test__prod_eu_`)",
        ),
        ("a long name", &long, "more than 128"),
        (
            "a control character",
            r#"{"v":["\u001b[31mred"]}"#,
            "holds a control character",
        ),
    ];
    for (what, json, expected) in cases {
        let yaml = format!(
            "jobs:\n  plan:\n    outputs: {{ m: \"${{{{ steps.p.outputs.m }}}}\" }}\n    steps: [{{ id: p, run: 'out m={}' }}]\n  test:\n    needs: plan\n    matrix: ${{{{ fromJSON(needs.plan.outputs.m) }}}}\n    steps: [{{ run: pass }}]\n  after: {{ needs: test, steps: [{{ run: pass }}] }}\n",
            json.replace('\'', "''")
        );
        let run = run(&yaml, 2, false).await;
        assert_eq!(run.job("test"), Status::Failed, "{what}");
        let said = message(&run, "test");
        assert!(
            said.starts_with("the matrix cannot be made: "),
            "{what}: {said}"
        );
        assert!(said.contains(expected), "{what}: {said}");
        assert_eq!(run.job("after"), Status::Skipped, "{what}");
        assert_eq!(run.result.status, Status::Failed, "{what}");
        assert!(run.board.seen().len() == 1, "{what}: no combination ran");
    }
}

#[tokio::test]
async fn a_matrix_of_include_entries_alone_runs_each_and_if_can_guard_an_empty_one() {
    let yaml = r#"
jobs:
  plan:
    outputs:
      m: ${{ steps.p.outputs.m }}
      any: ${{ steps.p.outputs.any }}
    steps:
      - id: p
        run: 'outs m={"include":[{"p":"a"},{"p":"b"}],"max-parallel":18446744073709551615} any=true'
  each:
    needs: plan
    matrix: ${{ fromJSON(needs.plan.outputs.m) }}
    steps: [{ run: "echo ${{ matrix.p }}" }]
  guarded:
    needs: plan
    if: needs.plan.outputs.any == 'false'
    matrix: ${{ fromJSON(needs.plan.outputs.nothing) }}
    steps: [{ run: fail }]
"#;
    let run = run(yaml, 4, true).await;
    assert_eq!(
        run.result.status,
        Status::Passed,
        "{:?}",
        run.result.summary.jobs
    );
    assert_eq!(run.job("each (a)"), Status::Passed);
    assert_eq!(run.job("each (b)"), Status::Passed);
    assert_eq!(run.job("guarded"), Status::Skipped);
    assert_eq!(
        message(&run, "guarded"),
        "`if: needs.plan.outputs.any == 'false'` is false"
    );
}

#[tokio::test]
async fn names_may_hold_expressions() {
    let yaml = "jobs:\n  test:\n    name: \"tests on ${{ matrix.os }}\"\n    matrix: { os: [linux] }\n    steps:\n      - { id: v, run: out version=2.0 }\n      - { name: \"publish ${{ steps.v.outputs.version }} for ${{ matrix.os }}\", run: pass }\n";
    let run = run(yaml, 1, true).await;
    let started = run.events().into_iter().find_map(|e| match e {
        Event::RunStarted { jobs, .. } => Some(jobs[0].name.clone()),
        _ => None,
    });
    assert_eq!(started.as_deref(), Some("tests on linux"));
    assert_eq!(
        run.result.summary.jobs["test (linux)"].steps[1].name,
        "publish 2.0 for linux"
    );
}

#[tokio::test]
async fn after_a_cancel_only_cleanup_steps_run() {
    let yaml = "jobs:\n  a:\n    steps:\n      - run: block\n      - run: pass\n      - { if: always(), run: echo cleanup }\n      - { if: cancelled(), run: echo was cancelled }\n      - { if: failure(), run: echo failure }\n";
    let run = cancelled_once_started(yaml, 1, "a/step-1").await;
    assert_eq!(run.result.status, Status::Cancelled);
    assert_eq!(run.job("a"), Status::Cancelled);
    assert_eq!(
        run.steps("a"),
        [
            Status::Cancelled,
            Status::Skipped,
            Status::Passed,
            Status::Passed,
            Status::Skipped
        ]
    );
}

/// Runs `yaml` with its state in `dir`, so that several runs share locks and history, and
/// reports to `board`.
async fn run_in(dir: std::path::PathBuf, yaml: &str, board: Arc<Board>) -> RunResult {
    let source = Source::new(dir.join("ferry.yaml"), yaml);
    let pipeline =
        ferry_model::parse(&source, &dir, &["shell", "deploy"]).unwrap_or_else(|r| panic!("{r}"));
    let plan = Plan::new(pipeline, &[]).unwrap();
    let _ = board.state_dir.set(dir.join(".ferry"));
    let options = RunOptions {
        slots: None,
        parallel: 4,
        fail_fast: true,
        state_dir: dir.join(".ferry"),
        source_dir: dir.clone(),
        secrets: BTreeMap::new(),
        host_env: Default::default(),
        cancel: CancellationToken::new(),
        git: BTreeMap::new(),
        vars: Default::default(),
        inputs: Default::default(),
        cache: None,
        reuse: false,
        clean: false,
        untrusted: false,
    };
    ferry_engine::run(plan, board.clone(), board, options)
        .await
        .unwrap()
}

/// Starts `yaml` in `dir` and returns the run, its board and its directory once its job
/// asks for approval.
async fn until_asked(
    dir: &std::path::Path,
    yaml: &'static str,
) -> (
    tokio::task::JoinHandle<RunResult>,
    Arc<Board>,
    std::path::PathBuf,
) {
    let board = Arc::new(Board::default());
    let run = tokio::spawn(run_in(dir.to_path_buf(), yaml, board.clone()));
    let run_dir = board.asked(dir).await;
    (run, board, run_dir)
}

const GATED: &str = "jobs:\n  deploy:\n    environment: { name: production, approval: required }\n    outputs: { version: \"${{ steps.v.outputs.version }}\" }\n    steps: [{ id: v, run: outs version=7 }]\n";

#[tokio::test]
async fn an_approved_job_runs_and_the_record_says_who_approved_it() {
    let dir = tempfile::tempdir().unwrap();
    let (run, board, run_dir) = until_asked(dir.path(), GATED).await;
    // Whoever reacts to the request finds the job waiting: the request is written first.
    assert_eq!(board.state.borrow().asked_on_disk, [true]);
    let pending = ferry_engine::gate::waiting_in(&run_dir);
    assert_eq!(pending[0].environment, "production");
    let decision = ferry_engine::gate::Decision {
        approved: true,
        by: "alice".into(),
        at: "2026-11-22T10:00:00Z".into(),
        reason: Some("release notes read".into()),
    };
    ferry_engine::gate::decide(&run_dir, "deploy", &decision).unwrap();
    let result = run.await.unwrap();
    assert_eq!(result.status, Status::Passed);
    assert_eq!(result.summary.jobs["deploy"].approval, Some(decision));
    assert_eq!(board.seen().len(), 1);
    let history = ferry_engine::deployments::read(&dir.path().join(".ferry")).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].version, "7");
    assert_eq!(
        history[0].outcome,
        ferry_engine::deployments::Outcome::Deployed
    );
}

#[tokio::test]
async fn a_rejected_job_fails_without_running_a_step_and_says_who_rejected_it() {
    let dir = tempfile::tempdir().unwrap();
    let (run, board, run_dir) = until_asked(dir.path(), GATED).await;
    let decision = ferry_engine::gate::Decision {
        approved: false,
        by: "bob".into(),
        at: "2026-11-22T10:00:00Z".into(),
        reason: Some("freeze until Monday".into()),
    };
    ferry_engine::gate::decide(&run_dir, "deploy", &decision).unwrap();
    let result = run.await.unwrap();
    assert_eq!(result.status, Status::Failed);
    let job = &result.summary.jobs["deploy"];
    assert_eq!(job.status, Status::Failed);
    assert_eq!(
        job.message.as_deref(),
        Some("rejected by bob: freeze until Monday")
    );
    assert_eq!(job.approval.as_ref().map(|d| d.approved), Some(false));
    assert!(board.seen().is_empty(), "no step ran");
    assert!(
        ferry_engine::deployments::read(&dir.path().join(".ferry"))
            .unwrap()
            .is_empty()
    );
}

/// The notice a run gave that it waits for a concurrency group.
fn queued_notice(events: &[Event]) -> Option<String> {
    events.iter().find_map(|e| match e {
        Event::Notice { text, .. } if text.contains("waits for concurrency group") => {
            Some(text.clone())
        }
        _ => None,
    })
}

#[tokio::test]
async fn a_second_run_queues_behind_the_group_while_the_first_waits_for_approval() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _, first_dir) = until_asked(dir.path(), GATED).await;
    let board = Arc::new(Board::default());
    let second = tokio::spawn(run_in(dir.path().to_path_buf(), GATED, board.clone()));
    // The second run says it waits behind the group, and does not ask for approval.
    board
        .until(|s| queued_notice(&s.events).is_some())
        .await
        .expect("the second run said it waited");
    assert!(
        !board
            .events()
            .iter()
            .any(|e| matches!(e, Event::Approval { .. })),
        "the second run asked for approval while the first held the group"
    );
    assert!(!second.is_finished());
    let approve = ferry_engine::gate::decision(true, None);
    ferry_engine::gate::decide(&first_dir, "deploy", &approve).unwrap();
    let first_result = first.await.unwrap();
    assert_eq!(first_result.status, Status::Passed);
    // Now the second holds the group and asks.
    let second_dir = board.asked(dir.path()).await;
    assert_ne!(second_dir, first_dir);
    ferry_engine::gate::decide(&second_dir, "deploy", &approve).unwrap();
    let second_result = second.await.unwrap();
    assert_eq!(second_result.status, Status::Passed);
    let queued = queued_notice(&board.events()).unwrap();
    assert!(queued.contains(&first_result.id), "{queued}");
    assert!(queued.contains("environment production"), "{queued}");
}

#[tokio::test]
async fn cancel_in_progress_stops_the_older_run() {
    let dir = tempfile::tempdir().unwrap();
    // The older run's step ends only when cancelled.
    let yaml = "jobs:\n  deploy:\n    concurrency: { group: deploy-main, cancel-in-progress: true }\n    steps: [{ run: block }]\n";
    let older_board = Arc::new(Board::default());
    let older = tokio::spawn(run_in(dir.path().to_path_buf(), yaml, older_board.clone()));
    older_board.started("deploy/step-1").await;
    let newer_yaml = "jobs:\n  deploy:\n    concurrency: { group: deploy-main, cancel-in-progress: true }\n    steps: [{ run: pass }]\n";
    let newer = run_in(dir.path().to_path_buf(), newer_yaml, Arc::default()).await;
    assert_eq!(newer.status, Status::Passed);
    let older = older.await.unwrap();
    assert_eq!(older.status, Status::Cancelled);
    assert!(
        older_board.events().iter().any(
            |e| matches!(e, Event::Notice { text, .. } if text.contains("cancel-in-progress"))
        )
    );
}

#[tokio::test]
async fn a_failed_check_after_a_deploy_rolls_it_back_and_the_history_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "jobs:\n  staging:\n    environment: staging\n    steps:\n      - uses: deploy\n        with: { script: outs version=2 previous=1 }\n      - run: fail\n";
    let board = Arc::new(Board::default());
    let result = run_in(dir.path().to_path_buf(), yaml, board.clone()).await;
    assert_eq!(result.status, Status::Failed);
    let job = &result.summary.jobs["staging"];
    assert_eq!(job.message.as_deref(), Some("rolled `staging` back to 1"));
    let seen = board.seen();
    assert_eq!(seen.len(), 3, "deploy, the check, and the rollback");
    assert_eq!(seen[2].1.get("rollback").map(String::as_str), Some("1"));
    assert_eq!(
        seen[2].1.get("script").map(String::as_str),
        Some("outs version=2 previous=1")
    );
    use ferry_engine::deployments::{Outcome, current, read};
    let history = read(&dir.path().join(".ferry")).unwrap();
    let outcomes: Vec<(Outcome, &str)> = history
        .iter()
        .map(|d| (d.outcome, d.version.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        vec![(Outcome::RolledBack, "2"), (Outcome::Rollback, "1")]
    );
    assert_eq!(current(&history, "staging").unwrap().version, "1");
    assert_eq!(history[0].step.as_deref(), Some("step-1"));
}

#[tokio::test]
async fn without_an_earlier_release_a_failed_check_leaves_the_deploy_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "jobs:\n  staging:\n    environment: staging\n    steps:\n      - uses: deploy\n        with: { script: outs version=1 previous= }\n      - run: fail\n";
    let board = Arc::new(Board::default());
    let result = run_in(dir.path().to_path_buf(), yaml, board.clone()).await;
    assert_eq!(result.status, Status::Failed);
    assert_eq!(board.seen().len(), 2, "no rollback was attempted");
    let message = result.summary.jobs["staging"]
        .message
        .clone()
        .unwrap_or_default();
    assert!(
        message.contains("not rolled back: there is no earlier release"),
        "{message}"
    );
    let history = ferry_engine::deployments::read(&dir.path().join(".ferry")).unwrap();
    assert_eq!(
        history[0].outcome,
        ferry_engine::deployments::Outcome::Deployed
    );
}
