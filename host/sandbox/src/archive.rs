//! Host side of `ferry:step/archive`: deterministic tar files written natively, reading and
//! writing only where the step itself could.

use crate::bindings::archive::{self, Content, Entry, Kind as Found, Written};
use crate::runner::GUEST_WORKSPACE;
use crate::state::StepState;
use ferry_model::Access;
use ferry_tar::{Header, Kind, Writer, default_mode};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Component, Path, PathBuf};

impl archive::Host for StepState {
    async fn walk(
        &mut self,
        path: String,
    ) -> wasmtime::Result<Result<Vec<(String, Found)>, String>> {
        let root = match self.host_path(&path, Access::Read) {
            Ok(root) => root,
            Err(e) => return Ok(Err(e)),
        };
        let found = tokio::task::spawn_blocking(move || walk(&root))
            .await
            .map_err(|e| format!("the walk stopped: {e}"))
            .and_then(|r| r.map_err(|e| format!("cannot walk `{path}`: {e}")));
        Ok(found)
    }

    async fn write_tar(
        &mut self,
        path: String,
        entries: Vec<Entry>,
        mtime: u64,
        gzip: bool,
    ) -> wasmtime::Result<Result<Written, String>> {
        let target = match self.host_path(&path, Access::Write) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let mut planned = Vec::with_capacity(entries.len());
        for entry in entries {
            let source = match &entry.content {
                Content::File(p) => match self.host_path(p, Access::Read) {
                    Ok(source) => Some(source),
                    Err(e) => return Ok(Err(format!("entry `{}`: {e}", entry.name))),
                },
                _ => None,
            };
            planned.push((entry, source));
        }
        let written = tokio::task::spawn_blocking(move || write(&target, planned, mtime, gzip))
            .await
            .map_err(|e| format!("the archive writer stopped: {e}"))
            .and_then(|r| r.map_err(|e| format!("cannot write `{path}`: {e}")));
        Ok(written)
    }
}

impl StepState {
    /// The host path of a path the step names: relative to the workspace (or under
    /// `/workspace`), or absolute under a granted path; refused when the step's grant does
    /// not cover `access`, or when it leads elsewhere through `..` or a symbolic link.
    fn host_path(&self, path: &str, access: Access) -> Result<PathBuf, String> {
        let given = Path::new(path);
        if given
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(format!("`{path}` contains `..`"));
        }
        let (root, rest, granted) = match given.strip_prefix(GUEST_WORKSPACE) {
            Ok(rest) => (
                self.workspace.clone(),
                rest.to_path_buf(),
                self.grant.workspace,
            ),
            Err(_) if given.is_absolute() => {
                let Some((root, granted)) = self
                    .grant
                    .paths
                    .iter()
                    .filter(|(p, _)| given.starts_with(p))
                    .max_by_key(|(p, _)| p.as_os_str().len())
                else {
                    return Err(format!("`{path}` is not under a path granted to this step"));
                };
                let rest = given.strip_prefix(root).unwrap_or(given).to_path_buf();
                (root.clone(), rest, Some(*granted))
            }
            Err(_) => (
                self.workspace.clone(),
                given.to_path_buf(),
                self.grant.workspace,
            ),
        };
        match granted {
            Some(a) if a >= access => {}
            _ => {
                return Err(format!(
                    "`{path}` is not {} to this step",
                    if access == Access::Write {
                        "granted for writing"
                    } else {
                        "granted"
                    }
                ));
            }
        }
        let root = root
            .canonicalize()
            .map_err(|e| format!("`{}` is not available: {e}", root.display()))?;
        let full = root.join(&rest);
        // What is written may not exist yet: check where its parent leads.
        let (checked, name) = match access {
            Access::Write => (
                full.parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| root.clone()),
                full.file_name().map(|n| n.to_os_string()),
            ),
            Access::Read => (full.clone(), None),
        };
        let resolved = checked
            .canonicalize()
            .map_err(|e| format!("`{path}`: {e}"))?;
        if !resolved.starts_with(&root) {
            return Err(format!(
                "`{path}` leads outside what was granted through a symbolic link"
            ));
        }
        Ok(match name {
            Some(name) => resolved.join(name),
            None => resolved,
        })
    }
}

/// Every entry under `root`, relative to it, kinds from the directory listing.
fn walk(root: &Path) -> Result<Vec<(String, Found)>, String> {
    let mut found = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(root.join(&dir)).map_err(|e| format!("`{dir}`: {e}"))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("`{dir}`: {e}"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            // Links are reported as links, never followed.
            let kind = entry
                .file_type()
                .map_err(|e| format!("`{relative}`: {e}"))?;
            let kind = if kind.is_symlink() {
                Found::Symlink
            } else if kind.is_dir() {
                pending.push(relative.clone());
                Found::Directory
            } else if kind.is_file() {
                Found::File
            } else {
                Found::Other
            };
            found.push((relative, kind));
        }
    }
    Ok(found)
}

/// Counts and hashes the bytes that pass through, on a thread of its own: SHA-256 of a
/// large layer costs as much as reading and writing it, so the two overlap.
struct Hashing<W: Write> {
    inner: W,
    pending: Vec<u8>,
    chunks: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    hasher: Option<std::thread::JoinHandle<Sha256>>,
    size: u64,
}

const CHUNK: usize = 1 << 20;

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
        let hasher = std::thread::spawn(move || {
            let mut hasher = Sha256::new();
            for chunk in rx {
                hasher.update(&chunk);
            }
            hasher
        });
        Hashing {
            inner,
            pending: Vec::with_capacity(CHUNK),
            chunks: Some(tx),
            hasher: Some(hasher),
            size: 0,
        }
    }

    fn send(&mut self) {
        let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(CHUNK));
        if let Some(tx) = &self.chunks {
            // The hasher only stops when the sender is dropped.
            let _ = tx.send(chunk);
        }
    }

    fn finish(mut self) -> io::Result<(W, String, u64)> {
        self.send();
        self.chunks = None;
        let hasher = self
            .hasher
            .take()
            .map(|h| h.join())
            .ok_or_else(|| io::Error::other("the hasher is gone"))?
            .map_err(|_| io::Error::other("the hasher failed"))?;
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        let (inner, size) = (self.inner, self.size);
        Ok((inner, digest, size))
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() >= CHUNK {
            self.send();
        }
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write(
    target: &Path,
    entries: Vec<(Entry, Option<PathBuf>)>,
    mtime: u64,
    gzip: bool,
) -> io::Result<Written> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let temp = tempfile::NamedTempFile::new_in(dir)?;
    let file = BufWriter::with_capacity(1 << 20, temp.as_file().try_clone()?);
    let (file, digest, size, tar_digest) = if gzip {
        let gz = flate2::GzBuilder::new().write(Hashing::new(file), flate2::Compression::fast());
        let (gz, tar_digest, _) = entries_into(Hashing::new(gz), entries, mtime)?.finish()?;
        let (file, digest, size) = gz.finish()?.finish()?;
        (file, digest, size, tar_digest)
    } else {
        let (file, digest, size) = entries_into(Hashing::new(file), entries, mtime)?.finish()?;
        (file, digest.clone(), size, digest)
    };
    // Renamed into place whole, but not synced: an archive is an output that can be made
    // again, and waiting for the disk would cost more than the rest of the work.
    file.into_inner().map_err(|e| e.into_error())?;
    temp.persist(target).map_err(|e| e.error)?;
    Ok(Written {
        digest,
        size,
        tar_digest,
    })
}

fn entries_into<W: Write>(
    out: W,
    entries: Vec<(Entry, Option<PathBuf>)>,
    mtime: u64,
) -> io::Result<W> {
    let mut tar = Writer::new(out);
    for (entry, source) in entries {
        let name = entry.name.trim_start_matches('/').to_string();
        if Path::new(&name)
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(io::Error::other(format!("entry `{name}` contains `..`")));
        }
        let mut header = Header {
            path: name.clone(),
            kind: Kind::File,
            mode: entry.mode.unwrap_or(0o644),
            uid: entry.uid,
            gid: entry.gid,
            size: 0,
            mtime,
        };
        let failed = |e: io::Error| io::Error::new(e.kind(), format!("entry `{name}`: {e}"));
        match entry.content {
            Content::File(_) => {
                let path = source.unwrap_or_default();
                let file = File::open(&path).map_err(failed)?;
                header.size = file.metadata().map_err(failed)?.len();
                let mut reader = BufReader::with_capacity(1 << 20, file);
                if entry.mode.is_none() {
                    header.mode = default_mode(reader.fill_buf().map_err(failed)?);
                }
                tar.append(&header, &mut reader).map_err(failed)?;
            }
            Content::Bytes(bytes) => {
                header.size = bytes.len() as u64;
                if entry.mode.is_none() {
                    header.mode = default_mode(&bytes);
                }
                tar.append(&header, &mut bytes.as_slice()).map_err(failed)?;
            }
            Content::Directory => {
                header.kind = Kind::Dir;
                header.mode = entry.mode.unwrap_or(0o755);
                tar.append(&header, &mut io::empty()).map_err(failed)?;
            }
            Content::Symlink(to) => {
                header.kind = Kind::Symlink(to);
                header.mode = entry.mode.unwrap_or(0o777);
                tar.append(&header, &mut io::empty()).map_err(failed)?;
            }
            Content::Hardlink(to) => {
                header.kind = Kind::Hardlink(to);
                tar.append(&header, &mut io::empty()).map_err(failed)?;
            }
        }
    }
    tar.finish()
}
