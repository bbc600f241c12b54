//! A problem found in the workspace, whoever found it.

/// How serious a finding is; ordered so that `fail-on` can compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Notice,
    Warning,
    Error,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    /// A tool's own word for a level: `error`, `warn`, `warning`, `info`, `note`, `style`...
    pub fn from_word(word: &str) -> Option<Severity> {
        match word.to_ascii_lowercase().as_str() {
            "error" | "err" | "fatal" | "failure" => Some(Severity::Error),
            "warning" | "warn" => Some(Severity::Warning),
            "info" | "note" | "notice" | "help" | "style" | "hint" => Some(Severity::Notice),
            _ => None,
        }
    }
}

/// One finding, with its place in the workspace when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub rule: String,
    pub message: String,
    /// Relative to the workspace root, with `/` separators.
    pub file: Option<String>,
    pub line: Option<u32>,
    pub column: Option<u32>,
}

impl Finding {
    pub fn new(severity: Severity, rule: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            severity,
            rule: rule.into(),
            message: message.into(),
            file: None,
            line: None,
            column: None,
        }
    }

    pub fn at(mut self, file: impl Into<String>, line: Option<u32>, column: Option<u32>) -> Self {
        self.file = Some(file.into());
        self.line = line;
        self.column = column;
        self
    }
}
