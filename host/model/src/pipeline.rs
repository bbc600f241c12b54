//! The validated pipeline: what the engine runs. Nothing downstream re-reads YAML.

use crate::diag::Span;
use crate::expr::{Expression, Template};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

/// Default wall-clock limit of a step when neither the step nor its job sets one.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Default memory limit of a step.
pub const DEFAULT_MEMORY: u64 = 512 << 20;
/// Default cap on the bytes of log a step may write; the rest is dropped with a marker.
pub const DEFAULT_LOG_LIMIT: u64 = 10 << 20;

/// A parsed and validated `ferry.yaml`.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    /// The pipeline file as given on the command line.
    pub file: PathBuf,
    /// Directory that `uses: ./path.wasm` is relative to.
    pub dir: PathBuf,
    pub env: BTreeMap<String, Template>,
    /// Jobs in file order.
    pub jobs: Vec<Job>,
    /// Whether an expression reads `git.*`, so the host asks git only when needed.
    pub reads_git: bool,
    /// `plugins:`: where short plugin names resolve and which signatures are required.
    pub plugins: PluginSettings,
    /// `on:`: what starts the pipeline.
    pub on: crate::triggers::Triggers,
}

/// The `plugins:` section, as written; the registry crate turns it into stores and keys.
#[derive(Debug, Clone, Default)]
pub struct PluginSettings {
    /// `registry:`: a registry namespace (`ghcr.io/acme`) or a layout folder (`./plugins`)
    /// that short names such as `lint:1.2` resolve against.
    pub registry: Option<(String, Span)>,
    /// `keys:`: public keys by name, each a file (relative to the pipeline) or inline text.
    pub keys: Vec<(String, String, Span)>,
    /// `require-signatures:`: a repository prefix (or `*`) and the keys, any of which must
    /// have signed every plugin under it.
    pub require_signatures: Vec<(String, Vec<String>, Span)>,
}

impl Pipeline {
    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    /// Display name: `name:` or the id.
    pub name: String,
    pub span: Span,
    pub needs: Vec<String>,
    /// `if:`; without one the job runs when every job it needs passed.
    pub condition: Option<Expression>,
    /// `outputs:`, evaluated when the job ends; read downstream as `needs.<id>.outputs`.
    pub outputs: BTreeMap<String, Template>,
    /// `matrix:` as written; [`crate::Plan`] turns the job into one job per combination.
    pub matrix: Option<Matrix>,
    /// `matrix:` when it reads other jobs' outputs (or `inputs`, `vars`): the run turns the
    /// job into one job per combination when the jobs it needs have ended.
    pub matrix_at_run: Option<MatrixAtRun>,
    /// For one combination of a matrix job: the job's id as written, and the values.
    pub instance: Option<Instance>,
    /// `name:` when it reads the matrix; each combination's name is rendered from it.
    pub name_template: Option<Template>,
    pub env: BTreeMap<String, Template>,
    pub steps: Vec<Step>,
    pub timeout: Option<Duration>,
    pub continue_on_error: bool,
    /// `environment:`: where the job deploys.
    pub environment: Option<Environment>,
    /// `concurrency:`, or one job per environment at a time when the job names one.
    pub concurrency: Option<Concurrency>,
    /// `cache:`: a dependency cache restored before the first step, saved when the job
    /// passes.
    pub cache: Option<DependencyCache>,
    /// `artifacts:`: artifacts of the jobs it needs, extracted into the workspace before the
    /// first step.
    pub artifacts: Vec<ArtifactDownload>,
    /// `keep:`: directories of the workspace (`target`, `node_modules`) that the sync leaves
    /// as the job's last run left them, so builds start warm. Relative, literal, not `.git`,
    /// none below another.
    pub keep: Vec<String>,
    /// `services:`, in file order: programs started before the first step and stopped when
    /// the job ends.
    pub services: Vec<Service>,
}

/// Most services a job may have.
pub const MAX_SERVICES: usize = 16;

/// Where a confined program reaches ferry's egress proxy, on its sandbox's own loopback; no
/// service may take it.
pub const PROXY_PORT: u16 = 3128;

/// Most ports one service may list: each is a socket in every sandbox of the job.
pub const MAX_SERVICE_PORTS: usize = 16;

/// The longest a job's services may take to become ready, all together.
pub const MAX_SERVICES_READY: Duration = Duration::from_secs(3600);

/// One of a job's `services:`: a long-running program (a database, a cache, an HTTP stub)
/// beside the job's steps. It runs confined like a `run:` step's shell, from its own
/// `permissions:` only, and the programs the job's steps start reach it as `<name>:<port>`.
#[derive(Debug, Clone)]
pub struct Service {
    /// Its host name for the steps: a DNS label (`postgres`, `cache-1`).
    pub name: String,
    pub span: Span,
    /// The script that runs it, with `sh -e -c`; the service is up while the script runs,
    /// so it ends in the program (`exec postgres ...`).
    pub run: Template,
    /// The pipeline's and job's `env:` apply below this.
    pub env: BTreeMap<String, Template>,
    /// TCP ports it listens on, on its own loopback (`127.0.0.1` or any address).
    pub ports: Vec<u16>,
    pub ready: Ready,
    /// How long it has to become ready.
    pub ready_timeout: Duration,
    /// Its own grants: a service inherits nothing from the job.
    pub permissions: Permissions,
    pub permissions_span: Option<Span>,
}

/// When a service is ready for the steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// Each of its ports accepts a connection (the default).
    Ports,
    /// A connection to this port is accepted (`ready: { tcp: 5432 }`).
    Tcp(u16),
    /// `GET <path>` on this port answers 2xx or 3xx
    /// (`ready: { http: "http://stub:8080/health" }`).
    Http { port: u16, path: String },
    /// This script exits 0, run as a `run:` step's would be, beside the steps
    /// (`ready: { run: "pg_isready -h postgres" }`).
    Run(String),
}

/// How long a service has to become ready unless `ready: { timeout-seconds }` says.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// `cache: { key, restore-keys, paths }` of a job or a step, as actions/cache works.
#[derive(Debug, Clone)]
pub struct DependencyCache {
    /// Rendered when the job (or step) starts; an entry with exactly this key is restored.
    pub key: Template,
    /// Prefixes tried in order when no entry has the key: the newest entry whose key starts
    /// with one is restored, and the job saves under `key` when it passes.
    pub restore_keys: Vec<Template>,
    /// What is saved: paths and globs relative to the workspace.
    pub paths: Vec<String>,
    pub span: Span,
}

/// One artifact a step uploads when it passes (`outputs.artifacts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactUpload {
    pub name: String,
    /// Paths and globs relative to the workspace; a directory brings everything below it,
    /// `!` excludes.
    pub paths: Vec<String>,
    pub span: Span,
}

/// One artifact a job downloads before its first step (`artifacts:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactDownload {
    pub name: String,
    /// Directory in the workspace the artifact's files are extracted under.
    pub path: String,
    pub span: Span,
}

/// Where a job deploys: `environment: production` or a mapping with `url` and `approval`.
#[derive(Debug, Clone)]
pub struct Environment {
    pub name: String,
    /// Where the deployed service answers, shown in the summary and the history.
    pub url: Option<Template>,
    /// `approval: required`: the job waits for `ferry approve` before it starts.
    pub approval: bool,
    pub span: Span,
}

/// At most one job of a group runs at a time, across runs of every pipeline in the same
/// state directory.
#[derive(Debug, Clone)]
pub struct Concurrency {
    /// Rendered when the job is about to start.
    pub group: Template,
    /// A newer job cancels the run holding the group instead of waiting for it.
    pub cancel_in_progress: bool,
}

/// A matrix: every combination of its axes, less `exclude`, plus `include`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Each combination's values, axes in the order written, then keys `include` added.
    pub combinations: Vec<Vec<(String, serde_json::Value)>>,
    /// Cancel the other combinations when one fails (the default).
    pub fail_fast: bool,
    /// How many combinations may run at once.
    pub max_parallel: Option<usize>,
}

/// Most combinations a matrix may have, as in GitHub Actions: each is a job with its own
/// workspace.
pub const MAX_COMBINATIONS: usize = 256;

/// Most combinations a matrix's axes may make before `exclude` removes some.
pub const MAX_AXES_PRODUCT: usize = 4096;

/// Longest name a combination may have (`linux, 3.12`): it names the job's folders.
pub const MAX_COMBINATION_NAME: usize = 128;

/// One combination's values, keys in order.
pub type Combination = Vec<(String, serde_json::Value)>;

/// A part of `matrix:` written in the file, or an expression that gives it when the jobs
/// the job needs have ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Given<T> {
    Written(T),
    AtRun(Expression),
}

impl<T> Given<T> {
    /// The expression, when the run gives the value.
    pub fn expression(&self) -> Option<&Expression> {
        match self {
            Given::AtRun(e) => Some(e),
            Given::Written(_) => None,
        }
    }
}

/// A matrix known only at run time: `matrix: ${{ fromJSON(needs.plan.outputs.matrix) }}`,
/// or an axis, `include` or `exclude` written as such an expression. It is resolved and
/// checked when the jobs the job needs have ended.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixAtRun {
    /// `matrix: ${{ ... }}`: gives an object of axes, `include`, `exclude`, `fail-fast` and
    /// `max-parallel`. The other fields are then unused.
    pub whole: Option<Expression>,
    pub axes: Vec<(String, Given<Vec<serde_json::Value>>)>,
    pub include: Given<Vec<Combination>>,
    pub exclude: Given<Vec<Combination>>,
    pub fail_fast: bool,
    pub max_parallel: Option<usize>,
}

/// One combination of a matrix job.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The job's id as written: what `needs:` and `needs.<job>` name.
    pub group: String,
    pub values: Vec<(String, serde_json::Value)>,
    pub fail_fast: bool,
    pub max_parallel: Option<usize>,
}

impl Matrix {
    /// A combination as a job's id shows it: `job (linux, 3.12)`.
    pub fn shown(values: &[(String, serde_json::Value)]) -> String {
        values
            .iter()
            .map(|(_, v)| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Expands axes into combinations. An `include` entry that agrees with existing
    /// combinations on every axis it names adds its other keys to them; one that matches
    /// none is a combination of its own. An `exclude` entry removes every combination that
    /// has all of its values.
    ///
    /// Refused, before anything is built, when the axes would make more than
    /// [`MAX_AXES_PRODUCT`] combinations or `include`/`exclude` are longer than a matrix
    /// needs, so that no input makes it take more than a moment; and refused when it ends
    /// with no combination or more than [`MAX_COMBINATIONS`].
    pub fn expand(
        axes: &[(String, Vec<serde_json::Value>)],
        include: &[Vec<(String, serde_json::Value)>],
        exclude: &[Vec<(String, serde_json::Value)>],
        fail_fast: bool,
        max_parallel: Option<usize>,
    ) -> Result<Matrix, String> {
        let product = axes
            .iter()
            .try_fold(1usize, |n, (_, values)| n.checked_mul(values.len()))
            .filter(|n| *n <= MAX_AXES_PRODUCT);
        if product.is_none() {
            let sizes: Vec<String> = axes.iter().map(|(_, v)| v.len().to_string()).collect();
            return Err(format!(
                "its axes ({} values) make more than the {MAX_AXES_PRODUCT} combinations a matrix may start from",
                sizes.join(" × ")
            ));
        }
        if include.len() > MAX_COMBINATIONS || exclude.len() > MAX_AXES_PRODUCT {
            return Err(format!(
                "it has {} `include` and {} `exclude` entries; at most {MAX_COMBINATIONS} and {MAX_AXES_PRODUCT}",
                include.len(),
                exclude.len()
            ));
        }
        let mut combinations: Vec<Vec<(String, serde_json::Value)>> = if axes.is_empty() {
            Vec::new()
        } else {
            vec![Vec::new()]
        };
        for (axis, values) in axes {
            combinations = combinations
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((axis.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        let has = |c: &[(String, serde_json::Value)], (k, v): &(String, serde_json::Value)| {
            c.iter().any(|(ck, cv)| ck == k && cv == v)
        };
        combinations.retain(|c| {
            !exclude
                .iter()
                .any(|e| !e.is_empty() && e.iter().all(|kv| has(c, kv)))
        });
        let is_axis = |k: &str| axes.iter().any(|(a, _)| a == k);
        // An entry extends the combinations of the axes, never one an earlier entry added:
        // without axes, each entry is a combination of its own.
        let original = combinations.len();
        for entry in include {
            let mut matched = false;
            for c in combinations[..original].iter_mut() {
                let agrees = entry
                    .iter()
                    .filter(|(k, _)| is_axis(k))
                    .all(|kv| has(c, kv));
                if agrees {
                    for (k, v) in entry.iter().filter(|(k, _)| !is_axis(k)) {
                        match c.iter_mut().find(|(ck, _)| ck == k) {
                            Some(slot) => slot.1 = v.clone(),
                            None => c.push((k.clone(), v.clone())),
                        }
                    }
                    matched = true;
                }
            }
            if !matched {
                combinations.push(entry.clone());
            }
        }
        if combinations.is_empty() {
            return Err("it has no combination left".to_string());
        }
        if combinations.len() > MAX_COMBINATIONS {
            return Err(format!(
                "it has {} combinations, more than the {MAX_COMBINATIONS} a matrix may have",
                combinations.len()
            ));
        }
        Ok(Matrix {
            combinations,
            fail_fast,
            // More at once than there are combinations changes nothing.
            max_parallel: max_parallel.map(|n| n.min(MAX_COMBINATIONS)),
        })
    }
}

impl MatrixAtRun {
    /// The expressions it reads.
    pub fn expressions(&self) -> impl Iterator<Item = &Expression> {
        self.whole
            .iter()
            .chain(self.axes.iter().filter_map(|(_, g)| g.expression()))
            .chain(self.include.expression())
            .chain(self.exclude.expression())
    }

    /// Its keys, when the file names them all: every axis, and `include` is written.
    pub fn known_keys(&self) -> Option<BTreeSet<&str>> {
        let Given::Written(include) = &self.include else {
            return None;
        };
        self.whole.is_none().then(|| {
            self.axes
                .iter()
                .map(|(k, _)| k.as_str())
                .chain(include.iter().flatten().map(|(k, _)| k.as_str()))
                .collect()
        })
    }

    /// The matrix, from what the expressions give in `scope`. Refused with the reason: a
    /// shape other than the file's `matrix:` would be, an axis without values, no
    /// combination, more than [`MAX_COMBINATIONS`], or two combinations shown alike.
    pub fn resolve(&self, scope: &crate::Scope) -> Result<Matrix, String> {
        let mut axes: Vec<(String, Vec<serde_json::Value>)> = Vec::new();
        let mut include = Vec::new();
        let mut exclude = Vec::new();
        let (mut fail_fast, mut max_parallel) = (self.fail_fast, self.max_parallel);
        let combinations_of = |g: &Given<Vec<Combination>>, key: &str| match g {
            Given::Written(c) => Ok(c.clone()),
            Given::AtRun(e) => combinations(e.evaluate_json(scope)?, &format!("`{key}` ({e})")),
        };
        match &self.whole {
            Some(e) => {
                let map = match e.evaluate_json(scope)? {
                    serde_json::Value::Object(map) => map,
                    other => {
                        return Err(format!(
                            "{e} gives {}, not an object of axes and `include`",
                            json_kind(&other)
                        ));
                    }
                };
                for (key, value) in map {
                    match key.as_str() {
                        "include" => include = combinations(value, "`include`")?,
                        "exclude" => exclude = combinations(value, "`exclude`")?,
                        "fail-fast" => {
                            fail_fast =
                                value.as_bool().ok_or("`fail-fast` must be true or false")?
                        }
                        "max-parallel" => {
                            max_parallel = Some(
                                value
                                    .as_u64()
                                    .filter(|n| *n > 0)
                                    .ok_or("`max-parallel` must be a whole number above 0")?
                                    as usize,
                            )
                        }
                        _ => {
                            let values = axis_values(value, &key)?;
                            axes.push((key, values));
                        }
                    }
                }
            }
            None => {
                for (key, given) in &self.axes {
                    let values = match given {
                        Given::Written(v) => v.clone(),
                        Given::AtRun(e) => axis_values(e.evaluate_json(scope)?, key)?,
                    };
                    axes.push((key.clone(), values));
                }
                include = combinations_of(&self.include, "include")?;
                exclude = combinations_of(&self.exclude, "exclude")?;
            }
        }
        for (key, _) in exclude.iter().flatten() {
            if !axes.iter().any(|(a, _)| a == key) {
                return Err(format!("`exclude` names `{key}`, which is not an axis"));
            }
        }
        let matrix = Matrix::expand(&axes, &include, &exclude, fail_fast, max_parallel)?;
        let mut seen = BTreeSet::new();
        for values in &matrix.combinations {
            let shown = Matrix::shown(values);
            if shown.len() > MAX_COMBINATION_NAME {
                let start: String = shown.chars().take(40).collect();
                return Err(format!(
                    "the combination ({start}…) is named by {} bytes of values, more than {MAX_COMBINATION_NAME}: a combination names its job and folders",
                    shown.len()
                ));
            }
            if shown.chars().any(char::is_control) {
                return Err(format!(
                    "the combination ({}) holds a control character: a combination names its job",
                    shown.escape_debug()
                ));
            }
            if !seen.insert(shown.clone()) {
                return Err(format!(
                    "two combinations are both ({shown}); each job of a matrix needs its own name"
                ));
            }
        }
        Ok(matrix)
    }
}

/// A job's id as a file name: what its workspace, logs and records are named by. Jobs whose
/// ids give the same name would share those folders, so the file and the run refuse them.
pub fn folder_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether `s` may name a matrix key: a letter or `_`, then letters, digits, `-`, `_`.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// An axis's values: a list with at least one value.
fn axis_values(value: serde_json::Value, key: &str) -> Result<Vec<serde_json::Value>, String> {
    if !is_identifier(key) {
        return Err(format!(
            "`{key}` cannot be a matrix axis: axis names start with a letter or `_` and contain only letters, digits, `-` and `_`"
        ));
    }
    match value {
        serde_json::Value::Array(values) if values.is_empty() => {
            Err(format!("matrix axis `{key}` has no values"))
        }
        serde_json::Value::Array(values) => Ok(values),
        other => Err(format!(
            "matrix axis `{key}` must be a list of values, not {}",
            json_kind(&other)
        )),
    }
}

/// `include` or `exclude`: a list of objects.
fn combinations(value: serde_json::Value, what: &str) -> Result<Vec<Combination>, String> {
    let serde_json::Value::Array(items) = value else {
        return Err(format!(
            "{what} must be a list of combinations, not {}",
            json_kind(&value)
        ));
    };
    items
        .into_iter()
        .map(|item| match item {
            serde_json::Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| match is_identifier(&k) {
                    true => Ok((k, v)),
                    false => Err(format!("{what} has the key `{k}`, which cannot be a matrix key: keys start with a letter or `_` and contain only letters, digits, `-` and `_`")),
                })
                .collect(),
            other => Err(format!(
                "each entry of {what} must be an object of keys and values, not {}",
                json_kind(&other)
            )),
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct Step {
    /// Position in the job, from 0.
    pub index: usize,
    /// `if:`; without one the step runs when no earlier step failed.
    pub condition: Option<Expression>,
    /// `name:` when it holds expressions, rendered when the step starts.
    pub name_template: Option<Template>,
    pub id: Option<String>,
    /// Display name: `name:`, else the id, else derived from `uses`/`run`.
    pub name: String,
    pub span: Span,
    pub uses: Uses,
    /// Inputs; for `run:` steps `script`, `shell` and `working-directory`.
    pub with: BTreeMap<String, Template>,
    pub env: BTreeMap<String, Template>,
    /// Effective grants: the step's `permissions:`, else the job's, else the pipeline's.
    pub permissions: Permissions,
    /// Where the effective `permissions:` is written, for hints; `None` when defaulted.
    pub permissions_span: Option<Span>,
    /// The step writes its own `permissions:` (not the job's or the pipeline's).
    pub own_permissions: bool,
    pub timeout: Option<Duration>,
    pub continue_on_error: bool,
    /// True for `run:` steps, which are host commands by nature (see DESIGN.md).
    pub is_run: bool,
    /// `cache: true` or `false`; `None` leaves it to the step (built-ins that are pure
    /// functions of their inputs are cached).
    pub cache: Option<bool>,
    /// `cache: { key, paths }`: a dependency cache restored before this step.
    pub dependency_cache: Option<DependencyCache>,
    /// `inputs:`: the files whose content the step's result depends on, as paths and globs
    /// relative to the workspace; `None` means every file the step can read.
    pub inputs: Option<Vec<String>>,
    /// `outputs.files`: the files the step makes, restored when its result comes from the
    /// step cache.
    pub output_files: Vec<String>,
    /// `outputs.artifacts`.
    pub artifacts: Vec<ArtifactUpload>,
}

impl Step {
    /// A stable key for logs and records: the id, else `step-<n>` counting from 1.
    pub fn key(&self) -> String {
        self.id
            .clone()
            .unwrap_or_else(|| format!("step-{}", self.index + 1))
    }
}

/// Which component a step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uses {
    /// A component embedded in ferry, e.g. `shell`.
    Builtin(String),
    /// A component file, resolved against the pipeline's directory.
    Path(PathBuf),
    /// A plugin in a registry or the local plugin store (`ghcr.io/acme/lint:^1`).
    Registry(RegistryUse),
}

/// A registry `uses:` as written; `component` is set once `ferry.lock` pinned it and the
/// verified component is in the local cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryUse {
    pub reference: String,
    pub span: Span,
    pub component: Option<PathBuf>,
}

impl std::fmt::Display for Uses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Uses::Builtin(name) => f.write_str(name),
            Uses::Path(path) => write!(f, "{}", path.display()),
            Uses::Registry(r) => f.write_str(&r.reference),
        }
    }
}

/// Read or read-write access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    #[default]
    Read,
    Write,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

/// A host (and optional port) a step may connect to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NetworkGrant {
    pub host: String,
    pub port: Option<u16>,
}

impl NetworkGrant {
    /// Parses `host`, `host:port`, `[v6]` or `[v6]:port`.
    pub fn parse(text: &str) -> Option<NetworkGrant> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port.parse().ok()?)),
                None if after.is_empty() => (host, None),
                None => return None,
            }
        } else if text.matches(':').count() == 1 {
            let (host, port) = text.split_once(':')?;
            (host, Some(port.parse().ok()?))
        } else {
            (text, None)
        };
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
        valid.then(|| NetworkGrant {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// True when this grant allows what `need` asks for.
    pub fn covers(&self, need: &NetworkGrant) -> bool {
        self.host == need.host && (self.port.is_none() || self.port == need.port)
    }
}

impl std::fmt::Display for NetworkGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(port) => write!(f, "{host}:{port}"),
            None => f.write_str(&host),
        }
    }
}

/// What a step is allowed to touch. The default allows reading the workspace and nothing
/// else.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Permissions {
    pub workspace: Access,
    /// Host paths beyond the workspace.
    pub paths: BTreeMap<PathBuf, Access>,
    /// Host environment variables passed through.
    pub env: BTreeSet<String>,
    /// Secrets the step receives.
    pub secrets: BTreeSet<String>,
    pub network: Vec<NetworkGrant>,
    /// Host programs, by name.
    pub exec: BTreeSet<String>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Log cap in bytes.
    pub log_limit: Option<u64>,
    /// Grants that read `matrix.*` (`exec: ["${{ matrix.tool }}"]`), by list key: each
    /// combination of the job gets them with its values.
    pub templated: Vec<(String, Template)>,
}

/// What an `exec:` grant (and a step's request to start a program) names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program<'a> {
    /// A name looked up on the step's `PATH`: `git`.
    Name(&'a str),
    /// A file of the workspace, relative to its root with `/` between parts and no `.` or
    /// `..` parts: `.venv/bin/pytest` (written `./.venv/bin/pytest` too).
    Workspace(&'a str),
    /// An absolute path: `/opt/tool/bin/tool`, `C:\tools\tool.exe`.
    Absolute(&'a str),
}

impl<'a> Program<'a> {
    /// Reads `text`; `None` when it names nothing a grant can hold: empty, a `..` part, a
    /// relative path with `\\`, or a control character.
    pub fn of(text: &'a str) -> Option<Program<'a>> {
        if text.is_empty() || text.chars().any(char::is_control) {
            return None;
        }
        let b = text.as_bytes();
        let windows_absolute = b.len() > 2
            && b[0].is_ascii_alphabetic()
            && b[1] == b':'
            && matches!(b[2], b'\\' | b'/');
        if text.starts_with('/') || windows_absolute {
            let escapes = text.split(['/', '\\']).any(|p| p == "..");
            return (!escapes).then_some(Program::Absolute(text));
        }
        if !text.contains(['/', '\\']) {
            return Some(Program::Name(text));
        }
        let mut rel = text;
        while let Some(rest) = rel.strip_prefix("./") {
            rel = rest;
        }
        let bad = rel.contains('\\')
            || rel.starts_with('~')
            || rel.split('/').any(|p| matches!(p, "" | "." | ".."));
        (!bad).then_some(Program::Workspace(rel))
    }
}

impl std::fmt::Display for Program<'_> {
    /// The form grants are kept and matched in, which reads back as the same kind: a
    /// workspace file of one part keeps its `./` (`./deploy` is not `deploy` on `PATH`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Program::Workspace(t) if !t.contains('/') => write!(f, "./{t}"),
            Program::Name(t) | Program::Workspace(t) | Program::Absolute(t) => f.write_str(t),
        }
    }
}

/// The keys of `permissions` whose values are lists of names.
pub const GRANT_LISTS: [&str; 4] = ["env", "secrets", "network", "exec"];

impl Permissions {
    /// Adds one entry of a list key ([`GRANT_LISTS`]); what is wrong with it, and how to
    /// fix it, otherwise.
    pub fn add(&mut self, key: &str, text: &str) -> Result<(), (String, String)> {
        match key {
            "env" | "secrets" => {
                if !crate::parse::is_env_name(text) {
                    return Err((
                        format!("invalid variable name `{text}` in `permissions.{key}`"),
                        "names contain letters, digits and `_`, and do not start with a digit"
                            .into(),
                    ));
                }
                let target = if key == "env" {
                    &mut self.env
                } else {
                    &mut self.secrets
                };
                target.insert(text.to_string());
            }
            "network" => match NetworkGrant::parse(text) {
                Some(g) => self.network.push(g),
                None => {
                    return Err((
                        format!("invalid network grant `{text}`"),
                        "write a host name or address with an optional port: `api.example.com:443`"
                            .into(),
                    ));
                }
            },
            _ => match Program::of(text) {
                Some(program) => {
                    self.exec.insert(program.to_string());
                }
                None => {
                    return Err((
                        format!("`{text}` in `permissions.exec` is not a program"),
                        "name a program on PATH (`pytest`), a file of the workspace (`.venv/bin/pytest`) or an absolute path (`/opt/tool/bin/tool`); `..` is not allowed".into(),
                    ));
                }
            },
        }
        Ok(())
    }

    /// The grants with `templated` ones filled in from a matrix combination.
    pub fn for_combination(
        &self,
        values: &[(String, serde_json::Value)],
    ) -> Result<Permissions, (String, String)> {
        let mut p = self.clone();
        p.templated.clear();
        let mut scope = crate::expr::Scope::default();
        scope.contexts.insert(
            "matrix",
            serde_json::Value::Object(values.iter().cloned().collect()),
        );
        for (key, template) in &self.templated {
            let text = template
                .render(&scope)
                .map_err(|e| (e, "a grant can read only the job's `matrix`".to_string()))?;
            p.add(key, &text)?;
        }
        Ok(p)
    }

    pub fn memory_limit(&self) -> u64 {
        self.memory.unwrap_or(DEFAULT_MEMORY)
    }

    pub fn log_limit(&self) -> u64 {
        self.log_limit.unwrap_or(DEFAULT_LOG_LIMIT)
    }
}

/// Whether `name` may name an artifact: letters, digits, `-`, `_` and `.`, not starting
/// with `.`, at most 255 bytes. The rule keeps a name a single file name wherever it is
/// used, so it can never name a path.
pub fn is_artifact_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// What [`is_artifact_name`] asks of a name, as a hint.
pub const ARTIFACT_NAME_RULE: &str =
    "artifact names contain letters, digits, `-`, `_` and `.`, and do not start with `.`";

/// Parses a size such as `512MiB`, `1GiB`, `10MB` or `4096`.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" | "K" | "k" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" | "M" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" | "G" => 1 << 30,
        _ => return None,
    };
    let bytes = number * factor as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes <= u64::MAX as f64).then_some(bytes as u64)
}

/// Formats bytes for people: `512 MiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 && value.fract() == 0.0 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `path` made absolute against `dir` (a relative `dir` against the current directory), with
/// `.` and `..` resolved by name: what a grant and the step it is for both call the path.
pub fn host_path(dir: &std::path::Path, path: &str) -> PathBuf {
    use std::path::Component;
    let joined = std::path::absolute(dir.join(path)).unwrap_or_else(|_| dir.join(path));
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_grants_name_programs_workspace_files_or_absolute_paths() {
        use Program::*;
        assert_eq!(Program::of("git"), Some(Name("git")));
        assert_eq!(
            Program::of(".venv/bin/pytest"),
            Some(Workspace(".venv/bin/pytest"))
        );
        assert_eq!(Program::of("././tools/x"), Some(Workspace("tools/x")));
        assert_eq!(Program::of("/opt/t/bin/t"), Some(Absolute("/opt/t/bin/t")));
        assert_eq!(Program::of("C:\\t\\t.exe"), Some(Absolute("C:\\t\\t.exe")));
        for bad in [
            "",
            "../outside/tool",
            "tools/../../x",
            "/opt/../etc/x",
            "C:\\a\\..\\b",
            "tools//x",
            "tools/",
            "./",
            "~/bin/x",
            "tools\\x",
            "git\n",
            "é/../x",
        ] {
            assert_eq!(Program::of(bad), None, "{bad:?}");
        }
        // Multi-byte text is read, not sliced.
        assert_eq!(Program::of("é"), Some(Name("é")));
        // Kept in a form that reads back as the same kind: `./deploy` is never `deploy`.
        for text in [
            "./deploy",
            "././deploy",
            ".venv/bin/pytest",
            "git",
            "/opt/t",
        ] {
            let kept = Program::of(text).unwrap().to_string();
            assert_eq!(
                Program::of(&kept),
                Program::of(text),
                "{text} kept as {kept}"
            );
        }
        assert_eq!(Program::of("./deploy").unwrap().to_string(), "./deploy");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("1.5 GiB"), Some(3 << 29));
        assert_eq!(parse_size("10MB"), Some(10_000_000));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("1 parsec"), None);
        assert_eq!(format_size(512 << 20), "512 MiB");
        assert_eq!(format_size(1 << 30), "1 GiB");
    }

    #[test]
    fn network_grants() {
        let g = NetworkGrant::parse("API.example.com:443").unwrap();
        assert_eq!(g.host, "api.example.com");
        assert_eq!(g.port, Some(443));
        assert!(!NetworkGrant::parse("example.com").unwrap().covers(&g));
        assert!(NetworkGrant::parse("api.example.com").unwrap().covers(&g));
        assert!(
            !NetworkGrant::parse("api.example.com:80")
                .unwrap()
                .covers(&g)
        );
        let v6 = NetworkGrant::parse("[::1]:8080").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", Some(8080)));
        assert_eq!(v6.to_string(), "[::1]:8080");
        assert!(NetworkGrant::parse("bad host").is_none());
        assert!(NetworkGrant::parse("h:notaport").is_none());
    }

    #[test]
    fn each_matrix_combination_gets_its_own_grants() {
        let yaml = "jobs:\n  test:\n    matrix:\n      tool: [python3, node]\n      port: [8080]\n    steps:\n      - run: echo\n        permissions: { exec: [\"${{ matrix.tool }}\"], network: [\"localhost:${{ matrix.port }}\"] }\n";
        let source = crate::Source::new("ferry.yaml", yaml);
        let pipeline = crate::parse(&source, std::path::Path::new("."), &["shell"]).unwrap();
        let plan = crate::Plan::new(pipeline, &[]).unwrap();
        let grants: Vec<(String, Vec<String>, String)> = plan
            .pipeline
            .jobs
            .iter()
            .map(|j| {
                let p = &j.steps[0].permissions;
                (
                    j.id.clone(),
                    p.exec.iter().cloned().collect(),
                    p.network[0].to_string(),
                )
            })
            .collect();
        assert_eq!(
            grants,
            [
                (
                    "test (python3, 8080)".to_string(),
                    vec!["python3".to_string()],
                    "localhost:8080".to_string()
                ),
                (
                    "test (node, 8080)".to_string(),
                    vec!["node".to_string()],
                    "localhost:8080".to_string()
                ),
            ]
        );
        let bad = yaml.replace("node]", "../node]");
        let source = crate::Source::new("ferry.yaml", bad.as_str());
        let report = crate::parse(&source, std::path::Path::new("."), &["shell"]).unwrap_err();
        assert!(
            report.diagnostics[0].message.starts_with("`../node` in `permissions.exec` is not a program (in the combination tool: \"../node\""),
            "{}",
            report.diagnostics[0].message
        );
        let no_matrix = "jobs:\n  a:\n    steps:\n      - run: echo\n        permissions: { exec: [\"${{ matrix.tool }}\"] }\n";
        let source = crate::Source::new("ferry.yaml", no_matrix);
        let report = crate::parse(&source, std::path::Path::new("."), &["shell"]).unwrap_err();
        assert!(
            report
                .diagnostics
                .iter()
                .any(|d| d.message == "job `a` has no `matrix:` for a grant to read")
        );
    }
}
