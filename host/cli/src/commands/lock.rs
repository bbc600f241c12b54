//! `ferry lock`, `ferry update` and `ferry login`.

use crate::exit;
use ferry_compose::plugins::Mode;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

/// Pin every registry plugin of the pipeline in ferry.lock (resolving only what is not
/// pinned yet), and drop entries no step uses.
#[derive(clap::Args)]
pub struct LockArgs {
    /// Pipeline file [default: ferry.yaml]
    file: Option<PathBuf>,
}

/// Resolve plugins again and move ferry.lock to what their references name now, refusing a
/// version that asks for capabilities the pipeline does not grant.
#[derive(clap::Args)]
pub struct UpdateArgs {
    /// Only these plugins: a `uses:` text, a repository, or its last part [default: all]
    plugins: Vec<String>,
    /// Pipeline file [default: ferry.yaml]
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
}

/// Store credentials for a registry in the Docker config (or its credential helper).
#[derive(clap::Args)]
pub struct LoginArgs {
    /// Registry host, e.g. `ghcr.io` or `localhost:5000`
    registry: String,
    /// User name
    #[arg(long, short = 'u')]
    username: String,
    /// Read the password or token from standard input
    #[arg(long)]
    password_stdin: bool,
}

pub fn lock(args: LockArgs) -> u8 {
    pin(args.file, Mode::Lock)
}

pub fn update(args: UpdateArgs) -> u8 {
    pin(args.file, Mode::Update(args.plugins))
}

fn pin(file: Option<PathBuf>, mode: Mode) -> u8 {
    let mut pipeline = match super::load(file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    match super::pin(&mut pipeline, mode) {
        Ok(wrote) => {
            let lock = ferry_registry::Lockfile::path_for(&pipeline.file);
            if !lock.is_file() {
                eprintln!("no registry plugins to lock");
            } else if !wrote {
                eprintln!("{} is up to date", lock.display());
            }
            exit::PASSED
        }
        Err(code) => code,
    }
}

pub fn login(args: LoginArgs) -> u8 {
    let host = args.registry.trim_end_matches('/');
    let host = host
        .strip_prefix("https://")
        .or_else(|| host.strip_prefix("http://"))
        .unwrap_or(host)
        .to_string();
    let stdin = std::io::stdin();
    if !args.password_stdin && stdin.is_terminal() {
        return super::fail(
            "give the password on standard input\nhint: `echo \"$TOKEN\" | ferry login REGISTRY -u USER --password-stdin`, so it stays out of your shell history",
        );
    }
    let mut password = String::new();
    if let Err(e) = stdin.lock().read_line(&mut password) {
        return super::fail(format!("cannot read the password: {e}"));
    }
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return super::fail("the password on standard input is empty");
    }
    let credentials = ferry_registry::credentials::Credentials {
        username: args.username,
        password,
    };
    let remote = ferry_registry::remote::Remote::new(&host, Some(credentials.clone()));
    if let Err(e) = remote.ping() {
        return super::fail(e);
    }
    match ferry_registry::credentials::store(&host, &credentials) {
        Ok(place) => {
            eprintln!("logged in to {host}; credentials saved in {place}");
            exit::PASSED
        }
        Err(e) => super::fail(e),
    }
}
