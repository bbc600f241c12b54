//! What the checkout refuses before git sees it: refs and URLs git would read as options,
//! transports that run commands, and paths outside the workspace.

use ferry_sdk::Error;

/// A branch, tag or sha: never an option, never a revision expression.
pub fn check_ref(r: &str) -> Result<(), Error> {
    let bad = r.starts_with('-')
        || r.contains("..")
        || r.contains("@{")
        || r.ends_with('/')
        || r.ends_with(".lock")
        || r.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if bad {
        Err(Error::InvalidInput(format!(
            "`ref: {r}` is not a branch, tag or commit name (refs may not start with `-` or contain spaces, `..`, `~`, `^`, `:`)"
        )))
    } else {
        Ok(())
    }
}

/// https, ssh (also `user@host:path`), git and file URLs, and local paths.
pub fn check_url(url: &str) -> Result<(), Error> {
    let refuse = |why: &str| {
        Err(Error::InvalidInput(format!(
            "`repository: {url}` is refused: {why}; use an https://, ssh://, git@host:path or file:// URL"
        )))
    };
    if url.starts_with('-') {
        return refuse("it would be read as an option");
    }
    if url.chars().any(|c| c.is_control()) {
        return refuse("it contains control characters");
    }
    if let Some((scheme, _)) = url.split_once("::") {
        return refuse(&format!("`{scheme}::` transports run commands"));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        return match scheme {
            "https" | "http" | "ssh" | "git" | "file" => Ok(()),
            other => refuse(&format!("the `{other}` scheme is not supported")),
        };
    }
    Ok(())
}

/// A directory inside the workspace.
pub fn check_path(path: &str) -> Result<String, Error> {
    let p = std::path::Path::new(path);
    if p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(Error::InvalidInput(format!(
            "`path: {path}` must stay inside the workspace"
        )));
    }
    Ok(if path.is_empty() {
        ".".into()
    } else {
        path.trim_end_matches('/').to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs() {
        for ok in ["main", "v1.2.0", "feature/x", "0a1b2c3d", "HEAD"] {
            assert!(check_ref(ok).is_ok(), "{ok}");
        }
        for bad in [
            "--upload-pack=touch /tmp/x",
            "-c",
            "a..b",
            "a b",
            "HEAD~1",
            "x^",
            "a:b",
            "@{-1}",
            "x.lock",
        ] {
            assert!(check_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls() {
        for ok in [
            "https://example.com/r.git",
            "ssh://git@example.com/r",
            "git@example.com:r.git",
            "file:///srv/r.git",
            "../r",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ext::sh -c touch% /tmp/pwned",
            "fd::17",
            "--upload-pack=x",
            "-u x",
            "ftp://x/r",
            "https://x\n-c",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(check_path("vendor/lib/").unwrap(), "vendor/lib");
        assert!(check_path("../x").is_err());
        assert!(check_path("/etc").is_err());
    }
}
