//! `ferry`: run CI/CD pipelines whose every step is a sandboxed WebAssembly component.

mod commands;
mod report;

/// `println!` that ignores a closed pipe (`ferry graph | head -1` is not an error).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::report::out(&format!($($arg)*))
    };
}

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Exit codes: the pipeline passed, failed, or ferry could not run it.
pub mod exit {
    pub const PASSED: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    /// Ctrl-C, as shells report SIGINT.
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Run CI/CD pipelines whose every step is a sandboxed WebAssembly component",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(commands::run::Args),
    Validate(commands::validate::Args),
    Graph(commands::graph::Args),
    Approve(commands::approve::ApproveArgs),
    Reject(commands::approve::RejectArgs),
    Deployments(commands::deployments::Args),
    Rollback(commands::rollback::Args),
    Runs(commands::runs::RunsArgs),
    Logs(commands::runs::LogsArgs),
    Artifacts(commands::artifacts::Args),
    Serve(commands::serve::Args),
    Trigger(commands::trigger::Args),
    #[command(subcommand)]
    Cache(commands::cache::Command),
    Lock(commands::lock::LockArgs),
    Update(commands::lock::UpdateArgs),
    Login(commands::lock::LoginArgs),
    #[command(subcommand)]
    Plugin(commands::plugin::Command),
    Completions(commands::completions::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::PASSED
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let code = match cli.command {
        Command::Run(args) => commands::run::execute(args),
        Command::Validate(args) => commands::validate::execute(args),
        Command::Graph(args) => commands::graph::execute(args),
        Command::Approve(args) => commands::approve::approve(args),
        Command::Reject(args) => commands::approve::reject(args),
        Command::Deployments(args) => commands::deployments::execute(args),
        Command::Rollback(args) => commands::rollback::execute(args),
        Command::Runs(args) => commands::runs::runs(args),
        Command::Logs(args) => commands::runs::logs(args),
        Command::Artifacts(args) => commands::artifacts::execute(args),
        Command::Serve(args) => commands::serve::execute(args),
        Command::Trigger(args) => commands::trigger::execute(args),
        Command::Cache(command) => commands::cache::execute(command),
        Command::Lock(args) => commands::lock::lock(args),
        Command::Update(args) => commands::lock::update(args),
        Command::Login(args) => commands::lock::login(args),
        Command::Plugin(command) => commands::plugin::execute(command),
        Command::Completions(args) => commands::completions::execute::<Cli>(args),
    };
    ExitCode::from(code)
}
