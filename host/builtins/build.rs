//! Compiles the guest crates under `plugins/` to wasm32-wasip2 components.
//!
//! Built-in steps are embedded in the `ferry` binary so it works offline; test fixtures are
//! only named by path. One nested cargo invocation builds them all into `target/wasm`, which
//! every host profile shares, so switching between `cargo build`, `test` and `clippy` does not
//! rebuild the guests.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// (crate, file stem produced by cargo, constant name, embedded in the binary)
const GUESTS: &[(&str, &str, &str, bool)] = &[
    ("ferry-plugin-shell", "ferry_plugin_shell", "SHELL", true),
    ("ferry-plugin-lint", "ferry_plugin_lint", "LINT", true),
    ("ferry-plugin-test", "ferry_plugin_test", "TEST", true),
    (
        "ferry-plugin-checkout",
        "ferry_plugin_checkout",
        "CHECKOUT",
        true,
    ),
    ("ferry-plugin-image", "ferry_plugin_image", "IMAGE", true),
    ("ferry-plugin-deploy", "ferry_plugin_deploy", "DEPLOY", true),
    ("ferry-plugin-verify", "ferry_plugin_verify", "VERIFY", true),
    ("ferry-plugin-python", "ferry_plugin_python", "PYTHON", true),
    ("ferry-plugin-node", "ferry_plugin_node", "NODE", true),
    ("ferry-plugin-rust", "ferry_plugin_rust", "RUST", true),
    ("ferry-fixture-probe", "ferry_fixture_probe", "PROBE", false),
    (
        "ferry-fixture-granted",
        "ferry_fixture_granted",
        "GRANTED",
        false,
    ),
    (
        "ferry-fixture-command",
        "ferry-fixture-command",
        "COMMAND",
        false,
    ),
    ("ferry-fixture-sdk", "ferry_fixture_sdk", "SDK", false),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    for watched in ["plugins", "sdk/rust", "wit", "Cargo.lock", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    ensure_target();

    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                root.join(dir)
            }
        })
        .unwrap_or_else(|| root.join("target"))
        .join("wasm");

    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--profile", "plugin", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    if cfg_offline() {
        cmd.arg("--offline");
    }
    for (krate, ..) in GUESTS {
        cmd.args(["--package", krate]);
    }
    // Flags and wrappers meant for the host build (clippy, coverage, sanitizers) must not
    // leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_LLVM_COV",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("failed to run cargo for the guest plugins");
    if !status.success() {
        panic!("building the guest plugins for {TARGET} failed (see the cargo output above)");
    }

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let built = target_dir.join(TARGET).join("plugin");
    let mut code = String::new();
    let mut fixtures = String::new();
    for (krate, stem, constant, embedded) in GUESTS {
        let src = built.join(format!("{stem}.wasm"));
        let dst = out_dir.join(format!("{stem}.wasm"));
        copy_if_changed(&src, &dst);
        if *embedded {
            writeln!(
                code,
                "/// The `{krate}` component.\npub const {constant}: &[u8] = include_bytes!({:?});",
                dst.display().to_string()
            )
            .unwrap();
        } else {
            writeln!(
                fixtures,
                "    /// Path of the `{krate}` test component.\n    pub const {constant}: &str = {:?};",
                dst.display().to_string()
            )
            .unwrap();
        }
    }
    writeln!(
        code,
        "/// Guest test fixtures, by path (not embedded).\npub mod fixtures {{\n{fixtures}}}"
    )
    .unwrap();
    std::fs::write(out_dir.join("guests.rs"), code).unwrap();
}

fn cfg_offline() -> bool {
    env::var("CARGO_NET_OFFLINE").is_ok_and(|v| v == "true")
}

/// Installs the wasm target through rustup when the toolchain lacks it, so a fresh machine
/// with only rustup needs no manual step.
fn ensure_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = sysroot
        .as_ref()
        .is_some_and(|root| root.join("lib/rustlib").join(TARGET).is_dir());
    if installed {
        return;
    }
    println!(
        "cargo:warning=installing the {TARGET} target with rustup (needed for ferry's built-in steps)"
    );
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", TARGET]);
    if let Some(toolchain) = sysroot.as_ref().and_then(|r| r.file_name()) {
        rustup.arg("--toolchain").arg(toolchain);
    }
    match rustup.status() {
        Ok(status) if status.success() => {}
        _ => panic!(
            "the {TARGET} target is not installed and rustup could not add it\n\
             hint: run `rustup target add {TARGET}`"
        ),
    }
}

fn copy_if_changed(src: &Path, dst: &Path) {
    let new = std::fs::read(src)
        .unwrap_or_else(|e| panic!("expected guest component {}: {e}", src.display()));
    if std::fs::read(dst).ok().as_deref() != Some(&new[..]) {
        std::fs::write(dst, new).unwrap();
    }
}
