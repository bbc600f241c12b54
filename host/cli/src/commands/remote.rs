//! Commands that talk to a `ferry serve` (`--server URL`): the same runs, logs and
//! approvals as on disk, over the server's JSON API.

use crate::exit;
use crate::say;
use serde_json::Value;
use std::io::BufRead;

/// `--server` for the commands that can talk to a server.
#[derive(clap::Args, Clone)]
pub struct ServerArg {
    /// A `ferry serve` to ask instead of the local run history; its token is read from
    /// `FERRY_TOKEN`
    #[arg(long, value_name = "URL", env = "FERRY_SERVER")]
    pub server: Option<String>,
}

/// A server and the token to show it.
pub struct Remote {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Remote {
    pub fn new(base: &str) -> Remote {
        Remote {
            base: base.trim_end_matches('/').to_string(),
            token: std::env::var("FERRY_TOKEN").ok().filter(|t| !t.is_empty()),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .new_agent(),
        }
    }

    fn answer(
        &self,
        what: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, String> {
        let mut response = response.map_err(|e| format!("cannot reach `{}`: {e}", self.base))?;
        let status = response.status();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(body);
        }
        let message = body["error"]
            .as_str()
            .map_or_else(|| body.to_string(), str::to_string);
        let hint = if status == 401 && self.token.is_none() {
            "\nhint: export FERRY_TOKEN with the server's API token"
        } else {
            ""
        };
        Err(format!(
            "{what}: the server answered {status}: {message}{hint}"
        ))
    }

    pub fn get(&self, path: &str) -> Result<Value, String> {
        let mut request = self.agent.get(&format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        self.answer(&format!("GET {path}"), request.call())
    }

    pub fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        let mut request = self.agent.post(&format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        self.answer(&format!("POST {path}"), request.send_json(body))
    }

    /// Reads a run's event stream, calling `each` per event until the run ends.
    pub fn follow(&self, run: i64, mut each: impl FnMut(&Value)) -> Result<(), String> {
        let path = format!("/api/runs/{run}/events");
        let mut request = self
            .agent
            .get(&format!("{}{path}", self.base))
            .header("Accept", "text/event-stream");
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let response = request
            .call()
            .map_err(|e| format!("cannot reach `{}`: {e}", self.base))?;
        if !response.status().is_success() {
            return self.answer(&format!("GET {path}"), Ok(response)).map(drop);
        }
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        let mut kind = String::new();
        for line in reader.lines() {
            let line = line.map_err(|e| format!("the event stream broke: {e}"))?;
            if let Some(name) = line.strip_prefix("event:") {
                kind = name.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:") {
                if kind == "end" {
                    return Ok(());
                }
                if let Ok(event) = serde_json::from_str::<Value>(data.trim_start()) {
                    each(&event);
                }
            } else if line.is_empty() {
                kind.clear();
            }
        }
        Ok(())
    }

    pub fn base(&self) -> &str {
        &self.base
    }
}

/// A run id as the server numbers runs (`#12` and `12` both work), or `latest`.
pub fn run_id(remote: &Remote, text: &str) -> Result<i64, String> {
    if text == "latest" {
        let runs = remote.get("/api/runs?limit=1")?;
        return runs[0]["id"]
            .as_i64()
            .ok_or_else(|| "the server has no runs yet".to_string());
    }
    text.trim_start_matches('#').parse().map_err(|_| {
        format!("`{text}` is not a run number\nhint: `ferry runs --server URL` lists them")
    })
}

fn ms(value: &Value) -> String {
    value
        .as_f64()
        .map(crate::report::ms)
        .unwrap_or_else(|| "-".into())
}

pub fn runs(remote: &Remote, limit: usize, json: bool) -> Result<u8, String> {
    let runs = remote.get(&format!("/api/runs?limit={limit}"))?;
    if json {
        say!(
            "{}",
            serde_json::to_string_pretty(&runs).unwrap_or_default()
        );
        return Ok(exit::PASSED);
    }
    let runs = runs.as_array().cloned().unwrap_or_default();
    if runs.is_empty() {
        eprintln!("no runs on {}", remote.base());
        return Ok(exit::PASSED);
    }
    say!(
        "{:<6} {:<11} {:<20} {:<8} {:<12} {:>10}  MESSAGE",
        "RUN",
        "STATUS",
        "REF",
        "COMMIT",
        "TRIGGER",
        "DURATION"
    );
    for run in &runs {
        let reference = run["reference"].as_str().unwrap_or_default();
        let reference = reference
            .strip_prefix("refs/heads/")
            .or_else(|| reference.strip_prefix("refs/tags/"))
            .unwrap_or(reference);
        say!(
            "{:<6} {:<11} {:<20} {:<8} {:<12} {:>10}  {}",
            format!("#{}", run["id"]),
            run["status"].as_str().unwrap_or_default(),
            reference,
            run["sha"]
                .as_str()
                .unwrap_or_default()
                .get(..7)
                .unwrap_or_default(),
            run["trigger"].as_str().unwrap_or_default(),
            ms(&run["duration_ms"]),
            run["message"].as_str().unwrap_or_default()
        );
    }
    Ok(exit::PASSED)
}

/// The exit code for how a run ended.
fn code(status: &str) -> u8 {
    match status {
        "passed" => exit::PASSED,
        "cancelled" | "interrupted" => exit::INTERRUPTED,
        _ => exit::FAILED,
    }
}

/// Prints a run's logs; `follow` streams them as they come and ends with the run.
pub fn logs(remote: &Remote, run: &str, only: Option<&str>, follow: bool) -> Result<u8, String> {
    let id = run_id(remote, run)?;
    let (job_filter, step_filter) = match only.map(|o| o.split_once('/')) {
        None => (None, None),
        Some(Some((job, step))) => (Some(job), Some(step)),
        Some(None) => (only, None),
    };
    if follow {
        let mut current = String::new();
        remote.follow(id, |event| {
            let (Some(job), Some(step)) = (event["job"].as_str(), event["step"].as_str()) else {
                if event["type"] == "notice" {
                    eprintln!("note: {}", event["text"].as_str().unwrap_or_default());
                }
                return;
            };
            if job_filter.is_some_and(|j| j != job) || step_filter.is_some_and(|s| s != step) {
                return;
            }
            match event["type"].as_str() {
                Some("step-started") => {
                    current = format!("{job}/{step}");
                    say!("── {job} › {}", event["name"].as_str().unwrap_or(step));
                }
                Some("log") => {
                    let here = format!("{job}/{step}");
                    if here != current {
                        say!("── {job} › {step}");
                        current = here;
                    }
                    say!("{}", event["text"].as_str().unwrap_or_default());
                }
                Some("step-finished") => {
                    if let Some(message) = event["message"].as_str() {
                        say!(
                            "   {} {}",
                            event["status"].as_str().unwrap_or_default(),
                            message
                        );
                    }
                }
                _ => {}
            }
        })?;
        let run = remote.get(&format!("/api/runs/{id}"))?;
        let status = run["status"].as_str().unwrap_or_default();
        eprintln!("run #{id} {status}");
        return Ok(code(status));
    }
    let run = remote.get(&format!("/api/runs/{id}"))?;
    let jobs = run["jobs"].as_array().cloned().unwrap_or_default();
    if let Some(job) = job_filter
        && !jobs.iter().any(|j| j["job"] == job)
    {
        return Err(format!("run #{id} has no job `{job}`"));
    }
    for job in &jobs {
        let name = job["job"].as_str().unwrap_or_default();
        if job_filter.is_some_and(|j| j != name) {
            continue;
        }
        for step in job["steps"].as_array().into_iter().flatten() {
            let key = step["key"].as_str().unwrap_or_default();
            if step_filter.is_some_and(|s| s != key) {
                continue;
            }
            let status = step["status"].as_str().unwrap_or_default();
            let cached = if step["cached"] == true {
                ", cached"
            } else {
                ""
            };
            say!(
                "── {name} › {} ({status}{cached})",
                step["name"].as_str().unwrap_or(key)
            );
            if status == "pending" || status == "skipped" {
                continue;
            }
            match remote.get(&format!("/api/runs/{id}/logs/{name}/{key}")) {
                Ok(Value::String(text)) => {
                    for line in text.lines() {
                        say!("{line}");
                    }
                }
                _ => say!("(no log)"),
            }
        }
    }
    if let Some(error) = run["error"].as_str() {
        eprintln!("{error}");
    }
    Ok(exit::PASSED)
}

/// Approves or rejects a job waiting in a server's run.
pub fn decide(
    remote: &Remote,
    run: &str,
    job: Option<String>,
    approved: bool,
    reason: Option<String>,
) -> Result<u8, String> {
    let id = run_id(remote, run)?;
    let job = match job {
        Some(job) => job,
        None => {
            let run = remote.get(&format!("/api/runs/{id}"))?;
            let waiting: Vec<String> = run["approvals"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["approved"].is_null())
                .filter_map(|a| a["job"].as_str().map(str::to_string))
                .collect();
            match waiting.as_slice() {
                [one] => one.clone(),
                [] => return Err(format!("no job of run #{id} waits for approval")),
                many => {
                    return Err(format!(
                        "several jobs wait for approval: {}\nhint: name one",
                        many.join(", ")
                    ));
                }
            }
        }
    };
    let answer = remote.post(
        &format!("/api/runs/{id}/approve"),
        serde_json::json!({ "job": job, "approve": approved, "reason": reason }),
    )?;
    eprintln!(
        "{} `{}` to `{}` (run #{id})",
        if approved {
            "approved deploying"
        } else {
            "rejected deploying"
        },
        answer["job"].as_str().unwrap_or(&job),
        answer["environment"].as_str().unwrap_or_default()
    );
    Ok(exit::PASSED)
}
