//! Diagnostics that point into the pipeline file: `file:line:col`, a caret snippet, a hint.

use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a source file. Lines and columns count from 1; `offset` is in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub offset: usize,
    pub line: u32,
    pub col: u32,
    /// Width of the underlined text in characters (at least 1).
    pub len: u32,
}

impl Span {
    /// The span of `len` characters starting at byte `offset` of `text`.
    pub fn from_offset(text: &str, offset: usize, len: usize) -> Span {
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = text[line_start..offset].chars().count() + 1;
        Span {
            offset,
            line: line as u32,
            col: col as u32,
            len: len.max(1) as u32,
        }
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Lowercase, names things in backticks, no final period.
    pub message: String,
    pub span: Option<Span>,
    /// How to fix it, shown on a `hint:` line.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            span: None,
            hint: None,
        }
    }

    /// Something that works but is likely not what was meant.
    pub fn warning(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message)
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    pub fn at(mut self, span: Span) -> Self {
        self.span = Some(span);
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Renders the diagnostic the way compilers do:
    ///
    /// ```text
    /// error: unknown key `stpes` in job `build`
    ///   --> ferry.yaml:5:5
    ///    |
    ///  5 |     stpes:
    ///    |     ^^^^^
    ///    = hint: did you mean `steps`?
    /// ```
    pub fn render(&self, source: &Source) -> String {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = format!("{label}: {}\n", self.message);
        if let Some(span) = self.span.filter(|s| s.line > 0) {
            // Columns count from 1; a span made without a position must not underflow.
            let span = Span {
                col: span.col.max(1),
                ..span
            };
            let line_text = source
                .text
                .lines()
                .nth(span.line as usize - 1)
                .unwrap_or("");
            let number = span.line.to_string();
            let pad = " ".repeat(number.len());
            out += &format!(
                "{pad}--> {}:{}:{}\n",
                source.name.display(),
                span.line,
                span.col
            );
            out += &format!("{pad} |\n{number} | {line_text}\n");
            let indent: String = line_text
                .chars()
                .take(span.col as usize - 1)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let available = line_text
                .chars()
                .count()
                .saturating_sub(span.col as usize - 1);
            let width = (span.len as usize).min(available.max(1));
            out += &format!("{pad} | {indent}{}\n", "^".repeat(width));
            if let Some(hint) = &self.hint {
                out += &format!("{pad} = hint: {}\n", indent_hint(hint, &pad));
            }
        } else if let Some(hint) = &self.hint {
            out += &format!("  = hint: {}\n", indent_hint(hint, " "));
        }
        out
    }
}

fn indent_hint(hint: &str, pad: &str) -> String {
    hint.replace('\n', &format!("\n{pad}         "))
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A pipeline file's name (as the user should see it) and text.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: PathBuf,
    pub text: String,
}

impl Source {
    pub fn new(name: impl AsRef<Path>, text: impl Into<String>) -> Self {
        Source {
            name: name.as_ref().to_path_buf(),
            text: text.into(),
        }
    }

    /// `file:line:col` for a span.
    pub fn location(&self, span: Span) -> String {
        format!("{}:{}:{}", self.name.display(), span.line, span.col)
    }
}

/// Every problem found in a file, rendered together.
#[derive(Debug, Clone)]
pub struct Report {
    pub source: Source,
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    pub fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            f.write_str(&diagnostic.render(&self.source))?;
        }
        Ok(())
    }
}

impl std::error::Error for Report {}

/// Edit distance counting a swap of two neighbours as one edit (optimal string alignment),
/// for "did you mean" suggestions: `tset` is one edit from `test`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// The candidate closest to `word`, when it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("tset", "test"), 1);
        assert_eq!(edit_distance("stpes", "steps"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(suggest("tset", ["build", "test"]), Some("test"));
        assert_eq!(suggest("deploy", ["build", "test"]), None);
    }
}
