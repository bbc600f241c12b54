//! Checks a pipeline against the plugins it uses before anything runs: every plugin loads,
//! every step's inputs match its `describe()`, every declared need is granted, and every
//! host program a step's inputs name (`preset: clippy`, `command: ruff check .`) is granted
//! and, unless an earlier step of the job may change `PATH`, found. Problems come back as
//! diagnostics pointing at the step, all at once.

use crate::grant::{self, Host, StepSite};
use crate::plugin::{PluginInfo, Runs};
use crate::runner::{Sandbox, check_inputs, needs_from_grants};
use ferry_model::{Access, Diagnostic, Pipeline, Program, Step};
use std::collections::BTreeMap;

impl Sandbox {
    /// Loads each plugin once and checks every step that uses it. `host_path` is the `PATH`
    /// programs are found on when the pipeline sets none; `None` checks grants only.
    pub async fn preflight(&self, pipeline: &Pipeline, host_path: Option<&str>) -> Vec<Diagnostic> {
        // Load every distinct plugin at once: each load is an mmap, a link and a
        // `describe()` call, and a pipeline of many plugins should not pay them in a row.
        let mut distinct = Vec::new();
        for step in pipeline.jobs.iter().flat_map(|j| &j.steps) {
            if !distinct.contains(&&step.uses) {
                distinct.push(&step.uses);
            }
        }
        futures_util::future::join_all(distinct.into_iter().map(|uses| self.plugin(uses))).await;
        let mut diagnostics = Vec::new();
        for job in &pipeline.jobs {
            // A step that may write the workspace may also change later steps' `PATH`
            // (`$FERRY_PATH`, a setup step): after one, a program is looked for when it runs.
            let mut path_may_change = false;
            for step in &job.steps {
                let changes_path = step.is_run || step.permissions.workspace == Access::Write;
                let plugin = match self.plugin(&step.uses).await {
                    Ok(plugin) => plugin,
                    Err(e) => {
                        diagnostics.push(
                            Diagnostic::error(format!("cannot load `{}`: {e}", step.uses))
                                .at(step.span)
                                .hint("`uses:` needs a WASI 0.2 component for world `ferry:step/step` or `wasi:cli/command`"),
                        );
                        continue;
                    }
                };
                let given: BTreeMap<String, Option<String>> = step
                    .with
                    .iter()
                    .map(|(k, t)| (k.clone(), t.as_literal().map(str::to_string)))
                    .collect();
                if let Err(problems) = check_inputs(&plugin.info, &given) {
                    for problem in problems {
                        diagnostics.push(
                            Diagnostic::error(format!(
                                "step `{}` of job `{}`: {problem}",
                                step.name, job.id
                            ))
                            .at(step.span)
                            .hint(format!(
                                "see the inputs of `{}` with `ferry plugin inspect {}`",
                                plugin.info.name, step.uses
                            )),
                        );
                    }
                }
                // Only names matter for the check; values are read when the step starts.
                let env: BTreeMap<String, String> = pipeline
                    .env
                    .keys()
                    .chain(job.env.keys())
                    .chain(step.env.keys())
                    .map(|k| (k.clone(), String::new()))
                    .collect();
                let site = StepSite {
                    pipeline,
                    step,
                    job: &job.id,
                };
                let needs = plugin
                    .info
                    .needs
                    .clone()
                    .unwrap_or_else(|| needs_from_grants(step));
                let host = Host {
                    env: &|_| None,
                    path_var: None,
                    workspace: None,
                };
                // Grants the step's own `permissions:` gives that its plugin never asks for
                // are not given to it: a pipeline that means them should hear so. The job's
                // and the pipeline's blocks serve other steps too.
                if let (false, true, Some(declared)) = (
                    step.is_run,
                    step.own_permissions,
                    plugin.info.needs.as_ref(),
                ) {
                    let unused = undeclared(step, declared);
                    if !unused.is_empty() {
                        diagnostics.push(
                            Diagnostic::warning(format!(
                                "step `{}` of job `{}` is granted {}, which `{}` does not ask for: the step does not get it",
                                step.name,
                                job.id,
                                unused.join(", "),
                                plugin.info.name
                            ))
                            .at(step.permissions_span.unwrap_or(step.span))
                            .hint(format!(
                                "remove it, or see what the plugin asks for with `ferry plugin inspect {}`",
                                step.uses
                            )),
                        );
                    }
                }
                if let Err(refusal) = grant::grant(&site, &needs, &env, &BTreeMap::new(), &host) {
                    diagnostics.push(
                        Diagnostic::error(refusal.message)
                            .at(step.span)
                            .hint(refusal.hint),
                    );
                } else if let Some((program, because)) = planned_program(&plugin.info, step) {
                    // What the inputs will make the step run must be granted by name.
                    let planned = grant::Needs {
                        exec: vec![program.clone()],
                        ..needs.clone()
                    };
                    if let Err(refusal) =
                        grant::grant(&site, &planned, &env, &BTreeMap::new(), &host)
                    {
                        diagnostics.push(
                            Diagnostic::error(format!("{} (for `{because}`)", refusal.message))
                                .at(step.span)
                                .hint(refusal.hint),
                        );
                    } else if let Some(missing) =
                        missing_program(&program, pipeline, job, step, host_path)
                            .filter(|_| !path_may_change)
                    {
                        diagnostics.push(
                            Diagnostic::error(format!(
                                "step `{}` of job `{}` runs `{program}` (for `{because}`), which is not on PATH (`{missing}`)",
                                step.name, job.id
                            ))
                            .at(step.span)
                            .hint("install it, put its folder on PATH with the pipeline's `env: PATH`, or add it in an earlier step (a setup step such as `uses: python`, or `$FERRY_PATH`)"),
                        );
                    }
                }
                path_may_change |= changes_path;
            }
        }
        diagnostics
    }
}

/// The list grants of a step that its plugin's declared needs never use, as `key: value`.
/// A need of `*` uses every grant of its key; a granted host is used by a need of that host
/// on any port, and a granted path by a need inside it.
fn undeclared(step: &Step, declared: &grant::Needs) -> Vec<String> {
    let p = &step.permissions;
    let any = |need: &[String]| need.iter().any(|n| n == grant::ANY_PROGRAM);
    let mut out = Vec::new();
    for (key, granted, need) in [
        (
            "env",
            p.env.iter().cloned().collect::<Vec<_>>(),
            &declared.env,
        ),
        (
            "secrets",
            p.secrets.iter().cloned().collect(),
            &declared.secrets,
        ),
        ("exec", p.exec.iter().cloned().collect(), &declared.exec),
    ] {
        if !any(need) {
            out.extend(
                granted
                    .iter()
                    .filter(|g| !need.contains(g))
                    .map(|g| format!("`{key}: {g}`")),
            );
        }
    }
    if !any(&declared.network) {
        for g in &p.network {
            // As the grant is given (`grant::grant`): the same host, on ports that meet.
            let used = declared.network.iter().any(|n| {
                ferry_model::NetworkGrant::parse(n).is_some_and(|n| {
                    n.host == g.host && (g.port.is_none() || n.port.is_none() || g.port == n.port)
                })
            });
            if !used {
                out.push(format!("`network: {g}`"));
            }
        }
    }
    let any_path = declared
        .paths
        .iter()
        .any(|(path, _)| path.as_os_str() == grant::ANY_PROGRAM);
    if !any_path {
        for path in p.paths.keys() {
            if !declared
                .paths
                .iter()
                .any(|(need, _)| need.starts_with(path))
            {
                out.push(format!("`paths: {}`", path.display()));
            }
        }
    }
    out
}

/// The host program a step's inputs name, with the input that named it: the first word of
/// a `command` input (which takes the place of a `choice`), else the program a `choice`
/// input's value picks. Values written with expressions are known only when the step runs.
fn planned_program(info: &PluginInfo, step: &Step) -> Option<(String, String)> {
    let value = |name: &str| match step.with.get(name) {
        Some(template) => template.as_literal().map(str::to_string),
        None => info
            .inputs
            .iter()
            .find(|i| i.name == name)
            .and_then(|i| i.default.clone()),
    };
    for input in info.inputs.iter().filter(|i| i.runs == Some(Runs::Command)) {
        if step.with.contains_key(&input.name) {
            let line = value(&input.name)?;
            // A first word with quotes or escapes is the plugin's to split: not guessed at.
            let first = line.split_whitespace().next()?;
            if first.contains(['"', '\'', '\\', '=']) {
                return None;
            }
            let program = Program::of(first)?.to_string();
            return Some((program, format!("{}: {line}", input.name)));
        }
    }
    info.inputs.iter().find_map(|input| {
        let Some(Runs::Choice(pairs)) = &input.runs else {
            return None;
        };
        let chosen = value(&input.name)?;
        let (_, program) = pairs.iter().find(|(v, _)| *v == chosen)?;
        Some((program.clone(), format!("{}: {chosen}", input.name)))
    })
}

/// The `PATH` searched when `program`, a name, is on none of it; `None` when it is found,
/// or is a path (a workspace file is made by the job, an absolute one is checked when run).
fn missing_program(
    program: &str,
    pipeline: &Pipeline,
    job: &ferry_model::Job,
    step: &Step,
    host_path: Option<&str>,
) -> Option<String> {
    if !matches!(Program::of(program)?, Program::Name(_)) {
        return None;
    }
    // The innermost `env: PATH` written as plain text, else the host's.
    let written = [&step.env, &job.env, &pipeline.env]
        .into_iter()
        .find_map(|env| env.get("PATH"));
    let path = match written {
        Some(template) => template.as_literal()?.to_string(),
        None => host_path?.to_string(),
    };
    ferry_engine::os::find_program(program, std::ffi::OsStr::new(&path))
        .is_none()
        .then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{InputSpec, World};

    fn info() -> PluginInfo {
        let input = |name: &str, runs| InputSpec {
            name: name.into(),
            description: String::new(),
            kind: "string".into(),
            default: None,
            required: false,
            runs,
        };
        PluginInfo {
            world: World::Step,
            name: "lint".into(),
            version: "0.1.0".into(),
            description: String::new(),
            inputs: vec![
                input(
                    "preset",
                    Some(Runs::Choice(vec![("clippy".into(), "cargo".into())])),
                ),
                input("command", Some(Runs::Command)),
            ],
            outputs: Vec::new(),
            needs: None,
        }
    }

    fn planned(with: &str) -> Option<(String, String)> {
        let yaml = format!(
            "env: {{ TOOL: cargo }}\njobs:\n  j:\n    steps:\n      - uses: lint\n        with: {with}\n"
        );
        let source = ferry_model::Source::new("ferry.yaml", yaml);
        let pipeline = ferry_model::parse(&source, std::path::Path::new("."), &["lint"]).unwrap();
        planned_program(&info(), &pipeline.jobs[0].steps[0])
    }

    #[test]
    fn the_program_an_input_names_is_known_or_left_to_the_step() {
        assert_eq!(
            planned("{ preset: clippy }"),
            Some(("cargo".into(), "preset: clippy".into()))
        );
        // A command takes the place of the preset.
        assert_eq!(
            planned("{ preset: clippy, command: \"ruff check .\" }"),
            Some(("ruff".into(), "command: ruff check .".into()))
        );
        assert_eq!(
            planned("{ command: \"./tools/lint --all\" }"),
            Some(("tools/lint".into(), "command: ./tools/lint --all".into()))
        );
        // Quoting and assignments are the plugin's to read: not guessed at.
        for command in [
            "{ command: \"'my tool' -x\" }",
            "{ command: 'cargo\" sh\"' }",
            "{ command: \"FOO=1 cargo test\" }",
            "{ command: \"${{ env.TOOL }} --version\" }",
        ] {
            assert_eq!(planned(command), None, "{command}");
        }
        assert_eq!(planned("{ preset: unknown }"), None);
    }
}
