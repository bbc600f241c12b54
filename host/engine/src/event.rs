//! What happens during a run, as events every reporter and the run record consume.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Severity of a log line; `Stdout` and `Stderr` are a guest's or a process's raw streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
    Stdout,
    Stderr,
}

/// A finding pointing into the workspace (see `ferry:step/log.annotation`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotation {
    pub level: Level,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

impl std::fmt::Display for Annotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}")?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
                if let Some(col) = self.column {
                    write!(f, ":{col}")?;
                }
            }
            f.write_str(": ")?;
        }
        f.write_str(&self.message)?;
        if let Some(rule) = &self.rule {
            write!(f, " [{rule}]")?;
        }
        Ok(())
    }
}

/// How a step, job or run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Passed,
    Failed,
    Cancelled,
    Skipped,
    Interrupted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Skipped => "skipped",
            Status::Interrupted => "interrupted",
        }
    }
}

/// Why a step failed; each cause gets its own message (DESIGN.md: five different messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The step ran and its check failed.
    Failed,
    /// An input was missing or malformed, or an expression had no value.
    InvalidInput,
    /// A capability was refused, before the start or while running.
    Denied,
    /// The wall-clock limit passed.
    Timeout,
    /// The memory limit was reached.
    MemoryLimit,
    /// The guest trapped (panic, unreachable, stack overflow, ...).
    Trap,
    /// The host could not load or run the component.
    Internal,
}

/// One thing that happened. Serialised as one JSON object per line with a `type` field.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    RunStarted {
        run: String,
        pipeline: String,
        jobs: Vec<JobInfo>,
        /// Milliseconds since the Unix epoch.
        at: u64,
    },
    /// A matrix known only at run time was made when the jobs `job` needs ended: `jobs`,
    /// one per combination, take its place. `job` itself does not run.
    MatrixExpanded {
        job: Arc<str>,
        jobs: Vec<JobInfo>,
    },
    JobStarted {
        job: Arc<str>,
    },
    StepStarted {
        job: Arc<str>,
        step: Arc<str>,
        index: usize,
        name: String,
    },
    Log {
        job: Arc<str>,
        step: Arc<str>,
        level: Level,
        text: String,
    },
    GroupStart {
        job: Arc<str>,
        step: Arc<str>,
        title: String,
    },
    GroupEnd {
        job: Arc<str>,
        step: Arc<str>,
    },
    Annotation {
        job: Arc<str>,
        step: Arc<str>,
        annotation: Annotation,
    },
    Output {
        job: Arc<str>,
        step: Arc<str>,
        name: String,
        value: String,
    },
    StepFinished {
        job: Arc<str>,
        step: Arc<str>,
        status: Status,
        #[serde(skip_serializing_if = "Option::is_none")]
        failure: Option<FailureKind>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        duration_ms: f64,
        /// Set when the step did not run because the step cache held its result.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cached: Option<Cached>,
    },
    JobFinished {
        job: Arc<str>,
        status: Status,
        duration_ms: f64,
        /// Why a job was skipped or could not start, or what it deployed or rolled back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// The job's `outputs:`, evaluated when it ended.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        outputs: BTreeMap<String, String>,
    },
    RunFinished {
        run: String,
        status: Status,
        duration_ms: f64,
    },
    /// The Markdown a step's programs wrote to `$FERRY_STEP_SUMMARY`, secrets masked, at most
    /// [`crate::log::MAX_SUMMARY`] bytes; sent when the step ends.
    Summary {
        job: Arc<str>,
        step: Arc<str>,
        markdown: String,
    },
    /// Something a person watching the run should know that is no step's log: a job waiting
    /// for its concurrency group, a cancel requested by another run, a rollback.
    Notice {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job: Option<Arc<str>>,
        text: String,
    },
    /// A gated job asks for approval (`decision` is `None`), or was decided.
    Approval {
        job: Arc<str>,
        environment: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decision: Option<crate::gate::Decision>,
    },
}

/// Where a reused step result came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cached {
    /// The run in which the step ran.
    pub run: String,
    /// How long it took then: the time this run saved.
    pub saved_ms: f64,
}

/// A job as announced at the start of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobInfo {
    pub id: String,
    pub name: String,
    pub needs: Vec<String>,
    /// Step names, in order.
    pub steps: Vec<String>,
    /// Step keys (`id`, or the position), in the same order: what step events name.
    #[serde(default)]
    pub keys: Vec<String>,
}

/// Receives every event of a run. Called from many tasks at once, so implementations lock
/// what they need; they must not block for long.
pub trait Reporter: Send + Sync {
    fn event(&self, event: &Event);
}

/// Sends each event to several reporters in order.
pub struct Fanout(pub Vec<Arc<dyn Reporter>>);

impl Reporter for Fanout {
    fn event(&self, event: &Event) {
        for reporter in &self.0 {
            reporter.event(event);
        }
    }
}
