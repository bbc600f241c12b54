//! Schedules fire at their minute, once, from the head of the default branch.

use ferry_server::repo::RepoConfig;
use ferry_server::store::TriggerKind;
use ferry_server::{Auth, BoxFuture, Config, Execution, Executor, Server};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// Parses like `ferry` (with no built-in plugins); never asked to run anything here.
struct ParseOnly;

impl Executor for ParseOnly {
    fn parse(&self, file: &Path, text: &str) -> Result<ferry_model::Pipeline, String> {
        let source = ferry_model::Source::new(file, text.to_string());
        ferry_model::parse(&source, Path::new("."), &[]).map_err(|r| format!("{r:?}"))
    }

    fn execute(&self, _: Execution) -> BoxFuture<Result<ferry_engine::RunResult, String>> {
        Box::pin(async { Err("this test runs nothing".to_string()) })
    }
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_schedule_fires_at_its_minute_and_only_once() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("app");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(
        repo.join("ferry.yaml"),
        "name: app\non:\n  schedule:\n    - cron: \"30 4 * * mon\"\njobs:\n  nightly:\n    steps:\n      - run: echo hi\n",
    )
    .unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "nightly"]);
    let server = Server::new(
        Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data: tmp.path().join("data"),
            repos: vec![RepoConfig::new(repo.to_str().unwrap())],
            max_runs: 1,
            max_jobs: 1,
            auth: Auth::default(),
            keep_runs: 10,
            retry_interrupted: false,
            public_url: None,
        },
        Arc::new(ParseOnly),
    )
    .unwrap();
    // Monday 2026-11-23 04:30 UTC, and the minute before it.
    let monday = 1_795_408_200 / 60;
    server.fire_schedules(monday - 1).await;
    assert!(server.store.pending_deliveries().unwrap().is_empty());
    server.fire_schedules(monday).await;
    server.fire_schedules(monday).await;
    let pending = server.store.pending_deliveries().unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let source = &pending[0].source;
    assert_eq!(source.trigger, TriggerKind::Schedule);
    assert_eq!(source.reference, "refs/heads/main");
    assert_eq!(source.repo, "app");
    // A week later it fires again.
    server.fire_schedules(monday + 7 * 1440).await;
    assert_eq!(server.store.pending_deliveries().unwrap().len(), 2);
}
