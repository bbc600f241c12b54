//! Registry plugins in a pipeline: where short names resolve, which keys are trusted, and
//! pinning every `uses:` through `ferry.lock` to a verified component in the local cache.

use ferry_model::{Diagnostic, Pipeline, Report, Span, Uses};
use ferry_registry::{Location, Locked, Lockfile, Plugins, PublicKey, Reference, Resolved};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where plugins resolve and which signatures are required: the pipeline's `plugins:`, else
/// `FERRY_PLUGIN_REGISTRY`, else `[plugins]` in `~/.config/ferry/config.toml`, else the
/// local store.
pub struct Policy {
    pub default: Location,
    /// Key names to their source (file or inline) and the directory relative files are in.
    keys: BTreeMap<String, (String, PathBuf)>,
    require: Vec<(String, Vec<String>)>,
}

impl Policy {
    pub fn new(pipeline: Option<&Pipeline>) -> Result<Policy, String> {
        let user = crate::config::UserConfig::load()?;
        let config_dir = ferry_registry::config_dir();
        let mut keys: BTreeMap<String, (String, PathBuf)> = user
            .plugins
            .keys
            .into_iter()
            .map(|(k, v)| (k, (v, config_dir.clone())))
            .collect();
        let mut require: Vec<_> = user.plugins.require_signatures.into_iter().collect();
        let mut registry = std::env::var("FERRY_PLUGIN_REGISTRY")
            .ok()
            .filter(|s| !s.is_empty())
            .map(|s| (s, PathBuf::from(".")))
            .or_else(|| user.plugins.registry.map(|r| (r, config_dir.clone())));
        if let Some(p) = pipeline {
            let settings = &p.plugins;
            if let Some((r, _)) = &settings.registry {
                registry = Some((r.clone(), p.dir.clone()));
            }
            for (name, value, _) in &settings.keys {
                keys.insert(name.clone(), (value.clone(), p.dir.clone()));
            }
            for (prefix, names, _) in &settings.require_signatures {
                require.push((prefix.clone(), names.clone()));
            }
        }
        let default = match registry {
            Some((text, base)) => match Location::parse(&text)? {
                // A relative folder is relative to the file that named it.
                Location::Layout(dir) if dir.is_relative() => Location::Layout(base.join(dir)),
                other => other,
            },
            None => Location::Layout(ferry_registry::default_store()),
        };
        let default = match default {
            Location::Layout(dir) => Location::Layout(std::path::absolute(&dir).unwrap_or(dir)),
            other => other,
        };
        Ok(Policy {
            default,
            keys,
            require,
        })
    }

    /// The keys, any of which must have signed plugins from `repository`; empty when none
    /// is required.
    pub fn required_keys(&self, repository: &str) -> Result<Vec<PublicKey>, String> {
        let mut names = BTreeSet::new();
        for (prefix, keys) in &self.require {
            let prefix = prefix.trim_end_matches('/');
            if prefix == "*"
                || repository == prefix
                || repository.starts_with(&format!("{prefix}/"))
            {
                names.extend(keys.iter().cloned());
            }
        }
        names.iter().map(|name| self.key(name)).collect()
    }

    /// A trusted key by name: from `plugins.keys`, the user config, or
    /// `~/.config/ferry/keys/NAME.pub`.
    pub fn key(&self, name: &str) -> Result<PublicKey, String> {
        match self.keys.get(name) {
            Some((value, base)) => ferry_registry::read_public_key(name, value, base),
            None => {
                let path = ferry_registry::sign::keys_dir().join(format!("{name}.pub"));
                if path.is_file() {
                    ferry_registry::read_public_key(name, &path.to_string_lossy(), Path::new("."))
                } else {
                    Err(format!(
                        "no trusted key named `{name}`\nhint: add it under `plugins: {{ keys: {{ {name}: ./keys/{name}.pub }} }}`, or put it in `{}`",
                        path.display()
                    ))
                }
            }
        }
    }

    pub fn parse(&self, text: &str) -> Result<Reference, String> {
        Reference::parse(text, &self.default)
    }

    /// How to write `repository` in `uses:`: a short name when it is in the default
    /// location, so lock files and hints do not carry one machine's paths.
    pub fn short(&self, repository: &ferry_registry::Repository) -> String {
        let full = repository.to_string();
        let base = format!("{}/", self.default);
        full.strip_prefix(&base)
            .map_or(full.clone(), str::to_string)
    }
}

/// Checks that `digest` of `repository` carries a valid signature by a required key, with
/// the signatures kept in the cache (fetched when missing or when they do not verify).
pub fn check_signature(
    plugins: &Plugins,
    policy: &Policy,
    reference: &Reference,
    digest: &str,
) -> Result<Option<String>, String> {
    let repository = reference.repository.to_string();
    let keys = policy.required_keys(&repository)?;
    if keys.is_empty() {
        return Ok(None);
    }
    let refuse = |e: String| {
        format!(
            "{reference} is refused: {e}\nhint: the pipeline requires signed plugins from this repository; ask its publisher to run `ferry plugin sign`"
        )
    };
    let cached = plugins.signatures(&reference.repository, digest, false)?;
    match ferry_registry::sign::verify(digest, &cached, &keys) {
        Ok(name) => Ok(Some(name)),
        Err(first) => {
            let fresh = plugins
                .signatures(&reference.repository, digest, true)
                .map_err(|e| refuse(format!("{first}; fetching signatures failed: {e}")))?;
            ferry_registry::sign::verify(digest, &fresh, &keys)
                .map(Some)
                .map_err(refuse)
        }
    }
}

/// How `uses:` references are pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `ferry run`: use the lock, and add what it lacks.
    Run,
    /// `ferry run --locked`: the lock must cover every plugin and nothing else.
    Locked,
    /// `ferry validate`: like `Run`, but ferry.lock is left as it is.
    Check,
    /// `ferry lock`: add what is missing, drop what is unused, warn about moved tags.
    Lock,
    /// `ferry update [NAMES]`: resolve again (all when empty), refusing capability drift.
    Update(Vec<String>),
}

/// What pinning did, for the front end to say.
#[derive(Debug, Default)]
pub struct Pinned {
    /// ferry.lock, when it was written.
    pub wrote: Option<PathBuf>,
    /// What changed in the lock (`locked …`, `updated …`, `removed …`).
    pub notes: Vec<String>,
    /// Tags that moved since they were locked.
    pub warnings: Vec<String>,
}

/// Why pinning stopped, with the warnings found before.
#[derive(Debug)]
pub struct PinError {
    pub warnings: Vec<String>,
    pub problem: PinProblem,
}

#[derive(Debug)]
pub enum PinProblem {
    /// Problems at places in the pipeline file, all of them.
    Invalid(Report),
    /// Something else: the lock file, the settings.
    Failed(String),
}

impl PinError {
    fn failed(message: String) -> PinError {
        PinError {
            warnings: Vec::new(),
            problem: PinProblem::Failed(message),
        }
    }

    /// The problem as text, for a front end with no terminal (the server's run error).
    pub fn render(&self) -> String {
        match &self.problem {
            PinProblem::Invalid(report) => crate::render(report),
            PinProblem::Failed(message) => message.clone(),
        }
    }
}

/// Registry `uses:` in file order, each once, with where it is first written.
fn registry_uses(pipeline: &Pipeline) -> Vec<(String, Span)> {
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    for step in pipeline.jobs.iter().flat_map(|j| &j.steps) {
        if let Uses::Registry(r) = &step.uses
            && seen.insert(r.reference.clone())
        {
            found.push((r.reference.clone(), r.span));
        }
    }
    found
}

fn locked_entry(
    policy: &Policy,
    resolved: &Resolved,
    text: &str,
    signed_by: Option<String>,
) -> Locked {
    let component = resolved.plugin.component();
    let repository = policy.short(&resolved.reference.repository);
    Locked {
        uses: text.to_string(),
        resolved: match &resolved.tag {
            Some(t) => format!("{repository}:{t}"),
            None => format!("{repository}@{}", resolved.plugin.digest),
        },
        digest: resolved.plugin.digest.clone(),
        component: component.digest.clone(),
        size: component.size,
        needs: resolved
            .plugin
            .describe()
            .map(|d| ferry_registry::lock::needs_of(&d))
            .unwrap_or_default(),
        signed_by,
    }
}

/// The component of a locked plugin, fetched (and checked) only when it is not cached.
/// A reference whose tag now names another manifest keeps the locked digest and warns.
fn fetch_locked(
    plugins: &Plugins,
    policy: &Policy,
    reference: &Reference,
    locked: &Locked,
    check_moved: bool,
    warnings: &mut Vec<String>,
) -> Result<PathBuf, String> {
    let missing =
        plugins.cached(&locked.digest).is_none() || plugins.cached(&locked.component).is_none();
    if (check_moved || missing)
        && reference.tag().is_some()
        && !matches!(reference.version, ferry_registry::Version::Digest { .. })
    {
        match plugins.resolve(reference) {
            Ok(now) if now.plugin.digest != locked.digest => warnings.push(format!(
                "`{}` now resolves to {} ({}), not the locked {}: keeping the locked digest\nhint: `ferry update {}` moves to it after checking what it asks for",
                locked.uses,
                now.display(),
                now.plugin.digest,
                locked.digest,
                locked.uses
            )),
            Ok(_) => {}
            // The check is advisory: the locked digest is what runs.
            Err(_) => {}
        }
    }
    let plugin = plugins.manifest(&reference.repository, &locked.digest)?;
    if plugin.component().digest != locked.component {
        return Err(format!(
            "ferry.lock says the component of `{}` is {}, but its manifest names {}\nhint: the lock file was edited; run `ferry lock` to write it again",
            locked.uses,
            locked.component,
            plugin.component().digest
        ));
    }
    check_signature(plugins, policy, reference, &locked.digest)?;
    plugins.component(&reference.repository, &plugin)
}

/// Pins every registry `uses:` of `pipeline` and points it at its cached component.
pub fn pin(pipeline: &mut Pipeline, mode: Mode) -> Result<Pinned, PinError> {
    let uses = registry_uses(pipeline);
    let lock_path = Lockfile::path_for(&pipeline.file);
    if uses.is_empty() && !matches!(mode, Mode::Lock | Mode::Update(_)) {
        return Ok(Pinned::default());
    }
    let existing = Lockfile::read(&lock_path).map_err(PinError::failed)?;
    if mode == Mode::Locked && existing.is_none() {
        return Err(PinError::failed(format!(
            "`--locked` needs `{}`, and there is none\nhint: run `ferry lock` and commit ferry.lock",
            lock_path.display()
        )));
    }
    let policy = Policy::new(Some(pipeline)).map_err(PinError::failed)?;
    let plugins = Plugins::new(ferry_registry::default_cache());
    let mut lock = existing.clone().unwrap_or_default();
    let mut diagnostics = Vec::new();
    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    let mut components = BTreeMap::new();
    let update_all = matches!(&mode, Mode::Update(names) if names.is_empty());
    for (text, span) in &uses {
        let reference = match policy.parse(text) {
            Ok(r) => r,
            Err(e) => {
                diagnostics.push(error(e).at(*span));
                continue;
            }
        };
        let wants_update = match &mode {
            Mode::Update(names) => {
                update_all || names.iter().any(|n| names_plugin(n, text, &reference))
            }
            _ => false,
        };
        let result = match (lock.get(text).cloned(), wants_update) {
            (Some(locked), false) => fetch_locked(
                &plugins,
                &policy,
                &reference,
                &locked,
                mode == Mode::Lock,
                &mut warnings,
            ),
            (None, _) if mode == Mode::Locked => Err(format!(
                "`{text}` is not in ferry.lock\nhint: run `ferry lock` and commit ferry.lock; `--locked` never resolves"
            )),
            (previous, _) => {
                // A `uses:` whose text changed (`^0.1` widened to `^0`) has no entry of its
                // own: what the lock holds for the same repository is what was reviewed.
                let previous = previous.or_else(|| {
                    let repository = policy.short(&reference.repository);
                    lock.plugins
                        .iter()
                        .find(|p| locked_repository(&p.resolved) == repository)
                        .cloned()
                });
                resolve_new(
                    &plugins,
                    &policy,
                    pipeline,
                    &reference,
                    text,
                    previous.as_ref(),
                )
                .map(|(locked, path)| {
                    let note = match &previous {
                        Some(p) if p.digest == locked.digest => None,
                        Some(p) => Some(format!(
                            "updated {text}: {} → {} ({})",
                            p.resolved,
                            locked.resolved,
                            short(&locked.digest)
                        )),
                        None => Some(format!(
                            "locked {text} → {} ({})",
                            locked.resolved,
                            short(&locked.digest)
                        )),
                    };
                    notes.extend(note);
                    lock.put(locked);
                    path
                })
            }
        };
        // An update within a range says what the range keeps out, so that "up to date" is
        // not taken for "the newest".
        if wants_update
            && result.is_ok()
            && let Some(locked) = lock.get(text)
            && let Some((_, tag)) = locked.resolved.rsplit_once(':')
            && let ferry_registry::Version::Tag(written) = &reference.version
            && written != tag
            && let Ok(versions) = plugins.versions(&reference.repository)
            // Prereleases are for those who ask for them by name: a range never takes one.
            && let (Some((newest, newest_tag)), Some(current)) = (
                versions.iter().find(|(v, _)| v.pre.is_empty()),
                ferry_registry::parse_version(tag),
            )
            && *newest > current
        {
            let repository = policy.short(&reference.repository);
            warnings.push(format!(
                "`{text}` is at {tag}; {repository}:{newest_tag} is newer, outside `{written}`\nhint: to take it, write `uses: {repository}:^{}` and run `ferry update`, after reading what it asks for (`ferry plugin info {repository}:{newest_tag}`)",
                newest.major
            ));
        }
        match result {
            Ok(path) => {
                components.insert(text.clone(), path);
            }
            Err(e) => diagnostics.push(error(e).at(*span)),
        }
    }
    if let Mode::Update(names) = &mode {
        for name in names {
            let known = uses.iter().any(|(text, _)| {
                policy
                    .parse(text)
                    .is_ok_and(|r| names_plugin(name, text, &r))
            });
            if !known {
                diagnostics.push(
                    error(format!("no step uses a plugin `{name}`"))
                        .hint("name a `uses:` text, a repository, or its last part, e.g. `lint`"),
                );
            }
        }
    }
    let used: BTreeSet<&str> = uses.iter().map(|(t, _)| t.as_str()).collect();
    let unused: Vec<String> = lock
        .plugins
        .iter()
        .filter(|p| !used.contains(p.uses.as_str()))
        .map(|p| p.uses.clone())
        .collect();
    if !unused.is_empty() {
        if mode == Mode::Locked {
            for u in &unused {
                diagnostics.push(
                    error(format!(
                        "ferry.lock is stale: it pins `{u}`, which no step uses"
                    ))
                    .hint("run `ferry lock` and commit ferry.lock"),
                );
            }
        } else if !matches!(mode, Mode::Run | Mode::Check) {
            lock.plugins.retain(|p| used.contains(p.uses.as_str()));
            notes.extend(
                unused
                    .iter()
                    .map(|u| format!("removed {u} (no step uses it)")),
            );
        }
    }
    if !diagnostics.is_empty() {
        let text = std::fs::read_to_string(&pipeline.file).unwrap_or_default();
        return Err(PinError {
            warnings,
            problem: PinProblem::Invalid(Report {
                source: ferry_model::Source::new(&pipeline.file, text),
                diagnostics,
            }),
        });
    }
    let write = mode != Mode::Check
        && existing.as_ref() != Some(&lock)
        && !(lock.plugins.is_empty() && existing.is_none());
    if write {
        lock.version = 1;
        if let Err(e) = lock.write(&lock_path) {
            return Err(PinError {
                warnings,
                problem: PinProblem::Failed(e),
            });
        }
    }
    for step in pipeline.jobs.iter_mut().flat_map(|j| &mut j.steps) {
        if let Uses::Registry(r) = &mut step.uses {
            r.component = components.get(&r.reference).cloned();
        }
    }
    Ok(Pinned {
        wrote: write.then_some(lock_path),
        notes: if write { notes } else { Vec::new() },
        warnings,
    })
}

/// The repository of a lock entry's `resolved` (`repo:1.2.0` or `repo@sha256:…`), as
/// [`Policy::short`] writes it.
fn locked_repository(resolved: &str) -> &str {
    if let Some((repository, _)) = resolved.split_once('@') {
        return repository;
    }
    match resolved.rsplit_once(':') {
        // A colon after the last `/` ends the repository; one before is a registry's port.
        Some((repository, tag)) if !tag.contains('/') => repository,
        _ => resolved,
    }
}

/// Whether `name` (from `ferry update NAME`) means the plugin `text` resolves through: the
/// `uses:` text, its repository, or the repository's last part.
fn names_plugin(name: &str, text: &str, reference: &Reference) -> bool {
    let path = &reference.repository.path;
    name == text || path == name || path.rsplit('/').next() == Some(name)
}

fn error(message: String) -> Diagnostic {
    match message.split_once("\nhint: ") {
        Some((m, h)) => Diagnostic::error(m).hint(h),
        None => Diagnostic::error(message),
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

/// Resolves a reference afresh: the manifest, signature, capability drift against the
/// previous lock entry, and the component into the cache.
fn resolve_new(
    plugins: &Plugins,
    policy: &Policy,
    pipeline: &Pipeline,
    reference: &Reference,
    text: &str,
    previous: Option<&Locked>,
) -> Result<(Locked, PathBuf), String> {
    let resolved = plugins.resolve(reference)?;
    let signed_by = check_signature(plugins, policy, reference, &resolved.plugin.digest)?;
    let locked = locked_entry(policy, &resolved, text, signed_by);
    if let Some(previous) = previous {
        let extra = ferry_registry::lock::drift(&previous.needs, &locked.needs);
        let ungranted: Vec<_> = extra
            .into_iter()
            .filter(|(key, value)| !granted_everywhere(pipeline, text, key, value))
            .collect();
        if !ungranted.is_empty() {
            let lines: Vec<String> = ungranted
                .iter()
                .map(|(k, v)| format!("  + {k}: {v}"))
                .collect();
            return Err(format!(
                "{} asks for more than {} did, and the pipeline does not grant it:\n{}\nhint: grant these under the step's `permissions:` if you trust the new version, then run `ferry update` again; ferry.lock is unchanged",
                locked.resolved,
                previous.resolved,
                lines.join("\n")
            ));
        }
    }
    let path = plugins.component(&reference.repository, &resolved.plugin)?;
    Ok((locked, path))
}

/// Whether every step that uses `text` is granted `key: value`.
fn granted_everywhere(pipeline: &Pipeline, text: &str, key: &str, value: &str) -> bool {
    // `*` asks for whatever the pipeline grants the step, which is granted by definition;
    // the keys that take it are those the sandbox gives that way.
    let any = value == "*" || value.starts_with("* (");
    if any && matches!(key, "paths" | "secrets" | "network" | "exec") {
        return true;
    }
    pipeline
        .jobs
        .iter()
        .flat_map(|j| &j.steps)
        .filter(|s| matches!(&s.uses, Uses::Registry(r) if r.reference == text))
        .all(|step| {
            let p = &step.permissions;
            match key {
                "workspace" => value == "read" || p.workspace == ferry_model::Access::Write,
                "env" => p.env.contains(value),
                "secrets" => p.secrets.contains(value),
                "exec" => p.exec.contains(value),
                "network" => p.network.iter().any(|g| g.to_string() == value),
                "paths" => {
                    let (path, access) = value.rsplit_once(" (").unwrap_or((value, "read)"));
                    p.paths.iter().any(|(granted, a)| {
                        granted.to_string_lossy() == path
                            && (access == "read)" || *a == ferry_model::Access::Write)
                    })
                }
                _ => false,
            }
        })
}
