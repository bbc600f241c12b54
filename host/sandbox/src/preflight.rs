//! Checks a pipeline against the plugins it uses before anything runs: every plugin loads,
//! every step's inputs match its `describe()`, every declared need is granted. Problems come
//! back as diagnostics pointing at the step, all at once.

use crate::grant::{self, Host, StepSite};
use crate::runner::{Sandbox, check_inputs, needs_from_grants};
use ferry_model::{Diagnostic, Pipeline};
use std::collections::BTreeMap;

impl Sandbox {
    /// Loads each plugin once and checks every step that uses it.
    pub async fn preflight(&self, pipeline: &Pipeline) -> Vec<Diagnostic> {
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
            for step in &job.steps {
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
                if let Err(refusal) = grant::grant(&site, &needs, &env, &BTreeMap::new(), &host) {
                    diagnostics.push(
                        Diagnostic::error(refusal.message)
                            .at(step.span)
                            .hint(refusal.hint),
                    );
                }
            }
        }
        diagnostics
    }
}
