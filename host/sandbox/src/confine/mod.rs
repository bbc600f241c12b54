//! The OS sandbox for host programs: what a program a step starts may see and do, built
//! from the same grant that confines the step, and the launcher of each system.
//!
//! A confined program sees:
//! - the system read-only: `/usr`, `/bin`, `/sbin`, `/lib*`, `/etc` (minus its secrets:
//!   shadow files, SSH host keys, TLS private keys) and `/opt`;
//! - the job workspace at its real path, with the step's access (`run:` steps write);
//! - each granted `permissions.paths` entry, with its access;
//! - the toolchains of the programs granted by `exec:` (see [`toolchains`]);
//! - a private `HOME` (kept per job under `.ferry/home/`) and a private `/tmp`;
//! - a minimal `/dev` and a `/proc` of its own processes;
//! - the network only through the proxy, and only when the step is granted hosts.
//!
//! Nothing else of the host exists for it.

#[cfg(target_os = "linux")]
pub mod linux;
pub mod seatbelt;
#[cfg(windows)]
pub mod windows;

use ferry_model::Access;
use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

/// Processes (and threads) a confined program and its descendants may have at once.
pub const MAX_PROCESSES: u32 = 4096;

/// One thing the sandbox shows, at the same path as on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A host directory or file.
    Bind {
        path: PathBuf,
        access: Access,
        file: bool,
    },
    /// A symbolic link, as on the host (`/bin -> usr/bin`).
    Symlink { path: PathBuf, target: PathBuf },
    /// A host device node (`/dev/null`).
    Device { path: PathBuf },
    /// A host file hidden behind an empty one (`/etc/shadow`).
    Mask { path: PathBuf },
    /// A host file shown read-only in place of another: the `/etc/hosts` that names the
    /// job's services.
    Replace { path: PathBuf, source: PathBuf },
    /// A host directory hidden behind an empty, read-only one (`/etc/ssl/private`).
    MaskDir { path: PathBuf },
    /// A private, size-bounded memory file system.
    Tmpfs { path: PathBuf, size: u64, mode: u32 },
    /// The `/proc` of the sandbox's own processes.
    Proc { path: PathBuf },
    /// A private pseudo-terminal instance.
    Devpts { path: PathBuf },
}

/// Everything a launcher needs.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// In mount order: a node never precedes one that holds it.
    pub nodes: Vec<Node>,
    /// Whether the step reaches hosts through the proxy.
    pub proxy: bool,
    /// Addresses inside the sandbox where the job's services answer: each is a listening
    /// socket ferry forwards to the service behind it (see `crate::services`).
    pub services: Vec<SocketAddrV4>,
    /// The sandbox runs a service: its supervisor answers ferry's requests for connections
    /// to the service's own loopback.
    pub connector: bool,
    /// Run as `nobody` inside when ferry runs as root: daemons such as PostgreSQL refuse to
    /// run as root, and a service has no need to.
    pub unprivileged: bool,
    /// Bytes of data each process may map (`permissions.memory`).
    pub memory: u64,
    pub processes: u32,
    /// Variables the program needs to find its toolchain inside (`RUSTUP_HOME`).
    pub env: BTreeMap<String, String>,
    /// The job workspace, for hints that name `workspace: write`.
    pub workspace: PathBuf,
    /// Grants the sandbox will not show, each with why; the program is not started.
    pub refused: Vec<String>,
}

/// What a step is granted, as the sandbox needs it.
pub struct Request<'a> {
    pub workspace: &'a Path,
    pub workspace_access: Access,
    pub paths: &'a [(PathBuf, Access)],
    pub home: &'a Path,
    /// `$FERRY_OUTPUT`, `$FERRY_PATH`, `$FERRY_ENV` and `$FERRY_STEP_SUMMARY`: files the programs
    /// may write.
    pub step_files: &'a [&'a Path],
    /// Granted programs, resolved on the host.
    pub programs: Vec<&'a Path>,
    /// The step's environment, where toolchain locations may be set.
    pub env: &'a BTreeMap<String, String>,
    pub network: bool,
    pub memory: u64,
    /// The job's services, reachable from the program by name: the addresses it listens on
    /// and the `/etc/hosts` that names them.
    pub services: Option<(&'a [SocketAddrV4], &'a Path)>,
}

/// System directories shown read-only when the host has them.
pub const SYSTEM: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];

/// Secrets of the machine inside [`SYSTEM`] directories, hidden behind empty files.
const MASKED: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/security/opasswd",
    "/etc/krb5.keytab",
];

/// Directories of [`SYSTEM`] that hold machine credentials, hidden behind empty ones.
const MASKED_DIRS: &[&str] = &[
    "/etc/sudoers.d",
    "/etc/ssl/private",
    "/etc/pki/tls/private",
    "/etc/letsencrypt",
    "/etc/wireguard",
    "/etc/NetworkManager/system-connections",
    "/etc/ferry",
];

/// Bytes of the private `/dev/shm`.
const SHM_SIZE: u64 = 64 << 20;

/// Most bytes of the private `/tmp`.
const TMP_SIZE: u64 = 2 << 30;

/// Directories of [`SYSTEM`] whose files are all masked (`/etc/ssh/ssh_host_*_key`).
const MASKED_FILES_IN: &[(&str, &str)] = &[("/etc/ssh", "ssh_host_")];

/// Not `tty`: the sandbox has no controlling terminal, and ferry's is not its to use.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// Builds the view of one confined program.
pub fn view(req: &Request) -> View {
    let mut nodes = Vec::new();
    for dir in SYSTEM {
        let path = Path::new(dir);
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(path) {
                    nodes.push(Node::Symlink {
                        path: path.into(),
                        target,
                    });
                }
            }
            Ok(meta) if meta.is_dir() => nodes.push(Node::Bind {
                path: path.into(),
                access: Access::Read,
                file: false,
            }),
            _ => {}
        }
    }
    // Machine secrets are hidden last, so that no bind (a grant of `/etc`, say) uncovers
    // them.
    let mut masks = Vec::new();
    for file in MASKED {
        if Path::new(file).is_file() {
            masks.push(Node::Mask { path: file.into() });
        }
    }
    for dir in MASKED_DIRS {
        if Path::new(dir).is_dir() {
            masks.push(Node::MaskDir { path: dir.into() });
        }
    }
    for (dir, prefix) in MASKED_FILES_IN {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .filter(|e| !e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        files.sort();
        masks.extend(files.into_iter().map(|path| Node::Mask { path }));
    }
    nodes.push(Node::Tmpfs {
        path: "/dev".into(),
        size: 64 << 10,
        mode: 0o755,
    });
    for device in DEVICES {
        let path = Path::new("/dev").join(device);
        if path.exists() {
            nodes.push(Node::Device { path });
        }
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/ptmx", "pts/ptmx"),
    ] {
        nodes.push(Node::Symlink {
            path: link.into(),
            target: target.into(),
        });
    }
    nodes.push(Node::Tmpfs {
        path: "/dev/shm".into(),
        size: SHM_SIZE,
        mode: 0o1777,
    });
    nodes.push(Node::Devpts {
        path: "/dev/pts".into(),
    });
    nodes.push(Node::Proc {
        path: "/proc".into(),
    });
    // Empty: the machine's devices and kernel settings are not a step's business, but a
    // container engine binds `/sys` into every container it runs and fails without one.
    nodes.push(Node::Tmpfs {
        path: "/sys".into(),
        size: 4 << 10,
        mode: 0o555,
    });
    // Memory file systems hold RAM that no per-process limit counts: bounded on their own.
    nodes.push(Node::Tmpfs {
        path: "/tmp".into(),
        size: req.memory.min(TMP_SIZE),
        mode: 0o1777,
    });

    let mut env = BTreeMap::new();
    let mut binds: Vec<(PathBuf, Access, bool)> = Vec::new();
    for program in &req.programs {
        let found = toolchains(program, req.env, &[req.workspace, req.home]);
        binds.extend(found.dirs.into_iter().map(|d| (d, Access::Read, false)));
        env.extend(found.env);
    }
    let mut refused = Vec::new();
    for (path, access) in req.paths {
        // The sandbox's own /proc and /dev stay its own.
        if ["/proc", "/dev"].iter().any(|own| path.starts_with(own)) {
            refused.push(format!(
                "`{}` cannot be granted: the sandbox has its own `/proc` and `/dev`",
                path.display()
            ));
            continue;
        }
        // A link is followed by the mount: a granted `./cache` that a commit turned into a
        // link to `~` would show the home directory. Only the real path may be granted.
        if let Ok(real) = std::fs::canonicalize(path)
            && real != *path
        {
            refused.push(format!(
                "the granted path `{}` is a symbolic link, or goes through one, to `{}`\nhint: grant the real path `{}` if that is what the step should see",
                path.display(),
                real.display(),
                real.display()
            ));
            continue;
        }
        binds.push((path.clone(), *access, path.is_file()));
    }
    binds.push((req.home.to_path_buf(), Access::Write, false));
    binds.push((req.workspace.to_path_buf(), req.workspace_access, false));

    for file in req.step_files.iter().copied() {
        if !binds.iter().any(|(path, ..)| path == file) {
            binds.push((file.to_path_buf(), Access::Write, true));
        }
    }
    // Parents before children; of one path, the widest access.
    binds.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut shown: Vec<(PathBuf, Access)> = SYSTEM
        .iter()
        .filter(|d| Path::new(d).is_dir() && !Path::new(d).is_symlink())
        .map(|d| (PathBuf::from(d), Access::Read))
        .collect();
    for (path, access, file) in binds {
        if !path.is_absolute() || std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        // Already visible with this access through a bind that holds it.
        let covered = shown
            .iter()
            .filter(|(p, _)| path.starts_with(p))
            .max_by_key(|(p, _)| p.components().count())
            .is_some_and(|(_, a)| *a == access);
        if covered {
            continue;
        }
        shown.push((path.clone(), access));
        nodes.push(Node::Bind { path, access, file });
    }
    nodes.extend(masks);
    // Bound over the host's file, so only where that is a file: a link (`/etc/hosts ->
    // /etc/static/hosts`) would be followed outside the new root.
    let hosts_file = std::fs::symlink_metadata("/etc/hosts").is_ok_and(|m| m.is_file());
    if let Some((_, hosts)) = req.services.filter(|_| hosts_file) {
        nodes.push(Node::Replace {
            path: "/etc/hosts".into(),
            source: hosts.to_path_buf(),
        });
    }
    View {
        nodes,
        refused,
        services: req
            .services
            .map(|(addrs, _)| addrs.to_vec())
            .unwrap_or_default(),
        connector: false,
        unprivileged: false,
        proxy: req.network,
        memory: req.memory,
        processes: MAX_PROCESSES,
        env,
        workspace: req.workspace.to_path_buf(),
    }
}

/// What a granted program needs besides itself.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Toolchain {
    /// Directories shown read-only.
    pub dirs: Vec<PathBuf>,
    /// Variables that tell the program where they are.
    pub env: BTreeMap<String, String>,
}

/// The read-only toolchain a granted program needs, found from where it lives, so that
/// `exec: [cargo]` works without the user listing rustup's internals. The rule:
/// - the directory holding the program, and the one holding the file it links to;
/// - the root of a Python virtual environment (`pyvenv.cfg` beside `bin/`);
/// - the root of a version manager whose shims these are (`shims/` beside `versions/`:
///   pyenv, rbenv), with `PYENV_ROOT` set;
/// - the install prefix of a Node.js (`bin/node` and `lib/node_modules` under it: nvm, fnm,
///   a tarball);
/// - for a rustup proxy, `RUSTUP_HOME` (the step's, else the host's, else `~/.rustup`),
///   with `RUSTUP_HOME` set.
///
/// Never a whole home directory or `~/.cargo`: those hold credentials.
///
/// A program under one of `job_dirs` (the workspace, the job's `HOME`: a `.venv/bin/pytest`,
/// a `$FERRY_PATH` directory) was put there by the job, and so were the links, `#!` lines
/// and `pyvenv.cfg` these rules read. Of what they point at outside those directories, only
/// what has the shape of an installed toolchain is shown (see [`is_toolchain`]), a shape
/// a job cannot give a folder it does not own: otherwise a link or a `#!` line naming
/// `~/.ssh` would show the host's keys. `RUSTUP_HOME` comes from the step's environment,
/// which the pipeline writes, so it is checked the same way for every program.
///
/// Paths are compared and shown as the file system resolves them (`..`, links, `/proc/self/
/// root`), never as spelled: `<workspace>/../../.ssh` is not in the workspace, and a program
/// reached through `/usr/../<workspace>` is the job's.
pub fn toolchains(program: &Path, env: &BTreeMap<String, String>, job_dirs: &[&Path]) -> Toolchain {
    let mut found = toolchains_unchecked(program, env);
    let job_dirs: Vec<PathBuf> = job_dirs
        .iter()
        .filter_map(|d| std::fs::canonicalize(d).ok())
        .collect();
    let in_job = |path: &Path| job_dirs.iter().any(|d| path.starts_with(d));
    // Where the program's own entry is (its folder resolved, not the link it may be), and
    // the file it is.
    let entry = program
        .parent()
        .and_then(|dir| std::fs::canonicalize(dir).ok())
        .zip(program.file_name())
        .map(|(dir, name)| dir.join(name));
    let real = std::fs::canonicalize(program).ok();
    let from_job = entry.iter().chain(&real).any(|p| in_job(p));
    let mut dirs: Vec<PathBuf> = Vec::new();
    for dir in found.dirs.drain(..) {
        let Ok(dir) = std::fs::canonicalize(&dir) else {
            continue;
        };
        let allowed =
            shareable(&dir) && (!from_job || in_job(&dir) || is_system(&dir) || is_toolchain(&dir));
        if allowed && !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    found.dirs = dirs;
    found
}

/// Whether `dir` has the shape of an installed toolchain, or of its `bin`: a CPython (its
/// standard library's `os.py`), a Node.js (`bin/node` and npm), a Rust toolchain
/// (`lib/rustlib`), a rustup home, a virtual environment, or a pyenv or rbenv root.
fn is_toolchain(dir: &Path) -> bool {
    let prefix = match dir.file_name().and_then(|n| n.to_str()) {
        Some("bin" | "Scripts") => dir.parent().unwrap_or(dir),
        _ => dir,
    };
    let python = std::fs::read_dir(prefix.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.file_name().to_string_lossy().starts_with("python3")
                && e.path().join("os.py").is_file()
        });
    python
        || (prefix.join("bin/node").is_file()
            && prefix.join("lib/node_modules/npm/package.json").is_file())
        || prefix.join("lib/rustlib").is_dir()
        || is_rustup_home(prefix)
        || prefix.join("pyvenv.cfg").is_file()
        || (prefix.join("shims").is_dir() && prefix.join("versions").is_dir())
}

/// Whether `dir` is a rustup home: its toolchains and its settings.
fn is_rustup_home(dir: &Path) -> bool {
    dir.join("toolchains").is_dir()
        && (dir.join("settings.toml").is_file() || dir.join("update-hashes").is_dir())
}

fn toolchains_unchecked(program: &Path, env: &BTreeMap<String, String>) -> Toolchain {
    let mut found = Toolchain::default();
    let add = |dir: &Path, found: &mut Toolchain| {
        if !found.dirs.iter().any(|d| d == dir) {
            found.dirs.push(dir.to_path_buf());
        }
    };
    let real = std::fs::canonicalize(program).unwrap_or_else(|_| program.to_path_buf());
    for file in [program, real.as_path()] {
        let Some(bin) = file.parent().filter(|b| shareable(b)) else {
            continue;
        };
        add(bin, &mut found);
        let Some(prefix) = bin.parent() else { continue };
        let home = std::env::var_os("HOME").map(PathBuf::from);
        if home.as_deref() == Some(prefix) || prefix == Path::new("/") {
            continue;
        }
        if prefix.join("pyvenv.cfg").is_file() {
            add(prefix, &mut found);
            // The interpreter the environment was made from (`home = .../bin`).
            if let Some(base) = venv_home(&prefix.join("pyvenv.cfg"))
                .and_then(|home| home.parent().map(Path::to_path_buf))
                .filter(|base| shareable(base) && !is_system(base))
            {
                add(&base, &mut found);
            }
        } else if bin.ends_with("shims") && prefix.join("versions").is_dir() {
            add(prefix, &mut found);
            let name = if prefix.ends_with(".rbenv") {
                "RBENV_ROOT"
            } else {
                "PYENV_ROOT"
            };
            found
                .env
                .insert(name.into(), prefix.to_string_lossy().into_owned());
        } else if bin.join("node").is_file() && prefix.join("lib/node_modules").is_dir() {
            add(prefix, &mut found);
        }
    }
    // A script's interpreter, named by absolute path in its `#!` line, and what it needs.
    if let Some(interpreter) = shebang(&real).filter(|i| i.is_absolute() && !is_system(i)) {
        let more = toolchains_of(&interpreter);
        for dir in more {
            add(&dir, &mut found);
        }
    }
    if real.file_name().is_some_and(|n| n == "rustup") {
        let rustup_home = env
            .get("RUSTUP_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("RUSTUP_HOME").map(PathBuf::from))
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".rustup")));
        if let Some(dir) = rustup_home.filter(|d| is_rustup_home(d)) {
            found
                .env
                .insert("RUSTUP_HOME".into(), dir.to_string_lossy().into_owned());
            add(&dir, &mut found);
        }
    }
    found
}

/// The directories holding a script's interpreter, and its real file's.
fn toolchains_of(interpreter: &Path) -> Vec<PathBuf> {
    let real = std::fs::canonicalize(interpreter).unwrap_or_else(|_| interpreter.to_path_buf());
    let mut dirs = Vec::new();
    for file in [interpreter, real.as_path()] {
        if let Some(bin) = file.parent().filter(|b| shareable(b)) {
            dirs.push(bin.to_path_buf());
            // A Python or Node.js install keeps its library beside `bin/`.
            if let Some(prefix) = bin
                .parent()
                .filter(|p| *p != Path::new("/") && !is_system(p))
                && bin.ends_with("bin")
                && prefix.join("lib").is_dir()
            {
                dirs.push(prefix.to_path_buf());
            }
        }
    }
    dirs
}

/// Whether a toolchain directory may be shown: never `/`, a home directory or anything
/// that holds one, which would show everything in them.
fn shareable(dir: &Path) -> bool {
    let depth = dir.components().count();
    if depth <= 1 || dir == Path::new("/root") || (dir.starts_with("/home") && depth <= 3) {
        return false;
    }
    !std::env::var_os("HOME").is_some_and(|home| Path::new(&home).starts_with(dir))
}

/// The interpreter of a `#!` script.
fn shebang(file: &Path) -> Option<PathBuf> {
    let head = read_head(file, 256)?;
    let line = head.strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next()?;
    let text = String::from_utf8_lossy(line);
    text.split_whitespace().next().map(PathBuf::from)
}

/// The first `max` bytes of a regular file. What a job put in place of one (a FIFO, a device)
/// is not read: opening does not wait for a writer, and anything but a file gives `None`.
fn read_head(path: &Path, max: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// `home` of a `pyvenv.cfg`: the directory of the interpreter the environment came from.
fn venv_home(cfg: &Path) -> Option<PathBuf> {
    let text = String::from_utf8(read_head(cfg, 64 << 10)?).ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "home").then(|| PathBuf::from(value.trim()))
    })
}

/// Proxy variables for a step granted hosts. Loopback names stay direct (the sandbox's own
/// loopback, for a test's own servers) unless the grant names them, in which case they mean
/// the host's and go through the proxy.
pub fn proxy_env(port: u16, granted_hosts: &[&str], services: &[String]) -> Vec<(String, String)> {
    let http = format!("http://127.0.0.1:{port}");
    let socks = format!("socks5h://127.0.0.1:{port}");
    let direct: Vec<&str> = ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .filter(|name| !granted_hosts.contains(name))
        .chain(services.iter().map(String::as_str))
        .collect();
    let direct = direct.join(",");
    let mut env = Vec::new();
    for (name, value) in [
        ("HTTP_PROXY", &http),
        ("HTTPS_PROXY", &http),
        ("ALL_PROXY", &socks),
        ("NO_PROXY", &direct),
    ] {
        env.push((name.to_string(), value.clone()));
        env.push((name.to_ascii_lowercase(), value.clone()));
    }
    env
}

/// Container engines, which run their `RUN` instructions in containers of their own and so
/// need mounts and namespaces inside the sandbox. On Linux, a step granted one runs its
/// programs one level further in (`linux::Engine`), with the engine's storage in the step's
/// private `HOME`.
pub const ENGINES: &[&str] = &["buildah", "podman"];

/// The engine a granted program (`exec: [buildah]`) is, by its name.
pub fn engine(program: &str) -> Option<&'static str> {
    let name = Path::new(program).file_name()?.to_str()?;
    ENGINES.iter().copied().find(|engine| *engine == name)
}

/// Writes an engine's storage settings under the step's private `home` and returns the
/// variables that point the engine at them: images and layers kept in `home` (so that they
/// survive between runs, as other tools' caches do), its run state on the sandbox's `/tmp`,
/// the overlay driver (which the kernel allows in a user namespace), ownership that the
/// namespace cannot map kept as the namespace's root, and chroot isolation for `RUN`, the one
/// that needs no OCI runtime and no cgroups.
pub fn engine_env(home: &Path) -> std::io::Result<Vec<(String, String)>> {
    let quoted = |path: &Path| {
        let text = path.to_string_lossy();
        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
    };
    let dir = home.join(".config").join("containers");
    std::fs::create_dir_all(&dir)?;
    let graph = home
        .join(".local")
        .join("share")
        .join("containers")
        .join("storage");
    std::fs::create_dir_all(&graph)?;
    let text = format!(
        "# Written by ferry for the container engines it confines; rewritten at every start.\n[storage]\ndriver = \"overlay\"\ngraphroot = {}\nrunroot = \"/tmp/containers-run\"\n\n[storage.options.overlay]\nignore_chown_errors = \"true\"\n",
        quoted(&graph)
    );
    let conf = dir.join("ferry-storage.conf");
    let mut staged = tempfile::NamedTempFile::new_in(&dir)?;
    std::io::Write::write_all(&mut staged, text.as_bytes())?;
    staged.persist(&conf).map_err(|e| e.error)?;
    Ok(vec![
        (
            "CONTAINERS_STORAGE_CONF".into(),
            conf.to_string_lossy().into_owned(),
        ),
        ("BUILDAH_ISOLATION".into(), "chroot".into()),
    ])
}

/// Keeps this process's memory and environment from other processes of its user, for a
/// server or agent that holds credentials: on Linux it becomes non-dumpable, so reading
/// its `/proc/<pid>/environ` or `mem`, or tracing it, needs `CAP_SYS_PTRACE`, and it
/// leaves no core dump.
pub fn keep_private() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_DUMPABLE takes an integer and touches no memory of ours.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether programs can be confined here, and if not, why; probed once.
pub fn unavailable() -> Option<&'static str> {
    static WHY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    WHY.get_or_init(probe).as_deref()
}

#[cfg(target_os = "linux")]
fn probe() -> Option<String> {
    // SAFETY: the child only makes system calls, then exits; the parent reaps it.
    unsafe {
        let child = libc::fork();
        if child < 0 {
            return Some(format!("cannot fork: {}", std::io::Error::last_os_error()));
        }
        if child == 0 {
            let flags =
                libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWNET;
            libc::_exit(if libc::unshare(flags) == 0 { 0 } else { 1 });
        }
        let mut status = 0;
        while libc::waitpid(child, &mut status, 0) < 0
            && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {}
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            None
        } else {
            Some(
                "this kernel does not let an unprivileged user create namespaces \
                 (see /proc/sys/kernel/unprivileged_userns_clone and \
                 /proc/sys/user/max_user_namespaces)"
                    .into(),
            )
        }
    }
}

#[cfg(target_os = "macos")]
fn probe() -> Option<String> {
    (!Path::new("/usr/bin/sandbox-exec").is_file())
        .then(|| "`/usr/bin/sandbox-exec` is missing, so Seatbelt cannot confine programs".into())
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn probe() -> Option<String> {
    Some(format!(
        "ferry confines files and network of host programs on Linux and macOS, not yet on {} (a job object still bounds their memory, processes and lifetime on Windows)",
        std::env::consts::OS
    ))
}

/// Hints for a confined program that failed: paths its output names that the sandbox does
/// not show, or shows read-only, with the `permissions:` lines that would grant them.
pub fn explain(view: &View, output: &str) -> Vec<String> {
    let mut hints = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for word in output.split(|c: char| c.is_whitespace() || "'\"`:,;()[]<>".contains(c)) {
        if !word.starts_with('/') || word.len() < 2 || !seen.insert(word.to_string()) {
            continue;
        }
        let path = Path::new(word);
        match visible(view, path) {
            Some(Access::Write) => {}
            Some(Access::Read) => {
                let writes = output.contains("Read-only file system")
                    || output.contains("Permission denied");
                if writes && path.starts_with(&view.workspace) {
                    hints.push(format!(
                        "`{word}` is in the workspace, which is read-only for this step; to write it, grant:\n    permissions:\n      workspace: write"
                    ));
                } else if writes && !is_system(path) {
                    hints.push(format!(
                        "`{word}` is read-only in this step's sandbox; to write it, grant:\n    permissions:\n      paths: {{ {word}: write }}"
                    ));
                }
            }
            None => {
                if std::fs::symlink_metadata(path).is_ok() {
                    hints.push(format!(
                        "`{word}` exists on the host but not in this step's sandbox; to show it, grant:\n    permissions:\n      paths: {{ {word}: read }}"
                    ));
                } else if let Some(folder) = hidden_folder(view, path) {
                    // A file the program meant to create, in a host folder it cannot see.
                    hints.push(format!(
                        "`{word}` is in `{}`, which exists on the host but not in this step's sandbox; to write there, grant:\n    permissions:\n      paths: {{ {}: write }}",
                        folder.display(),
                        folder.display()
                    ));
                }
            }
        }
        if hints.len() == 3 {
            break;
        }
    }
    hints
}

/// The nearest existing host folder above a path that does not exist, when the sandbox
/// hides it; not a folder the sandbox has its own of (`/tmp`), where the program's own files
/// live.
fn hidden_folder<'a>(view: &View, path: &'a Path) -> Option<&'a Path> {
    let folder = path
        .ancestors()
        .skip(1)
        .find(|a| std::fs::symlink_metadata(a).is_ok())?;
    let own = view.nodes.iter().any(|n| node_path(n) == folder);
    (folder != Path::new("/") && !own && visible(view, folder).is_none()).then_some(folder)
}

fn node_path(node: &Node) -> &Path {
    match node {
        Node::Bind { path, .. }
        | Node::Symlink { path, .. }
        | Node::Device { path }
        | Node::Mask { path }
        | Node::Replace { path, .. }
        | Node::MaskDir { path }
        | Node::Tmpfs { path, .. }
        | Node::Proc { path }
        | Node::Devpts { path } => path,
    }
}

/// Whether the sandbox shows the host's `path` (a granted `HOME`, say).
pub fn shows(view: &View, path: &Path) -> bool {
    visible(view, path).is_some()
}

fn is_system(path: &Path) -> bool {
    SYSTEM.iter().any(|d| path.starts_with(d))
}

/// The access the sandbox gives the host's `path`, if it shows it. Private file systems
/// (`/tmp`, `/proc`) hide what the host has there.
fn visible(view: &View, path: &Path) -> Option<Access> {
    let mut best: Option<(usize, Option<Access>)> = None;
    for node in &view.nodes {
        let (root, access) = match node {
            Node::Bind { path, access, .. } => (path, Some(*access)),
            Node::Tmpfs { path, .. }
            | Node::Proc { path }
            | Node::Devpts { path }
            | Node::MaskDir { path } => (path, None),
            Node::Device { path }
            | Node::Mask { path }
            | Node::Replace { path, .. }
            | Node::Symlink { path, .. } => (path, Some(Access::Read)),
        };
        if path.starts_with(root) {
            let depth = root.components().count();
            if best.is_none_or(|(d, _)| depth >= d) {
                best = Some((depth, access));
            }
        }
    }
    best.and_then(|(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(
        ws: &'a Path,
        home: &'a Path,
        out: &'a [&'a Path],
        paths: &'a [(PathBuf, Access)],
        env: &'a BTreeMap<String, String>,
    ) -> Request<'a> {
        Request {
            workspace: ws,
            workspace_access: Access::Write,
            paths,
            home,
            step_files: out,
            programs: Vec::new(),
            env,
            network: false,
            memory: 1 << 30,
            services: None,
        }
    }

    #[test]
    fn the_view_holds_the_grant_and_hides_machine_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let (ws, home, out) = (
            dir.path().join("ws"),
            dir.path().join("home"),
            dir.path().join("out"),
        );
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(&out, "").unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        let paths = vec![
            (shared.clone(), Access::Read),
            ("/nonexistent".into(), Access::Read),
        ];
        let env = BTreeMap::new();
        let view = view(&request(&ws, &home, &[out.as_path()], &paths, &env));
        let binds: Vec<_> = view
            .nodes
            .iter()
            .filter_map(|n| match n {
                Node::Bind { path, access, .. } => Some((path.clone(), *access)),
                _ => None,
            })
            .collect();
        assert!(binds.contains(&(ws.clone(), Access::Write)), "{binds:?}");
        assert!(binds.contains(&(home.clone(), Access::Write)));
        assert!(binds.contains(&(shared.clone(), Access::Read)));
        assert!(binds.contains(&(out.clone(), Access::Write)));
        assert!(!binds.iter().any(|(p, _)| p == Path::new("/nonexistent")));
        assert!(!binds.iter().any(|(p, _)| p == dir.path()), "{binds:?}");
        if Path::new("/etc/shadow").exists() {
            assert!(view.nodes.contains(&Node::Mask {
                path: "/etc/shadow".into()
            }));
        }
        assert_eq!(visible(&view, &ws.join("src/main.rs")), Some(Access::Write));
        assert_eq!(
            visible(&view, Path::new("/usr/bin/git")),
            Some(Access::Read)
        );
        assert_eq!(visible(&view, dir.path()), None);
        assert_eq!(visible(&view, Path::new("/root/.ssh/id_ed25519")), None);
    }

    #[test]
    fn a_granted_link_or_the_sandboxes_own_folders_are_refused_and_masks_come_last() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        // A commit turned a granted cache folder into a link to somewhere else.
        let target = dir.path().join("elsewhere");
        std::fs::create_dir_all(&target).unwrap();
        let link = dir.path().join("cache");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let paths = vec![
            (link.clone(), Access::Write),
            ("/proc/1".into(), Access::Read),
            ("/".into(), Access::Read),
        ];
        let env = BTreeMap::new();
        let view = view(&request(&ws, &ws, &[ws.as_path()], &paths, &env));
        #[cfg(unix)]
        assert!(
            view.refused
                .iter()
                .any(|r| r.contains("is a symbolic link")
                    && r.contains(&target.display().to_string())),
            "{:?}",
            view.refused
        );
        assert!(view.refused.iter().any(|r| r.contains("its own `/proc`")));
        assert!(
            !view
                .nodes
                .iter()
                .any(|n| matches!(n, Node::Bind { path, .. } if *path == link))
        );
        // Even a grant of `/` leaves the machine's secrets hidden: masks are mounted last.
        let last_bind = view
            .nodes
            .iter()
            .rposition(|n| matches!(n, Node::Bind { .. }))
            .unwrap();
        let first_mask = view
            .nodes
            .iter()
            .position(|n| matches!(n, Node::Mask { .. } | Node::MaskDir { .. }));
        if let Some(first_mask) = first_mask {
            assert!(first_mask > last_bind, "{:?}", view.nodes);
        }
    }

    #[test]
    fn engines_are_known_by_name_and_their_storage_stays_in_the_private_home() {
        assert_eq!(engine("buildah"), Some("buildah"));
        assert_eq!(engine("/usr/bin/podman"), Some("podman"));
        assert_eq!(engine("buildah-helper"), None);
        assert_eq!(
            engine("docker"),
            None,
            "docker talks to a daemon ferry does not start"
        );
        let dir = tempfile::tempdir().unwrap();
        // A path a TOML string must escape.
        let home = dir.path().join("ho\"me");
        let env: BTreeMap<String, String> = engine_env(&home).unwrap().into_iter().collect();
        let conf = std::fs::read_to_string(&env["CONTAINERS_STORAGE_CONF"]).unwrap();
        let parsed: toml::Table = toml::from_str(&conf).unwrap();
        assert_eq!(
            parsed["storage"]["graphroot"].as_str(),
            home.join(".local/share/containers/storage").to_str()
        );
        assert_eq!(env["BUILDAH_ISOLATION"], "chroot");
    }

    #[test]
    fn a_rustup_proxy_brings_rustup_home_and_never_cargo_home() {
        let dir = tempfile::tempdir().unwrap();
        let cargo_bin = dir.path().join(".cargo/bin");
        let rustup_home = dir.path().join(".rustup");
        std::fs::create_dir_all(&cargo_bin).unwrap();
        std::fs::create_dir_all(rustup_home.join("toolchains")).unwrap();
        std::fs::write(rustup_home.join("settings.toml"), "").unwrap();
        std::fs::write(cargo_bin.join("rustup"), "").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("rustup", cargo_bin.join("cargo")).unwrap();
        #[cfg(not(unix))]
        std::fs::write(cargo_bin.join("cargo"), "").unwrap();
        let env = BTreeMap::from([(
            "RUSTUP_HOME".to_string(),
            rustup_home.to_string_lossy().into_owned(),
        )]);
        let found = toolchains(&cargo_bin.join("cargo"), &env, &[]);
        assert!(
            found.dirs.iter().any(|d| d.ends_with(".cargo/bin")),
            "{found:?}"
        );
        #[cfg(unix)]
        assert!(found.dirs.contains(&rustup_home), "{found:?}");
        assert!(
            !found.dirs.iter().any(|d| d.ends_with(".cargo")),
            "{found:?}"
        );
        assert!(!found.dirs.contains(&dir.path().to_path_buf()));
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_where_a_script_or_pyvenv_cfg_belongs_does_not_hold_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("venv/bin");
        std::fs::create_dir_all(&bin).unwrap();
        for fifo in [bin.join("tool"), dir.path().join("venv/pyvenv.cfg")] {
            let path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: mkfifo with a valid C string.
            assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o755) }, 0);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let job = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(toolchains(&bin.join("tool"), &BTreeMap::new(), &[&job]));
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_secs(10)).is_ok(),
            "reading a FIFO blocked"
        );
    }

    #[test]
    fn a_virtualenv_program_brings_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("venv");
        std::fs::create_dir_all(venv.join("bin")).unwrap();
        std::fs::write(venv.join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();
        std::fs::write(venv.join("bin/pytest"), "").unwrap();
        let found = toolchains(&venv.join("bin/pytest"), &BTreeMap::new(), &[]);
        assert!(found.dirs.contains(&venv), "{found:?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_private_process_is_not_dumpable() {
        keep_private().unwrap();
        // SAFETY: PR_GET_DUMPABLE only reads this process's flag.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }, 0);
    }

    #[test]
    fn proxies_leave_loopback_direct_unless_granted() {
        let env: BTreeMap<_, _> = proxy_env(3128, &["example.com"], &[]).into_iter().collect();
        assert_eq!(env["HTTPS_PROXY"], "http://127.0.0.1:3128");
        assert_eq!(env["all_proxy"], "socks5h://127.0.0.1:3128");
        assert_eq!(env["NO_PROXY"], "localhost,127.0.0.1,::1");
        let env: BTreeMap<_, _> = proxy_env(3128, &["127.0.0.1"], &[]).into_iter().collect();
        assert_eq!(env["no_proxy"], "localhost,::1");
    }

    #[test]
    fn failures_name_the_paths_the_grant_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        let secret = dir.path().join("secret.key");
        std::fs::write(&secret, "k").unwrap();
        let env = BTreeMap::new();
        let view = view(&request(&ws, &ws, &[ws.as_path()], &[], &env));
        let output = format!(
            "cat: {}: No such file or directory\ntouch: cannot touch '/usr/x': Read-only file system",
            secret.display()
        );
        let hints = explain(&view, &output);
        assert_eq!(hints.len(), 1, "{hints:?}");
        assert!(hints[0].contains(&format!("paths: {{ {}: read }}", secret.display())));
        let output = format!("cannot write {}/x: Permission denied", ws.display());
        assert!(explain(&view, &output).is_empty());
        // A file it meant to create in a host folder it cannot see names that folder.
        let output = format!(
            "sh: cannot create {}/new.txt: Directory nonexistent",
            dir.path().display()
        );
        let hints = explain(&view, &output);
        assert_eq!(hints.len(), 1, "{hints:?}");
        assert!(hints[0].contains(&format!("paths: {{ {}: write }}", dir.path().display())));
        // Its own files in its private /tmp name nothing.
        assert!(
            explain(
                &view,
                "cannot open /tmp/own-scratch/x: No such file or directory"
            )
            .is_empty()
        );
    }
}
