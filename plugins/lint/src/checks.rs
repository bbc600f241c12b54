//! Checks that need no tool on the host: they read the workspace themselves.

use crate::finding::{Finding, Severity};

/// The built-in checks, by the names `checks:` takes.
pub const CHECKS: [&str; 6] = [
    "whitespace",
    "final-newline",
    "conflict-markers",
    "large-files",
    "syntax",
    "secrets",
];

/// What the checks look at.
pub struct Options<'a> {
    pub checks: &'a [String],
    pub max_size: u64,
}

/// Runs the enabled checks on one file (path relative to the workspace, its bytes).
pub fn check_file(path: &str, bytes: &[u8], options: &Options, out: &mut Vec<Finding>) {
    let on = |name: &str| options.checks.iter().any(|c| c == name);
    if on("large-files") && bytes.len() as u64 > options.max_size {
        out.push(
            Finding::new(
                Severity::Error,
                "large-file",
                format!(
                    "{} bytes, over the limit of {} (max-size)",
                    bytes.len(),
                    options.max_size
                ),
            )
            .at(path, None, None),
        );
    }
    // Binary files have no lines to check.
    if bytes.iter().take(8192).any(|b| *b == 0) {
        return;
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if on("whitespace") {
        for (i, line) in text.lines().enumerate() {
            let trimmed = line.trim_end_matches([' ', '\t']);
            if trimmed.len() != line.len() {
                out.push(
                    Finding::new(
                        Severity::Warning,
                        "trailing-whitespace",
                        "trailing whitespace",
                    )
                    .at(
                        path,
                        Some(i as u32 + 1),
                        Some(trimmed.chars().count() as u32 + 1),
                    ),
                );
            }
        }
    }
    if on("final-newline") && !text.is_empty() && !text.ends_with('\n') {
        out.push(
            Finding::new(
                Severity::Warning,
                "final-newline",
                "no newline at the end of the file",
            )
            .at(path, Some(text.lines().count() as u32), None),
        );
    }
    if on("conflict-markers") {
        conflict_markers(path, text, out);
    }
    if on("syntax") {
        syntax(path, text, out);
    }
    if on("secrets") {
        secrets(path, text, out);
    }
}

/// `<<<<<<<`, `=======` and `>>>>>>>` left by a merge. `=======` alone is a Markdown
/// underline, so it counts only after an opening marker.
fn conflict_markers(path: &str, text: &str, out: &mut Vec<Finding>) {
    let mut open = false;
    for (i, line) in text.lines().enumerate() {
        let marker = if line.starts_with("<<<<<<< ") || line == "<<<<<<<" {
            open = true;
            true
        } else if open && line == "=======" {
            true
        } else if open && (line.starts_with(">>>>>>> ") || line == ">>>>>>>") {
            open = false;
            true
        } else {
            false
        };
        if marker {
            out.push(
                Finding::new(
                    Severity::Error,
                    "conflict-marker",
                    format!("merge conflict marker `{}`", &line[..7]),
                )
                .at(path, Some(i as u32 + 1), Some(1)),
            );
        }
    }
}

/// JSON, YAML and TOML files must parse.
fn syntax(path: &str, text: &str, out: &mut Vec<Finding>) {
    let ext = path
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let problem: Option<(String, &str, Option<u32>, Option<u32>)> = match ext.as_str() {
        "json" => serde_json::from_str::<serde_json::Value>(text)
            .err()
            .map(|e| {
                (
                    e.to_string(),
                    "invalid-json",
                    Some(e.line() as u32),
                    Some(e.column() as u32),
                )
            }),
        "yaml" | "yml" => yaml_error(text).map(|(m, l, c)| (m, "invalid-yaml", Some(l), Some(c))),
        "toml" => text.parse::<toml::Table>().err().map(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            let message = e.message().to_string();
            (message, "invalid-toml", Some(line), Some(col))
        }),
        _ => None,
    };
    if let Some((message, rule, line, column)) = problem {
        out.push(Finding::new(Severity::Error, rule, message).at(path, line, column));
    }
}

fn yaml_error(text: &str) -> Option<(String, u32, u32)> {
    let mut parser = yaml_rust2::parser::Parser::new_from_str(text);
    loop {
        match parser.next_token() {
            Ok((yaml_rust2::Event::StreamEnd, _)) => return None,
            Ok(_) => {}
            Err(e) => {
                let m = e.marker();
                return Some((e.info().to_string(), m.line() as u32, m.col() as u32 + 1));
            }
        }
    }
}

fn line_col(text: &str, offset: usize) -> (u32, u32) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() as u32 + 1;
    let col = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count() as u32
        + 1;
    (line, col)
}

/// A token format: its fixed prefix, what it is, and how many characters that pass the
/// test must follow the prefix.
type TokenFormat = (&'static str, &'static str, usize, fn(char) -> bool);

const TOKENS: [TokenFormat; 9] = [
    ("AKIA", "AWS access key id", 16, |c| {
        c.is_ascii_uppercase() || c.is_ascii_digit()
    }),
    ("ghp_", "GitHub personal access token", 36, |c| {
        c.is_ascii_alphanumeric()
    }),
    ("gho_", "GitHub OAuth token", 36, |c| {
        c.is_ascii_alphanumeric()
    }),
    ("ghs_", "GitHub app token", 36, |c| {
        c.is_ascii_alphanumeric()
    }),
    ("github_pat_", "GitHub fine-grained token", 40, |c| {
        c.is_ascii_alphanumeric() || c == '_'
    }),
    ("glpat-", "GitLab personal access token", 20, |c| {
        c.is_ascii_alphanumeric() || c == '-' || c == '_'
    }),
    ("xoxb-", "Slack bot token", 20, |c| {
        c.is_ascii_alphanumeric() || c == '-'
    }),
    ("sk_live_", "Stripe live secret key", 24, |c| {
        c.is_ascii_alphanumeric()
    }),
    ("AIza", "Google API key", 35, |c| {
        c.is_ascii_alphanumeric() || c == '-' || c == '_'
    }),
];

/// Private keys and common token formats. The finding names the kind and the place, never
/// the value.
fn secrets(path: &str, text: &str, out: &mut Vec<Finding>) {
    for (i, line) in text.lines().enumerate() {
        let mut hit = |kind: &str, col: usize| {
            out.push(
                Finding::new(
                    Severity::Error,
                    "secret",
                    format!("likely {kind} committed"),
                )
                .at(path, Some(i as u32 + 1), Some(col as u32 + 1)),
            );
        };
        if let Some(col) = line.find("-----BEGIN ")
            && line[col..].contains("PRIVATE KEY-----")
        {
            hit("private key", col);
            continue;
        }
        for (prefix, kind, len, allowed) in TOKENS {
            let mut from = 0;
            while let Some(found) = line[from..].find(prefix) {
                let start = from + found;
                let body: String = line[start + prefix.len()..]
                    .chars()
                    .take_while(|c| allowed(*c))
                    .collect();
                // Not glued to a longer word before it, and long enough to be a token.
                let standalone = line[..start]
                    .chars()
                    .next_back()
                    .is_none_or(|c| !c.is_ascii_alphanumeric());
                if standalone && body.len() >= len {
                    hit(kind, start);
                    break;
                }
                from = start + prefix.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(check: &str, path: &str, text: &str) -> Vec<String> {
        let checks = vec![check.to_string()];
        let mut out = Vec::new();
        check_file(
            path,
            text.as_bytes(),
            &Options {
                checks: &checks,
                max_size: 64,
            },
            &mut out,
        );
        out.iter()
            .map(|f| {
                format!(
                    "{}:{} {} {}",
                    f.line.unwrap_or(0),
                    f.column.unwrap_or(0),
                    f.rule,
                    f.message
                )
            })
            .collect()
    }

    #[test]
    fn whitespace() {
        assert_eq!(
            run("whitespace", "a.txt", "ok\nbad  \n\tfine\n"),
            ["2:4 trailing-whitespace trailing whitespace"]
        );
        assert!(run("whitespace", "a.txt", "clean\n").is_empty());
    }

    #[test]
    fn final_newline() {
        assert_eq!(
            run("final-newline", "a.txt", "a\nb"),
            ["2:0 final-newline no newline at the end of the file"]
        );
        assert!(run("final-newline", "a.txt", "a\nb\n").is_empty());
        assert!(run("final-newline", "empty.txt", "").is_empty());
    }

    #[test]
    fn conflict_markers() {
        let text = "a\n<<<<<<< HEAD\nours\n=======\ntheirs\n>>>>>>> branch\n";
        assert_eq!(run("conflict-markers", "a.rs", text).len(), 3);
        // A Markdown heading underline is not a marker.
        assert!(run("conflict-markers", "README.md", "Title\n=======\n").is_empty());
    }

    #[test]
    fn large_files() {
        assert_eq!(run("large-files", "big.bin", &"x".repeat(65)).len(), 1);
        assert!(run("large-files", "small.bin", &"x".repeat(64)).is_empty());
    }

    #[test]
    fn syntax() {
        assert_eq!(
            run("syntax", "a.json", "{\"a\": 1,}"),
            ["1:9 invalid-json trailing comma at line 1 column 9"]
        );
        assert!(run("syntax", "a.json", "{\"a\": 1}").is_empty());
        let yaml = run("syntax", "a.yaml", "a: [1, 2\nb: 3\n");
        assert_eq!(yaml.len(), 1, "{yaml:?}");
        assert!(yaml[0].contains("invalid-yaml"));
        assert!(run("syntax", "a.yml", "a: [1, 2]\n").is_empty());
        let toml = run("syntax", "Cargo.toml", "[package]\nname = \n");
        assert_eq!(toml.len(), 1, "{toml:?}");
        assert!(toml[0].starts_with("2:"), "{toml:?}");
        assert!(run("syntax", "Cargo.toml", "[package]\nname = \"x\"\n").is_empty());
        assert!(run("syntax", "notes.txt", "{{{").is_empty());
    }

    #[test]
    fn secrets() {
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbg==\n";
        assert_eq!(
            run("secrets", "id", key),
            ["1:1 secret likely private key committed"]
        );
        let token = format!("token = \"ghp_{}\"\n", "a1B2".repeat(9));
        let found = run("secrets", "ci.env", &token);
        assert_eq!(
            found,
            ["1:10 secret likely GitHub personal access token committed"]
        );
        assert!(!found[0].contains("a1B2"), "the value must not be shown");
        assert_eq!(run("secrets", "aws", "AKIAIOSFODNN7EXAMPLE\n").len(), 1);
        // Too short, or part of a longer word: not a token.
        assert!(run("secrets", "a", "ghp_short\nxAKIAIOSFODNN7EXAMPLE\n").is_empty());
        assert!(run("secrets", "doc.md", "-----BEGIN PUBLIC KEY-----\n").is_empty());
    }
}
