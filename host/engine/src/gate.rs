//! What a job waits for before it starts: its concurrency group, held across runs and
//! processes through a file lock, and the approval of a gated environment, given by
//! `ferry approve` / `ferry reject` from anywhere that sees the same state directory.
//!
//! Everything is a file under `.ferry/`, so nothing needs a server: a lock the OS releases
//! when the holder dies, a JSON note saying who holds it, a pending request and the decision
//! written atomically beside it.

use crate::record::{now_ms, rfc3339, sanitize, write_atomic};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a waiting job looks again; a human or another run is on the other side.
const POLL: Duration = Duration::from_millis(100);

/// Who holds a concurrency group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    pub run: String,
    pub job: String,
    pub since: String,
}

/// A held concurrency group; released when dropped (or when the process dies).
pub struct GroupLock {
    _file: File,
    note: PathBuf,
}

impl Drop for GroupLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.note);
    }
}

/// Takes the concurrency `group`, waiting while another job holds it. With
/// `cancel_in_progress`, the holder's run is asked to cancel first. `waiting` is called once
/// with the holder when the job has to wait. `None` when `cancel` fired first.
pub async fn acquire_group(
    state_dir: &Path,
    group: &str,
    me: Holder,
    cancel_in_progress: bool,
    cancel: &CancellationToken,
    mut waiting: impl FnMut(Option<Holder>),
) -> io::Result<Option<GroupLock>> {
    let dir = state_dir.join("locks");
    std::fs::create_dir_all(&dir)?;
    let name = sanitize(group);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{name}.lock")))?;
    let note = dir.join(format!("{name}.json"));
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => {
                write_atomic(&note, &serde_json::to_vec(&me)?)?;
                return Ok(Some(GroupLock { _file: file, note }));
            }
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        if !told {
            told = true;
            let holder: Option<Holder> = std::fs::read(&note)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if cancel_in_progress && let Some(h) = &holder {
                request_cancel(
                    state_dir,
                    &h.run,
                    &format!(
                        "run {} needs concurrency group `{group}` (cancel-in-progress)",
                        me.run
                    ),
                )?;
            }
            waiting(holder);
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

fn cancel_file(run_dir: &Path) -> PathBuf {
    run_dir.join("cancel-requested")
}

/// Asks the run `run` to cancel; it notices within a poll interval.
pub fn request_cancel(state_dir: &Path, run: &str, reason: &str) -> io::Result<()> {
    let dir = state_dir.join("runs").join(run);
    if !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("there is no run `{run}`"),
        ));
    }
    write_atomic(&cancel_file(&dir), reason.as_bytes())
}

/// Cancels `cancel` when someone asks this run to stop (see [`request_cancel`]); gives the
/// reason to `told`.
pub fn watch_cancel_requests(
    run_dir: PathBuf,
    cancel: CancellationToken,
    told: impl FnOnce(String) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let file = cancel_file(&run_dir);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(POLL * 2) => {}
            }
            if let Ok(reason) = std::fs::read_to_string(&file) {
                told(reason);
                cancel.cancel();
                return;
            }
        }
    })
}

/// A decision on a gated job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Decision {
    pub approved: bool,
    /// Who decided: the user name of the process that did.
    pub by: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A job waiting for approval, as `ferry approve` finds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pending {
    pub run: String,
    pub job: String,
    pub environment: String,
    pub since: String,
}

fn approval_paths(run_dir: &Path, job: &str) -> (PathBuf, PathBuf) {
    let dir = run_dir.join("approvals");
    let name = sanitize(job);
    (
        dir.join(format!("{name}.pending.json")),
        dir.join(format!("{name}.json")),
    )
}

/// Records that a job waits for approval, so that [`decide`] finds it. Written before
/// anyone is told, so that whoever reacts to the request finds the job waiting.
pub fn ask(run_dir: &Path, pending: &Pending) -> io::Result<()> {
    let (pending_path, _) = approval_paths(run_dir, &pending.job);
    std::fs::create_dir_all(pending_path.parent().unwrap_or(run_dir))?;
    write_atomic(&pending_path, &serde_json::to_vec_pretty(pending)?)
}

/// Waits for the decision on `job`, which [`ask`] recorded; `None` when `cancel` fired
/// first.
pub async fn await_approval(
    run_dir: &Path,
    job: &str,
    cancel: &CancellationToken,
) -> io::Result<Option<Decision>> {
    let (pending_path, decision_path) = approval_paths(run_dir, job);
    let result = loop {
        if let Ok(bytes) = std::fs::read(&decision_path) {
            match serde_json::from_slice::<Decision>(&bytes) {
                Ok(decision) => break Some(decision),
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("`{}` is not a decision: {e}", decision_path.display()),
                    ));
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => break None,
            _ = tokio::time::sleep(POLL) => {}
        }
    };
    let _ = std::fs::remove_file(&pending_path);
    Ok(result)
}

/// Records a decision for a job that is waiting in `run_dir`; refuses when no such job
/// waits (a typo, a run that ended, or a job already decided).
pub fn decide(run_dir: &Path, job: &str, decision: &Decision) -> Result<Pending, String> {
    let (pending_path, decision_path) = approval_paths(run_dir, job);
    let pending: Pending = match std::fs::read(&pending_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("`{}` is unreadable: {e}", pending_path.display()))?,
        Err(_) => {
            let waiting = waiting_in(run_dir);
            return Err(if waiting.is_empty() {
                format!("no job of run `{}` waits for approval", dir_name(run_dir))
            } else {
                format!(
                    "job `{job}` does not wait for approval; waiting: {}",
                    waiting
                        .iter()
                        .map(|p| format!("`{}`", p.job))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        }
    };
    if decision_path.exists() {
        return Err(format!("job `{job}` was already decided"));
    }
    write_atomic(
        &decision_path,
        &serde_json::to_vec_pretty(decision).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("cannot write `{}`: {e}", decision_path.display()))?;
    Ok(pending)
}

/// The jobs waiting for approval in a run.
pub fn waiting_in(run_dir: &Path) -> Vec<Pending> {
    let mut out: Vec<Pending> = std::fs::read_dir(run_dir.join("approvals"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pending.json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    out.sort_by(|a: &Pending, b| a.job.cmp(&b.job));
    out
}

fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A decision made now by the current user.
pub fn decision(approved: bool, reason: Option<String>) -> Decision {
    Decision {
        approved,
        by: user(),
        at: rfc3339(now_ms()),
        reason,
    }
}

/// The user running this process, for the record: `FERRY_USER` (a CI bot can name the
/// person it acts for), the login name, or what `id -un` says.
pub fn user() -> String {
    ["FERRY_USER", "USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .or_else(|| {
            std::process::Command::new("id")
                .arg("-un")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .filter(|u| !u.is_empty())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(run: &str) -> Holder {
        Holder {
            run: run.into(),
            job: "deploy".into(),
            since: "now".into(),
        }
    }

    #[tokio::test]
    async fn a_group_is_held_until_dropped_and_the_waiter_learns_by_whom() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("runs/a")).unwrap();
        let cancel = CancellationToken::new();
        let first = acquire_group(
            dir.path(),
            "environment prod",
            holder("a"),
            false,
            &cancel,
            |_| {},
        )
        .await
        .unwrap()
        .unwrap();
        let state = dir.path().to_path_buf();
        let (told, waits) = tokio::sync::oneshot::channel();
        let waiter = tokio::spawn(async move {
            let token = CancellationToken::new();
            let mut told = Some(told);
            let lock = acquire_group(
                &state,
                "environment prod",
                holder("b"),
                false,
                &token,
                |h| {
                    let _ = told.take().map(|t| t.send(h));
                },
            )
            .await
            .unwrap();
            lock.is_some()
        });
        // The waiter says it waits, and for whom, before the group is free.
        let seen = waits.await.expect("the second job was told it waits");
        assert_eq!(seen.map(|h| h.run), Some("a".to_string()));
        assert!(!waiter.is_finished(), "the second job must wait");
        drop(first);
        assert!(waiter.await.unwrap(), "the second job takes the group");
    }

    #[tokio::test]
    async fn cancel_in_progress_asks_the_holder_to_stop() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("runs/a")).unwrap();
        let cancel = CancellationToken::new();
        let _held = acquire_group(dir.path(), "g", holder("a"), false, &cancel, |_| {})
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let watcher = stop.clone();
        let state = dir.path().to_path_buf();
        tokio::spawn(async move {
            acquire_group(&state, "g", holder("b"), true, &watcher, |_| {}).await
        });
        let held_run = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        watch_cancel_requests(dir.path().join("runs/a"), held_run.clone(), move |r| {
            let _ = tx.send(r);
        });
        let reason = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .unwrap()
            .unwrap();
        assert!(reason.contains("cancel-in-progress"), "{reason}");
        assert!(held_run.is_cancelled());
        stop.cancel();
    }

    #[tokio::test]
    async fn a_decision_reaches_the_waiting_job_and_only_a_waiting_job_can_be_decided() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().to_path_buf();
        assert!(
            decide(&run_dir, "deploy", &decision(true, None))
                .unwrap_err()
                .contains("no job")
        );
        let pending = Pending {
            run: "r".into(),
            job: "deploy".into(),
            environment: "production".into(),
            since: "now".into(),
        };
        let cancel = CancellationToken::new();
        ask(&run_dir, &pending).unwrap();
        let waiting = {
            let run_dir = run_dir.clone();
            tokio::spawn(async move { await_approval(&run_dir, "deploy", &cancel).await })
        };
        assert!(
            decide(&run_dir, "other", &decision(true, None))
                .unwrap_err()
                .contains("`deploy`")
        );
        decide(
            &run_dir,
            "deploy",
            &decision(false, Some("not today".into())),
        )
        .unwrap();
        let got = waiting.await.unwrap().unwrap().unwrap();
        assert!(!got.approved);
        assert_eq!(got.reason.as_deref(), Some("not today"));
        assert!(waiting_in(&run_dir).is_empty());
    }
}
