use super::remote::{self, Remote, ServerArg};
use crate::exit;

/// Start a run on a `ferry serve` (as its `on.manual` trigger)
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    server: ServerArg,
    /// The repository, when the server builds several
    #[arg(long)]
    repo: Option<String>,
    /// Branch, tag or commit to build [default: the default branch]
    #[arg(long = "ref", value_name = "REF")]
    reference: Option<String>,
    /// An input the pipeline's `on.manual.inputs` takes (repeatable)
    #[arg(long = "input", value_name = "NAME=VALUE", value_parser = super::run::assignment)]
    inputs: Vec<(String, String)>,
    /// Print the run's logs as it goes; the exit code is the run's
    #[arg(long)]
    follow: bool,
}

pub fn execute(args: Args) -> u8 {
    let Some(server) = args.server.server else {
        return super::fail(
            "`ferry trigger` starts a run on a server; pass `--server URL` or set FERRY_SERVER\nhint: `ferry run` runs the pipeline here",
        );
    };
    let remote = Remote::new(&server);
    let inputs: std::collections::BTreeMap<String, String> = args.inputs.into_iter().collect();
    let answer = match remote.post(
        "/api/trigger",
        serde_json::json!({
            "repo": args.repo,
            "ref": args.reference.unwrap_or_default(),
            "inputs": inputs,
        }),
    ) {
        Ok(answer) => answer,
        Err(e) => return super::fail(e),
    };
    let Some(id) = answer["run"].as_i64() else {
        return super::fail(format!("the server answered {answer}"));
    };
    eprintln!("run #{id} queued: {}/runs/{id}", remote.base());
    crate::say!("{id}");
    if !args.follow {
        return exit::PASSED;
    }
    match remote::logs(&remote, &id.to_string(), None, true) {
        Ok(code) => code,
        Err(e) => super::fail(e),
    }
}
