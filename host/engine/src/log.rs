//! The log of one step: line splitting, secret masking and the byte cap.

use crate::event::{Annotation, Event, Level, Reporter};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Most bytes of a step summary (`$FERRY_STEP_SUMMARY`) that are kept, as GitHub keeps 1 MiB
/// of `$GITHUB_STEP_SUMMARY`; the rest is cut with a note.
pub const MAX_SUMMARY: usize = 1 << 20;

/// Bytes read past [`MAX_SUMMARY`], so that a secret across the cut is whole when it is
/// masked, and only then cut.
const SUMMARY_SLACK: usize = 256 << 10;

/// A step's summary file as read: the text (lossy UTF-8) and whether the file held more.
pub struct SummaryText {
    pub text: String,
    pub more: bool,
}

/// Reads the summary file a step's programs wrote: empty when there is none. Never more than
/// the cap and some slack is read, whatever the file's size; [`StepLog::summary`] masks it
/// and then cuts it at [`MAX_SUMMARY`].
pub fn read_summary(path: &std::path::Path) -> std::io::Result<SummaryText> {
    use std::io::Read;
    let window = MAX_SUMMARY + SUMMARY_SLACK;
    let mut bytes = Vec::new();
    match std::fs::File::open(path) {
        Ok(file) => file.take(window as u64 + 1).read_to_end(&mut bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(SummaryText {
                text: String::new(),
                more: false,
            });
        }
        Err(e) => return Err(e),
    };
    let more = bytes.len() > window;
    bytes.truncate(window);
    Ok(SummaryText {
        text: String::from_utf8_lossy(&bytes).into_owned(),
        more,
    })
}

/// Replaces every occurrence of a secret value with `***`.
#[derive(Debug, Default)]
pub struct Masker {
    /// Longest first, so a secret containing another is masked whole.
    secrets: Vec<String>,
}

/// Shortest secret whose encoded forms are masked too: the encodings of shorter values are
/// common enough text that masking them would shred logs.
const ENCODED_MIN: usize = 8;

/// A secret and the other forms it takes in a log: each line of a multi-line value, and,
/// for values of at least [`ENCODED_MIN`] bytes, its JSON string escaping, its
/// percent-encoding and its base64 (standard and URL-safe alphabets, at each of the three
/// alignments it can have inside longer data, so `base64 <<< "token=$T"` is caught too).
/// CI runners that mask secrets treat the same encodings as the secret.
pub fn secret_forms(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_string()];
    // Multi-line secrets also appear line by line once the log is split.
    forms.extend(
        secret
            .lines()
            .filter(|l| l.trim().len() >= 4)
            .map(str::to_string),
    );
    if secret.len() >= ENCODED_MIN {
        let json = serde_json::to_string(secret).unwrap_or_default();
        forms.push(json[1..json.len() - 1].to_string());
        forms.push(percent_encoded(secret));
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        for shift in 0..3usize {
            // Characters that hold bits of the bytes before or after the secret differ
            // with those bytes: keep only those made of the secret's bits alone.
            let mut data = vec![0u8; shift];
            data.extend_from_slice(secret.as_bytes());
            let (start, end) = ((8 * shift).div_ceil(6), 8 * (shift + secret.len()) / 6);
            for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
                forms.push(engine.encode(&data)[start..end].to_string());
            }
        }
    }
    forms.retain(|f| f.len() >= 2);
    forms.sort();
    forms.dedup();
    forms
}

/// `text` with every byte but the unreserved ones of RFC 3986 as `%XX`.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Masker {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        // Masking a one-character value would shred every log; such values are refused
        // when secrets are loaded instead.
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= 2)
            .flat_map(|s| secret_forms(&s))
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Masker { secrets }
    }

    pub fn mask(&self, text: &str) -> String {
        let mut text = text.to_string();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

/// A handle to one step's log; cheap to clone and shared by the guest's streams, the
/// `log` interface and the processes the step runs.
#[derive(Clone)]
pub struct StepLog {
    inner: Arc<Inner>,
}

struct Inner {
    job: Arc<str>,
    step: Arc<str>,
    reporter: Arc<dyn Reporter>,
    masker: Arc<Masker>,
    limit: u64,
    written: AtomicU64,
    dropped: AtomicU64,
    truncated: AtomicBool,
    /// Unfinished last line of each raw stream (stdout, stderr).
    partial: Mutex<[Vec<u8>; 2]>,
}

impl StepLog {
    pub fn new(
        job: Arc<str>,
        step: Arc<str>,
        reporter: Arc<dyn Reporter>,
        masker: Arc<Masker>,
        limit: u64,
    ) -> Self {
        StepLog {
            inner: Arc::new(Inner {
                job,
                step,
                reporter,
                masker,
                limit,
                written: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                truncated: AtomicBool::new(false),
                partial: Mutex::new([Vec::new(), Vec::new()]),
            }),
        }
    }

    /// Writes one line at a level.
    pub fn line(&self, level: Level, text: &str) {
        let inner = &*self.inner;
        let size = text.len() as u64 + 1;
        let before = inner.written.fetch_add(size, Ordering::Relaxed);
        if before + size > inner.limit {
            self.drop_bytes(size);
            return;
        }
        let text = if inner.masker.is_empty() {
            text.to_string()
        } else {
            inner.masker.mask(text)
        };
        self.emit_raw(level, text);
    }

    /// Counts bytes dropped at the cap; the first drop leaves one marker line.
    fn drop_bytes(&self, n: u64) {
        let inner = &*self.inner;
        inner.dropped.fetch_add(n, Ordering::Relaxed);
        if !inner.truncated.swap(true, Ordering::Relaxed) {
            self.emit_raw(
                Level::Warn,
                format!(
                    "[ferry] log truncated: this step wrote more than {} (permissions.log-limit); the rest is dropped",
                    ferry_model::pipeline::format_size(inner.limit)
                ),
            );
        }
    }

    fn emit_raw(&self, level: Level, text: String) {
        self.inner.reporter.event(&Event::Log {
            job: self.inner.job.clone(),
            step: self.inner.step.clone(),
            level,
            text,
        });
    }

    /// Appends raw bytes of a stream (`Stdout` or `Stderr`), emitting complete lines.
    pub fn write(&self, level: Level, bytes: &[u8]) {
        let slot = usize::from(level == Level::Stderr);
        let lines: Vec<String> = {
            let mut partial = self.inner.partial.lock().unwrap_or_else(|e| e.into_inner());
            let buffer = &mut partial[slot];
            // Once the cap is reached, do not even keep the bytes around.
            if self.inner.written.load(Ordering::Relaxed) >= self.inner.limit {
                buffer.clear();
                drop(partial);
                self.drop_bytes(bytes.len() as u64);
                return;
            }
            buffer.extend_from_slice(bytes);
            let Some(last_newline) = buffer.iter().rposition(|&b| b == b'\n') else {
                // A very long line without newline is flushed in pieces.
                if buffer.len() >= 64 * 1024 {
                    let text = String::from_utf8_lossy(buffer).into_owned();
                    buffer.clear();
                    drop(partial);
                    self.line(level, &text);
                }
                return;
            };
            let complete: Vec<u8> = buffer.drain(..=last_newline).collect();
            complete[..complete.len() - 1]
                .split(|&b| b == b'\n')
                .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
                .collect()
        };
        for line in lines {
            self.line(level, &line);
        }
    }

    /// Emits unfinished lines of the raw streams.
    pub fn flush(&self) {
        let rests: Vec<(Level, String)> = {
            let mut partial = self.inner.partial.lock().unwrap_or_else(|e| e.into_inner());
            [Level::Stdout, Level::Stderr]
                .into_iter()
                .zip(partial.iter_mut())
                .filter(|(_, b)| !b.is_empty())
                .map(|(level, b)| {
                    (
                        level,
                        String::from_utf8_lossy(&std::mem::take(b)).into_owned(),
                    )
                })
                .collect()
        };
        for (level, text) in rests {
            self.line(level, &text);
        }
    }

    pub fn group_start(&self, title: &str) {
        self.inner.reporter.event(&Event::GroupStart {
            job: self.inner.job.clone(),
            step: self.inner.step.clone(),
            title: self.inner.masker.mask(title),
        });
    }

    pub fn group_end(&self) {
        self.inner.reporter.event(&Event::GroupEnd {
            job: self.inner.job.clone(),
            step: self.inner.step.clone(),
        });
    }

    pub fn annotate(&self, mut annotation: Annotation) {
        annotation.message = self.inner.masker.mask(&annotation.message);
        self.inner.reporter.event(&Event::Annotation {
            job: self.inner.job.clone(),
            step: self.inner.step.clone(),
            annotation,
        });
    }

    /// Publishes the step's summary (`$FERRY_STEP_SUMMARY`): masked first, then cut at
    /// [`MAX_SUMMARY`] bytes on a character boundary with a last line saying so (`more`: the
    /// file held more than was read). Nothing is sent for an empty one.
    pub fn summary(&self, markdown: &str, more: bool) {
        if markdown.trim().is_empty() {
            return;
        }
        let mut text = self.inner.masker.mask(markdown);
        if more || text.len() > MAX_SUMMARY {
            let mut end = MAX_SUMMARY.min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str("\n\n*(cut at 1 MiB)*\n");
        }
        self.inner.reporter.event(&Event::Summary {
            job: self.inner.job.clone(),
            step: self.inner.step.clone(),
            markdown: text,
        });
    }

    /// Bytes dropped because of the cap.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Masks secrets in a text that leaves the step some other way (outputs, messages).
    pub fn mask(&self, text: &str) -> String {
        self.inner.masker.mask(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);
    impl Reporter for Collect {
        fn event(&self, event: &Event) {
            match event {
                Event::Log { text, .. } | Event::Summary { markdown: text, .. } => {
                    self.0.lock().unwrap().push(text.clone())
                }
                _ => {}
            }
        }
    }

    fn log(limit: u64, secrets: &[&str]) -> (StepLog, Arc<Collect>) {
        let collect = Arc::new(Collect::default());
        let masker = Masker::new(secrets.iter().map(|s| s.to_string()));
        let log = StepLog::new(
            "j".into(),
            "s".into(),
            collect.clone(),
            Arc::new(masker),
            limit,
        );
        (log, collect)
    }

    #[test]
    fn a_secret_across_the_summary_cut_is_masked_before_it_is_cut() {
        let secret = "hunter2-secret-value";
        let (log, out) = log(1 << 20, &[secret]);
        // The secret starts 6 bytes before the cut: cut first, its head would be shown.
        let text = format!("{}{secret}{}", "x".repeat(MAX_SUMMARY - 6), "y".repeat(100));
        log.summary(&text, false);
        let shown = out.0.lock().unwrap().pop().unwrap();
        assert!(!shown.contains("hunter"), "{}", &shown[shown.len() - 60..]);
        assert!(shown.ends_with("*(cut at 1 MiB)*\n"));
        assert!(shown.len() <= MAX_SUMMARY + 40);
    }

    #[test]
    fn splits_lines_across_writes() {
        let (log, out) = log(1 << 20, &[]);
        log.write(Level::Stdout, b"hel");
        log.write(Level::Stdout, b"lo\r\nworld\nand");
        log.flush();
        assert_eq!(*out.0.lock().unwrap(), ["hello", "world", "and"]);
    }

    #[test]
    fn masks_a_secret_in_base64_json_and_percent_encoding() {
        let secret = "s3cr3t/value+with \"quotes\"";
        let masker = Masker::new([secret.to_string()]);
        // Computed by another encoder (coreutils `base64`, Python's `quote` and `json`),
        // not by the forms under test: the secret alone, after one and two bytes of other
        // data, and inside JSON and a URL.
        for leaked in [
            "czNjcjN0L3ZhbHVlK3dpdGggInF1b3RlcyI=",
            "eHMzY3IzdC92YWx1ZSt3aXRoICJxdW90ZXMi",
            "eHhzM2NyM3QvdmFsdWUrd2l0aCAicXVvdGVzIg==",
            "eHhzM2NyM3QvdmFsdWUrd2l0aCAicXVvdGVzIg",
            r#"{"token":"s3cr3t/value+with \"quotes\""}"#,
            "https://x/?t=s3cr3t%2Fvalue%2Bwith%20%22quotes%22",
        ] {
            let masked = masker.mask(leaked);
            assert!(masked.contains("***"), "{leaked} -> {masked}");
            assert!(masked.len() < leaked.len() - 8, "{leaked} -> {masked}");
        }
        // Short values are masked as they are, not by their encodings.
        let short = Masker::new(["abc".to_string()]);
        assert_eq!(short.mask("YWJj and abc"), "YWJj and ***");
    }

    #[test]
    fn masks_secrets_including_each_line_of_multiline_ones() {
        let (log, out) = log(1 << 20, &["hunter22", "line-one\nline-two"]);
        log.line(Level::Info, "token=hunter22 and hunter22");
        log.write(Level::Stdout, b"line-two leaked\n");
        assert_eq!(*out.0.lock().unwrap(), ["token=*** and ***", "*** leaked"]);
    }

    #[test]
    fn caps_bytes_with_one_marker() {
        let (log, out) = log(20, &[]);
        for _ in 0..10 {
            log.line(Level::Stdout, "123456789");
        }
        let lines = out.0.lock().unwrap();
        assert_eq!(lines.len(), 3);
        assert!(lines[2].contains("log truncated"));
        assert_eq!(log.dropped(), 80);
        drop(lines);
        // Exactly at the limit: the next line is dropped and marked.
        let (log, out) = super::tests::log(20, &[]);
        log.line(Level::Stdout, "123456789");
        log.line(Level::Stdout, "123456789");
        log.line(Level::Stdout, "x");
        assert_eq!(out.0.lock().unwrap().len(), 3);
    }
}
