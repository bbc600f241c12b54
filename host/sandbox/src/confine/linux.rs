//! Linux: new user, mount, PID, network, IPC, UTS and cgroup namespaces, a fresh root built
//! from the [`View`], resource limits, no capabilities, Landlock and seccomp, all set up
//! between `fork` and `exec`.
//!
//! ferry is multithreaded, so the code that runs after `fork` may only make system calls: it
//! allocates nothing, takes no lock and cannot panic. Everything it needs (C strings, the
//! seccomp program, the Landlock ruleset) is prepared before, in [`prepare`].
//!
//! Process tree of one confined program:
//!
//! ```text
//! ferry ─ supervisor (the spawned child; new namespaces except PID; waits, forwards status)
//!           └─ PID 1 of the new PID namespace: the program itself
//! ```
//!
//! A container engine (buildah, podman) runs one level further in: see [`Engine`].
//!
//! When PID 1 exits the kernel kills everything else in its namespace, so nothing a step
//! started survives it. The supervisor dies with ferry (`PR_SET_PDEATHSIG`), and PID 1 dies
//! with the supervisor, so killing the supervisor's process group (cancel, timeout) or
//! ferry itself (crash) ends the whole namespace.

use super::{Access, Node, View};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

/// Where the proxy listens inside the namespace. The namespace has its own loopback, so a
/// fixed port collides with nothing on the host.
pub const PROXY_PORT: u16 = ferry_model::pipeline::PROXY_PORT;

/// Every namespace but the PID one is entered by the supervisor; PID applies to its child.
const NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP;

/// One step of building the new root, in order.
enum Op {
    Dir(CString),
    File(CString),
    Symlink {
        target: CString,
        link: CString,
    },
    Bind {
        source: CString,
        target: CString,
        attrs: u64,
    },
    Tmpfs {
        target: CString,
        options: CString,
        read_only: bool,
    },
    Proc(CString),
    /// Optional mounts: a failure is not fatal (`/dev/pts` where devpts refuses).
    Devpts(CString),
    /// A mount made read-only once what it holds is in place.
    Seal(CString),
}

/// Setup stages, reported to the parent with the errno when one fails.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Stage {
    Namespaces = 1,
    IdMaps,
    Loopback,
    Proxy,
    Fork,
    Mount,
    PivotRoot,
    Limits,
    Landlock,
    Seccomp,
    Program,
}

impl Stage {
    fn describe(code: u8) -> &'static str {
        match code {
            1 => "creating namespaces (are unprivileged user namespaces enabled?)",
            2 => "writing the user id maps",
            3 => "bringing up loopback",
            4 => "opening a listening port (the proxy's or a service's)",
            5 => "forking the namespace's first process",
            6 => "mounting the sandbox's file system",
            7 => "switching to the sandbox's root",
            8 => "setting resource limits",
            9 => "applying Landlock",
            10 => "applying the seccomp filter",
            11 => {
                "starting the program inside the sandbox (is it, and its interpreter, visible there?)"
            }
            _ => "setting up the sandbox",
        }
    }
}

/// How a container engine (buildah, podman) runs: it needs what every other program is
/// refused, its own mounts and namespaces and supplementary groups, to build a container's
/// root and run `RUN` in it. It gets them one level further in, so that none of it reaches
/// the view:
///
/// ```text
/// ferry ─ supervisor (namespaces; ferry writes its id maps from outside, setgroups allowed)
///           └─ PID 1 (builds the view, then waits as the namespace's init)
///                └─ the engine, in a user and mount namespace of its own
/// ```
///
/// Entering a mount namespace owned by a new user namespace locks every mount of the view
/// (the kernel's `MNT_LOCKED` and locked flags): the engine, root of its namespace with all
/// capabilities there, may mount what it likes over them but cannot remount a read-only
/// grant writable or unmount a mask to uncover what it hides. Its network is still the
/// namespace's: loopback and the proxy. Landlock keeps only its scopes (signals and
/// abstract sockets), since a file-system ruleset forbids every mount; seccomp refuses the
/// same calls as for other programs, but for mounts and namespaces.
pub struct Engine {
    /// Id ranges of the engine's outer namespace (inside, outside, count), as ferry writes
    /// them: its own id alone when it is root, else with the user's subordinate ids.
    pub uids: Vec<(u32, u32, u32)>,
    pub gids: Vec<(u32, u32, u32)>,
}

impl Engine {
    /// The ids for a ferry running as `uid`/`gid`, or why an engine cannot run.
    pub fn for_user(uid: u32, gid: u32) -> Result<Engine, String> {
        if uid == 0 {
            return Ok(Engine {
                uids: vec![(0, 0, 1)],
                gids: vec![(0, gid, 1)],
            });
        }
        let name = user_name(uid);
        let range = |file: &str, id: u32| -> Option<(u32, u32)> {
            let text = std::fs::read_to_string(file).ok()?;
            subordinate(&text, name.as_deref(), id)
        };
        let hint = |file: &str| {
            format!(
                "a container engine needs subordinate ids, and `{file}` has none for {}; add a range, for example `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {}`",
                name.as_deref().unwrap_or("this user"),
                name.as_deref().unwrap_or("USER"),
            )
        };
        let (uid_start, uid_count) =
            range("/etc/subuid", uid).ok_or_else(|| hint("/etc/subuid"))?;
        let (gid_start, gid_count) =
            range("/etc/subgid", uid).ok_or_else(|| hint("/etc/subgid"))?;
        Ok(Engine {
            uids: vec![(0, uid, 1), (1, uid_start, uid_count)],
            gids: vec![(0, gid, 1), (1, gid_start, gid_count)],
        })
    }

    /// How many ids the outer namespace maps: the engine's namespace maps them all again.
    fn count(ranges: &[(u32, u32, u32)]) -> u32 {
        ranges.iter().map(|r| r.2).sum()
    }

    /// Writes the outer namespace's maps for the supervisor `pid`: directly as root, else
    /// through the setuid `newuidmap` and `newgidmap`, which check the subordinate ranges.
    async fn write_maps(&self, pid: i32) -> Result<(), String> {
        let text = |ranges: &[(u32, u32, u32)]| {
            ranges
                .iter()
                .map(|(inside, outside, count)| format!("{inside} {outside} {count}\n"))
                .collect::<String>()
        };
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            for (file, ranges) in [("uid_map", &self.uids), ("gid_map", &self.gids)] {
                std::fs::write(format!("/proc/{pid}/{file}"), text(ranges))
                    .map_err(|e| format!("writing the engine's {file}: {e}"))?;
            }
            return Ok(());
        }
        for (tool, ranges) in [("newuidmap", &self.uids), ("newgidmap", &self.gids)] {
            let mut cmd = tokio::process::Command::new(tool);
            cmd.arg(pid.to_string());
            for (inside, outside, count) in ranges {
                cmd.args([inside.to_string(), outside.to_string(), count.to_string()]);
            }
            let out = cmd
                .output()
                .await
                .map_err(|e| format!("running `{tool}` (from the uidmap package): {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "`{tool}` refused the engine's ids: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(())
    }
}

/// The login name of `uid`, which `/etc/subuid` lines usually name.
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: passwd is plain data; getpwuid_r writes into `pwd` and `buf`, of the sizes given.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        Some(CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned())
    }
}

/// The first range of `/etc/subuid` (or `subgid`) text for a user, by name or number.
fn subordinate(text: &str, name: Option<&str>, id: u32) -> Option<(u32, u32)> {
    let id = id.to_string();
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let (who, start, count) = (fields.next()?, fields.next()?, fields.next()?);
        if who != id && Some(who) != name {
            return None;
        }
        let (start, count) = (start.parse().ok()?, count.parse().ok()?);
        (count > 0).then_some((start, count))
    })
}

/// What the child needs, prepared before `fork`.
struct Prepared {
    uid_map: CString,
    gid_map: CString,
    /// For an engine: the maps of its own namespace (`0 0 n`: all of the outer one).
    engine: Option<(CString, CString)>,
    stage: CString,
    ops: Vec<Op>,
    cwd: CString,
    program: CString,
    /// `argv` and `envp` for `execve`, NULL-terminated; the pointers point into `_strings`.
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    _strings: Vec<CString>,
    proxy: bool,
    /// Where the job's services are reached inside (see [`View::services`]).
    services: Vec<libc::sockaddr_in>,
    /// The supervisor's end of the channel ferry asks a service's connections on, or -1.
    connector: RawFd,
    pid_max: CString,
    limits: Vec<(libc::__rlimit_resource_t, libc::rlim_t)>,
    seccomp: Vec<seccompiler::BpfProgram>,
    landlock: Option<RawFd>,
    /// Rules the child adds for what exists only inside (its tmpfs mounts).
    landlock_inside: Vec<(CString, u64)>,
    report: RawFd,
    parent: libc::pid_t,
    /// Top of the stack PID 1 sets itself up on: it shares the supervisor's memory until
    /// it execs (`CLONE_VM | CLONE_VFORK`), which spares a copy of ferry's page tables.
    stack_top: usize,
    _stack: Vec<u8>,
}

/// Bytes of stack for PID 1's setup, which calls nothing deep.
const STACK: usize = 256 << 10;

// SAFETY: the raw pointers point into `_strings`, owned by the same value and never
// changed after construction.
unsafe impl Send for Prepared {}
unsafe impl Sync for Prepared {}

/// A launch in progress: the parent's side of the report channel and the descriptors to
/// close once the child holds its copies.
pub struct Pending {
    report: OwnedFd,
    child_ends: Vec<OwnedFd>,
    engine: Option<Engine>,
    connector: Option<OwnedFd>,
}

/// What a started confined program comes with.
pub struct Started {
    /// The listening socket of the proxy, inside the program's network namespace.
    pub proxy: Option<std::net::TcpListener>,
    /// A pidfd of PID 1 of its namespace: killing it ends every process of the program,
    /// whatever it did to its process group, session or parent-death signal.
    pub pid_one: Option<OwnedFd>,
    /// The listening sockets of [`View::services`], in order, inside the namespace.
    pub services: Vec<std::net::TcpListener>,
    /// For a service: the channel its supervisor answers connection requests on (see
    /// [`connect`]).
    pub connector: Option<OwnedFd>,
}

/// A launch that failed before the program ran.
#[derive(Debug)]
pub struct LaunchError(pub String);

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

fn under(stage: &Path, path: &Path) -> io::Result<CString> {
    let relative = path.strip_prefix("/").unwrap_or(path);
    cstring(&stage.join(relative))
}

/// The directory every sandbox mounts its root on, inside its own mount namespace. One per
/// user, private to them, so no other user can swap it for a link.
fn stage_dir() -> io::Result<&'static Path> {
    static STAGE: std::sync::OnceLock<Result<std::path::PathBuf, String>> =
        std::sync::OnceLock::new();
    let dir = STAGE.get_or_init(|| {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        // SAFETY: geteuid has no preconditions.
        let uid = unsafe { libc::geteuid() };
        let dir = std::env::temp_dir().join(format!("ferry-{uid}-sandbox-root"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        let meta = std::fs::symlink_metadata(&dir).map_err(|e| e.to_string())?;
        if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
            return Err(format!(
                "`{}` is not a private directory of this user; remove it",
                dir.display()
            ));
        }
        Ok(dir)
    });
    dir.as_deref()
        .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.clone()))
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// Turns the view into mount operations under `stage`.
fn ops(view: &View, stage: &Path) -> io::Result<Vec<Op>> {
    let mut ops = vec![Op::Tmpfs {
        target: cstring(stage)?,
        options: c"mode=0755,size=1m".into(),
        read_only: false,
    }];
    let mut made = std::collections::BTreeSet::new();
    let mut dirs = |ops: &mut Vec<Op>, path: &Path| -> io::Result<()> {
        for ancestor in path.ancestors().collect::<Vec<_>>().into_iter().rev() {
            if ancestor != Path::new("/") && made.insert(ancestor.to_path_buf()) {
                ops.push(Op::Dir(under(stage, ancestor)?));
            }
        }
        Ok(())
    };
    for node in &view.nodes {
        match node {
            Node::Symlink { path, target } => {
                if let Some(parent) = path.parent() {
                    dirs(&mut ops, parent)?;
                }
                ops.push(Op::Symlink {
                    target: cstring(target)?,
                    link: under(stage, path)?,
                });
            }
            Node::Bind { path, access, file } => {
                if *file {
                    if let Some(parent) = path.parent() {
                        dirs(&mut ops, parent)?;
                    }
                    ops.push(Op::File(under(stage, path)?));
                } else {
                    dirs(&mut ops, path)?;
                }
                let attrs = match access {
                    Access::Read => MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                    Access::Write => MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                };
                ops.push(Op::Bind {
                    source: cstring(path)?,
                    target: under(stage, path)?,
                    attrs,
                });
            }
            // Device nodes keep the host's /dev mount flags: nothing to add to them.
            Node::Device { path } => {
                ops.push(Op::File(under(stage, path)?));
                ops.push(Op::Bind {
                    source: cstring(path)?,
                    target: under(stage, path)?,
                    attrs: 0,
                });
            }
            Node::MaskDir { path } => ops.push(Op::Tmpfs {
                target: under(stage, path)?,
                options: c"mode=0555,size=4k".into(),
                read_only: true,
            }),
            Node::Replace { path, source } => ops.push(Op::Bind {
                source: cstring(source)?,
                target: under(stage, path)?,
                attrs: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            }),
            // Over a file of a read-only system directory: /dev/null, which reads empty and
            // swallows writes.
            Node::Mask { path } => ops.push(Op::Bind {
                source: c"/dev/null".into(),
                target: under(stage, path)?,
                attrs: 0,
            }),
            Node::Tmpfs { path, size, mode } => {
                dirs(&mut ops, path)?;
                ops.push(Op::Tmpfs {
                    target: under(stage, path)?,
                    options: CString::new(format!("mode={mode:o},size={size}"))?,
                    read_only: false,
                });
            }
            Node::Proc { path } => {
                dirs(&mut ops, path)?;
                ops.push(Op::Proc(under(stage, path)?));
            }
            Node::Devpts { path } => {
                dirs(&mut ops, path)?;
                ops.push(Op::Devpts(under(stage, path)?));
            }
        }
    }
    // `/dev` and `/sys` hold only what the view put there: nothing may add to them, and a
    // container engine, finding them read-only, binds them into a container as they are.
    for sealed in ["/dev", "/sys"].map(Path::new) {
        if view
            .nodes
            .iter()
            .any(|n| matches!(n, Node::Tmpfs { path, .. } if path == sealed))
        {
            ops.push(Op::Seal(under(stage, sealed)?));
        }
    }
    Ok(ops)
}

/// The seccomp filters, compiled once per process: for programs, and for engines.
fn seccomp(engine: bool) -> io::Result<Vec<seccompiler::BpfProgram>> {
    type Filters = std::sync::OnceLock<Result<Vec<seccompiler::BpfProgram>, String>>;
    static FILTERS: [Filters; 2] = [Filters::new(), Filters::new()];
    FILTERS[usize::from(engine)]
        .get_or_init(|| compile_seccomp(engine).map_err(|e| e.to_string()))
        .clone()
        .map_err(io::Error::other)
}

/// Calls mounts and namespaces, which only an engine may make (see [`Engine`]).
const ENGINE_CALLS: &[libc::c_long] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_unshare,
    libc::SYS_setns,
];

/// Calls no CI step needs refused with `EPERM`, and `clone3` answered with `ENOSYS` so that
/// the C library falls back to `clone`, whose flags a filter can read. An engine keeps
/// [`ENGINE_CALLS`] and may clone namespaces.
fn compile_seccomp(engine: bool) -> io::Result<Vec<seccompiler::BpfProgram>> {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    };
    let arch: seccompiler::TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| io::Error::other(format!("seccomp: {e}")))?;
    let always = [
        libc::SYS_bpf,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_userfaultfd,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_reboot,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_syslog,
        libc::SYS_perf_event_open,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_quotactl,
        libc::SYS_open_by_handle_at,
        libc::SYS_vhangup,
    ];
    let engine_calls: &[libc::c_long] = if engine { &[] } else { ENGINE_CALLS };
    let mut rules: std::collections::BTreeMap<i64, Vec<SeccompRule>> = always
        .iter()
        .chain(engine_calls)
        .map(|call| (*call, Vec::new()))
        .collect();
    // `clone` may start processes and threads, not namespaces.
    let namespace_flags = [
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWNS,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWCGROUP,
    ];
    let clone_rules = namespace_flags
        .iter()
        .map(|flag| {
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(*flag as u64),
                *flag as u64,
            )?])
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io::Error::other(format!("seccomp: {e}")))?;
    if !engine {
        rules.insert(libc::SYS_clone, clone_rules);
    }
    let refuse = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| io::Error::other(format!("seccomp: {e}")))?;
    let no_clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| io::Error::other(format!("seccomp: {e}")))?;
    let mut programs: Vec<seccompiler::BpfProgram> = [refuse, no_clone3]
        .into_iter()
        .map(|filter| {
            filter
                .try_into()
                .map_err(|e: seccompiler::BackendError| io::Error::other(format!("seccomp: {e}")))
        })
        .collect::<io::Result<_>>()?;
    if cfg!(target_arch = "x86_64") {
        programs.push(no_x32());
    }
    Ok(programs)
}

/// On x86-64, the x32 ABI reaches every call again under its number with bit 30 set, and
/// the filters above match numbers exactly: refuse all of x32.
fn no_x32() -> seccompiler::BpfProgram {
    const X32_BIT: u32 = 0x4000_0000;
    let statement = |code: u16, k: u32| seccompiler::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    vec![
        // The call's number: the first word of `struct seccomp_data`.
        statement((libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, 0),
        seccompiler::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: X32_BIT,
        },
        statement(
            (libc::BPF_RET | libc::BPF_K) as u16,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        statement(
            (libc::BPF_RET | libc::BPF_K) as u16,
            libc::SECCOMP_RET_ALLOW,
        ),
    ]
}

/// The Landlock ruleset over the same paths as the mounts: a second wall should a mount be
/// wrong. `None` when the kernel has no Landlock.
fn landlock(view: &View, engine: bool) -> io::Result<Option<OwnedFd>> {
    use landlock::{
        ABI, Access as _, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
        Scope,
    };
    let abi = ABI::V6;
    let fail = |e: &dyn std::fmt::Display| io::Error::other(format!("landlock: {e}"));
    if engine {
        let ruleset = Ruleset::default()
            .scope(Scope::from_all(abi))
            .map_err(|e| fail(&e))?
            .create()
            .map_err(|e| fail(&e))?;
        return Ok(ruleset.into());
    }
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(|e| fail(&e))?
        .scope(Scope::from_all(abi))
        .map_err(|e| fail(&e))?
        .create()
        .map_err(|e| fail(&e))?;
    for node in &view.nodes {
        let (path, rights) = match node {
            Node::Bind { path, access, file } => {
                let rights = match (access, file) {
                    (Access::Read, false) => AccessFs::from_read(abi),
                    (Access::Write, false) => AccessFs::from_all(abi),
                    (Access::Read, true) => AccessFs::from_read(abi) & AccessFs::from_file(abi),
                    (Access::Write, true) => AccessFs::from_file(abi),
                };
                (path, rights)
            }
            Node::Device { path } => (path, AccessFs::from_file(abi) & !AccessFs::Execute),
            _ => continue,
        };
        let fd = PathFd::new(path).map_err(|e| fail(&e))?;
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, rights))
            .map_err(|e| fail(&e))?;
    }
    Ok(ruleset.into())
}

/// Landlock rights for what only exists inside (the private `/tmp`, `/dev/shm`, `/proc`).
fn landlock_inside(view: &View) -> io::Result<Vec<(CString, u64)>> {
    use landlock::{ABI, Access as _, AccessFs, BitFlags};
    let abi = ABI::V6;
    // The ruleset handles what this kernel knows (best effort); rights beyond that would
    // make the kernel refuse the rule. Its version, as the kernel reports it:
    // SAFETY: a version query takes no attributes and returns an integer.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    let supported = AccessFs::from_all(ABI::from(version as i32)).bits();
    let read_dir = BitFlags::from(AccessFs::ReadDir).bits();
    let all = AccessFs::from_all(abi).bits();
    let mut rules = vec![(c"/".into(), read_dir), (c"/dev".into(), read_dir)];
    for node in &view.nodes {
        match node {
            Node::Tmpfs { path, .. } => rules.push((cstring(path)?, all)),
            Node::Proc { path } => rules.push((
                cstring(path)?,
                (AccessFs::from_read(abi) | AccessFs::WriteFile).bits(),
            )),
            Node::Devpts { path } => rules.push((
                cstring(path)?,
                (AccessFs::from_file(abi) & !AccessFs::Execute).bits() | read_dir,
            )),
            _ => {}
        }
    }
    for (_, rights) in &mut rules {
        *rights &= supported;
    }
    Ok(rules)
}

/// Arranges for `cmd` to start confined to `view`, as a container engine when `engine` says
/// with which ids. Call [`Pending::started`] right after spawning to learn whether it did.
pub fn prepare(
    cmd: &mut tokio::process::Command,
    view: &View,
    program: &Path,
    cwd: &Path,
    engine: Option<Engine>,
) -> io::Result<Pending> {
    let stage = stage_dir()?;
    let (ours, theirs) = seqpacket_pair()?;
    let connector = match view.connector {
        true => Some(seqpacket_pair()?),
        false => None,
    };
    let landlock = landlock(view, engine.is_some())?;
    // PID 1 execs the program itself, so that a failed exec reaches the report channel.
    let std = cmd.as_std();
    let mut strings = vec![cstring(program)?];
    for arg in std.get_args() {
        strings.push(CString::new(arg.as_bytes())?);
    }
    let argc = strings.len();
    for (name, value) in std.get_envs() {
        if let Some(value) = value {
            let mut pair = name.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            strings.push(CString::new(pair)?);
        }
    }
    let pointers = |range: &[CString]| {
        let mut v: Vec<*const libc::c_char> = range.iter().map(|s| s.as_ptr()).collect();
        v.push(std::ptr::null());
        v
    };
    let (argv, envp) = (pointers(&strings[..argc]), pointers(&strings[argc..]));
    // SAFETY: these calls have no preconditions.
    let (uid, gid, parent) = unsafe { (libc::geteuid(), libc::getegid(), libc::getpid()) };
    // Inside, root is `nobody` for a program that must not be root.
    let (inside_uid, inside_gid) = match view.unprivileged && uid == 0 {
        true => (NOBODY, NOBODY),
        false => (uid, gid),
    };
    let mut stack = vec![0u8; STACK];
    // The stack grows down from its 16-byte aligned top.
    let stack_top = (stack.as_mut_ptr() as usize + STACK) & !15;
    let prepared = Arc::new(Prepared {
        uid_map: CString::new(format!("{inside_uid} {uid} 1\n"))?,
        gid_map: CString::new(format!("{inside_gid} {gid} 1\n"))?,
        engine: match &engine {
            Some(ids) => Some((
                CString::new(format!("0 0 {}\n", Engine::count(&ids.uids)))?,
                CString::new(format!("0 0 {}\n", Engine::count(&ids.gids)))?,
            )),
            None => None,
        },
        stage: cstring(stage)?,
        ops: ops(view, stage)?,
        cwd: cstring(cwd)?,
        program: cstring(program)?,
        argv,
        envp,
        _strings: strings,
        proxy: view.proxy,
        services: view.services.iter().map(|a| sockaddr(*a)).collect(),
        connector: connector
            .as_ref()
            .map_or(-1, |(_, theirs)| theirs.as_raw_fd()),
        pid_max: CString::new(format!("{}\n", view.processes.max(301)))?,
        limits: vec![
            (libc::RLIMIT_NPROC, view.processes as libc::rlim_t),
            (libc::RLIMIT_DATA, view.memory as libc::rlim_t),
            (libc::RLIMIT_CORE, 0),
        ],
        seccomp: seccomp(engine.is_some())?,
        landlock: landlock.as_ref().map(|fd| fd.as_raw_fd()),
        landlock_inside: match engine {
            Some(_) => Vec::new(),
            None => landlock_inside(view)?,
        },
        report: theirs.as_raw_fd(),
        parent,
        stack_top,
        _stack: stack,
    });
    let mut child_ends = vec![theirs];
    child_ends.extend(landlock);
    let connector = connector.map(|(ours, theirs)| {
        child_ends.push(theirs);
        ours
    });
    // SAFETY: the closure only makes system calls on data prepared above; see the module
    // documentation.
    unsafe {
        cmd.pre_exec(move || supervise(&prepared));
    }
    Ok(Pending {
        report: ours,
        child_ends,
        engine,
        connector,
    })
}

/// The user and group a program that must not be root runs as when ferry is root.
const NOBODY: u32 = 65534;

/// A connected pair of close-on-exec `SOCK_SEQPACKET` sockets.
fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element array for socketpair to fill.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn sockaddr(addr: std::net::SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; zeroed is a valid value.
    let mut raw: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    raw.sin_family = libc::AF_INET as libc::sa_family_t;
    raw.sin_port = addr.port().to_be();
    raw.sin_addr.s_addr = u32::from(*addr.ip()).to_be();
    raw
}

/// ferry's side of a service's connection channel (see [`Started::connector`]).
pub struct Connector {
    fd: tokio::io::unix::AsyncFd<OwnedFd>,
    /// Numbers each request, so that the answer to one whose caller gave up (a step that
    /// ended while it waited) is told apart from the next one's and thrown away.
    next: std::sync::atomic::AtomicU32,
}

impl Connector {
    pub fn new(fd: OwnedFd) -> io::Result<Connector> {
        // SAFETY: the descriptor is ours alone and stays open as long as the AsyncFd.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Connector {
            fd,
            next: Default::default(),
        })
    }

    /// Asks the service's supervisor for a connection to `port` on the service's own
    /// loopback. One request at a time: the caller serialises.
    pub async fn connect(&self, port: u16) -> io::Result<std::net::TcpStream> {
        let seq = self
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes();
        let p = port.to_le_bytes();
        let request = [p[0], p[1], seq[0], seq[1], seq[2], seq[3]];
        loop {
            let mut guard = self.fd.writable().await?;
            let sent = guard.try_io(|fd| {
                // SAFETY: sends a stack buffer on a descriptor the AsyncFd keeps open.
                let n = unsafe {
                    libc::send(
                        fd.as_raw_fd(),
                        request.as_ptr().cast(),
                        request.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match sent {
                Ok(result) => {
                    result?;
                    break;
                }
                Err(_would_block) => continue,
            }
        }
        loop {
            let mut guard = self.fd.readable().await?;
            let (bytes, fd) = match guard.try_io(|fd| receive(fd.as_raw_fd())) {
                Ok(message) => message?,
                Err(_would_block) => continue,
            };
            if bytes.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the service's sandbox has ended",
                ));
            }
            // Another request's answer, left by a caller that gave up: its socket closes here.
            if bytes.get(1..5) != Some(&seq[..]) {
                continue;
            }
            return match (bytes[0], fd) {
                (b'C', Some(fd)) => Ok(std::net::TcpStream::from(fd)),
                (b'F', _) if bytes.len() >= 9 => {
                    Err(io::Error::from_raw_os_error(i32::from_le_bytes([
                        bytes[5], bytes[6], bytes[7], bytes[8],
                    ])))
                }
                _ => Err(io::Error::other(
                    "unexpected answer from the service's sandbox",
                )),
            };
        }
    }
}

impl Pending {
    /// Waits until the program runs (or setup failed) and collects the proxy socket.
    pub async fn started(self) -> Result<Started, LaunchError> {
        drop(self.child_ends);
        // SAFETY: the descriptor is ours alone and stays open as long as the AsyncFd.
        let report = unsafe { tokio::io::unix::AsyncFd::register(self.report) }
            .map_err(|e| LaunchError(format!("watching the sandbox's setup: {e}")))?;
        let mut proxy = None;
        let mut pid_one = None;
        let mut services = Vec::new();
        let connector = self.connector;
        loop {
            let mut guard = report
                .readable()
                .await
                .map_err(|e| LaunchError(format!("watching the sandbox's setup: {e}")))?;
            let message = guard.try_io(|fd| receive(fd.as_raw_fd()));
            let (bytes, fd) = match message {
                Err(_would_block) => continue,
                Ok(Err(e)) => return Err(LaunchError(format!("reading the sandbox's setup: {e}"))),
                Ok(Ok(message)) => message,
            };
            match bytes.first() {
                // End of stream: the program was exec'd and every setup copy is closed.
                None => {
                    return Ok(Started {
                        proxy,
                        pid_one,
                        services,
                        connector,
                    });
                }
                Some(b'L') => {
                    if let Some(fd) = fd {
                        proxy = Some(std::net::TcpListener::from(fd));
                    }
                }
                Some(b'S') => match fd {
                    Some(fd) => services.push(std::net::TcpListener::from(fd)),
                    None => {
                        return Err(LaunchError("a service's port came without a socket".into()));
                    }
                },
                Some(b'P') if bytes.len() >= 5 => {
                    let pid = i32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
                    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
                    // or -1. PID 1 cannot have been reaped yet: its parent, the supervisor,
                    // waits for it only after sending this.
                    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
                    if fd >= 0 {
                        // SAFETY: a new descriptor nobody else owns.
                        pid_one = Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
                    }
                }
                // An engine's supervisor waits for its id maps, which only ferry, outside,
                // may write with supplementary groups allowed.
                Some(b'U') if bytes.len() >= 5 => {
                    let pid = i32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
                    let written = match &self.engine {
                        Some(engine) => engine.write_maps(pid).await,
                        None => Err("the sandbox asked for an engine's id maps".into()),
                    };
                    let answer = if written.is_ok() { b'G' } else { b'N' };
                    // SAFETY: sends one byte from the stack on our end of the channel.
                    unsafe {
                        libc::send(report.get_ref().as_raw_fd(), [answer].as_ptr().cast(), 1, 0);
                    }
                    written.map_err(LaunchError)?;
                }
                Some(b'E') if bytes.len() >= 6 => {
                    let errno = i32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
                    return Err(LaunchError(format!(
                        "{}: {}",
                        Stage::describe(bytes[1]),
                        io::Error::from_raw_os_error(errno)
                    )));
                }
                Some(_) => return Err(LaunchError("unexpected message from the sandbox".into())),
            }
        }
    }
}

/// One message and the descriptor it carries, if any.
fn receive(fd: RawFd) -> io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut data = [0u8; 16];
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points at live buffers of the sizes it states.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut passed = None;
    // SAFETY: the CMSG macros walk the control buffer recvmsg filled.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let fd: RawFd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                passed = Some(OwnedFd::from_raw_fd(fd));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((data[..n as usize].to_vec(), passed))
}

// ---- After fork: system calls only. ----

/// Reports a failed stage to the parent and ends this process.
fn fail(p: &Prepared, stage: Stage) -> ! {
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let e = errno.to_le_bytes();
    let message = [b'E', stage as u8, e[0], e[1], e[2], e[3]];
    // SAFETY: writes a stack buffer to a descriptor, then exits without running destructors.
    unsafe {
        libc::send(p.report, message.as_ptr().cast(), message.len(), 0);
        libc::_exit(127)
    }
}

fn check(p: &Prepared, rc: libc::c_long, stage: Stage) {
    if rc < 0 {
        fail(p, stage);
    }
}

fn write_file(path: &CStr, content: &CStr) -> libc::c_long {
    // SAFETY: both strings are NUL-terminated; the descriptor is closed before returning.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return -1;
        }
        let bytes = content.to_bytes();
        let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        libc::close(fd);
        if n == bytes.len() as isize { 0 } else { -1 }
    }
}

/// Runs in the spawned child, and never returns: the supervisor exits as PID 1 does, and PID 1
/// becomes the program.
fn supervise(p: &Prepared) -> ! {
    // SAFETY: every call below is a system call on prepared, NUL-terminated data.
    unsafe {
        // Descriptors ferry opened without close-on-exec must not reach the sandbox; this
        // also closes std's exec-error pipe, which is why `spawn` returns at once.
        let mut keep = [
            p.report,
            p.landlock.unwrap_or(p.report),
            if p.connector >= 0 {
                p.connector
            } else {
                p.report
            },
        ];
        keep.sort_unstable();
        let mut next = 3u32;
        for fd in keep {
            let fd = fd as u32;
            if fd > next {
                close_range(next, fd - 1);
            }
            next = next.max(fd + 1);
        }
        close_range(next, u32::MAX);

        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != p.parent {
            libc::_exit(127);
        }
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        check(p, libc::unshare(NAMESPACES) as _, Stage::Namespaces);
        if p.engine.is_some() {
            let pid = libc::getpid().to_le_bytes();
            let message = [b'U', pid[0], pid[1], pid[2], pid[3]];
            libc::send(p.report, message.as_ptr().cast(), message.len(), 0);
            let mut answer = [0u8];
            if libc::recv(p.report, answer.as_mut_ptr().cast(), 1, 0) != 1 || answer[0] != b'G' {
                *libc::__errno_location() = libc::EPERM;
                fail(p, Stage::IdMaps);
            }
        } else {
            check(
                p,
                write_file(c"/proc/self/setgroups", c"deny"),
                Stage::IdMaps,
            );
            check(
                p,
                write_file(c"/proc/self/uid_map", &p.uid_map),
                Stage::IdMaps,
            );
            check(
                p,
                write_file(c"/proc/self/gid_map", &p.gid_map),
                Stage::IdMaps,
            );
        }
        loopback_up(p);
        if p.connector >= 0 {
            // A service is not root inside; in a network namespace of its own, any port is
            // its to listen on (a stub on 80). Where the kernel refuses, ports from 1024 on
            // still work, so a failure is not fatal.
            write_file(c"/proc/sys/net/ipv4/ip_unprivileged_port_start", c"0");
        }
        if p.proxy {
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_port = PROXY_PORT.to_be();
            addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            open_listener(p, &addr, b'L');
        }
        for addr in &p.services {
            open_listener(p, addr, b'S');
        }
        // PID 1 shares this process's memory and runs on its own stack until it execs; this
        // process sleeps meanwhile (vfork semantics), so nothing else touches the memory.
        // An engine's PID 1 never execs (it stays the namespace's init), so it is forked.
        let child = if p.engine.is_some() {
            let child = libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0);
            if child == 0 {
                be_pid_one(p);
            }
            child as libc::pid_t
        } else {
            libc::clone(
                pid_one,
                p.stack_top as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                p as *const Prepared as *mut libc::c_void,
            )
        };
        check(p, child as _, Stage::Fork);
        {
            // The supervisor: tells ferry PID 1's pid (for a pidfd: ferry kills the namespace
            // through it, since the program may undo anything else), closes its copy of the
            // report channel so that the parent's read ends, then waits and exits as PID 1
            // did.
            let pid = child.to_le_bytes();
            let message = [b'P', pid[0], pid[1], pid[2], pid[3]];
            libc::send(p.report, message.as_ptr().cast(), message.len(), 0);
            libc::close(p.report);
            if let Some(fd) = p.landlock {
                libc::close(fd);
            }
            if p.connector >= 0 {
                serve_connector(p.connector, child);
            }
            let mut status = 0;
            loop {
                let r = libc::waitpid(child, &mut status, 0);
                if r == child {
                    break;
                }
                if r < 0 && *libc::__errno_location() != libc::EINTR {
                    libc::_exit(127);
                }
            }
            if libc::WIFSIGNALED(status) {
                let signal = libc::WTERMSIG(status);
                libc::signal(signal, libc::SIG_DFL);
                libc::kill(libc::getpid(), signal);
                libc::_exit(128 + signal);
            }
            libc::_exit(libc::WEXITSTATUS(status));
        }
    }
}

/// PID 1's entry, on its own stack.
extern "C" fn pid_one(prepared: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `prepared` is the supervisor's `Prepared`, alive while it sleeps in vfork.
    unsafe { be_pid_one(&*(prepared as *const Prepared)) }
}

/// Closes descriptors `first..=last`; by hand where the kernel predates `close_range`
/// (Linux 5.9), up to the descriptor limit.
unsafe fn close_range(first: u32, last: u32) {
    // SAFETY: closing descriptors this process may hold; no memory is touched but `limit`.
    unsafe {
        if libc::syscall(libc::SYS_close_range, first, last, 0) == 0 {
            return;
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let top = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 20) as u32
        } else {
            1 << 16
        };
        for fd in first..=last.min(top) {
            libc::close(fd as libc::c_int);
        }
    }
}

unsafe fn loopback_up(p: &Prepared) {
    // SAFETY: an ioctl on a socket this function owns, with a zero-initialised ifreq.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        check(p, s as _, Stage::Loopback);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        check(
            p,
            libc::ioctl(s, libc::SIOCSIFFLAGS as _, &ifr) as _,
            Stage::Loopback,
        );
        libc::close(s);
    }
}

/// Opens a listening socket at `addr` in the namespace and hands it to ferry, tagged `tag`
/// (`L` the proxy, `S` a service).
unsafe fn open_listener(p: &Prepared, addr: &libc::sockaddr_in, tag: u8) {
    // SAFETY: socket calls on a descriptor this function owns and stack structures.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        check(p, s as _, Stage::Proxy);
        check(
            p,
            libc::bind(
                s,
                (addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ) as _,
            Stage::Proxy,
        );
        check(p, libc::listen(s, 128) as _, Stage::Proxy);
        check(p, send_fd(p.report, &[tag], s) as _, Stage::Proxy);
        libc::close(s);
    }
}

/// Sends `message` (at most 8 bytes) with descriptor `fd`.
unsafe fn send_fd(channel: RawFd, message: &[u8], fd: RawFd) -> isize {
    // SAFETY: builds a message on the stack around one descriptor and sends it.
    unsafe {
        let mut bytes = [0u8; 8];
        let n = message.len().min(bytes.len());
        bytes[..n].copy_from_slice(&message[..n]);
        let mut iov = libc::iovec {
            iov_base: bytes.as_mut_ptr().cast(),
            iov_len: n,
        };
        let mut control = [0u64; 4];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        libc::sendmsg(channel, &msg, libc::MSG_NOSIGNAL)
    }
}

/// How long the supervisor waits for a service to accept one connection: a service whose
/// backlog is full must not stall the others' requests for long.
const CONNECT_TIMEOUT_SECONDS: libc::time_t = 3;

/// A service's supervisor, until PID 1 exits: connects to the ports ferry asks for on the
/// namespace's loopback and hands back each connection (`C` and the socket, or `F` and the
/// errno). ferry reaches the service only this way: nothing outside the namespace can
/// connect into it, and the service can connect out of it no more than any program.
unsafe fn serve_connector(channel: RawFd, child: libc::pid_t) {
    // SAFETY: system calls on descriptors this process holds and stack structures.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, child, 0) as RawFd;
        if pidfd < 0 {
            libc::close(channel);
            return;
        }
        let mut channel = channel;
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: pidfd,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: channel,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            if libc::poll(fds.as_mut_ptr(), 2, -1) < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                break;
            }
            if fds[0].revents != 0 {
                break;
            }
            if fds[1].revents == 0 {
                continue;
            }
            let mut request = [0u8; 6];
            let n = libc::recv(channel, request.as_mut_ptr().cast(), 6, libc::MSG_DONTWAIT);
            if n == 6 {
                let seq = [request[2], request[3], request[4], request[5]];
                answer_connect(channel, u16::from_le_bytes([request[0], request[1]]), seq);
            } else if n == 0 || (n < 0 && *libc::__errno_location() != libc::EAGAIN) {
                // ferry let go of the service: only the wait is left.
                libc::close(channel);
                channel = -1;
            }
        }
        if channel >= 0 {
            libc::close(channel);
        }
        libc::close(pidfd);
    }
}

unsafe fn answer_connect(channel: RawFd, port: u16, seq: [u8; 4]) {
    // SAFETY: system calls on a socket this function owns and stack structures.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        let mut rc = if s < 0 { -1 } else { 0 };
        if rc == 0 {
            let timeout = libc::timeval {
                tv_sec: CONNECT_TIMEOUT_SECONDS,
                tv_usec: 0,
            };
            libc::setsockopt(
                s,
                libc::SOL_SOCKET,
                libc::SO_SNDTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_port = port.to_be();
            addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            rc = libc::connect(
                s,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
        }
        if rc == 0 {
            send_fd(channel, &[b'C', seq[0], seq[1], seq[2], seq[3]], s);
        } else {
            let e = (*libc::__errno_location()).to_le_bytes();
            let message = [b'F', seq[0], seq[1], seq[2], seq[3], e[0], e[1], e[2], e[3]];
            libc::send(
                channel,
                message.as_ptr().cast(),
                message.len(),
                libc::MSG_NOSIGNAL,
            );
        }
        if s >= 0 {
            libc::close(s);
        }
    }
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

unsafe fn set_attrs(path: &CStr, attrs: u64, recursive: bool) -> libc::c_long {
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: mount_setattr reads `attr` of the size given.
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    }
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;

/// Builds the new root and the walls around it, then execs the program as PID 1.
unsafe fn be_pid_one(p: &Prepared) -> ! {
    // SAFETY: system calls on prepared data; see the module documentation.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // A session of its own: ferry's controlling terminal (an interactive `ferry run`)
        // is not the program's to read or to type into.
        libc::setsid();
        let null = std::ptr::null::<libc::c_char>();
        check(
            p,
            libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) as _,
            Stage::Mount,
        );
        for op in &p.ops {
            match op {
                Op::Dir(path) => {
                    libc::mkdir(path.as_ptr(), 0o755);
                }
                Op::File(path) => {
                    let fd = libc::open(
                        path.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o644,
                    );
                    if fd >= 0 {
                        libc::close(fd);
                    }
                }
                Op::Symlink { target, link } => {
                    libc::symlink(target.as_ptr(), link.as_ptr());
                }
                Op::Bind {
                    source,
                    target,
                    attrs,
                } => {
                    check(
                        p,
                        libc::mount(
                            source.as_ptr(),
                            target.as_ptr(),
                            null,
                            libc::MS_BIND | libc::MS_REC,
                            std::ptr::null(),
                        ) as _,
                        Stage::Mount,
                    );
                    if *attrs != 0 {
                        check(p, set_attrs(target, *attrs, true), Stage::Mount);
                    }
                }
                Op::Tmpfs {
                    target,
                    options,
                    read_only,
                } => {
                    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
                    if *read_only {
                        flags |= libc::MS_RDONLY;
                    }
                    check(
                        p,
                        libc::mount(
                            c"tmpfs".as_ptr(),
                            target.as_ptr(),
                            c"tmpfs".as_ptr(),
                            flags,
                            options.as_ptr().cast(),
                        ) as _,
                        Stage::Mount,
                    );
                }
                Op::Proc(target) => check(
                    p,
                    libc::mount(
                        c"proc".as_ptr(),
                        target.as_ptr(),
                        c"proc".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        std::ptr::null(),
                    ) as _,
                    Stage::Mount,
                ),
                Op::Seal(target) => {
                    check(p, set_attrs(target, MOUNT_ATTR_RDONLY, false), Stage::Mount);
                }
                Op::Devpts(target) => {
                    libc::mount(
                        c"devpts".as_ptr(),
                        target.as_ptr(),
                        c"devpts".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NOEXEC,
                        c"newinstance,ptmxmode=0666,mode=0620".as_ptr().cast(),
                    );
                }
            }
        }
        check(p, libc::chdir(p.stage.as_ptr()) as _, Stage::PivotRoot);
        check(
            p,
            libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()),
            Stage::PivotRoot,
        );
        check(
            p,
            libc::umount2(c".".as_ptr(), libc::MNT_DETACH) as _,
            Stage::PivotRoot,
        );
        check(p, libc::chdir(c"/".as_ptr()) as _, Stage::PivotRoot);
        check(
            p,
            set_attrs(
                c"/",
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                false,
            ),
            Stage::Mount,
        );
        // The namespace's own process cap (Linux 6.14 and later); RLIMIT_NPROC covers older
        // kernels for users other than root.
        write_file(c"/proc/sys/kernel/pid_max", &p.pid_max);
        libc::sethostname(c"ferry".as_ptr(), 5);
        for (resource, value) in &p.limits {
            let limit = libc::rlimit {
                rlim_cur: *value,
                rlim_max: *value,
            };
            check(p, libc::setrlimit(*resource, &limit) as _, Stage::Limits);
        }
        check(p, libc::chdir(p.cwd.as_ptr()) as _, Stage::Program);
        if let Some((uid_map, gid_map)) = &p.engine {
            start_engine(p, uid_map, gid_map);
        }
        // No capabilities survive exec, even for a program running as the namespace's root.
        for cap in 0..64 {
            libc::prctl(libc::PR_CAPBSET_DROP, cap);
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        restrict_and_exec(p);
    }
}

/// The last walls, then the program: no new privileges, Landlock, seccomp, `execve`.
unsafe fn restrict_and_exec(p: &Prepared) -> ! {
    // SAFETY: system calls on prepared data; see the module documentation.
    unsafe {
        check(
            p,
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as _,
            Stage::Landlock,
        );
        if let Some(ruleset) = p.landlock {
            for (path, rights) in &p.landlock_inside {
                let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                if fd < 0 {
                    continue;
                }
                let attr = PathBeneathAttr {
                    allowed_access: *rights,
                    parent_fd: fd,
                };
                check(
                    p,
                    libc::syscall(
                        libc::SYS_landlock_add_rule,
                        ruleset,
                        LANDLOCK_RULE_PATH_BENEATH,
                        &attr as *const PathBeneathAttr,
                        0,
                    ),
                    Stage::Landlock,
                );
                libc::close(fd);
            }
            check(
                p,
                libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0),
                Stage::Landlock,
            );
            libc::close(ruleset);
        }
        for filter in &p.seccomp {
            if seccompiler::apply_filter(filter).is_err() {
                fail(p, Stage::Seccomp);
            }
        }
        libc::execve(p.program.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
        fail(p, Stage::Program);
    }
}

/// `/proc/<pid>/<file>` in `buf`, without allocating.
fn proc_path<'a>(buf: &'a mut [u8; 48], pid: libc::pid_t, file: &[u8]) -> &'a CStr {
    let mut digits = [0u8; 10];
    let mut n = pid.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut at = 0;
    for byte in b"/proc/"
        .iter()
        .chain(digits[..len].iter().rev())
        .chain(b"/")
        .chain(file)
        .take(buf.len() - 1)
    {
        buf[at] = *byte;
        at += 1;
    }
    buf[at] = 0;
    CStr::from_bytes_until_nul(&buf[..=at]).unwrap_or(c"")
}

/// PID 1 of an engine (see [`Engine`]): forks the engine into a user and mount namespace of
/// its own, which locks the view's mounts, writes its id maps (PID 1 has the capabilities
/// over its parent namespace that this needs), and then reaps until the engine exits.
unsafe fn start_engine(p: &Prepared, uid_map: &CStr, gid_map: &CStr) -> ! {
    // SAFETY: system calls on prepared data and stack buffers; see the module documentation.
    unsafe {
        let mut go = [0; 2];
        check(
            p,
            libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) as _,
            Stage::Fork,
        );
        let engine = libc::syscall(
            libc::SYS_clone,
            libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::SIGCHLD,
            0,
            0,
            0,
            0,
        ) as libc::pid_t;
        check(p, engine as _, Stage::Fork);
        if engine == 0 {
            libc::close(go[1]);
            let mut byte = [0u8];
            // PID 1 writes once the maps are in place, or dies (which kills this process).
            if libc::read(go[0], byte.as_mut_ptr().cast(), 1) != 1 {
                libc::_exit(127);
            }
            libc::close(go[0]);
            restrict_and_exec(p);
        }
        libc::close(go[0]);
        // A copy of ferry's memory, visible as the engine's /proc/1: not readable by it.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        let mut path = [0u8; 48];
        check(
            p,
            write_file(proc_path(&mut path, engine, b"uid_map"), uid_map),
            Stage::IdMaps,
        );
        check(
            p,
            write_file(proc_path(&mut path, engine, b"gid_map"), gid_map),
            Stage::IdMaps,
        );
        libc::write(go[1], [b'g'].as_ptr().cast(), 1);
        libc::close(go[1]);
        // The engine holds the report channel until it execs; ferry reads to its end.
        libc::close(p.report);
        if let Some(fd) = p.landlock {
            libc::close(fd);
        }
        let mut status = 0;
        loop {
            let reaped = libc::waitpid(-1, &mut status, 0);
            if reaped == engine {
                break;
            }
            if reaped < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        // The namespace's init cannot die of a signal it sends itself: the status says it.
        if libc::WIFSIGNALED(status) {
            libc::_exit(128 + libc::WTERMSIG(status));
        }
        libc::_exit(libc::WEXITSTATUS(status));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step that ends while ferry waits for a service's answer leaves that answer in the
    /// channel; the next connection must not take it for its own (a socket to another port,
    /// or a refusal meant for a service that was still starting).
    #[tokio::test]
    async fn an_abandoned_request_never_answers_the_next_one() {
        let (ours, theirs) = seqpacket_pair().unwrap();
        let connector = Connector::new(ours).unwrap();
        let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target_port = target.local_addr().unwrap().port();
        // The supervisor: answers each request once told to, the first with a refusal.
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let supervisor = std::thread::spawn(move || {
            let fd = theirs.as_raw_fd();
            for answer in 0..2 {
                let mut request = [0u8; 6];
                // SAFETY: a blocking recv into a stack buffer on a descriptor we hold.
                let n = unsafe { libc::recv(fd, request.as_mut_ptr().cast(), 6, 0) };
                assert_eq!(n, 6);
                wait.recv().unwrap();
                let seq = [request[2], request[3], request[4], request[5]];
                if answer == 0 {
                    let e = libc::ECONNREFUSED.to_le_bytes();
                    let message = [b'F', seq[0], seq[1], seq[2], seq[3], e[0], e[1], e[2], e[3]];
                    // SAFETY: sends a stack buffer.
                    unsafe { libc::send(fd, message.as_ptr().cast(), message.len(), 0) };
                } else {
                    let port = u16::from_le_bytes([request[0], request[1]]);
                    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                    // SAFETY: sends a descriptor this thread holds open until after.
                    let sent = unsafe {
                        send_fd(
                            fd,
                            &[b'C', seq[0], seq[1], seq[2], seq[3]],
                            stream.as_raw_fd(),
                        )
                    };
                    assert!(sent > 0);
                }
            }
        });
        let gave_up =
            tokio::time::timeout(std::time::Duration::from_millis(50), connector.connect(1)).await;
        assert!(gave_up.is_err(), "the first request was to be abandoned");
        go.send(()).unwrap();
        let next = connector.connect(target_port);
        go.send(()).unwrap();
        let stream = next
            .await
            .expect("the refusal meant for the abandoned request");
        assert_eq!(stream.peer_addr().unwrap().port(), target_port);
        supervisor.join().unwrap();
    }

    #[test]
    fn subordinate_ids_are_found_by_name_or_number() {
        let text = "alice:100000:65536\n1001:200000:1000\nbob:300000:0\n";
        assert_eq!(
            subordinate(text, Some("alice"), 1000),
            Some((100000, 65536))
        );
        assert_eq!(subordinate(text, Some("carol"), 1001), Some((200000, 1000)));
        assert_eq!(subordinate(text, Some("bob"), 1002), None, "an empty range");
        assert_eq!(subordinate(text, None, 4), None);
        assert_eq!(subordinate("garbage\n::\n", Some("x"), 1), None);
    }

    #[test]
    fn an_engine_run_by_root_maps_root_alone() {
        let engine = Engine::for_user(0, 0).unwrap();
        assert_eq!(engine.uids, vec![(0, 0, 1)]);
        assert_eq!(Engine::count(&engine.gids), 1);
    }

    #[test]
    fn proc_paths_are_built_without_allocating() {
        let mut buf = [0u8; 48];
        assert_eq!(proc_path(&mut buf, 7, b"uid_map"), c"/proc/7/uid_map");
        assert_eq!(
            proc_path(&mut buf, 4_194_304, b"gid_map"),
            c"/proc/4194304/gid_map"
        );
    }
}
