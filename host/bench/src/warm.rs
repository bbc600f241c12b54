//! (l) warm builds: the second `ferry run` after a one-line change against the same tool run
//!     bare and warm, for a crate with dependencies (`either` 1.15.0, whose tests build
//!     serde_json and its dependencies: `cargo test`) and an npm package (`function-bind`
//!     1.1.2 with tape: `npm test` after `npm install`). The pipelines make their toolchain
//!     with the setup steps and keep `target/` and `node_modules` with `keep:`. Both are
//!     downloaded from the registries; the bare copies build in their own folders.

use crate::{fmt, median, run_ferry, verdict};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Rounds of each measurement: each is a build, so fewer than the other parts.
const ROUNDS: usize = 7;

/// What ferry may add to a warm build, per the issue that asked for `keep:`.
const FLOOR: f64 = 1.15;

pub fn warm_builds(ferry: &Path, root: &Path) -> bool {
    let cargo = crate_case(ferry, root);
    let npm = npm_case(ferry, root);
    println!("(l) warm builds: second `ferry run` after a one-line change, against the bare tool");
    println!(
        "    {:<34}{:>12}{:>12}{:>9}",
        "", "bare", "ferry run", "ratio"
    );
    let mut missed = false;
    for (name, (bare, piped)) in [
        ("either: cargo test", cargo),
        ("function-bind: npm test", npm),
    ] {
        let ratio = piped.as_secs_f64() / bare.as_secs_f64();
        let ok = ratio <= FLOOR;
        missed |= !ok;
        println!(
            "    {name:<34}{:>12}{:>12}{ratio:>8.2}x   (floor {FLOOR:.2}x: {})",
            fmt(bare),
            fmt(piped),
            verdict(ok)
        );
    }
    missed
}

/// Medians of the bare `cargo test` and of `ferry run`, each after a one-line change.
fn crate_case(ferry: &Path, root: &Path) -> (Duration, Duration) {
    let url = "https://static.crates.io/crates/either/either-1.15.0.crate";
    let (bare, piped) = (root.join("either-bare"), root.join("either-ferry"));
    for dir in [&bare, &piped] {
        unpack(url, dir);
    }
    std::fs::write(
        piped.join("ferry.yaml"),
        r#"jobs:
  test:
    keep: [target]
    steps:
      - uses: rust
        with: { toolchain: stable }
        permissions: { exec: [rustup], workspace: write }
      - uses: test
        with: { preset: cargo }
        permissions: { exec: [cargo], network: [index.crates.io, static.crates.io], workspace: write }
"#,
    )
    .unwrap();
    let cargo_test = |dir: &Path| sh(dir, "cargo test --quiet");
    measure(&bare, &piped, "src/lib.rs", "//", cargo_test, |dir| {
        run_ferry(ferry, &dir.join("ferry.yaml"))
    })
}

/// Medians of the bare `npm test` and of `ferry run`, each after a one-line change.
fn npm_case(ferry: &Path, root: &Path) -> (Duration, Duration) {
    let url = "https://registry.npmjs.org/function-bind/-/function-bind-1.1.2.tgz";
    let (bare, piped) = (root.join("fb-bare"), root.join("fb-ferry"));
    for dir in [&bare, &piped] {
        unpack(url, dir);
        // Its suite needs tape only; its linters and coverage tools are left out.
        let manifest = dir.join("package.json");
        let mut package: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
        package["devDependencies"] = serde_json::json!({ "tape": "5.7.1" });
        package["scripts"] = serde_json::json!({ "test": "tape test/index.js" });
        std::fs::write(&manifest, package.to_string()).unwrap();
    }
    sh(&bare, "npm install --no-audit --no-fund --silent");
    std::fs::write(
        piped.join("ferry.yaml"),
        r#"jobs:
  test:
    keep: [node_modules]
    steps:
      - uses: node
        permissions: { exec: [node, npm], network: [registry.npmjs.org], workspace: write }
      - uses: test
        with: { command: npm test --silent, format: tap }
        permissions: { exec: [npm] }
"#,
    )
    .unwrap();
    measure(
        &bare,
        &piped,
        "test/index.js",
        "//",
        |dir| sh(dir, "npm test --silent"),
        |dir| run_ferry(ferry, &dir.join("ferry.yaml")),
    )
}

/// Warms both, then in each round changes one line of `file` in both copies and times the
/// bare tool and `ferry run`, alternating so that drift hits both alike.
fn measure(
    bare: &Path,
    piped: &Path,
    file: &str,
    comment: &str,
    bare_run: impl Fn(&Path),
    ferry_run: impl Fn(&Path),
) -> (Duration, Duration) {
    bare_run(bare);
    ferry_run(piped);
    ferry_run(piped);
    let (mut bare_times, mut ferry_times) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for dir in [bare, piped] {
            let path = dir.join(file);
            let mut text = std::fs::read_to_string(&path).unwrap();
            text.push_str(&format!("\n{comment} round {round}\n"));
            std::fs::write(&path, text).unwrap();
        }
        let started = Instant::now();
        bare_run(bare);
        bare_times.push(started.elapsed());
        let started = Instant::now();
        ferry_run(piped);
        ferry_times.push(started.elapsed());
    }
    (median(&mut bare_times), median(&mut ferry_times))
}

fn unpack(url: &str, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let archive = dir.join(".download.tgz");
    let fetched = Command::new("curl")
        .args(["-sSfL", "--retry", "3", "-o"])
        .arg(&archive)
        .arg(url)
        .status()
        .unwrap();
    assert!(fetched.success(), "cannot download {url}");
    let unpacked = Command::new("tar")
        .arg("xzf")
        .arg(&archive)
        .args(["--strip-components=1", "-C"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(unpacked.success());
    std::fs::remove_file(archive).unwrap();
}

/// Runs `script` with `sh` in `dir`, quietly; it must succeed.
pub(crate) fn sh(dir: &Path, script: &str) {
    let status = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "sh -c {script} in {}", dir.display());
}
