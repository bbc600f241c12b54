//! ferry's pipeline model: parse `ferry.yaml` with spans, validate it, plan the job graph.
//!
//! Nothing here runs anything; the engine only ever sees a validated [`Pipeline`] and the
//! [`Plan`] made from it.

pub mod diag;
pub mod expr;
pub mod graph;
pub mod parse;
pub mod pipeline;
pub mod triggers;
pub mod yaml;

pub use diag::{Diagnostic, Report, Severity, Source, Span};
pub use expr::{Expression, Progress, Scope, Template};
pub use graph::Plan;
pub use parse::{load, parse};
pub use pipeline::{
    ARTIFACT_NAME_RULE, Access, ArtifactDownload, ArtifactUpload, Concurrency, DependencyCache,
    Environment, Given, Instance, Job, MAX_COMBINATIONS, Matrix, MatrixAtRun, NetworkGrant,
    Permissions, Pipeline, PluginSettings, Program, Ready, RegistryUse, Service, Step, Uses,
    is_artifact_name,
};
