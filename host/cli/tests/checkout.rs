//! The built-in `checkout` step through `ferry run`, against real git repositories: the
//! local one at HEAD, at an older sha and dirty, a remote served from a local bare
//! repository and over smart HTTP with a token, and refused option and transport injection.

mod common;

use common::Test;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

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
    // A local remote is a host path: the step reads it only when the pipeline says so.
    let grant = format!(
        "permissions: {{ workspace: write, exec: [git], paths: {{ {}: read }} }}",
        bare.path().display()
    );
    let yaml = format!(
        "jobs:
  shallow:
    steps:
      - id: co
        uses: checkout
        with: {{ repository: \"{url}\", ref: main, path: src }}
        {grant}
      - run: echo \"shallow $(cat src/file.txt) $(git -C src rev-list --count HEAD) ${{{{ steps.co.outputs.branch }}}}\"
  tag:
    steps:
      - id: co
        uses: checkout
        with: {{ repository: \"{url}\", ref: v2, depth: 0, path: src, token: TOKEN }}
        permissions: {{ workspace: write, exec: [git], secrets: [TOKEN], paths: {{ {dir}: read }} }}
      - run: echo \"tag $(git -C src rev-list --count HEAD) branch=${{{{ steps.co.outputs.branch }}}}\"; grep -rl s3cret-token src/.git || echo \"token not on disk\"
",
        dir = bare.path().display()
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
        "jobs:\n  sub:\n    steps:\n      - uses: checkout\n        with: {{ repository: \"{url}\", path: src, submodules: true, depth: 0 }}\n        permissions: {{ workspace: write, exec: [git], paths: {{ {app}: read, {lib}: read }} }}\n      - run: cat src/vendor/lib/lib.txt\n",
        app = app.dir.path().display(),
        lib = lib.dir.path().display()
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

/// A git smart-HTTP server on loopback: `git http-backend` behind a few lines of HTTP that
/// answer 401 unless the request carries `Authorization: Bearer <token>`. It records every
/// Authorization header it sees.
struct GitHttp {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl GitHttp {
    fn start(root: PathBuf, token: &'static str) -> GitHttp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (root, log) = (root.clone(), log.clone());
                std::thread::spawn(move || serve(stream, &root, token, &log));
            }
        });
        GitHttp { url, seen }
    }
}

fn serve(stream: TcpStream, root: &Path, token: &str, seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap().to_string(), parts.next().unwrap());
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let auth = header("authorization").unwrap_or_default();
    seen.lock().unwrap().push(auth.clone());
    if auth != format!("Bearer {token}") {
        let _ = out.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    let mut body = Vec::new();
    if let Some(len) = header("content-length") {
        body.resize(len.parse().unwrap(), 0);
        reader.read_exact(&mut body).unwrap();
    } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    let mut cgi = Command::new("git");
    cgi.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    for (name, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        if let Some(v) = header(name) {
            cgi.env(var, v);
        }
    }
    let mut child = cgi.spawn().unwrap();
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let response = child.wait_with_output().unwrap().stdout;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            response
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        })
        .unwrap();
    let head = String::from_utf8_lossy(&response[..split.0]).to_string();
    let status = head
        .lines()
        .find_map(|l| l.strip_prefix("Status: "))
        .unwrap_or("200 OK")
        .to_string();
    let mut reply = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for l in head.lines().filter(|l| !l.starts_with("Status: ")) {
        reply.push_str(l);
        reply.push_str("\r\n");
    }
    reply.push_str("\r\n");
    let _ = out.write_all(reply.as_bytes());
    let _ = out.write_all(&response[split.0 + split.1..]);
}

#[test]
fn a_private_remote_over_smart_http_is_read_with_a_granted_token_that_never_reaches_disk() {
    let origin = Test::new();
    repository(&origin);
    let served = tempfile::tempdir().unwrap();
    git(
        served.path(),
        &[
            "clone",
            "-q",
            "--bare",
            origin.dir.path().to_str().unwrap(),
            "app.git",
        ],
    );
    let server = GitHttp::start(served.path().to_path_buf(), "s3cret-token");
    let url = format!("{}/app.git", server.url);
    // The server is on the host's loopback: reached through the step's proxy, as granted.
    let host = server.url.trim_start_matches("http://").to_string();
    let yaml = format!(
        "jobs:
  with-token:
    steps:
      - id: co
        uses: checkout
        with: {{ repository: \"{url}\", path: src, token: TOKEN }}
        permissions: {{ workspace: write, exec: [git], secrets: [TOKEN], network: [\"{host}\"] }}
      - run: echo \"cloned $(cat src/file.txt)\"; grep -rl s3cret\"\"-token . || echo \"token on no file\"
  without-token:
    steps:
      - uses: checkout
        with: {{ repository: \"{url}\", path: src }}
        permissions: {{ workspace: write, exec: [git], network: [\"{host}\"] }}
  wrong-token:
    steps:
      - uses: checkout
        with: {{ repository: \"{url}\", path: src, token: WRONG }}
        permissions: {{ workspace: write, exec: [git], secrets: [WRONG], network: [\"{host}\"] }}
"
    );
    let t = Test::new()
        .file("ferry.yaml", &yaml)
        .env("TOKEN", "s3cret-token")
        .env("WRONG", "guess")
        .args(&["run", "--output", "plain", "--no-fail-fast"]);
    let done = t
        .run()
        .code(1)
        .stdout_has("cloned v2")
        .stdout_has("token on no file");
    let done = done
        .stdout_has("without-token › checkout: `git clone` failed: the remote asks for credentials: set `token:` to the name of a granted secret holding a token")
        .stdout_has("wrong-token › checkout: `git clone` failed: the remote refused the token");
    assert!(!done.stdout.contains("s3cret-token") && !done.stdout.contains("guess"));
    let seen = server.seen.lock().unwrap();
    assert!(seen.iter().any(|a| a == "Bearer s3cret-token"));
    assert!(seen.iter().any(|a| a == "Bearer guess"));
    // The workspace kept after the run holds no copy of the token either.
    let work = t.path(".ferry/work/with-token");
    let found = Command::new("grep")
        .args(["-rl", "s3cret-token", "."])
        .current_dir(&work)
        .output()
        .unwrap();
    assert!(
        found.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&found.stdout)
    );
}
