//! `${{ ... }}` expressions in string values, and `if:` conditions.
//!
//! Expressions are CEL (the Common Expression Language, evaluated by the `cel` crate) over
//! ferry's contexts (`env`, `vars`, `secrets`, `matrix`, `steps`, `needs`, `jobs`, `git`,
//! `inputs`, `runner`) with ferry's functions registered beside CEL's own. Two things make
//! expressions written for GitHub Actions work unchanged:
//!
//! - a field name may contain `-` after a dot (`steps.my-step.outputs.short-sha`), read as
//!   `steps["my-step"].outputs["short-sha"]`; with spaces around it, `-` subtracts;
//! - `contains`, `startsWith` and `endsWith` may be called as functions
//!   (`contains(git.ref, 'release')`) as well as CEL methods.
//!
//! Every expression is parsed and checked when the pipeline is read: a syntax error, an
//! unknown context or an unknown function is reported at its line and column inside the
//! `${{ }}`. Values are only known when a step starts; a wrong type or a value that is not
//! set then fails that step, naming the expression.

use crate::diag::{Diagnostic, Span, suggest};
use cel::common::ast::{EntryExpr, Expr as Ast, IdedExpr};
use cel::extractors::Arguments;
use cel::{Context, ExecutionError, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// The contexts an expression can read.
pub const CONTEXTS: [&str; 10] = [
    "env", "vars", "secrets", "matrix", "steps", "needs", "jobs", "git", "inputs", "runner",
];

/// What `git.*` holds: the repository's commit when the run starts, then what the last
/// `checkout` step checked out.
pub const GIT_FIELDS: [&str; 9] = [
    "sha",
    "short-sha",
    "ref",
    "branch",
    "tag",
    "event",
    "commit-message",
    "commit-time",
    "author",
];

/// ferry's functions, beside CEL's standard ones.
pub const FUNCTIONS: [&str; 12] = [
    "success",
    "failure",
    "always",
    "cancelled",
    "contains",
    "startsWith",
    "endsWith",
    "format",
    "join",
    "toJSON",
    "fromJSON",
    "hashFiles",
];

/// CEL's standard functions (macros such as `has`, `all` and `map` are expanded by the
/// parser and never appear as calls).
const CEL_FUNCTIONS: [&str; 13] = [
    "size", "int", "uint", "double", "string", "bytes", "bool", "type", "dyn", "matches", "max",
    "min", "optional",
];

/// Functions that read how the job (or the run) is going.
const STATUS_FUNCTIONS: [&str; 4] = ["success", "failure", "always", "cancelled"];

/// A string value that may contain expressions.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub parts: Vec<Part>,
    /// Where the value starts in the pipeline file.
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Lit(String),
    Expr(Expression),
}

/// One compiled expression.
#[derive(Clone)]
pub struct Expression {
    /// As written between `${{` and `}}`, trimmed.
    pub text: String,
    /// Where it is written.
    pub span: Span,
    /// The context paths it reads, each with where it is written: `steps.build.outputs.v`
    /// is `["steps", "build", "outputs", "v"]`, as far as the names are literal.
    pub paths: Vec<(Vec<String>, Span)>,
    /// Whether it calls `success()`, `failure()`, `always()` or `cancelled()`.
    pub reads_status: bool,
    program: Arc<cel::Program>,
}

impl PartialEq for Expression {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.span == other.span
    }
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "${{{{ {} }}}}", self.text)
    }
}

impl std::fmt::Display for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "${{{{ {} }}}}", self.text)
    }
}

/// How the job or run is going, for the status functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// Nothing has failed so far.
    #[default]
    Success,
    /// An earlier step of the job (or a job this one needs) failed.
    Failure,
    /// The run was cancelled.
    Cancelled,
}

/// Hashes the workspace files that match globs (`hashFiles`).
pub type HashFiles = Arc<dyn Fn(&[String]) -> Result<String, String> + Send + Sync>;

/// The values expressions read when a step or job starts.
#[derive(Default)]
pub struct Scope {
    /// Each context as JSON: `env` → `{"NAME": "value"}`, `steps` → `{"id": {"outputs":
    /// {...}, "outcome": "success"}}`, ... A context that is absent reads as empty.
    pub contexts: BTreeMap<&'static str, serde_json::Value>,
    pub progress: Progress,
    /// Hashes the workspace files matching globs, for `hashFiles`.
    pub hash_files: Option<HashFiles>,
}

impl Scope {
    /// Sets one value in a context, creating the path's objects on the way.
    pub fn set(&mut self, context: &'static str, path: &[&str], value: serde_json::Value) {
        let mut node = self
            .contexts
            .entry(context)
            .or_insert_with(|| serde_json::json!({}));
        for (i, key) in path.iter().enumerate() {
            if !node.is_object() {
                *node = serde_json::json!({});
            }
            let map = node.as_object_mut().expect("an object");
            if i + 1 == path.len() {
                map.insert(key.to_string(), value);
                return;
            }
            node = map
                .entry(key.to_string())
                .or_insert_with(|| serde_json::json!({}));
        }
    }

    fn cel(&self) -> Result<Context<'_, '_>, String> {
        let mut ctx = Context::with_env(env().clone());
        for name in CONTEXTS {
            let value = self
                .contexts
                .get(name)
                .cloned()
                .unwrap_or_else(|| serde_json::json!({}));
            ctx.add_variable_from_value(name, from_json(&value));
        }
        let progress = self.progress;
        let declare = |r: Result<(), cel::DeclarationError>| r.map_err(|e| e.to_string());
        declare(ctx.add_function("success", move || progress == Progress::Success))?;
        declare(ctx.add_function("failure", move || progress == Progress::Failure))?;
        declare(ctx.add_function("cancelled", move || progress == Progress::Cancelled))?;
        declare(ctx.add_function("always", || true))?;
        declare(
            ctx.add_function(GLOBAL_CONTAINS, |Arguments(a): Arguments| {
                let [hay, needle] = two(GLOBAL_CONTAINS, &a)?;
                Ok::<_, ExecutionError>(Value::Bool(contains(hay, needle)))
            }),
        )?;
        declare(ctx.add_function(GLOBAL_STARTS, |Arguments(a): Arguments| {
            let [s, p] = two(GLOBAL_STARTS, &a)?;
            Ok::<_, ExecutionError>(Value::Bool(text(s).starts_with(&text(p))))
        }))?;
        declare(ctx.add_function(GLOBAL_ENDS, |Arguments(a): Arguments| {
            let [s, p] = two(GLOBAL_ENDS, &a)?;
            Ok::<_, ExecutionError>(Value::Bool(text(s).ends_with(&text(p))))
        }))?;
        declare(ctx.add_function("format", |Arguments(a): Arguments| format_fn(&a)))?;
        declare(ctx.add_function("join", |Arguments(a): Arguments| join_fn(&a)))?;
        declare(ctx.add_function("toJSON", |Arguments(a): Arguments| {
            let [v] = a.as_slice() else {
                return Err(ExecutionError::function_error("toJSON", "takes one value"));
            };
            let json = v
                .json()
                .map_err(|e| ExecutionError::function_error("toJSON", e.to_string()))?;
            Ok(Value::from(
                serde_json::to_string_pretty(&json).unwrap_or_default(),
            ))
        }))?;
        declare(ctx.add_function("fromJSON", |Arguments(a): Arguments| {
            let [Value::String(s)] = a.as_slice() else {
                return Err(ExecutionError::function_error(
                    "fromJSON",
                    "takes one string",
                ));
            };
            let json: serde_json::Value = serde_json::from_str(s).map_err(|e| {
                ExecutionError::function_error("fromJSON", format!("not JSON: {e}"))
            })?;
            Ok(from_json(&json))
        }))?;
        let hash = self.hash_files.clone();
        declare(
            ctx.add_function("hashFiles", move |Arguments(a): Arguments| {
                let globs: Vec<String> = a.iter().map(text).collect();
                if globs.is_empty() {
                    return Err(ExecutionError::function_error(
                        "hashFiles",
                        "takes at least one glob",
                    ));
                }
                match &hash {
                    Some(hash) => hash(&globs)
                        .map(Value::from)
                        .map_err(|e| ExecutionError::function_error("hashFiles", e)),
                    None => Err(ExecutionError::function_error(
                        "hashFiles",
                        "has no workspace here",
                    )),
                }
            }),
        )?;
        Ok(ctx)
    }
}

// `contains(a, b)` is written as a function in GitHub Actions but is a method in CEL, whose
// names cannot be declared twice; the parser's input calls these instead.
const GLOBAL_CONTAINS: &str = "ferry_contains";
const GLOBAL_STARTS: &str = "ferry_startsWith";
const GLOBAL_ENDS: &str = "ferry_endsWith";

fn env() -> &'static Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(cel::Env::stdlib()))
}

fn two<'v>(name: &str, args: &'v [Value]) -> Result<[&'v Value; 2], ExecutionError> {
    match args {
        [a, b] => Ok([a, b]),
        _ => Err(ExecutionError::function_error(
            name.trim_start_matches("ferry_"),
            format!("takes two arguments, got {}", args.len()),
        )),
    }
}

/// JSON as a CEL value. Whole numbers become `int`, so that `matrix.n - 1` works as written
/// (CEL does not mix `int` and `uint`).
fn from_json(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::from(s.clone()),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.iter().map(from_json).collect()))
        }
        serde_json::Value::Object(map) => Value::Map(cel::objects::Map {
            map: Arc::new(
                map.iter()
                    .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), from_json(v)))
                    .collect(),
            ),
        }),
    }
}

/// A value as text: what `${{ }}` puts into a string.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => other
            .json()
            .ok()
            .and_then(|j| serde_json::to_string(&j).ok())
            .unwrap_or_default(),
    }
}

/// `contains(list, item)` or `contains(string, substring)`, as in GitHub Actions: string
/// comparison ignores case.
fn contains(hay: &Value, needle: &Value) -> bool {
    match hay {
        Value::List(items) => items.iter().any(|i| {
            i == needle || text(i).eq_ignore_ascii_case(&text(needle)) && is_text(i, needle)
        }),
        other => text(other)
            .to_lowercase()
            .contains(&text(needle).to_lowercase()),
    }
}

fn is_text(a: &Value, b: &Value) -> bool {
    matches!(a, Value::String(_)) && matches!(b, Value::String(_))
}

/// `format('{0} of {1}', a, b)`; `{{` and `}}` are literal braces.
fn format_fn(args: &[Value]) -> Result<Value, ExecutionError> {
    let err = |m: String| ExecutionError::function_error("format", m);
    let Some((Value::String(pattern), values)) = args.split_first() else {
        return Err(err("takes a format string first".into()));
    };
    let mut out = String::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let mut index = String::new();
                for d in chars.by_ref() {
                    if d == '}' {
                        break;
                    }
                    index.push(d);
                }
                let i: usize = index
                    .trim()
                    .parse()
                    .map_err(|_| err(format!("`{{{index}}}` is not a placeholder like `{{0}}`")))?;
                let value = values.get(i).ok_or_else(|| {
                    err(format!(
                        "`{{{i}}}` has no argument ({} given)",
                        values.len()
                    ))
                })?;
                out.push_str(&text(value));
            }
            c => out.push(c),
        }
    }
    Ok(Value::from(out))
}

/// `join(list, separator)`; the separator defaults to `,`.
fn join_fn(args: &[Value]) -> Result<Value, ExecutionError> {
    let (list, sep) = match args {
        [list] => (list, ",".to_string()),
        [list, sep] => (list, text(sep)),
        _ => {
            return Err(ExecutionError::function_error(
                "join",
                "takes a list and an optional separator",
            ));
        }
    };
    Ok(Value::from(match list {
        Value::List(items) => items.iter().map(text).collect::<Vec<_>>().join(&sep),
        other => text(other),
    }))
}

impl Template {
    /// A template without expressions.
    pub fn literal(text: impl Into<String>) -> Self {
        Template {
            parts: vec![Part::Lit(text.into())],
            span: Span::default(),
        }
    }

    /// Parses `text`, which starts at `span` in `source`; errors point inside the
    /// expression.
    pub fn parse(text: &str, span: Span, source: &str) -> Result<Template, Diagnostic> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut consumed = 0;
        while let Some(start) = rest.find("${{") {
            if start > 0 {
                parts.push(Part::Lit(rest[..start].to_string()));
            }
            let after = &rest[start + 3..];
            let origin = locate(source, span, &text[consumed + start..], "${{");
            let Some(end) = closing(after) else {
                return Err(
                    Diagnostic::error("unterminated expression: `${{` without `}}`")
                        .at(origin)
                        .hint("close the expression with `}}`"),
                );
            };
            let inner = after[..end].trim();
            let at = match inner {
                "" => origin,
                _ => locate(source, span, &text[consumed + start..], inner),
            };
            parts.push(Part::Expr(Expression::compile(inner, at, source)?));
            consumed += start + 3 + end + 2;
            rest = &after[end + 2..];
        }
        if !rest.is_empty() || parts.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Template { parts, span })
    }

    /// Parses a condition: `${{ expr }}` or a bare expression, as `if:` accepts both.
    pub fn condition(text: &str, span: Span, source: &str) -> Result<Expression, Diagnostic> {
        let trimmed = text.trim();
        if let Some(inner) = trimmed
            .strip_prefix("${{")
            .and_then(|t| t.strip_suffix("}}"))
            .filter(|inner| !inner.contains("${{") && !inner.contains("}}"))
        {
            let origin = locate(source, span, text, "${{");
            let lead = inner.len() - inner.trim_start().len();
            let at = shift(source, origin, 3 + inner[..lead].chars().count());
            return Expression::compile(inner.trim(), at, source);
        }
        if trimmed.contains("${{") {
            return Err(Diagnostic::error(
                "a condition is one expression, not text with `${{ }}` inside",
            )
            .at(span)
            .hint("write `if: a == 'b'` or `if: ${{ a == 'b' }}`"));
        }
        let at = locate(source, span, text, trimmed.get(..1).unwrap_or(""));
        Expression::compile(trimmed, at, source)
    }

    /// The text, when the template has no expressions.
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Lit(text)] => Some(text),
            _ => None,
        }
    }

    /// The expressions in the template.
    pub fn expressions(&self) -> impl Iterator<Item = &Expression> {
        self.parts.iter().filter_map(|p| match p {
            Part::Expr(e) => Some(e),
            Part::Lit(_) => None,
        })
    }

    /// The text with every expression replaced by its value.
    pub fn render(&self, scope: &Scope) -> Result<String, String> {
        if let Some(text) = self.as_literal() {
            return Ok(text.to_string());
        }
        let ctx = scope.cel()?;
        self.render_in(&ctx)
    }

    fn render_in(&self, ctx: &Context) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(text) => out.push_str(text),
                Part::Expr(e) => out.push_str(&text(&e.evaluate_in(ctx)?)),
            }
        }
        Ok(out)
    }
}

/// Renders every template in a map with one evaluation context.
pub fn render_map(
    map: &BTreeMap<String, Template>,
    scope: &Scope,
) -> Result<BTreeMap<String, String>, String> {
    if map.values().all(|t| t.as_literal().is_some()) {
        return Ok(map
            .iter()
            .map(|(k, t)| (k.clone(), t.as_literal().unwrap_or_default().to_string()))
            .collect());
    }
    let ctx = scope.cel()?;
    map.iter()
        .map(|(k, t)| t.render_in(&ctx).map(|v| (k.clone(), v)))
        .collect()
}

impl Expression {
    /// Parses and checks one expression written at `at`.
    fn compile(text: &str, at: Span, source: &str) -> Result<Expression, Diagnostic> {
        if text.is_empty() {
            return Err(Diagnostic::error("empty expression `${{ }}`")
                .at(at)
                .hint("write an expression such as `${{ env.NAME }}`"));
        }
        let (cel_text, map) = translate(text);
        // Where a character of the text CEL parsed is written in the file.
        let place = |cel_offset: usize, len: usize| {
            let original = map.get(cel_offset).copied().unwrap_or(text.len());
            let chars = text[..original.min(text.len())].chars().count();
            let mut span = shift(source, at, chars);
            span.len = len.max(1) as u32;
            span
        };
        let program = env().compile(&cel_text).map_err(|errors| {
            let first = errors.errors.first();
            let (line, col) = first.map_or((1, 1), |e| (e.pos.0.max(1), e.pos.1.max(1)));
            let offset = cel_text
                .split_inclusive('\n')
                .take(line as usize - 1)
                .map(str::len)
                .sum::<usize>()
                + col as usize
                - 1;
            let message = first.map_or_else(|| errors.to_string(), |e| plain(&e.msg));
            Diagnostic::error(format!("cannot parse `{text}`: {message}"))
                .at(place(offset.min(cel_text.len()), 1))
                .hint("expressions are CEL: `a == 'b' && !failure()`, `size(x) > 0`, `format('{0}', x)`")
        })?;
        let mut walk = Walk::default();
        walk.expr(program.expression(), &mut Vec::new());
        let info = program.source_info();
        // A path is underlined from its root to its last name, as written.
        let path_span = |id: u64, segments: &[String]| {
            let start = info.offset_for(id).map_or(0, |(s, _)| s as usize);
            let byte = cel_text
                .char_indices()
                .nth(start)
                .map_or(cel_text.len(), |(b, _)| b);
            let from = map.get(byte).copied().unwrap_or(text.len()).min(text.len());
            let mut end = from;
            for segment in segments {
                match text[end..].find(segment.as_str()) {
                    Some(i) => end += i + segment.len(),
                    None => break,
                }
            }
            place(byte, text[from..end].chars().count())
        };
        for (name, id) in &walk.calls {
            if is_operator(name) {
                continue;
            }
            // CEL places a call at its `(`; the name is written just before.
            let call_at = |id: u64| {
                let start = info.offset_for(id).map_or(0, |(s, _)| s as usize);
                let byte = cel_text
                    .char_indices()
                    .nth(start)
                    .map_or(cel_text.len(), |(b, _)| b);
                let byte = match cel_text[byte..].starts_with('(') {
                    true => byte.saturating_sub(name.len()),
                    false => byte,
                };
                place(byte, name.trim_start_matches("ferry_").len())
            };
            let shown = name.trim_start_matches("ferry_");
            if FUNCTIONS.contains(&shown) || CEL_FUNCTIONS.contains(&name.as_str()) {
                continue;
            }
            let all = FUNCTIONS.iter().chain(CEL_FUNCTIONS.iter()).copied();
            return Err(Diagnostic::error(format!("unknown function `{shown}`"))
                .at(call_at(*id))
                .hint(match suggest(shown, all) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!(
                        "ferry's functions are {}; CEL's own are {}",
                        FUNCTIONS.join(", "),
                        CEL_FUNCTIONS.join(", ")
                    ),
                }));
        }
        let mut paths = Vec::new();
        for (segments, id) in walk.paths {
            let root = segments[0].as_str();
            let span = path_span(id, &segments);
            if !CONTEXTS.contains(&root) {
                let hint = match root {
                    "github" => {
                        "ferry's `git` context holds the commit: `git.sha`, `git.ref`, `git.branch`"
                            .to_string()
                    }
                    _ => match suggest(root, CONTEXTS) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!("contexts are {}", CONTEXTS.join(", ")),
                    },
                };
                return Err(Diagnostic::error(format!("unknown context `{root}`"))
                    .at(span)
                    .hint(hint));
            }
            if root == "git"
                && let Some(field) = segments.get(1)
                && !GIT_FIELDS.contains(&field.as_str())
            {
                return Err(Diagnostic::error(format!("`git.{field}` is not known"))
                    .at(span)
                    .hint(match suggest(field, GIT_FIELDS) {
                        Some(s) => format!("did you mean `git.{s}`?"),
                        None => format!("`git.*` holds {}", GIT_FIELDS.join(", ")),
                    }));
            }
            paths.push((segments, span));
        }
        let reads_status = walk
            .calls
            .iter()
            .any(|(name, _)| STATUS_FUNCTIONS.contains(&name.as_str()));
        Ok(Expression {
            text: text.to_string(),
            span: at,
            paths,
            reads_status,
            program: Arc::new(program),
        })
    }

    /// The expression's value.
    pub fn evaluate(&self, scope: &Scope) -> Result<Value, String> {
        self.evaluate_in(&scope.cel()?)
    }

    /// The expression's value as JSON: what `matrix: ${{ fromJSON(...) }}` gives.
    pub fn evaluate_json(&self, scope: &Scope) -> Result<serde_json::Value, String> {
        let value = self.evaluate(scope)?;
        value
            .json()
            .map_err(|e| format!("`${{{{ {} }}}}` gives no JSON value: {e}", self.text))
    }

    /// The value of a condition, which must be true or false.
    pub fn test(&self, scope: &Scope) -> Result<bool, String> {
        match self.evaluate(scope)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!(
                "`{}` is a condition but gives {}, not true or false",
                self.text,
                describe(&other)
            )),
        }
    }

    fn evaluate_in(&self, ctx: &Context) -> Result<Value, String> {
        self.program.execute(ctx).map_err(|e| {
            let why = match &e {
                ExecutionError::NoSuchKey(key) => {
                    format!("`{key}` is not set (use `has(...)` to test whether a value is there)")
                }
                other => plain(&other.to_string()),
            };
            format!("`${{{{ {} }}}}`: {why}", self.text)
        })
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("the string '{s}'"),
        Value::Null => "null".into(),
        other => format!("{other:?}"),
    }
}

/// A message of the CEL crate with ferry's names for the functions it renamed.
fn plain(message: &str) -> String {
    message.replace("ferry_", "")
}

fn is_operator(name: &str) -> bool {
    name.starts_with('_')
        || name.starts_with('@')
        || name.starts_with("!_")
        || name.starts_with("-_")
}

/// What an expression reads and calls.
#[derive(Default)]
struct Walk {
    paths: Vec<(Vec<String>, u64)>,
    calls: Vec<(String, u64)>,
}

impl Walk {
    /// `bound`: names a comprehension (`all`, `map`, ...) declares, which are not contexts.
    fn expr(&mut self, e: &IdedExpr, bound: &mut Vec<String>) {
        if let Some((segments, root_id)) = path(e) {
            if !bound.contains(&segments[0]) {
                self.paths.push((segments, root_id));
            }
            return;
        }
        match &e.expr {
            Ast::Call(call) => {
                self.calls.push((call.func_name.clone(), e.id));
                if let Some(target) = &call.target {
                    self.expr(target, bound);
                }
                for arg in &call.args {
                    self.expr(arg, bound);
                }
            }
            Ast::Select(select) => self.expr(&select.operand, bound),
            Ast::List(list) => {
                for item in &list.elements {
                    self.expr(item, bound);
                }
            }
            Ast::Map(map) => {
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(m) = &entry.expr {
                        self.expr(&m.key, bound);
                        self.expr(&m.value, bound);
                    }
                }
            }
            Ast::Struct(s) => {
                for entry in &s.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        self.expr(&f.value, bound);
                    }
                }
            }
            Ast::Comprehension(c) => {
                self.expr(&c.iter_range, bound);
                let before = bound.len();
                bound.push(c.iter_var.clone());
                bound.extend(c.iter_var2.clone());
                bound.push(c.accu_var.clone());
                for part in [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                    self.expr(part, bound);
                }
                bound.truncate(before);
            }
            Ast::Ident(_) | Ast::Literal(_) | Ast::Unspecified => {}
        }
    }
}

/// `a.b["c"].d` as `["a", "b", "c", "d"]`, with the id of the whole chain's root; `None`
/// when the expression is not a chain of literal names from an identifier.
fn path(e: &IdedExpr) -> Option<(Vec<String>, u64)> {
    match &e.expr {
        Ast::Ident(name) => Some((vec![name.clone()], e.id)),
        Ast::Select(select) if !select.test => {
            let (mut segments, id) = path(&select.operand)?;
            segments.push(select.field.clone());
            Some((segments, id))
        }
        Ast::Call(call) if call.func_name == "_[_]" && call.args.len() == 2 => {
            let (mut segments, id) = path(&call.args[0])?;
            match &call.args[1].expr {
                Ast::Literal(cel::common::ast::LiteralValue::String(s)) => {
                    segments.push(s.to_string());
                    Some((segments, id))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The text CEL parses, and for each of its bytes the offset in `text` it comes from:
/// `.name-with-dashes` becomes `["name-with-dashes"]`, and `contains(`, `startsWith(` and
/// `endsWith(` called as functions become ferry's global versions.
fn translate(text: &str) -> (String, Vec<usize>) {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 8);
    let mut map = Vec::with_capacity(text.len() + 8);
    let push = |out: &mut String, map: &mut Vec<usize>, s: &str, from: usize| {
        out.push_str(s);
        map.extend(std::iter::repeat_n(from, s.len()));
    };
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\'' || b == b'"' {
            // A string literal, escapes included, stays as it is.
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(bytes.len());
            for (k, c) in text[i..end].char_indices() {
                let mut buf = [0; 4];
                push(&mut out, &mut map, c.encode_utf8(&mut buf), i + k);
            }
            i = end;
            continue;
        }
        if b == b'.'
            && bytes
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
        {
            let mut j = i + 1;
            while j < bytes.len()
                && (ident(bytes[j])
                    || bytes[j] == b'-' && bytes.get(j + 1).is_some_and(|c| ident(*c)))
            {
                j += 1;
            }
            let name = &text[i + 1..j];
            if name.contains('-') {
                push(&mut out, &mut map, "[\"", i);
                out.push_str(name);
                map.extend(i + 1..j);
                push(&mut out, &mut map, "\"]", j - 1);
            } else {
                out.push_str(&text[i..j]);
                map.extend(i..j);
            }
            i = j;
            continue;
        }
        if ident(b) && (i == 0 || !ident(bytes[i - 1]) && bytes[i - 1] != b'.') {
            let mut j = i;
            while j < bytes.len() && ident(bytes[j]) {
                j += 1;
            }
            let word = &text[i..j];
            let global = match word {
                "contains" => Some(GLOBAL_CONTAINS),
                "startsWith" => Some(GLOBAL_STARTS),
                "endsWith" => Some(GLOBAL_ENDS),
                _ => None,
            };
            let called = text[j..].trim_start().starts_with('(');
            match global {
                Some(g) if called => push(&mut out, &mut map, g, i),
                _ => {
                    out.push_str(word);
                    map.extend(i..j);
                }
            }
            i = j;
            continue;
        }
        let c = text[i..].chars().next().unwrap_or(' ');
        let mut buf = [0; 4];
        push(&mut out, &mut map, c.encode_utf8(&mut buf), i);
        i += c.len_utf8();
    }
    map.push(text.len());
    (out, map)
}

/// Where the `}}` that closes an expression is, skipping string literals, which may hold
/// braces of their own (`format('{{0}}')`).
fn closing(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut quote = None;
    let mut i = 0;
    while i < bytes.len() {
        match (quote, bytes[i]) {
            (Some(_), b'\\') => i += 1,
            (Some(q), b) if b == q => quote = None,
            (None, b'\'' | b'"') => quote = Some(bytes[i]),
            (None, b'}') if bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// `span` moved `chars` characters to the right. Without the source (tests of single
/// values), only the column moves.
fn shift(source: &str, span: Span, chars: usize) -> Span {
    match source.get(span.offset..) {
        Some(rest) if !source.is_empty() => {
            let bytes = rest
                .char_indices()
                .nth(chars)
                .map_or(rest.len(), |(b, _)| b);
            Span::from_offset(source, span.offset + bytes, 1)
        }
        _ => Span {
            offset: span.offset + chars,
            col: span.col + chars as u32,
            len: 1,
            ..span
        },
    }
}

/// Finds `needle` in the source text from the value's position on, so that the error points
/// at the expression even inside block scalars; falls back to the value's start.
fn locate(source: &str, span: Span, from: &str, needle: &str) -> Span {
    let start = span.offset.min(source.len());
    let anchor = from.get(..from.len().min(3)).unwrap_or("${{");
    let found = source[start..].find(anchor).and_then(|i| {
        let at = start + i;
        source[at..].find(needle).map(|j| at + j)
    });
    match found {
        Some(offset) => Span::from_offset(source, offset, needle.chars().count()),
        None => span,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        let mut s = Scope::default();
        s.contexts.insert("env", json!({"A": "1", "NAME": "ferry"}));
        s.contexts.insert("vars", json!({"region": "eu"}));
        s.contexts.insert("secrets", json!({"TOKEN": "t0k"}));
        s.contexts
            .insert("matrix", json!({"os": "linux", "n": 3, "py": "3.12"}));
        s.set(
            "steps",
            &["my-step", "outputs", "short-sha"],
            json!("abc1234"),
        );
        s.set("steps", &["s", "outputs", "count"], json!("3"));
        s.set("steps", &["s", "outcome"], json!("success"));
        s.set("needs", &["build", "outputs", "version"], json!("1.2.0"));
        s.set("needs", &["build", "result"], json!("success"));
        s.set("jobs", &["lint", "result"], json!("failure"));
        s.contexts.insert(
            "git",
            json!({"ref": "refs/heads/main", "branch": "main", "sha": "0123abcd", "short-sha": "0123abc"}),
        );
        s.contexts
            .insert("inputs", json!({"dry-run": true, "level": 2}));
        s.contexts
            .insert("runner", json!({"os": "linux", "arch": "x86_64"}));
        s
    }

    fn eval(text: &str) -> String {
        Template::parse(&format!("${{{{ {text} }}}}"), Span::default(), "")
            .unwrap_or_else(|d| panic!("{text}: {}", d.message))
            .render(&scope())
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn eval_err(text: &str) -> String {
        Template::parse(&format!("${{{{ {text} }}}}"), Span::default(), "")
            .unwrap()
            .render(&scope())
            .unwrap_err()
    }

    fn parse_err(source: &str) -> Diagnostic {
        let start = source.find(':').unwrap() + 2;
        let value = &source[start..source.len() - 1];
        Template::parse(value, Span::from_offset(source, start, 1), source).unwrap_err()
    }

    #[test]
    fn every_context_is_readable() {
        let golden = [
            ("env.NAME", "ferry"),
            ("vars.region", "eu"),
            ("secrets.TOKEN", "t0k"),
            ("matrix.os", "linux"),
            ("steps.my-step.outputs.short-sha", "abc1234"),
            ("steps.s.outcome", "success"),
            ("needs.build.outputs.version", "1.2.0"),
            ("needs.build.result", "success"),
            ("jobs.lint.result", "failure"),
            ("git.ref", "refs/heads/main"),
            ("git.short-sha", "0123abc"),
            ("inputs.dry-run", "true"),
            ("runner.os + '/' + runner.arch", "linux/x86_64"),
        ];
        for (expr, want) in golden {
            assert_eq!(eval(expr), want, "{expr}");
        }
    }

    #[test]
    fn every_function() {
        let golden = [
            ("success()", "true"),
            ("failure()", "false"),
            ("always()", "true"),
            ("cancelled()", "false"),
            ("contains(git.ref, 'MAIN')", "true"),
            ("contains(['a', 'b'], 'b')", "true"),
            ("contains(['a', 'b'], 'c')", "false"),
            ("git.ref.contains('heads')", "true"),
            ("startsWith(git.ref, 'refs/heads/')", "true"),
            ("endsWith(git.ref, '/dev')", "false"),
            ("git.ref.startsWith('refs/tags/')", "false"),
            (
                "format('{0} v{1} {{literal}}', env.NAME, needs.build.outputs.version)",
                "ferry v1.2.0 {literal}",
            ),
            ("join(['a', 'b', 'c'])", "a,b,c"),
            ("join(['a', 'b'], ' + ')", "a + b"),
            ("toJSON({'a': 1})", "{\n  \"a\": 1\n}"),
            ("fromJSON('{\"k\": [1, 2]}').k[1]", "2"),
            ("fromJSON('true')", "true"),
            ("size(git.branch)", "4"),
            ("int(steps.s.outputs.count) + 1", "4"),
            ("[1, 2, 3].all(x, x > 0)", "true"),
            ("[1, 2, 3].map(x, x * 2)", "[2,4,6]"),
        ];
        for (expr, want) in golden {
            assert_eq!(eval(expr), want, "{expr}");
        }
        let mut s = scope();
        s.progress = Progress::Failure;
        let cond = |text: &str, s: &Scope| {
            Template::condition(text, Span::default(), "")
                .unwrap()
                .test(s)
                .unwrap()
        };
        assert!(cond("failure()", &s) && !cond("success()", &s) && cond("always()", &s));
        s.progress = Progress::Cancelled;
        assert!(cond("cancelled()", &s) && !cond("success()", &s));
        s.hash_files = Some(Arc::new(|globs: &[String]| {
            Ok(format!("h({})", globs.join("|")))
        }));
        let t = Template::parse(
            "${{ hashFiles('**/Cargo.lock', 'x') }}",
            Span::default(),
            "",
        )
        .unwrap();
        assert_eq!(t.render(&s).unwrap(), "h(**/Cargo.lock|x)");
    }

    #[test]
    fn function_errors_name_the_expression() {
        let err = eval_err("format('{1}', 'a')");
        assert!(err.starts_with("`${{ format('{1}', 'a') }}`: "), "{err}");
        assert!(err.contains("`{1}` has no argument (1 given)"), "{err}");
        assert!(eval_err("fromJSON('{oops')").contains("not JSON"));
        assert!(eval_err("hashFiles('*.lock')").contains("has no workspace here"));
        assert!(eval_err("contains('a')").contains("takes two arguments"));
    }

    #[test]
    fn precedence_follows_cel() {
        for (expr, want) in [
            ("true || false && false", "true"),
            ("!false && false", "false"),
            ("1 + 2 * 3 == 7", "true"),
            ("(1 + 2) * 3", "9"),
            ("matrix.n - 1", "2"),
            ("git.branch == 'main' ? 'prod' : 'dev'", "prod"),
        ] {
            assert_eq!(eval(expr), want, "{expr}");
        }
    }

    #[test]
    fn strings_and_numbers_compare_by_their_own_rules() {
        for (expr, want) in [
            ("'10' < '9'", "true"),
            ("10 < 9", "false"),
            ("matrix.n == 3", "true"),
            ("matrix.py == '3.12'", "true"),
            ("'3' == 3", "false"),
            ("int(steps.s.outputs.count) > 2", "true"),
            ("double(matrix.py) >= 3.1", "true"),
        ] {
            assert_eq!(eval(expr), want, "{expr}");
        }
        assert!(
            eval_err("steps.s.outputs.count > 2").contains("`${{ steps.s.outputs.count > 2 }}`")
        );
    }

    #[test]
    fn missing_values_are_errors_unless_tested_with_has() {
        let err = eval_err("steps.s.outputs.nope");
        assert_eq!(
            err,
            "`${{ steps.s.outputs.nope }}`: `nope` is not set (use `has(...)` to test whether a value is there)"
        );
        assert_eq!(eval("has(steps.s.outputs.nope)"), "false");
        assert_eq!(eval("has(steps.s.outputs.count)"), "true");
        assert!(eval_err("needs.deploy.result").contains("`deploy` is not set"));
    }

    #[test]
    fn values_render_as_text() {
        assert_eq!(eval("1.5 * 2.0"), "3");
        assert_eq!(eval("null"), "");
        assert_eq!(eval("['a', 1]"), "[\"a\",1]");
        let t = Template::parse(
            "v${{ needs.build.outputs.version }}-${{ matrix.os }}",
            Span::default(),
            "",
        )
        .unwrap();
        assert_eq!(t.render(&scope()).unwrap(), "v1.2.0-linux");
    }

    #[test]
    fn conditions_are_bare_or_wrapped_and_must_be_boolean() {
        let s = scope();
        for text in ["git.branch == 'main'", "${{ git.branch == 'main' }}"] {
            assert!(
                Template::condition(text, Span::default(), "")
                    .unwrap()
                    .test(&s)
                    .unwrap()
            );
        }
        let err = Template::condition("git.branch", Span::default(), "")
            .unwrap()
            .test(&s)
            .unwrap_err();
        assert_eq!(
            err,
            "`git.branch` is a condition but gives the string 'main', not true or false"
        );
    }

    #[test]
    fn errors_point_inside_the_braces() {
        let d = parse_err("run: echo ${{ github.sha }}\n");
        assert_eq!(d.message, "unknown context `github`");
        assert_eq!((d.span.unwrap().line, d.span.unwrap().col), (1, 15));
        assert!(d.hint.unwrap().contains("git.sha"));

        let d = parse_err("run: a ${{ 1 + }}\n");
        assert!(
            d.message.starts_with("cannot parse `1 +`: Syntax error"),
            "{}",
            d.message
        );
        assert_eq!(d.span.unwrap().col, 15);

        let d = parse_err("run: ${{ contain(git.ref, 'x') }}\n");
        assert_eq!(d.message, "unknown function `contain`");
        assert_eq!(d.span.unwrap().col, 10);
        assert_eq!(d.hint.as_deref(), Some("did you mean `contains`?"));

        let d = parse_err("run: ${{ git.shaa }}\n");
        assert_eq!(d.message, "`git.shaa` is not known");
        assert_eq!(d.hint.as_deref(), Some("did you mean `git.sha`?"));

        let d = parse_err("run: x ${{ env.A && steps.s.outputs.c-d == matix.os }}\n");
        assert_eq!(d.message, "unknown context `matix`");
        assert_eq!(d.span.unwrap().col, 44);
        assert_eq!(d.hint.as_deref(), Some("did you mean `matrix`?"));

        let d = parse_err("run: ${{ }}\n");
        assert_eq!(d.message, "empty expression `${{ }}`");
        let d = parse_err("run: ${{ env.A\n");
        assert!(d.message.contains("unterminated"));
    }

    #[test]
    fn comprehension_variables_are_not_contexts() {
        assert_eq!(eval("['a'].exists(item, item == 'a')"), "true");
    }

    #[test]
    fn paths_record_what_is_read() {
        let t = Template::parse(
            "${{ steps.my-step.outputs.v + needs['b'].outputs.x + env.A }}",
            Span::default(),
            "",
        )
        .unwrap();
        let paths: Vec<String> = t
            .expressions()
            .flat_map(|e| e.paths.iter().map(|(p, _)| p.join(".")))
            .collect();
        assert_eq!(
            paths,
            ["steps.my-step.outputs.v", "needs.b.outputs.x", "env.A"]
        );
    }

    #[test]
    fn plain_text_is_one_literal() {
        let t = Template::parse("", Span::default(), "").unwrap();
        assert_eq!(t.parts, vec![Part::Lit(String::new())]);
    }
}
