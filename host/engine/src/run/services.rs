//! A job's `services:` as the scheduler sees them: evaluated, handed to the runner to start
//! before the first step, stopped when the job ends, each with its log in the run record
//! (`.ferry/runs/<run>/services/<job>/<name>.log`).

use super::{JobScope, Shared, render_env};
use crate::event::{Event, Reporter};
use crate::log::StepLog;
use crate::record::sanitize;
use ferry_model::{Job, Service};
use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// Bytes of one service's log kept in the run record; the rest is counted, not written.
pub const SERVICE_LOG_LIMIT: u64 = 16 << 20;

/// Lines of a service's log quoted when it fails to start.
const TAIL_LINES: usize = 20;

/// One service, evaluated for this run of its job.
pub struct ServiceStart {
    pub service: Service,
    /// The script, after expressions.
    pub run: String,
    /// The pipeline's, job's and service's `env:`, after expressions.
    pub env: BTreeMap<String, String>,
    /// Secrets granted to the service (its `permissions.secrets`).
    pub secrets: BTreeMap<String, String>,
    /// Host variables granted to it (`permissions.env`) that the host has.
    pub host_env: BTreeMap<String, String>,
    /// Where its output goes, masked.
    pub log: StepLog,
}

/// Everything a runner needs to start a job's services.
pub struct ServicesRequest {
    pub run_id: Arc<str>,
    pub pipeline: Arc<ferry_model::Pipeline>,
    pub job_index: usize,
    /// In the job's order; each reaches the ones before it.
    pub services: Vec<ServiceStart>,
    pub workspace: PathBuf,
    /// A folder for the services alone, removed when they stop (each gets its `HOME` below
    /// it): `<dir>/home`, which no step sees and no other run shares.
    pub scratch: PathBuf,
    /// `.ferry/runs/<run>/services/<job>`: the logs, and the `/etc/hosts` that names the
    /// services for the steps' programs.
    pub dir: PathBuf,
    /// The `PATH` the services' shells find programs on, unless their `env:` sets one.
    pub path: String,
    pub untrusted: bool,
    pub cancel: crate::CancellationToken,
}

/// A job's running services, as the runner started them.
pub trait JobServices: Send + Sync + 'static {
    /// The runner's own type, for the steps it runs.
    fn as_any(&self) -> &dyn std::any::Any;

    /// Stops every service and waits for it to exit; says how each ended.
    fn stop(&self) -> Pin<Box<dyn Future<Output = Vec<String>> + Send + '_>>;
}

/// Writes a service's log lines to its file in the run record.
struct LogFile {
    file: Mutex<Option<std::fs::File>>,
}

impl Reporter for LogFile {
    fn event(&self, event: &Event) {
        let text = match event {
            Event::Log { text, .. } => text.clone(),
            Event::Notice { text, .. } => format!("[ferry] {text}"),
            _ => return,
        };
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = file.as_mut()
            && writeln!(f, "{text}").is_err()
        {
            *file = None;
        }
    }
}

/// Evaluates the job's services and opens their logs.
pub(super) fn prepare(
    shared: &Shared,
    job: &Job,
    scope: &JobScope,
    dir: &Path,
) -> Result<Vec<ServiceStart>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let job_id: Arc<str> = job.id.as_str().into();
    let mut out = Vec::new();
    for service in &job.services {
        let mut view = scope.scope_for_job(shared, job, super::progress(false, false));
        let secrets = shared.granted_secrets(&service.permissions);
        view.contexts
            .insert("secrets", serde_json::json!(secrets.clone()));
        let here = |e: String| format!("service `{}`: {e}", service.name);
        let env = render_env(&[&shared.pipeline().env, &job.env, &service.env], &mut view)
            .map_err(here)?;
        let run = service.run.render(&view).map_err(here)?;
        let path = dir.join(format!("{}.log", sanitize(&service.name)));
        let file = std::fs::File::create(&path)
            .map_err(|e| format!("cannot create `{}`: {e}", path.display()))?;
        let log = StepLog::new(
            job_id.clone(),
            format!("services.{}", service.name).into(),
            Arc::new(LogFile {
                file: Mutex::new(Some(file)),
            }),
            shared.masker.clone(),
            SERVICE_LOG_LIMIT,
        );
        let host_env = service
            .permissions
            .env
            .iter()
            .filter_map(|name| shared.host_env.get(name).map(|v| (name.clone(), v.clone())))
            .collect();
        out.push(ServiceStart {
            service: service.clone(),
            run,
            env,
            secrets,
            host_env,
            log,
        });
    }
    Ok(out)
}

/// The job's services as they start (scripts, environments with secrets masked, ports,
/// checks, grants), for the keys of the job's cached steps; empty without services.
pub(super) fn key(shared: &Shared, started: &[ServiceStart]) -> String {
    let masked = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.iter()
            .map(|(k, v)| (k.clone(), shared.masker.mask(v)))
            .collect()
    };
    started
        .iter()
        .map(|s| {
            format!(
                "{}\0{}\0{:?}\0{:?}\0{:?}\0{:?}\0{:?}\n",
                s.service.name,
                shared.masker.mask(&s.run),
                masked(&s.env),
                masked(&s.host_env),
                s.service.ports,
                s.service.ready,
                s.service.permissions,
            )
        })
        .collect()
}

/// The last lines of a service's log, for the message of a service that did not start.
pub(super) fn tail(dir: &Path, name: &str) -> String {
    let path = dir.join(format!("{}.log", sanitize(name)));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    lines[start..].join("\n")
}
