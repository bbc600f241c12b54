//! Project tasks, so that a fresh machine with only rustup needs two commands:
//!
//! - `cargo xtask demo`: set up and run the example pipeline
//! - `cargo xtask test`: set up, then formatting, clippy and every test
//! - `cargo xtask bench`: the benchmark of ferry's per-step overhead (release build)
//! - `cargo xtask setup`: only the setup: wasm target, lint tools, the Python and
//!   JavaScript component toolchains in `target/toolchains/` (pinned in `xtask/toolchains/`),
//!   and skopeo, umoci, docker-registry, buildah and busybox from Debian for the image tests
//! - `cargo xtask js-types`: regenerate `sdk/js/types/` from the WIT with jco

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const WASM_TARGET: &str = "wasm32-wasip2";

/// Targets whose confinement code (`host/sandbox/src/confine/`) the tests type-check here:
/// the Windows job object and the macOS Seatbelt launcher run on no machine CI has.
const CHECK_TARGETS: [&str; 2] = ["x86_64-pc-windows-gnu", "aarch64-apple-darwin"];

fn main() -> ExitCode {
    // `cargo xtask demo -- --output plain` and `cargo xtask demo --output plain` alike.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--").collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(&args[1..]),
        Some("test") => test(),
        Some("bench") => bench(&args[1..]),
        Some("setup") => setup(),
        Some("js-types") => js_types(Path::new("sdk/js/types")),
        _ => {
            eprintln!("usage: cargo xtask <demo|test|bench|setup|js-types>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything the tests need: the Rust setup, the component toolchains, and the OCI tools
/// the image tests check ferry's output with.
fn setup() -> Result<(), String> {
    rust_setup()?;
    python_toolchain()?;
    node_toolchain()?;
    system_tools()
}

/// Tools ferry did not write, that the tests check it against: skopeo and umoci read the
/// images, the CNCF distribution server (`docker-registry`) is the registry the tests push
/// to on loopback, git serves `ferry serve` its repositories, headless Chromium drives the
/// dashboard, buildah runs a Dockerfile's `RUN` in the sandbox, PostgreSQL is the service a
/// job's steps test against, and btrfs is a file system with reflinks. From Debian's
/// packages, as root or through `sudo -n`.
fn system_tools() -> Result<(), String> {
    const TOOLS: [(&str, &str); 10] = [
        // The C compiler build scripts of the Windows check need (wasmtime's fiber).
        ("x86_64-w64-mingw32-gcc", "gcc-mingw-w64-x86-64"),
        ("skopeo", "skopeo"),
        ("umoci", "umoci"),
        ("docker-registry", "docker-registry"),
        ("git", "git"),
        ("chromium", "chromium"),
        // The container engine `RUN` goes to, and a static shell for the images it builds.
        ("buildah", "buildah"),
        ("busybox", "busybox-static"),
        // The database a job's `services:` are tested with (server and client).
        ("psql", "postgresql"),
        // A copy-on-write file system, on a loop device, for the cache's reflinked restore.
        ("mkfs.btrfs", "btrfs-progs"),
    ];
    let missing: Vec<&str> = TOOLS
        .iter()
        // busybox answers `--help`, not `--version`.
        .filter(|(program, _)| {
            output(program, &["--version"]).is_none() && output(program, &["--help"]).is_none()
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let hint = format!(
        "the tests need {}; install them with your package manager (Debian: `apt-get install {}`)",
        missing.join(", "),
        missing.join(" ")
    );
    if output("apt-get", &["--version"]).is_none() {
        return Err(hint);
    }
    let root = output("id", &["-u"]).is_some_and(|u| u.trim() == "0");
    let apt = |args: &[&str]| -> Result<(), String> {
        let mut full: Vec<&str> = Vec::new();
        if !root {
            full.extend(["sudo", "-n"]);
        }
        full.push("apt-get");
        full.extend(args);
        run(full[0], &full[1..])
    };
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(&missing);
    if apt(&install).is_err() {
        apt(&["update", "-q"]).map_err(|e| format!("{e}\n{hint}"))?;
        apt(&install).map_err(|e| format!("{e}\n{hint}"))?;
    }
    Ok(())
}

/// Installs what rustup does not install by itself: the wasm target and the lint tools.
fn rust_setup() -> Result<(), String> {
    add_targets(&[WASM_TARGET])?;
    let components = output("rustup", &["component", "list", "--installed"]).unwrap_or_default();
    for component in ["rustfmt", "clippy"] {
        if !components.lines().any(|l| l.starts_with(component)) {
            run("rustup", &["component", "add", component])?;
        }
    }
    Ok(())
}

/// Adds the standard libraries of `targets` that rustup lacks.
fn add_targets(targets: &[&str]) -> Result<(), String> {
    let installed = output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    for target in targets {
        if !installed.lines().any(|l| l.trim() == *target) {
            run("rustup", &["target", "add", target])?;
        }
    }
    Ok(())
}

/// Where setup installs the component toolchains; tests put their `bin` folders first on
/// `PATH` for the `ferry` they start.
fn toolchains() -> PathBuf {
    Path::new("target").join("toolchains")
}

/// componentize-py in a virtualenv, reinstalled when `requirements.txt` changes.
fn python_toolchain() -> Result<(), String> {
    let pinned = std::fs::read_to_string("xtask/toolchains/requirements.txt")
        .map_err(|e| format!("cannot read xtask/toolchains/requirements.txt: {e}"))?;
    let venv = toolchains().join("python");
    let stamp = venv.join("requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(pinned.as_str()) {
        return Ok(());
    }
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| output(p, &["--version"]).is_some())
        .ok_or("Python 3 is needed to build Python steps; install python3 (with venv and pip)")?;
    let venv_str = venv.to_string_lossy();
    run(python, &["-m", "venv", "--clear", &venv_str])?;
    let bin = if cfg!(windows) { "Scripts" } else { "bin" };
    let pip = venv.join(bin).join("pip");
    run(
        &pip.to_string_lossy(),
        &[
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            "xtask/toolchains/requirements.txt",
        ],
    )?;
    std::fs::write(&stamp, pinned).map_err(|e| format!("cannot write {}: {e}", stamp.display()))
}

/// componentize-js, jco and rolldown at pinned versions, reinstalled when the lockfile changes.
fn node_toolchain() -> Result<(), String> {
    let lock = std::fs::read_to_string("xtask/toolchains/package-lock.json")
        .map_err(|e| format!("cannot read xtask/toolchains/package-lock.json: {e}"))?;
    let dir = toolchains().join("node");
    let stamp = dir.join("installed-lock.json");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(&lock) {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(Path::new("xtask/toolchains").join(file), dir.join(file))
            .map_err(|e| format!("cannot copy {file}: {e}"))?;
    }
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    if output(npm, &["--version"]).is_none() {
        return Err(
            "Node.js with npm is needed to build JavaScript steps; install Node.js 20 or newer"
                .into(),
        );
    }
    // `install`, not `ci`: npm leaves other platforms' optional binaries out of a lockfile
    // written on one platform, and `ci` then refuses it. Versions are pinned exactly anyway.
    run(
        npm,
        &[
            "install",
            "--prefix",
            &dir.to_string_lossy(),
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ],
    )?;
    std::fs::write(&stamp, lock).map_err(|e| format!("cannot write {}: {e}", stamp.display()))
}

/// Regenerates the TypeScript types of the JavaScript SDK's world into `out`.
///
/// jco runs its WIT reader as a component with no preopened directories, so it cannot read
/// any path; a preloaded module gives its WASI shim the root directory first.
fn js_types(out: &Path) -> Result<(), String> {
    node_toolchain()?;
    let tmp = std::env::temp_dir().join(format!("ferry-js-types-{}", std::process::id()));
    let wit = tmp.join("wit");
    let deps = wit.join("deps");
    std::fs::create_dir_all(&deps).map_err(|e| e.to_string())?;
    let copy = |from: &Path, to: &Path| {
        std::fs::copy(from, to).map_err(|e| format!("cannot copy {}: {e}", from.display()))
    };
    copy(Path::new("sdk/js/wit/world.wit"), &wit.join("world.wit"))?;
    copy(Path::new("wit/step.wit"), &deps.join("step.wit"))?;
    for entry in std::fs::read_dir("sdk/js/wit/deps").map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        copy(&path, &deps.join(path.file_name().unwrap_or_default()))?;
    }
    let node_modules = std::path::absolute(toolchains().join("node").join("node_modules"))
        .map_err(|e| e.to_string())?;
    let shim = node_modules.join(
        "@bytecodealliance/jco-transpile/node_modules/@bytecodealliance/preview2-shim/dist/nodejs/filesystem.js",
    );
    let preload = tmp.join("preopen.mjs");
    std::fs::write(
        &preload,
        format!(
            "import {{ _setPreopens }} from {:?};\n_setPreopens({{ '/': '/' }});\n",
            url(&shim)
        ),
    )
    .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(out);
    let out_abs = std::path::absolute(out).map_err(|e| e.to_string())?;
    let result = run(
        "node",
        &[
            "--import",
            &url(&preload),
            &node_modules
                .join("@bytecodealliance/jco/dist/jco.js")
                .to_string_lossy(),
            "guest-types",
            &std::path::absolute(&wit)
                .map_err(|e| e.to_string())?
                .to_string_lossy(),
            "--world-name",
            "step-js",
            "--quiet",
            "-o",
            &out_abs.to_string_lossy(),
        ],
    );
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Fails when `sdk/js/types` differs from what the WIT generates now.
fn check_js_types() -> Result<(), String> {
    let fresh = std::env::temp_dir().join(format!("ferry-js-types-check-{}", std::process::id()));
    js_types(&fresh)?;
    let same = tree(&fresh) == tree(Path::new("sdk/js/types"));
    let _ = std::fs::remove_dir_all(&fresh);
    if same {
        Ok(())
    } else {
        Err("sdk/js/types is out of date with the WIT: run `cargo xtask js-types` and commit the result".into())
    }
}

/// Every file below `dir` with its contents, by relative path.
fn tree(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let (Ok(rel), Ok(bytes)) = (path.strip_prefix(dir), std::fs::read(&path)) {
                files.insert(rel.to_path_buf(), bytes);
            }
        }
    }
    files
}

/// A `file://` URL for an absolute path, as `node --import` and ES imports take.
fn url(path: &Path) -> String {
    let text = path.to_string_lossy().replace('\\', "/");
    if text.starts_with('/') {
        format!("file://{text}")
    } else {
        format!("file:///{text}")
    }
}

fn demo(extra: &[String]) -> Result<(), String> {
    // The example pipeline needs only Rust; the Python and JavaScript toolchains are for
    // building steps in those languages (tests, benchmark).
    rust_setup()?;
    let mut args = vec![
        "run",
        "--package",
        "ferry-cli",
        "--",
        "run",
        "examples/ferry.yaml",
    ];
    args.extend(extra.iter().map(String::as_str));
    run("cargo", &args)
}

fn test() -> Result<(), String> {
    // Blessing turns golden tests into writers: a run that blesses checks nothing.
    if std::env::var_os("FERRY_BLESS").is_some() {
        return Err("FERRY_BLESS is set: the golden tests would rewrite their expectations instead of checking them; unset it (bless one suite by hand, e.g. `FERRY_BLESS=1 cargo test -p ferry-model --test ui`, and read the diff)".into());
    }
    setup()?;
    check_js_types()?;
    run("cargo", &["fmt", "--all", "--check"])?;
    run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    check_targets()?;
    // `CI` tells the tests they are the gate: the golden tests refuse to bless.
    run_with("cargo", &["test", "--workspace"], &[("CI", "true".into())])
}

/// Type-checks the sandbox for the systems CI does not run: Windows with MinGW's C compiler,
/// macOS with a stand-in one, since no macOS SDK is here and a check links nothing (build
/// scripts only need the object files they ask for to exist).
fn check_targets() -> Result<(), String> {
    add_targets(&CHECK_TARGETS)?;
    let stand_in = Path::new("target").join("xtask").join("check-cc");
    std::fs::create_dir_all(stand_in.parent().unwrap_or(Path::new(".")))
        .map_err(|e| format!("cannot create target/xtask: {e}"))?;
    std::fs::write(
        &stand_in,
        "#!/bin/sh\n# Answers a build script's compiler probes as clang and leaves empty objects.\nout=\"\"\nprev=\"\"\nfor a in \"$@\"; do\n  [ \"$a\" = \"-E\" ] && { echo clang; exit 0; }\n  [ \"$a\" = \"-?\" ] && exit 1\n  [ \"$prev\" = \"-o\" ] && out=\"$a\"\n  prev=\"$a\"\ndone\n[ -n \"$out\" ] && : > \"$out\"\nexit 0\n",
    )
    .map_err(|e| format!("cannot write {}: {e}", stand_in.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("cannot make {} executable: {e}", stand_in.display()))?;
    }
    let stand_in = std::path::absolute(&stand_in).unwrap_or(stand_in);
    for target in CHECK_TARGETS {
        // A system's own target is built, not just checked, by the tests that follow.
        if (cfg!(windows) && target.contains("windows"))
            || (cfg!(target_os = "macos") && target.contains("apple"))
        {
            continue;
        }
        let mut env: Vec<(&str, std::ffi::OsString)> = Vec::new();
        if target.contains("apple") {
            env.push(("CC_aarch64_apple_darwin", stand_in.clone().into()));
            env.push(("AR_aarch64_apple_darwin", "ar".into()));
        }
        run_with(
            "cargo",
            &["check", "--package", "ferry-sandbox", "--target", target],
            &env,
        )?;
    }
    Ok(())
}

fn bench(extra: &[String]) -> Result<(), String> {
    setup()?;
    run("cargo", &["build", "--release", "--package", "ferry-cli"])?;
    let mut args = vec!["run", "--release", "--package", "ferry-bench", "--"];
    args.extend(extra.iter().map(String::as_str));
    // The language start-up figures build steps with the Python and JavaScript toolchains.
    let bin = if cfg!(windows) { "Scripts" } else { "bin" };
    let mut path = vec![
        std::path::absolute(toolchains().join("python").join(bin)).map_err(|e| e.to_string())?,
        std::path::absolute(toolchains().join("node").join("node_modules").join(".bin"))
            .map_err(|e| e.to_string())?,
    ];
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let path = std::env::join_paths(path).map_err(|e| e.to_string())?;
    run_with("cargo", &args, &[("PATH", path)])
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    run_with(program, args, &[])
}

/// Runs `program` with `env` added to this process's environment.
fn run_with(
    program: &str,
    args: &[&str],
    env: &[(&str, std::ffi::OsString)],
) -> Result<(), String> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
