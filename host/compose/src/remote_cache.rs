//! The step and dependency caches shared through an OCI repository (or an OCI layout
//! folder on a shared disk), so that several machines reuse each other's results.
//!
//! Each entry is an OCI artifact tagged with its name (`step-<key>`, `deps-<sha256>`): an
//! empty config, the entry's JSON as the first layer and the file contents it names as the
//! other layers, each under its own sha256. Contents already in the repository are not sent
//! again, and every blob fetched is checked against its digest before it is kept.

use ferry_engine::cache::Remote;
use ferry_engine::files::Blobs;
use ferry_registry::artifact::{Descriptor, EMPTY, MANIFEST, Manifest};
use ferry_registry::store::{Store, verified_blob};
use ferry_registry::{Location, layout::Layout, remote};
use std::sync::Arc;

/// What a cache entry's manifest says it is.
const ARTIFACT_TYPE: &str = "application/vnd.dev.ferry.cache.v1";
const ENTRY: &str = "application/vnd.dev.ferry.cache.entry.v1+json";
const CONTENT: &str = "application/octet-stream";

pub struct OciCache {
    store: Arc<dyn Store + Send + Sync>,
    repository: String,
    place: String,
}

impl OciCache {
    /// `text` is `host[:port]/path/repository` or a folder.
    pub fn new(text: &str) -> Result<OciCache, String> {
        let hint =
            "hint: write a repository such as `registry.example.com/team/ferry-cache`, or a folder";
        match Location::parse(text).map_err(|e| format!("{e}\n{hint}"))? {
            Location::Registry { host, namespace } if !namespace.is_empty() => Ok(OciCache {
                store: Arc::new(remote::Remote::new(&host, None)),
                repository: namespace.clone(),
                place: format!("{host}/{namespace}"),
            }),
            Location::Registry { host, .. } => Err(format!(
                "the remote cache `{host}` names no repository\n{hint}"
            )),
            Location::Layout(dir) => Ok(OciCache {
                store: Arc::new(Layout::new(dir.clone())),
                repository: "ferry-cache".to_string(),
                place: dir.display().to_string(),
            }),
        }
    }
}

impl Remote for OciCache {
    fn fetch(&self, name: &str, blobs: &Blobs) -> Result<Option<Vec<u8>>, String> {
        let Some(fetched) = self.store.manifest(&self.repository, name)? else {
            return Ok(None);
        };
        let manifest: Manifest = serde_json::from_slice(&fetched.bytes)
            .map_err(|e| format!("`{name}` is not a manifest: {e}"))?;
        if manifest.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
            return Err(format!("`{name}` is not a ferry cache entry"));
        }
        let Some((entry, contents)) = manifest.layers.split_first() else {
            return Err(format!("`{name}` has no entry"));
        };
        for layer in contents {
            let hex = layer
                .digest
                .strip_prefix("sha256:")
                .unwrap_or(&layer.digest);
            if blobs.has(hex) {
                continue;
            }
            let bytes = verified_blob(&*self.store, &self.repository, layer)?;
            blobs
                .put_bytes(hex, &bytes)
                .map_err(|e| format!("cannot keep {}: {e}", layer.digest))?;
        }
        verified_blob(&*self.store, &self.repository, entry).map(Some)
    }

    fn publish(
        &self,
        name: &str,
        entry: &[u8],
        files: &[(String, u64)],
        blobs: &Blobs,
    ) -> Result<(), String> {
        let repo = &self.repository;
        let mut layers = vec![Descriptor::of(ENTRY, entry)];
        // Sends what the repository lacks; `bytes` is read only then.
        let put = |descriptor: &Descriptor,
                   bytes: &dyn Fn() -> Result<Vec<u8>, String>|
         -> Result<(), String> {
            if !self.store.has_blob(repo, &descriptor.digest)? {
                self.store.put_blob(repo, &descriptor.digest, &bytes()?)?;
            }
            Ok(())
        };
        put(&layers[0], &|| Ok(entry.to_vec()))?;
        for (hex, size) in files {
            let descriptor = Descriptor {
                media_type: CONTENT.into(),
                digest: format!("sha256:{hex}"),
                size: *size,
                artifact_type: None,
                annotations: Default::default(),
            };
            put(&descriptor, &|| {
                blobs
                    .path(hex)
                    .and_then(std::fs::read)
                    .map_err(|e| format!("cannot read stored {hex}: {e}"))
            })?;
            layers.push(descriptor);
        }
        let config = Descriptor::of(EMPTY, b"{}");
        put(&config, &|| Ok(b"{}".to_vec()))?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MANIFEST.into()),
            artifact_type: Some(ARTIFACT_TYPE.into()),
            config,
            layers,
            subject: None,
            annotations: Default::default(),
        };
        let bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
        self.store.put_manifest(repo, name, MANIFEST, &bytes)
    }

    fn describe(&self) -> String {
        format!("remote cache `{}`", self.place)
    }
}
