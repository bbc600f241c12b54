//! `ferry rollback`: put an environment back on an earlier release by running its deploy
//! step again with `rollback: <version>`, under the grants the pipeline gives that step.

use super::run::{Settings, run_plan};
use crate::report::Output;
use ferry_engine::deployments;
use ferry_model::{Plan, Template};
use std::path::PathBuf;

/// Restore an environment's previous release (or `--to VERSION`)
#[derive(clap::Args)]
pub struct Args {
    /// The environment, as `environment:` names it in the pipeline
    environment: String,
    /// The release to restore [default: the one before the current]
    #[arg(long, value_name = "VERSION")]
    to: Option<String>,
    /// Pipeline file [default: ferry.yaml]
    file: Option<PathBuf>,
    /// How to show progress
    #[arg(long, value_enum, default_value_t = Output::Auto)]
    output: Output,
}

pub fn execute(args: Args) -> u8 {
    let mut pipeline = match super::load(args.file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Err(code) = super::pin(&mut pipeline, ferry_compose::plugins::Mode::Locked) {
        return code;
    }
    let env = &args.environment;
    let history = match deployments::read(&super::state_dir(&pipeline)) {
        Ok(h) => h,
        Err(e) => return super::fail(format!("cannot read the deployment history: {e}")),
    };
    let Some(current) = deployments::current(&history, env) else {
        return super::fail(format!(
            "nothing is deployed to `{env}`\nhint: `ferry deployments` lists what was deployed where"
        ));
    };
    let target = match &args.to {
        Some(v) if *v == current.version => {
            return super::fail(format!("`{env}` already serves {v}"));
        }
        Some(v) => v.clone(),
        None => match deployments::rollback_target(&history, env) {
            Some(d) => d.version.clone(),
            None => {
                return super::fail(format!(
                    "`{env}` has had no other release than {} to go back to",
                    current.version
                ));
            }
        },
    };
    // The deploy step and its inputs as last used for this environment.
    let Some(used) = history
        .iter()
        .rev()
        .find(|d| d.environment == *env && d.step.is_some())
    else {
        return super::fail(format!(
            "the history of `{env}` records no `deploy` step to run again\nhint: jobs that deploy their own way roll back their own way"
        ));
    };
    let step_key = used.step.clone().unwrap_or_default();
    let Some(job_index) = pipeline.jobs.iter().position(|j| j.id == used.job) else {
        return super::fail(format!(
            "job `{}`, which deployed to `{env}`, is no longer in `{}`",
            used.job,
            pipeline.file.display()
        ));
    };
    let mut job = pipeline.jobs[job_index].clone();
    let Some(mut step) = job.steps.iter().find(|s| s.key() == step_key).cloned() else {
        return super::fail(format!(
            "job `{}` no longer has the step `{step_key}` that deployed to `{env}`",
            job.id
        ));
    };
    step.with = used
        .inputs
        .iter()
        .map(|(k, v)| (k.clone(), Template::literal(v.clone())))
        .collect();
    step.with
        .insert("rollback".into(), Template::literal(target.clone()));
    step.condition = None;
    job.steps = vec![step];
    job.needs.clear();
    job.condition = None;
    job.outputs.clear();
    // Asking for a rollback is the decision; the concurrency group still keeps it from
    // overlapping a deploy.
    if let Some(e) = job.environment.as_mut() {
        e.approval = false;
    }
    eprintln!("rolling `{env}` back from {} to {target}", current.version);
    pipeline.jobs = vec![job];
    let plan = match Plan::new(pipeline, &[]) {
        Ok(plan) => plan,
        Err(e) => return super::fail(e.to_string()),
    };
    run_plan(
        plan,
        Settings {
            output: args.output,
            parallel: Some(1),
            fail_fast: true,
            vars: Default::default(),
            inputs: Default::default(),
            // A rollback must really deploy.
            reuse: false,
            clean: false,
            timings: false,
        },
    )
}
