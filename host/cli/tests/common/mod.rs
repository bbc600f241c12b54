//! The `ferry` binary driven from tests: a throwaway directory, arguments and environment,
//! and assertions on what it printed.

#![allow(dead_code)] // Each test crate uses its own part of this.

pub mod server;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Test {
    pub dir: tempfile::TempDir,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

pub struct Done {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Test {
    pub fn new() -> Self {
        Test {
            dir: tempfile::tempdir().unwrap(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Another command in the same directory with the same environment.
    pub fn then(mut self, args: &[&str]) -> Self {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn file(self, name: &str, text: &str) -> Self {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.args(&self.args)
            .current_dir(self.dir.path())
            .env(
                "XDG_CACHE_HOME",
                PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-cache"),
            )
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    pub fn run(&self) -> Done {
        let Output {
            status,
            stdout,
            stderr,
        } = self.command().output().unwrap();
        Done {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    pub fn spawn(&self) -> Child {
        self.command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Done {
    pub fn code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn stderr_has(self, text: &str) -> Self {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}:\n{}",
            self.stderr
        );
        self
    }

    pub fn stdout_has(self, text: &str) -> Self {
        assert!(
            self.stdout.contains(text),
            "stdout lacks {text:?}:\n{}",
            self.stdout
        );
        self
    }
}

/// `ferry ARGS` in the test's directory with its environment, keeping the test's files.
pub fn ferry(t: &Test, args: &[&str]) -> Done {
    let out = t.command().args(args).output().unwrap();
    Done {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Polls `check` until it gives a value, and returns it. For what the program under test
/// shows only as state (a file, a status in the API, a listening port), which has no event
/// to wait on; fails after a minute with `failure()`'s words.
pub fn eventually<T>(mut check: impl FnMut() -> Option<T>, failure: impl FnOnce() -> String) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "{}", failure());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The repository this test runs in.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `PATH` with the toolchains `cargo xtask setup` installs (componentize-py, componentize-js,
/// rolldown) in front.
pub fn toolchain_path() -> String {
    let root = repo_root().join("target").join("toolchains");
    let bin = if cfg!(windows) { "Scripts" } else { "bin" };
    let dirs = [
        root.join("python").join(bin),
        root.join("node").join("node_modules").join(".bin"),
    ];
    for dir in &dirs {
        assert!(
            dir.is_dir(),
            "{} is missing: run `cargo xtask setup` (the README's test command does)",
            dir.display()
        );
    }
    let mut paths: Vec<PathBuf> = dirs.to_vec();
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Runs a tool ferry did not write and returns what it printed; it must succeed.
pub fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): run `cargo xtask setup`"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A registry on a free loopback port, removed when dropped.
pub struct Registry {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(None)
    }

    /// With basic authentication for `user` (an htpasswd file with a bcrypt hash).
    pub fn start_with(user: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let auth = match user {
            None => String::new(),
            Some((name, password)) => {
                let hash = bcrypt::hash(password, 5).unwrap();
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, format!("{name}:{hash}\n")).unwrap();
                format!(
                    "auth: {{ htpasswd: {{ realm: ferry-tests, path: {} }} }}\n",
                    file.display()
                )
            }
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{ level: error, accesslog: {{ disabled: true }} }}\nstorage: {{ filesystem: {{ rootdirectory: {} }} }}\nhttp: {{ addr: 127.0.0.1:{port} }}\n{auth}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry is missing: run `cargo xtask setup`");
        eventually(
            || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
            || "the registry did not start".into(),
        );
        Registry {
            child,
            port,
            _dir: dir,
        }
    }

    /// Where the server keeps its configuration and storage (`data/`).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Registry {
    /// Stops the server (as a network outage would); dropping it afterwards is fine.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A package index on loopback serving one wheel, `hello-ferry` 1.0, whose module says
/// `GREETING = "hello from the loopback index"`; stopped when dropped.
pub struct PythonIndex {
    pub port: u16,
    server: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for PythonIndex {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl PythonIndex {
    pub fn start() -> PythonIndex {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("simple/hello-ferry");
        std::fs::create_dir_all(&project).unwrap();
        let wheel = project.join("hello_ferry-1.0-py3-none-any.whl");
        let built = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, zipfile\n\
             files = {'hello_ferry/__init__.py': 'GREETING = \"hello from the loopback index\"\\n',\n\
              'hello_ferry-1.0.dist-info/METADATA': 'Metadata-Version: 2.1\\nName: hello-ferry\\nVersion: 1.0\\n',\n\
              'hello_ferry-1.0.dist-info/WHEEL': 'Wheel-Version: 1.0\\nGenerator: ferry-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n'}\n\
             record = ''.join(name + ',,\\n' for name in files) + 'hello_ferry-1.0.dist-info/RECORD,,\\n'\n\
             with zipfile.ZipFile(sys.argv[1], 'w') as z:\n\
             \x20   [z.writestr(name, text) for name, text in files.items()]\n\
             \x20   z.writestr('hello_ferry-1.0.dist-info/RECORD', record)\n",
        )
        .arg(&wheel)
        .status()
        .unwrap();
        assert!(built.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        eventually(
            || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
            || format!("the index on port {port} never listened"),
        );
        PythonIndex {
            server,
            port,
            _dir: dir,
        }
    }
}
