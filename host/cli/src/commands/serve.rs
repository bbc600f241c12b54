use ferry_server::forge::StatusTarget;
use ferry_server::hooks::Forge;
use ferry_server::repo::RepoConfig;
use ferry_server::{Auth, Config, Server};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Run pipelines when a repository changes: webhooks, polling and schedules, with a web
/// dashboard and a JSON API
#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Where the run history, mirrors and run records live [default: ./ferry-data]
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// A repository to build: a local path or a URL git can clone (repeatable)
    #[arg(long = "repo", value_name = "PATH_OR_URL")]
    repos: Vec<String>,
    /// Environment variable holding the webhook secret of the `--repo` repositories
    #[arg(long, value_name = "NAME")]
    webhook_secret_env: Option<String>,
    /// Environment variable holding the API token (needed to approve, cancel, re-run)
    #[arg(long, value_name = "NAME")]
    token_env: Option<String>,
    /// Let anyone read runs and logs without logging in
    #[arg(long)]
    public: bool,
    /// Look for new commits in the `--repo` repositories this often (e.g. 30s, 5m)
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    poll: Option<Duration>,
    /// Runs executing at once [default: 2]
    #[arg(long, value_name = "N")]
    max_runs: Option<usize>,
    /// Jobs executing at once over all runs [default: number of cores]
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
    /// Finished runs to keep [default: 1000]
    #[arg(long, value_name = "N")]
    keep_runs: Option<usize>,
    /// Queue runs a restart finds interrupted again
    #[arg(long)]
    retry_interrupted: bool,
    /// The dashboard's address as people reach it, for links in commit statuses
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Settings file (TOML); flags override it
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Run pull requests from forks even where this system cannot confine the programs
    /// their steps start (no unprivileged user namespaces, macOS, Windows)
    #[arg(long)]
    allow_unconfined: bool,
}

fn duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30s or 5m"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("`{text}` is not a duration like 30s or 5m")),
    };
    if seconds == 0 {
        return Err("a poll interval must be at least 1s".into());
    }
    Ok(Duration::from_secs(seconds))
}

/// The settings file: the same settings as the flags, plus per-repository ones. Secrets
/// are named by environment variable, never written in the file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    token_env: Option<String>,
    webhook_secret_env: Option<String>,
    #[serde(default)]
    public: bool,
    max_runs: Option<usize>,
    jobs: Option<usize>,
    keep_runs: Option<usize>,
    #[serde(default)]
    retry_interrupted: bool,
    url: Option<String>,
    #[serde(default)]
    users: BTreeMap<String, UserEntry>,
    #[serde(default)]
    repo: Vec<RepoEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct UserEntry {
    password_env: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RepoEntry {
    url: String,
    name: Option<String>,
    pipeline: Option<String>,
    webhook_secret_env: Option<String>,
    poll: Option<String>,
    status: Option<StatusEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct StatusEntry {
    forge: String,
    api: String,
    project: Option<String>,
    token_env: String,
    context: Option<String>,
}

/// A local repository as an absolute path (git clones it from elsewhere); URLs as given.
fn absolute(url: &str) -> String {
    match std::fs::canonicalize(url) {
        Ok(path) if !url.contains("://") => path.to_string_lossy().into_owned(),
        _ => url.to_string(),
    }
}

/// The value of the variable `name`, which holds one of the server's own credentials.
fn env(name: &str, what: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        _ => Err(format!(
            "{what} is read from `${name}`, which is not set\nhint: export {name}=... before `ferry serve`"
        )),
    }
}

/// The server's settings, and the names of the variables that hold its own credentials:
/// no step may be given those, whatever its pipeline grants.
fn config(args: Args) -> Result<(Config, BTreeSet<String>), String> {
    let mut credentials = BTreeSet::new();
    let mut env = |name: &str, what: &str| {
        credentials.insert(name.to_string());
        env(name, what)
    };
    let file: File = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("`{}` is not valid: {e}", path.display()))?
        }
        None => File::default(),
    };
    let secret_env = args.webhook_secret_env.or(file.webhook_secret_env);
    let secret = secret_env
        .as_deref()
        .map(|name| env(name, "the webhook secret"))
        .transpose()?;
    let mut repos = Vec::new();
    for url in &args.repos {
        let mut repo = RepoConfig::new(&absolute(url));
        repo.webhook_secret = secret.clone();
        repo.poll = args.poll;
        repos.push(repo);
    }
    for entry in file.repo {
        let mut repo = RepoConfig::new(&absolute(&entry.url));
        if let Some(name) = entry.name {
            repo.name = name;
        }
        if let Some(pipeline) = entry.pipeline {
            repo.pipeline = pipeline;
        }
        repo.webhook_secret = match &entry.webhook_secret_env {
            Some(name) => Some(env(name, "a repository's webhook secret")?),
            None => secret.clone(),
        };
        repo.poll = match (&entry.poll, args.poll) {
            (Some(text), _) => Some(duration(text)?),
            (None, poll) => poll,
        };
        if let Some(status) = entry.status {
            let forge = Forge::parse(&status.forge).ok_or_else(|| {
                format!(
                    "`status.forge = \"{}\"` names no forge ferry reports to\nhint: use github, gitea or gitlab",
                    status.forge
                )
            })?;
            repo.status = Some(StatusTarget {
                forge,
                api: status.api,
                project: status.project.unwrap_or_else(|| repo.name.clone()),
                token: env(&status.token_env, "a commit-status token")?,
                context: status.context.unwrap_or_else(|| "ferry".into()),
            });
        }
        repos.push(repo);
    }
    if repos.is_empty() {
        return Err("no repository to build\nhint: `ferry serve --repo PATH_OR_URL`, or `[[repo]]` in the settings file".into());
    }
    let token = args
        .token_env
        .or(file.token_env)
        .map(|name| env(&name, "the API token"))
        .transpose()?;
    let mut users = BTreeMap::new();
    for (user, entry) in file.users {
        users.insert(
            user.clone(),
            env(&entry.password_env, &format!("the password of `{user}`"))?,
        );
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let config = Config {
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        data: args
            .data
            .or(file.data)
            .unwrap_or_else(|| PathBuf::from("ferry-data")),
        repos,
        max_runs: args.max_runs.or(file.max_runs).unwrap_or(2),
        max_jobs: args.jobs.or(file.jobs).unwrap_or(cores),
        auth: Auth {
            token,
            users,
            public: args.public || file.public,
        },
        keep_runs: args.keep_runs.or(file.keep_runs).unwrap_or(1000),
        retry_interrupted: args.retry_interrupted || file.retry_interrupted,
        public_url: args.url.or(file.url),
    };
    Ok((config, credentials))
}

pub fn execute(args: Args) -> u8 {
    // The server holds credentials; nothing else of this user may read its memory.
    if let Err(e) = ferry_sandbox::confine::keep_private() {
        eprintln!("warning: cannot make the server's memory private: {e}");
    }
    let allow_unconfined = args.allow_unconfined;
    let (mut config, credentials) = match config(args) {
        Ok(found) => found,
        Err(e) => return super::fail(e),
    };
    // The data directory is absolute so worktrees and records do not depend on where a
    // git command runs.
    if config.data.is_relative()
        && let Ok(cwd) = std::env::current_dir()
    {
        config.data = cwd.join(&config.data);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return super::fail(format!("cannot start the runtime: {e}")),
    };
    let sandbox = match super::sandbox(config.max_jobs) {
        Ok(s) => Arc::new(s),
        Err(code) => return code,
    };
    // What steps may be granted: the server's environment without its own credentials.
    let mut host_env = BTreeMap::clone(&ferry_compose::host_env());
    host_env.retain(|name, _| !credentials.contains(name));
    if let Some(why) = ferry_sandbox::confine::unavailable() {
        eprintln!(
            "warning: programs that steps start will run unconfined: {why}\nhint: pull requests from forks are refused unless `--allow-unconfined` is given"
        );
    }
    let executor = Arc::new(ferry_compose::SandboxExecutor::new(
        sandbox,
        host_env,
        allow_unconfined,
    ));
    let server = match Server::new(config, executor) {
        Ok(server) => server,
        Err(e) => return super::fail(e.to_string()),
    };
    let stop = async {
        // Without a signal handler the server runs until it is killed.
        if !super::run::stop_signal().await {
            std::future::pending::<()>().await;
        }
    };
    match runtime.block_on(server.serve(stop)) {
        Ok(()) => crate::exit::PASSED,
        Err(e) => super::fail(e.to_string()),
    }
}
