//! The built-in `checkout` step through `ferry run`, against real git repositories: the
//! local one at HEAD, at an older sha and dirty, a remote served from a local bare
//! repository, and refused option and transport injection.

mod common;

use common::Test;
use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@ferry.invalid")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@ferry.invalid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository with two commits on `main`, then an uncommitted change and an untracked file.
fn repository(t: &Test) -> String {
    let dir = t.dir.path();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("file.txt"), "v1\n").unwrap();
    git(dir, &["add", "file.txt"]);
    git(dir, &["commit", "-q", "-m", "first commit"]);
    let first = git(dir, &["rev-parse", "HEAD"]);
    std::fs::write(dir.join("file.txt"), "v2\n").unwrap();
    git(dir, &["commit", "-q", "-am", "second commit"]);
    std::fs::write(dir.join("file.txt"), "uncommitted\n").unwrap();
    std::fs::write(dir.join("untracked.txt"), "new\n").unwrap();
    first
}

const GRANT: &str = "permissions: { workspace: write, exec: [git] }";

#[test]
fn local_checkout_at_head_an_older_sha_and_dirty() {
    let t = Test::new();
    let first = repository(&t);
    let yaml = format!(
        "jobs:
  head:
    steps:
      - id: co
        uses: checkout
        {GRANT}
      - run: echo \"head $(cat file.txt) $(ls untracked.txt 2>/dev/null || echo clean) ${{{{ steps.co.outputs.branch }}}} ${{{{ steps.co.outputs.commit-message }}}} ${{{{ steps.co.outputs.author }}}}\"
  old:
    steps:
      - id: co
        uses: checkout
        with: {{ ref: {first} }}
        {GRANT}
      - run: echo \"old $(cat file.txt) ${{{{ steps.co.outputs.sha }}}}\"
  dirty:
    steps:
      - uses: checkout
        with: {{ dirty: true }}
        {GRANT}
      - run: echo \"dirty $(cat file.txt) $(cat untracked.txt)\"
  context:
    steps:
      - run: echo \"before ${{{{ git.short-sha }}}} ${{{{ git.branch }}}} ${{{{ git.commit-message }}}}\"
      - uses: checkout
        with: {{ ref: {first} }}
        {GRANT}
      - run: echo \"after ${{{{ git.sha }}}} ${{{{ git.commit-message }}}}\"
"
    );
    let t = t
        .file("ferry.yaml", &yaml)
        .args(&["run", "--output", "plain"]);
    t.run()
        .code(0)
        .stdout_has("head v2 clean main second commit Ada <ada@ferry.invalid>")
        .stdout_has(&format!("old v1 {first}"))
        .stdout_has("dirty uncommitted new")
        .stdout_has("before ")
        .stdout_has(" main second commit")
        .stdout_has(&format!("after {first} first commit"));
    // The real repository is untouched.
    assert_eq!(
        std::fs::read_to_string(t.path("file.txt")).unwrap(),
        "uncommitted\n"
    );
}

#[test]
fn remote_checkout_from_a_bare_repository() {
    let origin = Test::new();
    repository(&origin);
    git(origin.dir.path(), &["tag", "v2"]);
    let bare = tempfile::tempdir().unwrap();
    git(
        bare.path(),
        &[
            "clone",
            "-q",
            "--bare",
            origin.dir.path().to_str().unwrap(),
            "r.git",
        ],
    );
    let url = format!("file://{}", bare.path().join("r.git").display());
    let yaml = format!(
        "jobs:
  shallow:
    steps:
      - id: co
        uses: checkout
        with: {{ repository: \"{url}\", ref: main, path: src }}
        {GRANT}
      - run: echo \"shallow $(cat src/file.txt) $(git -C src rev-list --count HEAD) ${{{{ steps.co.outputs.branch }}}}\"
  tag:
    steps:
      - id: co
        uses: checkout
        with: {{ repository: \"{url}\", ref: v2, depth: 0, path: src, token: TOKEN }}
        permissions: {{ workspace: write, exec: [git], secrets: [TOKEN] }}
      - run: echo \"tag $(git -C src rev-list --count HEAD) branch=${{{{ steps.co.outputs.branch }}}}\"; grep -rl s3cret-token src/.git || echo \"token not on disk\"
"
    );
    let t = Test::new()
        .file("ferry.yaml", &yaml)
        .env("TOKEN", "s3cret-token")
        .args(&["run", "--output", "plain"]);
    t.run()
        .code(0)
        .stdout_has("shallow v2 1 main")
        .stdout_has("tag 2 branch=")
        .stdout_has("token not on disk");
}

#[test]
fn a_remote_with_a_submodule_checks_out_recursively() {
    let lib = Test::new();
    git(lib.dir.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(lib.path("lib.txt"), "from the submodule\n").unwrap();
    git(lib.dir.path(), &["add", "-A"]);
    git(lib.dir.path(), &["commit", "-q", "-m", "lib"]);
    let app = Test::new();
    git(app.dir.path(), &["init", "-q", "-b", "main"]);
    let lib_url = format!("file://{}", lib.dir.path().display());
    git(
        app.dir.path(),
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            &lib_url,
            "vendor/lib",
        ],
    );
    git(app.dir.path(), &["commit", "-q", "-m", "app with lib"]);
    let url = format!("file://{}", app.dir.path().display());
    let yaml = format!(
        "jobs:\n  sub:\n    steps:\n      - uses: checkout\n        with: {{ repository: \"{url}\", path: src, submodules: true, depth: 0 }}\n        {GRANT}\n      - run: cat src/vendor/lib/lib.txt\n"
    );
    let t = Test::new()
        .file("ferry.yaml", &yaml)
        .args(&["run", "--output", "plain"]);
    t.run().code(0).stdout_has("from the submodule");
}

#[test]
fn refs_and_urls_that_git_would_execute_are_refused() {
    let t = Test::new();
    repository(&t);
    let marker = t.path("pwned");
    let yaml = format!(
        "jobs:
  option:
    steps:
      - uses: checkout
        with: {{ ref: \"--upload-pack=touch {m}\" }}
        {GRANT}
  transport:
    steps:
      - uses: checkout
        with: {{ repository: \"ext::sh -c touch% {m}\", path: x }}
        {GRANT}
  dash-url:
    steps:
      - uses: checkout
        with: {{ repository: \"--upload-pack=touch {m}\", path: x }}
        {GRANT}
",
        m = marker.display()
    );
    let t = t
        .file("ferry.yaml", &yaml)
        .args(&["run", "--output", "plain", "--no-fail-fast"]);
    t.run()
        .code(1)
        .stdout_has("is not a branch, tag or commit name")
        .stdout_has("`ext::` transports run commands")
        .stdout_has("it would be read as an option");
    assert!(!marker.exists(), "a refused value reached git");
}

/// The example projects' own pipelines (checkout → lint → test) pass on this repository.
#[test]
fn example_projects_pass_checkout_lint_and_test() {
    for (example, expected) in [
        ("rust-crate", "3 tests passed at "),
        ("python-project", "3 tests passed at "),
    ] {
        let pipeline = common::repo_root()
            .join("examples")
            .join(example)
            .join("ferry.yaml");
        let t = Test::new().env("PATH", &common::toolchain_path()).args(&[
            "run",
            pipeline.to_str().unwrap(),
            "--output",
            "plain",
        ]);
        t.run()
            .code(0)
            .stdout_has(expected)
            .stdout_has("0 errors, 0 warnings, 0 notices");
    }
}
