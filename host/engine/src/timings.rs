//! Where a run spends its time (`ferry run --timings`): a few counters, summed across
//! jobs, that cost one relaxed atomic check when nobody asked for them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A part of a run that is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading and checking the pipeline file.
    Parse,
    /// Resolving registry plugins against ferry.lock and the plugin cache.
    Plugins,
    /// Loading components and checking the pipeline against what they declare.
    Preflight,
    /// Bringing job workspaces in line with the repository.
    Workspace,
    /// Hashing what cacheable steps depend on.
    CacheKey,
    /// Reading cached results and putting their files back.
    CacheRestore,
    /// Storing step results and dependency caches.
    CacheSave,
    /// Uploading and extracting artifacts.
    Artifacts,
    /// Running steps (components and host commands).
    Steps,
}

const PHASES: [Phase; 9] = [
    Phase::Parse,
    Phase::Plugins,
    Phase::Preflight,
    Phase::Workspace,
    Phase::CacheKey,
    Phase::CacheRestore,
    Phase::CacheSave,
    Phase::Artifacts,
    Phase::Steps,
];

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Parse => "parse pipeline",
            Phase::Plugins => "resolve plugins",
            Phase::Preflight => "load components",
            Phase::Workspace => "sync workspaces",
            Phase::CacheKey => "hash step inputs",
            Phase::CacheRestore => "restore from cache",
            Phase::CacheSave => "save to cache",
            Phase::Artifacts => "artifacts",
            Phase::Steps => "run steps",
        }
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];
static COUNTS: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];

/// Starts counting.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Adds `elapsed` to `phase`.
pub fn add(phase: Phase, elapsed: Duration) {
    if ENABLED.load(Ordering::Relaxed) {
        NANOS[phase as usize].fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        COUNTS[phase as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Times until dropped.
pub struct Span(Phase, Instant);

pub fn span(phase: Phase) -> Span {
    Span(phase, Instant::now())
}

impl Drop for Span {
    fn drop(&mut self) {
        add(self.0, self.1.elapsed());
    }
}

/// Each phase that took any time: its name, total time and how many times it ran.
pub fn totals() -> Vec<(&'static str, Duration, u64)> {
    PHASES
        .iter()
        .filter_map(|&p| {
            let count = COUNTS[p as usize].load(Ordering::Relaxed);
            let nanos = NANOS[p as usize].load(Ordering::Relaxed);
            (count > 0).then(|| (p.name(), Duration::from_nanos(nanos), count))
        })
        .collect()
}
