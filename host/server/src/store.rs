//! What the server remembers: deliveries, runs, jobs, steps and approvals.
//!
//! [`Store`] is the seam for another database: [`crate::sqlite::Sqlite`] serves one
//! machine; a PostgreSQL store for several servers and agents implements the same trait.
//! Logs stay on disk in each run's record, not in the database.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A store failure: the database is unreadable, full or locked for too long.
#[derive(Debug, thiserror::Error)]
#[error("run history: {0}")]
pub struct StoreError(pub String);

pub type Result<T> = std::result::Result<T, StoreError>;

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerKind {
    Push,
    PullRequest,
    Schedule,
    Manual,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Push => "push",
            TriggerKind::PullRequest => "pull-request",
            TriggerKind::Schedule => "schedule",
            TriggerKind::Manual => "manual",
        }
    }

    pub fn parse(text: &str) -> Option<TriggerKind> {
        [
            TriggerKind::Push,
            TriggerKind::PullRequest,
            TriggerKind::Schedule,
            TriggerKind::Manual,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// Where a run stands. `Queued` and `Running` are the only states a run leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    Passed,
    Failed,
    Cancelled,
    /// The server stopped while the run was going.
    Interrupted,
    /// The run could not start: no pipeline file, an invalid one, a commit that is gone.
    Error,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Passed => "passed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<RunStatus> {
        [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Passed,
            RunStatus::Failed,
            RunStatus::Cancelled,
            RunStatus::Interrupted,
            RunStatus::Error,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    pub fn finished(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

impl From<ferry_engine::Status> for RunStatus {
    fn from(status: ferry_engine::Status) -> RunStatus {
        use ferry_engine::Status;
        match status {
            Status::Running => RunStatus::Running,
            Status::Passed | Status::Skipped => RunStatus::Passed,
            Status::Failed => RunStatus::Failed,
            Status::Cancelled => RunStatus::Cancelled,
            Status::Interrupted => RunStatus::Interrupted,
        }
    }
}

/// What a run is asked to build: the fields every trigger fills in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// The configured repository's name.
    pub repo: String,
    pub trigger: TriggerKind,
    /// `refs/heads/main`, `refs/tags/v1`, `refs/pull/7/head`.
    pub reference: String,
    pub sha: String,
    /// The pull request's target branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The paths the change touched, when the trigger knows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub author: String,
    /// The change comes from a fork: its run gets no secrets.
    #[serde(default)]
    pub fork: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,
    /// The run this one repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<i64>,
}

impl Source {
    /// A source with only what every trigger knows; the rest is filled in by who has it.
    pub fn new(repo: &str, trigger: TriggerKind, reference: &str, sha: &str) -> Source {
        Source {
            repo: repo.to_string(),
            trigger,
            reference: reference.to_string(),
            sha: sha.to_string(),
            base: None,
            paths: None,
            message: String::new(),
            author: String::new(),
            fork: false,
            inputs: BTreeMap::new(),
            rerun_of: None,
        }
    }
}

/// A webhook delivery, a poll finding or a schedule firing, kept until it is turned into
/// a run (or found not to concern the pipeline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: i64,
    /// Unique per event: `github:<X-GitHub-Delivery>`, `poll:<repo>:<ref>:<sha>`, ...
    pub key: String,
    pub source: Source,
    pub received_at: u64,
}

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// Not looked at yet.
    Pending,
    /// It became this run.
    Run { run: i64 },
    /// It runs nothing, and why: the pipeline's `on:` does not take it, the commit has no
    /// pipeline file, the repository is no longer configured.
    Ignored { reason: String },
}

/// A delivery and what became of it, as `GET /api/deliveries` shows it: a forge's "recent
/// deliveries" from the server's side, to tell why a push started nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Received {
    #[serde(flatten)]
    pub delivery: Delivery,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// A run as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: i64,
    pub status: RunStatus,
    #[serde(flatten)]
    pub source: Source,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// The engine's run record id (`.ferry/runs/<record>`), once the run started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// Why the run could not start or was interrupted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Run {
    pub fn duration_ms(&self) -> Option<u64> {
        Some(self.finished_at?.saturating_sub(self.started_at?))
    }
}

/// A job of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub job: String,
    pub name: String,
    pub needs: Vec<String>,
    /// `pending` until it starts, then the engine's status names.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub steps: Vec<Step>,
}

/// A step of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub key: String,
    pub name: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The step cache gave its result.
    #[serde(default)]
    pub cached: bool,
    /// Milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
}

/// A gated job's request for approval and its decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub job: String,
    pub environment: String,
    /// `None` while the job waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A deploy, failed deploy or rollback a run did, as the engine's deployment history
/// records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// The server's run.
    pub run_id: i64,
    pub repo: String,
    #[serde(flatten)]
    pub entry: ferry_engine::deployments::Deployment,
}

/// Which deployments to list.
#[derive(Debug, Clone, Default)]
pub struct DeploymentQuery {
    pub limit: usize,
    pub repo: Option<String>,
    pub environment: Option<String>,
    pub run: Option<i64>,
}

/// A change to a job as the engine reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress<'a> {
    Jobs(&'a [Job]),
    /// A matrix known only at run time was made: `jobs` take the place of `job`.
    Expanded {
        job: &'a str,
        jobs: &'a [Job],
    },
    Job {
        job: &'a str,
        status: &'a str,
        duration_ms: Option<f64>,
        message: Option<&'a str>,
    },
    Step {
        job: &'a str,
        index: usize,
        key: &'a str,
        name: &'a str,
        status: &'a str,
        duration_ms: Option<f64>,
        message: Option<&'a str>,
        cached: bool,
        /// When it started, on the `running` change.
        started_at: Option<u64>,
    },
    Approval(&'a Approval),
}

/// Which runs or deliveries to list: newest first, `limit` of them.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: usize,
    /// Only those with an id below this (the next page).
    pub before: Option<i64>,
    /// Only those of this repository.
    pub repo: Option<String>,
}

/// How long a webhook body's digest is remembered against replays: 90 days. A digest
/// costs a row of 64 bytes; a captured push replayed after this runs again.
pub const BODY_MEMORY_MS: u64 = 90 * 24 * 3600 * 1000;

/// Persistence for the server. Methods are short and synchronous: SQLite answers them in
/// microseconds, and a networked store would put a pool behind the same calls.
pub trait Store: Send + Sync + 'static {
    /// Keeps a delivery; `None` when its key was seen before (a redelivery), or when its
    /// `body` (a webhook body's digest) was, within [`BODY_MEMORY_MS`]: a captured hook
    /// replayed under a new delivery id.
    fn add_delivery(
        &self,
        key: &str,
        body: Option<&str>,
        source: &Source,
        at: u64,
    ) -> Result<Option<i64>>;
    /// Deliveries not yet turned into runs, oldest first.
    fn pending_deliveries(&self) -> Result<Vec<Delivery>>;
    /// Turns a delivery into a queued run, in one transaction: a crash leaves either the
    /// delivery pending or the run queued, never both or neither.
    fn accept_delivery(&self, id: i64, source: &Source, at: u64) -> Result<i64>;
    /// Marks a delivery handled without a run, saying why.
    fn ignore_delivery(&self, id: i64, note: &str) -> Result<()>;
    /// Deliveries, newest first, with what became of each.
    fn deliveries(&self, page: &Page) -> Result<Vec<Received>>;
    /// One delivery and what became of it.
    fn delivery(&self, id: i64) -> Result<Option<Received>>;

    /// Queues a run and returns its id.
    fn add_run(&self, source: &Source, at: u64) -> Result<i64>;
    fn run(&self, id: i64) -> Result<Option<Run>>;
    /// Runs, newest first.
    fn runs(&self, page: &Page) -> Result<Vec<Run>>;
    /// Queued runs, oldest first.
    fn queued(&self) -> Result<Vec<Run>>;
    /// Marks a queued run running; false when it is no longer queued (cancelled while it
    /// waited), and then it must not run.
    fn start_run(&self, id: i64, at: u64) -> Result<bool>;
    /// The engine's record of the run, once the engine has started it.
    fn set_record(&self, id: i64, record: &str) -> Result<()>;
    fn finish_run(&self, id: i64, status: RunStatus, at: u64, error: Option<&str>) -> Result<()>;
    /// Marks every run a stopped server left running as interrupted and returns them.
    fn interrupt_running(&self, at: u64) -> Result<Vec<i64>>;

    fn progress(&self, run: i64, change: Progress<'_>) -> Result<()>;
    fn jobs(&self, run: i64) -> Result<Vec<Job>>;
    fn approvals(&self, run: i64) -> Result<Vec<Approval>>;

    /// The commit a poll last saw on each reference of a repository.
    fn seen_refs(&self, repo: &str) -> Result<BTreeMap<String, String>>;
    fn set_seen_ref(&self, repo: &str, reference: &str, sha: Option<&str>) -> Result<()>;

    /// Keeps what run `run` did to environments (repeated entries are kept once).
    fn add_deployments(
        &self,
        run: i64,
        repo: &str,
        entries: &[ferry_engine::deployments::Deployment],
    ) -> Result<()>;
    /// Deployments, newest first.
    fn deployments(&self, query: &DeploymentQuery) -> Result<Vec<Deployment>>;

    /// Finished runs beyond the newest `keep`, oldest first, with their records, removed
    /// from the store.
    fn prune(&self, keep: usize) -> Result<Vec<Run>>;
}
