//! End-to-end tests of the `ferry` binary through a small builder.

mod common;

use common::Test;
use std::path::{Path, PathBuf};

fn ui(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../model/tests/ui")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn validate_reports_each_kind_of_error_with_its_location() {
    for (file, location, text) in [
        ("yaml-syntax.yaml", "ferry.yaml:5:14", "invalid YAML"),
        ("unknown-key.yaml", "ferry.yaml:4:5", "unknown key `stpes`"),
        ("cycle.yaml", "ferry.yaml:2:3", "a -> c -> b -> a"),
        (
            "unknown-needs.yaml",
            "ferry.yaml:5:13",
            "unknown job `biuld`",
        ),
        (
            "unknown-plugin.yaml",
            "ferry.yaml:4:15",
            "unknown plugin `shel`",
        ),
    ] {
        Test::new()
            .file("ferry.yaml", &ui(file))
            .args(&["validate"])
            .run()
            .code(2)
            .stderr_has(location)
            .stderr_has(text)
            .stderr_has("hint:");
    }
}

#[test]
fn validate_checks_steps_against_their_plugins() {
    let yaml = format!(
        "jobs:\n  a:\n    steps:\n      - uses: shell\n        with: {{ scrpit: echo hi }}\n      - uses: {}\n        with: {{ case: noop }}\n",
        ferry_builtins::fixtures::GRANTED
    );
    Test::new()
        .file("ferry.yaml", &yaml)
        .args(&["validate"])
        .run()
        .code(2)
        .stderr_has("ferry.yaml:4:9")
        .stderr_has("unknown input `scrpit` (did you mean `script`?)")
        .stderr_has("input `script` is required")
        .stderr_has("ferry.yaml:6:9")
        .stderr_has(
            "step `ferry_fixture_granted.wasm` of job `a` needs write access to the workspace",
        )
        .stderr_has("exec: [echo]")
        .stderr_has("has 3 errors");
    // `run` refuses the same pipeline before any step starts.
    let t = Test::new().file("ferry.yaml", &yaml).args(&["run"]);
    t.run().code(2).stderr_has("unknown input `scrpit`");
    assert!(!t.path(".ferry/runs").exists(), "nothing ran");
}

#[test]
fn validate_accepts_a_valid_pipeline() {
    Test::new()
        .file("ferry.yaml", "jobs:\n  a: { steps: [{ run: echo hi }] }\n  b: { needs: a, steps: [{ run: echo hi }, { run: echo again }] }\n")
        .args(&["validate"])
        .run()
        .code(0)
        .stdout_has("is valid: 2 jobs, 3 steps");
}

#[test]
fn a_missing_pipeline_file_is_a_usage_error_with_a_hint() {
    Test::new()
        .args(&["run"])
        .run()
        .code(2)
        .stderr_has("no `ferry.yaml`")
        .stderr_has("hint:");
    Test::new()
        .args(&["run", "nope.yaml"])
        .run()
        .code(2)
        .stderr_has("cannot read `nope.yaml`");
}

#[test]
fn an_unknown_output_format_is_a_usage_error_naming_the_choices() {
    // A valid pipeline beside it: the refusal can only come from `--output`.
    let t = Test::new()
        .file("ferry.yaml", "jobs:\n  a: { steps: [{ run: echo ran }] }\n")
        .args(&["run", "--output", "fancy"]);
    let done = t
        .run()
        .code(2)
        .stderr_has("'fancy'")
        .stderr_has("--output")
        .stderr_has("possible values: auto, tty, plain, json");
    assert!(!done.stdout.contains("ran"), "{}", done.stdout);
    assert!(!t.path(".ferry/runs").exists(), "nothing ran");
}

const PIPELINE: &str = "name: e2e\njobs:\n  build:\n    steps:\n      - id: v\n        run: echo \"version=1.0\" >> \"$FERRY_OUTPUT\"\n      - run: echo built ${{ steps.v.outputs.version }}\n  test:\n    needs: build\n    steps:\n      - run: echo tested\n  lint:\n    steps:\n      - run: echo linted\n";

#[test]
fn run_passes_and_prints_plain_lines() {
    let t = Test::new()
        .file("ferry.yaml", PIPELINE)
        .args(&["run", "--output", "plain"]);
    let done = t.run().code(0);
    let done = done
        .stdout_has("[build/step-2] built 1.0")
        .stdout_has("[test/step-1] tested")
        .stdout_has("✓ passed");
    assert!(done.stdout.contains("record: "));
    let runs: Vec<_> = std::fs::read_dir(t.path(".ferry/runs")).unwrap().collect();
    assert_eq!(runs.len(), 1);
}

/// The events of `ferry run --output json` in `t`, which must pass.
fn json_events(t: Test) -> Vec<serde_json::Value> {
    let done = t.args(&["run", "--output", "json"]).run().code(0);
    done.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn run_json_is_one_event_per_line() {
    let events = json_events(Test::new().file("ferry.yaml", PIPELINE));
    assert_eq!(events.first().unwrap()["type"], "run-started");
    assert_eq!(events.last().unwrap()["type"], "run-finished");
    assert_eq!(events.last().unwrap()["status"], "passed");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "log" && e["text"] == "built 1.0")
    );
}

/// A monorepo's pipeline: one job finds the packages, a matrix tests each.
const MONOREPO: &str = r#"name: monorepo
jobs:
  plan:
    outputs: { packages: "${{ steps.find.outputs.packages }}" }
    steps:
      - id: find
        run: printf 'packages=[%s]\n' "$(ls packages | sed 's/.*/"&"/' | paste -sd, -)" >> "$FERRY_OUTPUT"
  test:
    needs: plan
    matrix:
      package: ${{ fromJSON(needs.plan.outputs.packages) }}
    steps:
      - run: echo "$PACKAGE is at $(cat "packages/$PACKAGE/VERSION")"
        env: { PACKAGE: "${{ matrix.package }}" }
  release:
    needs: test
    steps:
      - run: echo "released after ${{ needs.test.result }}"
"#;

#[test]
fn a_matrix_is_made_from_a_job_s_outputs_when_it_ends() {
    let t = Test::new()
        .file("ferry.yaml", MONOREPO)
        .file("packages/api/VERSION", "1.2.0\n")
        .file("packages/web/VERSION", "0.9.1\n")
        .args(&["run", "--output", "plain"]);
    t.run()
        .code(0)
        .stdout_has("[test] matrix: 2 jobs: test (api), test (web)")
        .stdout_has("[test (api)/step-1] api is at 1.2.0")
        .stdout_has("[test (web)/step-1] web is at 0.9.1")
        .stdout_has("[release/step-1] released after success");
    let summary = run_summary(&only_run(&t));
    let jobs: Vec<&String> = summary["jobs"].as_object().unwrap().keys().collect();
    assert_eq!(jobs, ["plan", "release", "test (api)", "test (web)"]);

    // The same, as events: the matrix is announced before its jobs start.
    let events = json_events(
        Test::new()
            .file("ferry.yaml", MONOREPO)
            .file("packages/api/VERSION", "1.2.0\n"),
    );
    let made = events
        .iter()
        .position(|e| e["type"] == "matrix-expanded")
        .expect("a matrix-expanded event");
    assert_eq!(events[made]["job"], "test");
    assert_eq!(events[made]["jobs"][0]["id"], "test (api)");
    let started = events
        .iter()
        .position(|e| e["type"] == "job-started" && e["job"] == "test (api)")
        .unwrap();
    assert!(made < started);
}

#[test]
fn a_matrix_made_from_bad_output_fails_its_job_with_the_reason() {
    // No packages: the list is empty, and nothing after it runs.
    Test::new()
        .file("ferry.yaml", MONOREPO)
        .file("packages/.keep", "")
        .args(&["run", "--output", "plain"])
        .run()
        .code(1)
        .stdout_has("[test] job failed in")
        .stdout_has(": the matrix cannot be made: matrix axis `package` has no values")
        .stdout_has("[release] job skipped: a job it needs did not pass");
}

#[test]
fn an_integer_input_refuses_a_fraction_before_anything_runs() {
    Test::new()
        .file(
            "ferry.yaml",
            "jobs:\n  check:\n    steps:\n      - uses: verify\n        with: { url: \"http://127.0.0.1:9/\", attempts: 1.5 }\n        permissions: { network: [\"127.0.0.1:9\"] }\n",
        )
        .args(&["run", "--output", "plain"])
        .run()
        .code(2)
        .stderr_has("error: step `verify` of job `check`: input `attempts` must be a whole number, got `1.5`")
        .stderr_has("ferry.yaml:4:9");
}

#[test]
fn a_failing_pipeline_exits_1_and_names_the_step() {
    Test::new()
        .file("ferry.yaml", "jobs:\n  build:\n    steps:\n      - name: compile\n        run: echo broken >&2; exit 3\n")
        .args(&["run", "--output", "plain"])
        .run()
        .code(1)
        .stdout_has("[build/step-1] broken")
        .stdout_has("build › compile: process completed with exit code 3");
}

#[test]
fn job_selection_runs_the_job_and_what_it_needs() {
    let done = Test::new()
        .file("ferry.yaml", PIPELINE)
        .args(&["run", "--job", "test", "--output", "plain"])
        .run()
        .code(0);
    assert!(done.stdout.contains("tested") && done.stdout.contains("built 1.0"));
    assert!(!done.stdout.contains("linted"));
    Test::new()
        .file("ferry.yaml", PIPELINE)
        .args(&["run", "--job", "tset"])
        .run()
        .code(2)
        .stderr_has("no job `tset`")
        .stderr_has("did you mean `test`?");
}

#[test]
fn run_steps_see_only_granted_host_variables() {
    let yaml = "jobs:\n  a:\n    steps:\n      - run: echo \"value=[$FERRY_E2E_VAR]\"\n      - run: echo \"value=[$FERRY_E2E_VAR]\"\n        permissions: { env: [FERRY_E2E_VAR] }\n      - id: ids\n        run: echo \"[$CI $FERRY_JOB/$FERRY_STEP ${#FERRY_RUN_ID}]\"\n";
    Test::new()
        .file("ferry.yaml", yaml)
        .env("FERRY_E2E_VAR", "from-host")
        .args(&["run", "--output", "plain"])
        .run()
        .code(0)
        .stdout_has("[a/step-1] value=[]")
        .stdout_has("[a/step-2] value=[from-host]")
        .stdout_has("[a/ids] [true a/ids 20]");
}

#[test]
fn secrets_are_masked_in_output_and_records() {
    // The secret reaches a log line, an output (through $FERRY_OUTPUT), a job output, a
    // step's name, base64 at two alignments, and the failing step's stderr; a multi-line
    // secret is printed line by line and JSON-escaped. (A `run:` step's
    // failure message is its exit code; the engine's test masks a message holding the
    // secret.)
    let yaml = r#"jobs:
  a:
    permissions: { secrets: [DEPLOY_TOKEN, SIGNING_KEY] }
    outputs: { leaked: "${{ steps.out.outputs.token }}" }
    steps:
      - run: echo "token is $DEPLOY_TOKEN"
      - id: out
        name: "push with ${{ secrets.DEPLOY_TOKEN }}"
        run: echo "token=$DEPLOY_TOKEN" >> "$FERRY_OUTPUT"
      - id: encoded
        run: printf %s "$DEPLOY_TOKEN" | base64; printf 'user:%s' "$DEPLOY_TOKEN" | base64
      - id: lines
        run: printf '%s\n' "$SIGNING_KEY"
      - id: escaped
        run: printf '{"key":"%s"}\n' "$(printf '%s' "$SIGNING_KEY" | awk '{printf "%s\\n", $0}' | sed 's/\\n$//')"
      - id: summary
        run: printf '## deploy\n\ntoken %s\n%s\n' "$DEPLOY_TOKEN" "$(printf %s "$DEPLOY_TOKEN" | base64)" >> "$FERRY_STEP_SUMMARY"
      - run: echo "refused $DEPLOY_TOKEN" >&2; exit 3
"#;
    let key = "-----BEGIN KEY-----\nline-one-abcdef\nline-two-ghijkl\n-----END KEY-----";
    // What the step's `base64` prints, as coreutils says, not as ferry would encode it.
    let encoded: Vec<String> = ["hunter2-xyz", "user:hunter2-xyz"]
        .iter()
        .map(|text| {
            let out = common::tool("sh", &["-c", &format!("printf %s '{text}' | base64")]);
            out.trim().trim_end_matches('=').to_string()
        })
        .collect();
    let leaks = |text: &str| {
        text.contains("hunter2-xyz")
            || encoded.iter().any(|e| text.contains(e.as_str()))
            || text.contains("line-one-abcdef")
            || text.contains("line-two-ghijkl")
    };
    let t = Test::new()
        .file("ferry.yaml", yaml)
        .env("DEPLOY_TOKEN", "hunter2-xyz")
        .env("SIGNING_KEY", key);
    let done = common::ferry(&t, &["run", "--output", "plain"])
        .code(1)
        .stdout_has("token is ***")
        .stdout_has("[a/summary] │ token ***");
    assert!(!leaks(&done.stdout), "{}", done.stdout);
    assert!(!leaks(&done.stderr), "{}", done.stderr);
    let json = common::ferry(&t, &["run", "--output", "json"]).code(1);
    assert!(!leaks(&json.stdout), "{}", json.stdout);
    assert!(json.stdout.contains("push with ***"), "{}", json.stdout);
    let run = only_run(&t);
    assert_eq!(std::fs::read_dir(t.path(".ferry/runs")).unwrap().count(), 2);
    let log = std::fs::read_to_string(run.join("logs/a/step-1.log")).unwrap();
    assert_eq!(log, "token is ***\n");
    let mut files = Vec::new();
    let mut dirs = vec![t.path(".ferry/runs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.path().is_dir() {
                dirs.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    for file in &files {
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap()).into_owned();
        assert!(!leaks(&text), "{} holds the secret", file.display());
    }
    let summary = run_summary(&run);
    let job = &summary["jobs"]["a"];
    assert_eq!(job["steps"][1]["name"], "push with ***", "{summary}");
    assert_eq!(job["outputs"]["leaked"], "***", "{summary}");
    assert_eq!(
        job["steps"][6]["message"], "process completed with exit code 3",
        "{summary}"
    );
    let encoded_log = std::fs::read_to_string(run.join("logs/a/encoded.log")).unwrap();
    assert_eq!(encoded_log.matches("***").count(), 2, "{encoded_log}");
    let events = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
    assert!(events.contains("\"value\":\"***\""), "{events}");
    assert!(files.iter().any(|f| f.ends_with("step-7.log")), "{files:?}");
    let failed = std::fs::read_to_string(run.join("logs/a/step-7.log")).unwrap();
    assert_eq!(failed, "refused ***\n");
    // A multi-line secret printed as it is, line by line, and JSON-escaped on one line.
    let lines = std::fs::read_to_string(run.join("logs/a/lines.log")).unwrap();
    assert_eq!(lines, "***\n***\n***\n***\n", "{lines}");
    let escaped = std::fs::read_to_string(run.join("logs/a/escaped.log")).unwrap();
    assert_eq!(escaped, "{\"key\":\"***\"}\n", "{escaped}");
}

#[cfg(unix)]
fn alive(pid: i32) -> bool {
    // A killed orphan stays a zombie until its new parent reaps it; that is dead enough.
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        && let Some((_, rest)) = stat.rsplit_once(") ")
    {
        return !rest.starts_with('Z');
    }
    // SAFETY: signal 0 only checks existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Waits until process `pid` has exited; false if it is still there after a minute. A
/// killed process dies when the kernel delivers the signal, not when `kill` returns.
#[cfg(target_os = "linux")]
fn gone(pid: i32) -> bool {
    // A pidfd becomes readable when its process exits: an event, not a poll.
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            // No such process: it is gone (or reaped) already.
            return true;
        }
        // No pidfds here (an old kernel, a seccomp policy): watch the process table.
        common::eventually(|| (!alive(pid)).then_some(()), || format!("{pid} lives on"));
        return true;
    }
    let mut ready = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, then the descriptor this function opened.
    let exited = unsafe { libc::poll(&mut ready, 1, 60_000) } == 1;
    unsafe { libc::close(fd) };
    exited
}

#[cfg(all(unix, not(target_os = "linux")))]
fn gone(pid: i32) -> bool {
    // No process-exit event for a process that is not our child here.
    common::eventually(|| (!alive(pid)).then_some(()), || format!("{pid} lives on"));
    true
}

/// Host pids of the processes whose arguments hold `marker`, once there is one. A confined
/// step's processes have their own pid numbers inside; from here they are found by what
/// they run.
#[cfg(target_os = "linux")]
fn wait_for_processes(marker: &str) -> Vec<i32> {
    common::eventually(
        || {
            let pids = processes_with(marker);
            (!pids.is_empty()).then_some(pids)
        },
        || format!("no process runs `{marker}`"),
    )
}

#[cfg(target_os = "linux")]
fn processes_with(marker: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.contains(&marker.as_bytes()) && alive(pid) {
            pids.push(pid);
        }
    }
    pids
}

/// A `sleep` nobody else runs, to find a step's background process from the host.
#[cfg(target_os = "linux")]
fn unique_sleep() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(1);
    format!(
        "300.{}{:03}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(target_os = "linux")]
#[test]
fn a_timeout_kills_every_process_of_the_step() {
    let marker = unique_sleep();
    let yaml = format!(
        "jobs:\n  slow:\n    timeout-minutes: 0.02\n    steps:\n      - run: sleep {marker} & wait\n  quick:\n    steps:\n      - run: echo quick\n"
    );
    let t =
        Test::new()
            .file("ferry.yaml", &yaml)
            .args(&["run", "--output", "plain", "--no-fail-fast"]);
    let child = t.spawn();
    let pids = wait_for_processes(&marker);
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("timed out"), "{stdout}");
    assert!(stdout.contains("[quick/step-1] quick"), "{stdout}");
    for pid in pids {
        assert!(
            gone(pid),
            "background process {pid} survived the timeout\n{stdout}"
        );
    }
}

/// Ctrl-C and SIGTERM cancel the same way: the step's processes die, exit 130, and the
/// run record says `cancelled`.
#[cfg(target_os = "linux")]
fn cancels_cleanly_on(signal: i32) {
    let marker = unique_sleep();
    let yaml = format!(
        "jobs:\n  long:\n    steps:\n      - run: sleep {marker} & wait\n      - run: echo never\n"
    );
    let t = Test::new()
        .file("ferry.yaml", &yaml)
        .args(&["run", "--output", "plain"]);
    let child = t.spawn();
    let pids = wait_for_processes(&marker);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for pid in pids {
        assert!(gone(pid), "the step's process survived signal {signal}");
    }
    let summary = run_summary(&only_run(&t));
    assert_eq!(summary["status"], "cancelled");
    assert_eq!(summary["jobs"]["long"]["steps"][0]["status"], "cancelled");
    assert_eq!(summary["jobs"]["long"]["steps"][1]["status"], "skipped");
}

#[cfg(target_os = "linux")]
#[test]
fn ctrl_c_cancels_cleanly() {
    cancels_cleanly_on(libc::SIGINT);
}

#[cfg(target_os = "linux")]
#[test]
fn sigterm_cancels_like_ctrl_c() {
    cancels_cleanly_on(libc::SIGTERM);
}

/// The one run recorded under the test's `.ferry/runs`.
fn only_run(t: &Test) -> PathBuf {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(t.path(".ferry/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    runs.sort();
    runs.remove(0)
}

fn run_summary(run: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn a_run_killed_with_its_host_is_marked_interrupted_and_leaves_no_process() {
    let marker = unique_sleep();
    let yaml = format!("jobs:\n  long:\n    steps:\n      - run: sleep {marker}\n");
    let t = Test::new()
        .file("ferry.yaml", &yaml)
        .args(&["run", "--output", "plain"]);
    let mut child = t.spawn();
    let pids = wait_for_processes(&marker);
    child.kill().unwrap();
    child.wait().unwrap();
    // Nobody cleans up after a killed host: its sandboxes die with it.
    for pid in pids {
        assert!(gone(pid), "step process {pid} outlived its killed host");
    }
    let first = only_run(&t);
    let again = Test {
        dir: t.dir,
        args: vec!["run".into(), "--output".into(), "plain".into()],
        env: Vec::new(),
    };
    std::fs::write(
        again.path("ferry.yaml"),
        "jobs:\n  a: { steps: [{ run: echo ok }] }\n",
    )
    .unwrap();
    again.run().code(0).stderr_has("marked interrupted");
    assert_eq!(run_summary(&first)["status"], "interrupted");
}

#[test]
fn graph_renders_mermaid_and_dot() {
    Test::new()
        .file("ferry.yaml", PIPELINE)
        .args(&["graph"])
        .run()
        .code(0)
        .stdout_has("flowchart LR")
        .stdout_has("build --> test");
    Test::new()
        .file("ferry.yaml", PIPELINE)
        .args(&["graph", "--format", "dot"])
        .run()
        .code(0)
        .stdout_has("\"build\" -> \"test\";");
}

#[test]
fn plugin_inspect_shows_world_and_capabilities() {
    Test::new()
        .args(&["plugin", "inspect", "shell"])
        .run()
        .code(0)
        .stdout_has("world:   ferry:step/step@0.1.0")
        .stdout_has("workspace: write")
        .stdout_has("script (string) required")
        .stdout_has("ferry:step/process@0.1.0");
    // What an input makes the step run, as preflight reads it.
    Test::new()
        .args(&["plugin", "inspect", "lint"])
        .run()
        .code(0)
        .stdout_has("preset (string), runs clippy → cargo, rustfmt → cargo, flake8 → flake8")
        .stdout_has("command (string), runs its first word");
    Test::new()
        .args(&["plugin", "inspect", ferry_builtins::fixtures::GRANTED])
        .run()
        .code(0)
        .stdout_has("exec: echo")
        .stdout_has("network: 127.0.0.1");
    Test::new()
        .args(&["plugin", "inspect", ferry_builtins::fixtures::COMMAND])
        .run()
        .code(0)
        .stdout_has("world:   wasi:cli/command");
    Test::new()
        .file("bogus.wasm", "not wasm")
        .args(&["plugin", "inspect", "bogus.wasm"])
        .run()
        .code(2)
        .stderr_has("not a valid WebAssembly component");
}

#[test]
fn version_and_completions() {
    Test::new()
        .args(&["--version"])
        .run()
        .code(0)
        .stdout_has(env!("CARGO_PKG_VERSION"));
    Test::new()
        .args(&["completions", "bash"])
        .run()
        .code(0)
        .stdout_has("_ferry");
}

const BRANCHING: &str = "name: branching\njobs:\n  test:\n    matrix:\n      python: [\"3.12\", \"3.13\"]\n    outputs: { tested: \"${{ matrix.python }}\" }\n    steps:\n      - run: echo testing on ${{ matrix.python }}\n  deploy:\n    needs: test\n    if: git.branch == 'main' && success()\n    steps:\n      - run: echo deploying ${{ git.short-sha }} after ${{ needs.test.result }}\n  notify:\n    needs: deploy\n    if: always()\n    steps:\n      - run: echo deploy was ${{ needs.deploy.result }}\n";

fn git_repo(t: &Test, branch: &str) {
    for args in [
        vec!["init", "-q", "-b", branch],
        vec!["add", "ferry.yaml"],
        vec![
            "-c",
            "user.name=a",
            "-c",
            "user.email=a@b",
            "commit",
            "-qm",
            "init",
        ],
    ] {
        let status = std::process::Command::new("git")
            .args(&args)
            .current_dir(t.dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }
}

#[test]
fn a_deploy_job_runs_on_main_and_is_skipped_elsewhere() {
    let t = Test::new()
        .file("ferry.yaml", BRANCHING)
        .args(&["run", "--output", "plain"]);
    git_repo(&t, "main");
    t.run()
        .code(0)
        .stdout_has("[test (3.12)/step-1] testing on 3.12")
        .stdout_has("[test (3.13)/step-1] testing on 3.13")
        .stdout_has("deploying ")
        .stdout_has(" after success")
        .stdout_has("[notify/step-1] deploy was success");
    let t = Test::new()
        .file("ferry.yaml", BRANCHING)
        .args(&["run", "--output", "plain"]);
    git_repo(&t, "feature");
    let done = t
        .run()
        .code(0)
        .stdout_has("[deploy] job skipped: `if: git.branch == 'main' && success()` is false")
        .stdout_has("  - deploy skipped: `if: git.branch == 'main' && success()` is false")
        .stdout_has("[notify/step-1] deploy was skipped");
    assert!(!done.stdout.contains("deploying"));
}

#[test]
fn graph_shows_matrix_jobs_and_conditions() {
    Test::new()
        .file("ferry.yaml", BRANCHING)
        .args(&["graph"])
        .run()
        .code(0)
        .stdout_has("j0[\"test (3.12)\"]")
        .stdout_has("j1[\"test (3.13)\"]")
        .stdout_has("deploy[\"deploy<br/>if: git.branch == 'main' && success()\"]")
        .stdout_has("j0 --> deploy")
        .stdout_has("j1 --> deploy");
    Test::new()
        .file("ferry.yaml", BRANCHING)
        .args(&["graph", "--format", "dot"])
        .run()
        .code(0)
        .stdout_has("\"test (3.13)\" -> \"deploy\";")
        .stdout_has("[label=\"notify\\nif: always()\"]");
    Test::new()
        .file("ferry.yaml", MONOREPO)
        .args(&["graph"])
        .run()
        .code(0)
        .stdout_has("test[\"test<br/>matrix: made when its needs end\"]")
        .stdout_has("test --> release");
}

#[test]
fn manual_inputs_are_checked_and_defaulted() {
    let t = Test::new().file(
        "ferry.yaml",
        r#"
on:
  push: { branches: [main] }
  schedule: [{ cron: "0 3 * * mon-fri" }]
  manual:
    inputs:
      target: { type: choice, options: [staging, production], default: staging }
      dry-run: { type: boolean, default: "true" }
      count: { type: number, required: true }
jobs:
  show:
    steps:
      - run: echo "to ${{ inputs.target }} dry=${{ inputs['dry-run'] }} count=${{ inputs.count }}"
"#,
    );
    common::ferry(&t, &["run", "--output", "plain", "--input", "count=3"])
        .code(0)
        .stdout_has("to staging dry=true count=3");
    common::ferry(
        &t,
        &[
            "run",
            "--output",
            "plain",
            "--input",
            "count=1",
            "--input",
            "target=production",
        ],
    )
    .code(0)
    .stdout_has("to production dry=true count=1");
    common::ferry(
        &t,
        &[
            "run",
            "--input",
            "target=prod",
            "--input",
            "nope=1",
            "--input",
            "dry-run=maybe",
        ],
    )
    .code(2)
    .stderr_has("unknown input `nope`: the pipeline takes `count`, `dry-run`, `target`")
    .stderr_has("input `target`: `prod` is not one of `staging`, `production`")
    .stderr_has("input `dry-run`: `maybe` is not `true` or `false`")
    .stderr_has("input `count` is required");
}

#[test]
fn runs_lists_the_history_and_logs_prints_a_run() {
    let t = Test::new().file(
        "ferry.yaml",
        "jobs:\n  a:\n    steps:\n      - id: hi\n        run: echo hello from a\n  b:\n    needs: a\n    steps:\n      - run: exit 3\n",
    );
    common::ferry(&t, &["run", "--output", "plain"]).code(1);
    let runs = common::ferry(&t, &["runs"]).code(0);
    assert!(runs.stdout.contains("failed"), "{}", runs.stdout);
    assert!(runs.stdout.contains("1/2"), "{}", runs.stdout);
    let json = common::json(&common::ferry(&t, &["runs", "--json"]).code(0).stdout);
    assert_eq!(json[0]["status"], "failed");
    common::ferry(&t, &["logs", "latest"])
        .code(0)
        .stdout_has("── a › hi (passed)")
        .stdout_has("hello from a")
        .stdout_has("── b › exit 3 (failed)");
    let one = common::ferry(&t, &["logs", "latest", "a/hi"]).code(0);
    assert!(!one.stdout.contains("── b"), "{}", one.stdout);
    common::ferry(&t, &["logs", "latest", "c"])
        .code(2)
        .stderr_has("has no job `c`")
        .stderr_has("its jobs: `a`, `b`");
}

#[test]
fn a_setup_step_puts_tools_on_path_and_variables_in_the_env_of_later_steps() {
    let yaml = r#"jobs:
  t:
    steps:
      - name: setup
        run: |
          mkdir -p tools
          printf '#!/bin/sh\necho "ok 1 - tool says $GREETING"\n' > tools/tool
          chmod +x tools/tool
          echo tools >> "$FERRY_PATH"
          echo "GREETING=hello" >> "$FERRY_ENV"
          echo "LD_PRELOAD=/nowhere/evil.so" >> "$FERRY_ENV"
          echo "PATH=/nowhere" >> "$FERRY_ENV"
          echo /usr/sbin >> "$FERRY_PATH"
      - name: script
        run: tool; echo "preload=[$LD_PRELOAD]"
      - name: plugin
        uses: test
        with: { command: tool, format: tap }
        permissions: { exec: [tool] }
      - name: reader
        uses: test
        with: { command: sh -c 'echo SNEAKY=1 >> "$FERRY_ENV"', format: tap }
        permissions: { exec: [sh] }
      - name: after
        run: echo "sneaky=[$SNEAKY]"
"#;
    let t = Test::new().file("ferry.yaml", yaml);
    let done = common::ferry(&t, &["run", "--output", "plain"]);
    let out = format!("{}{}", done.stdout, done.stderr);
    assert_eq!(done.code, 0, "{out}");
    // The script found the tool and its variable; so did the plugin, whose step passes
    // only when `tool` was found and ran (its TAP line is read as a result, not logged).
    assert!(out.contains("[t/step-2] ok 1 - tool says hello"), "{out}");
    assert!(out.contains("[t/step-3] ▸ tests: $ tool"), "{out}");
    assert!(out.contains("preload=[]"), "{out}");
    assert!(out.contains("$FERRY_ENV may not set `LD_PRELOAD`"), "{out}");
    assert!(
        out.contains("$FERRY_ENV may not set `PATH`: write the directory to $FERRY_PATH"),
        "{out}"
    );
    assert!(out.contains("$FERRY_PATH may not add `/usr/sbin`"), "{out}");
    // A step that may only read the workspace changes nothing for later steps.
    assert!(out.contains("ignoring $FERRY_PATH and $FERRY_ENV"), "{out}");
    assert!(out.contains("sneaky=[]"), "{out}");
}

#[test]
fn kept_directories_start_builds_warm_until_the_toolchain_changes_or_clean() {
    let yaml = r#"jobs:
  build:
    keep: [target]
    steps:
      - run: |
          mkdir -p target
          echo run >> target/runs
          echo "runs=$(wc -l < target/runs) stray=$(test -e stray && echo yes || echo no)"
          echo x > stray
"#;
    let t = Test::new().file("ferry.yaml", yaml);
    let runs = |t: &Test, args: &[&str]| {
        let done = common::ferry(t, &[&["run", "--output", "plain"][..], args].concat());
        let out = format!("{}{}", done.stdout, done.stderr);
        assert_eq!(done.code, 0, "{out}");
        out
    };
    assert!(runs(&t, &[]).contains("runs=1 stray=no"));
    // The kept directory survives the sync; what else the job left does not.
    let second = runs(&t, &[]);
    assert!(second.contains("runs=2 stray=no"), "{second}");
    assert!(!second.contains("thrown away"), "{second}");
    // Another `PATH` (another venv, another toolchain first on it) starts over.
    let path = std::env::var("PATH").unwrap();
    let t = t.env("PATH", &format!("/nonexistent/venv/bin:{path}"));
    let switched = runs(&t, &[]);
    assert!(switched.contains("runs=1 stray=no"), "{switched}");
    assert!(
        switched.contains("[ferry] kept `target` thrown away: `PATH` changed"),
        "{switched}"
    );
    assert!(runs(&t, &[]).contains("runs=2"));
    let clean = runs(&t, &["--clean"]);
    assert!(clean.contains("runs=1 stray=no"), "{clean}");
}

#[cfg(unix)]
#[test]
fn exec_grants_a_program_of_the_workspace_by_its_path() {
    // A venv made by the job, from a Python the host has (pyenv's, under `~/.pyenv`): its
    // interpreter is granted by path, and its base installation is shown to it.
    let yaml = r#"jobs:
  t:
    steps:
      - run: |
          python3 -m venv --without-pip .venv
          printf '#!/bin/sh\necho "ok 1 - the workspace hello"\n' > hello && chmod +x hello
        permissions: { exec: [python3] }
      - uses: test
        with: { command: ./hello, format: tap }
        permissions: { exec: [./hello] }
      - uses: test
        with: { command: './.venv/bin/python -c "import sys; print(''ok 1 - prefix '' + sys.prefix)"', format: tap }
        permissions: { exec: [.venv/bin/python] }
      - uses: test
        with: { command: ".venv/bin/missing", format: tap }
        permissions: { exec: [.venv/bin/missing] }
        continue-on-error: true
"#;
    // A `hello` on PATH too: `./hello` must never mean it.
    let elsewhere = tempfile::tempdir().unwrap();
    let impostor = elsewhere.path().join("hello");
    std::fs::write(&impostor, "#!/bin/sh\necho 'not ok 1 - the PATH hello'\n").unwrap();
    std::fs::set_permissions(
        &impostor,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        elsewhere.path().display(),
        common::toolchain_path()
    );
    let t = Test::new().file("ferry.yaml", yaml).env("PATH", &path);
    let done = common::ferry(&t, &["run", "--output", "plain"]);
    let out = format!("{}{}", done.stdout, done.stderr);
    assert_eq!(done.code, 0, "{out}");
    assert!(out.contains("[t/step-2] ✓ passed"), "{out}");
    assert!(out.contains("[t/step-3] ✓ passed"), "{out}");
    assert!(
        out.contains("`.venv/bin/missing` is granted but the workspace has no program there"),
        "{out}"
    );
    // Without the grant, nothing runs, and the hint gives the YAML that grants it.
    let t = t.file(
        "ferry.yaml",
        "jobs:\n  t:\n    steps:\n      - run: touch ran\n      - uses: test\n        with: { command: \".venv/bin/python -V\", format: tap }\n",
    );
    let done = common::ferry(&t, &["run", "--output", "plain"]);
    let out = format!("{}{}", done.stdout, done.stderr);
    assert_eq!(done.code, 2, "{out}");
    assert!(
        out.contains("needs exec of `.venv/bin/python` but the pipeline does not grant it (for `command: .venv/bin/python -V`)"),
        "{out}"
    );
    assert!(out.contains("exec: [.venv/bin/python]"), "{out}");
    assert!(
        !t.path(".ferry/work/t/ran").exists(),
        "a step ran before the refusal"
    );
}

#[test]
fn a_step_summary_is_shown_kept_with_the_run_replayed_when_cached_and_capped() {
    let yaml = r#"jobs:
  report:
    steps:
      - id: table
        run: |
          echo '## Coverage' >> "$FERRY_STEP_SUMMARY"
          echo '| file | % |' >> "$FERRY_STEP_SUMMARY"
          echo '| --- | --- |' >> "$FERRY_STEP_SUMMARY"
          echo '| <script>alert(1)</script> | 93 |' >> "$FERRY_STEP_SUMMARY"
        cache: true
      - id: huge
        run: head -c 3000000 /dev/zero | tr '\0' 'x' >> "$FERRY_STEP_SUMMARY"
      - id: quiet
        run: echo nothing to say
"#;
    let t = Test::new().file("ferry.yaml", yaml);
    let first = common::ferry(&t, &["run", "--output", "plain"]).code(0);
    assert!(
        first.stdout.contains(
            "[report/table] ▸ summary\n[report/table] │ ## Coverage\n[report/table] │ | file | % |"
        ),
        "{}",
        first.stdout
    );
    let record = |t: &Test| {
        let runs = t.path(".ferry/runs");
        let mut dirs: Vec<_> = std::fs::read_dir(runs)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        dirs.sort();
        let run = std::fs::read(dirs.last().unwrap().join("run.json")).unwrap();
        common::json(&String::from_utf8(run).unwrap())
    };
    let steps = &record(&t)["jobs"]["report"]["steps"];
    assert!(
        steps[0]["summary"]
            .as_str()
            .unwrap()
            .contains("| <script>alert(1)</script> | 93 |")
    );
    let huge = steps[1]["summary"].as_str().unwrap();
    assert!(huge.len() < (1 << 20) + 100, "{}", huge.len());
    assert!(huge.ends_with("*(cut at 1 MiB)*\n"));
    assert!(steps[2].get("summary").is_none(), "{}", steps[2]);
    // A cached step says what it said when it ran.
    let second = common::ferry(&t, &["run", "--output", "plain"]).code(0);
    assert!(
        second.stdout.contains("[report/table] ✓ cached"),
        "{}",
        second.stdout
    );
    assert!(
        second.stdout.contains("[report/table] │ ## Coverage"),
        "{}",
        second.stdout
    );
    assert!(record(&t)["jobs"]["report"]["steps"][0]["summary"].is_string());
}

#[test]
fn a_built_in_denied_a_program_it_learns_when_it_runs_says_only_to_grant_it() {
    // Written with an expression, the program is known only when the step runs.
    let yaml = "env: { RUNNER: ungranted-tool }\njobs:\n  t:\n    steps:\n      - uses: test\n        with: { command: \"${{ env.RUNNER }} --version\", format: tap }\n";
    let t = Test::new().file("ferry.yaml", yaml);
    let done = common::ferry(&t, &["run", "--output", "plain"]);
    let out = format!("{}{}", done.stdout, done.stderr);
    assert_eq!(done.code, 1, "{out}");
    assert!(
        out.contains("exec of `ungranted-tool` is not granted to step `test` of job `t`\nhint: grant it in step `test`"),
        "{out}"
    );
    assert!(!out.contains("must declare it in describe()"), "{out}");
}

#[test]
fn a_program_not_on_path_says_which_path_was_searched() {
    let step = "      - uses: test\n        with: { command: no-such-tool-ferry, format: tap }\n        permissions: { exec: [no-such-tool-ferry] }\n";
    // Known before anything runs: exit 2, and `ferry validate` says the same.
    let t = Test::new()
        .file("ferry.yaml", &format!("jobs:\n  t:\n    steps:\n{step}"))
        .env("PATH", "/usr/bin:/bin");
    for args in [&["run", "--output", "plain"][..], &["validate"]] {
        let done = common::ferry(&t, args);
        let out = format!("{}{}", done.stdout, done.stderr);
        assert_eq!(done.code, 2, "{out}");
        assert!(
            out.contains("runs `no-such-tool-ferry` (for `command: no-such-tool-ferry`), which is not on PATH (`/usr/bin:/bin`)"),
            "{out}"
        );
    }
    // After a step that may change PATH, it is looked for when the step runs.
    let t = t.file(
        "ferry.yaml",
        &format!("jobs:\n  t:\n    steps:\n      - run: echo setting up\n{step}"),
    );
    let done = common::ferry(&t, &["run", "--output", "plain"]);
    let out = format!("{}{}", done.stdout, done.stderr);
    assert_eq!(done.code, 1, "{out}");
    assert!(
        out.contains("was not found on PATH (`/usr/bin:/bin`)"),
        "{out}"
    );
}

#[test]
fn old_runs_are_pruned_after_each_run_and_on_demand() {
    let t = Test::new()
        .file(
            "ferry.yaml",
            "jobs:\n  a:\n    steps:\n      - run: echo hi\n",
        )
        .env("FERRY_KEEP_RUNS", "3");
    let count = || std::fs::read_dir(t.path(".ferry/runs")).unwrap().count();
    for _ in 0..5 {
        common::ferry(&t, &["run", "--output", "plain"]).code(0);
    }
    assert_eq!(count(), 3, "FERRY_KEEP_RUNS=3 keeps three");
    let listed = common::ferry(&t, &["runs"]).code(0);
    let newest = listed
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let pruned = common::ferry(&t, &["runs", "prune", "--keep", "1"]).code(0);
    assert_eq!(pruned.stdout.lines().count(), 2, "{}", pruned.stdout);
    assert_eq!(count(), 1);
    assert!(
        t.path(&format!(".ferry/runs/{newest}")).is_dir(),
        "the newest stays"
    );
    common::ferry(&t, &["runs", "prune", "--keep", "x"]).code(2);
}

#[test]
fn a_run_leaves_nothing_for_git_to_commit() {
    let t = Test::new().file(
        "ferry.yaml",
        "jobs:\n  build:\n    steps:\n      - run: echo built > out.txt\n",
    );
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(t.path("."))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    git(&["init", "-q"]);
    common::ferry(&t, &["run"]).code(0);
    let status = git(&["status", "--porcelain", "--untracked-files=all"]);
    assert_eq!(status.trim(), "?? ferry.yaml", "{status}");
    // One the user wrote is theirs.
    std::fs::write(t.path(".ferry/.gitignore"), "runs/\n").unwrap();
    common::ferry(&t, &["run"]).code(0);
    assert_eq!(
        std::fs::read_to_string(t.path(".ferry/.gitignore")).unwrap(),
        "runs/\n"
    );
}
