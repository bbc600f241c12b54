//! `ferry.lock`: the exact manifest every registry `uses:` resolved to, committed beside the
//! pipeline so every run and every machine runs the same bytes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const HEADER: &str = "# ferry.lock: the exact plugin each `uses:` resolved to.\n# Written by `ferry lock` and `ferry update`; commit it.\n\n";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lockfile {
    pub version: u32,
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<Locked>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Locked {
    /// The reference as written in `uses:`.
    pub uses: String,
    /// The repository and the concrete tag it resolved to (informative).
    pub resolved: String,
    /// The plugin manifest's digest: what runs.
    pub digest: String,
    /// The component layer's digest and size.
    pub component: String,
    pub size: u64,
    /// What the plugin asked for when it was locked, by `permissions:` key.
    #[serde(default)]
    pub needs: BTreeMap<String, Vec<String>>,
    /// The trusted key whose signature was checked, when one was required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

impl Lockfile {
    /// `ferry.lock` beside the pipeline file.
    pub fn path_for(pipeline: &Path) -> PathBuf {
        pipeline
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("ferry.lock")
    }

    /// Reads the lock file; `None` when there is none.
    pub fn read(path: &Path) -> Result<Option<Lockfile>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read `{}`: {e}", path.display())),
        };
        let lock: Lockfile = toml::from_str(&text).map_err(|e| {
            format!(
                "`{}` is not a valid lock file: {e}\nhint: delete it and run `ferry lock` to write it again",
                path.display()
            )
        })?;
        if lock.version != 1 {
            return Err(format!(
                "`{}` has version {}, this ferry reads version 1\nhint: upgrade ferry, or run `ferry lock` to rewrite it",
                path.display(),
                lock.version
            ));
        }
        Ok(Some(lock))
    }

    /// Writes the lock file whole (a killed `ferry lock` leaves the old one).
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let mut lock = self.clone();
        lock.version = 1;
        lock.plugins.sort_by(|a, b| a.uses.cmp(&b.uses));
        let text = toml::to_string(&lock).map_err(|e| format!("cannot write the lock: {e}"))?;
        crate::layout::write_atomic(path, format!("{HEADER}{text}").as_bytes())
            .map_err(|e| format!("cannot write `{}`: {e}", path.display()))
    }

    pub fn get(&self, uses: &str) -> Option<&Locked> {
        self.plugins.iter().find(|p| p.uses == uses)
    }

    /// Adds or replaces the entry for its `uses`.
    pub fn put(&mut self, locked: Locked) {
        self.plugins.retain(|p| p.uses != locked.uses);
        self.plugins.push(locked);
    }
}

/// Needs the new version has that the old one did not, as `(key, value)`.
pub fn drift(
    old: &BTreeMap<String, Vec<String>>,
    new: &BTreeMap<String, Vec<String>>,
) -> Vec<(String, String)> {
    let mut extra = Vec::new();
    for (key, values) in new {
        let before = old.get(key).map(Vec::as_slice).unwrap_or_default();
        for value in values {
            let covered = before.contains(value)
                || (key == "workspace" && value == "read" && before.iter().any(|v| v == "write"));
            if !covered {
                extra.push((key.clone(), value.clone()));
            }
        }
    }
    extra
}

/// The needs in a published `describe()`, by `permissions:` key.
pub fn needs_of(describe: &serde_json::Value) -> BTreeMap<String, Vec<String>> {
    let mut needs = BTreeMap::new();
    let Some(declared) = describe.get("needs").filter(|n| n.is_object()) else {
        return needs;
    };
    if let Some(w) = declared.get("workspace").and_then(|w| w.as_str()) {
        needs.insert("workspace".to_string(), vec![w.to_string()]);
    }
    let paths: Vec<String> = declared
        .get("paths")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let pair = p.as_array()?;
            Some(format!(
                "{} ({})",
                pair.first()?.as_str()?,
                pair.get(1)?.as_str()?
            ))
        })
        .collect();
    if !paths.is_empty() {
        needs.insert("paths".to_string(), paths);
    }
    for key in ["env", "secrets", "network", "exec"] {
        let list: Vec<String> = declared
            .get(key)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        if !list.is_empty() {
            needs.insert(key.to_string(), list);
        }
    }
    needs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_is_what_was_added() {
        let old = BTreeMap::from([
            ("workspace".to_string(), vec!["write".to_string()]),
            ("env".to_string(), vec!["A".to_string()]),
        ]);
        let new = BTreeMap::from([
            ("workspace".to_string(), vec!["read".to_string()]),
            ("env".to_string(), vec!["A".to_string(), "B".to_string()]),
            ("network".to_string(), vec!["x.org:443".to_string()]),
        ]);
        assert_eq!(
            drift(&old, &new),
            vec![
                ("env".to_string(), "B".to_string()),
                ("network".to_string(), "x.org:443".to_string())
            ]
        );
        assert!(drift(&new, &new).is_empty());
    }

    #[test]
    fn round_trips_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.lock");
        let mut lock = Lockfile::default();
        lock.put(Locked {
            uses: "lint:^1".into(),
            resolved: "lint:1.2.0".into(),
            digest: format!("sha256:{}", "1".repeat(64)),
            component: format!("sha256:{}", "2".repeat(64)),
            size: 10,
            needs: BTreeMap::from([("exec".to_string(), vec!["git".to_string()])]),
            signed_by: None,
        });
        lock.write(&path).unwrap();
        let back = Lockfile::read(&path).unwrap().unwrap();
        assert_eq!(back.plugins, lock.plugins);
        std::fs::write(&path, "version = 1\n[[plugin]]\nuses = 3\n").unwrap();
        let e = Lockfile::read(&path).unwrap_err();
        assert!(e.contains("not a valid lock file"), "{e}");
    }
}
