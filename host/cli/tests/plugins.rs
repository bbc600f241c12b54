//! Steps written in each language, built from source with the real toolchains (installed
//! by `cargo xtask setup`) and run through `ferry`: the `ferry plugin new` scaffolds and
//! the example steps in `examples/plugins/`.

mod common;

use common::{Done, Test, repo_root, toolchain_path};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `ferry plugin new`, `build` and `test`, then the step in a passing and a failing
/// pipeline.
fn new_step_works(lang: &str) {
    let t = Test::new()
        .env("PATH", &toolchain_path())
        .args(&["plugin", "new", "demo", "--lang", lang]);
    t.run().code(0).stdout_has("created");
    let t = t.then(&["plugin", "build", "demo"]);
    t.run()
        .code(0)
        .stdout_has("built demo 0.1.0")
        .stdout_has("world:  ferry:step/step@0.1.0")
        .stdout_has("digest: sha256:")
        .stdout_has("needs:  nothing");
    assert!(t.path("demo/dist/demo.wasm").is_file());
    let t = t.then(&["plugin", "test", "demo", "--no-build"]);
    t.run().code(0).stdout_has("✓ 3 passed, 0 failed");
    let t = t
        .then(&["run", "--output", "plain"])
        .file(
            "ferry.yaml",
            "jobs:\n  hello:\n    steps:\n      - id: greet\n        uses: ./demo/dist/demo.wasm\n        with: { who: CI }\n      - run: echo \"said ${{ steps.greet.outputs.greeting }}\"\n",
        );
    t.run()
        .code(0)
        .stdout_has("[hello/greet] Hello, CI!")
        .stdout_has("said Hello, CI!");
    let t = t.file(
        "ferry.yaml",
        "jobs:\n  hello:\n    steps:\n      - uses: ./demo/dist/demo.wasm\n        with: { who: \" \" }\n",
    );
    t.run().code(1).stdout_has("`who` must not be empty");
}

#[test]
fn a_new_rust_step_builds_tests_and_runs() {
    new_step_works("rust");
    // A second project reuses what the first compiled: the SDK's dependencies are built once
    // per machine, in a shared target folder, not once per project.
    let t = Test::new()
        .env("PATH", &toolchain_path())
        .args(&["plugin", "new", "first", "--lang", "rust"]);
    t.run().code(0);
    let t = t.then(&["plugin", "build", "first"]);
    t.run().code(0);
    let t = t.then(&["plugin", "new", "second", "--lang", "rust"]);
    t.run().code(0);
    // The project comes with its lock, complete: cargo needs to resolve nothing (no index,
    // no network), and the versions are those ferry's SDK was tested with.
    let metadata = std::process::Command::new("cargo")
        .args(["metadata", "--locked", "--offline", "--format-version", "1"])
        .current_dir(t.path("second"))
        .env("PATH", toolchain_path())
        .output()
        .unwrap();
    assert!(
        metadata.status.success(),
        "{}",
        String::from_utf8_lossy(&metadata.stderr)
    );
    let lock = std::fs::read_to_string(t.path("second/Cargo.lock")).unwrap();
    let ours =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock")).unwrap();
    // ferry's lock names the SDK's wit-bindgen by version where it holds several.
    let sdk = &ours[ours.find("name = \"ferry-sdk\"").unwrap()..];
    let version = sdk
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"wit-bindgen "))
        .unwrap();
    let wanted = format!(
        "name = \"wit-bindgen\"\nversion = \"{}\"\n",
        version.trim_end_matches(['"', ','])
    );
    assert!(lock.contains(&wanted), "{wanted} in\n{lock}");
    let t = t.then(&["plugin", "build", "second"]);
    let second = t.run().code(0);
    assert!(
        second.stderr.contains("Compiling second"),
        "{}",
        second.stderr
    );
    assert!(
        !second.stderr.contains("Compiling wit-bindgen"),
        "the SDK's dependencies were compiled again: {}",
        second.stderr
    );
    assert!(!t.path("second/target").exists());
    assert!(t.path("second/dist/second.wasm").is_file());
}

/// `--watch` builds and tests again when a source changes, and not when only the build's
/// own output does.
#[test]
fn a_watched_step_is_built_and_tested_again_when_its_source_changes() {
    use std::io::{BufRead, BufReader};
    use std::sync::{Arc, Mutex};
    let t = Test::new()
        .env("PATH", &toolchain_path())
        .args(&["plugin", "new", "watched", "--lang", "rust"]);
    t.run().code(0);
    let t = t.then(&["plugin", "test", "watched", "--watch"]);
    let mut child = t.spawn();
    let said = Arc::new(Mutex::new(String::new()));
    let readers: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|stream| {
        let said = said.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let mut said = said.lock().unwrap();
                said.push_str(&line);
                said.push('\n');
            }
        })
    })
    .collect();
    let count = |text: &str| said.lock().unwrap().matches(text).count();
    let wait = |what: &str, until: &dyn Fn() -> bool| {
        common::eventually(
            || until().then_some(()),
            || format!("{what}; it said:\n{}", said.lock().unwrap()),
        )
    };
    wait("the first round", &|| count("watching `") == 1);
    assert_eq!(count("3 passed"), 1);
    // The build's own output is no change.
    std::fs::write(t.path("watched/dist/extra.txt"), "x").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(count("building rust step"), 1, "{}", said.lock().unwrap());
    // A changed greeting fails the cases that expect the old one.
    let lib = t.path("watched/src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, source.replace("Hello, {who}!", "Howdy, {who}!")).unwrap();
    wait("a second round", &|| count("watching `") == 2);
    let all = said.lock().unwrap().clone();
    assert!(all.contains("changed: `src/lib.rs`"), "{all}");
    assert_eq!(count("building rust step"), 2, "{all}");
    assert!(all.contains("1 passed, 2 failed"), "{all}");
    child.kill().unwrap();
    child.wait().unwrap();
    for reader in readers {
        reader.join().unwrap();
    }
}

#[test]
fn a_new_python_step_builds_tests_and_runs() {
    new_step_works("python");
}

#[test]
fn a_new_javascript_step_builds_tests_and_runs() {
    new_step_works("js");
}

/// JavaScript has no `process.env` in a component: the SDK's `env()` reads what the step
/// is granted, and nothing else of the host.
#[test]
fn a_javascript_step_reads_the_variables_and_secrets_it_is_granted() {
    let t = Test::new()
        .env("PATH", &toolchain_path())
        .env("GREETING_WORD", "Howdy")
        .env("HOST_ONLY", "not-for-steps")
        .env("TOKEN", "s3cret-js-token")
        .args(&["plugin", "new", "demo", "--lang", "js"]);
    t.run().code(0);
    let t = t.file(
        "demo/src/index.js",
        r#"import { defineStep, env, log } from "@ferry-ci/sdk";

export const { describe, run } = defineStep({
  name: "demo",
  version: "0.1.0",
  description: "Reads its environment.",
  capabilities: { env: ["GREETING_WORD"], secrets: ["TOKEN"] },
  run() {
    log.info(`${env("GREETING_WORD")}, token ${env("TOKEN")}, host ${env("HOST_ONLY")}`);
  },
});
"#,
    );
    let t = t.then(&["plugin", "build", "demo"]);
    t.run().code(0);
    let t = t.then(&["run", "--output", "plain"]).file(
        "ferry.yaml",
        "jobs:\n  hello:\n    steps:\n      - uses: ./demo/dist/demo.wasm\n        permissions: { env: [GREETING_WORD], secrets: [TOKEN] }\n",
    );
    t.run()
        .code(0)
        .stdout_has("Howdy, token ***, host undefined");
}

#[test]
fn plugin_new_refuses_bad_names_and_existing_directories() {
    let t = Test::new().args(&["plugin", "new", "Bad_Name", "--lang", "rust"]);
    t.run()
        .code(2)
        .stderr_has("`Bad_Name` is not a valid step name");
    let t = t
        .file("taken/keep.txt", "mine")
        .then(&["plugin", "new", "taken", "--lang", "js"]);
    t.run()
        .code(2)
        .stderr_has("already exists and is not empty");
    assert_eq!(
        std::fs::read_to_string(t.path("taken/keep.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn plugin_build_names_a_missing_toolchain() {
    let t = Test::new()
        .env("PATH", "/nonexistent")
        .args(&["plugin", "new", "py", "--lang", "python"]);
    t.run().code(0);
    let t = t.then(&["plugin", "build", "py"]);
    t.run()
        .code(2)
        .stderr_has("componentize-py not found; install with `pip install componentize-py`");
    let t = t.then(&["plugin", "new", "js", "--lang", "js"]);
    t.run().code(0);
    let t = t.then(&["plugin", "build", "js"]);
    t.run()
        .code(2)
        .stderr_has(
            "componentize-js not found; run `npm install` in the project: its package.json lists it",
        )
        .stderr_has("node_modules/.bin`")
        .stderr_has("and PATH (`/nonexistent`)");
    let t = t.then(&["plugin", "build", "."]);
    t.run()
        .code(2)
        .stderr_has("is not a step project")
        .stderr_has("ferry plugin new NAME --lang rust|python|js");
}

#[test]
fn plugin_test_reports_what_did_not_match_with_the_log() {
    let t = Test::new()
        .env("PATH", &toolchain_path())
        .args(&["plugin", "new", "demo", "--lang", "python"]);
    t.run().code(0);
    let t = t
        .file(
            "demo/ferry-tests.yaml",
            "cases:\n  wrong:\n    with: { who: x }\n    expect:\n      outputs: { greeting: nope }\n      log: [absent]\n",
        )
        .then(&["plugin", "test", "demo"]);
    t.run()
        .code(1)
        .stdout_has("✗ wrong")
        .stdout_has("output `greeting`: expected \"nope\", got \"Hello, x!\"")
        .stdout_has("no log line contains \"absent\"")
        .stdout_has("│ Hello, x!")
        .stdout_has("0 passed, 1 failed");
    // A case may start services beside the step, as a job does; one that does not come up
    // fails the case with its log.
    let t = t
        .file(
            "demo/ferry-tests.yaml",
            "cases:\n  beside-a-stub:\n    with: { who: x }\n    services:\n      stub: { run: \"exec python3 -m http.server 8080 --bind 127.0.0.1\", ports: [8080] }\n  broken-service:\n    with: { who: x }\n    services:\n      db: { run: \"echo no configuration >&2; exit 3\", ports: [5432] }\n    expect:\n      error: \"service `db` exited before it was ready\"\n",
        )
        .then(&["plugin", "test", "demo", "--no-build"]);
    t.run()
        .code(0)
        .stdout_has("✓ beside-a-stub")
        .stdout_has("✓ broken-service")
        .stdout_has("2 passed");
    // A refusal speaks of the case, not of the pipeline the harness made of it; a setup's
    // own git identity wins over the harness's.
    let t = t
        .file(
            "demo/ferry-tests.yaml",
            "cases:\n  bad-input:\n    with: { nosuch: x }\n    expect:\n      error: \"case `bad-input`: unknown input `nosuch`\"\n  checkout:\n    with: { who: \"${{ git.branch }} at ${{ git.commit-message }}\" }\n    files: { notes.txt: hi }\n    expect:\n      outputs: { greeting: \"Hello, main at ferry test!\" }\n  identity:\n    with: { who: x }\n    setup:\n      - git init -q\n      - [git, -c, user.name=Alice, commit, -q, --allow-empty, -m, first]\n      - [sh, -c, 'test \"$(git log -1 --format=%an)\" = Alice']\n",
        )
        .then(&["plugin", "test", "demo", "--no-build"]);
    let done = t.run();
    let all = format!("{}{}", done.stdout, done.stderr);
    assert_eq!(done.code, 0, "{all}");
    assert!(all.contains("3 passed"), "{all}");
    assert!(!all.contains("ferry-test-"), "a temporary path: {all}");
    let t = t
        .file("demo/ferry-tests.yaml", "cases:\n  typo:\n    wiht: {}\n")
        .then(&["plugin", "test", "demo", "--no-build"]);
    t.run()
        .code(2)
        .stderr_has("ferry-tests.yaml:3:5")
        .stderr_has("did you mean `with`?");
    let t = t.then(&[
        "plugin",
        "test",
        "demo",
        "--no-build",
        "--with",
        "who=ad hoc",
    ]);
    t.run()
        .code(0)
        .stdout_has("Hello, ad hoc!")
        .stdout_has("output greeting = \"Hello, ad hoc!\"");
}

fn example(name: &str) -> PathBuf {
    repo_root().join("examples/plugins").join(name)
}

fn events_of(done: &Done) -> Vec<Value> {
    done.stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn output(events: &[Value], job: &str, name: &str) -> String {
    events
        .iter()
        .find(|e| e["type"] == "output" && e["job"] == job && e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("no output {job}.{name} in {events:#?}"))
        .to_string()
}

fn finished<'a>(events: &'a [Value], job: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["type"] == "step-finished" && e["job"] == job && e["status"] != "passed")
        .unwrap_or_else(|| panic!("no failed step in {job}"))
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@ferry.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@ferry.invalid")
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

/// The three example steps, built from source, pass their own cases, check this
/// repository through `examples/plugins/ferry.yaml`, and fail a repository that breaks
/// their rules.
#[test]
fn example_steps_build_test_and_run() {
    let path = toolchain_path();
    let mut t = Test::new().env("PATH", &path);
    let mut wasm = Vec::new();
    for name in ["license-header", "changelog", "json-schema"] {
        let dir = example(name);
        let dir = dir.to_str().unwrap();
        t = t.then(&["plugin", "build", dir]);
        t.run().code(0).stdout_has(&format!("built {name} 0.1.0"));
        wasm.push(example(name).join("dist").join(format!("{name}.wasm")));
        t = t.then(&["plugin", "test", dir, "--no-build"]);
        t.run().code(0).stdout_has(" passed, 0 failed");
    }

    let pipeline = example("ferry.yaml");
    let t = t.then(&["run", pipeline.to_str().unwrap(), "--output", "json"]);
    let done = t.run().code(0);
    let events = events_of(&done);
    assert_eq!(output(&events, "licence", "missing"), "0");
    assert!(
        output(&events, "licence", "checked")
            .parse::<u32>()
            .unwrap()
            >= 8
    );
    assert_eq!(output(&events, "manifests", "invalid"), "0");
    assert_eq!(output(&events, "manifests", "checked"), "3");
    assert!(
        output(&events, "changelog", "releases")
            .parse::<u32>()
            .is_ok()
    );

    // A repository that breaks each rule once.
    let t = t
        .file("src/ok.rs", "// SPDX-License-Identifier: Apache-2.0\n")
        .file("src/lib.rs", "pub fn f() {}\n")
        .file("CHANGELOG.md", "# Changelog\n\n## 1.0.0\n- first\n")
        .file(
            "config/app.json",
            "{\n  \"name\": \"app\",\n  \"port\": \"80\"\n}\n",
        )
        .file(
            "schema.json",
            "{ \"type\": \"object\", \"properties\": { \"port\": { \"type\": \"integer\" } } }",
        );
    git(t.dir.path(), &["init", "-q"]);
    git(t.dir.path(), &["add", "-A"]);
    git(t.dir.path(), &["commit", "-q", "-m", "first"]);
    git(t.dir.path(), &["tag", "v1.0.0"]);
    git(
        t.dir.path(),
        &["commit", "-q", "--allow-empty", "-m", "second"],
    );
    git(t.dir.path(), &["tag", "v1.1.0"]);
    let yaml = format!(
        "jobs:
  licence:
    steps:
      - uses: {licence}
        permissions: {{ workspace: read }}
  changelog:
    steps:
      - uses: {changelog}
        permissions: {{ workspace: read, exec: [git] }}
  config:
    steps:
      - uses: {schema}
        with: {{ schema: schema.json, files: [\"config/*.json\"] }}
        permissions: {{ workspace: read }}
",
        licence = wasm[0].display(),
        changelog = wasm[1].display(),
        schema = wasm[2].display(),
    );
    let t = t
        .file("ferry.yaml", &yaml)
        .then(&["run", "--no-fail-fast", "--output", "json"]);
    let done = t.run().code(1);
    let events = events_of(&done);
    let message = |job| {
        finished(&events, job)["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        message("licence").contains("1 of 2 files lack the licence header"),
        "{}",
        message("licence")
    );
    assert!(
        message("changelog").contains("1 of 2 releases have no entry in CHANGELOG.md: 1.1.0"),
        "{}",
        message("changelog")
    );
    assert!(
        message("config").contains("1 of 1 files do not match schema.json"),
        "{}",
        message("config")
    );
    let annotations: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "annotation")
        .map(|e| e["annotation"].to_string())
        .collect();
    let joined = annotations.join("\n");
    assert!(joined.contains("src/lib.rs"), "{joined}");
    assert!(joined.contains("release v1.1.0"), "{joined}");
    assert!(
        joined.contains("/port: expected integer, got string"),
        "{joined}"
    );
}

/// The Python SDK's declarations and input parsing, in plain CPython (the toolchain's).
#[test]
fn python_sdk_unit_tests_pass() {
    let out = Command::new("python")
        .args(["-m", "unittest", "discover", "-s"])
        .arg(repo_root().join("sdk/python/tests"))
        .env("PATH", toolchain_path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("OK"), "{stderr}");
}

/// An exception a step does not catch fails the step with its type and message, and its
/// traceback in the log, instead of trapping the component.
#[test]
fn uncaught_exceptions_fail_the_step_with_their_message() {
    for (lang, file, source, log) in [
        (
            "python",
            "app.py",
            "import ferry_sdk as ferry\n\n\nclass Boom(ferry.Step):\n    name = \"boom\"\n\n    def run(self, inputs):\n        {}[\"missing\"]\n\n\nWitWorld = ferry.export(Boom)\n",
            "Traceback (most recent call last)",
        ),
        (
            "js",
            "src/index.js",
            "import { defineStep } from \"@ferry-ci/sdk\";\n\nexport const { describe, run } = defineStep({\n  name: \"boom\",\n  run() {\n    null.missing;\n  },\n});\n",
            "TypeError",
        ),
    ] {
        let t = Test::new()
            .env("PATH", &toolchain_path())
            .args(&["plugin", "new", "boom", "--lang", lang]);
        t.run().code(0);
        let t = t
            .file(&format!("boom/{file}"), source)
            .then(&["plugin", "test", "boom", "--with", "who=x"]);
        // `who` is no longer declared: a bad input is refused before the step runs.
        t.run().code(1).stdout_has("unknown input `who`");
        let t = t.then(&["plugin", "test", "boom", "--no-build", "--with", ""]);
        t.run().code(2).stderr_has("is not NAME=VALUE");
        let message = if lang == "python" {
            "KeyError: 'missing'"
        } else {
            "TypeError: "
        };
        let cases = format!(
            "cases:\n  throws:\n    expect:\n      error: {message:?}\n      log: [{log:?}]\n"
        );
        let t =
            t.file("boom/ferry-tests.yaml", &cases)
                .then(&["plugin", "test", "boom", "--no-build"]);
        t.run().code(0).stdout_has("✓ throws");
        // Without cases the step runs once and shows what happened.
        std::fs::remove_file(t.path("boom/ferry-tests.yaml")).unwrap();
        t.run()
            .code(1)
            .stdout_has(log)
            .stdout_has(&format!("✗ failed: {message}"));
    }
}

/// What the sandbox refuses a step, in each language: a read out of the workspace, a write
/// without the grant, a variable it is not given and a connect to an ungranted port. The
/// log names each refusal with the YAML that grants it, and the step is `denied`, not a
/// bare errno. (JavaScript has no sockets: its connect waits for `fetch` over `wasi:http`.)
#[test]
fn each_language_says_in_the_log_what_the_sandbox_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sources = [
        (
            "rust",
            "src/lib.rs",
            r#"use ferry_sdk::{Capabilities, Error, Info, Input, Inputs, Step};

struct Probe;

impl Step for Probe {
    fn info() -> Info {
        Info::new("probe", "0.1.0", "Tries what it is told.")
            .input(Input::string("what", "What to try."))
            .input(Input::string("target", "Where.").default(""))
            .capabilities(Capabilities::read_workspace())
    }

    fn run(inputs: &Inputs) -> Result<(), Error> {
        match inputs.string("what")?.as_str() {
            "read" => drop(std::fs::read("../outside.txt")?),
            "write" => std::fs::write("new.txt", "x")?,
            "env" => drop(ferry_sdk::env("PROBE_TOKEN")?),
            _ => drop(std::net::TcpStream::connect(inputs.string("target")?)?),
        }
        Ok(())
    }
}

ferry_sdk::export!(Probe);
"#,
        ),
        (
            "python",
            "app.py",
            r#"import socket

import ferry_sdk as ferry


class Probe(ferry.Step):
    name = "probe"
    version = "0.1.0"
    inputs = [ferry.Input("what", "What to try."), ferry.Input("target", "Where.", default="")]
    capabilities = ferry.Capabilities(workspace="read")

    def run(self, inputs):
        if inputs.what == "read":
            open("../outside.txt").read()
        elif inputs.what == "write":
            open("new.txt", "w").write("x")
        elif inputs.what == "env":
            ferry.env("PROBE_TOKEN")
        else:
            host, port = inputs.target.split(":")
            socket.create_connection((host, int(port)), timeout=5)


WitWorld = ferry.export(Probe)
"#,
        ),
        (
            "js",
            "src/index.js",
            r#"import { defineStep, requireEnv, workspace } from "@ferry-ci/sdk";

export const { describe, run } = defineStep({
  name: "probe",
  version: "0.1.0",
  description: "Tries what it is told.",
  inputs: {
    what: { type: "string", description: "What to try." },
    target: { type: "string", description: "Where.", default: "" },
  },
  capabilities: { workspace: "read" },
  run({ what }) {
    if (what === "read") workspace.readText("../outside.txt");
    else if (what === "write") workspace.writeText("new.txt", "x");
    else requireEnv("PROBE_TOKEN");
  },
});
"#,
        ),
    ];
    for (lang, file, source) in sources {
        let t = Test::new()
            .env("PATH", &toolchain_path())
            .env("PROBE_TOKEN", "from-the-host")
            .args(&["plugin", "new", "probe", "--lang", lang]);
        t.run().code(0);
        let t = t
            .file(&format!("probe/{file}"), source)
            .then(&["plugin", "build", "probe"]);
        t.run().code(0);
        let cases: &[&str] = if lang == "js" {
            &["read", "write", "env"]
        } else {
            &["read", "write", "env", "connect"]
        };
        let mut jobs = String::new();
        for case in cases {
            jobs.push_str(&format!(
                "  {case}:\n    steps:\n      - uses: ./probe/dist/probe.wasm\n        with: {{ what: {case}, target: \"127.0.0.1:{port}\" }}\n        permissions: {{ workspace: read }}\n"
            ));
        }
        let t = t.file("ferry.yaml", &format!("jobs:\n{jobs}")).then(&[
            "run",
            "--no-fail-fast",
            "--output",
            "json",
        ]);
        let done = t.run().code(1);
        let events = events_of(&done);
        for case in cases {
            let end = finished(&events, case);
            assert_eq!(
                (&end["status"], &end["failure"]),
                (&Value::from("failed"), &Value::from("denied")),
                "{lang} {case}: {end}"
            );
            let log: Vec<&str> = events
                .iter()
                .filter(|e| e["type"] == "log" && e["job"] == *case)
                .filter_map(|e| e["text"].as_str())
                .collect();
            let said = log.join("\n");
            let (what, yaml) = match *case {
                "read" => (
                    "a read of `../outside.txt`, which leads outside what the step is shown,",
                    "paths: {",
                ),
                "write" => ("a write to `new.txt`", "workspace: write"),
                "env" => ("", "env: [PROBE_TOKEN]"),
                _ => ("network access", "network: ["),
            };
            let yaml_said = said.contains(yaml) || end["message"].as_str().unwrap().contains(yaml);
            assert!(yaml_said, "{lang} {case}: {said}\n{end}");
            if !what.is_empty() {
                assert!(
                    said.contains(&format!("[ferry] denied: {what}")),
                    "{lang} {case}: {said}"
                );
            }
            assert!(!said.contains("os error"), "{lang} {case}: {said}");
            assert!(!said.contains("from-the-host"), "{lang} {case}: {said}");
        }
    }
    drop(listener);
}
