//! Golden tests: every `ui/*.yaml` is validated and the rendered diagnostics compared with
//! the `.err` file beside it. Run with `FERRY_BLESS=1` to rewrite the expectations, then
//! read the diff: blessing accepts whatever the parser says now. CI (`CI` set, as every CI
//! service sets it, and `cargo xtask test`) refuses to bless.

use ferry_model::{Source, parse};
use std::path::Path;

const BUILTINS: &[&str] = &["shell"];

#[test]
fn ui() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let bless = std::env::var_os("FERRY_BLESS").is_some();
    assert!(
        !(bless && std::env::var_os("CI").is_some()),
        "FERRY_BLESS is set in CI: it would rewrite the expectations instead of checking them"
    );
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "expected the golden cases in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(case).unwrap();
        let source = Source::new(format!("ui/{name}"), text);
        // Relative, as a user would type it, so the expectations hold on any machine.
        let actual = match parse(&source, Path::new("tests/ui"), BUILTINS) {
            Ok(pipeline) => format!("ok: {} job(s)\n", pipeline.jobs.len()),
            Err(report) => report.to_string(),
        };
        let expected_path = case.with_extension("err");
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "--- {name}: expected\n{expected}--- actual\n{actual}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\nrerun with FERRY_BLESS=1 to accept",
        failures.join("\n")
    );
}

/// Mutated pipelines must produce diagnostics, never a panic: deterministic byte edits of
/// every golden case, each parsed and rendered.
#[test]
fn mangled_input_never_panics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let mut seed: u64 = 0x5eed;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    const NOISE: &[&str] = &[
        "", ":", "- ", "{", "}", "[", "]", "\"", "'", "${{", "}}", "\n", "  ", "&a", "*a", "!!",
        "#", "é", "\t", "|",
    ];
    let mut cases = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let original = std::fs::read_to_string(&path).unwrap();
        for _ in 0..300 {
            let mut text = original.clone();
            for _ in 0..(1 + next() % 4) {
                let mut at = next() % (text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                let mut end = (at + next() % 6).min(text.len());
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.replace_range(at..end, NOISE[next() % NOISE.len()]);
            }
            let source = Source::new("mangled.yaml", text);
            if let Err(report) = parse(&source, Path::new("tests/ui"), BUILTINS) {
                assert!(!report.to_string().is_empty());
            }
            cases += 1;
        }
    }
    assert!(cases > 1000);
}
