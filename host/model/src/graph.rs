//! The job graph: which jobs run, in what order, and renderings of it.

use crate::pipeline::Pipeline;
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
    /// Plans every job, or only `only` and what they need (transitively).
    pub fn new(pipeline: Pipeline, only: &[String]) -> Result<Plan, PlanError> {
        let index_of = |id: &str| pipeline.jobs.iter().position(|j| j.id == id);
        let mut selected = vec![only.is_empty(); pipeline.jobs.len()];
        let mut stack = Vec::new();
        for id in only {
            match index_of(id) {
                Some(i) => stack.push(i),
                None => {
                    let ids = pipeline.jobs.iter().map(|j| j.id.as_str());
                    let hint =
                        crate::diag::suggest(id, ids).map(|s| format!("did you mean `{s}`?"));
                    return Err(PlanError::UnknownJob(id.clone(), hint));
                }
            }
        }
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut selected[i], true) {
                stack.extend(pipeline.jobs[i].needs.iter().filter_map(|n| index_of(n)));
            }
        }
        let needs: Vec<Vec<usize>> = pipeline
            .jobs
            .iter()
            .map(|j| j.needs.iter().filter_map(|n| index_of(n)).collect())
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

    /// The graph as a Mermaid flowchart.
    pub fn mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        for &i in &self.order {
            let job = &self.pipeline.jobs[i];
            let _ = writeln!(out, "    {}[\"{}\"]", job.id, escape(&job.name, '"'));
        }
        for &i in &self.order {
            for &n in &self.needs[i] {
                let _ = writeln!(
                    out,
                    "    {} --> {}",
                    self.pipeline.jobs[n].id, self.pipeline.jobs[i].id
                );
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
                job.id,
                escape(&job.name, '"')
            );
        }
        for &i in &self.order {
            for &n in &self.needs[i] {
                let _ = writeln!(
                    out,
                    "    \"{}\" -> \"{}\";",
                    self.pipeline.jobs[n].id, self.pipeline.jobs[i].id
                );
            }
        }
        out.push_str("}\n");
        out
    }
}

fn escape(s: &str, quote: char) -> String {
    s.replace('\\', "\\\\")
        .replace(quote, &format!("\\{quote}"))
}
