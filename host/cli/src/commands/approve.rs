//! `ferry approve` and `ferry reject`: decide on a job waiting behind `approval: required`.

use crate::exit;
use ferry_engine::gate;
use std::path::{Path, PathBuf};

/// Let a job waiting for approval deploy.
#[derive(clap::Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    target: Target,
    /// Why, for the record
    #[arg(long)]
    comment: Option<String>,
}

/// Stop a job waiting for approval; it fails and the run says who rejected it.
#[derive(clap::Args)]
pub struct RejectArgs {
    #[command(flatten)]
    target: Target,
    /// Why, for the record and the run's summary
    #[arg(long)]
    reason: Option<String>,
}

#[derive(clap::Args)]
struct Target {
    /// The run id (as `ferry run` prints it), or `latest`
    run: String,
    /// The job waiting for approval; may be left out when only one waits
    job: Option<String>,
    /// Pipeline file whose `.ferry/` holds the run [default: ferry.yaml]
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    #[command(flatten)]
    server: super::remote::ServerArg,
}

pub fn approve(args: ApproveArgs) -> u8 {
    decide(args.target, true, args.comment)
}

pub fn reject(args: RejectArgs) -> u8 {
    decide(args.target, false, args.reason)
}

fn decide(target: Target, approved: bool, reason: Option<String>) -> u8 {
    if let Some(server) = &target.server.server {
        let remote = super::remote::Remote::new(server);
        return super::remote::decide(&remote, &target.run, target.job, approved, reason)
            .unwrap_or_else(super::fail);
    }
    let state_dir = match super::state_dir_of(target.file) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let run_dir = match find_run(&state_dir, &target.run) {
        Ok(dir) => dir,
        Err(e) => return super::fail(e),
    };
    let waiting = gate::waiting_in(&run_dir);
    let job = match (target.job, waiting.as_slice()) {
        (Some(job), _) => job,
        (None, [one]) => one.job.clone(),
        (None, []) => {
            return super::fail(format!("no job of run `{}` waits for approval", target.run));
        }
        (None, many) => {
            return super::fail(format!(
                "several jobs wait for approval: {}\nhint: name one, e.g. `ferry {} {} {}`",
                many.iter()
                    .map(|p| format!("`{}`", p.job))
                    .collect::<Vec<_>>()
                    .join(", "),
                if approved { "approve" } else { "reject" },
                target.run,
                many[0].job
            ));
        }
    };
    match gate::decide(&run_dir, &job, &gate::decision(approved, reason)) {
        Ok(pending) => {
            eprintln!(
                "{} `{}` to `{}` (run {})",
                if approved {
                    "approved deploying"
                } else {
                    "rejected deploying"
                },
                pending.job,
                pending.environment,
                pending.run
            );
            exit::PASSED
        }
        Err(e) => super::fail(e),
    }
}

/// `.ferry/runs/<id>`, where `latest` is the newest run with a job waiting for approval.
fn find_run(state_dir: &Path, id: &str) -> Result<PathBuf, String> {
    if id != "latest" {
        return super::run_dir(state_dir, id);
    }
    let runs = state_dir.join("runs");
    super::run_ids(state_dir)
        .iter()
        .rev()
        .map(|i| runs.join(i))
        .find(|dir| !gate::waiting_in(dir).is_empty())
        .ok_or_else(|| format!("no run under `{}` waits for approval", runs.display()))
}
