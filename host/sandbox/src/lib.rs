//! ferry's step runtime: every step is a WebAssembly component run by wasmtime in a fresh
//! store, with only what the pipeline granted.
//!
//! The only crate that links wasmtime. It implements the engine's
//! [`StepRunner`](ferry_engine::StepRunner) and offers `inspect` for the CLI.

mod archive;
mod bindings;
pub mod cache;
pub mod confine;
pub mod grant;
mod log;
mod outputs;
mod plugin;
mod preflight;
pub mod process;
#[cfg(any(target_os = "linux", target_os = "macos"))]
mod proxy;
mod refusals;
mod runner;
pub mod services;
mod state;
mod stdio;

pub use cache::ComponentCache;
pub use plugin::{InputSpec, Inspection, Plugin, PluginInfo, PluginKind, Runs, World};
pub use runner::{Sandbox, SandboxOptions};
pub use state::kill_all_processes;
