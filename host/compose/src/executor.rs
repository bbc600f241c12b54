//! The server's [`Executor`]: runs its pipelines as `ferry run` does, with plugins pinned,
//! grants checked before anything runs and every step in the sandbox.

use ferry_engine::{RunOptions, RunResult};
use ferry_model::{Pipeline, Plan};
use ferry_sandbox::Sandbox;
use ferry_server::{BoxFuture, Execution, Executor};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub struct SandboxExecutor {
    sandbox: Arc<Sandbox>,
    /// The variables trusted runs may be granted, as secrets or by `permissions.env`.
    host_env: Arc<BTreeMap<String, String>>,
    /// Whether untrusted runs may go ahead where host programs cannot be confined.
    allow_unconfined: bool,
}

impl SandboxExecutor {
    /// `host_env` is what trusted runs may be granted: the server's environment without its
    /// own credentials.
    pub fn new(
        sandbox: Arc<Sandbox>,
        host_env: BTreeMap<String, String>,
        allow_unconfined: bool,
    ) -> SandboxExecutor {
        SandboxExecutor {
            sandbox,
            host_env: Arc::new(host_env),
            allow_unconfined,
        }
    }
}

/// A pull request from a fork writes its own `permissions:`. A host path it grants itself
/// outside its own checkout would open the server's disk to it, so such a run is refused
/// before anything runs (its hosts are checked as it connects: public addresses only).
/// Paths inside the checkout (`./dist`) are its own; a link there is refused by the sandbox.
fn granted_host_paths(pipeline: &Pipeline) -> Option<String> {
    pipeline.jobs.iter().find_map(|job| {
        let steps = job
            .steps
            .iter()
            .map(|step| (format!("step `{}`", step.name), &step.permissions));
        let services = job
            .services
            .iter()
            .map(|service| (format!("service `{}`", service.name), &service.permissions));
        steps.chain(services).find_map(|(what, permissions)| {
            let (path, _) = permissions
                .paths
                .iter()
                .find(|(path, _)| !path.starts_with(&pipeline.dir))?;
            Some(format!(
                "refused: {what} of job `{}` grants itself the host path `{}`, and a pull request from a fork may not: its steps and services see their workspace and the system, nothing else of the server\nhint: run it from a branch of the repository, whose pipeline the server trusts",
                job.id,
                path.display()
            ))
        })
    })
}

impl Executor for SandboxExecutor {
    fn parse(&self, file: &Path, text: &str) -> Result<Pipeline, String> {
        let builtins: Vec<&str> = ferry_builtins::BUILTINS.iter().map(|(n, _)| *n).collect();
        let dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let source = ferry_model::Source::new(file, text.to_string());
        ferry_model::parse(&source, dir, &builtins).map_err(|report| crate::render(&report))
    }

    fn execute(&self, execution: Execution) -> BoxFuture<Result<RunResult, String>> {
        let sandbox = self.sandbox.clone();
        // A fork's untrusted code gets none of the server's environment.
        let host_env = match execution.trusted {
            true => self.host_env.clone(),
            false => Arc::default(),
        };
        let unconfined = ferry_sandbox::confine::unavailable();
        if let (false, Some(why), false) = (execution.trusted, unconfined, self.allow_unconfined) {
            let refusal = format!(
                "refused: this pull request comes from a fork, and the programs its steps start cannot be confined here ({why}); start `ferry serve --allow-unconfined` to run such pull requests anyway"
            );
            return Box::pin(async move { Err(refusal) });
        }
        Box::pin(async move {
            let mut pipeline = execution.pipeline;
            let pipeline = tokio::task::spawn_blocking(move || {
                crate::plugins::pin(&mut pipeline, crate::plugins::Mode::Run)
                    .map(|_| pipeline)
                    .map_err(|e| {
                        format!(
                            "the pipeline's plugins could not be resolved:\n{}",
                            e.render()
                        )
                    })
            })
            .await
            .map_err(|e| e.to_string())??;
            let plan = Plan::new(pipeline, &[]).map_err(|e| e.to_string())?;
            if !execution.trusted
                && let Some(refusal) = granted_host_paths(&plan.pipeline)
            {
                return Err(refusal);
            }
            // The server's own `PATH` is where its runs find programs.
            let host_path = std::env::var("PATH").ok();
            // Warnings are for whoever edits the file (`ferry validate`), not a reason to stop.
            let diagnostics: Vec<_> = sandbox
                .preflight(&plan.pipeline, host_path.as_deref())
                .await
                .into_iter()
                .filter(ferry_model::Diagnostic::is_error)
                .collect();
            if !diagnostics.is_empty() {
                let text = std::fs::read_to_string(&plan.pipeline.file).unwrap_or_default();
                return Err(crate::render(&ferry_model::Report {
                    source: ferry_model::Source::new(&plan.pipeline.file, text),
                    diagnostics,
                }));
            }
            let secrets = match execution.trusted {
                true => {
                    let (secrets, warnings) = crate::secrets(&plan, &host_env);
                    // The server's log: the operator set these up.
                    for warning in warnings {
                        eprintln!("warning: {warning}");
                    }
                    secrets
                }
                false => BTreeMap::new(),
            };
            let cache = crate::config::cache_limit()
                .map(|limit| ferry_engine::cache::Cache::new(&execution.state_dir, limit))?;
            let options = RunOptions {
                parallel: 1,
                slots: Some(execution.slots),
                fail_fast: true,
                source_dir: execution.source_dir,
                state_dir: execution.state_dir,
                secrets,
                host_env,
                cancel: execution.cancel,
                git: execution.git,
                vars: BTreeMap::new(),
                inputs: execution.inputs,
                // What an untrusted run would store, a trusted one would restore: it gets
                // no cache at all.
                cache: execution.trusted.then_some(cache),
                reuse: true,
                clean: false,
                untrusted: !execution.trusted,
            };
            ferry_engine::run(plan, sandbox, execution.reporter, options)
                .await
                .map_err(|e| e.to_string())
        })
    }
}
