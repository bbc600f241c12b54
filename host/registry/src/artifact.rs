//! The wasm OCI artifact (CNCF TAG Runtime "wasm-oci" layout): an image manifest whose config
//! has media type `application/vnd.wasm.config.v0+json` and whose only layer is the
//! `application/wasm` component, plus annotations that carry the step's `describe()`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;

pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER: &str = "application/wasm";
pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// `describe()` of the step as JSON: name, version, description, inputs, outputs, needs.
pub const DESCRIBE_ANNOTATION: &str = "dev.ferry.step.describe";
pub const TITLE: &str = "org.opencontainers.image.title";
pub const DESCRIPTION: &str = "org.opencontainers.image.description";
pub const VERSION: &str = "org.opencontainers.image.version";
pub const SOURCE: &str = "org.opencontainers.image.source";
pub const LICENSES: &str = "org.opencontainers.image.licenses";
pub const CREATED: &str = "org.opencontainers.image.created";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// `sha256:` and the hex digest of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: digest(bytes),
            size: bytes.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// An image manifest (also the form signatures take, with `subject`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image index; here the referrers list kept under the `sha256-<hex>` fallback tag.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// The wasm config blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(rename = "layerDigests")]
    pub layer_digests: Vec<String>,
    pub component: ComponentInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentInfo {
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What a push needs to know about the component, read from it by the caller.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// The world it implements, e.g. `ferry:step/step@0.1.0` or `wasi:cli/command@0.2.6`.
    pub world: String,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// `describe()` as JSON; `description` and `version` feed the OCI annotations.
    pub describe: Value,
    /// Extra annotations (`source`, `licenses`, anything given with `--annotation`).
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339 creation time; left out by default so the same component always gives the
    /// same digest.
    pub created: Option<String>,
}

/// A manifest ready to push, with the blobs it names.
pub struct Artifact {
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub component: Vec<u8>,
}

impl Artifact {
    pub fn new(component: Vec<u8>, meta: &Metadata) -> Artifact {
        let layer = Descriptor::of(WASM_LAYER, &component);
        let config = Config {
            created: meta.created.clone(),
            architecture: "wasm".into(),
            os: "wasip2".into(),
            layer_digests: vec![layer.digest.clone()],
            component: ComponentInfo {
                exports: meta.exports.clone(),
                imports: meta.imports.clone(),
                target: Some(meta.world.clone()),
            },
        };
        let config = serde_json::to_vec(&config).expect("config serializes");
        let mut annotations = BTreeMap::new();
        let text = |key: &str| meta.describe.get(key).and_then(Value::as_str);
        if let Some(name) = text("name").filter(|s| !s.is_empty()) {
            annotations.insert(TITLE.into(), name.into());
        }
        if let Some(d) = text("description").filter(|s| !s.is_empty()) {
            annotations.insert(DESCRIPTION.into(), d.into());
        }
        if let Some(v) = text("version").filter(|s| !s.is_empty()) {
            annotations.insert(VERSION.into(), v.into());
        }
        if let Some(created) = &meta.created {
            annotations.insert(CREATED.into(), created.clone());
        }
        annotations.insert(DESCRIBE_ANNOTATION.into(), meta.describe.to_string());
        annotations.extend(meta.annotations.clone());
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MANIFEST.into()),
            artifact_type: None,
            config: Descriptor::of(WASM_CONFIG, &config),
            layers: vec![layer],
            subject: None,
            annotations,
        };
        Artifact {
            manifest: serde_json::to_vec(&manifest).expect("manifest serializes"),
            config,
            component,
        }
    }
}

/// A plugin manifest as pulled: checked to be a wasm artifact with one component layer.
#[derive(Debug, Clone)]
pub struct Plugin {
    pub manifest: Manifest,
    /// Digest of the manifest bytes.
    pub digest: String,
}

impl Plugin {
    pub fn parse(bytes: &[u8], digest: String, what: &str) -> Result<Plugin, String> {
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| format!("{what}: the manifest is not an OCI image manifest: {e}"))?;
        if manifest.config.media_type != WASM_CONFIG {
            return Err(format!(
                "{what} is not a wasm plugin: its config is `{}`, not `{WASM_CONFIG}`\nhint: publish steps with `ferry plugin push FILE.wasm REF`",
                manifest.config.media_type
            ));
        }
        let wasm: Vec<_> = manifest
            .layers
            .iter()
            .filter(|l| l.media_type == WASM_LAYER)
            .collect();
        if wasm.len() != 1 {
            return Err(format!(
                "{what}: a wasm plugin has exactly one `{WASM_LAYER}` layer, this one has {}",
                wasm.len()
            ));
        }
        Ok(Plugin { manifest, digest })
    }

    pub fn component(&self) -> &Descriptor {
        self.manifest
            .layers
            .iter()
            .find(|l| l.media_type == WASM_LAYER)
            .expect("checked in parse")
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.manifest.annotations.get(key).map(String::as_str)
    }

    /// `describe()` as published, if the publisher was ferry.
    pub fn describe(&self) -> Option<Value> {
        serde_json::from_str(self.annotation(DESCRIBE_ANNOTATION)?).ok()
    }
}
