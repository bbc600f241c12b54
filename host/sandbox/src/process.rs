//! Host side of `ferry:step/process`: granted programs, no shell, confined env and cwd,
//! live output, and the whole process group killed on timeout or cancel.

use crate::bindings::process::{self, Command, Error, Output};
use crate::confine;
use crate::state::{DeadlineReached, StepState, Target};
use ferry_engine::{Level, StepLog, os};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
#[cfg(any(target_os = "linux", target_os = "macos"))]
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Bytes of each stream returned to the guest; the log still sees all of it up to its cap.
pub const MAX_CAPTURE: u64 = 4 << 20;

/// Kills the child's process group when dropped: on timeout, on a trap, and after a normal
/// exit to reap background processes the command left. Cancellation is covered by the
/// runner's [`ProcessGroups`](crate::state::ProcessGroups).
struct GroupGuard {
    groups: crate::state::ProcessGroups,
    targets: Vec<Target>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        for target in self.targets.drain(..) {
            self.groups.kill(target);
        }
    }
}

/// The egress proxy a confined program gets; none where programs reach the network without
/// one (Windows).
#[cfg(any(target_os = "linux", target_os = "macos"))]
type Proxy = crate::proxy::Proxy;
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
type Proxy = ();

impl StepState {
    /// The egress proxy of this step's host programs.
    #[cfg(any(target_os = "linux", target_os = "macos"))]
    fn proxy(&self) -> Proxy {
        let site = self.site.clone();
        crate::proxy::Proxy {
            grants: self.grant.network.clone(),
            log: self.log.clone(),
            public_only: self.untrusted,
            denial: Box::new(move |target| {
                format!(
                    "connection to `{target}` refused: it is not granted to step `{}` of job `{}`\nhint: grant it in {}:\n    permissions:\n      network: [\"{target}\"]",
                    site.step, site.job, site.grant_site
                )
            }),
        }
    }
}

impl StepState {
    /// The job's running services, when it has any.
    fn services(&self) -> Option<&crate::services::Services> {
        self.services
            .as_deref()
            .and_then(|s| s.as_any().downcast_ref::<crate::services::Services>())
    }
}

impl process::Host for StepState {
    fn max_output_bytes(&mut self) -> wasmtime::Result<u64> {
        Ok(MAX_CAPTURE)
    }

    async fn run(&mut self, cmd: Command) -> wasmtime::Result<Result<Output, Error>> {
        // Grants are kept in one form: `./.venv/bin/pytest` asks for `.venv/bin/pytest`.
        let Some(named) = ferry_model::Program::of(&cmd.program) else {
            return Ok(Err(Error::Invalid(format!(
                "`{}` is not a program: name one on PATH (`git`), a file of the workspace (`.venv/bin/pytest`) or an absolute path",
                cmd.program
            ))));
        };
        let key = named.to_string();
        let Some(resolved) = self.grant.exec.get(&key) else {
            return Ok(Err(Error::Denied(crate::grant::runtime_denial_text(
                &self.site,
                &format!("exec of `{key}`"),
                &format!("exec: [{key}]"),
            ))));
        };
        let Some(program) = resolved.clone() else {
            let message = match named {
                ferry_model::Program::Name(_) => {
                    let searched = self
                        .grant
                        .path_var
                        .as_deref()
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    format!(
                        "`{key}` is granted but was not found on PATH (`{searched}`)\nhint: put its directory on PATH with the pipeline's `env: PATH`, or have a setup step write it to $FERRY_PATH"
                    )
                }
                ferry_model::Program::Workspace(_) => format!(
                    "`{key}` is granted but the workspace has no program there\nhint: an earlier step makes it, e.g. `run: python3 -m venv .venv`; it must be a file with execute permission"
                ),
                ferry_model::Program::Absolute(_) => format!(
                    "`{key}` is granted but there is no program there\nhint: install it there, or grant the path where it is"
                ),
            };
            return Ok(Err(Error::NotFound(message)));
        };
        let cwd = match confine(&self.workspace, cmd.cwd.as_deref()) {
            Ok(cwd) => cwd,
            Err(message) => return Ok(Err(Error::Invalid(message))),
        };
        let mut confinement = match Confinement::new(self) {
            Ok(confinement) => confinement,
            Err(message) => return Ok(Err(Error::SpawnFailed(message))),
        };
        let mut child = confinement.command(&program);
        child
            .args(&cmd.args)
            .current_dir(&cwd)
            .env_clear()
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(path) = &self.grant.path_var {
            child.env("PATH", path);
        }
        #[cfg(windows)]
        for name in ["SystemRoot", "ComSpec", "PATHEXT", "TEMP", "TMP"] {
            if let Some(value) = std::env::var_os(name) {
                child.env(name, value);
            }
        }
        child
            .envs(&self.grant.env)
            .envs(self.standard_env.iter().map(|(k, v)| (k, v)))
            .env("FERRY_WORKSPACE", &self.workspace)
            .env("FERRY_OUTPUT", &self.output_file)
            .env("FERRY_PATH", &self.path_file)
            .env("FERRY_ENV", &self.env_file)
            .env("FERRY_STEP_SUMMARY", &self.summary_file)
            .envs(cmd.env.iter().map(|(k, v)| (k, v)));
        if let Err(message) = confinement.prepare(self, &mut child, &program, &cwd) {
            return Ok(Err(Error::SpawnFailed(message)));
        }
        os::new_process_group(&mut child);
        let mut child = match child.spawn() {
            Ok(child) => child,
            Err(e) => {
                return Ok(Err(Error::SpawnFailed(format!(
                    "cannot start `{}`: {e}",
                    program.display()
                ))));
            }
        };
        #[cfg(any(target_os = "linux", target_os = "macos"))]
        let proxy = self.proxy();
        #[cfg(not(any(target_os = "linux", target_os = "macos")))]
        let proxy = ();
        let _tasks = match confinement.started(&child, proxy, self.services()).await {
            Ok(proxy) => proxy,
            Err(message) => {
                let _ = child.kill().await;
                return Ok(Err(Error::SpawnFailed(format!(
                    "cannot start `{}` in its sandbox: {message}",
                    cmd.program
                ))));
            }
        };
        #[cfg(target_os = "linux")]
        let pid_one = confinement.pid_one().map(Target::Pidfd);
        #[cfg(not(target_os = "linux"))]
        let pid_one = None;
        let targets: Vec<Target> = child
            .id()
            .map(Target::Group)
            .into_iter()
            .chain(pid_one)
            .collect();
        for target in &targets {
            self.processes.add(*target);
        }
        let guard = GroupGuard {
            groups: self.processes.clone(),
            targets,
        };
        if let (Some(mut stdin), Some(bytes)) = (child.stdin.take(), cmd.stdin) {
            tokio::spawn(async move {
                // A child that exits without reading its input is not an error.
                let _ = stdin.write_all(&bytes).await;
            });
        }
        let echo = cmd.echo.then(|| self.log.clone());
        let stdout = tokio::spawn(capture(
            child.stdout.take(),
            echo.clone(),
            Level::Stdout,
            MAX_CAPTURE,
        ));
        let stderr = tokio::spawn(capture(
            child.stderr.take(),
            echo,
            Level::Stderr,
            MAX_CAPTURE,
        ));
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let status = tokio::select! {
            status = child.wait() => status,
            _ = tokio::time::sleep_until(deadline) => {
                self.log.line(Level::Error, &format!("[ferry] `{}` killed at the step's deadline", cmd.program));
                return Err(DeadlineReached.into());
            }
        };
        // Background processes the command left behind would hold the pipes open.
        drop(guard);
        let (stdout, stderr) = (stdout.await?, stderr.await?);
        if status.as_ref().is_ok_and(|s| !s.success()) {
            confinement.explain(&self.log, &stdout.0, &stderr.0);
        }
        self.log.flush();
        let status = match status {
            Ok(status) => status,
            Err(e) => {
                return Ok(Err(Error::SpawnFailed(format!(
                    "waiting for `{}`: {e}",
                    cmd.program
                ))));
            }
        };
        Ok(Ok(Output {
            exit_code: status.code(),
            truncated: stdout.1 || stderr.1,
            stdout: stdout.0,
            stderr: stderr.0,
        }))
    }
}

/// The OS sandbox of one host program, from spawn to exit: on Linux the launcher of
/// [`confine::linux`], on macOS a Seatbelt profile, on Windows a job object. Where a system
/// cannot confine files and network the CLI says so once and `ferry serve` refuses untrusted
/// work.
struct Confinement {
    view: Option<confine::View>,
    /// Whether a failure may be explained: not to an untrusted run, for which naming the
    /// host paths that exist would answer its questions about the machine.
    explain: bool,
    #[cfg(target_os = "linux")]
    pending: Option<confine::linux::Pending>,
    /// PID 1 of the program's namespace, once it started.
    #[cfg(target_os = "linux")]
    pid_one: Option<std::os::fd::OwnedFd>,
    /// The proxy's listening socket on the host's loopback, and the private `TMPDIR`.
    #[cfg(target_os = "macos")]
    seatbelt: Option<(std::net::TcpListener, tempfile::TempDir)>,
    #[cfg(windows)]
    job: Option<confine::windows::Job>,
}

/// Stops a task (a proxy, a service route) when the program is done.
pub(crate) struct Abort(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Confinement {
    fn new(state: &StepState) -> Result<Confinement, String> {
        let services = state.services();
        let view = if confine::unavailable().is_some() {
            None
        } else {
            std::fs::create_dir_all(&state.home)
                .map_err(|e| format!("cannot create `{}`: {e}", state.home.display()))?;
            // Shown by file mounts, so they must exist before the program starts.
            let step_files = [
                &state.output_file,
                &state.path_file,
                &state.env_file,
                &state.summary_file,
            ];
            let addresses: Vec<std::net::SocketAddrV4> = services
                .iter()
                .flat_map(|s| s.step_routes().iter().map(|r| r.at))
                .collect();
            for file in step_files {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(file)
                    .map_err(|e| format!("cannot create `{}`: {e}", file.display()))?;
            }
            Some(confine::view(&confine::Request {
                workspace: &state.workspace,
                workspace_access: state.grant.program_workspace,
                paths: &state.grant.paths,
                home: &state.home,
                step_files: &step_files.map(PathBuf::as_path),
                programs: state
                    .grant
                    .exec
                    .values()
                    .flatten()
                    .map(PathBuf::as_path)
                    .collect(),
                env: &state.grant.env,
                network: !state.grant.network.is_empty(),
                memory: state.grant.host_memory,
                services: services.map(|s| (addresses.as_slice(), s.hosts())),
            }))
        };
        if let Some(refused) = view.as_ref().filter(|v| !v.refused.is_empty()) {
            return Err(refused.refused.join("\n"));
        }
        #[cfg(target_os = "macos")]
        let seatbelt = match &view {
            Some(_) => Some((
                std::net::TcpListener::bind("127.0.0.1:0")
                    .map_err(|e| format!("cannot open the step's proxy: {e}"))?,
                tempfile::tempdir().map_err(|e| format!("cannot make a private TMPDIR: {e}"))?,
            )),
            None => None,
        };
        Ok(Confinement {
            #[cfg(target_os = "linux")]
            pending: None,
            #[cfg(target_os = "linux")]
            pid_one: None,
            #[cfg(target_os = "macos")]
            seatbelt,
            #[cfg(windows)]
            job: Some(
                confine::windows::Job::new(state.grant.host_memory, confine::MAX_PROCESSES)
                    .map_err(|e| format!("cannot create a job object: {e}"))?,
            ),
            view,
            explain: !state.untrusted,
        })
    }

    /// The command that starts `program`: itself, or on macOS `sandbox-exec` with the
    /// profile and then the program.
    fn command(&self, program: &Path) -> tokio::process::Command {
        #[cfg(target_os = "macos")]
        if let (Some(view), Some((proxy, tmp))) = (&self.view, &self.seatbelt) {
            let port = proxy.local_addr().ok().map(|a| a.port());
            let profile = confine::seatbelt::profile(view, tmp.path(), port);
            let mut cmd = tokio::process::Command::new("/usr/bin/sandbox-exec");
            cmd.arg("-p").arg(profile).arg(program);
            return cmd;
        }
        tokio::process::Command::new(program)
    }

    /// What the program needs to know of its sandbox (HOME, TMPDIR, proxies), and on Linux
    /// the launcher itself. Call last, once the command is complete.
    fn prepare(
        &mut self,
        state: &StepState,
        child: &mut tokio::process::Command,
        program: &Path,
        cwd: &Path,
    ) -> Result<(), String> {
        let Some(view) = &self.view else {
            return Ok(());
        };
        child.envs(&view.env);
        // The private HOME, unless the pipeline grants a real one: `env: [HOME]` and a
        // `paths:` entry that shows it.
        let granted_home = state.grant.env.get("HOME").map(Path::new);
        if granted_home.is_none_or(|home| !confine::shows(view, home)) {
            child.env("HOME", &state.home);
        }
        let hosts: Vec<&str> = state
            .grant
            .network
            .iter()
            .map(|g| g.host.as_str())
            .collect();
        #[cfg(target_os = "linux")]
        {
            child.env("TMPDIR", "/tmp");
            if view.proxy {
                let direct = state.services().map(|s| s.direct()).unwrap_or_default();
                child.envs(confine::proxy_env(
                    confine::linux::PROXY_PORT,
                    &hosts,
                    direct,
                ));
            }
            // A step granted an engine could run anything through it (`buildah unshare`), so
            // all of its programs run as the engine does, and a `run:` script can call it.
            let engine = state
                .grant
                .exec
                .keys()
                .find_map(|name| confine::engine(name));
            let engine = match engine {
                // An engine is given namespaces of its own: more kernel to reach than a
                // pull request from a fork is trusted with.
                Some(name) if state.untrusted => {
                    return Err(format!(
                        "`{name}` is a container engine, which ferry does not start for a pull request from a fork: an engine needs user and mount namespaces of its own inside the sandbox\nhint: build the image without `RUN` (COPY what an earlier step built), or run the pipeline from a branch of the repository"
                    ));
                }
                Some(_) => {
                    child.envs(confine::engine_env(&state.home).map_err(|e| {
                        format!(
                            "cannot write the container engine's settings under `{}`: {e}",
                            state.home.display()
                        )
                    })?);
                    // SAFETY: these calls have no preconditions.
                    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
                    Some(confine::linux::Engine::for_user(uid, gid)?)
                }
                None => None,
            };
            let pending =
                confine::linux::prepare(child, view, program, cwd, engine).map_err(|e| {
                    format!("cannot prepare the sandbox of `{}`: {e}", program.display())
                })?;
            self.pending = Some(pending);
        }
        #[cfg(target_os = "macos")]
        if let Some((proxy, tmp)) = &self.seatbelt {
            child.env("TMPDIR", tmp.path());
            if let (true, Ok(addr)) = (view.proxy, proxy.local_addr()) {
                child.envs(confine::proxy_env(addr.port(), &hosts, &[]));
            }
        }
        let _ = (hosts, program, cwd);
        Ok(())
    }

    /// Once the program is spawned: waits for its sandbox to be up, places it in its job,
    /// and starts its proxy.
    async fn started(
        &mut self,
        child: &tokio::process::Child,
        proxy: Proxy,
        services: Option<&crate::services::Services>,
    ) -> Result<Vec<Abort>, String> {
        let _ = child;
        #[cfg(windows)]
        if let (Some(job), Some(handle)) = (&self.job, child.raw_handle()) {
            job.adopt(handle)
                .map_err(|e| format!("cannot place the program in its job object: {e}"))?;
        }
        #[cfg(target_os = "linux")]
        if let Some(pending) = self.pending.take() {
            let started = pending.started().await.map_err(|e| e.0)?;
            self.pid_one = started.pid_one;
            let mut tasks = match services {
                Some(services) => services.forward(started.services, services.step_routes()),
                None => Vec::new(),
            };
            tasks.extend(started.proxy.map(|listener| {
                Abort(tokio::spawn(crate::proxy::serve(listener, Arc::new(proxy))))
            }));
            return Ok(tasks);
        }
        #[cfg(target_os = "macos")]
        if let (Some(view), Some((listener, _))) = (&self.view, &self.seatbelt)
            && view.proxy
        {
            let listener = listener
                .try_clone()
                .map_err(|e| format!("cannot start the step's proxy: {e}"))?;
            return Ok(vec![Abort(tokio::spawn(crate::proxy::serve(
                listener,
                Arc::new(proxy),
            )))]);
        }
        let _ = (proxy, services);
        Ok(Vec::new())
    }

    /// The pidfd of PID 1 of the program's namespace, while the program runs.
    #[cfg(target_os = "linux")]
    fn pid_one(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.pid_one.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Logs what the sandbox hid from a program that failed, with the grant that would show it.
    fn explain(&self, log: &StepLog, stdout: &[u8], stderr: &[u8]) {
        let Some(view) = self.view.as_ref().filter(|_| self.explain) else {
            return;
        };
        let mut text = String::from_utf8_lossy(stderr).into_owned();
        text.push('\n');
        text.push_str(&String::from_utf8_lossy(stdout));
        for hint in confine::explain(view, &text) {
            log.line(Level::Error, &format!("[ferry] {hint}"));
        }
    }
}

/// Reads a stream to its end, copying it to the log and keeping at most `keep` bytes.
pub(crate) async fn capture(
    stream: Option<impl AsyncRead + Unpin>,
    log: Option<StepLog>,
    level: Level,
    keep: u64,
) -> (Vec<u8>, bool) {
    let Some(mut stream) = stream else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(log) = &log {
                    log.write(level, &buf[..n]);
                }
                let room = (keep as usize).saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    (kept, truncated)
}

/// Resolves a working directory given relative to the workspace, refusing anything that
/// leaves it (`..`, absolute paths, symlinks pointing outside).
pub fn confine(workspace: &Path, cwd: Option<&str>) -> Result<PathBuf, String> {
    let Some(cwd) = cwd.filter(|c| !c.is_empty() && *c != ".") else {
        return Ok(workspace.to_path_buf());
    };
    let relative = Path::new(cwd);
    let escapes = relative.is_absolute()
        || relative.components().any(|c| {
            matches!(
                c,
                Component::ParentDir | Component::RootDir | Component::Prefix(_)
            )
        });
    if escapes {
        return Err(format!(
            "working directory `{cwd}` leaves the workspace; give a path inside it, relative to its root"
        ));
    }
    let joined = workspace.join(relative);
    let real = joined
        .canonicalize()
        .map_err(|e| format!("working directory `{cwd}`: {e}"))?;
    let root = workspace
        .canonicalize()
        .map_err(|e| format!("workspace `{}`: {e}", workspace.display()))?;
    if !real.starts_with(&root) {
        return Err(format!(
            "working directory `{cwd}` resolves outside the workspace (through a symbolic link)"
        ));
    }
    if !real.is_dir() {
        return Err(format!("working directory `{cwd}` is not a directory"));
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_directory_stays_in_the_workspace() {
        let ws = tempfile::tempdir().unwrap();
        std::fs::create_dir(ws.path().join("sub")).unwrap();
        assert!(confine(ws.path(), Some("sub")).unwrap().ends_with("sub"));
        assert!(confine(ws.path(), None).is_ok());
        assert!(
            confine(ws.path(), Some("../x"))
                .unwrap_err()
                .contains("leaves the workspace")
        );
        assert!(
            confine(ws.path(), Some("/etc"))
                .unwrap_err()
                .contains("leaves the workspace")
        );
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc", ws.path().join("out")).unwrap();
            assert!(
                confine(ws.path(), Some("out"))
                    .unwrap_err()
                    .contains("outside")
            );
        }
    }
}
