//! Project tasks, so that a fresh machine with only rustup needs two commands:
//!
//! - `cargo xtask demo`: set up and run the example pipeline
//! - `cargo xtask test`: set up, then formatting, clippy and every test
//! - `cargo xtask bench`: the benchmark of ferry's per-step overhead (release build)

use std::process::{Command, ExitCode};

const WASM_TARGET: &str = "wasm32-wasip2";

fn main() -> ExitCode {
    // `cargo xtask demo -- --output plain` and `cargo xtask demo --output plain` alike.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--").collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(&args[1..]),
        Some("test") => test(),
        Some("bench") => bench(&args[1..]),
        Some("setup") => setup(),
        _ => {
            eprintln!("usage: cargo xtask <demo|test|bench|setup>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Installs what rustup does not install by itself: the wasm target and the lint tools.
fn setup() -> Result<(), String> {
    let installed = output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    if !installed.lines().any(|l| l.trim() == WASM_TARGET) {
        run("rustup", &["target", "add", WASM_TARGET])?;
    }
    let components = output("rustup", &["component", "list", "--installed"]).unwrap_or_default();
    for component in ["rustfmt", "clippy"] {
        if !components.lines().any(|l| l.starts_with(component)) {
            run("rustup", &["component", "add", component])?;
        }
    }
    Ok(())
}

fn demo(extra: &[String]) -> Result<(), String> {
    setup()?;
    let mut args = vec![
        "run",
        "--package",
        "ferry-cli",
        "--",
        "run",
        "examples/ferry.yaml",
    ];
    args.extend(extra.iter().map(String::as_str));
    run("cargo", &args)
}

fn test() -> Result<(), String> {
    setup()?;
    run("cargo", &["fmt", "--all", "--check"])?;
    run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    run("cargo", &["test", "--workspace"])
}

fn bench(extra: &[String]) -> Result<(), String> {
    setup()?;
    run("cargo", &["build", "--release", "--package", "ferry-cli"])?;
    let mut args = vec!["run", "--release", "--package", "ferry-bench", "--"];
    args.extend(extra.iter().map(String::as_str));
    run("cargo", &args)
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
