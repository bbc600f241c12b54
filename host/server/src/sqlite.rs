//! The embedded store: one SQLite file in WAL mode, so readers (the dashboard) never wait
//! for the writer (the runs).

use crate::store::{
    Approval, Delivery, Deployment, DeploymentQuery, Job, Outcome, Page, Progress, Received,
    Result, Run, RunStatus, Source, Step, Store, StoreError,
};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    settled INTEGER NOT NULL DEFAULT 0,
    run INTEGER,
    note TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(settled, id);
CREATE TABLE IF NOT EXISTS delivery_bodies (
    digest TEXT PRIMARY KEY,
    received_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    record TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, id);
CREATE TABLE IF NOT EXISTS jobs (
    run INTEGER NOT NULL,
    job TEXT NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    needs TEXT NOT NULL,
    status TEXT NOT NULL,
    duration_ms REAL,
    message TEXT,
    PRIMARY KEY (run, job)
);
CREATE TABLE IF NOT EXISTS steps (
    run INTEGER NOT NULL,
    job TEXT NOT NULL,
    idx INTEGER NOT NULL,
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    duration_ms REAL,
    message TEXT,
    cached INTEGER NOT NULL DEFAULT 0,
    started_at INTEGER,
    PRIMARY KEY (run, job, idx)
);
CREATE TABLE IF NOT EXISTS approvals (
    run INTEGER NOT NULL,
    job TEXT NOT NULL,
    environment TEXT NOT NULL,
    approved INTEGER,
    by TEXT,
    reason TEXT,
    PRIMARY KEY (run, job)
);
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL,
    repo TEXT NOT NULL,
    environment TEXT NOT NULL,
    entry TEXT NOT NULL,
    UNIQUE (run, entry)
);
CREATE INDEX IF NOT EXISTS deployments_environment ON deployments(repo, environment, id);
CREATE TABLE IF NOT EXISTS refs (
    repo TEXT NOT NULL,
    ref TEXT NOT NULL,
    sha TEXT NOT NULL,
    PRIMARY KEY (repo, ref)
);
";

/// The run history in `<data>/ferry.db`.
pub struct Sqlite {
    db: Mutex<Connection>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl Sqlite {
    pub fn open(path: &Path) -> Result<Sqlite> {
        let db = Connection::open(path)
            .map_err(|e| StoreError(format!("cannot open `{}`: {e}", path.display())))?;
        // WAL: readers never block the writer; NORMAL sync keeps every commit across a
        // process crash (only a power cut may lose the last ones).
        db.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        db.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        db.pragma_update(None, "foreign_keys", "ON").map_err(err)?;
        db.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        db.execute_batch(SCHEMA)
            .map_err(|e| StoreError(format!("cannot set up `{}`: {e}", path.display())))?;
        Ok(Sqlite { db: Mutex::new(db) })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite itself consistent (every change is
        // one statement or one transaction), so the connection stays usable.
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }
}

const RUN_COLUMNS: &str = "id, status, source, created_at, started_at, finished_at, record, error";

fn run_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Run> {
    let status: String = row.get(1)?;
    let source: String = row.get(2)?;
    let bad = |what: String| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, what.into())
    };
    Ok(Run {
        id: row.get(0)?,
        status: RunStatus::parse(&status).ok_or_else(|| bad(format!("status `{status}`")))?,
        source: serde_json::from_str(&source).map_err(|e| bad(e.to_string()))?,
        created_at: row.get(3)?,
        started_at: row.get(4)?,
        finished_at: row.get(5)?,
        record: row.get(6)?,
        error: row.get(7)?,
    })
}

fn insert_run(db: &Connection, source: &Source, at: u64) -> Result<i64> {
    db.execute(
        "INSERT INTO runs (repo, status, source, created_at) VALUES (?1, 'queued', ?2, ?3)",
        params![source.repo, serde_json::to_string(source).map_err(err)?, at],
    )
    .map_err(err)?;
    Ok(db.last_insert_rowid())
}

/// The rows of `sql`, whose parameters are the page's `before`, `repo` and `limit`.
fn paged<T>(
    db: &Connection,
    sql: &str,
    page: &Page,
    row: impl FnMut(&rusqlite::Row) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut statement = db.prepare(sql).map_err(err)?;
    let limit = i64::try_from(page.limit).unwrap_or(i64::MAX);
    let rows = statement
        .query_map(
            params![page.before.unwrap_or(i64::MAX), page.repo, limit],
            row,
        )
        .map_err(err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(err)
}

const RECEIVED_COLUMNS: &str = "id, key, source, received_at, settled, run, note";

/// A delivery row; its `source` is JSON, so reading it can fail apart from SQLite.
fn received_row(row: &rusqlite::Row) -> rusqlite::Result<Result<Received>> {
    let source: String = row.get(2)?;
    let outcome = match (row.get::<_, bool>(4)?, row.get::<_, Option<i64>>(5)?) {
        (false, _) => Outcome::Pending,
        (true, Some(run)) => Outcome::Run { run },
        (true, None) => Outcome::Ignored {
            reason: row.get::<_, Option<String>>(6)?.unwrap_or_default(),
        },
    };
    let id = row.get(0)?;
    let key = row.get(1)?;
    let received_at = row.get(3)?;
    Ok(serde_json::from_str(&source)
        .map_err(err)
        .map(|source| Received {
            delivery: Delivery {
                id,
                key,
                source,
                received_at,
            },
            outcome,
        }))
}

impl Store for Sqlite {
    fn add_delivery(
        &self,
        key: &str,
        body: Option<&str>,
        source: &Source,
        at: u64,
    ) -> Result<Option<i64>> {
        let mut db = self.db();
        let json = serde_json::to_string(source).map_err(err)?;
        let tx = db.transaction().map_err(err)?;
        if let Some(digest) = body {
            tx.execute(
                "DELETE FROM delivery_bodies WHERE received_at < ?1",
                params![at.saturating_sub(crate::store::BODY_MEMORY_MS)],
            )
            .map_err(err)?;
            let fresh = tx
                .execute(
                    "INSERT INTO delivery_bodies (digest, received_at) VALUES (?1, ?2)
                     ON CONFLICT(digest) DO NOTHING",
                    params![digest, at],
                )
                .map_err(err)?;
            if fresh == 0 {
                return Ok(None);
            }
        }
        let added = tx
            .execute(
                "INSERT INTO deliveries (key, source, received_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO NOTHING",
                params![key, json, at],
            )
            .map_err(err)?;
        let id = (added == 1).then(|| tx.last_insert_rowid());
        // A redelivery under a known key remembers nothing new.
        if id.is_some() {
            tx.commit().map_err(err)?;
        }
        Ok(id)
    }

    fn pending_deliveries(&self) -> Result<Vec<Delivery>> {
        let db = self.db();
        let mut statement = db
            .prepare(
                "SELECT id, key, source, received_at FROM deliveries
                 WHERE settled = 0 ORDER BY id",
            )
            .map_err(err)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, u64>(3)?,
                ))
            })
            .map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, key, source, received_at) = row.map_err(err)?;
            out.push(Delivery {
                id,
                key,
                source: serde_json::from_str(&source).map_err(err)?,
                received_at,
            });
        }
        Ok(out)
    }

    fn accept_delivery(&self, id: i64, source: &Source, at: u64) -> Result<i64> {
        let mut db = self.db();
        let tx = db.transaction().map_err(err)?;
        let run = insert_run(&tx, source, at)?;
        tx.execute(
            "UPDATE deliveries SET settled = 1, run = ?2 WHERE id = ?1",
            params![id, run],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(run)
    }

    fn ignore_delivery(&self, id: i64, note: &str) -> Result<()> {
        self.db()
            .execute(
                "UPDATE deliveries SET settled = 1, note = ?2 WHERE id = ?1",
                params![id, note],
            )
            .map_err(err)?;
        Ok(())
    }

    fn deliveries(&self, page: &Page) -> Result<Vec<Received>> {
        let sql = format!(
            "SELECT {RECEIVED_COLUMNS} FROM deliveries
             WHERE id < ?1 AND (?2 IS NULL OR json_extract(source, '$.repo') = ?2)
             ORDER BY id DESC LIMIT ?3"
        );
        paged(&self.db(), &sql, page, received_row)?
            .into_iter()
            .collect()
    }

    fn delivery(&self, id: i64) -> Result<Option<Received>> {
        self.db()
            .query_row(
                &format!("SELECT {RECEIVED_COLUMNS} FROM deliveries WHERE id = ?1"),
                [id],
                received_row,
            )
            .optional()
            .map_err(err)?
            .transpose()
    }

    fn add_run(&self, source: &Source, at: u64) -> Result<i64> {
        insert_run(&self.db(), source, at)
    }

    fn run(&self, id: i64) -> Result<Option<Run>> {
        self.db()
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                [id],
                run_row,
            )
            .optional()
            .map_err(err)
    }

    fn runs(&self, page: &Page) -> Result<Vec<Run>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE id < ?1 AND (?2 IS NULL OR repo = ?2)
             ORDER BY id DESC LIMIT ?3"
        );
        paged(&self.db(), &sql, page, run_row)
    }

    fn queued(&self) -> Result<Vec<Run>> {
        let db = self.db();
        let mut statement = db
            .prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE status = 'queued' ORDER BY id"
            ))
            .map_err(err)?;
        let rows = statement.query_map([], run_row).map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    fn start_run(&self, id: i64, at: u64) -> Result<bool> {
        let changed = self
            .db()
            .execute(
                "UPDATE runs SET status = 'running', started_at = ?2
                 WHERE id = ?1 AND status = 'queued'",
                params![id, at],
            )
            .map_err(err)?;
        Ok(changed == 1)
    }

    fn set_record(&self, id: i64, record: &str) -> Result<()> {
        self.db()
            .execute(
                "UPDATE runs SET record = ?2 WHERE id = ?1",
                params![id, record],
            )
            .map_err(err)?;
        Ok(())
    }

    fn finish_run(&self, id: i64, status: RunStatus, at: u64, error: Option<&str>) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction().map_err(err)?;
        tx.execute(
            "UPDATE runs SET status = ?2, finished_at = ?3, error = COALESCE(?4, error),
                 started_at = COALESCE(started_at, ?3)
             WHERE id = ?1",
            params![id, status.as_str(), at, error],
        )
        .map_err(err)?;
        // Whatever had not finished when the run ended ended with it.
        let left = match status {
            RunStatus::Interrupted => "interrupted",
            _ => "cancelled",
        };
        tx.execute(
            "UPDATE jobs SET status = ?2 WHERE run = ?1 AND status IN ('pending', 'running')",
            params![id, left],
        )
        .map_err(err)?;
        tx.execute(
            "UPDATE steps SET status = ?2 WHERE run = ?1 AND status IN ('pending', 'running')",
            params![id, left],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    fn interrupt_running(&self, at: u64) -> Result<Vec<i64>> {
        let ids: Vec<i64> = {
            let db = self.db();
            let mut statement = db
                .prepare("SELECT id FROM runs WHERE status = 'running' ORDER BY id")
                .map_err(err)?;
            let rows = statement.query_map([], |r| r.get(0)).map_err(err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(err)?
        };
        for &id in &ids {
            self.finish_run(
                id,
                RunStatus::Interrupted,
                at,
                Some("the server stopped while the run was going"),
            )?;
        }
        Ok(ids)
    }

    fn progress(&self, run: i64, change: Progress<'_>) -> Result<()> {
        let mut db = self.db();
        match change {
            Progress::Jobs(jobs) => {
                let tx = db.transaction().map_err(err)?;
                insert_jobs(&tx, run, 0, jobs)?;
                tx.commit().map_err(err)?;
            }
            Progress::Expanded { job, jobs } => {
                // The combinations take the job's position; the jobs after it move down.
                let tx = db.transaction().map_err(err)?;
                let position: Option<i64> = tx
                    .query_row(
                        "SELECT position FROM jobs WHERE run = ?1 AND job = ?2",
                        params![run, job],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(err)?;
                let position = match position {
                    Some(p) => p,
                    None => tx
                        .query_row(
                            "SELECT COALESCE(MAX(position) + 1, 0) FROM jobs WHERE run = ?1",
                            params![run],
                            |row| row.get(0),
                        )
                        .map_err(err)?,
                };
                tx.execute(
                    "DELETE FROM steps WHERE run = ?1 AND job = ?2",
                    params![run, job],
                )
                .map_err(err)?;
                tx.execute(
                    "DELETE FROM jobs WHERE run = ?1 AND job = ?2",
                    params![run, job],
                )
                .map_err(err)?;
                tx.execute(
                    "UPDATE jobs SET position = position + ?3 WHERE run = ?1 AND position > ?2",
                    params![run, position, jobs.len() as i64 - 1],
                )
                .map_err(err)?;
                insert_jobs(&tx, run, position, jobs)?;
                tx.commit().map_err(err)?;
            }
            Progress::Job {
                job,
                status,
                duration_ms,
                message,
            } => {
                db.execute(
                    "UPDATE jobs SET status = ?3, duration_ms = COALESCE(?4, duration_ms),
                         message = COALESCE(?5, message)
                     WHERE run = ?1 AND job = ?2",
                    params![run, job, status, duration_ms, message],
                )
                .map_err(err)?;
            }
            Progress::Step {
                job,
                index,
                key,
                name,
                status,
                duration_ms,
                message,
                cached,
                started_at,
            } => {
                db.execute(
                    "INSERT INTO steps (run, job, idx, key, name, status, duration_ms, message, cached, started_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT(run, job, idx) DO UPDATE SET key = ?4,
                         name = CASE WHEN ?5 = '' THEN name ELSE ?5 END, status = ?6,
                         duration_ms = ?7, message = ?8, cached = ?9,
                         started_at = COALESCE(?10, started_at)",
                    params![run, job, index, key, name, status, duration_ms, message, cached, started_at],
                )
                .map_err(err)?;
            }
            Progress::Approval(approval) => {
                db.execute(
                    "INSERT OR REPLACE INTO approvals (run, job, environment, approved, by, reason)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        run,
                        approval.job,
                        approval.environment,
                        approval.approved,
                        approval.by,
                        approval.reason
                    ],
                )
                .map_err(err)?;
            }
        }
        Ok(())
    }

    fn jobs(&self, run: i64) -> Result<Vec<Job>> {
        let db = self.db();
        let mut jobs: Vec<Job> = {
            let mut statement = db
                .prepare(
                    "SELECT job, name, needs, status, duration_ms, message FROM jobs
                     WHERE run = ?1 ORDER BY position",
                )
                .map_err(err)?;
            let rows = statement
                .query_map([run], |row| {
                    let needs: String = row.get(2)?;
                    Ok(Job {
                        job: row.get(0)?,
                        name: row.get(1)?,
                        needs: serde_json::from_str(&needs).unwrap_or_default(),
                        status: row.get(3)?,
                        duration_ms: row.get(4)?,
                        message: row.get(5)?,
                        steps: Vec::new(),
                    })
                })
                .map_err(err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(err)?
        };
        let mut statement = db
            .prepare(
                "SELECT job, key, name, status, duration_ms, message, cached, started_at FROM steps
                 WHERE run = ?1 ORDER BY job, idx",
            )
            .map_err(err)?;
        let rows = statement
            .query_map([run], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    Step {
                        key: row.get(1)?,
                        name: row.get(2)?,
                        status: row.get(3)?,
                        duration_ms: row.get(4)?,
                        message: row.get(5)?,
                        cached: row.get(6)?,
                        started_at: row.get(7)?,
                    },
                ))
            })
            .map_err(err)?;
        for row in rows {
            let (job, step) = row.map_err(err)?;
            if let Some(j) = jobs.iter_mut().find(|j| j.job == job) {
                j.steps.push(step);
            }
        }
        Ok(jobs)
    }

    fn approvals(&self, run: i64) -> Result<Vec<Approval>> {
        let db = self.db();
        let mut statement = db
            .prepare(
                "SELECT job, environment, approved, by, reason FROM approvals
                 WHERE run = ?1 ORDER BY job",
            )
            .map_err(err)?;
        let rows = statement
            .query_map([run], |row| {
                Ok(Approval {
                    job: row.get(0)?,
                    environment: row.get(1)?,
                    approved: row.get(2)?,
                    by: row.get(3)?,
                    reason: row.get(4)?,
                })
            })
            .map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    fn seen_refs(&self, repo: &str) -> Result<BTreeMap<String, String>> {
        let db = self.db();
        let mut statement = db
            .prepare("SELECT ref, sha FROM refs WHERE repo = ?1")
            .map_err(err)?;
        let rows = statement
            .query_map([repo], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    fn set_seen_ref(&self, repo: &str, reference: &str, sha: Option<&str>) -> Result<()> {
        let db = self.db();
        match sha {
            Some(sha) => db.execute(
                "INSERT OR REPLACE INTO refs (repo, ref, sha) VALUES (?1, ?2, ?3)",
                params![repo, reference, sha],
            ),
            None => db.execute(
                "DELETE FROM refs WHERE repo = ?1 AND ref = ?2",
                params![repo, reference],
            ),
        }
        .map_err(err)?;
        Ok(())
    }

    fn add_deployments(
        &self,
        run: i64,
        repo: &str,
        entries: &[ferry_engine::deployments::Deployment],
    ) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction().map_err(err)?;
        for entry in entries {
            tx.execute(
                "INSERT OR IGNORE INTO deployments (run, repo, environment, entry)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    run,
                    repo,
                    entry.environment,
                    serde_json::to_string(entry).map_err(err)?
                ],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn deployments(&self, query: &DeploymentQuery) -> Result<Vec<Deployment>> {
        let db = self.db();
        let mut statement = db
            .prepare(
                "SELECT run, repo, entry FROM deployments
                 WHERE (?1 IS NULL OR repo = ?1) AND (?2 IS NULL OR environment = ?2)
                   AND (?3 IS NULL OR run = ?3)
                 ORDER BY id DESC LIMIT ?4",
            )
            .map_err(err)?;
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let rows = statement
            .query_map(
                params![query.repo, query.environment, query.run, limit],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                },
            )
            .map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let (run_id, repo, entry) = row.map_err(err)?;
            out.push(Deployment {
                run_id,
                repo,
                entry: serde_json::from_str(&entry).map_err(err)?,
            });
        }
        Ok(out)
    }

    fn prune(&self, keep: usize) -> Result<Vec<Run>> {
        let mut db = self.db();
        let tx = db.transaction().map_err(err)?;
        let old: Vec<Run> = {
            let mut statement = tx
                .prepare(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs
                     WHERE status NOT IN ('queued', 'running')
                       AND id NOT IN (SELECT id FROM runs ORDER BY id DESC LIMIT ?1)
                     ORDER BY id"
                ))
                .map_err(err)?;
            let limit = i64::try_from(keep).unwrap_or(i64::MAX);
            let rows = statement.query_map([limit], run_row).map_err(err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(err)?
        };
        for run in &old {
            for table in ["jobs", "steps", "approvals"] {
                tx.execute(&format!("DELETE FROM {table} WHERE run = ?1"), [run.id])
                    .map_err(err)?;
            }
            tx.execute("DELETE FROM runs WHERE id = ?1", [run.id])
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(old)
    }
}

/// Inserts `jobs` at positions from `first`, with their steps.
fn insert_jobs(tx: &rusqlite::Transaction, run: i64, first: i64, jobs: &[Job]) -> Result<()> {
    for (offset, job) in jobs.iter().enumerate() {
        tx.execute(
            "INSERT OR REPLACE INTO jobs (run, job, position, name, needs, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                run,
                job.job,
                first + offset as i64,
                job.name,
                serde_json::to_string(&job.needs).map_err(err)?,
                job.status
            ],
        )
        .map_err(err)?;
        for (idx, step) in job.steps.iter().enumerate() {
            tx.execute(
                "INSERT OR REPLACE INTO steps (run, job, idx, key, name, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![run, job.job, idx, step.key, step.name, step.status],
            )
            .map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TriggerKind;

    fn source(sha: &str) -> Source {
        Source::new("app", TriggerKind::Push, "refs/heads/main", sha)
    }

    fn store() -> (tempfile::TempDir, Sqlite) {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(&dir.path().join("ferry.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn a_redelivered_key_is_kept_once() {
        let (_dir, store) = store();
        assert!(
            store
                .add_delivery("github:1", None, &source("a"), 1)
                .unwrap()
                .is_some()
        );
        assert_eq!(
            store
                .add_delivery("github:1", None, &source("a"), 2)
                .unwrap(),
            None
        );
        assert_eq!(store.pending_deliveries().unwrap().len(), 1);
    }

    #[test]
    fn a_signed_body_replayed_under_a_new_key_is_kept_once_while_remembered() {
        let (_dir, store) = store();
        let memory = crate::store::BODY_MEMORY_MS;
        let add = |key: &str, at: u64| {
            store
                .add_delivery(key, Some("digest-1"), &source("a"), at)
                .unwrap()
        };
        assert!(add("github:1", 1).is_some());
        assert_eq!(add("github:2", 2), None, "the same body under a new id");
        assert_eq!(add("github:1", 3), None, "a redelivery");
        assert!(
            add("github:3", memory + 2).is_some(),
            "once forgotten it is new"
        );
        // The refused replay left no body of its own behind: another body is new.
        assert!(
            store
                .add_delivery("github:2", Some("digest-2"), &source("a"), memory + 3)
                .unwrap()
                .is_some()
        );
        assert_eq!(store.pending_deliveries().unwrap().len(), 3);
    }

    #[test]
    fn deliveries_say_what_became_of_them() {
        let (_dir, store) = store();
        let ran = store
            .add_delivery("github:1", None, &source("a"), 1)
            .unwrap()
            .unwrap();
        let ignored = store
            .add_delivery("github:2", None, &source("b"), 2)
            .unwrap()
            .unwrap();
        let other = Source::new("lib", TriggerKind::Push, "refs/heads/main", "c");
        let pending = store
            .add_delivery("github:3", None, &other, 3)
            .unwrap()
            .unwrap();
        let run = store.accept_delivery(ran, &source("a"), 4).unwrap();
        store
            .ignore_delivery(ignored, "`on:` does not take it")
            .unwrap();
        let outcome = |id| store.delivery(id).unwrap().unwrap().outcome;
        assert_eq!(outcome(ran), Outcome::Run { run });
        assert_eq!(
            outcome(ignored),
            Outcome::Ignored {
                reason: "`on:` does not take it".into()
            }
        );
        assert_eq!(outcome(pending), Outcome::Pending);
        assert!(store.delivery(99).unwrap().is_none());
        let all = store
            .deliveries(&Page {
                limit: 10,
                ..Page::default()
            })
            .unwrap();
        let ids: Vec<i64> = all.iter().map(|r| r.delivery.id).collect();
        assert_eq!(ids, [pending, ignored, ran], "newest first");
        let app = store
            .deliveries(&Page {
                limit: 1,
                before: Some(pending),
                repo: Some("app".into()),
            })
            .unwrap();
        assert_eq!(app.len(), 1);
        assert_eq!(app[0].delivery.key, "github:2");
        let json = serde_json::to_value(&app[0]).unwrap();
        assert_eq!(json["outcome"], "ignored");
        assert_eq!(json["reason"], "`on:` does not take it");
        assert_eq!(json["source"]["sha"], "b");
    }

    #[test]
    fn runs_list_newest_first_and_page() {
        let (_dir, store) = store();
        let ids: Vec<i64> = (0..5)
            .map(|i| store.add_run(&source(&i.to_string()), i).unwrap())
            .collect();
        let query = |before| Page {
            limit: 2,
            before,
            repo: None,
        };
        let first: Vec<i64> = store
            .runs(&query(None))
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(first, vec![ids[4], ids[3]]);
        let next: Vec<i64> = store
            .runs(&query(Some(ids[3])))
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(next, vec![ids[2], ids[1]]);
    }

    #[test]
    fn a_restart_interrupts_running_runs_and_their_jobs() {
        let (dir, store) = store();
        let id = store.add_run(&source("a"), 1).unwrap();
        let queued = store.add_run(&source("b"), 1).unwrap();
        assert!(store.start_run(id, 2).unwrap());
        let job = Job {
            job: "build".into(),
            name: "build".into(),
            needs: vec![],
            status: "running".into(),
            duration_ms: None,
            message: None,
            steps: vec![],
        };
        store.progress(id, Progress::Jobs(&[job])).unwrap();
        drop(store);
        let store = Sqlite::open(&dir.path().join("ferry.db")).unwrap();
        assert_eq!(store.interrupt_running(3).unwrap(), vec![id]);
        let run = store.run(id).unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Interrupted);
        assert_eq!(store.jobs(id).unwrap()[0].status, "interrupted");
        assert_eq!(
            store.run(queued).unwrap().unwrap().status,
            RunStatus::Queued
        );
    }

    #[test]
    fn a_matrix_made_at_run_time_takes_its_job_s_place() {
        let (_dir, store) = store();
        let id = store.add_run(&source("a"), 1).unwrap();
        assert!(store.start_run(id, 2).unwrap());
        let job = |name: &str| Job {
            job: name.into(),
            name: name.into(),
            needs: vec![],
            status: "pending".into(),
            duration_ms: None,
            message: None,
            steps: vec![Step {
                key: "step-1".into(),
                name: "run".into(),
                status: "pending".into(),
                duration_ms: None,
                message: None,
                cached: false,
                started_at: None,
            }],
        };
        let planned = [job("plan"), job("test"), job("after")];
        store.progress(id, Progress::Jobs(&planned)).unwrap();
        let made = [job("test (a)"), job("test (b)"), job("test (c)")];
        let change = Progress::Expanded {
            job: "test",
            jobs: &made,
        };
        store.progress(id, change).unwrap();
        let jobs = store.jobs(id).unwrap();
        let names: Vec<&str> = jobs.iter().map(|j| j.job.as_str()).collect();
        assert_eq!(names, ["plan", "test (a)", "test (b)", "test (c)", "after"]);
        assert!(jobs.iter().all(|j| j.steps.len() == 1));
    }

    #[test]
    fn a_run_cancelled_in_the_queue_never_starts() {
        let (_dir, store) = store();
        let id = store.add_run(&source("a"), 1).unwrap();
        store.finish_run(id, RunStatus::Cancelled, 2, None).unwrap();
        assert!(!store.start_run(id, 3).unwrap());
        assert_eq!(store.run(id).unwrap().unwrap().status, RunStatus::Cancelled);
    }

    #[test]
    fn prune_keeps_the_newest_and_unfinished_runs() {
        let (_dir, store) = store();
        let ids: Vec<i64> = (0..4)
            .map(|i| store.add_run(&source(&i.to_string()), i).unwrap())
            .collect();
        for &id in &ids[1..] {
            store.finish_run(id, RunStatus::Passed, 9, None).unwrap();
        }
        let pruned: Vec<i64> = store.prune(2).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(pruned, vec![ids[1]]);
        assert!(store.run(ids[0]).unwrap().is_some(), "a queued run is kept");
    }
}
