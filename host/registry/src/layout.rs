//! The local plugin store: a directory holding one OCI image layout per repository
//! (`<root>/<repository>/{oci-layout,index.json,blobs/sha256/…}`). It needs no server, can
//! be shared as a folder, and other OCI tools read it (`skopeo inspect oci:<root>/lint:1.0.0`).

use crate::artifact::{self, Descriptor, Index, REF_NAME};
use crate::store::{Fetched, Store};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: PathBuf) -> Layout {
        Layout { root }
    }

    fn dir(&self, repository: &str) -> PathBuf {
        self.root.join(repository)
    }

    fn blob_path(&self, repository: &str, digest: &str) -> Result<PathBuf, String> {
        crate::reference::check_digest(digest)?;
        Ok(self
            .dir(repository)
            .join("blobs/sha256")
            .join(&digest["sha256:".len()..]))
    }

    fn index(&self, repository: &str) -> Result<Index, String> {
        let path = self.dir(repository).join("index.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("`{}` is not an OCI index: {e}", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index {
                schema_version: 2,
                media_type: Some(artifact::INDEX.into()),
                manifests: Vec::new(),
            }),
            Err(e) => Err(format!("cannot read `{}`: {e}", path.display())),
        }
    }

    /// Runs `change` on the repository's index under an exclusive lock, so concurrent pushes
    /// to one folder never lose each other's tags.
    fn update_index(
        &self,
        repository: &str,
        change: impl FnOnce(&mut Index),
    ) -> Result<(), String> {
        let dir = self.dir(repository);
        let fail = |e: io::Error| format!("cannot write to `{}`: {e}", dir.display());
        fs::create_dir_all(dir.join("blobs/sha256")).map_err(fail)?;
        let marker = dir.join("oci-layout");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&marker)
            .map_err(fail)?;
        lock.lock().map_err(fail)?;
        if fs::metadata(&marker).map_err(fail)?.len() == 0 {
            (&lock)
                .write_all(br#"{"imageLayoutVersion":"1.0.0"}"#)
                .map_err(fail)?;
        }
        let mut index = self.index(repository)?;
        change(&mut index);
        let bytes = serde_json::to_vec_pretty(&index).expect("index serializes");
        write_atomic(&dir.join("index.json"), &bytes).map_err(fail)
    }
}

impl Store for Layout {
    fn manifest(&self, repository: &str, reference: &str) -> Result<Option<Fetched>, String> {
        let index = self.index(repository)?;
        let found = if reference.starts_with("sha256:") {
            index.manifests.iter().find(|m| m.digest == reference)
        } else {
            index
                .manifests
                .iter()
                .rev()
                .find(|m| m.annotations.get(REF_NAME).map(String::as_str) == Some(reference))
        };
        let Some(descriptor) = found else {
            return Ok(None);
        };
        let bytes = crate::store::verified_blob(self, repository, descriptor)?;
        Ok(Some(Fetched {
            bytes,
            digest: descriptor.digest.clone(),
            media_type: descriptor.media_type.clone(),
        }))
    }

    fn blob(&self, repository: &str, digest: &str, limit: u64) -> Result<Vec<u8>, String> {
        let path = self.blob_path(repository, digest)?;
        let file = fs::File::open(&path)
            .map_err(|e| format!("cannot read blob `{}`: {e}", path.display()))?;
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(file, limit), &mut bytes)
            .map_err(|e| format!("cannot read blob `{}`: {e}", path.display()))?;
        Ok(bytes)
    }

    fn has_blob(&self, repository: &str, digest: &str) -> Result<bool, String> {
        Ok(self.blob_path(repository, digest)?.is_file())
    }

    fn put_blob(&self, repository: &str, digest: &str, bytes: &[u8]) -> Result<(), String> {
        let path = self.blob_path(repository, digest)?;
        if path.is_file() {
            return Ok(());
        }
        let parent = path.parent().expect("blob paths have a parent");
        fs::create_dir_all(parent)
            .and_then(|()| write_atomic(&path, bytes))
            .map_err(|e| format!("cannot write `{}`: {e}", path.display()))
    }

    fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), String> {
        let mut descriptor = Descriptor::of(media_type, bytes);
        self.put_blob(repository, &descriptor.digest, bytes)?;
        let tag = (!reference.starts_with("sha256:")).then(|| reference.to_string());
        if let Some(tag) = &tag {
            descriptor.annotations.insert(REF_NAME.into(), tag.clone());
        }
        self.update_index(repository, |index| {
            // A tag names one manifest: the new one replaces what the tag named before.
            index.manifests.retain(|m| match &tag {
                Some(t) => m.annotations.get(REF_NAME) != Some(t),
                None => m.digest != descriptor.digest || m.annotations.contains_key(REF_NAME),
            });
            index.manifests.push(descriptor);
        })
    }

    fn tags(&self, repository: &str) -> Result<Vec<String>, String> {
        let mut tags: Vec<String> = self
            .index(repository)?
            .manifests
            .iter()
            .filter_map(|m| m.annotations.get(REF_NAME).cloned())
            .collect();
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    fn repositories(&self, prefix: &str) -> Result<Vec<String>, String> {
        let mut found = Vec::new();
        let start = self.root.join(prefix);
        if start.join("oci-layout").is_file() {
            found.push(prefix.trim_matches('/').to_string());
        }
        walk(&self.root, &start, &mut found);
        found.sort();
        found.dedup();
        Ok(found)
    }
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() || entry.file_name() == "blobs" {
            continue;
        }
        if path.join("oci-layout").is_file()
            && let Ok(rel) = path.strip_prefix(root)
        {
            found.push(rel.to_string_lossy().replace('\\', "/"));
        }
        walk(root, &path, found);
    }
}

/// Writes a file whole: a temporary file beside it, synced, then renamed over it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
