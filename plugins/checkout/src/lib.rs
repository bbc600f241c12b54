//! ferry's built-in `checkout` step.
//!
//! Puts the repository at a ref into the workspace: the local repository the pipeline lives
//! in (the job's workspace is already a copy of it, `.git` included), its working tree as it
//! is (`dirty: true`), or a remote by URL. Everything runs through `git` on the host via the
//! `process` capability: values from the pipeline reach git as plain arguments after checks
//! that refuse anything git would read as an option or an executable transport.

mod safety;

use ferry_sdk::exec::{Command, Output};
use ferry_sdk::{Capabilities, Error, Info, Input, Inputs, Step, info, set_output};

struct Checkout;

impl Step for Checkout {
    fn info() -> Info {
        Info::new(
            "checkout",
            env!("CARGO_PKG_VERSION"),
            "Checks out the repository at a ref: the local one (committed state, or the working \
             tree with `dirty: true`) or a remote by URL.",
        )
        .input(Input::string(
            "repository",
            "A remote URL (https://, ssh://, git@host:path, file://) or local path; empty for the \
             repository the pipeline lives in.",
        ))
        .input(Input::string("ref", "A branch, tag or commit sha; default the local HEAD or the remote's default branch."))
        .input(Input::boolean("dirty", "Keep the working tree as it is, uncommitted changes included (local only)."))
        .input(Input::integer("depth", "Commits of history to fetch from a remote; 0 for all.").default("1"))
        .input(Input::boolean("submodules", "Also check out submodules, recursively."))
        .input(Input::boolean("lfs", "Also fetch Git LFS files (needs git-lfs on the host)."))
        .input(Input::string("path", "Where in the workspace to put the checkout.").default("."))
        .input(Input::boolean("clean", "Remove untracked files, leaving exactly the commit.").default("true"))
        .input(Input::string("token", "The name of a granted secret holding a token for an https remote; it is sent as an HTTP header and never written to disk."))
        .output("sha", "The commit checked out.")
        .output("short-sha", "Its first 7 characters.")
        .output("ref", "The ref asked for, or HEAD.")
        .output("branch", "The branch, when the ref is one.")
        .output("commit-message", "The commit's subject line.")
        .output("commit-time", "The commit's time in seconds since 1970, for `SOURCE_DATE_EPOCH`.")
        .output("author", "The commit's author, as `Name <email>`.")
        .capabilities(
            // The repository is the user's choice: a granted host, or a granted local path.
            Capabilities::write_workspace()
                .exec(["git"])
                .secrets(["*"])
                .network(["*"])
                .path("*", false),
        )
    }

    fn run(inputs: &Inputs) -> Result<(), Error> {
        let repository = inputs.optional("repository").filter(|r| !r.is_empty());
        let wanted = inputs.optional("ref").filter(|r| !r.is_empty());
        if let Some(r) = &wanted {
            safety::check_ref(r)?;
        }
        let path = safety::check_path(&inputs.string("path")?)?;
        let git = Git {
            dir: path.clone(),
            auth: match inputs.optional("token").filter(|t| !t.is_empty()) {
                None => None,
                Some(name) => Some(std::env::var(&name).map_err(|_| {
                    Error::Denied(format!(
                        "secret `{name}` is not granted to this step; add it under `permissions: {{ secrets: [{name}] }}`"
                    ))
                })?),
            },
        };
        let branch = match &repository {
            None => Branch::Named(local(&git, wanted.as_deref(), inputs)?),
            Some(url) => {
                safety::check_url(url)?;
                remote(&git, url, wanted.as_deref(), inputs)?
            }
        };
        if inputs.boolean("submodules")? {
            git.run(&["submodule", "update", "--init", "--recursive"])?;
        }
        if inputs.boolean("lfs")? {
            git.run(&["lfs", "pull"])
                .map_err(|e| Error::failed(format!("{e} (is git-lfs installed on the host?)")))?;
        }
        // One git for all of them: every process costs milliseconds.
        let head = git.text(&["log", "-1", "--format=%H%n%ct%n%an <%ae>%n%s%n%D"])?;
        let mut lines = head.lines();
        let sha = lines.next().unwrap_or_default().to_string();
        let time = lines.next().unwrap_or_default().to_string();
        let author = lines.next().unwrap_or_default().to_string();
        let subject = lines.next().unwrap_or_default().to_string();
        let branch = match branch {
            Branch::Named(b) => b,
            // `%D` reads `HEAD -> main, origin/main` on a branch, `HEAD, tag: v2` off one.
            Branch::OfHead => lines.next().and_then(|refs| {
                refs.split(", ")
                    .find_map(|r| r.strip_prefix("HEAD -> "))
                    .map(String::from)
            }),
        };
        info!("checked out {} ({subject})", &sha[..sha.len().min(12)]);
        for (name, value) in [
            ("sha", sha.as_str()),
            ("short-sha", &sha[..sha.len().min(7)]),
            ("ref", wanted.as_deref().unwrap_or("HEAD")),
            ("branch", branch.as_deref().unwrap_or("")),
            ("commit-message", subject.as_str()),
            ("commit-time", time.as_str()),
            ("author", author.as_str()),
        ] {
            set_output(name, value)?;
        }
        Ok(())
    }
}

/// The local repository: the workspace already holds a copy with its `.git`.
fn local(git: &Git, wanted: Option<&str>, inputs: &Inputs) -> Result<Option<String>, Error> {
    if git.dir != "." {
        return Err(Error::InvalidInput(
            "`path` is for remote repositories; the local one is the workspace itself".into(),
        ));
    }
    if git.run(&["rev-parse", "--git-dir"]).is_err() {
        return Err(Error::failed(
            "the workspace has no git repository: the pipeline is not in one; give `repository:` to check one out",
        ));
    }
    if inputs.boolean("dirty")? {
        if wanted.is_some() {
            return Err(Error::InvalidInput(
                "`dirty: true` keeps the working tree as it is; it cannot be combined with `ref`"
                    .into(),
            ));
        }
        info!("keeping the working tree as it is, uncommitted changes included");
        return git.branch();
    }
    let target = wanted.unwrap_or("HEAD");
    let sha = git
        .text(&[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &format!("{target}^{{commit}}"),
        ])
        .map_err(|_| {
            Error::InvalidInput(format!(
                "`{target}` is not a commit, branch or tag of this repository"
            ))
        })?;
    let branch = match wanted {
        None => git.branch()?,
        Some(r) => git
            .run(&[
                "show-ref",
                "--verify",
                "--quiet",
                &format!("refs/heads/{r}"),
            ])
            .ok()
            .map(|_| r.to_string()),
    };
    git.run(&["checkout", "--quiet", "--force", "--detach", &sha])?;
    if inputs.boolean("clean")? {
        git.run(&["clean", "-ffdq"])?;
    }
    Ok(branch)
}

/// A remote: an empty (or new) directory, one fetch of the ref, a detached checkout.
fn remote(git: &Git, url: &str, wanted: Option<&str>, inputs: &Inputs) -> Result<Branch, Error> {
    if inputs.boolean("dirty")? {
        return Err(Error::InvalidInput(
            "`dirty` applies to the local repository only".into(),
        ));
    }
    let dir = std::path::Path::new(&git.dir);
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(Error::InvalidInput(format!(
            "`{}` is not empty; check the remote out into a new directory with `path:`",
            git.dir
        )));
    }
    let depth = inputs.integer("depth")?;
    // A branch, a tag or the default branch: one `git clone`, which costs one process
    // where init, fetch and checkout cost three. A sha or another ref needs a fetch.
    let is_sha = |r: &str| r.len() >= 7 && r.chars().all(|c| c.is_ascii_hexdigit());
    // A URL with credentials in it takes the fetch path, which keeps it out of `.git/config`.
    let credentials = url.split_once("://").is_some_and(|(_, rest)| {
        rest.split('/')
            .next()
            .is_some_and(|host| host.contains('@'))
    });
    if !credentials && !wanted.is_some_and(|r| is_sha(r) || r.starts_with("refs/")) {
        let mut clone = vec!["clone".to_string(), "--quiet".into(), "--no-tags".into()];
        if depth >= 1 {
            clone.push(format!("--depth={depth}"));
        }
        if let Some(r) = wanted {
            clone.push(format!("--branch={r}"));
        }
        clone.push("--end-of-options".into());
        clone.push(url.to_string());
        clone.push(git.dir.clone());
        let args: Vec<&str> = clone.iter().map(String::as_str).collect();
        let top = Git {
            dir: ".".into(),
            auth: git.auth.clone(),
        };
        match top.run(&args) {
            Ok(_) => return Ok(Branch::OfHead),
            // `--branch` takes branches and tags git clone can see; a tag hidden by
            // `--no-tags` is fetched below.
            Err(e) if wanted.is_some() && e.to_string().contains("not found in upstream") => {}
            Err(e) => return Err(e),
        }
    }
    std::fs::create_dir_all(dir)?;
    git.run(&["init", "--quiet"])?;
    let mut fetch = vec!["fetch".to_string(), "--quiet".into(), "--no-tags".into()];
    if depth >= 1 {
        fetch.push(format!("--depth={depth}"));
    }
    fetch.push("--end-of-options".into());
    fetch.push(url.to_string());
    if let Some(r) = wanted {
        fetch.push(r.to_string());
    }
    let args: Vec<&str> = fetch.iter().map(String::as_str).collect();
    git.run(&args)?;
    git.run(&["checkout", "--quiet", "--force", "--detach", "FETCH_HEAD"])?;
    let branch = match wanted {
        None => None,
        Some(r) => git
            .run(&["ls-remote", "--heads", "--end-of-options", url, r])
            .ok()
            .filter(|out| !out.stdout_text().trim().is_empty())
            .map(|_| r.to_string()),
    };
    Ok(Branch::Named(branch))
}

/// The branch a checkout is on, or that it is whatever HEAD is attached to.
enum Branch {
    Named(Option<String>),
    OfHead,
}

/// `git` in one directory of the workspace, hardened against what a repository or an input
/// could make it do.
struct Git {
    dir: String,
    auth: Option<String>,
}

impl Git {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("git")
            .cwd(self.dir.clone())
            .env("GIT_TERMINAL_PROMPT", "0")
            // Only transports that move data; `ext::` and friends run commands.
            .env("GIT_ALLOW_PROTOCOL", "https:http:ssh:git:file")
            .env("GIT_CONFIG_NOSYSTEM", "1");
        let mut config = vec![("protocol.ext.allow".to_string(), "never".to_string())];
        if let Some(token) = &self.auth {
            config.push((
                "http.extraHeader".into(),
                format!("Authorization: Bearer {token}"),
            ));
        }
        // Config through the environment reaches this git only, never `.git/config`.
        cmd = cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        for (i, (key, value)) in config.into_iter().enumerate() {
            cmd = cmd
                .env(format!("GIT_CONFIG_KEY_{i}"), key)
                .env(format!("GIT_CONFIG_VALUE_{i}"), value);
        }
        cmd.args(args.iter().copied())
    }

    fn run(&self, args: &[&str]) -> Result<Output, Error> {
        let out = self.command(args).quiet().run()?;
        if out.success() {
            Ok(out)
        } else {
            let mut why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            // Git words a 401 as a prompt it was not allowed to show.
            if why.contains("could not read Username") || why.contains("Authentication failed") {
                why = match self.auth {
                    Some(_) => format!("the remote refused the token ({why})"),
                    None => format!(
                        "the remote asks for credentials: set `token:` to the name of a granted \
                         secret holding a token ({why})"
                    ),
                };
            }
            Err(Error::failed(format!(
                "`git {}` failed: {why}",
                args.first().copied().unwrap_or_default()
            )))
        }
    }

    fn text(&self, args: &[&str]) -> Result<String, Error> {
        Ok(self.run(args)?.stdout_text().trim().to_string())
    }

    /// The checked-out branch, if HEAD is on one.
    fn branch(&self) -> Result<Option<String>, Error> {
        Ok(self
            .run(&["symbolic-ref", "--quiet", "--short", "HEAD"])
            .ok()
            .map(|o| o.stdout_text().trim().to_string()))
    }
}

ferry_sdk::export!(Checkout);
