//! `ferry plugin test --watch`: the project's files are polled, and a change builds and
//! tests the step again. Polling needs no file-system notification API, so it works the
//! same on every OS and in containers; a step project is small enough that a scan costs
//! little.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Folders of build output, dependencies, caches and version control: what a build or a
/// test writes there must not start another round.
const SKIPPED: [&str; 10] = [
    "dist",
    "target",
    "node_modules",
    ".venv",
    ".git",
    "__pycache__",
    ".ferry",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
];

/// How often the files are looked at.
const POLL: Duration = Duration::from_millis(300);

/// Files looked at at most: a project bigger than this is a folder given by mistake (a
/// home directory), and the scan stops there rather than take the machine.
const MAX_FILES: usize = 20_000;

/// Each file's modification time and size, by path relative to the project.
type Snapshot = BTreeMap<PathBuf, (Option<SystemTime>, u64)>;

/// The project's files as they are now. Links are not followed.
fn snapshot(dir: &Path) -> Snapshot {
    let mut files = Snapshot::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(dir.join(&rel)) else {
            continue;
        };
        for entry in entries.flatten() {
            if files.len() >= MAX_FILES {
                return files;
            }
            let name = entry.file_name();
            let Ok(meta) = entry.metadata() else { continue };
            let path = rel.join(&name);
            if meta.is_dir() {
                if !SKIPPED.iter().any(|s| name == *s) {
                    todo.push(path);
                }
            } else {
                files.insert(path, (meta.modified().ok(), meta.len()));
            }
        }
    }
    files
}

/// The files that were added, changed or removed between two snapshots.
fn changed(before: &Snapshot, after: &Snapshot) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = after
        .iter()
        .filter(|(path, seen)| before.get(*path) != Some(seen))
        .map(|(path, _)| path.clone())
        .collect();
    paths.extend(
        before
            .keys()
            .filter(|path| !after.contains_key(*path))
            .cloned(),
    );
    paths
}

/// Runs `round` (build and test), then again each time a file of `dir` changes, until the
/// process is stopped (Ctrl-C).
pub async fn run<F, R>(dir: &Path, mut round: F) -> u8
where
    F: FnMut() -> R,
    R: std::future::Future<Output = u8>,
{
    loop {
        round().await;
        // Taken after the round, so that what the build itself wrote is not a change.
        let mut seen = snapshot(dir);
        eprintln!("watching `{}` for changes (Ctrl-C to stop)", dir.display());
        let files = loop {
            tokio::time::sleep(POLL).await;
            let now = snapshot(dir);
            if now == seen {
                continue;
            }
            // An editor saves in steps (a temporary file, a rename): wait until the files
            // hold still for one poll.
            let mut settled = now;
            loop {
                tokio::time::sleep(POLL).await;
                let again = snapshot(dir);
                if again == settled {
                    break;
                }
                settled = again;
            }
            let files = changed(&seen, &settled);
            seen = settled;
            if !files.is_empty() {
                break files;
            }
        };
        let shown: Vec<String> = files
            .iter()
            .take(5)
            .map(|p| format!("`{}`", p.display()))
            .collect();
        let more = match files.len() {
            n if n > 5 => format!(" and {} more", n - 5),
            _ => String::new(),
        };
        eprintln!("changed: {}{more}", shown.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_output_and_dependencies_are_not_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/lib.rs"), "a").unwrap();
        let before = snapshot(root);
        for skipped in [
            "dist/x.wasm",
            "target/debug/x",
            "node_modules/m/i.js",
            ".git/HEAD",
        ] {
            let path = root.join(skipped);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        }
        assert_eq!(snapshot(root), before);
        std::fs::write(root.join("src/lib.rs"), "ab").unwrap();
        std::fs::write(root.join("ferry-tests.yaml"), "cases: {}").unwrap();
        let after = snapshot(root);
        assert_eq!(
            changed(&before, &after),
            [
                PathBuf::from("ferry-tests.yaml"),
                PathBuf::from("src/lib.rs")
            ]
        );
        std::fs::remove_file(root.join("src/lib.rs")).unwrap();
        assert_eq!(
            changed(&after, &snapshot(root)),
            [PathBuf::from("src/lib.rs")]
        );
    }
}
