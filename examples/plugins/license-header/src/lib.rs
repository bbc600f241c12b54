//! license-header: fails when a source file lacks the licence header near its top.
//!
//! Walks the workspace (or the given `paths`), reads the first `lines` lines of every file
//! with one of the `extensions`, and annotates each file that does not contain `header`.

use ferry_sdk::log::{Annotation, group};
use ferry_sdk::{Capabilities, Error, Info, Input, Inputs, Step, info, set_output};
use std::path::{Path, PathBuf};

struct LicenseHeader;

const EXTENSIONS: &str =
    r#"["rs","py","js","mjs","cjs","ts","go","c","h","cc","cpp","hpp","java","kt","swift","sh"]"#;

impl Step for LicenseHeader {
    fn info() -> Info {
        Info::new(
            "license-header",
            env!("CARGO_PKG_VERSION"),
            "Checks that every source file carries the licence header within its first lines.",
        )
        .input(
            Input::string("header", "Text every file must contain near its top.")
                .default("SPDX-License-Identifier:"),
        )
        .input(Input::number("lines", "How many lines from the top to search.").default("10"))
        .input(
            Input::list(
                "paths",
                "Directories or files to check, relative to the workspace.",
            )
            .default(r#"["."]"#),
        )
        .input(Input::list("extensions", "File extensions to check.").default(EXTENSIONS))
        .input(Input::list(
            "exclude",
            "Path prefixes to skip, e.g. `vendor/` or `src/generated/`.",
        ))
        .output("checked", "How many files were checked.")
        .output("missing", "How many files lack the header.")
        .capabilities(Capabilities::read_workspace())
    }

    fn run(inputs: &Inputs) -> Result<(), Error> {
        let header = inputs.string("header")?;
        if header.trim().is_empty() {
            return Err(Error::InvalidInput(
                "input `header` must not be empty".into(),
            ));
        }
        let lines = inputs.number("lines")?;
        if lines < 1.0 {
            return Err(Error::InvalidInput(
                "input `lines` must be at least 1".into(),
            ));
        }
        let extensions = inputs.list("extensions")?;
        let exclude = inputs
            .optional("exclude")
            .map_or(Ok(Vec::new()), |_| inputs.list("exclude"))?;
        let mut files = Vec::new();
        for root in inputs.list("paths")? {
            let root = normalize(&root);
            let path = Path::new(&root);
            if !path.exists() {
                return Err(Error::InvalidInput(format!(
                    "path `{root}` does not exist in the workspace"
                )));
            }
            collect(path, &mut files)?;
        }
        files.retain(|f| {
            let name = display(f);
            let wanted = f
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.iter().any(|x| x == e));
            wanted
                && !exclude
                    .iter()
                    .any(|prefix| name.starts_with(normalize(prefix).as_str()))
        });
        files.sort();
        files.dedup();

        let mut missing = Vec::new();
        group(
            &format!("checking {} files for `{header}`", files.len()),
            || -> Result<(), Error> {
                for file in &files {
                    if !has_header(file, &header, lines as usize)? {
                        missing.push(display(file));
                    }
                }
                Ok(())
            },
        )?;
        for file in &missing {
            Annotation::error(format!("missing licence header `{header}`"))
                .rule("license-header")
                .at(file.clone(), Some(1), None)
                .emit();
        }
        set_output("checked", &files.len().to_string())?;
        set_output("missing", &missing.len().to_string())?;
        if missing.is_empty() {
            info!("all {} files carry `{header}`", files.len());
            Ok(())
        } else {
            Err(Error::failed(format!(
                "{} of {} files lack the licence header `{header}`",
                missing.len(),
                files.len()
            )))
        }
    }
}

/// `./src/` and `src` name the same place.
fn normalize(path: &str) -> String {
    let path = path.trim_start_matches("./");
    if path == "." {
        String::new()
    } else {
        path.to_string()
    }
}

fn display(path: &Path) -> String {
    path.strip_prefix(".")
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), Error> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_file() {
        files.push(path.to_path_buf());
    } else if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_name() == ".git" {
                continue;
            }
            collect(&entry.path(), files)?;
        }
    }
    // Symbolic links are not followed: they may point outside the workspace.
    Ok(())
}

/// True when `header` occurs in the first `lines` lines. Binary files pass: they have no
/// place for a header.
fn has_header(file: &Path, header: &str, lines: usize) -> Result<bool, Error> {
    let bytes =
        std::fs::read(file).map_err(|e| Error::failed(format!("{}: {e}", display(file))))?;
    if bytes.iter().take(8192).any(|b| *b == 0) {
        return Ok(true);
    }
    let text = String::from_utf8_lossy(&bytes);
    Ok(text.lines().take(lines).any(|line| line.contains(header)))
}

ferry_sdk::export!(LicenseHeader);
