//! The built-in setup steps (`python`, `node`, `rust`) with the host's real toolchains: each
//! prepares what the job's later steps run, puts it on their `PATH` or in their
//! environment, and does nothing twice.
#![cfg(unix)]

mod common;

use common::Test;

fn plain(t: &Test) -> (i32, String) {
    let done = common::ferry(t, &["run", "--output", "plain"]);
    (done.code, format!("{}{}", done.stdout, done.stderr))
}

#[test]
fn python_makes_a_venv_installs_into_it_once_and_puts_it_on_path() {
    let index = common::PythonIndex::start();
    let yaml = format!(
        r#"jobs:
  t:
    keep: [.venv]
    steps:
      - uses: python
        with: {{ install: hello-ferry, index-url: "http://127.0.0.1:{port}/simple/" }}
        permissions: {{ exec: [python3], network: ["127.0.0.1:{port}"], workspace: write }}
      - run: python -c 'import hello_ferry, os, sys; print(hello_ferry.GREETING, "in", os.path.relpath(sys.prefix, os.environ["FERRY_WORKSPACE"]), os.environ["VIRTUAL_ENV"] == sys.prefix)'
        permissions: {{ exec: [python] }}
"#,
        port = index.port
    );
    let t = Test::new()
        .file("ferry.yaml", &yaml)
        .env("PATH", &common::toolchain_path());
    let (code, out) = plain(&t);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Successfully installed hello-ferry-1.0"),
        "{out}"
    );
    assert!(
        out.contains("hello from the loopback index in .venv True"),
        "{out}"
    );
    // Kept and unchanged: nothing is made or installed again.
    let (code, out) = plain(&t);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("packages in `.venv` are up to date"), "{out}");
    assert!(!out.contains("Successfully installed"), "{out}");
    assert!(
        out.contains("hello from the loopback index in .venv True"),
        "{out}"
    );
    // A version the interpreter is not is refused with the way to get one.
    let t = t.file(
        "ferry.yaml",
        "jobs:\n  t:\n    steps:\n      - uses: python\n        with: { version: \"2.7\", python: python3 }\n        permissions: { exec: [python3], workspace: write }\n",
    );
    let (code, out) = plain(&t);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not 2.7"), "{out}");
    assert!(
        out.contains("hint: grant the interpreter of that version"),
        "{out}"
    );
}

#[test]
fn node_installs_once_per_lockfile_and_puts_the_packages_programs_on_path() {
    let t = Test::new()
        .file(
            "package.json",
            r#"{ "name": "app", "version": "1.0.0", "private": true, "dependencies": { "hello": "file:./hello" } }"#,
        )
        .file(
            "hello/package.json",
            r#"{ "name": "hello", "version": "1.0.0", "bin": { "hello-bin": "cli.js" } }"#,
        )
        .file("hello/cli.js", "#!/usr/bin/env node\nconsole.log('hello from node_modules/.bin');\n");
    std::fs::set_permissions(
        t.path("hello/cli.js"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // The lockfile as npm writes it.
    let made = std::process::Command::new("npm")
        .args(["install", "--package-lock-only", "--no-audit", "--no-fund"])
        .current_dir(t.path(""))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let t = t.file(
        "ferry.yaml",
        "jobs:\n  t:\n    keep: [node_modules]\n    steps:\n      - uses: node\n        with: { version: \"\" }\n        permissions: { exec: [node, npm], workspace: write }\n      - run: hello-bin\n",
    );
    let (code, out) = plain(&t);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("$ npm ci") || out.contains("added 1 package"),
        "{out}"
    );
    assert!(out.contains("hello from node_modules/.bin"), "{out}");
    let (code, out) = plain(&t);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("packages in `./node_modules` are up to date"),
        "{out}"
    );
    assert!(out.contains("hello from node_modules/.bin"), "{out}");
}

#[test]
fn rust_chooses_an_installed_toolchain_for_the_later_steps() {
    let toolchain = "1.95.0";
    let yaml = format!(
        "jobs:\n  t:\n    steps:\n      - uses: rust\n        with: {{ toolchain: \"{toolchain}\", components: clippy }}\n        permissions: {{ exec: [rustup], workspace: write }}\n      - run: echo \"chosen=$RUSTUP_TOOLCHAIN\"\n      - uses: rust\n        with: {{ toolchain: \"stable; rm -rf /\" }}\n        permissions: {{ exec: [rustup], workspace: write }}\n        continue-on-error: true\n"
    );
    let t = Test::new().file("ferry.yaml", &yaml);
    let (code, out) = plain(&t);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rustc 1.95.0"), "{out}");
    assert!(out.contains("chosen=1.95.0"), "{out}");
    assert!(out.contains("is not a toolchain name"), "{out}");
}

#[test]
fn setup_inputs_never_become_options_of_the_tools_they_run() {
    let yaml = r#"jobs:
  rust:
    steps:
      - uses: rust
        with: { toolchain: "--force" }
        permissions: { exec: [rustup], workspace: write }
  components:
    steps:
      - uses: rust
        with: { components: "clippy --force" }
        permissions: { exec: [rustup], workspace: write }
  node:
    steps:
      - uses: node
        with: { registry: "--userconfig=/etc/passwd" }
        permissions: { exec: [node, npm], workspace: write }
  python:
    steps:
      - uses: python
        with: { install: pytest, index-url: "-r /etc/passwd" }
        permissions: { exec: [python3], workspace: write }
  venv-root:
    steps:
      - uses: python
        with: { venv: "." }
        permissions: { exec: [python3], workspace: write }
  venv-src:
    steps:
      - uses: python
        with: { venv: src }
        permissions: { exec: [python3], workspace: write }
"#;
    let t = Test::new()
        .file("ferry.yaml", yaml)
        .file("package.json", r#"{ "name": "app", "version": "1.0.0" }"#)
        .file("src/app.py", "print('the project')\n")
        .env("PATH", &common::toolchain_path());
    let done = common::ferry(&t, &["run", "--output", "plain", "--no-fail-fast"]);
    let out = format!("{}{}", done.stdout, done.stderr);
    assert_eq!(done.code, 1, "{out}");
    for said in [
        "`--force` is not a toolchain name",
        "`--force` is not a component or target name",
        "`registry: --userconfig=/etc/passwd` is not an http:// or https:// address",
        "`index-url: -r /etc/passwd` is not an http:// or https:// address",
        "`venv` must name a folder of its own",
        "`src` exists and is not a virtual environment (no `pyvenv.cfg`)",
    ] {
        assert!(out.contains(said), "{said}: {out}");
    }
    assert!(!out.contains("passed in"), "a step ran: {out}");
    assert!(
        t.path(".ferry/work/venv-src/src/app.py").is_file(),
        "the project's folder was removed"
    );
}

#[test]
fn node_without_a_lockfile_installs_once_while_package_json_stays_the_same() {
    let t = Test::new()
        .file(
            "package.json",
            r#"{ "name": "app", "version": "1.0.0", "private": true, "dependencies": { "hello": "file:./hello" } }"#,
        )
        .file("hello/package.json", r#"{ "name": "hello", "version": "1.0.0" }"#)
        .file(
            "ferry.yaml",
            "jobs:\n  t:\n    keep: [node_modules]\n    steps:\n      - uses: node\n        permissions: { exec: [node, npm], workspace: write }\n",
        );
    let (code, out) = plain(&t);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("are up to date"), "{out}");
    let (code, out) = plain(&t);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("packages in `./node_modules` are up to date"),
        "{out}"
    );
}
