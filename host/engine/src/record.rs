//! The run record on disk: `.ferry/runs/<id>/` with `run.json` (summary, rewritten
//! atomically), `events.jsonl` (one event per line) and `logs/<job>/<step>.log`.

use crate::event::{Annotation, Event, FailureKind, Level, Reporter, Status};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// `run.json`: what a run was and how it ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    pub id: String,
    pub pipeline: String,
    pub status: Status,
    /// Process that ran it, to tell a live run from one whose host was killed.
    pub pid: u32,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    pub jobs: BTreeMap<String, JobSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSummary {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// Why the job was skipped or could not start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    /// The decision on a job behind `approval: required`: who, when, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::gate::Decision>,
    pub steps: Vec<StepSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepSummary {
    pub key: String,
    pub name: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// The step's log, relative to the run directory.
    pub log: String,
    /// Set when the step cache gave its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<crate::event::Cached>,
    /// What the step wrote to `$FERRY_STEP_SUMMARY` (Markdown, masked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// Writes a run's record as its events arrive.
pub struct RunRecord {
    dir: PathBuf,
    state: Mutex<State>,
}

struct State {
    events: BufWriter<File>,
    logs: HashMap<(Arc<str>, Arc<str>), BufWriter<File>>,
    summary: RunSummary,
    error: Option<io::Error>,
}

impl RunRecord {
    /// Creates `runs/<id>` under `state_dir` for a new run, with an id no other run has had
    /// (runs started in the same millisecond, by this process or another, get different
    /// ones), and marks the run as running.
    pub fn create(state_dir: &Path, pipeline: &str) -> io::Result<RunRecord> {
        let runs = state_dir.join("runs");
        std::fs::create_dir_all(&runs)?;
        ignore_in_git(state_dir);
        for _ in 0..100 {
            let id = new_run_id();
            let dir = runs.join(&id);
            // Taken only by the run that creates the directory.
            match std::fs::create_dir(&dir) {
                Ok(()) => return Self::start(dir, id, pipeline),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("no free run id under `{}`", runs.display()),
        ))
    }

    fn start(dir: PathBuf, id: String, pipeline: &str) -> io::Result<RunRecord> {
        std::fs::create_dir_all(dir.join("logs"))?;
        let events = BufWriter::new(File::create(dir.join("events.jsonl"))?);
        let summary = RunSummary {
            id,
            pipeline: pipeline.to_string(),
            status: Status::Running,
            pid: std::process::id(),
            started_at: rfc3339(now_ms()),
            finished_at: None,
            duration_ms: None,
            jobs: BTreeMap::new(),
        };
        write_atomic(&dir.join("run.json"), &serde_json::to_vec_pretty(&summary)?)?;
        Ok(RunRecord {
            dir,
            state: Mutex::new(State {
                events,
                logs: HashMap::new(),
                summary,
                error: None,
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The run's id, the name of its directory.
    pub fn id(&self) -> String {
        self.lock().summary.id.clone()
    }

    /// The first write error, if any; reported once the run is over.
    pub fn take_error(&self) -> Option<io::Error> {
        self.lock().error.take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log_path(job: &str, step: &str) -> String {
        format!("logs/{}/{}.log", sanitize(job), sanitize(step))
    }

    fn record(&self, state: &mut State, event: &Event) -> io::Result<()> {
        match event {
            Event::Log {
                job,
                step,
                level,
                text,
            } => {
                let log = self.log_file(state, job, step)?;
                match level {
                    Level::Debug => writeln!(log, "debug: {text}"),
                    Level::Warn => writeln!(log, "warning: {text}"),
                    Level::Error => writeln!(log, "error: {text}"),
                    Level::Info | Level::Stdout | Level::Stderr => writeln!(log, "{text}"),
                }?;
                return Ok(());
            }
            Event::GroupStart { job, step, title } => {
                writeln!(self.log_file(state, job, step)?, "▸ {title}")?;
                return Ok(());
            }
            Event::GroupEnd { .. } => return Ok(()),
            Event::Annotation {
                job,
                step,
                annotation,
            } => {
                let line = annotation_line(annotation);
                writeln!(self.log_file(state, job, step)?, "{line}")?;
            }
            Event::RunStarted { jobs, .. } | Event::MatrixExpanded { jobs, .. } => {
                if let Event::MatrixExpanded { job, .. } = event {
                    state.summary.jobs.remove(&**job);
                }
                for job in jobs {
                    state.summary.jobs.insert(
                        job.id.clone(),
                        JobSummary {
                            status: Status::Skipped,
                            duration_ms: None,
                            message: None,
                            outputs: BTreeMap::new(),
                            approval: None,
                            steps: Vec::new(),
                        },
                    );
                }
            }
            Event::JobStarted { job } => {
                if let Some(j) = state.summary.jobs.get_mut(&**job) {
                    j.status = Status::Running;
                }
            }
            Event::StepStarted {
                job, step, name, ..
            } => {
                if let Some(j) = state.summary.jobs.get_mut(&**job) {
                    j.steps.push(StepSummary {
                        key: step.to_string(),
                        name: name.clone(),
                        status: Status::Running,
                        failure: None,
                        message: None,
                        duration_ms: None,
                        log: Self::log_path(job, step),
                        cached: None,
                        summary: None,
                    });
                }
            }
            Event::StepFinished {
                job,
                step,
                status,
                failure,
                message,
                duration_ms,
                cached,
            } => {
                if let Some(mut log) = state.logs.remove(&(job.clone(), step.clone())) {
                    log.flush()?;
                }
                if let Some(j) = state.summary.jobs.get_mut(&**job) {
                    match j.steps.iter_mut().find(|s| s.key == **step) {
                        Some(s) => {
                            s.status = *status;
                            s.failure = *failure;
                            s.message.clone_from(message);
                            s.duration_ms = Some(*duration_ms);
                            s.cached.clone_from(cached);
                        }
                        // Skipped steps never started.
                        None => j.steps.push(StepSummary {
                            key: step.to_string(),
                            name: step.to_string(),
                            status: *status,
                            failure: *failure,
                            message: message.clone(),
                            duration_ms: None,
                            log: Self::log_path(job, step),
                            cached: None,
                            summary: None,
                        }),
                    }
                }
            }
            Event::JobFinished {
                job,
                status,
                duration_ms,
                message,
                outputs,
            } => {
                if let Some(j) = state.summary.jobs.get_mut(&**job) {
                    j.status = *status;
                    j.duration_ms = Some(*duration_ms);
                    j.message.clone_from(message);
                    j.outputs.clone_from(outputs);
                }
            }
            Event::RunFinished {
                status,
                duration_ms,
                ..
            } => {
                state.summary.status = *status;
                state.summary.finished_at = Some(rfc3339(now_ms()));
                state.summary.duration_ms = Some(*duration_ms);
            }
            Event::Approval {
                job,
                decision: Some(decision),
                ..
            } => {
                if let Some(j) = state.summary.jobs.get_mut(&**job) {
                    j.approval = Some(decision.clone());
                }
            }
            Event::Summary {
                job,
                step,
                markdown,
            } => {
                let found = state
                    .summary
                    .jobs
                    .get_mut(&**job)
                    .and_then(|j| j.steps.iter_mut().find(|s| s.key == **step));
                if let Some(s) = found {
                    s.summary = Some(markdown.clone());
                }
            }
            Event::Output { .. } | Event::Notice { .. } | Event::Approval { .. } => {}
        }
        serde_json::to_writer(&mut state.events, event)?;
        state.events.write_all(b"\n")?;
        if let Event::RunFinished { .. } = event {
            state.events.flush()?;
            for log in state.logs.values_mut() {
                log.flush()?;
            }
            state.logs.clear();
            write_atomic(
                &self.dir.join("run.json"),
                &serde_json::to_vec_pretty(&state.summary)?,
            )?;
        }
        Ok(())
    }

    fn log_file<'s>(
        &self,
        state: &'s mut State,
        job: &Arc<str>,
        step: &Arc<str>,
    ) -> io::Result<&'s mut BufWriter<File>> {
        use std::collections::hash_map::Entry;
        match state.logs.entry((job.clone(), step.clone())) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                let path = self.dir.join(Self::log_path(job, step));
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                Ok(e.insert(BufWriter::new(File::create(path)?)))
            }
        }
    }
}

impl Reporter for RunRecord {
    fn event(&self, event: &Event) {
        let mut state = self.lock();
        if let Err(e) = self.record(&mut state, event) {
            state.error.get_or_insert(e);
        }
    }
}

/// One line for an annotation in a log: `error: src/main.rs:3:7: message [rule]`.
pub fn annotation_line(annotation: &Annotation) -> String {
    let level = match annotation.level {
        Level::Error => "error",
        Level::Warn => "warning",
        _ => "notice",
    };
    format!("{level}: {annotation}")
}

/// Marks runs that a killed host left `running` as `interrupted`. Returns their ids.
pub fn recover_interrupted(state_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(state_dir.join("runs")) else {
        return Vec::new();
    };
    let mut recovered = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path().join("run.json");
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(mut summary) = serde_json::from_slice::<RunSummary>(&bytes) else {
            continue;
        };
        if summary.status != Status::Running || crate::os::process_alive(summary.pid) {
            continue;
        }
        // Steps' `$FERRY_OUTPUT` files may hold secrets; a finished run removes them, and a
        // killed one leaves them for this.
        let _ = std::fs::remove_dir_all(entry.path().join("outputs"));
        summary.status = Status::Interrupted;
        summary.finished_at = Some(rfc3339(now_ms()));
        for job in summary.jobs.values_mut() {
            if job.status == Status::Running {
                job.status = Status::Interrupted;
            }
            for step in &mut job.steps {
                if step.status == Status::Running {
                    step.status = Status::Interrupted;
                }
            }
        }
        let written = serde_json::to_vec_pretty(&summary)
            .map_err(io::Error::other)
            .and_then(|bytes| write_atomic(&path, &bytes));
        if written.is_ok() {
            recovered.push(summary.id);
        }
    }
    recovered.sort();
    recovered
}

/// How many runs `ferry run` keeps unless told otherwise (`FERRY_KEEP_RUNS`).
pub const DEFAULT_KEEP_RUNS: usize = 100;

/// Removes the oldest runs of `state_dir` beyond the newest `keep`, and the artifact files
/// no remaining run lists; the ids removed, oldest first. A run still going (its host
/// alive) is never removed. Each run is first renamed aside, so a prune cut short leaves
/// whole runs and hidden leftovers, which the next prune clears.
pub fn prune(state_dir: &Path, keep: usize) -> io::Result<Vec<String>> {
    let runs = state_dir.join("runs");
    let entries = match std::fs::read_dir(&runs) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".removing") {
            std::fs::remove_dir_all(entry.path())?;
        } else if entry.file_type()?.is_dir() && !name.starts_with('.') {
            ids.push(name);
        }
    }
    // Run ids sort by start time.
    ids.sort();
    let going = |id: &str| {
        std::fs::read(runs.join(id).join("run.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<RunSummary>(&b).ok())
            .is_some_and(|s| s.status == Status::Running && crate::os::process_alive(s.pid))
    };
    let excess = ids.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for id in ids.iter().take(excess) {
        if going(id) {
            continue;
        }
        let aside = runs.join(format!(".{id}.removing"));
        std::fs::rename(runs.join(id), &aside)?;
        std::fs::remove_dir_all(&aside)?;
        removed.push(id.clone());
    }
    if !removed.is_empty() {
        forget_unlisted_artifact_files(state_dir, &runs)?;
    }
    Ok(removed)
}

/// Removes artifact file contents no run lists any more. A blob younger than an hour is
/// kept, since a run may be uploading the artifact that will list it.
fn forget_unlisted_artifact_files(state_dir: &Path, runs: &Path) -> io::Result<()> {
    let mut listed = std::collections::HashSet::new();
    for entry in std::fs::read_dir(runs)? {
        let dir = entry?.path();
        for artifact in crate::artifacts::list(&dir).unwrap_or_default() {
            listed.extend(artifact.tree.files().map(|(sha, _)| sha.to_string()));
        }
    }
    let blobs = crate::artifacts::blobs(state_dir);
    for (sha, _) in blobs.list()? {
        let young = blobs
            .path(&sha)
            .and_then(std::fs::metadata)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_none_or(|age| age.as_secs() < 3600);
        if !listed.contains(&sha) && !young {
            blobs.remove(&sha)?;
        }
    }
    Ok(())
}

/// Writes a file so that readers see the old or the new content, never a mix: a temporary
/// file in the same directory, synced, then renamed over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_data()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A run id for now, with random low bits: see [`run_id_at`].
fn new_run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    // Each `RandomState` is keyed afresh: a random number without a dependency.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    run_id_at(now_ms(), random as u16)
}

/// The id of a run started at `ms` (milliseconds since the Unix epoch), as
/// `20261122-011312-4f2a`: the UTC date and time, then four hex digits that hold the
/// millisecond in their high bits and six bits of `noise` in the low ones. Ids sort by the
/// time their runs started, to the millisecond.
pub fn run_id_at(ms: u64, noise: u16) -> String {
    let stamp = rfc3339(ms);
    let compact: String = stamp[..19].chars().filter(|c| c.is_ascii_digit()).collect();
    let low = (ms % 1000) as u16 * 64 + (noise & 63);
    format!("{}-{}-{low:04x}", &compact[..8], &compact[8..])
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// UTC time in RFC 3339 with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Writes `<state_dir>/.gitignore` (`*`) unless there is one: `git add -A` after a run must
/// not commit run records, caches, or the workspaces (each a repository of its own). A file
/// the user wrote is left as it is; one that cannot be written is left out.
fn ignore_in_git(state_dir: &Path) {
    let path = state_dir.join(".gitignore");
    if path.exists() {
        return;
    }
    // Written beside it and put in place whole, never over one that appeared meanwhile. A
    // file system that refuses is no reason to stop a run: the file is a convenience.
    let written = tempfile::NamedTempFile::new_in(state_dir).and_then(|mut tmp| {
        tmp.write_all(
            b"# Written by ferry: what is here is ferry's state (runs, caches, workspaces).\n*\n",
        )?;
        tmp.persist_noclobber(&path).map_err(|e| e.error)
    });
    drop(written);
}

/// The service logs of a run record (`services/<job>/<service>.log`): the job's folder name,
/// the service's name and the log's size, sorted.
pub fn service_logs(dir: &Path) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    let Ok(jobs) = std::fs::read_dir(dir.join("services")) else {
        return out;
    };
    for job in jobs.flatten() {
        let Ok(files) = std::fs::read_dir(job.path()) else {
            continue;
        };
        for file in files.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            let (Some(service), Ok(meta)) = (name.strip_suffix(".log"), file.metadata()) else {
                continue;
            };
            if meta.is_file() {
                let job = job.file_name().to_string_lossy().into_owned();
                out.push((job, service.to_string(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

/// Where a run record keeps the log of `service` of the job whose folder is `job`.
pub fn service_log_path(dir: &Path, job: &str, service: &str) -> PathBuf {
    dir.join("services")
        .join(job)
        .join(format!("{service}.log"))
}

/// Keeps ids usable as file names (see [`ferry_model::pipeline::folder_name`]).
pub fn sanitize(name: &str) -> String {
    ferry_model::pipeline::folder_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_newest_runs_a_live_one_and_the_files_they_list() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".ferry");
        let runs = state.join("runs");
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        let summary = |status: &str, pid: u32| {
            format!(
                r#"{{"id":"r","pipeline":"p","status":"{status}","pid":{pid},"started_at":"t","jobs":{{}}}}"#
            )
        };
        for (n, (status, pid)) in [
            ("running", std::process::id()),
            ("passed", 1),
            ("failed", 1),
            ("passed", 1),
            ("passed", 1),
        ]
        .into_iter()
        .enumerate()
        {
            let run = runs.join(format!("20260101-00000{n}-0000"));
            std::fs::create_dir_all(&run).unwrap();
            std::fs::write(run.join("run.json"), summary(status, pid)).unwrap();
            // Each run keeps an artifact of its own content.
            std::fs::write(ws.join("a.txt"), format!("run {n}")).unwrap();
            crate::artifacts::upload(&state, &run, "a", ("j", "s"), &ws, &["a.txt".into()])
                .unwrap();
        }
        // Every blob is old enough to go once unlisted.
        let blobs = crate::artifacts::blobs(&state);
        let old = SystemTime::now() - std::time::Duration::from_secs(7200);
        for (sha, _) in blobs.list().unwrap() {
            let file = File::options()
                .write(true)
                .open(blobs.path(&sha).unwrap())
                .unwrap();
            file.set_modified(old).unwrap();
        }
        std::fs::create_dir_all(runs.join(".20250101-000000-0000.removing")).unwrap();
        let removed = prune(&state, 2).unwrap();
        assert_eq!(
            removed,
            ["20260101-000001-0000", "20260101-000002-0000"],
            "the oldest finished ones; the live one stays"
        );
        let mut left: Vec<String> = std::fs::read_dir(&runs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "20260101-000000-0000",
                "20260101-000003-0000",
                "20260101-000004-0000"
            ]
        );
        assert_eq!(
            blobs.list().unwrap().len(),
            3,
            "the removed runs' files went too"
        );
        for id in &left {
            let artifact = crate::artifacts::read(&runs.join(id), "a")
                .unwrap()
                .unwrap();
            let (sha, _) = artifact.tree.files().next().unwrap();
            assert!(blobs.has(sha), "{id} lost its artifact");
        }
        assert!(
            prune(&state, 0).unwrap().len() == 2,
            "keep 0 keeps only the live run"
        );
    }

    #[test]
    fn formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_311_192_123), "2026-11-22T01:33:12.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn run_ids_sort_by_time() {
        let id = new_run_id();
        assert_eq!(id.len(), "20261122-011312-4f2a".len(), "{id}");
        // Later starts sort later: within a second, across a minute, a year, and whatever
        // the random bits are.
        let times: [u64; 6] = [
            1_795_311_192_000,
            1_795_311_192_001,
            1_795_311_192_999,
            1_795_311_193_000,
            1_795_311_252_500,
            1_798_761_600_000,
        ];
        for pair in times.windows(2) {
            for (a, b) in [(63, 0), (0, 63), (0xffff, 0)] {
                let (early, late) = (run_id_at(pair[0], a), run_id_at(pair[1], b));
                assert!(early < late, "{early} sorts after {late}");
            }
        }
        assert_eq!(run_id_at(1_795_311_192_123, 5), "20261122-013312-1ec5");
    }

    #[test]
    fn runs_started_together_get_their_own_records() {
        let state = tempfile::tempdir().unwrap();
        // Each record is closed as soon as it is made: only its id is kept.
        let ids: std::collections::BTreeSet<String> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..250)
                            .map(|_| RunRecord::create(state.path(), "p").unwrap().id())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        assert_eq!(ids.len(), 1000, "two runs shared a record");
        let dirs = std::fs::read_dir(state.path().join("runs"))
            .unwrap()
            .count();
        assert_eq!(dirs, 1000);
    }

    #[test]
    fn a_run_left_running_by_a_dead_process_becomes_interrupted() {
        let state = tempfile::tempdir().unwrap();
        let record = RunRecord::create(state.path(), "p").unwrap();
        let r1 = record.id();
        drop(record);
        // Pretend the run belonged to a process that no longer exists.
        let path = state.path().join("runs").join(&r1).join("run.json");
        let mut summary: RunSummary =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        summary.pid = u32::MAX - 7;
        write_atomic(&path, &serde_json::to_vec(&summary).unwrap()).unwrap();
        let outputs = state.path().join("runs").join(&r1).join("outputs/job");
        std::fs::create_dir_all(&outputs).unwrap();
        std::fs::write(outputs.join("step.out"), "token=s3cret\n").unwrap();
        assert_eq!(recover_interrupted(state.path()), [r1]);
        assert!(
            !outputs.exists(),
            "a step's output file outlived its killed run"
        );
        let summary: RunSummary = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(summary.status, Status::Interrupted);
        assert!(summary.finished_at.is_some());
        // A run of a live process is left alone.
        RunRecord::create(state.path(), "p").unwrap();
        assert!(recover_interrupted(state.path()).is_empty());
    }
}
