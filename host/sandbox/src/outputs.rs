//! Host side of `ferry:step/outputs`.

use crate::bindings::outputs;
use crate::state::StepState;

/// Most bytes of outputs one step may set; they travel through expressions, not files.
const MAX_OUTPUT_BYTES: usize = 1 << 20;

/// Largest file a step may keep with the run record.
const MAX_KEPT_BYTES: u64 = 100 << 20;

impl outputs::Host for StepState {
    fn set(&mut self, name: String, value: String) -> wasmtime::Result<Result<(), String>> {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Ok(Err(format!(
                "invalid output name `{name}`: use letters, digits, `-` and `_`"
            )));
        }
        let used: usize = self.outputs.iter().map(|(k, v)| k.len() + v.len()).sum();
        let replaced = self.outputs.get(&name).map_or(0, |v| name.len() + v.len());
        if used - replaced + name.len() + value.len() > MAX_OUTPUT_BYTES {
            return Ok(Err(format!(
                "outputs of a step are limited to {MAX_OUTPUT_BYTES} bytes in all; pass large data through files in the workspace"
            )));
        }
        self.outputs.insert(name, value);
        Ok(Ok(()))
    }

    fn add_path(&mut self, dir: String) -> wasmtime::Result<Result<(), String>> {
        if dir.trim().is_empty() || dir.contains(['\n', '\r', '\0']) {
            return Ok(Err(format!("`{}` is not a folder", dir.escape_debug())));
        }
        // The same file a host program appends to; the engine reads and checks it when the
        // step ends, whichever wrote it.
        Ok(append(&self.path_file, &format!("{dir}\n")))
    }

    fn set_env(&mut self, name: String, value: String) -> wasmtime::Result<Result<(), String>> {
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Ok(Err(format!(
                "`{}` is not a variable name: use letters, digits and `_`, not starting with a digit",
                name.escape_debug()
            )));
        }
        if value.contains('\0') {
            return Ok(Err(format!("the value of `{name}` holds a NUL byte")));
        }
        Ok(append(&self.env_file, &heredoc(&name, &value)))
    }

    fn keep(&mut self, path: String) -> wasmtime::Result<Result<(), String>> {
        let result = self.keep_file(&path);
        if result.is_ok() {
            self.log.line(
                ferry_engine::Level::Info,
                &format!("[ferry] kept `{path}` with the run record"),
            );
        }
        Ok(result)
    }
}

/// `name<<DELIMITER` lines, which carry any value, newlines included, with a delimiter the
/// value does not hold, compared as the reader compares lines (a trailing `\r` dropped).
fn heredoc(name: &str, value: &str) -> String {
    let mut delimiter = String::from("FERRY_EOF");
    while value.lines().any(|l| l.trim_end_matches('\r') == delimiter) {
        delimiter.push('_');
    }
    format!("{name}<<{delimiter}\n{value}\n{delimiter}\n")
}

/// Appends `text` to one of the step's files (`$FERRY_PATH`, `$FERRY_ENV`).
fn append(file: &std::path::Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot write `{}`: {e}", file.display()))
}

impl StepState {
    /// Copies a workspace file into the run record, refusing anything outside the workspace.
    fn keep_file(&self, path: &str) -> Result<(), String> {
        let rel = std::path::Path::new(path);
        let plain = !path.is_empty()
            && rel.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            });
        if !plain {
            return Err(format!(
                "`{path}` is not a path inside the workspace (no `..`, not absolute)"
            ));
        }
        let workspace = self
            .workspace
            .canonicalize()
            .map_err(|e| format!("the workspace is not available: {e}"))?;
        let source = workspace
            .join(rel)
            .canonicalize()
            .map_err(|e| format!("`{path}`: {e}"))?;
        if !source.starts_with(&workspace) {
            return Err(format!(
                "`{path}` leads outside the workspace through a symbolic link"
            ));
        }
        let meta = std::fs::metadata(&source).map_err(|e| format!("`{path}`: {e}"))?;
        if !meta.is_file() {
            return Err(format!("`{path}` is not a file"));
        }
        if meta.len() > MAX_KEPT_BYTES {
            return Err(format!(
                "`{path}` is {} bytes; files kept with the run record are limited to {MAX_KEPT_BYTES}",
                meta.len()
            ));
        }
        let target = self.kept_dir.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot keep `{path}`: {e}"))?;
        }
        std::fs::copy(&source, &target)
            .map(drop)
            .map_err(|e| format!("cannot keep `{path}`: {e}"))
    }
}

impl crate::bindings::types::Host for StepState {}

#[cfg(test)]
mod tests {
    use super::heredoc;

    /// What `set-env` writes reads back as the same value, whatever lines the value holds.
    #[test]
    fn a_value_never_closes_its_own_heredoc() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        for value in [
            "plain",
            "two\nlines",
            "a\nFERRY_EOF\nb",
            "a\nFERRY_EOF\r",
            "a\r\nFERRY_EOF\r\nFERRY_EOF_\nb",
        ] {
            std::fs::write(&file, heredoc("X", value)).unwrap();
            let read = ferry_engine::run::read_output_file(&file).unwrap();
            assert_eq!(read.len(), 1, "{value:?} gave {read:?}");
            // The reader splits lines as `str::lines` does: a `\r` before a line's end goes.
            let lines: Vec<&str> = value
                .split('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l))
                .collect();
            assert_eq!(read["X"], lines.join("\n"), "{value:?}");
        }
    }
}
