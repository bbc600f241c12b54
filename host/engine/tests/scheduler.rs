//! The scheduler with a fake runner: no WebAssembly, milliseconds per test.

use ferry_engine::event::{Event, FailureKind, Level, Reporter, Status};
use ferry_engine::{
    CancellationToken, RunOptions, RunResult, StepOutcome, StepRequest, StepRunner,
};
use ferry_model::{Plan, Source};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Interprets each step's script: `pass`, `fail`, `sleep MS`, `out NAME=VALUE`,
/// `outs NAME=VALUE...`, `echo TEXT`, `write-output NAME=VALUE` (through `$FERRY_OUTPUT`),
/// `secret`. A step given `rollback: V` says it restored `V`.
#[derive(Default)]
struct Fake {
    seen: Mutex<Vec<Seen>>,
}

/// A step as the runner saw it: `job/step`, inputs, env.
type Seen = (String, BTreeMap<String, String>, BTreeMap<String, String>);

impl StepRunner for Fake {
    async fn run_step(&self, req: StepRequest) -> StepOutcome {
        let script = match req.inputs.get("rollback") {
            // A deploy asked to restore a version says it did.
            Some(v) => format!("outs version={v} action=rollback"),
            None => req.inputs.get("script").cloned().unwrap_or_default(),
        };
        self.seen.lock().unwrap().push((
            format!("{}/{}", req.job().id, req.step().key()),
            req.inputs.clone(),
            req.env.clone(),
        ));
        let (verb, rest) = script.split_once(' ').unwrap_or((script.as_str(), ""));
        match verb {
            "pass" => StepOutcome::default(),
            "fail" => StepOutcome::failed(FailureKind::Failed, "it failed"),
            "sleep" => {
                let ms: u64 = rest.parse().unwrap();
                tokio::time::sleep(Duration::from_millis(ms)).await;
                StepOutcome::default()
            }
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
                req.log.line(
                    Level::Info,
                    &format!(
                        "leaking {}",
                        req.secrets.values().next().cloned().unwrap_or_default()
                    ),
                );
                StepOutcome::default()
            }
            other => {
                StepOutcome::failed(FailureKind::InvalidInput, format!("unknown script {other}"))
            }
        }
    }
}

#[derive(Default)]
struct Collect(Mutex<Vec<(Instant, Event)>>);

impl Reporter for Collect {
    fn event(&self, event: &Event) {
        self.0.lock().unwrap().push((Instant::now(), event.clone()));
    }
}

struct Run {
    result: RunResult,
    events: Vec<(Instant, Event)>,
    fake: Arc<Fake>,
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

    fn at(&self, pred: impl Fn(&Event) -> bool) -> Instant {
        self.events
            .iter()
            .find(|(_, e)| pred(e))
            .map(|(t, _)| *t)
            .expect("event")
    }
}

async fn run(yaml: &str, parallel: usize, fail_fast: bool) -> Run {
    run_opts(
        yaml,
        parallel,
        fail_fast,
        BTreeMap::new(),
        CancellationToken::new(),
    )
    .await
}

async fn run_opts(
    yaml: &str,
    parallel: usize,
    fail_fast: bool,
    secrets: BTreeMap<String, String>,
    cancel: CancellationToken,
) -> Run {
    run_git(yaml, parallel, fail_fast, secrets, cancel, BTreeMap::new()).await
}

async fn run_git(
    yaml: &str,
    parallel: usize,
    fail_fast: bool,
    secrets: BTreeMap<String, String>,
    cancel: CancellationToken,
    git: BTreeMap<String, String>,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let source = Source::new(dir.path().join("ferry.yaml"), yaml);
    let pipeline =
        ferry_model::parse(&source, dir.path(), &["shell"]).unwrap_or_else(|r| panic!("{r}"));
    let plan = Plan::new(pipeline, &[]).unwrap();
    let fake = Arc::new(Fake::default());
    let collect = Arc::new(Collect::default());
    let options = RunOptions {
        slots: None,
        parallel,
        fail_fast,
        state_dir: dir.path().join(".ferry"),
        source_dir: dir.path().to_path_buf(),
        secrets,
        cancel,
        git,
        vars: Default::default(),
        inputs: Default::default(),
        cache: None,
        reuse: false,
    };
    let result = ferry_engine::run(plan, fake.clone(), collect.clone(), options)
        .await
        .unwrap();
    let events = collect.0.lock().unwrap().clone();
    Run {
        result,
        events,
        fake,
        _dir: dir,
    }
}

#[tokio::test]
async fn independent_jobs_run_in_parallel_and_dependents_wait() {
    let yaml = "jobs:\n  a: { steps: [{ run: sleep 200 }] }\n  b: { steps: [{ run: sleep 200 }] }\n  c: { needs: [a, b], steps: [{ run: pass }] }\n";
    let run = run(yaml, 4, true).await;
    assert_eq!(run.result.status, Status::Passed);
    let started = |id: &str| run.at(|e| matches!(e, Event::JobStarted { job } if &**job == id));
    let finished =
        |id: &str| run.at(|e| matches!(e, Event::JobFinished { job, .. } if &**job == id));
    assert!(
        started("b") < finished("a") && started("a") < finished("b"),
        "a and b overlap"
    );
    let c_started = run.at(|e| matches!(e, Event::JobStarted { job } if &**job == "c"));
    for dep in ["a", "b"] {
        let finished = run.at(|e| matches!(e, Event::JobFinished { job, .. } if &**job == dep));
        assert!(finished <= c_started, "c started before {dep} finished");
    }
}

#[tokio::test]
async fn jobs_limit_bounds_parallelism() {
    let yaml =
        "jobs:\n  a: { steps: [{ run: sleep 150 }] }\n  b: { steps: [{ run: sleep 150 }] }\n";
    let run = run(yaml, 1, true).await;
    assert_eq!(run.result.status, Status::Passed);
    let started = |id: &str| run.at(|e| matches!(e, Event::JobStarted { job } if &**job == id));
    let finished =
        |id: &str| run.at(|e| matches!(e, Event::JobFinished { job, .. } if &**job == id));
    assert!(started("b") >= finished("a"), "one job at a time");
}

#[tokio::test]
async fn fail_fast_cancels_running_jobs_and_skips_the_rest() {
    let yaml = "jobs:\n  bad: { steps: [{ run: sleep 50 }, { run: fail }, { run: pass }] }\n  slow: { steps: [{ run: sleep 5000 }, { run: pass }] }\n  later: { needs: [slow], steps: [{ run: pass }] }\n";
    let started = Instant::now();
    let run = run(yaml, 4, true).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "slow was cancelled promptly"
    );
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
    let yaml = "jobs:\n  bad: { steps: [{ run: fail }] }\n  good: { steps: [{ run: sleep 100 }] }\n  after-bad: { needs: bad, steps: [{ run: pass }] }\n  after-good: { needs: good, steps: [{ run: pass }] }\n";
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
    let seen = run.fake.seen.lock().unwrap();
    assert_eq!(seen[2].1["script"], "echo hello world 1.2.3 abc");
    assert_eq!(seen[2].2["GREETING"], "hello world");
    assert!(run.events.iter().any(
        |(_, e)| matches!(e, Event::Output { name, value, .. } if name == "sha" && value == "abc")
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

#[tokio::test]
async fn secrets_are_masked_in_logs_and_records() {
    let yaml =
        "jobs:\n  a:\n    steps:\n      - run: secret\n        permissions: { secrets: [TOKEN] }\n";
    let secrets = BTreeMap::from([("TOKEN".to_string(), "tok-123456".to_string())]);
    let run = run_opts(yaml, 1, true, secrets, CancellationToken::new()).await;
    let log = std::fs::read_to_string(run.result.dir.join("logs/a/step-1.log")).unwrap();
    assert_eq!(log, "leaking ***\n");
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

#[tokio::test]
async fn cancelling_the_run_cancels_running_steps_and_records_it() {
    let yaml = "jobs:\n  a: { steps: [{ run: sleep 10000 }, { run: pass }] }\n  b: { needs: a, steps: [{ run: pass }] }\n";
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let run = run_opts(yaml, 2, true, BTreeMap::new(), cancel).await;
    assert!(started.elapsed() < Duration::from_secs(2));
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
        let run = run_git(
            yaml,
            2,
            true,
            BTreeMap::new(),
            CancellationToken::new(),
            git,
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
    let seen = run.fake.seen.lock().unwrap();
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
    let seen = run.fake.seen.lock().unwrap();
    assert_eq!(seen.last().unwrap().1["script"], "echo 1.4.2 as v1.4.2");
    let outputs = &run.result.summary.jobs["build"].outputs;
    assert_eq!(outputs["version"], "1.4.2");
    assert!(run.events.iter().any(|(_, e)| matches!(e, Event::JobFinished { job, outputs, .. } if &**job == "build" && outputs["tag"] == "v1.4.2")));
}

#[tokio::test]
async fn jobs_after_a_failure_are_skipped_unless_they_ask_for_it() {
    let yaml = "jobs:\n  build: { steps: [{ run: fail }] }\n  test: { needs: build, steps: [{ run: pass }] }\n  report:\n    needs: test\n    if: failure()\n    steps: [{ run: \"echo ${{ needs.test.result }}\" }]\n  always:\n    needs: build\n    if: always()\n    steps: [{ run: pass }]\n  unrelated: { steps: [{ run: sleep 300 }] }\n";
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
    let seen = run.fake.seen.lock().unwrap();
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

const MATRIX: &str = "jobs:\n  test:\n    matrix:\n      python: [\"3.11\", \"3.12\", \"3.13\"]\n      os: [linux, macos]\n      exclude: [{ python: \"3.11\", os: macos }]\n      include: [{ python: \"3.14\", os: linux }, { os: linux, python: \"3.12\", experimental: true }]\n      max-parallel: 2\n    steps:\n      - run: sleep 100\n      - run: \"echo ${{ matrix.os }}-${{ matrix.python }}${{ has(matrix.experimental) ? ' (experimental)' : '' }}\"\n  after:\n    needs: test\n    steps: [{ run: \"echo ${{ needs.test.result }}\" }]\n";

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
    let seen = run.fake.seen.lock().unwrap();
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
    // At most two combinations at once, and two did run together.
    let mut running = 0;
    let mut most = 0;
    for (_, e) in &run.events {
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
    let yaml = "jobs:\n  test:\n    matrix:\n      os: [linux, macos, windows]\n    steps: [{ run: \"${{ matrix.os == 'macos' ? 'fail' : 'sleep 5000' }}\" }]\n  lint: { steps: [{ run: sleep 300 }] }\n";
    // Without the run's own fail-fast, only the matrix's cancels, and only its siblings.
    let run = run(yaml, 8, false).await;
    assert_eq!(run.job("test (macos)"), Status::Failed);
    assert_eq!(run.job("test (linux)"), Status::Cancelled);
    assert_eq!(run.job("test (windows)"), Status::Cancelled);
    assert_eq!(run.job("lint"), Status::Passed);

    let keep_going = yaml
        .replace(
            "      os: [linux, macos, windows]\n",
            "      os: [linux, macos, windows]\n      fail-fast: false\n",
        )
        .replace("sleep 5000", "sleep 50");
    let run = run_opts(
        &keep_going,
        8,
        true,
        BTreeMap::new(),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(run.job("test (macos)"), Status::Failed);
    assert_eq!(run.job("test (linux)"), Status::Passed);
    assert_eq!(run.job("test (windows)"), Status::Passed);
    assert_eq!(run.job("lint"), Status::Passed);
}

#[tokio::test]
async fn names_may_hold_expressions() {
    let yaml = "jobs:\n  test:\n    name: \"tests on ${{ matrix.os }}\"\n    matrix: { os: [linux] }\n    steps:\n      - { id: v, run: out version=2.0 }\n      - { name: \"publish ${{ steps.v.outputs.version }} for ${{ matrix.os }}\", run: pass }\n";
    let run = run(yaml, 1, true).await;
    let started = run.events.iter().find_map(|(_, e)| match e {
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
    let yaml = "jobs:\n  a:\n    steps:\n      - run: sleep 10000\n      - run: pass\n      - { if: always(), run: echo cleanup }\n      - { if: cancelled(), run: echo was cancelled }\n      - { if: failure(), run: echo failure }\n";
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.cancel();
    });
    let run = run_opts(yaml, 1, true, BTreeMap::new(), cancel).await;
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

/// Runs `yaml` with its state in `dir`, so that several runs share locks and history.
async fn run_in(dir: std::path::PathBuf, yaml: &str) -> (RunResult, Vec<Event>, Arc<Fake>) {
    let source = Source::new(dir.join("ferry.yaml"), yaml);
    let pipeline =
        ferry_model::parse(&source, &dir, &["shell", "deploy"]).unwrap_or_else(|r| panic!("{r}"));
    let plan = Plan::new(pipeline, &[]).unwrap();
    let fake = Arc::new(Fake::default());
    let collect = Arc::new(Collect::default());
    let options = RunOptions {
        slots: None,
        parallel: 4,
        fail_fast: true,
        state_dir: dir.join(".ferry"),
        source_dir: dir.clone(),
        secrets: BTreeMap::new(),
        cancel: CancellationToken::new(),
        git: BTreeMap::new(),
        vars: Default::default(),
        inputs: Default::default(),
        cache: None,
        reuse: false,
    };
    let result = ferry_engine::run(plan, fake.clone(), collect.clone(), options)
        .await
        .unwrap();
    let events = collect
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(_, e)| e.clone())
        .collect();
    (result, events, fake)
}

/// The run directories under `dir` whose `job` waits for approval, newest last.
async fn waiting(dir: &std::path::Path, count: usize) -> Vec<std::path::PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut found: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join(".ferry/runs"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| !ferry_engine::gate::waiting_in(p).is_empty())
            .collect();
        found.sort();
        if found.len() >= count {
            return found;
        }
        assert!(Instant::now() < deadline, "no run waits for approval");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const GATED: &str = "jobs:\n  deploy:\n    environment: { name: production, approval: required }\n    outputs: { version: \"${{ steps.v.outputs.version }}\" }\n    steps: [{ id: v, run: outs version=7 }]\n";

#[tokio::test]
async fn an_approved_job_runs_and_the_record_says_who_approved_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = tokio::spawn(run_in(dir.path().to_path_buf(), GATED));
    let run_dir = waiting(dir.path(), 1).await.remove(0);
    let pending = ferry_engine::gate::waiting_in(&run_dir);
    assert_eq!(pending[0].environment, "production");
    let decision = ferry_engine::gate::Decision {
        approved: true,
        by: "alice".into(),
        at: "2026-11-22T10:00:00Z".into(),
        reason: Some("release notes read".into()),
    };
    ferry_engine::gate::decide(&run_dir, "deploy", &decision).unwrap();
    let (result, events, fake) = run.await.unwrap();
    assert_eq!(result.status, Status::Passed);
    assert_eq!(result.summary.jobs["deploy"].approval, Some(decision));
    assert_eq!(fake.seen.lock().unwrap().len(), 1);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Approval { decision: None, .. }))
    );
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
    let run = tokio::spawn(run_in(dir.path().to_path_buf(), GATED));
    let run_dir = waiting(dir.path(), 1).await.remove(0);
    let decision = ferry_engine::gate::Decision {
        approved: false,
        by: "bob".into(),
        at: "2026-11-22T10:00:00Z".into(),
        reason: Some("freeze until Monday".into()),
    };
    ferry_engine::gate::decide(&run_dir, "deploy", &decision).unwrap();
    let (result, _, fake) = run.await.unwrap();
    assert_eq!(result.status, Status::Failed);
    let job = &result.summary.jobs["deploy"];
    assert_eq!(job.status, Status::Failed);
    assert_eq!(
        job.message.as_deref(),
        Some("rejected by bob: freeze until Monday")
    );
    assert_eq!(job.approval.as_ref().map(|d| d.approved), Some(false));
    assert!(fake.seen.lock().unwrap().is_empty(), "no step ran");
    assert!(
        ferry_engine::deployments::read(&dir.path().join(".ferry"))
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_second_run_queues_behind_the_group_while_the_first_waits_for_approval() {
    let dir = tempfile::tempdir().unwrap();
    let first = tokio::spawn(run_in(dir.path().to_path_buf(), GATED));
    let first_dir = waiting(dir.path(), 1).await.remove(0);
    let second = tokio::spawn(run_in(dir.path().to_path_buf(), GATED));
    // The second run is behind the concurrency group, not at the approval gate.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(waiting(dir.path(), 1).await, vec![first_dir.clone()]);
    assert!(!second.is_finished());
    let approve = ferry_engine::gate::decision(true, None);
    ferry_engine::gate::decide(&first_dir, "deploy", &approve).unwrap();
    let (first_result, _, _) = first.await.unwrap();
    assert_eq!(first_result.status, Status::Passed);
    // Now the second holds the group and asks.
    let runs = waiting(dir.path(), 1).await;
    assert_eq!(runs.len(), 1);
    assert_ne!(runs[0], first_dir);
    ferry_engine::gate::decide(&runs[0], "deploy", &approve).unwrap();
    let (second_result, events, _) = second.await.unwrap();
    assert_eq!(second_result.status, Status::Passed);
    let queued = events.iter().find_map(|e| match e {
        Event::Notice { text, .. } if text.contains("waits for concurrency group") => {
            Some(text.clone())
        }
        _ => None,
    });
    let queued = queued.expect("the second run said it waited");
    assert!(queued.contains(&first_result.id), "{queued}");
    assert!(queued.contains("environment production"), "{queued}");
}

#[tokio::test]
async fn cancel_in_progress_stops_the_older_run() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "jobs:\n  deploy:\n    concurrency: { group: deploy-main, cancel-in-progress: true }\n    steps: [{ run: sleep 20000 }]\n";
    let older = tokio::spawn(run_in(dir.path().to_path_buf(), yaml));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let newer_yaml = "jobs:\n  deploy:\n    concurrency: { group: deploy-main, cancel-in-progress: true }\n    steps: [{ run: pass }]\n";
    let started = Instant::now();
    let (newer, _, _) = run_in(dir.path().to_path_buf(), newer_yaml).await;
    assert_eq!(newer.status, Status::Passed);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the newer run did not wait for the older"
    );
    let (older, events, _) = older.await.unwrap();
    assert_eq!(older.status, Status::Cancelled);
    assert!(
        events.iter().any(
            |e| matches!(e, Event::Notice { text, .. } if text.contains("cancel-in-progress"))
        )
    );
}

#[tokio::test]
async fn a_failed_check_after_a_deploy_rolls_it_back_and_the_history_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "jobs:\n  staging:\n    environment: staging\n    steps:\n      - uses: deploy\n        with: { script: outs version=2 previous=1 }\n      - run: fail\n";
    let (result, _, fake) = run_in(dir.path().to_path_buf(), yaml).await;
    assert_eq!(result.status, Status::Failed);
    let job = &result.summary.jobs["staging"];
    assert_eq!(job.message.as_deref(), Some("rolled `staging` back to 1"));
    let seen = fake.seen.lock().unwrap();
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
    let (result, _, fake) = run_in(dir.path().to_path_buf(), yaml).await;
    assert_eq!(result.status, Status::Failed);
    assert_eq!(
        fake.seen.lock().unwrap().len(),
        2,
        "no rollback was attempted"
    );
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
