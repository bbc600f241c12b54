// SPDX-License-Identifier: Apache-2.0
//! Helpers for setup steps: steps that prepare a toolchain or install dependencies for the
//! job's later steps (see [`crate::add_path`] and [`crate::set_env`]).

use std::hash::Hasher;

/// Whether `version` (`3.11.7`, `v20.11.1`) has the components `wanted` names (`3.11`,
/// `3`, `20`); an empty `wanted` takes any version.
pub fn version_matches(version: &str, wanted: &str) -> bool {
    let parts = |v: &str| -> Vec<String> {
        v.trim()
            .trim_start_matches('v')
            .split('.')
            .map(str::to_string)
            .collect()
    };
    let (have, want) = (parts(version), parts(wanted));
    wanted.trim().is_empty()
        || (want.len() <= have.len() && want.iter().zip(&have).all(|(w, h)| w == h))
}

/// What an installation was made from, written into what it made: when the inputs of a
/// later run give the same stamp, the installation is still good and is skipped.
#[derive(Default)]
pub struct Stamp {
    text: String,
}

impl Stamp {
    /// Adds a fact (a version, the arguments) to the stamp.
    pub fn fact(&mut self, name: &str, value: &str) -> &mut Self {
        self.text.push_str(&format!("{name}: {value}\n"));
        self
    }

    /// Adds a file of the workspace by its content; a missing file counts as missing.
    pub fn file(&mut self, path: &str) -> &mut Self {
        match std::fs::read(path) {
            Ok(bytes) => {
                // `new()` has fixed keys: the same content hashes the same in every run of
                // this build (a new Rust may differ: that only installs again).
                let mut hash = std::collections::hash_map::DefaultHasher::new();
                hash.write(&bytes);
                self.fact(path, &format!("{:016x} {}", hash.finish(), bytes.len()))
            }
            Err(_) => self.fact(path, "missing"),
        }
    }

    /// Whether the file at `path` holds this stamp.
    pub fn matches(&self, path: &str) -> bool {
        std::fs::read_to_string(path).is_ok_and(|t| t == self.text)
    }

    /// Writes the stamp to `path`.
    pub fn write(&self, path: &str) -> Result<(), crate::Error> {
        std::fs::write(path, &self.text)
            .map_err(|e| crate::Error::Failed(format!("cannot write `{path}`: {e}")))
    }
}

/// A path relative to the workspace that stays inside it: no `..`, not absolute.
pub fn workspace_relative(path: &str, what: &str) -> Result<String, crate::Error> {
    let path = path.trim().trim_end_matches('/');
    let inside = !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.contains(':')
        && path.split('/').all(|p| p != "..");
    if inside {
        Ok(path.to_string())
    } else {
        Err(crate::Error::InvalidInput(format!(
            "`{path}` in `{what}` is not a path inside the workspace"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_match_by_leading_components() {
        assert!(version_matches("3.11.7", "3.11"));
        assert!(version_matches("3.11.7", "3"));
        assert!(version_matches("v20.11.1", "20"));
        assert!(version_matches("3.11.7", ""));
        assert!(!version_matches("3.1.0", "3.11"));
        assert!(!version_matches("3.11", "3.11.7"));
    }
}
