//! Colours, only on terminals and never with `NO_COLOR`.

use std::io::IsTerminal;

#[derive(Clone, Copy)]
pub struct Style {
    color: bool,
}

impl Style {
    fn new(terminal: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        Style {
            color: terminal && !no_color && !dumb,
        }
    }

    pub fn stdout() -> Self {
        Style::new(std::io::stdout().is_terminal())
    }

    pub fn stderr() -> Self {
        Style::new(std::io::stderr().is_terminal())
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    pub fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
    pub fn red(&self, t: &str) -> String {
        self.paint("31", t)
    }
    pub fn green(&self, t: &str) -> String {
        self.paint("32", t)
    }
    pub fn yellow(&self, t: &str) -> String {
        self.paint("33", t)
    }
    pub fn cyan(&self, t: &str) -> String {
        self.paint("36", t)
    }

    /// `error: message`, with a following `hint:` line coloured too.
    pub fn error(&self, message: &str) -> String {
        self.labelled("1;31", "error:", message)
    }

    /// `warning: message`, with a following `hint:` line coloured too.
    pub fn warning(&self, message: &str) -> String {
        self.labelled("1;33", "warning:", message)
    }

    fn labelled(&self, color: &str, label: &str, message: &str) -> String {
        let mut lines = message.lines();
        let mut out = format!(
            "{} {}",
            self.paint(color, label),
            lines.next().unwrap_or("")
        );
        for line in lines {
            out.push('\n');
            match line.strip_prefix("hint:") {
                Some(rest) => out.push_str(&format!("{}{rest}", self.paint("1;36", "hint:"))),
                None => out.push_str(line),
            }
        }
        out
    }

    /// A rendered diagnostic with its header and caret line highlighted.
    pub fn diagnostic(&self, rendered: &str) -> String {
        if !self.color {
            return rendered.trim_end().to_string();
        }
        rendered
            .trim_end()
            .lines()
            .map(|line| {
                if let Some(rest) = line.strip_prefix("error:") {
                    format!("{}{}", self.paint("1;31", "error:"), self.bold(rest))
                } else if line.trim_start().starts_with("| ")
                    && line
                        .trim()
                        .trim_start_matches('|')
                        .trim()
                        .chars()
                        .all(|c| c == '^')
                    && line.contains('^')
                {
                    self.paint("1;31", line)
                } else if line.contains("= hint:") {
                    self.paint("36", line)
                } else if line.trim_start().starts_with("-->") {
                    self.paint("34", line)
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
