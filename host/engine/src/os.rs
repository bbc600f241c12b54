//! Everything that differs between operating systems, in one place: process groups and
//! signals, liveness of a recorded pid, program lookup.

use std::path::{Path, PathBuf};

/// Whether a process with this id still runs (used to tell a live run from a killed one).
pub fn process_alive(pid: u32) -> bool {
    imp::process_alive(pid)
}

/// Makes the child lead a new process group so that it and its descendants can be killed
/// together.
pub fn new_process_group(cmd: &mut tokio::process::Command) {
    imp::new_process_group(cmd)
}

/// Kills a process group started with [`new_process_group`]; errors (already gone) are
/// ignored.
pub fn kill_process_group(pid: u32) {
    imp::kill_process_group(pid)
}

/// Resolves what an `exec:` grant names (see [`ferry_model::Program`]) to the file that
/// runs: a name on `path`, a file of `workspace`, or an absolute path; `None` when there is
/// no such program, or a workspace file is named and there is no workspace yet. A workspace
/// file is whatever the job put there (a venv's `python` may be a link out of it): the
/// program then runs in the step's sandbox like any other.
///
/// The folder of the path returned is resolved (no `..`, no link: a `PATH` entry such as
/// `repo/tools/../bin` names a folder the sandbox shows under its real path); the file
/// itself is not, since a venv's `bin/python` must be started by its own name.
pub fn resolve_program(
    program: &str,
    path: &std::ffi::OsStr,
    workspace: Option<&Path>,
) -> Option<PathBuf> {
    let found = match ferry_model::Program::of(program)? {
        ferry_model::Program::Name(name) => find_program(name, path)?,
        ferry_model::Program::Absolute(file) => in_folder(Path::new(file))?,
        ferry_model::Program::Workspace(rel) => in_folder(&workspace?.join(rel))?,
    };
    let dir = std::fs::canonicalize(found.parent()?).ok()?;
    Some(dir.join(found.file_name()?))
}

/// The program `file` names, with the extensions the system tries.
fn in_folder(file: &Path) -> Option<PathBuf> {
    let (dir, name) = (file.parent()?, file.file_name()?.to_str()?);
    if !dir.is_absolute() {
        return None;
    }
    imp::candidates(dir, name)
        .into_iter()
        .find(|candidate| imp::is_executable(candidate))
}

/// Finds `program` on `path` (a `PATH`-style list) and returns its absolute path.
pub fn find_program(program: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    if program.is_empty() || Path::new(program).components().count() != 1 {
        return None;
    }
    std::env::split_paths(path)
        .filter(|dir| dir.is_absolute())
        .flat_map(|dir| imp::candidates(&dir, program))
        .find(|candidate| imp::is_executable(candidate))
}

#[cfg(unix)]
mod imp {
    use std::path::{Path, PathBuf};

    pub fn process_alive(pid: u32) -> bool {
        let Ok(pid) = i32::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists; no signal is sent.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }

    pub fn new_process_group(cmd: &mut tokio::process::Command) {
        cmd.process_group(0);
    }

    pub fn kill_process_group(pid: u32) {
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: killpg with a positive group id and a valid signal has no memory effects.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
    }

    pub fn candidates(dir: &Path, program: &str) -> Vec<PathBuf> {
        vec![dir.join(program)]
    }

    pub fn is_executable(path: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
}

#[cfg(windows)]
mod imp {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;

    pub fn process_alive(pid: u32) -> bool {
        Command::new("tasklist")
            .args(["/FI", &format!("PID eq {pid}"), "/NH"])
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&pid.to_string()))
    }

    pub fn new_process_group(cmd: &mut tokio::process::Command) {
        cmd.creation_flags(CREATE_NEW_PROCESS_GROUP);
    }

    pub fn kill_process_group(pid: u32) {
        let _ = Command::new("taskkill")
            .args(["/T", "/F", "/PID", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    pub fn candidates(dir: &Path, program: &str) -> Vec<PathBuf> {
        let exts = std::env::var("PATHEXT").unwrap_or_else(|_| ".COM;.EXE;.BAT;.CMD".into());
        let mut out = vec![dir.join(program)];
        out.extend(
            exts.split(';')
                .filter(|e| !e.is_empty())
                .map(|e| dir.join(format!("{program}{e}"))),
        );
        out
    }

    pub fn is_executable(path: &Path) -> bool {
        path.is_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_by_name_only() {
        let path = std::env::var_os("PATH").unwrap();
        #[cfg(unix)]
        assert!(find_program("sh", &path).unwrap().is_absolute());
        assert!(find_program("../sh", &path).is_none());
        assert!(find_program("/bin/sh", &path).is_none());
        assert!(find_program("no-such-program-ferry", &path).is_none());
    }

    #[cfg(unix)]
    #[test]
    fn resolves_workspace_files_and_absolute_paths_only_where_they_run() {
        use std::os::unix::fs::PermissionsExt;
        let ws = tempfile::tempdir().unwrap();
        let bin = ws.path().join(".venv/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("pytest"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(bin.join("pytest"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(bin.join("data"), "not a program").unwrap();
        let path = std::env::var_os("PATH").unwrap();
        let at = |p: &str, ws: Option<&Path>| resolve_program(p, &path, ws);
        let w = Some(ws.path());
        assert_eq!(at(".venv/bin/pytest", w), Some(bin.join("pytest")));
        assert_eq!(at("./.venv/bin/pytest", w), Some(bin.join("pytest")));
        assert_eq!(at(".venv/bin/pytest", None), None, "no workspace yet");
        assert_eq!(at(".venv/bin/data", w), None, "not executable");
        assert_eq!(at(".venv/bin", w), None, "a directory");
        assert_eq!(at("../x/.venv/bin/pytest", w), None);
        // Its folder as the system resolves it (`/bin` is a link to `usr/bin` on many).
        let bin_sh = std::fs::canonicalize("/bin").unwrap().join("sh");
        assert_eq!(at("/bin/sh", w), Some(bin_sh));
        assert_eq!(at("/usr/../bin/sh", w), None, "`..` is refused in a grant");
        let through = resolve_program("sh", std::ffi::OsStr::new("/usr/../usr/bin"), None);
        assert_eq!(through, at("/bin/sh", w), "a PATH folder is resolved");
        assert!(at("sh", w).unwrap().is_absolute());
    }

    #[test]
    fn own_process_is_alive() {
        assert!(process_alive(std::process::id()));
    }
}
