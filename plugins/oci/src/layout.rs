//! OCI image layouts: the content-addressed blob store every build writes into, the
//! `index.json` that names its images, and the archive form of a layout. Every blob read
//! from elsewhere is checked against its digest before it is kept.

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};

pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A content descriptor.
#[derive(Debug, Clone, PartialEq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    pub fn to_json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }

    pub fn from_json(value: &Value) -> Option<Descriptor> {
        Some(Descriptor {
            media_type: value.get("mediaType")?.as_str()?.to_string(),
            digest: value.get("digest")?.as_str()?.to_string(),
            size: value.get("size")?.as_u64()?,
        })
    }
}

/// An OCI image layout directory used as a blob store.
pub struct Store {
    pub dir: String,
}

impl Store {
    /// Opens (creating if needed) the layout at `dir`.
    pub fn open(dir: &str) -> io::Result<Store> {
        fs::create_dir_all(format!("{dir}/blobs/sha256"))?;
        let store = Store {
            dir: dir.to_string(),
        };
        write_if_changed(
            &format!("{dir}/oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        Ok(store)
    }

    pub fn blob_path(&self, digest: &str) -> String {
        format!(
            "{}/blobs/sha256/{}",
            self.dir,
            digest.strip_prefix("sha256:").unwrap_or(digest)
        )
    }

    pub fn has(&self, digest: &str) -> bool {
        fs::metadata(self.blob_path(digest)).is_ok()
    }

    pub fn put(&self, bytes: &[u8]) -> io::Result<(String, u64)> {
        let mut writer = self.writer()?;
        writer.write_all(bytes)?;
        writer.finish()
    }

    /// A blob being written; its name is known when it is finished.
    pub fn writer(&self) -> io::Result<BlobWriter> {
        let temp = format!("{}/blobs/sha256/.partial-{}", self.dir, unique());
        Ok(BlobWriter {
            file: BufWriter::with_capacity(1 << 20, File::create(&temp)?),
            hasher: Sha256::new(),
            size: 0,
            temp,
            dir: self.dir.clone(),
        })
    }

    pub fn open_blob(&self, digest: &str) -> io::Result<BufReader<File>> {
        File::open(self.blob_path(digest))
            .map(|f| BufReader::with_capacity(1 << 20, f))
            .map_err(|e| io::Error::new(e.kind(), format!("blob `{digest}` is missing: {e}")))
    }

    pub fn json(&self, digest: &str) -> io::Result<Value> {
        let bytes = fs::read(self.blob_path(digest))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob `{digest}` is not JSON: {e}"),
            )
        })
    }

    /// Copies a blob from `input` after checking it against `expected`; a mismatch keeps
    /// nothing.
    pub fn import(&self, input: &mut dyn Read, expected: &str) -> io::Result<u64> {
        if self.has(expected) {
            return Ok(0);
        }
        let mut writer = self.writer()?;
        io::copy(input, &mut writer)?;
        let (digest, size) = writer.finish_expecting(Some(expected))?;
        debug_assert_eq!(digest, expected);
        Ok(size)
    }

    /// The manifest descriptors in `index.json`.
    pub fn index(&self) -> io::Result<Vec<Value>> {
        let text = fs::read(format!("{}/index.json", self.dir)).map_err(|e| {
            io::Error::new(e.kind(), format!("`{}` has no index.json: {e}", self.dir))
        })?;
        let index: Value = serde_json::from_slice(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("`{}/index.json`: {e}", self.dir),
            )
        })?;
        Ok(index["manifests"].as_array().cloned().unwrap_or_default())
    }

    /// Writes `index.json` naming `manifests`, then removes blobs nothing names any more.
    pub fn set_index(&self, manifests: Vec<Value>) -> io::Result<()> {
        let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests});
        write_atomic(&format!("{}/index.json", self.dir), &to_bytes(&index))?;
        self.prune()
    }

    fn prune(&self) -> io::Result<()> {
        let mut live = std::collections::BTreeSet::new();
        // Only indexes and manifests name other blobs: layers are never read here.
        let mut pending: Vec<Value> = self.index()?;
        while let Some(descriptor) = pending.pop() {
            let Some(digest) = descriptor["digest"].as_str() else {
                continue;
            };
            if !live.insert(digest.to_string()) {
                continue;
            }
            let media_type = descriptor["mediaType"].as_str().unwrap_or_default();
            let names_others =
                [INDEX, MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].contains(&media_type);
            let Some(value) = names_others.then(|| self.json(digest).ok()).flatten() else {
                continue;
            };
            for key in ["manifests", "layers"] {
                pending.extend(value[key].as_array().into_iter().flatten().cloned());
            }
            pending.push(value["config"].clone());
        }
        for entry in fs::read_dir(format!("{}/blobs/sha256", self.dir))? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if !live.contains(&format!("sha256:{name}")) {
                fs::remove_file(format!("{}/blobs/sha256/{name}", self.dir))?;
            }
        }
        Ok(())
    }

    /// A fresh name in the blob directory for a blob written elsewhere (by the host).
    pub fn temp_path(&self) -> String {
        format!("{}/blobs/sha256/.partial-{:x}", self.dir, unique())
    }

    /// Takes the file at `temp` as the blob `digest` (it is already there: `temp` goes).
    pub fn adopt(&self, temp: &str, digest: &str) -> io::Result<()> {
        let path = self.blob_path(digest);
        if fs::metadata(&path).is_ok() {
            fs::remove_file(temp)
        } else {
            fs::rename(temp, path)
        }
    }

    /// Writes the layout as a tar archive (`oci-archive`) through the host: entries sorted,
    /// owners and times fixed, so equal layouts give equal archives.
    pub fn write_archive(&self, path: &str, mtime: u64) -> io::Result<()> {
        use ferry_sdk::archive::{Content, Entry};
        let entry = |name: &str, content: Content| Entry {
            name: name.to_string(),
            mode: Some(if matches!(content, Content::Directory) {
                0o755
            } else {
                0o644
            }),
            content,
            uid: 0,
            gid: 0,
        };
        let mut blobs: Vec<String> = fs::read_dir(format!("{}/blobs/sha256", self.dir))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<_>>()?;
        blobs.retain(|b| !b.starts_with('.'));
        blobs.sort();
        let mut entries = vec![
            entry("blobs", Content::Directory),
            entry("blobs/sha256", Content::Directory),
        ];
        for name in blobs {
            entries.push(entry(
                &format!("blobs/sha256/{name}"),
                Content::File(format!("{}/blobs/sha256/{name}", self.dir)),
            ));
        }
        for name in ["index.json", "oci-layout"] {
            entries.push(entry(name, Content::File(format!("{}/{name}", self.dir))));
        }
        ferry_sdk::archive::write_tar(path, &entries, mtime, false)
            .map(drop)
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

/// A blob being written to a temporary file while it is hashed.
pub struct BlobWriter {
    file: BufWriter<File>,
    hasher: Sha256,
    size: u64,
    temp: String,
    dir: String,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    pub fn finish(self) -> io::Result<(String, u64)> {
        self.finish_expecting(None)
    }

    fn finish_expecting(mut self, expected: Option<&str>) -> io::Result<(String, u64)> {
        self.file.flush()?;
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize_reset()));
        if let Some(expected) = expected.filter(|e| *e != digest) {
            let _ = fs::remove_file(&self.temp);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob `{expected}` has the wrong content: its bytes hash to `{digest}`"),
            ));
        }
        let path = format!("{}/blobs/sha256/{}", self.dir, &digest[7..]);
        if fs::metadata(&path).is_ok() {
            fs::remove_file(&self.temp)?;
        } else {
            fs::rename(&self.temp, &path)?;
        }
        Ok((digest, self.size))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Unfinished (an error on the way): leave nothing behind.
        let _ = fs::remove_file(&self.temp);
    }
}

/// Canonical JSON bytes: keys sorted, no whitespace.
pub fn to_bytes(value: &Value) -> Vec<u8> {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&map[k])))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sorted(value)).unwrap_or_default()
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn write_if_changed(path: &str, bytes: &[u8]) -> io::Result<()> {
    if fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    write_atomic(path, bytes)
}

pub fn write_atomic(path: &str, bytes: &[u8]) -> io::Result<()> {
    let temp = format!("{path}.partial");
    fs::write(&temp, bytes)?;
    fs::rename(&temp, path)
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    nanos ^ NEXT.fetch_add(1, Ordering::Relaxed).rotate_left(32)
}
