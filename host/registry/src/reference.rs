//! Plugin references: what `uses:` and `ferry plugin push|pull|info` accept.
//!
//! `localhost:5000/steps/lint:1.2`, `ghcr.io/acme/lint@sha256:…` and `ghcr.io/acme/lint:^1`
//! name a registry; `lint:1.2` and `acme/lint:1.2` are short names, resolved against the
//! configured default location (a registry namespace or the local plugin store).

use std::fmt;
use std::path::PathBuf;

/// Where plugins live: a registry (with an optional namespace prefix) or an OCI
/// image-layout directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    Registry {
        /// `host[:port]`.
        host: String,
        /// Path prefix inside the registry, possibly empty.
        namespace: String,
    },
    /// A directory of image layouts, one per repository.
    Layout(PathBuf),
}

impl Location {
    /// `localhost:5000/steps`, `ghcr.io/acme`, or a directory path.
    pub fn parse(text: &str) -> Result<Location, String> {
        let text = text.trim().trim_end_matches('/');
        if text.is_empty() {
            return Err("an empty plugin location".into());
        }
        if looks_like_path(text) {
            return Ok(Location::Layout(expand_home(text)));
        }
        let (host, namespace) = text.split_once('/').unwrap_or((text, ""));
        if !is_host(host) {
            return Err(format!(
                "`{text}` is neither a registry (`host[:port]/namespace`, e.g. `ghcr.io/acme`) nor a directory (`./plugins`, `/srv/plugins`)"
            ));
        }
        if !namespace.is_empty() {
            check_repository(namespace, text)?;
        }
        Ok(Location::Registry {
            host: host.to_string(),
            namespace: namespace.to_string(),
        })
    }

    /// The repository path inside this location for `name`.
    fn join(&self, name: &str) -> String {
        match self {
            Location::Registry { namespace, .. } if !namespace.is_empty() => {
                format!("{namespace}/{name}")
            }
            _ => name.to_string(),
        }
    }

    /// The namespace string signature policies match against: `host/namespace` or the
    /// directory.
    pub fn display_prefix(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Registry { host, namespace } if namespace.is_empty() => f.write_str(host),
            Location::Registry { host, namespace } => write!(f, "{host}/{namespace}"),
            Location::Layout(dir) => write!(f, "{}", dir.display()),
        }
    }
}

/// One plugin repository: where, and its path there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repository {
    pub location: Location,
    /// For a registry the full repository path (namespace included); for a layout the
    /// directory name under it.
    pub path: String,
}

impl Repository {
    /// The registry host, or `None` for the local store.
    pub fn host(&self) -> Option<&str> {
        match &self.location {
            Location::Registry { host, .. } => Some(host),
            Location::Layout(_) => None,
        }
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Location::Registry { host, .. } => write!(f, "{host}/{}", self.path),
            Location::Layout(dir) => write!(f, "{}", dir.join(&self.path).display()),
        }
    }
}

/// What a reference asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Version {
    /// A tag, or a semver range (`1.2`, `^1`, `~1.2.3`, `>=1.0, <2`) matched against tags.
    Tag(String),
    /// Exactly this manifest; the tag, if also written, is informative.
    Digest { digest: String, tag: Option<String> },
}

/// A parsed plugin reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    pub repository: Repository,
    pub version: Version,
}

impl Reference {
    /// Parses `text`, resolving short names against `default`. A version (tag, range or
    /// digest) is required so that what runs is always chosen on purpose.
    pub fn parse(text: &str, default: &Location) -> Result<Reference, String> {
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) => {
                check_digest(d).map_err(|e| format!("`{text}`: {e}"))?;
                (r, Some(d.to_string()))
            }
            None => (text, None),
        };
        let (name, tag) = match rest.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t.to_string())),
            _ => (rest, None),
        };
        let (location, path) = match name.split_once('/') {
            Some((first, path)) if is_host(first) => (
                Location::Registry {
                    host: first.to_string(),
                    namespace: String::new(),
                },
                path.to_string(),
            ),
            _ => (default.clone(), default.join(name)),
        };
        check_repository(&path, text)?;
        let version = match (tag, digest) {
            (tag, Some(digest)) => Version::Digest { digest, tag },
            (Some(tag), None) if !tag.is_empty() => Version::Tag(tag),
            _ => {
                return Err(format!(
                    "`{text}` names no version\nhint: pin it: `{name}:1.2.0`, a range such as `{name}:^1`, or a digest `{name}@sha256:…`"
                ));
            }
        };
        Ok(Reference {
            repository: Repository { location, path },
            version,
        })
    }

    /// The tag or range as written, if any.
    pub fn tag(&self) -> Option<&str> {
        match &self.version {
            Version::Tag(t) => Some(t),
            Version::Digest { tag, .. } => tag.as_deref(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository)?;
        match &self.version {
            Version::Tag(t) => write!(f, ":{t}"),
            Version::Digest { digest, tag } => {
                if let Some(t) = tag {
                    write!(f, ":{t}")?;
                }
                write!(f, "@{digest}")
            }
        }
    }
}

/// Whether `uses:` text is a plugin reference rather than a built-in step name.
pub fn is_reference(text: &str) -> bool {
    text.contains(['/', ':', '@'])
}

fn looks_like_path(text: &str) -> bool {
    text.starts_with(['/', '.', '~']) || (cfg!(windows) && text.as_bytes().get(1) == Some(&b':'))
}

fn expand_home(text: &str) -> PathBuf {
    match text.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(rest),
        None => PathBuf::from(text),
    }
}

/// A registry host has a dot or a port, or is `localhost`, as in Docker references.
fn is_host(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost"
}

pub(crate) fn check_digest(digest: &str) -> Result<(), String> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(()),
        _ => Err(format!(
            "`{digest}` is not a digest: write `sha256:` and 64 hex digits"
        )),
    }
}

fn check_repository(path: &str, text: &str) -> Result<(), String> {
    let valid = !path.is_empty()
        && path.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && !part.starts_with(['.', '-', '_'])
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{text}`: a repository name is lowercase letters, digits, `.`, `_` and `-`, in parts separated by `/`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Location {
        Location::Layout(PathBuf::from("/plugins"))
    }

    #[test]
    fn full_and_short_names() {
        let r = Reference::parse("localhost:5000/steps/lint:^1.2", &local()).unwrap();
        assert_eq!(r.repository.host(), Some("localhost:5000"));
        assert_eq!(r.repository.path, "steps/lint");
        assert_eq!(r.version, Version::Tag("^1.2".into()));
        assert_eq!(r.to_string(), "localhost:5000/steps/lint:^1.2");

        let ns = Location::parse("ghcr.io/acme").unwrap();
        let r = Reference::parse("lint:1", &ns).unwrap();
        assert_eq!(r.to_string(), "ghcr.io/acme/lint:1");

        let r = Reference::parse("lint:1.0.0", &local()).unwrap();
        assert_eq!(r.repository.location, local());
        assert_eq!(r.repository.path, "lint");

        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("ghcr.io/acme/lint:1@{d}"), &local()).unwrap();
        assert_eq!(
            r.version,
            Version::Digest {
                digest: d,
                tag: Some("1".into())
            }
        );
    }

    #[test]
    fn refuses_what_cannot_be_pinned() {
        let e = Reference::parse("ghcr.io/acme/lint", &local()).unwrap_err();
        assert!(e.contains("names no version"), "{e}");
        let e = Reference::parse("ghcr.io/acme/lint@sha256:12", &local()).unwrap_err();
        assert!(e.contains("64 hex digits"), "{e}");
        let e = Reference::parse("ghcr.io/Acme/lint:1", &local()).unwrap_err();
        assert!(e.contains("lowercase"), "{e}");
        assert!(Location::parse("acme").is_err());
        assert_eq!(
            Location::parse("./store").unwrap(),
            Location::Layout("./store".into())
        );
    }
}
