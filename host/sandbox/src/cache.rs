//! Compiled components on disk, keyed by the component's sha256 and the engine's
//! fingerprint, loaded by mmap so a warm run compiles nothing.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components live.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    fingerprint: String,
}

/// Whether a load compiled or hit the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    Cached,
    Compiled,
}

impl ComponentCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        // The hash above covers wasmtime's version and settings; ours covers the host build
        // that chose them.
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        ComponentCache {
            dir,
            fingerprint: format!("{:016x}", hasher.finish()),
        }
    }

    /// The default location: `$XDG_CACHE_HOME/ferry/compiled`, else the platform cache dir.
    pub fn default_dir() -> PathBuf {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                if cfg!(windows) {
                    std::env::var_os("LOCALAPPDATA").map(PathBuf::from)
                } else if cfg!(target_os = "macos") {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join("Library/Caches"))
                } else {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"))
                }
            })
            .unwrap_or_else(std::env::temp_dir);
        base.join("ferry").join("compiled")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm", self.fingerprint))
    }

    /// Loads the component in `file`. A file seen before with the same size and modification
    /// time is not read at all: its digest comes from a note kept beside the compiled copy,
    /// so a warm load of an 18 MB Python component costs an mmap, not a read and a hash.
    pub fn load_file(
        &self,
        engine: &Engine,
        file: &Path,
    ) -> wasmtime::Result<(Component, String, Loaded)> {
        let note = self.note_path(file);
        if let Some(note) = &note
            && let Ok(digest) = std::fs::read_to_string(note)
        {
            let path = self.path(digest.trim());
            if path.is_file() {
                // SAFETY: as in `load`: written whole by an engine with this fingerprint.
                if let Ok(component) = unsafe { Component::deserialize_file(engine, &path) } {
                    return Ok((component, digest.trim().to_string(), Loaded::Cached));
                }
            }
        }
        let bytes = std::fs::read(file)?;
        let loaded = self.load(engine, &bytes)?;
        if let Some(note) = note {
            // Best effort, like the cache itself: without the note the next load hashes.
            let _ = self.write_whole(&note, loaded.1.as_bytes());
        }
        Ok(loaded)
    }

    /// Where the digest of `file`, as it is now, is noted; `None` when it cannot be stat'ed.
    fn note_path(&self, file: &Path) -> Option<PathBuf> {
        let meta = std::fs::metadata(file).ok()?;
        let modified = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        let absolute = std::path::absolute(file).ok()?;
        let identity = format!(
            "{}\0{}\0{}",
            absolute.display(),
            meta.len(),
            modified.as_nanos()
        );
        Some(self.dir.join("files").join(sha256(identity.as_bytes())))
    }

    /// Loads the component with this content, compiling it only when no compiled copy for
    /// this engine exists. A damaged cache entry is replaced.
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, String, Loaded)> {
        let digest = sha256(bytes);
        let path = self.path(&digest);
        if path.is_file() {
            // SAFETY: the file was written by `precompile_component` of an engine with the
            // same fingerprint, and is renamed into place whole, never modified.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, digest, Loaded::Cached)),
                Err(_) => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        let component = match self.write_whole(&path, &compiled) {
            // SAFETY: as above; we just wrote it.
            Ok(()) => unsafe { Component::deserialize_file(engine, &path)? },
            // An unwritable cache costs a compile per run, never the run itself.
            // SAFETY: the bytes come from `precompile_component` of this very engine.
            Err(_) => unsafe { Component::deserialize(engine, &compiled)? },
        };
        Ok((component, digest, Loaded::Compiled))
    }

    /// Puts a file in place whole: a temporary file renamed over the target.
    fn write_whole(&self, path: &Path, contents: &[u8]) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, contents)?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Hex sha256 of some bytes.
pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
