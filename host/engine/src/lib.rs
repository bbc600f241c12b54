//! ferry's engine: schedules a plan's jobs and steps and reports what happens.
//!
//! It knows nothing about WebAssembly: steps run through a [`StepRunner`], which the sandbox
//! implements and tests fake.

pub mod artifacts;
pub mod cache;
pub mod deployments;
pub mod event;
pub mod files;
pub mod gate;
pub mod log;
pub mod os;
pub mod record;
pub mod run;
pub mod timings;
pub mod workspace;

pub use event::{Annotation, Cached, Event, FailureKind, Level, Reporter, Status};
pub use log::{Masker, StepLog};
pub use run::{RunOptions, RunResult, StepFailure, StepOutcome, StepRequest, StepRunner, run};
pub use tokio_util::sync::CancellationToken;
