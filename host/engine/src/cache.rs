//! `.ferry/cache/`: the step cache and the dependency caches, sharing one store of file
//! contents, held under a size limit by evicting what was used least recently.
//!
//! ```text
//! .ferry/cache/blobs/<aa>/<sha256>   file contents (see crate::files)
//! .ferry/cache/steps/<key>.json      a step's result, by the hash of all it depends on
//! .ferry/cache/deps/<sha256>.json    a dependency cache entry, by the sha256 of its key
//! ```
//!
//! An entry is written after every blob it names, and atomically, so a save that is killed
//! leaves no entry (only blobs that the next eviction removes). Reading an entry touches its
//! modification time, which is what "least recently used" goes by.
//!
//! A [`Remote`] (an OCI repository, see the CLI) can stand behind the local store so that
//! several machines share results: a local miss asks it, and what is saved is published to
//! it. The local store stays the source of every hit.

use crate::event::{Annotation, Level};
use crate::files::{Blobs, Digests, Patterns, Tree, hex, locked};
use crate::record::{now_ms, write_atomic};
use crate::workspace::{Ident, View};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Size the caches are held under unless configured otherwise.
pub const DEFAULT_LIMIT: u64 = 10 << 30;

/// Most bytes of a step's log kept with its cached result.
const MAX_CACHED_LOG: usize = 1 << 20;

/// What a step left when it passed, to be given again instead of running it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepResult {
    pub outputs: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: Vec<Annotation>,
    /// The step's log lines, masked as they were shown.
    #[serde(default)]
    pub log: Vec<(Level, String)>,
    /// Its `outputs.files`.
    #[serde(default)]
    pub files: Tree,
    /// Its `$FERRY_STEP_SUMMARY`, masked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// How long the step took when it ran.
    pub duration_ms: f64,
    /// The run, job and step that produced it.
    pub run: String,
    pub job: String,
    pub step: String,
    /// Milliseconds since the Unix epoch.
    pub created: u64,
}

/// A dependency cache entry: the files under its paths when it was saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DepsEntry {
    pub key: String,
    pub created: u64,
    pub size: u64,
    pub tree: Tree,
}

/// The first line of a dependency cache file, read alone when looking for a key by prefix.
#[derive(Serialize, Deserialize)]
struct DepsHeader {
    key: String,
    created: u64,
}

/// One entry, as `ferry cache ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// `step` or `deps`.
    pub kind: &'static str,
    /// The step cache key, or the dependency cache's key.
    pub key: String,
    /// Where it came from: `run/job/step` for a step, empty for a dependency cache.
    pub origin: String,
    /// Bytes of the entry and the file contents it names (shared contents counted in full).
    pub size: u64,
    pub last_used: SystemTime,
    #[serde(skip)]
    path: PathBuf,
    #[serde(skip)]
    blobs: Vec<(String, u64)>,
}

/// What an eviction removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub entries: usize,
    pub blobs: usize,
    pub bytes: u64,
}

/// A store shared by several machines. Entries are named `step-<key>` and
/// `deps-<sha256 of key>`; an entry comes with the file contents it names.
pub trait Remote: Send + Sync {
    /// The entry called `name`, with every file it names put into `blobs` (each checked
    /// against its digest); `None` when there is no such entry.
    fn fetch(&self, name: &str, blobs: &Blobs) -> Result<Option<Vec<u8>>, String>;
    /// Publishes the entry `name` and the `files` (digest, size) it names, read from `blobs`.
    fn publish(
        &self,
        name: &str,
        entry: &[u8],
        files: &[(String, u64)],
        blobs: &Blobs,
    ) -> Result<(), String>;
    /// Where it is, for messages.
    fn describe(&self) -> String;
}

/// The caches of one state directory.
#[derive(Clone)]
pub struct Cache {
    dir: PathBuf,
    blobs: Blobs,
    limit: u64,
    remote: Option<Arc<dyn Remote>>,
    /// What went wrong with the remote store; a run reports it once at the end, and a
    /// remote that fails never fails a step.
    remote_errors: Arc<Mutex<Vec<String>>>,
}

impl Cache {
    /// The caches under `state_dir/cache`, held under `limit` bytes.
    pub fn new(state_dir: &Path, limit: u64) -> Cache {
        let dir = state_dir.join("cache");
        Cache {
            blobs: Blobs::new(dir.join("blobs")),
            dir,
            limit,
            remote: None,
            remote_errors: Default::default(),
        }
    }

    /// Shares results through `remote` as well.
    pub fn with_remote(mut self, remote: Arc<dyn Remote>) -> Cache {
        self.remote = Some(remote);
        self
    }

    pub fn has_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// What failed with the remote store since the last call.
    pub fn take_remote_errors(&self) -> Vec<String> {
        let mut errors = std::mem::take(&mut *locked(&self.remote_errors));
        errors.dedup();
        errors
    }

    fn remote_failed(&self, what: String) {
        if let Some(remote) = &self.remote {
            locked(&self.remote_errors).push(format!("{}: {what}", remote.describe()));
        }
    }

    /// Asks the remote store for an entry missing here and keeps it at `path`.
    fn fetch(&self, name: &str, path: &Path) -> Option<Vec<u8>> {
        let remote = self.remote.as_ref()?;
        match remote.fetch(name, &self.blobs) {
            Ok(Some(bytes)) => {
                let kept = path
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|_| write_atomic(path, &bytes));
                if let Err(e) = kept {
                    self.remote_failed(format!("cannot keep `{name}`: {e}"));
                }
                Some(bytes)
            }
            Ok(None) => None,
            Err(e) => {
                self.remote_failed(e);
                None
            }
        }
    }

    fn publish(&self, name: &str, entry: &[u8], tree: &Tree) {
        let Some(remote) = &self.remote else {
            return;
        };
        let mut files: Vec<(String, u64)> = tree.files().map(|(d, s)| (d.to_string(), s)).collect();
        files.sort();
        files.dedup();
        if let Err(e) = remote.publish(name, entry, &files, &self.blobs) {
            self.remote_failed(e);
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn step_path(&self, key: &str) -> PathBuf {
        self.dir.join("steps").join(format!("{key}.json"))
    }

    fn deps_path(&self, key: &str) -> PathBuf {
        let name = hex(&Sha256::digest(key.as_bytes()));
        self.dir.join("deps").join(format!("{name}.json"))
    }

    /// A dependency cache's name in the remote store: keys are free text, names are not.
    fn deps_name(key: &str) -> String {
        format!("deps-{}", hex(&Sha256::digest(key.as_bytes())))
    }

    /// The result stored under `key`, if there is a readable one.
    pub fn step(&self, key: &str) -> Option<StepResult> {
        let path = self.step_path(key);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(_) => self.fetch(&format!("step-{key}"), &path)?,
        };
        let Ok(result) = serde_json::from_slice::<StepResult>(&bytes) else {
            // Unreadable: written by another version, or damaged. It vouches for nothing.
            let _ = std::fs::remove_file(&path);
            return None;
        };
        touch(&path);
        Some(result)
    }

    /// Puts a step's output files back in the workspace. A damaged entry is removed and
    /// reported as an error, and the caller runs the step instead.
    pub fn restore_step(&self, key: &str, result: &StepResult, root: &Path) -> io::Result<()> {
        result.files.restore(root, &self.blobs).inspect_err(|_| {
            let _ = std::fs::remove_file(self.step_path(key));
        })
    }

    /// Stores a step's result under `key`, with the `outputs.files` it made under `root`.
    pub fn save_step(
        &self,
        key: &str,
        mut result: StepResult,
        root: &Path,
        files: &[String],
        secrets: &[String],
    ) -> io::Result<()> {
        if !files.is_empty() {
            let patterns = Patterns::new(files).map_err(io::Error::other)?;
            refuse_secrets(root, &patterns, secrets)?;
            result.files = Tree::snapshot(root, &patterns, &self.blobs)?;
        }
        let mut kept = 0;
        result.log.retain(|(_, line)| {
            kept += line.len();
            kept <= MAX_CACHED_LOG
        });
        let path = self.step_path(key);
        std::fs::create_dir_all(path.parent().unwrap_or(&self.dir))?;
        let bytes = serde_json::to_vec(&result).map_err(io::Error::other)?;
        write_atomic(&path, &bytes)?;
        self.publish(&format!("step-{key}"), &bytes, &result.files);
        Ok(())
    }

    /// The entry saved under `key`, else the newest whose key starts with one of
    /// `restore_keys`, tried in order.
    pub fn find_deps(&self, key: &str, restore_keys: &[String]) -> Option<DepsEntry> {
        let path = self.deps_path(key);
        if let Some(entry) = self.read_deps(&path) {
            return Some(entry);
        }
        if self.fetch(&Self::deps_name(key), &path).is_some()
            && let Some(entry) = self.read_deps(&path)
        {
            return Some(entry);
        }
        if restore_keys.is_empty() {
            return None;
        }
        let mut headers = Vec::new();
        for file in std::fs::read_dir(self.dir.join("deps")).ok()?.flatten() {
            let Ok(f) = std::fs::File::open(file.path()) else {
                continue;
            };
            let mut first = String::new();
            if io::BufReader::new(f).read_line(&mut first).is_err() {
                continue;
            }
            if let Ok(header) = serde_json::from_str::<DepsHeader>(&first) {
                headers.push((header, file.path()));
            }
        }
        for prefix in restore_keys {
            let newest = headers
                .iter()
                .filter(|(h, _)| h.key.starts_with(prefix.as_str()))
                .max_by_key(|(h, _)| h.created);
            if let Some(entry) = newest.and_then(|(_, path)| self.read_deps(path)) {
                return Some(entry);
            }
        }
        None
    }

    fn read_deps(&self, path: &Path) -> Option<DepsEntry> {
        let text = std::fs::read_to_string(path).ok()?;
        let (header, body) = text.split_once('\n')?;
        let header: DepsHeader = serde_json::from_str(header).ok()?;
        let tree: Tree = serde_json::from_str(body).ok()?;
        touch(path);
        Some(DepsEntry {
            size: tree.size(),
            key: header.key,
            created: header.created,
            tree,
        })
    }

    /// Puts a dependency cache entry's files back under `root`.
    pub fn restore_deps(&self, entry: &DepsEntry, root: &Path) -> io::Result<()> {
        entry.tree.restore(root, &self.blobs).inspect_err(|_| {
            let _ = std::fs::remove_file(self.deps_path(&entry.key));
        })
    }

    /// Saves what `paths` select under `root` as the entry `key`; its size.
    pub fn save_deps(
        &self,
        key: &str,
        root: &Path,
        paths: &[String],
        secrets: &[String],
    ) -> io::Result<u64> {
        let patterns = Patterns::new(paths).map_err(io::Error::other)?;
        refuse_secrets(root, &patterns, secrets)?;
        let tree = Tree::snapshot(root, &patterns, &self.blobs)?;
        let header = DepsHeader {
            key: key.to_string(),
            created: now_ms(),
        };
        let mut text = serde_json::to_string(&header).map_err(io::Error::other)?;
        text.push('\n');
        text.push_str(&serde_json::to_string(&tree).map_err(io::Error::other)?);
        let path = self.deps_path(key);
        std::fs::create_dir_all(path.parent().unwrap_or(&self.dir))?;
        write_atomic(&path, text.as_bytes())?;
        self.publish(&Self::deps_name(key), text.as_bytes(), &tree);
        Ok(tree.size())
    }

    /// Every entry, most recently used first.
    pub fn list(&self) -> io::Result<Vec<Listed>> {
        let mut out = Vec::new();
        for (kind, sub) in [("step", "steps"), ("deps", "deps")] {
            let entries = match std::fs::read_dir(self.dir.join(sub)) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for file in entries {
                let file = file?;
                let path = file.path();
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let meta = file.metadata()?;
                let (key, origin, tree) = if kind == "step" {
                    let key = path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    match std::fs::read(&path)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<StepResult>(&b).ok())
                    {
                        Some(r) => (key, format!("{}/{}/{}", r.run, r.job, r.step), r.files),
                        None => (key, String::new(), Tree::default()),
                    }
                } else {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let parsed = text.split_once('\n').and_then(|(h, b)| {
                        let h: DepsHeader = serde_json::from_str(h).ok()?;
                        Some((h.key, serde_json::from_str::<Tree>(b).ok()?))
                    });
                    match parsed {
                        Some((key, tree)) => (key, String::new(), tree),
                        None => (String::new(), String::new(), Tree::default()),
                    }
                };
                let blobs: Vec<(String, u64)> =
                    tree.files().map(|(d, s)| (d.to_string(), s)).collect();
                out.push(Listed {
                    kind,
                    key,
                    origin,
                    size: meta.len() + blobs.iter().map(|(_, s)| s).sum::<u64>(),
                    last_used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    path,
                    blobs,
                });
            }
        }
        out.sort_by_key(|l| std::cmp::Reverse(l.last_used));
        Ok(out)
    }

    /// Removes every entry and every stored file.
    pub fn clear(&self) -> io::Result<Pruned> {
        let listed = self.list()?;
        let blobs = self.blobs.list()?;
        let pruned = Pruned {
            entries: listed.len(),
            blobs: blobs.len(),
            bytes: blobs.iter().map(|(_, s)| s).sum::<u64>()
                + listed
                    .iter()
                    .map(|l| l.path.metadata().map_or(0, |m| m.len()))
                    .sum::<u64>(),
        };
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(pruned),
        }
    }

    /// Evicts the least recently used entries until what is kept fits in `limit` bytes,
    /// then removes stored files no entry names. One eviction at a time per state directory;
    /// a run that is saving at the same moment loses at worst its new entry, never a kept one.
    pub fn prune(&self, limit: u64) -> io::Result<Pruned> {
        std::fs::create_dir_all(&self.dir)?;
        let lock = std::fs::File::create(self.dir.join("prune.lock"))?;
        lock.lock()?;
        let listed = self.list()?;
        let mut pruned = Pruned::default();
        let mut kept_blobs: HashSet<&str> = HashSet::new();
        let mut total = 0u64;
        for entry in &listed {
            let entry_bytes = entry.path.metadata().map_or(0, |m| m.len());
            let added: u64 = entry
                .blobs
                .iter()
                .filter(|(d, _)| !kept_blobs.contains(d.as_str()))
                .map(|(_, s)| s)
                .sum();
            if total + entry_bytes + added <= limit {
                total += entry_bytes + added;
                kept_blobs.extend(entry.blobs.iter().map(|(d, _)| d.as_str()));
            } else {
                std::fs::remove_file(&entry.path)?;
                pruned.entries += 1;
                pruned.bytes += entry_bytes;
            }
        }
        for (digest, size) in self.blobs.list()? {
            if !kept_blobs.contains(digest.as_str()) {
                self.blobs.remove(&digest)?;
                pruned.blobs += 1;
                pruned.bytes += size;
            }
        }
        Ok(pruned)
    }
}

fn refuse_secrets(root: &Path, patterns: &Patterns, secrets: &[String]) -> io::Result<()> {
    match crate::files::holding_secret(root, patterns, secrets)? {
        Some(file) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "`{}` holds a secret, and secrets are never stored",
                file.display()
            ),
        )),
        None => Ok(()),
    }
}

/// Marks an entry used now, for least-recently-used eviction.
fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

/// Builds a step cache key: every part is framed by its length, so no two different
/// sequences of parts give the same bytes.
#[derive(Clone)]
pub struct KeyBuilder(Sha256);

impl Default for KeyBuilder {
    fn default() -> Self {
        let mut h = Sha256::new();
        h.update(b"ferry step cache 1\0");
        KeyBuilder(h)
    }
}

impl KeyBuilder {
    pub fn part(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub fn map(&mut self, label: &str, map: &BTreeMap<String, String>) -> &mut Self {
        self.part(label.as_bytes());
        self.part(&(map.len() as u64).to_le_bytes());
        for (k, v) in map {
            self.part(k.as_bytes()).part(v.as_bytes());
        }
        self
    }

    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

/// A file or link whose content goes into a key: its path, what identifies it, whether it
/// is a link.
type Found = (PathBuf, Ident, bool);

/// Adds to `key` the files `patterns` select under `root`: each one's path, whether it is
/// executable, and its content (a link's target); the number of files. `view`, when the
/// workspace is known not to have changed since it was made, stands in for walking it.
pub fn add_files(
    key: &mut KeyBuilder,
    root: &Path,
    patterns: &Patterns,
    view: Option<&View>,
    only: Option<&dyn Fn(&Path) -> bool>,
    digests: &Digests,
) -> io::Result<usize> {
    let found: Vec<Found> = match view {
        Some(view) => selected(patterns, view),
        None => patterns
            .walk(root)?
            .into_iter()
            .filter(|(rel, m)| !m.is_dir() && only.is_none_or(|keep| keep(rel)))
            .map(|(rel, m)| (rel, Ident::of(&m), m.is_symlink()))
            .collect(),
    };
    let found = in_key_order(found);
    // Most files are known by what identifies them; only the others are read, on a few
    // threads when there are many.
    let mut contents: Vec<Option<Vec<u8>>> = Vec::with_capacity(found.len());
    let mut unknown = Vec::new();
    for (i, (rel, ident, link)) in found.iter().enumerate() {
        if *link {
            let target = std::fs::read_link(root.join(rel))?;
            contents.push(Some(target.to_string_lossy().as_bytes().to_vec()));
        } else if let Some(digest) = digests.known(rel, *ident) {
            contents.push(Some(digest.to_vec()));
        } else {
            contents.push(None);
            unknown.push(i);
        }
    }
    let read = |&i: &usize| {
        let (rel, ident, _) = &found[i];
        digests.digest(root, rel, *ident)
    };
    let hashed = if unknown.len() > 16 {
        crate::workspace::in_parallel(&unknown, read)?
    } else {
        unknown.iter().map(read).collect::<io::Result<_>>()?
    };
    for (i, digest) in unknown.into_iter().zip(hashed) {
        contents[i] = Some(digest.to_vec());
    }
    feed(
        key,
        &found,
        contents.into_iter().map(Option::unwrap_or_default),
    );
    Ok(found.len())
}

/// [`add_files`] from a view when every file in it is already known: nothing is read, so it
/// can run where blocking is not allowed. `None` (and `key` untouched) when a file would
/// have to be read.
pub fn add_known_files(
    key: &mut KeyBuilder,
    patterns: &Patterns,
    view: &View,
    digests: &Digests,
) -> Option<usize> {
    let found = in_key_order(selected(patterns, view));
    let contents = found
        .iter()
        .map(|(rel, ident, link)| match link {
            true => None,
            false => digests.known(rel, *ident).map(|d| d.to_vec()),
        })
        .collect::<Option<Vec<_>>>()?;
    feed(key, &found, contents.into_iter());
    Some(found.len())
}

fn selected(patterns: &Patterns, view: &View) -> Vec<Found> {
    patterns
        .select(view)
        .into_iter()
        .map(|e| (e.path.clone(), e.ident, e.link))
        .collect()
}

/// One order, whether the files were listed from a view or a walk.
fn in_key_order(mut found: Vec<Found>) -> Vec<Found> {
    found.sort_unstable_by(|a, b| {
        a.0.as_os_str()
            .as_encoded_bytes()
            .cmp(b.0.as_os_str().as_encoded_bytes())
    });
    found
}

fn feed(key: &mut KeyBuilder, found: &[Found], contents: impl Iterator<Item = Vec<u8>>) {
    for ((rel, ident, link), content) in found.iter().zip(contents) {
        let kind: &[u8] = match (*link, executable(ident)) {
            (true, _) => b"l",
            (false, true) => b"x",
            (false, false) => b"f",
        };
        key.part(rel.to_string_lossy().as_bytes())
            .part(kind)
            .part(&content);
    }
}

#[cfg(unix)]
fn executable(ident: &Ident) -> bool {
    ident.mode & 0o111 != 0
}

#[cfg(not(unix))]
fn executable(_: &Ident) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(run: &str) -> StepResult {
        StepResult {
            outputs: BTreeMap::from([("answer".into(), "42".into())]),
            annotations: Vec::new(),
            log: vec![(Level::Info, "hello".into())],
            files: Tree::default(),
            summary: None,
            duration_ms: 1500.0,
            run: run.into(),
            job: "build".into(),
            step: "compile".into(),
            created: now_ms(),
        }
    }

    /// Makes the dependency cache entry `key` look saved `ms` earlier.
    fn backdate(cache: &Cache, key: &str, ms: u64) {
        let path = cache.deps_path(key);
        let text = std::fs::read_to_string(&path).unwrap();
        let (header, body) = text.split_once('\n').unwrap();
        let mut header: DepsHeader = serde_json::from_str(header).unwrap();
        header.created -= ms;
        let header = serde_json::to_string(&header).unwrap();
        std::fs::write(&path, format!("{header}\n{body}")).unwrap();
    }

    fn write(root: &Path, rel: &str, bytes: &[u8]) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn step_results_round_trip_with_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), DEFAULT_LIMIT);
        let ws = dir.path().join("ws");
        write(&ws, "out/report.xml", b"<ok/>");
        assert!(cache.step("k1").is_none());
        cache
            .save_step("k1", result("r1"), &ws, &["out".into()], &[])
            .unwrap();
        std::fs::remove_dir_all(&ws).unwrap();
        let got = cache.step("k1").unwrap();
        assert_eq!(got.outputs["answer"], "42");
        cache.restore_step("k1", &got, &ws).unwrap();
        assert_eq!(std::fs::read(ws.join("out/report.xml")).unwrap(), b"<ok/>");
    }

    #[test]
    fn dependency_caches_restore_by_key_then_newest_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), DEFAULT_LIMIT);
        let ws = dir.path().join("ws");
        write(&ws, "deps/a", b"old");
        cache
            .save_deps("deps-1", &ws, &["deps".into()], &[])
            .unwrap();
        // Saved a second earlier: two saves in the same millisecond would tie.
        backdate(&cache, "deps-1", 1000);
        write(&ws, "deps/a", b"new");
        cache
            .save_deps("deps-2", &ws, &["deps".into()], &[])
            .unwrap();
        cache
            .save_deps("other-9", &ws, &["deps".into()], &[])
            .unwrap();
        assert_eq!(cache.find_deps("deps-1", &[]).unwrap().key, "deps-1");
        assert!(cache.find_deps("deps-3", &[]).is_none());
        let found = cache.find_deps("deps-3", &["nothing-".into(), "deps-".into()]);
        assert_eq!(found.unwrap().key, "deps-2");
    }

    #[test]
    fn eviction_holds_the_limit_and_keeps_the_most_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), DEFAULT_LIMIT);
        let ws = dir.path().join("ws");
        let start = SystemTime::now() - std::time::Duration::from_secs(100);
        for (i, key) in ["a", "b", "c", "d"].iter().enumerate() {
            write(&ws, &format!("{key}/blob"), &vec![i as u8; 100_000]);
            cache.save_deps(key, &ws, &[key.to_string()], &[]).unwrap();
            // Last used ten seconds apart, in this order, whatever the clock's resolution.
            std::fs::File::options()
                .append(true)
                .open(cache.deps_path(key))
                .unwrap()
                .set_modified(start + std::time::Duration::from_secs(10 * i as u64))
                .unwrap();
        }
        // `a` is used again: it is now the most recent.
        assert!(cache.find_deps("a", &[]).is_some());
        let pruned = cache.prune(250_000).unwrap();
        assert_eq!((pruned.entries, pruned.blobs), (2, 2));
        let left: Vec<String> = cache.list().unwrap().into_iter().map(|l| l.key).collect();
        assert_eq!(left, ["a", "d"]);
        let stored: u64 = cache.blobs.list().unwrap().iter().map(|(_, s)| s).sum();
        assert!(stored <= 250_000, "{stored}");
        assert_eq!(cache.prune(0).unwrap().entries, 2);
        assert!(cache.list().unwrap().is_empty());
        assert!(cache.blobs.list().unwrap().is_empty());
    }

    #[test]
    fn a_killed_save_leaves_no_entry() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), DEFAULT_LIMIT);
        // What a save killed between its blobs and its entry leaves: a blob, and a temporary
        // file beside where the entry would go.
        let ws = dir.path().join("ws");
        write(&ws, "deps/a", b"content");
        cache.blobs.put(&ws.join("deps/a")).unwrap();
        write(&cache.dir, "deps/.tmpXYZ", b"{\"key\":\"k\"");
        assert!(cache.find_deps("k", &["k".into()]).is_none());
        assert!(cache.list().unwrap().is_empty());
        let pruned = cache.prune(DEFAULT_LIMIT).unwrap();
        assert_eq!(pruned.blobs, 1, "the orphaned blob is collected");
    }

    #[test]
    fn keys_frame_their_parts() {
        let key = |parts: &[&str]| {
            let mut k = KeyBuilder::default();
            for p in parts {
                k.part(p.as_bytes());
            }
            k.finish()
        };
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
        assert_eq!(key(&["ab", "c"]), key(&["ab", "c"]));
    }
}
