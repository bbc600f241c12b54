//! What the sandbox refuses a running step, said in the step's log with the grant that
//! allows it.
//!
//! A refusal reaches the guest as a WASI error code, which every language prints as a bare
//! errno (`Operation not permitted (os error 63)`). The host knows which grant was missing,
//! so it says so: file operations (through the `wasi:filesystem` functions shadowed here),
//! connects and name lookups. Each refusal is logged once per step, and a step that then
//! fails is reported as `denied`.

use crate::state::{Site, StepState};
use ferry_engine::{Level, StepLog};
use ferry_model::Access;
use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::FsResult;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::sockets::WasiSocketsView;

/// Most refusals one step logs; a loop over a denied folder says it once, not a thousand
/// times.
const MAX_SAID: usize = 20;

/// The refusals of one step: cheap to clone into the network check, which runs outside
/// the store.
#[derive(Clone)]
pub struct Refusals {
    said: Arc<Mutex<BTreeSet<String>>>,
    /// A connect or lookup was refused: its error reaches the guest in words no language
    /// shares (`gaierror: Non-recoverable error`), so any failure after it is a denial.
    network: Arc<AtomicBool>,
    log: StepLog,
    site: Arc<Site>,
}

impl Refusals {
    pub fn new(log: StepLog, site: Site) -> Refusals {
        Refusals {
            said: Arc::default(),
            network: Arc::default(),
            log,
            site: Arc::new(site),
        }
    }

    /// Logs that `what` was refused, with the YAML that grants it, once per step.
    pub fn refuse(&self, what: &str, yaml: &str) {
        let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
        if said.len() >= MAX_SAID || !said.insert(what.to_string()) {
            return;
        }
        drop(said);
        // Paths and names come from the guest: a line break in one must not start a line
        // that looks like the host's.
        let clean = |s: &str| s.replace(|c: char| c.is_control(), "?");
        let text = crate::grant::runtime_denial_text(&self.site, &clean(what), &clean(yaml));
        for line in text.lines() {
            self.log
                .line(Level::Error, &format!("[ferry] denied: {line}"));
        }
    }

    /// Logs a refused connect or name lookup, as [`Refusals::refuse`] does.
    pub fn refuse_network(&self, what: &str, yaml: &str) {
        self.network.store(true, Ordering::Relaxed);
        self.refuse(what, yaml);
    }

    /// Whether a step that failed with `message` failed on a refusal: a network refusal
    /// came first, or a file refusal did and the message has the words of the error code
    /// (a step that handled a refusal and failed for its own reasons stays failed).
    pub fn explain_failure(&self, message: &str) -> bool {
        self.network.load(Ordering::Relaxed) || (self.any() && refused_words(message))
    }

    /// Whether anything was refused so far.
    pub fn any(&self) -> bool {
        !self
            .said
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

/// Where each directory the guest holds open is, as the guest names it and on the host:
/// the preopens, and the folders opened under them. A descriptor's number is reused once
/// it is dropped, and every descriptor is made by `get-directories` or `open-at`, which
/// record a directory and forget a file, so an entry is right for every live directory
/// descriptor. Host memory is bounded: at most [`MAX_DIRS`] entries, names of at most
/// [`MAX_PATH`] bytes (a deeper folder is not named, and its refusals are not logged).
#[derive(Default)]
pub struct OpenDirs(HashMap<u32, (String, PathBuf)>);

const MAX_DIRS: usize = 4096;

/// The longest path a refusal is worked out for: the guest chooses it, and each of its
/// parts is looked up on the host.
const MAX_PATH: usize = 1024;

/// The version of `wasi:filesystem` and `wasi:sockets` that wasmtime-wasi defines; guests
/// importing an older 0.2 version are linked to it too.
const FILESYSTEM: &str = "wasi:filesystem/types@0.2.12";
const PREOPENS: &str = "wasi:filesystem/preopens@0.2.12";
const NAME_LOOKUP: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// Replaces the filesystem and name lookup functions that can be refused with ones that
/// call wasmtime-wasi's and log the refusal.
pub fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.instance(PREOPENS)?.func_wrap(
        "get-directories",
        |mut store: StoreContextMut<'_, StepState>, (): ()| {
            let dirs = wasmtime_wasi::p2::bindings::filesystem::preopens::Host::get_directories(
                &mut store.data_mut().filesystem(),
            )?;
            let state = store.data_mut();
            for (fd, name) in &dirs {
                let host = state.host_path_of(name);
                // Paths in the workspace are said relative to it, however the guest
                // reached it (`../x`, not `/workspace/../x`).
                let shown = if host == state.workspace {
                    String::new()
                } else {
                    name.clone()
                };
                state.open_dirs.0.insert(fd.rep(), (shown, host));
            }
            Ok((dirs,))
        },
    )?;
    let mut types = linker.instance(FILESYSTEM)?;
    types.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store: StoreContextMut<'_, StepState>,
         (fd, path_flags, path, oflags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let dir = fd.rep();
                let result = HostDescriptor::open_at(
                    &mut store.data_mut().filesystem(),
                    fd,
                    path_flags,
                    path.clone(),
                    oflags,
                    flags,
                )
                .await;
                let state = store.data_mut();
                match result {
                    Ok(opened) => {
                        let is_dir = matches!(state.table.get(&opened), Ok(Descriptor::Dir(_)));
                        let named = state.open_dirs.join(dir, &path).filter(|_| is_dir);
                        state.open_dirs.record(opened.rep(), named);
                        Ok((Ok(opened),))
                    }
                    Err(e) => {
                        let code = e.downcast()?;
                        let writes = oflags.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE)
                            || flags.intersects(
                                DescriptorFlags::WRITE | DescriptorFlags::MUTATE_DIRECTORY,
                            );
                        state.refused_file(dir, &path, writes, code);
                        Ok((Err(code),))
                    }
                }
            })
        },
    )?;
    for name in [
        "[method]descriptor.create-directory-at",
        "[method]descriptor.unlink-file-at",
        "[method]descriptor.remove-directory-at",
    ] {
        types.func_wrap_async(
            name,
            move |mut store: StoreContextMut<'_, StepState>,
                  (fd, path): (Resource<Descriptor>, String)| {
                Box::new(async move {
                    let dir = fd.rep();
                    let mut view = store.data_mut().filesystem();
                    let result = match name {
                        "[method]descriptor.create-directory-at" => {
                            view.create_directory_at(fd, path.clone()).await
                        }
                        "[method]descriptor.unlink-file-at" => {
                            view.unlink_file_at(fd, path.clone()).await
                        }
                        _ => view.remove_directory_at(fd, path.clone()).await,
                    };
                    store.data_mut().changed(dir, &path, result)
                })
            },
        )?;
    }
    types.func_wrap_async(
        "[method]descriptor.rename-at",
        |mut store: StoreContextMut<'_, StepState>,
         (fd, old, new_fd, new): (Resource<Descriptor>, String, Resource<Descriptor>, String)| {
            Box::new(async move {
                let dir = fd.rep();
                let result = store
                    .data_mut()
                    .filesystem()
                    .rename_at(fd, old.clone(), new_fd, new)
                    .await;
                store.data_mut().changed(dir, &old, result)
            })
        },
    )?;
    linker.instance(NAME_LOOKUP)?.func_wrap(
        "resolve-addresses",
        |mut store: StoreContextMut<'_, StepState>, (network, name): (Resource<_>, String)| {
            let result =
                wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::Host::resolve_addresses(
                    &mut store.data_mut().sockets(),
                    network,
                    name.clone(),
                );
            let state = store.data_mut();
            match result {
                Ok(stream) => Ok((Ok(stream),)),
                Err(e) => {
                    let code = e.downcast()?;
                    if state.grant.network.is_empty() {
                        // The name is the guest's: it is shown only when it is a host name.
                        let host = Some(name.as_str())
                            .filter(|n| {
                                n.len() <= 253
                                    && n.chars()
                                        .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
                            })
                            .unwrap_or("the-host");
                        state.refusals.refuse_network(
                            &format!("network access (a lookup of `{host}`)"),
                            &format!("network: [\"{host}:443\"]"),
                        );
                    }
                    Ok((Err(code),))
                }
            }
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

impl OpenDirs {
    /// Records the directory `rep` under its names, or forgets what the number held.
    fn record(&mut self, rep: u32, named: Option<(String, PathBuf)>) {
        match named {
            Some(named) if self.0.len() < MAX_DIRS || self.0.contains_key(&rep) => {
                self.0.insert(rep, named);
            }
            _ => {
                self.0.remove(&rep);
            }
        }
    }

    /// The guest's and the host's names of `path` under the directory `dir`, when both
    /// are short enough to work with.
    fn join(&self, dir: u32, path: &str) -> Option<(String, PathBuf)> {
        if path.len() > MAX_PATH {
            return None;
        }
        let (guest, host) = self.0.get(&dir)?;
        let guest = match guest.as_str() {
            "." | "" => path.to_string(),
            g => format!("{}/{path}", g.trim_end_matches('/')),
        };
        let host = host.join(path);
        (guest.len() <= MAX_PATH && host.as_os_str().len() <= MAX_PATH).then_some((guest, host))
    }
}

impl StepState {
    /// The host folder a preopen shows: the workspace, or a granted path (preopened under
    /// its own name).
    fn host_path_of(&self, guest: &str) -> PathBuf {
        if guest == "." || guest == crate::runner::GUEST_WORKSPACE {
            self.workspace.clone()
        } else {
            PathBuf::from(guest)
        }
    }

    /// The guest's answer to an operation that changes the tree under `dir`, its refusal
    /// logged.
    fn changed(
        &mut self,
        dir: u32,
        path: &str,
        result: FsResult<()>,
    ) -> wasmtime::Result<(Result<(), ErrorCode>,)> {
        match result {
            Ok(()) => Ok((Ok(()),)),
            Err(e) => {
                let code = e.downcast()?;
                self.refused_file(dir, path, true, code);
                Ok((Err(code),))
            }
        }
    }

    /// Logs a file operation the sandbox refused: a change where only reading is granted,
    /// or a path that leads out of what the step is shown (by `..` or a symbolic link).
    /// Other errors, and the host's own refusals (a file ferry may not read), are the
    /// guest's to report.
    fn refused_file(&mut self, dir: u32, path: &str, writes: bool, code: ErrorCode) {
        if !matches!(
            code,
            ErrorCode::NotPermitted | ErrorCode::Access | ErrorCode::ReadOnly
        ) {
            return;
        }
        let (Some((guest, host)), Some((root, access))) =
            (self.open_dirs.join(dir, path), self.grant_root(dir))
        else {
            return;
        };
        let leads_out = match lexical(&host) {
            Some(plain) if plain.starts_with(&root) => through_link(&plain, &root),
            _ => true,
        };
        let workspace = root == self.workspace;
        let (what, yaml) = if leads_out {
            // An untrusted run is not told where things are on the host.
            let folder = if self.untrusted {
                None
            } else {
                std::fs::canonicalize(&host)
                    .ok()
                    .or_else(|| lexical(&host))
                    .and_then(|p| p.parent().map(Path::to_path_buf))
            };
            let folder = folder.map_or("/the/folder".into(), |f| f.display().to_string());
            let verb = if writes { "write" } else { "read" };
            (
                format!("a {verb} of `{guest}`, which leads outside what the step is shown,"),
                format!("paths: {{ {folder}: {verb} }}"),
            )
        } else if writes && access != Access::Write {
            let yaml = if workspace {
                "workspace: write".to_string()
            } else {
                format!("paths: {{ {}: write }}", root.display())
            };
            (format!("a write to `{guest}`"), yaml)
        } else {
            return;
        };
        self.refusals.refuse(&what, &yaml);
    }

    /// The host folder of the preopen a descriptor is under, and its access.
    fn grant_root(&self, dir: u32) -> Option<(PathBuf, Access)> {
        let (_, host) = self.open_dirs.0.get(&dir)?;
        if let Some(access) = self.grant.workspace
            && host.starts_with(&self.workspace)
        {
            return Some((self.workspace.clone(), access));
        }
        self.grant
            .paths
            .iter()
            .filter(|(p, _)| host.starts_with(p))
            .max_by_key(|(p, _)| p.as_os_str().len())
            .cloned()
    }
}

/// Whether a failure's message says permission was refused: the words of `EPERM`,
/// `EACCES` and `EROFS`, as Rust, Python and C print them.
fn refused_words(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "not permitted",
        "permission denied",
        "read-only file system",
    ]
    .iter()
    .any(|words| message.contains(words))
}

/// `path` with `.` and `..` resolved as text (symbolic links are not followed); `None`
/// when `..` climbs past the root.
fn lexical(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Some(out)
}

/// Whether a folder or file on the way from `root` to `path` is a symbolic link.
fn through_link(path: &Path, root: &Path) -> bool {
    let Ok(rest) = path.strip_prefix(root) else {
        return false;
    };
    let mut at = root.to_path_buf();
    rest.components().any(|part| {
        at.push(part);
        std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusals_words_make_a_failure_a_denial() {
        for refused in [
            "read ../x: Operation not permitted (os error 63)",
            "connect 127.0.0.1:9: Permission denied (os error 2)",
            "`out.txt`: Read-only file system",
        ] {
            assert!(refused_words(refused), "{refused}");
        }
        assert!(!refused_words(
            "3 findings at `error` or worse (fail-on: error)"
        ));
    }

    #[test]
    fn what_is_kept_of_the_guests_folders_is_bounded() {
        let mut dirs = OpenDirs::default();
        dirs.record(1, Some((String::new(), PathBuf::from("/w"))));
        assert_eq!(
            dirs.join(1, "a/b"),
            Some(("a/b".to_string(), PathBuf::from("/w/a/b")))
        );
        // A path the guest makes long is not worked out (each part is looked up).
        assert_eq!(dirs.join(1, &"a/".repeat(MAX_PATH)), None);
        for rep in 2..(MAX_DIRS as u32 + 100) {
            dirs.record(rep, Some(("d".into(), PathBuf::from("/w/d"))));
        }
        assert_eq!(dirs.0.len(), MAX_DIRS);
        // A number reused by a file forgets the folder it named.
        dirs.record(1, None);
        assert_eq!(dirs.join(1, "a"), None);
    }

    #[test]
    fn climbing_out_is_seen_in_the_text() {
        assert_eq!(
            lexical(Path::new("/w/job/a/../b")),
            Some(PathBuf::from("/w/job/b"))
        );
        assert_eq!(
            lexical(Path::new("/w/job/../other/./x")),
            Some(PathBuf::from("/w/other/x"))
        );
        assert_eq!(lexical(Path::new("/w/job/../../../../x")), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_link_on_the_way_is_found() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("real")).unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("out")).unwrap();
        assert!(through_link(&root.path().join("out/passwd"), root.path()));
        assert!(!through_link(&root.path().join("real/x"), root.path()));
    }
}
