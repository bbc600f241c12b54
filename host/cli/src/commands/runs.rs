//! `ferry runs` and `ferry logs`: the run history kept under `.ferry/runs`.

use crate::exit;
use crate::say;
use ferry_engine::record::RunSummary;
use std::path::{Path, PathBuf};

/// List the runs of a pipeline, newest first, or prune old ones
#[derive(clap::Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    action: Option<RunsAction>,
    /// Pipeline file whose `.ferry/` holds the runs [default: ferry.yaml]
    #[arg(long, short = 'f', global = true)]
    file: Option<PathBuf>,
    /// Show at most this many
    #[arg(long, short = 'n', default_value_t = 20)]
    limit: usize,
    /// Print JSON: one `run.json` summary per run
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: super::remote::ServerArg,
}

#[derive(clap::Subcommand)]
enum RunsAction {
    /// Remove the oldest runs, and the artifact files only they list, keeping the newest
    /// (`ferry run` does this after each run; `FERRY_KEEP_RUNS` sets how many it keeps, `0`
    /// keeps all)
    Prune {
        /// How many of the newest runs to keep; a run still going is always kept
        #[arg(long, default_value_t = ferry_engine::record::DEFAULT_KEEP_RUNS)]
        keep: usize,
    },
}

/// Print a run's logs, job by job and step by step
#[derive(clap::Args)]
pub struct LogsArgs {
    /// The run id (as `ferry run` prints it), or `latest`
    run: String,
    /// Only this job, or `JOB/STEP` for one step
    only: Option<String>,
    /// Pipeline file whose `.ferry/` holds the run [default: ferry.yaml]
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// Keep printing the run's logs as they come, until it ends (with `--server`)
    #[arg(long)]
    follow: bool,
    #[command(flatten)]
    server: super::remote::ServerArg,
}

fn summary(dir: &Path) -> Option<RunSummary> {
    serde_json::from_slice(&std::fs::read(dir.join("run.json")).ok()?).ok()
}

pub fn runs(args: RunsArgs) -> u8 {
    if let Some(RunsAction::Prune { keep }) = args.action {
        let state_dir = match super::state_dir_of(args.file) {
            Ok(d) => d,
            Err(code) => return code,
        };
        return match ferry_engine::record::prune(&state_dir, keep) {
            Ok(removed) => {
                for id in &removed {
                    say!("removed {id}");
                }
                eprintln!(
                    "{} runs removed; the newest {keep} kept under `{}`",
                    removed.len(),
                    state_dir.join("runs").display()
                );
                exit::PASSED
            }
            Err(e) => super::fail(format!("cannot prune `{}`: {e}", state_dir.display())),
        };
    }
    if let Some(server) = &args.server.server {
        let remote = super::remote::Remote::new(server);
        return super::remote::runs(&remote, args.limit, args.json).unwrap_or_else(super::fail);
    }
    let state_dir = match super::state_dir_of(args.file) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let runs: Vec<RunSummary> = super::run_ids(&state_dir)
        .iter()
        .rev()
        .take(args.limit)
        .filter_map(|id| summary(&state_dir.join("runs").join(id)))
        .collect();
    if args.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&runs).unwrap_or_default()
        );
        return exit::PASSED;
    }
    if runs.is_empty() {
        eprintln!("no runs under `{}`", state_dir.join("runs").display());
        return exit::PASSED;
    }
    say!(
        "{:<22} {:<11} {:<20} {:>10}  {:<6}  PIPELINE",
        "RUN",
        "STATUS",
        "STARTED",
        "DURATION",
        "JOBS"
    );
    for run in &runs {
        let passed = run
            .jobs
            .values()
            .filter(|j| j.status == ferry_engine::Status::Passed)
            .count();
        let duration = run
            .duration_ms
            .map(crate::report::ms)
            .unwrap_or_else(|| "-".to_string());
        say!(
            "{:<22} {:<11} {:<20} {:>10}  {:<6}  {}",
            run.id,
            run.status.as_str(),
            run.started_at.get(..19).unwrap_or(&run.started_at),
            duration,
            format!("{passed}/{}", run.jobs.len()),
            run.pipeline
        );
    }
    exit::PASSED
}

pub fn logs(args: LogsArgs) -> u8 {
    if let Some(server) = &args.server.server {
        let remote = super::remote::Remote::new(server);
        return super::remote::logs(&remote, &args.run, args.only.as_deref(), args.follow)
            .unwrap_or_else(super::fail);
    }
    if args.follow {
        return super::fail(
            "`--follow` reads a server's live stream; pass `--server URL`\nhint: a local run prints its logs as it goes",
        );
    }
    let (_, dir) = match super::find_run(args.file, &args.run) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let Some(run) = summary(&dir) else {
        return super::fail(format!("`{}` has no readable run.json", dir.display()));
    };
    let (job_filter, step_filter) = match args.only.as_deref().map(|o| o.split_once('/')) {
        None => (None, None),
        Some(Some((job, step))) => (Some(job.to_string()), Some(step.to_string())),
        Some(None) => (args.only.clone(), None),
    };
    if let Some(job) = &job_filter
        && !run.jobs.contains_key(job)
    {
        let jobs: Vec<String> = run.jobs.keys().map(|j| format!("`{j}`")).collect();
        return super::fail(format!(
            "run {} has no job `{job}`\nhint: its jobs: {}",
            run.id,
            jobs.join(", ")
        ));
    }
    let mut shown = 0;
    for (job_id, job) in &run.jobs {
        if job_filter.as_ref().is_some_and(|j| j != job_id) {
            continue;
        }
        for step in &job.steps {
            if step_filter.as_ref().is_some_and(|s| *s != step.key) {
                continue;
            }
            shown += 1;
            let cached = if step.cached.is_some() {
                ", cached"
            } else {
                ""
            };
            say!(
                "── {job_id} › {} ({}{cached})",
                step.name,
                step.status.as_str()
            );
            match std::fs::read_to_string(dir.join(&step.log)) {
                Ok(text) => {
                    for line in text.lines() {
                        say!("{line}");
                    }
                }
                Err(_) => say!("(no log)"),
            }
        }
    }
    if shown == 0
        && let Some(step) = step_filter
    {
        return super::fail(format!(
            "run {} has no step `{step}` in job `{}`",
            run.id,
            job_filter.unwrap_or_default()
        ));
    }
    exit::PASSED
}
