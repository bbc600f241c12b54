use crate::exit;

/// Print shell completions, e.g. `ferry completions bash > /etc/bash_completion.d/ferry`.
#[derive(clap::Args)]
pub struct Args {
    shell: clap_complete::Shell,
}

pub fn execute<C: clap::CommandFactory>(args: Args) -> u8 {
    let mut command = C::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "ferry", &mut script);
    crate::report::out(String::from_utf8_lossy(&script).trim_end());
    exit::PASSED
}
