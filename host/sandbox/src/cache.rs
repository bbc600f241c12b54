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
        let component = match self.store(&path, &compiled) {
            // SAFETY: as above; we just wrote it.
            Ok(()) => unsafe { Component::deserialize_file(engine, &path)? },
            // An unwritable cache costs a compile per run, never the run itself.
            // SAFETY: the bytes come from `precompile_component` of this very engine.
            Err(_) => unsafe { Component::deserialize(engine, &compiled)? },
        };
        Ok((component, digest, Loaded::Compiled))
    }

    /// Puts a compiled component in place whole: a temporary file renamed over the target.
    fn store(&self, path: &Path, compiled: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::io::Write::write_all(&mut tmp, compiled)?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Hex sha256 of some bytes.
pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
