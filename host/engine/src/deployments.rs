//! The deployment history: `.ferry/deployments.jsonl`, one line per deploy, failed deploy
//! or rollback, appended by the run that did it. `ferry deployments` lists it and
//! `ferry rollback` reads what to restore from it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What happened to an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The release went live and its job passed.
    Deployed,
    /// The deploy did not complete; what served before still serves.
    Failed,
    /// The release went live, a later check failed, and the previous release was restored.
    RolledBack,
    /// A previous release was restored (automatically or by `ferry rollback`).
    Rollback,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deployed => "deployed",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled-back",
            Outcome::Rollback => "rollback",
        }
    }

    /// Whether the entry's version served afterwards.
    pub fn live(self) -> bool {
        matches!(self, Outcome::Deployed | Outcome::Rollback)
    }
}

/// One line of the history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Deployment {
    pub environment: String,
    pub outcome: Outcome,
    /// The release: what the deploy step reported as `version`.
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Where it went (`dir:/srv/app`, `http://...`), as the deploy step reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// RFC 3339 time the entry was written.
    pub at: String,
    pub run: String,
    pub job: String,
    /// The deploy step, by key, and its inputs (secrets masked): what `ferry rollback`
    /// runs again with `rollback: <version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("deployments.jsonl")
}

/// Appends an entry in a single write, so a reader never sees half of it.
pub fn append(state_dir: &Path, entry: &Deployment) -> io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let mut line = serde_json::to_vec(entry)?;
    line.push(b'\n');
    let mut file = std::fs::File::options()
        .create(true)
        .append(true)
        .open(path(state_dir))?;
    file.write_all(&line)?;
    file.sync_data()
}

/// Every entry, oldest first; a line that is not an entry (a torn write after a power
/// loss) is skipped.
pub fn read(state_dir: &Path) -> io::Result<Vec<Deployment>> {
    match std::fs::read_to_string(path(state_dir)) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// What serves in `environment` now: its last live entry.
pub fn current<'a>(history: &'a [Deployment], environment: &str) -> Option<&'a Deployment> {
    history
        .iter()
        .rev()
        .find(|d| d.environment == environment && d.outcome.live())
}

/// The release a rollback of `environment` restores: the last live version before the
/// current one that differs from it.
pub fn rollback_target<'a>(history: &'a [Deployment], environment: &str) -> Option<&'a Deployment> {
    let now = current(history, environment)?;
    let mut seen_current = false;
    history.iter().rev().find(|d| {
        if std::ptr::eq(*d, now) {
            seen_current = true;
            return false;
        }
        seen_current && d.environment == environment && d.outcome.live() && d.version != now.version
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(env: &str, version: &str, outcome: Outcome) -> Deployment {
        Deployment {
            environment: env.into(),
            outcome,
            version: version.into(),
            digest: None,
            target: None,
            url: None,
            at: "t".into(),
            run: "r".into(),
            job: "j".into(),
            step: None,
            inputs: BTreeMap::new(),
            message: None,
        }
    }

    #[test]
    fn current_and_rollback_target_skip_failures_and_other_environments() {
        let dir = tempfile::tempdir().unwrap();
        for e in [
            entry("staging", "1", Outcome::Deployed),
            entry("production", "1", Outcome::Deployed),
            entry("staging", "2", Outcome::Deployed),
            entry("staging", "3", Outcome::RolledBack),
            entry("staging", "2", Outcome::Rollback),
            entry("staging", "4", Outcome::Failed),
        ] {
            append(dir.path(), &e).unwrap();
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(path(dir.path()))
            .unwrap()
            .write_all(b"{\"torn")
            .unwrap();
        let history = read(dir.path()).unwrap();
        assert_eq!(history.len(), 6);
        assert_eq!(current(&history, "staging").unwrap().version, "2");
        assert_eq!(rollback_target(&history, "staging").unwrap().version, "1");
        assert!(rollback_target(&history, "production").is_none());
    }
}
