use crate::exit;

/// Print shell completions, e.g. `ferry completions bash > /etc/bash_completion.d/ferry`.
#[derive(clap::Args)]
pub struct Args {
    shell: clap_complete::Shell,
}

pub fn execute<C: clap::CommandFactory>(args: Args) -> u8 {
    let mut command = C::command();
    clap_complete::generate(args.shell, &mut command, "ferry", &mut std::io::stdout());
    exit::PASSED
}
