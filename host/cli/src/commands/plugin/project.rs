//! A step project on disk: which language it is written in, and how to build it into a
//! component with that language's own toolchain.
//!
//! Rust projects carry their SDK (`vendor/ferry-sdk`) so that `cargo build` alone works;
//! Python and JavaScript projects get the SDK and the contract from this binary at build
//! time, so a project always builds against the contract of the `ferry` that runs it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The contract every step targets.
pub const STEP_WIT: &str = include_str!("../../../../../wit/step.wit");

const PYTHON_SDK: &str = include_str!("../../../../../sdk/python/ferry_sdk/__init__.py");
const JS_SDK: &str = include_str!("../../../../../sdk/js/index.js");
const JS_WORLD: &str = include_str!("../../../../../sdk/js/wit/world.wit");
const JS_WASI_DEPS: [(&str, &str); 4] = [
    (
        "io.wit",
        include_str!("../../../../../sdk/js/wit/deps/io.wit"),
    ),
    (
        "clocks.wit",
        include_str!("../../../../../sdk/js/wit/deps/clocks.wit"),
    ),
    (
        "filesystem.wit",
        include_str!("../../../../../sdk/js/wit/deps/filesystem.wit"),
    ),
    (
        "cli.wit",
        include_str!("../../../../../sdk/js/wit/deps/cli.wit"),
    ),
];

/// The Rust SDK sources, vendored into new Rust projects.
pub const RUST_SDK: [(&str, &str); 8] = [
    ("lib.rs", include_str!("../../../../../sdk/rust/src/lib.rs")),
    (
        "archive.rs",
        include_str!("../../../../../sdk/rust/src/archive.rs"),
    ),
    (
        "exec.rs",
        include_str!("../../../../../sdk/rust/src/exec.rs"),
    ),
    (
        "http.rs",
        include_str!("../../../../../sdk/rust/src/http.rs"),
    ),
    (
        "info.rs",
        include_str!("../../../../../sdk/rust/src/info.rs"),
    ),
    (
        "inputs.rs",
        include_str!("../../../../../sdk/rust/src/inputs.rs"),
    ),
    ("log.rs", include_str!("../../../../../sdk/rust/src/log.rs")),
    (
        "setup.rs",
        include_str!("../../../../../sdk/rust/src/setup.rs"),
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
    Python,
    #[value(name = "js", alias = "javascript")]
    JavaScript,
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::JavaScript => "js",
        })
    }
}

/// A step project found in a directory.
#[derive(Debug)]
pub struct Project {
    pub dir: PathBuf,
    pub language: Language,
    /// The step's package name; the component is `dist/<name>.wasm`.
    pub name: String,
    /// Python: the module that defines `WitWorld`. JavaScript: the entry file.
    entry: String,
}

impl Project {
    /// Finds the project in `dir` by its manifest: `Cargo.toml`, `pyproject.toml` or
    /// `package.json`.
    pub fn detect(dir: &Path) -> Result<Project, String> {
        if !dir.is_dir() {
            return Err(format!(
                "`{}` is not a directory\nhint: give the step project's directory, e.g. `ferry plugin build my-step`",
                dir.display()
            ));
        }
        let manifest = |name: &str| {
            let path = dir.join(name);
            path.is_file().then_some(path)
        };
        let (language, name, entry) = if let Some(path) = manifest("Cargo.toml") {
            let doc = read_toml(&path)?;
            let name = doc
                .get("package")
                .and_then(|p| p.get("name"))
                .and_then(|n| n.as_str())
                .ok_or_else(|| format!("{}: no `[package] name`", path.display()))?;
            (Language::Rust, name.to_string(), String::new())
        } else if let Some(path) = manifest("package.json") {
            let text = read(&path)?;
            let doc: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| format!("{}:{}:{}: {e}", path.display(), e.line(), e.column()))?;
            let name = doc["name"]
                .as_str()
                .ok_or_else(|| format!("{}: no `name`", path.display()))?;
            // `@scope/name` becomes `name`.
            let name = name.rsplit('/').next().unwrap_or(name).to_string();
            let entry = doc["main"].as_str().unwrap_or("src/index.js").to_string();
            (Language::JavaScript, name, entry)
        } else if let Some(path) = manifest("pyproject.toml") {
            let doc = read_toml(&path)?;
            let name = doc
                .get("project")
                .and_then(|p| p.get("name"))
                .and_then(|n| n.as_str())
                .ok_or_else(|| format!("{}: no `[project] name`", path.display()))?;
            let module = doc
                .get("tool")
                .and_then(|t| t.get("ferry"))
                .and_then(|f| f.get("module"))
                .and_then(|m| m.as_str())
                .unwrap_or("app");
            (Language::Python, name.to_string(), module.to_string())
        } else {
            return Err(format!(
                "`{}` is not a step project: it has no Cargo.toml, pyproject.toml or package.json\nhint: create one with `ferry plugin new NAME --lang rust|python|js`",
                dir.display()
            ));
        };
        // Toolchains run inside the project, so every path handed to them must be absolute.
        let dir = std::path::absolute(dir)
            .map_err(|e| format!("cannot resolve `{}`: {e}", dir.display()))?;
        Ok(Project {
            dir,
            language,
            name,
            entry,
        })
    }

    /// Where `build` puts the component.
    pub fn artifact(&self) -> PathBuf {
        self.dir.join("dist").join(format!("{}.wasm", self.name))
    }

    /// Builds the component into [`Project::artifact`]. Toolchain output goes to stderr.
    pub fn build(&self) -> Result<PathBuf, String> {
        let out = self.artifact();
        std::fs::create_dir_all(out.parent().unwrap_or(&self.dir))
            .map_err(|e| format!("cannot create `{}`: {e}", self.dir.join("dist").display()))?;
        match self.language {
            Language::Rust => self.build_rust(&out)?,
            Language::Python => self.build_python(&out)?,
            Language::JavaScript => self.build_js(&out)?,
        }
        Ok(out)
    }

    fn build_rust(&self, out: &Path) -> Result<(), String> {
        let cargo = Tool::find(&self.dir, "cargo", "install Rust from https://rustup.rs")?;
        ensure_wasm_target(&self.dir)?;
        let mut cmd = cargo.command();
        cmd.args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(&self.dir)
        .stdout(Stdio::piped());
        if let Some(shared) = shared_target_dir(&self.dir) {
            cmd.env("CARGO_TARGET_DIR", shared);
        }
        let output = run_capturing(&mut cmd, "cargo build")?;
        // The artifact path comes from cargo itself, so `CARGO_TARGET_DIR`, workspaces and
        // renamed libraries all work.
        let wasm = String::from_utf8_lossy(&output)
            .lines()
            .rev()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|msg| msg["reason"] == "compiler-artifact")
            .filter(|msg| {
                msg["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
            })
            .filter_map(|msg| {
                msg["filenames"].as_array().and_then(|files| {
                    files
                        .iter()
                        .filter_map(|f| f.as_str())
                        .find(|f| f.ends_with(".wasm"))
                        .map(PathBuf::from)
                })
            })
            .next()
            .ok_or_else(|| {
                "cargo built no `.wasm` library\nhint: a Rust step is a library with `crate-type = [\"cdylib\"]` under `[lib]` in Cargo.toml".to_string()
            })?;
        std::fs::copy(&wasm, out)
            .map(drop)
            .map_err(|e| format!("cannot copy `{}`: {e}", wasm.display()))
    }

    fn build_python(&self, out: &Path) -> Result<(), String> {
        let tool = Tool::find(
            &self.dir,
            "componentize-py",
            "install with `pip install componentize-py`",
        )?;
        let module_file = self
            .dir
            .join(format!("{}.py", self.entry.replace('.', "/")));
        if !module_file.is_file() && !self.dir.join(&self.entry).is_dir() {
            return Err(format!(
                "`{}` not found\nhint: the step's module is `{}` (set another with `[tool.ferry] module = \"...\"` in pyproject.toml)",
                module_file.display(),
                self.entry
            ));
        }
        let tmp = scratch()?;
        let wit = tmp.path().join("wit");
        write_files(&wit, &[("step.wit", STEP_WIT)])?;
        let sdk = tmp.path().join("sdk");
        write_files(&sdk.join("ferry_sdk"), &[("__init__.py", PYTHON_SDK)])?;
        let mut cmd = tool.command();
        cmd.arg("-d")
            .arg(&wit)
            .args(["-w", "step", "componentize", &self.entry, "-p"])
            .arg(&self.dir)
            .arg("-p")
            .arg(&sdk)
            .arg("-o")
            .arg(out)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .current_dir(&self.dir);
        run_to_stderr(&mut cmd, "componentize-py")
    }

    fn build_js(&self, out: &Path) -> Result<(), String> {
        let componentize = Tool::find(
            &self.dir,
            "componentize-js",
            "run `npm install` in the project: its package.json lists it",
        )?;
        let bundler = Tool::find(
            &self.dir,
            "rolldown",
            "run `npm install` in the project: its package.json lists it",
        )?;
        let entry = self.dir.join(&self.entry);
        if !entry.is_file() {
            return Err(format!(
                "`{}` not found\nhint: the step's entry is `main` in package.json (default `src/index.js`)",
                entry.display()
            ));
        }
        let tmp = scratch()?;
        let wit = tmp.path().join("wit");
        write_files(&wit, &[("world.wit", JS_WORLD)])?;
        let mut deps = JS_WASI_DEPS.to_vec();
        deps.push(("step.wit", STEP_WIT));
        write_files(&wit.join("deps"), &deps)?;
        let sdk = tmp.path().join("sdk").join("index.js");
        write_files(tmp.path().join("sdk").as_path(), &[("index.js", JS_SDK)])?;
        let bundle = tmp.path().join("bundle.js");
        // The bundle keeps the component imports (`ferry:`, `wasi:`) and inlines everything
        // else, npm dependencies included; `@ferry-ci/sdk` is this binary's SDK.
        let config = format!(
            "export default {{\n  input: {input},\n  external: [/^ferry:/, /^wasi:/],\n  platform: \"browser\",\n  resolve: {{ alias: {{ \"@ferry-ci/sdk\": {sdk} }} }},\n  output: {{ file: {bundle}, format: \"esm\" }},\n}};\n",
            input = json_path(&entry),
            sdk = json_path(&sdk),
            bundle = json_path(&bundle),
        );
        let config_path = tmp.path().join("rolldown.config.mjs");
        write_files(tmp.path(), &[("rolldown.config.mjs", &config)])?;
        let mut cmd = bundler.command();
        cmd.arg("-c")
            .arg(&config_path)
            .args(["--logLevel", "warn"])
            .current_dir(&self.dir)
            // Its stdout is only a summary of the bundle; problems come on stderr.
            .stdout(Stdio::null());
        run_capturing(&mut cmd, "rolldown")?;
        let mut cmd = componentize.command();
        cmd.arg("--wit")
            .arg(&wit)
            .args(["--world-name", "step-js"])
            // Steps have no HTTP server or fetch event; without these the component would
            // import wasi:http, which the host does not provide.
            .args(["-d", "http", "-d", "fetch-event", "-o"])
            .arg(out)
            .arg(&bundle)
            .current_dir(&self.dir);
        run_to_stderr(&mut cmd, "componentize-js")
    }
}

/// A toolchain program, found in the project first (`node_modules/.bin`, `.venv`) and then
/// on `PATH`.
struct Tool {
    path: PathBuf,
}

impl Tool {
    fn find(dir: &Path, name: &str, install: &str) -> Result<Tool, String> {
        let bin = if cfg!(windows) { "Scripts" } else { "bin" };
        let local: OsString = std::env::join_paths([
            dir.join("node_modules").join(".bin"),
            dir.join(".venv").join(bin),
        ])
        .unwrap_or_default();
        let path = std::env::var_os("PATH").unwrap_or_default();
        ferry_engine::os::find_program(name, &local)
            .or_else(|| ferry_engine::os::find_program(name, &path))
            .map(|path| Tool { path })
            .ok_or_else(|| {
                format!(
                    "{name} not found; {install}\nlooked in `{}`, `{}` and PATH (`{}`)",
                    dir.join("node_modules").join(".bin").display(),
                    dir.join(".venv").join(bin).display(),
                    path.to_string_lossy()
                )
            })
    }

    fn command(&self) -> Command {
        Command::new(&self.path)
    }
}

/// Where Rust step projects build, together: `wit-bindgen` and the other dependencies of the
/// SDK are compiled once for every step on this machine, not once per project (cargo locks
/// the folder, so two builds take turns). Not when the user chose a target folder, with
/// `CARGO_TARGET_DIR` or a `target-dir` in the project's cargo config.
fn shared_target_dir(project: &Path) -> Option<PathBuf> {
    if std::env::var_os("CARGO_TARGET_DIR").is_some() {
        return None;
    }
    let configured = ["config.toml", "config"].iter().any(|name| {
        std::fs::read_to_string(project.join(".cargo").join(name))
            .is_ok_and(|text| text.contains("target-dir"))
    });
    if configured {
        return None;
    }
    let compiled = ferry_sandbox::cache::ComponentCache::default_dir();
    Some(compiled.with_file_name("rust-target"))
}

/// Installs the wasm target through rustup when it is missing, as `cargo build` would
/// otherwise fail with a message about `core`.
fn ensure_wasm_target(dir: &Path) -> Result<(), String> {
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(dir)
        .output()
    else {
        // Without rustup the toolchain is managed some other way; cargo will say what is
        // missing.
        return Ok(());
    };
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == "wasm32-wasip2")
    {
        return Ok(());
    }
    eprintln!("note: installing the wasm32-wasip2 target with rustup");
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", "wasm32-wasip2"])
        .current_dir(dir);
    run_to_stderr(&mut cmd, "rustup target add wasm32-wasip2")
}

fn run_to_stderr(cmd: &mut Command, what: &str) -> Result<(), String> {
    cmd.stdout(Stdio::from(std::io::stderr()));
    run_capturing(cmd, what).map(drop)
}

/// Runs `cmd` with stderr passed through; returns its stdout if it was piped.
fn run_capturing(cmd: &mut Command, what: &str) -> Result<Vec<u8>, String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let output = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(format!("{what} failed ({})", output.status))
    }
}

fn scratch() -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix("ferry-build-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))
}

/// Writes `files` (name, text) into `dir`, creating it.
pub fn write_files(dir: &Path, files: &[(&str, &str)]) -> Result<(), String> {
    for (name, text) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create `{}`: {e}", parent.display()))?;
        }
        std::fs::write(&path, text)
            .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    }
    Ok(())
}

fn json_path(path: &Path) -> String {
    serde_json::to_string(&path.to_string_lossy()).unwrap_or_default()
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

fn read_toml(path: &Path) -> Result<toml::Table, String> {
    read(path)?
        .parse::<toml::Table>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    /// A module added to the SDK must be vendored too, or new projects do not build.
    #[test]
    fn every_rust_sdk_file_is_vendored() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk/rust/src");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut vendored: Vec<String> =
            super::RUST_SDK.iter().map(|(n, _)| n.to_string()).collect();
        vendored.sort();
        assert_eq!(vendored, on_disk);
    }
}
