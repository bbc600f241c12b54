//! ferry's built-in `rust` setup step: makes sure a rustup toolchain is installed with the
//! components and targets the job needs, and chooses it for the job's later steps
//! (`RUSTUP_TOOLCHAIN`), so `cargo` on `PATH` (rustup's proxy) runs it.
//!
//! An installed toolchain costs one `rustup` call; a missing one is installed with rustup
//! (which needs `static.rust-lang.org` in the step's `network:` grant).

use ferry_sdk::exec::Command;
use ferry_sdk::{Capabilities, Error, Info, Input, Inputs, Step, info, set_output};

struct Rust;

impl Step for Rust {
    fn info() -> Info {
        Info::new(
            "rust",
            env!("CARGO_PKG_VERSION"),
            "Installs a rustup toolchain with its components and targets if it is missing, and chooses it for the job's later steps.",
        )
        .input(Input::string("toolchain", "The toolchain: `stable`, `1.95.0`, `nightly-2026-11-01`.").default("stable"))
        .input(Input::string("components", "Components, separated by spaces or commas: `clippy rustfmt`."))
        .input(Input::string("targets", "Targets, separated by spaces or commas: `wasm32-wasip2`."))
        .output("rustc-version", "What `rustc --version` says.")
        .capabilities(Capabilities::write_workspace().exec(["*"]).network(["*"]))
    }

    fn run(inputs: &Inputs) -> Result<(), Error> {
        let toolchain = inputs.string("toolchain")?;
        // Never an option to rustup: it starts with a letter or digit.
        let valid = toolchain.starts_with(|c: char| c.is_ascii_alphanumeric())
            && toolchain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !valid {
            return Err(Error::InvalidInput(format!(
                "`{toolchain}` is not a toolchain name"
            )));
        }
        let list = |name: &str| -> Vec<String> {
            inputs
                .optional(name)
                .unwrap_or_default()
                .split([' ', ','])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        let (components, targets) = (list("components"), list("targets"));
        if let Some(bad) = components
            .iter()
            .chain(&targets)
            .find(|c| c.starts_with('-'))
        {
            return Err(Error::InvalidInput(format!(
                "`{bad}` is not a component or target name"
            )));
        }
        let installed = Command::new("rustup")
            .args(["toolchain", "list"])
            .quiet()
            .run()?
            .check()?
            .stdout_text();
        // `stable-x86_64-unknown-linux-gnu (default)`: the name before the host triple.
        let have = installed.lines().any(|line| {
            let name = line.split_whitespace().next().unwrap_or_default();
            // `nightly-x86_64-…` is `nightly`; `nightly-2026-11-01-…` is another toolchain.
            name == toolchain
                || name
                    .strip_prefix(&format!("{toolchain}-"))
                    .is_some_and(|host| !host.starts_with(|c: char| c.is_ascii_digit()))
        });
        if !have {
            info!("installing the `{toolchain}` toolchain");
            Command::new("rustup")
                .args([
                    "toolchain",
                    "install",
                    &toolchain,
                    "--profile",
                    "minimal",
                    "--no-self-update",
                ])
                .run()?
                .check()?;
        }
        // Each is a no-op for what is there already.
        if !components.is_empty() {
            Command::new("rustup")
                .args(["component", "add", "--toolchain", &toolchain])
                .args(components)
                .run()?
                .check()?;
        }
        if !targets.is_empty() {
            Command::new("rustup")
                .args(["target", "add", "--toolchain", &toolchain])
                .args(targets)
                .run()?
                .check()?;
        }
        let version = Command::new("rustup")
            .args(["run", &toolchain, "rustc", "--version"])
            .quiet()
            .run()?
            .check()?
            .stdout_text();
        let version = version.trim();
        ferry_sdk::set_env("RUSTUP_TOOLCHAIN", &toolchain)?;
        info!("{version}: the job's later steps run the `{toolchain}` toolchain");
        set_output("rustc-version", version)
    }
}

ferry_sdk::export!(Rust);
