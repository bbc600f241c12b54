//! The build context: the files `COPY` and `ADD` may read, less what `.dockerignore`
//! excludes, and Go-style glob patterns as Dockerfiles use them.

use ferry_sdk::archive::Kind;
use std::fs;
use std::io;

/// A build context directory, relative to the workspace.
pub struct Context {
    pub root: String,
    ignore: Vec<(bool, Vec<String>)>,
    listing: Option<Vec<String>>,
}

impl Context {
    pub fn open(root: &str) -> io::Result<Context> {
        let meta = fs::metadata(root).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("the build context `{root}` cannot be read: {e}"),
            )
        })?;
        if !meta.is_dir() {
            return Err(io::Error::other(format!(
                "the build context `{root}` is not a directory"
            )));
        }
        let ignore = match fs::read_to_string(format!("{root}/.dockerignore")) {
            Ok(text) => text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| {
                    let (negated, pattern) = match l.strip_prefix('!') {
                        Some(p) => (true, p.trim()),
                        None => (false, l),
                    };
                    (negated, segments(pattern))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        Ok(Context {
            root: root.trim_end_matches('/').to_string(),
            ignore,
            listing: None,
        })
    }

    /// Host path of a context-relative path.
    pub fn path(&self, relative: &str) -> String {
        if relative.is_empty() {
            self.root.clone()
        } else {
            format!("{}/{relative}", self.root)
        }
    }

    /// Whether `.dockerignore` excludes `path` (or a directory above it). The last matching
    /// pattern wins, as in Docker.
    pub fn ignored(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        let mut ignored = false;
        for (negated, pattern) in &self.ignore {
            let hit = (1..=parts.len()).any(|n| match_segments(pattern, &parts[..n]));
            if hit {
                ignored = !negated;
            }
        }
        ignored
    }

    /// Every file, directory and link of the context that is not ignored, sorted.
    pub fn listing(&mut self) -> io::Result<&[String]> {
        if self.listing.is_none() {
            let mut all = Vec::new();
            self.walk("", &mut all)?;
            let mut paths: Vec<String> = all.into_iter().map(|(p, _)| p).collect();
            paths.sort();
            self.listing = Some(paths);
        }
        Ok(self.listing.as_deref().unwrap_or_default())
    }

    /// The paths under `dir` (context-relative, `""` for the root), not ignored, sorted.
    /// The paths under `dir` (context-relative, `""` for the root), not ignored, with their
    /// kinds (links are not followed), listed by the host in one call.
    pub fn walk(&self, dir: &str, out: &mut Vec<(String, Kind)>) -> io::Result<()> {
        let found = ferry_sdk::archive::walk(&self.path(dir))
            .map_err(|e| io::Error::other(e.to_string()))?;
        for (relative, kind) in found {
            let path = if dir.is_empty() {
                relative
            } else {
                format!("{dir}/{relative}")
            };
            if !self.ignored(&path) {
                out.push((path, kind));
            }
        }
        Ok(())
    }
}

pub fn has_wildcard(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

fn segments(pattern: &str) -> Vec<String> {
    ferry_oci::tar::clean(pattern)
        .split('/')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Whether the context-relative `path` matches a `COPY` source pattern.
pub fn matches(pattern: &str, path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    match_segments(&segments(pattern), &parts)
}

fn match_segments(pattern: &[String], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=parts.len()).any(|skip| match_segments(rest, &parts[skip..]))
        }
        Some((first, rest)) => match parts.split_first() {
            Some((part, tail)) => {
                glob(first.as_bytes(), part.as_bytes()) && match_segments(rest, tail)
            }
            None => false,
        },
    }
}

/// Go's `filepath.Match` for one path segment: `*`, `?`, `[a-z]`, `[^a]` and `\` escapes.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && glob(rest, &name[1..]),
        Some((b'[', rest)) => {
            let Some((&c, name_rest)) = name.split_first() else {
                return false;
            };
            let (negated, mut class) = match rest.first() {
                Some(b'^' | b'!') => (true, &rest[1..]),
                _ => (false, rest),
            };
            let mut hit = false;
            let mut first = true;
            loop {
                match class.split_first() {
                    None => return false,
                    Some((b']', after)) if !first => {
                        class = after;
                        break;
                    }
                    Some((&lo, after)) => {
                        let (lo, after) = if lo == b'\\' && !after.is_empty() {
                            (after[0], &after[1..])
                        } else {
                            (lo, after)
                        };
                        if after.len() >= 2 && after[0] == b'-' && after[1] != b']' {
                            hit |= lo <= c && c <= after[1];
                            class = &after[2..];
                        } else {
                            hit |= lo == c;
                            class = after;
                        }
                    }
                }
                first = false;
            }
            hit != negated && glob(class, name_rest)
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            name.first() == Some(&rest[0]) && glob(&rest[1..], &name[1..])
        }
        Some((&p, rest)) => name.first() == Some(&p) && glob(rest, &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_like_go() {
        assert!(matches("*.txt", "a.txt"));
        assert!(!matches("*.txt", "dir/a.txt"));
        assert!(matches("dir/*.tx?", "dir/a.txt"));
        assert!(matches("[a-c]?", "b1"));
        assert!(!matches("[^a-c]?", "b1"));
        assert!(matches("**/*.log", "x/y/z.log"));
        assert!(matches("**/*.log", "z.log"));
    }

    #[test]
    fn dockerignore_last_match_wins_and_covers_children() {
        let ctx = Context {
            root: ".".into(),
            ignore: vec![
                (false, segments("node_modules")),
                (false, segments("*.md")),
                (true, segments("README.md")),
            ],
            listing: None,
        };
        assert!(ctx.ignored("node_modules/a/b.js"));
        assert!(ctx.ignored("CHANGES.md"));
        assert!(!ctx.ignored("README.md"));
        assert!(!ctx.ignored("src/main.rs"));
    }
}
