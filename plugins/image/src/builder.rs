//! Runs a parsed Dockerfile without a container engine: every stage is a base image's
//! layers plus one new layer per `COPY`/`ADD`, and the metadata instructions edit the image
//! config. Nothing depends on the host's owners, times or file modes, so the same inputs give
//! the same digest.

use crate::context::{self, Context};
use crate::dockerfile::{self, Instruction, LineError};
use ferry_oci::layout as oci;
use ferry_oci::tar::{self, Kind};
use ferry_oci::{Descriptor, Platform, Store, open_layer};
use ferry_sdk::archive;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::rc::Rc;

/// Where base images come from, when `FROM` is not `scratch`.
pub trait Bases {
    /// Puts the image `reference` for `platform` into `store` and returns its manifest's
    /// digest.
    fn fetch(
        &mut self,
        reference: &str,
        platform: &Platform,
        store: &Store,
    ) -> Result<String, String>;
}

pub struct Options {
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub platform: Platform,
    /// Every time in the image (file mtimes, `created`): `SOURCE_DATE_EPOCH`.
    pub epoch: u64,
    pub gzip: bool,
    pub labels: BTreeMap<String, String>,
}

/// The built image, in the store.
pub struct Built {
    pub manifest: Descriptor,
    pub config: Value,
}

#[derive(Clone)]
enum Content {
    None,
    Context(String),
    Bytes(Rc<Vec<u8>>),
    /// A file inside one of the stage's layers, by index.
    Layer(usize),
}

#[derive(Clone)]
struct Node {
    kind: Kind,
    /// `None`: decided from the content (executable if it starts like a program).
    mode: Option<u32>,
    uid: u64,
    gid: u64,
    content: Content,
}

type Tree = BTreeMap<String, Node>;

struct Layer {
    descriptor: Descriptor,
    diff_id: String,
}

struct Stage {
    name: Option<String>,
    config: Map<String, Value>,
    layers: Vec<Layer>,
    history: Vec<Value>,
    vars: BTreeMap<String, String>,
    shell: Vec<String>,
    cmd_set: bool,
    platform: Platform,
    /// The image config's `author` (`MAINTAINER`), inherited from the base.
    author: Option<String>,
    tree: Tree,
    /// How many of `layers` are applied to `tree`.
    applied: usize,
}

pub fn build(
    instructions: &[Instruction],
    options: &Options,
    ctx: &mut Context,
    store: &Store,
    bases: &mut dyn Bases,
) -> Result<Built, LineError> {
    let mut global_args: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    let created = crate::rfc3339(options.epoch);
    for ins in instructions {
        let at = |m: String| LineError::new(ins.line, m);
        if ins.keyword == "FROM" {
            let (flags, rest) = dockerfile::flags(&ins.rest);
            let words = dockerfile::words(&dockerfile::substitute(rest, &global_args).map_err(at)?)
                .map_err(at)?;
            let (image, name) = match words.as_slice() {
                [image] => (image.clone(), None),
                [image, as_, name] if as_.eq_ignore_ascii_case("as") => {
                    (image.clone(), Some(name.to_ascii_lowercase()))
                }
                _ => return Err(at("expected `FROM image [AS name]`".into())),
            };
            let mut platform = options.platform.clone();
            for (flag, value) in flags {
                match flag.as_str() {
                    "platform" => {
                        platform = Platform::parse(
                            &dockerfile::substitute(&value, &global_args).map_err(at)?,
                        )
                        .map_err(at)?
                    }
                    other => return Err(at(format!("`FROM` has no flag `--{other}`"))),
                }
            }
            let stage = start_stage(&image, name, platform, &stages, store, bases).map_err(at)?;
            stages.push(stage);
            continue;
        }
        let Some(stage_index) = stages.len().checked_sub(1) else {
            // `ARG` before the first `FROM`: global, usable in `FROM` lines.
            let (name, value) = arg(&ins.rest, &options.build_args, &global_args).map_err(at)?;
            global_args.insert(name, value);
            continue;
        };
        let (earlier, current) = stages.split_at_mut(stage_index);
        let stage = &mut current[0];
        let sub = |text: &str| dockerfile::substitute(text, &stage.vars);
        let mut empty_layer = true;
        match ins.keyword.as_str() {
            "ARG" => {
                let (name, value) =
                    arg(&ins.rest, &options.build_args, &global_args).map_err(at)?;
                stage.vars.insert(name, value);
            }
            "ENV" => {
                let pairs = dockerfile::pairs(&ins.rest)
                    .map_err(at)?
                    .into_iter()
                    .map(|(k, v)| Ok((k, sub(&v)?)))
                    .collect::<Result<Vec<_>, String>>()
                    .map_err(at)?;
                for (key, value) in pairs {
                    let env = stage.config.entry("Env").or_insert_with(|| json!([]));
                    let list = env.as_array_mut().expect("Env is a list");
                    list.retain(|e| {
                        e.as_str().and_then(|e| e.split_once('=')).map(|(k, _)| k)
                            != Some(key.as_str())
                    });
                    list.push(json!(format!("{key}={value}")));
                    stage.vars.insert(key, value);
                }
            }
            "LABEL" => {
                for (key, value) in dockerfile::pairs(&sub(&ins.rest).map_err(at)?).map_err(at)? {
                    stage.config.entry("Labels").or_insert_with(|| json!({}))[key] = json!(value);
                }
            }
            // The config's `author`, as Docker and buildah write it, not a label.
            "MAINTAINER" => stage.author = Some(ins.rest.trim().to_string()),
            "WORKDIR" => {
                let dir = sub(&ins.rest).map_err(at)?;
                let base = stage
                    .config
                    .get("WorkingDir")
                    .and_then(Value::as_str)
                    .unwrap_or("/");
                let mut workdir = join_dir(base, &dir);
                // The folder is made, with its missing parents, owned by `USER`, as buildah
                // and BuildKit make it: a program started there finds it.
                let missing =
                    missing_dirs(stage, store, &workdir).map_err(|e| at(e.to_string()))?;
                if !missing.is_empty() {
                    let user = stage
                        .config
                        .get("User")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let (uid, gid) = match user.as_str() {
                        "" => (0, 0),
                        user => resolve_owner(stage, store, user, Group::Primary).map_err(at)?,
                    };
                    let entries = missing
                        .into_iter()
                        .map(|path| {
                            (
                                path,
                                Node {
                                    uid,
                                    gid,
                                    ..dir_node(Kind::Dir, 0o755)
                                },
                            )
                        })
                        .collect();
                    let layer =
                        write_layer(store, entries, options).map_err(|e| at(e.to_string()))?;
                    stage.layers.push(layer);
                    empty_layer = false;
                }
                // A trailing slash stays, as buildah writes it.
                if dir.ends_with('/') && !workdir.ends_with('/') {
                    workdir.push('/');
                }
                stage.config.insert("WorkingDir".into(), json!(workdir));
            }
            "USER" => {
                stage
                    .config
                    .insert("User".into(), json!(sub(&ins.rest).map_err(at)?));
            }
            "EXPOSE" => {
                for port in sub(&ins.rest).map_err(at)?.split_whitespace() {
                    let (number, proto) = port.split_once('/').unwrap_or((port, "tcp"));
                    if number.parse::<u16>().is_err() && !number.contains('-') {
                        return Err(at(format!("`EXPOSE {port}`: not a port number")));
                    }
                    stage
                        .config
                        .entry("ExposedPorts")
                        .or_insert_with(|| json!({}))
                        [format!("{number}/{}", proto.to_ascii_lowercase())] = json!({});
                }
            }
            "VOLUME" => {
                let text = sub(&ins.rest).map_err(at)?;
                let volumes = dockerfile::json_array(&text)
                    .unwrap_or_else(|| text.split_whitespace().map(String::from).collect());
                for v in volumes {
                    stage.config.entry("Volumes").or_insert_with(|| json!({}))[v] = json!({});
                }
            }
            "STOPSIGNAL" => {
                stage
                    .config
                    .insert("StopSignal".into(), json!(sub(&ins.rest).map_err(at)?));
            }
            "SHELL" => {
                stage.shell = dockerfile::json_array(&ins.rest)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        at(
                            "`SHELL` takes a JSON array, e.g. `SHELL [\"/bin/bash\", \"-c\"]`"
                                .into(),
                        )
                    })?;
            }
            "ENTRYPOINT" | "CMD" => {
                let command = match dockerfile::json_array(&ins.rest) {
                    Some(list) => list,
                    None => {
                        let mut list = stage.shell.clone();
                        list.push(ins.rest.clone());
                        list
                    }
                };
                if ins.keyword == "ENTRYPOINT" {
                    stage.config.insert("Entrypoint".into(), json!(command));
                    if !stage.cmd_set {
                        // A new entrypoint does not inherit the base image's arguments.
                        stage.config.remove("Cmd");
                    }
                } else {
                    stage.config.insert("Cmd".into(), json!(command));
                    stage.cmd_set = true;
                }
            }
            "COPY" | "ADD" => {
                let entries = copy(ins, stage, earlier, ctx, store, bases, options)?;
                let layer = write_layer(store, entries, options).map_err(|e| at(e.to_string()))?;
                stage.layers.push(layer);
                empty_layer = false;
            }
            "RUN" => {
                return Err(at(
                    "`RUN` needs a container engine; see the `builder` input".into(),
                ));
            }
            "HEALTHCHECK" | "ONBUILD" => {
                return Err(at(format!(
                    "`{}` is not part of the OCI image format and is not supported",
                    ins.keyword
                )));
            }
            other => {
                return Err(at(format!(
                    "unknown instruction `{other}`; ferry builds FROM, ARG, ENV, LABEL, WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL, SHELL, ENTRYPOINT, CMD, COPY and ADD"
                )));
            }
        }
        let mut entry =
            json!({"created": created, "created_by": format!("{} {}", ins.keyword, ins.rest)});
        if empty_layer {
            entry["empty_layer"] = json!(true);
        }
        stage.history.push(entry);
    }
    let index = match &options.target {
        None => stages.len().checked_sub(1),
        Some(target) => stages
            .iter()
            .position(|s| s.name.as_deref() == Some(target)),
    }
    .ok_or_else(|| match &options.target {
        Some(t) => LineError::new(0, format!("the Dockerfile has no stage named `{t}`")),
        None => LineError::new(0, "the Dockerfile has no `FROM`"),
    })?;
    let stage = &mut stages[index];
    for (key, value) in &options.labels {
        stage.config.entry("Labels").or_insert_with(|| json!({}))[key] = json!(value);
    }
    finish(stage, store, &created).map_err(|e| LineError::new(0, e.to_string()))
}

fn arg(
    rest: &str,
    build_args: &BTreeMap<String, String>,
    globals: &BTreeMap<String, String>,
) -> Result<(String, String), String> {
    let (name, default) = match rest.trim().split_once('=') {
        Some((n, d)) => (n.to_string(), Some(dockerfile::words(d)?.join(" "))),
        None => (rest.trim().to_string(), None),
    };
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("expected `ARG NAME[=default]`, found `ARG {rest}`"));
    }
    let value = build_args
        .get(&name)
        .cloned()
        .or(default)
        .or_else(|| globals.get(&name).cloned())
        .unwrap_or_default();
    Ok((name, value))
}

fn start_stage(
    image: &str,
    name: Option<String>,
    platform: Platform,
    stages: &[Stage],
    store: &Store,
    bases: &mut dyn Bases,
) -> Result<Stage, String> {
    let mut stage = Stage {
        name,
        config: Map::new(),
        layers: Vec::new(),
        history: Vec::new(),
        vars: BTreeMap::new(),
        shell: vec!["/bin/sh".into(), "-c".into()],
        cmd_set: false,
        platform,
        author: None,
        tree: Tree::new(),
        applied: 0,
    };
    if image.eq_ignore_ascii_case("scratch") {
        // As Docker and buildah give an image from nothing: a PATH for the programs that a
        // later layer or a derived image adds.
        if stage.platform.os == "linux" {
            stage
                .config
                .insert("Env".into(), json!([format!("PATH={DEFAULT_PATH}")]));
            inherit_env(&mut stage);
        }
        return Ok(stage);
    }
    if let Some(earlier) = stages
        .iter()
        .find(|s| s.name.as_deref() == Some(&image.to_ascii_lowercase()))
    {
        stage.config = earlier.config.clone();
        stage.layers = earlier
            .layers
            .iter()
            .map(|l| Layer {
                descriptor: l.descriptor.clone(),
                diff_id: l.diff_id.clone(),
            })
            .collect();
        stage.history = earlier.history.clone();
        stage.platform = earlier.platform.clone();
        stage.shell = earlier.shell.clone();
        stage.author = earlier.author.clone();
        inherit_env(&mut stage);
        return Ok(stage);
    }
    let digest = bases.fetch(image, &stage.platform, store)?;
    let manifest = store.json(&digest).map_err(|e| e.to_string())?;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| format!("the manifest of `{image}` has no config"))?;
    let config = store.json(config_digest).map_err(|e| e.to_string())?;
    stage.config = config["config"].as_object().cloned().unwrap_or_default();
    stage.history = config["history"].as_array().cloned().unwrap_or_default();
    stage.author = config["author"].as_str().map(str::to_string);
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    if diff_ids.len() != layers.len() {
        return Err(format!(
            "`{image}` is inconsistent: {} layers but {} diff ids",
            layers.len(),
            diff_ids.len()
        ));
    }
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let descriptor = Descriptor::from_json(layer)
            .ok_or_else(|| format!("`{image}` has a malformed layer descriptor"))?;
        stage.layers.push(Layer {
            descriptor,
            diff_id: diff_id.as_str().unwrap_or_default().to_string(),
        });
    }
    if let (Some(os), Some(arch)) = (config["os"].as_str(), config["architecture"].as_str()) {
        stage.platform = Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: config["variant"].as_str().map(String::from),
        };
    }
    inherit_env(&mut stage);
    Ok(stage)
}

/// The `PATH` of an image built `FROM scratch` for Linux, as Docker and buildah set it.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn inherit_env(stage: &mut Stage) {
    for e in stage
        .config
        .get("Env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some((k, v)) = e.as_str().and_then(|e| e.split_once('=')) {
            stage.vars.insert(k.to_string(), v.to_string());
        }
    }
}

fn join_dir(base: &str, dir: &str) -> String {
    let joined = if dir.starts_with('/') {
        dir.to_string()
    } else {
        format!("{base}/{dir}")
    };
    format!("/{}", tar::clean(&joined))
}

/// The entries a `COPY` or `ADD` adds, keyed by path in the image (no leading `/`).
#[allow(clippy::too_many_arguments)]
fn copy(
    ins: &Instruction,
    stage: &mut Stage,
    earlier: &mut [Stage],
    ctx: &mut Context,
    store: &Store,
    bases: &mut dyn Bases,
    options: &Options,
) -> Result<Tree, LineError> {
    let at = |m: String| LineError::new(ins.line, m);
    let (flags, rest) = dockerfile::flags(&ins.rest);
    let mut from = None;
    let mut chmod = None;
    let mut owner = None;
    for (flag, value) in flags {
        let value = dockerfile::substitute(&value, &stage.vars).map_err(at)?;
        match flag.as_str() {
            "from" if ins.keyword == "COPY" => from = Some(value),
            "chmod" => {
                chmod = Some(
                    u32::from_str_radix(&value, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| {
                            at(format!(
                                "`--chmod={value}` is not an octal mode such as `755`"
                            ))
                        })?,
                )
            }
            "chown" => {
                owner = Some(resolve_owner(stage, store, &value, Group::SameAsUser).map_err(at)?)
            }
            "link" => {}
            other => return Err(at(format!("`{}` has no flag `--{other}`", ins.keyword))),
        }
    }
    let words = match dockerfile::json_array(rest) {
        Some(list) => list,
        None => dockerfile::words(rest).map_err(at)?,
    };
    let words = words
        .iter()
        .map(|w| dockerfile::substitute(w, &stage.vars))
        .collect::<Result<Vec<_>, _>>()
        .map_err(at)?;
    let Some((dest, sources)) = words.split_last().filter(|(_, s)| !s.is_empty()) else {
        return Err(at(format!("expected `{} SOURCE... DEST`", ins.keyword)));
    };
    let workdir = stage
        .config
        .get("WorkingDir")
        .and_then(Value::as_str)
        .unwrap_or("/")
        .to_string();
    let dest_path = tar::clean(&join_dir(&workdir, dest));
    let wildcard = sources.iter().any(|s| context::has_wildcard(s));
    let into_dir = dest.ends_with('/') || sources.len() > 1 || wildcard;
    if (sources.len() > 1 || wildcard) && !dest.ends_with('/') {
        return Err(at(format!(
            "with several sources or a wildcard, the destination must be a directory ending in `/`: write `{dest}/`"
        )));
    }
    // (path in the source, node) for every matched source root.
    let mut matched: Vec<(String, Tree)> = Vec::new();
    match &from {
        None => {
            for source in sources {
                if source.starts_with("http://") || source.starts_with("https://") {
                    return Err(at(format!(
                        "`ADD {source}`: downloads are not supported; fetch the file in an earlier step and `COPY` it"
                    )));
                }
                let found = context_sources(ctx, source).map_err(at)?;
                if found.is_empty() {
                    return Err(at(format!(
                        "`{source}` matches nothing in the build context `{}`{}",
                        ctx.root,
                        if ctx.ignored(&tar::clean(source)) {
                            " (it is excluded by .dockerignore)"
                        } else {
                            ""
                        }
                    )));
                }
                matched.extend(found);
            }
        }
        Some(name) => {
            let source_stage = match earlier
                .iter_mut()
                .find(|s| s.name.as_deref() == Some(&name.to_ascii_lowercase()))
            {
                Some(s) => s,
                None => match name.parse::<usize>().ok().and_then(|i| earlier.get_mut(i)) {
                    Some(s) => s,
                    None => {
                        // An image by reference, as `COPY --from=alpine:3` allows.
                        let mut image =
                            start_stage(name, None, options.platform.clone(), &[], store, bases)
                                .map_err(at)?;
                        let found = stage_sources(&mut image, sources, store).map_err(at)?;
                        return place(found, &dest_path, into_dir, chmod, owner, stage, store)
                            .map_err(at);
                    }
                },
            };
            matched = stage_sources(source_stage, sources, store).map_err(at)?;
            if matched.is_empty() {
                return Err(at(format!("{sources:?} match nothing in stage `{name}`")));
            }
        }
    }
    if ins.keyword == "ADD" {
        matched = expand_archives(matched, ctx).map_err(at)?;
    }
    place(matched, &dest_path, into_dir, chmod, owner, stage, store).map_err(at)
}

/// What a numeric user without a group stands for: `--chown=1000` is `1000:1000`, as
/// Docker documents it; `USER 1000` runs with the user's primary group, as a name without
/// a group always does.
#[derive(Clone, Copy, PartialEq)]
enum Group {
    SameAsUser,
    Primary,
}

/// A user and group as `USER` and `--chown` name them (`1000`, `app`, `app:staff`,
/// `1000:50`), as ids: numbers as they are, names through the stage's own `/etc/passwd`
/// and `/etc/group`, which are read only when a name needs them.
fn resolve_owner(
    stage: &mut Stage,
    store: &Store,
    spec: &str,
    no_group: Group,
) -> Result<(u64, u64), String> {
    let number = |s: &str| s.parse::<u64>().ok();
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let primary = no_group == Group::Primary || number(user).is_none();
    let needs_files = number(user).is_none() || group.map_or(primary, |g| number(g).is_none());
    let read = |stage: &mut Stage, path: &str| {
        image_text(stage, store, path)
            .map_err(|e| format!("cannot read `/{path}` of the image: {e}"))
    };
    let (passwd, groups) = if needs_files {
        (read(stage, "etc/passwd")?, read(stage, "etc/group")?)
    } else {
        (None, None)
    };
    // The fields of the line whose name (field 0) or id (`id_field`) is `key`.
    let entry = |file: &Option<String>, key: &str, id_field: usize| -> Option<Vec<String>> {
        file.as_deref()?
            .lines()
            .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
            .find(|f| f.len() > id_field && (f[0] == key || f[id_field] == key))
    };
    let user_line = entry(&passwd, user, 2);
    let uid = match (number(user), &user_line) {
        (Some(uid), _) => uid,
        (None, Some(f)) => number(&f[2]).unwrap_or(0),
        (None, None) if user == "root" => 0,
        (None, None) => {
            return Err(format!(
                "user `{user}` is not in the image's /etc/passwd\nhint: add it in an earlier stage or a base image, or give its numeric id (`{spec}` → `1000`)"
            ));
        }
    };
    let gid = match group {
        Some(g) => match (number(g), entry(&groups, g, 2)) {
            (Some(gid), _) => gid,
            (None, Some(f)) => number(&f[2]).unwrap_or(0),
            (None, None) if g == "root" => 0,
            (None, None) => {
                return Err(format!(
                    "group `{g}` is not in the image's /etc/group\nhint: give its numeric id, e.g. `{user}:1000`"
                ));
            }
        },
        None if primary => user_line
            .as_ref()
            .and_then(|f| f.get(3))
            .and_then(|g| number(g))
            .unwrap_or(0),
        None => uid,
    };
    Ok((uid, gid))
}

/// The text of a file of the stage as its layers so far leave it; `None` when it is not
/// there.
fn image_text(stage: &mut Stage, store: &Store, path: &str) -> io::Result<Option<String>> {
    apply_layers(stage, store)?;
    let Some(node) = stage.tree.get(path).filter(|n| n.kind == Kind::File) else {
        return Ok(None);
    };
    let mut found = vec![(
        String::new(),
        Tree::from([(path.to_string(), node.clone())]),
    )];
    load_layer_contents(stage, &mut found, store)?;
    Ok(match &found[0].1[path].content {
        Content::Bytes(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => None,
    })
}

/// The folders of `dir` (an absolute path in the image) that the stage lacks, parents
/// first. Nothing is made under a symbolic link, whose target the stage may not have.
fn missing_dirs(stage: &mut Stage, store: &Store, dir: &str) -> io::Result<Vec<String>> {
    apply_layers(stage, store)?;
    let mut missing = Vec::new();
    let mut path = String::new();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        path = join(&path, part);
        match stage.tree.get(&path) {
            Some(node) if matches!(node.kind, Kind::Symlink(_)) => break,
            Some(_) => {}
            None => missing.push(path.clone()),
        }
    }
    Ok(missing)
}

/// The context paths a source names, each with the tree under it (relative to it).
fn context_sources(ctx: &mut Context, source: &str) -> Result<Vec<(String, Tree)>, String> {
    let clean = tar::clean(source);
    if source.split('/').filter(|p| *p == "..").count() > 0 && escapes(source) {
        return Err(format!("`{source}` is outside the build context"));
    }
    let roots: Vec<String> = if context::has_wildcard(source) {
        ctx.listing()
            .map_err(|e| e.to_string())?
            .iter()
            .filter(|p| context::matches(&clean, p))
            .cloned()
            .collect()
    } else if ctx.ignored(&clean) && !clean.is_empty() {
        Vec::new()
    } else if fs::metadata(ctx.path(&clean)).is_ok() {
        vec![clean]
    } else {
        Vec::new()
    };
    let mut found = Vec::new();
    for root in roots {
        let meta = fs::metadata(ctx.path(&root)).map_err(|e| format!("`{root}`: {e}"))?;
        let mut tree = Tree::new();
        if meta.is_dir() {
            let mut paths = Vec::new();
            ctx.walk(&root, &mut paths)
                .map_err(|e| format!("`{root}`: {e}"))?;
            for (path, kind) in paths {
                let relative = path[root.len()..].trim_start_matches('/').to_string();
                let host = ctx.path(&path);
                let node = if kind == archive::Kind::Symlink {
                    let target = fs::read_link(&host).map_err(|e| format!("`{path}`: {e}"))?;
                    dir_node(
                        Kind::Symlink(target.to_string_lossy().replace('\\', "/")),
                        0o777,
                    )
                } else if kind == archive::Kind::Directory {
                    dir_node(Kind::Dir, 0o755)
                } else {
                    file_node(Content::Context(host))
                };
                tree.insert(relative, node);
            }
            tree.insert(String::new(), dir_node(Kind::Dir, 0o755));
        } else {
            tree.insert(String::new(), file_node(Content::Context(ctx.path(&root))));
        }
        found.push((root, tree));
    }
    Ok(found)
}

fn escapes(path: &str) -> bool {
    let mut depth = 0i32;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => depth -= 1,
            _ => depth += 1,
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

fn dir_node(kind: Kind, mode: u32) -> Node {
    Node {
        kind,
        mode: Some(mode),
        uid: 0,
        gid: 0,
        content: Content::None,
    }
}

fn file_node(content: Content) -> Node {
    Node {
        kind: Kind::File,
        mode: None,
        uid: 0,
        gid: 0,
        content,
    }
}

/// The paths in an earlier stage that match `sources`, with contents read from its layers.
fn stage_sources(
    stage: &mut Stage,
    sources: &[String],
    store: &Store,
) -> Result<Vec<(String, Tree)>, String> {
    apply_layers(stage, store).map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    for source in sources {
        let clean = tar::clean(source);
        let roots: Vec<String> = if context::has_wildcard(&clean) {
            stage
                .tree
                .keys()
                .filter(|p| context::matches(&clean, p))
                .cloned()
                .collect()
        } else if clean.is_empty() || stage.tree.contains_key(&clean) {
            vec![clean.clone()]
        } else {
            return Err(format!("`{source}` does not exist in the source stage"));
        };
        for root in roots {
            let mut tree = Tree::new();
            let prefix = if root.is_empty() {
                String::new()
            } else {
                format!("{root}/")
            };
            for (path, node) in stage.tree.range(root.clone()..) {
                let relative = if *path == root {
                    String::new()
                } else if let Some(r) = path.strip_prefix(&prefix) {
                    r.to_string()
                } else if path.starts_with(&root) {
                    continue;
                } else {
                    break;
                };
                tree.insert(relative, node.clone());
            }
            if root.is_empty() {
                tree.insert(String::new(), dir_node(Kind::Dir, 0o755));
            }
            found.push((root, tree));
        }
    }
    load_layer_contents(stage, &mut found, store).map_err(|e| e.to_string())?;
    Ok(found)
}

/// Replaces `Content::Layer` by the bytes, reading each layer once.
fn load_layer_contents(
    stage: &Stage,
    found: &mut [(String, Tree)],
    store: &Store,
) -> io::Result<()> {
    let mut wanted: BTreeMap<usize, BTreeMap<String, Vec<(usize, String)>>> = BTreeMap::new();
    for (i, (root, tree)) in found.iter().enumerate() {
        for (relative, node) in tree {
            if let Content::Layer(layer) = node.content {
                let full = [root.as_str(), relative.as_str()]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("/");
                wanted
                    .entry(layer)
                    .or_default()
                    .entry(full)
                    .or_default()
                    .push((i, relative.clone()));
            }
        }
    }
    for (layer, paths) in wanted {
        let mut reader = tar::Reader::new(open_layer(store, &stage.layers[layer].descriptor)?);
        while let Some(header) = reader.entry()? {
            if let Some(targets) = paths.get(&header.path) {
                let mut bytes = Vec::with_capacity(header.size as usize);
                reader.content().read_to_end(&mut bytes)?;
                let bytes = Rc::new(bytes);
                for (i, relative) in targets {
                    if let Some(node) = found[*i].1.get_mut(relative) {
                        node.content = Content::Bytes(bytes.clone());
                    }
                }
            }
        }
    }
    Ok(())
}

/// Brings `stage.tree` up to date with its layers, whiteouts included.
fn apply_layers(stage: &mut Stage, store: &Store) -> io::Result<()> {
    while stage.applied < stage.layers.len() {
        let index = stage.applied;
        let mut reader = tar::Reader::new(open_layer(store, &stage.layers[index].descriptor)?);
        while let Some(h) = reader.entry()? {
            let (dir, name) = match h.path.rsplit_once('/') {
                Some((d, n)) => (d.to_string(), n),
                None => (String::new(), h.path.as_str()),
            };
            if name == ".wh..wh..opq" {
                let prefix = format!("{dir}/");
                stage
                    .tree
                    .retain(|p, _| !dir.is_empty() && !p.starts_with(&prefix));
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let gone = if dir.is_empty() {
                    hidden.to_string()
                } else {
                    format!("{dir}/{hidden}")
                };
                let prefix = format!("{gone}/");
                stage
                    .tree
                    .retain(|p, _| *p != gone && !p.starts_with(&prefix));
                continue;
            }
            let content = if h.kind == Kind::File {
                Content::Layer(index)
            } else {
                Content::None
            };
            let node = Node {
                kind: h.kind.clone(),
                mode: Some(h.mode),
                uid: h.uid,
                gid: h.gid,
                content,
            };
            stage.tree.insert(h.path.clone(), node);
        }
        stage.applied += 1;
    }
    Ok(())
}

/// `ADD` unpacks local tar archives (plain or gzip) into the destination.
fn expand_archives(
    matched: Vec<(String, Tree)>,
    _ctx: &Context,
) -> Result<Vec<(String, Tree)>, String> {
    let mut out = Vec::new();
    for (root, tree) in matched {
        let single_file = tree.len() == 1 && tree.get("").is_some_and(|n| n.kind == Kind::File);
        let Some(Content::Context(host)) = tree
            .get("")
            .map(|n| n.content.clone())
            .filter(|_| single_file)
        else {
            out.push((root, tree));
            continue;
        };
        let mut head = [0u8; 512];
        let n = File::open(&host)
            .and_then(|mut f| read_up_to(&mut f, &mut head))
            .map_err(|e| e.to_string())?;
        let gz = n >= 2 && head[..2] == [0x1f, 0x8b];
        let plain = n >= 262 && &head[257..262] == b"ustar";
        if !gz && !plain {
            out.push((root, tree));
            continue;
        }
        let file = BufReader::new(File::open(&host).map_err(|e| e.to_string())?);
        let input: Box<dyn Read> = if gz {
            Box::new(flate2::read::MultiGzDecoder::new(file))
        } else {
            Box::new(file)
        };
        let mut reader = tar::Reader::new(input);
        let mut unpacked = Tree::new();
        unpacked.insert(String::new(), dir_node(Kind::Dir, 0o755));
        while let Some(h) = reader.entry().map_err(|e| format!("`{root}`: {e}"))? {
            let mut bytes = Vec::new();
            reader
                .content()
                .read_to_end(&mut bytes)
                .map_err(|e| format!("`{root}`: {e}"))?;
            unpacked.insert(
                h.path.clone(),
                Node {
                    kind: h.kind,
                    mode: Some(h.mode),
                    uid: h.uid,
                    gid: h.gid,
                    content: Content::Bytes(Rc::new(bytes)),
                },
            );
        }
        // An archive unpacks into the destination like a directory would.
        out.push((format!("{root}/"), unpacked));
    }
    Ok(out)
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = f.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Places matched sources under the destination, with the owner and mode asked for, and
/// the parent directories the image does not have yet.
fn place(
    matched: Vec<(String, Tree)>,
    dest: &str,
    into_dir: bool,
    chmod: Option<u32>,
    owner: Option<(u64, u64)>,
    stage: &mut Stage,
    store: &Store,
) -> Result<Tree, String> {
    let mut entries = Tree::new();
    for (root, tree) in matched {
        let root_is_dir = tree.get("").is_some_and(|n| n.kind == Kind::Dir);
        let base = if root_is_dir || !into_dir {
            dest.to_string()
        } else {
            let name = root
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or(&root);
            join(dest, name)
        };
        for (relative, mut node) in tree {
            let path = if relative.is_empty() {
                base.clone()
            } else {
                join(&base, &relative)
            };
            if path.is_empty() {
                continue;
            }
            if let Some(mode) = chmod.filter(|_| !matches!(node.kind, Kind::Symlink(_))) {
                node.mode = Some(mode);
            }
            let (uid, gid) = owner.unwrap_or((0, 0));
            node.uid = uid;
            node.gid = gid;
            entries.insert(path, node);
        }
    }
    let mut parents = Vec::new();
    for path in entries.keys() {
        let mut parent = path.as_str();
        while let Some((p, _)) = parent.rsplit_once('/') {
            parent = p;
            parents.push(parent.to_string());
        }
    }
    if !parents.is_empty() && stage.layers.len() > stage.applied {
        apply_layers(stage, store).map_err(|e| e.to_string())?;
    }
    // Folders the copy makes belong to its owner, as buildah makes them.
    let (uid, gid) = owner.unwrap_or((0, 0));
    for parent in parents {
        if !entries.contains_key(&parent) && !stage.tree.contains_key(&parent) {
            entries.insert(
                parent,
                Node {
                    uid,
                    gid,
                    ..dir_node(Kind::Dir, 0o755)
                },
            );
        }
    }
    Ok(entries)
}

fn join(base: &str, rest: &str) -> String {
    if base.is_empty() {
        rest.to_string()
    } else {
        format!("{base}/{rest}")
    }
}

/// Writes a layer through the host (`ferry:step/archive`), which reads, packs and hashes
/// natively: a large context never passes through the step's memory.
fn write_layer(store: &Store, entries: Tree, options: &Options) -> io::Result<Layer> {
    let mut archive = Vec::with_capacity(entries.len());
    for (path, node) in entries {
        let link = |kind: &Kind| match kind {
            Kind::Dir => Some(archive::Content::Directory),
            Kind::Symlink(to) => Some(archive::Content::Symlink(to.clone())),
            Kind::Hardlink(to) => Some(archive::Content::Hardlink(to.clone())),
            Kind::File => None,
        };
        let (content, mode) = match (link(&node.kind), node.content) {
            (Some(content), _) => (content, Some(node.mode.unwrap_or(0o755))),
            // No mode given: the host decides from the content (`ferry_tar::default_mode`).
            (None, Content::Context(host)) => (archive::Content::File(host), node.mode),
            (None, Content::Bytes(bytes)) => (archive::Content::Bytes(bytes.to_vec()), node.mode),
            (None, Content::None | Content::Layer(_)) => {
                (archive::Content::Bytes(Vec::new()), node.mode)
            }
        };
        archive.push(archive::Entry {
            name: path,
            content,
            mode,
            uid: node.uid,
            gid: node.gid,
        });
    }
    let temp = store.temp_path();
    let written = archive::write_tar(&temp, &archive, options.epoch, options.gzip)
        .map_err(|e| io::Error::other(e.to_string()))?;
    store.adopt(&temp, &written.digest)?;
    Ok(Layer {
        descriptor: Descriptor {
            media_type: if options.gzip {
                oci::LAYER_GZIP
            } else {
                oci::LAYER
            }
            .into(),
            digest: written.digest,
            size: written.size,
        },
        diff_id: written.tar_digest,
    })
}

fn finish(stage: &mut Stage, store: &Store, created: &str) -> io::Result<Built> {
    let config = json!({
        "created": created,
        "architecture": stage.platform.architecture,
        "os": stage.platform.os,
        "config": Value::Object(stage.config.clone()),
        "rootfs": {"type": "layers", "diff_ids": stage.layers.iter().map(|l| json!(l.diff_id)).collect::<Vec<_>>()},
        "history": stage.history,
    });
    let mut config = config;
    if let Some(v) = &stage.platform.variant {
        config["variant"] = json!(v);
    }
    if let Some(author) = &stage.author {
        config["author"] = json!(author);
    }
    let config_bytes = oci::to_bytes(&config);
    let (config_digest, config_size) = store.put(&config_bytes)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": oci::MANIFEST,
        "config": {"mediaType": oci::CONFIG, "digest": config_digest, "size": config_size},
        "layers": stage.layers.iter().map(|l| l.descriptor.to_json()).collect::<Vec<_>>(),
    });
    let bytes = oci::to_bytes(&manifest);
    let (digest, size) = store.put(&bytes)?;
    Ok(Built {
        manifest: Descriptor {
            media_type: oci::MANIFEST.into(),
            digest,
            size,
        },
        config,
    })
}
