//! Measures what a ferry step costs, against the baselines the project promises to beat.
//!
//! (a) a pipeline of 100 no-op wasm steps (`ferry run`, whole process) against a shell script
//!     that runs `/bin/true` 100 times;
//! (b) the per-step overhead of a no-op wasm step inside the engine (scheduling, grants, log
//!     capture, events, run record included) against spawning `/bin/true`;
//! (c) the wall time of a one-step pipeline's second run (compiled cache warm);
//! (d) for a no-op step written in Rust, Python and JavaScript (made with `ferry plugin new`
//!     and built with `ferry plugin build`): its size, the first load (compile into an empty
//!     cache), a cached load (mmap), the cached instantiate+run of one step, and `ferry
//!     plugin build` after a one-line change to its source (the author's loop).
//!
//! (e) the built-in steps against the same tool run from a shell: checkout of a 1,000-file
//!     repository (`git clone`), a lint pass over it (`ruff`) and a tiny test suite
//!     (`pytest`), each as a whole `ferry run`.
//!
//! (f) the `image` step building a 50 MB context into an OCI image layout, against `tar` of
//!     the same files (uncompressed, and with gzip against `tar -z`).
//!
//! (g) start-up with 20 registry plugins, locked in ferry.lock and cached: a `ferry run` of
//!     20 no-op steps, each a different plugin from the local plugin store, against the same
//!     20 components given as files and against one component used 20 times.
//!
//! (h) the step cache: a pipeline of 1,000 steps, each reading its own 100 files of 4 KB
//!     (`inputs:`) with `cache: true`, run with an empty cache (cold) and again with every
//!     result cached, against spawning `/bin/true` once per step; plus the `--timings`
//!     breakdown of a cached run.
//!
//! (i) `ferry serve` under load, with a pipeline of one no-op wasm step: the time from
//!     sending a signed push webhook to its run's first step starting (median and p99 over
//!     sequential hooks), and the runs per second it sustains when 200 hooks arrive at once.
//!
//! (j) how fast a run stops, whole `ferry run` processes: Ctrl-C to the process's exit
//!     (its step's `sleep` killed), a spinning wasm step's overrun past its 0.6 s timeout,
//!     and fail-fast, from the failing job's end to the run's end with a sibling running.
//!     These are the latencies tests used to bound with wall-clock assertions.
//!
//! (k) what the OS sandbox adds to starting a host program (see `confined.rs`).
//!
//! (l) warm builds of real projects with `keep:`, against the bare tool (see `warm.rs`).
//!
//! Run with `cargo xtask bench` (release build, toolchains on `PATH`); `cargo xtask bench d`,
//! `e`, `f`, `g`, `h`, `i`, `j`, `k` or `l` runs one part. Figures are medians.

#[cfg(target_os = "linux")]
mod confined;
mod warm;

use ferry_builtins::fixtures;
use ferry_engine::event::{Event, Reporter};
use ferry_engine::{CancellationToken, RunOptions, Status};
use ferry_model::{Plan, Source};
use ferry_sandbox::{ComponentCache, Sandbox, SandboxOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROUNDS: usize = 11;

fn main() {
    let ferry = ferry_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    // `cargo xtask bench e` measures only the built-in steps, which take a while to set up.
    match std::env::args().nth(1).as_deref() {
        Some("e") => {
            let missed = print_builtins(&builtin_overheads(&ferry, root));
            std::process::exit(i32::from(missed));
        }
        Some("d") => {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let languages: Vec<Startup> = LANGUAGES
                .iter()
                .map(|lang| runtime.block_on(startup(&ferry, root, lang)))
                .collect();
            std::process::exit(i32::from(print_languages(&languages)));
        }
        Some("f") => std::process::exit(i32::from(image_build(&ferry, root))),
        Some("g") => std::process::exit(i32::from(locked_plugins(&ferry, root))),
        Some("h") => std::process::exit(i32::from(cached_pipeline(&ferry, root))),
        Some("i") => std::process::exit(i32::from(serve_load(&ferry, root))),
        Some("j") => std::process::exit(i32::from(stopping(&ferry, root))),
        #[cfg(target_os = "linux")]
        Some("k") => std::process::exit(i32::from(confined::confined_spawn(root))),
        Some("l") => std::process::exit(i32::from(warm::warm_builds(&ferry, root))),
        _ => {}
    }

    // (a) whole pipelines.
    let pipeline = write_pipeline(root, "hundred", 100);
    let script = root.join("hundred.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n".to_string() + &"/bin/true\n".repeat(100),
    )
    .unwrap();
    run_ferry(&ferry, &pipeline); // warm the compiled cache
    let mut wasm = Vec::new();
    let mut shell = Vec::new();
    for _ in 0..ROUNDS {
        wasm.push(time(|| run_ferry(&ferry, &pipeline)));
        shell.push(time(|| {
            let status = Command::new("sh").arg(&script).status().unwrap();
            assert!(status.success());
        }));
    }
    let (wasm_a, shell_a) = (median(&mut wasm), median(&mut shell));

    // (b) per-step overhead in the engine.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let steps = 1000;
    let mut per_step = Vec::new();
    for _ in 0..ROUNDS {
        let many = runtime.block_on(engine_run(root, steps));
        let one = runtime.block_on(engine_run(root, 1));
        per_step.push(many.saturating_sub(one) / (steps as u32 - 1));
    }
    let mut spawn = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for _ in 0..100 {
            let status = Command::new("/bin/true").status().unwrap();
            assert!(status.success());
        }
        spawn.push(started.elapsed() / 100);
    }
    let (step_b, spawn_b) = (median(&mut per_step), median(&mut spawn));

    // (c) second run of a one-step pipeline.
    let one = write_pipeline(root, "one", 1);
    run_ferry(&ferry, &one);
    let mut second = Vec::new();
    for _ in 0..ROUNDS {
        second.push(time(|| run_ferry(&ferry, &one)));
    }
    let one_c = median(&mut second);

    // (d) start-up per language.
    let languages: Vec<Startup> = LANGUAGES
        .iter()
        .map(|lang| runtime.block_on(startup(&ferry, root, lang)))
        .collect();

    // (e) built-in steps against their bare tools.
    let builtins = builtin_overheads(&ferry, root);

    let ratio_a = wasm_a.as_secs_f64() / shell_a.as_secs_f64();
    let ratio_b = step_b.as_secs_f64() / spawn_b.as_secs_f64();
    println!("ferry benchmark (medians of {ROUNDS} rounds)");
    println!();
    println!("(a) 100-step pipeline, whole `ferry run` process");
    println!("    ferry, 100 no-op wasm steps      {:>10}", fmt(wasm_a));
    println!("    sh, 100 x /bin/true              {:>10}", fmt(shell_a));
    println!(
        "    ratio                            {ratio_a:>10.3}x   (floor 0.5x: {})",
        verdict(ratio_a <= 0.5)
    );
    println!();
    println!("(b) per-step overhead");
    println!("    no-op wasm step in the engine    {:>10}", fmt(step_b));
    println!("    spawn /bin/true                  {:>10}", fmt(spawn_b));
    println!(
        "    ratio                            {ratio_b:>10.3}x   (floor 0.1x: {})",
        verdict(ratio_b <= 0.1)
    );
    println!();
    println!(
        "(c) one-step pipeline, second run  {:>10}   (floor 50ms: {})",
        fmt(one_c),
        verdict(one_c < Duration::from_millis(50))
    );
    println!();
    let mut missed = print_languages(&languages);
    println!();
    missed |= print_builtins(&builtins);
    if ratio_a > 0.5 || ratio_b > 0.1 || one_c >= Duration::from_millis(50) || missed {
        std::process::exit(1);
    }
}

/// Prints (d); true when a floor was missed.
fn print_languages(languages: &[Startup]) -> bool {
    println!("(d) a no-op step by language");
    println!(
        "    {:<12}{:>10}{:>14}{:>14}{:>16}{:>12}",
        "", "size", "first load", "cached load", "instantiate+run", "rebuild"
    );
    let mut missed = false;
    for (lang, s) in LANGUAGES.iter().zip(languages) {
        let ok = s.run < lang.floor;
        missed |= !ok;
        println!(
            "    {:<12}{:>10}{:>14}{:>14}{:>16}{:>12}   (floor {}: {})",
            lang.name,
            format!("{:.1} MiB", s.size as f64 / (1024.0 * 1024.0)),
            fmt(s.first),
            fmt(s.cached),
            fmt(s.run),
            fmt(s.rebuild),
            fmt(lang.floor),
            verdict(ok)
        );
    }
    missed
}

/// Prints (e); true when a floor was missed. The floor applies to the step against the
/// bare tool; the whole run adds the job's private copy of the repository.
fn print_builtins(builtins: &[Builtin]) -> bool {
    println!("(e) built-in steps against the bare tool from a shell");
    println!(
        "    {:<36}{:>10}{:>12}{:>10}{:>10}{:>9}",
        "", "bare tool", "ferry step", "ratio", "ferry run", "ratio"
    );
    let mut missed = false;
    for b in builtins {
        let ratio = |d: Duration| d.as_secs_f64() / b.bare.as_secs_f64();
        let ok = ratio(b.step) <= 1.10;
        missed |= !ok;
        println!(
            "    {:<36}{:>10}{:>12}{:>9.2}x{:>10}{:>8.2}x   (step floor 1.10x: {})",
            b.name,
            fmt(b.bare),
            fmt(b.step),
            ratio(b.step),
            fmt(b.run),
            ratio(b.run),
            verdict(ok)
        );
    }
    missed
}

/// Checkout, lint and test as built-in steps and as bare tools.
fn builtin_overheads(ferry: &Path, root: &Path) -> Vec<Builtin> {
    const N: usize = 7;
    let sh = |script: &str, dir: &Path| warm::sh(dir, script);
    // A repository of 1,000 Python files in 20 directories, and a tiny test suite.
    let repo = root.join("thousand");
    for i in 0..1000 {
        let dir = repo.join(format!("pkg{}", i % 20));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("mod{i}.py")),
            format!("def f{i}(x):\n    return x + {i}\n"),
        )
        .unwrap();
    }
    std::fs::create_dir_all(repo.join("tests")).unwrap();
    std::fs::write(
        repo.join("tests/test_small.py"),
        "def test_a():\n    assert len(\"ab\") == 2\n\n\ndef test_b():\n    assert \"a\" in list(\"abc\")\n",
    )
    .unwrap();
    sh(
        "git init -q && git add -A && git -c user.name=b -c user.email=b@b commit -qm bench",
        &repo,
    );
    let url = format!("file://{}", repo.display());
    let bench_dir = |name: &str, yaml: String| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ferry.yaml"), yaml).unwrap();
        dir.join("ferry.yaml")
    };
    // Checkout runs in an empty pipeline directory; lint and test in the repository.
    let checkout = bench_dir(
        "e-checkout",
        format!(
            "jobs:\n  c:\n    steps:\n      - uses: checkout\n        with: {{ repository: \"{url}\", path: src }}\n        permissions: {{ workspace: write, exec: [git], paths: {{ {}: read }} }}\n",
            repo.display()
        ),
    );
    let lint = repo.join("lint.yaml");
    std::fs::write(&lint, "jobs:\n  l:\n    steps:\n      - uses: lint\n        with: { preset: ruff }\n        permissions: { exec: [ruff] }\n").unwrap();
    let test = repo.join("test.yaml");
    std::fs::write(&test, "jobs:\n  t:\n    steps:\n      - uses: test\n        with: { preset: pytest }\n        permissions: { workspace: write, exec: [pytest] }\n").unwrap();
    sh(
        "printf '.ferry/\\ntarget/\\n.pytest_cache/\\n.ruff_cache/\\n' > .gitignore",
        &repo,
    );
    let clone_dir = root.join("e-clone");
    let cases: [(&'static str, &Path, String, &Path); 3] = [
        (
            "checkout, 1,000 files (git clone)",
            &checkout,
            // A new directory each time: the removal of the last clone is done between
            // samples, untimed, as the step's time leaves out the workspace sync.
            format!("git clone -q --depth 1 {url} \"$(mktemp -d -p .)/src\""),
            &clone_dir,
        ),
        (
            "lint, 1,000 files (ruff check)",
            &lint,
            // The ferry run starts from a fresh copy, so the bare tool gets no cache either.
            "ruff check --no-cache --output-format=json . > /dev/null".into(),
            &repo,
        ),
        (
            "test, tiny suite (pytest)",
            &test,
            "pytest -q -p no:cacheprovider --junitxml=target/bare.xml".into(),
            &repo,
        ),
    ];
    std::fs::create_dir_all(&clone_dir).unwrap();
    let mut results = Vec::new();
    for (name, pipeline, script, dir) in cases {
        run_ferry(ferry, pipeline);
        sh(&script, dir);
        let (mut f, mut step, mut s) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..N {
            let mut took = Duration::ZERO;
            f.push(time(|| took = step_time(ferry, pipeline)));
            step.push(took);
            s.push(time(|| sh(&script, dir)));
            if dir == clone_dir.as_path() {
                std::fs::remove_dir_all(dir).unwrap();
                std::fs::create_dir_all(dir).unwrap();
            }
        }
        results.push(Builtin {
            name,
            run: median(&mut f),
            step: median(&mut step),
            bare: median(&mut s),
        });
    }
    results
}

/// Runs the one-step pipeline and returns how long its step took, as the run reports it:
/// the step's own cost, without the job's workspace copy and the process around it.
fn step_time(ferry: &Path, pipeline: &Path) -> Duration {
    let out = Command::new(ferry)
        .args(["run", "--output", "json"])
        .arg(pipeline)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ferry run {} failed",
        pipeline.display()
    );
    let ms = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("\"step-finished\""))
        .and_then(|l| l.split("\"duration_ms\":").nth(1))
        .and_then(|rest| {
            rest.trim_end_matches('}')
                .split(',')
                .next()?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .expect("a step-finished event with its duration");
    Duration::from_secs_f64(ms / 1000.0)
}

/// (f): the `image` step against `tar` over a 50 MB context of 400 files of 128 KiB (not
/// compressible, like built binaries and assets). Returns whether the 2× floor was missed.
fn image_build(ferry: &Path, root: &Path) -> bool {
    let dir = root.join("image");
    let context = dir.join("context");
    std::fs::create_dir_all(&context).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..400 {
        let mut bytes = vec![0u8; 128 << 10];
        for chunk in bytes.chunks_mut(8) {
            // xorshift: incompressible bytes without a dependency.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let sub = context.join(format!("d{}", i % 20));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("f{i:03}.bin")), bytes).unwrap();
    }
    std::fs::write(context.join("Dockerfile"), "FROM scratch\nCOPY . /data/\n").unwrap();
    let mut missed = false;
    println!("(f) the image step on a 50 MB context (400 files), against tar of the same files");
    for (compression, tar_flags) in [("none", "-cf"), ("gzip", "-czf")] {
        let pipeline = dir.join(format!("ferry-{compression}.yaml"));
        std::fs::write(
            &pipeline,
            format!(
                "jobs:\n  image:\n    steps:\n      - uses: image\n        with: {{ context: context, compression: {compression} }}\n        permissions: {{ workspace: write }}\n"
            ),
        )
        .unwrap();
        run_ferry(ferry, &pipeline); // the workspace copy and the compiled step
        let (mut step, mut whole, mut bare) = (Vec::new(), Vec::new(), Vec::new());
        let out = dir.join("out.tar");
        for _ in 0..7 {
            let started = Instant::now();
            step.push(step_time(ferry, &pipeline));
            whole.push(started.elapsed());
            let _ = std::fs::remove_file(&out);
            bare.push(time(|| {
                let status = Command::new("tar")
                    .arg(tar_flags)
                    .arg(&out)
                    .arg("-C")
                    .arg(&context)
                    .arg(".")
                    .status()
                    .unwrap();
                assert!(status.success());
            }));
        }
        let (step, whole, bare) = (median(&mut step), median(&mut whole), median(&mut bare));
        let ratio = step.as_secs_f64() / bare.as_secs_f64();
        println!(
            "  {compression:<5} image step {:>8.1} ms   tar {tar_flags:<5} {:>8.1} ms   ratio {ratio:.2}×   whole `ferry run` {:>8.1} ms",
            step.as_secs_f64() * 1e3,
            bare.as_secs_f64() * 1e3,
            whole.as_secs_f64() * 1e3,
        );
        if compression == "none" && ratio > 2.0 {
            println!("  MISSED: the floor is 2× tar");
            missed = true;
        }
    }
    missed
}

/// (g): what resolving and loading 20 locked, cached registry plugins adds to `ferry run`.
fn locked_plugins(ferry: &Path, root: &Path) -> bool {
    const PLUGINS: usize = 20;
    let dir = root.join("locked");
    std::fs::create_dir_all(&dir).unwrap();
    let probe = std::fs::read(fixtures::PROBE).unwrap();
    let env = [
        ("XDG_DATA_HOME", dir.join("data")),
        ("XDG_CACHE_HOME", dir.join("cache")),
        ("XDG_CONFIG_HOME", dir.join("config")),
    ];
    let (mut registry, mut files, mut single) = (String::new(), String::new(), String::new());
    for i in 0..PLUGINS {
        // A custom section makes each copy a different component with its own digest.
        let name = format!("ferry-bench-{i}");
        let mut wasm = probe.clone();
        wasm.push(0);
        wasm.push((1 + name.len()) as u8);
        wasm.push(name.len() as u8);
        wasm.extend_from_slice(name.as_bytes());
        let file = dir.join(format!("p{i}.wasm"));
        std::fs::write(&file, wasm).unwrap();
        let status = Command::new(ferry)
            .args(["plugin", "push"])
            .arg(&file)
            .arg(format!("p{i}:1.0.0"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pushing p{i} failed");
        let step = |uses: &str| format!("      - uses: {uses}\n        with: {{ case: noop }}\n");
        registry.push_str(&step(&format!("p{i}:^1")));
        files.push_str(&step(&format!("./p{i}.wasm")));
        single.push_str(&step("./p0.wasm"));
    }
    let mut pipelines = Vec::new();
    for (name, steps) in [("registry", registry), ("files", files), ("single", single)] {
        let file = dir.join(format!("{name}.yaml"));
        std::fs::write(&file, format!("jobs:\n  noop:\n    steps:\n{steps}")).unwrap();
        pipelines.push(file);
    }
    let run = |file: &Path| {
        let status = Command::new(ferry)
            .args(["run", "--locked", "--output", "json"])
            .arg(file)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "ferry run {} failed", file.display());
    };
    // The first run of `registry` writes ferry.lock; `--locked` would refuse it, so lock
    // first. Then one warm-up run each compiles the components.
    let status = Command::new(ferry)
        .arg("lock")
        .arg(&pipelines[0])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "ferry lock failed");
    for file in &pipelines {
        run(file);
    }
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (file, out) in pipelines.iter().zip(samples.iter_mut()) {
            out.push(time(|| run(file)));
        }
    }
    let [registry, files, single] = [0, 1, 2].map(|i| median(&mut samples[i]));
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("(g) `ferry run --locked` of {PLUGINS} no-op steps, each a different plugin");
    println!(
        "  {PLUGINS} locked registry plugins {:>7.1} ms   same components as files {:>7.1} ms   one component {PLUGINS}× {:>7.1} ms",
        ms(registry),
        ms(files),
        ms(single)
    );
    let added = registry.saturating_sub(single);
    println!(
        "  added by resolving and loading {PLUGINS} locked plugins: {:.1} ms (of which lock and cache lookups: {:.1} ms; floor 20 ms)",
        ms(added),
        ms(registry.saturating_sub(files))
    );
    let missed = added > Duration::from_millis(20);
    if missed {
        println!("  MISSED: the floor is 20 ms");
    }
    missed
}

/// (h): a fully cached rerun of 1,000 steps with 100 × 4 KB inputs each.
fn cached_pipeline(ferry: &Path, root: &Path) -> bool {
    const STEPS: usize = 1000;
    const FILES: usize = 100;
    const SIZE: usize = 4096;
    let dir = root.join("cached");
    // Distinct content in every file, so nothing is shared by accident.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut block = vec![0u8; SIZE];
    let mut yaml = String::from("name: cached\njobs:\n  build:\n    steps:\n");
    for step in 0..STEPS {
        let inputs = dir.join(format!("in/{step:04}"));
        std::fs::create_dir_all(&inputs).unwrap();
        for file in 0..FILES {
            for chunk in block.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
            std::fs::write(inputs.join(format!("f{file:03}")), &block).unwrap();
        }
        yaml.push_str(&format!(
            "      - uses: {}\n        with: {{ case: noop, arg: \"{step}\" }}\n        cache: true\n        inputs: [in/{step:04}]\n",
            fixtures::PROBE
        ));
    }
    let pipeline = dir.join("ferry.yaml");
    std::fs::write(&pipeline, yaml).unwrap();
    let env = [("XDG_CACHE_HOME", root.join("cache-h"))];
    let ferry_cmd = |args: &[&str]| {
        let out = Command::new(ferry)
            .args(args)
            .arg("-f")
            .arg(&pipeline)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ferry {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(ferry);
        cmd.args(["run", "--output", "json"])
            .args(extra)
            .arg(&pipeline)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null());
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "ferry run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // The first run copies 400 MB into the job's workspace and compiles the component; the
    // figures below start after it.
    run(&[]);
    let mut cold = Vec::new();
    for _ in 0..5 {
        ferry_cmd(&["cache", "clear"]);
        cold.push(time(|| {
            run(&[]);
        }));
    }
    let mut cached = Vec::new();
    for _ in 0..ROUNDS {
        cached.push(time(|| {
            run(&[]);
        }));
    }
    let script = root.join("thousand.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n".to_string() + &"/bin/true\n".repeat(STEPS),
    )
    .unwrap();
    let mut spawns = Vec::new();
    for _ in 0..ROUNDS {
        spawns.push(time(|| {
            assert!(Command::new("sh").arg(&script).status().unwrap().success());
        }));
    }
    let timings = run(&["--timings"]);
    let (cold, cached, spawns) = (median(&mut cold), median(&mut cached), median(&mut spawns));
    let per = |d: Duration| d / STEPS as u32;
    println!("(h) {STEPS} steps with `cache: true`, each reading {FILES} files of 4 KB");
    println!(
        "  cold (empty cache) {:>9}   fully cached {:>9}   ({:.3}× cold)",
        fmt(cold),
        fmt(cached),
        cached.as_secs_f64() / cold.as_secs_f64()
    );
    println!(
        "  per step: cold {:>9}   cached {:>9}   spawning /bin/true {:>9}   cached/spawn {:.2}×",
        fmt(per(cold)),
        fmt(per(cached)),
        fmt(per(spawns)),
        cached.as_secs_f64() / spawns.as_secs_f64()
    );
    println!("  --timings of a cached run:");
    for line in timings
        .lines()
        .skip_while(|l| !l.starts_with("timings"))
        .skip(1)
    {
        println!("  {line}");
    }
    let hit_ok = per(cached) <= per(spawns);
    let run_ok = cached < Duration::from_secs(1);
    println!(
        "  floors: cache hit ≤ 1× a /bin/true spawn per step: {}; whole cached run under 1 s: {}",
        verdict(hit_ok),
        verdict(run_ok)
    );
    !(hit_ok && run_ok)
}

/// One built-in step's figures: the whole `ferry run`, the step alone, the bare tool.
struct Builtin {
    name: &'static str,
    run: Duration,
    step: Duration,
    bare: Duration,
}

struct Language {
    name: &'static str,
    lang: &'static str,
    /// The step's source file and a no-op step in that language.
    source: (&'static str, &'static str),
    /// How a line comment starts, for the one-line change before a rebuild.
    comment: &'static str,
    /// Steps per measured run, so that the measured time dwarfs the clock's resolution.
    steps: usize,
    floor: Duration,
}

const LANGUAGES: [Language; 3] = [
    Language {
        name: "rust",
        lang: "rust",
        source: (
            "src/lib.rs",
            "use ferry_sdk::{Error, Info, Inputs, Step};\n\nstruct Noop;\n\nimpl Step for Noop {\n    fn info() -> Info {\n        Info::new(\"noop\", \"0.1.0\", \"Does nothing.\")\n    }\n\n    fn run(_: &Inputs) -> Result<(), Error> {\n        Ok(())\n    }\n}\n\nferry_sdk::export!(Noop);\n",
        ),
        comment: "//",
        steps: 1000,
        floor: Duration::from_millis(1),
    },
    Language {
        name: "python",
        lang: "python",
        source: (
            "app.py",
            "import ferry_sdk as ferry\n\n\nclass Noop(ferry.Step):\n    name = \"noop\"\n\n    def run(self, inputs):\n        pass\n\n\nWitWorld = ferry.export(Noop)\n",
        ),
        comment: "#",
        steps: 100,
        floor: Duration::from_millis(10),
    },
    Language {
        name: "javascript",
        lang: "js",
        source: (
            "src/index.js",
            "import { defineStep } from \"@ferry-ci/sdk\";\n\nexport const { describe, run } = defineStep({ name: \"noop\", run() {} });\n",
        ),
        comment: "//",
        steps: 100,
        floor: Duration::from_millis(10),
    },
];

struct Startup {
    size: u64,
    first: Duration,
    cached: Duration,
    run: Duration,
    /// `ferry plugin build` after a one-line change to the step's source.
    rebuild: Duration,
}

/// Builds a no-op step in `lang` with the `ferry` CLI and measures how fast it starts.
async fn startup(ferry: &Path, root: &Path, lang: &Language) -> Startup {
    let dir = root.join(format!("noop-{}", lang.name));
    cli(
        ferry,
        root,
        &["plugin", "new", "noop", "--lang", lang.lang, "--dir"],
        &dir,
    );
    std::fs::write(dir.join(lang.source.0), lang.source.1).unwrap();
    cli(ferry, root, &["plugin", "build"], &dir);
    // The author's loop: a one-line change, then a build. Builds take seconds: three rounds.
    let source = dir.join(lang.source.0);
    let mut rebuild = Vec::new();
    for round in 0..3 {
        let mut text = std::fs::read_to_string(&source).unwrap();
        text.push_str(&format!("{} edit {round}\n", lang.comment));
        std::fs::write(&source, text).unwrap();
        rebuild.push(time(|| cli(ferry, root, &["plugin", "build"], &dir)));
    }
    let wasm = dir.join("dist").join("noop.wasm");
    let size = std::fs::metadata(&wasm).unwrap().len();
    let uses = ferry_model::Uses::Path(wasm.clone());

    // First load: compile into an empty cache. Compiling takes seconds, so three rounds.
    let mut first = Vec::new();
    for round in 0..3 {
        let cache = root.join(format!("cache-{}-{round}", lang.name));
        let sandbox = sandbox_with(cache);
        first.push(time_async(sandbox.plugin(&uses)).await);
    }
    // Cached: a new sandbox (as a new `ferry run` has) over the warm cache.
    let warm = root.join(format!("cache-{}-0", lang.name));
    let mut cached = Vec::new();
    for _ in 0..ROUNDS {
        let sandbox = sandbox_with(warm.clone());
        cached.push(time_async(sandbox.plugin(&uses)).await);
    }
    // Instantiate+run: per-step time in the engine, the plugin loaded once.
    let mut run = Vec::new();
    for _ in 0..ROUNDS.min(5) {
        let many = engine_run_of(root, &wasm, lang.steps, &warm).await;
        let one = engine_run_of(root, &wasm, 1, &warm).await;
        run.push(many.saturating_sub(one) / (lang.steps as u32 - 1));
    }
    Startup {
        size,
        first: median(&mut first),
        cached: median(&mut cached),
        run: median(&mut run),
        rebuild: median(&mut rebuild),
    }
}

fn hash(path: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}

fn cli(ferry: &Path, cwd: &Path, args: &[&str], dir: &Path) {
    let status = Command::new(ferry)
        .args(args)
        .arg(dir)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "ferry {args:?} {} failed", dir.display());
}

async fn time_async<T, E: std::fmt::Debug>(f: impl Future<Output = Result<T, E>>) -> Duration {
    let started = Instant::now();
    f.await.unwrap();
    started.elapsed()
}

fn sandbox_with(cache_dir: PathBuf) -> Arc<Sandbox> {
    Arc::new(
        Sandbox::new(SandboxOptions {
            cache_dir,
            builtins: ferry_builtins::BUILTINS,
            concurrency: 1,
        })
        .unwrap(),
    )
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

/// The `ferry` binary next to this one (both built by `cargo xtask bench`).
fn ferry_binary() -> PathBuf {
    let me = std::env::current_exe().expect("own path");
    let ferry = me.with_file_name(format!("ferry{}", std::env::consts::EXE_SUFFIX));
    assert!(
        ferry.is_file(),
        "build ferry first: cargo build --release -p ferry-cli"
    );
    ferry
}

fn write_pipeline(root: &Path, name: &str, steps: usize) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut yaml = format!("name: {name}\njobs:\n  noop:\n    steps:\n");
    for _ in 0..steps {
        yaml.push_str(&format!(
            "      - uses: {}\n        with: {{ case: noop }}\n",
            fixtures::PROBE
        ));
    }
    let file = dir.join("ferry.yaml");
    std::fs::write(&file, yaml).unwrap();
    file
}

fn run_ferry(ferry: &Path, pipeline: &Path) {
    let status = Command::new(ferry)
        .args(["run", "--output", "json"])
        .arg(pipeline)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "ferry run {} failed", pipeline.display());
}

struct Null;

impl Reporter for Null {
    fn event(&self, _: &Event) {}
}

/// One job of `steps` no-op probe steps through the engine and the sandbox, run record
/// included.
async fn engine_run(root: &Path, steps: usize) -> Duration {
    let file = write_pipeline(root, &format!("engine-{steps}"), steps);
    timed_run(file, ComponentCache::default_dir()).await
}

/// The same with `steps` runs of the component at `wasm`, compiled into `cache`.
async fn engine_run_of(root: &Path, wasm: &Path, steps: usize, cache: &Path) -> Duration {
    let dir = root.join(format!("run-{steps}-{:x}", hash(wasm)));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = format!(
        "jobs:\n  noop:\n    steps:\n{}",
        format!("      - uses: {}\n", wasm.display()).repeat(steps)
    );
    let file = dir.join("ferry.yaml");
    std::fs::write(&file, yaml).unwrap();
    timed_run(file, cache.to_path_buf()).await
}

/// Runs the pipeline in `file`, its plugin loaded beforehand: the cost measured is per
/// step, not per run.
async fn timed_run(file: PathBuf, cache_dir: PathBuf) -> Duration {
    let source = Source::new(&file, std::fs::read_to_string(&file).unwrap());
    let dir = file.parent().unwrap().to_path_buf();
    let pipeline = ferry_model::parse(&source, &dir, &["shell"]).unwrap();
    let sandbox = Arc::new(
        Sandbox::new(SandboxOptions {
            cache_dir,
            builtins: ferry_builtins::BUILTINS,
            concurrency: 1,
        })
        .unwrap(),
    );
    sandbox
        .plugin(&pipeline.jobs[0].steps[0].uses)
        .await
        .unwrap();
    let options = RunOptions {
        slots: None,
        parallel: 1,
        fail_fast: true,
        state_dir: dir.join(".ferry"),
        source_dir: dir.clone(),
        secrets: Default::default(),
        host_env: Default::default(),
        cancel: CancellationToken::new(),
        git: Default::default(),
        vars: Default::default(),
        inputs: Default::default(),
        cache: None,
        reuse: false,
        clean: false,
        untrusted: false,
    };
    let plan = Plan::new(pipeline, &[]).unwrap();
    let started = Instant::now();
    let result = ferry_engine::run(plan, sandbox, Arc::new(Null), options)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(result.status, Status::Passed);
    elapsed
}

/// How many times each stop of (j) is measured.
const STOPS: usize = 7;

/// (j) How long ferry takes to stop what it was asked to stop; true when a floor was missed.
fn stopping(ferry: &Path, root: &Path) -> bool {
    let dir = root.join("stopping");
    std::fs::create_dir_all(&dir).unwrap();
    // One failing `ferry run` of `yaml`; its run record.
    let run = |yaml: &str| -> serde_json::Value {
        let file = dir.join("ferry.yaml");
        std::fs::write(&file, yaml).unwrap();
        let _ = std::fs::remove_dir_all(dir.join(".ferry"));
        let status = Command::new(ferry)
            .args(["run", "--output", "json"])
            .arg(&file)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(1), "{yaml}");
        let runs = dir.join(".ferry/runs");
        let record = std::fs::read_dir(&runs).unwrap().next().unwrap().unwrap();
        serde_json::from_slice(&std::fs::read(record.path().join("run.json")).unwrap()).unwrap()
    };
    let ms = |v: &serde_json::Value| Duration::from_secs_f64(v.as_f64().unwrap() / 1000.0);

    // A spinning guest with a 0.6 s limit: how long past the limit the step ran.
    let spin = format!(
        "jobs:\n  spin:\n    steps:\n      - uses: {}\n        with: {{ case: spin }}\n        timeout-minutes: 0.01\n",
        fixtures::PROBE
    );
    run(&spin); // compile the probe once
    let mut overrun: Vec<Duration> = (0..STOPS)
        .map(|_| {
            let summary = run(&spin);
            let step = &summary["jobs"]["spin"]["steps"][0];
            assert_eq!(step["failure"], "timeout", "{summary}");
            ms(&step["duration_ms"]).saturating_sub(Duration::from_millis(600))
        })
        .collect();

    // Fail-fast: `bad` fails while `slow` sleeps; the run ends when `slow` is cancelled.
    let fail_fast = "jobs:\n  slow: { steps: [{ run: sleep 300 }] }\n  bad: { steps: [{ run: sleep 0.2; exit 1 }] }\n";
    let mut cancel_after_failure: Vec<Duration> = (0..STOPS)
        .map(|_| {
            let summary = run(fail_fast);
            assert_eq!(summary["jobs"]["slow"]["status"], "cancelled", "{summary}");
            ms(&summary["duration_ms"]).saturating_sub(ms(&summary["jobs"]["bad"]["duration_ms"]))
        })
        .collect();

    let mut interrupt = ctrl_c(ferry, &dir);
    let (overrun, cancel, interrupt) = (
        median(&mut overrun),
        median(&mut cancel_after_failure),
        interrupt.as_mut_slice(),
    );
    println!("(j) stopping, medians of {STOPS} whole `ferry run` processes");
    let mut missed = false;
    let mut line = |what: &str, took: Duration, floor: Duration| {
        let ok = took < floor;
        missed |= !ok;
        println!(
            "    {what:<40}{:>10}   (floor {}: {})",
            fmt(took),
            fmt(floor),
            verdict(ok)
        );
    };
    line(
        "timeout: a spinning step past its limit",
        overrun,
        Duration::from_millis(500),
    );
    line(
        "fail-fast: failure to the run's end",
        cancel,
        Duration::from_millis(500),
    );
    if !interrupt.is_empty() {
        line(
            "Ctrl-C: signal to exit, step killed",
            median(interrupt),
            Duration::from_secs(1),
        );
    }
    missed
}

/// Ctrl-C to a `ferry run` whose step sleeps: the time from the signal until ferry has
/// exited and the step's process is gone.
#[cfg(unix)]
fn ctrl_c(ferry: &Path, dir: &Path) -> Vec<Duration> {
    let pidfile = dir.join("step.pid");
    let file = dir.join("ferry.yaml");
    std::fs::write(
        &file,
        format!(
            "jobs:\n  long:\n    steps:\n      - run: sleep 300 & echo $! > {}; wait\n",
            pidfile.display()
        ),
    )
    .unwrap();
    (0..STOPS)
        .map(|_| {
            let _ = std::fs::remove_file(&pidfile);
            let mut child = Command::new(ferry)
                .args(["run", "--output", "json"])
                .arg(&file)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let pid: i32 = loop {
                if let Some(pid) = std::fs::read_to_string(&pidfile)
                    .ok()
                    .filter(|t| t.ends_with('\n'))
                    .and_then(|t| t.trim().parse().ok())
                {
                    break pid;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            let started = Instant::now();
            // SAFETY: signalling the child this function started.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            assert_eq!(child.wait().unwrap().code(), Some(130));
            // SAFETY: signal 0 only asks whether the process is there.
            while unsafe { libc::kill(pid, 0) } == 0
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
            {
                std::thread::yield_now();
            }
            started.elapsed()
        })
        .collect()
}

#[cfg(not(unix))]
fn ctrl_c(_: &Path, _: &Path) -> Vec<Duration> {
    Vec::new()
}

/// (i) A `ferry serve` taking webhooks for a repository whose pipeline is one no-op step.
fn serve_load(ferry: &Path, root: &Path) -> u8 {
    const SECRET: &str = "bench-secret";
    const TOKEN: &str = "bench-token";
    const SEQUENTIAL: usize = 100;
    const BURST: usize = 200;
    let repo = root.join("serve-app");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(
        repo.join("ferry.yaml"),
        format!(
            "name: noop\non: push\njobs:\n  noop:\n    steps:\n      - uses: {}\n        with: {{ case: noop }}\n",
            fixtures::PROBE
        ),
    )
    .unwrap();
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_AUTHOR_NAME", "bench")
            .env("GIT_AUTHOR_EMAIL", "bench@example.com")
            .env("GIT_COMMITTER_NAME", "bench")
            .env("GIT_COMMITTER_EMAIL", "bench@example.com")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "noop"]);
    let sha = String::from_utf8(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(&repo)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Command::new(ferry)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(root.join("serve-data"))
        .arg("--repo")
        .arg(&repo)
        .args([
            "--webhook-secret-env",
            "S",
            "--token-env",
            "T",
            "--max-runs",
            "4",
        ])
        .env("S", SECRET)
        .env("T", TOKEN)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let get = |path: &str| -> serde_json::Value {
        agent
            .get(&format!("{base}{path}"))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .and_then(|mut r| r.body_mut().read_json())
            .unwrap_or(serde_json::Value::Null)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.get(&format!("{base}/api/session")).call().is_err() {
        assert!(Instant::now() < deadline, "ferry serve did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let hook = |delivery: &str| {
        // Each push's body differs, as a forge's do: the same body again is a replay.
        let body = serde_json::json!({
            "ref": "refs/heads/main", "after": sha,
            "compare": format!("https://example.com/bench/serve-app/compare/{delivery}"),
            "repository": { "full_name": "bench/serve-app" },
            "head_commit": { "message": "noop", "author": { "name": "bench" } },
        })
        .to_string();
        let signature = format!(
            "sha256={}",
            ferry_server::hooks::sign(SECRET, body.as_bytes())
        );
        let response = agent
            .post(&format!("{base}/hooks/github"))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", delivery)
            .header("X-Hub-Signature-256", &signature)
            .send(body.as_bytes())
            .unwrap();
        assert_eq!(response.status().as_u16(), 202);
    };
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            * 1e3
    };
    // The newest run past `after` once its first step has started: (id, started_at).
    let wait_started = |after: i64| -> (i64, f64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let runs = get("/api/runs?limit=1");
            if let Some(id) = runs[0]["id"].as_i64().filter(|id| *id > after) {
                let run = get(&format!("/api/runs/{id}"));
                if let Some(at) = run["jobs"][0]["steps"][0]["started_at"].as_f64() {
                    return (id, at);
                }
            }
            assert!(Instant::now() < deadline, "no run started");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    // Warm up: the first run compiles the component.
    hook("warm-up");
    let (mut last, _) = wait_started(0);
    let mut latencies = Vec::new();
    for i in 0..SEQUENTIAL {
        let sent = now_ms();
        hook(&format!("sequential-{i}"));
        let (id, started) = wait_started(last);
        latencies.push(started - sent);
        last = id;
        // Let the run finish so each hook meets an idle server.
        while get(&format!("/api/runs/{id}"))["status"] != "passed" {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    latencies.sort_by(f64::total_cmp);
    let median = latencies[latencies.len() / 2];
    let p99 = latencies[(latencies.len() * 99).div_ceil(100) - 1];

    let started = Instant::now();
    std::thread::scope(|scope| {
        for worker in 0..8 {
            let hook = &hook;
            scope.spawn(move || {
                for i in (worker..BURST).step_by(8) {
                    hook(&format!("burst-{i}"));
                }
            });
        }
    });
    let accepted = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let runs = get(&format!("/api/runs?limit={}", BURST + 10));
        let done = runs
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["id"].as_i64() > Some(last) && r["status"] == "passed")
            .count();
        if done == BURST {
            break;
        }
        assert!(Instant::now() < deadline, "{done} of {BURST} runs passed");
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    let _ = server.kill();
    let _ = server.wait();
    println!("(i) ferry serve, one no-op wasm step per run, 2 cores");
    println!(
        "    webhook to first step ({SEQUENTIAL} hooks one at a time): median {median:.1} ms, p99 {p99:.1} ms"
    );
    println!(
        "    {BURST} hooks at once: accepted in {:.0} ms, all {BURST} runs passed in {:.2} s = {:.0} runs/s",
        accepted.as_secs_f64() * 1e3,
        elapsed.as_secs_f64(),
        BURST as f64 / elapsed.as_secs_f64()
    );
    0
}
