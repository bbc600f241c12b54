//! `ferry plugin push|pull|list|info|sign|keygen`: steps in OCI registries and the local
//! plugin store.

use super::{display_size, inspect_file, runtime};
use crate::exit;
use crate::report::style::Style;
use ferry_compose::plugins::{Policy, check_signature};
use ferry_registry::{Artifact, Metadata, Plugins, Reference, Version};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct PushArgs {
    /// The component to publish
    file: PathBuf,
    /// Where: `REGISTRY/NAMESPACE/NAME:TAG`, or `NAME:TAG` in the default location
    reference: String,
    /// More tags for the same manifest, e.g. `--tag 1 --tag 1.2` (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Where the source lives (`org.opencontainers.image.source`)
    #[arg(long, value_name = "URL")]
    source: Option<String>,
    /// SPDX license expression (`org.opencontainers.image.licenses`)
    #[arg(long, value_name = "SPDX")]
    license: Option<String>,
    /// Another manifest annotation (repeatable)
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// Sign the pushed manifest with this key (a name under ~/.config/ferry/keys or a file)
    #[arg(long, value_name = "KEY")]
    sign: Option<String>,
    /// Write the tags even when a version tag already names another component, or names a
    /// version the component is not
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
pub struct PullArgs {
    /// `REGISTRY/NAMESPACE/NAME:TAG|RANGE|@DIGEST`, or a short name
    reference: String,
    /// Also copy the component to this file
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// `REGISTRY/NAMESPACE` or a folder [default: the configured default location]
    location: Option<String>,
}

#[derive(clap::Args)]
pub struct InfoArgs {
    /// A plugin reference; without a version, the highest one
    reference: String,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct SignArgs {
    /// The plugin to sign (resolved to its digest first)
    reference: String,
    /// Secret key: a name under ~/.config/ferry/keys (from `keygen`) or a file
    #[arg(long, value_name = "KEY")]
    key: String,
}

#[derive(clap::Args)]
pub struct KeygenArgs {
    /// The key's name, used in `plugins.keys` and `require-signatures`
    name: String,
    /// Where to write NAME.key and NAME.pub [default: ~/.config/ferry/keys]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

fn plugins() -> Plugins {
    Plugins::new(ferry_registry::default_cache())
}

fn policy() -> Result<Policy, u8> {
    Policy::new(None).map_err(super::super::fail)
}

fn secret_key_path(key: &str) -> PathBuf {
    let named = ferry_registry::sign::keys_dir().join(format!("{key}.key"));
    if !key.contains(['/', '\\', '.']) && named.is_file() {
        named
    } else {
        PathBuf::from(key)
    }
}

pub fn push(args: PushArgs) -> u8 {
    let Ok(policy) = policy() else {
        return exit::USAGE;
    };
    let reference = match policy.parse(&args.reference) {
        Ok(r) => r,
        Err(e) => return super::super::fail(e),
    };
    let tag = match &reference.version {
        Version::Tag(t) if is_tag(t) => t.clone(),
        _ => {
            return super::super::fail(format!(
                "push to a tag: `{}:1.0.0`\nhint: a tag is letters, digits, `_`, `.` and `-`; ranges and digests name what exists already",
                reference.repository
            ));
        }
    };
    let mut tags = vec![tag];
    for t in &args.tags {
        if !is_tag(t) {
            return super::super::fail(format!("`{t}` is not a valid tag"));
        }
        tags.push(t.clone());
    }
    let mut annotations = BTreeMap::new();
    if let Some(s) = args.source {
        annotations.insert(ferry_registry::artifact::SOURCE.to_string(), s);
    }
    if let Some(l) = args.license {
        annotations.insert(ferry_registry::artifact::LICENSES.to_string(), l);
    }
    for a in &args.annotations {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                annotations.insert(k.to_string(), v.to_string());
            }
            _ => return super::super::fail(format!("`{a}` is not KEY=VALUE")),
        }
    }
    let secret = match &args.sign {
        Some(key) => match ferry_registry::SecretKey::read(&secret_key_path(key)) {
            Ok(k) => Some(k),
            Err(e) => return super::super::fail(e),
        },
        None => None,
    };
    let Some(rt) = runtime() else {
        return exit::USAGE;
    };
    let inspection = match rt.block_on(inspect_file(&args.file)) {
        Ok(i) => i,
        Err(e) => return super::super::fail(e),
    };
    let world = match inspection.info.world {
        ferry_sandbox::World::Step => inspection.info.world.to_string(),
        ferry_sandbox::World::Command => inspection
            .exports
            .iter()
            .find_map(|e| e.strip_prefix("wasi:cli/run@"))
            .map_or("wasi:cli/command".to_string(), |v| {
                format!("wasi:cli/command@{v}")
            }),
    };
    let created = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(|secs| ferry_engine::record::rfc3339(secs * 1000));
    let meta = Metadata {
        world,
        imports: inspection.imports.clone(),
        exports: inspection.exports.clone(),
        describe: serde_json::to_value(&inspection.info).expect("describe serializes"),
        annotations,
        created,
    };
    let component = match std::fs::read(&args.file) {
        Ok(b) => b,
        Err(e) => {
            return super::super::fail(format!("cannot read `{}`: {e}", args.file.display()));
        }
    };
    let artifact = Artifact::new(component, &meta);
    let plugins = plugins();
    let publish = ferry_registry::Publish {
        version: inspection.info.version.clone(),
        force: args.force,
    };
    let descriptor = match plugins.push(&reference.repository, &artifact, &tags, &publish) {
        Ok(d) => d,
        Err(e) => return super::super::fail(e),
    };
    let style = Style::stdout();
    crate::say!(
        "{} {} {} → {}:{}",
        style.bold("pushed"),
        inspection.info.name,
        inspection.info.version,
        reference.repository,
        tags.join(", ")
    );
    crate::say!("  digest: {}", descriptor.digest);
    crate::say!("  size:   {}", display_size(artifact.component.len()));
    crate::say!("  needs:  {}", super::needs_summary(&inspection.info));
    if let Some(secret) = secret {
        let store = plugins.store(&reference.repository);
        match ferry_registry::sign::sign(
            &*store,
            &reference.repository.path,
            &reference.repository.to_string(),
            &descriptor,
            &secret,
        ) {
            Ok(id) => crate::say!("  signed: key {id}"),
            Err(e) => return super::super::fail(format!("pushed, but signing failed: {e}")),
        }
    }
    crate::say!(
        "  use:    uses: {}:{}  (or pinned: @{})",
        policy.short(&reference.repository),
        tags[0],
        descriptor.digest
    );
    exit::PASSED
}

fn is_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && !t.starts_with(['.', '-'])
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Parses a reference, taking the highest version when none is written.
fn parse_loose(policy: &Policy, text: &str) -> Result<Reference, String> {
    policy.parse(text).or_else(|e| {
        if e.contains("names no version") {
            policy.parse(&format!("{text}:*"))
        } else {
            Err(e)
        }
    })
}

pub fn pull(args: PullArgs) -> u8 {
    let Ok(policy) = policy() else {
        return exit::USAGE;
    };
    let plugins = plugins();
    let result = (|| {
        let reference = policy.parse(&args.reference)?;
        let resolved = plugins.resolve(&reference)?;
        let signed = check_signature(&plugins, &policy, &reference, &resolved.plugin.digest)?;
        let path = plugins.component(&reference.repository, &resolved.plugin)?;
        if let Some(out) = &args.output {
            std::fs::copy(&path, out)
                .map_err(|e| format!("cannot write `{}`: {e}", out.display()))?;
        }
        Ok::<_, String>((resolved, path, signed))
    })();
    match result {
        Ok((resolved, path, signed)) => {
            crate::say!("{} {}", Style::stdout().bold("pulled"), resolved.display());
            crate::say!("  digest:    {}", resolved.plugin.digest);
            crate::say!(
                "  component: {} ({})",
                resolved.plugin.component().digest,
                display_size(resolved.plugin.component().size as usize)
            );
            if let Some(name) = signed {
                crate::say!("  signed by: {name}");
            }
            crate::say!(
                "  file:      {}",
                args.output.as_ref().unwrap_or(&path).display()
            );
            exit::PASSED
        }
        Err(e) => super::super::fail(e),
    }
}

pub fn list(args: ListArgs) -> u8 {
    let Ok(policy) = policy() else {
        return exit::USAGE;
    };
    let location = match &args.location {
        Some(text) => {
            // `localhost:5000/steps` and a folder are both accepted.
            match ferry_registry::Location::parse(text) {
                Ok(l) => l,
                Err(e) => return super::super::fail(e),
            }
        }
        None => policy.default.clone(),
    };
    let (root, prefix) = match &location {
        ferry_registry::Location::Registry { host, namespace } => (
            ferry_registry::Location::Registry {
                host: host.clone(),
                namespace: String::new(),
            },
            namespace.clone(),
        ),
        other => (other.clone(), String::new()),
    };
    let plugins = plugins();
    let probe = ferry_registry::Repository {
        location: root.clone(),
        path: "_".into(),
    };
    let repositories = match plugins.store(&probe).repositories(&prefix) {
        Ok(r) => r,
        Err(e) => return super::super::fail(e),
    };
    if repositories.is_empty() {
        crate::say!("no plugins in {location}");
        return exit::PASSED;
    }
    for path in repositories {
        let repository = ferry_registry::Repository {
            location: root.clone(),
            path,
        };
        let versions = plugins.versions(&repository).unwrap_or_default();
        let description = versions
            .first()
            .and_then(|(_, tag)| {
                let r = Reference {
                    repository: repository.clone(),
                    version: Version::Tag(tag.clone()),
                };
                plugins.resolve(&r).ok()
            })
            .and_then(|r| {
                r.plugin
                    .annotation(ferry_registry::artifact::DESCRIPTION)
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let shown: Vec<_> = versions.iter().take(5).map(|(_, t)| t.as_str()).collect();
        crate::say!(
            "{}  {}  {}",
            Style::stdout().bold(&repository.to_string()),
            if shown.is_empty() {
                "(no versions)".to_string()
            } else {
                shown.join(", ")
            },
            description
        );
    }
    exit::PASSED
}

pub fn info(args: InfoArgs) -> u8 {
    let Ok(policy) = policy() else {
        return exit::USAGE;
    };
    let plugins = plugins();
    let result = (|| {
        let reference = parse_loose(&policy, &args.reference)?;
        let resolved = plugins.resolve(&reference)?;
        let versions = plugins.versions(&reference.repository).unwrap_or_default();
        let signatures = plugins
            .signatures(&reference.repository, &resolved.plugin.digest, true)
            .unwrap_or_default();
        Ok::<_, String>((resolved, versions, signatures))
    })();
    let (resolved, versions, signatures) = match result {
        Ok(r) => r,
        Err(e) => return super::super::fail(e),
    };
    let describe = resolved.plugin.describe().unwrap_or_default();
    let needs = ferry_registry::lock::needs_of(&describe);
    if args.json {
        let value = serde_json::json!({
            "reference": resolved.display(),
            "digest": resolved.plugin.digest,
            "component": resolved.plugin.component(),
            "versions": versions.iter().map(|(_, t)| t).collect::<Vec<_>>(),
            "annotations": resolved.plugin.manifest.annotations,
            "describe": describe,
            "needs": needs,
            "signatures": signatures.iter().map(|s| &s.key).collect::<Vec<_>>(),
        });
        crate::say!("{}", serde_json::to_string_pretty(&value).expect("JSON"));
        return exit::PASSED;
    }
    let style = Style::stdout();
    let text = |k: &str| describe.get(k).and_then(|v| v.as_str()).unwrap_or_default();
    let shown_ref = match &resolved.tag {
        Some(tag) => format!("{}:{tag}", policy.short(&resolved.reference.repository)),
        None => resolved.display(),
    };
    crate::say!("{} {}", style.bold(&shown_ref), text("version"));
    if !text("description").is_empty() {
        crate::say!("  {}", text("description"));
    }
    crate::say!("  digest:     {}", resolved.plugin.digest);
    crate::say!(
        "  size:       {}",
        display_size(resolved.plugin.component().size as usize)
    );
    crate::say!(
        "  world:      {}",
        match text("world") {
            "step" => "ferry step (ferry:step/step@0.1.0)",
            "command" => "wasi:cli command",
            _ => "unknown (not published by ferry)",
        }
    );
    let shown: Vec<_> = versions.iter().take(10).map(|(_, t)| t.as_str()).collect();
    crate::say!("  versions:   {}", shown.join(", "));
    for key in [
        ferry_registry::artifact::SOURCE,
        ferry_registry::artifact::LICENSES,
    ] {
        if let Some(v) = resolved.plugin.annotation(key) {
            crate::say!(
                "  {:<11} {v}",
                format!("{}:", key.rsplit('.').next().unwrap_or(key))
            );
        }
    }
    if needs.is_empty() {
        crate::say!("  needs:      nothing");
    } else {
        crate::say!("  needs:");
        for (k, values) in &needs {
            crate::say!("    {k}: {}", values.join(", "));
        }
    }
    if let Some(inputs) = describe.get("inputs").and_then(|v| v.as_array())
        && !inputs.is_empty()
    {
        crate::say!("  inputs:");
        for input in inputs {
            let field = |k: &str| input.get(k).and_then(|v| v.as_str()).unwrap_or_default();
            let required = input.get("required").and_then(|v| v.as_bool()) == Some(true);
            let default = input
                .get("default")
                .and_then(|v| v.as_str())
                .map(|d| format!(" [default: {d}]"))
                .unwrap_or_default();
            crate::say!(
                "    {} ({}{})  {}{default}",
                field("name"),
                field("type"),
                if required { ", required" } else { "" },
                field("description")
            );
        }
    }
    if signatures.is_empty() {
        crate::say!("  signatures: none");
    } else {
        let keys: Vec<_> = signatures.iter().map(|s| s.key.as_str()).collect();
        crate::say!("  signatures: key {}", keys.join(", key "));
    }
    exit::PASSED
}

pub fn sign(args: SignArgs) -> u8 {
    let Ok(policy) = policy() else {
        return exit::USAGE;
    };
    let plugins = plugins();
    let result = (|| {
        let secret = ferry_registry::SecretKey::read(&secret_key_path(&args.key))?;
        let reference = policy.parse(&args.reference)?;
        let resolved = plugins.resolve(&reference)?;
        let descriptor = ferry_registry::artifact::Descriptor::of(
            ferry_registry::artifact::MANIFEST,
            &std::fs::read(
                plugins
                    .cached(&resolved.plugin.digest)
                    .ok_or("not cached")?,
            )
            .map_err(|e| e.to_string())?,
        );
        let store = plugins.store(&reference.repository);
        let id = ferry_registry::sign::sign(
            &*store,
            &reference.repository.path,
            &reference.repository.to_string(),
            &descriptor,
            &secret,
        )?;
        Ok::<_, String>((resolved, id))
    })();
    match result {
        Ok((resolved, id)) => {
            crate::say!(
                "{} {}@{} with key {id}",
                Style::stdout().bold("signed"),
                resolved.display(),
                resolved.plugin.digest
            );
            exit::PASSED
        }
        Err(e) => super::super::fail(e),
    }
}

pub fn keygen(args: KeygenArgs) -> u8 {
    let dir = args.dir.unwrap_or_else(ferry_registry::sign::keys_dir);
    let secret_path = dir.join(format!("{}.key", args.name));
    let public_path = dir.join(format!("{}.pub", args.name));
    if secret_path.exists() {
        return super::super::fail(format!(
            "`{}` exists; refusing to replace a key",
            secret_path.display()
        ));
    }
    let result = (|| {
        let secret = ferry_registry::SecretKey::generate()?;
        let public = secret.public(&args.name);
        ferry_registry::credentials::write_private(&secret_path, secret.to_text().as_bytes())
            .map_err(|e| format!("cannot write `{}`: {e}", secret_path.display()))?;
        ferry_registry::layout::write_atomic(&public_path, public.to_text().as_bytes())
            .map_err(|e| format!("cannot write `{}`: {e}", public_path.display()))?;
        Ok::<_, String>(public)
    })();
    match result {
        Ok(public) => {
            crate::say!("secret key: {} (keep it private)", secret_path.display());
            crate::say!("public key: {} (id {})", public_path.display(), public.id());
            crate::say!("  {}", public.to_text().trim_end());
            exit::PASSED
        }
        Err(e) => super::super::fail(e),
    }
}
