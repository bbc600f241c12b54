//! Dockerfile parsing: instructions with their line, continuation lines, comments, the
//! `escape` directive, JSON and shell forms, and `$VAR` / `${VAR:-default}` substitution.

use std::collections::BTreeMap;

/// One instruction as written, continuation lines joined.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    /// Upper-cased keyword.
    pub keyword: String,
    /// Everything after the keyword, flags included.
    pub rest: String,
    /// 1-based line where the instruction starts.
    pub line: usize,
}

/// A parse or build error at a line of the Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl LineError {
    pub fn new(line: usize, message: impl Into<String>) -> Self {
        LineError {
            line,
            message: message.into(),
        }
    }
}

/// Splits a Dockerfile into instructions.
pub fn parse(text: &str) -> Result<Vec<Instruction>, LineError> {
    let mut escape = '\\';
    let mut directives_done = false;
    let mut instructions = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = raw.trim();
        if !directives_done && current.is_none() {
            if let Some((key, value)) = trimmed.strip_prefix('#').and_then(|d| d.split_once('=')) {
                if key.trim().eq_ignore_ascii_case("escape") {
                    escape = match value.trim() {
                        "`" => '`',
                        "\\" => '\\',
                        other => {
                            return Err(LineError::new(
                                line_no,
                                format!("invalid escape directive `{other}`: use `\\` or `` ` ``"),
                            ));
                        }
                    };
                }
                continue;
            }
            directives_done = true;
        }
        if trimmed.starts_with('#') {
            continue;
        }
        if trimmed.is_empty() && current.is_none() {
            continue;
        }
        let (continued, body) = match trimmed.strip_suffix(escape) {
            Some(body) => (true, body),
            None => (false, trimmed),
        };
        match &mut current {
            Some((_, text)) => {
                text.push(' ');
                text.push_str(body.trim());
                let kept = text.trim_end().len();
                text.truncate(kept);
            }
            None => current = Some((line_no, body.trim_end().to_string())),
        }
        if !continued {
            let (line, text) = current.take().unwrap_or_default();
            instructions.push(split_keyword(line, &text)?);
        }
    }
    if let Some((line, text)) = current {
        instructions.push(split_keyword(line, &text)?);
    }
    if let Some(first) = instructions
        .iter()
        .find(|i| i.keyword != "ARG")
        .filter(|i| i.keyword != "FROM")
    {
        return Err(LineError::new(
            first.line,
            format!(
                "the first instruction must be `FROM`, found `{}`",
                first.keyword
            ),
        ));
    }
    Ok(instructions)
}

fn split_keyword(line: usize, text: &str) -> Result<Instruction, LineError> {
    let text = text.trim();
    let (keyword, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    if rest.trim_start().starts_with("<<") {
        return Err(LineError::new(
            line,
            "heredocs (`<<EOF`) are not supported: put the content in a file and `COPY` it",
        ));
    }
    Ok(Instruction {
        keyword: keyword.to_ascii_uppercase(),
        rest: rest.trim().to_string(),
        line,
    })
}

/// Leading `--name=value` flags and what follows them.
pub fn flags(rest: &str) -> (Vec<(String, String)>, &str) {
    let mut flags = Vec::new();
    let mut rest = rest.trim_start();
    while let Some(after) = rest.strip_prefix("--") {
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let flag = &after[..end];
        let (name, value) = flag.split_once('=').unwrap_or((flag, ""));
        flags.push((name.to_string(), value.to_string()));
        rest = after[end..].trim_start();
    }
    (flags, rest)
}

/// The JSON array form (`["a", "b"]`), if `rest` is one.
pub fn json_array(rest: &str) -> Option<Vec<String>> {
    let trimmed = rest.trim();
    if !trimmed.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(trimmed).ok()
}

/// Splits on whitespace, honouring double and single quotes and backslash escapes.
pub fn words(text: &str) -> Result<Vec<String>, String> {
    lex(text, true)
}

/// The text with its quotes and escapes removed and its whitespace kept, as Docker reads
/// the value of the legacy `ENV key "a value"` and `LABEL key "a value"`.
pub fn unquote(text: &str) -> Result<String, String> {
    Ok(lex(text, false)?.concat())
}

/// Words of `text`; with `split` false, whitespace outside quotes belongs to the one word.
fn lex(text: &str, split: bool) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if split && c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.push(c),
            (_, '\\') => {
                in_word = true;
                match chars.next() {
                    Some(next) => word.push(next),
                    None => word.push('\\'),
                }
            }
            (_, c) => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if quote.is_some() {
        return Err(format!("unterminated quote in `{text}`"));
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `KEY=value KEY2="two words"` pairs, or the legacy `KEY value` form of `ENV` and `LABEL`.
pub fn pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let first = text.split_whitespace().next().unwrap_or_default();
    if !first.contains('=') {
        let (key, value) = text
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("expected `KEY=value`, found `{}`", text.trim()))?;
        return Ok(vec![(key.to_string(), unquote(value.trim())?)]);
    }
    words(text)?
        .into_iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("expected `KEY=value`, found `{w}`"))
        })
        .filter(|p| !matches!(p, Ok((k, _)) if k.is_empty()))
        .collect()
}

/// Replaces `$NAME`, `${NAME}`, `${NAME:-default}` and `${NAME:+alternative}`; `\$` stays a
/// literal `$`. Unknown names become empty, as in Docker.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        if chars.get(i + 1) == Some(&'{') {
            let Some(close) = chars[i..].iter().position(|&c| c == '}') else {
                return Err(format!("missing `}}` in `{text}`"));
            };
            let inner: String = chars[i + 2..i + close].iter().collect();
            let (name, op, word) = if let Some((n, w)) = inner.split_once(":-") {
                (n, "-", w)
            } else if let Some((n, w)) = inner.split_once(":+") {
                (n, "+", w)
            } else {
                (inner.as_str(), "", "")
            };
            let value = vars.get(name).filter(|v| !v.is_empty());
            match (op, value) {
                ("-", None) => out.push_str(&substitute(word, vars)?),
                ("+", Some(_)) => out.push_str(&substitute(word, vars)?),
                ("+", None) => {}
                (_, value) => out.push_str(value.map(String::as_str).unwrap_or("")),
            }
            i += close + 1;
            continue;
        }
        let name: String = chars[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
            .collect();
        if name.is_empty() {
            out.push('$');
            i += 1;
            continue;
        }
        out.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
        i += 1 + name.len();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legacy_form_loses_its_quotes_as_in_docker() {
        let pair = |text: &str| pairs(text).unwrap().remove(0);
        assert_eq!(
            pair("MY_NAME \"John Doe\""),
            ("MY_NAME".into(), "John Doe".into())
        );
        assert_eq!(pair("KEY 'a  b'"), ("KEY".into(), "a  b".into()));
        assert_eq!(pair("KEY a\\ b  c"), ("KEY".into(), "a b  c".into()));
        assert_eq!(
            pair("KEY plain value"),
            ("KEY".into(), "plain value".into())
        );
        assert!(pairs("KEY \"open").is_err());
    }

    #[test]
    fn joins_continuations_and_skips_comments() {
        let text = "# syntax=docker/dockerfile:1\nFROM scratch AS base\n\n# a comment\nCOPY a \\\n  # inside\n  b /dst/\nENV A=1 \\\n    B=2\n";
        let got = parse(text).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].keyword, "COPY");
        assert_eq!(got[1].rest, "a b /dst/");
        assert_eq!(got[1].line, 5);
        assert_eq!(got[2].rest, "A=1 B=2");
    }

    #[test]
    fn the_escape_directive_changes_the_continuation_character() {
        let got = parse("# escape=`\nFROM scratch\nCOPY a `\n  b\n").unwrap();
        assert_eq!(got[1].rest, "a b");
    }

    #[test]
    fn something_before_from_is_an_error_at_its_line() {
        let err = parse("ARG X=1\n\nCOPY a b\n").unwrap_err();
        assert_eq!(err.line, 3);
    }

    #[test]
    fn substitutes_variables_like_docker() {
        let vars = BTreeMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(
            substitute("$A/${A}/${B:-d}/${A:+y}/\\$A", &vars).unwrap(),
            "x/x/d/y/$A"
        );
    }

    #[test]
    fn reads_pairs_in_both_forms() {
        assert_eq!(
            pairs("A=1 B=\"two words\" C=three\\ more").unwrap(),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "three more".into())
            ]
        );
        assert_eq!(
            pairs("A one two").unwrap(),
            vec![("A".into(), "one two".into())]
        );
    }

    #[test]
    fn reads_flags() {
        let (flags, rest) = flags("--from=build --chmod=755 a /b");
        assert_eq!(flags.len(), 2);
        assert_eq!(rest, "a /b");
    }
}
