//! The dashboard in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `cargo xtask setup`) driven over the DevTools protocol. It signs in, opens a run, sees
//! a log line arrive while the step is still running, approves the gated job and
//! downloads the artifact. `FERRY_BLESS=1` also writes the screenshots under `docs/`.

mod common;

use common::Test;
use common::server::{SECRET, Served, TOKEN, push_hook, repository};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// A headless Chromium and one page in it.
struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next: u64,
    /// Events read while waiting for a reply, kept for [`Browser::event`].
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch(downloads: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                // The test may run as root, where Chromium's own sandbox cannot start; the
                // page it loads is the dashboard on loopback.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium is missing: run `cargo xtask setup`");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut url = None;
        let mut said = String::new();
        for _ in 0..200 {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            said.push_str(&line);
            if let Some(at) = line.find("ws://") {
                url = Some(line[at..].trim().to_string());
                break;
            }
        }
        let url = url.unwrap_or_else(|| panic!("chromium did not start:\n{said}"));
        // Keep reading so a chatty browser never blocks on a full pipe.
        std::thread::spawn(move || for _ in stderr.lines() {});
        let (socket, _) = tungstenite::connect(url.as_str()).unwrap();
        // A browser that stops answering fails the test instead of hanging it.
        if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
        }
        let mut browser = Browser {
            child,
            socket,
            session: String::new(),
            next: 0,
            events: Vec::new(),
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        browser.call(
            "Browser.setDownloadBehavior",
            json!({ "behavior": "allow", "downloadPath": downloads, "eventsEnabled": true }),
        );
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
        );
        browser
    }

    /// Sends one command (to the page once attached) and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() && !method.starts_with("Browser.") {
            message["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .unwrap();
        loop {
            let reply = self.read();
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
            if reply.get("method").is_some() {
                self.events.push(reply);
            }
        }
    }

    /// The next message from the browser.
    fn read(&mut self) -> Value {
        loop {
            let message = self.socket.read().expect("the browser stopped answering");
            if let Ok(text) = message.to_text() {
                return serde_json::from_str(text).unwrap();
            }
        }
    }

    /// Waits for the event `method` whose parameters `matches` accepts, and returns them;
    /// fails after a minute of other messages.
    fn event(&mut self, method: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let wanted = |e: &Value| e["method"] == method && matches(&e["params"]);
        if let Some(at) = self.events.iter().position(wanted) {
            return self.events.remove(at)["params"].clone();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "no `{method}` event came");
            let message = self.read();
            if wanted(&message) {
                return message["params"].clone();
            }
        }
    }

    /// Evaluates JavaScript in the page and returns its value.
    fn eval(&mut self, script: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": script, "awaitPromise": true, "returnByValue": true }),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "{script}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Waits until `script` is true in the page. Polls: what the page shows is state, and
    /// the DevTools protocol has no event for "this element appeared".
    fn wait(&mut self, script: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.eval(&format!("!!({script})")) == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let page = self.eval("document.getElementById('main').innerText");
                panic!("the page never showed {what}; it shows:\n{page}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait("document.readyState === 'complete'", "a loaded page");
    }

    /// Opens the dashboard at `base` and signs in with the token, as a person would.
    fn sign_in(&mut self, base: &str) {
        self.open(base);
        self.wait("document.querySelector('#login')", "the sign-in form");
        self.eval(&format!(
            "document.querySelector('#login input[name=token]').value = '{TOKEN}'; \
             document.querySelector('#login').requestSubmit()"
        ));
    }

    fn screenshot(&mut self, name: &str) {
        use base64::Engine;
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.len() > 10_000, "an empty screenshot");
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&out, &png).unwrap();
        if std::env::var_os("FERRY_BLESS").is_some() {
            assert!(
                std::env::var_os("CI").is_none(),
                "FERRY_BLESS is set in CI: it would rewrite docs/ instead of testing"
            );
            std::fs::write(common::repo_root().join("docs").join(name), &png).unwrap();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_dashboard_follows_a_run_approves_it_and_downloads_its_artifact() {
    let t = Test::new();
    // The step watches a host folder it is granted; the gates appear in it.
    std::fs::create_dir_all(t.path("gates")).unwrap();
    let gate = |n: u8| t.path(&format!("gates/{n}"));
    let pipeline = format!(
        r#"name: shop
on: push
jobs:
  build:
    steps:
      - name: compile
        run: |
          printf '\033[32mcompiled\033[0m 3 crates\n'
          echo "waiting for the gate"
          while [ ! -e {gate1} ]; do sleep 0.05; done
          echo "the live line arrived"
          while [ ! -e {gate2} ]; do sleep 0.05; done
          echo "report v1" > report.txt
        permissions: {{ paths: {{ {gates}: read }} }}
        outputs:
          artifacts:
            report: [report.txt]
  test:
    needs: build
    steps:
      - run: |
          echo "all 12 tests passed"
          cat >> "$FERRY_STEP_SUMMARY" <<'EOF'
          ## Tests
          | suite | passed |
          | --- | --- |
          | unit | **12** |
          | <img src=x onerror="document.title='owned'"> | [docs](javascript:alert(1)) |

          See [the report](https://example.com/report) and `cargo test`.
          EOF
  deploy:
    needs: test
    environment: {{ name: production, approval: required }}
    steps:
      - run: echo "deployed to production"
"#,
        gate1 = gate(1).display(),
        gate2 = gate(2).display(),
        gates = t.path("gates").display()
    );
    let repo = repository(&t, &pipeline);
    let sha = common::server::git(&repo, &["rev-parse", "HEAD"]);
    let served = Served::start(&t, &repo, &[]);
    let downloads = t.path("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let mut browser = Browser::launch(&downloads);

    // A private server asks who you are first.
    browser.sign_in(&served.base);
    browser.wait(
        "document.querySelector('table.runs, .empty')",
        "the runs list",
    );

    assert_eq!(push_hook(&served, &sha, "browser-1", SECRET).0, 202);
    let id = served.wait_runs(1)[0]["id"].as_i64().unwrap();
    browser.wait(
        &format!("document.querySelector('tr[data-run=\"{id}\"]')"),
        "the new run in the list",
    );
    browser.eval(&format!(
        "document.querySelector('tr[data-run=\"{id}\"] a').click()"
    ));
    browser.wait(
        "document.querySelector('#log') && document.querySelector('#log').innerText.includes('waiting for the gate')",
        "the step's first lines",
    );

    // The next line arrives while the step is still running: it came live.
    std::fs::write(gate(1), "").unwrap();
    browser.wait(
        "document.querySelector('#log').innerText.includes('the live line arrived')",
        "the live log line",
    );
    let step = browser.eval("document.querySelector('[data-step=\"step-1\"]').dataset.status");
    assert_eq!(step, "running", "the line came after the step finished");
    assert_eq!(
        browser.eval("document.querySelector('#log .a-fg-32').textContent"),
        "compiled",
        "ANSI colours are rendered"
    );
    assert_eq!(browser.eval("!!document.querySelector('#live')"), true);
    browser.screenshot("dashboard-run.png");

    // The gated job waits for a person.
    std::fs::write(gate(2), "").unwrap();
    browser.wait(
        "document.querySelector('[data-approve=\"deploy\"]')",
        "the approve button",
    );
    browser.screenshot("dashboard-approval.png");
    browser.eval("document.querySelector('[data-approve=\"deploy\"]').click()");
    browser.wait(
        "document.querySelector('h1 .badge').dataset.status === 'passed'",
        "the run passed",
    );
    let run = served.wait_for(id, &["passed"]);
    assert_eq!(run["approvals"][0]["approved"], true, "{run}");
    // The summary is rendered as Markdown, and what it holds of HTML stays text.
    browser.wait(
        "document.querySelector('#summaries table.md')",
        "the test job's summary",
    );
    assert_eq!(
        browser.eval("document.querySelector('#summaries td strong').textContent"),
        "12"
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('#summaries img, #summaries script').length"),
        0
    );
    assert_eq!(
        browser.eval("[...document.querySelectorAll('#summaries a')].map((a) => a.href).join(' ')"),
        "https://example.com/report"
    );
    assert!(
        browser
            .eval("document.querySelector('#summaries').innerText")
            .as_str()
            .unwrap()
            .contains("<img src=x onerror="),
        "the HTML is shown as text"
    );
    assert_ne!(browser.eval("document.title"), "owned");
    assert_eq!(run["approvals"][0]["by"], "token");

    // The artifact downloads as a tar holding the file.
    browser.wait(
        "document.querySelector('[data-artifact=\"report\"]')",
        "the artifact link",
    );
    browser.eval("document.querySelector('[data-artifact=\"report\"]').click()");
    let done = browser.event("Browser.downloadProgress", |p| {
        p["state"] == "completed" || p["state"] == "canceled"
    });
    assert_eq!(done["state"], "completed", "{done}");
    let tar = downloads.join("report.tar");
    assert!(tar.is_file(), "no report.tar in {downloads:?}");
    let listing = common::tool("tar", &["-xOf", tar.to_str().unwrap(), "report.txt"]);
    assert_eq!(listing.trim(), "report v1");

    browser.eval("document.querySelector('[data-job=\"deploy\"]').click()");
    browser.wait(
        "document.querySelector('#log').innerText.includes('deployed to production')",
        "the deploy job's log",
    );
    browser.screenshot("dashboard-run-passed.png");
    browser.open(&served.base);
    browser.wait("document.querySelector('table.runs')", "the runs list");
    browser.screenshot("dashboard-runs.png");
}

/// Serves `page` to every request on a new loopback port; the port.
fn attacker_site(page: String) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let page = std::sync::Arc::new(page);
    std::thread::spawn(move || {
        // A connection a thread: a browser opens spare connections it sends nothing on,
        // which must not hold up the one it asks on.
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let page = page.clone();
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(30)));
                let mut request = [0u8; 4096];
                if std::io::Read::read(&mut stream, &mut request).unwrap_or(0) == 0 {
                    return;
                }
                let _ = std::io::Write::write_all(
                    &mut stream,
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                        page.len()
                    )
                    .as_bytes(),
                );
            });
        }
    });
    port
}

#[test]
fn pages_on_another_port_or_site_cannot_act_with_the_dashboard_session() {
    let t = Test::new();
    // The environment's address is the pipeline author's text: a script there must not
    // become a link in the dashboard.
    let pipeline = "name: shop\non: push\njobs:\n  ship:\n    environment: { name: production, url: \"javascript:alert(1)\", approval: required }\n    steps:\n      - run: echo shipped\n";
    let repo = repository(&t, pipeline);
    let sha = common::server::git(&repo, &["rev-parse", "HEAD"]);
    let served = Served::start(&t, &repo, &[]);
    assert_eq!(push_hook(&served, &sha, "csrf-1", SECRET).0, 202);
    let id = served.wait_runs(1)[0]["id"].as_i64().unwrap();
    let run = || served.get(&format!("/api/runs/{id}")).1;
    common::eventually(
        || (run()["approvals"][0]["job"] == "ship").then_some(()),
        || format!("`ship` never asked for approval: {}", run()),
    );
    let downloads = t.path("downloads");
    let mut browser = Browser::launch(&downloads);
    browser.sign_in(&served.base);
    browser.wait("document.querySelector('table.runs')", "the runs list");

    // What a page elsewhere can make a signed-in browser send: a form post (no body, as
    // cancel and rerun take none) and `no-cors` fetches with the bodies a page may send.
    let base = &served.base;
    let page = format!(
        r#"<!doctype html><title>cats</title><iframe name="sink" id="sink"></iframe>
<form id="f" method="POST" action="{base}/api/runs/{id}/cancel" target="sink"></form>
<script>
window.sent = [];
(async () => {{
  for (const [path, body] of [["rerun", ""], ["approve", '{{"job":"ship"}}'], ["cancel", "{{}}"]]) {{
    try {{
      await fetch("{base}/api/runs/{id}/" + path, {{ method: "POST", mode: "no-cors", credentials: "include", headers: {{ "Content-Type": "text/plain" }}, body }});
      sent.push(path);
    }} catch (e) {{ sent.push(path + " failed: " + e); }}
  }}
  document.getElementById("sink").onload = () => sent.push("form");
  document.getElementById("f").submit();
}})();
</script>"#
    );
    let port = attacker_site(page);
    // Another port of the same host is the same site, so a SameSite cookie goes along;
    // `localhost` is another site.
    for site in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
    ] {
        browser.open(&site);
        browser.wait(
            "window.sent && window.sent.includes('form')",
            "the forged requests sent",
        );
        let now = run();
        assert_ne!(
            now["status"], "cancelled",
            "{site} cancelled the run: {now}"
        );
        assert_eq!(now["approvals"][0]["job"], "ship", "{site}: {now}");
        assert_eq!(served.runs().len(), 1, "{site} started a run");
    }
    // The dashboard itself still acts: its requests are same-origin JSON.
    browser.open(&format!("{base}/runs/{id}"));
    browser.wait(
        "document.querySelector('[data-approve=\"ship\"]')",
        "the approve button",
    );
    browser.eval("document.querySelector('[data-approve=\"ship\"]').click()");
    served.wait_for(id, &["passed"]);
    browser.wait(
        "document.querySelector('#deployments') && document.querySelector('#deployments').innerText.includes('javascript:alert(1)')",
        "the deployment with its address",
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('#deployments a').length"),
        json!(0),
        "the address became a link"
    );
}
