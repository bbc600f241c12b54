//! Hostile host programs, run as `run:` steps and as programs a wasm step starts (`uses: test`
//! with a `command:`): each is contained, each names its denial, and a sibling job finishes
//! every time.
#![cfg(target_os = "linux")]

mod common;

use common::Test;
use std::io::{Read, Write};

/// A value the host holds that no step may print.
const SECRET: &str = "hunter2-host-only-d3adb33f";

/// One job per hostile script, twice: as `run:` and as a program the built-in `test` step
/// starts. `extra` is more YAML for both (a grant).
fn pipeline(cases: &[(&str, &str)]) -> String {
    let mut yaml =
        String::from("jobs:\n  sibling:\n    steps:\n      - run: echo sibling finished\n");
    for (name, extra) in cases {
        yaml.push_str(&format!(
            "  {name}-run:\n    timeout-minutes: 0.5\n    steps:\n      - run: sh scripts/{name}.sh\n{extra}"
        ));
        let extra = extra.replace("permissions: {", "permissions: { exec: [sh],");
        let extra = if extra.is_empty() {
            "        permissions: { exec: [sh] }\n".to_string()
        } else {
            extra
        };
        yaml.push_str(&format!(
            "  {name}-exec:\n    timeout-minutes: 0.5\n    steps:\n      - uses: test\n        with: {{ command: sh scripts/{name}.sh, format: junit, report: no-report.xml }}\n{extra}"
        ));
    }
    yaml
}

/// The log lines of one job.
fn job_lines<'a>(stdout: &'a str, job: &str) -> Vec<&'a str> {
    let prefix = format!("[{job}");
    stdout.lines().filter(|l| l.starts_with(&prefix)).collect()
}

fn both<'a>(stdout: &'a str, case: &str) -> [(String, Vec<&'a str>); 2] {
    ["run", "exec"].map(|how| {
        let job = format!("{case}-{how}");
        let lines = job_lines(stdout, &format!("{job}/"));
        (job, lines)
    })
}

#[test]
fn hostile_programs_are_contained_and_each_denial_is_named() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    std::fs::write(home.path().join(".ssh/id_ed25519"), SECRET).unwrap();
    std::fs::create_dir_all(home.path().join(".docker")).unwrap();
    std::fs::write(home.path().join(".docker/config.json"), SECRET).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let home_dir = home.path().display().to_string();
    let outside_dir = outside.path().display().to_string();

    // A server on the host's loopback that no step is granted.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();

    let scripts = [
        (
            "environ",
            // Every environment it can name: its parent's, PID 1's, all of /proc.
            "cat /proc/$PPID/environ /proc/1/environ 2>&1 | tr '\\0' '\\n'\n\
             for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ; done 2>/dev/null\n\
             echo \"processes seen: $(ls -d /proc/[0-9]* | wc -l)\"\n"
                .to_string(),
        ),
        (
            "files",
            format!(
                "cat {home_dir}/.ssh/id_ed25519\ncat {home_dir}/.docker/config.json\n\
                 cat $FERRY_PIPELINE_DIR/.ferry/work/sibling/secret.txt\n\
                 ls $FERRY_PIPELINE_DIR/.ferry/runs\nexit 1\n"
            ),
        ),
        (
            "write",
            format!(
                "echo escaped > {outside_dir}/escaped.txt\n\
                 echo escaped > $FERRY_PIPELINE_DIR/escaped.txt\n\
                 touch /usr/escaped\nexit 1\n"
            ),
        ),
        (
            "direct",
            format!(
                "curl -sS -m 5 --noproxy '*' http://127.0.0.1:{port}/ && echo CONNECTED\nexit 1\n"
            ),
        ),
        (
            "killer",
            "kill -9 $PPID\nkill -9 -1\necho still here\n".to_string(),
        ),
        (
            "forkbomb",
            "bomb() { bomb | bomb & }\nbomb\nsleep 2\necho \"bomb bounded\"\n".to_string(),
        ),
        (
            "membomb",
            "python3 -c 'x = bytearray(1 << 30)' && echo ALLOCATED\nexit 1\n".to_string(),
        ),
        (
            "setuid",
            "cp /usr/bin/cat /tmp/suid-cat && chmod 4755 /tmp/suid-cat\n\
             /tmp/suid-cat /proc/self/status | grep -E '^(CapEff|NoNewPrivs)'\n"
                .to_string(),
        ),
    ];
    let mut t = Test::new()
        .env("HOME", &home_dir)
        .env("FERRY_TEST_HOST_SECRET", SECRET)
        .file(".ferry-ignore-me", "");
    for (name, script) in &scripts {
        t = t.file(&format!("scripts/{name}.sh"), script);
    }
    let cases: Vec<(&str, &str)> = vec![
        ("environ", ""),
        ("files", ""),
        ("write", ""),
        ("direct", ""),
        ("killer", ""),
        ("forkbomb", ""),
        ("membomb", "        permissions: { memory: 256MiB }\n"),
        ("setuid", ""),
    ];
    let t = t.file("ferry.yaml", &pipeline(&cases)).args(&[
        "run",
        "--output",
        "plain",
        "--no-fail-fast",
    ]);
    // The sibling job's workspace holds a file the others must not read.
    std::fs::create_dir_all(t.path(".ferry/work/sibling")).unwrap();
    std::fs::write(t.path(".ferry/work/sibling/secret.txt"), SECRET).unwrap();

    let done = t.run();
    let stdout = done.stdout.clone();
    assert!(
        stdout.contains("[sibling/step-1] sibling finished"),
        "{stdout}"
    );
    assert!(!stdout.contains(SECRET), "a host secret leaked:\n{stdout}");

    for (job, lines) in both(&stdout, "environ") {
        let text = lines.join("\n");
        assert!(!text.contains("FERRY_TEST_HOST_SECRET"), "{job}: {text}");
        // Its own processes only: the shell and the few it runs to count (the host has
        // hundreds).
        let seen: usize = text
            .lines()
            .find_map(|l| l.split("processes seen: ").nth(1))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{job}: {text}"));
        assert!(seen <= 8, "{job} sees {seen} processes: {text}");
    }
    for (job, lines) in both(&stdout, "files") {
        let text = lines.join("\n");
        for hidden in [
            format!("{home_dir}/.ssh/id_ed25519"),
            format!("{home_dir}/.docker/config.json"),
        ] {
            assert!(
                text.contains(&format!(
                    "`{hidden}` exists on the host but not in this step's sandbox"
                )),
                "{job} does not name the denial of {hidden}: {text}"
            );
        }
        assert!(text.contains("No such file or directory"), "{job}: {text}");
    }
    for (job, lines) in both(&stdout, "write") {
        let text = lines.join("\n");
        assert!(text.contains("Read-only file system"), "{job}: {text}");
        assert!(
            text.contains(&format!(
                "is in `{outside_dir}`, which exists on the host but not in this step's sandbox; to write there, grant:"
            )),
            "{job} does not name the folder it could not write: {text}"
        );
    }
    assert!(!outside.path().join("escaped.txt").exists());
    assert!(!t.path("escaped.txt").exists());
    assert!(!std::path::Path::new("/usr/escaped").exists());
    for (job, lines) in both(&stdout, "direct") {
        let text = lines.join("\n");
        assert!(!text.contains("CONNECTED"), "{job}: {text}");
        assert!(text.contains("Couldn't connect to server"), "{job}: {text}");
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a step reached the host's loopback: {other:?}"),
    }
    for (job, lines) in both(&stdout, "killer") {
        assert!(!lines.is_empty(), "{job} left no log");
    }
    for (job, lines) in both(&stdout, "forkbomb") {
        let text = lines.join("\n");
        assert!(
            text.contains("Cannot fork")
                || text.contains("bomb bounded")
                || text.contains("timed out"),
            "{job}: {text}"
        );
    }
    // Nothing any case started lives on: not the bomb's thousands, not a background job.
    wait_until_gone(
        |cmdline| cmdline.contains("scripts/") && cmdline.ends_with(".sh "),
        "processes outlived their steps",
    );
    for (job, lines) in both(&stdout, "membomb") {
        let text = lines.join("\n");
        assert!(!text.contains("ALLOCATED"), "{job}: {text}");
        assert!(text.contains("MemoryError"), "{job}: {text}");
    }
    for (job, lines) in both(&stdout, "setuid") {
        let text = lines.join("\n");
        assert!(text.contains("CapEff:\t0000000000000000"), "{job}: {text}");
        assert!(text.contains("NoNewPrivs:\t1"), "{job}: {text}");
    }
}

/// Waits, within bounds, until no process on the host has a command line (arguments joined
/// by spaces) that `matches`: the kernel kills a namespace's processes when its first one
/// exits, and dying takes a moment.
fn wait_until_gone(matches: impl Fn(&str) -> bool, failure: &str) {
    let running = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| matches(c))
            .collect()
    };
    common::eventually(
        || running().is_empty().then_some(()),
        || format!("{failure}: {:?}", running()),
    );
}

/// A tiny HTTP server on the host's loopback answering `body` to every request.
fn serve(body: &'static str) -> (u16, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, handle)
}

#[test]
fn granted_hosts_are_reached_through_the_proxy_and_others_are_refused_by_name() {
    let (granted, _a) = serve("granted-body");
    let (other, _b) = serve("other-body");
    let script = format!(
        "curl -sS -m 5 http://127.0.0.1:{granted}/ && echo\n\
         curl -sS -m 5 --socks5-hostname \"127.0.0.1:3128\" http://127.0.0.1:{granted}/socks && echo\n\
         curl -sS -m 5 http://127.0.0.1:{other}/ ; echo \"plain: $?\"\n\
         curl -sS -m 5 -p https://example.invalid/ ; echo \"connect: $?\"\n"
    );
    let yaml = format!(
        "jobs:\n  net:\n    steps:\n      - run: sh net.sh\n        permissions: {{ network: [\"127.0.0.1:{granted}\"] }}\n"
    );
    let done = Test::new()
        .file("net.sh", &script)
        .file("ferry.yaml", &yaml)
        .args(&["run", "--output", "plain"])
        .run();
    let out = done.stdout.clone();
    assert_eq!(out.matches("granted-body").count(), 2, "{out}");
    assert!(!out.contains("other-body"), "{out}");
    for target in [
        format!("127.0.0.1:{other}"),
        "example.invalid:443".to_string(),
    ] {
        assert!(
            out.contains(&format!(
                "connection to `{target}` refused: it is not granted"
            )),
            "no denial named for {target}: {out}"
        );
        assert!(
            out.contains(&format!("network: [\"{target}\"]")),
            "no grant hint for {target}: {out}"
        );
    }
    done.code(0);
}

/// A Python package index on the host's loopback: a folder in the PEP 503 layout holding
/// one pure wheel, served by Python's own HTTP server. Killed when dropped.
#[test]
fn pip_installs_from_a_granted_loopback_index_and_from_nothing_else() {
    let index = common::PythonIndex::start();
    let script = format!(
        "python3 -m venv .venv\n\
         .venv/bin/pip install --disable-pip-version-check --retries 0 --index-url http://127.0.0.1:{}/simple/ hello-ferry\n\
         .venv/bin/python -c 'import hello_ferry; print(hello_ferry.GREETING)'\n",
        index.port
    );
    let pipeline = |grant: &str| {
        format!("jobs:\n  pip:\n    steps:\n      - run: sh pip.sh\n        permissions: {grant}\n")
    };
    let t = Test::new()
        .file("pip.sh", &script)
        .file(
            "ferry.yaml",
            &pipeline(&format!("{{ network: [\"127.0.0.1:{}\"] }}", index.port)),
        )
        .args(&["run", "--output", "plain"]);
    t.run()
        .code(0)
        .stdout_has("Successfully installed hello-ferry-1.0")
        .stdout_has("hello from the loopback index");
    // Without the grant there is no way out: no proxy, and no route.
    let t = t.file("ferry.yaml", &pipeline("{}"));
    let done = t.run().code(1);
    assert!(
        !done.stdout.contains("Successfully installed"),
        "{}",
        done.stdout
    );
}

/// A program that undoes what ties it to its step (its parent-death signal, its session and
/// process group) still dies when the step times out: ferry kills its namespace through
/// PID 1's pidfd.
#[test]
fn a_program_that_detaches_itself_dies_with_its_step() {
    let marker = format!("detached-{}", std::process::id());
    // `exec` makes the program PID 1 of its namespace: the one process ferry's sandbox
    // hangs on.
    let t = Test::new()
        .file(
            "detach.py",
            "import ctypes, os, time\nassert os.getpid() == 1\nctypes.CDLL(None).prctl(1, 0)\ntry:\n    os.setsid()\nexcept OSError:\n    pass  # already a session leader\nprint('detached', flush=True)\ntime.sleep(300)\n",
        )
        .file(
            "ferry.yaml",
            &format!(
                "jobs:\n  d:\n    timeout-minutes: 0.05\n    steps:\n      - run: exec python3 detach.py {marker}\n"
            ),
        )
        .args(&["run", "--output", "plain"]);
    let done = t.run().code(1);
    assert!(done.stdout.contains("timed out"), "{}", done.stdout);
    assert!(done.stdout.contains("detached"), "{}", done.stdout);
    wait_until_gone(
        |cmdline| cmdline.contains(&marker),
        "the detached program outlived its step",
    );
}

/// A step granted a container engine runs its programs as root of namespaces of their own,
/// with every capability there: any command could get that through the engine anyway
/// (`buildah unshare`). None of it undoes the sandbox: the view's mounts are locked, PID 1
/// does not show ferry's memory, the network is the step's.
#[test]
fn a_granted_container_engine_cannot_undo_the_sandbox() {
    let read_only = tempfile::tempdir().unwrap();
    let ro = read_only.path().display().to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let shadow = if std::path::Path::new("/etc/shadow").exists() {
        "umount /etc/shadow && echo UNMASKED\nhead -c 64 /etc/shadow | grep -q . && echo SHADOW-READ\n"
    } else {
        ""
    };
    let script = format!(
        "echo \"engine runs as $(id -u), caps $(grep CapEff /proc/self/status)\"\n\
         mount -o remount,rw,bind {ro} && echo REMOUNTED\n\
         echo escaped > {ro}/escaped.txt\n\
         umount -l {ro} && echo UNMOUNTED\n\
         {shadow}\
         tr '\\0' '\\n' < /proc/1/environ\n\
         curl -sS -m 5 --noproxy '*' http://127.0.0.1:{port}/ && echo CONNECTED\n\
         echo engine script done\n"
    );
    let yaml = format!(
        "jobs:\n  engine:\n    timeout-minutes: 1\n    steps:\n      - uses: test\n        with: {{ command: sh scripts/engine.sh, format: junit, report: no-report.xml }}\n        permissions: {{ exec: [sh, buildah], paths: {{ {ro}: read }} }}\n"
    );
    let t = Test::new()
        .env("FERRY_TEST_HOST_SECRET", SECRET)
        .file("scripts/engine.sh", &script)
        .file("ferry.yaml", &yaml)
        .args(&["run", "--output", "plain"]);
    let stdout = t.run().stdout;
    assert!(stdout.contains("engine script done"), "{stdout}");
    assert!(stdout.contains("engine runs as 0"), "{stdout}");
    for breach in [
        "REMOUNTED",
        "UNMOUNTED",
        "UNMASKED",
        "SHADOW-READ",
        "CONNECTED",
        SECRET,
    ] {
        assert!(!stdout.contains(breach), "{breach}:\n{stdout}");
    }
    assert!(!read_only.path().join("escaped.txt").exists());
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the engine connected to an ungranted port"
    );
}

#[test]
fn a_job_cannot_point_the_toolchain_rules_at_host_secrets() {
    // What the host keeps outside the sandbox's view (the test's own folder is hidden under
    // the sandbox's private `/tmp`).
    let t = Test::new();
    let secrets = t.path("host-home/.ssh");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("id_ed25519"), SECRET).unwrap();
    // A program a step may run: its directory is shown, so make one beside the key.
    std::fs::write(secrets.join("helper"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        secrets.join("helper"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let key = secrets.join("id_ed25519");
    let dir = secrets.display();
    // Each job plants a file in its workspace that the toolchain rules read: a script whose
    // `#!` names the key's folder, a venv whose `pyvenv.cfg` says its Python is there, a link
    // to a program there, and a `RUSTUP_HOME` set by the pipeline itself.
    let plant = |name: &str, setup: &str, grant: &str, env: &str| {
        format!(
            "  {name}:\n    steps:\n      - run: |\n          {setup}\n      - run: cat {key} 2>&1 || true\n        env: {{ {env} }}\n        permissions: {{ exec: [{grant}] }}\n",
            key = key.display()
        )
    };
    let mut yaml = String::from("jobs:\n");
    yaml.push_str(&plant(
        "shebang",
        &format!("mkdir -p tools && printf '#!{dir}/helper\\n' > tools/x && chmod +x tools/x && echo tools >> \"$FERRY_PATH\""),
        "x",
        "",
    ));
    yaml.push_str(&plant(
        "venv",
        &format!("mkdir -p v/bin && printf 'home = {dir}/bin\\n' > v/pyvenv.cfg && printf '#!/bin/sh\\n' > v/bin/py && chmod +x v/bin/py"),
        "v/bin/py",
        "",
    ));
    yaml.push_str(&plant(
        "link",
        &format!("mkdir -p tools && ln -sf {dir}/helper tools/helper"),
        "tools/helper",
        "",
    ));
    // The same, spelled through the workspace with `..`: inside by its text, outside in fact.
    yaml.push_str(&plant(
        "dotdot-venv",
        "mkdir -p v/bin && echo \"home = $PWD/../../../host-home/.ssh/bin\" > v/pyvenv.cfg && printf '#!/bin/sh\\n' > v/bin/py && chmod +x v/bin/py",
        "v/bin/py",
        "",
    ));
    yaml.push_str(&plant(
        "dotdot-shebang",
        "mkdir -p tools && printf '#!%s/../../../host-home/.ssh/helper\\n' \"$PWD\" > tools/x && chmod +x tools/x",
        "tools/x",
        "",
    ));
    // A workspace program reached by a path that does not start with the workspace.
    let outside_spelling = format!(
        "/usr/..{}/.ferry/work/spelled/tools",
        std::fs::canonicalize(t.path("")).unwrap().display()
    );
    yaml.push_str(&plant(
        "spelled",
        &format!("mkdir -p tools && printf '#!{dir}/helper\\n' > tools/y && chmod +x tools/y"),
        "y",
        &format!("PATH: \"{outside_spelling}:/usr/bin:/bin\""),
    ));
    yaml.push_str(&plant(
        "rustup",
        "mkdir -p tools && cp /bin/true tools/rustup",
        "tools/rustup",
        &format!("RUSTUP_HOME: {dir}"),
    ));
    let t = t.file("ferry.yaml", &yaml);
    let done = common::ferry(&t, &["run", "--output", "plain", "--no-fail-fast"]);
    let out = format!("{}{}", done.stdout, done.stderr);
    assert!(!out.contains(SECRET), "a job read the host's key: {out}");
    for job in [
        "shebang",
        "venv",
        "link",
        "rustup",
        "dotdot-venv",
        "dotdot-shebang",
        "spelled",
    ] {
        assert!(
            out.contains(&format!(
                "[{job}/step-2] cat: {}: No such file or directory",
                key.display()
            )),
            "{job}: {out}"
        );
    }
}
