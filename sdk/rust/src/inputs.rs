// SPDX-License-Identifier: Apache-2.0
//! Inputs as the step receives them, checked against its declaration.

use crate::Error;
use crate::info::{Info, Kind};

/// The step's inputs, every declared one with a value or default present.
#[derive(Debug, Clone)]
pub struct Inputs {
    values: Vec<(String, String, Kind)>,
}

impl Inputs {
    /// Checks `given` against the declaration (ferry checks too; a step run by another host
    /// gets the same guarantees). Returns every problem at once.
    pub fn new(info: &Info, given: Vec<(String, String)>) -> Result<Inputs, String> {
        let mut problems = Vec::new();
        for (name, _) in &given {
            if !info.inputs.iter().any(|i| &i.name == name) {
                problems.push(format!("unknown input `{name}`"));
            }
        }
        let mut values = Vec::new();
        for spec in &info.inputs {
            let value = given
                .iter()
                .find(|(n, _)| n == &spec.name)
                .map(|(_, v)| v.clone())
                .or_else(|| spec.default.clone());
            match value {
                Some(value) => match check(spec.kind, &value) {
                    Ok(()) => values.push((spec.name.clone(), value, spec.kind)),
                    Err(expected) => problems.push(format!(
                        "input `{}` must be {expected}, got `{value}`",
                        spec.name
                    )),
                },
                None if spec.required => {
                    problems.push(format!("input `{}` is required", spec.name))
                }
                None => {}
            }
        }
        if problems.is_empty() {
            Ok(Inputs { values })
        } else {
            Err(problems.join("; "))
        }
    }

    /// The raw text of an input, if it has a value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, ..)| n == name)
            .map(|(_, v, _)| v.as_str())
    }

    fn value(&self, name: &str, kind: Kind) -> Result<&str, Error> {
        match self.values.iter().find(|(n, ..)| n == name) {
            Some((_, value, k)) if *k == kind => Ok(value),
            Some((_, _, k)) => Err(Error::InvalidInput(format!(
                "input `{name}` is declared as {k:?}, not {kind:?}; this is a bug in the step"
            ))),
            None => Err(Error::InvalidInput(format!("input `{name}` has no value"))),
        }
    }

    /// A string input; an error when it has no value.
    pub fn string(&self, name: &str) -> Result<String, Error> {
        self.value(name, Kind::String).map(str::to_string)
    }

    /// A string input that may be absent.
    pub fn optional(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_string)
    }

    /// A `boolean` input's value.
    pub fn boolean(&self, name: &str) -> Result<bool, Error> {
        self.value(name, Kind::Boolean).map(|v| v == "true")
    }

    /// A `number` input's value.
    pub fn number(&self, name: &str) -> Result<f64, Error> {
        self.value(name, Kind::Number)
            .map(|v| v.trim().parse().unwrap_or_default())
    }

    /// An `integer` input's value.
    pub fn integer(&self, name: &str) -> Result<i64, Error> {
        self.value(name, Kind::Integer)
            .map(|v| v.trim().parse().unwrap_or_default())
    }

    /// A `list` input's items.
    pub fn list(&self, name: &str) -> Result<Vec<String>, Error> {
        self.value(name, Kind::List)
            .map(|v| parse_list(v).unwrap_or_default())
    }
}

fn check(kind: Kind, value: &str) -> Result<(), &'static str> {
    let ok = match kind {
        Kind::String => true,
        Kind::Boolean => matches!(value, "true" | "false"),
        Kind::Number => value.trim().parse::<f64>().is_ok(),
        Kind::Integer => value.trim().parse::<i64>().is_ok(),
        Kind::List => parse_list(value).is_some(),
    };
    if ok {
        Ok(())
    } else {
        Err(match kind {
            Kind::String => "a string",
            Kind::Boolean => "`true` or `false`",
            Kind::Number => "a number",
            Kind::Integer => "a whole number",
            Kind::List => "a list of strings",
        })
    }
}

/// Parses the JSON array of strings ferry passes for list inputs.
fn parse_list(text: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix('[')?.strip_suffix(']')?.trim();
    let mut items = Vec::new();
    let mut chars = inner.chars().peekable();
    while chars.peek().is_some() {
        if chars.next()? != '"' {
            return None;
        }
        let mut item = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => item.push('\n'),
                    't' => item.push('\t'),
                    'r' => item.push('\r'),
                    'u' => {
                        let hex: String = (0..4).filter_map(|_| chars.next()).collect();
                        item.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    other => item.push(other),
                },
                c => item.push(c),
            }
        }
        items.push(item);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => break,
            Some(',') => {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
            }
            Some(_) => return None,
        }
    }
    Some(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::Input;

    fn info() -> Info {
        Info::new("t", "1", "test")
            .input(Input::string("name", "").required())
            .input(Input::boolean("loud", ""))
            .input(Input::number("count", "").default("2"))
            .input(Input::list("paths", ""))
            .input(Input::integer("max", "").default("3"))
    }

    #[test]
    fn an_integer_is_a_whole_number() {
        let inputs = Inputs::new(&info(), vec![("name".into(), "x".into())]).unwrap();
        assert_eq!(inputs.integer("max").unwrap(), 3);
        for bad in ["1.5", "1e3", "", "3 apples", "99999999999999999999"] {
            let with = vec![("name".into(), "x".into()), ("max".into(), bad.into())];
            let err = Inputs::new(&info(), with).unwrap_err();
            assert!(
                err.contains("input `max` must be a whole number"),
                "{bad}: {err}"
            );
        }
        let with = vec![("name".into(), "x".into()), ("max".into(), " -7 ".into())];
        assert_eq!(
            Inputs::new(&info(), with).unwrap().integer("max").unwrap(),
            -7
        );
    }

    #[test]
    fn applies_defaults_and_types() {
        let inputs = Inputs::new(&info(), vec![("name".into(), "x".into())]).unwrap();
        assert_eq!(inputs.string("name").unwrap(), "x");
        assert!(!inputs.boolean("loud").unwrap());
        assert_eq!(inputs.number("count").unwrap(), 2.0);
        assert!(inputs.list("paths").is_err(), "no value and no default");
        assert!(inputs.string("loud").is_err(), "declared as a boolean");
    }

    #[test]
    fn reports_every_problem() {
        let err = Inputs::new(
            &info(),
            vec![("loud".into(), "yes".into()), ("nmae".into(), "x".into())],
        )
        .unwrap_err();
        assert!(err.contains("unknown input `nmae`"), "{err}");
        assert!(
            err.contains("input `loud` must be `true` or `false`"),
            "{err}"
        );
        assert!(err.contains("input `name` is required"), "{err}");
    }

    #[test]
    fn parses_lists_as_ferry_sends_them() {
        assert_eq!(
            parse_list(r#"["a", "b \"c\"", "\u00e9"]"#).unwrap(),
            ["a", "b \"c\"", "é"]
        );
        assert_eq!(parse_list("[]").unwrap(), Vec::<String>::new());
        assert!(parse_list("[a]").is_none());
        assert!(parse_list("nope").is_none());
    }
}
