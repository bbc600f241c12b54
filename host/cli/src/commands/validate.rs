use crate::exit;
use std::path::PathBuf;

/// Check a pipeline file and report every problem at once.
#[derive(clap::Args)]
pub struct Args {
    /// Pipeline file [default: ferry.yaml]
    file: Option<PathBuf>,
}

pub fn execute(args: Args) -> u8 {
    match super::load(args.file) {
        Ok(pipeline) => {
            let steps: usize = pipeline.jobs.iter().map(|j| j.steps.len()).sum();
            crate::say!(
                "`{}` is valid: {} job{}, {steps} step{}",
                pipeline.file.display(),
                pipeline.jobs.len(),
                if pipeline.jobs.len() == 1 { "" } else { "s" },
                if steps == 1 { "" } else { "s" }
            );
            exit::PASSED
        }
        Err(code) => code,
    }
}
