//! `ferry serve` end to end: a real server process, a real git repository, hooks signed
//! as the forges sign them, and the JSON API read back.

mod common;

use common::server::{SECRET, Served, commit, git, github_hook, push_hook, repository};
use common::{Test, eventually, json};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// A repository whose one job (with `job_keys` added) waits until the returned gate file
/// exists; its commit. The step polls for the file: a shell has no portable way to wait
/// for one, and the poll is the pipeline under test, not the test's synchronisation.
fn gated(t: &Test, job_keys: &str) -> (std::path::PathBuf, String, std::path::PathBuf) {
    // The step watches a host folder it is granted; the gate appears in it.
    let gates = t.path("gates");
    std::fs::create_dir_all(&gates).unwrap();
    let gate = gates.join("go");
    let pipeline = format!(
        "name: app\non: push\njobs:\n  slow:\n{job_keys}    steps:\n      - run: while [ ! -e {} ]; do sleep 0.05; done\n        permissions: {{ paths: {{ {}: read }} }}\n",
        gate.display(),
        gates.display()
    );
    let repo = repository(t, &pipeline);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    (repo, sha, gate)
}

const ECHO: &str = "
name: app
on:
  push:
    branches: [main]
jobs:
  build:
    steps:
      - run: echo \"built by ferry serve\"
";

/// A test directory with a repository of one commit of `pipeline`, its commit, and a
/// server building it with `extra` arguments.
fn serving(pipeline: &str, extra: &[&str]) -> (Test, std::path::PathBuf, String, Served) {
    let t = Test::new();
    let repo = repository(&t, pipeline);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let served = Served::start(&t, &repo, extra);
    (t, repo, sha, served)
}

/// Percent-encodes every byte but letters and digits, as an attacker hides `/` and `.`
/// from anything that would normalise a path.
fn encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn artifact_routes_serve_no_file_a_crafted_name_or_description_points_at() {
    let t = Test::new();
    // One real artifact, so that the blob store exists for a crafted digest to climb out of.
    let repo = repository(
        &t,
        "on:\n  push:\n    branches: [main]\njobs:\n  build:\n    steps:\n      - run: echo report > report.txt\n        outputs:\n          artifacts:\n            report: [report.txt]\n",
    );
    // A description committed to the repository, whose one file is named by a path where
    // its digest belongs.
    let planted = r#"{"name":"evil","job":"build","step":"s","created":0,"tree":{"entries":[
        {"type":"file","path":"passwd","mode":420,"size":4096,"sha256":"../../../../../../../../../../etc/passwd"},
        {"type":"file","path":"environ","mode":420,"size":4096,"sha256":"/proc/self/environ"}]}}"#;
    let sha = commit(&repo, "evil.json", planted, "plant");
    let served = Served::start(&t, &repo, &["--public"]);
    let (status, body) = push_hook(&served, &sha, "d-1", SECRET);
    assert_eq!(status, 202, "{body}");
    let id = served.wait_runs(1)[0]["id"].as_i64().unwrap();
    served.wait_for(id, &["passed"]);
    // The planted file, reached by an absolute name and by one that climbs out of the run.
    let target = repo.join("evil");
    let absolute = target.to_str().unwrap().to_string();
    let climbing = format!("{}{}", "../".repeat(40), absolute.trim_start_matches('/'));
    for name in [&absolute, &climbing, &"evil".to_string()] {
        for route in [
            format!("/api/runs/{id}/artifacts/{}/passwd", encoded(name)),
            format!("/api/runs/{id}/artifacts/{}/environ", encoded(name)),
            format!("/api/runs/{id}/artifacts/{}", encoded(name)),
        ] {
            let (status, body) = served.anonymous(&route);
            assert!(
                status == 400 || status == 404,
                "{route} ({name}): {status} {body}"
            );
            for leak in [
                "root:",
                "HOOK_SECRET",
                "API_TOKEN",
                "hook-s3cret",
                "serde",
                "expected",
                "line ",
            ] {
                assert!(
                    !body.contains(leak),
                    "{route} ({name}) told `{leak}`: {body}"
                );
            }
        }
    }
    // The real artifact is served.
    let (status, body) = served.anonymous(&format!("/api/runs/{id}/artifacts/report/report.txt"));
    assert_eq!((status, body.as_str()), (200, "report\n"));
    // A name that is a path is refused as one, without looking for it.
    let (status, body) =
        served.anonymous(&format!("/api/runs/{id}/artifacts/{}", encoded(&absolute)));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("is not an artifact name"), "{body}");
    // A well-formed name that does not exist says so; whether a `.json` exists anywhere on
    // the host is not an answer anyone gets.
    let (status, body) = served.anonymous(&format!("/api/runs/{id}/artifacts/passwd"));
    assert_eq!(status, 404, "{body}");
}

#[test]
fn signed_hooks_with_options_for_commits_or_commands_for_refs_start_nothing() {
    let (t, _repo, sha, served) = serving(ECHO, &[]);
    let planted = t.path("planted");
    let push = |reference: &str, after: &str| {
        serde_json::json!({
            "ref": reference,
            "after": after,
            "repository": { "full_name": "acme/app" },
            "head_commit": { "id": after, "message": "m", "author": { "name": "Eve" } },
        })
        .to_string()
    };
    let option = format!("--output={}", planted.display());
    let mut cases = vec![
        push("refs/heads/main", &option),
        push("refs/heads/main", "HEAD~1"),
    ];
    for reference in [
        "refs/heads/$(touch planted)",
        "refs/heads/`touch planted`",
        "refs/heads/main\nFERRY_TOKEN=x",
        "refs/heads/a..b",
        "refs/heads/\u{1b}[31mred",
        "--upload-pack=touch planted",
    ] {
        cases.push(push(reference, &sha));
    }
    let pull = |base: &str, head: &str| {
        serde_json::json!({
            "action": "opened",
            "number": 7,
            "pull_request": {
                "head": { "sha": head, "repo": { "full_name": "acme/app" } },
                "base": { "ref": base, "repo": { "full_name": "acme/app" } },
                "title": "t", "user": { "login": "eve" },
            },
            "repository": { "full_name": "acme/app" },
        })
        .to_string()
    };
    let pulls = [
        pull("main", &option),
        pull("--output=x", &sha),
        pull("$(id)", &sha),
    ];
    for (n, body) in cases.iter().enumerate() {
        let (status, answer) = github_hook(&served, "push", &format!("p-{n}"), SECRET, body);
        assert_eq!(status, 400, "{body}: {answer}");
    }
    for (n, body) in pulls.iter().enumerate() {
        let (status, answer) =
            github_hook(&served, "pull_request", &format!("r-{n}"), SECRET, body);
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let (status, answer) = github_hook(
        &served,
        "push",
        "p-x",
        SECRET,
        &push("refs/heads/main", &option),
    );
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("is not a commit id"),
        "{status} {answer}"
    );
    assert!(served.deliveries().is_empty(), "a hostile hook was kept");
    assert!(!planted.exists(), "git wrote a file a hook named");
    // The API's trigger takes names, not options or revisions.
    for reference in ["--output=x", "main~1", "$(id)", "refs/heads/a..b"] {
        let (status, answer) = served.post("/api/trigger", serde_json::json!({ "ref": reference }));
        assert_eq!(status, 400, "{reference}: {answer}");
    }
    assert!(served.runs().is_empty());
    // The well-formed push still runs.
    let (status, answer) = github_hook(
        &served,
        "push",
        "ok",
        SECRET,
        &push("refs/heads/main", &sha),
    );
    assert_eq!(status, 202, "{answer}");
}

#[test]
fn the_http_layer_bounds_slow_clients_big_bodies_guessers_and_replays() {
    use std::io::{Read, Write};
    let (_t, _repo, sha, served) = serving(ECHO, &[]);
    let addr = served.base.trim_start_matches("http://").to_string();

    // A request whose headers never end is closed, not held.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    slow.write_all(b"GET /api/runs HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = slow.read_to_end(&mut answer);
    assert!(
        read.is_ok() && started.elapsed() < Duration::from_secs(30),
        "a partial request was still open after {:?}: {read:?}",
        started.elapsed()
    );

    // Every answer carries the headers that keep it out of frames and sniffers.
    for path in ["/", "/api/session", "/api/runs", "/nowhere"] {
        let response = Served::agent()
            .get(&format!("{}{path}", served.base))
            .call()
            .unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            header("content-security-policy").contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
    }

    // An unsigned body far below GitHub's 25 MB is refused before it is kept whole.
    let big = vec![b'x'; 6 << 20];
    let response = Served::agent()
        .post(&format!("{}/hooks/github", served.base))
        .header("X-GitHub-Event", "push")
        .header("X-Hub-Signature-256", "sha256=00")
        .send(&big[..]);
    let status = response.map(|r| r.status().as_u16()).unwrap_or(413);
    assert_eq!(status, 413);

    // Wrong passwords for one user: ten, half through the sign-in form and half as basic
    // credentials on a route that answers everyone (so that it cannot tell a guesser
    // whether a guess was right); then that user waits.
    let login = |body: Value| {
        let response = Served::agent()
            .post(&format!("{}/api/session", served.base))
            .send_json(body)
            .unwrap();
        let retry = response.headers().get("retry-after").is_some();
        (response.status().as_u16(), retry)
    };
    let eve = serde_json::json!({ "user": "eve", "password": "guess" });
    for _ in 0..5 {
        assert_eq!(login(eve.clone()).0, 401);
        let asked = Served::agent()
            .get(&format!("{}/api/session", served.base))
            .header("Authorization", "Basic ZXZlOmd1ZXNz")
            .call()
            .unwrap();
        assert_eq!(
            asked.status().as_u16(),
            401,
            "a wrong password is wrong anywhere"
        );
    }
    assert_eq!(login(eve.clone()), (429, true));
    let basic = Served::agent()
        .get(&format!("{}/api/runs", served.base))
        .header("Authorization", "Basic ZXZlOmd1ZXNz")
        .call()
        .unwrap();
    assert_eq!(basic.status().as_u16(), 429);
    // The token is a long random secret, not a password: wrong ones are answered 401 but
    // do not count against it, so nobody can lock every client of the API out.
    for _ in 0..12 {
        assert_eq!(
            login(serde_json::json!({ "token": "guess", "user": "x" })).0,
            401
        );
    }
    assert_eq!(
        login(serde_json::json!({ "token": common::server::TOKEN })).0,
        200
    );

    // A captured hook replayed under a new delivery id starts nothing more.
    let captured = serde_json::json!({
        "ref": "refs/heads/main",
        "after": sha,
        "repository": { "full_name": "acme/app" },
    })
    .to_string();
    assert_eq!(
        github_hook(&served, "push", "first", SECRET, &captured).0,
        202
    );
    let (status, body) = github_hook(&served, "push", "replayed", SECRET, &captured);
    assert_eq!(
        (status, &body["duplicate"]),
        (200, &json("\"github:replayed\"")),
        "{body}"
    );
    assert_eq!(served.deliveries().len(), 1);
}

/// The CPU time a process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The server process's resident memory, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib >> 10
}

#[test]
#[cfg(target_os = "linux")]
fn idle_viewers_of_a_long_log_cost_the_server_little_and_slow_nothing() {
    use std::io::{Read, Write};
    let t = Test::new();
    // About 2 MiB of log.
    let repo = repository(
        &t,
        "on:\n  push:\n    branches: [main]\njobs:\n  build:\n    steps:\n      - run: seq 1000000 1300000\n",
    );
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let served = Served::start(&t, &repo, &[]);
    assert_eq!(push_hook(&served, &sha, "long", SECRET).0, 202);
    let id = served.wait_runs(1)[0]["id"].as_i64().unwrap();
    served.wait_for(id, &["passed"]);
    let addr = served.base.trim_start_matches("http://").to_string();
    let subscribe = || {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "GET /api/runs/{id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            common::server::TOKEN
        )
        .unwrap();
        let mut start = [0u8; 2048];
        stream.read_exact(&mut start).unwrap();
        stream
    };
    // Twenty viewers that read the start of the stream and then nothing more.
    let idle: Vec<_> = (0..20).map(|_| subscribe()).collect();
    // They are idle once the socket buffers are full and the server has stopped writing:
    // its CPU time stops growing.
    let pid = served.child.id();
    let mut last = cpu_ticks(pid);
    common::eventually(
        || {
            std::thread::sleep(Duration::from_millis(300));
            let now = cpu_ticks(pid);
            let settled = now.saturating_sub(last) <= 3;
            last = now;
            settled.then_some(())
        },
        || "the server never stopped writing to its idle viewers".to_string(),
    );
    let mut times: Vec<Duration> = (0..15)
        .map(|_| {
            let started = std::time::Instant::now();
            served.runs();
            started.elapsed()
        })
        .collect();
    times.sort();
    let rss = rss_mib(served.child.id());
    eprintln!(
        "20 idle viewers: GET /api/runs median {:?}, slowest {:?}; server RSS {rss} MiB",
        times[7], times[14]
    );
    assert!(
        times[7] < Duration::from_millis(50),
        "GET /api/runs took {:?} (median)",
        times[7]
    );
    assert!(rss < 300, "the server holds {rss} MiB with 20 idle viewers");
    // A run has at most 32 viewers.
    let more: Vec<_> = (0..12).map(|_| subscribe()).collect();
    let (status, body) = served.get(&format!("/api/runs/{id}/events"));
    assert_eq!(status, 503, "{body}");
    drop(more);
    drop(idle);
    // A viewer who reads gets the whole log, then the end.
    let text = streamed_logs(&served, id);
    for line in ["1000000", "1150000", "1300000"] {
        assert!(text.lines().any(|l| l == line), "{line} is missing");
    }
}

#[test]
fn a_signed_webhook_starts_exactly_one_run_and_a_bad_one_none() {
    let (_t, _repo, sha, served) = serving(ECHO, &[]);

    let (status, body) = push_hook(&served, &sha, "delivery-1", "wrong-secret");
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("signature does not match")
    );

    let (status, body) = push_hook(&served, &sha, "delivery-1", SECRET);
    assert_eq!(status, 202, "{body}");
    let (status, body) = push_hook(&served, &sha, "delivery-1", SECRET);
    assert_eq!(
        (status, &body["duplicate"]),
        (200, &json("\"github:delivery-1\""))
    );

    let runs = served.wait_runs(1);
    let id = runs[0]["id"].as_i64().unwrap();
    let run = served.wait_for(id, &["passed", "failed", "error"]);
    assert_eq!(run["status"], "passed", "{run}\n{}", served.log());
    assert_eq!(run["sha"], sha.as_str());
    assert_eq!(run["trigger"], "push");
    assert_eq!(run["branch"], "main");
    assert_eq!(run["jobs"][0]["steps"][0]["status"], "passed");
    // The redelivery was refused before its answer: one delivery was kept, and it is
    // this run.
    let deliveries = served.deliveries();
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0]["key"], "github:delivery-1");
    assert_eq!(deliveries[0]["outcome"], "run");
    assert_eq!(deliveries[0]["run"], id);
    assert_eq!(served.runs().len(), 1, "the redelivery ran again");

    let (status, log) = served.get(&format!("/api/runs/{id}/logs/build/step-1"));
    assert_eq!(status, 200);
    assert!(
        log.as_str().unwrap().contains("built by ferry serve"),
        "{log}"
    );
}

#[test]
fn the_api_refuses_without_a_token_and_hooks_without_a_signature() {
    let t = Test::new();
    let repo = repository(&t, ECHO);
    let served = Served::start(&t, &repo, &[]);
    let agent = Served::agent();
    let response = agent
        .get(&format!("{}/api/runs", served.base))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let response = agent
        .post(&format!("{}/api/runs/1/rerun", served.base))
        .header("Authorization", "Bearer not-the-token")
        .send_empty()
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let mut response = agent
        .post(&format!("{}/hooks/github", served.base))
        .header("X-GitHub-Event", "push")
        .send("{}".as_bytes())
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body = response.body_mut().read_to_string().unwrap();
    assert!(body.contains("X-Hub-Signature-256"), "{body}");
    assert!(served.runs().is_empty());
    for path in [
        "/api/deliveries",
        "/api/deliveries/1",
        "/api/runs/1",
        "/api/repos",
    ] {
        let response = agent.get(&format!("{}{path}", served.base)).call().unwrap();
        assert_eq!(response.status().as_u16(), 401, "{path}");
    }
}

#[test]
fn a_public_server_shows_runs_but_not_what_only_operators_see() {
    let t = Test::new();
    let repo = repository(&t, &ECHO.replace("branches: [main]", "branches: [release]"));
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let served = Served::start(&t, &repo, &["--public", "--poll", "1h"]);
    // A push to a branch nobody builds: the delivery exists, for people who signed in.
    let (status, body) = push_hook(&served, &sha, "d-1", SECRET);
    assert_eq!(status, 202, "{body}");
    served.wait_delivery(body["delivery"].as_i64().unwrap());
    assert_eq!(served.anonymous("/api/runs").0, 200, "runs are public");
    for path in ["/api/deliveries", "/api/deliveries/1"] {
        let (status, body) = served.anonymous(path);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(!body.contains("refs/heads/main"), "{path}: {body}");
    }
    let (status, repos) = served.anonymous("/api/repos");
    assert_eq!(status, 200);
    assert!(!repos.contains("refs"), "{repos}");
    // With the token, both are there.
    assert_eq!(served.deliveries().len(), 1);
    let (_, repos) = served.get("/api/repos");
    assert!(repos[0]["refs"].is_object(), "{repos}");
}

#[test]
fn a_push_the_filters_reject_runs_nothing() {
    let t = Test::new();
    let repo = repository(&t, &ECHO.replace("branches: [main]", "branches: [release]"));
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let served = Served::start(&t, &repo, &[]);
    let (status, body) = push_hook(&served, &sha, "d-1", SECRET);
    assert_eq!(status, 202, "{body}");
    // The delivery is settled without a run, and says why.
    let delivery = served.wait_delivery(body["delivery"].as_i64().unwrap());
    assert_eq!(delivery["outcome"], "ignored", "{delivery}");
    assert!(
        delivery["reason"]
            .as_str()
            .unwrap()
            .contains("does not take a push of `refs/heads/main`"),
        "{delivery}"
    );
    assert!(served.runs().is_empty(), "{:?}", served.runs());
}

#[test]
fn fifty_webhooks_at_once_all_become_runs() {
    let t = Test::new();
    let repo = repository(&t, ECHO);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let served = Served::start(&t, &repo, &["--max-runs", "4"]);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let served = &served;
                let sha = &sha;
                scope.spawn(move || push_hook(served, sha, &format!("burst-{i}"), SECRET).0)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    let runs = || {
        served
            .get("/api/runs?limit=100")
            .1
            .as_array()
            .unwrap()
            .clone()
    };
    let passed = |runs: &[Value]| runs.iter().filter(|r| r["status"] == "passed").count();
    eventually(
        || {
            let runs = runs();
            assert!(runs.len() <= 50, "more runs than hooks: {}", runs.len());
            (passed(&runs) == 50).then_some(())
        },
        || {
            let runs = runs();
            format!(
                "{} runs, {} passed\n{}",
                runs.len(),
                passed(&runs),
                served.log()
            )
        },
    );
}

#[test]
fn polling_notices_a_new_commit() {
    let t = Test::new();
    let repo = repository(&t, ECHO);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    let served = Served::start(&t, &repo, &["--poll", "1s"]);
    // The first look only notes what is there: once `main` is noted, it delivered nothing.
    eventually(
        || {
            (served.get("/api/repos").1[0]["refs"]["refs/heads/main"] == first.as_str())
                .then_some(())
        },
        || format!("never polled: {}", served.get("/api/repos").1),
    );
    assert!(served.deliveries().is_empty(), "the first look delivered");
    assert!(served.runs().is_empty(), "the existing commit was built");
    // Whoever may push may name a branch as a command; git takes the name, ferry does not.
    git(&repo, &["branch", "x$(touch${IFS}planted)"]);
    let sha = commit(&repo, "README", "hello", "add a readme");
    let runs = served.wait_runs(1);
    assert_eq!(runs[0]["sha"], sha.as_str());
    assert_eq!(runs[0]["message"], "add a readme");
    let run = served.wait_for(runs[0]["id"].as_i64().unwrap(), &["passed", "failed"]);
    assert_eq!(run["status"], "passed", "{run}");
    let refs = served.get("/api/repos").1[0]["refs"].clone();
    assert!(!refs.to_string().contains("touch"), "{refs}");
    assert_eq!(
        served.runs().len(),
        1,
        "the branch named as a command was built"
    );
    assert!(served.log().contains("skipping a ref"), "{}", served.log());
}

#[test]
fn a_killed_server_marks_its_run_interrupted_and_the_run_can_run_again() {
    let t = Test::new();
    let (repo, sha, gate) = gated(&t, "");
    let mut served = Served::start(&t, &repo, &[]);
    assert_eq!(push_hook(&served, &sha, "d-1", SECRET).0, 202);
    let id = served.wait_runs(1)[0]["id"].as_i64().unwrap();
    served.wait_for(id, &["running"]);
    served.kill();

    served.restart();
    let run = served.wait_for(id, &["interrupted"]);
    assert!(
        run["error"].as_str().unwrap().contains("server stopped"),
        "{run}"
    );
    std::fs::write(&gate, "").unwrap();
    let (status, body) = served.post(&format!("/api/runs/{id}/rerun"), Value::Null);
    assert_eq!(status, 201, "{body}");
    let again = body["run"].as_i64().unwrap();
    let rerun = served.wait_for(again, &["passed", "failed", "error"]);
    assert_eq!(rerun["status"], "passed", "{rerun}");
    assert_eq!(rerun["rerun_of"], id);
    assert_eq!(rerun["sha"], sha.as_str());
}

#[test]
fn a_broken_pipeline_is_a_run_that_says_why() {
    let t = Test::new();
    let repo = repository(&t, "name: app\non: push\njobs:\n  build:\n    stepz: []\n");
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let served = Served::start(&t, &repo, &[]);
    assert_eq!(push_hook(&served, &sha, "d-1", SECRET).0, 202);
    let id = served.wait_runs(1)[0]["id"].as_i64().unwrap();
    let run = served.wait_for(id, &["error"]);
    let error = run["error"].as_str().unwrap();
    assert!(error.contains("ferry.yaml:5:5"), "{error}");
}

#[test]
fn a_matrix_made_at_run_time_shows_its_jobs_in_the_api() {
    let pipeline = r#"name: app
on: push
jobs:
  plan:
    outputs: { oses: "${{ steps.p.outputs.oses }}" }
    steps:
      - id: p
        run: echo 'oses=["linux","bsd"]' >> "$FERRY_OUTPUT"
  test:
    needs: plan
    matrix: { os: "${{ fromJSON(needs.plan.outputs.oses) }}" }
    steps: [{ run: echo on $OS, env: { OS: "${{ matrix.os }}" } }]
  after: { needs: test, steps: [{ run: echo done }] }
"#;
    let (_t, _repo, sha, served) = serving(pipeline, &[]);
    assert_eq!(push_hook(&served, &sha, "d-1", SECRET).0, 202);
    let id = served.wait_runs(1)[0]["id"].as_i64().unwrap();
    let run = served.wait_for(id, &["passed", "failed"]);
    assert_eq!(run["status"], "passed", "{run}");
    let jobs: Vec<(&str, &str)> = run["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["job"].as_str().unwrap(), j["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        jobs,
        [
            ("plan", "passed"),
            ("test (linux)", "passed"),
            ("test (bsd)", "passed"),
            ("after", "passed")
        ],
        "the combinations take the job's place, in order"
    );
}

/// A request a forge stub received.
#[derive(Debug, Clone)]
struct Received {
    line: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// A stand-in for the forges' status endpoints: answers every request with 201 and sends
/// what it was sent.
fn forge_stub() -> (u16, std::sync::mpsc::Receiver<Received>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (log, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut headers = Vec::new();
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                let (k, v) = header.split_once(':').unwrap();
                headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
            }
            let length: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let _ = log.send(Received {
                line: line.trim_end().to_string(),
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            let mut stream = reader.into_inner();
            let _ = stream.write_all(
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            );
        }
    });
    (port, received)
}

#[test]
fn commit_statuses_reach_github_gitea_and_gitlab() {
    let t = Test::new();
    let repo = repository(&t, ECHO);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let (port, received) = forge_stub();
    let api = format!("http://127.0.0.1:{port}");
    let mut config = String::new();
    for forge in ["github", "gitea", "gitlab"] {
        config.push_str(&format!(
            "[[repo]]\nurl = \"{}\"\nname = \"{forge}/app\"\n[repo.status]\nforge = \"{forge}\"\napi = \"{api}\"\nproject = \"acme/app\"\ntoken-env = \"FORGE_TOKEN\"\n\n",
            repo.display()
        ));
    }
    std::fs::write(t.path("serve.toml"), config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut served = Served {
        child: Command::new("true").spawn().unwrap(),
        base: format!("http://{listen}"),
        args: [
            "serve",
            "--config",
            "serve.toml",
            "--listen",
            &listen,
            "--data",
            "data",
        ]
        .iter()
        .chain(
            [
                "--token-env",
                "API_TOKEN",
                "--url",
                "https://ci.example.com",
            ]
            .iter(),
        )
        .map(|s| s.to_string())
        .collect(),
        env: vec![("FORGE_TOKEN".into(), "forge-t0ken".into())],
        dir: t.dir.path().to_path_buf(),
    };
    served.restart();
    for forge in ["github", "gitea", "gitlab"] {
        let (status, body) = served.post(
            "/api/trigger",
            serde_json::json!({ "repo": format!("{forge}/app"), "ref": "main" }),
        );
        assert_eq!(status, 201, "{body}");
        served.wait_for(body["run"].as_i64().unwrap(), &["passed"]);
    }
    // Statuses are sent off the run's path: wait for the last ones.
    let received: Vec<Received> = (0..6)
        .map(|n| {
            received
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("status {n} of 6 never came: {e}"))
        })
        .collect();
    let header = |r: &Received, name: &str| {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    // Two statuses per commit and forge: pending (running), then the outcome.
    let sent_to = |prefix: &str| -> Vec<&Received> {
        let sent: Vec<&Received> = received
            .iter()
            .filter(|r| r.line.starts_with(prefix))
            .collect();
        assert_eq!(sent.len(), 2, "{prefix}: {received:?}");
        sent
    };
    let github = sent_to(&format!("POST /repos/acme/app/statuses/{sha} "));
    assert_eq!(header(github[0], "authorization"), "Bearer forge-t0ken");
    let last: Value = serde_json::from_str(&github[1].body).unwrap();
    assert_eq!(last["state"], "success");
    assert_eq!(last["context"], "ferry");
    assert!(
        last["target_url"]
            .as_str()
            .unwrap()
            .starts_with("https://ci.example.com/runs/")
    );

    let gitea = sent_to(&format!("POST /api/v1/repos/acme/app/statuses/{sha} "));
    assert_eq!(header(gitea[0], "authorization"), "token forge-t0ken");
    assert!(gitea[0].body.contains("\"pending\""), "{:?}", gitea[0]);

    let gitlab = sent_to(&format!("POST /api/v4/projects/acme%2Fapp/statuses/{sha}?"));
    assert_eq!(header(gitlab[0], "private-token"), "forge-t0ken");
    assert!(gitlab[0].line.contains("state=running"), "{:?}", gitlab[0]);
    assert!(gitlab[1].line.contains("state=success"), "{:?}", gitlab[1]);
}

#[test]
fn the_cli_triggers_follows_lists_and_approves_on_a_server() {
    let t = Test::new();
    let pipeline = "name: app\non:\n  manual:\n    inputs:\n      target: { type: choice, options: [staging, production], default: staging }\njobs:\n  build:\n    steps:\n      - run: echo \"building for ${{ inputs.target }}\"\n  ship:\n    needs: build\n    environment: { name: production, approval: required }\n    steps:\n      - run: echo shipped\n";
    let repo = repository(&t, pipeline);
    let served = Served::start(&t, &repo, &[]);
    let t = t
        .env("FERRY_SERVER", &served.base)
        .env("FERRY_TOKEN", common::server::TOKEN);

    common::ferry(&t, &["trigger", "--input", "target=nowhere"])
        .code(2)
        .stderr_has("nowhere");
    let follow = t
        .command()
        .args(["trigger", "--input", "target=production", "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = served.wait_runs(1)[0]["id"].as_i64().unwrap();
    let run = || served.get(&format!("/api/runs/{id}")).1;
    eventually(
        || (run()["approvals"][0]["job"] == "ship").then_some(()),
        || format!("`ship` never asked for approval: {}", run()),
    );
    common::ferry(&t, &["approve", "latest", "--comment", "looks good"])
        .code(0)
        .stderr_has("approved deploying `ship` to `production`");
    let out = follow.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("building for production"), "{stdout}");
    assert!(stdout.contains("shipped"), "{stdout}");

    common::ferry(&t, &["runs"])
        .code(0)
        .stdout_has(&format!("#{id}"))
        .stdout_has("passed")
        .stdout_has("manual");
    common::ferry(&t, &["logs", &id.to_string(), "build"])
        .code(0)
        .stdout_has("building for production");
    let refused = t
        .command()
        .args(["runs"])
        .env("FERRY_TOKEN", "wrong")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
}

/// A GitHub pull request hook from `head_repo` into `acme/app`'s main.
fn pull_request_hook(served: &Served, sha: &str, delivery: &str, head_repo: &str) -> u16 {
    let body = serde_json::json!({
        "action": "opened",
        "number": 7,
        "repository": { "full_name": "acme/app" },
        "pull_request": {
            "title": "a change",
            "user": { "login": "eve" },
            "head": { "sha": sha, "ref": "feature", "repo": { "full_name": head_repo } },
            "base": { "ref": "main", "repo": { "full_name": "acme/app" } },
        },
    })
    .to_string();
    let signature = format!(
        "sha256={}",
        ferry_server::hooks::sign(SECRET, body.as_bytes())
    );
    Served::agent()
        .post(&format!("{}/hooks/github", served.base))
        .header("X-GitHub-Event", "pull_request")
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", &signature)
        .send(body.as_bytes())
        .unwrap()
        .status()
        .as_u16()
}

/// The text of every log event of a finished run, from its event stream.
fn streamed_logs(served: &Served, id: i64) -> String {
    let mut response = Served::agent()
        .get(&format!("{}/api/runs/{id}/events", served.base))
        .header(
            "Authorization",
            &format!("Bearer {}", common::server::TOKEN),
        )
        .call()
        .unwrap();
    let stream = response
        .body_mut()
        .with_config()
        .limit(200 << 20)
        .read_to_string()
        .unwrap();
    assert!(stream.contains("event: end"), "{stream}");
    stream
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|e| e["type"] == "log")
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn forks_get_no_secrets_unless_trusted_and_secrets_are_masked_in_the_stream() {
    // The step asks for a secret, a plain host variable, and the server's own credentials
    // both ways.
    let pipeline = |trust: bool| {
        format!(
            "name: app\non:\n  pull_request:\n    branches: [main]\n    fork-secrets: {trust}\njobs:\n  show:\n    steps:\n      - run: echo \"token=[$DEPLOY_TOKEN] plain=[$PLAIN_VAR] api=[$API_TOKEN] hook=[$HOOK_SECRET]\"\n        permissions: {{ secrets: [DEPLOY_TOKEN, API_TOKEN], env: [PLAIN_VAR, HOOK_SECRET] }}\n"
        )
    };
    for trust in [false, true] {
        let t = Test::new();
        let repo = repository(&t, &pipeline(trust));
        let sha = git(&repo, &["rev-parse", "HEAD"]);
        // The fork's commit trusts forks itself: only the target branch's word counts.
        git(&repo, &["checkout", "-q", "-b", "fork-work"]);
        let forked = format!("{}# changed by a fork\n", pipeline(true));
        let fork_sha = commit(&repo, "ferry.yaml", &forked, "trust me");
        git(&repo, &["checkout", "-q", "main"]);
        let mut served = Served::start(&t, &repo, &[]);
        served.env = vec![
            ("DEPLOY_TOKEN".into(), "hunter2-secret".into()),
            ("PLAIN_VAR".into(), "plain-value".into()),
        ];
        served.kill();
        served.restart();
        let no_credentials = |logs: &str| {
            for leaked in ["hunter2", common::server::TOKEN, SECRET] {
                assert!(
                    !logs.contains(leaked),
                    "`{leaked}` reached the stream: {logs}"
                );
            }
            assert!(logs.contains("api=[] hook=[]"), "{logs}");
        };

        assert_eq!(
            pull_request_hook(&served, &sha, "same-repo", "acme/app"),
            202
        );
        let id = served.wait_runs(1)[0]["id"].as_i64().unwrap();
        let run = served.wait_for(id, &["passed", "failed", "error"]);
        assert_eq!(run["fork"], false);
        let logs = streamed_logs(&served, id);
        no_credentials(&logs);
        assert!(
            logs.contains("token=[***] plain=[plain-value]"),
            "the run got no secret or variable: {logs}"
        );

        assert_eq!(
            pull_request_hook(&served, &fork_sha, "from-fork", "eve/app"),
            202
        );
        let id = served.wait_runs(2)[0]["id"].as_i64().unwrap();
        let run = served.wait_for(id, &["passed", "failed", "error"]);
        assert_eq!(run["fork"], true, "{run}");
        assert_eq!(run["status"], "passed", "{run}");
        assert_eq!(run["trigger"], "pull-request");
        let logs = streamed_logs(&served, id);
        no_credentials(&logs);
        let expected = match trust {
            true => "token=[***] plain=[plain-value]",
            false => "token=[] plain=[]",
        };
        assert!(
            logs.contains(expected),
            "main says fork-secrets: {trust}, but the fork's run logged {logs}"
        );
    }
}

/// A pull request from a fork runs hostile code: it reads every process's environment, the
/// server's data, and calls the server's API. Nothing of the server's reaches a log, an
/// API response or a file.
#[cfg(target_os = "linux")]
#[test]
fn a_hostile_fork_pull_request_reaches_nothing_of_the_server() {
    let t = Test::new();
    let data = t.path("data");
    let pipeline = "name: app\non:\n  pull_request:\n    branches: [main]\njobs:\n  show:\n    steps:\n      - run: echo main\n";
    let repo = repository(&t, pipeline);
    git(&repo, &["checkout", "-q", "-b", "fork-work"]);
    let mut served = Served::start(&t, &repo, &[]);
    served.env = vec![("DEPLOY_TOKEN".into(), "hunter2-secret".into())];
    served.kill();
    served.restart();
    let port = served.base.rsplit(':').next().unwrap().to_string();
    let script = format!(
        "for f in /proc/$PPID/environ /proc/1/environ /proc/[0-9]*/environ; do tr '\\0' ' ' < $f; echo; done 2>&1\n\
         ls {data} 2>&1\n\
         cat {data}/* 2>&1 | head -c 4000\n\
         curl -sS -f -m 5 http://127.0.0.1:{port}/api/runs; echo \"api: $?\"\n",
        data = data.display(),
    );
    // The fork writes its own grants: the server's port, through the proxy.
    let hostile = format!(
        "name: app\non:\n  pull_request:\n    branches: [main]\njobs:\n  show:\n    steps:\n      - run: sh hostile.sh\n        permissions: {{ secrets: [DEPLOY_TOKEN], network: [\"127.0.0.1:{port}\"], paths: {{ ./out: write }} }}\n"
    );
    commit(&repo, "hostile.sh", &script, "look around");
    let fork_sha = commit(&repo, "ferry.yaml", &hostile, "hostile");
    // And a fork that grants itself the server's data folder.
    let greedy = hostile.replace(
        "./out: write",
        &format!("./out: write, {}: read", data.display()),
    );
    let greedy_sha = commit(&repo, "ferry.yaml", &greedy, "greedy");
    git(&repo, &["checkout", "-q", "main"]);
    assert_eq!(
        pull_request_hook(&served, &fork_sha, "from-fork", "eve/app"),
        202
    );
    let id = served.wait_runs(1)[0]["id"].as_i64().unwrap();
    let run = served.wait_for(id, &["passed", "failed", "error"]);
    assert_eq!(run["fork"], true, "{run}");
    // A path inside its own checkout is the fork's own to grant.
    assert_ne!(run["status"], "error", "{run}");
    let logs = streamed_logs(&served, id);
    let (_, api) = served.get(&format!("/api/runs/{id}"));
    let leaks = ["hunter2", common::server::TOKEN, SECRET];
    for leaked in leaks {
        assert!(!logs.contains(leaked), "`{leaked}` reached the log: {logs}");
        assert!(
            !api.to_string().contains(leaked),
            "`{leaked}` reached the API: {api}"
        );
    }
    // Of the data folder it sees only the empty path to its own workspace.
    assert!(data.join("ferry.db").exists());
    assert!(!logs.contains("ferry.db"), "{logs}");
    assert!(!logs.contains("SQLite format"), "{logs}");
    // Of the host's processes, only its own: no `ferry serve` among them.
    assert!(
        !logs.contains("API_TOKEN") && !logs.contains("HOOK_SECRET"),
        "{logs}"
    );
    assert!(
        logs.contains("resolves to 127.0.0.1, a private or loopback address"),
        "the proxy did not refuse the server's address: {logs}"
    );
    assert!(
        logs.contains("api: 22"),
        "the step reached the server: {logs}"
    );
    assert_eq!(
        pull_request_hook(&served, &greedy_sha, "from-greedy-fork", "eve/app"),
        202
    );
    let greedy_id = served.wait_runs(2)[0]["id"].as_i64().unwrap();
    let run = served.wait_for(greedy_id, &["passed", "failed", "error"]);
    assert_eq!(run["status"], "error", "{run}");
    assert!(
        run.to_string().contains("grants itself the host path"),
        "{run}"
    );
    // Or hands the server's data folder to a service of the job, which runs as the server's
    // user outside its sandbox.
    let sly = format!(
        "name: app\non:\n  pull_request:\n    branches: [main]\njobs:\n  show:\n    services:\n      db:\n        run: exec sleep 600\n        ports: [5432]\n        permissions: {{ paths: {{ {}: write }} }}\n    steps:\n      - run: echo hi\n",
        data.display()
    );
    git(&repo, &["checkout", "-q", "fork-work"]);
    let sly_sha = commit(&repo, "ferry.yaml", &sly, "sly");
    git(&repo, &["checkout", "-q", "main"]);
    assert_eq!(
        pull_request_hook(&served, &sly_sha, "from-sly-fork", "eve/app"),
        202
    );
    let sly_id = served.wait_runs(3)[0]["id"].as_i64().unwrap();
    let run = served.wait_for(sly_id, &["passed", "failed", "error"]);
    assert_eq!(run["status"], "error", "{run}");
    assert!(
        run.to_string()
            .contains("service `db` of job `show` grants itself the host path"),
        "{run}"
    );
    // Every file the run left: records, logs, workspaces.
    let mut files = vec![data.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(
                std::fs::read_dir(&path)
                    .unwrap()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else if let Ok(bytes) = std::fs::read(&path) {
            let text = String::from_utf8_lossy(&bytes);
            for leaked in leaks {
                assert!(
                    !text.contains(leaked),
                    "`{leaked}` is in {}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn a_fork_neither_reads_nor_poisons_what_a_trusted_job_keeps() {
    let t = Test::new();
    let job = |script: &str| {
        format!(
            "name: app\non:\n  push:\n    branches: [main]\n  pull_request:\n    branches: [main]\njobs:\n  build:\n    keep: [target]\n    steps:\n      - run: |\n          echo \"kept=[$(ls target 2>/dev/null | tr '\\n' ' ')]\"\n          {script}\n"
        )
    };
    let repo = repository(
        &t,
        &job("mkdir -p target; echo secret-build > target/trusted"),
    );
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    // The fork plants a build script where the trusted job's build would run it.
    git(&repo, &["checkout", "-q", "-b", "fork-work"]);
    let fork_sha = commit(
        &repo,
        "ferry.yaml",
        &job("mkdir -p target; echo 'curl evil' > target/build.sh; cat target/trusted"),
        "poison",
    );
    git(&repo, &["checkout", "-q", "main"]);
    let served = Served::start(&t, &repo, &[]);
    let run = |n: usize| {
        let id = served.wait_runs(n)[0]["id"].as_i64().unwrap();
        let run = served.wait_for(id, &["passed", "failed", "error"]);
        (run, streamed_logs(&served, id))
    };
    assert_eq!(push_hook(&served, &sha, "first", SECRET).0, 202);
    let (first, logs) = run(1);
    assert_eq!(first["status"], "passed", "{first} {logs}");
    assert!(logs.contains("kept=[]"), "{logs}");
    assert_eq!(
        pull_request_hook(&served, &fork_sha, "from-fork", "eve/app"),
        202
    );
    let (fork, logs) = run(2);
    assert_eq!(fork["fork"], true, "{fork}");
    assert!(
        logs.contains("kept=[]"),
        "the fork saw the trusted job's `target`: {logs}"
    );
    assert!(!logs.contains("secret-build"), "{logs}");
    assert_eq!(push_hook(&served, &sha, "second", SECRET).0, 202);
    let (second, logs) = run(3);
    assert_eq!(second["status"], "passed", "{second} {logs}");
    assert!(logs.contains("kept=[trusted ]"), "{logs}");
    assert!(
        !logs.contains("build.sh"),
        "the fork's file reached a trusted run: {logs}"
    );
}

#[test]
fn a_newer_run_cancels_the_older_one_in_its_concurrency_group() {
    let t = Test::new();
    let (repo, sha, gate) = gated(
        &t,
        "    concurrency: { group: production, cancel-in-progress: true }\n",
    );
    let served = Served::start(&t, &repo, &[]);
    assert_eq!(push_hook(&served, &sha, "older", SECRET).0, 202);
    let older = served.wait_runs(1)[0]["id"].as_i64().unwrap();
    served.wait_for(older, &["running"]);
    let run = || served.get(&format!("/api/runs/{older}")).1;
    eventually(
        || (run()["jobs"][0]["status"] == "running").then_some(()),
        || format!("the older run's job never ran: {}", run()),
    );
    assert_eq!(push_hook(&served, &sha, "newer", SECRET).0, 202);
    let newer = served.wait_runs(2)[0]["id"].as_i64().unwrap();
    let run = served.wait_for(older, &["cancelled", "passed", "failed"]);
    assert_eq!(run["status"], "cancelled", "{run}");
    std::fs::write(&gate, "").unwrap();
    let run = served.wait_for(newer, &["passed", "failed", "cancelled"]);
    assert_eq!(run["status"], "passed", "{run}");
}

#[test]
fn a_server_stopped_with_sigterm_queues_its_run_again_on_restart() {
    let t = Test::new();
    let (repo, sha, gate) = gated(&t, "");
    let mut served = Served::start(&t, &repo, &["--retry-interrupted"]);
    assert_eq!(push_hook(&served, &sha, "d-1", SECRET).0, 202);
    let id = served.wait_runs(1)[0]["id"].as_i64().unwrap();
    served.wait_for(id, &["running"]);
    // SAFETY: signalling a child process this test started.
    unsafe { libc::kill(served.child.id() as i32, libc::SIGTERM) };
    let status = served.child.wait().unwrap();
    assert!(
        status.success(),
        "a stopped server exits cleanly: {status:?}"
    );

    served.restart();
    let run = served.wait_for(id, &["interrupted"]);
    assert!(
        run["error"].as_str().unwrap().contains("server stopped"),
        "{run}"
    );
    let again = served.wait_runs(2)[0].clone();
    assert_eq!(again["rerun_of"], id, "{again}");
    std::fs::write(&gate, "").unwrap();
    let again = served.wait_for(again["id"].as_i64().unwrap(), &["passed", "failed"]);
    assert_eq!(again["status"], "passed", "{again}");
}

#[test]
fn deployments_are_kept_with_the_run_that_made_them() {
    let t = Test::new();
    let pipeline = "name: app\non: push\njobs:\n  ship:\n    environment: staging\n    steps:\n      - uses: deploy\n        with: { target: command, version: v1.2.3, command: [true] }\n        permissions: { exec: [true] }\n";
    let repo = repository(&t, pipeline);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let served = Served::start(&t, &repo, &[]);
    assert_eq!(push_hook(&served, &sha, "d-1", SECRET).0, 202);
    let id = served.wait_runs(1)[0]["id"].as_i64().unwrap();
    let run = served.wait_for(id, &["passed", "failed", "error"]);
    assert_eq!(run["status"], "passed", "{run}");
    assert_eq!(run["deployments"][0]["version"], "v1.2.3", "{run}");
    let (status, list) = served.get("/api/deployments?environment=staging");
    assert_eq!(status, 200);
    assert_eq!(list[0]["run_id"], id, "{list}");
    assert_eq!(list[0]["outcome"], "deployed");
    assert_eq!(list[0]["repo"], "app");
    let (_, none) = served.get("/api/deployments?environment=production");
    assert_eq!(none, Value::Array(vec![]));
}

#[test]
fn a_running_run_and_a_queued_one_can_be_cancelled() {
    let t = Test::new();
    let (repo, sha, _gate) = gated(&t, "");
    let served = Served::start(&t, &repo, &["--max-runs", "1"]);
    assert_eq!(push_hook(&served, &sha, "first", SECRET).0, 202);
    let running = served.wait_runs(1)[0]["id"].as_i64().unwrap();
    served.wait_for(running, &["running"]);
    assert_eq!(push_hook(&served, &sha, "second", SECRET).0, 202);
    let queued = served.wait_runs(2)[0]["id"].as_i64().unwrap();
    assert_eq!(
        served.get(&format!("/api/runs/{queued}")).1["status"],
        "queued"
    );

    let (status, body) = served.post(&format!("/api/runs/{queued}/cancel"), Value::Null);
    assert_eq!(status, 202, "{body}");
    let (status, body) = served.post(&format!("/api/runs/{running}/cancel"), Value::Null);
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        served.wait_for(running, &["cancelled"])["status"],
        "cancelled"
    );
    // The slot the cancelled run freed must not start the queued run that was cancelled.
    // Runs start in the order they were queued: once a later run holds the slot, the
    // cancelled one had its chance to (wrongly) start.
    assert_eq!(push_hook(&served, &sha, "third", SECRET).0, 202);
    let third = served.wait_runs(3)[0]["id"].as_i64().unwrap();
    served.wait_for(third, &["running"]);
    let (_, was_queued) = served.get(&format!("/api/runs/{queued}"));
    assert_eq!(was_queued["status"], "cancelled", "{was_queued}");
    assert_eq!(
        was_queued["error"], "cancelled before it started",
        "{was_queued}"
    );
    assert_eq!(was_queued["jobs"], Value::Array(vec![]), "{was_queued}");
    served.post(&format!("/api/runs/{third}/cancel"), Value::Null);
    let (status, body) = served.post(&format!("/api/runs/{running}/cancel"), Value::Null);
    assert_eq!(status, 409, "{body}");
}

#[test]
fn a_repository_given_by_a_relative_path_is_built() {
    let t = Test::new();
    repository(&t, ECHO);
    let mut served = Served::start(&t, &t.path("app"), &[]);
    // The same server, given the repository as `app` from its working directory.
    served.kill();
    let at = served.args.iter().position(|a| a == "--repo").unwrap();
    served.args[at + 1] = "app".into();
    let data = served.args.iter().position(|a| a == "--data").unwrap();
    served.args[data + 1] = "data-relative".into();
    served.restart();
    let (status, body) = served.post("/api/trigger", serde_json::json!({ "ref": "main" }));
    assert_eq!(status, 201, "{body}");
    let run = served.wait_for(
        body["run"].as_i64().unwrap(),
        &["passed", "failed", "error"],
    );
    assert_eq!(run["status"], "passed", "{run}");
    assert_eq!(run["repo"], "app");
}
