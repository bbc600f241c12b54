//! `ferry deployments`: what was deployed where, newest first.

use crate::{exit, say};
use ferry_engine::deployments::{self, Outcome};
use std::path::PathBuf;

/// List the deployment history
#[derive(clap::Args)]
pub struct Args {
    /// Only this environment
    environment: Option<String>,
    /// Pipeline file whose `.ferry/` holds the history [default: ferry.yaml]
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// One JSON object per line, oldest first, as stored
    #[arg(long)]
    json: bool,
}

pub fn execute(args: Args) -> u8 {
    let state_dir = match super::state_dir_of(args.file) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let history = match deployments::read(&state_dir) {
        Ok(h) => h,
        Err(e) => return super::fail(format!("cannot read the deployment history: {e}")),
    };
    let shown: Vec<&deployments::Deployment> = history
        .iter()
        .filter(|d| {
            args.environment
                .as_ref()
                .is_none_or(|e| *e == d.environment)
        })
        .collect();
    if args.json {
        for d in &shown {
            if let Ok(line) = serde_json::to_string(d) {
                say!("{line}");
            }
        }
        return exit::PASSED;
    }
    if shown.is_empty() {
        eprintln!(
            "nothing deployed{}",
            args.environment
                .map(|e| format!(" to `{e}`"))
                .unwrap_or_default()
        );
        return exit::PASSED;
    }
    let current: Vec<*const deployments::Deployment> = shown
        .iter()
        .filter_map(|d| deployments::current(&history, &d.environment))
        .map(|d| d as *const _)
        .collect();
    say!(
        "{:<14} {:<22} {:<12} {:<21} {:<20} NOTE",
        "ENVIRONMENT",
        "VERSION",
        "OUTCOME",
        "AT",
        "RUN"
    );
    for d in shown.iter().rev() {
        let live = if current.contains(&(*d as *const _)) {
            "● serving"
        } else {
            ""
        };
        let note = match (&d.message, d.outcome) {
            (Some(m), _) => m.clone(),
            (None, Outcome::Rollback) => "restored".into(),
            _ => String::new(),
        };
        say!(
            "{:<14} {:<22} {:<12} {:<21} {:<20} {}",
            d.environment,
            d.version,
            d.outcome.as_str(),
            d.at.get(..19).unwrap_or(&d.at),
            d.run,
            [live, note.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    exit::PASSED
}
