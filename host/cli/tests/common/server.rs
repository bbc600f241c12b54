//! A `ferry serve` process for tests, a git repository for it to build, and hooks signed
//! as GitHub signs them.

use super::{Test, eventually};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const SECRET: &str = "hook-s3cret";
pub const TOKEN: &str = "api-t0ken";

/// A repository under the test directory with one commit of `pipeline`.
pub fn repository(t: &Test, pipeline: &str) -> PathBuf {
    let repo = t.path("app");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    commit(&repo, "ferry.yaml", pipeline, "first");
    repo
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Writes a file, commits it and returns the commit.
pub fn commit(repo: &Path, file: &str, text: &str, message: &str) -> String {
    std::fs::write(repo.join(file), text).unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

/// A running `ferry serve`, killed when dropped.
pub struct Served {
    pub child: Child,
    pub base: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
}

impl Served {
    pub fn start(t: &Test, repo: &Path, extra: &[&str]) -> Served {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut args: Vec<String> = [
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data",
            "data",
            "--repo",
            repo.to_str().unwrap(),
            "--webhook-secret-env",
            "HOOK_SECRET",
            "--token-env",
            "API_TOKEN",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut served = Served {
            child: Command::new("true").spawn().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            args,
            env: Vec::new(),
            dir: t.dir.path().to_path_buf(),
        };
        served.restart();
        served
    }

    /// Starts the server process (again), on the same port and data.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        self.child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(&self.args)
            .current_dir(&self.dir)
            .env("HOOK_SECRET", SECRET)
            .env("API_TOKEN", TOKEN)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(
                "XDG_CACHE_HOME",
                PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-cache"),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        eventually(
            || ureq::get(&format!("{}/api/session", self.base)).call().ok(),
            || format!("the server did not start: {}", self.log()),
        );
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent()
    }

    /// GET with the token; the status and the JSON body.
    pub fn get(&self, path: &str) -> (u16, Value) {
        let mut response = Self::agent()
            .get(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// GET with no credentials; the status and the body as text.
    pub fn anonymous(&self, path: &str) -> (u16, String) {
        let mut response = Self::agent()
            .get(&format!("{}{path}", self.base))
            .call()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let mut response = Self::agent()
            .post(&format!("{}{path}", self.base))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .send_json(body)
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_json().unwrap_or(Value::Null),
        )
    }

    pub fn runs(&self) -> Vec<Value> {
        let (status, runs) = self.get("/api/runs");
        assert_eq!(status, 200, "{runs}");
        runs.as_array().unwrap().clone()
    }

    /// Waits until run `id` is in one of `statuses` and returns it.
    pub fn wait_for(&self, id: i64, statuses: &[&str]) -> Value {
        eventually(
            || {
                let (_, run) = self.get(&format!("/api/runs/{id}"));
                statuses.iter().any(|s| run["status"] == *s).then_some(run)
            },
            || {
                let (_, run) = self.get(&format!("/api/runs/{id}"));
                format!("run {id} never became {statuses:?}: {run}\n{}", self.log())
            },
        )
    }

    /// Waits until delivery `id` is settled (a run, or ignored) and returns it.
    pub fn wait_delivery(&self, id: i64) -> Value {
        eventually(
            || {
                let (status, delivery) = self.get(&format!("/api/deliveries/{id}"));
                assert_eq!(status, 200, "{delivery}");
                (delivery["outcome"] != "pending").then_some(delivery)
            },
            || format!("delivery {id} was never settled\n{}", self.log()),
        )
    }

    /// Every delivery the server kept, newest first.
    pub fn deliveries(&self) -> Vec<Value> {
        let (status, deliveries) = self.get("/api/deliveries");
        assert_eq!(status, 200, "{deliveries}");
        deliveries.as_array().unwrap().clone()
    }

    /// Waits until there are `n` runs and returns them, newest first.
    pub fn wait_runs(&self, n: usize) -> Vec<Value> {
        eventually(
            || Some(self.runs()).filter(|runs| runs.len() >= n),
            || format!("{} runs, not {n}:\n{}", self.runs().len(), self.log()),
        )
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A GitHub push hook for `sha` on `main`, signed with `secret`; the status and body.
pub fn push_hook(served: &Served, sha: &str, delivery: &str, secret: &str) -> (u16, Value) {
    let body = serde_json::json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000001",
        "after": sha,
        // Two pushes are never the same bytes; the same body again is a replay.
        "compare": format!("https://example.com/acme/app/compare/{delivery}"),
        "repository": { "full_name": "acme/app", "clone_url": "https://example.com/acme/app.git" },
        "head_commit": { "id": sha, "message": "first", "author": { "name": "Ada" } },
        "commits": [{ "id": sha, "added": ["ferry.yaml"], "modified": [], "removed": [] }],
    })
    .to_string();
    github_hook(served, "push", delivery, secret, &body)
}

/// A GitHub hook of `event` with `body`, signed with `secret`; the status and body.
pub fn github_hook(
    served: &Served,
    event: &str,
    delivery: &str,
    secret: &str,
    body: &str,
) -> (u16, Value) {
    let signature = format!(
        "sha256={}",
        ferry_server::hooks::sign(secret, body.as_bytes())
    );
    let mut response = Served::agent()
        .post(&format!("{}/hooks/github", served.base))
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", &signature)
        .header("Content-Type", "application/json")
        .send(body.as_bytes())
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_json().unwrap_or(Value::Null),
    )
}
