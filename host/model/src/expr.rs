//! `${{ ... }}` templates in string values.
//!
//! This release understands references to pipeline variables (`env.NAME`) and to outputs of
//! earlier steps in the same job (`steps.<id>.outputs.<name>`); anything else is a validation
//! error pointing inside the braces, so a pipeline never silently gets an empty string.

use crate::diag::{Diagnostic, Span};
use std::collections::BTreeMap;

/// A string value that may contain expressions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub parts: Vec<Part>,
    /// Where the value starts in the pipeline file.
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Lit(String),
    /// An expression and where it is written.
    Expr(Reference, Span),
}

/// What an expression reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `env.NAME`: a variable from the pipeline's `env:` maps (pipeline, job, step).
    Env { name: String },
    /// `steps.<step>.outputs.<name>`.
    StepOutput { step: String, name: String },
    /// `git.<name>`: the commit being built (see [`GIT_FIELDS`]).
    Git { name: String },
}

/// What `git.*` holds: the repository's commit when the run starts, then what the last
/// `checkout` step checked out.
pub const GIT_FIELDS: [&str; 6] = [
    "sha",
    "short-sha",
    "ref",
    "branch",
    "commit-message",
    "author",
];

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Env { name } => write!(f, "env.{name}"),
            Reference::StepOutput { step, name } => write!(f, "steps.{step}.outputs.{name}"),
            Reference::Git { name } => write!(f, "git.{name}"),
        }
    }
}

/// The values an expression can read when a step starts.
pub trait Scope {
    fn env(&self, name: &str) -> Option<String>;
    fn step_output(&self, step: &str, name: &str) -> Option<String>;
    fn git(&self, name: &str) -> Option<String>;
}

impl Template {
    /// A template without expressions.
    pub fn literal(text: impl Into<String>) -> Self {
        Template {
            parts: vec![Part::Lit(text.into())],
            span: Span::default(),
        }
    }

    /// Parses `text`, which starts at `span` in `source`; errors point at the expression.
    pub fn parse(text: &str, span: Span, source: &str) -> Result<Template, Diagnostic> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut consumed = 0;
        while let Some(start) = rest.find("${{") {
            if start > 0 {
                parts.push(Part::Lit(rest[..start].to_string()));
            }
            let after = &rest[start + 3..];
            let locate = |needle: &str| locate(source, span, &text[consumed + start..], needle);
            let Some(end) = after.find("}}") else {
                return Err(
                    Diagnostic::error("unterminated expression: `${{` without `}}`")
                        .at(locate("${{"))
                        .hint("close the expression with `}}`"),
                );
            };
            let inner = after[..end].trim();
            let at = locate(inner);
            let reference = parse_reference(inner)
                .map_err(|(message, hint)| Diagnostic::error(message).at(at).hint(hint))?;
            parts.push(Part::Expr(reference, at));
            consumed += start + 3 + end + 2;
            rest = &after[end + 2..];
        }
        if !rest.is_empty() || parts.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Template { parts, span })
    }

    /// The text, when the template has no expressions.
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Lit(text)] => Some(text),
            _ => None,
        }
    }

    /// Expressions in the template, with where each is written.
    pub fn references(&self) -> impl Iterator<Item = (&Reference, Span)> {
        self.parts.iter().filter_map(|p| match p {
            Part::Expr(r, span) => Some((r, *span)),
            Part::Lit(_) => None,
        })
    }

    /// The text with every expression replaced; an unset value is an error naming it.
    pub fn render(&self, scope: &dyn Scope) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(text) => out.push_str(text),
                Part::Expr(reference, _) => {
                    let value = match reference {
                        Reference::Env { name } => scope.env(name),
                        Reference::StepOutput { step, name } => scope.step_output(step, name),
                        Reference::Git { name } => scope.git(name),
                    };
                    match value {
                        Some(v) => out.push_str(&v),
                        None => return Err(format!("`${{{{ {reference} }}}}` has no value")),
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Renders every template in a map.
pub fn render_map(
    map: &BTreeMap<String, Template>,
    scope: &dyn Scope,
) -> Result<BTreeMap<String, String>, String> {
    map.iter()
        .map(|(k, t)| t.render(scope).map(|v| (k.clone(), v)))
        .collect()
}

fn parse_reference(inner: &str) -> Result<Reference, (String, String)> {
    let is_ident = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let segments: Vec<&str> = inner.split('.').collect();
    match segments.as_slice() {
        ["env", name] if is_ident(name) => Ok(Reference::Env {
            name: name.to_string(),
        }),
        ["steps", step, "outputs", name] if is_ident(step) && is_ident(name) => {
            Ok(Reference::StepOutput {
                step: step.to_string(),
                name: name.to_string(),
            })
        }
        ["git", name] if GIT_FIELDS.contains(name) => Ok(Reference::Git {
            name: name.to_string(),
        }),
        ["git", name] => Err((
            format!("`git.{name}` is not known"),
            match crate::diag::suggest(name, GIT_FIELDS) {
                Some(s) => format!("did you mean `git.{s}`?"),
                None => format!("`git.*` holds {}", GIT_FIELDS.join(", ")),
            },
        )),
        _ if inner.is_empty() => Err((
            "empty expression `${{ }}`".into(),
            "write a reference such as `${{ env.NAME }}`".into(),
        )),
        _ => Err((
            format!("unsupported expression `{inner}`"),
            "expressions can read `env.NAME`, `steps.<id>.outputs.<name>` and `git.<field>`".into(),
        )),
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

    struct Fixed;
    impl Scope for Fixed {
        fn env(&self, name: &str) -> Option<String> {
            (name == "A").then(|| "1".into())
        }
        fn step_output(&self, step: &str, name: &str) -> Option<String> {
            (step == "s" && name == "o").then(|| "out".into())
        }
        fn git(&self, name: &str) -> Option<String> {
            (name == "short-sha").then(|| "abc1234".into())
        }
    }

    #[test]
    fn git_fields_render_and_typos_are_caught() {
        let t = Template::parse("at ${{ git.short-sha }}", Span::default(), "").unwrap();
        assert_eq!(t.render(&Fixed).unwrap(), "at abc1234");
        let err = Template::parse("${{ git.shaa }}", Span::default(), "").unwrap_err();
        assert_eq!(err.message, "`git.shaa` is not known");
        assert_eq!(err.hint.as_deref(), Some("did you mean `git.sha`?"));
    }

    #[test]
    fn renders_references_and_literals() {
        let t = Template::parse(
            "a=${{ env.A }} o=${{steps.s.outputs.o}}!",
            Span::default(),
            "",
        )
        .unwrap();
        assert_eq!(t.render(&Fixed).unwrap(), "a=1 o=out!");
        assert_eq!(t.references().count(), 2);
    }

    #[test]
    fn missing_value_names_the_expression() {
        let t = Template::parse("${{ env.B }}", Span::default(), "").unwrap();
        assert_eq!(t.render(&Fixed).unwrap_err(), "`${{ env.B }}` has no value");
    }

    #[test]
    fn unsupported_expression_points_inside_braces() {
        let source = "run: echo ${{ github.sha }}\n";
        let span = Span::from_offset(source, 5, 22);
        let err = Template::parse("echo ${{ github.sha }}", span, source).unwrap_err();
        assert_eq!(err.message, "unsupported expression `github.sha`");
        assert_eq!(err.span.unwrap().col, 15);
    }

    #[test]
    fn unterminated_expression_is_an_error() {
        let err = Template::parse("${{ env.A", Span::default(), "${{ env.A").unwrap_err();
        assert!(err.message.contains("unterminated"));
    }

    #[test]
    fn plain_text_is_one_literal() {
        let t = Template::parse("", Span::default(), "").unwrap();
        assert_eq!(t.parts, vec![Part::Lit(String::new())]);
    }
}
