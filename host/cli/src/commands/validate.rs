use crate::exit;
use std::path::PathBuf;

/// Check a pipeline file, and its steps against the plugins they use; report every problem
/// at once.
#[derive(clap::Args)]
pub struct Args {
    /// Pipeline file [default: ferry.yaml]
    file: Option<PathBuf>,
}

pub fn execute(args: Args) -> u8 {
    let checked = super::load(args.file).and_then(|mut pipeline| {
        super::pin(&mut pipeline, ferry_compose::plugins::Mode::Check)?;
        let sandbox = super::sandbox(1)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| super::fail(format!("cannot start the runtime: {e}")))?;
        runtime.block_on(super::check_plugins(&sandbox, &pipeline))?;
        Ok(pipeline)
    });
    match checked {
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
