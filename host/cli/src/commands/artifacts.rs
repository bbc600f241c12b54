//! `ferry artifacts`: list a run's artifacts and extract one.

use crate::exit;
use crate::say;
use ferry_model::pipeline::format_size;
use std::path::PathBuf;

/// List the artifacts a run uploaded, or extract one (`ferry artifacts get RUN NAME`)
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The run id (as `ferry run` prints it), or `latest`
    #[arg(required = true)]
    run: Option<String>,
    /// Pipeline file whose `.ferry/` holds the run [default: ferry.yaml]
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// Print JSON: one object per artifact with its files
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Extract an artifact's files, byte for byte with their modes
    Get(GetArgs),
}

#[derive(clap::Args)]
struct GetArgs {
    /// The run id, or `latest`
    run: String,
    /// The artifact's name
    name: String,
    /// Directory to extract into [default: ./NAME]
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Pipeline file whose `.ferry/` holds the run [default: ferry.yaml]
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
}

pub fn execute(args: Args) -> u8 {
    match (args.command, args.run) {
        (Some(Command::Get(get)), _) => extract(get),
        (None, Some(run)) => list(&run, args.file, args.json),
        (None, None) => super::fail("name a run: `ferry artifacts RUN`"),
    }
}

fn list(run: &str, file: Option<PathBuf>, json: bool) -> u8 {
    let (_, dir) = match super::find_run(file, run) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let artifacts = match ferry_engine::artifacts::list(&dir) {
        Ok(a) => a,
        Err(e) => return super::fail(format!("cannot read the artifacts of `{run}`: {e}")),
    };
    if json {
        say!(
            "{}",
            serde_json::to_string_pretty(&artifacts).unwrap_or_default()
        );
        return exit::PASSED;
    }
    if artifacts.is_empty() {
        eprintln!("run {run} uploaded no artifacts");
        return exit::PASSED;
    }
    say!("{:<24} {:>7} {:>10}  FROM", "NAME", "FILES", "SIZE");
    for a in &artifacts {
        say!(
            "{:<24} {:>7} {:>10}  {}/{}",
            a.name,
            a.file_count(),
            format_size(a.size()),
            a.job,
            a.step
        );
    }
    exit::PASSED
}

fn extract(args: GetArgs) -> u8 {
    let (state_dir, dir) = match super::find_run(args.file, &args.run) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let artifact = match ferry_engine::artifacts::read(&dir, &args.name) {
        Ok(Some(a)) => a,
        Ok(None) => {
            let names: Vec<String> = ferry_engine::artifacts::list(&dir)
                .unwrap_or_default()
                .into_iter()
                .map(|a| format!("`{}`", a.name))
                .collect();
            let hint = match names.is_empty() {
                true => "it uploaded none".to_string(),
                false => format!("it uploaded {}", names.join(", ")),
            };
            return super::fail(format!(
                "run `{}` has no artifact `{}`\nhint: {hint}",
                args.run, args.name
            ));
        }
        Err(e) => return super::fail(format!("cannot read artifact `{}`: {e}", args.name)),
    };
    let output = args.output.unwrap_or_else(|| PathBuf::from(&args.name));
    if let Err(e) = ferry_engine::artifacts::extract(&state_dir, &artifact, &output) {
        return super::fail(format!(
            "cannot extract artifact `{}` into `{}`: {e}",
            args.name,
            output.display()
        ));
    }
    eprintln!(
        "extracted `{}` ({} files, {}) into {}",
        args.name,
        artifact.file_count(),
        format_size(artifact.size()),
        output.display()
    );
    exit::PASSED
}
