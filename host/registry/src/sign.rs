//! Plugin signatures: ed25519 over a small JSON payload naming the plugin's manifest digest,
//! stored as an OCI referrer of the plugin (a manifest whose `subject` is the plugin), so the
//! signature travels with the plugin through any registry or layout.

use crate::artifact::{self, Descriptor, EMPTY, MANIFEST, Manifest};
use crate::store::{self, Store};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, Verifier as _};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const SIGNATURE_TYPE: &str = "application/vnd.dev.ferry.signature.v1+json";
const SIGNATURE_ANNOTATION: &str = "dev.ferry.signature";
const KEY_ANNOTATION: &str = "dev.ferry.signature.key";
const PUBLIC_TAG: &str = "ferry-ed25519";
const SECRET_TAG: &str = "ferry-ed25519-secret-key";

/// A public key someone trusts, by the name the pipeline or user config gives it.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub name: String,
    key: ed25519_dalek::VerifyingKey,
}

impl PublicKey {
    /// Parses `ferry-ed25519 BASE64 [comment]`, the form `ferry plugin keygen` writes.
    pub fn parse(name: &str, text: &str) -> Result<PublicKey, String> {
        let mut parts = text.split_whitespace();
        let bad = || {
            format!(
                "key `{name}` is not a ferry public key: expected `{PUBLIC_TAG} BASE64` as `ferry plugin keygen` writes it"
            )
        };
        if parts.next() != Some(PUBLIC_TAG) {
            return Err(bad());
        }
        let bytes: [u8; 32] = parts
            .next()
            .and_then(|b| STANDARD.decode(b).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
        Ok(PublicKey {
            name: name.to_string(),
            key,
        })
    }

    /// Short, stable identity: the first 16 hex digits of the key's sha256.
    pub fn id(&self) -> String {
        key_id(&self.key)
    }

    pub fn to_text(&self) -> String {
        format!(
            "{PUBLIC_TAG} {} {}\n",
            STANDARD.encode(self.key.as_bytes()),
            self.name
        )
    }
}

fn key_id(key: &ed25519_dalek::VerifyingKey) -> String {
    artifact::digest(key.as_bytes())["sha256:".len()..][..16].to_string()
}

/// A private key, read from the file `ferry plugin keygen` wrote.
pub struct SecretKey {
    key: ed25519_dalek::SigningKey,
}

impl SecretKey {
    pub fn generate() -> Result<SecretKey, String> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| format!("no randomness for a key: {e}"))?;
        Ok(SecretKey {
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    pub fn read(path: &Path) -> Result<SecretKey, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read key `{}`: {e}", path.display()))?;
        let bad = || {
            format!(
                "`{}` is not a ferry secret key (made by `ferry plugin keygen`)",
                path.display()
            )
        };
        let rest = text.trim().strip_prefix(SECRET_TAG).ok_or_else(bad)?;
        let seed: [u8; 32] = STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        Ok(SecretKey {
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        })
    }

    pub fn to_text(&self) -> String {
        format!("{SECRET_TAG} {}\n", STANDARD.encode(self.key.to_bytes()))
    }

    pub fn public(&self, name: &str) -> PublicKey {
        PublicKey {
            name: name.to_string(),
            key: self.key.verifying_key(),
        }
    }
}

/// What is signed: the plugin's manifest digest.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    subject: String,
    repository: String,
    key: String,
}

/// Signs the manifest `subject` of `repository` and stores the signature as its referrer.
/// Returns the key id.
pub fn sign(
    store: &dyn Store,
    repository: &str,
    display: &str,
    subject: &Descriptor,
    key: &SecretKey,
) -> Result<String, String> {
    let id = key_id(&key.key.verifying_key());
    let payload = serde_json::to_vec(&Payload {
        kind: SIGNATURE_TYPE.into(),
        subject: subject.digest.clone(),
        repository: display.into(),
        key: id.clone(),
    })
    .expect("payload serializes");
    let signature = key.key.sign(&payload);
    let layer = Descriptor::of(SIGNATURE_TYPE, &payload);
    let config = Descriptor::of(EMPTY, b"{}");
    store.put_blob(repository, &config.digest, b"{}")?;
    store.put_blob(repository, &layer.digest, &payload)?;
    let annotations = BTreeMap::from([
        (
            SIGNATURE_ANNOTATION.to_string(),
            STANDARD.encode(signature.to_bytes()),
        ),
        (KEY_ANNOTATION.to_string(), id.clone()),
    ]);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST.into()),
        artifact_type: Some(SIGNATURE_TYPE.into()),
        config,
        layers: vec![layer],
        subject: Some(Descriptor {
            annotations: BTreeMap::new(),
            artifact_type: None,
            ..subject.clone()
        }),
        annotations: annotations.clone(),
    };
    let bytes = serde_json::to_vec(&manifest).expect("manifest serializes");
    let mut descriptor = Descriptor::of(MANIFEST, &bytes);
    store.put_manifest(repository, &descriptor.digest, MANIFEST, &bytes)?;
    descriptor.artifact_type = Some(SIGNATURE_TYPE.into());
    descriptor.annotations = annotations;
    store::add_referrer(store, repository, &subject.digest, descriptor)?;
    Ok(id)
}

/// A signature found for a plugin, as raw material that can be checked offline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Signature {
    pub key: String,
    /// base64 of the payload bytes.
    pub payload: String,
    /// base64 of the ed25519 signature.
    pub signature: String,
}

/// Every signature stored as a referrer of `digest` (unchecked).
pub fn signatures(
    store: &dyn Store,
    repository: &str,
    digest: &str,
) -> Result<Vec<Signature>, String> {
    let mut found = Vec::new();
    for referrer in store::referrers(store, repository, digest)? {
        if referrer.artifact_type.as_deref() != Some(SIGNATURE_TYPE) {
            continue;
        }
        let Some(fetched) = store.manifest(repository, &referrer.digest)? else {
            continue;
        };
        let manifest: Manifest = serde_json::from_slice(&fetched.bytes)
            .map_err(|e| format!("signature {} is unreadable: {e}", referrer.digest))?;
        let Some(layer) = manifest
            .layers
            .iter()
            .find(|l| l.media_type == SIGNATURE_TYPE)
        else {
            continue;
        };
        let payload = store::verified_blob(store, repository, layer)?;
        let text = |k: &str| manifest.annotations.get(k).cloned().unwrap_or_default();
        found.push(Signature {
            key: text(KEY_ANNOTATION),
            payload: STANDARD.encode(payload),
            signature: text(SIGNATURE_ANNOTATION),
        });
    }
    Ok(found)
}

/// Whether one of `signatures` is a valid signature of `digest` by one of `keys`; `Ok` names
/// the key.
pub fn verify(
    digest: &str,
    signatures: &[Signature],
    keys: &[PublicKey],
) -> Result<String, String> {
    let mut problems = Vec::new();
    for sig in signatures {
        let Some(key) = keys.iter().find(|k| k.id() == sig.key) else {
            problems.push(format!("signed by untrusted key {}", sig.key));
            continue;
        };
        let checked = (|| {
            let payload = STANDARD.decode(&sig.payload).ok()?;
            let bytes: [u8; 64] = STANDARD.decode(&sig.signature).ok()?.try_into().ok()?;
            key.key
                .verify(&payload, &ed25519_dalek::Signature::from_bytes(&bytes))
                .ok()?;
            let payload: Payload = serde_json::from_slice(&payload).ok()?;
            (payload.subject == digest).then_some(())
        })();
        match checked {
            Some(()) => return Ok(key.name.clone()),
            None => problems.push(format!(
                "a signature claiming key `{}` does not verify",
                key.name
            )),
        }
    }
    let names: Vec<_> = keys.iter().map(|k| format!("`{}`", k.name)).collect();
    Err(if problems.is_empty() {
        format!(
            "it is not signed; it must be signed by {}",
            names.join(" or ")
        )
    } else {
        format!(
            "no valid signature by {} ({})",
            names.join(" or "),
            problems.join("; ")
        )
    })
}

/// Where `ferry plugin keygen` keeps keys: `$XDG_CONFIG_HOME/ferry/keys`.
pub fn keys_dir() -> PathBuf {
    crate::config_dir().join("keys")
}
