//! `keep:`: what the directories a job keeps were built with.
//!
//! A kept `target/` or `node_modules` is only as good as the toolchain that filled it. Each
//! step that starts host programs records, beside the workspace, the `PATH` it saw and each
//! granted program as it resolved (path and content digest). When the same step next resolves
//! them differently (another venv, a new rustc, a changed `PATH`), the kept directories are
//! thrown away before it runs. A job that ended without saying what it used (a crash) leaves
//! no record, and its kept directories are thrown away at the first step that starts a
//! program. Resolved identities are compared, never trusted from the job: the record is the
//! host's, written outside the workspace.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Per step key: the programs it resolved (see `caching::host_programs`).
type Programs = BTreeMap<String, String>;

pub(super) struct Kept {
    path: PathBuf,
    /// What the job's last run recorded; `None` when it left no record.
    before: Option<BTreeMap<String, Programs>>,
    now: BTreeMap<String, Programs>,
    /// The kept directories were thrown away in this run: what earlier runs recorded no
    /// longer describes them.
    fresh: bool,
    /// See [`Kept::forget`].
    forgotten: bool,
}

impl Kept {
    /// Reads and consumes the record kept beside `workspace`: a run that dies before
    /// [`Kept::save`] leaves none, so nothing vouches for what it may have half built.
    pub(super) fn take(path: PathBuf) -> Kept {
        let before = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let _ = std::fs::remove_file(&path);
        Kept {
            path,
            before,
            now: BTreeMap::new(),
            fresh: false,
            forgotten: false,
        }
    }

    /// Records what `step` resolved, and says why the kept directories must go when it
    /// differs from what the same step resolved last time.
    pub(super) fn check(&mut self, step: &str, programs: Programs) -> Option<String> {
        let why = match (&self.before, self.fresh) {
            (_, true) => None,
            (None, false) => Some("what they were built with was not recorded".to_string()),
            (Some(before), false) => before.get(step).and_then(|old| changed(old, &programs)),
        };
        self.now.insert(step.to_string(), programs);
        if why.is_some() {
            self.fresh = true;
        }
        why
    }

    /// Leaves no record for the next run, whose first step that starts a program then throws
    /// the kept directories away: for when they could not be thrown away now.
    pub(super) fn forget(&mut self) {
        self.forgotten = true;
    }

    /// Writes the record for the next run: what this run's steps resolved, over what the
    /// last run recorded for steps that did not run this time.
    pub(super) fn save(self) -> std::io::Result<()> {
        if self.forgotten {
            return Ok(());
        }
        let mut all = match (self.before, self.fresh) {
            (Some(before), false) => before,
            _ => BTreeMap::new(),
        };
        all.extend(self.now);
        let bytes = serde_json::to_vec(&all).map_err(std::io::Error::other)?;
        crate::record::write_atomic(&self.path, &bytes)
    }
}

/// The first difference between two resolutions, in words.
fn changed(old: &Programs, new: &Programs) -> Option<String> {
    let names = old.keys().chain(new.keys());
    for name in names {
        let (was, is) = (old.get(name), new.get(name));
        if was == is {
            continue;
        }
        let shown = |v: Option<&String>| match v {
            None => "not granted".to_string(),
            // The path, without the digest.
            Some(v) => v.split(' ').next().unwrap_or(v).to_string(),
        };
        return Some(if name == "\0PATH" {
            "`PATH` changed".to_string()
        } else if shown(was) == shown(is) {
            format!("`{name}` at `{}` changed", shown(is))
        } else {
            format!("`{name}` is now `{}` (was `{}`)", shown(is), shown(was))
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn programs(cargo: &str) -> Programs {
        BTreeMap::from([
            ("\0PATH".to_string(), "/usr/bin".to_string()),
            ("cargo".to_string(), cargo.to_string()),
        ])
    }

    #[test]
    fn a_step_that_resolves_another_program_throws_the_kept_directories_away_once() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("build.kept");
        let mut kept = Kept::take(ws.clone());
        assert_eq!(
            kept.check("test", programs("/a/cargo 11")).as_deref(),
            Some("what they were built with was not recorded")
        );
        kept.save().unwrap();

        let mut kept = Kept::take(ws.clone());
        assert_eq!(kept.check("test", programs("/a/cargo 11")), None);
        assert_eq!(kept.check("new-step", programs("/b/cargo 22")), None);
        kept.save().unwrap();

        let mut kept = Kept::take(ws.clone());
        assert_eq!(
            kept.check("test", programs("/b/cargo 22")).as_deref(),
            Some("`cargo` is now `/b/cargo` (was `/a/cargo`)")
        );
        // Once thrown away, the rest of the run only records.
        assert_eq!(kept.check("new-step", programs("/c/cargo 33")), None);
        kept.save().unwrap();

        let mut kept = Kept::take(ws.clone());
        assert_eq!(
            kept.check("test", programs("/b/cargo 23")).as_deref(),
            Some("`cargo` at `/b/cargo` changed")
        );
    }

    #[test]
    fn a_run_that_died_leaves_nothing_to_vouch_for_its_directories() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("build.kept");
        let mut kept = Kept::take(ws.clone());
        kept.check("test", programs("/a/cargo 11"));
        kept.save().unwrap();
        // Taken and never saved: the job died.
        drop(Kept::take(ws.clone()));
        let mut kept = Kept::take(ws.clone());
        assert!(kept.check("test", programs("/a/cargo 11")).is_some());
    }
}
