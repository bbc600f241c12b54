//! The built-in `image` step through `ferry run`, checked by tools ferry did not write:
//! skopeo and umoci read what it builds, and a CNCF distribution server (`docker-registry`)
//! on loopback takes its pushes and gives them back. `cargo xtask setup` installs all three.

mod common;

use common::{Registry, Test, json, tool};
use std::process::Command;
use std::time::Duration;

/// `ferry run --output plain` in the test's directory; the test keeps its files.
fn ferry_run(t: &Test) -> common::Done {
    let out = t
        .command()
        .args(["run", "--output", "plain"])
        .output()
        .unwrap();
    common::Done {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The value of `output` printed by a step in plain output (`[job/step] image sha256:...`).
fn digest(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.split("] image ").nth(1))
        .unwrap_or_else(|| panic!("no digest in:\n{stdout}"))
        .trim()
        .to_string()
}

const SITE_DOCKERFILE: &str = "\
ARG BASE=scratch
FROM ${BASE} AS files
COPY site/ /srv/site/
ADD vendor.tar.gz /opt/vendor/

FROM scratch
ARG VERSION=dev
MAINTAINER Jane Doe <jane@example.com>
LABEL org.opencontainers.image.version=$VERSION maintainer=\"ferry tests\"
ENV APP_HOME=/srv/site \\
    MODE=production
ENV GREETING \"hello  world\"
COPY --from=files /srv/site/ $APP_HOME/
COPY --from=files /opt/vendor/ /opt/vendor/
COPY --chmod=600 --chown=1000:1000 secret.conf /etc/app/
WORKDIR /srv
WORKDIR site/
USER 1000:1000
EXPOSE 8080 9090/udp
ENTRYPOINT [\"/srv/site/run.sh\"]
CMD [\"--port\", \"8080\"]
";

/// A build context: a site, a script, a vendored tarball, a file `.dockerignore` drops.
fn context(t: &Test) {
    let dir = t.dir.path();
    for (name, text) in [
        ("site/index.html", "<h1>hello</h1>\n"),
        ("site/run.sh", "#!/bin/sh\necho serving\n"),
        ("site/notes.tmp", "not for the image\n"),
        ("secret.conf", "token=placeholder\n"),
        (".dockerignore", "**/*.tmp\n"),
        ("Dockerfile", SITE_DOCKERFILE),
    ] {
        std::fs::create_dir_all(dir.join(name).parent().unwrap()).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }
    std::fs::create_dir_all(dir.join("vendor-src/lib")).unwrap();
    std::fs::write(dir.join("vendor-src/lib/util.js"), "export const x = 1;\n").unwrap();
    let status = Command::new("tar")
        .args(["-czf", "vendor.tar.gz", "-C", "vendor-src", "."])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_dir_all(dir.join("vendor-src")).unwrap();
}

const BUILD: &str = "jobs:
  image:
    steps:
      - uses: image
        with:
          output: [oci-layout, oci-archive]
          tags: [site:1.0]
          build-args: [VERSION=1.0]
        permissions: { workspace: write }
";

/// Unpacks `image` (`layout:tag`) with umoci into `bundle` and returns its root file system.
fn unpack(image: &str, bundle: &std::path::Path) -> std::path::PathBuf {
    tool(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            image,
            bundle.to_str().unwrap(),
        ],
    );
    bundle.join("rootfs")
}

fn workspace_file(t: &Test, path: &str) -> std::path::PathBuf {
    t.path(&format!(".ferry/work/image/{path}"))
}

#[test]
fn the_same_inputs_build_the_same_image_byte_for_byte() {
    let build = |mode: u32, epoch: &str| -> (String, Vec<u8>, Test) {
        let t = Test::new().file("ferry.yaml", BUILD);
        context(&t);
        // Host metadata must not matter: other modes and times than the first build.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let conf = t.path("secret.conf");
            std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let _ = mode;
        let when = std::time::SystemTime::now() - Duration::from_secs(u64::from(mode) * 1000);
        std::fs::File::options()
            .write(true)
            .open(t.path("site/index.html"))
            .unwrap()
            .set_modified(when)
            .unwrap();
        // The host's SOURCE_DATE_EPOCH is not granted: only the pipeline's `env:` counts.
        let t = t.env("SOURCE_DATE_EPOCH", epoch);
        let done = ferry_run(&t).code(0);
        let archive = std::fs::read(workspace_file(&t, "target/image.tar")).unwrap();
        (digest(&done.stdout), archive, t)
    };
    let (first, first_archive, _a) = build(0o644, "0");
    let (second, second_archive, _b) = build(0o600, "1700000000");
    assert_eq!(first, second, "two builds of the same input");
    assert!(first_archive == second_archive, "the archives differ");
    let with_epoch = |epoch: &str| {
        let t = Test::new().file(
            "ferry.yaml",
            &format!("env: {{ SOURCE_DATE_EPOCH: \"{epoch}\" }}\n{BUILD}"),
        );
        context(&t);
        digest(&ferry_run(&t).code(0).stdout)
    };
    let dated = with_epoch("1700000000");
    assert_ne!(dated, first, "the epoch is part of the image");
    assert_eq!(dated, with_epoch("1700000000"));
}

#[test]
fn skopeo_and_umoci_read_the_layout_and_the_archive() {
    let t = Test::new().file("ferry.yaml", BUILD);
    context(&t);
    let done = ferry_run(&t).code(0);
    let digest = digest(&done.stdout);
    let layout = workspace_file(&t, "target/image");
    let layout = layout.to_str().unwrap();
    let inspect = json(&tool("skopeo", &["inspect", &format!("oci:{layout}:1.0")]));
    assert_eq!(inspect["Digest"], digest.as_str());
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Labels"]["org.opencontainers.image.version"], "1.0");
    assert_eq!(inspect["Labels"]["maintainer"], "ferry tests");
    let archive = workspace_file(&t, "target/image.tar");
    let from_archive = json(&tool(
        "skopeo",
        &["inspect", &format!("oci-archive:{}:1.0", archive.display())],
    ));
    assert_eq!(from_archive["Digest"], digest.as_str());
    let config = json(&tool(
        "skopeo",
        &["inspect", "--config", &format!("oci:{layout}:1.0")],
    ));
    let c = &config["config"];
    // As buildah gives them: a PATH for an image from scratch, the legacy form unquoted.
    assert_eq!(
        c["Env"],
        serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "APP_HOME=/srv/site",
            "MODE=production",
            "GREETING=hello  world"
        ])
    );
    // A trailing slash stays, and MAINTAINER is the config's author, as buildah gives them.
    assert_eq!(c["WorkingDir"], "/srv/site/");
    assert_eq!(config["author"], "Jane Doe <jane@example.com>");
    assert!(
        c["Labels"]
            .get("org.opencontainers.image.authors")
            .is_none()
    );
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/srv/site/run.sh"]));
    assert_eq!(c["Cmd"], serde_json::json!(["--port", "8080"]));
    assert!(c["ExposedPorts"]["8080/tcp"].is_object() && c["ExposedPorts"]["9090/udp"].is_object());
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);

    let rootfs = unpack(&format!("{layout}:1.0"), &t.path("bundle"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("srv/site/index.html")).unwrap(),
        "<h1>hello</h1>\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("opt/vendor/lib/util.js")).unwrap(),
        "export const x = 1;\n"
    );
    assert!(
        !rootfs.join("srv/site/notes.tmp").exists(),
        ".dockerignore keeps it out"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(rootfs.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("srv/site/run.sh"), 0o755, "a script is executable");
        assert_eq!(mode("srv/site/index.html"), 0o644);
        assert_eq!(mode("etc/app/secret.conf"), 0o600, "--chmod");
    }
    // Owners as the layer records them (umoci --rootless maps them to the current user).
    let manifest = json(&tool(
        "skopeo",
        &["inspect", "--raw", &format!("oci:{layout}:1.0")],
    ));
    let last = manifest["layers"][2]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let listing = tool("tar", &["-tvf", &format!("{layout}/blobs/sha256/{last}")]);
    assert!(
        listing.contains("1000/1000") && listing.contains("etc/app/secret.conf"),
        "{listing}"
    );
    // The folders the copy makes are its owner's too, as buildah makes them.
    assert!(
        listing.contains("1000/1000         0 1970-01-01 00:00 etc/app/"),
        "{listing}"
    );
}

#[test]
fn push_and_pull_back_by_digest_then_build_on_it() {
    let registry = Registry::start();
    let host = registry.host();
    let t = Test::new().file(
        "ferry.yaml",
        &format!(
            "jobs:
  image:
    steps:
      - uses: image
        with:
          output: [registry]
          tags: [{host}/team/site:1.0, {host}/team/site:latest]
        permissions: {{ workspace: write, network: [\"{host}\"] }}
"
        ),
    );
    context(&t);
    let pushed = digest(&ferry_run(&t).code(0).stdout);
    let remote = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{host}/team/site@{pushed}"),
        ],
    ));
    assert_eq!(remote["Digest"], pushed.as_str());
    let tags = json(&tool(
        "skopeo",
        &[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{host}/team/site"),
        ],
    ));
    let mut tags: Vec<String> = tags["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    tags.sort();
    assert_eq!(tags, vec!["1.0", "latest"]);
    // Pulled back by an independent client, byte for byte.
    let pulled = t.path("pulled");
    tool(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{host}/team/site@{pushed}"),
            &format!("oci:{}:pulled", pulled.display()),
        ],
    );
    let local = json(&tool(
        "skopeo",
        &["inspect", &format!("oci:{}:pulled", pulled.display())],
    ));
    assert_eq!(local["Digest"], pushed.as_str());

    // ferry pulls it back by digest as a base image and builds on it.
    let t2 = Test::new()
        .file(
            "Dockerfile",
            &format!("FROM {host}/team/site@{pushed}\nCOPY extra.txt /srv/extra.txt\n"),
        )
        .file("extra.txt", "more\n")
        .file(
            "ferry.yaml",
            &format!(
                "jobs:
  image:
    steps:
      - uses: image
        with: {{ tags: [\"derived:1\"] }}
        permissions: {{ workspace: write, network: [\"{host}\"] }}
"
            ),
        );
    ferry_run(&t2).code(0);
    let derived = json(&tool(
        "skopeo",
        &[
            "inspect",
            &format!("oci:{}:1", workspace_file(&t2, "target/image").display()),
        ],
    ));
    let layers = derived["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4, "the base's three layers and one more");
    assert_eq!(layers[..3], remote["Layers"].as_array().unwrap()[..]);
}

#[test]
fn a_push_without_a_network_grant_is_refused() {
    // Where the registry would be: a listener that tells whether anything connected.
    let registry = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    registry.set_nonblocking(true).unwrap();
    let host = registry.local_addr().unwrap().to_string();
    let t = Test::new().file(
        "ferry.yaml",
        &format!(
            "jobs:
  image:
    steps:
      - uses: image
        with: {{ output: [registry], tags: [\"{host}/team/site:1.0\"] }}
        permissions: {{ workspace: write }}
"
        ),
    );
    context(&t);
    ferry_run(&t)
        .code(1)
        .stdout_has(&format!("cannot connect to {host}"))
        .stdout_has("granted under `permissions: { network: [...] }`");
    // ferry has exited: a connection it made would be waiting to be accepted.
    assert!(
        matches!(registry.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the refused push reached the registry"
    );
}

#[test]
fn run_needs_a_granted_container_engine_and_says_which_line() {
    let t = Test::new()
        .file("Dockerfile", "FROM scratch\nCOPY a /a\nRUN make\n")
        .file("a", "a\n")
        .file(
            "ferry.yaml",
            "jobs:\n  image:\n    steps:\n      - uses: image\n        permissions: { workspace: write }\n",
        );
    ferry_run(&t)
        .code(1)
        .stdout_has("Dockerfile:3: `RUN` executes commands inside the image, which needs a container engine")
        .stdout_has("permissions: { exec: [buildah] }");
}

#[test]
fn bad_dockerfiles_are_refused_at_their_line() {
    for (dockerfile, expected) in [
        (
            "COPY a /a\n",
            "Dockerfile:1: the first instruction must be `FROM`",
        ),
        (
            "FROM scratch\nCOPY a b /dst\n",
            "Dockerfile:2: with several sources or a wildcard, the destination must be a directory ending in `/`",
        ),
        (
            "FROM scratch\nCOPY missing.txt /\n",
            "Dockerfile:2: `missing.txt` matches nothing in the build context",
        ),
        (
            "FROM scratch\nCOPY --chown=app a /a\n",
            "Dockerfile:2: user `app` is not in the image's /etc/passwd",
        ),
        (
            "FROM scratch\nFETCH a\n",
            "Dockerfile:2: unknown instruction `FETCH`",
        ),
        (
            "FROM scratch\nCOPY ../outside /x\n",
            "Dockerfile:2: `../outside` is outside the build context",
        ),
        (
            "FROM scratch\nADD https://example.com/x.tar /x\n",
            "downloads are not supported",
        ),
    ] {
        let t = Test::new()
            .file("Dockerfile", dockerfile)
            .file("a", "a\n")
            .file("b", "b\n")
            .file(
                "ferry.yaml",
                "jobs:\n  image:\n    steps:\n      - uses: image\n        permissions: { workspace: write }\n",
            );
        ferry_run(&t).code(1).stdout_has(expected);
    }
}

#[test]
fn a_docker_archive_and_an_oci_archive_serve_as_base_images() {
    let base = Test::new().file("ferry.yaml", BUILD);
    context(&base);
    ferry_run(&base).code(0);
    let layout = workspace_file(&base, "target/image");
    let t = Test::new().file("extra.txt", "more\n");
    let docker_archive = t.path("base-docker.tar");
    tool(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}:1.0", layout.display()),
            &format!("docker-archive:{}:site:1.0", docker_archive.display()),
        ],
    );
    std::fs::copy(
        workspace_file(&base, "target/image.tar"),
        t.path("base-oci.tar"),
    )
    .unwrap();
    for (from, name) in [
        ("docker-archive:base-docker.tar", "docker"),
        ("oci-archive:base-oci.tar:1.0", "oci"),
    ] {
        std::fs::write(
            t.path("Dockerfile"),
            format!("FROM {from}\nCOPY extra.txt /srv/extra.txt\n"),
        )
        .unwrap();
        std::fs::write(
            t.path("ferry.yaml"),
            format!("jobs:\n  image:\n    steps:\n      - uses: image\n        with: {{ tags: [\"{name}:1\"] }}\n        permissions: {{ workspace: write }}\n"),
        )
        .unwrap();
        let status = t
            .command()
            .args(["run", "--output", "plain"])
            .status()
            .unwrap();
        assert!(status.success(), "building on the {name} archive");
        let rootfs = unpack(
            &format!("{}:1", workspace_file(&t, "target/image").display()),
            &t.path(&format!("bundle-{name}")),
        );
        assert!(
            rootfs.join("srv/site/index.html").is_file(),
            "{name}: the base's files"
        );
        assert_eq!(
            std::fs::read_to_string(rootfs.join("srv/extra.txt")).unwrap(),
            "more\n"
        );
    }
}

#[test]
fn an_oci_deploy_promotes_a_digest_and_a_failed_check_puts_the_tag_back() {
    let registry = Registry::start();
    let host = registry.host();
    let push = |text: &str| {
        let t = Test::new()
            .file("Dockerfile", "FROM scratch\nCOPY page.txt /page.txt\n")
            .file("page.txt", text)
            .file(
                "ferry.yaml",
                &format!(
                    "jobs:\n  image:\n    steps:\n      - uses: image\n        with: {{ output: [registry], tags: [\"{host}/team/site:build\"] }}\n        permissions: {{ workspace: write, network: [\"{host}\"] }}\n"
                ),
            );
        digest(&ferry_run(&t).code(0).stdout)
    };
    let (good, bad) = (push("good\n"), push("bad\n"));
    assert_ne!(good, bad);
    let tagged = || {
        json(&tool(
            "skopeo",
            &[
                "inspect",
                "--tls-verify=false",
                &format!("docker://{host}/team/site:production"),
            ],
        ))["Digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let promote = |digest: &str, check: &str| {
        let t = Test::new().file(
            "ferry.yaml",
            &format!(
                "jobs:
  production:
    environment: production
    steps:
      - uses: deploy
        with: {{ target: oci, image: \"{host}/team/site@{digest}\", tag: production }}
        permissions: {{ network: [\"{host}\"] }}
      - run: {check}
"
            ),
        );
        ferry_run(&t)
    };
    promote(&good, "true").code(0);
    assert_eq!(tagged(), good);
    promote(&bad, "false")
        .code(1)
        .stdout_has(&format!("rolled `production` back to {good}"));
    assert_eq!(tagged(), good, "the tag points at the good digest again");
}

#[test]
fn a_registry_with_basic_auth_takes_a_push_only_with_the_granted_password() {
    let registry = Registry::start_with(Some(("ci", "s3cret-registry-pass")));
    let host = registry.host();
    let pipeline = |password: &str| {
        format!(
            "jobs:
  image:
    steps:
      - uses: image
        with: {{ output: [registry], tags: [\"{host}/team/site:1.0\"], username: ci{password} }}
        permissions: {{ workspace: write, network: [\"{host}\"], secrets: [REGISTRY_PASSWORD] }}
"
        )
    };
    let t = Test::new()
        .file("Dockerfile", "FROM scratch\nCOPY page.txt /page.txt\n")
        .file("page.txt", "hello\n")
        .file("ferry.yaml", &pipeline(""))
        .env("REGISTRY_PASSWORD", "s3cret-registry-pass");
    ferry_run(&t)
        .code(1)
        .stdout_has("asks for a user name and password: set `username` and `password`");
    std::fs::write(
        t.path("ferry.yaml"),
        pipeline(", password: REGISTRY_PASSWORD"),
    )
    .unwrap();
    let done = ferry_run(&t).code(0);
    assert!(!done.stdout.contains("s3cret-registry-pass"));
    let pushed = digest(&done.stdout);
    let remote = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            "ci:s3cret-registry-pass",
            &format!("docker://{host}/team/site:1.0"),
        ],
    ));
    assert_eq!(remote["Digest"], pushed.as_str());
    let t = t.env("REGISTRY_PASSWORD", "wrong-password");
    ferry_run(&t).code(1).stdout_has("HTTP 401");
}

/// A Dockerfile with `RUN` goes to buildah, which runs inside the step's sandbox with
/// namespaces of its own: the image comes out, and the `RUN` reaches no host it was not
/// granted. The base is a static busybox (Debian's busybox-static, which `cargo xtask setup`
/// installs), so nothing is pulled.
#[test]
fn run_goes_through_buildah_inside_the_sandbox_and_reaches_no_ungranted_host() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let dockerfile = format!(
        "FROM scratch\n\
         COPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"mkdir\", \"-p\", \"/out\"]\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo built > /out/built\"]\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox wget -q -T 5 -O /out/page http://127.0.0.1:{port}/ && echo CONNECTED > /out/net || echo refused > /out/net\"]\n"
    );
    let t = Test::new()
        .file("Dockerfile", &dockerfile)
        .file(
            "ferry.yaml",
            "jobs:\n  image:\n    steps:\n      - uses: image\n        with: { output: [oci-layout], tags: [\"t:1\"] }\n        permissions: { workspace: write, exec: [buildah] }\n",
        );
    std::fs::copy("/bin/busybox", t.path("busybox")).unwrap();
    let done = ferry_run(&t);
    assert_eq!(done.code, 0, "{}\n{}", done.stdout, done.stderr);
    let layout = workspace_file(&t, "target/image");
    let rootfs = unpack(&format!("{}:1", layout.display()), &t.path("bundle"));
    assert_eq!(
        std::fs::read_to_string(rootfs.join("out/built")).unwrap(),
        "built\n"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("out/net")).unwrap(),
        "refused\n",
        "a RUN reached the host's loopback"
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the RUN connected to an ungranted port"
    );
}

/// The files of every layer of an OCI layout's image, as `tar -tv` lists them with numeric
/// owners: `(path, kind and mode, uid/gid)`, the last layer's entry winning.
fn layer_entries(
    layout: &std::path::Path,
    tag: &str,
) -> std::collections::BTreeMap<String, String> {
    let manifest = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:{tag}", layout.display()),
        ],
    ));
    let mut entries = std::collections::BTreeMap::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let blob = layer["digest"].as_str().unwrap().replace(':', "/");
        let listing = tool(
            "tar",
            &[
                "--numeric-owner",
                "-tvf",
                &format!("{}/blobs/{blob}", layout.display()),
            ],
        );
        for line in listing.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let path = fields[5].trim_end_matches('/').to_string();
            entries.insert(path, format!("{} {}", fields[0], fields[1]));
        }
    }
    entries
}

/// `WORKDIR` makes its folder with the missing parents, owned by `USER`; user and group
/// names (`USER app`, `--chown=app:staff`) are looked up in the image's own `/etc/passwd`
/// and `/etc/group`. Compared with what buildah makes of the same Dockerfile.
#[test]
fn workdir_and_named_owners_come_out_as_buildah_makes_them() {
    let dockerfile = "\
FROM scratch
COPY passwd /etc/passwd
COPY group /etc/group
USER app
WORKDIR /home/app/work
COPY --chown=app:staff notes.txt ./
COPY --chown=app notes.txt /opt/mine.txt
USER 1234:5678
WORKDIR /srv/data
WORKDIR /home/app
";
    let t = Test::new()
        .file("Dockerfile", dockerfile)
        .file("passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
        .file("group", "root:x:0:\napp:x:1001:\nstaff:x:50:app\n")
        .file("notes.txt", "notes\n")
        .file(
            "ferry.yaml",
            "jobs:\n  image:\n    steps:\n      - uses: image\n        with: { output: [oci-layout], tags: [\"w:1\"] }\n        permissions: { workspace: write }\n",
        );
    ferry_run(&t).code(0);
    let ours = layer_entries(&workspace_file(&t, "target/image"), "1");

    let root = tempfile::tempdir().unwrap();
    let storage = [
        "--root",
        &root.path().join("root").display().to_string(),
        "--runroot",
        &root.path().join("run").display().to_string(),
        "--storage-driver",
        "vfs",
    ]
    .map(String::from);
    let buildah = |args: &[&str]| {
        let mut all: Vec<&str> = storage.iter().map(String::as_str).collect();
        all.extend(args);
        tool("buildah", &all)
    };
    let dir = t.dir.path().display().to_string();
    buildah(&["bud", "--isolation", "chroot", "-t", "w:1", &dir]);
    let theirs_dir = root.path().join("layout");
    buildah(&["push", "w:1", &format!("oci:{}:1", theirs_dir.display())]);
    let theirs = layer_entries(&theirs_dir, "1");
    for path in [
        "home",
        "home/app",
        "home/app/work",
        "home/app/work/notes.txt",
        "opt",
        "opt/mine.txt",
        "srv",
        "srv/data",
        "etc/passwd",
    ] {
        assert_eq!(
            ours.get(path),
            theirs.get(path),
            "{path}\nferry:   {ours:#?}\nbuildah: {theirs:#?}"
        );
    }
    assert_eq!(ours["home/app/work"], "drwxr-xr-x 1000/1001");
    assert_eq!(ours["home/app/work/notes.txt"], "-rw-r--r-- 1000/50");
    assert_eq!(ours["opt/mine.txt"], "-rw-r--r-- 1000/1001");
    assert_eq!(
        ours["opt"], "drwxr-xr-x 1000/1001",
        "a folder the copy makes is its owner's"
    );
    assert_eq!(ours["srv/data"], "drwxr-xr-x 1234/5678");
}
