//! ferry's built-in `verify` step: checks that a deployed service answers as it should,
//! retrying while it starts. In a job with an `environment`, its failure rolls back the
//! job's `deploy` steps.

use ferry_sdk::http::{self, Body, Url};
use ferry_sdk::{Capabilities, Error, Info, Input, Inputs, Step, info, set_output, warn};
use std::time::{Duration, Instant};

struct Verify;

impl Step for Verify {
    fn info() -> Info {
        Info::new(
            "verify",
            env!("CARGO_PKG_VERSION"),
            "Checks a URL until it answers as expected a number of times in a row, or gives up.",
        )
        .input(Input::string("url", "The http:// URL to check.").required())
        .input(Input::integer("status", "The expected status code.").default("200"))
        .input(Input::string("contains", "Text the body must contain."))
        .input(Input::integer("successes", "Passing checks needed in a row.").default("1"))
        .input(Input::integer("attempts", "Checks at most, in all.").default("10"))
        .input(Input::number("interval", "Seconds between checks.").default("1"))
        .input(Input::number("timeout", "Seconds each check may take.").default("10"))
        .output("status", "The last status code seen.")
        .output("attempts", "How many checks were made.")
        .output("latency-ms", "How long the last passing check took.")
        .capabilities(Capabilities::none().network(["*"]))
    }

    fn run(inputs: &Inputs) -> Result<(), Error> {
        let text = inputs.string("url")?;
        let url = Url::parse(&text).map_err(Error::InvalidInput)?;
        let expected = inputs.integer("status")?.clamp(0, u16::MAX.into()) as u16;
        let contains = inputs.optional("contains").filter(|c| !c.is_empty());
        let needed = inputs.integer("successes")?.clamp(1, u32::MAX.into()) as u32;
        let attempts = inputs.integer("attempts")?.clamp(1, u32::MAX.into()) as u32;
        let interval = Duration::from_secs_f64(inputs.number("interval")?.max(0.0));
        let timeout = Duration::from_secs_f64(inputs.number("timeout")?.max(0.1));
        let mut passed = 0;
        let mut last_status = 0;
        let mut last_problem = String::new();
        for attempt in 1..=attempts {
            let started = Instant::now();
            let problem = match http::send("GET", &url, &[], Body::Empty, timeout) {
                Err(e) => Some(e.to_string()),
                Ok(mut response) => {
                    last_status = response.status;
                    let body = response.text().unwrap_or_default();
                    if response.status != expected {
                        Some(format!("HTTP {} (expected {expected})", response.status))
                    } else {
                        contains
                            .as_ref()
                            .filter(|c| !body.contains(c.as_str()))
                            .map(|c| format!("the body does not contain `{c}`"))
                    }
                }
            };
            match problem {
                None => {
                    passed += 1;
                    if passed >= needed {
                        let ms = started.elapsed().as_millis();
                        info!(
                            "{text}: HTTP {last_status} in {ms} ms ({passed} in a row, attempt {attempt})"
                        );
                        set_output("status", &last_status.to_string())?;
                        set_output("attempts", &attempt.to_string())?;
                        set_output("latency-ms", &ms.to_string())?;
                        return Ok(());
                    }
                }
                Some(p) => {
                    passed = 0;
                    warn!("check {attempt} of {attempts}: {text}: {p}");
                    last_problem = p;
                }
            }
            if attempt < attempts {
                std::thread::sleep(interval);
            }
        }
        set_output("status", &last_status.to_string())?;
        set_output("attempts", &attempts.to_string())?;
        Err(Error::failed(format!(
            "{text} did not pass {needed} check(s) in a row within {attempts} attempts; last: {last_problem}"
        )))
    }
}

ferry_sdk::export!(Verify);
