//! Job workspaces: each job works in its own copy of the repository.
//!
//! A job's copy is kept between runs under `.ferry/work/<job>` and brought back in line with
//! the repository when the job starts again, so a run pays for what changed since the last
//! one instead of copying the whole tree: a repository of thousands of files costs a walk and
//! a `stat` per file when nothing changed.

use std::collections::{HashMap, HashSet};
use std::fs::{File, Metadata};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The repository a pipeline lives in: the nearest directory at or above `dir` that holds
/// `.git`, else `dir` itself.
pub fn repository_root(dir: &Path) -> PathBuf {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .unwrap_or(&dir)
        .to_path_buf()
}

/// A job's workspace, held while the job runs: the same job in another run at the same time
/// gets a workspace of its own.
pub struct Workspace {
    path: PathBuf,
    /// Where what the workspace no longer needs is moved, to be deleted off the job's path.
    trash: PathBuf,
    /// The files and links the sync left, as it saw them.
    view: Arc<View>,
    // Released when the job ends; the lock is what makes the directory this job's.
    _lock: File,
}

/// The files and links of a workspace as a sync left them, sorted by the bytes of their
/// paths (`.git` left out): what the step cache would otherwise learn by walking and `stat`ing the workspace
/// again. It stays true until something writes to the workspace.
#[derive(Debug, Default)]
pub struct View {
    pub(crate) entries: Vec<ViewEntry>,
}

/// One file or link of a [`View`].
#[derive(Debug, Clone)]
pub struct ViewEntry {
    pub(crate) path: PathBuf,
    pub(crate) ident: Ident,
    pub(crate) link: bool,
}

impl ViewEntry {
    pub(crate) fn bytes(&self) -> &[u8] {
        self.path.as_os_str().as_encoded_bytes()
    }
}

impl View {
    /// Whether the sync left a file or link at `rel`.
    pub fn contains(&self, rel: &Path) -> bool {
        let rel = rel.as_os_str().as_encoded_bytes();
        self.entries
            .binary_search_by(|e| e.bytes().cmp(rel))
            .is_ok()
    }
}

impl Workspace {
    /// Takes the first free workspace for `job` under `root` (`root/job`, else `root/job~2`,
    /// ...) and brings it in line with `src`, leaving the directories in `keep` (relative,
    /// checked by the parser) as the job's last run left them. `clean` starts from an empty
    /// workspace instead, kept directories included.
    ///
    /// What the sync removes is moved aside and deleted in the background, so a job that
    /// left a large tree behind (`node_modules`) does not wait for its deletion.
    pub fn prepare(
        src: &Path,
        root: &Path,
        job: &str,
        keep: &[String],
        clean: bool,
    ) -> io::Result<(Workspace, Synced)> {
        create_private_dir(root)?;
        let trash = root.join(TRASH);
        let kept: Vec<PathBuf> = keep.iter().map(PathBuf::from).collect();
        let mut slot = 1;
        loop {
            let name = match slot {
                1 => job.to_string(),
                n => format!("{job}~{n}"),
            };
            slot += 1;
            let lock = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(root.join(format!("{name}.lock")))?;
            match lock.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => continue,
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
            let path = root.join(&name);
            let state = root.join(format!("{name}.state"));
            if clean {
                throw_away(&path, Some(&trash))?;
                let _ = std::fs::remove_file(&state);
            }
            let removing = Removing {
                kept: &kept,
                trash: Some(&trash),
            };
            let synced = sync(src, &path, Some(&state), &removing);
            sweep(&trash);
            let (synced, view) = synced?;
            let workspace = Workspace {
                path,
                trash,
                view: Arc::new(view),
                _lock: lock,
            };
            return Ok((workspace, synced));
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The workspace as the sync left it.
    pub fn view(&self) -> Arc<View> {
        self.view.clone()
    }

    /// Throws the kept directories away (moved aside, deleted in the background) and
    /// returns those that were there.
    ///
    /// The job made what is on the way to them: a folder on the path that is a link is not
    /// followed (the sync removes it before the next run anyway), and a link or file where
    /// a kept folder belongs is removed itself, never what it points at.
    pub fn discard(&self, keep: &[String]) -> io::Result<Vec<String>> {
        let mut gone = Vec::new();
        for rel in keep {
            let rel = Path::new(rel);
            let through_link = rel.ancestors().skip(1).any(|parent| {
                !parent.as_os_str().is_empty()
                    && self
                        .path
                        .join(parent)
                        .symlink_metadata()
                        .is_ok_and(|m| !m.is_dir())
            });
            if through_link {
                continue;
            }
            let path = self.path.join(rel);
            match path.symlink_metadata() {
                Ok(meta) if meta.is_dir() => throw_away(&path, Some(&self.trash))?,
                Ok(_) => std::fs::remove_file(&path)?,
                Err(_) => continue,
            }
            gone.push(rel.to_string_lossy().into_owned());
        }
        sweep(&self.trash);
        Ok(gone)
    }

    /// A file kept beside the workspace for it (`<root>/<name>.<extension>`): named after
    /// the whole workspace name, which may hold dots (`test (3.11)`).
    pub fn beside(&self, extension: &str) -> PathBuf {
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        self.path.with_file_name(format!("{name}.{extension}"))
    }
}

/// The folder under a workspace root that removed trees wait in until they are deleted. Not
/// a job's name: those are identifiers.
const TRASH: &str = ".trash";

/// What a sync must not remove, and where what it removes goes.
#[derive(Default)]
struct Removing<'a> {
    /// Directories left as the job left them (`keep:`).
    kept: &'a [PathBuf],
    /// Moved here and deleted in the background, else deleted in place.
    trash: Option<&'a Path>,
}

impl Removing<'_> {
    /// Whether `rel` is a kept directory or below one.
    fn kept(&self, rel: &Path) -> bool {
        self.kept.iter().any(|k| rel.starts_with(k))
    }

    /// Whether a kept directory lies below `rel`.
    fn holds_kept(&self, rel: &Path) -> bool {
        self.kept.iter().any(|k| k.starts_with(rel) && k != rel)
    }
}

/// Moves `path` into `trash` (on the same file system, so this is one rename), or removes it
/// in place when there is no trash or the rename fails.
fn throw_away(path: &Path, trash: Option<&Path>) -> io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let Ok(meta) = path.symlink_metadata() else {
        return Ok(());
    };
    if let (true, Some(trash)) = (meta.is_dir(), trash) {
        create_private_dir(trash)?;
        let name = format!(
            "{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        if std::fs::rename(path, trash.join(name)).is_ok() {
            return Ok(());
        }
    }
    remove_any(path)
}

/// Deletes what waits in `trash` on a thread of its own. A process that ends first leaves
/// the rest to the next sweep; two sweeps at once only race to delete the same files.
fn sweep(trash: &Path) {
    let Ok(entries) = std::fs::read_dir(trash) else {
        return;
    };
    let paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    if paths.is_empty() {
        return;
    }
    // A thread that cannot start leaves the trash to the next sweep.
    let _ = std::thread::Builder::new()
        .name("ferry-sweep".into())
        .spawn(move || {
            for path in paths {
                let _ = remove_any(&path);
            }
        });
}

/// `hashFiles(globs...)`: the sha256 of the sha256 of every file below `root` that matches
/// one of the globs (`!` excludes), in path order, as hex; empty when nothing matches, as in
/// GitHub Actions. `.git` is not searched.
pub fn hash_files(root: &Path, globs: &[String]) -> Result<String, String> {
    use sha2::{Digest, Sha256};
    let mut builder = ignore::overrides::OverrideBuilder::new(root);
    for glob in globs {
        builder
            .add(glob)
            .map_err(|e| format!("`{glob}` is not a glob: {e}"))?;
    }
    let matcher = builder.build().map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    let walker = ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    for entry in walker {
        let entry = entry.map_err(|e| e.to_string())?;
        if entry.file_type().is_some_and(|t| t.is_file())
            && matcher.matched(entry.path(), false).is_whitelist()
        {
            files.push(entry.into_path());
        }
    }
    if files.is_empty() {
        return Ok(String::new());
    }
    files.sort();
    let mut all = Sha256::new();
    for file in files {
        let bytes =
            std::fs::read(&file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
        all.update(Sha256::digest(&bytes));
    }
    Ok(all.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// What bringing a workspace in line took.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    /// Files copied or linked because they were new, changed in the repository, or changed
    /// by the job's last run.
    pub copied: u64,
    /// Files left as they were.
    pub unchanged: u64,
    /// Files and directories removed because the repository no longer has them (or never
    /// had: what a job created).
    pub removed: u64,
}

/// Copies `src` into an empty or missing `dst`; see [`sync_tree`] for what is copied.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<Synced> {
    sync_tree(src, dst, None)
}

/// Makes `dst` a copy of `src`, honouring `.gitignore` and skipping `.ferry`: anything in
/// `dst` that `src` does not have is removed, and a file is copied unless `state` (what the
/// last sync recorded) shows that neither side has changed since.
///
/// A `.git` directory is copied whole, so that `git log`, tags and diffs work in a job as
/// they do in a checkout, while nothing a job does reaches the real repository; a `.git`
/// *file* (a worktree or submodule pointing elsewhere) is left out for the same reason. Git's
/// object files, which git never changes once written, are copied once and then trusted by
/// name; never hard-linked, which would hand a job the repository's own files. Symbolic links are copied as links, never followed, on either side: a link a job
/// planted where the repository has a directory is removed, not written through.
pub fn sync_tree(src: &Path, dst: &Path, state: Option<&Path>) -> io::Result<Synced> {
    sync(src, dst, state, &Removing::default()).map(|(synced, _)| synced)
}

fn sync(
    src: &Path,
    dst: &Path,
    state: Option<&Path>,
    removing: &Removing,
) -> io::Result<(Synced, View)> {
    let mut plan = Plan::default();
    plan_filtered(src, &mut plan)?;
    let git = src.join(".git");
    if git.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        plan.entries.push((PathBuf::from(".git"), Kind::Dir));
        plan_all(&git, Path::new(".git"), false, &mut plan)?;
    }
    // A sync that is interrupted must not leave a record that vouches for files it had not
    // finished, so the old record is consumed before anything is touched.
    let (recorded, clock) = match state {
        Some(state) => {
            let recorded = State::take(state, src);
            let clock = Clock {
                path: state.with_extension("tick"),
            };
            (recorded, Some(clock))
        }
        None => (HashMap::new(), None),
    };
    let started = match (&clock, state.and_then(Path::parent)) {
        (Some(clock), Some(dir)) => {
            create_private_dir(dir)?;
            Some(clock.now()?)
        }
        _ => None,
    };
    let mut synced = Synced::default();
    let present = prepare_dirs(src, dst, &plan, removing, &mut synced)?;
    let files: Vec<_> = plan
        .entries
        .iter()
        .filter_map(|(rel, kind)| match kind {
            Kind::File { object: true } if present.contains(rel.as_path()) => {
                synced.unchanged += 1;
                None
            }
            Kind::File { object } => Some((rel.as_path(), *object)),
            _ => None,
        })
        .collect();
    let results = in_parallel(&files, |&(rel, object)| {
        sync_file(
            &src.join(rel),
            &dst.join(rel),
            object,
            recorded.get(rel.as_os_str()),
            started,
        )
    })?;
    let mut record = Vec::new();
    let mut view = View::default();
    for ((rel, object), (copied, kept, now)) in files.iter().zip(results) {
        if copied {
            synced.copied += 1;
        } else {
            synced.unchanged += 1;
        }
        if let Some(kept) = kept {
            record.push((*rel, kept));
        }
        if let (false, Some(ident)) = (*object || rel.starts_with(".git"), now) {
            view.entries.push(ViewEntry {
                path: rel.to_path_buf(),
                ident,
                link: false,
            });
        }
    }
    for (rel, kind) in &plan.entries {
        if *kind == Kind::Link && !rel.starts_with(".git") {
            view.entries.push(ViewEntry {
                path: rel.clone(),
                ident: ident_at(&dst.join(rel))?,
                link: true,
            });
        }
    }
    view.entries
        .sort_unstable_by(|a, b| a.bytes().cmp(b.bytes()));
    if let (Some(state), Some(clock)) = (state, clock) {
        // What the job does next must show in the files' change times, so the clock has to
        // move past every time recorded here before the job starts (file systems stamp
        // times in ticks of up to a few milliseconds).
        let newest = record
            .iter()
            .map(|(_, r)| r.src.changed.max(r.dst.changed))
            .max();
        let unchanged = synced.copied == 0 && synced.removed == 0 && record.len() == recorded.len();
        if unchanged && State::keep(state).is_ok() {
            // Every time in it is from earlier syncs, which already waited past them.
        } else if newest.is_none_or(|newest| clock.wait_past(newest)) {
            State::write(state, src, &record)?;
            let _ = std::fs::remove_file(State::taken(state));
        }
    }
    Ok((synced, view))
}

/// What the repository has, as paths relative to its root; a directory comes before what
/// it holds.
#[derive(Default)]
struct Plan {
    entries: Vec<(PathBuf, Kind)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    Link,
    /// `object`: one of git's objects, trusted by its name once it is there.
    File {
        object: bool,
    },
}

/// Everything below `src`, ignore files included (they are git's data here). Below
/// `objects/`, files are objects: git writes them once and never in place.
fn plan_all(src: &Path, rel: &Path, in_objects: bool, plan: &mut Plan) -> io::Result<()> {
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let rel = rel.join(entry.file_name());
        if kind.is_dir() {
            let objects = in_objects || entry.file_name() == "objects";
            plan.entries.push((rel.clone(), Kind::Dir));
            plan_all(&entry.path(), &rel, objects, plan)?;
        } else if kind.is_symlink() {
            plan.entries.push((rel, Kind::Link));
        } else if kind.is_file() {
            plan.entries.push((rel, Kind::File { object: in_objects }));
        }
    }
    Ok(())
}

fn plan_filtered(src: &Path, plan: &mut Plan) -> io::Result<()> {
    let walker = ignore::WalkBuilder::new(src)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|e| !matches!(e.file_name().to_str(), Some(".git" | ".ferry")))
        .build();
    for entry in walker {
        let entry = entry.map_err(io::Error::other)?;
        let rel = entry.path().strip_prefix(src).map_err(io::Error::other)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let Some(kind) = entry.file_type() else {
            continue;
        };
        let kind = if kind.is_dir() {
            Kind::Dir
        } else if kind.is_symlink() {
            Kind::Link
        } else if kind.is_file() {
            Kind::File { object: false }
        } else {
            continue;
        };
        plan.entries.push((rel.to_path_buf(), kind));
    }
    Ok(())
}

/// Removes from `dst` what the plan does not have (or has as another kind of entry), then
/// creates the plan's directories and links. Files are left to [`sync_file`], except git's
/// objects already there: an object's name is the hash of its content, so a file of that name
/// needs no further look (git itself trusts an object by its name the same way).
fn prepare_dirs<'p>(
    src: &Path,
    dst: &Path,
    plan: &'p Plan,
    removing: &Removing,
    synced: &mut Synced,
) -> io::Result<HashSet<&'p Path>> {
    let mut present = HashSet::new();
    match dst.symlink_metadata() {
        Ok(m) if m.is_dir() => {
            let planned: HashMap<&Path, Kind> = plan
                .entries
                .iter()
                .map(|(p, k)| (p.as_path(), *k))
                .collect();
            prune(dst, Path::new(""), &planned, removing, &mut present, synced)?;
        }
        Ok(_) => {
            std::fs::remove_file(dst)?;
            create_private_dir(dst)?;
        }
        Err(_) => create_private_dir(dst)?,
    }
    for (rel, kind) in &plan.entries {
        let target = dst.join(rel);
        match kind {
            Kind::Dir => match std::fs::create_dir(&target) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            },
            Kind::Link => {
                let to = std::fs::read_link(src.join(rel))?;
                if std::fs::read_link(&target).is_ok_and(|t| t == to) {
                    synced.unchanged += 1;
                    continue;
                }
                remove_any(&target)?;
                make_link(&src.join(rel), &to, &target)?;
                synced.copied += 1;
            }
            Kind::File { .. } => {}
        }
    }
    Ok(present)
}

/// Removes what is below `dst/rel` and not planned, except kept directories. Links are never
/// followed: a link where the plan has a directory, or where a kept directory belongs, is
/// removed like any other stranger. What the repository has wins over what is kept.
fn prune<'p>(
    dst: &Path,
    rel: &Path,
    planned: &HashMap<&'p Path, Kind>,
    removing: &Removing,
    present: &mut HashSet<&'p Path>,
    synced: &mut Synced,
) -> io::Result<()> {
    for entry in std::fs::read_dir(dst.join(rel))? {
        let entry = entry?;
        let rel = rel.join(entry.file_name());
        let kind = entry.file_type()?;
        let keep = match planned.get_key_value(rel.as_path()) {
            Some((_, Kind::Dir)) => kind.is_dir(),
            Some((_, Kind::Link)) => kind.is_symlink(),
            Some((planned, Kind::File { object })) => {
                if *object && kind.is_file() {
                    present.insert(*planned);
                }
                kind.is_file()
            }
            // The job's own: a kept directory itself must be one, not a link to elsewhere.
            None if removing.kept(&rel) => {
                if kind.is_dir() || removing.kept.iter().all(|k| k != &rel) {
                    continue;
                }
                false
            }
            // On the way to a kept directory: pruned, not removed whole.
            None => kind.is_dir() && removing.holds_kept(&rel),
        };
        if !keep {
            throw_away(&entry.path(), removing.trash)?;
            synced.removed += 1;
        } else if kind.is_dir() {
            prune(dst, &rel, planned, removing, present, synced)?;
        }
    }
    Ok(())
}

/// Removes a file, link or directory tree if it exists. Directories a job made read-only (Go's
/// module cache does) are made writable first.
fn remove_any(path: &Path) -> io::Result<()> {
    let Ok(meta) = path.symlink_metadata() else {
        return Ok(());
    };
    if !meta.is_dir() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                make_writable(path.parent().unwrap_or(path))?;
                std::fs::remove_file(path)
            }
            other => other,
        };
    }
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_writable(path)?;
            std::fs::remove_dir_all(path)
        }
        other => other,
    }
}

/// Gives the owner write access to `dir` and every directory below it.
fn make_writable(dir: &Path) -> io::Result<()> {
    let meta = dir.symlink_metadata()?;
    if !meta.is_dir() {
        return Ok(());
    }
    let mut perms = meta.permissions();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        perms.set_mode(perms.mode() | 0o700);
    }
    #[cfg(not(unix))]
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(dir, perms)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            make_writable(&entry.path())?;
        }
    }
    Ok(())
}

/// Brings one file in line; returns whether it was copied, what to record about it, and
/// the copy as it is now.
fn sync_file(
    from: &Path,
    to: &Path,
    object: bool,
    recorded: Option<&Recorded>,
    started: Option<Stamp>,
) -> io::Result<(bool, Option<Recorded>, Option<Ident>)> {
    if object {
        // Copied, never hard-linked: through a shared inode, a step that made the file
        // writable would rewrite the repository's own object. Once there, an object is
        // trusted by its name (see `prepare_dirs`), so this copy is paid once.
        remove_any(to)?;
        std::fs::copy(from, to)?;
        return Ok((true, None, None));
    }
    let src = ident_at(from)?;
    let dst = ident_at(to).ok();
    if let (Some(recorded), Some(dst)) = (recorded, dst)
        && recorded.src == src
        && recorded.dst == dst
    {
        return Ok((false, Some(*recorded), Some(dst)));
    }
    // A fresh file, not a write into the old one: whatever the old one was linked to stays
    // untouched.
    remove_any(to)?;
    std::fs::copy(from, to)?;
    let now = ident_at(to)?;
    // A file that changed in the clock tick the sync started in may change again within that
    // tick without its times showing it; it is copied again next time rather than trusted.
    let settled = started.is_some_and(|started| src.changed < started);
    let kept = settled.then_some(Recorded { src, dst: now });
    Ok((true, kept, Some(now)))
}

/// The [`Ident`] of the file at `path`, not following a link. A sync looks at many files in
/// few directories: a handle on the last directories each thread looked in turns each look
/// into one name lookup instead of a walk of the whole path (most of a sync's time in a
/// repository of 100,000 files).
#[cfg(unix)]
fn ident_at(path: &Path) -> io::Result<Ident> {
    use std::cell::RefCell;
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    thread_local! {
        static DIRS: RefCell<Vec<(PathBuf, OwnedFd)>> = const { RefCell::new(Vec::new()) };
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Ident::of(&path.symlink_metadata()?));
    };
    let c = |bytes: &[u8]| CString::new(bytes).map_err(io::Error::other);
    DIRS.with(|dirs| {
        let mut dirs = dirs.borrow_mut();
        let fd = match dirs.iter().position(|(p, _)| p == parent) {
            Some(i) => dirs[i].1.as_raw_fd(),
            None => {
                #[cfg(any(target_os = "linux", target_os = "android"))]
                let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
                #[cfg(not(any(target_os = "linux", target_os = "android")))]
                let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
                let dir = c(parent.as_os_str().as_bytes())?;
                // SAFETY: `dir` is a valid C string; the returned descriptor is owned below.
                let raw = unsafe { libc::open(dir.as_ptr(), flags) };
                if raw < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: `raw` is a descriptor this call just opened and nothing else owns.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                // A sync goes through a source and a destination directory at a time.
                if dirs.len() >= 2 {
                    dirs.remove(0);
                }
                let fd = owned.as_raw_fd();
                dirs.push((parent.to_path_buf(), owned));
                fd
            }
        };
        let name = c(name.as_bytes())?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `fd` is open, `name` a valid C string, and `st` is written on success.
        let rc = unsafe {
            libc::fstatat(
                fd,
                name.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fstatat succeeded, so it filled `st`.
        let st = unsafe { st.assume_init() };
        let stamp = |s: i64, ns: i64| Stamp::from(s) * 1_000_000_000 + Stamp::from(ns);
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        Ok(Ident {
            len: st.st_size as u64,
            modified: stamp(st.st_mtime as i64, st.st_mtime_nsec as i64),
            changed: stamp(st.st_ctime as i64, st.st_ctime_nsec as i64),
            id: (st.st_ino as u64) ^ (st.st_dev as u64).rotate_left(32),
            mode: st.st_mode as u32,
        })
    })
}

#[cfg(not(unix))]
fn ident_at(path: &Path) -> io::Result<Ident> {
    Ok(Ident::of(&path.symlink_metadata()?))
}

/// Runs `f` over `items` on a few threads and returns the results in order.
pub(crate) fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> io::Result<R> + Sync,
) -> io::Result<Vec<R>> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let chunk = items.len().div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<io::Result<Vec<R>>>()))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for worker in workers {
            out.extend(
                worker
                    .join()
                    .map_err(|_| io::Error::other("a copying thread panicked"))??,
            );
        }
        Ok(out)
    })
}

/// A file system time stamp in nanoseconds (100 ns units on Windows).
pub(crate) type Stamp = i128;

/// What identifies a file's content without reading it: if any part moves, the file may
/// have changed. `changed` moves on every write and cannot be set back by a tool (the inode
/// change time; on Windows, where there is none, the last write time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ident {
    pub(crate) len: u64,
    pub(crate) modified: Stamp,
    pub(crate) changed: Stamp,
    pub(crate) id: u64,
    pub(crate) mode: u32,
}

impl Ident {
    #[cfg(unix)]
    pub(crate) fn of(m: &Metadata) -> Ident {
        use std::os::unix::fs::MetadataExt;
        let stamp = |s: i64, ns: i64| Stamp::from(s) * 1_000_000_000 + Stamp::from(ns);
        Ident {
            len: m.len(),
            modified: stamp(m.mtime(), m.mtime_nsec()),
            changed: stamp(m.ctime(), m.ctime_nsec()),
            id: m.ino() ^ m.dev().rotate_left(32),
            mode: m.mode(),
        }
    }

    #[cfg(windows)]
    pub(crate) fn of(m: &Metadata) -> Ident {
        use std::os::windows::fs::MetadataExt;
        Ident {
            len: m.len(),
            modified: Stamp::from(m.creation_time()),
            changed: Stamp::from(m.last_write_time()),
            id: 0,
            mode: m.file_attributes(),
        }
    }

    pub(crate) fn to_bytes(self) -> [u8; IDENT_BYTES] {
        let mut out = [0; IDENT_BYTES];
        out[..8].copy_from_slice(&self.len.to_le_bytes());
        out[8..24].copy_from_slice(&self.modified.to_le_bytes());
        out[24..40].copy_from_slice(&self.changed.to_le_bytes());
        out[40..48].copy_from_slice(&self.id.to_le_bytes());
        out[48..52].copy_from_slice(&self.mode.to_le_bytes());
        out
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Ident {
        let n = |r: std::ops::Range<usize>| &b[r];
        Ident {
            len: u64::from_le_bytes(n(0..8).try_into().unwrap_or_default()),
            modified: Stamp::from_le_bytes(n(8..24).try_into().unwrap_or_default()),
            changed: Stamp::from_le_bytes(n(24..40).try_into().unwrap_or_default()),
            id: u64::from_le_bytes(n(40..48).try_into().unwrap_or_default()),
            mode: u32::from_le_bytes(n(48..52).try_into().unwrap_or_default()),
        }
    }
}

/// A file as the last sync left it on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Recorded {
    src: Ident,
    dst: Ident,
}

/// The record of the last sync: one line per file that was in line with the repository.
struct State;

const STATE_HEADER: &str = "ferry-workspace 2";

impl State {
    /// Reads and removes the record. A record for another source, or one that does not
    /// parse, vouches for nothing.
    fn take(path: &Path, src: &Path) -> HashMap<std::ffi::OsString, Recorded> {
        // Moved aside rather than removed: a sync that changes nothing puts it back.
        let taken = State::taken(path);
        let bytes = match std::fs::rename(path, &taken) {
            Ok(()) => std::fs::read(&taken).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let header = format!("{STATE_HEADER} {}", src.display());
        read_records::<{ 2 * IDENT_BYTES }>(&bytes, &header)
            .into_iter()
            .map(|(fields, rel)| {
                let (s, d) = fields.split_at(IDENT_BYTES);
                let recorded = Recorded {
                    src: Ident::from_bytes(s),
                    dst: Ident::from_bytes(d),
                };
                (rel.into_os_string(), recorded)
            })
            .collect()
    }

    fn taken(path: &Path) -> PathBuf {
        path.with_extension("state.taken")
    }

    /// Puts back the record [`State::take`] read, when the sync found everything as it
    /// said.
    fn keep(path: &Path) -> io::Result<()> {
        std::fs::rename(State::taken(path), path)
    }

    /// Writes the record whole or not at all. It is not synced to disk: a record a power cut
    /// left empty or cut short vouches for fewer files, never for wrong ones.
    fn write(path: &Path, src: &Path, record: &[(&Path, Recorded)]) -> io::Result<()> {
        let header = format!("{STATE_HEADER} {}", src.display());
        let bytes = write_records(
            &header,
            record.iter().map(|(rel, r)| {
                let mut fields = r.src.to_bytes().to_vec();
                fields.extend_from_slice(&r.dst.to_bytes());
                (fields, *rel)
            }),
        );
        let tmp = path.with_extension("state.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        std::fs::rename(&tmp, path)
    }
}

/// Bytes of an [`Ident`] in a record file.
pub(crate) const IDENT_BYTES: usize = 8 + 16 + 16 + 8 + 4;

/// A file of records, read whole at the start of a run: a header line, then per record `N`
/// bytes of fields, the path's length (u16, little-endian) and the path (UTF-8; a path that
/// is not, or is longer, is left out and simply looked at again next time). Binary, because
/// parsing text was most of the cost of a repository of 100,000 files.
pub(crate) fn write_records<'a>(
    header: &str,
    records: impl Iterator<Item = (Vec<u8>, &'a Path)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 << 10);
    out.extend_from_slice(header.as_bytes());
    out.push(b'\n');
    for (fields, rel) in records {
        let Some(rel) = rel.to_str().filter(|r| r.len() <= usize::from(u16::MAX)) else {
            continue;
        };
        out.extend_from_slice(&fields);
        out.extend_from_slice(&(rel.len() as u16).to_le_bytes());
        out.extend_from_slice(rel.as_bytes());
    }
    out
}

/// The records of [`write_records`] with `header`; none when the header differs or the file
/// is cut short.
pub(crate) fn read_records<const N: usize>(bytes: &[u8], header: &str) -> Vec<([u8; N], PathBuf)> {
    let mut out = Vec::new();
    let Some(rest) = bytes
        .strip_prefix(header.as_bytes())
        .and_then(|r| r.strip_prefix(b"\n"))
    else {
        return out;
    };
    let mut at = 0;
    while at < rest.len() {
        let Some(fields) = rest.get(at..at + N) else {
            return Vec::new();
        };
        let Some(len) = rest.get(at + N..at + N + 2) else {
            return Vec::new();
        };
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        let start = at + N + 2;
        let Some(Ok(rel)) = rest.get(start..start + len).map(std::str::from_utf8) else {
            return Vec::new();
        };
        out.push((fields.try_into().unwrap_or([0; N]), PathBuf::from(rel)));
        at = start + len;
    }
    out
}

/// The file system's clock, read by touching a file beside the workspace.
pub(crate) struct Clock {
    pub(crate) path: PathBuf,
}

impl Clock {
    pub(crate) fn now(&self) -> io::Result<Stamp> {
        // Any write stamps the file with the clock's current tick.
        std::fs::write(&self.path, b"tick")?;
        Ok(Ident::of(&self.path.symlink_metadata()?).changed)
    }

    /// Waits until the clock reads later than `stamp`; false if it does not within seconds
    /// (a file system with a coarse clock, or a clock set back).
    pub(crate) fn wait_past(&self, stamp: Stamp) -> bool {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            match self.now() {
                Ok(now) if now > stamp => return true,
                Ok(_) => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => return false,
            }
        }
        false
    }
}

pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(unix)]
fn make_link(_src: &Path, to: &Path, dst: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(to, dst)
}

#[cfg(windows)]
fn make_link(src: &Path, to: &Path, dst: &Path) -> io::Result<()> {
    if src.is_dir() {
        std::os::windows::fs::symlink_dir(to, dst)
    } else {
        std::os::windows::fs::symlink_file(to, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_look_through_a_directory_handle_sees_what_a_stat_sees() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a");
        std::fs::write(&file, "x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("a", dir.path().join("link")).unwrap();
        for name in ["a", "link"] {
            let path = dir.path().join(name);
            let Ok(meta) = path.symlink_metadata() else {
                continue;
            };
            assert_eq!(ident_at(&path).unwrap(), Ident::of(&meta), "{name}");
        }
        std::fs::write(&file, "changed").unwrap();
        assert_eq!(
            ident_at(&file).unwrap(),
            Ident::of(&file.symlink_metadata().unwrap())
        );
        assert!(ident_at(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn copies_respecting_gitignore() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join(".gitignore"), "target/\n").unwrap();
        std::fs::create_dir_all(src.path().join("src")).unwrap();
        std::fs::create_dir_all(src.path().join("target")).unwrap();
        std::fs::create_dir_all(src.path().join(".ferry/runs")).unwrap();
        std::fs::write(src.path().join("src/main.rs"), "fn main() {}").unwrap();
        std::fs::write(src.path().join("target/big"), "x").unwrap();
        // Git's own files are copied even where .gitignore would skip them.
        std::fs::create_dir_all(src.path().join(".git/refs/target")).unwrap();
        std::fs::write(src.path().join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(src.path().join(".git/refs/target/x"), "1").unwrap();
        std::fs::create_dir_all(src.path().join(".git/objects/ab")).unwrap();
        std::fs::write(src.path().join(".git/objects/ab/cdef"), "blob").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/passwd", src.path().join("link")).unwrap();
        copy_tree(src.path(), &dst.path().join("ws")).unwrap();
        let ws = dst.path().join("ws");
        assert!(ws.join("src/main.rs").is_file());
        assert!(!ws.join("target").exists());
        assert!(!ws.join(".ferry").exists());
        assert!(ws.join(".git/HEAD").is_file());
        // Everything is the job's own, git's objects too: a step that makes an object
        // writable and rewrites it changes its copy, not the repository.
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
            assert_ne!(
                ino(&src.path().join(".git/objects/ab/cdef")),
                ino(&ws.join(".git/objects/ab/cdef"))
            );
            let copy = ws.join(".git/objects/ab/cdef");
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
            std::fs::write(&copy, "tampered").unwrap();
            assert_eq!(
                std::fs::read_to_string(src.path().join(".git/objects/ab/cdef")).unwrap(),
                "blob"
            );
            assert_ne!(
                ino(&src.path().join(".git/HEAD")),
                ino(&ws.join(".git/HEAD"))
            );
        }
        assert!(ws.join(".git/refs/target/x").is_file());
        #[cfg(unix)]
        assert!(
            ws.join("link")
                .symlink_metadata()
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn read(root: &Path, rel: &str) -> String {
        std::fs::read_to_string(root.join(rel)).unwrap()
    }

    /// A repository of a few files, and the paths of its workspace and sync record.
    fn repo() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("repo");
        write(&src, ".gitignore", "target/\n");
        write(&src, "src/lib.rs", "pub fn a() {}\n");
        write(&src, "src/util/mod.rs", "pub fn b() {}\n");
        write(&src, "README.md", "hello\n");
        write(&src, ".git/HEAD", "ref: refs/heads/main\n");
        write(&src, ".git/objects/ab/cdef", "blob");
        // Files written in the clock tick a sync starts in are not trusted by the next one, so
        // the tests start a tick later, as a user's edits usually do.
        let clock = Clock {
            path: tmp.path().join("tick"),
        };
        assert!(clock.wait_past(clock.now().unwrap()));
        let (dst, state) = (
            tmp.path().join("work/job"),
            tmp.path().join("work/job.state"),
        );
        (tmp, src, dst, state)
    }

    #[test]
    fn a_second_sync_of_an_unchanged_tree_copies_nothing() {
        let (_tmp, src, dst, state) = repo();
        let first = sync_tree(&src, &dst, Some(&state)).unwrap();
        assert_eq!((first.copied, first.unchanged, first.removed), (6, 0, 0));
        let second = sync_tree(&src, &dst, Some(&state)).unwrap();
        assert_eq!((second.copied, second.unchanged, second.removed), (0, 6, 0));
        assert_eq!(read(&dst, "src/lib.rs"), "pub fn a() {}\n");
    }

    #[test]
    fn a_sync_undoes_what_the_job_did_and_follows_the_repository() {
        let (_tmp, src, dst, state) = repo();
        sync_tree(&src, &dst, Some(&state)).unwrap();
        // The job: edits a tracked file in place with the same length and sets its
        // modification time back, creates files (some ignored), removes one.
        let edited = dst.join("src/lib.rs");
        let before = std::fs::metadata(&edited).unwrap().modified().unwrap();
        std::fs::write(&edited, "pub fn z() {}\n").unwrap();
        File::options()
            .write(true)
            .open(&edited)
            .unwrap()
            .set_modified(before)
            .unwrap();
        write(&dst, "target/debug/out", "build output");
        write(&dst, "new.txt", "made by the job");
        std::fs::remove_file(dst.join("README.md")).unwrap();
        // Meanwhile the repository: one file changed, one removed, one added.
        write(&src, "src/util/mod.rs", "pub fn b() { changed() }\n");
        std::fs::remove_file(src.join("src/util/mod.rs")).unwrap();
        write(&src, "src/util/mod.rs", "pub fn b2() {}\n");
        write(&src, "docs/guide.md", "guide\n");
        let synced = sync_tree(&src, &dst, Some(&state)).unwrap();
        assert_eq!(read(&dst, "src/lib.rs"), "pub fn a() {}\n");
        assert_eq!(read(&dst, "src/util/mod.rs"), "pub fn b2() {}\n");
        assert_eq!(read(&dst, "README.md"), "hello\n");
        assert_eq!(read(&dst, "docs/guide.md"), "guide\n");
        assert!(!dst.join("target").exists());
        assert!(!dst.join("new.txt").exists());
        assert_eq!((synced.copied, synced.removed), (4, 2), "{synced:?}");
    }

    #[cfg(unix)]
    #[test]
    fn a_link_planted_by_a_job_is_removed_not_written_through() {
        let (tmp, src, dst, state) = repo();
        sync_tree(&src, &dst, Some(&state)).unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::remove_dir_all(dst.join("src")).unwrap();
        std::os::unix::fs::symlink(&outside, dst.join("src")).unwrap();
        sync_tree(&src, &dst, Some(&state)).unwrap();
        assert!(dst.join("src").symlink_metadata().unwrap().is_dir());
        assert_eq!(read(&dst, "src/lib.rs"), "pub fn a() {}\n");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn read_only_directories_a_job_made_are_removed() {
        use std::os::unix::fs::PermissionsExt;
        let (_tmp, src, dst, state) = repo();
        sync_tree(&src, &dst, Some(&state)).unwrap();
        write(&dst, "gomod/cache/x.go", "package x");
        for dir in ["gomod/cache", "gomod"] {
            std::fs::set_permissions(dst.join(dir), std::fs::Permissions::from_mode(0o555))
                .unwrap();
        }
        sync_tree(&src, &dst, Some(&state)).unwrap();
        assert!(!dst.join("gomod").exists());
    }

    #[test]
    fn an_interrupted_sync_leaves_no_record_to_trust() {
        let (_tmp, src, dst, state) = repo();
        sync_tree(&src, &dst, Some(&state)).unwrap();
        assert!(state.is_file());
        // A sync that dies after reading the record has consumed it...
        let _ = State::take(&state, &src);
        assert!(!state.exists());
        std::fs::write(dst.join("src/lib.rs"), "pub fn q() {}\n").unwrap();
        // ...so the next one checks everything and copies every file again.
        let synced = sync_tree(&src, &dst, Some(&state)).unwrap();
        assert_eq!(synced.copied, 5, "{synced:?}");
        assert_eq!(read(&dst, "src/lib.rs"), "pub fn a() {}\n");
    }

    #[test]
    fn a_record_of_another_repository_vouches_for_nothing() {
        let (tmp, src, dst, state) = repo();
        sync_tree(&src, &dst, Some(&state)).unwrap();
        let other = tmp.path().join("other");
        std::fs::rename(&src, &other).unwrap();
        let synced = sync_tree(&other, &dst, Some(&state)).unwrap();
        assert_eq!(
            synced.unchanged, 1,
            "only the object, trusted by name: {synced:?}"
        );
    }

    #[test]
    fn the_same_job_in_two_runs_at_once_gets_two_workspaces() {
        let (tmp, src, _, _) = repo();
        let root = tmp.path().join("work");
        let (first, _) = Workspace::prepare(&src, &root, "build", &[], false).unwrap();
        let (second, _) = Workspace::prepare(&src, &root, "build", &[], false).unwrap();
        assert_eq!(first.path(), root.join("build"));
        assert_eq!(second.path(), root.join("build~2"));
        drop(first);
        let (third, synced) = Workspace::prepare(&src, &root, "build", &[], false).unwrap();
        assert_eq!(third.path(), root.join("build"));
        assert_eq!(synced.copied, 0);
    }

    fn keep(dirs: &[&str]) -> Vec<String> {
        dirs.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn kept_directories_outlive_the_sync_and_the_rest_of_what_a_job_left_does_not() {
        let (tmp, src, _, _) = repo();
        let root = tmp.path().join("work");
        let kept = keep(&["target", "web/node_modules"]);
        let (ws, _) = Workspace::prepare(&src, &root, "build", &kept, false).unwrap();
        let dst = ws.path().to_path_buf();
        write(&dst, "target/debug/app", "built");
        write(&dst, "web/node_modules/left-pad/index.js", "pad");
        write(&dst, "web/stray.js", "stray");
        write(&dst, "src/generated.rs", "stray");
        write(&dst, "dist/app", "stray");
        drop(ws);
        let (ws, synced) = Workspace::prepare(&src, &root, "build", &kept, false).unwrap();
        assert_eq!(read(&dst, "target/debug/app"), "built");
        assert_eq!(read(&dst, "web/node_modules/left-pad/index.js"), "pad");
        for gone in ["web/stray.js", "src/generated.rs", "dist"] {
            assert!(!dst.join(gone).exists(), "{gone} was kept: {synced:?}");
        }
        assert_eq!(synced.removed, 3, "{synced:?}");
        // What is kept is not part of the sync's view: the step cache does not key on it.
        assert!(!ws.view().contains(Path::new("target/debug/app")));
        drop(ws);
        // A directory no longer kept goes like anything else a job made.
        let (_ws, _) = Workspace::prepare(&src, &root, "build", &keep(&["target"]), false).unwrap();
        assert!(!dst.join("web").exists());
        assert_eq!(read(&dst, "target/debug/app"), "built");
    }

    #[test]
    fn a_kept_directory_replaced_by_a_link_or_a_file_is_removed_not_followed() {
        let (tmp, src, _, _) = repo();
        let root = tmp.path().join("work");
        let outside = tmp.path().join("secret");
        write(&outside, "key", "private");
        let kept = keep(&["target", "cache/deep"]);
        let (ws, _) = Workspace::prepare(&src, &root, "build", &kept, false).unwrap();
        let dst = ws.path().to_path_buf();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&outside, dst.join("target")).unwrap();
            // A link on the way to a kept directory is not walked either.
            std::os::unix::fs::symlink(&outside, dst.join("cache")).unwrap();
        }
        #[cfg(not(unix))]
        {
            write(&dst, "target", "a file");
            write(&dst, "cache", "a file");
        }
        drop(ws);
        let (_ws, _) = Workspace::prepare(&src, &root, "build", &kept, false).unwrap();
        assert!(dst.join("target").symlink_metadata().is_err());
        assert!(dst.join("cache").symlink_metadata().is_err());
        assert_eq!(read(&outside, "key"), "private");
    }

    #[test]
    fn the_repository_wins_over_what_is_kept() {
        let (tmp, src, _, _) = repo();
        write(&src, "vendor/README", "tracked");
        let root = tmp.path().join("work");
        let kept = keep(&["vendor"]);
        let (ws, _) = Workspace::prepare(&src, &root, "build", &kept, false).unwrap();
        let dst = ws.path().to_path_buf();
        write(&dst, "vendor/README", "changed by the job");
        write(&dst, "vendor/pkg/lib.rs", "downloaded");
        drop(ws);
        let (_ws, _) = Workspace::prepare(&src, &root, "build", &kept, false).unwrap();
        assert_eq!(read(&dst, "vendor/README"), "tracked");
        assert_eq!(read(&dst, "vendor/pkg/lib.rs"), "downloaded");
    }

    #[test]
    fn clean_and_discard_throw_kept_directories_away_in_the_background() {
        let (tmp, src, _, _) = repo();
        let root = tmp.path().join("work");
        let kept = keep(&["target"]);
        let (ws, _) = Workspace::prepare(&src, &root, "build", &kept, false).unwrap();
        let dst = ws.path().to_path_buf();
        write(&dst, "target/a", "1");
        assert_eq!(ws.discard(&kept).unwrap(), kept);
        assert!(!dst.join("target").exists());
        assert!(ws.discard(&kept).unwrap().is_empty());
        write(&dst, "target/b", "2");
        drop(ws);
        let (_ws, synced) = Workspace::prepare(&src, &root, "build", &kept, true).unwrap();
        assert!(!dst.join("target").exists());
        assert_eq!(
            synced.copied, 6,
            "a clean workspace copies everything: {synced:?}"
        );
        // The sweep runs on its own thread; the trash empties soon after.
        let trash = root.join(TRASH);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_dir(&trash).unwrap().next().is_some() {
            assert!(Instant::now() < deadline, "the trash was never emptied");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn what_the_sync_removes_is_moved_aside_not_deleted_on_the_way() {
        let (tmp, src, _, _) = repo();
        let root = tmp.path().join("work");
        let (ws, _) = Workspace::prepare(&src, &root, "build", &[], false).unwrap();
        for i in 0..200 {
            write(ws.path(), &format!("node_modules/p{i}/index.js"), "x");
        }
        let dst = ws.path().to_path_buf();
        drop(ws);
        let (_ws, synced) = Workspace::prepare(&src, &root, "build", &[], false).unwrap();
        assert_eq!(synced.removed, 1, "{synced:?}");
        assert!(!dst.join("node_modules").exists());
    }

    #[cfg(unix)]
    #[test]
    fn discarding_never_follows_a_link_the_job_planted() {
        let (tmp, src, _, _) = repo();
        let root = tmp.path().join("work");
        let home = tmp.path().join("home");
        write(&home, ".ssh/id_ed25519", "private");
        write(&home, "notes", "mine");
        let kept = keep(&["h/.ssh", "target"]);
        let (ws, _) = Workspace::prepare(&src, &root, "build", &kept, false).unwrap();
        std::os::unix::fs::symlink(&home, ws.path().join("h")).unwrap();
        std::os::unix::fs::symlink(home.join("notes"), ws.path().join("target")).unwrap();
        assert_eq!(ws.discard(&kept).unwrap(), ["target"]);
        assert_eq!(read(&home, ".ssh/id_ed25519"), "private");
        assert_eq!(read(&home, "notes"), "mine");
        assert!(ws.path().join("target").symlink_metadata().is_err());
    }

    #[test]
    fn files_beside_a_workspace_are_named_after_all_of_its_name() {
        let (tmp, src, _, _) = repo();
        let root = tmp.path().join("work");
        let (a, _) = Workspace::prepare(&src, &root, "test (3.11)", &[], false).unwrap();
        let (b, _) = Workspace::prepare(&src, &root, "test (3.12)", &[], false).unwrap();
        assert_eq!(a.beside("kept"), root.join("test (3.11).kept"));
        assert_ne!(a.beside("digests"), b.beside("digests"));
    }
}
