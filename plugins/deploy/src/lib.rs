//! ferry's built-in `deploy` step: puts a release somewhere and says what it replaced, so
//! that a failed check can put the old one back (`rollback: <version>`).
//!
//! Targets:
//! - `dir`: release directories under `path` with a `current` symbolic link switched in one
//!   rename, so there is never a moment without a complete `current`; the last `keep`
//!   releases stay for rollbacks.
//! - `http`: a webhook, retried with backoff, whose answer must be 2xx.
//! - `oci`: promotes an image digest to a tag in a registry.
//! - `command`: a granted host program (`ssh`, `rsync`, `kubectl`, ...).

use ferry_oci::Store;
use ferry_oci::registry::{Client, Reference};
use ferry_sdk::exec::Command;
use ferry_sdk::http::{self, Body, Url};
use ferry_sdk::{Capabilities, Error, Info, Input, Inputs, Step, info, set_output, warn};
use sha2::{Digest, Sha256};
use std::fs;
use std::time::Duration;

struct Deploy;

const TARGETS: [&str; 4] = ["dir", "http", "oci", "command"];

impl Step for Deploy {
    fn info() -> Info {
        Info::new(
            "deploy",
            env!("CARGO_PKG_VERSION"),
            "Deploys a release to a directory, a webhook, a registry tag or through a host command, recording what it replaced so that it can be rolled back.",
        )
        .input(Input::string("target", "`dir`, `http`, `oci` or `command`.").required())
        .input(Input::string("version", "The release's name; default a digest of what is deployed (dir), or the image digest (oci)."))
        .input(Input::string("rollback", "Restore this earlier version instead of deploying (set by ferry when a later check fails, and by `ferry rollback`)."))
        .input(Input::string("source", "dir: the workspace directory to deploy.").default("."))
        .input(Input::string("layout", "dir: deploy the files of this image instead: an OCI image layout `DIR[:TAG]` on the host (absolute, or relative to the pipeline file; granted with `permissions.paths`), as the `image` step's `export` writes."))
        .input(Input::string("path", "dir: the environment's directory on the host (absolute, or relative to the pipeline file), granted with `permissions: { paths: { ...: write } }`."))
        .input(Input::integer("keep", "dir: how many releases to keep for rollbacks.").default("5"))
        .input(Input::string("url", "http: the webhook URL."))
        .input(Input::string("method", "http: the request method.").default("POST"))
        .input(Input::string("body", "http: the request body; default JSON with the version, previous version and digest."))
        .input(Input::string("token", "http: the name of a granted secret sent as `Authorization: Bearer`; oci: the registry password."))
        .input(Input::integer("retries", "http: attempts after the first failed one.").default("3"))
        .input(Input::string("previous", "http, command: the version being replaced, when the target cannot tell."))
        .input(Input::string("image", "oci: the image to promote, `registry/repo@sha256:...`."))
        .input(Input::string("tag", "oci: the tag to point at it, e.g. `production`."))
        .input(Input::string("username", "oci: the registry user."))
        .input(Input::list("command", "command: program and arguments; `FERRY_DEPLOY_VERSION` holds the version.").default("[]"))
        .input(Input::list("rollback-command", "command: program and arguments run for a rollback; default `command`.").default("[]"))
        .output("version", "The version now deployed.")
        .output("previous", "The version it replaced (empty for a first deploy).")
        .output("digest", "The deployed image or content digest.")
        .output("target", "Where it went.")
        .output("action", "`deploy` or `rollback`.")
        .capabilities(
            Capabilities::read_workspace()
                .path("*", true)
                .network(["*"])
                .secrets(["*"])
                .exec(["*"]),
        )
    }

    fn run(inputs: &Inputs) -> Result<(), Error> {
        let target = inputs.string("target")?;
        let rollback = inputs.optional("rollback").filter(|r| !r.is_empty());
        let done = match target.as_str() {
            "dir" => dir(inputs, rollback)?,
            "http" => webhook(inputs, rollback)?,
            "oci" => promote(inputs, rollback)?,
            "command" => command(inputs, rollback)?,
            other => {
                return Err(Error::InvalidInput(format!(
                    "unknown target `{other}`: use one of {}",
                    TARGETS.join(", ")
                )));
            }
        };
        for (name, value) in [
            ("version", done.version.as_str()),
            ("previous", done.previous.as_str()),
            ("digest", done.digest.as_str()),
            ("target", done.target.as_str()),
            ("action", if done.rollback { "rollback" } else { "deploy" }),
        ] {
            set_output(name, value)?;
        }
        Ok(())
    }
}

ferry_sdk::export!(Deploy);

struct Done {
    version: String,
    previous: String,
    digest: String,
    target: String,
    rollback: bool,
}

fn required(inputs: &Inputs, name: &str, target: &str) -> Result<String, Error> {
    inputs
        .optional(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::InvalidInput(format!("`target: {target}` needs `{name}`")))
}

fn secret(inputs: &Inputs, input: &str) -> Result<Option<String>, Error> {
    let Some(name) = inputs.optional(input).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    std::env::var(&name).map(Some).map_err(|_| {
        Error::Denied(format!(
            "secret `{name}` is not granted to this step; add it under `permissions: {{ secrets: [{name}] }}`"
        ))
    })
}

/// A version name is a path component and a tag: keep it to what both accept.
fn check_version(version: &str) -> Result<(), Error> {
    let ok = !version.is_empty()
        && version.len() <= 128
        && !version.starts_with('.')
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "version `{version}` must be letters, digits, `.`, `_` and `-` (at most 128, not starting with `.`)"
        )))
    }
}

// ---- dir ----------------------------------------------------------------------------------

fn dir(inputs: &Inputs, rollback: Option<String>) -> Result<Done, Error> {
    let root = ferry_sdk::host_path(&required(inputs, "path", "dir")?);
    let releases = format!("{root}/releases");
    fs::create_dir_all(&releases).map_err(|e| {
        Error::Denied(format!(
            "cannot write `{root}`: {e}; grant it with `permissions: {{ paths: {{ {root}: write }} }}`"
        ))
    })?;
    clean_leftovers(&root, &releases);
    let previous = current(&root);
    let keep = inputs.integer("keep")?.max(1) as usize;
    let mut digest = String::new();
    let version = match &rollback {
        Some(version) => {
            check_version(version)?;
            if fs::metadata(format!("{releases}/{version}")).is_err() {
                return Err(Error::failed(format!(
                    "release `{version}` is not in `{releases}` (kept: {}); it may have been pruned",
                    list_releases(&root).join(", ")
                )));
            }
            version.clone()
        }
        None => {
            let source = match inputs.optional("layout").filter(|l| !l.is_empty()) {
                Some(layout) => format!("oci:{}", ferry_sdk::host_path(&layout)),
                None => inputs.string("source")?,
            };
            let staging = format!("{releases}/.partial-{}", unique());
            fs::create_dir(&staging)
                .map_err(|e| Error::failed(format!("cannot create `{staging}`: {e}")))?;
            let result = stage(&source, &staging);
            let (content_digest, default_version) = match result {
                Ok(d) => d,
                Err(e) => {
                    let _ = fs::remove_dir_all(&staging);
                    return Err(e);
                }
            };
            digest = content_digest;
            let version = inputs
                .optional("version")
                .filter(|v| !v.is_empty())
                .unwrap_or(default_version);
            check_version(&version)?;
            let release = format!("{releases}/{version}");
            let digest_file = format!("{releases}/.{version}.sha256");
            if fs::metadata(&release).is_ok() {
                let _ = fs::remove_dir_all(&staging);
                // What is there is complete (it was renamed into place whole); it must also
                // be the same content, or the name would lie.
                let recorded = fs::read_to_string(&digest_file).unwrap_or_default();
                if !recorded.is_empty() && recorded.trim() != digest {
                    return Err(Error::failed(format!(
                        "release `{version}` is already in `{releases}` with other content ({}); give this one a new `version`",
                        recorded.trim()
                    )));
                }
                info!("release {version} is already in place");
            } else {
                fs::write(&digest_file, &digest)
                    .map_err(|e| Error::failed(format!("cannot write `{digest_file}`: {e}")))?;
                fs::rename(&staging, &release).map_err(|e| {
                    Error::failed(format!("cannot move the release into place: {e}"))
                })?;
            }
            version
        }
    };
    switch(&root, &version)?;
    record_order(&root, &version)?;
    prune(&root, keep, &version, previous.as_deref());
    match &rollback {
        Some(_) => info!(
            "rolled back {root} to {version} (was {})",
            previous.as_deref().unwrap_or("nothing")
        ),
        None => info!(
            "deployed {version} to {root} (was {})",
            previous.as_deref().unwrap_or("nothing")
        ),
    }
    Ok(Done {
        version,
        previous: previous.unwrap_or_default(),
        digest,
        target: format!("dir:{root}"),
        rollback: rollback.is_some(),
    })
}

/// Copies or unpacks the source into `staging`; returns the content digest and the default
/// version named after it.
fn stage(source: &str, staging: &str) -> Result<(String, String), Error> {
    if let Some(rest) = source.strip_prefix("oci:") {
        let (dir, tag) = match rest.rsplit_once(':') {
            Some((d, t)) if !t.contains('/') => (d, Some(t)),
            _ => (rest, None),
        };
        let store = Store {
            dir: dir.to_string(),
        };
        let index = store
            .index()
            .map_err(|e| Error::InvalidInput(format!("`source: {source}`: {e}")))?;
        let digest = ferry_oci::pick(
            &index,
            tag,
            &ferry_oci::Platform::parse("linux/amd64").map_err(Error::failed)?,
            source,
            &store,
        )
        .map_err(Error::InvalidInput)?;
        ferry_oci::unpack(&store, &digest, staging)
            .map_err(|e| Error::failed(format!("cannot unpack `{source}`: {e}")))?;
        let version = format!("sha256-{}", &digest[7..19]);
        return Ok((digest, version));
    }
    let meta = fs::metadata(source)
        .map_err(|e| Error::InvalidInput(format!("`source: {source}`: {e}")))?;
    if !meta.is_dir() {
        return Err(Error::InvalidInput(format!(
            "`source: {source}` is not a directory or `oci:` layout"
        )));
    }
    let mut hasher = Sha256::new();
    copy_tree(source, staging, "", &mut hasher)?;
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    let version = format!("sha256-{}", &digest[7..19]);
    Ok((digest, version))
}

/// Copies a directory, hashing names and contents in a fixed order.
fn copy_tree(from: &str, to: &str, relative: &str, hasher: &mut Sha256) -> Result<(), Error> {
    let dir = if relative.is_empty() {
        from.to_string()
    } else {
        format!("{from}/{relative}")
    };
    let mut entries: Vec<(String, fs::FileType)> = fs::read_dir(&dir)
        .map_err(|e| Error::failed(format!("`{dir}`: {e}")))?
        .map(|e| e.and_then(|e| Ok((e.file_name().to_string_lossy().into_owned(), e.file_type()?))))
        .collect::<Result<_, _>>()
        .map_err(|e| Error::failed(format!("`{dir}`: {e}")))?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, kind) in entries {
        let path = if relative.is_empty() {
            name.clone()
        } else {
            format!("{relative}/{name}")
        };
        if name == ".git" {
            continue;
        }
        let io = |e: std::io::Error| Error::failed(format!("`{path}`: {e}"));
        if kind.is_dir() {
            hasher.update(format!("d {path}\0").as_bytes());
            fs::create_dir(format!("{to}/{path}")).map_err(io)?;
            copy_tree(from, to, &path, hasher)?;
        } else if kind.is_file() {
            let bytes = fs::read(format!("{from}/{path}")).map_err(io)?;
            hasher.update(format!("f {path} {}\0", bytes.len()).as_bytes());
            hasher.update(&bytes);
            fs::write(format!("{to}/{path}"), &bytes).map_err(io)?;
        } else if kind.is_symlink() {
            let link = fs::read_link(format!("{from}/{path}")).map_err(io)?;
            hasher.update(format!("l {path} {}\0", link.display()).as_bytes());
            #[allow(deprecated)]
            fs::soft_link(&link, format!("{to}/{path}")).map_err(io)?;
        }
    }
    Ok(())
}

/// The release `current` points at.
fn current(root: &str) -> Option<String> {
    let link = fs::read_link(format!("{root}/current")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// Points `current` at a release in one rename: readers see the old or the new link, never
/// none.
fn switch(root: &str, version: &str) -> Result<(), Error> {
    let temp = format!("{root}/.current-{}", unique());
    #[allow(deprecated)]
    fs::soft_link(format!("releases/{version}"), &temp)
        .map_err(|e| Error::failed(format!("cannot create a link in `{root}`: {e}")))?;
    fs::rename(&temp, format!("{root}/current")).map_err(|e| {
        let _ = fs::remove_file(&temp);
        Error::failed(format!("cannot switch `{root}/current`: {e}"))
    })
}

/// Releases in the order they were deployed, newest last: `releases/.order`.
fn record_order(root: &str, version: &str) -> Result<(), Error> {
    let path = format!("{root}/releases/.order");
    let mut order: Vec<String> = fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty() && *l != version)
        .map(String::from)
        .collect();
    order.push(version.to_string());
    let temp = format!("{path}.{}", unique());
    fs::write(&temp, order.join("\n") + "\n")
        .and_then(|_| fs::rename(&temp, &path))
        .map_err(|e| Error::failed(format!("cannot write `{path}`: {e}")))
}

fn list_releases(root: &str) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(format!("{root}/releases"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    out
}

/// Keeps the newest `keep` releases, and always the current and previous ones.
fn prune(root: &str, keep: usize, current: &str, previous: Option<&str>) {
    let order: Vec<String> = fs::read_to_string(format!("{root}/releases/.order"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    let kept: Vec<&str> = order.iter().rev().take(keep).map(String::as_str).collect();
    for release in list_releases(root) {
        let known = order.contains(&release);
        if known
            && !kept.contains(&release.as_str())
            && release != current
            && Some(release.as_str()) != previous
        {
            if let Err(e) = fs::remove_dir_all(format!("{root}/releases/{release}")) {
                warn!("cannot remove old release {release}: {e}");
            }
            let _ = fs::remove_file(format!("{root}/releases/.{release}.sha256"));
        }
    }
}

/// What an interrupted deploy left: half-copied releases and unused links.
fn clean_leftovers(root: &str, releases: &str) {
    for (dir, prefix) in [(releases, ".partial-"), (root, ".current-")] {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) {
                let path = format!("{dir}/{name}");
                let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
            }
        }
    }
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}")
}

// ---- http ---------------------------------------------------------------------------------

fn webhook(inputs: &Inputs, rollback: Option<String>) -> Result<Done, Error> {
    let url_text = required(inputs, "url", "http")?;
    let url = Url::parse(&url_text).map_err(Error::InvalidInput)?;
    let previous = inputs.optional("previous").unwrap_or_default();
    let version = match &rollback {
        Some(v) => v.clone(),
        None => required(inputs, "version", "http")?,
    };
    let method = inputs.string("method")?.to_ascii_uppercase();
    let body = inputs
        .optional("body")
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| {
            serde_json::json!({
                "version": version,
                "previous": previous,
                "action": if rollback.is_some() { "rollback" } else { "deploy" },
                "run": std::env::var("FERRY_RUN_ID").unwrap_or_default(),
            })
            .to_string()
        });
    let token = secret(inputs, "token")?.map(|t| format!("Bearer {t}"));
    let retries = inputs.integer("retries")?.clamp(0, u32::MAX.into()) as u32;
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(t) = &token {
        headers.push(("Authorization", t));
    }
    let mut delay = Duration::from_millis(500);
    for attempt in 0..=retries {
        let result = http::send(
            &method,
            &url,
            &headers,
            Body::Bytes(body.as_bytes()),
            Duration::from_secs(30),
        );
        let retry = match result {
            Ok(mut response) if (200..300).contains(&response.status) => {
                info!("{method} {url_text}: {}", response.status);
                let _ = response.text();
                return Ok(Done {
                    version,
                    previous,
                    digest: String::new(),
                    target: url_text,
                    rollback: rollback.is_some(),
                });
            }
            // A client error will not go away by asking again.
            Ok(mut response) if (400..500).contains(&response.status) && response.status != 429 => {
                let status = response.status;
                return Err(Error::failed(format!(
                    "{method} {url_text} was refused: HTTP {status}: {}",
                    response.text().unwrap_or_default().trim()
                )));
            }
            Ok(response) => format!("HTTP {}", response.status),
            Err(e) => e.to_string(),
        };
        if attempt < retries {
            warn!(
                "{method} {url_text}: {retry}; trying again in {:.1}s",
                delay.as_secs_f64()
            );
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(30));
        } else {
            return Err(Error::failed(format!(
                "{method} {url_text} failed after {} attempts: {retry}",
                retries + 1
            )));
        }
    }
    unreachable!("the loop returns on its last attempt")
}

// ---- oci ----------------------------------------------------------------------------------

fn promote(inputs: &Inputs, rollback: Option<String>) -> Result<Done, Error> {
    let image =
        Reference::parse(&required(inputs, "image", "oci")?).map_err(Error::InvalidInput)?;
    let tag = required(inputs, "tag", "oci")?;
    let digest = match &rollback {
        Some(d) if d.starts_with("sha256:") => d.clone(),
        Some(d) => {
            return Err(Error::InvalidInput(format!(
                "`rollback: {d}`: an oci rollback restores a digest (`sha256:...`)"
            )));
        }
        None => image.digest.clone().ok_or_else(|| {
            Error::InvalidInput(format!(
                "`image: {image}` must be pinned by digest (`@sha256:...`): a tag can move"
            ))
        })?,
    };
    let password = secret(inputs, "token")?;
    let credentials = password.map(|p| (inputs.optional("username").unwrap_or_default(), p));
    let mut client = Client::new(&image.registry, credentials).map_err(Error::failed)?;
    let tagged = Reference {
        tag: Some(tag.clone()),
        digest: None,
        ..image.clone()
    };
    let previous = client
        .digest_of(&tagged)
        .map_err(Error::failed)?
        .unwrap_or_default();
    client
        .copy_manifest(&image, &digest, &tag)
        .map_err(|e| Error::failed(format!("cannot tag {digest} as `{tag}`: {e}")))?;
    info!(
        "{}:{tag} → {digest} (was {})",
        image.repository,
        if previous.is_empty() {
            "nothing"
        } else {
            &previous
        }
    );
    Ok(Done {
        version: digest.clone(),
        previous,
        digest,
        target: format!("{}/{}:{tag}", image.registry, image.repository),
        rollback: rollback.is_some(),
    })
}

// ---- command ------------------------------------------------------------------------------

fn command(inputs: &Inputs, rollback: Option<String>) -> Result<Done, Error> {
    let version = match &rollback {
        Some(v) => v.clone(),
        None => required(inputs, "version", "command")?,
    };
    let mut argv = inputs.list("command")?;
    if rollback.is_some() {
        let alternative = inputs.list("rollback-command")?;
        if !alternative.is_empty() {
            argv = alternative;
        }
    }
    let Some((program, args)) = argv.split_first() else {
        return Err(Error::InvalidInput(
            "`target: command` needs `command`, e.g. `[rsync, -a, dist/, host:/srv/app/]`".into(),
        ));
    };
    let previous = inputs.optional("previous").unwrap_or_default();
    Command::new(program)
        .args(args.iter().cloned())
        .env("FERRY_DEPLOY_VERSION", version.clone())
        .env("FERRY_DEPLOY_PREVIOUS", previous.clone())
        .env(
            "FERRY_DEPLOY_ACTION",
            if rollback.is_some() {
                "rollback"
            } else {
                "deploy"
            },
        )
        .run()?
        .check()?;
    Ok(Done {
        version,
        previous,
        digest: String::new(),
        target: format!("command:{program}"),
        rollback: rollback.is_some(),
    })
}
