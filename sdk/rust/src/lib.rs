// SPDX-License-Identifier: Apache-2.0
//! Write [ferry](https://github.com/ferry-ci/ferry) pipeline steps in Rust.
//!
//! A step is a type implementing [`Step`]: its [`Info`] declares the name, inputs (with
//! types, defaults and required flags), outputs and the capabilities it needs, once, and
//! ferry uses that both for `describe()` and to check inputs before [`Step::run`] is called.
//! [`export!`] turns the type into the component's exports.
//!
//! ```no_run
//! use ferry_sdk::{Capabilities, Error, Info, Input, Inputs, Step, info};
//!
//! struct Greet;
//!
//! impl Step for Greet {
//!     fn info() -> Info {
//!         Info::new("greet", env!("CARGO_PKG_VERSION"), "Says hello.")
//!             .input(Input::string("who", "Whom to greet.").default("world"))
//!             .input(Input::boolean("loud", "Shout."))
//!             .output("greeting", "What was said.")
//!             .capabilities(Capabilities::none().exec(["echo"]))
//!     }
//!
//!     fn run(inputs: &Inputs) -> Result<(), Error> {
//!         let who = inputs.string("who")?;
//!         let mut greeting = format!("hello, {who}");
//!         if inputs.boolean("loud")? {
//!             greeting = greeting.to_uppercase();
//!         }
//!         info!("{greeting}");
//!         ferry_sdk::exec::Command::new("echo").arg(&greeting).run()?.check()?;
//!         ferry_sdk::set_output("greeting", &greeting)
//!     }
//! }
//!
//! ferry_sdk::export!(Greet);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` in a `cdylib` crate, and
//! check it with `ferry plugin inspect target/wasm32-wasip2/release/greet.wasm`.

// The generated bindings name this crate by its public path, as user crates see it.
#![warn(missing_docs)]

extern crate self as ferry_sdk;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "step",
        pub_export_macro: true,
        export_macro_name: "__export_step_world",
        default_bindings_module: "::ferry_sdk::bindings",
        runtime_path: "::ferry_sdk::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub mod archive;
pub mod exec;
pub mod http;
mod info;
mod inputs;
pub mod log;
pub mod setup;

pub use info::{Capabilities, Info, Input, Runs, Workspace};
pub use inputs::Inputs;

use bindings::ferry::step::types as wit;

/// Why a step did not succeed; ferry reports each case differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The step ran and its check failed.
    Failed(String),
    /// An input was missing or malformed.
    InvalidInput(String),
    /// The host refused something the step needed.
    Denied(String),
}

impl Error {
    /// [`Error::Failed`] with a message.
    pub fn failed(message: impl Into<String>) -> Self {
        Error::Failed(message.into())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Failed(m) | Error::InvalidInput(m) | Error::Denied(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    /// Fails the step with the error's words. When the sandbox refused the operation (a
    /// write where the step may only read, a path out of what it is shown), ferry says
    /// which grant was missing in the step's log and reports the step as `denied`.
    fn from(e: std::io::Error) -> Self {
        Error::Failed(e.to_string())
    }
}

/// The value of environment variable `name`: what the pipeline's `env:` sets, the host
/// variables granted to the step (`permissions.env`) and its granted secrets (masked
/// wherever they reach the log). A step sees no other variable of the host; when `name`
/// is not there the error is [`Error::Denied`], with the grant that would give it.
///
/// `std::env::var` reads the same variables; use it for variables that may be unset.
pub fn env(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| Error::Denied(env_denial(name)))
}

/// The words for a variable the step does not see.
fn env_denial(name: &str) -> String {
    format!(
        "environment variable `{name}` is not set for this step: a step sees only the variables its pipeline sets or grants it\nhint: declare it in `Capabilities` (`.env([\"{name}\"])` or `.secrets([\"{name}\"])`) and grant it in the step's `permissions:`, and set it on the host:\n    permissions:\n      env: [{name}]\nor, for a secret,\n    permissions:\n      secrets: [{name}]"
    )
}

/// A pipeline step.
pub trait Step {
    /// What the step is, takes, produces and needs. Called for `describe()` and to check
    /// inputs; keep it cheap and free of side effects.
    fn info() -> Info;

    /// Does the work. Inputs were checked against [`Step::info`] and defaults applied.
    fn run(inputs: &Inputs) -> Result<(), Error>;
}

/// The workspace-relative form of a path a host program printed.
///
/// Programs run through [`exec`] see the workspace at its host path and often print
/// absolute paths (`/home/ci/.ferry/.../src/lib.rs`); the step sees the same files relative
/// to its current directory. The longest tail of `path` that exists in the workspace is
/// taken (`src/lib.rs`); a relative path is taken as relative to `dir`, where the program
/// ran (`crates/app` and `src/lib.rs` give `crates/app/src/lib.rs`).
pub fn workspace_path(dir: &str, path: &str) -> String {
    let path = path.replace('\\', "/");
    let path = path.strip_prefix("./").unwrap_or(&path);
    let absolute = path.starts_with('/') || path.get(1..3) == Some(":/");
    if !absolute {
        let dir = dir.trim_start_matches("./").trim_end_matches('/');
        return if dir.is_empty() || dir == "." {
            path.to_string()
        } else {
            format!("{dir}/{path}")
        };
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    (0..parts.len())
        .map(|i| parts[i..].join("/"))
        .find(|tail| std::path::Path::new(tail).exists())
        .unwrap_or_else(|| path.to_string())
}

/// The path a step sees for a host location named in an input (`path: ./deploy/staging`):
/// absolute as given, or relative to the pipeline file's folder (`FERRY_PIPELINE_DIR`), the
/// way relative `permissions.paths` grants are. The step can reach it only if it is granted.
pub fn host_path(path: &str) -> String {
    let path = path.replace('\\', "/");
    let base = if path.starts_with('/') {
        String::new()
    } else {
        std::env::var("FERRY_PIPELINE_DIR")
            .unwrap_or_default()
            .replace('\\', "/")
    };
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Keeps a workspace file (a report, say) with the run record, where it outlives the
/// workspace: `.ferry/runs/<run>/files/<job>/<step>/<path>`.
pub fn keep_file(path: &str) -> Result<(), Error> {
    bindings::ferry::step::outputs::keep(path).map_err(Error::Failed)
}

/// Every file of the workspace, as paths relative to its root with `/` separators, sorted.
/// `.git` is never entered, symbolic links are not followed, and a directory for which
/// `skip_dir(path)` is true is not entered either.
pub fn workspace_files(skip_dir: impl Fn(&str) -> bool) -> std::io::Result<Vec<String>> {
    let mut files = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(if dir.is_empty() { "." } else { &dir })? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if dir.is_empty() {
                name.clone()
            } else {
                format!("{dir}/{name}")
            };
            let kind = entry.file_type()?;
            if kind.is_dir() && name != ".git" && !skip_dir(&path) {
                stack.push(path);
            } else if kind.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Sets an output that later steps read as `${{ steps.<id>.outputs.<name> }}`.
pub fn set_output(name: &str, value: &str) -> Result<(), Error> {
    bindings::ferry::step::outputs::set(name, value).map_err(Error::Failed)
}

/// Puts `dir` (a folder of the workspace, relative to its root, or of the job's `HOME`) on the
/// `PATH` of the job's later steps, as a line in `$FERRY_PATH` does. Heard only from a step
/// granted `workspace: write`; a setup step uses it so later steps find what it installed.
pub fn add_path(dir: &str) -> Result<(), Error> {
    bindings::ferry::step::outputs::add_path(dir).map_err(Error::Failed)
}

/// Sets `name` in the environment of the job's later steps, as a line in `$FERRY_ENV` does
/// (`VIRTUAL_ENV`, `CARGO_HOME`). Heard only from a step granted `workspace: write`; `PATH`
/// (see [`add_path`]) and variables that make programs load other code are refused.
pub fn set_env(name: &str, value: &str) -> Result<(), Error> {
    bindings::ferry::step::outputs::set_env(name, value).map_err(Error::Failed)
}

#[doc(hidden)]
pub fn __describe<S: Step>() -> wit::StepInfo {
    S::info().into_wit()
}

#[doc(hidden)]
pub fn __run<S: Step>(inputs: Vec<wit::Input>) -> Result<(), wit::StepError> {
    let info = S::info();
    let inputs = Inputs::new(
        &info,
        inputs.into_iter().map(|i| (i.name, i.value)).collect(),
    )
    .map_err(wit::StepError::InvalidInput)?;
    S::run(&inputs).map_err(|e| match e {
        Error::Failed(m) => wit::StepError::Failed(m),
        Error::InvalidInput(m) => wit::StepError::InvalidInput(m),
        Error::Denied(m) => wit::StepError::Denied(m),
    })
}

/// Exports a [`Step`] as the component's `describe` and `run`.
#[macro_export]
macro_rules! export {
    ($step:ty) => {
        const _: () = {
            struct __FerryStep;

            impl $crate::bindings::Guest for __FerryStep {
                fn describe() -> $crate::bindings::ferry::step::types::StepInfo {
                    $crate::__describe::<$step>()
                }

                fn run(
                    inputs: ::std::vec::Vec<$crate::bindings::ferry::step::types::Input>,
                ) -> ::std::result::Result<(), $crate::bindings::ferry::step::types::StepError>
                {
                    $crate::__run::<$step>(inputs)
                }
            }

            // Braces: rustfmt cannot settle on a layout for this call with parentheses.
            $crate::bindings::__export_step_world! { __FerryStep with_types_in $crate::bindings }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::Error;
    use std::io::{Error as IoError, ErrorKind};

    #[test]
    fn io_errors_fail_with_their_words_and_a_missing_variable_is_denied() {
        // The host, which knows what it refused, makes a refusal `denied`.
        for kind in [ErrorKind::PermissionDenied, ErrorKind::NotFound] {
            assert_eq!(
                Error::from(IoError::from(kind)),
                Error::Failed(IoError::from(kind).to_string())
            );
        }
        match super::env("FERRY_SDK_TEST_SURELY_UNSET") {
            Err(Error::Denied(m)) => {
                assert!(m.contains("env: [FERRY_SDK_TEST_SURELY_UNSET]"), "{m}");
                assert!(m.contains("secrets: [FERRY_SDK_TEST_SURELY_UNSET]"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
}
