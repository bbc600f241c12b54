//! ferry's built-in `python` setup step: makes a virtual environment with a Python the host
//! has (on `PATH`: the system's, a pyenv shim, a uv-installed one), installs the project's
//! packages into it, and puts it on `PATH` for the job's later steps.
//!
//! A warm run costs two process starts: the environment is made again only when the
//! interpreter changed, and packages are installed again only when what they come from
//! (the pip arguments, the requirement files, `pyproject.toml`, the interpreter) changed.
//! pip's downloads stay in the job's private `HOME` between runs.

use ferry_sdk::exec::{Command, split_command_line};
use ferry_sdk::setup::{Stamp, version_matches, workspace_relative};
use ferry_sdk::{Capabilities, Error, Info, Input, Inputs, Step, info, set_output};

struct Python;

/// Prints the interpreter's version, its executable, the working directory (the workspace
/// as the host sees it) and whether it is Windows, one a line.
/// The executable is the one a venv made now would name as its `home`: the base interpreter
/// when this one is itself in a venv.
const PROBE: &str = "import os, sys; print('%d.%d.%d' % sys.version_info[:3]); print(getattr(sys, '_base_executable', sys.executable)); print(os.getcwd()); print(os.name)";

/// Runs the program named by the first argument in place of this interpreter: how the step
/// starts the environment's own Python, which it made and so was not granted by name.
const EXEC: &str = "import os, sys; os.execv(sys.argv[1], sys.argv[1:])";

impl Step for Python {
    fn info() -> Info {
        Info::new(
            "python",
            env!("CARGO_PKG_VERSION"),
            "Makes a virtual environment with a host Python, installs the project's packages into it, and puts it on PATH for the job's later steps.",
        )
        .input(Input::string(
            "version",
            "The version the interpreter must have, by leading components: `3.12`, `3`. Empty: any.",
        ))
        .input(Input::string(
            "python",
            "The interpreter that makes the environment, as granted in `exec:`. Default: `python<version>` when `version` is set, else `python3`.",
        ))
        .input(Input::string("venv", "Where the environment goes, in the workspace.").default(".venv"))
        .input(Input::string(
            "install",
            "What to install, as pip arguments (`-r requirements-dev.txt -e .[test]`). Default: `-r requirements.txt` when there is one, else `.` when there is a `pyproject.toml` or `setup.py`, else nothing; `none` installs nothing.",
        ))
        .input(Input::string("index-url", "A package index other than PyPI (pip's `--index-url`)."))
        .output("python-version", "The interpreter's version: `3.11.7`.")
        .output("venv", "The environment's folder in the workspace.")
        .capabilities(Capabilities::write_workspace().exec(["*"]).network(["*"]))
    }

    fn run(inputs: &Inputs) -> Result<(), Error> {
        let wanted = inputs.optional("version").unwrap_or_default();
        let python = inputs
            .optional("python")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| {
                if wanted.is_empty() {
                    "python3".to_string()
                } else {
                    format!("python{wanted}")
                }
            });
        let venv = workspace_relative(&inputs.string("venv")?, "venv")?;
        if venv.split('/').all(|p| p == ".") {
            return Err(Error::InvalidInput(
                "`venv` must name a folder of its own, e.g. `.venv`".into(),
            ));
        }
        let probe = Command::new(&python)
            .args(["-c", PROBE])
            .quiet()
            .run()?
            .check()?;
        let facts: Vec<String> = probe.stdout_text().lines().map(str::to_string).collect();
        let [version, executable, workspace, os] = &facts[..] else {
            return Err(Error::Failed(format!(
                "`{python}` did not answer as a Python does: {facts:?}"
            )));
        };
        if !version_matches(version, &wanted) {
            return Err(Error::Failed(format!(
                "`{python}` is Python {version}, not {wanted}\nhint: grant the interpreter of that version and name it: `python: python{wanted}` with `permissions: {{ exec: [python{wanted}] }}` (a pyenv shim or `uv python install {wanted}` puts one on PATH)"
            )));
        }
        let bin = if os == "nt" { "Scripts" } else { "bin" };
        let venv_python = format!("{venv}/{bin}/python");
        // The environment belongs to one interpreter: another version or another install
        // makes it anew.
        let home = executable
            .rsplit_once(['/', '\\'])
            .map_or("", |(dir, _)| dir);
        let made_by = venv_interpreter(&venv);
        let same = made_by
            .as_ref()
            .is_some_and(|(v, h)| v == version && h == home);
        if !same {
            // Only an environment is made anew: a folder that is not one is the project's.
            if std::path::Path::new(&venv).exists()
                && !std::path::Path::new(&format!("{venv}/pyvenv.cfg")).is_file()
            {
                return Err(Error::InvalidInput(format!(
                    "`{venv}` exists and is not a virtual environment (no `pyvenv.cfg`)\nhint: name another folder with `venv:`"
                )));
            }
            if std::path::Path::new(&venv).exists() {
                let was = made_by.map_or("an unknown Python".to_string(), |(v, h)| {
                    format!("Python {v} in `{h}`")
                });
                info!(
                    "`{venv}` was made by {was}: making it anew with Python {version} in `{home}`"
                );
                std::fs::remove_dir_all(&venv)
                    .map_err(|e| Error::Failed(format!("cannot remove `{venv}`: {e}")))?;
            }
            Command::new(&python)
                .args(["-m", "venv", &venv])
                .run()?
                .check()?;
        }
        let install = match inputs.optional("install").filter(|i| !i.trim().is_empty()) {
            Some(given) if given.trim() == "none" => Vec::new(),
            Some(given) => split_command_line(&given)?,
            None if std::path::Path::new("requirements.txt").is_file() => {
                vec!["-r".into(), "requirements.txt".into()]
            }
            None if ["pyproject.toml", "setup.py"]
                .iter()
                .any(|f| std::path::Path::new(f).is_file()) =>
            {
                vec![".".into()]
            }
            None => Vec::new(),
        };
        if !install.is_empty() {
            let index = inputs.optional("index-url").filter(|i| !i.is_empty());
            let web = |u: &str| {
                ["http://", "https://"].iter().any(|p| u.starts_with(p))
                    && !u.contains(char::is_whitespace)
            };
            if let Some(url) = index.as_deref().filter(|u| !web(u)) {
                return Err(Error::InvalidInput(format!(
                    "`index-url: {url}` is not an http:// or https:// address"
                )));
            }
            let mut stamp = Stamp::default();
            stamp
                .fact("python", &format!("{version} {executable}"))
                .fact("install", &install.join(" "))
                .fact("index", index.as_deref().unwrap_or(""));
            for file in install
                .windows(2)
                .filter(|w| matches!(w[0].as_str(), "-r" | "-c"))
                .map(|w| &w[1])
            {
                stamp.file(file);
            }
            for file in ["pyproject.toml", "setup.py", "setup.cfg"] {
                stamp.file(file);
            }
            let stamp_file = format!("{venv}/.ferry-installed");
            if stamp.matches(&stamp_file) {
                info!("packages in `{venv}` are up to date");
            } else {
                let mut argv: Vec<String> = vec![
                    EXEC.into(),
                    venv_python.clone(),
                    "-m".into(),
                    "pip".into(),
                    "install".into(),
                    "--disable-pip-version-check".into(),
                ];
                if let Some(index) = index {
                    argv.extend(["--index-url".into(), index]);
                }
                argv.extend(install);
                Command::new(&python).arg("-c").args(argv).run()?.check()?;
                stamp.write(&stamp_file)?;
            }
        }
        ferry_sdk::add_path(&format!("{venv}/{bin}"))?;
        ferry_sdk::set_env("VIRTUAL_ENV", &format!("{workspace}/{venv}"))?;
        info!("Python {version} in `{venv}`, on PATH for the job's later steps");
        set_output("python-version", version)?;
        set_output("venv", &venv)
    }
}

/// The version (`3.12.1`) and folder of the interpreter that made the environment at `venv`,
/// from its `pyvenv.cfg` (`version = 3.11.7`, or `version_info = 3.12.1.final.0`).
fn venv_interpreter(venv: &str) -> Option<(String, String)> {
    let text = std::fs::read_to_string(format!("{venv}/pyvenv.cfg")).ok()?;
    let value = |keys: &[&str]| {
        text.lines().find_map(|line| {
            let (key, value) = line.split_once('=')?;
            keys.contains(&key.trim()).then(|| value.trim().to_string())
        })
    };
    let version = value(&["version", "version_info"])?;
    let version: Vec<&str> = version.split('.').take(3).collect();
    Some((version.join("."), value(&["home"])?))
}

ferry_sdk::export!(Python);
