//! What a store holds while one step runs.

use crate::grant::Grant;
use ferry_engine::StepLog;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Per-step store data. Interfaces reach it through their own modules' `Host` impls.
pub struct StepState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: MemoryLimits,
    pub log: StepLog,
    pub outputs: BTreeMap<String, String>,
    pub grant: Grant,
    /// Job workspace on the host.
    pub workspace: PathBuf,
    /// An untrusted run's step: no private or loopback address, whatever is granted.
    pub untrusted: bool,
    /// Private `HOME` of child processes.
    pub home: PathBuf,
    /// `$FERRY_OUTPUT` for child processes.
    pub output_file: PathBuf,
    /// `$FERRY_PATH` and `$FERRY_ENV` for child processes.
    pub path_file: PathBuf,
    pub env_file: PathBuf,
    /// `$FERRY_STEP_SUMMARY`: Markdown for people, shown with the run.
    pub summary_file: PathBuf,
    /// Where `outputs.keep` copies files.
    pub kept_dir: PathBuf,
    pub deadline: Instant,
    /// Process groups of running children.
    pub processes: ProcessGroups,
    /// Text naming the step and where grants go, for denial messages.
    pub site: Site,
    /// `CI`, `FERRY_RUN_ID`, ... for child processes.
    pub standard_env: Vec<(&'static str, String)>,
    pub open_groups: u32,
    /// The job's running services, which the step's programs reach by name.
    pub services: Option<Arc<dyn ferry_engine::run::services::JobServices>>,
    /// What the sandbox refused the step so far, said in its log.
    pub refusals: crate::refusals::Refusals,
    /// The directories the guest holds open, for naming what it was refused.
    pub open_dirs: crate::refusals::OpenDirs,
}

/// The process groups a step's children lead, and the first process of each confined
/// program's PID namespace (by pidfd, so a reused pid is never hit). The runner owns one
/// outside the guest's stack, so dropping the step (cancel, timeout) kills every group and
/// namespace even while the guest is suspended inside a host call.
#[derive(Clone, Default)]
pub struct ProcessGroups(Arc<Mutex<Vec<Target>>>);

/// Something to kill.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Target {
    /// A process group, by its leader's pid.
    Group(u32),
    /// A process by pidfd: PID 1 of a confined program's namespace, whose death ends every
    /// process in it, whatever process group or session they moved to.
    #[cfg(target_os = "linux")]
    Pidfd(i32),
}

impl Target {
    fn kill(self) {
        match self {
            Target::Group(pid) => ferry_engine::os::kill_process_group(pid),
            // SAFETY: the descriptor stays open while it is registered; a process that has
            // exited already only makes the call fail.
            #[cfg(target_os = "linux")]
            Target::Pidfd(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd,
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            },
        }
    }
}

/// Every live target of every step in this process, for a hard exit (a second Ctrl-C).
static ALL_GROUPS: Mutex<Vec<Target>> = Mutex::new(Vec::new());

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ProcessGroups {
    pub fn add(&self, target: Target) {
        locked(&self.0).push(target);
        locked(&ALL_GROUPS).push(target);
    }

    /// Kills one target and forgets it.
    pub fn kill(&self, target: Target) {
        locked(&self.0).retain(|t| *t != target);
        locked(&ALL_GROUPS).retain(|t| *t != target);
        target.kill();
    }

    pub fn kill_all(&self) {
        let targets = std::mem::take(&mut *locked(&self.0));
        for target in targets {
            self.kill(target);
        }
    }
}

/// Kills the process groups and confined programs of every running step; for exiting at
/// once.
pub fn kill_all_processes() {
    let targets = std::mem::take(&mut *locked(&ALL_GROUPS));
    for target in targets {
        target.kill();
    }
}

/// Denial context computed once per step.
#[derive(Clone)]
pub struct Site {
    pub step: String,
    pub job: String,
    pub grant_site: String,
    /// The plugin runs the programs its user names (it declared `exec: ["*"]`): a grant
    /// alone lets it run one, as for the built-in `lint` and `test`.
    pub runs_any_program: bool,
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Raised (as a trap) when the step's memories together pass the limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {} reached (permissions.memory)", ferry_model::pipeline::format_size(*.limit))]
pub struct MemoryLimitReached {
    pub limit: u64,
}

/// Raised (as a trap) when the step's deadline passes.
#[derive(Debug, thiserror::Error)]
#[error("the step ran past its deadline")]
pub struct DeadlineReached;

/// Caps the sum of all linear memories of a step, not just each one.
pub struct MemoryLimits {
    pub limit: u64,
    pub used: u64,
}

impl wasmtime::ResourceLimiter for MemoryLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grown = (desired - current) as u64;
        if self.used + grown > self.limit {
            return Err(MemoryLimitReached { limit: self.limit }.into());
        }
        self.used += grown;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }

    fn instances(&self) -> usize {
        1_000
    }

    fn tables(&self) -> usize {
        1_000
    }

    fn memories(&self) -> usize {
        100
    }
}
