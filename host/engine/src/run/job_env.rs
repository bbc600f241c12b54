//! `$FERRY_PATH` and `$FERRY_ENV`: a step's programs add directories to the `PATH` and
//! variables to the environment of the job's later steps, as GitHub's `$GITHUB_PATH` and
//! `$GITHUB_ENV` do. A setup step makes a venv or installs a toolchain and says where it
//! is; the steps after it find `pytest` or `cargo` there, with no `exec: [sh]` wrapper and
//! no dependence on the shell `ferry` was started from.
//!
//! Only a step that may write the workspace (`run:`, or `workspace: write`) is heard: it
//! could already change what later steps run, so the files give it no new power. The
//! variables that change how any program loads (`LD_PRELOAD`, `NODE_OPTIONS`, ...) are
//! refused from anyone: through them one step would run its code inside every later one,
//! a deploy holding secrets included.

use crate::event::Level;
use crate::log::StepLog;
use ferry_model::{Access, Step};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What earlier steps of a job added.
#[derive(Default)]
pub(crate) struct JobEnv {
    /// Newest first.
    path: Vec<PathBuf>,
    env: BTreeMap<String, String>,
}

/// Names `$FERRY_ENV` may not set, and prefixes: `PATH` has `$FERRY_PATH`; `FERRY_*` are
/// ferry's; the rest make programs load or run code they were not asked to.
const REFUSED: &[&str] = &[
    "PATH",
    "BASH_ENV",
    "ENV",
    "NODE_OPTIONS",
    "PYTHONSTARTUP",
    "PYTHONPATH",
    "PERL5OPT",
    "PERL5LIB",
    "RUBYOPT",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "GIT_SSH_COMMAND",
    "GIT_EXEC_PATH",
    "PROMPT_COMMAND",
];
const REFUSED_PREFIXES: &[&str] = &["FERRY_", "LD_", "DYLD_", "GIT_CONFIG"];

impl JobEnv {
    /// The `PATH` a step's programs are looked up on and see: what earlier steps added,
    /// newest first, then `base` (the pipeline's `env: PATH`, else the host's).
    pub(crate) fn path(&self, base: &str) -> String {
        let joined =
            std::env::join_paths(self.path.iter().cloned().chain(std::env::split_paths(base)));
        match joined {
            Ok(path) => path.to_string_lossy().into_owned(),
            Err(_) => base.to_string(),
        }
    }

    /// A step's variables: what earlier steps set, under the step's own `env:`.
    pub(crate) fn env(&self, own: BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        env.extend(own);
        env
    }

    /// Takes what a finished step wrote to its `$FERRY_PATH` and `$FERRY_ENV` files; says in
    /// its log what it took and what it refused. Whether the step wrote anything.
    pub(crate) fn take(
        &mut self,
        step: &Step,
        (workspace, home): (&Path, &Path),
        (path_file, env_file): (&Path, &Path),
        log: &StepLog,
    ) -> bool {
        let read = |file: &Path| match std::fs::read_to_string(file) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                log.line(
                    Level::Warn,
                    &format!("[ferry] cannot read `{}`: {e}", file.display()),
                );
                None
            }
        };
        let (paths, env) = (read(path_file), read(env_file));
        let said = |text: &Option<String>| text.as_deref().is_some_and(|t| !t.trim().is_empty());
        if !said(&paths) && !said(&env) {
            return false;
        }
        if !step.is_run && step.permissions.workspace != Access::Write {
            log.line(
                Level::Warn,
                "[ferry] ignoring $FERRY_PATH and $FERRY_ENV: only a step that may write the workspace changes later steps' PATH or environment\nhint: grant it with `permissions: { workspace: write }`",
            );
            return true;
        }
        for line in paths.iter().flat_map(|t| t.lines()) {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            // A relative directory is the workspace's: `.venv/bin`. Only the job's own
            // folders may come first on PATH: a step must not point later ones at
            // programs elsewhere on the host.
            let dir = ferry_model::pipeline::host_path(workspace, line);
            if !dir.starts_with(workspace) && !dir.starts_with(home) {
                log.line(
                    Level::Warn,
                    &format!(
                        "[ferry] $FERRY_PATH may not add `{}`: only folders in the workspace or the job's HOME (`{}`)",
                        dir.display(),
                        home.display()
                    ),
                );
                continue;
            }
            log.line(
                Level::Info,
                &format!(
                    "[ferry] later steps find programs in `{}` first",
                    dir.display()
                ),
            );
            self.path.retain(|p| *p != dir);
            self.path.insert(0, dir);
        }
        let Some(text) = env else {
            return true;
        };
        match crate::run::parse_outputs(&text) {
            Ok(vars) => {
                for (name, value) in vars {
                    if let Some(why) = refused(&name) {
                        log.line(
                            Level::Warn,
                            &format!("[ferry] $FERRY_ENV may not set `{name}`: {why}"),
                        );
                    } else {
                        log.line(Level::Info, &format!("[ferry] later steps see `{name}`"));
                        self.env.insert(name, value);
                    }
                }
            }
            Err(e) => log.line(Level::Warn, &format!("[ferry] ignoring $FERRY_ENV: {e}")),
        }
        true
    }
}

/// Why `$FERRY_ENV` may not set `name`, if it may not.
fn refused(name: &str) -> Option<&'static str> {
    if name == "PATH" {
        return Some("write the directory to $FERRY_PATH instead");
    }
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Some("a variable's name holds letters, digits and `_`");
    }
    let upper = name.to_ascii_uppercase();
    if REFUSED.contains(&upper.as_str()) || REFUSED_PREFIXES.iter().any(|p| upper.starts_with(p)) {
        return Some(
            "it changes how programs load or what they run, so a step could run its code inside every later one",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loaders_paths_and_ferrys_own_names_are_refused() {
        for name in [
            "PATH",
            "LD_PRELOAD",
            "ld_library_path",
            "DYLD_INSERT_LIBRARIES",
            "NODE_OPTIONS",
            "BASH_ENV",
            "FERRY_OUTPUT",
            "GIT_CONFIG_COUNT",
            "A B",
            "1X",
            "",
        ] {
            assert!(refused(name).is_some(), "{name:?}");
        }
        for name in [
            "VIRTUAL_ENV",
            "CARGO_HOME",
            "RUSTFLAGS",
            "NODE_ENV",
            "my_var",
        ] {
            assert_eq!(refused(name), None, "{name:?}");
        }
    }

    #[test]
    #[cfg(unix)]
    fn added_directories_come_first_newest_first_and_once() {
        let mut env = JobEnv {
            path: vec![PathBuf::from("/ws/b"), PathBuf::from("/ws/a")],
            ..Default::default()
        };
        let path = env.path("/usr/bin:/bin");
        assert_eq!(path, "/ws/b:/ws/a:/usr/bin:/bin");
        env.env.insert("X".into(), "job".into());
        let own = BTreeMap::from([("X".to_string(), "step".to_string())]);
        assert_eq!(env.env(own)["X"], "step", "a step's own env wins");
    }
}
