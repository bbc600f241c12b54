//! The sandbox: one wasmtime engine per run, a compiled component per plugin, a fresh store
//! per step.

use crate::bindings;
use crate::cache::ComponentCache;
use crate::grant::{self, Grant, Host, Needs, StepSite};
use crate::plugin::{self, Inspection, Plugin, PluginInfo, PluginKind};
use crate::refusals::{OpenDirs, Refusals};
use crate::state::{
    DeadlineReached, MemoryLimitReached, MemoryLimits, ProcessGroups, Site, StepState,
};
use crate::stdio::LogStream;
use ferry_engine::{FailureKind, StepFailure, StepOutcome, StepRequest, StepRunner};
use ferry_model::{Access, Uses};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// How often the epoch advances: the resolution of timeouts and of cancellation of a guest
/// that never calls the host.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Where the workspace appears inside the guest.
pub const GUEST_WORKSPACE: &str = "/workspace";

/// A plugin loaded at most once per run, however many steps wait for it.
type LoadOnce = OnceCell<Result<Arc<Plugin>, String>>;

/// Settings of a sandbox.
pub struct SandboxOptions {
    /// Where compiled components are kept.
    pub cache_dir: PathBuf,
    /// Built-in steps by name.
    pub builtins: &'static [(&'static str, &'static [u8])],
    /// Most steps that run at once (`--jobs`); sizes the pool of instance slots.
    pub concurrency: usize,
}

/// Runs steps as components. Create one per run; it keeps each plugin loaded for the run.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<StepState>,
    cache: ComponentCache,
    builtins: &'static [(&'static str, &'static [u8])],
    plugins: Mutex<HashMap<String, Arc<LoadOnce>>>,
    ticking: Arc<AtomicBool>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

impl Sandbox {
    pub fn new(options: SandboxOptions) -> wasmtime::Result<Sandbox> {
        let engine = engine(Some(options.concurrency)).or_else(|_| engine(None))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        crate::refusals::add_to_linker(&mut linker)?;
        bindings::Step::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;
        let ticking = Arc::new(AtomicBool::new(true));
        let (flag, ticker) = (ticking.clone(), engine.weak());
        std::thread::Builder::new()
            .name("ferry-epoch".into())
            .spawn(move || {
                while flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        Ok(Sandbox {
            cache: ComponentCache::new(options.cache_dir, &engine),
            engine,
            linker,
            builtins: options.builtins,
            plugins: Mutex::new(HashMap::new()),
            ticking,
        })
    }

    /// A built-in's bytes, or a component file's path (read by the cache only when it has
    /// not seen the file as it is now).
    fn source_of(&self, uses: &Uses) -> Result<(String, Origin), String> {
        match uses {
            Uses::Builtin(name) => self
                .builtins
                .iter()
                .find(|(n, _)| n == name)
                .map(|(n, b)| (n.to_string(), Origin::Builtin(b)))
                .ok_or_else(|| format!("no built-in step `{name}`")),
            Uses::Path(path) => {
                std::fs::File::open(path)
                    .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
                let name = path
                    .file_stem()
                    .map_or("component".into(), |s| s.to_string_lossy().into_owned());
                Ok((name, Origin::File(path.clone())))
            }
            Uses::Registry(r) => match &r.component {
                Some(path) => {
                    let name = r.reference.rsplit('/').next().unwrap_or(&r.reference);
                    let name = name.split([':', '@']).next().unwrap_or(name);
                    Ok((name.to_string(), Origin::File(path.clone())))
                }
                None => Err(format!(
                    "plugin `{}` was not resolved\nhint: run the pipeline with `ferry run`, which pins it in ferry.lock",
                    r.reference
                )),
            },
        }
    }

    /// Loads a plugin once per sandbox, however many steps and jobs use it.
    pub async fn plugin(&self, uses: &Uses) -> Result<Arc<Plugin>, String> {
        let cell = {
            let mut plugins = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
            plugins.entry(uses.to_string()).or_default().clone()
        };
        cell.get_or_init(|| async {
            let (name, origin) = self.source_of(uses)?;
            let (engine, linker, cache) =
                (self.engine.clone(), self.linker.clone(), self.cache.clone());
            let prepared = tokio::task::spawn_blocking(move || {
                let source = match &origin {
                    Origin::Builtin(bytes) => plugin::Source::Bytes(bytes),
                    Origin::File(path) => plugin::Source::File(path),
                };
                plugin::prepare(&engine, &linker, &cache, source)
            })
            .await
            .map_err(|e| format!("loading the component failed: {e}"))??;
            let (_component, digest, cache, kind) = prepared;
            let info = match &kind {
                PluginKind::Step(pre) => self.describe(pre).await?,
                PluginKind::Command(_) => plugin::command_info(&name),
            };
            Ok(Arc::new(Plugin {
                digest,
                info,
                kind,
                cache,
            }))
        })
        .await
        .clone()
    }

    async fn describe(&self, pre: &bindings::StepPre<StepState>) -> Result<PluginInfo, String> {
        let mut store = self.store(bare_state(Instant::now() + Duration::from_secs(10)));
        let step = pre.instantiate_async(&mut store).await.map_err(|e| {
            format!(
                "instantiating the component failed: {}",
                plugin::root_cause(&e)
            )
        })?;
        let info = step
            .call_describe(&mut store)
            .await
            .map_err(|e| format!("`describe()` failed: {}", plugin::root_cause(&e)))?;
        Ok(plugin::step_info(info))
    }

    /// Everything `ferry plugin inspect` shows about a component file.
    pub async fn inspect(&self, bytes: Vec<u8>, name: &str) -> Result<Inspection, String> {
        let size = bytes.len();
        let (engine, linker, cache) =
            (self.engine.clone(), self.linker.clone(), self.cache.clone());
        let (component, digest, _, kind) = tokio::task::spawn_blocking(move || {
            plugin::prepare(&engine, &linker, &cache, plugin::Source::Bytes(&bytes))
        })
        .await
        .map_err(|e| e.to_string())??;
        let (imports, exports) = plugin::interface_names(&self.engine, &component);
        let info = match &kind {
            PluginKind::Step(pre) => self.describe(pre).await?,
            PluginKind::Command(_) => plugin::command_info(name),
        };
        Ok(Inspection {
            digest: format!("sha256:{digest}"),
            size,
            imports,
            exports,
            info,
        })
    }

    fn store(&self, state: StepState) -> Store<StepState> {
        let deadline = state.deadline;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(DeadlineReached.into())
            } else {
                // Yield to the executor every tick so a busy guest can still be cancelled.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// Runs the step. An error means it never started; once it has, the outcome keeps the
    /// outputs it set even when it failed, for reports and `continue-on-error` successors.
    async fn run(&self, req: &StepRequest) -> Result<StepOutcome, (FailureKind, String)> {
        let step = req.step();
        let plugin = self.plugin(&step.uses).await.map_err(|e| {
            (
                FailureKind::Internal,
                format!("cannot load `{}`: {e}", step.uses),
            )
        })?;
        let site = StepSite {
            pipeline: &req.pipeline,
            step,
            job: &req.job().id,
        };
        let needs = plugin
            .info
            .needs
            .clone()
            .unwrap_or_else(|| needs_from_grants(step));
        let host_env = |name: &str| req.host_env.get(name).cloned();
        let host = Host {
            env: &host_env,
            path_var: Some(std::ffi::OsString::from(&req.path)),
            workspace: Some(&req.workspace),
        };
        let grant = grant::grant(&site, &needs, &req.env, &req.secrets, &host)
            .map_err(|refusal| (FailureKind::Denied, refusal.to_string()))?;
        let given = req
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        let inputs = check_inputs(&plugin.info, &given).map_err(|problems| {
            (
                FailureKind::InvalidInput,
                format!(
                    "invalid inputs for `{}`: {}",
                    plugin.info.name,
                    problems.join("; ")
                ),
            )
        })?;
        let standard_env =
            grant::standard_env(&req.run_id, &req.job().id, &step.key(), &req.pipeline.dir)
                .to_vec();
        let site = Site {
            step: step.name.clone(),
            job: req.job().id.clone(),
            grant_site: site.grant_site(),
            runs_any_program: needs.exec.iter().any(|p| p == grant::ANY_PROGRAM),
        };
        let refusals = Refusals::new(req.log.clone(), site.clone());
        let wasi = self
            .wasi(&grant, req, &plugin.info, &inputs, &standard_env, &refusals)
            .await
            .map_err(|e| (FailureKind::Internal, e))?;
        // The time limit starts once the component is loaded and the grant made.
        let deadline = Instant::now() + req.timeout;
        // Child process groups are killed when this future ends or is dropped (cancel),
        // whatever state the guest's stack is in.
        let processes = ProcessGroups::default();
        let _reaper = Reaper(processes.clone());
        let state = StepState {
            wasi,
            table: ResourceTable::new(),
            limits: MemoryLimits {
                limit: grant.memory,
                used: 0,
            },
            log: req.log.clone(),
            outputs: BTreeMap::new(),
            workspace: req.workspace.clone(),
            untrusted: req.untrusted,
            home: req.home.clone(),
            output_file: req.output_file.clone(),
            path_file: req.path_file.clone(),
            env_file: req.env_file.clone(),
            summary_file: req.summary_file.clone(),
            kept_dir: req.kept_dir.clone(),
            deadline,
            processes: processes.clone(),
            site,
            standard_env,
            grant,
            open_groups: 0,
            services: req.services.clone(),
            refusals: refusals.clone(),
            open_dirs: OpenDirs::default(),
        };
        let mut store = self.store(state);
        let limit = req.timeout;
        let classify = |e: wasmtime::Error| classify(e, limit);
        let guest = async {
            match &plugin.kind {
                PluginKind::Step(pre) => {
                    let instance = pre.instantiate_async(&mut store).await.map_err(classify)?;
                    let inputs: Vec<bindings::types::Input> = inputs
                        .into_iter()
                        .map(|(name, value)| bindings::types::Input { name, value })
                        .collect();
                    let result = instance
                        .call_run(&mut store, &inputs)
                        .await
                        .map_err(classify)?;
                    match result {
                        Ok(()) => {}
                        Err(bindings::types::StepError::Failed(m)) => {
                            return Err((FailureKind::Failed, m));
                        }
                        Err(bindings::types::StepError::InvalidInput(m)) => {
                            return Err((FailureKind::InvalidInput, m));
                        }
                        Err(bindings::types::StepError::Denied(m)) => {
                            return Err((FailureKind::Denied, m));
                        }
                    }
                }
                PluginKind::Command(pre) => {
                    let command = pre.instantiate_async(&mut store).await.map_err(classify)?;
                    match command.wasi_cli_run().call_run(&mut store).await {
                        Ok(Ok(())) => {}
                        Ok(Err(())) => {
                            return Err((
                                FailureKind::Failed,
                                "the command exited with an error".into(),
                            ));
                        }
                        Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                            Some(exit) if exit.0 == 0 => {}
                            Some(exit) => {
                                return Err((
                                    FailureKind::Failed,
                                    format!("the command exited with code {}", exit.0),
                                ));
                            }
                            None => return Err(classify(e)),
                        },
                    }
                }
            }
            Ok(())
        };
        // Host calls that block (a socket read, say) never reach an epoch check; this bounds
        // them too.
        let bound = tokio::time::Instant::from_std(deadline) + EPOCH_TICK * 10;
        let result = match tokio::time::timeout_at(bound, guest).await {
            Ok(result) => result,
            Err(_) => Err(classify(DeadlineReached.into())),
        };
        let outputs = std::mem::take(&mut store.data_mut().outputs);
        // A step that failed on a refusal of the sandbox failed for want of the grant the
        // log names.
        let result = result.map_err(|(kind, message)| match kind {
            FailureKind::Failed if refusals.explain_failure(&message) => {
                (FailureKind::Denied, message)
            }
            kind => (kind, message),
        });
        Ok(StepOutcome {
            result: result
                .err()
                .map(|(kind, message)| StepFailure::new(kind, message)),
            outputs,
        })
    }

    async fn wasi(
        &self,
        grant: &Grant,
        req: &StepRequest,
        info: &PluginInfo,
        inputs: &[(String, String)],
        standard_env: &[(&'static str, String)],
        refusals: &Refusals,
    ) -> Result<wasmtime_wasi::WasiCtx, String> {
        let mut b = WasiCtxBuilder::new();
        b.stdout(LogStream::stdout(req.log.clone()))
            .stderr(LogStream::stderr(req.log.clone()));
        for (name, value) in &grant.env {
            b.env(name, value);
        }
        for (name, value) in standard_env {
            b.env(name, value);
        }
        if let Some(access) = grant.workspace {
            let perms = fs_perms(access);
            b.env("FERRY_WORKSPACE", GUEST_WORKSPACE);
            for guest in [GUEST_WORKSPACE, "."] {
                b.preopened_dir(&req.workspace, guest, perms).map_err(|e| {
                    format!(
                        "cannot open the workspace `{}`: {e}",
                        req.workspace.display()
                    )
                })?;
            }
        }
        for (path, access) in &grant.paths {
            // A write grant names where the step may put things (a deploy target, an
            // export): make it, as `mkdir -p` would, rather than fail the first run.
            if *access == ferry_model::Access::Write && !path.exists() {
                std::fs::create_dir_all(path)
                    .map_err(|e| format!("cannot create granted path `{}`: {e}", path.display()))?;
            }
            let guest = path.to_string_lossy();
            b.preopened_dir(path, &*guest, fs_perms(*access))
                .map_err(|e| format!("cannot open granted path `{}`: {e}", path.display()))?;
        }
        if info.world == plugin::World::Command {
            let args = inputs
                .iter()
                .find(|(n, _)| n == "args")
                .map(|(_, v)| serde_json::from_str::<Vec<String>>(v).unwrap_or_default())
                .unwrap_or_default();
            let mut argv = vec![info.name.clone()];
            argv.extend(args);
            b.args(&argv);
        }
        // Sockets are allowed even without a grant, so that each connect reaches the check
        // below and its refusal is said in the log; with no grant it refuses every connect
        // and send (a socket may still bind an ephemeral port, as a connect does first).
        let allowed = resolve(&grant.network, req.untrusted).await?;
        let granted = !grant.network.is_empty();
        b.allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(granted);
        let refusals = refusals.clone();
        b.socket_addr_check(move |addr, use_| {
            // Without a grant, a socket binds only the unspecified address (as a connect
            // does first), so that which local addresses exist is not told.
            let ok = allows(&allowed, addr, use_) && (granted || addr.ip().is_unspecified());
            if !ok && matches!(use_, SocketAddrUse::TcpConnect | SocketAddrUse::UdpSend) {
                refusals.refuse_network(
                    &format!("network access (a connect to {addr})"),
                    &format!("network: [\"{addr}\"]"),
                );
            }
            Box::pin(async move { ok })
        });
        Ok(b.build())
    }
}

/// The wasmtime engine. With a pool, instance slots (memories with copy-on-write images,
/// tables, fiber stacks) are reserved once and reused, which makes a fresh store per step
/// cheap; where the address space cannot be reserved (a tight `ulimit -v`), ferry falls back
/// to allocating on demand.
fn engine(pool_for: Option<usize>) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    if let Some(concurrency) = pool_for {
        // A slot per running step and per `describe()` instance, with room for large
        // (Python, JS) components made of many core modules, memories and tables.
        let components = (concurrency.clamp(1, 512) * 2 + 8) as u32;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(components)
            .total_stacks(components)
            .total_core_instances(components * 32)
            .total_memories(components * 8)
            .total_tables(components * 32)
            .max_core_instances_per_component(64)
            .max_memories_per_component(16)
            .max_tables_per_component(64)
            .table_elements(100_000)
            .max_memory_size(4 << 30);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&config)
}

impl StepRunner for Sandbox {
    async fn run_step(&self, request: StepRequest) -> StepOutcome {
        self.run(&request)
            .await
            .unwrap_or_else(|(kind, message)| StepOutcome::failed(kind, message))
    }

    async fn start_services(
        &self,
        request: ferry_engine::run::services::ServicesRequest,
    ) -> Result<Arc<dyn ferry_engine::run::services::JobServices>, String> {
        crate::services::start(request).await
    }

    /// A built-in that, with what this pipeline grants it, runs no programs, reaches no
    /// hosts, gets no secrets or host paths, and writes to the workspace only what it
    /// declares as `outputs.files` is a function of its inputs and files: it is cached by
    /// default. Every other step is cached only when the pipeline says `cache: true`.
    async fn identity(&self, step: &ferry_model::Step) -> Option<ferry_engine::run::Identity> {
        let plugin = self.plugin(&step.uses).await.ok()?;
        let needs = plugin
            .info
            .needs
            .clone()
            .unwrap_or_else(|| needs_from_grants(step));
        // `*` stands for what the pipeline grants.
        let given = |need: &[String], granted: usize| match need.iter().any(|n| n == "*") {
            true => granted > 0,
            false => !need.is_empty(),
        };
        let p = &step.permissions;
        let paths: Vec<String> = needs
            .paths
            .iter()
            .map(|(path, _)| path.display().to_string())
            .collect();
        let reaches_out = given(&needs.exec, p.exec.len())
            || given(&needs.network, p.network.len())
            || given(&needs.secrets, p.secrets.len())
            || given(&paths, p.paths.len());
        let writes = needs.workspace == Some(Access::Write) && p.workspace == Access::Write;
        let pure = matches!(step.uses, Uses::Builtin(_))
            && !step.is_run
            && !reaches_out
            && (!writes || !step.output_files.is_empty());
        Some(ferry_engine::run::Identity {
            digest: plugin.digest.clone(),
            pure,
            reads_workspace: needs.workspace.is_some() || step.is_run,
        })
    }
}

/// Where a plugin's component comes from.
enum Origin {
    Builtin(&'static [u8]),
    File(PathBuf),
}

/// A store for `describe()`: nothing granted at all.
fn bare_state(deadline: Instant) -> StepState {
    let log = ferry_engine::StepLog::new(
        "describe".into(),
        "describe".into(),
        Arc::new(Discard),
        Arc::default(),
        0,
    );
    let site = Site {
        step: "describe".into(),
        job: String::new(),
        grant_site: String::new(),
        runs_any_program: false,
    };
    StepState {
        wasi: WasiCtxBuilder::new().build(),
        table: ResourceTable::new(),
        limits: MemoryLimits {
            limit: ferry_model::pipeline::DEFAULT_MEMORY,
            used: 0,
        },
        refusals: Refusals::new(log.clone(), site.clone()),
        open_dirs: OpenDirs::default(),
        log,
        outputs: BTreeMap::new(),
        grant: Grant::default(),
        workspace: PathBuf::new(),
        untrusted: true,
        home: PathBuf::new(),
        output_file: PathBuf::new(),
        path_file: PathBuf::new(),
        env_file: PathBuf::new(),
        summary_file: PathBuf::new(),
        kept_dir: PathBuf::new(),
        deadline,
        processes: ProcessGroups::default(),
        site,
        standard_env: Vec::new(),
        open_groups: 0,
        services: None,
    }
}

/// Kills what is left of a step's processes when the step ends, however it ends.
struct Reaper(ProcessGroups);

impl Drop for Reaper {
    fn drop(&mut self) {
        self.0.kill_all();
    }
}

struct Discard;

impl ferry_engine::Reporter for Discard {
    fn event(&self, _: &ferry_engine::Event) {}
}

/// A plain command cannot declare needs, so it gets what the pipeline grants.
pub(crate) fn needs_from_grants(step: &ferry_model::Step) -> Needs {
    let p = &step.permissions;
    Needs {
        workspace: Some(p.workspace),
        paths: p.paths.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        env: p.env.iter().cloned().collect(),
        secrets: p.secrets.iter().cloned().collect(),
        network: p.network.iter().map(ToString::to_string).collect(),
        exec: Vec::new(),
    }
}

fn fs_perms(access: Access) -> FsPerms {
    match access {
        Access::Read => FsPerms::ReadOnly,
        Access::Write => FsPerms::ReadWrite,
    }
}

/// Checks inputs against `describe()`: unknown names, missing required ones, types; applies
/// defaults. A value of `None` is known only at run time (an expression): it counts as
/// given but its type is not checked. Returns the inputs to pass, or every problem.
pub(crate) fn check_inputs(
    info: &PluginInfo,
    given: &BTreeMap<String, Option<String>>,
) -> Result<Vec<(String, String)>, Vec<String>> {
    let mut problems = Vec::new();
    for name in given.keys() {
        if !info.inputs.iter().any(|i| &i.name == name) {
            let names = info.inputs.iter().map(|i| i.name.as_str());
            let hint = match ferry_model::diag::suggest(name, names) {
                Some(s) => format!("did you mean `{s}`?"),
                None if info.inputs.is_empty() => format!("`{}` takes no inputs", info.name),
                None => format!(
                    "`{}` takes {}",
                    info.name,
                    info.inputs
                        .iter()
                        .map(|i| format!("`{}`", i.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            problems.push(format!("unknown input `{name}` ({hint})"));
        }
    }
    let mut inputs = Vec::new();
    for spec in &info.inputs {
        let value = match given.get(&spec.name) {
            Some(Some(value)) => value.clone(),
            Some(None) => continue,
            None => match &spec.default {
                Some(default) => default.clone(),
                None => {
                    if spec.required {
                        problems.push(format!(
                            "input `{}` is required: {}",
                            spec.name, spec.description
                        ));
                    }
                    continue;
                }
            },
        };
        let value = match spec.kind.as_str() {
            "list" => one_item_list(value),
            _ => value,
        };
        let valid = match spec.kind.as_str() {
            "boolean" => matches!(value.as_str(), "true" | "false"),
            "number" => value.trim().parse::<f64>().is_ok(),
            "integer" => value.trim().parse::<i64>().is_ok(),
            "list" => serde_json::from_str::<Vec<String>>(&value).is_ok(),
            _ => true,
        };
        if !valid {
            let wanted = match spec.kind.as_str() {
                "integer" => "whole number",
                other => other,
            };
            problems.push(format!(
                "input `{}` must be a {wanted}, got `{value}`",
                spec.name
            ));
            continue;
        }
        inputs.push((spec.name.clone(), value));
    }
    if problems.is_empty() {
        Ok(inputs)
    } else {
        Err(problems)
    }
}

/// A list input given one value (`output: oci-layout`, as GitHub Actions users write it) is
/// that value alone; a JSON array (what a YAML list becomes) stays as it is, and so does text
/// that starts like one, whose mistake the check then names.
fn one_item_list(value: String) -> String {
    if value.trim_start().starts_with('[') {
        return value;
    }
    match value.is_empty() {
        true => "[]".to_string(),
        false => serde_json::json!([value]).to_string(),
    }
}

/// Resolves granted hosts now, so that connections are checked against addresses. An
/// untrusted run keeps only public addresses, whatever its pipeline grants.
async fn resolve(
    grants: &[ferry_model::NetworkGrant],
    untrusted: bool,
) -> Result<Vec<(std::net::IpAddr, Option<u16>)>, String> {
    let mut allowed = Vec::new();
    for g in grants {
        let addrs = tokio::net::lookup_host((g.host.as_str(), g.port.unwrap_or(0)))
            .await
            .map_err(|e| format!("cannot resolve granted host `{g}`: {e}"))?;
        allowed.extend(
            addrs
                .filter(|a| !untrusted || crate::grant::public_address(a.ip()))
                .map(|a| (a.ip(), g.port)),
        );
    }
    Ok(allowed)
}

fn allows(
    allowed: &[(std::net::IpAddr, Option<u16>)],
    addr: SocketAddr,
    use_: SocketAddrUse,
) -> bool {
    match use_ {
        // Binding is only for outgoing traffic here: an ephemeral port, never a server.
        SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => addr.port() == 0,
        SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => false,
        SocketAddrUse::TcpConnect | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => allowed
            .iter()
            .any(|(ip, port)| *ip == addr.ip() && port.is_none_or(|p| p == addr.port())),
    }
}

fn classify(e: wasmtime::Error, limit: Duration) -> (FailureKind, String) {
    if e.downcast_ref::<DeadlineReached>().is_some() {
        return (
            FailureKind::Timeout,
            format!(
                "the step timed out after {} (timeout-minutes)",
                human_duration(limit)
            ),
        );
    }
    if let Some(m) = e.downcast_ref::<MemoryLimitReached>() {
        return (FailureKind::MemoryLimit, m.to_string());
    }
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        return (
            FailureKind::Trap,
            // wasmtime's text starts with `wasm trap:` itself.
            format!("the step crashed ({trap}); its log shows what it printed last"),
        );
    }
    (
        FailureKind::Trap,
        format!("the step failed: {}", plugin::root_cause(&e)),
    )
}

fn human_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        format!("{:.1}m", secs / 60.0)
    } else {
        format!("{:.1}h", secs / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_input_takes_one_value_as_a_list_of_one() {
        let info = PluginInfo {
            inputs: vec![crate::plugin::InputSpec {
                name: "output".into(),
                description: String::new(),
                kind: "list".into(),
                default: None,
                required: false,
                runs: None,
            }],
            ..crate::plugin::command_info("probe")
        };
        let given = |v: &str| BTreeMap::from([("output".to_string(), Some(v.to_string()))]);
        let passed = |v: &str| check_inputs(&info, &given(v)).map(|i| i[0].1.clone());
        assert_eq!(passed("oci-layout"), Ok(r#"["oci-layout"]"#.to_string()));
        assert_eq!(
            passed(r#"has "quotes", commas"#),
            Ok(r#"["has \"quotes\", commas"]"#.to_string())
        );
        assert_eq!(passed(r#"["a","b"]"#), Ok(r#"["a","b"]"#.to_string()));
        assert_eq!(passed(""), Ok("[]".to_string()));
        let broken = passed("[a, b").unwrap_err();
        assert!(broken[0].contains("must be a list"), "{broken:?}");
    }
}
