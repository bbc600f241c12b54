//! (k) what the OS sandbox adds to starting a host program: a confined `/bin/true` (the
//!     launcher a `run:` step and every `process` call go through: namespaces, fresh root,
//!     Landlock, seccomp) against the unconfined spawn it replaced, each spawned and awaited
//!     on tokio as `process` does.

use ferry_sandbox::confine;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Samples of each kind, alternating so that drift hits both alike.
const SAMPLES: usize = 300;

/// Most the sandbox may add to one process's start, per the issue that built it.
const FLOOR: Duration = Duration::from_millis(3);

pub fn confined_spawn(root: &Path) -> bool {
    if let Some(why) = confine::unavailable() {
        println!("(k) confined spawn: skipped, {why}");
        return false;
    }
    let dir = root.join("confined");
    let (workspace, home, output) = (dir.join("ws"), dir.join("home"), dir.join("out"));
    std::fs::create_dir_all(&workspace).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(&output, "").unwrap();
    let program = Path::new("/bin/true");
    let env = Default::default();
    let view = confine::view(&confine::Request {
        workspace: &workspace,
        workspace_access: ferry_model::Access::Write,
        paths: &[],
        home: &home,
        step_files: &[output.as_path()],
        programs: vec![program],
        env: &env,
        network: false,
        memory: 8 << 30,
        services: None,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let command = || {
        let mut cmd = tokio::process::Command::new(program);
        cmd.env_clear()
            .current_dir(&workspace)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        cmd
    };
    let (mut bare, mut confined) = (Vec::new(), Vec::new());
    runtime.block_on(async {
        for i in 0..SAMPLES + 20 {
            let started = Instant::now();
            let status = command().spawn().unwrap().wait().await.unwrap();
            assert!(status.success());
            let plain = started.elapsed();

            let started = Instant::now();
            let mut cmd = command();
            let pending =
                confine::linux::prepare(&mut cmd, &view, program, &workspace, None).unwrap();
            let mut child = cmd.spawn().unwrap();
            pending.started().await.unwrap();
            let status = child.wait().await.unwrap();
            assert!(status.success(), "the confined /bin/true failed: {status}");
            let walled = started.elapsed();
            // The first runs warm the page cache and the stage directory.
            if i >= 20 {
                bare.push(plain);
                confined.push(walled);
            }
        }
    });
    let (bare, confined) = (crate::median(&mut bare), crate::median(&mut confined));
    let added = confined.saturating_sub(bare);
    println!("(k) a host program's start, confined against unconfined, medians of {SAMPLES}");
    println!(
        "    spawn /bin/true, unconfined      {:>10}",
        crate::fmt(bare)
    );
    println!(
        "    spawn /bin/true, confined        {:>10}",
        crate::fmt(confined)
    );
    println!(
        "    added per process                {:>10}   ({:.2}×)",
        crate::fmt(added),
        confined.as_secs_f64() / bare.as_secs_f64()
    );
    let ok = added <= FLOOR;
    println!(
        "  floor: at most {} added per process: {}",
        crate::fmt(FLOOR),
        crate::verdict(ok)
    );
    !ok
}
