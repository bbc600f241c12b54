//! ferry's built-in `image` step: builds an OCI image from a Dockerfile without a container
//! engine.
//!
//! `FROM` takes `scratch`, an image layout (`oci:DIR[:TAG]`), an archive
//! (`oci-archive:FILE[:TAG]`, `docker-archive:FILE`) or a registry reference; `COPY` and
//! `ADD` add one layer each; the other instructions edit the config. Owners, times and file
//! modes come from the Dockerfile and `source-date-epoch`, never from the host, so the same
//! inputs give the same digest on any machine. A Dockerfile with `RUN` is handed to a
//! container engine the pipeline grants (`buildah`, `podman` or `docker`).

mod builder;
mod context;
mod dockerfile;

use builder::Bases;
use ferry_oci::layout as oci;
use ferry_oci::registry::{Client, Reference};
use ferry_oci::{Platform, Store, tar};
use ferry_sdk::exec::Command;
use ferry_sdk::{Capabilities, Error, Info, Input, Inputs, Step, info, set_output};
use serde_json::json;
use std::collections::BTreeMap;
use std::fs;

struct Image;

const OUTPUTS: [&str; 3] = ["oci-layout", "oci-archive", "registry"];
const ENGINES: [&str; 3] = ["buildah", "podman", "docker"];

impl Step for Image {
    fn info() -> Info {
        Info::new(
            "image",
            env!("CARGO_PKG_VERSION"),
            "Builds an OCI image from a Dockerfile without a container engine, reproducibly: the same inputs give the same digest.",
        )
        .input(Input::string("dockerfile", "The Dockerfile, relative to the workspace; default `Dockerfile` in the context."))
        .input(Input::string("context", "The build context directory, relative to the workspace.").default("."))
        .input(Input::list("output", "Any of `oci-layout`, `oci-archive` and `registry`.").default("[\"oci-layout\"]"))
        .input(Input::string("path", "Where the layout (a directory) or archive (a .tar file) is written, relative to the workspace; default `target/image` or `target/image.tar`."))
        .input(Input::string("export", "Also write the image layout to this host directory (absolute, or relative to the pipeline file; granted with `permissions: { paths: { ...: write } }`), where later jobs and `deploy` find it."))
        .input(Input::list("tags", "Names for the image: `app:1.0` in a layout or archive, `registry/repo:tag` to push.").default("[]"))
        .input(Input::list("build-args", "`NAME=value` pairs for `ARG`.").default("[]"))
        .input(Input::list("labels", "`NAME=value` labels added to the image config.").default("[]"))
        .input(Input::string("platform", "The image's `os/architecture[/variant]`; also picks a base image from a multi-platform index.").default("linux/amd64"))
        .input(Input::string("target", "The stage to build; default the last one."))
        .input(Input::string("source-date-epoch", "Seconds since 1970 used for every time in the image; default `$SOURCE_DATE_EPOCH`, else 0."))
        .input(Input::string("compression", "Layer compression: `none`, `gzip`, or `auto` (gzip when pushing).").default("auto"))
        .input(Input::string("username", "User name for the registry."))
        .input(Input::string("password", "The name of a granted secret holding the registry password or token."))
        .input(Input::string("builder", "For a Dockerfile with `RUN`: `buildah`, `podman` or `docker`; default the first one granted."))
        .output("digest", "The image manifest's digest (`sha256:...`).")
        .output("image", "The first tag pinned by digest (`repo:tag@sha256:...`), or the digest.")
        .output("tags", "The tags written or pushed, comma-separated.")
        .output("path", "Where the layout or archive was written.")
        .capabilities(
            Capabilities::write_workspace()
                .path("*", true)
                .network(["*"])
                .secrets(["*"])
                .exec(["*"]),
        )
    }

    fn run(inputs: &Inputs) -> Result<(), Error> {
        let outputs = inputs.list("output")?;
        if outputs.is_empty() {
            return Err(Error::InvalidInput(format!(
                "`output` is empty: give one or more of {}",
                OUTPUTS.join(", ")
            )));
        }
        if let Some(bad) = outputs.iter().find(|o| !OUTPUTS.contains(&o.as_str())) {
            return Err(Error::InvalidInput(format!(
                "unknown output `{bad}`: use {}",
                OUTPUTS.join(", ")
            )));
        }
        let wants = |o: &str| outputs.iter().any(|x| x == o);
        let tags = inputs.list("tags")?;
        if wants("registry") && tags.is_empty() {
            return Err(Error::InvalidInput("`output: registry` needs `tags` naming where to push, e.g. `127.0.0.1:5000/team/app:1.0`".into()));
        }
        let context_dir = safe_path(&inputs.string("context")?, "context")?;
        let dockerfile_path = match inputs.optional("dockerfile").filter(|d| !d.is_empty()) {
            Some(d) => safe_path(&d, "dockerfile")?,
            None => format!("{}/Dockerfile", context_dir.trim_end_matches('/')),
        };
        let text = fs::read_to_string(&dockerfile_path).map_err(|e| {
            Error::InvalidInput(format!(
                "cannot read the Dockerfile `{dockerfile_path}`: {e}"
            ))
        })?;
        let at = |e: dockerfile::LineError| {
            if e.line == 0 {
                Error::failed(e.message)
            } else {
                Error::failed(format!("{dockerfile_path}:{}: {}", e.line, e.message))
            }
        };
        let mut instructions = dockerfile::parse(&text).map_err(at)?;
        let compression = inputs.string("compression")?;
        let gzip = match compression.as_str() {
            "gzip" => true,
            "none" => false,
            "auto" => wants("registry"),
            other => {
                return Err(Error::InvalidInput(format!(
                    "`compression: {other}`: use `none`, `gzip` or `auto`"
                )));
            }
        };
        let epoch_text = inputs
            .optional("source-date-epoch")
            .filter(|e| !e.is_empty())
            .or_else(|| {
                std::env::var("SOURCE_DATE_EPOCH")
                    .ok()
                    .filter(|e| !e.is_empty())
            })
            .unwrap_or_else(|| "0".into());
        let epoch = epoch_text.trim().parse::<u64>().map_err(|_| {
            Error::InvalidInput(format!(
                "`source-date-epoch` is `{epoch_text}`, not a number of seconds since 1970"
            ))
        })?;
        let options = builder::Options {
            build_args: pairs(inputs, "build-args")?,
            target: inputs.optional("target").filter(|t| !t.is_empty()),
            platform: Platform::parse(&inputs.string("platform")?).map_err(Error::InvalidInput)?,
            epoch,
            gzip,
            labels: pairs(inputs, "labels")?,
        };
        let credentials = credentials(inputs)?;

        let default_path = if wants("oci-layout") {
            "target/image"
        } else {
            "target/image.tar"
        };
        let path = match inputs.optional("path").filter(|p| !p.is_empty()) {
            Some(p) => safe_path(&p, "path")?,
            None => default_path.to_string(),
        };
        let layout_dir = if wants("oci-layout") {
            path.clone()
        } else {
            format!("{path}.layout")
        };
        if let Some(parent) = std::path::Path::new(&layout_dir)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            fs::create_dir_all(parent)
                .map_err(|e| Error::failed(format!("cannot create `{}`: {e}", parent.display())))?;
        }
        let store = Store::open(&layout_dir).map_err(|e| {
            Error::failed(format!("cannot write the image layout `{layout_dir}`: {e}"))
        })?;

        let mut bases = BaseImages {
            credentials: credentials.clone(),
        };
        if let Some(run) = instructions.iter().find(|i| i.keyword == "RUN") {
            let archive = delegate(inputs, run.line, &dockerfile_path, &context_dir, &options)?;
            instructions =
                dockerfile::parse(&format!("FROM oci-archive:{archive}\n")).map_err(at)?;
        }
        let mut ctx =
            context::Context::open(&context_dir).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let built =
            builder::build(&instructions, &options, &mut ctx, &store, &mut bases).map_err(at)?;
        let digest = built.manifest.digest.clone();

        let platform =
            json!({"os": built.config["os"], "architecture": built.config["architecture"]});
        let descriptor = |annotations: Option<serde_json::Value>| {
            let mut d = built.manifest.to_json();
            d["platform"] = platform.clone();
            if let Some(a) = annotations {
                d["annotations"] = a;
            }
            d
        };
        let mut index: Vec<serde_json::Value> = tags
            .iter()
            .map(|t| {
                descriptor(Some(
                    json!({oci::REF_NAME: tag_of(t), "io.containerd.image.name": t}),
                ))
            })
            .collect();
        if index.is_empty() {
            index.push(descriptor(None));
        }
        store
            .set_index(index)
            .map_err(|e| Error::failed(format!("cannot write `{layout_dir}/index.json`: {e}")))?;
        if wants("oci-layout") {
            info!("wrote the image layout {layout_dir}");
        }
        if wants("oci-archive") {
            let archive = if wants("oci-layout") {
                format!("{path}.tar")
            } else {
                path.clone()
            };
            store
                .write_archive(&archive, epoch)
                .map_err(|e| Error::failed(format!("cannot write the archive `{archive}`: {e}")))?;
            info!("wrote the image archive {archive}");
            if !wants("oci-layout") {
                fs::remove_dir_all(&layout_dir)
                    .map_err(|e| Error::failed(format!("cannot remove `{layout_dir}`: {e}")))?;
            }
            set_output("path", &archive)?;
        } else if wants("oci-layout") {
            set_output("path", &layout_dir)?;
        }
        if let Some(export) = inputs.optional("export").filter(|e| !e.is_empty()) {
            let export = ferry_sdk::host_path(&export);
            copy_layout(&store, &export).map_err(|e| {
                Error::failed(format!(
                    "cannot export the image to `{export}`: {e}; grant it with `permissions: {{ paths: {{ {export}: write }} }}`"
                ))
            })?;
            info!("exported the image layout to {export}");
        }
        if wants("registry") {
            for tag in &tags {
                let reference = Reference::parse(tag).map_err(Error::InvalidInput)?;
                let mut client =
                    Client::new(&reference.registry, credentials.clone()).map_err(Error::failed)?;
                client
                    .push(&reference, &Store::open(&layout_dir)?, &digest)
                    .map_err(|e| Error::failed(format!("push to `{tag}` failed: {e}")))?;
                info!("pushed {tag}@{digest}");
            }
            if !wants("oci-layout") && !wants("oci-archive") {
                let _ = fs::remove_dir_all(&layout_dir);
            }
        }
        info!("image {digest}");
        set_output("digest", &digest)?;
        set_output(
            "image",
            &match tags.first() {
                Some(t) => format!("{t}@{digest}"),
                None => digest.clone(),
            },
        )?;
        set_output("tags", &tags.join(","))?;
        Ok(())
    }
}

ferry_sdk::export!(Image);

/// The tag part of `registry/repo:tag` (`latest` without one).
fn tag_of(reference: &str) -> &str {
    match reference.rsplit_once(':') {
        Some((_, t)) if !t.contains('/') => t,
        _ => "latest",
    }
}

fn safe_path(path: &str, input: &str) -> Result<String, Error> {
    let bad =
        path.starts_with('/') || path.split(['/', '\\']).any(|p| p == "..") || path.contains(':');
    if bad {
        return Err(Error::InvalidInput(format!(
            "`{input}: {path}` must be a path inside the workspace, without `..`"
        )));
    }
    Ok(if path.is_empty() {
        ".".into()
    } else {
        path.to_string()
    })
}

fn pairs(inputs: &Inputs, name: &str) -> Result<BTreeMap<String, String>, Error> {
    inputs
        .list(name)?
        .into_iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .ok_or_else(|| Error::InvalidInput(format!("`{name}`: `{p}` is not `NAME=value`")))
        })
        .collect()
}

fn credentials(inputs: &Inputs) -> Result<Option<(String, String)>, Error> {
    let Some(secret) = inputs.optional("password").filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let password = std::env::var(&secret).map_err(|_| {
        Error::Denied(format!("secret `{secret}` is not granted to this step; add it under `permissions: {{ secrets: [{secret}] }}`"))
    })?;
    let user = inputs.optional("username").unwrap_or_default();
    Ok(Some((user, password)))
}

/// Base images named in `FROM` (and `COPY --from`).
struct BaseImages {
    credentials: Option<(String, String)>,
}

impl Bases for BaseImages {
    fn fetch(
        &mut self,
        reference: &str,
        platform: &Platform,
        store: &Store,
    ) -> Result<String, String> {
        let (transport, rest) = reference.split_once(':').unwrap_or(("", reference));
        match transport {
            "oci" | "oci-layout" => {
                let rest = rest.trim_start_matches("//");
                let (dir, tag) = split_tag(rest);
                let source = Store {
                    dir: safe_path(dir, "FROM").map_err(|e| e.to_string())?,
                };
                let index = source.index().map_err(|e| e.to_string())?;
                let digest = ferry_oci::pick(&index, tag, platform, reference, &source)?;
                copy_image(&source, store, &digest)?;
                Ok(digest)
            }
            "oci-archive" => {
                let (file, tag) = split_tag(rest);
                let file = safe_path(file, "FROM").map_err(|e| e.to_string())?;
                import_oci_archive(&file, tag, platform, store)
            }
            "docker-archive" => {
                let file = safe_path(rest, "FROM").map_err(|e| e.to_string())?;
                import_docker_archive(&file, store)
            }
            _ => {
                let r = Reference::parse(reference)?;
                let mut client = Client::new(&r.registry, self.credentials.clone())?;
                client
                    .pull(&r, platform, store)
                    .map_err(|e| format!("cannot pull `{reference}`: {e}"))
            }
        }
    }
}

fn split_tag(text: &str) -> (&str, Option<&str>) {
    match text.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') && !t.is_empty() => (p, Some(t)),
        _ => (text, None),
    }
}

/// Copies a layout's blobs (those missing) and index to another layout.
fn copy_layout(from: &Store, to: &str) -> Result<(), String> {
    fs::create_dir_all(to).map_err(|e| e.to_string())?;
    let target = Store::open(to).map_err(|e| e.to_string())?;
    let index = from.index().map_err(|e| e.to_string())?;
    for entry in &index {
        let digest = entry["digest"]
            .as_str()
            .ok_or("an index entry without a digest")?;
        copy_image(from, &target, digest)?;
    }
    target.set_index(index).map_err(|e| e.to_string())
}

fn copy_image(source: &Store, store: &Store, manifest: &str) -> Result<(), String> {
    let import = |digest: &str| -> Result<(), String> {
        let mut blob = source.open_blob(digest).map_err(|e| e.to_string())?;
        store
            .import(&mut blob, digest)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    import(manifest)?;
    let value = store.json(manifest).map_err(|e| e.to_string())?;
    for d in
        std::iter::once(&value["config"]).chain(value["layers"].as_array().into_iter().flatten())
    {
        import(
            d["digest"]
                .as_str()
                .ok_or("a descriptor without a digest")?,
        )?;
    }
    Ok(())
}

fn import_oci_archive(
    file: &str,
    tag: Option<&str>,
    platform: &Platform,
    store: &Store,
) -> Result<String, String> {
    let input = fs::File::open(file).map_err(|e| format!("cannot open `{file}`: {e}"))?;
    let mut reader = tar::Reader::new(std::io::BufReader::with_capacity(1 << 20, input));
    let mut index = None;
    while let Some(h) = reader.entry().map_err(|e| format!("`{file}`: {e}"))? {
        if h.path == "index.json" {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut reader.content(), &mut text)
                .map_err(|e| e.to_string())?;
            index = Some(text);
        } else if let Some(hex) = h.path.strip_prefix("blobs/sha256/") {
            store
                .import(&mut reader.content(), &format!("sha256:{hex}"))
                .map_err(|e| format!("`{file}`: {e}"))?;
        }
    }
    let index: serde_json::Value = serde_json::from_slice(
        &index.ok_or_else(|| format!("`{file}` is not an OCI archive: it has no index.json"))?,
    )
    .map_err(|e| format!("`{file}`: index.json: {e}"))?;
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    ferry_oci::pick(&manifests, tag, platform, file, store)
}

/// `docker save` output: `manifest.json` names a config and layer files by path.
fn import_docker_archive(file: &str, store: &Store) -> Result<String, String> {
    let open = || -> Result<tar::Reader<std::io::BufReader<fs::File>>, String> {
        let input = fs::File::open(file).map_err(|e| format!("cannot open `{file}`: {e}"))?;
        Ok(tar::Reader::new(std::io::BufReader::with_capacity(
            1 << 20,
            input,
        )))
    };
    let mut reader = open()?;
    let mut manifest = None;
    while let Some(h) = reader.entry().map_err(|e| format!("`{file}`: {e}"))? {
        if h.path == "manifest.json" {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut reader.content(), &mut text)
                .map_err(|e| e.to_string())?;
            manifest = Some(text);
        }
    }
    let manifest: serde_json::Value = serde_json::from_slice(
        &manifest
            .ok_or_else(|| format!("`{file}` is not a docker archive: it has no manifest.json"))?,
    )
    .map_err(|e| format!("`{file}`: manifest.json: {e}"))?;
    let entry = manifest
        .get(0)
        .ok_or_else(|| format!("`{file}` holds no image"))?;
    let config_path = entry["Config"]
        .as_str()
        .ok_or("manifest.json has no Config")?
        .to_string();
    let layer_paths: Vec<String> = entry["Layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str().map(String::from))
        .collect();
    let mut found: BTreeMap<String, (String, u64, bool)> = BTreeMap::new();
    let mut reader = open()?;
    while let Some(h) = reader.entry().map_err(|e| format!("`{file}`: {e}"))? {
        if h.path == config_path || layer_paths.contains(&h.path) {
            let mut content = reader.content();
            let mut head = [0u8; 2];
            let n = std::io::Read::read(&mut content, &mut head).map_err(|e| e.to_string())?;
            let mut writer = store.writer().map_err(|e| e.to_string())?;
            std::io::Write::write_all(&mut writer, &head[..n]).map_err(|e| e.to_string())?;
            std::io::copy(&mut content, &mut writer).map_err(|e| format!("`{file}`: {e}"))?;
            let (digest, size) = writer.finish().map_err(|e| e.to_string())?;
            found.insert(h.path.clone(), (digest, size, head[..n] == [0x1f, 0x8b]));
        }
    }
    let get = |p: &String| {
        found
            .get(p)
            .cloned()
            .ok_or_else(|| format!("`{file}` names `{p}` but does not contain it"))
    };
    let (config_digest, config_size, _) = get(&config_path)?;
    let layers = layer_paths
        .iter()
        .map(|p| {
            let (digest, size, gz) = get(p)?;
            Ok(json!({"mediaType": if gz { oci::LAYER_GZIP } else { oci::LAYER }, "digest": digest, "size": size}))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": oci::MANIFEST,
        "config": {"mediaType": oci::CONFIG, "digest": config_digest, "size": config_size},
        "layers": layers,
    });
    store
        .put(&oci::to_bytes(&manifest))
        .map(|(d, _)| d)
        .map_err(|e| e.to_string())
}

/// Hands a Dockerfile with `RUN` to a granted container engine and returns the OCI archive
/// it wrote.
fn delegate(
    inputs: &Inputs,
    line: usize,
    dockerfile: &str,
    context: &str,
    options: &builder::Options,
) -> Result<String, Error> {
    let candidates: Vec<String> = match inputs.optional("builder").filter(|b| !b.is_empty()) {
        Some(b) if ENGINES.contains(&b.as_str()) => vec![b],
        Some(b) => {
            return Err(Error::InvalidInput(format!(
                "`builder: {b}`: use one of {}",
                ENGINES.join(", ")
            )));
        }
        None => ENGINES.iter().map(|e| e.to_string()).collect(),
    };
    let engine = candidates
        .iter()
        .find(|e| Command::new(e).arg("--version").quiet().run().is_ok_and(|o| o.success()))
        .ok_or_else(|| {
            Error::failed(format!(
                "{dockerfile}:{line}: `RUN` executes commands inside the image, which needs a container engine; grant one under `permissions: {{ exec: [buildah] }}` (or podman, docker), or build without `RUN` (for example COPY a binary built in an earlier step)"
            ))
        })?;
    let archive = "target/.ferry-image-engine.tar".to_string();
    fs::create_dir_all("target").map_err(|e| Error::failed(e.to_string()))?;
    let platform = format!("{}/{}", options.platform.os, options.platform.architecture);
    let tag = "localhost/ferry-image-build:latest";
    let mut build = Command::new(engine);
    build = match engine.as_str() {
        "docker" => build.args([
            "buildx",
            "build",
            "--output",
            &format!("type=oci,dest={archive}"),
        ]),
        _ => build.args([
            "build",
            "--timestamp",
            &options.epoch.to_string(),
            "--tag",
            tag,
        ]),
    };
    build = build.args(["--file", dockerfile, "--platform", &platform]);
    for (k, v) in &options.build_args {
        build = build.args(["--build-arg".to_string(), format!("{k}={v}")]);
    }
    if let Some(t) = &options.target {
        build = build.args(["--target", t]);
    }
    build.arg(context).run()?.check()?;
    match engine.as_str() {
        "buildah" => Command::new("buildah")
            .args(["push", tag, &format!("oci-archive:{archive}")])
            .run()?
            .check()?,
        "podman" => Command::new("podman")
            .args(["save", "--format", "oci-archive", "-o", &archive, tag])
            .run()?
            .check()?,
        _ => return Ok(archive),
    };
    Ok(archive)
}

/// `1970-01-01T00:00:00Z` for a number of seconds.
pub(crate) fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_times() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
