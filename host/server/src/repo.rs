//! The repositories a server builds: a bare mirror of each under `<data>/repos/`, fetched
//! when a trigger names a commit it lacks, and a worktree per run.

use crate::gitnames;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// A repository as configured (`--repo` or `[[repo]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct RepoConfig {
    /// How runs and the API name it; matched against the `owner/name` a webhook gives.
    pub name: String,
    /// A local path or a URL git can clone.
    pub url: String,
    /// The pipeline file, relative to the repository root.
    pub pipeline: String,
    /// The shared secret its webhooks are signed with.
    pub webhook_secret: Option<String>,
    /// How often to look for new commits, for setups without webhooks.
    pub poll: Option<Duration>,
    /// Where to report commit statuses, when a token is configured.
    pub status: Option<crate::forge::StatusTarget>,
}

impl RepoConfig {
    /// A repository named after the last parts of its path or URL: `acme/app` for
    /// `https://example.com/acme/app.git`, `app` for `/srv/git/app`.
    pub fn new(url: &str) -> RepoConfig {
        RepoConfig {
            name: default_name(url),
            url: url.to_string(),
            pipeline: "ferry.yaml".into(),
            webhook_secret: None,
            poll: None,
            status: None,
        }
    }
}

fn default_name(url: &str) -> String {
    let url = without_credentials(url);
    let trimmed = url.trim_end_matches('/').trim_end_matches(".git");
    let is_url = trimmed.contains("://") || (trimmed.contains(':') && !trimmed.starts_with('/'));
    let parts: Vec<&str> = trimmed
        .rsplit(['/', ':'])
        .filter(|p| !p.is_empty())
        .take(if is_url { 2 } else { 1 })
        .collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

/// A configured repository and its mirror.
pub struct Repo {
    pub config: RepoConfig,
    mirror: PathBuf,
    /// Fetches and worktree changes of one mirror go one at a time.
    lock: tokio::sync::Mutex<()>,
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '-',
        })
        .collect()
}

impl Repo {
    pub fn new(config: RepoConfig, data: &Path) -> Repo {
        let mirror = data
            .join("repos")
            .join(format!("{}.git", slug(&config.name)));
        Repo {
            config,
            mirror,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// `.ferry/` for this repository's runs: records, caches, workspaces, deployments.
    pub fn state_dir(&self, data: &Path) -> PathBuf {
        data.join("state").join(slug(&self.config.name))
    }

    /// Whether a webhook's repository is this one: by name (`acme/app` or just `app`
    /// configured) or by a clone URL.
    pub fn matches(&self, repository: &str, urls: &[String]) -> bool {
        let name = self.config.name.as_str();
        let tail = |s: &str| s.trim_end_matches('/').trim_end_matches(".git").to_string();
        repository.eq_ignore_ascii_case(name)
            || (!name.contains('/')
                && repository
                    .rsplit('/')
                    .next()
                    .is_some_and(|last| last.eq_ignore_ascii_case(name)))
            || urls.iter().any(|u| tail(u) == tail(&self.config.url))
    }

    /// Brings the mirror up to date with the remote, cloning it the first time.
    pub async fn fetch(&self) -> Result<(), String> {
        let _guard = self.lock.lock().await;
        self.fetch_locked().await
    }

    async fn fetch_locked(&self) -> Result<(), String> {
        if self.mirror.join("HEAD").is_file() {
            git(&self.mirror, &["fetch", "--prune", "--quiet", "origin"]).await?;
            // Worktrees of runs a stopped server left behind.
            git(&self.mirror, &["worktree", "prune"]).await?;
        } else {
            let parent = self.mirror.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create `{}`: {e}", parent.display()))?;
            let tmp = self.mirror.with_extension("cloning");
            let _ = std::fs::remove_dir_all(&tmp);
            let target = tmp.to_string_lossy().into_owned();
            git(
                parent,
                &["clone", "--mirror", "--quiet", &self.config.url, &target],
            )
            .await?;
            std::fs::rename(&tmp, &self.mirror)
                .map_err(|e| format!("cannot move the clone into place: {e}"))?;
        }
        Ok(())
    }

    /// Makes sure the mirror has `sha`, fetching only when it does not.
    pub async fn ensure(&self, sha: &str) -> Result<(), String> {
        let sha = commit_id(sha)?;
        let _guard = self.lock.lock().await;
        if self.has(sha).await {
            return Ok(());
        }
        self.fetch_locked().await?;
        if self.has(sha).await {
            Ok(())
        } else {
            Err(format!(
                "commit `{sha}` is not in `{}` after a fetch",
                without_credentials(&self.config.url)
            ))
        }
    }

    async fn has(&self, sha: &str) -> bool {
        self.mirror.join("HEAD").is_file()
            && git(
                &self.mirror,
                &[
                    "cat-file",
                    "-e",
                    "--end-of-options",
                    &format!("{sha}^{{commit}}"),
                ],
            )
            .await
            .is_ok()
    }

    /// Branches and tags with the commits they point at. A ref whose name a shell or git
    /// would read as more than a name (see [`gitnames::full_ref`]) is left out with a
    /// warning: whoever may push to the repository may name a branch so, and its name
    /// would reach runs and their steps.
    pub async fn refs(&self) -> Result<BTreeMap<String, String>, String> {
        let out = git(
            &self.mirror,
            &[
                "for-each-ref",
                "--format=%(refname) %(objectname) %(*objectname)",
                "refs/heads",
                "refs/tags",
            ],
        )
        .await?;
        Ok(out
            .lines()
            .filter_map(|line| {
                let mut parts = line.split(' ');
                let name = parts.next()?;
                let object = parts.next()?;
                // An annotated tag names the tag object; builds want its commit.
                let peeled = parts.next().filter(|p| !p.is_empty()).unwrap_or(object);
                match gitnames::full_ref(name).and(commit_id(peeled)) {
                    Ok(_) => Some((name.to_string(), peeled.to_string())),
                    Err(e) => {
                        eprintln!("warning: `{}`: skipping a ref: {e}", self.config.name);
                        None
                    }
                }
            })
            .collect())
    }

    /// The commit a reference points at: `main`, `refs/tags/v1`, or a commit itself.
    pub async fn resolve(&self, reference: &str) -> Result<(String, String), String> {
        match reference {
            "" | "HEAD" => {}
            r if r.starts_with("refs/") => drop(gitnames::full_ref(r)?),
            r => drop(gitnames::branch(r)?),
        }
        let _guard = self.lock.lock().await;
        let full = match reference {
            "" | "HEAD" => match git(&self.mirror, &["symbolic-ref", "HEAD"]).await {
                // The remote's default branch is named by whoever controls the remote.
                Ok(head) => gitnames::full_ref(head.trim())?.to_string(),
                Err(_) => "HEAD".into(),
            },
            r if r.starts_with("refs/") => r.to_string(),
            r => match git(
                &self.mirror,
                &[
                    "show-ref",
                    "--verify",
                    "--end-of-options",
                    &format!("refs/heads/{r}"),
                ],
            )
            .await
            {
                Ok(_) => format!("refs/heads/{r}"),
                Err(_) => format!("refs/tags/{r}"),
            },
        };
        let sha = git(
            &self.mirror,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &format!("{full}^{{commit}}"),
            ],
        )
        .await
        .map_err(|_| {
            format!(
                "`{reference}` names no branch or tag of `{}`",
                self.config.name
            )
        })?;
        Ok((full, commit_id(sha.trim())?.to_string()))
    }

    /// The paths that differ between two commits; `None` when git cannot tell (a commit
    /// the mirror lost to a force-push).
    pub async fn changed(&self, old: &str, new: &str) -> Option<Vec<String>> {
        let (old, new) = (commit_id(old).ok()?, commit_id(new).ok()?);
        let out = git(
            &self.mirror,
            &["diff", "--name-only", "-z", "--end-of-options", old, new],
        )
        .await
        .ok()?;
        Some(
            out.split('\0')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    /// The first line of a commit's message and its author.
    pub async fn describe(&self, sha: &str) -> (String, String) {
        let Ok(sha) = commit_id(sha) else {
            return Default::default();
        };
        let out = git(
            &self.mirror,
            &["log", "-1", "--format=%an%x00%s", "--end-of-options", sha],
        )
        .await
        .unwrap_or_default();
        let (author, subject) = out.trim_end().split_once('\0').unwrap_or(("", ""));
        (subject.to_string(), author.to_string())
    }

    /// The pipeline file's text at a commit.
    pub async fn pipeline_at(&self, sha: &str) -> Result<String, String> {
        let sha = commit_id(sha)?;
        let path = &self.config.pipeline;
        git(
            &self.mirror,
            &["show", "--end-of-options", &format!("{sha}:{path}")],
        )
        .await
        .map_err(|_| format!("commit `{}` has no `{path}`", short(sha)))
    }

    /// Checks `sha` out at `dest` as a detached worktree.
    pub async fn checkout(&self, sha: &str, dest: &Path) -> Result<(), String> {
        let sha = commit_id(sha)?;
        let _guard = self.lock.lock().await;
        let _ = std::fs::remove_dir_all(dest);
        let target = dest.to_string_lossy().into_owned();
        git(
            &self.mirror,
            &[
                "worktree",
                "add",
                "--detach",
                "--force",
                "--quiet",
                "--end-of-options",
                &target,
                sha,
            ],
        )
        .await
        .map(drop)
    }

    /// Removes a worktree `checkout` made.
    pub async fn remove_checkout(&self, dest: &Path) {
        let _guard = self.lock.lock().await;
        let target = dest.to_string_lossy().into_owned();
        if git(
            &self.mirror,
            &["worktree", "remove", "--force", "--end-of-options", &target],
        )
        .await
        .is_err()
        {
            let _ = std::fs::remove_dir_all(dest);
            let _ = git(&self.mirror, &["worktree", "prune"]).await;
        }
    }
}

/// Only a full commit id reaches git as a revision (see [`gitnames::commit_id`]).
fn commit_id(sha: &str) -> Result<&str, String> {
    gitnames::commit_id(sha)
}

/// `url` as it may be shown or logged: a password or token in it (`https://user:token@host`)
/// becomes `***`.
pub fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

pub fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// Host variables the server's git sees: where things are, locale, and how the operator
/// reaches private repositories (an SSH agent or command, proxies). Never `GIT_DIR` or
/// `GIT_WORK_TREE`, which would point it elsewhere.
const GIT_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "TZ",
    "TMPDIR",
    "XDG_CONFIG_HOME",
    "SSH_AUTH_SOCK",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_ASKPASS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SystemRoot",
];

/// Runs git in `dir` and returns its stdout; the error carries its stderr.
async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        // The server's environment holds its credentials (API token, webhook secret,
        // passwords): git gets only what finding and reaching the repository needs.
        .env_clear()
        .envs(std::env::vars_os().filter(|(name, _)| {
            name.to_str()
                .is_some_and(|n| GIT_ENV.contains(&n) || n.starts_with("LC_"))
        }))
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run `git`: {e}\nhint: install git"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        // A remote's URL may carry a token: neither the command nor what git said of it
        // shows one.
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said = args.iter().fold(stderr.trim().to_string(), |said, arg| {
            let shown = without_credentials(arg);
            if shown == *arg {
                said
            } else {
                said.replace(arg, &shown)
            }
        });
        let command: Vec<String> = args.iter().map(|a| without_credentials(a)).collect();
        Err(format!("`git {}` failed: {said}", command.join(" ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_url() {
        assert_eq!(default_name("https://example.com/acme/app.git"), "acme/app");
        assert_eq!(default_name("git@github.com:acme/app.git"), "acme/app");
        assert_eq!(default_name("/srv/git/app/"), "app");
        assert_eq!(default_name("./app"), "app");
        assert!(!default_name("https://t0ken@example.com/app").contains("t0ken"));
    }

    #[test]
    fn hooks_match_by_name_or_url() {
        let tmp = tempfile::tempdir().unwrap();
        let local = Repo::new(RepoConfig::new("/srv/git/app"), tmp.path());
        assert!(local.matches("acme/app", &[]));
        assert!(!local.matches("acme/other", &[]));
        let remote = Repo::new(
            RepoConfig::new("https://example.com/acme/app.git"),
            tmp.path(),
        );
        assert!(remote.matches("acme/app", &[]));
        assert!(!remote.matches("eve/app", &[]));
        assert!(remote.matches("renamed/x", &["https://example.com/acme/app".into()]));
    }

    #[test]
    fn credentials_in_urls_are_never_shown() {
        assert_eq!(
            without_credentials("https://ada:s3cret@example.com/acme/app.git"),
            "https://***@example.com/acme/app.git"
        );
        assert_eq!(
            without_credentials("https://x-access-token:ghp_abc@github.com/a/b?x=@y"),
            "https://***@github.com/a/b?x=@y"
        );
        for plain in [
            "https://example.com/acme/app.git",
            "git@github.com:acme/app.git",
            "/srv/git/app",
            "https://example.com/a@b",
        ] {
            assert_eq!(without_credentials(plain), plain);
        }
    }

    #[tokio::test]
    async fn git_refuses_what_is_not_a_commit_before_running() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repo::new(RepoConfig::new("/nonexistent"), tmp.path());
        let planted = tmp.path().join("planted");
        let option = format!("--output={}", planted.display());
        assert!(
            repo.ensure(&option)
                .await
                .unwrap_err()
                .contains("not a commit id")
        );
        assert!(
            repo.pipeline_at(&option)
                .await
                .unwrap_err()
                .contains("not a commit id")
        );
        let dest = tmp.path().join("wt");
        assert!(repo.checkout(&option, &dest).await.is_err());
        assert_eq!(repo.describe(&option).await, Default::default());
        assert_eq!(repo.changed(&option, &option).await, None);
        assert!(repo.resolve("$(touch planted)").await.is_err());
        assert!(!planted.exists());
    }
}
