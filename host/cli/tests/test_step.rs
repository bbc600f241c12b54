//! The built-in `test` step through `ferry run`, with real runners: cargo (libtest output),
//! node (TAP) and a JUnit report that a crash cut off.

mod common;

use common::Test;

const CARGO_ENV: &str = "[HOME, PATH, CARGO_HOME, RUSTUP_HOME, RUSTUP_TOOLCHAIN, CARGO_TARGET_DIR]";

fn crate_with(tests: &str) -> Test {
    Test::new()
        .file(
            "Cargo.toml",
            "[package]\nname = \"sample\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
        )
        .file("src/lib.rs", &format!("#[cfg(test)]\nmod tests {{\n{tests}\n}}\n"))
}

fn cargo_pipeline(with: &str, extra_env: &str) -> String {
    format!(
        "jobs:\n  test:\n    steps:\n      - id: t\n        uses: test\n        with: {with}\n        env: {{ {extra_env} }}\n        permissions: {{ workspace: write, exec: [cargo], env: {CARGO_ENV} }}\n      - run: echo \"passed=${{{{ steps.t.outputs.passed }}}} failed=${{{{ steps.t.outputs.failed }}}} flaky=${{{{ steps.t.outputs.flaky }}}}\"\n"
    )
}

#[test]
fn a_failing_test_fails_the_pipeline_with_its_name_and_message() {
    let t = crate_with(
        "    #[test]\n    fn adds() { assert_eq!(1 + 1, 2); }\n    #[test]\n    fn subtracts() { assert_eq!(2 - 1, 0, \"two minus one\"); }\n    #[test]\n    #[ignore]\n    fn slow() {}\n",
    )
    .file("ferry.yaml", &cargo_pipeline("{ preset: cargo }", ""))
    .args(&["run", "--output", "plain"]);
    let done = t
        .run()
        .code(1)
        .stdout_has("src/lib.rs:6:22: tests::subtracts failed: assertion `left == right` failed: two minus one\n  left: 1\n right: 0 [test]")
        .stdout_has("1 of 3 tests failed: tests::subtracts (assertion `left == right` failed: two minus one)")
        .stdout_has("  ✗ test › t: 1 of 3 tests failed");
    // libtest gives no test its time: the table shows how long `cargo test` took.
    let table = done
        .stdout
        .lines()
        .skip_while(|l| !l.contains("passed   failed"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        table.trim_end().ends_with('s') && !table.trim_end().ends_with(" 0.00s"),
        "{table}"
    );
}

#[test]
fn a_test_that_passes_on_retry_is_flaky() {
    // In the workspace (cargo runs tests in the package's folder): the step's /tmp is
    // private to each program it starts, so a retry would not find it there.
    let marker = "target/ran-once";
    let flaky = "    #[test]\n    fn steady() {}\n    #[test]\n    fn wobbly() {\n        let marker = std::env::var(\"FLAKY_MARKER\").unwrap();\n        if std::fs::metadata(&marker).is_err() {\n            std::fs::write(&marker, \"\").unwrap();\n            panic!(\"first try fails\");\n        }\n    }\n";
    let t = crate_with(flaky)
        .file(
            "ferry.yaml",
            &cargo_pipeline(
                "{ preset: cargo, retry-failed: 2 }",
                &format!("FLAKY_MARKER: {marker}"),
            ),
        )
        .args(&["run", "--output", "plain"]);
    t.run()
        .code(0)
        .stdout_has("tests::wobbly is flaky: it failed, then passed on a retry [flaky]")
        .stdout_has("passed=2 failed=0 flaky=1");
    // Under `flaky: fail` the same run fails.
    std::fs::remove_file(t.path(&format!(".ferry/work/test/{marker}"))).unwrap();
    let t = t.file(
        "ferry.yaml",
        &cargo_pipeline(
            "{ preset: cargo, retry-failed: 1, flaky: fail }",
            &format!("FLAKY_MARKER: {marker}"),
        ),
    );
    t.run()
        .code(1)
        .stdout_has("1 flaky tests (flaky: fail): tests::wobbly");
}

#[test]
fn node_tap_results_are_read_and_annotated() {
    let t = Test::new()
        .file(
            "math.test.mjs",
            "import test from \"node:test\";\nimport assert from \"node:assert\";\ntest(\"adds\", () => assert.strictEqual(1 + 1, 2));\ntest(\"subtracts\", () => assert.strictEqual(2 - 1, 0));\n",
        )
        .file(
            "ferry.yaml",
            "jobs:\n  test:\n    steps:\n      - uses: test\n        with: { preset: node }\n        permissions: { exec: [node] }\n",
        )
        .args(&["run", "--output", "plain"]);
    t.run()
        .code(1)
        // The assertion's own line and column, node's words whole, and its raw TAP in a group.
        .stdout_has("math.test.mjs:4:32: subtracts failed: Expected values to be strictly equal:\n\n1 !== 0\n  operator: strictEqual\n  expected: 0\n  actual: 1 [test]")
        .stdout_has("1 of 2 tests failed: subtracts")
        .stdout_has("[test/step-1] ▸ node output (tap)\n[test/step-1] TAP version 13");
}

#[test]
fn npm_test_gets_the_reporter_of_the_runner_its_script_starts() {
    let t = Test::new()
        .file(
            "web/package.json",
            "{ \"name\": \"web\", \"private\": true, \"scripts\": { \"test\": \"node --test\" } }\n",
        )
        .file(
            "web/test/math.test.mjs",
            "import test from \"node:test\";\nimport assert from \"node:assert\";\ntest(\"adds\", () => assert.strictEqual(1 + 1, 2));\ntest(\"divides\", () => assert.strictEqual(6 / 3, 3, \"six by three\"));\n",
        )
        .file(
            "jest/package.json",
            "{ \"scripts\": { \"test\": \"NODE_ENV=test jest --coverage\" } }\n",
        )
        .file(
            "ferry.yaml",
            "jobs:\n  web:\n    steps:\n      - uses: test\n        with: { preset: npm, directory: web }\n        permissions: { exec: [npm] }\n  jest:\n    steps:\n      - uses: test\n        with: { preset: npm, directory: jest }\n        permissions: { exec: [npm] }\n",
        )
        .args(&["run", "--output", "plain", "--no-fail-fast"]);
    t.run()
        .code(1)
        .stdout_has("$ npm test --silent -- --test-reporter=tap")
        .stdout_has("web/test/math.test.mjs:4:30: divides failed: six by three")
        .stdout_has("1 of 2 tests failed: divides")
        .stdout_has("the test script in `jest/package.json` is `NODE_ENV=test jest --coverage`: give `command` and `format` instead");
}

#[test]
fn junit_reports_are_found_by_glob_and_merged() {
    let suite = |name: &str, failing: bool| {
        let case = if failing {
            format!(
                "<testcase name=\"{name}\"><failure message=\"{name} broke\">at app/{name}.py:3</failure></testcase>"
            )
        } else {
            format!("<testcase name=\"{name}\"/>")
        };
        format!("<?xml version=\"1.0\"?><testsuite name=\"{name}\">{case}</testsuite>")
    };
    let t = Test::new()
        .file("fixtures/TEST-a.xml", &suite("a", false))
        .file("fixtures/TEST-b.xml", &suite("b", true))
        .file("app/b.py", "x = 1\n")
        .file(
            "ferry.yaml",
            "jobs:\n  junit:\n    steps:\n      - id: t\n        uses: test\n        with: { command: \"sh -c 'mkdir -p out/x && cp fixtures/TEST-a.xml out/ && cp fixtures/TEST-b.xml out/x/ && exit 1'\", format: junit, report: \"out/**/TEST-*.xml\" }\n        permissions: { workspace: write, exec: [sh] }\n",
        )
        .args(&["run", "--output", "plain"]);
    t.run()
        .code(1)
        .stdout_has("app/b.py:3: b::b failed: b broke [test]")
        .stdout_has("1 of 2 tests failed: b::b (b broke)");
}

#[test]
fn results_that_contradict_the_exit_status_fail_the_step() {
    let report = "<?xml version=\"1.0\"?><testsuites><testsuite name=\"s\"><testcase name=\"a\"/><testcase name=\"b\"><failure message=\"m\">text";
    let t = Test::new()
        .file("cut.xml", report)
        .file(
            "ferry.yaml",
            "jobs:\n  cut:\n    steps:\n      - uses: test\n        with: { command: \"sh -c 'cat cut.xml > report.xml; exit 1'\", format: junit, report: report.xml }\n        permissions: { workspace: write, exec: [sh] }\n  crashed:\n    steps:\n      - uses: test\n        with: { command: \"sh -c 'echo segfault >&2; exit 139'\", format: tap }\n        permissions: { exec: [sh] }\n  no-report:\n    steps:\n      - uses: test\n        with: { command: \"sh -c 'exit 2'\", format: junit, report: out.xml }\n        permissions: { exec: [sh] }\n",
        )
        .args(&["run", "--output", "plain", "--no-fail-fast"]);
    t.run()
        .code(1)
        .stdout_has("report.xml: the JUnit report ends in the middle of an element: it was cut off")
        .stdout_has("`sh` exited with 139 but its results show no failed test (0 read)")
        .stdout_has("segfault")
        .stdout_has("`sh` exited with 2 and wrote no report at `out.xml`");
    // The cut-off report is kept with the run record for whoever investigates.
    let runs = t.path(".ferry/runs");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let kept = run.join("files/cut/step-1/report.xml");
    assert!(kept.is_file(), "{} missing", kept.display());
}

#[test]
fn a_pytest_retry_runs_only_the_failed_test_by_node_id() {
    // `test_basic` fails once; `test_basic_auth`, whose name holds it, passes and counts
    // its runs. A retry by `-k test_basic` would run it again.
    let t = Test::new()
        .file(
            "tests/test_auth.py",
            "import os\n\n\nclass TestAuth:\n    def test_basic(self):\n        if not os.path.exists('ran-once'):\n            open('ran-once', 'w').close()\n            assert False, 'first try fails'\n\n    def test_basic_auth(self):\n        with open('auth-runs', 'a') as f:\n            f.write('run\\n')\n",
        )
        .file(
            "ferry.yaml",
            "jobs:\n  test:\n    steps:\n      - uses: test\n        with: { preset: pytest, retry-failed: 1 }\n        permissions: { workspace: write, exec: [pytest] }\n",
        )
        .env("PATH", &common::toolchain_path())
        .args(&["run", "--output", "plain"]);
    t.run()
        .code(0)
        .stdout_has("tests/test_auth.py::TestAuth::test_basic")
        .stdout_has("is flaky");
    let runs = std::fs::read_to_string(t.path(".ferry/work/test/auth-runs")).unwrap();
    assert_eq!(runs.lines().count(), 1, "the passing test ran again");
}

#[test]
fn a_restored_target_directory_leaves_cargo_nothing_to_rebuild() {
    // `sample` depends on `dep`: cargo rebuilds a crate whose dependency's output looks
    // newer than its own, so a restore that stamps files with the time it wrote them, in
    // whatever order its threads finish, makes it rebuild.
    let t = Test::new()
        .file(
            "Cargo.toml",
            "[package]\nname = \"sample\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\ndep = { path = \"dep\" }\n\n[workspace]\n",
        )
        .file("src/lib.rs", "pub fn twice() -> u32 { dep::one() * 2 }\n")
        .file(
            "dep/Cargo.toml",
            "[package]\nname = \"dep\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        )
        .file("dep/src/lib.rs", "pub fn one() -> u32 { 1 }\n")
        .file(
            "ferry.yaml",
            &format!(
                "jobs:\n  build:\n    cache: {{ key: target-v1, paths: [target] }}\n    steps:\n      - run: cargo build --offline 2>&1\n        permissions: {{ exec: [cargo], env: {CARGO_ENV} }}\n"
            ),
        )
        .args(&["run", "--output", "plain"]);
    // Each compiled file and fingerprint with its modification time (cargo rewrites the
    // top-level `.d` files on every build, fresh or not).
    let times = || {
        let mut found = std::collections::BTreeMap::new();
        let mut dirs = vec![
            t.path(".ferry/work/build/target/debug/deps"),
            t.path(".ferry/work/build/target/debug/.fingerprint"),
        ];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let meta = entry.path().symlink_metadata().unwrap();
                if meta.is_dir() {
                    dirs.push(entry.path());
                } else if meta.is_file() {
                    found.insert(entry.path(), meta.modified().unwrap());
                }
            }
        }
        found
    };
    let first = t.run().code(0);
    assert!(first.stdout.contains("Compiling dep"), "{}", first.stdout);
    let built = times();
    assert!(built.len() > 10, "{built:?}");
    // The job's sync removes the `target/` it made; the cache puts it back.
    let second = t.run().code(0);
    assert!(
        second.stdout.contains("cache `target-v1`: restored"),
        "{}",
        second.stdout
    );
    let restored = times();
    let moved: Vec<_> = built
        .iter()
        .filter(|(path, time)| restored.get(*path) != Some(time))
        .map(|(path, _)| path)
        .collect();
    assert!(moved.is_empty(), "restored with other times: {moved:?}");
    assert!(
        !second.stdout.contains("Compiling"),
        "cargo rebuilt after the restore: {}",
        second.stdout
    );
}

#[test]
fn pytest_reports_expected_failures_and_unexpected_passes() {
    let t = Test::new()
        .file(
            "test_marks.py",
            "import pytest\n\n@pytest.mark.xfail(reason=\"known bug 12\")\ndef test_known_bug():\n    assert 1 == 2\n\n@pytest.mark.xfail(reason=\"fixed upstream?\")\ndef test_unexpectedly_passes():\n    assert 1 == 1\n\ndef test_ok():\n    pass\n",
        )
        .file(
            "ferry.yaml",
            "jobs:\n  test:\n    steps:\n      - id: t\n        uses: test\n        with: { preset: pytest }\n        permissions: { workspace: write, exec: [pytest] }\n      - run: echo \"xfailed=${{ steps.t.outputs.xfailed }} xpassed=${{ steps.t.outputs.xpassed }} skipped=${{ steps.t.outputs.skipped }}\"\n",
        )
        .env("PATH", &common::toolchain_path())
        .args(&["run", "--output", "plain"]);
    t.run()
        .code(0)
        .stdout_has("1 expected to fail and failed (xfail), 1 passed though expected to fail (xpass)")
        .stdout_has("test_marks::test_unexpectedly_passes passed though it is marked as expected to fail: remove the mark [xpass]")
        .stdout_has("xfailed=1 xpassed=1 skipped=1");
}
