//! What a job does with caches and artifacts around its steps: dependency caches restored
//! before and saved after, step results looked up and stored, artifacts uploaded and
//! extracted.

use super::{Identity, Shared};
use crate::cache::{Cache, KeyBuilder, StepResult, add_files, add_known_files};
use crate::event::{Annotation, Event, Level, Reporter};
use crate::files::{Digests, Patterns, locked};
use crate::log::StepLog;
use crate::record::now_ms;
use crate::timings::{Phase, span};
use crate::workspace::{Ident, View};
use ferry_model::pipeline::format_size;
use ferry_model::{ArtifactDownload, DependencyCache, Job, Scope, Step};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A cache's key and restore keys, evaluated.
pub(super) type Keys = (String, Vec<String>);

pub(super) fn cache_keys(dc: &DependencyCache, scope: &Scope) -> Result<Keys, String> {
    let key = dc.key.render(scope)?;
    if key.trim().is_empty() {
        return Err("the key is empty once evaluated".to_string());
    }
    let restore = dc
        .restore_keys
        .iter()
        .map(|t| t.render(scope))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((key, restore.into_iter().filter(|k| !k.is_empty()).collect()))
}

/// Restores a dependency cache into the workspace; what to say about it, and what to save
/// under which key if the job passes (nothing after an exact hit).
pub(super) async fn restore_dependency_cache(
    shared: &Shared,
    dc: &DependencyCache,
    (key, restore_keys): Keys,
    workspace: &Path,
) -> Result<(String, Option<(String, Vec<String>)>), String> {
    let Some(cache) = shared.cache.clone() else {
        return Ok((format!("cache `{key}`: caching is off"), None));
    };
    let save = Some((key.clone(), dc.paths.clone()));
    if !shared.reuse {
        return Ok((
            format!("cache `{key}`: not restored (--no-cache); saved when the job passes"),
            save,
        ));
    }
    let _t = span(Phase::CacheRestore);
    let ws = workspace.to_path_buf();
    let k = key.clone();
    let found = tokio::task::spawn_blocking(move || {
        let Some(entry) = cache.find_deps(&k, &restore_keys) else {
            return Ok(None);
        };
        cache.restore_deps(&entry, &ws).map(|_| Some(entry))
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(match found {
        Ok(Some(entry)) if entry.key == key => (
            format!("cache `{key}`: restored ({})", format_size(entry.size)),
            None,
        ),
        Ok(Some(entry)) => (
            format!(
                "cache `{key}`: restored `{}` ({}); saved under `{key}` when the job passes",
                entry.key,
                format_size(entry.size)
            ),
            save,
        ),
        Ok(None) => (
            format!("cache `{key}`: no entry; saved when the job passes"),
            save,
        ),
        // A damaged entry is dropped (see Cache::restore_deps) and rebuilt by the job.
        Err(e) => (
            format!(
                "cache `{key}`: the entry could not be restored ({e}); saved anew when the job passes"
            ),
            save,
        ),
    })
}

/// Extracts the artifacts a job downloads; a line for each.
pub(super) fn download(
    state_dir: &Path,
    run_dir: &Path,
    workspace: &Path,
    wanted: &[ArtifactDownload],
) -> Result<Vec<String>, String> {
    let mut said = Vec::new();
    for d in wanted {
        let artifact = crate::artifacts::read(run_dir, &d.name)
            .map_err(|e| format!("cannot read artifact `{}`: {e}", d.name))?
            .ok_or_else(|| {
                format!(
                    "artifact `{}` was not uploaded in this run: the step that uploads it did not pass",
                    d.name
                )
            })?;
        let dst = workspace.join(&d.path);
        crate::artifacts::extract(state_dir, &artifact, &dst)
            .map_err(|e| format!("cannot extract artifact `{}`: {e}", d.name))?;
        let into = match d.path.as_str() {
            "." => String::new(),
            p => format!(" into `{p}`"),
        };
        said.push(format!(
            "artifact `{}`: {} files ({}){into}",
            d.name,
            artifact.file_count(),
            format_size(artifact.size())
        ));
    }
    Ok(said)
}

/// Whether a step that ran may have changed the workspace: a host command, a program run
/// under an `exec` grant, a grant to write it or host paths.
pub(super) fn may_write(step: &Step) -> bool {
    step.is_run
        || step.permissions.workspace == ferry_model::Access::Write
        || !step.permissions.exec.is_empty()
        || !step.permissions.paths.is_empty()
}

/// Uploads a step's `outputs.artifacts`.
pub(super) async fn upload(
    shared: &Shared,
    job: &Job,
    step: &Step,
    workspace: &Path,
    log: &StepLog,
) -> Result<(), String> {
    let _t = span(Phase::Artifacts);
    for a in &step.artifacts {
        let (state_dir, run_dir, ws, paths) = (
            shared.state_dir.clone(),
            shared.run_dir.clone(),
            workspace.to_path_buf(),
            a.paths.clone(),
        );
        let (name, job_id, key) = (a.name.clone(), job.id.clone(), step.key());
        let uploaded = tokio::task::spawn_blocking(move || {
            crate::artifacts::upload(&state_dir, &run_dir, &name, (&job_id, &key), &ws, &paths)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot upload artifact `{}`: {e}", a.name))?;
        let count = uploaded.file_count();
        let level = if count == 0 { Level::Warn } else { Level::Info };
        let nothing = if count == 0 {
            format!(": nothing matched {}", a.paths.join(", "))
        } else {
            String::new()
        };
        log.line(
            level,
            &format!(
                "[ferry] artifact `{}`: {count} files ({}){nothing}",
                a.name,
                format_size(uploaded.size())
            ),
        );
    }
    Ok(())
}

/// The files a cacheable step's result depends on: its `inputs:`, else the whole workspace
/// when it can read it, else none.
pub(super) fn step_files(step: &Step, identity: &Identity) -> Option<Vec<String>> {
    match &step.inputs {
        Some(globs) => Some(globs.clone()),
        None if identity.reads_workspace => Some(vec![".".to_string()]),
        None => None,
    }
}

/// What a step without `inputs:` is keyed by (see [`step_key`]): the job's workspace as
/// the sync left it, and the paths the pipeline declares are put there.
pub(super) struct DefaultInputs {
    pub(super) source: Arc<View>,
    pub(super) declared: Vec<String>,
}

/// The step cache key: the component, the inputs and variables the step sees (secret
/// values masked, so a secret never shapes a key), its grants, what it declares as output
/// files, the content of the files it depends on, and the host programs it may start: the
/// `PATH` they are looked up on and see, and each granted program as found there (its path
/// and the digest of its content). Another venv or toolchain on `PATH`, or a program that
/// changed in place, is another key.
pub(super) async fn step_key(
    shared: &Shared,
    step: &Step,
    identity: &Identity,
    (inputs, env, path, services): (
        &BTreeMap<String, String>,
        &BTreeMap<String, String>,
        &str,
        &str,
    ),
    workspace: &Path,
    (files, view, defaults): (Option<Vec<String>>, Option<Arc<View>>, &DefaultInputs),
    digests: &Arc<Digests>,
) -> Result<String, String> {
    let _t = span(Phase::CacheKey);
    let masked = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.iter()
            .map(|(k, v)| (k.clone(), shared.masker.mask(v)))
            .collect()
    };
    let host_env: BTreeMap<String, String> = step
        .permissions
        .env
        .iter()
        .map(|name| {
            let value = shared
                .host_env
                .get(name)
                .map_or_else(|| "\0unset".to_string(), |v| shared.masker.mask(v));
            (name.clone(), value)
        })
        .collect();
    let programs = host_programs(shared, step, path, workspace).await?;
    let mut key = KeyBuilder::default();
    key.part(identity.digest.as_bytes())
        .map("programs", &programs)
        .map("inputs", &masked(inputs))
        .map("env", &masked(env))
        .map("host-env", &host_env)
        .part(format!("{:?}", step.permissions).as_bytes())
        .part(format!("{:?}", stored_files(step)).as_bytes())
        .part(format!("{files:?}").as_bytes())
        .part(services.as_bytes());
    let Some(files) = files else {
        return Ok(key.finish());
    };
    let patterns = Patterns::new(&files)?;
    // In the steady state every input is known by its metadata and the view needs no disk:
    // then there is no need for a blocking thread.
    if let Some(view) = &view {
        let mut known = key.clone();
        if add_known_files(&mut known, &patterns, view, digests).is_some() {
            return Ok(known.finish());
        }
    }
    let (ws, digests) = (workspace.to_path_buf(), digests.clone());
    // Without `inputs:`, a step someone asked to cache depends on what the repository and
    // the pipeline put in the workspace; what earlier steps left besides (a `target/`) is
    // not part of its key. A step cached by default (a pure built-in) was not asked about,
    // so it keeps the whole workspace in its key.
    let only = match (&step.inputs, step.cache) {
        (Some(_), _) | (None, None | Some(false)) => None,
        (None, Some(true)) => Some((defaults.source.clone(), Patterns::new(&defaults.declared)?)),
    };
    tokio::task::spawn_blocking(move || {
        let keep = only.as_ref().map(|(source, declared)| {
            move |rel: &Path| source.contains(rel) || declared.matches(rel)
        });
        add_files(
            &mut key,
            &ws,
            &patterns,
            view.as_deref(),
            keep.as_ref().map(|k| k as &dyn Fn(&Path) -> bool),
            &digests,
        )
        .map_err(|e| e.to_string())?;
        Ok(key.finish())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Largest program whose content is hashed for a key (see [`host_programs`]).
const MAX_HASHED_PROGRAM: u64 = 1 << 30;

/// The host programs a step may start, for its key: `PATH` (what every program it starts
/// sees, and where a `run:` script finds its tools), and each granted program as `PATH` (or
/// the workspace, for `.venv/bin/pytest`) resolves it, by path and content digest. Empty for
/// a step that starts none.
pub(super) async fn host_programs(
    shared: &Shared,
    step: &Step,
    path: &str,
    workspace: &Path,
) -> Result<BTreeMap<String, String>, String> {
    if !step.is_run && step.permissions.exec.is_empty() {
        return Ok(BTreeMap::new());
    }
    let path = path.to_string();
    let workspace = workspace.to_path_buf();
    let names: Vec<String> = step.permissions.exec.iter().cloned().collect();
    let programs = shared.programs.clone();
    let resolved = tokio::task::spawn_blocking(move || {
        let mut found = BTreeMap::from([("\0PATH".to_string(), path.clone())]);
        for name in names {
            let resolved =
                crate::os::resolve_program(&name, std::ffi::OsStr::new(&path), Some(&workspace));
            let identity = match resolved {
                None => "not found".to_string(),
                Some(program) => {
                    // A program's content: through a link (a venv's `python`, a rustup
                    // proxy) to the file that runs. One larger than any real program (a
                    // sparse file a job planted) is known by its metadata instead: reading
                    // it would hold the host up.
                    let cannot =
                        |e: std::io::Error| format!("cannot read `{}`: {e}", program.display());
                    let meta = std::fs::metadata(&program).map_err(cannot)?;
                    let ident = Ident::of(&meta);
                    let digest = if meta.len() > MAX_HASHED_PROGRAM {
                        format!("{ident:?}")
                    } else {
                        programs
                            .digest(Path::new(""), &program, ident)
                            .map(|d| d.iter().map(|b| format!("{b:02x}")).collect::<String>())
                            .map_err(cannot)?
                    };
                    format!("{} {digest}", program.display())
                }
            };
            found.insert(name, identity);
        }
        Ok::<_, String>(found)
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok(resolved)
}

/// What a hit puts back: `outputs.files` and what its artifacts hold, so that a later
/// upload finds them.
pub(super) fn stored_files(step: &Step) -> Vec<String> {
    let mut files = step.output_files.clone();
    files.extend(step.artifacts.iter().flat_map(|a| a.paths.iter().cloned()));
    files
}

/// The stored result for `key` with its files put back, if there is a usable one. Reading
/// an entry is one small file, done in place; putting files back goes to a thread.
pub(super) async fn reuse(
    cache: &Cache,
    key: &str,
    workspace: &Path,
    log: &StepLog,
) -> Option<StepResult> {
    let _t = span(Phase::CacheRestore);
    let result = if cache.has_remote() {
        // A local miss goes to the network.
        let (cache, k) = (cache.clone(), key.to_string());
        tokio::task::spawn_blocking(move || cache.step(&k))
            .await
            .ok()??
    } else {
        cache.step(key)?
    };
    if result.files.entries.is_empty() {
        return Some(result);
    }
    let (cache, k, ws) = (cache.clone(), key.to_string(), workspace.to_path_buf());
    let restored =
        tokio::task::spawn_blocking(move || cache.restore_step(&k, &result, &ws).map(|_| result))
            .await
            .ok()?;
    match restored {
        Ok(result) => Some(result),
        Err(e) => {
            log.line(
                Level::Warn,
                &format!("[ferry] the cached result could not be restored ({e}); running the step"),
            );
            None
        }
    }
}

/// Stores a passed step's result, unless an output holds a secret: a stored result never
/// does.
#[allow(clippy::too_many_arguments)]
pub(super) async fn save_step(
    shared: &Shared,
    cache: &Cache,
    key: &str,
    (job, step): (&Job, &Step),
    workspace: &Path,
    outputs: &BTreeMap<String, String>,
    capture: &Capture,
    log: &StepLog,
    took: Duration,
) {
    if outputs.values().any(|v| shared.masker.mask(v) != *v) {
        log.line(
            Level::Info,
            "[ferry] not cached: an output holds a secret, and secrets are never stored",
        );
        return;
    }
    let _t = span(Phase::CacheSave);
    let result = StepResult {
        outputs: outputs.clone(),
        annotations: std::mem::take(&mut *locked(&capture.annotations)),
        // ferry's own notes (artifacts uploaded, caches restored) are said anew on a hit.
        log: std::mem::take(&mut *locked(&capture.lines))
            .into_iter()
            .filter(|(_, line)| !line.starts_with("[ferry] "))
            .collect(),
        files: Default::default(),
        summary: locked(&capture.summary).take(),
        duration_ms: super::millis(took),
        run: shared.run_id.to_string(),
        job: job.id.clone(),
        step: step.key(),
        created: now_ms(),
    };
    let (cache, k, ws, files) = (
        cache.clone(),
        key.to_string(),
        workspace.to_path_buf(),
        stored_files(step),
    );
    let secrets = granted_secrets(shared, step);
    let saved =
        tokio::task::spawn_blocking(move || cache.save_step(&k, result, &ws, &files, &secrets))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    shared.saved.store(true, Ordering::Relaxed);
    if let Err(e) = saved {
        log.line(
            Level::Warn,
            &format!("[ferry] the result could not be cached: {e}"),
        );
    }
}

/// The values of the secrets granted to `step`.
pub(super) fn granted_secrets(shared: &Shared, step: &Step) -> Vec<String> {
    step.permissions
        .secrets
        .iter()
        .filter_map(|name| shared.secrets.get(name).cloned())
        .collect()
}

/// Passes a step's events on and keeps its log lines and annotations, to store with its
/// result.
pub(super) struct Capture {
    pub(super) inner: Arc<dyn Reporter>,
    pub(super) lines: Mutex<Vec<(Level, String)>>,
    pub(super) annotations: Mutex<Vec<Annotation>>,
    pub(super) summary: Mutex<Option<String>>,
}

impl Reporter for Capture {
    fn event(&self, event: &Event) {
        match event {
            Event::Log { level, text, .. } => locked(&self.lines).push((*level, text.clone())),
            Event::Annotation { annotation, .. } => {
                locked(&self.annotations).push(annotation.clone())
            }
            Event::Summary { markdown, .. } => *locked(&self.summary) = Some(markdown.clone()),
            _ => {}
        }
        self.inner.event(event);
    }
}
