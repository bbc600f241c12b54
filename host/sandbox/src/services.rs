//! A job's `services:`: long-running programs started before its first step, each confined
//! as a `run:` step's shell is, from its own `permissions:`.
//!
//! How the steps reach them (Linux):
//!
//! ```text
//! step's program ── 127.0.10.1:5432 (a socket its sandbox's supervisor opened) ──▶ ferry
//! ferry ── "a connection to 5432, please" ──▶ the service's supervisor, in its namespace
//! supervisor ── connect(127.0.0.1:5432) ──▶ the service; the socket is handed to ferry
//! ferry copies bytes between the two
//! ```
//!
//! Each sandbox keeps its own network namespace: a service reaches nothing a step can and
//! no step reaches anything of the service's but the ports the pipeline lists. The names
//! come from a generated `/etc/hosts`; each service has an address of its own
//! (`127.0.10.<n>`), so two services may use one port, and steps reach a port that only one
//! service has at `localhost` too.

use crate::confine;
use crate::state::ProcessGroups;
#[cfg(target_os = "linux")]
use crate::state::Target;
use ferry_engine::run::services::{JobServices, ServiceStart, ServicesRequest};
use ferry_engine::{Level, StepLog};
use ferry_model::Ready;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// How long a service has to exit after `SIGTERM` at the end of its job before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Connections a step's programs may hold open to one service port at once.
#[cfg(target_os = "linux")]
const MAX_CONNECTIONS: usize = 256;

/// The address of the service at `index` inside every sandbox that reaches it.
pub fn address(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 10, index as u8 + 1)
}

/// Where one service port is reached from inside a sandbox.
#[derive(Clone)]
pub struct Route {
    pub at: SocketAddrV4,
    pub service: usize,
    pub port: u16,
}

/// The routes of the services `0..count`: each at its own address, and at `localhost` when
/// `localhost` is asked for and only one of them has the port (never the proxy's).
pub fn routes(services: &[ServiceStart], count: usize, localhost: bool) -> Vec<Route> {
    let mut routes = Vec::new();
    for (index, start) in services.iter().enumerate().take(count) {
        for &port in &start.service.ports {
            routes.push(Route {
                at: SocketAddrV4::new(address(index), port),
                service: index,
                port,
            });
            let shared = services
                .iter()
                .take(count)
                .filter(|s| s.service.ports.contains(&port))
                .count()
                > 1;
            if localhost && !shared && port != ferry_model::pipeline::PROXY_PORT {
                routes.push(Route {
                    at: SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
                    service: index,
                    port,
                });
            }
        }
    }
    routes
}

/// The `/etc/hosts` of a sandbox that reaches the job's services.
fn hosts_file(services: &[ServiceStart]) -> String {
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (index, start) in services.iter().enumerate() {
        text.push_str(&format!("{}\t{}\n", address(index), start.service.name));
    }
    text
}

/// A job's services while they run.
pub struct Services {
    running: Vec<Arc<Running>>,
    /// Every service's routes, for the steps' programs.
    routes: Vec<Route>,
    /// The names and addresses that go around the proxy.
    direct: Vec<String>,
    hosts: PathBuf,
    scratch: PathBuf,
    processes: ProcessGroups,
}

/// The tasks copying a program's output to its log; each ends with what it kept.
type Output = Vec<tokio::task::JoinHandle<(Vec<u8>, bool)>>;

/// One started service.
struct Running {
    name: String,
    log: StepLog,
    #[cfg(target_os = "linux")]
    connector: tokio::sync::Mutex<confine::linux::Connector>,
    #[cfg(target_os = "linux")]
    pid_one: Option<std::os::fd::OwnedFd>,
    child: tokio::sync::Mutex<tokio::process::Child>,
    /// Its output copied to its log; done when the service and its children have exited.
    output: std::sync::Mutex<Output>,
    /// Its proxy and its routes to the services before it.
    _tasks: Vec<crate::process::Abort>,
}

/// How a service is asked to stop.
#[derive(Clone, Copy)]
enum Signal {
    Term,
    Kill,
}

impl Running {
    /// A new connection to `port` on the service's loopback.
    #[cfg(target_os = "linux")]
    async fn connect(&self, port: u16) -> std::io::Result<tokio::net::TcpStream> {
        let stream = self.connector.lock().await.connect(port).await?;
        stream.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(stream)
    }

    #[cfg(not(target_os = "linux"))]
    async fn connect(&self, port: u16) -> std::io::Result<tokio::net::TcpStream> {
        let _ = port;
        Err(std::io::Error::other("services need Linux"))
    }

    /// Sends `signal` to the service's first process: `Term` asks it to stop, `Kill` ends
    /// every process of its namespace.
    fn signal(&self, signal: Signal) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.pid_one {
            use std::os::fd::AsRawFd;
            let number = match signal {
                Signal::Term => libc::SIGTERM,
                Signal::Kill => libc::SIGKILL,
            };
            // SAFETY: a pidfd this value owns; a process that exited only makes it fail.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    number,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            }
        }
        let _ = signal;
    }

    /// Whether the service's first process handles `SIGTERM`. The kernel drops a signal sent
    /// from outside to the first process of a PID namespace unless it does: a `run:` that
    /// does not `exec` its program leaves `sh` there, which would wait out the grace period.
    fn handles_sigterm(&self) -> bool {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.pid_one {
            use std::os::fd::AsRawFd;
            let field = |text: &str, name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            };
            let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
                .unwrap_or_default();
            let Some(pid) = field(&fdinfo, "Pid:").filter(|p| p != "-1" && p != "0") else {
                return false;
            };
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let caught = field(&status, "SigCgt:")
                .and_then(|mask| u64::from_str_radix(&mask, 16).ok())
                .unwrap_or(0);
            return caught & (1 << (libc::SIGTERM - 1)) != 0;
        }
        false
    }
}

impl Services {
    /// The routes a step's programs get: every service, at `localhost` too.
    pub fn step_routes(&self) -> &[Route] {
        &self.routes
    }

    /// The `/etc/hosts` naming the services.
    pub fn hosts(&self) -> &Path {
        &self.hosts
    }

    /// Names and addresses the programs reach directly, not through the proxy.
    pub fn direct(&self) -> &[String] {
        &self.direct
    }

    /// Serves each of a sandbox's service sockets (in `routes` order) until the returned
    /// tasks are dropped.
    #[cfg(target_os = "linux")]
    pub(crate) fn forward(
        &self,
        listeners: Vec<std::net::TcpListener>,
        routes: &[Route],
    ) -> Vec<crate::process::Abort> {
        forward(&self.running, listeners, routes)
    }
}

#[cfg(target_os = "linux")]
fn forward(
    running: &[Arc<Running>],
    listeners: Vec<std::net::TcpListener>,
    routes: &[Route],
) -> Vec<crate::process::Abort> {
    listeners
        .into_iter()
        .zip(routes)
        .filter_map(|(listener, route)| {
            let service = running.get(route.service)?.clone();
            Some(crate::process::Abort(tokio::spawn(serve(
                listener, service, route.port,
            ))))
        })
        .collect()
}

/// Accepts a sandbox's connections to one service port and joins each to a new connection
/// to the service, until dropped.
#[cfg(target_os = "linux")]
async fn serve(listener: std::net::TcpListener, service: Arc<Running>, port: u16) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let mut connections = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((mut inside, _)) = listener.accept().await else {
            // Out of descriptors, most likely: wait rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        while connections.try_join_next().is_some() {}
        let service = service.clone();
        connections.spawn(async move {
            let _permit = permit;
            // A refused connection reaches the program as a reset, as it would on a host.
            if let Ok(mut upstream) = service.connect(port).await {
                let _ = tokio::io::copy_bidirectional(&mut inside, &mut upstream).await;
            }
        });
    }
}

impl JobServices for Services {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn stop(&self) -> Pin<Box<dyn Future<Output = Vec<String>> + Send + '_>> {
        Box::pin(async move {
            // All at once: each is given the same grace, and a job waits for one at most.
            let said = futures_util::future::join_all(self.running.iter().map(|s| stop(s))).await;
            let scratch = self.scratch.clone();
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(scratch)).await;
            said
        })
    }
}

impl Drop for Services {
    /// Kills what is left (a job whose future was dropped: a hard cancel), while the pidfds
    /// the targets name are still open.
    fn drop(&mut self) {
        self.processes.kill_all();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// Stops one service: `SIGTERM`, then `SIGKILL` after [`STOP_GRACE`]; says how it ended.
async fn stop(service: &Running) -> String {
    let mut child = service.child.lock().await;
    let before = child.try_wait().ok().flatten();
    let handles = before.is_none() && service.handles_sigterm();
    if before.is_none() {
        service.signal(if handles { Signal::Term } else { Signal::Kill });
    }
    let grace = if handles {
        STOP_GRACE
    } else {
        Duration::from_secs(2)
    };
    let status = match before {
        Some(status) => Some(status),
        None => match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                service.signal(Signal::Kill);
                let _ = child.kill().await;
                None
            }
        },
    };
    let output: Vec<_> =
        std::mem::take(&mut *service.output.lock().unwrap_or_else(|e| e.into_inner()));
    for task in output {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    service.log.flush();
    let name = &service.name;
    match (before, status) {
        (Some(status), _) => format!(
            "service `{name}` had exited during the job ({})",
            describe(status)
        ),
        (None, Some(_)) if handles => format!("service `{name}` stopped"),
        (None, Some(_)) => format!(
            "service `{name}` stopped (killed: its first process does not handle SIGTERM, as `sh` does not when a `run:` does not end in `exec <program>`)"
        ),
        (None, None) => format!(
            "service `{name}` did not stop within {}s of SIGTERM and was killed",
            STOP_GRACE.as_secs()
        ),
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".into(),
    }
}

/// Starts every service of the request in order, each once the ones before it are ready.
pub async fn start(request: ServicesRequest) -> Result<Arc<dyn JobServices>, String> {
    if let Some(why) = confine::unavailable() {
        return Err(format!(
            "services run in ferry's sandbox, which this machine cannot give: {why}"
        ));
    }
    if !cfg!(target_os = "linux") {
        return Err("services need Linux's sandbox; this system runs none".into());
    }
    let scratch = request.scratch.clone();
    let _ = std::fs::remove_dir_all(&scratch);
    let hosts = request.dir.join("hosts");
    std::fs::write(&hosts, hosts_file(&request.services))
        .map_err(|e| format!("cannot write `{}`: {e}", hosts.display()))?;
    let mut direct: Vec<String> = Vec::new();
    for (index, start) in request.services.iter().enumerate() {
        direct.push(start.service.name.clone());
        direct.push(address(index).to_string());
    }
    let mut services = Services {
        running: Vec::new(),
        routes: routes(&request.services, request.services.len(), true),
        direct,
        hosts,
        scratch,
        processes: ProcessGroups::default(),
    };
    for index in 0..request.services.len() {
        let start = &request.services[index];
        let name = &start.service.name;
        let launched = launch(&request, &services, index).await;
        let running = match launched {
            Ok(running) => Arc::new(running),
            Err(e) => {
                // The ones before it stop as at the end of a job, their logs complete.
                services.stop().await;
                return Err(format!("service `{name}` did not start: {e}"));
            }
        };
        services.running.push(running.clone());
        let began = std::time::Instant::now();
        let ready = tokio::select! {
            ready = wait_ready(&request, &services, index) => ready,
            _ = request.cancel.cancelled() => Err("the run was cancelled".to_string()),
        };
        match ready {
            Ok(()) => start.log.line(
                Level::Info,
                &format!("[ferry] ready after {:.1}s", began.elapsed().as_secs_f64()),
            ),
            Err(e) => {
                start.log.line(Level::Error, &format!("[ferry] {e}"));
                services.stop().await;
                return Err(format!("service `{name}` {e}"));
            }
        }
    }
    Ok(Arc::new(services))
}

/// Waits until service `index` passes its readiness check, it exits, or its time is up.
async fn wait_ready(
    request: &ServicesRequest,
    services: &Services,
    index: usize,
) -> Result<(), String> {
    let start = &request.services[index];
    let service = &services.running[index];
    let timeout = start.service.ready_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(status) = service.child.lock().await.try_wait().ok().flatten() {
            return Err(format!(
                "exited before it was ready ({})\nhint: its `run:` must end in the program that serves, e.g. `exec postgres ...`; its log says why it stopped",
                describe(status)
            ));
        }
        // A connection answers at once or not at all; a command may take its time.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let limit = match start.service.ready {
            Ready::Run(_) => left,
            _ => left.min(Duration::from_secs(5)),
        };
        let check = tokio::time::timeout(limit, ready_once(request, services, index))
            .await
            .unwrap_or_else(|_| Err("the check took too long".into()));
        let last = match check {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if tokio::time::Instant::now() + pause >= deadline {
            return Err(format!(
                "was not ready within {}s: {last}\nhint: give it longer with `ready: {{ timeout-seconds: {} }}`, or check that it listens on the `ports` listed",
                timeout.as_secs(),
                (timeout.as_secs() * 2).max(10)
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// One readiness check.
async fn ready_once(
    request: &ServicesRequest,
    services: &Services,
    index: usize,
) -> Result<(), String> {
    let start = &request.services[index];
    let service = &services.running[index];
    match &start.service.ready {
        Ready::Ports => {
            for &port in &start.service.ports {
                service
                    .connect(port)
                    .await
                    .map_err(|e| format!("port {port}: {e}"))?;
            }
            Ok(())
        }
        Ready::Tcp(port) => service
            .connect(*port)
            .await
            .map(drop)
            .map_err(|e| format!("port {port}: {e}")),
        Ready::Http { port, path } => {
            let stream = service
                .connect(*port)
                .await
                .map_err(|e| format!("port {port}: {e}"))?;
            http_status(stream, &start.service.name, *port, path).await
        }
        Ready::Run(script) => {
            let mut check = launch_script(request, services, index, script, index + 1).await?;
            let status = check
                .child
                .wait()
                .await
                .map_err(|e| format!("waiting for `ready.run`: {e}"))?;
            for task in check.output.drain(..) {
                let _ = task.await;
            }
            match status.success() {
                true => Ok(()),
                false => Err(format!("`ready.run` failed ({})", describe(status))),
            }
        }
    }
}

/// Sends `GET path` and reads the status line; 2xx and 3xx are ready.
async fn http_status(
    mut stream: tokio::net::TcpStream,
    name: &str,
    port: u16,
    path: &str,
) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {name}:{port}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("http://{name}:{port}{path}: {e}"))?;
    let mut head = vec![0u8; 1024];
    let mut read = 0;
    while read < head.len() && !head[..read].contains(&b'\n') {
        match stream.read(&mut head[read..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    let line = String::from_utf8_lossy(&head[..read]);
    let line = line.lines().next().unwrap_or_default();
    let code = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(code) if (200..400).contains(&code) => Ok(()),
        Some(code) => Err(format!("http://{name}:{port}{path} answered {code}")),
        None => Err(format!("http://{name}:{port}{path} gave no HTTP answer")),
    }
}

/// Starts service `index`'s script in its sandbox.
async fn launch(
    request: &ServicesRequest,
    services: &Services,
    index: usize,
) -> Result<Running, String> {
    let start = &request.services[index];
    let launched = launch_script(request, services, index, &start.run, index).await?;
    #[cfg(target_os = "linux")]
    let connector = confine::linux::Connector::new(
        launched
            .connector
            .ok_or("its sandbox gave no way to reach it")?,
    )
    .map_err(|e| format!("watching its sandbox: {e}"))?;
    let running = Running {
        name: start.service.name.clone(),
        log: start.log.clone(),
        #[cfg(target_os = "linux")]
        connector: tokio::sync::Mutex::new(connector),
        #[cfg(target_os = "linux")]
        pid_one: launched.pid_one,
        child: tokio::sync::Mutex::new(launched.child),
        output: std::sync::Mutex::new(launched.output),
        _tasks: launched.tasks,
    };
    // Registered once `running` holds the pidfd, which stays open until `Services`, whose
    // drop kills these first, is gone.
    #[cfg(target_os = "linux")]
    if let Some(fd) = &running.pid_one {
        use std::os::fd::AsRawFd;
        services.processes.add(Target::Pidfd(fd.as_raw_fd()));
    }
    Ok(running)
}

/// A script started in a service's sandbox.
struct Launched {
    child: tokio::process::Child,
    output: Output,
    tasks: Vec<crate::process::Abort>,
    #[cfg(target_os = "linux")]
    connector: Option<std::os::fd::OwnedFd>,
    #[cfg(target_os = "linux")]
    pid_one: Option<std::os::fd::OwnedFd>,
}

/// Runs `script` with `sh -e -c` in the sandbox service `index`'s grant describes,
/// reaching the services `0..reach`. The service itself (`reach == index`) answers
/// connection requests; its readiness command (`reach == index + 1`) reaches it like a
/// step does.
#[cfg(target_os = "linux")]
async fn launch_script(
    request: &ServicesRequest,
    services: &Services,
    index: usize,
    script: &str,
    reach: usize,
) -> Result<Launched, String> {
    use std::process::Stdio;
    let start = &request.services[index];
    let service = &start.service;
    let is_service = reach == index;
    let home = request.scratch.join(&service.name);
    std::fs::create_dir_all(&home)
        .map_err(|e| format!("cannot create `{}`: {e}", home.display()))?;
    let path = start
        .env
        .get("PATH")
        .cloned()
        .unwrap_or_else(|| request.path.clone());
    let shell = ferry_engine::os::resolve_program("sh", path.as_ref(), None)
        .ok_or_else(|| format!("no `sh` on PATH (`{path}`)"))?;
    let exec: Vec<PathBuf> = service
        .permissions
        .exec
        .iter()
        .filter_map(|p| ferry_engine::os::resolve_program(p, path.as_ref(), None))
        .chain([shell.clone()])
        .collect();
    let routes = routes(&request.services, reach, !is_service);
    let addrs: Vec<SocketAddrV4> = routes.iter().map(|r| r.at).collect();
    let paths: Vec<(PathBuf, ferry_model::Access)> = service
        .permissions
        .paths
        .iter()
        .map(|(p, a)| (p.clone(), *a))
        .collect();
    let mut env: std::collections::BTreeMap<String, String> = start.host_env.clone();
    env.extend(start.env.clone());
    env.extend(start.secrets.clone());
    let memory = service
        .permissions
        .memory
        .unwrap_or(crate::grant::DEFAULT_HOST_MEMORY);
    let network = !service.permissions.network.is_empty();
    let mut view = confine::view(&confine::Request {
        workspace: &request.workspace,
        workspace_access: service.permissions.workspace,
        paths: &paths,
        home: &home,
        step_files: &[],
        programs: exec.iter().map(PathBuf::as_path).collect(),
        env: &env,
        network,
        memory,
        services: Some((&addrs, &services.hosts)),
    });
    if !view.refused.is_empty() {
        // Naming where a link points would answer an untrusted run's questions about the
        // machine.
        return Err(match request.untrusted {
            true => "its `permissions.paths` name a path the sandbox will not show".into(),
            false => view.refused.join("\n"),
        });
    }
    view.connector = is_service;
    view.unprivileged = true;
    let job = &request.pipeline.jobs[request.job_index];
    let mut cmd = tokio::process::Command::new(&shell);
    cmd.arg("-e")
        .arg("-c")
        .arg(script)
        .current_dir(&request.workspace)
        .env_clear()
        .env("PATH", &path)
        .env("HOME", &home)
        .env("TMPDIR", "/tmp")
        .envs(crate::grant::standard_env(
            &request.run_id,
            &job.id,
            &format!("services.{}", service.name),
            &request.pipeline.dir,
        ))
        .env("FERRY_SERVICE", &service.name)
        .env("FERRY_WORKSPACE", &request.workspace)
        .envs(&view.env)
        .envs(&env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let hosts: Vec<&str> = service
        .permissions
        .network
        .iter()
        .map(|g| g.host.as_str())
        .collect();
    if network {
        cmd.envs(confine::proxy_env(
            confine::linux::PROXY_PORT,
            &hosts,
            &services.direct,
        ));
    }
    let pending = confine::linux::prepare(&mut cmd, &view, &shell, &request.workspace, None)
        .map_err(|e| format!("cannot prepare its sandbox: {e}"))?;
    ferry_engine::os::new_process_group(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", shell.display()))?;
    let started = match pending.started().await {
        Ok(started) => started,
        Err(e) => {
            let _ = child.kill().await;
            return Err(format!("its sandbox did not start: {}", e.0));
        }
    };
    let mut tasks = forward(&services.running, started.services, &routes);
    if let Some(listener) = started.proxy {
        let site_service = service.name.clone();
        let job_id = job.id.clone();
        let proxy = crate::proxy::Proxy {
            grants: service.permissions.network.clone(),
            log: start.log.clone(),
            public_only: request.untrusted,
            denial: Box::new(move |target| {
                format!(
                    "connection to `{target}` refused: it is not granted to service `{site_service}` of job `{job_id}`\nhint: grant it in the service's `permissions:`\n    permissions:\n      network: [\"{target}\"]"
                )
            }),
        };
        tasks.push(crate::process::Abort(tokio::spawn(crate::proxy::serve(
            listener,
            Arc::new(proxy),
        ))));
    }
    let log = Some(start.log.clone());
    let output = vec![
        tokio::spawn(crate::process::capture(
            child.stdout.take(),
            log.clone(),
            Level::Stdout,
            0,
        )),
        tokio::spawn(crate::process::capture(
            child.stderr.take(),
            log,
            Level::Stderr,
            0,
        )),
    ];
    Ok(Launched {
        child,
        output,
        tasks,
        connector: started.connector,
        pid_one: started.pid_one,
    })
}

#[cfg(not(target_os = "linux"))]
async fn launch_script(
    request: &ServicesRequest,
    services: &Services,
    index: usize,
    script: &str,
    reach: usize,
) -> Result<Launched, String> {
    let _ = (request, services, index, script, reach);
    Err("services need Linux's sandbox".into())
}
