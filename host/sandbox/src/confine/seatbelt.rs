//! macOS: the Seatbelt profile (`sandbox-exec -p`) built from the same [`View`] as the
//! Linux mounts. Deny by default; reads of the view's paths, writes where it grants them,
//! network only to the proxy on loopback.

use super::{Access, Node, View};
use std::fmt::Write as _;

/// Quotes a path for the profile's Scheme syntax.
fn quoted(path: &std::path::Path) -> String {
    let text = path.to_string_lossy();
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The profile text. `tmp` is the private directory standing in for `/tmp` (`TMPDIR`).
pub fn profile(view: &View, tmp: &std::path::Path, proxy_port: Option<u16>) -> String {
    let mut p = String::from(
        "(version 1)\n(deny default)\n(allow process-fork)\n(allow signal (target children))\n\
         (allow sysctl-read)\n(allow mach-lookup)\n(allow ipc-posix-shm)\n\
         (allow file-read-metadata)\n(allow file-read* (literal \"/\"))\n\
         (allow file-read* file-write-data (literal \"/dev/null\") (literal \"/dev/zero\") \
         (literal \"/dev/random\") (literal \"/dev/urandom\") (literal \"/dev/tty\"))\n",
    );
    // macOS keeps its system under these, not /usr alone.
    for dir in [
        "/System",
        "/Library",
        "/private/etc",
        "/private/var/db/timezone",
    ] {
        let _ = writeln!(p, "(allow file-read* (subpath {}))", quoted(dir.as_ref()));
    }
    for node in &view.nodes {
        match node {
            Node::Bind { path, access, file } => {
                let filter = if *file { "literal" } else { "subpath" };
                let path = quoted(path);
                let _ = writeln!(p, "(allow file-read* process-exec ({filter} {path}))");
                if *access == Access::Write {
                    let _ = writeln!(p, "(allow file-write* ({filter} {path}))");
                }
            }
            Node::Symlink { path, .. } => {
                let _ = writeln!(p, "(allow file-read* (literal {}))", quoted(path));
            }
            // After the system binds it narrows: in Seatbelt the last matching rule wins.
            Node::Mask { path } => {
                let _ = writeln!(p, "(deny file-read* (literal {}))", quoted(path));
            }
            Node::MaskDir { path } => {
                let _ = writeln!(p, "(deny file-read* (subpath {}))", quoted(path));
            }
            // Linux-only nodes: macOS has its own /dev and no /proc.
            Node::Device { .. }
            | Node::Tmpfs { .. }
            | Node::Proc { .. }
            | Node::Devpts { .. }
            | Node::Replace { .. } => {}
        }
    }
    let tmp = quoted(tmp);
    let _ = writeln!(
        p,
        "(allow file-read* file-write* process-exec (subpath {tmp}))"
    );
    let _ = writeln!(p, "(allow network* (local ip \"localhost:*\"))");
    if let Some(port) = proxy_port {
        let _ = writeln!(
            p,
            "(allow network-outbound (remote ip \"localhost:{port}\"))"
        );
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_denies_by_default_and_grants_the_view() {
        let view = View {
            nodes: vec![
                Node::Bind {
                    path: "/usr".into(),
                    access: Access::Read,
                    file: false,
                },
                Node::Bind {
                    path: "/Users/me/proj \"x\"".into(),
                    access: Access::Write,
                    file: false,
                },
                Node::Bind {
                    path: "/Users/me/out".into(),
                    access: Access::Write,
                    file: true,
                },
                Node::Mask {
                    path: "/etc/master.passwd".into(),
                },
            ],
            proxy: true,
            ..View::default()
        };
        let text = profile(&view, "/private/tmp/ferry-1".as_ref(), Some(3128));
        assert!(text.starts_with("(version 1)\n(deny default)\n"), "{text}");
        assert!(text.contains("(allow file-read* process-exec (subpath \"/usr\"))"));
        assert!(!text.contains("(allow file-write* (subpath \"/usr\"))"));
        assert!(text.contains("(allow file-write* (subpath \"/Users/me/proj \\\"x\\\"\"))"));
        assert!(text.contains("(allow file-write* (literal \"/Users/me/out\"))"));
        assert!(text.contains("(deny file-read* (literal \"/etc/master.passwd\"))"));
        assert!(text.contains("(allow network-outbound (remote ip \"localhost:3128\"))"));
        assert!(!text.contains("(allow network-outbound (remote ip \"*"));
        let without = profile(&view, "/private/tmp/ferry-1".as_ref(), None);
        assert!(!without.contains("network-outbound"));
    }
}
