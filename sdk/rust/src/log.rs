// SPDX-License-Identifier: Apache-2.0
//! The step log: levels, groups and annotations. `println!` works too (it lands in the log
//! as standard output); these add levels and structure.

use crate::bindings::ferry::step::log as wit;

pub use wit::Level;

/// Writes one line at a level; prefer the [`info!`](crate::info), [`warn!`](crate::warn),
/// [`error!`](crate::error) and [`debug!`](crate::debug) macros.
pub fn write(level: Level, message: &str) {
    wit::write(level, message);
}

/// Runs `f` inside a collapsible group titled `title`.
pub fn group<T>(title: &str, f: impl FnOnce() -> T) -> T {
    wit::group_start(title);
    let out = f();
    wit::group_end();
    out
}

/// A finding pointing into the workspace, shown beside the log like a compiler diagnostic.
#[derive(Debug, Clone)]
pub struct Annotation {
    level: Level,
    message: String,
    rule: Option<String>,
    file: Option<String>,
    line: Option<u32>,
    column: Option<u32>,
}

impl Annotation {
    /// An error: something is wrong at this place.
    pub fn error(message: impl Into<String>) -> Self {
        Annotation::new(Level::Error, message)
    }

    /// A warning: worth a look; the step may still pass.
    pub fn warning(message: impl Into<String>) -> Self {
        Annotation::new(Level::Warn, message)
    }

    /// A notice: information tied to a place.
    pub fn notice(message: impl Into<String>) -> Self {
        Annotation::new(Level::Info, message)
    }

    fn new(level: Level, message: impl Into<String>) -> Self {
        Annotation {
            level,
            message: message.into(),
            rule: None,
            file: None,
            line: None,
            column: None,
        }
    }

    /// The rule or check that found it, e.g. `license-header`.
    pub fn rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = Some(rule.into());
        self
    }

    /// Where: a path relative to the workspace root, and a line and column counted from 1.
    pub fn at(mut self, file: impl Into<String>, line: Option<u32>, column: Option<u32>) -> Self {
        self.file = Some(file.into());
        self.line = line;
        self.column = column;
        self
    }

    /// Records the annotation.
    pub fn emit(self) {
        wit::annotate(&wit::Annotation {
            level: self.level,
            message: self.message,
            rule: self.rule,
            location: self.file.map(|file| wit::Location {
                file,
                line: self.line,
                column: self.column,
                end_line: None,
                end_column: None,
            }),
        });
    }
}

/// Logs at info level, with `format!` arguments.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, &format!($($arg)*)) };
}

/// Logs a warning, with `format!` arguments.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Warn, &format!($($arg)*)) };
}

/// Logs an error, with `format!` arguments.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Error, &format!($($arg)*)) };
}

/// Logs at debug level, with `format!` arguments.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Debug, &format!($($arg)*)) };
}
