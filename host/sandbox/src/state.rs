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
}

/// The process groups a step's children lead. The runner owns one outside the guest's
/// stack, so dropping the step (cancel, timeout) kills every group even while the guest is
/// suspended inside a host call.
#[derive(Clone, Default)]
pub struct ProcessGroups(Arc<Mutex<Vec<u32>>>);

/// Every live group of every step in this process, for a hard exit (a second Ctrl-C).
static ALL_GROUPS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ProcessGroups {
    pub fn add(&self, pid: u32) {
        locked(&self.0).push(pid);
        locked(&ALL_GROUPS).push(pid);
    }

    /// Kills one group and forgets it.
    pub fn kill(&self, pid: u32) {
        locked(&self.0).retain(|p| *p != pid);
        locked(&ALL_GROUPS).retain(|p| *p != pid);
        ferry_engine::os::kill_process_group(pid);
    }

    pub fn kill_all(&self) {
        let pids = std::mem::take(&mut *locked(&self.0));
        for pid in pids {
            self.kill(pid);
        }
    }
}

/// Kills the process groups of every running step; for exiting at once.
pub fn kill_all_processes() {
    let pids = std::mem::take(&mut *locked(&ALL_GROUPS));
    for pid in pids {
        ferry_engine::os::kill_process_group(pid);
    }
}

/// Denial context computed once per step.
#[derive(Clone)]
pub struct Site {
    pub step: String,
    pub job: String,
    pub grant_site: String,
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
