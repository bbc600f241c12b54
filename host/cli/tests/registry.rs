//! Plugins shared through OCI: pushed to and pulled from a real distribution server on
//! loopback (`docker-registry`, with and without basic auth) and the local layout store,
//! pinned in ferry.lock, checked for integrity, signatures and capability drift, and read by
//! skopeo to show other OCI tools understand what ferry pushes.

mod common;

use common::{Done, Registry, Test, ferry, json, tool, toolchain_path};
use ferry_builtins::fixtures::{COMMAND, GRANTED, SDK};
use std::path::PathBuf;

/// A test directory with its own plugin store, cache, config and Docker config.
fn isolated() -> Test {
    let t = Test::new();
    let root = t.dir.path().to_path_buf();
    t.env("XDG_DATA_HOME", &root.join("home/data").to_string_lossy())
        .env(
            "XDG_CONFIG_HOME",
            &root.join("home/config").to_string_lossy(),
        )
        .env("XDG_CACHE_HOME", &root.join("home/cache").to_string_lossy())
        .env("DOCKER_CONFIG", &root.join("home/docker").to_string_lossy())
}

/// The `digest:` line `ferry plugin push|pull` prints.
fn pushed_digest(done: &Done) -> String {
    done.stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("digest:"))
        .unwrap_or_else(|| panic!("no digest in:\n{}", done.stdout))
        .trim()
        .to_string()
}

/// A pipeline that runs the SDK fixture (`greet`, needs exec of `echo`) from `uses`.
fn greet_pipeline(uses: &str, extra: &str) -> String {
    format!(
        "{extra}jobs:\n  hi:\n    steps:\n      - uses: {uses}\n        with: {{ who: ferry }}\n        permissions: {{ exec: [echo] }}\n"
    )
}

fn lock_of(t: &Test) -> String {
    std::fs::read_to_string(t.path("ferry.lock")).unwrap()
}

fn cache_file(t: &Test, digest: &str) -> PathBuf {
    t.path("home/cache/ferry/plugins/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

#[test]
fn local_store_needs_no_server() {
    let t = isolated();
    let pushed = ferry(
        &t,
        &[
            "plugin",
            "push",
            "--force",
            SDK,
            "greet:1.0.0",
            "--tag",
            "1",
            "--license",
            "MIT",
        ],
    )
    .code(0)
    .stdout_has("pushed greet 0.1.0");
    let digest = pushed_digest(&pushed);
    // The store is an OCI image layout other tools read.
    let store = t.path("home/data/ferry/plugins/greet");
    let raw = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:1.0.0", store.display()),
        ],
    ));
    assert_eq!(
        raw["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(raw["layers"][0]["mediaType"], "application/wasm");

    ferry(&t, &["plugin", "list"])
        .code(0)
        .stdout_has("greet  1.0.0  Greets someone through `echo`.");
    ferry(&t, &["plugin", "info", "greet"])
        .code(0)
        .stdout_has(&digest)
        .stdout_has("exec: echo")
        .stdout_has("licenses:   MIT")
        .stdout_has("greet:1.0.0 0.1.0")
        .stdout_has("world:      ferry step")
        .stdout_has("who (string)  Whom to greet. [default: world]")
        .stdout_has("also (list)  More people to greet.");

    // `ferry run` pins what it resolved and says so; the lock names no local path.
    let t = t.file("ferry.yaml", &greet_pipeline("greet:^1", ""));
    ferry(&t, &["validate"]).code(0).stdout_has("is valid");
    assert!(!t.path("ferry.lock").exists(), "validate writes nothing");
    ferry(&t, &["run", "--output", "plain"])
        .code(0)
        .stdout_has("hello, ferry")
        .stderr_has("locked greet:^1 → greet:1.0.0");
    let lock = lock_of(&t);
    assert!(lock.contains(&format!("digest = \"{digest}\"")), "{lock}");
    assert!(lock.contains("resolved = \"greet:1.0.0\""), "{lock}");
    ferry(&t, &["run", "--locked", "--output", "plain"]).code(0);
    // A digest pins exactly one manifest.
    let t = t.file(
        "ferry.yaml",
        &greet_pipeline(&format!("greet@{digest}"), ""),
    );
    ferry(&t, &["run", "--output", "plain"])
        .code(0)
        .stdout_has("hello, ferry");
    assert!(
        lock_of(&t).contains(&format!("resolved = \"greet@{digest}\"")),
        "{}",
        lock_of(&t)
    );
    let t = t.file("ferry.yaml", &greet_pipeline("greet:^1", ""));
    ferry(&t, &["lock"]).code(0);

    // CI mode: a reference the lock does not cover, and an entry nobody uses, fail.
    let t = t.file("ferry.yaml", &greet_pipeline("greet:1", ""));
    ferry(&t, &["run", "--locked", "--output", "plain"])
        .code(2)
        .stderr_has("error: `greet:1` is not in ferry.lock")
        .stderr_has("ferry.yaml:4:15")
        .stderr_has("ferry.lock is stale: it pins `greet:^1`, which no step uses");
    std::fs::remove_file(t.path("ferry.lock")).unwrap();
    ferry(&t, &["run", "--locked"])
        .code(2)
        .stderr_has("`--locked` needs `./ferry.lock`, and there is none");

    // References that cannot be pinned are refused at their line.
    let t = t.file(
        "ferry.yaml",
        &greet_pipeline("localhost:5000/steps/greet", ""),
    );
    ferry(&t, &["run"])
        .code(2)
        .stderr_has("names no version")
        .stderr_has("ferry.yaml:4:15");
}

#[test]
fn registry_push_pull_resolve_lock_and_run_offline() {
    let mut registry = Registry::start();
    let host = registry.host();
    let t = isolated();
    let repo = format!("{host}/steps/greet");
    let mut digests = Vec::new();
    for version in ["1.0.0", "1.2.0", "2.0.0"] {
        let done = ferry(
            &t,
            &[
                "plugin",
                "push",
                "--force",
                SDK,
                &format!("{repo}:{version}"),
                "--annotation",
                &format!("org.opencontainers.image.version={version}"),
            ],
        )
        .code(0);
        digests.push(pushed_digest(&done));
    }
    // Pushing the same bytes again gives the same digest: nothing in it depends on time.
    let again = ferry(
        &t,
        &[
            "plugin",
            "push",
            "--force",
            SDK,
            &format!("{repo}:1.0.0"),
            "--annotation",
            "org.opencontainers.image.version=1.0.0",
        ],
    )
    .code(0);
    assert_eq!(pushed_digest(&again), digests[0]);

    // skopeo reads the artifact as an OCI manifest with the wasm media types.
    let raw = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{repo}:1.2.0"),
        ],
    ));
    assert_eq!(
        raw["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        raw["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(raw["layers"].as_array().unwrap().len(), 1);
    assert_eq!(raw["layers"][0]["mediaType"], "application/wasm");
    let describe = json(
        raw["annotations"]["dev.ferry.step.describe"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(describe["name"], "greet");
    let config = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{repo}:1.2.0"),
        ],
    ));
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(config["os"], "wasip2");
    assert_eq!(config["component"]["target"], "ferry:step/step@0.1.0");
    assert_eq!(config["layerDigests"][0], raw["layers"][0]["digest"]);
    let tags = json(&tool(
        "skopeo",
        &[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{repo}"),
        ],
    ));
    assert_eq!(tags["Tags"].as_array().unwrap().len(), 3);
    // skopeo copies it like any artifact, and the layer it copies is the component.
    let copied = t.path("copied");
    tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{repo}:1.2.0"),
            &format!("oci:{}:greet", copied.display()),
        ],
    );
    let layer = raw["layers"][0]["digest"].as_str().unwrap();
    let blob = copied
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    assert_eq!(std::fs::read(blob).unwrap(), std::fs::read(SDK).unwrap());
    // A wasi:cli/command is a valid plugin too; its config names the command world.
    ferry(
        &t,
        &[
            "plugin",
            "push",
            "--force",
            COMMAND,
            &format!("{host}/steps/cmd:0.1.0"),
        ],
    )
    .code(0);
    let config = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{host}/steps/cmd:0.1.0"),
        ],
    ));
    assert!(
        config["component"]["target"]
            .as_str()
            .unwrap()
            .starts_with("wasi:cli/command")
    );

    // Pull by tag, by range and by digest; list the namespace.
    let by_tag = ferry(&t, &["plugin", "pull", &format!("{repo}:1.0.0")]).code(0);
    assert_eq!(pushed_digest(&by_tag), digests[0]);
    let by_range = ferry(&t, &["plugin", "pull", &format!("{repo}:^1")])
        .code(0)
        .stdout_has(":1.2.0");
    assert_eq!(pushed_digest(&by_range), digests[1]);
    let out = t.path("greet.wasm");
    ferry(
        &t,
        &[
            "plugin",
            "pull",
            &format!("{repo}@{}", digests[2]),
            "-o",
            &out.to_string_lossy(),
        ],
    )
    .code(0);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(SDK).unwrap());
    ferry(&t, &["plugin", "list", &format!("{host}/steps")])
        .code(0)
        .stdout_has(&format!("{repo}  2.0.0, 1.2.0, 1.0.0"))
        .stdout_has(&format!("{host}/steps/cmd  0.1.0"));
    ferry(&t, &["plugin", "info", &repo])
        .code(0)
        .stdout_has("versions:   2.0.0, 1.2.0, 1.0.0");
    ferry(&t, &["plugin", "pull", &format!("{repo}:^3")])
        .code(2)
        .stderr_has("no version of")
        .stderr_has("matches `^3`; it has 2.0.0, 1.2.0, 1.0.0");

    // Lock a range and a short name through `plugins.registry`.
    let pipeline = format!(
        "plugins:\n  registry: {host}/steps\njobs:\n  a:\n    steps:\n      - uses: {repo}:~1.0\n        with: {{ who: one }}\n        permissions: {{ exec: [echo] }}\n      - uses: greet:^1\n        with: {{ who: two }}\n        permissions: {{ exec: [echo] }}\n"
    );
    let t = t.file("ferry.yaml", &pipeline);
    ferry(&t, &["lock"])
        .code(0)
        .stderr_has("wrote ./ferry.lock");
    let lock = lock_of(&t);
    assert!(
        lock.contains(&digests[0]) && lock.contains(&digests[1]),
        "{lock}"
    );
    assert!(!lock.contains(&digests[2]), "{lock}");

    // With the registry gone, the locked, cached pipeline still runs.
    registry.stop();
    ferry(&t, &["run", "--locked", "--output", "plain"])
        .code(0)
        .stdout_has("hello, one")
        .stdout_has("hello, two");
    // ...and a plugin that is not cached cannot be fetched, which is said clearly.
    std::fs::remove_dir_all(t.path("home/cache/ferry/plugins")).unwrap();
    ferry(&t, &["run", "--locked"])
        .code(2)
        .stderr_has(&format!("cannot reach registry {host}"))
        .stderr_has("ferry.yaml:6:15");
}

#[test]
fn a_moved_tag_keeps_the_locked_digest_and_warns() {
    let registry = Registry::start();
    let repo = format!("{}/steps/greet", registry.host());
    let t = isolated();
    let first = pushed_digest(
        &ferry(
            &t,
            &["plugin", "push", "--force", SDK, &format!("{repo}:1.0.0")],
        )
        .code(0),
    );
    let t = t.file("ferry.yaml", &greet_pipeline(&format!("{repo}:1.0.0"), ""));
    ferry(&t, &["lock"]).code(0);
    let before = lock_of(&t);
    // Someone re-pushes the tag with other content.
    let moved = pushed_digest(
        &ferry(
            &t,
            &[
                "plugin",
                "push",
                "--force",
                SDK,
                &format!("{repo}:1.0.0"),
                "--annotation",
                "moved=yes",
            ],
        )
        .code(0),
    );
    assert_ne!(first, moved);
    ferry(&t, &["lock"])
        .code(0)
        .stderr_has(&format!("`{repo}:1.0.0` now resolves to"))
        .stderr_has(&format!(
            "not the locked {first}: keeping the locked digest"
        ));
    assert_eq!(lock_of(&t), before);
    ferry(&t, &["run", "--locked", "--output", "plain"])
        .code(0)
        .stdout_has("hello, ferry");
    // `ferry update` is how the lock moves.
    ferry(&t, &["update"]).code(0).stderr_has("updated");
    assert!(lock_of(&t).contains(&moved));
}

/// The blob of `digest` in the registry's storage.
fn stored_blob(registry: &Registry, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    registry
        .dir()
        .join("data/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

#[test]
fn tampered_and_truncated_blobs_are_refused_and_not_cached() {
    let registry = Registry::start();
    let repo = format!("{}/steps/greet", registry.host());
    let t = isolated();
    ferry(
        &t,
        &["plugin", "push", "--force", SDK, &format!("{repo}:1.0.0")],
    )
    .code(0);
    let info = json(
        &ferry(&t, &["plugin", "info", &format!("{repo}:1.0.0"), "--json"])
            .code(0)
            .stdout,
    );
    let layer = info["component"]["digest"].as_str().unwrap().to_string();
    let blob = stored_blob(&registry, &layer);
    let original = std::fs::read(&blob).unwrap();

    let mut tampered = original.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    std::fs::write(&blob, &tampered).unwrap();
    ferry(&t, &["plugin", "pull", &format!("{repo}:1.0.0")])
        .code(2)
        .stderr_has("refusing content that does not match its digest");
    assert!(!cache_file(&t, &layer).exists());

    std::fs::write(&blob, &original[..original.len() - 100]).unwrap();
    let t = t.file("ferry.yaml", &greet_pipeline(&format!("{repo}:1.0.0"), ""));
    ferry(&t, &["run"])
        .code(2)
        .stderr_has("refusing a truncated or altered blob")
        .stderr_has("ferry.yaml:4:15");
    assert!(!cache_file(&t, &layer).exists());
    assert!(
        !t.path("ferry.lock").exists(),
        "nothing is locked from a bad pull"
    );

    std::fs::write(&blob, &original).unwrap();
    ferry(&t, &["run", "--output", "plain"])
        .code(0)
        .stdout_has("hello, ferry");
    assert!(cache_file(&t, &layer).is_file());
}

#[test]
fn required_signatures() {
    let registry = Registry::start();
    let host = registry.host();
    let repo = format!("{host}/acme/greet");
    let t = isolated();
    let keys = t.path("keys");
    for name in ["acme", "mallory"] {
        ferry(
            &t,
            &["plugin", "keygen", name, "--dir", &keys.to_string_lossy()],
        )
        .code(0)
        .stdout_has("public key:");
    }
    assert!(
        std::fs::read_to_string(keys.join("acme.pub"))
            .unwrap()
            .starts_with("ferry-ed25519 ")
    );
    ferry(
        &t,
        &["plugin", "push", "--force", SDK, &format!("{repo}:1.0.0")],
    )
    .code(0);
    let policy = format!(
        "plugins:\n  keys:\n    acme: ./keys/acme.pub\n  require-signatures:\n    {host}/acme: [acme]\n"
    );
    let t = t.file(
        "ferry.yaml",
        &greet_pipeline(&format!("{repo}:1.0.0"), &policy),
    );
    ferry(&t, &["run"])
        .code(2)
        .stderr_has(&format!(
            "{repo}:1.0.0 is refused: it is not signed; it must be signed by `acme`"
        ))
        .stderr_has("ferry.yaml:")
        .stderr_has("ferry plugin sign");

    // A signature by a key the pipeline does not trust does not count.
    let mallory = keys.join("mallory.key");
    ferry(
        &t,
        &[
            "plugin",
            "sign",
            &format!("{repo}:1.0.0"),
            "--key",
            &mallory.to_string_lossy(),
        ],
    )
    .code(0);
    ferry(&t, &["run"])
        .code(2)
        .stderr_has("signed by untrusted key");

    let acme = keys.join("acme.key");
    ferry(
        &t,
        &[
            "plugin",
            "sign",
            &format!("{repo}:1.0.0"),
            "--key",
            &acme.to_string_lossy(),
        ],
    )
    .code(0)
    .stdout_has("signed");
    ferry(&t, &["run", "--output", "plain"])
        .code(0)
        .stdout_has("hello, ferry");
    assert!(lock_of(&t).contains("signed_by = \"acme\""));
    ferry(&t, &["plugin", "info", &format!("{repo}:1.0.0")])
        .code(0)
        .stdout_has("signatures: key ");

    // A plugin pushed and signed in one go; another repository outside the namespace is
    // not required to be signed.
    ferry(
        &t,
        &[
            "plugin",
            "push",
            "--force",
            SDK,
            &format!("{repo}:1.1.0"),
            "--sign",
            &acme.to_string_lossy(),
        ],
    )
    .code(0)
    .stdout_has("signed: key");
    ferry(
        &t,
        &[
            "plugin",
            "push",
            "--force",
            SDK,
            &format!("{host}/other/greet:1.0.0"),
        ],
    )
    .code(0);
    let both = format!(
        "{policy}jobs:\n  hi:\n    steps:\n      - uses: {repo}:1.1.0\n        permissions: {{ exec: [echo] }}\n      - uses: {host}/other/greet:1.0.0\n        permissions: {{ exec: [echo] }}\n"
    );
    let t = t.file("ferry.yaml", &both);
    ferry(&t, &["run", "--output", "plain"]).code(0);
}

#[test]
fn capability_drift_stops_an_update_until_granted() {
    let registry = Registry::start();
    let repo = format!("{}/steps/tool", registry.host());
    let t = isolated();
    ferry(
        &t,
        &["plugin", "push", "--force", SDK, &format!("{repo}:1.0.0")],
    )
    .code(0);
    let t = t.file("ferry.yaml", &greet_pipeline(&format!("{repo}:^1"), ""));
    ferry(&t, &["lock"]).code(0);
    let before = lock_of(&t);
    // 1.1.0 asks for more: write access, an env var, a secret, the network.
    ferry(
        &t,
        &[
            "plugin",
            "push",
            "--force",
            GRANTED,
            &format!("{repo}:1.1.0"),
        ],
    )
    .code(0);
    let drifted = ferry(&t, &["update", "tool"])
        .code(2)
        .stderr_has("asks for more than")
        .stderr_has("+ workspace: write")
        .stderr_has("+ env: FIXTURE_VAR")
        .stderr_has("+ secrets: FIXTURE_SECRET")
        .stderr_has("+ network: 127.0.0.1")
        .stderr_has("ferry.lock is unchanged");
    // Its `paths: *` asks for the paths the pipeline grants, which are granted.
    assert!(!drifted.stderr.contains("+ paths"), "{}", drifted.stderr);
    assert_eq!(lock_of(&t), before);
    // Granting what it asks for lets the update through.
    let granted = format!(
        "jobs:\n  hi:\n    steps:\n      - uses: {repo}:^1\n        permissions: {{ workspace: write, env: [FIXTURE_VAR], secrets: [FIXTURE_SECRET], network: [127.0.0.1], exec: [echo] }}\n"
    );
    let t = t.file("ferry.yaml", &granted);
    ferry(&t, &["update", "tool"]).code(0).stderr_has(":1.1.0");
    ferry(&t, &["update", "nosuch"])
        .code(2)
        .stderr_has("no step uses a plugin `nosuch`");
    assert!(lock_of(&t).contains("FIXTURE_SECRET"));
}

#[test]
fn basic_auth_login_push_and_pull() {
    let registry = Registry::start_with(Some(("ci", "s3cret-pass")));
    let host = registry.host();
    let repo = format!("{host}/private/greet");
    let t = isolated();
    ferry(
        &t,
        &["plugin", "push", "--force", SDK, &format!("{repo}:1.0.0")],
    )
    .code(2)
    .stderr_has(&format!("{host} needs a login (HTTP 401)"))
    .stderr_has(&format!("ferry login {host}"));

    let login = |password: &str| {
        let mut child = t
            .command()
            .args(["login", &host, "-u", "ci", "--password-stdin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        let out = child.wait_with_output().unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(password), "the password was printed: {all}");
        (out.status.code().unwrap(), all)
    };
    let (code, said) = login("wrong");
    assert_eq!(code, 2, "{said}");
    assert!(
        said.contains("refused the credentials (HTTP 401)"),
        "{said}"
    );
    assert!(!t.path("home/docker/config.json").exists());
    let (code, said) = login("s3cret-pass");
    assert_eq!(code, 0, "{said}");
    let config = t.path("home/docker/config.json");
    assert!(std::fs::read_to_string(&config).unwrap().contains(&host));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let pushed = ferry(
        &t,
        &["plugin", "push", "--force", SDK, &format!("{repo}:1.0.0")],
    )
    .code(0);
    assert!(!pushed.stdout.contains("s3cret-pass"));
    // skopeo reads the same credentials file.
    let raw = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--authfile",
            &config.to_string_lossy(),
            &format!("docker://{repo}:1.0.0"),
        ],
    ));
    assert_eq!(raw["layers"][0]["mediaType"], "application/wasm");
    let t = t.file("ferry.yaml", &greet_pipeline(&format!("{repo}:1"), ""));
    ferry(&t, &["run", "--output", "plain"])
        .code(0)
        .stdout_has("hello, ferry");
}

#[test]
fn user_config_sets_the_default_registry() {
    let registry = Registry::start();
    let host = registry.host();
    let t = isolated().file(
        "home/config/ferry/config.toml",
        &format!("[plugins]\nregistry = \"{host}/team\"\n"),
    );
    ferry(&t, &["plugin", "push", "--force", SDK, "greet:0.3.0"])
        .code(0)
        .stdout_has(&format!("→ {host}/team/greet:0.3.0"));
    ferry(&t, &["plugin", "pull", "greet:0.3"])
        .code(0)
        .stdout_has("pulled");
    // The environment overrides the config, and a pipeline overrides both.
    let t = t.env("FERRY_PLUGIN_REGISTRY", "./shelf");
    ferry(&t, &["plugin", "push", "--force", SDK, "greet:0.4.0"]).code(0);
    assert!(t.path("shelf/greet/index.json").is_file());
    let t = t.file(
        "ferry.yaml",
        &greet_pipeline(
            "greet:0.3.0",
            &format!("plugins:\n  registry: {host}/team\n"),
        ),
    );
    ferry(&t, &["run", "--output", "plain"])
        .code(0)
        .stdout_has("hello, ferry");
    assert!(lock_of(&t).contains("resolved = \"greet:0.3.0\""));
    // A mistyped setting is reported with the file it is in.
    let t = t.file(
        "home/config/ferry/config.toml",
        "[plugins]\nregistery = \"x\"\n",
    );
    ferry(&t, &["plugin", "list"])
        .code(2)
        .stderr_has("config.toml` is not valid")
        .stderr_has("registery");
}

/// `ferry login` and pushes through a Docker credential helper (`credsStore`), the way
/// Docker Desktop, `pass` or the OS keychain keep registry passwords.
#[cfg(unix)]
#[test]
fn credential_helpers_keep_the_password() {
    use std::os::unix::fs::PermissionsExt;
    let registry = Registry::start_with(Some(("ci", "helper-pass")));
    let host = registry.host();
    let t = isolated()
        .file("home/docker/config.json", "{\"credsStore\": \"ferrytest\"}")
        .file(
            "bin/docker-credential-ferrytest",
            "#!/bin/sh\nstore=\"$(dirname \"$0\")/../creds.json\"\ncase \"$1\" in\n  store) cat > \"$store\" ;;\n  get) read -r host; if [ -f \"$store\" ]; then cat \"$store\"; else echo 'credentials not found in native keychain'; exit 1; fi ;;\n  *) exit 1 ;;\nesac\n",
        );
    let helper = t.path("bin/docker-credential-ferrytest");
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        t.path("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let t = t.env("PATH", &path);
    let repo = format!("{host}/private/greet");
    // No stored credentials yet: the helper says so and ferry asks for a login.
    ferry(
        &t,
        &["plugin", "push", "--force", SDK, &format!("{repo}:1.0.0")],
    )
    .code(2)
    .stderr_has("needs a login");
    let mut child = t
        .command()
        .args(["login", &host, "-u", "ci", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "helper-pass").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("credential helper `docker-credential-ferrytest`"),
        "{said}"
    );
    assert!(!said.contains("helper-pass"));
    // The password went to the helper, not into config.json.
    let config = std::fs::read_to_string(t.path("home/docker/config.json")).unwrap();
    assert!(!config.contains("auths"), "{config}");
    assert!(
        std::fs::read_to_string(t.path("creds.json"))
            .unwrap()
            .contains("helper-pass")
    );
    ferry(
        &t,
        &["plugin", "push", "--force", SDK, &format!("{repo}:1.0.0")],
    )
    .code(0);
    ferry(&t, &["plugin", "pull", &format!("{repo}:1.0.0")]).code(0);
}

#[test]
fn widening_a_range_still_stops_at_capability_drift() {
    let registry = Registry::start();
    let repo = format!("{}/steps/tool", registry.host());
    let t = isolated();
    ferry(&t, &["plugin", "push", SDK, &format!("{repo}:0.1.0")]).code(0);
    let t = t.file("ferry.yaml", &greet_pipeline(&format!("{repo}:^0.1"), ""));
    ferry(&t, &["lock"]).code(0);
    let before = lock_of(&t);
    // 0.2.0 asks for more, and `^0.1` → `^0` would take it: a new `uses:` text, no entry.
    ferry(
        &t,
        &[
            "plugin",
            "push",
            "--force",
            GRANTED,
            &format!("{repo}:0.2.0"),
        ],
    )
    .code(0);
    let t = t.file("ferry.yaml", &greet_pipeline(&format!("{repo}:^0"), ""));
    ferry(&t, &["update"])
        .code(2)
        .stderr_has("asks for more than")
        .stderr_has(":0.1.0 did")
        .stderr_has("+ secrets: FIXTURE_SECRET")
        .stderr_has("ferry.lock is unchanged");
    assert_eq!(lock_of(&t), before);
}

#[test]
fn a_published_version_is_never_rewritten_or_mislabelled() {
    let registry = Registry::start();
    let repo = format!("{}/steps/greet", registry.host());
    let t = isolated();
    // The component is 0.1.0: a tag that says otherwise is refused.
    ferry(&t, &["plugin", "push", SDK, &format!("{repo}:1.0.0")])
        .code(2)
        .stderr_has("names version 1.0.0, but the component says it is 0.1.0")
        .stderr_has("--force");
    ferry(
        &t,
        &[
            "plugin",
            "push",
            SDK,
            &format!("{repo}:0.1.0"),
            "--tag",
            "1",
        ],
    )
    .code(2)
    .stderr_has(":1` does not cover version 0.1.0");
    ferry(
        &t,
        &[
            "plugin",
            "push",
            SDK,
            &format!("{repo}:0.1.0"),
            "--tag",
            "0.1",
            "--tag",
            "0",
            "--tag",
            "latest",
        ],
    )
    .code(0);
    // The same component again changes nothing.
    ferry(&t, &["plugin", "push", SDK, &format!("{repo}:0.1.0")]).code(0);
    // Nor by another spelling of the version, nor under a tag that only looks like one.
    ferry(
        &t,
        &[
            "plugin",
            "push",
            SDK,
            "--annotation",
            "rebuilt=yes",
            &format!("{repo}:v0.1.0"),
        ],
    )
    .code(2)
    .stderr_has("is already published as another component");
    for tag in ["00", "0.1.0.0"] {
        ferry(
            &t,
            &[
                "plugin",
                "push",
                SDK,
                &format!("{repo}:0.1.0"),
                "--tag",
                tag,
            ],
        )
        .code(2)
        .stderr_has("does not cover version 0.1.0");
    }
    // Another component under a published version is refused, and the tag stays.
    let other = ["plugin", "push", SDK, "--annotation", "rebuilt=yes"];
    let mut args = other.to_vec();
    let tagged = format!("{repo}:0.1.0");
    args.push(&tagged);
    ferry(&t, &args)
        .code(2)
        .stderr_has("is already published as another component");
    let info = ferry(&t, &["plugin", "info", &tagged, "--json"]).code(0);
    assert!(!info.stdout.contains("rebuilt"), "{}", info.stdout);
    // Moving tags move; `--force` moves a version too, as the user asked.
    args.push("--force");
    ferry(&t, &args).code(0);
    let info = ferry(&t, &["plugin", "info", &tagged, "--json"]).code(0);
    assert!(info.stdout.contains("rebuilt"), "{}", info.stdout);
}

#[test]
fn an_update_within_a_range_names_the_newer_version_it_keeps_out() {
    let registry = Registry::start();
    let repo = format!("{}/steps/greet", registry.host());
    let t = isolated();
    ferry(&t, &["plugin", "push", SDK, &format!("{repo}:0.1.0")]).code(0);
    let t = t.file("ferry.yaml", &greet_pipeline(&format!("{repo}:^0.1"), ""));
    ferry(&t, &["lock"]).code(0);
    ferry(&t, &["update"]).code(0).stderr_has("is up to date");
    ferry(
        &t,
        &["plugin", "push", "--force", SDK, &format!("{repo}:1.0.0")],
    )
    .code(0);
    ferry(&t, &["update"])
        .code(0)
        .stderr_has("is up to date")
        .stderr_has(&format!(
            "`{repo}:^0.1` is at 0.1.0; {repo}:1.0.0 is newer, outside `^0.1`"
        ))
        .stderr_has(&format!("write `uses: {repo}:^1`"));
}

#[test]
fn grants_a_plugin_never_asks_for_are_named_by_validate() {
    let t = isolated().file(
        "ferry.yaml",
        &format!(
            "jobs:\n  hi:\n    permissions: {{ exec: [echo, cat] }}\n    steps:\n      - uses: {sdk}\n        permissions: {{ exec: [echo, curl], secrets: [TOKEN], network: [example.com] }}\n      - uses: {sdk}\n      - run: cat ferry.yaml\n  solo:\n    permissions: {{ exec: [echo, git] }}\n    steps:\n      - uses: {sdk}\n",
            sdk = SDK
        ),
    );
    let done = ferry(&t, &["validate"]).code(0);
    let all = format!("{}{}", done.stdout, done.stderr);
    assert!(
        all.contains("of job `hi` is granted `secrets: TOKEN`, `exec: curl`, `network: example.com`, which `greet` does not ask for: the step does not get it"),
        "{all}"
    );
    assert!(all.contains("ferry.yaml:6:24"), "{all}");
    assert!(!all.contains("error"), "{all}");
    // The job's grants serve its other steps: not the plugin's to ask for, even where the
    // job has one step.
    assert_eq!(all.matches("warning:").count(), 1, "{all}");
}

#[test]
fn every_command_says_what_it_does() {
    let t = isolated();
    let help = ferry(&t, &["--help"]).code(0).stdout;
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.contains(&"cache"), "{help}");
    for command in commands {
        let line = help
            .lines()
            .find(|l| l.split_whitespace().next() == Some(command))
            .unwrap();
        assert!(
            line.split_whitespace().count() > 1,
            "`ferry {command}` has no description: {help}"
        );
    }
}

/// The guides, followed as a new user would, in each language: make a step, change it, build
/// and test it, publish it, use it by its short name with a range, lock, and run `--locked`.
/// Cargo is kept offline throughout: a new Rust project resolves nothing (it ships its lock).
#[test]
fn a_new_user_walks_the_guide_in_each_language() {
    let registry = Registry::start();
    let host = registry.host();
    let t = isolated()
        .env("PATH", &toolchain_path())
        .env("CARGO_NET_OFFLINE", "true");
    // The Rust project's SDK dependencies come from the cargo cache every test shares.
    let t = t.env(
        "XDG_CACHE_HOME",
        &std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("cli-cache")
            .to_string_lossy(),
    );
    let sources = [
        ("rust", "src/lib.rs"),
        ("python", "app.py"),
        ("js", "src/index.js"),
    ];
    let mut steps = String::new();
    for (lang, source) in sources {
        let name = format!("howdy-{lang}");
        ferry(&t, &["plugin", "new", &name, "--lang", lang]).code(0);
        // The edit: a new greeting, in the step and in its test cases.
        for file in [source, "ferry-tests.yaml"] {
            let path = t.path(&format!("{name}/{file}"));
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains("Hello, "), "{file} of {lang}");
            std::fs::write(&path, text.replace("Hello, ", "Howdy, ")).unwrap();
        }
        ferry(&t, &["plugin", "build", &name]).code(0);
        ferry(&t, &["plugin", "test", &name, "--no-build"])
            .code(0)
            .stdout_has("3 passed, 0 failed");
        let wasm = format!("{name}/dist/{name}.wasm");
        ferry(
            &t,
            &[
                "plugin",
                "push",
                &wasm,
                &format!("{host}/guide/{name}:0.1.0"),
            ],
        )
        .code(0);
        steps.push_str(&format!(
            "      - uses: {name}:^0.1\n        with: {{ who: {lang} }}\n"
        ));
    }
    let pipeline =
        format!("plugins:\n  registry: {host}/guide\njobs:\n  greet:\n    steps:\n{steps}");
    let t = t.file("ferry.yaml", &pipeline);
    ferry(&t, &["lock"]).code(0);
    let lock = lock_of(&t);
    for lang in ["rust", "python", "js"] {
        assert!(lock.contains(&format!("howdy-{lang}:^0.1")), "{lock}");
    }
    let done = ferry(&t, &["run", "--locked", "--output", "plain"]).code(0);
    for lang in ["rust", "python", "js"] {
        assert!(
            done.stdout.contains(&format!("Howdy, {lang}!")),
            "{}",
            done.stdout
        );
    }
}
