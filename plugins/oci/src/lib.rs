//! OCI images as ferry's built-in steps handle them: deterministic tar, image layouts (the
//! blob store every build writes into) and their archive form, unpacking an image into a
//! directory, and the distribution API for registries.

pub mod layout;
pub mod registry;
pub mod tar;

pub use layout::{Descriptor, Store};
use serde_json::Value;
use std::io::{self, BufReader, Read};

/// `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(text: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: parts.get(2).map(|v| v.to_string()),
            }),
            _ => Err(format!(
                "platform `{text}` is not `os/architecture[/variant]`, e.g. `linux/amd64`"
            )),
        }
    }

    /// Whether an index entry's `platform` object is this one.
    pub fn matches(&self, value: &Value) -> bool {
        value["os"] == self.os
            && value["architecture"] == self.architecture
            && (self.variant.is_none() || value["variant"].as_str() == self.variant.as_deref())
    }
}

/// A layer's uncompressed tar stream.
pub fn open_layer(store: &Store, layer: &Descriptor) -> io::Result<Box<dyn Read>> {
    let blob = store.open_blob(&layer.digest)?;
    if layer.media_type.ends_with("gzip") {
        Ok(Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(blob),
        )))
    } else if layer.media_type.ends_with("zstd") {
        Err(io::Error::other(format!(
            "layer `{}` is zstd-compressed, which is not supported",
            layer.digest
        )))
    } else {
        Ok(Box::new(blob))
    }
}
