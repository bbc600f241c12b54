use crate::exit;
use ferry_model::Plan;
use std::path::PathBuf;

/// Print the job graph.
#[derive(clap::Args)]
pub struct Args {
    /// Pipeline file [default: ferry.yaml]
    file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Mermaid)]
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Mermaid,
    Dot,
}

pub fn execute(args: Args) -> u8 {
    let pipeline = match super::load(args.file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let plan = match Plan::new(pipeline, &[]) {
        Ok(plan) => plan,
        Err(e) => return super::fail(e.to_string()),
    };
    let text = match args.format {
        Format::Mermaid => plan.mermaid(),
        Format::Dot => plan.dot(),
    };
    crate::report::out(text.trim_end());
    exit::PASSED
}
