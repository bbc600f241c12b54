use crate::exit;
use crate::report::{self, Output};
use ferry_compose::plugins::Mode;
use ferry_engine::timings::Phase;
use ferry_engine::{CancellationToken, RunOptions, Status};
use ferry_model::Plan;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Run a pipeline.
///
/// Every program a step starts (the `run:` shell, git, a linter, a test runner) runs in an
/// OS sandbox built from the step's `permissions:`: it sees the workspace, the granted paths
/// and a read-only system, reaches only the granted hosts through ferry's proxy, and dies
/// with its step.
#[derive(clap::Args)]
pub struct Args {
    /// Pipeline file [default: ferry.yaml]
    file: Option<PathBuf>,
    /// Run only this job and the jobs it needs (repeatable)
    #[arg(long = "job", value_name = "ID")]
    jobs: Vec<String>,
    /// Jobs to run at once [default: number of cores]
    #[arg(long = "jobs", short = 'j', value_name = "N")]
    parallel: Option<usize>,
    /// How to show progress
    #[arg(long, value_enum, default_value_t = Output::Auto)]
    output: Output,
    /// Keep running other jobs when one fails
    #[arg(long)]
    no_fail_fast: bool,
    /// A value expressions read as `vars.NAME` (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = assignment)]
    vars: Vec<(String, String)>,
    /// An input expressions read as `inputs.NAME`, as a manual trigger gives (repeatable)
    #[arg(long = "input", value_name = "NAME=VALUE", value_parser = assignment)]
    inputs: Vec<(String, String)>,
    /// Fail unless ferry.lock pins every registry plugin and nothing else (for CI)
    #[arg(long)]
    locked: bool,
    /// Run every step and restore no dependency cache (results are still stored)
    #[arg(long)]
    no_cache: bool,
    /// Start every job from a fresh workspace, throwing away what `keep:` kept
    #[arg(long)]
    clean: bool,
    /// Print where the run spent its time
    #[arg(long)]
    timings: bool,
}

pub fn assignment(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not NAME=VALUE")),
    }
}

pub fn execute(args: Args) -> u8 {
    if let Some(why) = ferry_sandbox::confine::unavailable() {
        eprintln!("warning: programs that steps start run unconfined: {why}");
    }
    if args.timings {
        ferry_engine::timings::enable();
    }
    let parsing = ferry_engine::timings::span(Phase::Parse);
    let mut pipeline = match super::load(args.file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    drop(parsing);
    let mode = if args.locked { Mode::Locked } else { Mode::Run };
    let pinning = ferry_engine::timings::span(Phase::Plugins);
    if let Err(code) = super::pin(&mut pipeline, mode) {
        return code;
    }
    drop(pinning);
    // A pipeline that declares its manual inputs gets them checked and defaulted.
    let given: BTreeMap<String, String> = args.inputs.into_iter().collect();
    let inputs = match &pipeline.on.manual {
        Some(manual) => match manual.inputs(&given) {
            Ok(inputs) => inputs,
            Err(problems) => {
                return super::fail(format!(
                    "{}\nhint: the pipeline's `on.manual.inputs` says what it takes",
                    problems.join("\n")
                ));
            }
        },
        None => given,
    };
    let plan = match Plan::new(pipeline, &args.jobs) {
        Ok(plan) => plan,
        Err(e) => {
            let hint = e.hint().map(|h| format!("\nhint: {h}")).unwrap_or_default();
            return super::fail(format!("{e}{hint}"));
        }
    };
    run_plan(
        plan,
        Settings {
            output: args.output,
            parallel: args.parallel,
            fail_fast: !args.no_fail_fast,
            vars: args.vars.into_iter().collect(),
            inputs,
            reuse: !args.no_cache,
            clean: args.clean,
            timings: args.timings,
        },
    )
}

/// How to run a plan, from the command line.
pub struct Settings {
    pub output: Output,
    pub parallel: Option<usize>,
    pub fail_fast: bool,
    pub vars: BTreeMap<String, String>,
    pub inputs: BTreeMap<String, String>,
    /// Use cached results (`--no-cache` turns it off).
    pub reuse: bool,
    /// Start every job from a fresh workspace (`--clean`).
    pub clean: bool,
    /// Print where the run spent its time.
    pub timings: bool,
}

/// Runs a plan the way `ferry run` does and returns the exit code.
pub fn run_plan(plan: Plan, settings: Settings) -> u8 {
    let state_dir = super::state_dir(&plan.pipeline);
    let kept_in = state_dir.clone();
    for id in ferry_engine::record::recover_interrupted(&state_dir) {
        eprintln!("note: run {id} was left unfinished by a host that stopped; marked interrupted");
    }
    let host_env = ferry_compose::host_env();
    let (secrets, warnings) = ferry_compose::secrets(&plan, &host_env);
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    let parallel = settings
        .parallel
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return super::fail(format!("cannot start the runtime: {e}")),
    };
    let sandbox = match super::sandbox(parallel) {
        Ok(s) => Arc::new(s),
        Err(code) => return code,
    };
    let cache = match ferry_compose::cache(&state_dir) {
        Ok(cache) => cache,
        Err(e) => return super::fail(e),
    };
    // Refuse a misconfigured step before anything runs.
    let preflight = ferry_engine::timings::span(Phase::Preflight);
    if let Err(code) = runtime.block_on(super::check_plugins(&sandbox, &plan.pipeline)) {
        return code;
    }
    drop(preflight);
    let reporter = report::reporter(settings.output);
    let cancel = CancellationToken::new();
    let options = RunOptions {
        slots: None,
        parallel,
        fail_fast: settings.fail_fast,
        source_dir: ferry_engine::workspace::repository_root(&plan.pipeline.dir),
        state_dir: state_dir.clone(),
        secrets,
        host_env,
        cancel: cancel.clone(),
        git: ferry_compose::git_info(&plan.pipeline),
        vars: settings.vars,
        inputs: settings.inputs,
        cache: Some(cache),
        reuse: settings.reuse,
        clean: settings.clean,
        untrusted: false,
    };
    let reporters: Vec<Arc<dyn ferry_engine::Reporter>> = vec![
        reporter.clone() as Arc<dyn ferry_engine::Reporter>,
        Arc::new(report::Prompter::new(state_dir)),
    ];
    let result = runtime.block_on(async {
        let interrupt = cancel.clone();
        tokio::spawn(async move {
            if stop_signal().await {
                eprintln!("\nferry: cancelling (press Ctrl-C again to quit at once)");
                interrupt.cancel();
                if stop_signal().await {
                    ferry_sandbox::kill_all_processes();
                    std::process::exit(i32::from(exit::INTERRUPTED));
                }
            }
        });
        ferry_engine::run(
            plan,
            sandbox,
            Arc::new(ferry_engine::event::Fanout(reporters)),
            options,
        )
        .await
    });
    // Stop the runtime now: background tasks must not outlive the run.
    runtime.shutdown_background();
    prune_old_runs(&kept_in);
    match result {
        Ok(result) => {
            reporter.finish(&result);
            if settings.timings {
                print_timings(result.summary.duration_ms.unwrap_or(0.0));
            }
            match result.status {
                Status::Passed => exit::PASSED,
                Status::Cancelled => exit::INTERRUPTED,
                _ => exit::FAILED,
            }
        }
        Err(e) => super::fail(e.to_string()),
    }
}

/// Keeps the newest `FERRY_KEEP_RUNS` runs (default [`DEFAULT_KEEP_RUNS`], `0` keeps all),
/// so that `.ferry/runs` does not grow for ever.
///
/// [`DEFAULT_KEEP_RUNS`]: ferry_engine::record::DEFAULT_KEEP_RUNS
fn prune_old_runs(state_dir: &std::path::Path) {
    let keep = match std::env::var("FERRY_KEEP_RUNS") {
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(keep) => keep,
            Err(_) => {
                eprintln!(
                    "warning: FERRY_KEEP_RUNS=`{text}` is not a number of runs; keeping {}",
                    ferry_engine::record::DEFAULT_KEEP_RUNS
                );
                ferry_engine::record::DEFAULT_KEEP_RUNS
            }
        },
        Err(_) => ferry_engine::record::DEFAULT_KEEP_RUNS,
    };
    if keep == 0 {
        return;
    }
    match ferry_engine::record::prune(state_dir, keep) {
        Ok(removed) if !removed.is_empty() => eprintln!(
            "note: removed {} old runs, keeping the newest {keep} (FERRY_KEEP_RUNS sets how many)",
            removed.len()
        ),
        Ok(_) => {}
        Err(e) => eprintln!("warning: cannot remove old runs: {e}"),
    }
}

/// Where the time went, on stderr. Phases of jobs that ran at once add up, so their sum
/// can exceed the run's wall time.
fn print_timings(run_ms: f64) {
    eprintln!("\ntimings (summed over jobs and steps that ran at once):");
    for (name, total, count) in ferry_engine::timings::totals() {
        let ms = total.as_secs_f64() * 1e3;
        let each = ms / count as f64;
        eprintln!("  {name:<20} {ms:>10.1} ms  {count:>6}×  {each:>9.3} ms each");
    }
    eprintln!("  {:<20} {run_ms:>10.1} ms", "run (wall)");
}

/// Ctrl-C, or on Unix also SIGTERM (what CI runners and service managers send). False when
/// no handler could be installed.
pub async fn stop_signal() -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return tokio::signal::ctrl_c().await.is_ok();
        };
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted.is_ok(),
            _ = term.recv() => true,
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.is_ok()
    }
}
