//! Trees of workspace files kept by content: what artifacts and caches store.
//!
//! A [`Tree`] lists directories, files and links with their modes; file contents live once
//! each in a [`Blobs`] store under their sha256, so the same file kept by a hundred runs or
//! cache entries takes its space once. Every write lands in a temporary file first and is
//! renamed into place: a killed process leaves no half-written blob or tree behind.

use crate::workspace::{
    Clock, IDENT_BYTES, Ident, Stamp, View, ViewEntry, create_private_dir, in_parallel,
    read_records, write_records,
};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs::Metadata;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// Paths and globs relative to a root, as written under `paths:`, `inputs:` or an
/// artifact: `*` stays within a directory, `**` crosses them, a pattern that names a
/// directory brings everything below it, and `!` excludes.
pub struct Patterns {
    include: Matcher,
    exclude: Matcher,
    /// Where a walk has to start: the part of each pattern before its first wildcard.
    roots: Vec<PathBuf>,
}

/// Plain paths are compared as paths; only patterns with wildcards are compiled, which
/// costs far more than a step cache lookup.
#[derive(Default)]
struct Matcher {
    /// Paths selected with everything below them; `.` selects everything.
    paths: Vec<PathBuf>,
    globs: Option<GlobSet>,
}

impl Matcher {
    fn is_match(&self, rel: &Path) -> bool {
        self.paths
            .iter()
            .any(|p| p.as_os_str() == "." || rel.starts_with(p))
            || self.globs.as_ref().is_some_and(|g| g.is_match(rel))
    }

    fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.globs.is_none()
    }
}

impl Patterns {
    pub fn new(patterns: &[String]) -> Result<Patterns, String> {
        let (mut include, mut exclude) = (Matcher::default(), Matcher::default());
        let (mut include_globs, mut exclude_globs) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        let (mut any_include_glob, mut any_exclude_glob) = (false, false);
        let mut roots: Vec<PathBuf> = Vec::new();
        let wild = |s: &str| s.contains(['*', '?', '[', '{']);
        for pattern in patterns {
            let excluded = pattern.starts_with('!');
            let text = pattern.strip_prefix('!').unwrap_or(pattern);
            let text = text.trim_end_matches('/');
            let text = text.strip_prefix("./").unwrap_or(text);
            let text = if text.is_empty() { "." } else { text };
            let (matcher, globs, any) = match excluded {
                true => (&mut exclude, &mut exclude_globs, &mut any_exclude_glob),
                false => (&mut include, &mut include_globs, &mut any_include_glob),
            };
            if wild(text) {
                for glob in [text.to_string(), format!("{text}/**")] {
                    globs.add(
                        GlobBuilder::new(&glob)
                            .literal_separator(true)
                            .build()
                            .map_err(|e| {
                                format!("`{pattern}` is not a valid glob: {}", e.kind())
                            })?,
                    );
                }
                *any = true;
            } else {
                matcher.paths.push(PathBuf::from(text));
            }
            if !excluded {
                let root: PathBuf = Path::new(text)
                    .components()
                    .filter(|c| !matches!(c, std::path::Component::CurDir))
                    .take_while(|c| !wild(&c.as_os_str().to_string_lossy()))
                    .collect();
                roots.push(root);
            }
        }
        // A root inside another is walked with it.
        roots.sort();
        roots.dedup_by(|later, earlier| later.starts_with(earlier));
        let build = |b: GlobSetBuilder| b.build().map_err(|e| e.to_string());
        if any_include_glob {
            include.globs = Some(build(include_globs)?);
        }
        if any_exclude_glob {
            exclude.globs = Some(build(exclude_globs)?);
        }
        Ok(Patterns {
            include,
            exclude,
            roots,
        })
    }

    pub(crate) fn matches(&self, rel: &Path) -> bool {
        self.include.is_match(rel) && !self.exclude.is_match(rel)
    }

    /// Every directory, file and link below `root` that the patterns select, with its
    /// metadata, in path order; `.git` is never searched and links are not followed.
    pub fn walk(&self, root: &Path) -> io::Result<Vec<(PathBuf, Metadata)>> {
        let mut found = Vec::new();
        for start in &self.roots {
            let path = root.join(start);
            let meta = match path.symlink_metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let is_dir = meta.is_dir();
            let selected = !start.as_os_str().is_empty() && self.matches(start);
            if selected {
                found.push((start.clone(), meta));
            }
            if is_dir {
                let all =
                    (selected || self.include.is_match(Path::new("."))) && self.exclude.is_empty();
                self.walk_dir(root, start, all, &mut found)?;
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// The files and links of `view` that [`Patterns::walk`] would find, without touching
    /// the disk: each root's part of the sorted listing, then the patterns.
    pub fn select<'v>(&self, view: &'v View) -> Vec<&'v ViewEntry> {
        let entries = &view.entries;
        let mut out = Vec::new();
        for root in &self.roots {
            let bytes = root.as_os_str().as_encoded_bytes();
            // Below a selected directory everything is selected, unless something is excluded.
            let named = if bytes.is_empty() {
                Path::new(".")
            } else {
                root
            };
            let all = self.exclude.is_empty() && self.include.is_match(named);
            let range = if bytes.is_empty() {
                &entries[..]
            } else {
                // Sorted by bytes, what is below `root` is one run, and `root` itself is found
                // by a search.
                if let Ok(i) = entries.binary_search_by(|e| e.bytes().cmp(bytes))
                    && self.matches(&entries[i].path)
                {
                    out.push(&entries[i]);
                }
                let below = [bytes, b"/"].concat();
                let start = entries.partition_point(|e| e.bytes() < below.as_slice());
                let len = entries[start..].partition_point(|e| e.bytes().starts_with(&below));
                &entries[start..start + len]
            };
            out.extend(range.iter().filter(|e| all || self.matches(&e.path)));
        }
        out
    }

    /// `all`: `dir` is selected and nothing is excluded, so everything below it is too
    /// (every pattern also selects what is below what it names).
    fn walk_dir(
        &self,
        root: &Path,
        dir: &Path,
        all: bool,
        found: &mut Vec<(PathBuf, Metadata)>,
    ) -> io::Result<()> {
        for entry in std::fs::read_dir(root.join(dir))? {
            let entry = entry?;
            if entry.file_name() == ".git" {
                continue;
            }
            let rel = dir.join(entry.file_name());
            let meta = entry.metadata()?;
            if !all && self.exclude.is_match(&rel) {
                continue;
            }
            let is_dir = meta.is_dir();
            let selected = all || self.include.is_match(&rel);
            if selected {
                found.push((rel.clone(), meta));
            }
            if is_dir {
                self.walk_dir(root, &rel, selected && self.exclude.is_empty(), found)?;
            }
        }
        Ok(())
    }
}

/// One thing in a [`Tree`]. Paths are relative and `/`-separated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        size: u64,
        sha256: String,
        /// When its content last changed, in nanoseconds since the Unix epoch: put back on
        /// restore, since build tools (cargo's fingerprints, make) compare these times and
        /// rebuild what looks newer than its output. Absent in entries written before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        modified: Option<i64>,
    },
    Link {
        path: String,
        target: String,
    },
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. } | Entry::File { path, .. } | Entry::Link { path, .. } => path,
        }
    }
}

/// Files as they were, by content: directories before what they hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub entries: Vec<Entry>,
}

impl Tree {
    /// Bytes of file content.
    pub fn size(&self) -> u64 {
        self.files().map(|(_, size)| size).sum()
    }

    /// Each file's digest and size.
    pub fn files(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entries.iter().filter_map(|e| match e {
            Entry::File { sha256, size, .. } => Some((sha256.as_str(), *size)),
            _ => None,
        })
    }

    /// Stores what `patterns` select below `root`: file contents go to `blobs`, the tree
    /// says where they were. The directories holding what was selected come too, so a
    /// restore recreates them with their modes.
    pub fn snapshot(root: &Path, patterns: &Patterns, blobs: &Blobs) -> io::Result<Tree> {
        let found = patterns.walk(root)?;
        let mut dirs: BTreeMap<PathBuf, u32> = BTreeMap::new();
        let mut files = Vec::new();
        let mut links = Vec::new();
        for (rel, meta) in &found {
            for parent in rel.ancestors().skip(1) {
                if parent.as_os_str().is_empty() || dirs.contains_key(parent) {
                    continue;
                }
                let mode = mode_of(&root.join(parent).symlink_metadata()?);
                dirs.insert(parent.to_path_buf(), mode);
            }
            if meta.is_dir() {
                dirs.insert(rel.clone(), mode_of(meta));
            } else if meta.is_symlink() {
                let target = std::fs::read_link(root.join(rel))?;
                links.push((rel.clone(), target));
            } else if meta.is_file() {
                files.push((rel.clone(), mode_of(meta), modified_of(meta)));
            }
        }
        let stored = in_parallel(&files, |(rel, _, _)| blobs.put(&root.join(rel)))?;
        let mut entries: Vec<Entry> = dirs
            .into_iter()
            .map(|(path, mode)| Entry::Dir {
                path: slash(&path),
                mode,
            })
            .collect();
        entries.extend(
            files
                .iter()
                .zip(stored)
                .map(|((rel, mode, modified), (sha256, size))| Entry::File {
                    path: slash(rel),
                    mode: *mode,
                    size,
                    sha256,
                    modified: *modified,
                }),
        );
        entries.extend(links.into_iter().map(|(rel, target)| Entry::Link {
            path: slash(&rel),
            target: target.to_string_lossy().into_owned(),
        }));
        entries.sort_by(|a, b| a.path().cmp(b.path()));
        Ok(Tree { entries })
    }

    /// Writes the tree below `root`, replacing what is in the way: a link where the tree has
    /// a directory is removed, never written through, so nothing lands outside `root`.
    /// Every file is checked against its digest as it is copied.
    pub fn restore(&self, root: &Path, blobs: &Blobs) -> io::Result<()> {
        let mut files = Vec::new();
        for entry in &self.entries {
            let path = root.join(checked(entry.path())?);
            match entry {
                Entry::Dir { mode, .. } => {
                    make_dir(&path)?;
                    set_mode(&path, *mode)?;
                }
                Entry::File { .. } => files.push((entry, path)),
                Entry::Link { target, .. } => {
                    make_parent(root, &path)?;
                    remove_any(&path)?;
                    make_link(Path::new(target), &path)?;
                }
            }
        }
        in_parallel(&files, |(entry, path)| {
            let Entry::File {
                mode,
                sha256,
                modified,
                ..
            } = entry
            else {
                return Ok(());
            };
            make_parent(root, path)?;
            if path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                std::fs::remove_dir_all(path)?;
            }
            blobs.get(sha256, path, *mode, modified.map(time_of))
        })?;
        Ok(())
    }
}

/// Whether `text` is a sha256 digest as ferry writes them: 64 lowercase hex digits.
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// File contents by sha256: `<dir>/<first two hex digits>/<digest>`.
#[derive(Clone)]
pub struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    pub fn new(dir: PathBuf) -> Blobs {
        Blobs { dir }
    }

    /// Where the blob `sha256` is kept. Only a digest (64 lowercase hex digits) names a
    /// blob: anything else, such as a path from a tampered file list, is refused, so no
    /// blob path ever leaves the store.
    pub fn path(&self, sha256: &str) -> io::Result<PathBuf> {
        if !is_sha256(sha256) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a file list names a blob by something other than a sha256 digest (64 lowercase hex digits)",
            ));
        }
        Ok(self.dir.join(&sha256[..2]).join(sha256))
    }

    /// Stores a file's content unless it is already there; its digest and size.
    pub fn put(&self, src: &Path) -> io::Result<(String, u64)> {
        let (sha256, size) = hash_file(src)?;
        let dst = self.path(&sha256)?;
        if dst.exists() {
            return Ok((sha256, size));
        }
        self.keep(&dst, |tmp| {
            let copied = clone_or_copy(&std::fs::File::open(src)?, tmp)?;
            if copied.0 != sha256 {
                return Err(io::Error::other(format!(
                    "`{}` changed while it was being stored",
                    src.display()
                )));
            }
            Ok(())
        })?;
        Ok((sha256, size))
    }

    /// Writes a blob through a temporary file beside it, synced and renamed into place, so
    /// a blob is whole or absent.
    fn keep(
        &self,
        dst: &Path,
        fill: impl FnOnce(&mut std::fs::File) -> io::Result<()>,
    ) -> io::Result<()> {
        let dir = dst.parent().unwrap_or(&self.dir);
        create_private_dir(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        fill(tmp.as_file_mut())?;
        tmp.as_file().sync_data()?;
        tmp.persist(dst).map_err(|e| e.error)?;
        Ok(())
    }

    /// Stores bytes that must hash to `sha256` (fetched from elsewhere); refused otherwise.
    pub fn put_bytes(&self, sha256: &str, bytes: &[u8]) -> io::Result<()> {
        let got = hex(&Sha256::digest(bytes));
        if got != sha256 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("content for {sha256} hashes to {got}"),
            ));
        }
        let dst = self.path(sha256)?;
        if dst.exists() {
            return Ok(());
        }
        self.keep(&dst, |tmp| tmp.write_all(bytes))
    }

    pub fn has(&self, sha256: &str) -> bool {
        self.path(sha256).is_ok_and(|p| p.exists())
    }

    /// Copies a blob to `dst` with `mode` (and `modified` as its modification time, else
    /// now), refusing one whose content no longer matches its digest. Where the file
    /// system can (btrfs, XFS), the copy is a reflink: it shares the blob's blocks until
    /// either is written, so a large cache restores without writing its data.
    pub fn get(
        &self,
        sha256: &str,
        dst: &Path,
        mode: u32,
        modified: Option<SystemTime>,
    ) -> io::Result<()> {
        let src = self.path(sha256)?;
        let dir = dst.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        let (got, _) = clone_or_copy(&std::fs::File::open(&src)?, tmp.as_file_mut())?;
        if got != sha256 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("stored blob {sha256} is corrupt (its content hashes to {got})"),
            ));
        }
        if let Some(modified) = modified {
            tmp.as_file().set_modified(modified)?;
        }
        set_mode(tmp.path(), mode)?;
        tmp.persist(dst).map_err(|e| e.error)?;
        Ok(())
    }

    /// Every blob with its size.
    pub fn list(&self) -> io::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let shards = match std::fs::read_dir(&self.dir) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for shard in shards {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for blob in std::fs::read_dir(shard.path())? {
                let blob = blob?;
                let name = blob.file_name().to_string_lossy().into_owned();
                // Temporary files of a write that never finished are not blobs.
                if is_sha256(&name) {
                    out.push((name, blob.metadata()?.len()));
                } else if blob
                    .metadata()?
                    .modified()
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age.as_secs() > 3600)
                {
                    let _ = std::fs::remove_file(blob.path());
                }
            }
        }
        Ok(out)
    }

    pub fn remove(&self, sha256: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(sha256)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Remembers the digests of workspace files by what identifies their content without
/// reading it (size, times, inode), the way git's index does, so that an unchanged input is
/// a `stat`, not a read. An entry is trusted only when the file's change time is older than
/// the moment the digest was taken: a write in the same clock tick could otherwise go
/// unnoticed.
pub struct Digests {
    path: PathBuf,
    clock: Clock,
    /// The file system's clock when this session started hashing.
    now: Mutex<Option<Stamp>>,
    /// By path; keyed by its bytes, which hash and compare faster than paths. Read from
    /// `path` the first time a step asks, so a job without cacheable steps reads nothing.
    known: Mutex<Option<HashMap<std::ffi::OsString, Remembered>>>,
    dirty: std::sync::atomic::AtomicBool,
}

/// A file as it was when hashed, when it was hashed, and its digest.
type Remembered = (Ident, Stamp, [u8; 32]);

const DIGESTS_HEADER: &str = "ferry-digests 2";

/// Bytes of a remembered digest's fields: the file's [`Ident`], when, and the sha256.
const DIGEST_RECORD: usize = IDENT_BYTES + 16 + 32;

impl Digests {
    /// What is remembered at `path` (nothing when it is missing or unreadable), read when
    /// first needed.
    pub fn load(path: PathBuf) -> Digests {
        Digests {
            clock: Clock {
                path: path.with_extension("tick"),
            },
            path,
            now: Mutex::new(None),
            known: Mutex::new(None),
            dirty: Default::default(),
        }
    }

    fn with_known<R>(
        &self,
        f: impl FnOnce(&mut HashMap<std::ffi::OsString, Remembered>) -> R,
    ) -> R {
        let mut known = locked(&self.known);
        let known = known.get_or_insert_with(|| {
            let bytes = std::fs::read(&self.path).unwrap_or_default();
            read_records::<DIGEST_RECORD>(&bytes, DIGESTS_HEADER)
                .into_iter()
                .map(|(fields, rel)| {
                    let ident = Ident::from_bytes(&fields[..IDENT_BYTES]);
                    let at = Stamp::from_le_bytes(
                        fields[IDENT_BYTES..IDENT_BYTES + 16]
                            .try_into()
                            .unwrap_or_default(),
                    );
                    let digest: [u8; 32] =
                        fields[IDENT_BYTES + 16..].try_into().unwrap_or_default();
                    (rel.into_os_string(), (ident, at, digest))
                })
                .collect()
        });
        f(known)
    }

    /// The sha256 of the file at `rel` if it is remembered and the file has not changed
    /// since.
    pub(crate) fn known(&self, rel: &Path, ident: Ident) -> Option<[u8; 32]> {
        self.with_known(|known| match known.get(rel.as_os_str()) {
            Some((known, at, digest)) if *known == ident && ident.changed < *at => Some(*digest),
            _ => None,
        })
    }

    /// The sha256 of the file at `root/rel`, which `ident` identifies.
    pub(crate) fn digest(&self, root: &Path, rel: &Path, ident: Ident) -> io::Result<[u8; 32]> {
        if let Some(digest) = self.known(rel, ident) {
            return Ok(digest);
        }
        let now = {
            let mut now = locked(&self.now);
            match *now {
                Some(t) => t,
                None => {
                    let t = self.clock.now()?;
                    *now = Some(t);
                    t
                }
            }
        };
        let mut hasher = Sha256::new();
        io::copy(&mut std::fs::File::open(root.join(rel))?, &mut hasher)?;
        let digest: [u8; 32] = hasher.finalize().into();
        self.with_known(|known| known.insert(rel.as_os_str().to_owned(), (ident, now, digest)));
        self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(digest)
    }

    /// Writes what is remembered, if anything changed, forgetting files for which
    /// `present` is false (gone from the repository), so the record does not grow forever.
    pub fn save(&self, present: &dyn Fn(&Path) -> bool) -> io::Result<()> {
        if !self.dirty.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let bytes = self.with_known(|known| {
            write_records(
                DIGESTS_HEADER,
                known.iter().filter(|(rel, _)| present(Path::new(rel))).map(
                    |(rel, (ident, at, digest))| {
                        let mut fields = ident.to_bytes().to_vec();
                        fields.extend_from_slice(&at.to_le_bytes());
                        fields.extend_from_slice(digest);
                        (fields, Path::new(rel))
                    },
                ),
            )
        });
        crate::record::write_atomic(&self.path, &bytes)
    }
}

/// The first file `patterns` select under `root` that holds one of `secrets`, in any of the
/// forms a log masks ([`crate::log::secret_forms`]), so that nothing holding a secret is
/// ever stored in a cache.
pub fn holding_secret(
    root: &Path,
    patterns: &Patterns,
    secrets: &[String],
) -> io::Result<Option<PathBuf>> {
    let forms: Vec<String> = secrets
        .iter()
        .filter(|s| !s.is_empty())
        .flat_map(|s| crate::log::secret_forms(s))
        .collect();
    if forms.is_empty() {
        return Ok(None);
    }
    for (rel, meta) in patterns.walk(root)? {
        if !meta.is_file() {
            continue;
        }
        let bytes = std::fs::read(root.join(&rel))?;
        if forms
            .iter()
            .any(|s| bytes.windows(s.len()).any(|w| w == s.as_bytes()))
        {
            return Ok(Some(rel));
        }
    }
    Ok(None)
}

/// A lock's guard, also after a thread panicked holding it: what is behind every lock here
/// stays consistent at each step.
pub(crate) fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The sha256 and size of a file's content.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    copy_hashing(&mut std::fs::File::open(path)?, &mut io::sink())
}

/// Copies `src` into the empty file `dst`, by reflink where the file system allows, else by
/// reading and writing; the digest and size of what `dst` holds.
fn clone_or_copy(src: &std::fs::File, dst: &mut std::fs::File) -> io::Result<(String, u64)> {
    if reflink(src, dst) {
        // The digest is of what was cloned, read back: a file that changed or a blob that
        // rotted is caught as with a copy.
        return copy_hashing(&mut &*dst, &mut io::sink());
    }
    copy_hashing(&mut &*src, dst)
}

/// Makes `dst` share `src`'s blocks (`FICLONE`): copy-on-write, so neither sees the other's
/// later writes. False where it cannot be done (ext4, tmpfs, two file systems), and the
/// caller copies.
#[cfg(target_os = "linux")]
fn reflink(src: &std::fs::File, dst: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: FICLONE takes the source descriptor as its argument and touches no memory of
    // ours; both files stay open for the call.
    unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn reflink(_: &std::fs::File, _: &std::fs::File) -> bool {
    false
}

fn copy_hashing(src: &mut impl Read, dst: &mut impl Write) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 256 << 10];
    let mut size = 0;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
        size += n as u64;
    }
    Ok((hex(&hasher.finalize()), size))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn slash(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// A stored path made safe to join: relative, no `..`.
fn checked(path: &str) -> io::Result<&Path> {
    let p = Path::new(path);
    let safe = !path.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if safe {
        Ok(p)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("stored path `{path}` leaves its directory"),
        ))
    }
}

/// Makes every directory from `root` to `path`'s parent a real directory.
fn make_parent(root: &Path, path: &Path) -> io::Result<()> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    let rel = parent.strip_prefix(root).unwrap_or(Path::new(""));
    let mut at = root.to_path_buf();
    for part in rel.components() {
        at.push(part);
        make_dir(&at)?;
    }
    Ok(())
}

fn make_dir(path: &Path) -> io::Result<()> {
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            std::fs::remove_file(path)?;
            std::fs::create_dir(path)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir_all(path),
        Err(e) => Err(e),
    }
}

fn remove_any(path: &Path) -> io::Result<()> {
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(unix)]
fn mode_of(meta: &Metadata) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777
}

/// A file's modification time as [`Entry::File`] keeps it; `None` when the system has none
/// or it does not fit.
fn modified_of(meta: &Metadata) -> Option<i64> {
    let modified = meta.modified().ok()?;
    match modified.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).ok(),
        Err(before) => i64::try_from(before.duration().as_nanos()).ok().map(|n| -n),
    }
}

fn time_of(nanos: i64) -> SystemTime {
    let offset = std::time::Duration::from_nanos(nanos.unsigned_abs());
    if nanos >= 0 {
        SystemTime::UNIX_EPOCH + offset
    } else {
        SystemTime::UNIX_EPOCH - offset
    }
}

#[cfg(not(unix))]
fn mode_of(meta: &Metadata) -> u32 {
    match (meta.is_dir(), meta.permissions().readonly()) {
        (true, _) => 0o755,
        (false, true) => 0o444,
        (false, false) => 0o644,
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    let mut perms = std::fs::metadata(path)?.permissions();
    perms.set_readonly(mode & 0o200 == 0);
    std::fs::set_permissions(path, perms)
}

#[cfg(unix)]
fn make_link(target: &Path, path: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, path)
}

#[cfg(windows)]
fn make_link(target: &Path, path: &Path) -> io::Result<()> {
    std::os::windows::fs::symlink_file(target, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn patterns(p: &[&str]) -> Patterns {
        Patterns::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn names(found: Vec<(PathBuf, Metadata)>) -> Vec<String> {
        found.into_iter().map(|(p, _)| slash(&p)).collect()
    }

    #[test]
    fn patterns_select_directories_globs_and_exclusions() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "dist/app.js", "a");
        write(root, "dist/sub/x.map", "m");
        write(root, "src/main.rs", "fn main() {}");
        write(root, "src/lib/mod.rs", "");
        write(root, "README.md", "r");
        write(root, ".git/config", "");
        assert_eq!(
            names(patterns(&["dist"]).walk(root).unwrap()),
            ["dist", "dist/app.js", "dist/sub", "dist/sub/x.map"]
        );
        assert_eq!(
            names(patterns(&["src/*.rs"]).walk(root).unwrap()),
            ["src/main.rs"]
        );
        assert_eq!(
            names(patterns(&["**/*.rs", "!src/lib"]).walk(root).unwrap()),
            ["src/main.rs"]
        );
        assert_eq!(
            names(patterns(&["."]).walk(root).unwrap()).len(),
            9,
            "everything but .git"
        );
        assert!(patterns(&["missing/**"]).walk(root).unwrap().is_empty());
    }

    #[test]
    fn a_view_selects_what_a_walk_finds() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for rel in [
            "in/0001/a",
            "in/0001/b.rs",
            "in/0001-x/c",
            "in/00010/d",
            "in/0001/deep/e.rs",
            "top.rs",
            "docs/x.md",
        ] {
            write(&src, rel, rel);
        }
        let (ws, _) =
            crate::workspace::Workspace::prepare(&src, &dir.path().join("work"), "job", &[], false)
                .unwrap();
        let view = ws.view();
        for set in [
            &["in/0001"][..],
            &["in/0001/b.rs", "top.rs"],
            &["**/*.rs"],
            &["in", "!in/0001/deep"],
            &["."],
            &["in/0001/*"],
            &["missing"],
        ] {
            let p = patterns(set);
            let mut walked: Vec<String> = p
                .walk(ws.path())
                .unwrap()
                .into_iter()
                .filter(|(_, m)| !m.is_dir())
                .map(|(rel, _)| slash(&rel))
                .collect();
            walked.sort();
            let mut selected: Vec<String> =
                p.select(&view).iter().map(|e| slash(&e.path)).collect();
            selected.sort();
            assert_eq!(selected, walked, "{set:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn trees_round_trip_modes_links_and_empty_directories() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (src, dst, store) = (
            dir.path().join("src"),
            dir.path().join("dst"),
            dir.path().join("blobs"),
        );
        write(&src, "out/bin/tool", "#!/bin/sh\n");
        set_mode(&src.join("out/bin/tool"), 0o750).unwrap();
        write(&src, "out/data.txt", "data");
        write(&src, "out/copy.txt", "data");
        // Build tools compare these: put back as they were, not as when restored.
        let old =
            SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(1_000_000_000_123_456_789);
        std::fs::File::options()
            .write(true)
            .open(src.join("out/data.txt"))
            .and_then(|f| f.set_modified(old))
            .unwrap();
        std::fs::create_dir_all(src.join("out/empty")).unwrap();
        std::os::unix::fs::symlink("data.txt", src.join("out/link")).unwrap();
        let blobs = Blobs::new(store);
        let tree = Tree::snapshot(&src, &patterns(&["out"]), &blobs).unwrap();
        assert_eq!(blobs.list().unwrap().len(), 2, "same content stored once");
        // Something planted where the tree has a directory is replaced, not written through.
        std::fs::create_dir_all(&dst).unwrap();
        std::os::unix::fs::symlink(dir.path(), dst.join("out")).unwrap();
        tree.restore(&dst, &blobs).unwrap();
        assert!(dst.join("out").symlink_metadata().unwrap().is_dir());
        let again = Tree::snapshot(&dst, &patterns(&["out"]), &blobs).unwrap();
        assert_eq!(tree, again);
        let restored = std::fs::metadata(dst.join("out/data.txt")).unwrap();
        assert_eq!(restored.modified().unwrap(), old);
        let mode = std::fs::metadata(dst.join("out/bin/tool"))
            .unwrap()
            .permissions();
        assert_eq!(mode.mode() & 0o777, 0o750);
        assert!(dst.join("out/empty").is_dir());
        assert_eq!(
            std::fs::read_link(dst.join("out/link")).unwrap(),
            Path::new("data.txt")
        );
    }

    #[test]
    fn a_corrupt_blob_is_refused_and_bad_paths_are_not_restored() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path().join("blobs"));
        write(dir.path(), "a.txt", "hello");
        let (sha, _) = blobs.put(&dir.path().join("a.txt")).unwrap();
        std::fs::write(blobs.path(&sha).unwrap(), "jello").unwrap();
        let err = blobs
            .get(&sha, &dir.path().join("b.txt"), 0o644, None)
            .unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
        assert!(!dir.path().join("b.txt").exists());
        let evil = Tree {
            entries: vec![Entry::Dir {
                path: "../escape".into(),
                mode: 0o755,
            }],
        };
        assert!(evil.restore(&dir.path().join("x"), &blobs).is_err());
        assert!(!dir.path().join("escape").exists());
    }

    #[test]
    fn digests_are_remembered_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ws/a.txt", "one");
        let root = dir.path().join("ws");
        let memo = dir.path().join("ws.digests");
        let rel = Path::new("a.txt");
        let meta = || Ident::of(&root.join(rel).symlink_metadata().unwrap());
        // A digest is trusted only when the file changed before it was taken: let the file
        // system's clock move past the write first.
        let clock = Clock {
            path: dir.path().join("tick"),
        };
        assert!(
            clock.wait_past(meta().changed),
            "the file system clock stands still"
        );
        let first = Digests::load(memo.clone());
        let one = first.digest(&root, rel, meta()).unwrap();
        first.save(&|_| true).unwrap();
        let second = Digests::load(memo.clone());
        let unchanged = meta();
        assert_eq!(
            second.known(rel, unchanged),
            Some(one),
            "the memo vouches for it"
        );
        // Asked about the file as it was, the memo answers without reading it: moved away,
        // it still has its digest.
        std::fs::rename(root.join(rel), dir.path().join("moved")).unwrap();
        assert_eq!(second.digest(&root, rel, unchanged).unwrap(), one);
        std::fs::rename(dir.path().join("moved"), root.join(rel)).unwrap();
        std::fs::write(root.join(rel), "two").unwrap();
        assert_eq!(
            second.known(rel, meta()),
            None,
            "a changed file is hashed again"
        );
        let two = second.digest(&root, rel, meta()).unwrap();
        assert_ne!(one, two);
        assert_eq!(hex(&two), hash_file(&root.join(rel)).unwrap().0);
        // A file the repository no longer has is forgotten when the record is written.
        second.save(&|_| false).unwrap();
        assert!(Digests::load(memo).with_known(|known| known.is_empty()));
    }
}
