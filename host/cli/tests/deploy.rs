//! Environments end to end through `ferry`: the `deploy` step's release directories, the
//! rollback a failed check triggers (watched by a reader that must never find `current`
//! missing), a deploy killed midway, `ferry rollback` and `ferry deployments`, approvals
//! from another process, and `verify` and webhooks against servers on loopback.

mod common;

use common::{Done, Test, ferry};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A job that deploys `site/` to `./env` and then checks the live health page.
const PIPELINE: &str = "jobs:
  staging:
    environment: staging
    steps:
      - uses: deploy
        with: { target: dir, source: site, path: ./env, keep: 3 }
        permissions: { paths: { ./env: write } }
      - name: check
        run: grep -q up \"$FERRY_PIPELINE_DIR/env/current/health\"
        permissions: { paths: { ./env: read } }
";

fn site(t: &Test, health: &str) {
    std::fs::create_dir_all(t.path("site")).unwrap();
    std::fs::write(t.path("site/health"), health).unwrap();
    std::fs::write(t.path("site/index.html"), format!("<p>{health}</p>\n")).unwrap();
}

fn current(t: &Test) -> String {
    std::fs::read_link(t.path("env/current"))
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn history(t: &Test) -> Vec<(String, String)> {
    let done = ferry(t, &["deployments", "--json"]).code(0);
    done.stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["outcome"].as_str().unwrap().to_string(),
                v["version"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_failed_check_rolls_back_atomically_and_ferry_rollback_moves_between_releases() {
    let t = Test::new().file("ferry.yaml", PIPELINE);
    site(&t, "up 1\n");
    ferry(&t, &["run", "--output", "plain"])
        .code(0)
        .stdout_has("deployed sha256-");
    let first = current(&t);

    // A reader serving from `current` the whole time: every read must find a release.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let (stop, seen, health) = (stop.clone(), seen.clone(), t.path("env/current/health"));
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match std::fs::read_to_string(&health) {
                    Ok(text) => {
                        let mut seen = seen.lock().unwrap();
                        if seen.last() != Some(&text) {
                            seen.push(text);
                        }
                    }
                    Err(e) => panic!("`current` could not be read after {reads} reads: {e}"),
                }
                reads += 1;
            }
            reads
        })
    };
    site(&t, "down\n");
    ferry(&t, &["run", "--output", "plain"])
        .code(1)
        .stdout_has("`check` failed: rolling `staging` back to ")
        .stdout_has(&format!("rolled `staging` back to {first}"));
    stop.store(true, Ordering::Relaxed);
    let reads = reader
        .join()
        .expect("the reader never found `current` missing");
    assert!(reads > 100, "the reader ran ({reads} reads)");
    // It only ever saw whole releases: the first, perhaps the failed one while its check
    // ran, and the first again after the rollback.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.first().map(String::as_str), Some("up 1\n"), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("up 1\n"), "{seen:?}");
    assert!(
        seen.iter().all(|text| text == "up 1\n" || text == "down\n"),
        "the reader saw a partial release: {seen:?}"
    );
    assert!(seen.len() == 1 || seen.len() == 3, "{seen:?}");
    assert_eq!(current(&t), first, "the previous release serves again");
    assert_eq!(
        std::fs::read_to_string(t.path("env/current/health")).unwrap(),
        "up 1\n"
    );
    let outcomes: Vec<String> = history(&t).into_iter().map(|(o, _)| o).collect();
    assert_eq!(outcomes, ["deployed", "rolled-back", "rollback"]);

    // Another good release, then back and forth by hand.
    site(&t, "up 3\n");
    ferry(&t, &["run", "--output", "plain"]).code(0);
    let third = current(&t);
    assert_ne!(third, first);
    ferry(&t, &["rollback", "staging", "--output", "plain"])
        .code(0)
        .stderr_has(&format!("rolling `staging` back from {third} to {first}"));
    assert_eq!(current(&t), first);
    ferry(
        &t,
        &["rollback", "staging", "--to", &third, "--output", "plain"],
    )
    .code(0);
    assert_eq!(current(&t), third);
    ferry(
        &t,
        &[
            "rollback",
            "staging",
            "--to",
            "sha256-000000000000",
            "--output",
            "plain",
        ],
    )
    .code(1)
    .stdout_has("release `sha256-000000000000` is not in");
    assert_eq!(current(&t), third, "a failed rollback changes nothing");
    let listing = ferry(&t, &["deployments", "staging"]).code(0).stdout;
    let serving = listing.lines().find(|l| l.contains("● serving")).unwrap();
    assert!(serving.contains(&third), "{listing}");
    ferry(&t, &["rollback", "production"])
        .code(2)
        .stderr_has("nothing is deployed to `production`");
}

#[test]
fn a_deploy_killed_midway_leaves_the_previous_release_serving() {
    let t = Test::new().file("ferry.yaml", PIPELINE);
    site(&t, "up 1\n");
    ferry(&t, &["run", "--output", "plain"]).code(0);
    let first = current(&t);
    // Big enough that the copy takes a while.
    let chunk = vec![7u8; 1 << 20];
    for i in 0..200 {
        std::fs::write(t.path(&format!("site/blob-{i:03}.bin")), &chunk).unwrap();
    }
    let mut child = t
        .command()
        .args(["run", "--output", "plain"])
        .spawn()
        .unwrap();
    let releases = t.path("env/releases");
    let deadline = Instant::now() + Duration::from_secs(60);
    // A fast poll, not an event: the kill must land while a transient directory exists,
    // and nothing announces it.
    let partial = loop {
        let found = std::fs::read_dir(&releases)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(".partial-"));
        if let Some(entry) = found {
            break entry.path();
        }
        assert!(
            Instant::now() < deadline,
            "the deploy never started copying"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the deploy finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        current(&t),
        first,
        "`current` still names the previous release"
    );
    assert_eq!(
        std::fs::read_to_string(t.path("env/current/health")).unwrap(),
        "up 1\n"
    );
    assert!(partial.exists(), "the kill came mid-copy");
    // The next deploy clears what the killed one left.
    for i in 0..200 {
        std::fs::remove_file(t.path(&format!("site/blob-{i:03}.bin"))).unwrap();
    }
    site(&t, "up 2\n");
    ferry(&t, &["run", "--output", "plain"]).code(0);
    assert!(!partial.exists());
    assert_ne!(current(&t), first);
}

const GATED: &str = "jobs:
  production:
    environment: { name: production, approval: required }
    steps:
      - run: echo deployed
";

/// Starts `ferry run` and waits until its job asks for approval; the caller waits for it.
#[allow(clippy::zombie_processes)]
fn start_gated(t: &Test) -> (std::process::Child, String) {
    let mut child = t
        .command()
        .args(["run", "--output", "plain"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Another process's run: its request on disk is what `ferry approve` looks for too.
    let run = common::eventually(
        || {
            std::fs::read_dir(t.path(".ferry/runs"))
                .into_iter()
                .flatten()
                .flatten()
                .find(|run| {
                    run.path()
                        .join("approvals/production.pending.json")
                        .exists()
                })
        },
        || {
            let _ = child.kill();
            let _ = child.wait();
            "the job never asked for approval".into()
        },
    );
    (child, run.file_name().to_string_lossy().into_owned())
}

fn finish(child: std::process::Child) -> Done {
    let out = child.wait_with_output().unwrap();
    Done {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run_json(t: &Test, id: &str) -> serde_json::Value {
    let path = t.path(&format!(".ferry/runs/{id}/run.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn approve_and_reject_from_another_process() {
    let t = Test::new()
        .file("ferry.yaml", GATED)
        .env("FERRY_USER", "carol");
    ferry(&t, &["approve", "latest"])
        .code(2)
        .stderr_has("no run under");

    let (child, first) = start_gated(&t);
    ferry(&t, &["approve", "latest", "--comment", "looks good"])
        .code(0)
        .stderr_has("approved deploying `production` to `production`");
    let done = finish(child)
        .code(0)
        .stdout_has("waits for approval to deploy to `production`")
        .stdout_has("approved by carol")
        .stdout_has("deployed");
    let _ = done;
    let approval = &run_json(&t, &first)["jobs"]["production"]["approval"];
    assert_eq!(approval["approved"], true);
    assert_eq!(approval["by"], "carol");
    assert_eq!(approval["reason"], "looks good");
    assert!(approval["at"].as_str().unwrap().starts_with("20"));

    let (child, id) = start_gated(&t);
    ferry(&t, &["reject", &id, "deploy"])
        .code(2)
        .stderr_has("job `deploy` does not wait for approval; waiting: `production`");
    ferry(&t, &["reject", &id, "--reason", "change freeze"]).code(0);
    finish(child)
        .code(1)
        .stdout_has("rejected by carol: change freeze");
    assert_eq!(run_json(&t, &id)["jobs"]["production"]["status"], "failed");
    ferry(&t, &["approve", &id, "production"])
        .code(2)
        .stderr_has("no job of run");
}

/// A loopback HTTP server answering each request with the next of `answers` (the last
/// repeats); returns its port and the requests it saw.
fn serve(answers: Vec<(u16, &'static str)>) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            log.lock()
                .unwrap()
                .push(format!("{head}\r\n{}", String::from_utf8_lossy(&body)));
            let (status, text) = answers[i.min(answers.len() - 1)];
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (port, seen)
}

#[test]
fn verify_retries_until_the_service_answers_and_fails_when_it_never_does() {
    let (port, seen) = serve(vec![
        (503, "starting"),
        (200, "status: down"),
        (200, "status: up"),
    ]);
    let check = |contains: &str, grant: bool| {
        let permissions = if grant {
            format!("permissions: {{ network: [\"127.0.0.1:{port}\"] }}")
        } else {
            String::new()
        };
        Test::new().file(
            "ferry.yaml",
            &format!(
                "jobs:\n  check:\n    steps:\n      - uses: verify\n        with: {{ url: \"http://127.0.0.1:{port}/health\", contains: \"{contains}\", attempts: 4, interval: 0.05 }}\n        {permissions}\n"
            ),
        )
    };
    let t = check("status: up", true);
    ferry(&t, &["run", "--output", "plain"])
        .code(0)
        .stdout_has("check 1 of 4: http://127.0.0.1")
        .stdout_has("HTTP 503 (expected 200)")
        .stdout_has("the body does not contain `status: up`")
        .stdout_has("(1 in a row, attempt 3)");
    assert_eq!(seen.lock().unwrap().len(), 3);
    let t = check("never", true);
    ferry(&t, &["run", "--output", "plain"])
        .code(1)
        .stdout_has("did not pass 1 check(s) in a row within 4 attempts");
    // Without a grant: refused, and the service hears nothing.
    let asked = seen.lock().unwrap().len();
    let t = check("status: up", false);
    ferry(&t, &["run", "--output", "plain"])
        .code(1)
        .stdout_has("is `127.0.0.1:")
        .stdout_has("granted under `permissions: { network: [...] }`");
    let quiet = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    quiet.set_nonblocking(true).unwrap();
    let port = quiet.local_addr().unwrap().port();
    let t = Test::new().file(
        "ferry.yaml",
        &format!("jobs:\n  check:\n    steps:\n      - uses: verify\n        with: {{ url: \"http://127.0.0.1:{port}/health\", attempts: 2, interval: 0.05 }}\n"),
    );
    ferry(&t, &["run", "--output", "plain"])
        .code(1)
        .stdout_has("granted under `permissions: { network: [...] }`");
    // ferry has exited: a connection it made would be waiting to be accepted.
    assert!(
        matches!(quiet.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the ungranted check reached the service"
    );
    assert_eq!(seen.lock().unwrap().len(), asked);
}

#[test]
fn a_webhook_deploy_retries_a_failing_endpoint_and_sends_the_release() {
    let (port, seen) = serve(vec![(502, "bad gateway"), (200, "ok")]);
    let t = Test::new().file(
        "ferry.yaml",
        &format!(
            "jobs:
  release:
    environment: staging
    steps:
      - uses: deploy
        with: {{ target: http, url: \"http://127.0.0.1:{port}/hooks/deploy\", version: \"1.4.2\", previous: \"1.4.1\", token: HOOK_TOKEN }}
        permissions: {{ network: [\"127.0.0.1:{port}\"], secrets: [HOOK_TOKEN] }}
"
        ),
    );
    let done = ferry(
        &t.env("HOOK_TOKEN", "hook-secret-value"),
        &["run", "--output", "plain"],
    );
    let done = done.code(0).stdout_has("HTTP 502; trying again");
    assert!(
        !done.stdout.contains("hook-secret-value"),
        "the token is masked"
    );
    let requests = seen.lock().unwrap();
    assert_eq!(requests.len(), 2);
    assert!(
        requests[1].starts_with("POST /hooks/deploy HTTP/1.1"),
        "{}",
        requests[1]
    );
    assert!(requests[1].contains("Authorization: Bearer hook-secret-value"));
    let body: serde_json::Value =
        serde_json::from_str(requests[1].split("\r\n\r\n").last().unwrap()).unwrap();
    assert_eq!(body["version"], "1.4.2");
    assert_eq!(body["previous"], "1.4.1");
    assert_eq!(body["action"], "deploy");
}

#[test]
fn a_command_deploy_runs_a_granted_program_with_the_version_and_rolls_back_with_its_rollback_command()
 {
    let t = Test::new().file(
        "ferry.yaml",
        "jobs:
  release:
    environment: staging
    steps:
      - uses: deploy
        with:
          target: command
          version: \"2.0\"
          previous: \"1.9\"
          command: [sh, -c, 'echo \"$FERRY_DEPLOY_ACTION $FERRY_DEPLOY_VERSION (was $FERRY_DEPLOY_PREVIOUS)\" >> \"$FERRY_PIPELINE_DIR/log/deploys.log\"']
          rollback-command: [sh, -c, 'echo \"restore $FERRY_DEPLOY_VERSION\" >> \"$FERRY_PIPELINE_DIR/log/deploys.log\"']
        permissions: { exec: [sh], paths: { ./log: write } }
      - run: exit 1
",
    );
    ferry(&t, &["run", "--output", "plain"])
        .code(1)
        .stdout_has("rolled `staging` back to 1.9");
    assert_eq!(
        std::fs::read_to_string(t.path("log/deploys.log")).unwrap(),
        "deploy 2.0 (was 1.9)\nrestore 1.9\n"
    );
    let t = Test::new().file(
        "ferry.yaml",
        "jobs:\n  release:\n    steps:\n      - uses: deploy\n        with: { target: command, version: \"1\", command: [sh, -c, 'true'] }\n",
    );
    ferry(&t, &["run", "--output", "plain"])
        .code(1)
        .stdout_has("`sh`")
        .stdout_has("exec");
}
