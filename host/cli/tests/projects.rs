//! Real projects nobody here wrote, downloaded at test time from the registries: two Python
//! sdists run with pytest (six, toolz), two crates with `cargo test` (either, strsim), and an
//! npm package with its tape suite (function-bind). Each pipeline makes its toolchain with a
//! setup step or `$FERRY_PATH` and keeps its build folders with `keep:`. For each: the
//! suite passes, a warm second run installs and rebuilds nothing, a test broken on purpose
//! is reported at its file and line with the runner's whole message, and (Python) another
//! venv misses the step cache while (Rust) a one-line change rebuilds only the crate.
//!
//! Versions are pinned, so what the registries serve cannot change under the test.
#![cfg(target_os = "linux")]

mod common;

use common::Test;
use std::path::Path;
use std::process::Command;

/// Downloads `url` into the test's folder and unpacks it there, without its top folder.
fn unpack(t: &Test, url: &str) {
    let archive = t.dir.path().join(".download.tgz");
    let fetched = Command::new("curl")
        .args(["-sSfL", "--retry", "3", "-o"])
        .arg(&archive)
        .arg(url)
        .status()
        .expect("curl is missing: run `cargo xtask setup`");
    assert!(fetched.success(), "cannot download {url}");
    let unpacked = Command::new("tar")
        .arg("xzf")
        .arg(&archive)
        .args(["--strip-components=1", "-C"])
        .arg(t.dir.path())
        .status()
        .unwrap();
    assert!(unpacked.success(), "cannot unpack {url}");
    std::fs::remove_file(archive).unwrap();
}

/// The address of a Python sdist, from PyPI's JSON simple API.
fn sdist(name: &str, version: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sSf",
            "--retry",
            "3",
            "-H",
            "Accept: application/vnd.pypi.simple.v1+json",
        ])
        .arg(format!("https://pypi.org/simple/{name}/"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cannot reach PyPI");
    let index: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let file = format!("{name}-{version}.tar.gz");
    index["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["filename"] == file.as_str())
        .and_then(|f| f["url"].as_str())
        .unwrap_or_else(|| panic!("PyPI has no {file}"))
        .to_string()
}

fn append(t: &Test, file: &str, text: &str) {
    let path = t.path(file);
    let mut all = std::fs::read_to_string(&path).unwrap();
    all.push_str(text);
    std::fs::write(path, all).unwrap();
}

fn run(t: &Test) -> (i32, String) {
    let done = common::ferry(t, &["run", "--output", "plain"]);
    (done.code, format!("{}{}", done.stdout, done.stderr))
}

/// The line of `file` that holds `text`, from 1.
fn line_of(t: &Test, file: &str, text: &str) -> usize {
    std::fs::read_to_string(t.path(file))
        .unwrap()
        .lines()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("`{text}` is not in {file}"))
        + 1
}

const PYPI: &str = "network: [pypi.org, files.pythonhosted.org]";

#[test]
fn six_with_a_venv_made_by_hand_and_put_on_path() {
    let t = Test::new();
    unpack(&t, &sdist("six", "1.17.0"));
    let t = t
        .file(
            "ferry.yaml",
            &format!(
                r#"jobs:
  test:
    keep: [.venv]
    steps:
      - name: venv
        run: |
          [ -x .venv/bin/pytest ] || {{ python3 -m venv .venv && .venv/bin/pip install -q --disable-pip-version-check pytest; }}
          echo .venv/bin >> "$FERRY_PATH"
        permissions: {{ exec: [python3], {PYPI} }}
      - uses: test
        with: {{ preset: pytest }}
        permissions: {{ exec: [pytest], workspace: write }}
"#
            ),
        )
        .env("PATH", &common::toolchain_path());
    let (code, out) = run(&t);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("later steps find programs in"), "{out}");
    let (code, out) = run(&t);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("Successfully installed"), "{out}");
    append(
        &t,
        "test_six.py",
        "\n\ndef test_broken_by_ferry():\n    assert six.PY2, \"six says this is not Python 2\"\n",
    );
    let line = line_of(&t, "test_six.py", "assert six.PY2, \"six says");
    let (code, out) = run(&t);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "test_six.py:{line}: test_six::test_broken_by_ferry failed: AssertionError: six says this is not Python 2"
        )),
        "{out}"
    );
}

#[test]
fn toolz_with_the_python_setup_step_and_a_cached_test_step() {
    let t = Test::new();
    unpack(&t, &sdist("toolz", "1.2.0"));
    let pipeline = |venv: &str| {
        format!(
            r#"jobs:
  test:
    keep: [{venv}]
    steps:
      - uses: python
        with: {{ install: pytest, venv: {venv} }}
        permissions: {{ exec: [python3], {PYPI}, workspace: write }}
      - uses: test
        with: {{ preset: pytest, command: pytest toolz/tests -p no:cacheprovider --junitxml=target/ferry-pytest.xml }}
        permissions: {{ exec: [pytest], workspace: write }}
        cache: true
"#
        )
    };
    let t = t
        .file("ferry.yaml", &pipeline(".venv"))
        .env("PATH", &common::toolchain_path());
    let (code, out) = run(&t);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Successfully installed"), "{out}");
    let (code, out) = run(&t);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("packages in `.venv` are up to date"), "{out}");
    assert!(out.contains("[test/step-2] ✓ cached"), "{out}");
    // Another venv first on PATH is another `pytest`: the cached result does not apply.
    let t = t.file("ferry.yaml", &pipeline(".venv-b"));
    let (code, out) = run(&t);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("[test/step-2] ✓ cached"), "{out}");
    append(
        &t,
        "toolz/tests/test_itertoolz.py",
        "\n\ndef test_broken_by_ferry():\n    assert list(take(2, [1, 2, 3])) == [1, 2, 3], \"take gives two\"\n",
    );
    let line = line_of(&t, "toolz/tests/test_itertoolz.py", "\"take gives two\"");
    let (code, out) = run(&t);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("toolz/tests/test_itertoolz.py:{line}: ")),
        "{out}"
    );
    assert!(out.contains("AssertionError: take gives two"), "{out}");
}

/// A crate's pipeline: the toolchain chosen by `rust`, cargo's own `bin` on `PATH`, the
/// build kept.
fn crate_pipeline() -> String {
    r#"jobs:
  test:
    keep: [target]
    steps:
      - uses: rust
        with: { toolchain: "1.95.0" }
        permissions: { exec: [rustup], workspace: write }
      - run: echo "$HOME/.cargo/bin" >> "$FERRY_PATH"
      - uses: test
        with: { preset: cargo }
        permissions: { exec: [cargo], network: [index.crates.io, static.crates.io], workspace: write }
"#
    .to_string()
}

#[test]
fn either_rebuilds_only_itself_after_a_one_line_change() {
    let t = Test::new();
    unpack(
        &t,
        "https://static.crates.io/crates/either/either-1.15.0.crate",
    );
    let t = t.file("ferry.yaml", &crate_pipeline());
    let (code, out) = run(&t);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Compiling serde_json"), "{out}");
    // A one-line change: only `either` is built again, its dependencies are kept.
    append(&t, "src/lib.rs", "\n// changed by the test\n");
    let (code, out) = run(&t);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Compiling either"), "{out}");
    assert!(!out.contains("Compiling serde"), "{out}");
    append(
        &t,
        "src/lib.rs",
        "\n#[test]\nfn broken_by_ferry() {\n    assert_eq!(Either::<u8, u8>::Left(2), Either::Left(3), \"ferry broke this\");\n}\n",
    );
    let line = line_of(&t, "src/lib.rs", "\"ferry broke this\"");
    let (code, out) = run(&t);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "src/lib.rs:{line}:5: broken_by_ferry failed: assertion `left == right` failed: ferry broke this\n  left: Left(2)\n right: Left(3)"
        )),
        "{out}"
    );
}

#[test]
fn strsim_warm_runs_build_nothing() {
    let t = Test::new();
    unpack(
        &t,
        "https://static.crates.io/crates/strsim/strsim-0.11.1.crate",
    );
    let t = t.file("ferry.yaml", &crate_pipeline());
    let (code, out) = run(&t);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&t);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("Compiling"), "{out}");
    assert!(Path::new(&t.path(".ferry/work/test/target/debug")).is_dir());
}

#[test]
fn function_bind_with_tape() {
    let t = Test::new();
    unpack(
        &t,
        "https://registry.npmjs.org/function-bind/-/function-bind-1.1.2.tgz",
    );
    // Its suite needs tape only; the linters and coverage tools it also lists are left out,
    // with the publishing scripts that run them.
    let manifest = t.path("package.json");
    let mut package: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    package["devDependencies"] = serde_json::json!({ "tape": "5.7.1" });
    package["scripts"] = serde_json::json!({ "test": "tape test/index.js" });
    std::fs::write(&manifest, package.to_string()).unwrap();
    let t = t.file(
        "ferry.yaml",
        r#"jobs:
  test:
    keep: [node_modules]
    steps:
      - uses: node
        permissions: { exec: [node, npm], network: [registry.npmjs.org], workspace: write }
      - uses: test
        with: { command: tape test/index.js, format: tap }
        permissions: { exec: [tape] }
"#,
    );
    let (code, out) = run(&t);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&t);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("packages in `./node_modules` are up to date"),
        "{out}"
    );
    append(
        &t,
        "test/index.js",
        "\ntest('broken by ferry', function (t) {\n    t.equal(functionBind.call(function () { return 2; })(), 3, 'bound functions return');\n    t.end();\n});\n",
    );
    let line = line_of(&t, "test/index.js", "'bound functions return'");
    let (code, out) = run(&t);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "test/index.js:{line}:7: broken by ferry::bound functions return failed: bound functions return\n  operator: equal\n  expected: 3\n  actual: 2"
        )),
        "{out}"
    );
}
