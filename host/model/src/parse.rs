//! Reads a pipeline file into a validated [`Pipeline`], collecting every error at once.

use crate::diag::{Diagnostic, Report, Source, Span, suggest};
use crate::expr::{Expression, Template};
use crate::pipeline::{
    Access, Concurrency, Environment, Job, Permissions, Pipeline, Step, Uses, is_identifier,
    parse_size,
};
use crate::pipeline::{
    ArtifactDownload, ArtifactUpload, Combination, DependencyCache, GRANT_LISTS, Given,
    MAX_COMBINATIONS, MAX_SERVICE_PORTS, MAX_SERVICES, MAX_SERVICES_READY, Matrix, MatrixAtRun,
    PROXY_PORT, PluginSettings, Ready, RegistryUse, Service,
};
use crate::triggers::{Cron, Events, InputKind, Manual, ManualInput, Triggers};
use crate::yaml::{self, Kind, Node};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// Shell used by `run:` steps that do not name one.
pub const DEFAULT_SHELL: &str = if cfg!(windows) { "pwsh" } else { "sh" };

/// Shells a `run:` step may name.
pub const SHELLS: &[&str] = &["sh", "bash", "pwsh", "powershell", "cmd"];

const TOP_KEYS: &[&str] = &["name", "on", "env", "permissions", "plugins", "jobs"];
const PLUGINS_KEYS: &[&str] = &["registry", "keys", "require-signatures"];
const JOB_KEYS: &[&str] = &[
    "name",
    "needs",
    "env",
    "permissions",
    "steps",
    "timeout-minutes",
    "continue-on-error",
    "if",
    "matrix",
    "environment",
    "concurrency",
    "outputs",
    "cache",
    "artifacts",
    "keep",
    "services",
];
const SERVICE_KEYS: &[&str] = &["run", "env", "ports", "ready", "permissions"];
const READY_KEYS: &[&str] = &["tcp", "http", "run", "timeout-seconds"];
const ENVIRONMENT_KEYS: &[&str] = &["name", "url", "approval"];
const CONCURRENCY_KEYS: &[&str] = &["group", "cancel-in-progress"];
const STEP_KEYS: &[&str] = &[
    "id",
    "name",
    "uses",
    "run",
    "shell",
    "working-directory",
    "with",
    "env",
    "permissions",
    "timeout-minutes",
    "continue-on-error",
    "if",
    "cache",
    "inputs",
    "outputs",
];
const CACHE_KEYS: &[&str] = &["key", "restore-keys", "paths"];
const TRIGGERS: &[&str] = &["push", "pull_request", "schedule", "manual"];
/// What `push` takes (all but `fork-secrets`); `pull_request` takes all but the tags.
const EVENT_KEYS: &[&str] = &[
    "branches",
    "branches-ignore",
    "tags",
    "tags-ignore",
    "paths",
    "paths-ignore",
    "fork-secrets",
];
const INPUT_KEYS: &[&str] = &["description", "type", "options", "default", "required"];
const STEP_OUTPUT_KEYS: &[&str] = &["files", "artifacts"];
const DOWNLOAD_KEYS: &[&str] = &["name", "path"];
const PERMISSION_KEYS: &[&str] = &[
    "workspace",
    "paths",
    "env",
    "secrets",
    "network",
    "exec",
    "memory",
    "log-limit",
];

/// Reads and validates the pipeline file at `path`. `builtins` names the built-in steps.
pub fn load(path: &Path, builtins: &[&str]) -> Result<Pipeline, Report> {
    let text = std::fs::read_to_string(path).map_err(|e| Report {
        source: Source::new(path, ""),
        diagnostics: vec![
            Diagnostic::error(format!("cannot read `{}`: {e}", path.display()))
                .hint("pass the path of a pipeline file, e.g. `ferry run ci/ferry.yaml`"),
        ],
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    parse(&Source::new(path, text), &dir, builtins)
}

/// Validates pipeline text; `dir` is where relative `uses:` paths are looked up.
pub fn parse(source: &Source, dir: &Path, builtins: &[&str]) -> Result<Pipeline, Report> {
    let mut reader = Reader {
        source,
        builtins,
        dir,
        diags: Vec::new(),
        reads_git: false,
    };
    let pipeline = match yaml::parse(&source.text) {
        Ok(Some(root)) => reader.pipeline(&root),
        Ok(None) => {
            reader.diags.push(
                Diagnostic::error("the pipeline file is empty")
                    .hint("start with `name:` and a `jobs:` mapping; see the README"),
            );
            None
        }
        Err(diagnostic) => {
            reader.diags.push(diagnostic);
            None
        }
    };
    let mut diagnostics = reader.diags;
    // Read top to bottom, like the file.
    diagnostics.sort_by_key(|d| d.span.map_or(0, |s| s.offset));
    let report = Report {
        source: source.clone(),
        diagnostics,
    };
    match pipeline {
        Some(p) if !report.has_errors() => Ok(p),
        _ => Err(report),
    }
}

struct Reader<'a> {
    source: &'a Source,
    builtins: &'a [&'a str],
    dir: &'a Path,
    diags: Vec<Diagnostic>,
    /// Whether any expression reads `git.*`.
    reads_git: bool,
}

type Entries = [(Node, Node)];

/// A context path an expression reads, where, and the secrets granted where it is read
/// (`None` outside a step).
type Found<'a> = (Vec<String>, Span, Option<&'a BTreeSet<String>>);

/// A step id and where it was declared, for reference checks.
struct Declared {
    id: String,
    index: usize,
}

impl Reader<'_> {
    fn error(&mut self, span: Span, message: impl Into<String>, hint: impl Into<String>) {
        self.diags
            .push(Diagnostic::error(message).at(span).hint(hint));
    }

    fn pipeline(&mut self, root: &Node) -> Option<Pipeline> {
        let entries = self.mapping(root, "the pipeline file")?;
        self.check_keys(entries, TOP_KEYS, "at the top level");
        let name = match get(entries, "name") {
            Some(n) => self.string(n, "`name`").unwrap_or_default(),
            None => self
                .source
                .name
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "pipeline".into()),
        };
        let env = get(entries, "env")
            .map(|n| self.env_map(n, "`env`"))
            .unwrap_or_default();
        let permissions = get(entries, "permissions").and_then(|n| {
            let p = self.permissions(n)?;
            Some((p, n.span))
        });
        let plugins = get(entries, "plugins")
            .map(|n| self.plugin_settings(n))
            .unwrap_or_default();
        let on = get(entries, "on")
            .map(|n| self.triggers(n))
            .unwrap_or_default();
        let Some(jobs_node) = get(entries, "jobs") else {
            self.diags.push(
                Diagnostic::error("the pipeline has no `jobs`")
                    .hint("add a `jobs:` mapping with at least one job that has `steps:`"),
            );
            return None;
        };
        let job_entries = self.mapping(jobs_node, "`jobs`")?;
        if job_entries.is_empty() {
            self.error(jobs_node.span, "`jobs` is empty", "add at least one job");
        }
        let ids: Vec<String> = job_entries
            .iter()
            .filter_map(|(k, _)| k.as_str().map(String::from))
            .collect();
        let mut jobs = Vec::new();
        for (key, value) in job_entries {
            if let Some(job) = self.job(key, value, &ids, &env, permissions.as_ref()) {
                jobs.push(job);
            }
        }
        self.check_cycles(&jobs);
        self.check_artifacts(&jobs);
        self.check_folders(&jobs);
        Some(Pipeline {
            name,
            file: self.source.name.clone(),
            dir: self.dir.to_path_buf(),
            env,
            jobs,
            reads_git: self.reads_git,
            plugins,
            on,
        })
    }

    /// `on:`: an event name, a list of them, or a mapping of events to their settings.
    fn triggers(&mut self, node: &Node) -> Triggers {
        let mut on = Triggers::default();
        let events: Vec<(&Node, Option<&Node>)> = match &node.kind {
            Kind::Map(entries) => entries.iter().map(|(k, v)| (k, Some(v))).collect(),
            Kind::Seq(items) => items.iter().map(|i| (i, None)).collect(),
            Kind::Scalar { .. } => vec![(node, None)],
        };
        for (key, value) in events {
            let Some(event) = self.string(key, "an event") else {
                continue;
            };
            let value = value.filter(|v| !v.is_null());
            match event.as_str() {
                "push" => on.push = Some(self.events(value, true)),
                "pull_request" => on.pull_request = Some(self.events(value, false)),
                "schedule" => match value {
                    Some(v) => on.schedule = self.schedule(v),
                    None => self.error(
                        key.span,
                        "`schedule` needs at least one `cron`",
                        "write `schedule: [{ cron: \"0 3 * * *\" }]` (minute hour day month weekday, UTC)",
                    ),
                },
                "manual" => on.manual = Some(self.manual(value)),
                other => {
                    let hint = match other {
                        "workflow_dispatch" => "ferry calls a run started by hand `manual`".to_string(),
                        _ => match suggest(other, TRIGGERS.iter().copied()) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => format!("events: {}", list(TRIGGERS)),
                        },
                    };
                    self.error(key.span, format!("unknown event `{other}` in `on`"), hint);
                }
            }
        }
        on
    }

    /// `push:` or `pull_request:` settings: branch, tag and path patterns.
    fn events(&mut self, node: Option<&Node>, tags: bool) -> Events {
        let mut events = Events::default();
        let Some(entries) = node.and_then(|n| self.mapping(n, "the event's settings")) else {
            return events;
        };
        let keys: Vec<&str> = EVENT_KEYS
            .iter()
            .copied()
            .filter(|k| match tags {
                true => *k != "fork-secrets",
                false => !k.starts_with("tags"),
            })
            .collect();
        self.check_keys(entries, &keys, "in the event");
        for (name, filter) in [
            ("branches", &mut events.branches),
            ("tags", &mut events.tags),
            ("paths", &mut events.paths),
        ] {
            for (key, into) in [
                (name.to_string(), &mut filter.include),
                (format!("{name}-ignore"), &mut filter.exclude),
            ] {
                let Some(n) = get(entries, &key) else {
                    continue;
                };
                for (pattern, span) in self.string_list(n, &format!("`{key}`")) {
                    if let Err(e) = globset::GlobBuilder::new(&pattern)
                        .literal_separator(true)
                        .build()
                    {
                        self.error(
                            span,
                            format!(
                                "`{pattern}` in `{key}` is not a valid pattern: {}",
                                e.kind()
                            ),
                            "`*` matches within a `/`-separated part, `**` across them",
                        );
                        continue;
                    }
                    into.push(pattern);
                }
            }
        }
        if let Some(n) = get(entries, "fork-secrets").filter(|_| !tags) {
            events.fork_secrets = self.boolean(n, "`fork-secrets`").unwrap_or(false);
        }
        events
    }

    fn schedule(&mut self, node: &Node) -> Vec<Cron> {
        let Kind::Seq(items) = &node.kind else {
            self.error(
                node.span,
                format!("`schedule` must be a list, found {}", node.describe()),
                "write `schedule: [{ cron: \"0 3 * * *\" }]`",
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let Some(entries) = self.mapping(item, "a `schedule` entry") else {
                continue;
            };
            self.check_keys(entries, &["cron"], "in a `schedule` entry");
            let Some(n) = get(entries, "cron") else {
                self.error(
                    item.span,
                    "this `schedule` entry has no `cron`",
                    "write `- cron: \"0 3 * * *\"`",
                );
                continue;
            };
            let Some(text) = self.string(n, "`cron`") else {
                continue;
            };
            match Cron::parse(&text, n.span) {
                Ok(cron) => out.push(cron),
                Err(e) => self.error(
                    n.span,
                    e,
                    "five fields, UTC: minute (0-59) hour (0-23) day of month (1-31) month (1-12 or jan-dec) day of week (0-7 or sun-sat); `*`, `*/N`, `A-B` and `A,B` work in each",
                ),
            }
        }
        out
    }

    fn manual(&mut self, node: Option<&Node>) -> Manual {
        let mut manual = Manual::default();
        let Some(entries) = node.and_then(|n| self.mapping(n, "`manual`")) else {
            return manual;
        };
        self.check_keys(entries, &["inputs"], "in `manual`");
        let Some(inputs) = get(entries, "inputs").and_then(|n| self.mapping(n, "`inputs`")) else {
            return manual;
        };
        for (k, v) in inputs {
            let Some(name) = self.string(k, "an input name") else {
                continue;
            };
            if !is_identifier(&name) {
                self.error(
                    k.span,
                    format!("invalid input name `{name}`"),
                    "input names start with a letter or `_` and contain only letters, digits, `-` and `_`",
                );
                continue;
            }
            let Some(fields) = self.mapping(v, &format!("input `{name}`")) else {
                continue;
            };
            self.check_keys(fields, INPUT_KEYS, &format!("in input `{name}`"));
            let text = |this: &mut Self, key: &str| {
                get(fields, key)
                    .and_then(|n| this.string(n, &format!("`{key}`")).map(|s| (s, n.span)))
            };
            let description = text(self, "description")
                .map(|(s, _)| s)
                .unwrap_or_default();
            let options: Vec<String> = get(fields, "options")
                .map(|n| {
                    self.string_list(n, "`options`")
                        .into_iter()
                        .map(|(s, _)| s)
                        .collect()
                })
                .unwrap_or_default();
            let kind = match text(self, "type") {
                None => InputKind::String,
                Some((t, span)) => match t.as_str() {
                    "string" => InputKind::String,
                    "boolean" => InputKind::Boolean,
                    "number" => InputKind::Number,
                    "choice" if options.is_empty() => {
                        self.error(
                            span,
                            format!("input `{name}` is a `choice` without `options`"),
                            "list the values: `options: [staging, production]`",
                        );
                        continue;
                    }
                    "choice" => InputKind::Choice(options.clone()),
                    other => {
                        self.error(
                            span,
                            format!("unknown input type `{other}`"),
                            "use `string`, `boolean`, `number` or `choice`",
                        );
                        continue;
                    }
                },
            };
            if !options.is_empty()
                && !matches!(kind, InputKind::Choice(_))
                && let Some(n) = get(fields, "options")
            {
                self.error(
                    n.span,
                    "`options` is only for `type: choice`",
                    "add `type: choice`, or remove `options`",
                );
            }
            let required = get(fields, "required")
                .and_then(|n| self.boolean(n, "`required`"))
                .unwrap_or(false);
            let default = text(self, "default");
            if let Some((value, span)) = &default
                && let Err(why) = kind.check(value)
            {
                self.error(
                    *span,
                    format!("the default of input `{name}`: {why}"),
                    "make the default a value of the input's type",
                );
            }
            manual.inputs.insert(
                name,
                ManualInput {
                    description,
                    kind,
                    default: default.map(|(d, _)| d),
                    required,
                    span: k.span,
                },
            );
        }
        manual
    }

    fn plugin_settings(&mut self, node: &Node) -> PluginSettings {
        let mut settings = PluginSettings::default();
        let Some(entries) = self.mapping(node, "`plugins`") else {
            return settings;
        };
        self.check_keys(entries, PLUGINS_KEYS, "in `plugins`");
        if let Some(n) = get(entries, "registry") {
            settings.registry = self.string(n, "`plugins.registry`").map(|s| (s, n.span));
        }
        if let Some(n) = get(entries, "keys") {
            for (k, v) in self.mapping(n, "`plugins.keys`").unwrap_or_default() {
                if let (Some(name), Some(value)) =
                    (self.string(k, "a key name"), self.string(v, "a key"))
                {
                    settings.keys.push((name, value, v.span));
                }
            }
        }
        if let Some(n) = get(entries, "require-signatures") {
            for (k, v) in self
                .mapping(n, "`plugins.require-signatures`")
                .unwrap_or_default()
            {
                let Some(prefix) = self.string(k, "a repository prefix") else {
                    continue;
                };
                let names: Vec<String> = self
                    .string_list(v, "the keys")
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect();
                if names.is_empty() {
                    self.error(
                        v.span,
                        format!("`{prefix}` requires signatures but names no key"),
                        "list the names of trusted keys, e.g. `[acme]`",
                    );
                }
                settings.require_signatures.push((prefix, names, v.span));
            }
        }
        settings
    }

    fn job(
        &mut self,
        key: &Node,
        node: &Node,
        ids: &[String],
        pipeline_env: &BTreeMap<String, Template>,
        inherited: Option<&(Permissions, Span)>,
    ) -> Option<Job> {
        let id = self.string(key, "a job id")?;
        if !is_identifier(&id) {
            self.error(
                key.span,
                format!("invalid job id `{id}`"),
                "job ids start with a letter or `_` and contain only letters, digits, `-` and `_`",
            );
        }
        let entries = self.mapping(node, &format!("job `{id}`"))?;
        self.check_keys(entries, JOB_KEYS, &format!("in job `{id}`"));
        let name_node = get(entries, "name");
        let name = name_node
            .and_then(|n| self.string(n, "`name`"))
            .unwrap_or_else(|| id.clone());
        // A job's name may read its matrix (`name: test on ${{ matrix.os }}`), nothing else:
        // it is shown before the job runs.
        let name_template = name_node
            .filter(|_| name.contains("${{"))
            .and_then(|n| self.template(n))
            .filter(|t| {
                let other = t
                    .expressions()
                    .flat_map(|e| &e.paths)
                    .find(|(p, _)| p[0] != "matrix")
                    .cloned();
                if let Some((path, span)) = &other {
                    self.error(
                        *span,
                        format!("a job's `name` cannot read `{}`", path.join(".")),
                        "it is shown before the job runs: it can read only the job's `matrix`",
                    );
                }
                other.is_none()
            });
        let mut needs = Vec::new();
        if let Some(n) = get(entries, "needs") {
            for (need, span) in self.string_list(n, "`needs`") {
                if need == id {
                    self.error(
                        span,
                        format!("job `{id}` needs itself"),
                        "remove it from `needs`",
                    );
                } else if !ids.contains(&need) {
                    let hint = match suggest(&need, ids.iter().map(String::as_str)) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("jobs in this file: {}", list(ids)),
                    };
                    self.error(span, format!("job `{id}` needs unknown job `{need}`"), hint);
                } else {
                    needs.push(need);
                }
            }
        }
        let env = get(entries, "env")
            .map(|n| self.env_map(n, "`env`"))
            .unwrap_or_default();
        let job_permissions = match get(entries, "permissions") {
            Some(n) => self.permissions(n).map(|p| (p, n.span)),
            None => inherited.cloned(),
        };
        let timeout = get(entries, "timeout-minutes").and_then(|n| self.minutes(n));
        let continue_on_error = get(entries, "continue-on-error")
            .and_then(|n| self.boolean(n, "`continue-on-error`"))
            .unwrap_or(false);
        let mut steps = Vec::new();
        match get(entries, "steps") {
            None => self.error(
                key.span,
                format!("job `{id}` has no `steps`"),
                "add `steps:` with at least one `run:` or `uses:` step",
            ),
            Some(list) => match &list.kind {
                Kind::Seq(items) if items.is_empty() => self.error(
                    list.span,
                    format!("job `{id}` has an empty `steps` list"),
                    "add at least one `run:` or `uses:` step",
                ),
                Kind::Seq(items) => {
                    let mut declared: Vec<Declared> = Vec::new();
                    for (index, item) in items.iter().enumerate() {
                        let scope = EnvScope {
                            pipeline: pipeline_env,
                            job: &env,
                        };
                        if let Some(step) = self.step(
                            item,
                            index,
                            &id,
                            &mut declared,
                            &scope,
                            job_permissions.as_ref(),
                        ) {
                            steps.push(step);
                        }
                    }
                }
                _ => self.error(
                    list.span,
                    format!(
                        "`steps` of job `{id}` must be a list, found {}",
                        list.describe()
                    ),
                    "write each step as a `- run: ...` or `- uses: ...` item",
                ),
            },
        }
        self.check_env_refs(&env, pipeline_env, &BTreeMap::new());
        let condition = get(entries, "if").and_then(|n| self.condition(n));
        let (matrix, matrix_at_run) = match get(entries, "matrix").and_then(|n| self.matrix(n, &id))
        {
            Some(JobMatrix::Fixed(m)) => (Some(m), None),
            Some(JobMatrix::AtRun(m)) => (None, Some(*m)),
            None => (None, None),
        };
        let outputs = get(entries, "outputs")
            .map(|n| {
                self.named_templates(n, "`outputs`", is_identifier, "output name", "output names start with a letter or `_` and contain only letters, digits, `-` and `_`")
            })
            .unwrap_or_default();
        let declared: Vec<Declared> = steps
            .iter()
            .filter_map(|s| s.id.clone().map(|id| Declared { id, index: s.index }))
            .collect();
        for t in outputs.values() {
            self.check_step_refs(t, &id, usize::MAX, &declared);
            self.check_env_refs_in(t, pipeline_env, &env);
        }
        let environment = get(entries, "environment").and_then(|n| self.environment(n));
        let concurrency = match get(entries, "concurrency") {
            Some(n) => self.concurrency(n),
            None => environment.as_ref().map(|e| Concurrency {
                group: Template::literal(format!("environment {}", e.name)),
                cancel_in_progress: false,
            }),
        };
        let cache = get(entries, "cache").and_then(|n| self.dependency_cache(n));
        let group_exprs = concurrency.iter().flat_map(|c| c.group.expressions());
        let cache_exprs = cache
            .iter()
            .flat_map(|c| std::iter::once(&c.key).chain(&c.restore_keys))
            .flat_map(|t| t.expressions());
        for e in condition.iter().chain(group_exprs).chain(cache_exprs) {
            for (path, span) in &e.paths {
                if path[0] == "steps" {
                    self.error(
                        *span,
                        format!("a job's `if:`, `concurrency` or `cache` cannot read `{}`", path.join(".")),
                        "it is decided before the job's steps run; read `needs.<job>.outputs` or move the condition to a step",
                    );
                }
            }
        }
        let artifacts = get(entries, "artifacts")
            .map(|n| self.downloads(n))
            .unwrap_or_default();
        let keep = get(entries, "keep")
            .map(|n| self.kept_dirs(n))
            .unwrap_or_default();
        let services = get(entries, "services")
            .map(|n| self.services(n, &id))
            .unwrap_or_default();
        let job = Job {
            id,
            name,
            span: key.span,
            needs,
            condition,
            outputs,
            matrix,
            matrix_at_run,
            instance: None,
            name_template,
            env,
            steps,
            timeout,
            continue_on_error,
            environment,
            concurrency,
            cache,
            artifacts,
            keep,
            services,
        };
        self.check_job_refs(&job, ids);
        self.check_templated_grants(&job);
        Some(job)
    }

    fn step(
        &mut self,
        node: &Node,
        index: usize,
        job: &str,
        declared: &mut Vec<Declared>,
        scope: &EnvScope,
        inherited: Option<&(Permissions, Span)>,
    ) -> Option<Step> {
        let entries = self.mapping(node, &format!("step {} of job `{job}`", index + 1))?;
        let here = format!("in step {} of job `{job}`", index + 1);
        self.check_keys(entries, STEP_KEYS, &here);
        let id = get(entries, "id").and_then(|n| {
            let id = self.string(n, "`id`")?;
            if !is_identifier(&id) {
                self.error(
                    n.span,
                    format!("invalid step id `{id}`"),
                    "step ids start with a letter or `_` and contain only letters, digits, `-` and `_`",
                );
            } else if id
                .strip_prefix("step-")
                .is_some_and(|n| n.parse::<usize>().is_ok_and(|n| n != index + 1))
            {
                self.error(
                    n.span,
                    format!("step id `{id}` is reserved"),
                    "steps without an id are called `step-<position>`; pick another id",
                );
            } else if declared.iter().any(|d| d.id == id) {
                self.error(
                    n.span,
                    format!("duplicate step id `{id}` in job `{job}`"),
                    "step ids must be unique within a job",
                );
            }
            Some(id)
        });
        // Recorded even when the rest of the step has errors: a later step with the same id
        // is still a duplicate, and a reference to it is not also "no earlier step".
        if let Some(id) = &id {
            declared.push(Declared {
                id: id.clone(),
                index,
            });
        }
        let declared: &[Declared] = declared;
        let env = get(entries, "env")
            .map(|n| self.env_map(n, "`env`"))
            .unwrap_or_default();
        let mut with = BTreeMap::new();
        if let Some(n) = get(entries, "with")
            && let Some(items) = self.mapping(n, "`with`")
        {
            for (k, v) in items {
                let (Some(name), Some(value)) =
                    (self.string(k, "an input name"), self.input_value(v))
                else {
                    continue;
                };
                with.insert(name, value);
            }
        }
        let uses_node = get(entries, "uses");
        let run_node = get(entries, "run");
        let (uses, is_run, derived_name) = match (uses_node, run_node) {
            (Some(u), Some(_)) => {
                self.error(
                    u.span,
                    "a step has both `uses` and `run`",
                    "split it into two steps: one `uses:` step and one `run:` step",
                );
                return None;
            }
            (None, None) => {
                self.error(
                    node.span,
                    format!(
                        "step {} of job `{job}` has neither `uses` nor `run`",
                        index + 1
                    ),
                    "add `run: <command>` or `uses: <plugin>`",
                );
                return None;
            }
            (Some(u), None) => {
                for key in ["shell", "working-directory"] {
                    if let Some(n) = get(entries, key) {
                        self.error(
                            n.span,
                            format!("`{key}` only applies to `run:` steps"),
                            format!(
                                "pass it to the plugin under `with:` if it takes a `{key}` input"
                            ),
                        );
                    }
                }
                let uses = self.uses(u)?;
                let name = match &uses {
                    Uses::Path(path) => path
                        .file_name()
                        .map_or_else(|| uses.to_string(), |n| n.to_string_lossy().into_owned()),
                    Uses::Builtin(name) => name.clone(),
                    Uses::Registry(r) => r
                        .reference
                        .rsplit('/')
                        .next()
                        .unwrap_or(&r.reference)
                        .to_string(),
                };
                // `uses: shell` is the long form of `run:` and is granted the same way.
                let is_shell = uses == Uses::Builtin("shell".into());
                if is_shell {
                    match with.get("shell") {
                        None => {
                            with.insert("shell".into(), Template::literal(DEFAULT_SHELL));
                        }
                        Some(t) if t.as_literal().is_none() => self.error(
                            t.span,
                            "the `shell` input cannot use expressions",
                            "the shell is granted before the step runs; name it literally",
                        ),
                        Some(_) => {}
                    }
                }
                (uses, is_shell, name)
            }
            (None, Some(r)) => {
                if let Some(w) = get(entries, "with") {
                    self.error(
                        w.span,
                        "`with` does not apply to `run:` steps",
                        "use `env:` to pass values to a script",
                    );
                }
                let script = self.template(r)?;
                let first_line = r
                    .as_str()
                    .and_then(|s| s.lines().find(|l| !l.trim().is_empty()))
                    .unwrap_or("")
                    .trim()
                    .to_string();
                with.insert("script".into(), script);
                let shell = match get(entries, "shell") {
                    Some(n) => {
                        let shell = self.string(n, "`shell`")?;
                        if !SHELLS.contains(&shell.as_str()) {
                            let hint = match suggest(&shell, SHELLS.iter().copied()) {
                                Some(s) => format!("did you mean `{s}`?"),
                                None => format!("use one of {}", list(SHELLS)),
                            };
                            self.error(n.span, format!("unknown shell `{shell}`"), hint);
                        }
                        shell
                    }
                    None => DEFAULT_SHELL.to_string(),
                };
                with.insert("shell".into(), Template::literal(shell));
                if let Some(n) = get(entries, "working-directory")
                    && let Some(t) = self.template(n)
                {
                    with.insert("working-directory".into(), t);
                }
                (
                    Uses::Builtin("shell".into()),
                    true,
                    truncate(&first_line, 60),
                )
            }
        };
        // Expressions may read earlier steps of this job and the pipeline's variables.
        for template in with.values().chain(env.values()) {
            self.check_step_refs(template, job, index, declared);
        }
        let mut visible = scope.job.clone();
        visible.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        for template in with.values() {
            self.check_env_refs_in(template, scope.pipeline, &visible);
        }
        let condition = get(entries, "if").and_then(|n| self.condition(n));
        if let Some(c) = &condition {
            self.check_step_refs_in(c, job, index, declared);
            self.check_env_refs_of(c, scope.pipeline, &visible);
        }
        self.check_env_refs(&env, scope.pipeline, scope.job);
        let name_node = get(entries, "name");
        let name = name_node
            .and_then(|n| self.string(n, "`name`"))
            .or_else(|| id.clone())
            .unwrap_or(derived_name);
        let name_template = name_node
            .filter(|_| name.contains("${{"))
            .and_then(|n| self.template(n));
        if let Some(t) = &name_template {
            self.check_step_refs(t, job, index, declared);
            self.check_env_refs_in(t, scope.pipeline, &visible);
        }
        let own_permissions = get(entries, "permissions").is_some();
        let (permissions, permissions_span) = match get(entries, "permissions") {
            Some(n) => match self.permissions(n) {
                Some(p) => (p, Some(n.span)),
                None => (Permissions::default(), Some(n.span)),
            },
            None => match inherited {
                Some((p, span)) => (p.clone(), Some(*span)),
                None => (Permissions::default(), None),
            },
        };
        let timeout = get(entries, "timeout-minutes").and_then(|n| self.minutes(n));
        let continue_on_error = get(entries, "continue-on-error")
            .and_then(|n| self.boolean(n, "`continue-on-error`"))
            .unwrap_or(false);
        let (cache, dependency_cache) = match get(entries, "cache") {
            None => (None, None),
            Some(n) if matches!(n.kind, Kind::Map(_)) => (None, self.dependency_cache(n)),
            Some(n) => (
                self.boolean(n, "`cache` of a step (or a `{ key, paths }` mapping)"),
                None,
            ),
        };
        if cache == Some(true)
            && uses == Uses::Builtin("deploy".into())
            && let Some(n) = get(entries, "cache")
        {
            self.error(
                n.span,
                "a `deploy` step cannot come from the cache",
                "a deploy changes what an environment serves, so it always runs; remove `cache: true`",
            );
        }
        let inputs = get(entries, "inputs").map(|n| self.paths(n, "`inputs`"));
        let (output_files, artifacts) = get(entries, "outputs")
            .map(|n| self.step_outputs(n))
            .unwrap_or_default();
        Some(Step {
            index,
            condition,
            name_template,
            id,
            name,
            span: node.span,
            uses,
            with,
            env,
            permissions,
            permissions_span,
            own_permissions,
            timeout,
            continue_on_error,
            is_run,
            cache,
            dependency_cache,
            inputs,
            output_files,
            artifacts,
        })
    }

    /// `cache: { key, restore-keys, paths }`.
    fn dependency_cache(&mut self, node: &Node) -> Option<DependencyCache> {
        let entries = self.mapping(node, "`cache`")?;
        self.check_keys(entries, CACHE_KEYS, "in `cache`");
        let key = match get(entries, "key") {
            Some(n) => self.template(n)?,
            None => {
                self.error(
                    node.span,
                    "`cache` has no `key`",
                    "add e.g. `key: deps-${{ hashFiles('**/Cargo.lock') }}`",
                );
                return None;
            }
        };
        if key.as_literal().is_some_and(|k| k.trim().is_empty()) {
            self.error(
                key.span,
                "the cache `key` is empty",
                "name the entry, e.g. `key: deps-v1`",
            );
        }
        let restore_keys = match get(entries, "restore-keys") {
            Some(n) => {
                let items: Vec<&Node> = match &n.kind {
                    Kind::Seq(items) => items.iter().collect(),
                    _ => vec![n],
                };
                items.into_iter().filter_map(|i| self.template(i)).collect()
            }
            None => Vec::new(),
        };
        let paths = match get(entries, "paths") {
            Some(n) => self.paths(n, "`paths`"),
            None => {
                self.error(
                    node.span,
                    "`cache` has no `paths`",
                    "add the directories to keep, e.g. `paths: [target, .cargo-home]`",
                );
                return None;
            }
        };
        if paths.is_empty() {
            self.error(
                node.span,
                "`cache` has an empty `paths` list",
                "add the directories to keep",
            );
            return None;
        }
        Some(DependencyCache {
            key,
            restore_keys,
            paths,
            span: node.span,
        })
    }

    /// `services:`: each a host name, a script, its ports, a readiness check and its own
    /// grants, within the limits of [`MAX_SERVICES`] and friends.
    fn services(&mut self, node: &Node, job: &str) -> Vec<Service> {
        let mut out: Vec<Service> = Vec::new();
        let entries = self
            .mapping(node, &format!("`services` of job `{job}`"))
            .unwrap_or_default();
        if entries.len() > MAX_SERVICES {
            self.error(
                node.span,
                format!("job `{job}` has {} services", entries.len()),
                format!("a job may have at most {MAX_SERVICES}; split the job"),
            );
            return out;
        }
        for (key, value) in entries {
            let Some(name) = self.string(key, "a service name") else {
                continue;
            };
            if !is_host_label(&name) || name == "localhost" {
                self.error(
                    key.span,
                    format!("invalid service name `{name}`"),
                    "a service is reached by its name, so it is a host name: lowercase letters, digits and `-`, starting with a letter, at most 63 characters, not `localhost`",
                );
                continue;
            }
            let here = format!("service `{name}` of job `{job}`");
            let Some(fields) = self.mapping(value, &here) else {
                continue;
            };
            if let Some((k, _)) = fields.iter().find(|(k, _)| k.as_str() == Some("image")) {
                self.error(
                    k.span,
                    format!("{here} names an image: ferry does not run containers as services"),
                    "a service is a host program in ferry's sandbox: start it with `run:`, e.g. `run: exec postgres -D /tmp/pg -k /tmp`",
                );
            }
            let known: Vec<&str> = SERVICE_KEYS.iter().copied().chain(["image"]).collect();
            self.check_keys(fields, &known, &format!("in {here}"));
            let run = match get(fields, "run") {
                Some(n) => self.template(n),
                None => {
                    self.error(
                        key.span,
                        format!("{here} has no `run`"),
                        "say how to start it, e.g. `run: exec redis-server --port 6379`",
                    );
                    None
                }
            };
            let ports = self.ports(get(fields, "ports"), &here, key.span);
            let (ready, ready_timeout) = match get(fields, "ready") {
                Some(n) => self.ready(n, &name, &ports),
                None => (Some(Ready::Ports), crate::pipeline::DEFAULT_READY_TIMEOUT),
            };
            let env = get(fields, "env")
                .map(|n| self.env_map(n, "`env`"))
                .unwrap_or_default();
            let permissions_node = get(fields, "permissions");
            let permissions = permissions_node.and_then(|n| self.permissions(n));
            if let (Some(p), Some(n)) = (&permissions, permissions_node)
                && !p.templated.is_empty()
            {
                self.error(
                    n.span,
                    format!("the grants of {here} read an expression"),
                    "write each grant out: a service's grants cannot read the matrix or any other context",
                );
            }
            let templates = run.iter().chain(env.values());
            for (path, span) in templates
                .flat_map(|t| t.expressions())
                .flat_map(|e| &e.paths)
            {
                if path[0] == "steps" {
                    self.error(
                        *span,
                        format!("a service cannot read `{}`", path.join(".")),
                        "services start before the job's steps; read `needs.<job>.outputs`, `matrix` or `env`",
                    );
                }
            }
            let (Some(run), Some(ready)) = (run, ready) else {
                continue;
            };
            if ports.is_empty() {
                continue;
            }
            let waited: Duration =
                out.iter().map(|s| s.ready_timeout).sum::<Duration>() + ready_timeout;
            if waited > MAX_SERVICES_READY {
                self.error(
                    key.span,
                    format!(
                        "the services of job `{job}` may take {}s to become ready",
                        waited.as_secs()
                    ),
                    format!(
                        "together they may take at most {}s: lower `ready.timeout-seconds`",
                        MAX_SERVICES_READY.as_secs()
                    ),
                );
            }
            out.push(Service {
                name,
                span: key.span,
                run,
                env,
                ports,
                ready,
                ready_timeout,
                permissions: permissions.unwrap_or_default(),
                permissions_span: permissions_node.map(|n| n.span),
            });
        }
        out
    }

    fn ports(&mut self, node: Option<&Node>, here: &str, span: Span) -> Vec<u16> {
        let Some(node) = node else {
            self.error(
                span,
                format!("{here} has no `ports`"),
                "list the TCP ports it listens on, e.g. `ports: [5432]`",
            );
            return Vec::new();
        };
        let mut ports = Vec::new();
        for (text, span) in self.string_list(node, "`ports`") {
            match text.parse::<u16>() {
                Ok(PROXY_PORT) => self.error(
                    span,
                    format!("port {PROXY_PORT} is ferry's"),
                    format!("every sandbox reaches its network proxy at 127.0.0.1:{PROXY_PORT}; have the service listen on another port"),
                ),
                Ok(port) if port > 0 && !ports.contains(&port) => ports.push(port),
                Ok(port) if port > 0 => self.error(
                    span,
                    format!("port {port} is listed twice"),
                    "list each port once",
                ),
                _ => self.error(
                    span,
                    format!("`{text}` in `ports` is not a TCP port"),
                    "write numbers from 1 to 65535, e.g. `ports: [5432]`",
                ),
            }
        }
        if ports.len() > MAX_SERVICE_PORTS {
            self.error(
                node.span,
                format!("{here} lists {} ports", ports.len()),
                format!("a service may list at most {MAX_SERVICE_PORTS}"),
            );
            ports.truncate(MAX_SERVICE_PORTS);
        }
        if ports.is_empty()
            && !node.is_null()
            && matches!(&node.kind, Kind::Seq(items) if items.is_empty())
        {
            self.error(
                node.span,
                format!("{here} lists no `ports`"),
                "list the TCP ports it listens on, e.g. `ports: [5432]`",
            );
        }
        ports
    }

    fn ready(&mut self, node: &Node, name: &str, ports: &[u16]) -> (Option<Ready>, Duration) {
        let mut timeout = crate::pipeline::DEFAULT_READY_TIMEOUT;
        let Some(entries) = self.mapping(node, "`ready`") else {
            return (None, timeout);
        };
        self.check_keys(entries, READY_KEYS, "in `ready`");
        if let Some(n) = get(entries, "timeout-seconds") {
            match n.as_str().and_then(|s| s.parse::<u64>().ok()) {
                Some(s) if (1..=3600).contains(&s) => timeout = Duration::from_secs(s),
                _ => self.error(
                    n.span,
                    "`timeout-seconds` must be a whole number of seconds from 1 to 3600",
                    "write e.g. `timeout-seconds: 120`",
                ),
            }
        }
        let checks: Vec<&(Node, Node)> = entries
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), Some("tcp" | "http" | "run")))
            .collect();
        let declared = |port: u16| ports.is_empty() || ports.contains(&port);
        let ready = match checks.as_slice() {
            [] => Some(Ready::Ports),
            [(k, v)] => match k.as_str() {
                Some("tcp") => match v.as_str().and_then(|s| s.parse::<u16>().ok()) {
                    Some(port) if port > 0 && declared(port) => Some(Ready::Tcp(port)),
                    _ => {
                        self.error(
                            v.span,
                            "`ready.tcp` must be one of the service's `ports`",
                            format!(
                                "write e.g. `tcp: {}`",
                                ports.first().copied().unwrap_or(5432)
                            ),
                        );
                        None
                    }
                },
                Some("http") => {
                    let text = v.as_str().unwrap_or_default();
                    match http_check(text, name) {
                        Some((port, path)) if declared(port) => Some(Ready::Http { port, path }),
                        _ => {
                            let port = ports.first().copied().unwrap_or(8080);
                            self.error(
                                v.span,
                                format!("`ready.http` must be a plain `http://` URL of service `{name}` on one of its ports"),
                                format!("write e.g. `http: http://{name}:{port}/health`"),
                            );
                            None
                        }
                    }
                }
                _ => self.string(v, "`ready.run`").map(Ready::Run),
            },
            _ => {
                self.error(
                    node.span,
                    "`ready` takes one check: `tcp`, `http` or `run`",
                    "keep the one that says best that the service is up",
                );
                None
            }
        };
        (ready, timeout)
    }

    /// `keep:`: directories of the workspace, named literally, that the sync leaves to the
    /// job between its runs. `.git` is the repository's, so it cannot be kept.
    fn kept_dirs(&mut self, node: &Node) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (text, span) in self.string_list(node, "`keep`") {
            let path = text.trim_end_matches('/');
            let parts: Vec<&str> = path.split('/').collect();
            let outside = path.is_empty()
                || path.starts_with('~')
                || path.contains(['\\', ':', '\0'])
                || parts.iter().any(|p| matches!(*p, "" | "." | ".."));
            if outside {
                self.error(
                    span,
                    format!("`{text}` in `keep` is not a directory inside the workspace"),
                    "name a directory relative to the workspace, e.g. `keep: [target, node_modules]`",
                );
                continue;
            }
            if path.contains(['*', '?', '[', '{', '!']) {
                self.error(
                    span,
                    format!("`{text}` in `keep` is a pattern"),
                    "`keep` names directories literally, e.g. `target` or `web/node_modules`",
                );
                continue;
            }
            if matches!(parts[0], ".git" | ".ferry") {
                self.error(
                    span,
                    format!("`{text}` in `keep` is ferry's or git's"),
                    "the workspace's `.git` is a copy of the repository's, and `.ferry` is never copied; keep a directory your tools write, e.g. `target`",
                );
                continue;
            }
            let nested = out.iter().find(|k| {
                let (k, p) = (Path::new(k.as_str()), Path::new(path));
                k.starts_with(p) || p.starts_with(k)
            });
            if let Some(other) = nested {
                self.error(
                    span,
                    format!("`{text}` in `keep` overlaps `{other}`"),
                    "keep the outer directory only: what is below it is kept with it",
                );
                continue;
            }
            out.push(path.to_string());
        }
        out
    }

    /// A list of paths and globs relative to the workspace (`!` excludes).
    fn paths(&mut self, node: &Node, what: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (text, span) in self.string_list(node, what) {
            let pattern = text.strip_prefix('!').unwrap_or(&text);
            let escapes = pattern.split(['/', '\\']).any(|c| c == "..");
            if pattern.is_empty()
                || pattern.starts_with('/')
                || pattern.starts_with('~')
                || pattern.contains(':')
                || escapes
            {
                self.error(
                    span,
                    format!("`{text}` in {what} is not a path inside the workspace"),
                    "write a path relative to the workspace, e.g. `target` or `dist/**/*.js`; point tools at it with `env:` (`CARGO_HOME: .cargo-home`)",
                );
                continue;
            }
            if let Err(e) = globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
            {
                self.error(
                    span,
                    format!("`{text}` in {what} is not a valid glob: {}", e.kind()),
                    "`*` matches within a directory, `**` across directories, `?` one character, `[ab]` a set",
                );
                continue;
            }
            out.push(text);
        }
        out
    }

    /// A step's `outputs: { files, artifacts }`.
    fn step_outputs(&mut self, node: &Node) -> (Vec<String>, Vec<ArtifactUpload>) {
        let Some(entries) = self.mapping(node, "`outputs` of a step") else {
            return Default::default();
        };
        self.check_keys(entries, STEP_OUTPUT_KEYS, "in `outputs` of a step");
        let files = get(entries, "files")
            .map(|n| self.paths(n, "`outputs.files`"))
            .unwrap_or_default();
        let mut artifacts = Vec::new();
        if let Some(n) = get(entries, "artifacts") {
            for (k, v) in self.mapping(n, "`outputs.artifacts`").unwrap_or_default() {
                let Some(name) = self.artifact_name(k) else {
                    continue;
                };
                let paths = self.paths(v, &format!("artifact `{name}`"));
                if paths.iter().all(|p| p.starts_with('!')) {
                    self.error(
                        v.span,
                        format!("artifact `{name}` names no path"),
                        "list what it holds, e.g. `dist: [dist]`",
                    );
                    continue;
                }
                artifacts.push(ArtifactUpload {
                    name,
                    paths,
                    span: k.span,
                });
            }
        }
        (files, artifacts)
    }

    fn artifact_name(&mut self, node: &Node) -> Option<String> {
        let name = self.string(node, "an artifact name")?;
        if !crate::pipeline::is_artifact_name(&name) {
            self.error(
                node.span,
                format!("invalid artifact name `{name}`"),
                crate::pipeline::ARTIFACT_NAME_RULE,
            );
            return None;
        }
        Some(name)
    }

    /// A job's `artifacts:`: names, or `{ name, path }` mappings.
    fn downloads(&mut self, node: &Node) -> Vec<ArtifactDownload> {
        let items: Vec<&Node> = match &node.kind {
            Kind::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let mut out = Vec::new();
        for item in items {
            if let Kind::Map(entries) = &item.kind {
                self.check_keys(entries, DOWNLOAD_KEYS, "in an entry of `artifacts`");
                let Some(name) = get(entries, "name").and_then(|n| self.artifact_name(n)) else {
                    if get(entries, "name").is_none() {
                        self.error(
                            item.span,
                            "this artifact has no `name`",
                            "write `- name: dist`",
                        );
                    }
                    continue;
                };
                let path = match get(entries, "path") {
                    Some(n) => match self.paths(n, "`path`").pop() {
                        Some(p) if !p.starts_with('!') && !p.contains(['*', '?', '[']) => p,
                        Some(_) => {
                            self.error(
                                n.span,
                                "`path` is a directory, not a glob",
                                "write e.g. `path: dist`",
                            );
                            continue;
                        }
                        None => continue,
                    },
                    None => ".".to_string(),
                };
                out.push(ArtifactDownload {
                    name,
                    path,
                    span: item.span,
                });
            } else if let Some(name) = self.artifact_name(item) {
                out.push(ArtifactDownload {
                    name,
                    path: ".".to_string(),
                    span: item.span,
                });
            }
        }
        out
    }

    /// Artifact names are unique in a pipeline, and a job downloads only what a job it needs
    /// (directly or through others) uploads.
    fn check_artifacts(&mut self, jobs: &[Job]) {
        let mut uploaded: BTreeMap<&str, &str> = BTreeMap::new();
        for job in jobs {
            for a in job.steps.iter().flat_map(|s| &s.artifacts) {
                if let Some(other) = uploaded.get(a.name.as_str()) {
                    self.error(
                        a.span,
                        format!("artifact `{}` is also uploaded by job `{other}`", a.name),
                        "give each artifact its own name",
                    );
                } else {
                    uploaded.insert(&a.name, &job.id);
                }
            }
        }
        for job in jobs {
            let above = ancestors(jobs, &job.id);
            for d in &job.artifacts {
                match uploaded.get(d.name.as_str()) {
                    Some(by) if above.contains(*by) => {}
                    Some(by) if *by == job.id => self.error(
                        d.span,
                        format!("job `{by}` downloads artifact `{}`, which it uploads itself", d.name),
                        "a job's steps share one workspace: read the files where the step left them",
                    ),
                    Some(by) => self.error(
                        d.span,
                        format!(
                            "job `{}` downloads artifact `{}`, which job `{by}` uploads, but does not need `{by}`",
                            job.id, d.name
                        ),
                        format!("add `{by}` to the job's `needs`"),
                    ),
                    None => {
                        let hint = match suggest(&d.name, uploaded.keys().copied()) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None if uploaded.is_empty() => {
                                "upload it from a step with `outputs: { artifacts: { NAME: [paths] } }`".to_string()
                            }
                            None => format!("artifacts in this file: {}", list(&uploaded.keys().collect::<Vec<_>>())),
                        };
                        self.error(d.span, format!("no job uploads artifact `{}`", d.name), hint);
                    }
                }
            }
        }
    }

    fn uses(&mut self, node: &Node) -> Option<Uses> {
        let text = self.string(node, "`uses`")?;
        let looks_like_path = text.starts_with("./")
            || text.starts_with("../")
            || text.starts_with('/')
            || text.ends_with(".wasm");
        if looks_like_path {
            let path = self.dir.join(text.strip_prefix("./").unwrap_or(&text));
            if !path.is_file() {
                self.error(
                    node.span,
                    format!("component `{text}` not found"),
                    format!(
                        "looked for `{}`; paths in `uses:` are relative to the pipeline file",
                        path.display()
                    ),
                );
                return None;
            }
            return Some(Uses::Path(path));
        }
        if text.contains('/') || text.contains('@') || text.contains(':') {
            let (name, digest) = text.split_once('@').unwrap_or((&text, ""));
            let is_digest = digest
                .strip_prefix("sha256:")
                .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
            if !digest.is_empty() && !is_digest {
                self.error(
                    node.span,
                    format!("`@{digest}` in `{text}` is not a digest"),
                    format!(
                        "pin a digest as `@sha256:<64 hex digits>`, or name a tag or version range: `{name}:{digest}`"
                    ),
                );
                return None;
            }
            let tagged = name
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':'));
            if digest.is_empty() && !tagged {
                self.error(
                    node.span,
                    format!("plugin `{text}` names no version"),
                    format!("pin it: `{text}:1.2.0`, a range such as `{text}:^1`, or a digest `{text}@sha256:…`"),
                );
                return None;
            }
            return Some(Uses::Registry(RegistryUse {
                reference: text,
                span: node.span,
                component: None,
            }));
        }
        if self.builtins.contains(&text.as_str()) {
            return Some(Uses::Builtin(text));
        }
        let hint = match suggest(&text, self.builtins.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!(
                "built-in steps: {}; a component file needs a path such as `./step.wasm`",
                list(self.builtins)
            ),
        };
        self.error(node.span, format!("unknown plugin `{text}`"), hint);
        None
    }

    fn permissions(&mut self, node: &Node) -> Option<Permissions> {
        let entries = self.mapping(node, "`permissions`")?;
        self.check_keys(entries, PERMISSION_KEYS, "in `permissions`");
        let mut p = Permissions::default();
        if let Some(access) = get(entries, "workspace").and_then(|n| self.access(n)) {
            p.workspace = access;
        }
        if let Some(n) = get(entries, "paths") {
            for (k, v) in self.mapping(n, "`paths`").unwrap_or_default() {
                let (Some(path), Some(access)) = (self.string(k, "a path"), self.access(v)) else {
                    continue;
                };
                let relative = path.starts_with("./") || path.starts_with("../");
                if !Path::new(&path).is_absolute() && !relative {
                    self.error(
                        k.span,
                        format!("path `{path}` in `permissions.paths` is neither absolute nor relative to the pipeline file"),
                        "name host paths from the root (`/opt/sdk: read`) or from the pipeline's folder (`./deploy: write`); the workspace is granted by `workspace:`",
                    );
                    continue;
                }
                p.paths
                    .insert(crate::pipeline::host_path(self.dir, &path), access);
            }
        }
        for key in GRANT_LISTS {
            let Some(n) = get(entries, key) else {
                continue;
            };
            for (text, span) in self.string_list(n, &format!("`{key}`")) {
                if text.contains("${{") {
                    let source = &self.source.text;
                    match Template::parse(&text, span, source) {
                        Ok(t) => {
                            let other = t
                                .expressions()
                                .flat_map(|e| &e.paths)
                                .find(|(path, _)| path[0] != "matrix");
                            match other {
                                Some((path, at)) => self.error(
                                    *at,
                                    format!("a grant cannot read `{}`", path.join(".")),
                                    "grants are fixed before anything runs: they can read only the job's `matrix`",
                                ),
                                None => p.templated.push((key.to_string(), t)),
                            }
                        }
                        Err(d) => self.diags.push(d),
                    }
                } else if let Err((message, hint)) = p.add(key, &text) {
                    self.error(span, message, hint);
                }
            }
        }
        for (key, target) in [("memory", &mut p.memory), ("log-limit", &mut p.log_limit)] {
            if let Some(n) = get(entries, key) {
                let text = n.as_str().unwrap_or_default();
                match parse_size(text) {
                    Some(bytes) if bytes > 0 => *target = Some(bytes),
                    _ => self.diags.push(
                        Diagnostic::error(format!("invalid size `{text}` for `{key}`"))
                            .at(n.span)
                            .hint("write a size such as `512MiB` or `2GiB`"),
                    ),
                }
            }
        }
        Some(p)
    }

    fn access(&mut self, node: &Node) -> Option<Access> {
        match node.as_str() {
            Some("read") => Some(Access::Read),
            Some("write") => Some(Access::Write),
            _ => {
                self.error(
                    node.span,
                    format!(
                        "invalid access `{}`",
                        node.as_str().unwrap_or(node.describe())
                    ),
                    "use `read` or `write`",
                );
                None
            }
        }
    }

    /// `environment: NAME` or `environment: { name, url, approval: required }`.
    fn environment(&mut self, node: &Node) -> Option<Environment> {
        let (name_node, entries) = match &node.kind {
            Kind::Scalar { .. } => (node, None),
            _ => {
                let entries = self.mapping(node, "`environment`")?;
                self.check_keys(entries, ENVIRONMENT_KEYS, "in `environment`");
                let Some(name) = get(entries, "name") else {
                    self.error(
                        node.span,
                        "`environment` has no `name`",
                        "write e.g. `environment: { name: production, approval: required }`",
                    );
                    return None;
                };
                (name, Some(entries))
            }
        };
        let name = self.string(name_node, "the environment's name")?;
        if !is_identifier(&name) {
            self.error(
                name_node.span,
                format!("invalid environment name `{name}`"),
                "environment names start with a letter or `_` and contain only letters, digits, `-` and `_`",
            );
            return None;
        }
        let url = entries
            .and_then(|e| get(e, "url"))
            .and_then(|n| self.template(n));
        let approval = match entries.and_then(|e| get(e, "approval")) {
            None => false,
            Some(n) => match n.as_str() {
                Some("required") => true,
                Some("none") => false,
                _ => {
                    self.error(
                        n.span,
                        "`approval` must be `required` or `none`",
                        "write `approval: required` to wait for `ferry approve` before the job starts",
                    );
                    false
                }
            },
        };
        Some(Environment {
            name,
            url,
            approval,
            span: node.span,
        })
    }

    /// `concurrency: GROUP` or `concurrency: { group, cancel-in-progress }`.
    fn concurrency(&mut self, node: &Node) -> Option<Concurrency> {
        let (group_node, cancel) = match &node.kind {
            Kind::Scalar { .. } => (node, false),
            _ => {
                let entries = self.mapping(node, "`concurrency`")?;
                self.check_keys(entries, CONCURRENCY_KEYS, "in `concurrency`");
                let Some(group) = get(entries, "group") else {
                    self.error(
                        node.span,
                        "`concurrency` has no `group`",
                        "write e.g. `concurrency: { group: deploy, cancel-in-progress: true }`",
                    );
                    return None;
                };
                let cancel = get(entries, "cancel-in-progress")
                    .and_then(|n| self.boolean(n, "`cancel-in-progress`"))
                    .unwrap_or(false);
                (group, cancel)
            }
        };
        let group = self.template(group_node)?;
        Some(Concurrency {
            group,
            cancel_in_progress: cancel,
        })
    }

    fn check_keys(&mut self, entries: &Entries, allowed: &[&str], context: &str) {
        for (key, _) in entries {
            let Some(name) = key.as_str() else {
                self.error(
                    key.span,
                    format!("keys {context} must be strings"),
                    "quote the key",
                );
                continue;
            };
            if !allowed.contains(&name) {
                let hint = match (name, suggest(name, allowed.iter().copied())) {
                    ("runs-on", _) => "ferry runs every step as a sandboxed component on this machine; remove `runs-on`".to_string(),
                    ("strategy", _) => "write the matrix as `matrix:` on the job, with `fail-fast` and `max-parallel` inside it".to_string(),
                    (_, Some(s)) => format!("did you mean `{s}`?"),
                    _ => format!("allowed keys {context}: {}", list(allowed)),
                };
                self.error(key.span, format!("unknown key `{name}` {context}"), hint);
            }
        }
    }

    fn mapping<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n Entries> {
        match &node.kind {
            Kind::Map(entries) => Some(entries),
            _ if node.is_null() => Some(&[]),
            _ => {
                self.error(
                    node.span,
                    format!("{what} must be a mapping, found {}", node.describe()),
                    "write `key: value` pairs, one per line",
                );
                None
            }
        }
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.kind {
            Kind::Scalar { text, .. } if !node.is_null() => Some(text.clone()),
            _ => {
                self.error(
                    node.span,
                    format!("{what} must be a string, found {}", node.describe()),
                    "write a single value",
                );
                None
            }
        }
    }

    fn template(&mut self, node: &Node) -> Option<Template> {
        let text = match &node.kind {
            Kind::Scalar { text, .. } => text.clone(),
            _ => {
                self.error(
                    node.span,
                    format!("expected a string, found {}", node.describe()),
                    "quote the value, or pass a list as a JSON string",
                );
                return None;
            }
        };
        match Template::parse(&text, node.span, &self.source.text) {
            Ok(t) => {
                self.reads_git |= t.expressions().any(reads_git);
                Some(t)
            }
            Err(d) => {
                self.diags.push(d);
                None
            }
        }
    }

    /// `matrix:`: axes (lists of values), `include`, `exclude`, `fail-fast`, `max-parallel`.
    /// The whole matrix, an axis, `include` or `exclude` may be one `${{ }}` expression,
    /// and the matrix is then known at run time.
    fn matrix(&mut self, node: &Node, job: &str) -> Option<JobMatrix> {
        if let Some(whole) = self.given_at_run(node, "`matrix`") {
            return Some(JobMatrix::AtRun(Box::new(MatrixAtRun {
                whole: Some(whole?),
                axes: Vec::new(),
                include: Given::Written(Vec::new()),
                exclude: Given::Written(Vec::new()),
                fail_fast: true,
                max_parallel: None,
            })));
        }
        let entries = self.mapping(node, &format!("`matrix` of job `{job}`"))?;
        let mut axes: Vec<(String, Given<Vec<serde_json::Value>>)> = Vec::new();
        let mut include = Given::Written(Vec::new());
        let mut exclude = Given::Written(Vec::new());
        let mut fail_fast = true;
        let mut max_parallel = None;
        for (k, v) in entries {
            let Some(key) = self.string(k, "a matrix key") else {
                continue;
            };
            match key.as_str() {
                "fail-fast" => fail_fast = self.boolean(v, "`fail-fast`").unwrap_or(true),
                "max-parallel" => {
                    max_parallel = match v.as_str().and_then(|t| t.parse::<usize>().ok()) {
                        Some(n) if n > 0 => Some(n),
                        _ => {
                            self.error(
                                v.span,
                                "`max-parallel` must be a whole number above 0",
                                "write e.g. `max-parallel: 2`",
                            );
                            None
                        }
                    }
                }
                "include" | "exclude" => {
                    let given = match self.given_at_run(v, &format!("`{key}`")) {
                        Some(e) => Given::AtRun(e?),
                        None => Given::Written(self.combinations(v, &key)),
                    };
                    if key == "include" {
                        include = given
                    } else {
                        exclude = given
                    }
                }
                _ => {
                    if !is_identifier(&key) {
                        self.error(k.span, format!("invalid matrix axis `{key}`"), "axis names start with a letter or `_` and contain only letters, digits, `-` and `_`");
                        continue;
                    }
                    if let Some(e) = self.given_at_run(v, &format!("matrix axis `{key}`")) {
                        axes.push((key, Given::AtRun(e?)));
                        continue;
                    }
                    let Kind::Seq(items) = &v.kind else {
                        self.error(
                            v.span,
                            format!("matrix axis `{key}` must be a list of values"),
                            format!("write `{key}: [a, b]`"),
                        );
                        continue;
                    };
                    if items.is_empty() {
                        self.error(
                            v.span,
                            format!("matrix axis `{key}` has no values"),
                            "give at least one value, or remove the axis",
                        );
                    }
                    let values = items.iter().filter_map(|i| self.matrix_value(i)).collect();
                    axes.push((key, Given::Written(values)));
                }
            }
        }
        if let Given::Written(exclude) = &exclude {
            for (name, _, span) in exclude.iter().flatten() {
                if !axes.iter().any(|(a, _)| a == name) {
                    let hint = match suggest(name, axes.iter().map(|(a, _)| a.as_str())) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => "`exclude` removes combinations of the matrix's axes".to_string(),
                    };
                    self.error(
                        *span,
                        format!("`exclude` names `{name}`, which is not an axis"),
                        hint,
                    );
                }
            }
        }
        let strip = |c: &Given<Vec<Placed>>| -> Given<Vec<Combination>> {
            match c {
                Given::Written(c) => Given::Written(
                    c.iter()
                        .map(|c| c.iter().map(|(k, v, _)| (k.clone(), v.clone())).collect())
                        .collect(),
                ),
                Given::AtRun(e) => Given::AtRun(e.clone()),
            }
        };
        let (include, exclude) = (strip(&include), strip(&exclude));
        let written: Option<Vec<(String, Vec<serde_json::Value>)>> = axes
            .iter()
            .map(|(k, g)| match g {
                Given::Written(v) => Some((k.clone(), v.clone())),
                Given::AtRun(_) => None,
            })
            .collect();
        let (Some(written), Given::Written(include), Given::Written(exclude)) =
            (written, &include, &exclude)
        else {
            return Some(JobMatrix::AtRun(Box::new(MatrixAtRun {
                whole: None,
                axes,
                include,
                exclude,
                fail_fast,
                max_parallel,
            })));
        };
        match Matrix::expand(&written, include, exclude, fail_fast, max_parallel) {
            Ok(matrix) => Some(JobMatrix::Fixed(matrix)),
            Err(e) => {
                self.error(
                    node.span,
                    format!("the matrix of job `{job}`: {e}"),
                    format!("a matrix has 1 to {MAX_COMBINATIONS} combinations: check `exclude`, `include` and the axes' values"),
                );
                None
            }
        }
    }

    /// `include` or `exclude` as written: a list of combinations, each key with where it is.
    fn combinations(
        &mut self,
        node: &Node,
        key: &str,
    ) -> Vec<Vec<(String, serde_json::Value, Span)>> {
        let Kind::Seq(items) = &node.kind else {
            self.error(
                node.span,
                format!("`{key}` must be a list of combinations"),
                format!("write `{key}: [{{ os: linux, python: \"3.12\" }}]`"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let Some(map) = self.mapping(item, &format!("an entry of `{key}`")) else {
                continue;
            };
            let mut combo = Vec::new();
            for (ik, iv) in map {
                if let (Some(name), Some(value)) =
                    (self.string(ik, "a matrix key"), self.matrix_value(iv))
                {
                    combo.push((name, value, ik.span));
                }
            }
            out.push(combo);
        }
        out
    }

    /// A part of `matrix:` written as one `${{ }}` expression, known when the run gets to
    /// the job: `None` when the part is written out; `Some(None)` when it is not one
    /// expression, which is reported.
    fn given_at_run(&mut self, node: &Node, what: &str) -> Option<Option<crate::Expression>> {
        let Kind::Scalar { text, .. } = &node.kind else {
            return None;
        };
        if !text.contains("${{") {
            return None;
        }
        let trimmed = text.trim();
        if !(trimmed.starts_with("${{") && trimmed.ends_with("}}")) {
            self.error(
                node.span,
                format!("{what} is given at run time by one expression, not text around one"),
                "write e.g. `${{ fromJSON(needs.plan.outputs.matrix) }}`",
            );
            return Some(None);
        }
        match Template::condition(text, node.span, &self.source.text) {
            Ok(e) => {
                for (path, span) in &e.paths {
                    if matches!(path[0].as_str(), "steps" | "matrix" | "jobs") {
                        self.error(
                            *span,
                            format!("{what} cannot read `{}`", path.join(".")),
                            "a matrix is known before the job's steps run: read the outputs of a job it needs, `needs.<job>.outputs.<name>`",
                        );
                    }
                }
                Some(Some(e))
            }
            Err(d) => {
                self.diags.push(d);
                Some(None)
            }
        }
    }

    /// A matrix value: a plain scalar that reads as a number or boolean is one, anything
    /// quoted is a string, lists and mappings are kept as they are.
    fn matrix_value(&mut self, node: &Node) -> Option<serde_json::Value> {
        Some(match &node.kind {
            Kind::Scalar { text, plain: true } => match text.as_str() {
                "true" => serde_json::Value::Bool(true),
                "false" => serde_json::Value::Bool(false),
                t => match (t.parse::<i64>(), t.parse::<f64>()) {
                    (Ok(i), _) => serde_json::json!(i),
                    (_, Ok(f)) if f.is_finite() => serde_json::json!(f),
                    _ => serde_json::Value::String(t.to_string()),
                },
            },
            Kind::Scalar { text, .. } => serde_json::Value::String(text.clone()),
            Kind::Seq(items) => serde_json::Value::Array(
                items.iter().filter_map(|i| self.matrix_value(i)).collect(),
            ),
            Kind::Map(entries) => {
                let mut map = serde_json::Map::new();
                for (k, v) in entries {
                    if let (Some(k), Some(v)) = (k.as_str(), self.matrix_value(v)) {
                        map.insert(k.to_string(), v);
                    }
                }
                serde_json::Value::Object(map)
            }
        })
    }

    /// An `if:` condition: an expression, bare or in `${{ }}`.
    fn condition(&mut self, node: &Node) -> Option<crate::Expression> {
        let text = match &node.kind {
            Kind::Scalar { text, .. } => text.clone(),
            _ => {
                self.error(
                    node.span,
                    format!("`if` must be an expression, found {}", node.describe()),
                    "write a condition such as `if: git.branch == 'main'`",
                );
                return None;
            }
        };
        match Template::condition(&text, node.span, &self.source.text) {
            Ok(e) => {
                self.reads_git |= reads_git(&e);
                Some(e)
            }
            Err(d) => {
                self.diags.push(d);
                None
            }
        }
    }

    /// Each job, and each combination of a matrix, names folders of its own: two whose
    /// names differ only in punctuation (`deploy (prod/eu)`, `deploy (prod_eu)`) would share
    /// a workspace and logs.
    fn check_folders(&mut self, jobs: &[Job]) {
        let mut taken: BTreeMap<String, String> = BTreeMap::new();
        for job in jobs {
            let ids: Vec<String> = match &job.matrix {
                Some(m) => m
                    .combinations
                    .iter()
                    .map(|values| format!("{} ({})", job.id, Matrix::shown(values)))
                    .collect(),
                None => vec![job.id.clone()],
            };
            for id in ids {
                let folder = crate::pipeline::folder_name(&id);
                if let Some(other) = taken.insert(folder.clone(), id.clone()) {
                    self.error(
                        job.span,
                        format!("jobs `{other}` and `{id}` would share folders (`{folder}`)"),
                        "make the job ids or the matrix values differ in more than punctuation",
                    );
                    break;
                }
            }
        }
    }

    /// Grants that read `matrix.*` must give a valid grant for every combination.
    fn check_templated_grants(&mut self, job: &Job) {
        for step in &job.steps {
            let Some((_, first)) = step.permissions.templated.first() else {
                continue;
            };
            if job.matrix_at_run.is_some() {
                self.error(
                    first.span,
                    format!("a grant cannot read the matrix of job `{}`, which is known only at run time", job.id),
                    "its values come from other jobs' outputs, which must not choose what a step may do: write the grant itself, e.g. `exec: [python3]`, or write the matrix's values in the file",
                );
                continue;
            }
            let Some(matrix) = &job.matrix else {
                self.error(
                    first.span,
                    format!("job `{}` has no `matrix:` for a grant to read", job.id),
                    "write the grant itself, e.g. `exec: [python3]`",
                );
                continue;
            };
            for values in &matrix.combinations {
                if let Err((message, hint)) = step.permissions.for_combination(values) {
                    let shown: Vec<String> =
                        values.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                    self.error(
                        first.span,
                        format!("{message} (in the combination {})", shown.join(", ")),
                        hint,
                    );
                    break;
                }
            }
        }
    }

    /// `needs.<job>` must name a job this one needs, `jobs.<job>` a job of the file, and
    /// `secrets.<name>` a secret granted to the step that reads it.
    fn check_job_refs(&mut self, job: &Job, ids: &[String]) {
        let job_level = job
            .env
            .values()
            .chain(job.outputs.values())
            .chain(job.name_template.iter())
            .chain(job.environment.iter().flat_map(|e| e.url.iter()))
            .chain(job.concurrency.iter().map(|c| &c.group))
            .flat_map(|t| t.expressions())
            .chain(job.condition.iter())
            .chain(job.matrix_at_run.iter().flat_map(|m| m.expressions()));
        let mut found: Vec<Found> = job_level
            .flat_map(|e| e.paths.iter().map(|(p, s)| (p.clone(), *s, None)))
            .collect();
        for step in &job.steps {
            let exprs = step
                .with
                .values()
                .chain(step.env.values())
                .chain(step.name_template.iter())
                .flat_map(|t| t.expressions())
                .chain(step.condition.iter());
            for e in exprs {
                for (p, s) in &e.paths {
                    found.push((p.clone(), *s, Some(&step.permissions.secrets)));
                }
            }
        }
        for (path, span, granted) in found {
            let Some(name) = path.get(1) else {
                continue;
            };
            match (path[0].as_str(), granted) {
                ("needs", _) if !job.needs.contains(name) => {
                    let hint = if ids.contains(name) {
                        format!("add `{name}` to `needs:` of job `{}`", job.id)
                    } else {
                        match suggest(name, job.needs.iter().map(String::as_str)) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => format!("job `{}` needs {}", job.id, if job.needs.is_empty() { "no job".to_string() } else { list(&job.needs) }),
                        }
                    };
                    self.error(span, format!("`needs.{name}` is not a job that `{}` needs", job.id), hint);
                }
                ("matrix", _)
                    if job.matrix_at_run.as_ref().map_or_else(
                        || {
                            !job.matrix.as_ref().is_some_and(|m| {
                                m.combinations.iter().any(|c| c.iter().any(|(k, _)| k == name))
                            })
                        },
                        // Keys that only the run knows are checked when it knows them.
                        |m| m.known_keys().is_some_and(|keys| !keys.contains(name.as_str())),
                    ) =>
                {
                    let keys: BTreeSet<&str> = match &job.matrix_at_run {
                        Some(m) => m.known_keys().unwrap_or_default(),
                        None => job
                            .matrix
                            .iter()
                            .flat_map(|m| m.combinations.iter().flatten().map(|(k, _)| k.as_str()))
                            .collect(),
                    };
                    let hint = match (keys.is_empty(), suggest(name, keys.iter().copied())) {
                        (true, _) => format!("job `{}` has no `matrix:`", job.id),
                        (_, Some(s)) => format!("did you mean `matrix.{s}`?"),
                        _ => format!("the matrix of `{}` has {}", job.id, keys.into_iter().collect::<Vec<_>>().join(", ")),
                    };
                    self.error(span, format!("`matrix.{name}` is not in the matrix of job `{}`", job.id), hint);
                }
                ("jobs", _) if !ids.contains(name) => {
                    let hint = match suggest(name, ids.iter().map(String::as_str)) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("jobs in this file: {}", list(ids)),
                    };
                    self.error(span, format!("`jobs.{name}` is not a job of this file"), hint);
                }
                ("secrets", None) => self.error(
                    span,
                    format!("`secrets.{name}` is read outside a step"),
                    "secrets reach only steps granted them: read it in a step's `with:`, `env:` or `if:`",
                ),
                ("secrets", Some(granted)) if !granted.contains(name) => self.error(
                    span,
                    format!("`secrets.{name}` is not granted to this step"),
                    format!("add it under the step's `permissions: {{ secrets: [{name}] }}`"),
                ),
                _ => {}
            }
        }
    }

    /// An input under `with:`: a string, or a list of strings passed as a JSON array.
    fn input_value(&mut self, node: &Node) -> Option<Template> {
        let Kind::Seq(items) = &node.kind else {
            return self.template(node);
        };
        let mut values = Vec::new();
        for item in items {
            match item.as_str() {
                Some(text) if text.contains("${{") => {
                    self.error(
                        item.span,
                        "expressions inside a list are not supported yet",
                        "pass the whole value as one string instead",
                    );
                    return None;
                }
                Some(text) if !item.is_null() => values.push(text.to_string()),
                _ => {
                    self.error(
                        item.span,
                        format!("list items must be strings, found {}", item.describe()),
                        "quote the item",
                    );
                    return None;
                }
            }
        }
        let json = serde_json::to_string(&values).unwrap_or_default();
        Some(Template {
            span: node.span,
            ..Template::literal(json)
        })
    }

    fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        match &node.kind {
            Kind::Scalar { text, plain: true } if text == "true" => Some(true),
            Kind::Scalar { text, plain: true } if text == "false" => Some(false),
            _ => {
                self.error(
                    node.span,
                    format!("{what} must be `true` or `false`"),
                    "write `true` or `false` without quotes",
                );
                None
            }
        }
    }

    fn minutes(&mut self, node: &Node) -> Option<Duration> {
        let value = node.as_str().and_then(|s| s.parse::<f64>().ok());
        match value {
            Some(m) if m > 0.0 && m.is_finite() && m <= 60.0 * 24.0 * 7.0 => {
                Some(Duration::from_secs_f64(m * 60.0))
            }
            _ => {
                self.error(
                    node.span,
                    "`timeout-minutes` must be a number of minutes above 0",
                    "write e.g. `timeout-minutes: 10` (at most a week)",
                );
                None
            }
        }
    }

    fn string_list(&mut self, node: &Node, what: &str) -> Vec<(String, Span)> {
        match &node.kind {
            Kind::Seq(items) => items
                .iter()
                .filter_map(|i| {
                    self.string(i, &format!("an item of {what}"))
                        .map(|s| (s, i.span))
                })
                .collect(),
            Kind::Scalar { .. } if !node.is_null() => {
                vec![(node.as_str().unwrap_or_default().to_string(), node.span)]
            }
            _ if node.is_null() => Vec::new(),
            _ => {
                self.error(
                    node.span,
                    format!("{what} must be a list, found {}", node.describe()),
                    "write `[a, b]` or one `- item` per line",
                );
                Vec::new()
            }
        }
    }

    fn env_map(&mut self, node: &Node, what: &str) -> BTreeMap<String, Template> {
        self.named_templates(
            node,
            what,
            is_env_name,
            "variable name",
            "names contain letters, digits and `_`, and do not start with a digit",
        )
    }

    /// A mapping of names, each checked by `valid`, to string values that may hold
    /// expressions.
    fn named_templates(
        &mut self,
        node: &Node,
        what: &str,
        valid: fn(&str) -> bool,
        noun: &str,
        rule: &str,
    ) -> BTreeMap<String, Template> {
        let mut out = BTreeMap::new();
        for (k, v) in self.mapping(node, what).unwrap_or_default() {
            let Some(name) = self.string(k, &format!("a {noun}")) else {
                continue;
            };
            if !valid(&name) {
                self.error(k.span, format!("invalid {noun} `{name}`"), rule);
                continue;
            }
            if let Some(t) = self.template(v) {
                out.insert(name, t);
            }
        }
        out
    }

    fn check_step_refs(
        &mut self,
        template: &Template,
        job: &str,
        index: usize,
        declared: &[Declared],
    ) {
        for expr in template.expressions() {
            self.check_step_refs_in(expr, job, index, declared);
        }
    }

    fn check_step_refs_in(
        &mut self,
        expr: &Expression,
        job: &str,
        index: usize,
        declared: &[Declared],
    ) {
        for (path, span) in &expr.paths {
            let (Some("steps"), Some(step)) = (path.first().map(String::as_str), path.get(1))
            else {
                continue;
            };
            if declared.iter().any(|d| &d.id == step && d.index < index) {
                continue;
            }
            let hint = match suggest(step, declared.iter().map(|d| d.id.as_str())) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "an expression can read outputs of earlier steps in the same job that have an `id:`".into(),
            };
            self.error(
                *span,
                format!(
                    "`{}` refers to no earlier step `{step}` in job `{job}`",
                    path.join(".")
                ),
                hint,
            );
        }
    }

    fn check_env_refs(
        &mut self,
        map: &BTreeMap<String, Template>,
        pipeline: &BTreeMap<String, Template>,
        outer: &BTreeMap<String, Template>,
    ) {
        for template in map.values() {
            self.check_env_refs_in(template, pipeline, outer);
        }
    }

    fn check_env_refs_in(
        &mut self,
        template: &Template,
        pipeline: &BTreeMap<String, Template>,
        visible: &BTreeMap<String, Template>,
    ) {
        for expr in template.expressions() {
            self.check_env_refs_of(expr, pipeline, visible);
        }
    }

    fn check_env_refs_of(
        &mut self,
        expr: &Expression,
        pipeline: &BTreeMap<String, Template>,
        visible: &BTreeMap<String, Template>,
    ) {
        for (path, span) in &expr.paths {
            let (Some("env"), Some(name)) = (path.first().map(String::as_str), path.get(1)) else {
                continue;
            };
            if pipeline.contains_key(name) || visible.contains_key(name) {
                continue;
            }
            let names = pipeline.keys().chain(visible.keys()).map(String::as_str);
            let hint = match suggest(name, names) {
                Some(s) => format!("did you mean `env.{s}`?"),
                None => format!(
                    "define `{name}` under `env:`; host variables reach steps through `permissions.env`, not expressions"
                ),
            };
            self.error(*span, format!("`env.{name}` is not defined"), hint);
        }
    }

    fn check_cycles(&mut self, jobs: &[Job]) {
        // Depth-first search with colours; a grey node reached again closes a cycle.
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            White,
            Grey,
            Black,
        }
        fn visit(
            i: usize,
            jobs: &[Job],
            marks: &mut [Mark],
            path: &mut Vec<usize>,
            cycles: &mut Vec<Vec<usize>>,
        ) {
            marks[i] = Mark::Grey;
            path.push(i);
            for need in &jobs[i].needs {
                let Some(j) = jobs.iter().position(|job| &job.id == need) else {
                    continue;
                };
                match marks[j] {
                    Mark::White => visit(j, jobs, marks, path, cycles),
                    Mark::Grey => {
                        let start = path.iter().position(|&p| p == j).unwrap_or(0);
                        cycles.push(path[start..].to_vec());
                    }
                    Mark::Black => {}
                }
            }
            path.pop();
            marks[i] = Mark::Black;
        }
        let mut marks = vec![Mark::White; jobs.len()];
        let mut cycles = Vec::new();
        for i in 0..jobs.len() {
            if marks[i] == Mark::White {
                visit(i, jobs, &mut marks, &mut Vec::new(), &mut cycles);
            }
        }
        for cycle in cycles {
            let mut names: Vec<&str> = cycle.iter().map(|&i| jobs[i].id.as_str()).collect();
            names.push(names[0]);
            let first = &jobs[cycle[0]];
            self.error(
                first.span,
                format!(
                    "jobs depend on each other in a cycle: {}",
                    names.join(" -> ")
                ),
                "remove one of these `needs` so the jobs can run in an order",
            );
        }
    }
}

struct EnvScope<'a> {
    pipeline: &'a BTreeMap<String, Template>,
    job: &'a BTreeMap<String, Template>,
}

/// The jobs `id` needs, directly or through others.
fn ancestors<'j>(jobs: &'j [Job], id: &str) -> BTreeSet<&'j str> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![id];
    while let Some(next) = todo.pop() {
        if let Some(job) = jobs.iter().find(|j| j.id == next) {
            for need in &job.needs {
                if seen.insert(need.as_str()) {
                    todo.push(need);
                }
            }
        }
    }
    seen
}

fn get<'n>(entries: &'n Entries, key: &str) -> Option<&'n Node> {
    entries
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// A DNS label as a service's name must be: `[a-z][a-z0-9-]*`, not ending in `-`.
fn is_host_label(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The port and path of `http://<name>:<port>/<path>`; the port defaults to 80.
fn http_check(url: &str, name: &str) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().ok().filter(|p| *p > 0)?),
        None => (authority, 80),
    };
    let clean = path.chars().all(|c| c.is_ascii_graphic() && c != '#');
    (host == name && clean).then(|| (port, path.to_string()))
}

/// A job's `matrix:`: written out, or known at run time.
enum JobMatrix {
    Fixed(Matrix),
    AtRun(Box<MatrixAtRun>),
}

/// A combination as written: each key with its value and where the key is.
type Placed = Vec<(String, serde_json::Value, Span)>;

pub(crate) fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn list<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}

fn reads_git(expr: &Expression) -> bool {
    expr.paths.iter().any(|(p, _)| p[0] == "git")
}
