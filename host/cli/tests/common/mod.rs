//! The `ferry` binary driven from tests: a throwaway directory, arguments and environment,
//! and assertions on what it printed.

#![allow(dead_code)] // Each test crate uses its own part of this.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

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
