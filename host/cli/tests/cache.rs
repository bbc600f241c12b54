//! The step cache, dependency caches and artifacts, end to end through `ferry run`.

mod common;

use common::{Test, ferry, json};
use std::path::Path;

const RUN: &[&str] = &["run", "--output", "plain"];

/// Where steps note that they really ran: a file outside the repository, so that writing
/// it changes no step's inputs.
struct RanLog(tempfile::TempDir);

impl RanLog {
    fn new() -> RanLog {
        RanLog(tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap())
    }

    fn path(&self) -> std::path::PathBuf {
        self.0.path().join("ran.log")
    }

    /// What ran since the last call, in order.
    fn take(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.path()).unwrap_or_default();
        let _ = std::fs::remove_file(self.path());
        text.lines().map(str::to_string).collect()
    }
}

/// The newest run's `run.json`.
fn summary(t: &Test) -> serde_json::Value {
    let mut all: Vec<serde_json::Value> = std::fs::read_dir(t.path(".ferry/runs"))
        .unwrap()
        .map(|e| json(&std::fs::read_to_string(e.unwrap().path().join("run.json")).unwrap()))
        .collect();
    all.sort_by_key(|s| s["started_at"].as_str().unwrap().to_string());
    all.pop().unwrap()
}

fn step<'a>(summary: &'a serde_json::Value, job: &str, key: &str) -> &'a serde_json::Value {
    summary["jobs"][job]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == key)
        .unwrap_or_else(|| panic!("no step {job}/{key} in {summary}"))
}

fn pipeline(t: Test, log: &Path) -> Test {
    let dir = log.parent().unwrap().display();
    let log = log.display();
    t.file("src/a.txt", "alpha\n")
        .file("src/b.txt", "beta\n")
        .file("docs/readme.md", "docs\n")
        .file(
            "ferry.yaml",
            &format!(
                r#"
name: cached
jobs:
  build:
    permissions: {{ paths: {{ {dir}: write }} }}
    steps:
      - id: a
        run: |
          echo a >> {log}
          mkdir -p out
          tr a-z A-Z < src/a.txt > out/a.txt
          echo "upper=$(cat out/a.txt)" >> "$FERRY_OUTPUT"
        cache: true
        inputs: [src/a.txt]
        outputs: {{ files: [out/a.txt] }}
      - id: b
        run: |
          echo b >> {log}
          echo "size=$(wc -c < src/b.txt | tr -d ' ')" >> "$FERRY_OUTPUT"
        cache: true
        inputs: ["src/b*"]
      - id: probe
        uses: {probe}
        with: {{ case: output, arg: "said=${{{{ steps.b.outputs.size }}}}" }}
        cache: true
        inputs: [docs/**]
      - id: whole
        run: echo whole >> {log}
        cache: true
      - id: never
        run: echo never >> {log}
      - id: check
        run: |
          test "$(cat out/a.txt)" = ALPHA
          echo "seen=${{{{ steps.a.outputs.upper }}}}/${{{{ steps.probe.outputs.said }}}}" >> "$FERRY_OUTPUT"
    outputs:
      seen: ${{{{ steps.check.outputs.seen }}}}
  after:
    needs: build
    permissions: {{ paths: {{ {dir}: write }} }}
    steps:
      - id: c
        run: echo "c ${{{{ needs.build.outputs.seen }}}}" >> {log}
        cache: true
        inputs: []
"#,
                probe = ferry_builtins::fixtures::PROBE,
            ),
        )
}

#[test]
fn an_unchanged_rerun_reuses_every_cacheable_step_with_the_same_outputs() {
    let ran = RanLog::new();
    let t = pipeline(Test::new(), &ran.path());
    ferry(&t, RUN).code(0);
    assert_eq!(ran.take(), ["a", "b", "whole", "never", "c ALPHA/5"]);
    let first = summary(&t);
    // The job workspace loses what step `a` made: the cache has to put it back.
    std::fs::remove_dir_all(t.path(".ferry/work/build/out")).unwrap();

    let done = ferry(&t, RUN).code(0);
    assert_eq!(ran.take(), ["never"], "only the uncached step ran");
    let second = summary(&t);
    assert_eq!(
        first["jobs"]["build"]["outputs"],
        second["jobs"]["build"]["outputs"]
    );
    for key in ["a", "b", "probe", "whole"] {
        let s = step(&second, "build", key);
        assert_eq!(s["status"], "passed");
        assert_eq!(s["cached"]["run"], first["id"], "{key}: {s}");
        assert!(s["cached"]["saved_ms"].as_f64().unwrap() > 0.0);
    }
    assert!(step(&second, "build", "never")["cached"].is_null());
    assert!(step(&second, "after", "c")["cached"].is_object());
    assert!(
        done.stdout.contains("[build/a] ✓ cached in")
            || done.stderr.contains("[build/a] ✓ cached in"),
        "{}{}",
        done.stdout,
        done.stderr
    );
    assert!(done.stdout.contains("5 steps cached"), "{}", done.stdout);

    // `--no-cache` runs everything again.
    ferry(&t, &["run", "--output", "plain", "--no-cache"]).code(0);
    assert_eq!(ran.take().len(), 5);
}

#[test]
fn changing_one_input_file_reruns_exactly_the_steps_that_read_it() {
    let ran = RanLog::new();
    let t = pipeline(Test::new(), &ran.path());
    ferry(&t, RUN).code(0);
    ran.take();

    // `b` reads src/b*, `whole` every file; `a`, `probe` and `c` are untouched.
    std::fs::write(t.path("src/b.txt"), "beta\n").unwrap();
    ferry(&t, RUN).code(0);
    assert_eq!(ran.take(), ["never"], "same content, same key");
    std::fs::write(t.path("src/b.txt"), "beta, changed\n").unwrap();
    ferry(&t, RUN).code(0);
    // `probe` reads b's output, which changed: its inputs changed, so it runs (its outputs
    // then change `c`'s inputs too).
    assert_eq!(ran.take(), ["b", "whole", "never", "c ALPHA/14"]);
    let s = summary(&t);
    assert!(step(&s, "build", "a")["cached"].is_object());
    assert!(step(&s, "build", "probe")["cached"].is_null());

    // A new file that only the whole-workspace step sees.
    std::fs::write(t.path("docs/other.md"), "x\n").unwrap();
    ferry(&t, RUN).code(0);
    assert_eq!(ran.take(), ["whole", "never"]);
}

#[test]
fn secrets_never_reach_a_key_or_a_stored_result() {
    let ran = RanLog::new();
    let log = ran.path().display().to_string();
    let dir = ran.0.path().display().to_string();
    let t = Test::new()
        .file(
            "ferry.yaml",
            &format!(
                r#"
jobs:
  deploy:
    steps:
      - id: uses-secret
        run: |
          echo uses >> {log}
          echo "token is $TOKEN"
          echo "length=${{#TOKEN}}" >> "$FERRY_OUTPUT"
        env: {{ TOKEN: "${{{{ secrets.TOKEN }}}}" }}
        permissions: {{ secrets: [TOKEN], paths: {{ {dir}: write }} }}
        cache: true
      - id: leaks
        run: |
          echo leaks >> {log}
          echo "value=$TOKEN" >> "$FERRY_OUTPUT"
        env: {{ TOKEN: "${{{{ secrets.TOKEN }}}}" }}
        permissions: {{ secrets: [TOKEN], paths: {{ {dir}: write }} }}
        cache: true
      - id: writes
        run: |
          echo writes >> {log}
          echo "$TOKEN" > token.txt
        env: {{ TOKEN: "${{{{ secrets.TOKEN }}}}" }}
        permissions: {{ secrets: [TOKEN], paths: {{ {dir}: write }} }}
        cache: true
        outputs: {{ files: [token.txt] }}
  npm:
    cache: {{ key: npm-v1, paths: [.npmrc] }}
    steps:
      - run: echo "//registry/:_authToken=$TOKEN" > .npmrc
        env: {{ TOKEN: "${{{{ secrets.TOKEN }}}}" }}
        permissions: {{ secrets: [TOKEN] }}
"#
            ),
        )
        .env("TOKEN", "first-secret-value");
    let done = ferry(&t, RUN).code(0);
    assert_eq!(ran.take(), ["uses", "leaks", "writes"]);
    assert!(
        done.stdout
            .contains("`token.txt` holds a secret, and secrets are never stored"),
        "{}",
        done.stdout
    );
    assert!(
        done.stdout
            .contains("cache `npm-v1`: cannot save: `.npmrc` holds a secret"),
        "{}",
        done.stdout
    );
    assert!(done.stdout.contains("token is ***"), "{}", done.stdout);
    assert!(
        done.stdout.contains("not cached: an output holds a secret"),
        "{}",
        done.stdout
    );
    // Another value of the secret: the key is the same, so the stored result is used.
    let mut t = t;
    t.env.retain(|(k, _)| k != "TOKEN");
    t.env.push(("TOKEN".into(), "second-secret-value".into()));
    ferry(&t, RUN).code(0);
    assert_eq!(
        ran.take(),
        ["leaks", "writes"],
        "the secret's value is no part of the key"
    );
    let stored = walk(&t.path(".ferry/cache"));
    let mut texts = Vec::new();
    for entry in &stored {
        let bytes = std::fs::read(entry).unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        for secret in ["first-secret-value", "second-secret-value"] {
            assert!(!text.contains(secret), "{} holds a secret", entry.display());
        }
        texts.push(text);
    }
    // The walk read the stored results: the cached step's output and masked log are there.
    assert!(
        texts
            .iter()
            .any(|t| t.contains("\"length\":\"18\"") && t.contains("token is ***")),
        "the cached result of `uses-secret` is not among {} files: {stored:?}",
        stored.len()
    );
}

/// The keys `ferry cache ls` lists, most recently used first.
fn cached_keys(t: &Test) -> Vec<String> {
    let listed = ferry(t, &["cache", "ls", "--json"]).code(0);
    json(&listed.stdout)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn dependency_caches_restore_by_key_and_prefix_and_save_only_when_the_job_passes() {
    let t = Test::new().file("Cargo.lock", "v1\n").file(
        "ferry.yaml",
        r#"
jobs:
  build:
    cache:
      key: deps-${{ hashFiles('Cargo.lock') }}
      restore-keys: [deps-]
      paths: [.deps]
    steps:
      - run: |
          mkdir -p .deps
          echo "had: $(cat .deps/list 2>/dev/null | tr '\n' ' ')"
          cat Cargo.lock >> .deps/list
          test ! -e fail-now
"#,
    );
    let first = ferry(&t, RUN).code(0);
    assert!(
        first.stdout.contains("no entry; saved when the job passes"),
        "{}",
        first.stdout
    );
    let second = ferry(&t, RUN).code(0);
    assert!(second.stdout.contains(": restored ("), "{}", second.stdout);
    assert!(second.stdout.contains("had: v1"), "{}", second.stdout);
    // A new lock file: the newest entry under the prefix is restored, and a new one saved.
    std::fs::write(t.path("Cargo.lock"), "v2\n").unwrap();
    let third = ferry(&t, RUN).code(0);
    assert!(third.stdout.contains("restored `deps-"), "{}", third.stdout);
    assert!(third.stdout.contains("had: v1 "), "{}", third.stdout);
    // A failing job saves nothing.
    std::fs::write(t.path("Cargo.lock"), "v3\n").unwrap();
    std::fs::write(t.path("fail-now"), "").unwrap();
    let failed = ferry(&t, RUN).code(1);
    assert!(!failed.stdout.contains("saved ("), "{}", failed.stdout);
    let keys = cached_keys(&t);
    assert_eq!(keys.len(), 2, "{keys:?}");
}

#[test]
fn eviction_holds_the_size_limit_and_keeps_the_most_recent_entries() {
    let t = Test::new()
        .file(
            "ferry.yaml",
            r#"
jobs:
  build:
    cache:
      key: blob-${{ vars.n }}
      paths: [blob]
    steps:
      - run: head -c 100000 /dev/zero | tr '\0' "${{ vars.n }}" > blob
"#,
        )
        .env("FERRY_CACHE_SIZE", "250KB");
    for n in 1..=5 {
        let var = format!("n={n}");
        let done = ferry(&t, &["run", "--output", "plain", "--var", &var]).code(0);
        if n >= 3 {
            assert!(
                done.stdout.contains("cache: evicted 1 least recently used"),
                "{}",
                done.stdout
            );
        }
    }
    let size: u64 = walk(&t.path(".ferry/cache"))
        .iter()
        .filter(|p| p.extension().is_none_or(|e| e != "lock"))
        .map(|p| p.metadata().unwrap().len())
        .sum();
    assert!(size <= 250_000, "the cache holds {size} bytes");
    assert_eq!(cached_keys(&t), ["blob-5", "blob-4"]);
    ferry(&t, &["cache", "prune", "--max-size", "0"])
        .code(0)
        .stderr_has("evicted 2 entries");
    ferry(&t, &["cache", "clear"]).code(0);
    ferry(&t, &["cache", "ls"]).code(0).stderr_has("is empty");
}

#[test]
fn a_save_killed_halfway_leaves_no_entry() {
    let t = Test::new().file(
        "ferry.yaml",
        r#"
jobs:
  build:
    cache: { key: big, paths: [big] }
    steps:
      - run: mkdir -p big && head -c 300000000 /dev/zero > big/file
"#,
    );
    let mut child = t
        .command()
        .args(RUN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let blobs = t.path(".ferry/cache/blobs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // The moment the blob is being written: a temporary file in the store. A fast poll,
    // not an event: the kill must land while the file exists, and nothing announces it.
    loop {
        let writing = walk(&blobs).iter().any(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".tmp"))
        });
        if writing {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the save never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "ferry ended before the save was seen"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    ferry(&t, &["cache", "ls"]).code(0).stderr_has("is empty");
    ferry(&t, &["run", "--output", "plain"])
        .code(0)
        .stdout_has("cache `big`: no entry")
        .stdout_has("cache `big`: saved");
    ferry(&t, &["run", "--output", "plain"])
        .code(0)
        .stdout_has("cache `big`: restored");
}

#[cfg(unix)]
#[test]
fn artifacts_round_trip_byte_exact_with_modes_links_and_empty_directories() {
    let listing = "find dist | sort | while read -r p; do if [ -L \"$p\" ]; then echo \"$p link $(readlink \"$p\")\"; elif [ -d \"$p\" ]; then echo \"$p dir $(stat -c %a \"$p\")\"; else echo \"$p file $(stat -c %a \"$p\") $(sha256sum < \"$p\" | cut -c1-16)\"; fi; done";
    let t = Test::new().file(
        "ferry.yaml",
        &format!(
            r#"
jobs:
  build:
    steps:
      - run: |
          mkdir -p dist/bin dist/empty dist/deep/er
          printf '#!/bin/sh\necho hi\n' > dist/bin/tool && chmod 750 dist/bin/tool
          head -c 70000 /dev/urandom > dist/data.bin && chmod 600 dist/data.bin
          printf '' > dist/deep/er/empty-file
          ln -s data.bin dist/link
          chmod 700 dist/empty
          {listing} > listing.txt
        outputs:
          artifacts:
            dist: [dist, listing.txt, "!dist/**/*.tmp"]
  ship:
    needs: build
    artifacts: [dist, {{ name: dist, path: again }}]
    steps:
      - run: |
          {listing} > got.txt
          diff listing.txt got.txt
          cd again && {listing} > ../again.txt && cd .. && diff listing.txt again.txt
          ./dist/bin/tool
"#
        ),
    );
    let done = ferry(&t, RUN).code(0);
    assert!(done.stdout.contains("[ship/step-1] hi"), "{}", done.stdout);
    assert!(
        done.stdout.contains("artifact `dist`: 4 files"),
        "{}",
        done.stdout
    );
    let list = ferry(&t, &["artifacts", "latest"]).code(0);
    assert!(list.stdout.contains("dist"), "{}", list.stdout);
    assert!(list.stdout.contains("build/step-1"), "{}", list.stdout);
    ferry(&t, &["artifacts", "get", "latest", "dist", "-o", "out"]).code(0);
    let workspace = t.path(".ferry/work/build");
    for rel in ["dist/data.bin", "dist/bin/tool", "listing.txt"] {
        assert_eq!(
            std::fs::read(workspace.join(rel)).unwrap(),
            std::fs::read(t.path("out").join(rel)).unwrap(),
            "{rel}"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| std::fs::metadata(t.path(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("out/dist/bin/tool"), 0o750);
    assert_eq!(mode("out/dist/data.bin"), 0o600);
    assert_eq!(mode("out/dist/empty"), 0o700);
    assert!(
        t.path("out/dist/empty")
            .read_dir()
            .unwrap()
            .next()
            .is_none()
    );
    // A second run stores nothing new: the same contents are already there.
    let before = walk(&t.path(".ferry/artifacts/blobs")).len();
    ferry(&t, &["run", "--output", "plain"]).code(0);
    assert_eq!(
        walk(&t.path(".ferry/artifacts/blobs")).len(),
        before + 2,
        "only the new random file and the listing of it"
    );
    ferry(&t, &["artifacts", "get", "latest", "nope"])
        .code(2)
        .stderr_has("has no artifact `nope`")
        .stderr_has("it uploaded `dist`");
}

#[test]
fn a_file_an_earlier_step_wrote_is_hashed_as_it_is_now() {
    let t = Test::new().file(
        "ferry.yaml",
        &format!(
            r#"
jobs:
  build:
    steps:
      - run: echo "${{{{ vars.n }}}}" > generated.txt
      - id: reads
        uses: {probe}
        with: {{ case: read, arg: /workspace/generated.txt }}
        cache: true
        inputs: [generated.txt]
"#,
            probe = ferry_builtins::fixtures::PROBE,
        ),
    );
    let run = |n: &str| {
        let var = format!("n={n}");
        ferry(&t, &["run", "--output", "plain", "--var", &var]).code(0);
        step(&summary(&t), "build", "reads")["cached"].is_object()
    };
    assert!(!run("1"));
    assert!(run("1"), "same content: reused");
    assert!(
        !run("22"),
        "the first step changed the file after the sync: not reused"
    );
    assert!(run("22"));
}

/// Two machines (two checkouts with their own `.ferry`) share a cache through a registry
/// on loopback: what one ran, the other reuses, files and dependency caches included.
#[test]
fn a_remote_cache_in_a_registry_is_shared_between_machines() {
    let registry = common::Registry::start();
    let remote = format!("127.0.0.1:{}/team/ferry-cache", registry.port);
    let ran = RanLog::new();
    let pipeline = format!(
        r#"
jobs:
  build:
    cache: {{ key: deps-v1, paths: [.deps] }}
    permissions: {{ paths: {{ {dir}: write }} }}
    steps:
      - id: compile
        run: |
          echo compile >> {log}
          mkdir -p out .deps
          cat src.txt src.txt > out/bin
          echo fetched > .deps/lib
          echo "size=$(wc -c < out/bin | tr -d ' ')" >> "$FERRY_OUTPUT"
        cache: true
        inputs: [src.txt]
        outputs: {{ files: [out] }}
      - run: test "$(cat out/bin)" = "$(printf 'hello\nhello')" && cat .deps/lib
"#,
        log = ran.path().display(),
        dir = ran.0.path().display()
    );
    let machine = || {
        Test::new()
            .file("src.txt", "hello\n")
            .file("ferry.yaml", &pipeline)
            .env("FERRY_CACHE_REMOTE", &remote)
    };
    let first = machine();
    let done = ferry(&first, RUN).code(0);
    assert!(!done.stdout.contains("cache: remote"), "{}", done.stdout);
    assert_eq!(ran.take(), ["compile"]);

    let second = machine();
    let done = ferry(&second, RUN).code(0);
    assert_eq!(
        ran.take(),
        Vec::<String>::new(),
        "the second machine reuses the first's result"
    );
    done.stdout_has("[build/compile] ✓ cached")
        .stdout_has("cache `deps-v1`: restored")
        .stdout_has("fetched");
    assert_eq!(
        summary(&second)["jobs"]["build"]["outputs"],
        summary(&first)["jobs"]["build"]["outputs"]
    );
    // Another tool sees ordinary OCI artifacts.
    let tags = common::tool(
        "skopeo",
        &[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{remote}"),
        ],
    );
    assert!(tags.contains("step-"), "{tags}");
    assert!(tags.contains("deps-"), "{tags}");

    // An unreachable remote never fails a run: it is said once at the end.
    let mut third = machine();
    third.env.retain(|(k, _)| k != "FERRY_CACHE_REMOTE");
    let third = third.env("FERRY_CACHE_REMOTE", "127.0.0.1:9/none/here");
    let done = ferry(&third, RUN).code(0);
    assert!(
        done.stdout
            .contains("cache: remote cache `127.0.0.1:9/none/here`"),
        "{}",
        done.stdout
    );
    assert_eq!(ran.take(), ["compile"]);
}

/// `image` with nothing but the workspace is a function of its inputs and files: cached
/// without asking once it declares what it writes, and given back byte for byte.
#[test]
fn a_pure_built_in_is_cached_by_default_when_it_declares_what_it_writes() {
    let t = Test::new()
        .file("Dockerfile", "FROM scratch\nCOPY a /a\n")
        .file("a", "a\n")
        .file(
            "ferry.yaml",
            r#"
jobs:
  build:
    steps:
      - id: declared
        uses: image
        with: { path: target/one }
        outputs: { files: [target/one] }
        permissions: { workspace: write }
      - id: undeclared
        uses: image
        with: { path: target/two }
        permissions: { workspace: write }
      - id: refused
        uses: image
        with: { path: target/three }
        outputs: { files: [target/three] }
        permissions: { workspace: write }
        cache: false
"#,
        );
    ferry(&t, RUN).code(0);
    let layout = t.path(".ferry/work/build/target/one/index.json");
    let first = std::fs::read(&layout).unwrap();
    std::fs::remove_dir_all(t.path(".ferry/work/build/target")).unwrap();
    ferry(&t, RUN).code(0);
    let s = summary(&t);
    assert!(step(&s, "build", "declared")["cached"].is_object(), "{s}");
    assert!(step(&s, "build", "undeclared")["cached"].is_null(), "{s}");
    assert!(step(&s, "build", "refused")["cached"].is_null(), "{s}");
    assert_eq!(std::fs::read(&layout).unwrap(), first);
    // A new file in the context is a new result.
    std::fs::write(t.path("a"), "changed\n").unwrap();
    ferry(&t, RUN).code(0);
    assert!(step(&summary(&t), "build", "declared")["cached"].is_null());
}

#[test]
fn a_deploy_never_comes_from_the_cache() {
    let t = Test::new().file(
        "ferry.yaml",
        "jobs:\n  ship:\n    steps:\n      - uses: deploy\n        with: { target: dir }\n        cache: true\n",
    );
    ferry(&t, &["validate"])
        .code(2)
        .stderr_has("a `deploy` step cannot come from the cache")
        .stderr_has("ferry.yaml:6:16");
}

#[test]
fn another_venv_or_toolchain_on_path_or_a_changed_program_is_another_key() {
    // Two environments, each with a `tool` of its own, as two venvs each have a `pytest`.
    let t = Test::new();
    for venv in ["venv-a", "venv-b"] {
        let bin = t.path(&format!("{venv}/bin"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(
            bin.join("tool"),
            format!("#!/bin/sh\necho 1..1\necho 'ok 1 - {venv}'\n"),
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(bin.join("tool"), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
    }
    let t = t.file(
        "ferry.yaml",
        "jobs:\n  t:\n    permissions: { exec: [tool] }\n    steps:\n      - id: prog\n        uses: test\n        with: { command: tool, format: tap }\n        cache: true\n        inputs: []\n      - id: script\n        run: tool\n        cache: true\n        inputs: []\n",
    );
    let system = std::env::var("PATH").unwrap_or_default();
    let on = |venv: &str| format!("{}:{system}", t.path(&format!("{venv}/bin")).display());
    let cached = |path: &str| -> Vec<bool> {
        let done = t.command().env("PATH", path).args(RUN).output().unwrap();
        assert!(
            done.status.success(),
            "{}{}",
            String::from_utf8_lossy(&done.stdout),
            String::from_utf8_lossy(&done.stderr)
        );
        let summary = summary(&t);
        ["prog", "script"]
            .iter()
            .map(|key| step(&summary, "t", key)["cached"].is_object())
            .collect()
    };
    assert_eq!(cached(&on("venv-a")), [false, false], "the first run");
    assert_eq!(cached(&on("venv-a")), [true, true], "nothing changed");
    assert_eq!(
        cached(&on("venv-b")),
        [false, false],
        "another venv first on PATH"
    );
    std::fs::write(
        t.path("venv-b/bin/tool"),
        "#!/bin/sh\necho 1..1\necho 'ok 1 - venv-b, upgraded'\n",
    )
    .unwrap();
    assert_eq!(
        cached(&on("venv-b")),
        [false, false],
        "the program changed in place"
    );
    assert_eq!(
        cached(&on("venv-a")),
        [true, true],
        "the first venv's results still stand"
    );
}

#[test]
fn without_inputs_a_step_is_keyed_by_the_repository_and_declared_outputs_not_leftovers() {
    // An earlier step leaves a build directory that differs every run (clippy's `target/`)
    // and declares one generated file; a formatter rewrites a file of the repository.
    let t = Test::new().file("src/lib.txt", "code\n").file(
        "ferry.yaml",
        r#"
jobs:
  build:
    steps:
      - run: |
          mkdir -p target && date +%s%N > target/stamp
          echo "${{ vars.generated }}" > gen.txt
          echo "${{ vars.formatted }}" > src/lib.txt
        outputs: { files: [gen.txt] }
      - id: later
        run: cat gen.txt src/lib.txt
        cache: true
"#,
    );
    let run = |generated: &str, formatted: &str| {
        let vars = [
            format!("generated={generated}"),
            format!("formatted={formatted}"),
        ];
        ferry(
            &t,
            &[
                "run", "--output", "plain", "--var", &vars[0], "--var", &vars[1],
            ],
        )
        .code(0);
        step(&summary(&t), "build", "later")["cached"].is_object()
    };
    assert!(!run("g1", "f1"), "the first run");
    assert!(
        run("g1", "f1"),
        "only the leftover build directory changed: reused"
    );
    assert!(!run("g2", "f1"), "a declared output changed");
    assert!(
        !run("g2", "f2"),
        "a repository file an earlier step rewrote changed"
    );
    assert!(run("g2", "f2"));
}
