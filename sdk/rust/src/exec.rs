// SPDX-License-Identifier: Apache-2.0
//! Running host programs the step was granted (`permissions: { exec: [...] }`), without a
//! shell: arguments reach the program exactly as given.

use crate::Error;
use crate::bindings::ferry::step::process as wit;

/// A program to run, built like `std::process::Command`.
#[derive(Debug, Clone)]
pub struct Command {
    cmd: wit::Command,
}

impl Command {
    /// A granted program, by name (`git`, not `/usr/bin/git`).
    pub fn new(program: &str) -> Self {
        Command {
            cmd: wit::Command {
                program: program.into(),
                args: Vec::new(),
                cwd: None,
                env: Vec::new(),
                stdin: None,
                echo: true,
            },
        }
    }

    /// Adds one argument, passed verbatim.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.cmd.args.push(arg.into());
        self
    }

    /// Adds arguments, each passed verbatim.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.cmd.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Working directory relative to the workspace root.
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.cmd.cwd = Some(dir.into());
        self
    }

    /// Sets a variable for the program, on top of what the step itself sees.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.cmd.env.push((name.into(), value.into()));
        self
    }

    /// Bytes for the program's standard input.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.cmd.stdin = Some(bytes.into());
        self
    }

    /// Keeps the program's output out of the step log (it is still returned).
    pub fn quiet(mut self) -> Self {
        self.cmd.echo = false;
        self
    }

    /// Runs the program to completion. A program that was not granted is
    /// [`Error::Denied`]; a failure to start it is [`Error::Failed`].
    pub fn run(self) -> Result<Output, Error> {
        let program = self.cmd.program.clone();
        wit::run(&self.cmd)
            .map(|o| Output {
                program,
                exit_code: o.exit_code,
                stdout: o.stdout,
                stderr: o.stderr,
                truncated: o.truncated,
            })
            .map_err(|e| match e {
                wit::Error::Denied(m) => Error::Denied(m),
                wit::Error::NotFound(m) | wit::Error::Invalid(m) | wit::Error::SpawnFailed(m) => {
                    Error::Failed(m)
                }
            })
    }
}

/// What a finished program produced.
#[derive(Debug, Clone)]
pub struct Output {
    /// The program's name as given to [`Command::new`].
    pub program: String,
    /// `None` when a signal ended the program.
    pub exit_code: Option<i32>,
    /// Standard output, up to the host's cap.
    pub stdout: Vec<u8>,
    /// Standard error, up to the host's cap.
    pub stderr: Vec<u8>,
    /// True when a stream was cut at the host's cap.
    pub truncated: bool,
}

impl Output {
    /// True when the program exited with code 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// Standard output as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Succeeds when the program exited with 0; otherwise a failure naming it.
    pub fn check(self) -> Result<Output, Error> {
        match self.exit_code {
            Some(0) => Ok(self),
            Some(code) => Err(Error::Failed(format!(
                "`{}` exited with code {code}",
                self.program
            ))),
            None => Err(Error::Failed(format!(
                "`{}` was killed by a signal",
                self.program
            ))),
        }
    }
}

/// Splits a command line given as an input (`cargo clippy -- -D warnings`) into a program
/// and its arguments: words separated by whitespace, with '…' and "…" quoting. There is no
/// shell: `$VAR`, `*`, `;` and `|` are plain characters.
pub fn split_command_line(command: &str) -> Result<Vec<String>, Error> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut in_word = false;
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(Error::InvalidInput(format!(
            "`command` has an unclosed quote: {command}"
        )));
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err(Error::InvalidInput("`command` is empty".into()));
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_without_a_shell() {
        assert_eq!(
            split_command_line(r#"cargo clippy -- -D "warnings here" 'a b'"#).unwrap(),
            ["cargo", "clippy", "--", "-D", "warnings here", "a b"]
        );
        assert_eq!(split_command_line("echo ''").unwrap(), ["echo", ""]);
        assert!(split_command_line("  ").is_err());
        assert!(split_command_line("echo 'open").is_err());
        // `$HOME`, `*` and `;` are just characters.
        assert_eq!(
            split_command_line("echo $HOME *; rm").unwrap(),
            ["echo", "$HOME", "*;", "rm"]
        );
    }
}
