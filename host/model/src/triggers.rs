//! `on:`: what starts a pipeline. `ferry run` starts it by hand; `ferry serve` reads the
//! rest (pushes, pull requests, schedules).

use crate::diag::Span;
use std::collections::BTreeMap;

/// The `on:` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Triggers {
    pub push: Option<Events>,
    pub pull_request: Option<Events>,
    pub schedule: Vec<Cron>,
    pub manual: Option<Manual>,
}

/// Something that happened to a repository, as a forge's webhook or a poll reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened {
    /// A push of a branch or a tag, with the paths it changed (`None` when unknown, e.g. a
    /// new branch: path filters then let it through).
    Push {
        reference: GitRef,
        paths: Option<Vec<String>>,
    },
    /// A pull request opened or updated, into `base`.
    PullRequest {
        base: String,
        paths: Option<Vec<String>>,
    },
}

/// A pushed reference: `refs/heads/NAME` or `refs/tags/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    Branch(String),
    Tag(String),
}

impl GitRef {
    /// Reads `refs/heads/main` or `refs/tags/v1.2`; `None` for other references.
    pub fn parse(full: &str) -> Option<GitRef> {
        if let Some(branch) = full.strip_prefix("refs/heads/") {
            return Some(GitRef::Branch(branch.to_string()));
        }
        full.strip_prefix("refs/tags/")
            .map(|tag| GitRef::Tag(tag.to_string()))
    }
}

impl Triggers {
    /// Whether the pipeline runs for what happened. As in GitHub Actions: a push of a tag is
    /// filtered by `tags` only and a push of a branch by `branches` only, except that a
    /// push event that names only `branches` ignores tags and one that names only `tags`
    /// ignores branches; `paths` apply to both when the changed paths are known.
    pub fn wants(&self, happened: &Happened) -> bool {
        let paths_ok = |events: &Events, paths: &Option<Vec<String>>| match paths {
            Some(paths) if !events.paths.is_empty() => paths.iter().any(|p| events.paths.allows(p)),
            _ => true,
        };
        match happened {
            Happened::Push { reference, paths } => {
                let Some(events) = &self.push else {
                    return false;
                };
                let (branches, tags) = (!events.branches.is_empty(), !events.tags.is_empty());
                let reference_ok = match reference {
                    GitRef::Branch(b) if branches => events.branches.allows(b),
                    GitRef::Branch(_) => !tags,
                    GitRef::Tag(t) if tags => events.tags.allows(t),
                    GitRef::Tag(_) => !branches,
                };
                reference_ok && paths_ok(events, paths)
            }
            Happened::PullRequest { base, paths } => {
                let Some(events) = &self.pull_request else {
                    return false;
                };
                events.branches.allows(base) && paths_ok(events, paths)
            }
        }
    }
}

/// Which pushes or pull requests count: patterns over branch and tag names and changed paths,
/// each with what is left out (`branches-ignore`, ...). Empty means any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Events {
    pub branches: Filter,
    pub tags: Filter,
    pub paths: Filter,
    /// `pull_request.fork-secrets: true`: runs of pull requests from forks get the
    /// secrets their steps are granted. Off by default: a fork's code is not trusted
    /// with them.
    pub fork_secrets: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Whether `name` passes: it matches an included pattern (or none are given) and no
    /// excluded one. `*` stays within a `/`-separated part, `**` crosses them.
    pub fn allows(&self, name: &str) -> bool {
        let matches = |p: &String| glob(p).is_some_and(|g| g.is_match(name));
        (self.include.is_empty() || self.include.iter().any(matches))
            && !self.exclude.iter().any(matches)
    }
}

fn glob(pattern: &str) -> Option<globset::GlobMatcher> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .ok()
        .map(|g| g.compile_matcher())
}

/// `manual:`: a run started by a person (`ferry run`, `ferry trigger`), with typed inputs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manual {
    pub inputs: BTreeMap<String, ManualInput>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ManualInput {
    pub description: String,
    pub kind: InputKind,
    pub default: Option<String>,
    pub required: bool,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InputKind {
    String,
    Boolean,
    Number,
    /// One of these values.
    Choice(Vec<String>),
}

impl Manual {
    /// The inputs of a run: `given` checked against the declared inputs, defaults filled
    /// in. Every problem is reported.
    pub fn inputs(
        &self,
        given: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, Vec<String>> {
        let mut problems = Vec::new();
        let mut out = BTreeMap::new();
        for name in given.keys().filter(|n| !self.inputs.contains_key(*n)) {
            let known: Vec<String> = self.inputs.keys().map(|k| format!("`{k}`")).collect();
            problems.push(match known.is_empty() {
                true => {
                    format!("unknown input `{name}`: the pipeline's `manual` trigger takes none")
                }
                false => format!(
                    "unknown input `{name}`: the pipeline takes {}",
                    known.join(", ")
                ),
            });
        }
        for (name, input) in &self.inputs {
            let value = match (given.get(name), &input.default) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => d.clone(),
                (None, None) if input.required => {
                    problems.push(format!(
                        "input `{name}` is required: pass `--input {name}=VALUE`"
                    ));
                    continue;
                }
                (None, None) => String::new(),
            };
            if let Err(why) = input.kind.check(&value) {
                problems.push(format!("input `{name}`: {why}"));
                continue;
            }
            out.insert(name.clone(), value);
        }
        match problems.is_empty() {
            true => Ok(out),
            false => Err(problems),
        }
    }
}

impl InputKind {
    /// Whether `value` is one of this kind; why not otherwise.
    pub fn check(&self, value: &str) -> Result<(), String> {
        match self {
            InputKind::String => Ok(()),
            InputKind::Boolean if matches!(value, "true" | "false") => Ok(()),
            InputKind::Boolean => Err(format!("`{value}` is not `true` or `false`")),
            InputKind::Number if value.parse::<f64>().is_ok_and(f64::is_finite) => Ok(()),
            InputKind::Number => Err(format!("`{value}` is not a number")),
            InputKind::Choice(options) if options.iter().any(|o| o == value) => Ok(()),
            InputKind::Choice(options) => Err(format!(
                "`{value}` is not one of {}",
                options
                    .iter()
                    .map(|o| format!("`{o}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// A `schedule:` entry: five cron fields (minute, hour, day of month, month, day of week),
/// in UTC, as GitHub Actions reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    pub text: String,
    pub span: Span,
    /// The values each field allows.
    fields: [Vec<u8>; 5],
    /// Day of month and day of week both restricted: either may match (as cron does).
    either_day: bool,
}

const FIELDS: [(&str, u8, u8); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Cron {
    /// Parses `*`, `*/N`, `A`, `A-B`, `A-B/N` and lists of them, with month and day names.
    pub fn parse(text: &str, span: Span) -> Result<Cron, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "`{text}` has {} fields; a schedule has 5: minute hour day-of-month month day-of-week",
                parts.len()
            ));
        }
        let mut fields: [Vec<u8>; 5] = Default::default();
        for (i, part) in parts.iter().enumerate() {
            let (name, min, max) = FIELDS[i];
            let mut values = Vec::new();
            for item in part.split(',') {
                let (range, step) = match item.split_once('/') {
                    Some((r, s)) => {
                        let step: u8 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                            format!("`{item}` in the {name} field has a bad step `{s}`")
                        })?;
                        (r, step)
                    }
                    None => (item, 1),
                };
                let value = |s: &str| -> Result<u8, String> {
                    let named = match i {
                        3 => MONTHS
                            .iter()
                            .position(|m| s.eq_ignore_ascii_case(m))
                            .map(|p| p as u8 + 1),
                        4 => DAYS
                            .iter()
                            .position(|d| s.eq_ignore_ascii_case(d))
                            .map(|p| p as u8),
                        _ => None,
                    };
                    named
                        .or_else(|| s.parse().ok())
                        .filter(|v| (min..=max).contains(v))
                        .ok_or_else(|| format!("`{s}` is not a {name} ({min}-{max})"))
                };
                let (from, to) = match range {
                    "*" => (min, max),
                    r => match r.split_once('-') {
                        Some((a, b)) => (value(a)?, value(b)?),
                        None if step > 1 => (value(r)?, max),
                        None => {
                            let v = value(r)?;
                            (v, v)
                        }
                    },
                };
                if from > to {
                    return Err(format!("`{range}` in the {name} field runs backwards"));
                }
                values.extend((from..=to).step_by(usize::from(step)));
            }
            if i == 4 {
                // 7 is Sunday too.
                for v in values.iter_mut().filter(|v| **v == 7) {
                    *v = 0;
                }
            }
            values.sort_unstable();
            values.dedup();
            fields[i] = values;
        }
        Ok(Cron {
            text: text.to_string(),
            span,
            either_day: parts[2] != "*" && parts[4] != "*",
            fields,
        })
    }

    /// Whether the schedule fires at this minute (UTC). `weekday` counts from Sunday = 0.
    pub fn fires(&self, minute: u8, hour: u8, day: u8, month: u8, weekday: u8) -> bool {
        let has = |i: usize, v: u8| self.fields[i].contains(&v);
        let day_ok = match self.either_day {
            true => has(2, day) || has(4, weekday),
            false => has(2, day) && has(4, weekday),
        };
        has(0, minute) && has(1, hour) && has(3, month) && day_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(text: &str) -> Result<Cron, String> {
        Cron::parse(text, Span::default())
    }

    #[test]
    fn cron_fields_ranges_steps_names_and_either_day() {
        let nightly = cron("30 3 * * mon-fri").unwrap();
        assert!(nightly.fires(30, 3, 10, 6, 1));
        assert!(!nightly.fires(30, 3, 10, 6, 0), "not on Sunday");
        assert!(!nightly.fires(31, 3, 10, 6, 1));
        let every = cron("*/15 */6 * jan,jul *").unwrap();
        assert!(every.fires(45, 18, 1, 7, 3));
        assert!(!every.fires(40, 18, 1, 7, 3));
        assert!(!every.fires(45, 18, 1, 8, 3));
        // Day of month and day of week both given: either matches, as in cron.
        let either = cron("0 0 1 * 0").unwrap();
        assert!(either.fires(0, 0, 1, 5, 3));
        assert!(either.fires(0, 0, 9, 5, 0));
        assert!(
            cron("0 0 * * 7").unwrap().fires(0, 0, 4, 2, 0),
            "7 is Sunday"
        );
        for (bad, says) in [
            ("* * * *", "has 4 fields"),
            ("60 * * * *", "is not a minute (0-59)"),
            ("* * 0 * *", "is not a day of month (1-31)"),
            ("*/0 * * * *", "bad step"),
            ("5-1 * * * *", "runs backwards"),
            ("* * * foo *", "is not a month"),
        ] {
            let err = cron(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn filters_include_then_exclude() {
        let f = Filter {
            include: vec!["main".into(), "release/**".into()],
            exclude: vec!["release/old-*".into()],
        };
        assert!(f.allows("main"));
        assert!(f.allows("release/1.2/hotfix"));
        assert!(!f.allows("release/old-1"));
        assert!(!f.allows("feature/x"));
        assert!(Filter::default().allows("anything"));
        let only_out = Filter {
            include: vec![],
            exclude: vec!["docs/**".into()],
        };
        assert!(only_out.allows("src/main.rs"));
        assert!(!only_out.allows("docs/a/b.md"));
    }

    #[test]
    fn events_are_filtered_by_branch_tag_and_path() {
        let filter = |include: &[&str], exclude: &[&str]| Filter {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        };
        let push = |r: &str, paths: Option<&[&str]>| Happened::Push {
            reference: GitRef::parse(r).unwrap(),
            paths: paths.map(|p| p.iter().map(|s| s.to_string()).collect()),
        };
        let on = Triggers {
            push: Some(Events {
                branches: filter(&["main", "release/**"], &[]),
                tags: Filter::default(),
                paths: filter(&[], &["docs/**"]),
                fork_secrets: false,
            }),
            pull_request: Some(Events {
                branches: filter(&["main"], &[]),
                ..Events::default()
            }),
            ..Triggers::default()
        };
        assert!(on.wants(&push("refs/heads/main", None)));
        assert!(on.wants(&push("refs/heads/release/1.2", Some(&["src/a.rs"]))));
        assert!(!on.wants(&push("refs/heads/feature", None)));
        assert!(
            !on.wants(&push("refs/tags/v1", None)),
            "only branches named: tags ignored"
        );
        assert!(
            !on.wants(&push("refs/heads/main", Some(&["docs/a.md"]))),
            "only ignored paths"
        );
        assert!(on.wants(&push("refs/heads/main", Some(&["docs/a.md", "src/b.rs"]))));
        let pr = |base: &str| Happened::PullRequest {
            base: base.into(),
            paths: None,
        };
        assert!(on.wants(&pr("main")));
        assert!(!on.wants(&pr("develop")));
        let tags_only = Triggers {
            push: Some(Events {
                tags: filter(&["v*"], &[]),
                ..Events::default()
            }),
            ..Triggers::default()
        };
        assert!(tags_only.wants(&push("refs/tags/v1.0", None)));
        assert!(!tags_only.wants(&push("refs/tags/nightly", None)));
        assert!(
            !tags_only.wants(&push("refs/heads/main", None)),
            "only tags named"
        );
        let any = Triggers {
            push: Some(Events::default()),
            ..Triggers::default()
        };
        assert!(any.wants(&push("refs/heads/x", None)) && any.wants(&push("refs/tags/y", None)));
        assert!(!any.wants(&pr("main")), "no pull_request trigger");
        assert_eq!(GitRef::parse("refs/notes/x"), None);
    }

    #[test]
    fn manual_inputs_are_typed_and_defaulted() {
        let input = |kind, default: Option<&str>, required| ManualInput {
            description: String::new(),
            kind,
            default: default.map(String::from),
            required,
            span: Span::default(),
        };
        let manual = Manual {
            inputs: BTreeMap::from([
                (
                    "target".to_string(),
                    input(
                        InputKind::Choice(vec!["staging".into(), "production".into()]),
                        Some("staging"),
                        true,
                    ),
                ),
                (
                    "debug".to_string(),
                    input(InputKind::Boolean, Some("false"), false),
                ),
                ("count".to_string(), input(InputKind::Number, None, true)),
            ]),
        };
        let given = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let ok = manual.inputs(&given(&[("count", "3")])).unwrap();
        assert_eq!(ok["target"], "staging");
        assert_eq!(ok["debug"], "false");
        let errors = manual
            .inputs(&given(&[
                ("target", "prod"),
                ("debug", "yes"),
                ("extra", "1"),
            ]))
            .unwrap_err();
        let all = errors.join("\n");
        assert!(all.contains("unknown input `extra`"), "{all}");
        assert!(
            all.contains("`prod` is not one of `staging`, `production`"),
            "{all}"
        );
        assert!(all.contains("`yes` is not `true` or `false`"), "{all}");
        assert!(all.contains("input `count` is required"), "{all}");
    }
}
