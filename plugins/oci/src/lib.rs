//! OCI images as ferry's built-in steps handle them: deterministic tar, image layouts (the
//! blob store every build writes into) and their archive form, unpacking an image into a
//! directory, and the distribution API for registries.

pub mod layout;
pub mod registry;
pub use ferry_tar as tar;

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

/// The manifest digest an index names for `tag` (or its only image) and `platform`.
pub fn pick(
    index: &[Value],
    tag: Option<&str>,
    platform: &Platform,
    what: &str,
    store: &Store,
) -> Result<String, String> {
    let named: Vec<&Value> = match tag {
        Some(tag) => index
            .iter()
            .filter(|d| {
                d["annotations"][layout::REF_NAME] == tag
                    || d["annotations"]["io.containerd.image.name"]
                        .as_str()
                        .is_some_and(|n| n == tag || n.ends_with(&format!(":{tag}")))
            })
            .collect(),
        None => index.iter().collect(),
    };
    let chosen = match named.as_slice() {
        [one] => *one,
        [] => {
            return Err(format!(
                "`{what}` has no image{}",
                tag.map(|t| format!(" tagged `{t}`")).unwrap_or_default()
            ));
        }
        many => many
            .iter()
            .find(|d| platform.matches(&d["platform"]))
            .copied()
            .ok_or_else(|| format!("`{what}` holds several images: name one with `:TAG`"))?,
    };
    let digest = chosen["digest"]
        .as_str()
        .ok_or("an index entry without a digest")?
        .to_string();
    if chosen["mediaType"] == layout::INDEX || chosen["mediaType"] == layout::DOCKER_LIST {
        let nested = store.json(&digest).map_err(|e| e.to_string())?;
        let manifests = nested["manifests"].as_array().cloned().unwrap_or_default();
        let inner = manifests
            .iter()
            .find(|m| platform.matches(&m["platform"]))
            .ok_or_else(|| {
                format!(
                    "`{what}` has no image for {}/{}",
                    platform.os, platform.architecture
                )
            })?;
        return Ok(inner["digest"].as_str().unwrap_or_default().to_string());
    }
    Ok(digest)
}

/// Writes the image's file system into `dest` (which must exist): layers in order,
/// whiteouts applied, hard links copied. Modes are not set: WASI has no file modes.
pub fn unpack(store: &Store, manifest: &str, dest: &str) -> Result<(), String> {
    let value = store.json(manifest).map_err(|e| e.to_string())?;
    for layer in value["layers"].as_array().into_iter().flatten() {
        let layer = Descriptor::from_json(layer).ok_or("a malformed layer descriptor")?;
        let mut reader = tar::Reader::new(open_layer(store, &layer).map_err(|e| e.to_string())?);
        while let Some(h) = reader
            .entry()
            .map_err(|e| format!("layer {}: {e}", layer.digest))?
        {
            if h.path.is_empty() {
                continue;
            }
            let target = format!("{dest}/{}", h.path);
            let (dir, name) = h.path.rsplit_once('/').unwrap_or(("", &h.path));
            let remove = |p: &str| {
                let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
            };
            if name == ".wh..wh..opq" {
                let parent = if dir.is_empty() {
                    dest.to_string()
                } else {
                    format!("{dest}/{dir}")
                };
                for entry in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                    remove(&entry.path().to_string_lossy());
                }
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                remove(&if dir.is_empty() {
                    format!("{dest}/{hidden}")
                } else {
                    format!("{dest}/{dir}/{hidden}")
                });
                continue;
            }
            let io = |e: std::io::Error| format!("`{}`: {e}", h.path);
            match &h.kind {
                tar::Kind::Dir => std::fs::create_dir_all(&target).map_err(io)?,
                tar::Kind::File => {
                    if let Some(parent) = std::path::Path::new(&target).parent() {
                        std::fs::create_dir_all(parent).map_err(io)?;
                    }
                    remove(&target);
                    let mut out = std::fs::File::create(&target).map_err(io)?;
                    std::io::copy(&mut reader.content(), &mut out).map_err(io)?;
                }
                tar::Kind::Hardlink(source) => {
                    remove(&target);
                    std::fs::copy(format!("{dest}/{source}"), &target).map_err(io)?;
                }
                tar::Kind::Symlink(link) => {
                    remove(&target);
                    #[allow(deprecated)]
                    std::fs::soft_link(link, &target).map_err(io)?;
                }
            }
        }
    }
    Ok(())
}
