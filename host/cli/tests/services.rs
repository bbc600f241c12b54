//! A job's `services:` with real programs: Debian's PostgreSQL and Python's HTTP server, each
//! in its own sandbox, reached by the job's steps by name, and stopped when the job ends.
#![cfg(target_os = "linux")]

mod common;

use common::Test;
use std::path::PathBuf;

fn plain(t: &Test) -> (i32, String) {
    let done = common::ferry(t, &["run", "--output", "plain"]);
    (done.code, format!("{}{}", done.stdout, done.stderr))
}

/// The folder of PostgreSQL's server programs (`initdb`, `postgres`, `pg_isready`), which
/// Debian keeps off `PATH`; the project's setup installs them.
fn postgres_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: `cargo xtask test` installs Debian's `postgresql`")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("postgres").is_file())
        .collect();
    found.sort();
    found
        .pop()
        .expect("no PostgreSQL server under /usr/lib/postgresql")
}

/// Processes whose environment holds `marker`: what a run left running.
fn survivors(marker: &str) -> Vec<String> {
    let needle = format!("FERRY_TEST_MARKER={marker}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| var == needle.as_bytes())
        {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
    }
    found
}

fn marker() -> String {
    format!("{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn a_job_with_a_postgresql_service_runs_tests_that_connect_to_it() {
    let bin = postgres_bin();
    let marker = marker();
    let yaml = format!(
        r#"jobs:
  test:
    services:
      db:
        run: |
          initdb -D /tmp/pg -U postgres --auth=trust >/dev/null
          exec postgres -D /tmp/pg -k /tmp -c listen_addresses=127.0.0.1 -p 5432
        env: {{ PATH: "{bin}:/usr/bin:/bin", FERRY_TEST_MARKER: "{marker}" }}
        ports: [5432]
        ready: {{ run: "{bin}/pg_isready -h db -p 5432", timeout-seconds: 60 }}
    steps:
      - name: schema
        run: psql -v ON_ERROR_STOP=1 -h db -U postgres -c 'create table items (id serial primary key, name text not null)'
      - name: tests
        run: |
          psql -v ON_ERROR_STOP=1 -h db -U postgres -c "insert into items (name) values ('ferry'), ('wasm')"
          count=$(psql -h localhost -U postgres -At -c 'select count(*) from items')
          test "$count" = 2 || {{ echo "expected 2 rows, found $count"; exit 1; }}
          echo "rows: $count; as $(psql -h db -U postgres -At -c 'select current_user')"
"#,
        bin = bin.display()
    );
    let t = Test::new().file("ferry.yaml", &yaml);
    let (code, out) = plain(&t);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rows: 2; as postgres"), "{out}");
    assert!(out.contains("service `db` stopped"), "{out}");
    assert!(survivors(&marker).is_empty(), "{:?}", survivors(&marker));
    // Its log is kept with the run, and says it started and stopped.
    let runs = t.path(".ferry/runs");
    let run = std::fs::read_dir(&runs).unwrap().flatten().next().unwrap();
    let log = std::fs::read_to_string(run.path().join("services/test/db.log")).unwrap();
    assert!(
        log.contains("database system is ready to accept connections"),
        "{log}"
    );
    assert!(log.contains("[ferry] ready after"), "{log}");
    assert!(log.contains("database system is shut down"), "{log}");
    // Every run gets a fresh database: `create table` passes again.
    let (code, out) = plain(&t);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rows: 2"), "{out}");
}

#[test]
fn a_service_sees_only_its_grant_and_steps_reach_only_its_listed_ports() {
    // What the service must not reach: a file and a port of the host.
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("key");
    std::fs::write(&secret, "host-secret-bytes").unwrap();
    let host_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port_number = host_port.local_addr().unwrap().port();
    let marker = marker();
    let yaml = format!(
        r#"jobs:
  test:
    services:
      stub:
        run: |
          echo "token is $TOKEN"
          echo "uid $(id -u)"
          cat {secret} && echo "READ THE HOST FILE" || echo "host file hidden"
          python3 -c 'import socket; socket.create_connection(("127.0.0.1", {host_port_number}), 2)' && echo "REACHED THE HOST" || echo "host port unreachable"
          echo hello > /tmp/www/index.html 2>/dev/null || {{ mkdir -p /tmp/www && echo hello > /tmp/www/index.html; }}
          python3 -m http.server 8081 --bind 127.0.0.1 --directory /tmp/www >/dev/null 2>&1 &
          exec python3 -m http.server 80 --bind 127.0.0.1 --directory /tmp/www
        env: {{ TOKEN: "${{{{ secrets.TOKEN }}}}", FERRY_TEST_MARKER: "{marker}" }}
        permissions: {{ secrets: [TOKEN] }}
        ports: [80]
        ready: {{ http: "http://stub/index.html" }}
      app:
        run: |
          python3 -c 'import urllib.request; print("app saw:", urllib.request.urlopen("http://stub/index.html").read().decode().strip(), flush=True)'
          exec python3 -m http.server 9000 --bind 127.0.0.1 --directory /tmp
        ports: [9000]
    steps:
      - run: |
          python3 - <<'EOF'
          import urllib.request, socket
          print("listed:", urllib.request.urlopen("http://stub/index.html").read().decode().strip())
          try:
              socket.create_connection(("stub", 8081), 2).recv(1)
              print("UNLISTED PORT REACHED")
          except OSError as e:
              print("unlisted port refused:", type(e).__name__)
          EOF
"#,
        secret = secret.display()
    );
    let t = Test::new()
        .file("ferry.yaml", &yaml)
        .env("TOKEN", "s3cr3t-t0ken-value");
    let (code, out) = plain(&t);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("listed: hello"), "{out}");
    assert!(out.contains("unlisted port refused"), "{out}");
    assert!(!out.contains("UNLISTED PORT REACHED"), "{out}");
    let runs = t.path(".ferry/runs");
    let run = std::fs::read_dir(&runs).unwrap().flatten().next().unwrap();
    let log = std::fs::read_to_string(run.path().join("services/test/stub.log")).unwrap();
    assert!(log.contains("host file hidden"), "{log}");
    assert!(!log.contains("READ THE HOST FILE"), "{log}");
    assert!(log.contains("host port unreachable"), "{log}");
    assert!(!log.contains("REACHED THE HOST"), "{log}");
    // The granted secret reached the service, and its log shows it masked.
    assert!(log.contains("token is ***"), "{log}");
    assert!(!log.contains("s3cr3t-t0ken-value"), "{log}");
    // Never root inside, even when ferry is.
    assert!(log.contains("uid ") && !log.contains("uid 0\n"), "{log}");
    // A service reaches the ones listed before it by name.
    let app = std::fs::read_to_string(run.path().join("services/test/app.log")).unwrap();
    assert!(app.contains("app saw: hello"), "{app}");
    // Python does not handle SIGTERM: it is killed at once, and the notice says why.
    assert!(
        out.contains("service `stub` stopped (killed: its first process does not handle SIGTERM"),
        "{out}"
    );
    // The background server the script left is gone with the service.
    assert!(survivors(&marker).is_empty(), "{:?}", survivors(&marker));
    drop(host_port);
}

#[test]
fn a_service_that_exits_or_never_listens_fails_the_job_before_its_steps() {
    let t = Test::new().file(
        "ferry.yaml",
        r#"jobs:
  test:
    services:
      db:
        run: |
          echo "FATAL: bad configuration line 3" >&2
          exit 3
        ports: [5432]
    steps:
      - run: echo STEP RAN
"#,
    );
    let (code, out) = plain(&t);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("service `db` exited before it was ready (exit status 3)"),
        "{out}"
    );
    assert!(out.contains("FATAL: bad configuration line 3"), "{out}");
    assert!(out.contains("exec postgres"), "{out}");
    assert!(!out.contains("STEP RAN"), "{out}");

    let t = t.file(
        "ferry.yaml",
        r#"jobs:
  test:
    services:
      quiet:
        run: exec sleep 600
        ports: [6379]
        ready: { timeout-seconds: 1 }
    steps:
      - run: echo STEP RAN
"#,
    );
    let (code, out) = plain(&t);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("service `quiet` was not ready within 1s: port 6379"),
        "{out}"
    );
    assert!(out.contains("timeout-seconds: 10"), "{out}");
    assert!(!out.contains("STEP RAN"), "{out}");
}

#[test]
fn the_jobs_time_limit_holds_while_its_services_start() {
    let marker = marker();
    let t = Test::new().file(
        "ferry.yaml",
        &format!(
            r#"jobs:
  test:
    timeout-minutes: 0.02
    services:
      slow:
        run: exec sleep 600
        env: {{ FERRY_TEST_MARKER: "{marker}" }}
        ports: [6379]
        ready: {{ timeout-seconds: 600 }}
    steps:
      - run: echo STEP RAN
"#
        ),
    );
    let started = std::time::Instant::now();
    let (code, out) = plain(&t);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("the job's `timeout-minutes` ran out while its services started"),
        "{out}"
    );
    assert!(!out.contains("STEP RAN"), "{out}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "waited {:?}",
        started.elapsed()
    );
    // The half-started service is gone with the job.
    assert!(survivors(&marker).is_empty(), "{:?}", survivors(&marker));
}

#[test]
fn the_server_serves_a_service_log_and_nothing_beside_it() {
    use common::server::{SECRET, Served, git, push_hook, repository};
    let t = Test::new();
    let repo = repository(
        &t,
        "on:\n  push:\n    branches: [main]\njobs:\n  test:\n    services:\n      cache:\n        run: echo cache starting; exec python3 -m http.server 6380 --bind 127.0.0.1\n        ports: [6380]\n    steps:\n      - run: echo hi\n",
    );
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let served = Served::start(&t, &repo, &[]);
    assert_eq!(push_hook(&served, &sha, "svc", SECRET).0, 202);
    let id = served.wait_runs(1)[0]["id"].as_i64().unwrap();
    let run = served.wait_for(id, &["passed", "failed", "error"]);
    assert_eq!(run["status"], "passed", "{run}");
    let (status, run) = served.get(&format!("/api/runs/{id}"));
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["services"][0]["job"], "test", "{run}");
    assert_eq!(run["services"][0]["service"], "cache", "{run}");
    let (status, log) = served.get(&format!("/api/runs/{id}/services/test/cache"));
    assert_eq!(status, 200, "{log}");
    assert!(log.as_str().unwrap().contains("cache starting"), "{log}");
    // Nothing but a listed log: no other file of the record, of the server or the host.
    for path in [
        "test/..%2F..%2Frun.json",
        "..%2Flogs/test",
        "test/hosts",
        "test/cache.log",
        "..%2F..%2F..%2F..%2F..%2Fetc/passwd",
    ] {
        let (status, body) = served.get(&format!("/api/runs/{id}/services/{path}"));
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, _) = served.anonymous(&format!("/api/runs/{id}/services/test/cache"));
    assert_eq!(status, 401);
}

#[test]
fn a_cached_step_is_a_miss_when_its_jobs_services_change() {
    // The pipeline file stays the same: only the service, through `--var`, changes.
    let t = Test::new().file(
        "ferry.yaml",
        r#"jobs:
  test:
    services:
      stub:
        run: exec python3 -m http.server 8000 --bind 127.0.0.1 --directory /tmp
        env: { STUB_VERSION: "${{ vars.stub }}" }
        ports: [8000]
    steps:
      - run: python3 -c "import urllib.request; urllib.request.urlopen('http://stub:8000/')" && echo CHECKED AGAINST THE STUB
        cache: true
"#,
    );
    let run = |stub: &str| {
        let var = format!("stub={stub}");
        let done = common::ferry(&t, &["run", "--output", "plain", "--var", &var]);
        assert_eq!(done.code, 0, "{}{}", done.stdout, done.stderr);
        format!("{}{}", done.stdout, done.stderr)
    };
    assert!(run("1").contains("CHECKED AGAINST THE STUB"));
    let out = run("1");
    assert!(out.contains("✓ cached"), "the same services: {out}");
    // Another service, the same step: it runs again.
    let out = run("2");
    assert!(!out.contains("✓ cached"), "{out}");
    assert!(out.contains("CHECKED AGAINST THE STUB"), "{out}");
}
