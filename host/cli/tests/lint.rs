//! The built-in `lint` step through `ferry run`: its own checks, `fail-on`, a real linter
//! (rustfmt, through cargo) and the exec grant a user-named linter needs.

mod common;

use common::Test;

fn pipeline(with: &str, permissions: &str) -> String {
    format!(
        "jobs:\n  lint:\n    steps:\n      - id: lint\n        uses: lint\n        with: {with}\n        permissions: {permissions}\n      - run: echo \"rules ${{{{ steps.lint.outputs.rules }}}}\"\n"
    )
}

#[test]
fn built_in_checks_pass_a_clean_tree_and_annotate_a_dirty_one() {
    let clean = Test::new()
        .file("ferry.yaml", &pipeline("{}", "{}"))
        .file("src/main.rs", "fn main() {}\n")
        .file("config.json", "{\"a\": 1}\n")
        .args(&["run", "--output", "plain"]);
    clean
        .run()
        .code(0)
        .stdout_has("0 errors, 0 warnings, 0 notices");

    let dirty = Test::new()
        .file("ferry.yaml", &pipeline("{}", "{}"))
        .file("src/main.rs", "fn main() {}  \n")
        .file("config.json", "{\"a\": 1,}\n")
        .file(
            "deploy.env",
            "TOKEN=ghp_0123456789abcdefghijABCDEFGHIJ012345\n",
        )
        .file("merge.txt", "<<<<<<< HEAD\na\n=======\nb\n>>>>>>> other\n")
        .args(&["run", "--output", "plain"]);
    dirty
        .run()
        .code(1)
        .stdout_has("src/main.rs:1:13: trailing whitespace [trailing-whitespace]")
        .stdout_has("config.json:1:9: trailing comma")
        .stdout_has("deploy.env:1:7: likely GitHub personal access token committed [secret]")
        .stdout_has("merge.txt:1:1: merge conflict marker `<<<<<<<` [conflict-marker]")
        .stdout_has("5 errors, 1 warning, 0 notices")
        .stdout_has("5 findings at `error` or worse (fail-on: error)");
}

#[test]
fn warnings_alone_pass_under_fail_on_error_and_fail_under_warning() {
    let t = Test::new()
        .file("ferry.yaml", &pipeline("{ checks: [whitespace] }", "{}"))
        .file("notes.txt", "trailing \n")
        .args(&["run", "--output", "plain"]);
    t.run()
        .code(0)
        .stdout_has("notes.txt:1:9: trailing whitespace")
        // The shell drops the JSON quotes of the `rules` output.
        .stdout_has("rules {trailing-whitespace:1}");
    let t = t.file(
        "ferry.yaml",
        &pipeline("{ checks: [whitespace], fail-on: warning }", "{}"),
    );
    t.run()
        .code(1)
        .stdout_has("1 finding at `warning` or worse (fail-on: warning)");
}

#[test]
fn a_named_linter_needs_its_exec_grant_and_is_read_by_its_matcher() {
    let toolchain =
        "{ exec: [cargo], env: [HOME, PATH, CARGO_HOME, RUSTUP_HOME, RUSTUP_TOOLCHAIN] }";
    let t = Test::new()
        .file("ferry.yaml", &pipeline("{ preset: rustfmt }", "{}"))
        .file(
            "Cargo.toml",
            "[package]\nname = \"sample\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
        )
        .file("src/main.rs", "fn main( ) {}\n")
        .args(&["run", "--output", "plain"]);
    // Known from the preset before anything runs: exit 2, with the YAML that grants it.
    t.run()
        .code(2)
        .stderr_has(
            "needs exec of `cargo` but the pipeline does not grant it (for `preset: rustfmt`)",
        )
        .stderr_has("exec: [cargo]");
    let t = t.file("ferry.yaml", &pipeline("{ preset: rustfmt }", toolchain));
    t.run()
        .code(1)
        .stdout_has("src/main.rs:1: not formatted as rustfmt would [rustfmt]");
    let t = t.file("src/main.rs", "fn main() {}\n");
    t.run().code(0).stdout_has("cargo: 0 findings");
}

#[test]
fn clippy_on_stable_skips_benches_that_need_nightly() {
    // As itoa and many crates do: a bench harness only nightly builds.
    let toolchain =
        "{ exec: [cargo], env: [HOME, PATH, CARGO_HOME, RUSTUP_HOME], workspace: write }";
    let t = Test::new()
        .file("ferry.yaml", &pipeline("{ preset: clippy }", toolchain))
        .file(
            "Cargo.toml",
            "[package]\nname = \"sample\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
        )
        .file("src/lib.rs", "pub fn add(a: u8, b: u8) -> u8 {\n    a + b\n}\n")
        .file(
            "benches/bench.rs",
            "#![feature(test)]\nextern crate test;\n#[bench]\nfn add(b: &mut test::Bencher) {\n    b.iter(|| sample::add(1, 2));\n}\n",
        )
        .args(&["run", "--output", "plain"]);
    t.run()
        .code(0)
        .stdout_has("benches/bench.rs need a nightly compiler (`#![feature]`): clippy checks every target but the benches")
        .stdout_has("$ cargo clippy --lib --bins --tests --examples --message-format=json");
}

#[test]
fn a_linter_that_fails_without_a_readable_report_fails_the_step_with_its_words() {
    let t = Test::new()
        .file(
            "ferry.yaml",
            &pipeline(
                "{ command: \"sh -c 'echo config missing >&2; exit 3'\", format: ruff }",
                "{ exec: [sh] }",
            ),
        )
        .args(&["run", "--output", "plain"]);
    t.run()
        .code(1)
        .stdout_has("`sh` exited with 3 but reported nothing ferry could read as `ruff`")
        .stdout_has("config missing");
    let t = t.file("ferry.yaml", &pipeline("{ preset: pylint }", "{}"));
    t.run()
        .code(1)
        .stdout_has("unknown preset `pylint`; presets: clippy, rustfmt, flake8, ruff, eslint, shellcheck, yamllint");
}
