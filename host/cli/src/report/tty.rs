//! The live terminal view: finished steps scroll above, a board of running jobs redraws
//! below with elapsed times; a failed step shows the end of its log.

use super::{RunReporter, failure_label, ms, out, summary};
use crate::report::style::Style;
use ferry_engine::RunResult;
use ferry_engine::event::{Event, Reporter, Status};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines of a failed step's log shown under it.
const TAIL: usize = 15;
const SPINNER: &[char] = &['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

pub struct Tty {
    style: Style,
    state: Mutex<State>,
    done: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Running step per job: name, position, started.
    running: BTreeMap<String, (String, usize, usize, Instant)>,
    steps_per_job: HashMap<String, usize>,
    tails: HashMap<(String, String), VecDeque<String>>,
    pending: Vec<String>,
    board_lines: usize,
    frame: usize,
}

impl Tty {
    pub fn start(style: Style) -> Arc<dyn RunReporter> {
        let tty = Arc::new(Tty {
            style,
            state: Mutex::new(State::default()),
            done: AtomicBool::new(false),
        });
        let ticker = tty.clone();
        std::thread::spawn(move || {
            while !ticker.done.load(Ordering::Relaxed) {
                ticker.redraw();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        tty
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn redraw(&self) {
        let mut state = self.lock();
        self.draw(&mut state, true);
    }

    fn draw(&self, state: &mut State, board: bool) {
        let s = &self.style;
        let mut frame = String::new();
        if state.board_lines > 0 {
            frame.push_str(&format!("\x1b[{}A\x1b[J", state.board_lines));
        }
        for line in state.pending.drain(..) {
            frame.push_str(&line);
            frame.push('\n');
        }
        state.board_lines = 0;
        if board {
            state.frame += 1;
            let spin = SPINNER[state.frame % SPINNER.len()];
            for (job, (step, index, total, started)) in &state.running {
                frame.push_str(&format!(
                    "{} {} › {} {} {}\n",
                    s.cyan(&spin.to_string()),
                    s.bold(job),
                    step,
                    s.dim(&format!("({}/{total})", index + 1)),
                    s.dim(&ms(started.elapsed().as_secs_f64() * 1000.0))
                ));
                state.board_lines += 1;
            }
        }
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(frame.as_bytes());
        let _ = stdout.flush();
    }
}

impl Reporter for Tty {
    fn event(&self, event: &Event) {
        let s = &self.style;
        let mut state = self.lock();
        match event {
            Event::RunStarted { pipeline, jobs, .. } => {
                for job in jobs {
                    state.steps_per_job.insert(job.id.clone(), job.steps.len());
                }
                state.pending.push(s.bold(&format!("▶ {pipeline}")));
            }
            Event::StepStarted {
                job,
                step: _,
                index,
                name,
            } => {
                let total = state.steps_per_job.get(&**job).copied().unwrap_or(0);
                state.running.insert(
                    job.to_string(),
                    (name.clone(), *index, total, Instant::now()),
                );
            }
            Event::Log {
                job, step, text, ..
            } => {
                let tail = state
                    .tails
                    .entry((job.to_string(), step.to_string()))
                    .or_default();
                if tail.len() == TAIL {
                    tail.pop_front();
                }
                tail.push_back(text.clone());
            }
            Event::Annotation {
                job,
                step,
                annotation,
            } => {
                let line = format!(
                    "  {} {}",
                    s.dim(&format!("{job}/{step}")),
                    ferry_engine::record::annotation_line(annotation)
                );
                state.pending.push(line);
            }
            Event::StepFinished {
                job,
                step,
                status,
                failure,
                message,
                duration_ms,
                cached,
            } => {
                let name = state
                    .running
                    .remove(&**job)
                    .map(|(name, ..)| name)
                    .unwrap_or_else(|| step.to_string());
                let tail = state.tails.remove(&(job.to_string(), step.to_string()));
                match (status, cached) {
                    (Status::Passed, Some(c)) => state.pending.push(format!(
                        "{} {} › {name} {}",
                        s.green("✓"),
                        job,
                        s.dim(&format!("cached, saved {}", ms(c.saved_ms)))
                    )),
                    (Status::Passed, None) => state.pending.push(format!(
                        "{} {} › {name} {}",
                        s.green("✓"),
                        job,
                        s.dim(&ms(*duration_ms))
                    )),
                    (Status::Skipped, _) => state.pending.push(format!(
                        "{} {} › {name} {}",
                        s.dim("-"),
                        job,
                        s.dim("skipped")
                    )),
                    (Status::Cancelled, _) => state.pending.push(format!(
                        "{} {} › {name} {}",
                        s.yellow("■"),
                        job,
                        s.yellow("cancelled")
                    )),
                    _ => {
                        state.pending.push(format!(
                            "{} {} › {name} {} {}",
                            s.red("✗"),
                            s.bold(job),
                            s.red(failure_label(*failure)),
                            s.dim(&ms(*duration_ms))
                        ));
                        for line in tail.into_iter().flatten() {
                            state.pending.push(format!("    {}", s.dim(&line)));
                        }
                        for line in message.as_deref().unwrap_or("").lines() {
                            state.pending.push(format!("    {}", s.red(line)));
                        }
                    }
                }
            }
            Event::MatrixExpanded { job, jobs } => {
                for j in jobs {
                    state.steps_per_job.insert(j.id.clone(), j.steps.len());
                }
                let line = format!(
                    "{} {} {}",
                    s.cyan("▸"),
                    s.bold(job),
                    super::matrix_line(jobs)
                );
                state.pending.push(line);
            }
            Event::Notice { job, text } => state.pending.push(match job {
                Some(job) => format!("{} {} {text}", s.yellow("⏸"), s.bold(job)),
                None => format!("{} {text}", s.yellow("⏸")),
            }),
            _ => {}
        }
    }
}

impl RunReporter for Tty {
    fn finish(&self, result: &RunResult) {
        self.done.store(true, Ordering::Relaxed);
        {
            let mut state = self.lock();
            state.running.clear();
            self.draw(&mut state, false);
        }
        // What steps wrote for people, after the board and before the verdict, as GitHub
        // shows summaries under the run.
        for (job, j) in &result.summary.jobs {
            for step in &j.steps {
                if let Some(markdown) = &step.summary {
                    let title = format!("── {job} › {} ──", step.name);
                    out("");
                    out(&self.style.bold(&title));
                    for line in markdown.lines() {
                        out(line);
                    }
                }
            }
        }
        summary(&self.style, result);
    }
}
