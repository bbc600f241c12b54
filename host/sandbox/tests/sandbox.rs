//! Every capability tested one at a time against real guest components, each denial while a
//! sibling job passes.

use ferry_builtins::fixtures;
use ferry_engine::event::{Event, FailureKind, Level, Reporter, Status};
use ferry_engine::{CancellationToken, RunOptions, RunResult};
use ferry_model::{Plan, Source};
use ferry_sandbox::{Sandbox, SandboxOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);

impl Reporter for Collect {
    fn event(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

struct Outcome {
    result: RunResult,
    events: Vec<Event>,
    root: tempfile::TempDir,
}

impl Outcome {
    fn step(&self, job: &str) -> (Status, Option<FailureKind>, String) {
        let j = &self.result.summary.jobs[job];
        let step = &j.steps[0];
        (
            step.status,
            step.failure,
            step.message.clone().unwrap_or_default(),
        )
    }

    fn log(&self, job: &str) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Log { job: j, text, .. } if &**j == job => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    /// The lines the host logged for what its sandbox refused the step.
    fn denied(&self, job: &str) -> String {
        self.log(job)
            .into_iter()
            .filter_map(|l| l.strip_prefix("[ferry] denied: ").map(String::from))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn job(&self, job: &str) -> Status {
        self.result.summary.jobs[job].status
    }

    /// The step of `job` passed.
    fn passed(&self, job: &str) {
        let (status, kind, message) = self.step(job);
        assert_eq!(status, Status::Passed, "{kind:?}: {message}");
    }

    /// The denial must not touch the sibling.
    fn sibling_passed(&self) {
        assert_eq!(
            self.job("sibling"),
            Status::Passed,
            "the sibling job must pass"
        );
    }
}

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ferry-cache")
}

/// Runs `jobs` (YAML under `jobs:`) plus a passing `sibling` job in a fresh repository.
async fn run(jobs: &str, setup: impl FnOnce(&Path)) -> Outcome {
    run_with(jobs, setup, BTreeMap::new(), BTreeMap::new()).await
}

/// As [`run`], with secrets and the host's environment given.
async fn run_with(
    jobs: &str,
    setup: impl FnOnce(&Path),
    secrets: BTreeMap<String, String>,
    host_env: BTreeMap<String, String>,
) -> Outcome {
    run_as(jobs, setup, secrets, host_env, false).await
}

/// As [`run_with`], for a run whose code is trusted or not (a pull request from a fork).
async fn run_as(
    jobs: &str,
    setup: impl FnOnce(&Path),
    secrets: BTreeMap<String, String>,
    host_env: BTreeMap<String, String>,
    untrusted: bool,
) -> Outcome {
    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("README.md"), "a repository\n").unwrap();
    setup(root.path());
    let yaml = format!(
        "name: sandbox test\njobs:\n{jobs}\n  sibling:\n    steps:\n      - uses: {}\n        with: {{ case: noop }}\n",
        fixtures::PROBE
    );
    let source = Source::new(repo.join("ferry.yaml"), yaml);
    let pipeline = ferry_model::parse(&source, &repo, &["shell"]).unwrap_or_else(|r| panic!("{r}"));
    let plan = Plan::new(pipeline, &[]).unwrap();
    let sandbox = Arc::new(
        Sandbox::new(SandboxOptions {
            cache_dir: cache_dir(),
            builtins: ferry_builtins::BUILTINS,
            concurrency: 4,
        })
        .unwrap(),
    );
    let collect = Arc::new(Collect::default());
    let options = RunOptions {
        slots: None,
        parallel: 4,
        fail_fast: false,
        state_dir: repo.join(".ferry"),
        source_dir: repo.clone(),
        secrets,
        host_env: Arc::new(host_env),
        cancel: CancellationToken::new(),
        git: Default::default(),
        vars: Default::default(),
        inputs: Default::default(),
        cache: None,
        reuse: false,
        clean: false,
        untrusted,
    };
    let result = ferry_engine::run(plan, sandbox, collect.clone(), options)
        .await
        .unwrap();
    let events = collect.0.lock().unwrap().clone();
    Outcome {
        result,
        events,
        root,
    }
}

fn probe(case: &str, arg: &str) -> String {
    format!(
        "  probe:\n    steps:\n      - uses: {}\n        with: {{ case: {case}, arg: {arg:?} }}\n",
        fixtures::PROBE
    )
}

fn outside(root: &Path) {
    std::fs::create_dir_all(root.join("outside")).unwrap();
    std::fs::write(root.join("outside/secret.txt"), "top secret\n").unwrap();
}

impl Outcome {
    /// The file outside the repository that [`outside`] made: it is there to be leaked.
    fn secret_file(&self) -> PathBuf {
        let path = self.root.path().join("outside/secret.txt");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "top secret\n");
        path
    }

    /// Nothing the step logged holds the outside file's content.
    fn leaked_nothing(&self, job: &str) {
        let log = self.log(job);
        assert!(
            !log.iter().any(|l| l.contains("top secret")),
            "the secret leaked: {log:?}"
        );
    }

    /// The job's workspace on the host.
    fn workspace(&self, job: &str) -> PathBuf {
        self.root.path().join("repo/.ferry/work").join(job)
    }
}

/// Whether anything connected to `listener` (which must be nonblocking). Called after the
/// run has ended: a connection that was made is waiting to be accepted by then.
fn reached(listener: &std::net::TcpListener) -> bool {
    match listener.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    }
}

fn listener(ip: &str) -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

#[tokio::test]
async fn reads_inside_the_workspace() {
    let out = run(&probe("read", "README.md"), |_| {}).await;
    out.passed("probe");
    assert!(
        out.log("probe")
            .iter()
            .any(|l| l == "read 13 bytes from README.md: a repository"),
        "the probe logs what it read: {:?}",
        out.log("probe")
    );
    let out = run(&probe("read", "/workspace/README.md"), |_| {}).await;
    out.passed("probe");
}

#[tokio::test]
async fn denies_parent_directory_escape() {
    // From .ferry/work/probe, four levels up is the temp root.
    let out = run(&probe("read", "../../../../outside/secret.txt"), outside).await;
    let secret = out.secret_file();
    out.leaked_nothing("probe");
    let (status, kind, message) = out.step("probe");
    // The guest saw a bare errno; the host says what it refused, with the grant.
    assert_eq!(
        (status, kind),
        (Status::Failed, Some(FailureKind::Denied)),
        "{message}"
    );
    assert!(message.starts_with("read ../"), "{message}");
    // An untrusted run is told what was refused, never where things are on the host.
    let untrusted = run_as(
        &probe("read", "../../../../outside/secret.txt"),
        outside,
        BTreeMap::new(),
        BTreeMap::new(),
        true,
    )
    .await;
    let denied = untrusted.denied("probe");
    assert!(denied.contains("paths: { /the/folder: read }"), "{denied}");
    assert!(
        !denied.contains(&untrusted.root.path().join("outside").display().to_string()),
        "{denied}"
    );
    let denied = out.denied("probe");
    assert!(
        denied.starts_with("a read of `../../../../outside/secret.txt`, which leads outside what the step is shown, is not granted to step `"),
        "{denied}"
    );
    let folder = secret.parent().unwrap().display().to_string();
    assert!(
        denied.contains(&format!("paths: {{ {folder}: read }}")),
        "{denied}"
    );
    out.sibling_passed();
}

#[tokio::test]
async fn denies_absolute_paths() {
    // A file that is there on every host: the temporary directory's own.
    let root = tempfile::tempdir().unwrap();
    outside(root.path());
    let path = root.path().join("outside/secret.txt");
    let out = run(&probe("read", &path.display().to_string()), |_| {}).await;
    assert!(path.is_file());
    out.leaked_nothing("probe");
    let (status, _, message) = out.step("probe");
    assert_eq!(status, Status::Failed, "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    out.sibling_passed();
}

#[tokio::test]
async fn denies_listing_a_directory_outside_the_workspace() {
    let out = run(&probe("list", "."), |_| {}).await;
    let (status, _, message) = out.step("probe");
    assert_eq!(status, Status::Passed, "{message}");
    assert!(
        out.log("probe").iter().any(|l| l == "README.md"),
        "the workspace lists: {:?}",
        out.log("probe")
    );
    // The guest's root is its workspace, never the host's.
    let out = run(&probe("list", "/"), |_| {}).await;
    out.passed("probe");
    assert_eq!(out.log("probe"), ["README.md"]);
    for dir in ["..", "../../../../outside", "/tmp", "/etc"] {
        let out = run(&probe("list", dir), outside).await;
        out.secret_file();
        let (status, _, message) = out.step("probe");
        assert_eq!(
            status,
            Status::Failed,
            "{dir}: {message} {:?}",
            out.log("probe")
        );
        assert!(message.starts_with(&format!("list {dir}")), "{message}");
        let log = out.log("probe");
        assert!(
            !log.iter().any(|l| l.contains("secret.txt") || l == "repo"),
            "{dir} listed: {log:?}"
        );
        out.sibling_passed();
    }
}

#[cfg(unix)]
#[tokio::test]
async fn denies_a_planted_symlink_that_points_outside() {
    let out = run(&probe("read", "link"), |root| {
        outside(root);
        std::os::unix::fs::symlink(root.join("outside/secret.txt"), root.join("repo/link"))
            .unwrap();
    })
    .await;
    let secret = out.secret_file();
    out.leaked_nothing("probe");
    let (status, kind, message) = out.step("probe");
    assert_eq!(status, Status::Failed, "{message}");
    assert_eq!(kind, Some(FailureKind::Denied), "{message}");
    assert!(message.starts_with("read link"), "{message}");
    let denied = out.denied("probe");
    assert!(
        denied.starts_with("a read of `link`, which leads outside what the step is shown,"),
        "{denied}"
    );
    // The hint names the folder the link leads to, for the pipeline's author.
    let folder = std::fs::canonicalize(secret.parent().unwrap()).unwrap();
    assert!(
        denied.contains(&format!("paths: {{ {}: read }}", folder.display())),
        "{denied}"
    );
    out.sibling_passed();
}

#[tokio::test]
async fn keeps_a_workspace_file_with_the_run_record() {
    let out = run(&probe("keep", "README.md"), |_| {}).await;
    let (status, _, message) = out.step("probe");
    assert_eq!(status, Status::Passed, "{message}");
    let kept = out.result.dir.join("files/probe/step-1/README.md");
    assert_eq!(std::fs::read_to_string(kept).unwrap(), "a repository\n");
    out.sibling_passed();
}

#[cfg(unix)]
#[tokio::test]
async fn refuses_to_keep_files_outside_the_workspace() {
    for (arg, why) in [
        (
            "../outside/secret.txt",
            "is not a path inside the workspace",
        ),
        ("/etc/passwd", "is not a path inside the workspace"),
        (
            "link",
            "leads outside the workspace through a symbolic link",
        ),
        ("missing.txt", "No such file"),
    ] {
        let out = run(&probe("keep", arg), |root| {
            outside(root);
            std::os::unix::fs::symlink(root.join("outside/secret.txt"), root.join("repo/link"))
                .unwrap();
        })
        .await;
        let (status, _, message) = out.step("probe");
        assert_eq!(status, Status::Failed, "{arg}: {message}");
        assert!(message.contains(why), "{arg}: {message}");
        assert!(!out.result.dir.join("files").exists(), "{arg} was kept");
        out.sibling_passed();
    }
}

#[tokio::test]
async fn denies_environment_variables_not_granted() {
    // PATH is set on the host; the probe neither declares nor is granted it.
    assert!(std::env::var_os("PATH").is_some());
    let host = BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]);
    let out = run_with(&probe("env", "PATH"), |_| {}, BTreeMap::new(), host).await;
    let (status, _, message) = out.step("probe");
    assert_eq!(status, Status::Failed);
    assert_eq!(message, "PATH is not set");
    out.sibling_passed();
}

#[tokio::test]
async fn denies_writes_to_a_read_only_workspace() {
    for path in ["new.txt", "/workspace/new.txt", "README.md"] {
        let out = run(&probe("write", path), |_| {}).await;
        let (status, kind, message) = out.step("probe");
        assert_eq!(status, Status::Failed, "{path}: {message}");
        assert_eq!(kind, Some(FailureKind::Denied), "{path}: {message}");
        assert!(message.starts_with(&format!("write {path}")), "{message}");
        let denied = out.denied("probe");
        assert!(
            denied.starts_with(&format!(
                "a write to `{}` is not granted to step `",
                path.trim_start_matches("/workspace/")
            )),
            "{denied}"
        );
        assert!(denied.ends_with("workspace: write"), "{denied}");
        assert!(!out.workspace("probe").join("new.txt").exists(), "{path}");
        assert!(!out.root.path().join("repo/new.txt").exists(), "{path}");
        assert_eq!(
            std::fs::read_to_string(out.workspace("probe").join("README.md")).unwrap(),
            "a repository\n",
            "{path}"
        );
        out.sibling_passed();
    }
}

#[tokio::test]
async fn denies_tcp_connect_without_a_grant() {
    let (listener, addr) = listener("127.0.0.1");
    let out = run(&probe("connect", &addr), |_| {}).await;
    let (status, kind, message) = out.step("probe");
    assert_eq!(
        (status, kind),
        (Status::Failed, Some(FailureKind::Denied)),
        "{message} {:?}",
        out.log("probe")
    );
    assert!(message.starts_with(&format!("connect {addr}")), "{message}");
    let denied = out.denied("probe");
    assert!(
        denied.starts_with(&format!(
            "network access (a connect to {addr}) is not granted"
        )),
        "{denied}"
    );
    assert!(
        denied.ends_with(&format!("network: [\"{addr}\"]")),
        "{denied}"
    );
    assert!(!reached(&listener), "the step reached {addr}");
    out.sibling_passed();
}

#[tokio::test]
async fn a_network_grant_reaches_its_host_and_port_and_nothing_else() {
    let (granted, granted_addr) = listener("127.0.0.1");
    let (other_port, other_port_addr) = listener("127.0.0.1");
    let port = granted.local_addr().unwrap().port();
    let only = |permission: &str| {
        format!(
            "        permissions: {{ workspace: write, env: [FIXTURE_VAR], secrets: [FIXTURE_SECRET], exec: [echo], network: [\"{permission}\"] }}\n"
        )
    };
    let one_port = only(&format!("127.0.0.1:{port}"));
    let out = run(&granted_case("connect", &granted_addr, &one_port), |_| {}).await;
    out.passed("probe");
    assert!(reached(&granted), "the granted port was reached");
    let mut others = vec![(other_port, other_port_addr, one_port.clone())];
    // All of 127/8 is loopback on Linux; elsewhere only 127.0.0.1 may be configured.
    if cfg!(target_os = "linux") {
        let (other_host, other_host_addr) = listener("127.0.0.2");
        others.push((other_host, other_host_addr, only("127.0.0.1")));
    }
    for (listener, addr, permissions) in &others {
        let out = run(&granted_case("connect", addr, permissions), |_| {}).await;
        let (status, _, message) = out.step("probe");
        assert_eq!(status, Status::Failed, "{addr}: {message}");
        assert!(message.starts_with(&format!("connect {addr}")), "{message}");
        assert!(!reached(listener), "the step reached {addr}");
        out.sibling_passed();
    }
}

/// A pull request from a fork writes its own grants: naming the machine's loopback gets it
/// nothing, as for any private address.
#[tokio::test]
async fn an_untrusted_run_reaches_no_loopback_address_it_grants_itself() {
    let (granted, granted_addr) = listener("127.0.0.1");
    let port = granted.local_addr().unwrap().port();
    let permissions = format!(
        "        permissions: {{ workspace: write, env: [FIXTURE_VAR], secrets: [FIXTURE_SECRET], exec: [echo], network: [\"127.0.0.1:{port}\"] }}\n"
    );
    let case = granted_case("connect", &granted_addr, &permissions);
    let out = run_as(&case, |_| {}, BTreeMap::new(), BTreeMap::new(), true).await;
    let (status, _, message) = out.step("probe");
    assert_eq!(status, Status::Failed, "{message}");
    assert!(
        !reached(&granted),
        "an untrusted step reached {granted_addr}"
    );
    out.sibling_passed();
    // The same grant in a trusted run reaches it.
    let out = run(&case, |_| {}).await;
    out.passed("probe");
    assert!(reached(&granted));
}

#[tokio::test]
async fn denies_exec_of_a_program_not_granted() {
    let out = run(&probe("exec", "echo hi"), |_| {}).await;
    let (status, kind, message) = out.step("probe");
    assert_eq!((status, kind), (Status::Failed, Some(FailureKind::Denied)));
    assert!(
        message.contains("exec of `echo` is not granted"),
        "{message}"
    );
    assert!(
        message.contains("exec: [echo]"),
        "the hint names the grant: {message}"
    );
    out.sibling_passed();
}

#[tokio::test]
async fn stops_an_infinite_loop_at_the_timeout() {
    let jobs = format!(
        "  probe:\n    steps:\n      - uses: {}\n        with: {{ case: spin }}\n        timeout-minutes: 0.01\n",
        fixtures::PROBE
    );
    let out = run(&jobs, |_| {}).await;
    let (status, kind, message) = out.step("probe");
    // The limit given, not the 60-minute default, is what stopped it.
    assert_eq!(
        (status, kind),
        (Status::Failed, Some(FailureKind::Timeout)),
        "{message}"
    );
    assert!(message.contains("timed out after 0.6s"), "{message}");
    out.sibling_passed();
}

#[tokio::test]
async fn stops_a_memory_bomb_at_the_limit() {
    let jobs = format!(
        "  probe:\n    steps:\n      - uses: {}\n        with: {{ case: memory }}\n        permissions: {{ memory: 64MiB }}\n",
        fixtures::PROBE
    );
    let out = run(&jobs, |_| {}).await;
    let (status, kind, message) = out.step("probe");
    assert_eq!(
        (status, kind),
        (Status::Failed, Some(FailureKind::MemoryLimit)),
        "{message}"
    );
    assert_eq!(
        message,
        "memory limit of 64 MiB reached (permissions.memory)"
    );
    out.sibling_passed();
}

#[tokio::test]
async fn caps_a_gibibyte_of_log_output() {
    let out = run(&probe("flood", &(1u64 << 30).to_string()), |_| {}).await;
    let (status, _, message) = out.step("probe");
    assert_eq!(status, Status::Passed, "{message}");
    let log = out.log("probe");
    let bytes: usize = log.iter().map(|l| l.len() + 1).sum();
    assert!(bytes <= (10 << 20) + 200, "log kept {bytes} bytes");
    assert!(bytes >= (9 << 20), "log kept only {bytes} bytes");
    assert!(
        log.last().unwrap().contains("log truncated"),
        "{:?}",
        &log[log.len() - 3..]
    );
    out.sibling_passed();
}

#[tokio::test]
async fn a_panicking_guest_is_a_crash_not_a_host_failure() {
    let out = run(&probe("panic", ""), |_| {}).await;
    let (status, kind, message) = out.step("probe");
    assert_eq!(
        (status, kind),
        (Status::Failed, Some(FailureKind::Trap)),
        "{message}"
    );
    // Said once: wasmtime's own text already starts with `wasm trap:`.
    assert!(
        message.starts_with("the step crashed (wasm trap: "),
        "{message}"
    );
    assert_eq!(message.matches("wasm trap").count(), 1, "{message}");
    assert!(
        out.log("probe")
            .iter()
            .any(|l| l.contains("the fixture panicked"))
    );
    out.sibling_passed();
}

fn granted_case(case: &str, arg: &str, permissions: &str) -> String {
    format!(
        "  probe:\n    steps:\n      - uses: {}\n        with: {{ case: {case}, arg: {arg:?} }}\n{permissions}",
        fixtures::GRANTED
    )
}

const ALL_GRANTS: &str = "        permissions:\n          workspace: write\n          env: [FIXTURE_VAR]\n          secrets: [FIXTURE_SECRET]\n          network: [\"127.0.0.1\"]\n          exec: [echo]\n";

#[tokio::test]
async fn refuses_before_start_a_need_that_was_not_granted() {
    // Had it run, the step would have written a file and logged.
    let out = run(&granted_case("write", "new.txt", ""), |_| {}).await;
    let (status, kind, message) = out.step("probe");
    assert_eq!((status, kind), (Status::Failed, Some(FailureKind::Denied)));
    assert!(
        message.contains("needs write access to the workspace"),
        "{message}"
    );
    for grant in [
        "workspace: write",
        "env: [FIXTURE_VAR]",
        "secrets: [FIXTURE_SECRET]",
        "network: [\"127.0.0.1\"]",
        "exec: [echo]",
    ] {
        assert!(message.contains(grant), "hint lacks `{grant}`: {message}");
    }
    assert!(
        message.contains("ferry.yaml:"),
        "hint names the line: {message}"
    );
    // Nothing ran: the step never logged and wrote nothing.
    assert!(out.log("probe").is_empty(), "{:?}", out.log("probe"));
    assert!(!out.workspace("probe").join("new.txt").exists());
    out.sibling_passed();
    // The same step, granted, does both: the checks above can fail.
    let out = run(&granted_case("write", "new.txt", ALL_GRANTS), |_| {}).await;
    out.passed("probe");
    assert!(out.workspace("probe").join("new.txt").exists());
}

/// A host environment with `FIXTURE_VAR` set, as `ferry run` would pass its own.
fn host_env() -> BTreeMap<String, String> {
    BTreeMap::from([("FIXTURE_VAR".to_string(), "from the host".to_string())])
}

#[tokio::test]
async fn granted_capabilities_work() {
    let (listener, addr) = listener("127.0.0.1");
    for (case, arg, logged) in [
        ("write", "new.txt", None),
        ("env", "FIXTURE_VAR", Some("FIXTURE_VAR=from the host")),
        ("connect", addr.as_str(), Some("connected to 127.0.0.1:")),
        ("exec", "echo hi", Some("hi")),
    ] {
        let jobs = granted_case(case, arg, ALL_GRANTS);
        let out = run_with(&jobs, |_| {}, BTreeMap::new(), host_env()).await;
        let (status, _, message) = out.step("probe");
        assert_eq!(status, Status::Passed, "{case}: {message}");
        if let Some(logged) = logged {
            let log = out.log("probe");
            assert!(log.iter().any(|l| l.starts_with(logged)), "{case}: {log:?}");
        } else {
            let written = std::fs::read_to_string(out.workspace("probe").join(arg)).unwrap();
            assert_eq!(written, "written by a step\n");
        }
    }
    assert!(reached(&listener));
    // Without the host variable, the step sees none: the value came from the host given.
    let out = run(&granted_case("env", "FIXTURE_VAR", ALL_GRANTS), |_| {}).await;
    assert_eq!(out.step("probe").2, "FIXTURE_VAR is not set");
}

#[tokio::test]
async fn a_granted_host_path_gives_its_access_and_shows_nothing_around_it() {
    let host = tempfile::tempdir().unwrap();
    let shared = host.path().join("shared");
    std::fs::create_dir_all(shared.join("granted")).unwrap();
    std::fs::write(shared.join("granted/ok.txt"), "fine to read\n").unwrap();
    outside(&shared.join("sibling"));
    let sibling = shared.join("sibling/outside/secret.txt");
    let granted = shared.join("granted");
    let grants = |access: &str| {
        ALL_GRANTS.replace(
            "          workspace: write\n",
            &format!(
                "          workspace: write\n          paths: {{ {}: {access} }}\n",
                granted.display()
            ),
        )
    };
    let at = |rel: &str| shared.join(rel).display().to_string();

    let out = run(
        &granted_case("read", &at("granted/ok.txt"), &grants("read")),
        |_| {},
    )
    .await;
    out.passed("probe");
    assert!(
        out.log("probe")
            .iter()
            .any(|l| l.ends_with(": fine to read"))
    );

    // Read-only: no write, no new file.
    let new = shared.join("granted/new.txt");
    let out = run(
        &granted_case("write", &at("granted/new.txt"), &grants("read")),
        |_| {},
    )
    .await;
    let (status, _, message) = out.step("probe");
    assert_eq!(status, Status::Failed, "{message}");
    assert!(message.starts_with("write "), "{message}");
    assert!(!new.exists(), "a read-only grant let the step write");
    // The same write with a write grant succeeds: the check above can fail.
    let out = run(
        &granted_case("write", &at("granted/new.txt"), &grants("write")),
        |_| {},
    )
    .await;
    out.passed("probe");
    assert_eq!(
        std::fs::read_to_string(&new).unwrap(),
        "written by a step\n"
    );

    // Neither the parent nor a sibling is visible, however it is named.
    for (case, arg) in [
        ("list", shared.display().to_string()),
        ("list", at("granted/..")),
        ("read", sibling.display().to_string()),
        ("read", at("granted/../sibling/outside/secret.txt")),
        ("write", at("sibling/planted.txt")),
    ] {
        let out = run(&granted_case(case, &arg, &grants("write")), |_| {}).await;
        let (status, _, message) = out.step("probe");
        assert_eq!(status, Status::Failed, "{case} {arg}: {message}");
        let log = out.log("probe");
        assert!(
            !log.iter()
                .any(|l| l.contains("top secret") || l == "sibling"),
            "{case} {arg}: {log:?}"
        );
        assert!(!shared.join("sibling/planted.txt").exists());
        assert_eq!(std::fs::read_to_string(&sibling).unwrap(), "top secret\n");
    }
}

#[tokio::test]
async fn processes_capture_quietly_and_stay_in_the_workspace() {
    let out = run(
        &granted_case("exec-quiet", "hello there", ALL_GRANTS),
        |_| {},
    )
    .await;
    out.passed("probe");
    assert_eq!(
        out.log("probe"),
        ["captured: hello there"],
        "echo=false keeps the child out of the log"
    );

    let out = run(&granted_case("exec-cwd", "sub", ALL_GRANTS), |root| {
        std::fs::create_dir(root.join("repo/sub")).unwrap();
    })
    .await;
    out.passed("probe");
    assert_eq!(out.log("probe"), ["in sub"]);

    for cwd in ["..", "/tmp"] {
        let out = run(&granted_case("exec-cwd", cwd, ALL_GRANTS), |_| {}).await;
        let (status, kind, message) = out.step("probe");
        assert_eq!(
            (status, kind),
            (Status::Failed, Some(FailureKind::InvalidInput))
        );
        assert!(message.contains("leaves the workspace"), "{message}");
    }

    // A grant of `echo` by name is not a grant of a path to it.
    let out = run(&granted_case("exec-path", "/bin/echo", ALL_GRANTS), |_| {}).await;
    let (_, _, message) = out.step("probe");
    assert!(
        message.contains("Denied") && message.contains("exec: [/bin/echo]"),
        "{message}"
    );
    for escape in ["../echo", "sub/../../echo"] {
        let out = run(&granted_case("exec-path", escape, ALL_GRANTS), |_| {}).await;
        let (_, kind, message) = out.step("probe");
        assert_eq!(kind, Some(FailureKind::InvalidInput), "{message}");
        assert!(message.contains("is not a program"), "{message}");
    }
}

#[tokio::test]
async fn secrets_reach_granted_steps_masked() {
    let secrets = BTreeMap::from([("FIXTURE_SECRET".to_string(), "s3cr3t-value".to_string())]);
    let out = run_with(
        &granted_case("env", "FIXTURE_SECRET", ALL_GRANTS),
        |_| {},
        secrets,
        BTreeMap::new(),
    )
    .await;
    let (status, _, message) = out.step("probe");
    assert_eq!(status, Status::Passed, "{message}");
    let log = out.log("probe");
    assert!(log.iter().any(|l| l == "FIXTURE_SECRET=***"), "{log:?}");
    assert!(!log.iter().any(|l| l.contains("s3cr3t-value")));
}

#[tokio::test]
async fn outputs_logs_and_annotations_reach_the_events() {
    let jobs = format!(
        "  probe:\n    steps:\n      - id: first\n        uses: {p}\n        with: {{ case: output, arg: value=42 }}\n      - uses: {p}\n        with: {{ case: log, arg: \"${{{{ steps.first.outputs.value }}}}\" }}\n",
        p = fixtures::PROBE
    );
    let out = run(&jobs, |_| {}).await;
    assert_eq!(out.job("probe"), Status::Passed);
    assert!(out.events.iter().any(
        |e| matches!(e, Event::Output { name, value, .. } if name == "value" && value == "42")
    ));
    assert!(out.events.iter().any(
        |e| matches!(e, Event::Log { level: Level::Warn, text, .. } if text == "a warning: 42")
    ));
    assert!(out.events.iter().any(
        |e| matches!(e, Event::Log { level: Level::Stderr, text, .. } if text == "to stderr")
    ));
    assert!(out.events.iter().any(|e| matches!(e, Event::Annotation { annotation, .. } if annotation.file.as_deref() == Some("src/main.rs") && annotation.line == Some(3))));
}

#[tokio::test]
async fn bad_inputs_are_reported_before_the_step_runs() {
    let jobs = format!(
        "  probe:\n    steps:\n      - uses: {}\n        with: {{ cas: noop }}\n",
        fixtures::PROBE
    );
    let out = run(&jobs, |_| {}).await;
    let (status, kind, message) = out.step("probe");
    assert_eq!(
        (status, kind),
        (Status::Failed, Some(FailureKind::InvalidInput))
    );
    assert!(
        message.contains("unknown input `cas` (did you mean `case`?)"),
        "{message}"
    );
    assert!(message.contains("input `case` is required"), "{message}");
    out.sibling_passed();
}

#[tokio::test]
async fn plain_wasi_commands_run_as_steps() {
    let jobs = format!(
        "  probe:\n    steps:\n      - uses: {c}\n        with: {{ args: [one, two] }}\n  failing:\n    steps:\n      - uses: {c}\n        with: {{ args: [exit=3] }}\n",
        c = fixtures::COMMAND
    );
    let out = run(&jobs, |_| {}).await;
    out.passed("probe");
    let log = out.log("probe");
    assert!(
        log.contains(&"arg: one".to_string()) && log.contains(&"arg: two".to_string()),
        "{log:?}"
    );
    assert!(log.contains(&"done".to_string()));
    assert!(
        !log.iter().any(|l| l.starts_with("env: PATH=")),
        "no host env leaks into a command"
    );
    // WASI 0.2 `exit` carries only success or failure, so every failing code arrives as 1.
    let (status, _, message) = out.step("failing");
    assert_eq!(status, Status::Failed);
    assert_eq!(message, "the command exited with code 1");
    out.sibling_passed();
}

/// A new sandbox over the compiled cache in `cache_dir`, as a new `ferry run` would make,
/// loading the plugin `uses` names.
async fn load_fresh(cache_dir: &Path, uses: ferry_model::Uses) -> Arc<ferry_sandbox::Plugin> {
    let sandbox = Sandbox::new(SandboxOptions {
        cache_dir: cache_dir.to_path_buf(),
        builtins: ferry_builtins::BUILTINS,
        concurrency: 1,
    })
    .unwrap();
    sandbox.plugin(&uses).await.unwrap()
}

#[tokio::test]
async fn the_second_load_comes_from_the_compiled_cache() {
    let dir = tempfile::tempdir().unwrap();
    let load = || async {
        load_fresh(dir.path(), ferry_model::Uses::Builtin("shell".into()))
            .await
            .cache
    };
    assert_eq!(load().await, ferry_sandbox::cache::Loaded::Compiled);
    assert_eq!(load().await, ferry_sandbox::cache::Loaded::Cached);
    // A damaged entry is replaced, not trusted.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    assert_eq!(load().await, ferry_sandbox::cache::Loaded::Compiled);
}

#[tokio::test]
async fn a_component_file_is_read_again_only_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("step.wasm");
    let cache = dir.path().join("cache");
    let load = || load_fresh(&cache, ferry_model::Uses::Path(file.clone()));
    std::fs::copy(ferry_builtins::fixtures::PROBE, &file).unwrap();
    let first = load().await;
    assert_eq!(first.cache, ferry_sandbox::cache::Loaded::Compiled);
    let second = load().await;
    assert_eq!(second.cache, ferry_sandbox::cache::Loaded::Cached);
    assert_eq!(second.digest, first.digest);
    // Another component at the same path is loaded as itself, not as the noted digest.
    std::fs::copy(ferry_builtins::fixtures::SDK, &file).unwrap();
    let third = load().await;
    assert_ne!(third.digest, first.digest);
    assert_eq!(third.info.name, "greet");
    // A note whose compiled copy is gone falls back to reading the file.
    for entry in std::fs::read_dir(&cache).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cwasm") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let fourth = load().await;
    assert_eq!(fourth.cache, ferry_sandbox::cache::Loaded::Compiled);
    assert_eq!(fourth.digest, third.digest);
}

#[tokio::test]
async fn an_unwritable_cache_still_runs_steps() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the cache directory should be: nothing can be written below it.
    let blocked = dir.path().join("not-a-dir");
    std::fs::write(&blocked, b"").unwrap();
    let sandbox = Sandbox::new(SandboxOptions {
        cache_dir: blocked.join("compiled"),
        builtins: ferry_builtins::BUILTINS,
        concurrency: 4,
    })
    .unwrap();
    let plugin = sandbox
        .plugin(&ferry_model::Uses::Builtin("shell".into()))
        .await
        .unwrap();
    assert_eq!(plugin.info.name, "shell");
}

fn sdk_step(with: &str, permissions: &str) -> String {
    format!(
        "  probe:\n    steps:\n      - id: greet\n        uses: {}\n        with: {with}\n{permissions}",
        fixtures::SDK
    )
}

const EXEC_ECHO: &str = "        permissions: { exec: [echo] }\n";

#[tokio::test]
async fn a_step_written_with_the_rust_sdk_runs() {
    let out = run(
        &sdk_step(
            "{ who: ferry, loud: true, times: 2, also: [crew] }",
            EXEC_ECHO,
        ),
        |_| {},
    )
    .await;
    out.passed("probe");
    let log = out.log("probe");
    assert_eq!(
        log,
        [
            "HELLO, FERRY",
            "HELLO, FERRY",
            "HELLO, CREW",
            "HELLO, CREW",
            "greeted 2 people"
        ]
    );
    assert!(
        out.events
            .iter()
            .any(|e| matches!(e, Event::GroupStart { title, .. } if title == "greetings"))
    );
    assert!(out.events.iter().any(|e| matches!(e, Event::Annotation { annotation, .. } if annotation.rule.as_deref() == Some("greet/many") && annotation.file.as_deref() == Some("README.md"))));
    assert!(out.events.iter().any(|e| matches!(e, Event::Output { name, value, .. } if name == "greeting" && value == "HELLO, CREW")));
}

#[tokio::test]
async fn the_rust_sdk_reports_bad_inputs_and_missing_grants() {
    let out = run(&sdk_step("{ times: \"0\" }", EXEC_ECHO), |_| {}).await;
    let (status, kind, message) = out.step("probe");
    assert_eq!(
        (status, kind),
        (Status::Failed, Some(FailureKind::InvalidInput))
    );
    assert_eq!(message, "input `times` must be at least 1");

    let out = run(&sdk_step("{ loud: maybe }", EXEC_ECHO), |_| {}).await;
    let (_, kind, message) = out.step("probe");
    assert_eq!(kind, Some(FailureKind::InvalidInput));
    assert!(
        message.contains("input `loud` must be a boolean"),
        "{message}"
    );

    let out = run(&sdk_step("{ who: x }", ""), |_| {}).await;
    let (_, kind, message) = out.step("probe");
    assert_eq!(kind, Some(FailureKind::Denied));
    assert!(message.contains("exec: [echo]"), "{message}");
    out.sibling_passed();
}

#[tokio::test]
async fn the_host_writes_a_tar_only_where_the_step_may_write() {
    // Read-only workspace: the host refuses to write for it.
    let out = run(&probe("tar", "out.tar|README.md"), |_| {}).await;
    let (status, _, message) = out.step("probe");
    assert_eq!(status, Status::Failed, "{message}");
    assert!(
        message.contains("`out.tar` is not granted for writing"),
        "{message}"
    );
    let work = out.root.path().join("repo/.ferry/work/probe");
    assert!(!work.join("out.tar").exists());

    let out = run(
        &granted_case("tar", "out.tar|README.md", ALL_GRANTS),
        |_| {},
    )
    .await;
    let (status, _, message) = out.step("probe");
    assert_eq!(status, Status::Passed, "{message}");
    assert!(
        out.log("probe")
            .iter()
            .any(|l| l.contains("wrote 2048 bytes, sha256:"))
    );
}

#[tokio::test]
async fn the_host_reads_for_a_tar_only_what_the_step_may_read() {
    for (source, expected) in [
        ("../../../../outside/secret.txt", "contains `..`"),
        (
            "/etc/passwd",
            "`/etc/passwd` is not under a path granted to this step",
        ),
        ("missing.txt", "`missing.txt`: No such file"),
    ] {
        let out = run(
            &granted_case("tar", &format!("out.tar|{source}"), ALL_GRANTS),
            outside,
        )
        .await;
        out.secret_file();
        let (status, _, message) = out.step("probe");
        assert_eq!(status, Status::Failed, "{source}: {message}");
        assert!(message.contains(expected), "{source}: {message}");
        // The host wrote no archive for it, so nothing of the file left the host.
        assert!(
            !out.workspace("probe").join("out.tar").exists(),
            "{source}: a tar was written"
        );
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_host_follows_no_planted_link_out_of_the_workspace_for_a_tar() {
    let out = run(&granted_case("tar", "out.tar|link", ALL_GRANTS), |root| {
        outside(root);
        std::os::unix::fs::symlink(root.join("outside/secret.txt"), root.join("repo/link"))
            .unwrap();
    })
    .await;
    let (status, _, message) = out.step("probe");
    assert_eq!(status, Status::Failed, "{message}");
    assert!(
        message.contains("leads outside what was granted through a symbolic link"),
        "{message}"
    );
}

#[tokio::test]
async fn the_host_walks_only_what_the_step_may_read() {
    let out = run(&probe("walk", "."), |root| {
        std::fs::create_dir_all(root.join("repo/sub")).unwrap();
        std::fs::write(root.join("repo/sub/a.txt"), "a").unwrap();
    })
    .await;
    let (status, _, message) = out.step("probe");
    assert_eq!(status, Status::Passed, "{message}");
    assert!(
        out.log("probe")
            .iter()
            .any(|l| l.contains("README.md") && l.contains("sub/a.txt"))
    );
    for (path, expected) in [
        ("/etc", "`/etc` is not under a path granted to this step"),
        ("../../../../outside", "contains `..`"),
    ] {
        let out = run(&probe("walk", path), outside).await;
        let (status, _, message) = out.step("probe");
        assert_eq!(status, Status::Failed, "{path}: {message}");
        assert!(message.contains(expected), "{path}: {message}");
        assert!(!out.log("probe").iter().any(|l| l.contains("secret.txt")));
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_host_walks_no_planted_link_out_of_the_workspace() {
    let out = run(&probe("walk", "link"), |root| {
        outside(root);
        std::os::unix::fs::symlink(root.join("outside"), root.join("repo/link")).unwrap();
    })
    .await;
    let (status, _, message) = out.step("probe");
    assert_eq!(status, Status::Failed, "{message}");
    assert!(
        message.contains("leads outside what was granted through a symbolic link"),
        "{message}"
    );
    assert!(!out.log("probe").iter().any(|l| l.contains("secret.txt")));
}

/// A container engine gets namespaces of its own inside the sandbox: more of the kernel than
/// a pull request from a fork is trusted with. It is refused there, with why, and works in a
/// trusted run.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_pull_request_from_a_fork_gets_no_container_engine() {
    if ferry_sandbox::confine::unavailable().is_some() {
        return;
    }
    let jobs = "  probe:\n    steps:\n      - run: buildah --version\n        permissions: { exec: [buildah] }\n";
    let out = run_as(jobs, |_| {}, BTreeMap::new(), BTreeMap::new(), true).await;
    let (status, _, message) = out.step("probe");
    assert_eq!(status, Status::Failed, "{message}");
    assert!(
        message.contains(
            "`buildah` is a container engine, which ferry does not start for a pull request from a fork"
        ),
        "{message}"
    );
    out.sibling_passed();
    let out = run(jobs, |_| {}).await;
    out.passed("probe");
}
