//! What composes a ferry run, for every front end (`ferry run`, `ferry serve`, later
//! `ferry agent`): registry plugins pinned through ferry.lock, the user's settings, the step
//! caches (local and shared), the sandbox, the secrets and host variables a run may be
//! granted, and the server's [`Executor`](ferry_server::Executor). Front ends parse their
//! arguments, call these, and print what they return.

pub mod config;
pub mod executor;
pub mod plugins;
pub mod remote_cache;

use ferry_model::{Pipeline, Plan, Report};
use ferry_sandbox::{ComponentCache, Sandbox, SandboxOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use executor::SandboxExecutor;

/// The sandbox every front end that runs or inspects components uses, sized for
/// `concurrency` steps at once.
pub fn sandbox(concurrency: usize) -> Result<Sandbox, String> {
    Sandbox::new(SandboxOptions {
        cache_dir: ComponentCache::default_dir(),
        builtins: ferry_builtins::BUILTINS,
        concurrency,
    })
    .map_err(|e| format!("cannot start the WebAssembly engine: {e}"))
}

/// The step and dependency caches of a repository's `state_dir`, bounded by the configured
/// size and backed by the shared cache when one is configured.
pub fn cache(state_dir: &Path) -> Result<ferry_engine::cache::Cache, String> {
    let limit = config::cache_limit()?;
    let cache = ferry_engine::cache::Cache::new(state_dir, limit);
    Ok(match config::cache_remote()? {
        Some(remote) => cache.with_remote(Arc::new(remote)),
        None => cache,
    })
}

/// `.ferry/` beside the pipeline file, absolute: where runs, workspaces, locks and the
/// deployment history live.
pub fn state_dir(pipeline: &Pipeline) -> PathBuf {
    ferry_model::pipeline::host_path(&pipeline.dir, ".ferry")
}

/// Secret values for the names the pipeline grants, from the host environment `env`, and a
/// warning for each granted name that cannot be passed.
pub fn secrets(
    plan: &Plan,
    env: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let mut names = std::collections::BTreeSet::new();
    for job in &plan.pipeline.jobs {
        for step in &job.steps {
            names.extend(step.permissions.secrets.iter().cloned());
        }
        for service in &job.services {
            names.extend(service.permissions.secrets.iter().cloned());
        }
    }
    let mut secrets = BTreeMap::new();
    let mut warnings = Vec::new();
    for name in names {
        match env.get(&name) {
            Some(value) if value.len() >= 2 => {
                secrets.insert(name, value.clone());
            }
            Some(_) => warnings.push(format!(
                "secret `{name}` is shorter than 2 characters and cannot be masked; not passed to any step"
            )),
            None => warnings.push(format!(
                "secret `{name}` is granted but not set in the environment"
            )),
        }
    }
    (secrets, warnings)
}

/// The variables of this process that `permissions.env` may grant to steps. A value that is
/// not Unicode cannot be granted (a step's environment is text).
pub fn host_env() -> Arc<BTreeMap<String, String>> {
    Arc::new(
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect(),
    )
}

/// `git.*` for the run: the commit of the repository the pipeline lives in. Asked of `git`
/// only when the pipeline reads `git.*`, so other runs pay nothing for it.
pub fn git_info(pipeline: &Pipeline) -> BTreeMap<String, String> {
    match pipeline.reads_git {
        true => git_info_in(&pipeline.dir),
        false => BTreeMap::new(),
    }
}

/// `git.*` of the repository `dir` is in: empty when it is in none.
pub fn git_info_in(dir: &std::path::Path) -> BTreeMap<String, String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(sha) = git(&["rev-parse", "HEAD"]) else {
        return BTreeMap::new();
    };
    let mut info = BTreeMap::from([
        ("short-sha".to_string(), sha.chars().take(7).collect()),
        ("sha".to_string(), sha),
        ("ref".to_string(), "HEAD".to_string()),
    ]);
    for (field, args) in [
        (
            "branch",
            &["symbolic-ref", "--quiet", "--short", "HEAD"][..],
        ),
        ("commit-message", &["log", "-1", "--format=%s"][..]),
        ("commit-time", &["log", "-1", "--format=%ct"][..]),
        ("author", &["log", "-1", "--format=%an <%ae>"][..]),
    ] {
        info.insert(field.to_string(), git(args).unwrap_or_default());
    }
    info
}

/// A report as plain text, every diagnostic with its source lines.
pub fn render(report: &Report) -> String {
    report
        .diagnostics
        .iter()
        .map(|d| d.render(&report.source))
        .collect::<Vec<_>>()
        .join("\n")
}
