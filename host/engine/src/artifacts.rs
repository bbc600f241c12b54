//! Artifacts: files a step hands to later jobs of the same run.
//!
//! Each artifact is a [`Tree`] kept with the run record (`runs/<id>/artifacts/<name>.json`);
//! its file contents live in `.ferry/artifacts/blobs`, shared by every run, so a file that
//! does not change between runs is stored once.

use crate::files::{Blobs, Patterns, Tree};
use crate::record::now_ms;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// One uploaded artifact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Artifact {
    pub name: String,
    /// The job and step that uploaded it.
    pub job: String,
    pub step: String,
    /// Milliseconds since the Unix epoch.
    pub created: u64,
    pub tree: Tree,
}

impl Artifact {
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    pub fn file_count(&self) -> usize {
        self.tree.files().count()
    }
}

/// Where file contents of every run's artifacts are kept.
pub fn blobs(state_dir: &Path) -> Blobs {
    Blobs::new(state_dir.join("artifacts").join("blobs"))
}

/// Where the run's artifact `name` is described; a name that breaks the artifact-name rule
/// (a path, `..`, a separator) is refused before it is joined to anything.
fn manifest(run_dir: &Path, name: &str) -> io::Result<PathBuf> {
    if !ferry_model::is_artifact_name(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "`{}` is not an artifact name: {}",
                name.escape_debug(),
                ferry_model::ARTIFACT_NAME_RULE
            ),
        ));
    }
    Ok(run_dir.join("artifacts").join(format!("{name}.json")))
}

/// Stores what `paths` select under `root` as the run's artifact `name`. A name is taken
/// once per run: a second upload under it is refused.
pub fn upload(
    state_dir: &Path,
    run_dir: &Path,
    name: &str,
    (job, step): (&str, &str),
    root: &Path,
    paths: &[String],
) -> io::Result<Artifact> {
    let patterns = Patterns::new(paths).map_err(io::Error::other)?;
    let tree = Tree::snapshot(root, &patterns, &blobs(state_dir))?;
    let artifact = Artifact {
        name: name.to_string(),
        job: job.to_string(),
        step: step.to_string(),
        created: now_ms(),
        tree,
    };
    let path = manifest(run_dir, name)?;
    let dir = path.parent().unwrap_or(run_dir);
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer(&mut tmp, &artifact).map_err(io::Error::other)?;
    tmp.as_file().sync_data()?;
    tmp.persist_noclobber(&path).map_err(|e| {
        if e.error.kind() == io::ErrorKind::AlreadyExists {
            let by = read(run_dir, name)
                .ok()
                .flatten()
                .map(|a| format!(" by `{}/{}`", a.job, a.step))
                .unwrap_or_default();
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("artifact `{name}` was already uploaded in this run{by}"),
            )
        } else {
            e.error
        }
    })?;
    Ok(artifact)
}

/// The run's artifact `name`, if it was uploaded. A name that is not an artifact name is
/// an `InvalidInput` error; a description that does not parse, or is not of the artifact
/// it is filed as, is `InvalidData`.
pub fn read(run_dir: &Path, name: &str) -> io::Result<Option<Artifact>> {
    match std::fs::read(manifest(run_dir, name)?) {
        Ok(bytes) => match serde_json::from_slice::<Artifact>(&bytes) {
            Ok(artifact) if artifact.name == name => Ok(Some(artifact)),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the description of artifact `{name}` names another artifact"),
            )),
            Err(e) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the description of artifact `{name}` is damaged: {e}"),
            )),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every artifact of a run, by name.
pub fn list(run_dir: &Path) -> io::Result<Vec<Artifact>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(run_dir.join("artifacts")) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json")
            && let Some(name) = path.file_stem().and_then(|s| s.to_str())
            && ferry_model::is_artifact_name(name)
            && let Some(artifact) = read(run_dir, name)?
        {
            out.push(artifact);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Writes an artifact's files below `dst`, byte for byte, with their modes.
pub fn extract(state_dir: &Path, artifact: &Artifact, dst: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dst)?;
    artifact.tree.restore(dst, &blobs(state_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_uploaded_once_per_run() {
        let dir = tempfile::tempdir().unwrap();
        let (state, run, ws) = (
            dir.path().join(".ferry"),
            dir.path().join(".ferry/runs/r1"),
            dir.path().join("ws"),
        );
        std::fs::create_dir_all(ws.join("dist")).unwrap();
        std::fs::write(ws.join("dist/app.js"), "x").unwrap();
        let paths = ["dist".to_string()];
        upload(&state, &run, "dist", ("build", "s1"), &ws, &paths).unwrap();
        let err = upload(&state, &run, "dist", ("other", "s2"), &ws, &paths).unwrap_err();
        assert!(err.to_string().contains("by `build/s1`"), "{err}");
        let listed = list(&run).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].file_count(), 1);
        let out = dir.path().join("out");
        extract(&state, &listed[0], &out).unwrap();
        assert_eq!(std::fs::read(out.join("dist/app.js")).unwrap(), b"x");
    }

    #[test]
    fn names_that_are_paths_and_digests_that_are_paths_reach_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let (state, run) = (dir.path().join(".ferry"), dir.path().join(".ferry/runs/r1"));
        // A description planted beside the run, and one the run holds, whose file names
        // a path where its digest belongs.
        std::fs::create_dir_all(run.join("artifacts")).unwrap();
        let planted = r#"{"name":"evil","job":"j","step":"s","created":0,"tree":{"entries":[
            {"type":"file","path":"passwd","mode":420,"size":1,"sha256":"../../../../../../etc/passwd"}]}}"#;
        std::fs::write(dir.path().join("evil.json"), planted).unwrap();
        std::fs::write(run.join("artifacts/evil.json"), planted).unwrap();
        for name in ["../../../evil", "/etc/passwd", "a/b", "..", ".hidden", ""] {
            let err = read(&run, name).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name}: {err}");
        }
        let artifact = read(&run, "evil").unwrap().unwrap();
        let out = dir.path().join("out");
        let err = extract(&state, &artifact, &out).unwrap_err();
        assert!(err.to_string().contains("sha256 digest"), "{err}");
        assert!(!out.join("passwd").exists());
        let sha = artifact.tree.files().next().unwrap().0;
        assert!(blobs(&state).path(sha).is_err());
        // A description filed under another name is not taken for it.
        std::fs::write(run.join("artifacts/other.json"), planted).unwrap();
        assert!(read(&run, "other").is_err());
    }
}
