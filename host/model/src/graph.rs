//! The job graph: which jobs run, in what order, and renderings of it.

use crate::pipeline::{Instance, Job, Matrix, Pipeline};
use std::fmt::Write as _;

/// The jobs selected for a run, each with the indices of the jobs it needs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub pipeline: Pipeline,
    /// Indices into `pipeline.jobs`, in a topological order.
    pub order: Vec<usize>,
    /// For each job index, the indices it needs (only selected jobs).
    pub needs: Vec<Vec<usize>>,
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("no job `{0}` in the pipeline")]
    UnknownJob(String, Option<String>),
}

impl PlanError {
    /// A suggestion, if any.
    pub fn hint(&self) -> Option<&str> {
        match self {
            PlanError::UnknownJob(_, hint) => hint.as_deref(),
        }
    }
}

impl Plan {
    /// Plans every job, or only `only` and what they need (transitively). A matrix job
    /// becomes one job per combination, named `job (a, b)`; `needs` and `--job` naming it
    /// mean all of them.
    pub fn new(mut pipeline: Pipeline, only: &[String]) -> Result<Plan, PlanError> {
        pipeline.jobs = expand(std::mem::take(&mut pipeline.jobs));
        let jobs = &pipeline.jobs;
        let indices_of = |name: &str| -> Vec<usize> {
            (0..jobs.len())
                .filter(|&i| {
                    jobs[i].id == name || jobs[i].instance.as_ref().is_some_and(|m| m.group == name)
                })
                .collect()
        };
        let mut selected = vec![only.is_empty(); jobs.len()];
        let mut stack = Vec::new();
        for id in only {
            let found = indices_of(id);
            if found.is_empty() {
                let ids = jobs.iter().map(|j| j.id.as_str());
                let hint = crate::diag::suggest(id, ids).map(|s| format!("did you mean `{s}`?"));
                return Err(PlanError::UnknownJob(id.clone(), hint));
            }
            stack.extend(found);
        }
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut selected[i], true) {
                stack.extend(jobs[i].needs.iter().flat_map(|n| indices_of(n)));
            }
        }
        let needs: Vec<Vec<usize>> = jobs
            .iter()
            .map(|j| j.needs.iter().flat_map(|n| indices_of(n)).collect())
            .collect();
        // Kahn's algorithm in file order, so the order is stable and readable.
        let mut order = Vec::new();
        let mut placed = vec![false; pipeline.jobs.len()];
        while order.len() < selected.iter().filter(|s| **s).count() {
            let next = (0..pipeline.jobs.len())
                .find(|&i| selected[i] && !placed[i] && needs[i].iter().all(|&n| placed[n]));
            match next {
                Some(i) => {
                    placed[i] = true;
                    order.push(i);
                }
                // Validation rejects cycles; stop rather than loop if one slipped through.
                None => break,
            }
        }
        Ok(Plan {
            pipeline,
            order,
            needs,
        })
    }

    /// A node id Mermaid accepts: the job id, or `j<index>` for a matrix combination.
    fn node(&self, i: usize) -> String {
        let job = &self.pipeline.jobs[i];
        match job.instance {
            None => job.id.clone(),
            Some(_) => format!("j{i}"),
        }
    }

    /// A job's label: its name, a matrix made at run time, then its condition, each made
    /// safe by `quote` and joined by `newline`.
    fn label(&self, i: usize, newline: &str, quote: impl Fn(&str) -> String) -> String {
        let job = &self.pipeline.jobs[i];
        let mut lines = vec![quote(&job.name)];
        if job.matrix_at_run.is_some() {
            lines.push(quote("matrix: made when its needs end"));
        }
        if let Some(c) = &job.condition {
            lines.push(quote(&format!("if: {}", c.text)));
        }
        lines.join(newline)
    }

    /// The graph as a Mermaid flowchart.
    pub fn mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for &i in &self.order {
            let label = self.label(i, "<br/>", |s| s.replace('"', "#quot;"));
            let _ = writeln!(out, "    {}[\"{label}\"]", self.node(i));
        }
        for &i in &self.order {
            for &n in &self.needs[i] {
                let _ = writeln!(out, "    {} --> {}", self.node(n), self.node(i));
            }
        }
        out
    }

    /// The graph in Graphviz dot.
    pub fn dot(&self) -> String {
        let mut out = format!(
            "digraph \"{}\" {{\n    rankdir=LR;\n",
            escape(&self.pipeline.name, '"')
        );
        for &i in &self.order {
            let job = &self.pipeline.jobs[i];
            let _ = writeln!(
                out,
                "    \"{}\" [label=\"{}\"];",
                escape(&job.id, '"'),
                self.label(i, "\\n", |s| escape(s, '"'))
            );
        }
        for &i in &self.order {
            for &n in &self.needs[i] {
                let _ = writeln!(
                    out,
                    "    \"{}\" -> \"{}\";",
                    escape(&self.pipeline.jobs[n].id, '"'),
                    escape(&self.pipeline.jobs[i].id, '"')
                );
            }
        }
        out.push_str("}\n");
        out
    }
}

/// One job per combination of each matrix job, in place of it.
fn expand(jobs: Vec<Job>) -> Vec<Job> {
    let mut out = Vec::with_capacity(jobs.len());
    for mut job in jobs {
        match job.matrix.take() {
            Some(matrix) => out.extend(instances(&job, matrix)),
            None => out.push(job),
        }
    }
    out
}

/// The jobs of a matrix job, one per combination: `job (linux, 3.12)`. Used when the plan
/// is made, and by the run for a matrix known only at run time.
pub fn instances(job: &Job, matrix: Matrix) -> Vec<Job> {
    let mut out = Vec::with_capacity(matrix.combinations.len());
    for values in matrix.combinations {
        let shown = Matrix::shown(&values);
        let mut instance = job.clone();
        instance.matrix = None;
        instance.matrix_at_run = None;
        for step in &mut instance.steps {
            // Validation rendered these for every combination already.
            if let Ok(p) = step.permissions.for_combination(&values) {
                step.permissions = p;
            }
        }
        instance.id = format!("{} ({shown})", job.id);
        // A name that reads the matrix says which combination it is by itself.
        let mut scope = crate::expr::Scope::default();
        scope.contexts.insert(
            "matrix",
            serde_json::Value::Object(values.iter().cloned().collect()),
        );
        instance.name = match job.name_template.as_ref().map(|t| t.render(&scope)) {
            Some(Ok(name)) => name,
            _ => format!("{} ({shown})", job.name),
        };
        instance.instance = Some(Instance {
            group: job.id.clone(),
            values,
            fail_fast: matrix.fail_fast,
            max_parallel: matrix.max_parallel,
        });
        out.push(instance);
    }
    out
}

fn escape(s: &str, quote: char) -> String {
    s.replace('\\', "\\\\")
        .replace(quote, &format!("\\{quote}"))
}
