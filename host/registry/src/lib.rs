//! Plugins shared through OCI registries and image-layout folders: publish a component as a
//! wasm OCI artifact, resolve references (tags, semver ranges, digests) to digests, keep
//! verified components in a content-addressed cache, lock them in `ferry.lock`, and sign and
//! verify them. No wasmtime here: callers read a component's metadata and load what this
//! crate hands them.

pub mod artifact;
pub mod credentials;
pub mod layout;
pub mod lock;
pub mod reference;
pub mod remote;
pub mod sign;
pub mod store;

pub use artifact::{Artifact, Metadata, Plugin};
pub use lock::{Locked, Lockfile};
pub use reference::{Location, Reference, Repository, Version};
pub use sign::{PublicKey, SecretKey, Signature};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use store::Store;

type Shared = Arc<dyn Store + Send + Sync>;

/// `$XDG_CONFIG_HOME/ferry` (else `~/.config/ferry`).
pub fn config_dir() -> PathBuf {
    xdg("XDG_CONFIG_HOME", ".config").join("ferry")
}

/// The local plugin store: `$XDG_DATA_HOME/ferry/plugins` (else `~/.local/share/…`).
pub fn default_store() -> PathBuf {
    xdg("XDG_DATA_HOME", ".local/share")
        .join("ferry")
        .join("plugins")
}

/// Verified manifests and components by digest: `$XDG_CACHE_HOME/ferry/plugins`.
pub fn default_cache() -> PathBuf {
    xdg("XDG_CACHE_HOME", ".cache")
        .join("ferry")
        .join("plugins")
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(fallback)))
        .unwrap_or_else(std::env::temp_dir)
}

/// A reference resolved to one manifest.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub reference: Reference,
    /// The tag the reference resolved through, if any.
    pub tag: Option<String>,
    pub plugin: Plugin,
}

impl Resolved {
    /// `repository:tag`, or `repository@digest` when no tag was involved.
    pub fn display(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}:{t}", self.reference.repository),
            None => format!("{}@{}", self.reference.repository, self.plugin.digest),
        }
    }
}

/// Access to plugin stores and the local cache of what was pulled from them.
pub struct Plugins {
    cache: PathBuf,
    stores: Mutex<HashMap<Location, Shared>>,
}

impl Plugins {
    pub fn new(cache: PathBuf) -> Plugins {
        Plugins {
            cache,
            stores: Mutex::new(HashMap::new()),
        }
    }

    /// The store a repository lives in (one client per registry, reused).
    pub fn store(&self, repository: &Repository) -> Shared {
        let key = match &repository.location {
            Location::Registry { host, .. } => Location::Registry {
                host: host.clone(),
                namespace: String::new(),
            },
            other => other.clone(),
        };
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        stores
            .entry(key.clone())
            .or_insert_with(|| match key {
                Location::Registry { host, .. } => Arc::new(remote::Remote::new(&host, None)),
                Location::Layout(dir) => Arc::new(layout::Layout::new(dir)),
            })
            .clone()
    }

    /// Uses these credentials for `host` instead of the Docker config's.
    pub fn with_credentials(&self, host: &str, credentials: credentials::Credentials) {
        let key = Location::Registry {
            host: host.into(),
            namespace: String::new(),
        };
        self.stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::new(remote::Remote::new(host, Some(credentials))));
    }

    /// Publishes `artifact` under each tag (or untagged with none). Returns the manifest's
    /// descriptor.
    pub fn push(
        &self,
        repository: &Repository,
        artifact: &Artifact,
        tags: &[String],
        publish: &Publish,
    ) -> Result<artifact::Descriptor, String> {
        let store = self.store(repository);
        let path = &repository.path;
        let descriptor = artifact::Descriptor::of(artifact::MANIFEST, &artifact.manifest);
        if !publish.force {
            for tag in tags {
                check_tag(
                    &*store,
                    repository,
                    tag,
                    &publish.version,
                    &descriptor.digest,
                )?;
            }
        }
        let manifest: artifact::Manifest =
            serde_json::from_slice(&artifact.manifest).expect("built by Artifact::new");
        store.put_blob(path, &manifest.config.digest, &artifact.config)?;
        store.put_blob(path, &manifest.layers[0].digest, &artifact.component)?;
        if tags.is_empty() {
            store.put_manifest(
                path,
                &descriptor.digest,
                artifact::MANIFEST,
                &artifact.manifest,
            )?;
        }
        for tag in tags {
            store.put_manifest(path, tag, artifact::MANIFEST, &artifact.manifest)?;
        }
        Ok(descriptor)
    }

    /// Tags of a repository that are versions, highest first.
    pub fn versions(
        &self,
        repository: &Repository,
    ) -> Result<Vec<(semver::Version, String)>, String> {
        let tags = self.store(repository).tags(&repository.path)?;
        let mut versions: Vec<_> = tags
            .into_iter()
            .filter_map(|t| Some((parse_version(&t)?, t)))
            .collect();
        versions.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(versions)
    }

    /// The manifest `reference` names now: a digest as is, a tag as the registry has it,
    /// else the highest version tag matching the semver range.
    pub fn resolve(&self, reference: &Reference) -> Result<Resolved, String> {
        let repository = &reference.repository;
        let (plugin, tag) = match &reference.version {
            Version::Digest { digest, tag } => (self.manifest(repository, digest)?, tag.clone()),
            Version::Tag(tag) => {
                let store = self.store(repository);
                let (fetched, tag) = match store.manifest(&repository.path, tag)? {
                    Some(fetched) => (fetched, tag.clone()),
                    None => {
                        let matched = self.match_range(repository, tag)?;
                        let fetched =
                            store.manifest(&repository.path, &matched)?.ok_or_else(|| {
                                format!("{repository}:{matched} disappeared while it was resolved")
                            })?;
                        (fetched, matched)
                    }
                };
                let plugin = Plugin::parse(&fetched.bytes, fetched.digest, &reference.to_string())?;
                self.cache_put(&plugin.digest, &fetched.bytes)?;
                (plugin, Some(tag))
            }
        };
        Ok(Resolved {
            reference: reference.clone(),
            tag,
            plugin,
        })
    }

    fn match_range(&self, repository: &Repository, text: &str) -> Result<String, String> {
        let requirement = semver::VersionReq::parse(text.trim_start_matches('v')).map_err(|_| {
            format!(
                "{repository} has no tag `{text}`, and `{text}` is not a version range\nhint: see the versions with `ferry plugin info {repository}:latest`, or use a range such as `^1.2`"
            )
        })?;
        let versions = self.versions(repository)?;
        if versions.is_empty() {
            return Err(format!(
                "{repository} has no version tags (or does not exist)\nhint: publish one with `ferry plugin push FILE.wasm {repository}:1.0.0`"
            ));
        }
        versions
            .iter()
            .find(|(v, _)| requirement.matches(v))
            .map(|(_, tag)| tag.clone())
            .ok_or_else(|| {
                let available: Vec<_> = versions.iter().take(8).map(|(_, t)| t.as_str()).collect();
                format!(
                    "no version of {repository} matches `{text}`; it has {}",
                    available.join(", ")
                )
            })
    }

    /// The manifest with `digest`, from the cache or else its store (checked and cached).
    pub fn manifest(&self, repository: &Repository, digest: &str) -> Result<Plugin, String> {
        let what = format!("{repository}@{digest}");
        if let Some(path) = self.cached(digest)
            && let Ok(bytes) = std::fs::read(path)
        {
            return Plugin::parse(&bytes, digest.to_string(), &what);
        }
        let fetched = self
            .store(repository)
            .manifest(&repository.path, digest)?
            .ok_or_else(|| format!("{repository} has no manifest {digest}"))?;
        if fetched.digest != digest {
            return Err(format!("{what}: the store sent a different manifest"));
        }
        let plugin = Plugin::parse(&fetched.bytes, fetched.digest, &what)?;
        self.cache_put(digest, &fetched.bytes)?;
        Ok(plugin)
    }

    /// The component of `plugin` as a local file: from the cache, or downloaded, checked
    /// against its digest and size, and only then cached.
    pub fn component(&self, repository: &Repository, plugin: &Plugin) -> Result<PathBuf, String> {
        let layer = plugin.component();
        if let Some(path) = self.cached(&layer.digest) {
            return Ok(path);
        }
        let bytes = store::verified_blob(&*self.store(repository), &repository.path, layer)?;
        self.cache_put(&layer.digest, &bytes)
    }

    /// The cached file for `digest`, if present.
    pub fn cached(&self, digest: &str) -> Option<PathBuf> {
        let path = self.cache_path(digest)?;
        path.is_file().then_some(path)
    }

    fn cache_path(&self, digest: &str) -> Option<PathBuf> {
        reference::check_digest(digest).ok()?;
        Some(self.cache.join("sha256").join(&digest["sha256:".len()..]))
    }

    /// Stores checked bytes in the cache under their digest.
    fn cache_put(&self, digest: &str, bytes: &[u8]) -> Result<PathBuf, String> {
        let path = self
            .cache_path(digest)
            .ok_or_else(|| format!("`{digest}` is not a digest"))?;
        if artifact::digest(bytes) != digest {
            return Err(format!("refusing to cache content that is not {digest}"));
        }
        if path.is_file() {
            return Ok(path);
        }
        let dir = path.parent().expect("cache paths have a parent");
        std::fs::create_dir_all(dir)
            .and_then(|()| layout::write_atomic(&path, bytes))
            .map_err(|e| format!("cannot write the plugin cache `{}`: {e}", dir.display()))?;
        Ok(path)
    }

    /// Signatures of `digest`: fetched from the store and kept beside the cache, so a
    /// locked, cached pipeline checks them again with no network.
    pub fn signatures(
        &self,
        repository: &Repository,
        digest: &str,
        refresh: bool,
    ) -> Result<Vec<Signature>, String> {
        let path = self.cache.join("signatures").join(format!(
            "{}.json",
            &digest["sha256:".len().min(digest.len())..]
        ));
        if !refresh
            && let Ok(bytes) = std::fs::read(&path)
            && let Ok(found) = serde_json::from_slice::<Vec<Signature>>(&bytes)
            && !found.is_empty()
        {
            return Ok(found);
        }
        let found = sign::signatures(&*self.store(repository), &repository.path, digest)?;
        if !found.is_empty() {
            let bytes = serde_json::to_vec(&found).expect("signatures serialize");
            let _ = std::fs::create_dir_all(path.parent().expect("has a parent"))
                .and_then(|()| layout::write_atomic(&path, &bytes));
        }
        Ok(found)
    }
}

/// How a push treats the tags it writes.
pub struct Publish {
    /// The component's own version (its `describe()`).
    pub version: String,
    /// Write the tags whatever they name now or say (`ferry plugin push --force`).
    pub force: bool,
}

/// Refuses a tag that would make a published version lie: one that names a version (or a
/// prefix of one: `1`, `1.2`) the component is not, or a full version already published
/// as another component. Users pin by version and ranges resolve by tag, so either would
/// hand them other code than they reviewed. `latest` and other words move freely, as do
/// `1` and `1.2` between the versions they cover.
fn check_tag(
    store: &dyn Store,
    repository: &Repository,
    tag: &str,
    version: &str,
    digest: &str,
) -> Result<(), String> {
    let own = parse_version(version);
    let numeric = tag.strip_prefix('v').unwrap_or(tag);
    let is_version_like = !numeric.is_empty()
        && numeric
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    // A `wasi:cli` command says no version of its own: only what a tag names already holds.
    let claims = !version.is_empty();
    if let Some(tagged) = parse_version(tag) {
        if claims && own.as_ref() != Some(&tagged) {
            return Err(format!(
                "`{repository}:{tag}` names version {tagged}, but the component says it is {version}\nhint: push it as `{repository}:{version}` (the version its describe() gives), or pass --force to tag it anyway"
            ));
        }
        // `1.2.3` and `v1.2.3` are one version to a range: neither may name other code.
        let spellings = store
            .tags(&repository.path)?
            .into_iter()
            .filter(|t| parse_version(t).as_ref() == Some(&tagged));
        let mut published = None;
        for spelling in spellings {
            if let Some(existing) = store.manifest(&repository.path, &spelling)?
                && existing.digest != digest
            {
                published = Some(existing);
                break;
            }
        }
        if let Some(existing) = published {
            return Err(format!(
                "`{repository}:{tag}` is already published as another component ({}): a published version never changes, since lock files and ranges trust it\nhint: publish the change as a new version, or pass --force to move the tag",
                &existing.digest[..existing.digest.len().min(19)]
            ));
        }
    } else if is_version_like && claims {
        // Written as the version writes its parts: `1.2` covers 1.2.5, `01` and `1.2.5.0`
        // cover nothing.
        let covers = own.as_ref().is_some_and(|own| {
            let parts = [own.major, own.minor, own.patch];
            let written: Vec<&str> = numeric.split('.').collect();
            written.len() <= parts.len()
                && written.iter().zip(parts).all(|(p, v)| *p == v.to_string())
        });
        if !covers {
            return Err(format!(
                "`{repository}:{tag}` does not cover version {version} of the component\nhint: tag it with a prefix of its version (`{}`), or pass --force",
                own.map_or_else(
                    || version.to_string(),
                    |v| format!("{}.{}", v.major, v.minor)
                )
            ));
        }
    }
    Ok(())
}

/// `1.2.3` or `v1.2.3`.
pub fn parse_version(tag: &str) -> Option<semver::Version> {
    semver::Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()
}

/// Reads a public key: inline text or a file (relative paths against `base`).
pub fn read_public_key(name: &str, value: &str, base: &Path) -> Result<PublicKey, String> {
    if value.trim_start().starts_with("ferry-ed25519 ") {
        return PublicKey::parse(name, value);
    }
    let path = base.join(value);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read key `{name}` from `{}`: {e}", path.display()))?;
    PublicKey::parse(name, &text)
}
