//! Job workspaces: a private copy of the repository for each job.

use std::io;
use std::path::{Path, PathBuf};

/// The repository a pipeline lives in: the nearest directory at or above `dir` that holds
/// `.git`, else `dir` itself.
pub fn repository_root(dir: &Path) -> PathBuf {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .unwrap_or(&dir)
        .to_path_buf()
}

/// Copies `src` into `dst`, honouring `.gitignore` and skipping `.ferry`. A `.git`
/// directory is copied whole, so that `git log`, tags and diffs work in a job as they do in
/// a checkout, while nothing a job does reaches the real repository; a `.git` *file* (a
/// worktree or submodule pointing elsewhere) is left out for the same reason.
/// Symbolic links are copied as links, never followed, so a link that points outside the
/// repository stays a link (and the sandbox refuses to follow it).
///
/// Files are copied by several threads at once; git's object files, which git never
/// changes once written, are hard-linked where the file system allows.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<u64> {
    let mut plan = Plan::default();
    plan_filtered(src, dst, &mut plan)?;
    let git = src.join(".git");
    if git.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        plan_all(&git, &dst.join(".git"), false, &mut plan)?;
    }
    plan.execute()
}

/// What to create, in order: directories first, then files in any order.
#[derive(Default)]
struct Plan {
    dirs: Vec<PathBuf>,
    links: Vec<(PathBuf, PathBuf)>,
    /// (from, to, may hard-link)
    files: Vec<(PathBuf, PathBuf, bool)>,
}

impl Plan {
    fn execute(self) -> io::Result<u64> {
        for dir in &self.dirs {
            std::fs::create_dir_all(dir)?;
        }
        for (from, to) in &self.links {
            copy_link(from, to)?;
        }
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 8);
        let chunk = self.files.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = self
                .files
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        for (from, to, link) in part {
                            if !(*link && std::fs::hard_link(from, to).is_ok()) {
                                std::fs::copy(from, to)?;
                            }
                        }
                        Ok::<_, io::Error>(())
                    })
                })
                .collect();
            for worker in workers {
                worker
                    .join()
                    .map_err(|_| io::Error::other("a copying thread panicked"))??;
            }
            Ok::<_, io::Error>(())
        })?;
        Ok(self.files.len() as u64)
    }
}

/// Everything below `src`, ignore files included (they are git's data here). Below
/// `objects/`, files may be hard-linked: git writes objects once and never in place.
fn plan_all(src: &Path, dst: &Path, in_objects: bool, plan: &mut Plan) -> io::Result<()> {
    plan.dirs.push(dst.to_path_buf());
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = dst.join(entry.file_name());
        if kind.is_dir() {
            let objects = in_objects || entry.file_name() == "objects";
            plan_all(&entry.path(), &target, objects, plan)?;
        } else if kind.is_symlink() {
            plan.links.push((entry.path(), target));
        } else if kind.is_file() {
            plan.files.push((entry.path(), target, in_objects));
        }
    }
    Ok(())
}

fn plan_filtered(src: &Path, dst: &Path, plan: &mut Plan) -> io::Result<()> {
    plan.dirs.push(dst.to_path_buf());
    let walker = ignore::WalkBuilder::new(src)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|e| !matches!(e.file_name().to_str(), Some(".git" | ".ferry")))
        .build();
    for entry in walker {
        let entry = entry.map_err(io::Error::other)?;
        let rel = entry.path().strip_prefix(src).map_err(io::Error::other)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = dst.join(rel);
        let Some(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            plan.dirs.push(target);
        } else if kind.is_symlink() {
            plan.links.push((entry.path().to_path_buf(), target));
        } else if kind.is_file() {
            plan.files.push((entry.path().to_path_buf(), target, false));
        }
    }
    Ok(())
}

#[cfg(unix)]
fn copy_link(src: &Path, dst: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)
}

#[cfg(windows)]
fn copy_link(src: &Path, dst: &Path) -> io::Result<()> {
    let target = std::fs::read_link(src)?;
    if src.is_dir() {
        std::os::windows::fs::symlink_dir(target, dst)
    } else {
        std::os::windows::fs::symlink_file(target, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_respecting_gitignore() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join(".gitignore"), "target/\n").unwrap();
        std::fs::create_dir_all(src.path().join("src")).unwrap();
        std::fs::create_dir_all(src.path().join("target")).unwrap();
        std::fs::create_dir_all(src.path().join(".ferry/runs")).unwrap();
        std::fs::write(src.path().join("src/main.rs"), "fn main() {}").unwrap();
        std::fs::write(src.path().join("target/big"), "x").unwrap();
        // Git's own files are copied even where .gitignore would skip them.
        std::fs::create_dir_all(src.path().join(".git/refs/target")).unwrap();
        std::fs::write(src.path().join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(src.path().join(".git/refs/target/x"), "1").unwrap();
        std::fs::create_dir_all(src.path().join(".git/objects/ab")).unwrap();
        std::fs::write(src.path().join(".git/objects/ab/cdef"), "blob").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/passwd", src.path().join("link")).unwrap();
        copy_tree(src.path(), &dst.path().join("ws")).unwrap();
        let ws = dst.path().join("ws");
        assert!(ws.join("src/main.rs").is_file());
        assert!(!ws.join("target").exists());
        assert!(!ws.join(".ferry").exists());
        assert!(ws.join(".git/HEAD").is_file());
        // Git's objects are shared with the source; everything else is the job's own.
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
            assert_eq!(
                ino(&src.path().join(".git/objects/ab/cdef")),
                ino(&ws.join(".git/objects/ab/cdef"))
            );
            assert_ne!(
                ino(&src.path().join(".git/HEAD")),
                ino(&ws.join(".git/HEAD"))
            );
        }
        assert!(ws.join(".git/refs/target/x").is_file());
        #[cfg(unix)]
        assert!(
            ws.join("link")
                .symlink_metadata()
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
