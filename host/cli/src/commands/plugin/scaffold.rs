//! `ferry plugin new`: a step project that builds and passes its own tests as generated.

use super::project::{Language, RUST_SDK, STEP_WIT, write_files};
use std::path::Path;

const TESTS: &str = include_str!("../../../templates/ferry-tests.yaml");
const README: &str = include_str!("../../../templates/README.md");

const RUST: [(&str, &str); 2] = [
    (
        "Cargo.toml",
        include_str!("../../../templates/rust/Cargo.toml"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../templates/rust/src/lib.rs"),
    ),
];
const PYTHON: [(&str, &str); 2] = [
    (
        "pyproject.toml",
        include_str!("../../../templates/python/pyproject.toml"),
    ),
    ("app.py", include_str!("../../../templates/python/app.py")),
];
const JS: [(&str, &str); 2] = [
    (
        "package.json",
        include_str!("../../../templates/js/package.json"),
    ),
    (
        "src/index.js",
        include_str!("../../../templates/js/src/index.js"),
    ),
];

/// The Rust SDK's bindings read the contract from the repository's `wit/`; the vendored
/// copy carries its own.
const SDK_WIT_PATH: &str = r#"path: "../../wit","#;

/// Checks a step name: it becomes a package name in every language and a file name.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid step name\nhint: use lowercase letters, digits and single dashes, starting with a letter, e.g. `license-check`"
        ))
    }
}

/// Creates the project for step `name` in `dir`, which must not exist or be empty.
pub fn create(dir: &Path, name: &str, language: Language) -> Result<(), String> {
    check_name(name)?;
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(format!(
            "`{}` already exists and is not empty\nhint: choose another name or directory (`--dir`)",
            dir.display()
        ));
    }
    let ty = type_name(name);
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{Type}}", &ty)
            .replace("{{language}}", language_name(language))
    };
    let (template, ignore): (&[(&str, &str)], &str) = match language {
        Language::Rust => (&RUST, "/target\n/dist\n"),
        Language::Python => (&PYTHON, "/dist\n__pycache__/\n"),
        Language::JavaScript => (&JS, "/dist\n/node_modules\n"),
    };
    let mut files: Vec<(String, String)> = template
        .iter()
        .map(|(path, text)| (path.to_string(), fill(text)))
        .collect();
    files.push(("ferry-tests.yaml".into(), TESTS.into()));
    files.push(("README.md".into(), fill(README)));
    files.push((".gitignore".into(), ignore.into()));
    if language == Language::Rust {
        files.extend(vendored_rust_sdk()?);
        files.push(("Cargo.lock".into(), rust_lock(name)?));
    }
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    write_files(dir, &files)?;
    if language == Language::Rust {
        // The lock lists what ferry's own build needed of each dependency, which features
        // used elsewhere in ferry can widen; cargo trims it to this project, offline and
        // keeping every version. Without cargo the first build does the same.
        let _ = std::process::Command::new("cargo")
            .args(["metadata", "--offline", "--quiet", "--format-version", "1"])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    Ok(())
}

/// `vendor/ferry-sdk`: the SDK crate with the contract beside it, so that `cargo build`
/// works offline from the SDK's side and the project pins the contract it was built for.
fn vendored_rust_sdk() -> Result<Vec<(String, String)>, String> {
    let manifest = format!(
        r#"[package]
name = "ferry-sdk"
version = "{version}"
edition = "2024"
description = "Write ferry pipeline steps in Rust (vendored by `ferry plugin new`)"
license = "Apache-2.0"
publish = false

[dependencies]
wit-bindgen = {{ version = "0.61", default-features = false, features = ["macros", "realloc", "std"] }}
"#,
        version = env!("CARGO_PKG_VERSION")
    );
    let mut files = vec![
        ("vendor/ferry-sdk/Cargo.toml".to_string(), manifest),
        ("vendor/ferry-sdk/wit/step.wit".into(), STEP_WIT.into()),
    ];
    for (name, text) in RUST_SDK {
        let text = if name == "lib.rs" {
            if !text.contains(SDK_WIT_PATH) {
                return Err(format!(
                    "internal error: the Rust SDK no longer reads its WIT from {SDK_WIT_PATH}"
                ));
            }
            text.replace(SDK_WIT_PATH, r#"path: "wit","#)
        } else {
            text.to_string()
        };
        files.push((format!("vendor/ferry-sdk/src/{name}"), text));
    }
    Ok(files)
}

/// The lockfile ferry itself was built with: its `ferry-sdk` entry names the exact versions
/// of the SDK's dependencies.
const WORKSPACE_LOCK: &str = include_str!("../../../../../Cargo.lock");

/// A `Cargo.lock` as cargo reads it.
#[derive(serde::Deserialize)]
struct Lock {
    package: Vec<Locked>,
}

#[derive(serde::Deserialize, Clone)]
struct Locked {
    name: String,
    version: String,
    source: Option<String>,
    checksum: Option<String>,
    #[serde(default)]
    dependencies: Vec<String>,
}

/// `Cargo.lock` for a new project: the project, the vendored SDK, and the SDK's
/// dependencies at the versions ferry was built and tested with. With it cargo resolves
/// nothing, so a new project builds offline from crates already downloaded, and every
/// project on a machine shares one compiled copy of them.
fn rust_lock(name: &str) -> Result<String, String> {
    let internal = |why: String| format!("internal error: ferry's own Cargo.lock {why}");
    let lock: Lock = toml::from_str(WORKSPACE_LOCK).map_err(|e| internal(e.to_string()))?;
    let find = |dependency: &str| -> Result<&Locked, String> {
        // A dependency is `name`, or `name version` when several versions are locked.
        let mut parts = dependency.split(' ');
        let (name, version) = (parts.next().unwrap_or_default(), parts.next());
        let mut found = lock
            .package
            .iter()
            .filter(|p| p.name == name && version.is_none_or(|v| p.version == v));
        match (found.next(), found.next()) {
            (Some(p), None) => Ok(p),
            _ => Err(internal(format!("has no single entry for `{dependency}`"))),
        }
    };
    let sdk = find("ferry-sdk")?;
    let mut packages: Vec<Locked> = vec![
        Locked {
            name: name.to_string(),
            version: "0.1.0".into(),
            source: None,
            checksum: None,
            dependencies: vec!["ferry-sdk".into()],
        },
        Locked {
            version: env!("CARGO_PKG_VERSION").into(),
            ..sdk.clone()
        },
    ];
    let mut todo: Vec<&str> = sdk.dependencies.iter().map(String::as_str).collect();
    while let Some(dependency) = todo.pop() {
        let p = find(dependency)?;
        if packages
            .iter()
            .any(|q| q.name == p.name && q.version == p.version)
        {
            continue;
        }
        todo.extend(p.dependencies.iter().map(String::as_str));
        packages.push(p.clone());
    }
    packages.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    let quoted = |s: &str| format!("\"{s}\"");
    let mut out = String::from(
        "# This file is automatically @generated by Cargo.\n# It is not intended for manual editing.\nversion = 4\n",
    );
    for p in &packages {
        out.push_str(&format!(
            "\n[[package]]\nname = {}\nversion = {}\n",
            quoted(&p.name),
            quoted(&p.version)
        ));
        if let Some(source) = &p.source {
            out.push_str(&format!("source = {}\n", quoted(source)));
        }
        if let Some(checksum) = &p.checksum {
            out.push_str(&format!("checksum = {}\n", quoted(checksum)));
        }
        if !p.dependencies.is_empty() {
            out.push_str("dependencies = [\n");
            for d in &p.dependencies {
                out.push_str(&format!(" {},\n", quoted(d)));
            }
            out.push_str("]\n");
        }
    }
    Ok(out)
}

fn language_name(language: Language) -> &'static str {
    match language {
        Language::Rust => "Rust",
        Language::Python => "Python",
        Language::JavaScript => "JavaScript",
    }
}

/// `license-check` → `LicenseCheck`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("license-check").is_ok());
        assert!(check_name("a1").is_ok());
        for bad in ["", "1a", "A", "a_b", "a-", "a--b", "a b", "a/b"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(type_name("license-check"), "LicenseCheck");
        assert_eq!(type_name("demo2"), "Demo2");
    }

    #[test]
    fn vendored_sdk_reads_its_own_wit() {
        let files = vendored_rust_sdk().unwrap();
        let lib = &files.iter().find(|(p, _)| p.ends_with("lib.rs")).unwrap().1;
        assert!(lib.contains(r#"path: "wit","#));
        assert!(
            files
                .iter()
                .any(|(p, t)| p.ends_with("step.wit") && t == STEP_WIT)
        );
    }
}
