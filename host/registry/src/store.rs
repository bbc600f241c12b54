//! Where manifests and blobs are read and written: a registry over HTTP, or an OCI
//! image-layout directory. Both answer the same questions, so push, pull, tags and
//! signatures are written once.

use crate::artifact::{self, Descriptor, INDEX, Index};

/// A manifest as fetched.
pub struct Fetched {
    pub bytes: Vec<u8>,
    /// The digest of `bytes`, checked against what was asked for when that was a digest.
    pub digest: String,
    pub media_type: String,
}

pub trait Store {
    /// The manifest a tag or digest names, or `None` if there is none.
    fn manifest(&self, repository: &str, reference: &str) -> Result<Option<Fetched>, String>;
    /// A blob's bytes, at most `limit` of them. Callers check the digest.
    fn blob(&self, repository: &str, digest: &str, limit: u64) -> Result<Vec<u8>, String>;
    fn has_blob(&self, repository: &str, digest: &str) -> Result<bool, String>;
    fn put_blob(&self, repository: &str, digest: &str, bytes: &[u8]) -> Result<(), String>;
    /// Stores a manifest under a tag, or untagged when `reference` is its digest.
    fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), String>;
    fn tags(&self, repository: &str) -> Result<Vec<String>, String>;
    /// Repositories whose path starts with `prefix`.
    fn repositories(&self, prefix: &str) -> Result<Vec<String>, String>;
    /// The store's own referrers list, or `None` when it has no referrers API (then the
    /// `sha256-<hex>` tag holds the list).
    fn native_referrers(
        &self,
        _repository: &str,
        _digest: &str,
    ) -> Result<Option<Vec<Descriptor>>, String> {
        Ok(None)
    }
}

/// Fetches a blob and checks its size and digest; nothing unchecked leaves this function.
pub fn verified_blob(
    store: &dyn Store,
    repository: &str,
    descriptor: &Descriptor,
) -> Result<Vec<u8>, String> {
    let bytes = store.blob(repository, &descriptor.digest, descriptor.size + 1)?;
    if bytes.len() as u64 != descriptor.size {
        return Err(format!(
            "blob {} of {repository} is {} bytes, its manifest says {}: refusing a truncated or altered blob",
            descriptor.digest,
            bytes.len(),
            descriptor.size
        ));
    }
    let actual = artifact::digest(&bytes);
    if actual != descriptor.digest {
        return Err(format!(
            "blob {} of {repository} has digest {actual}: refusing content that does not match its digest",
            descriptor.digest
        ));
    }
    Ok(bytes)
}

/// The OCI 1.1 fallback tag that lists the referrers of `digest`.
pub fn referrers_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// Manifests that name `digest` as their subject.
pub fn referrers(
    store: &dyn Store,
    repository: &str,
    digest: &str,
) -> Result<Vec<Descriptor>, String> {
    if let Some(list) = store.native_referrers(repository, digest)? {
        return Ok(list);
    }
    Ok(match store.manifest(repository, &referrers_tag(digest))? {
        Some(fetched) => {
            serde_json::from_slice::<Index>(&fetched.bytes)
                .map_err(|e| format!("the referrers index of {digest} is unreadable: {e}"))?
                .manifests
        }
        None => Vec::new(),
    })
}

/// Adds `referrer` to the fallback referrers list of `digest` (a registry with the
/// referrers API indexes it by itself, so this is skipped there).
pub fn add_referrer(
    store: &dyn Store,
    repository: &str,
    digest: &str,
    referrer: Descriptor,
) -> Result<(), String> {
    if store.native_referrers(repository, digest)?.is_some() {
        return Ok(());
    }
    let mut list = referrers(store, repository, digest)?;
    if list.iter().any(|d| d.digest == referrer.digest) {
        return Ok(());
    }
    list.push(referrer);
    let index = Index {
        schema_version: 2,
        media_type: Some(INDEX.into()),
        manifests: list,
    };
    let bytes = serde_json::to_vec(&index).expect("index serializes");
    store.put_manifest(repository, &referrers_tag(digest), INDEX, &bytes)
}
