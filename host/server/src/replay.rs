//! A finished run's events, read back from its record a few at a time. The record keeps
//! log lines in one file per step rather than among the events, so each step's lines are
//! put back as `log` events just before its `step-finished`. A viewer holds two open files
//! and one batch of lines, however long the run's logs are.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Longer lines are cut here (and say so): one line never costs a viewer more.
pub const MAX_LINE: usize = 64 << 10;

/// Events read per batch, at most.
pub const BATCH: usize = 256;

/// Bytes of events read per batch, at most (one long event may pass it): what a viewer
/// who stops reading holds.
pub const BATCH_BYTES: usize = 256 << 10;

pub struct Replay {
    dir: PathBuf,
    events: Option<BufReader<File>>,
    /// Steps' log files not yet replayed, by job and step key.
    logs: BTreeMap<(String, String), String>,
    /// The log being replayed, and the `step-finished` event to send after it.
    log: Option<(String, String, BufReader<File>)>,
    held: Option<String>,
}

impl Replay {
    /// The replay of the record in `dir`; an empty one when it has none.
    pub fn open(dir: &Path) -> Replay {
        Replay {
            dir: dir.to_path_buf(),
            events: File::open(dir.join("events.jsonl"))
                .ok()
                .map(BufReader::new),
            logs: step_logs(dir),
            log: None,
            held: None,
        }
    }

    /// Up to [`BATCH`] events or [`BATCH_BYTES`]; none when the replay is over. Reads
    /// files: call it off the async runtime.
    pub fn next_batch(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < BATCH && bytes < BATCH_BYTES {
            match self.next_event() {
                Some(event) => {
                    bytes += event.len();
                    out.push(event);
                }
                None => break,
            }
        }
        out
    }

    fn next_event(&mut self) -> Option<String> {
        loop {
            if let Some((job, step, reader)) = &mut self.log {
                match read_line(reader) {
                    Some(line) => return Some(log_event(job, step, &line)),
                    None => {
                        self.log = None;
                        if let Some(held) = self.held.take() {
                            return Some(held);
                        }
                        continue;
                    }
                }
            }
            if let Some(reader) = &mut self.events {
                let Some(line) = read_line(reader) else {
                    self.events = None;
                    continue;
                };
                if let Ok(event) = serde_json::from_str::<Value>(&line)
                    && event["type"] == "step-finished"
                {
                    let key = (
                        event["job"].as_str().unwrap_or_default().to_string(),
                        event["step"].as_str().unwrap_or_default().to_string(),
                    );
                    if let Some(log) = self.logs.remove(&key)
                        && let Ok(file) = File::open(self.dir.join(log))
                    {
                        self.log = Some((key.0, key.1, BufReader::new(file)));
                        self.held = Some(line);
                        continue;
                    }
                }
                return Some(line);
            }
            // Steps a stopped server never finished still have what they said.
            let ((job, step), log) = self.logs.pop_first()?;
            if let Ok(file) = File::open(self.dir.join(log)) {
                self.log = Some((job, step, BufReader::new(file)));
            }
        }
    }
}

/// One line without its newline, cut at [`MAX_LINE`]; `None` at the end of the file.
fn read_line(reader: &mut impl BufRead) -> Option<String> {
    let mut bytes = Vec::new();
    let read = reader
        .by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut bytes)
        .ok()?;
    if read == 0 {
        return None;
    }
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    } else if bytes.len() == MAX_LINE {
        // Skip the rest of the long line without keeping it.
        let mut rest = Vec::new();
        loop {
            rest.clear();
            match reader
                .by_ref()
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut rest)
            {
                Ok(0) | Err(_) => break,
                Ok(_) if rest.last() == Some(&b'\n') => break,
                Ok(_) => {}
            }
        }
        bytes.extend_from_slice(" … (line cut)".as_bytes());
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// A step's log line as the event the live view sent for it.
fn log_event(job: &str, step: &str, line: &str) -> String {
    let event = match line.strip_prefix("▸ ") {
        Some(title) => json!({ "type": "group-start", "job": job, "step": step, "title": title }),
        None => {
            let (level, text) = [
                ("debug: ", "debug"),
                ("warning: ", "warn"),
                ("error: ", "error"),
            ]
            .iter()
            .find_map(|(prefix, level)| line.strip_prefix(prefix).map(|t| (*level, t)))
            .unwrap_or(("stdout", line));
            json!({ "type": "log", "job": job, "step": step, "level": level, "text": text })
        }
    };
    event.to_string()
}

/// Each step's log file in a run record (relative to it), by job and step key, from
/// `run.json`.
pub fn step_logs(dir: &Path) -> BTreeMap<(String, String), String> {
    let summary: Option<ferry_engine::record::RunSummary> = std::fs::read(dir.join("run.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let mut logs = BTreeMap::new();
    for (job, summary) in summary.iter().flat_map(|s| &s.jobs) {
        for step in &summary.steps {
            logs.insert((job.clone(), step.key.clone()), step.log.clone());
        }
    }
    logs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_and_the_next_line_follows() {
        let text = format!("short\n{}\nafter\nlast", "y".repeat(3 * MAX_LINE));
        let mut reader = BufReader::new(text.as_bytes());
        assert_eq!(read_line(&mut reader).as_deref(), Some("short"));
        let long = read_line(&mut reader).unwrap();
        assert!(long.len() < MAX_LINE + 32 && long.ends_with("(line cut)"));
        assert_eq!(read_line(&mut reader).as_deref(), Some("after"));
        assert_eq!(read_line(&mut reader).as_deref(), Some("last"));
        assert_eq!(read_line(&mut reader), None);
    }

    #[test]
    fn logs_come_back_before_their_step_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("run.json"),
            r#"{"id":"r","pipeline":"p","status":"passed","pid":1,"started_at":"t","jobs":{"build":{"status":"passed","steps":[
                {"key":"s1","name":"s1","status":"passed","log":"build/s1.log"},
                {"key":"s2","name":"s2","status":"passed","log":"build/s2.log"}]}}}"#,
        )
        .unwrap();
        std::fs::create_dir(d.join("build")).unwrap();
        std::fs::write(d.join("build/s1.log"), "one\nwarning: two\n").unwrap();
        std::fs::write(d.join("build/s2.log"), "unfinished\n").unwrap();
        std::fs::write(
            d.join("events.jsonl"),
            "{\"type\":\"step-started\",\"job\":\"build\",\"step\":\"s1\"}\n{\"type\":\"step-finished\",\"job\":\"build\",\"step\":\"s1\"}\n",
        )
        .unwrap();
        let mut replay = Replay::open(d);
        let events: Vec<Value> = replay
            .next_batch()
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["step-started", "log", "log", "step-finished", "log"]
        );
        assert_eq!(events[2]["level"], "warn");
        assert_eq!(events[4]["text"], "unfinished");
        assert!(replay.next_batch().is_empty());
    }
}
