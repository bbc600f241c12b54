//! What the server accepts as a commit id or a reference name before either reaches git,
//! a run record or a step's environment. Webhook bodies and API requests are the caller's
//! words: a commit id of `--output=/some/file` is an option to git, and a branch named
//! `$(curl …)` is a command to any shell that prints it unquoted.

/// A full object name as git prints it: 40 hex digits (SHA-1) or 64 (SHA-256), in lower
/// case, as forges send it. Abbreviations, revision expressions (`HEAD~1`, `a..b`) and
/// anything else are refused.
pub fn commit_id(text: &str) -> Result<&str, String> {
    let hex = text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if hex && (text.len() == 40 || text.len() == 64) {
        Ok(text)
    } else {
        Err(format!(
            "`{}` is not a commit id: a full object name is 40 or 64 lowercase hex digits",
            shown(text)
        ))
    }
}

/// A full reference (`refs/heads/main`, `refs/tags/v1`, `refs/pull/7/head`): git's
/// ref-format rules (`git check-ref-format`), and none of the characters a shell treats
/// specially.
pub fn full_ref(text: &str) -> Result<&str, String> {
    if !text.starts_with("refs/") {
        return Err(format!(
            "`{}` is not a full reference: it starts with `refs/`",
            shown(text)
        ));
    }
    ref_name(text)
}

/// A branch name (`main`, `release/1.x`): the rules of [`full_ref`], without `refs/`.
pub fn branch(text: &str) -> Result<&str, String> {
    ref_name(text)?;
    if text.starts_with('-') || text == "HEAD" {
        return Err(format!("`{}` is not a branch name", shown(text)));
    }
    Ok(text)
}

fn ref_name(text: &str) -> Result<&str, String> {
    let refused = |why: &str| Err(format!("`{}` is not a reference name: {why}", shown(text)));
    if text.is_empty() || text.len() > 255 {
        return refused("it is empty or longer than 255 bytes");
    }
    if let Some(c) = text.chars().find(|c| {
        c.is_control()
            || matches!(
                c,
                ' ' | '~'
                    | '^'
                    | ':'
                    | '?'
                    | '*'
                    | '['
                    | '\\'
                    | '$'
                    | '`'
                    | '\''
                    | '"'
                    | ';'
                    | '|'
                    | '&'
                    | '<'
                    | '>'
                    | '!'
            )
    }) {
        return refused(&format!(
            "it holds `{}`, which git or a shell reads as more than a name",
            c.escape_debug()
        ));
    }
    if text.contains("..") || text.contains("@{") || text == "@" {
        return refused("`..`, `@{` and a lone `@` are revision syntax");
    }
    if text.starts_with('/') || text.ends_with('/') || text.contains("//") {
        return refused("a `/` begins, ends or repeats in it");
    }
    if text.ends_with('.') {
        return refused("it ends with `.`");
    }
    if text
        .split('/')
        .any(|part| part.starts_with('.') || part.starts_with('-') || part.ends_with(".lock"))
    {
        return refused("a part of it starts with `.` or `-`, or ends with `.lock`");
    }
    Ok(text)
}

/// The caller's text in an error: control characters escaped, and cut short.
fn shown(text: &str) -> String {
    let mut shown: String = text.chars().take(80).flat_map(char::escape_debug).collect();
    if text.chars().count() > 80 {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_ids_are_full_lowercase_object_names() {
        let sha1 = "4cfb147e23b0bcc48ada60134342a5a0394ee6fb";
        assert!(commit_id(sha1).is_ok());
        assert!(commit_id(&"ab".repeat(32)).is_ok(), "SHA-256 repositories");
        for bad in [
            "--output=/tmp/x",
            "4cfb147",
            "HEAD",
            "HEAD~1",
            &sha1.to_uppercase(),
            &format!("{sha1}\n"),
            &format!("{sha1}..{sha1}"),
            "",
        ] {
            let err = commit_id(bad).unwrap_err();
            assert!(err.contains("not a commit id"), "{bad:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn references_follow_git_and_carry_nothing_a_shell_runs() {
        for good in [
            "refs/heads/main",
            "refs/heads/release/1.x",
            "refs/tags/v1.2.3",
            "refs/pull/7/head",
            "refs/merge-requests/3/head",
            "refs/heads/feature_x-y+z@2",
        ] {
            assert_eq!(full_ref(good), Ok(good));
        }
        for bad in [
            "refs/heads/$(curl evil)",
            "refs/heads/`id`",
            "refs/heads/a\nb",
            "refs/heads/a\u{1b}[31m",
            "refs/heads/a..b",
            "refs/heads/../../etc",
            "refs/heads/.hidden",
            "refs/heads/x.lock",
            "refs/heads/-x",
            "refs/heads/a b",
            "refs/heads/a@{1}",
            "refs/heads/",
            "refs/heads//x",
            "refs/heads/x.",
            "refs/heads/a;b",
            "refs/heads/a:b",
            "main",
            "--upload-pack=x",
        ] {
            assert!(full_ref(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(branch("release/1.x"), Ok("release/1.x"));
        for bad in ["-x", "--output=/tmp/x", "HEAD", "a..b", "$(id)"] {
            assert!(branch(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
