//! HTTP: the JSON API (`docs/openapi.yaml`), webhook endpoints and the dashboard.

use crate::Server;
use crate::hooks::{self, Forge, Hook, HookError};
use crate::store::{Page, Run};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::broadcast;

type Shared = State<Arc<Server>>;

/// Every route the server answers.
pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/runs/{id}", get(dashboard))
        .route("/assets/{file}", get(asset))
        .route("/api/openapi.yaml", get(openapi))
        .route("/api/session", get(whoami).post(login).delete(logout))
        .route("/api/repos", get(repos))
        .route("/api/runs", get(list_runs))
        .route("/api/runs/{id}", get(show_run))
        .route("/api/runs/{id}/events", get(events))
        .route("/api/runs/{id}/logs/{job}/{step}", get(step_log))
        .route("/api/runs/{id}/services/{job}/{service}", get(service_log))
        .route("/api/runs/{id}/artifacts", get(list_artifacts))
        .route("/api/runs/{id}/artifacts/{name}", get(artifact_tar))
        .route(
            "/api/runs/{id}/artifacts/{name}/{*path}",
            get(artifact_file),
        )
        .route("/api/runs/{id}/approve", post(approve))
        .route("/api/runs/{id}/cancel", post(cancel))
        .route("/api/runs/{id}/rerun", post(rerun))
        .route("/api/trigger", post(trigger))
        .route("/api/deployments", get(deployments))
        .route("/api/deliveries", get(list_deliveries))
        .route("/api/deliveries/{id}", get(show_delivery))
        .route("/hooks/{forge}", post(hook))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "no such page or endpoint") })
        .layer(axum::middleware::from_fn_with_state(
            server.config.public_url.clone(),
            crate::guard::same_origin,
        ))
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            crate::guard::limit_credentials,
        ))
        .layer(axum::middleware::from_fn(crate::http::bounded_body))
        .layer(axum::middleware::from_fn(crate::guard::security_headers))
        // `http::bounded_body` has read the body within its route's limit already.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(server)
}

/// A refusal or failure, answered as `{"error": "..."}` with the status that fits.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ferry\""),
            );
        }
        response
    }
}

type Answer = Result<Response, ApiError>;

/// A refusal as a response, for middleware.
pub fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    problem(status, message).into_response()
}

fn problem(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
    }
}

/// A failure of the server's own: the details (paths, parser messages) go to the server's
/// log, never to the caller, whom they would tell what exists on the host.
fn internal(e: impl std::fmt::Display) -> ApiError {
    eprintln!("error: answering a request: {e}");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the server could not answer; its log says why",
    )
}

// ---------------------------------------------------------------------------------------
// Who is asking

/// The session cookie's name: over https, `__Host-` bound to this host and path `/`,
/// never sent over plain http, and not settable by another subdomain or port.
fn cookie_name(server: &Server) -> &'static str {
    if secure(server) {
        "__Host-ferry_session"
    } else {
        "ferry_session"
    }
}

/// Whether people reach the server over https (`--url https://...`).
fn secure(server: &Server) -> bool {
    server
        .config
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"))
}

/// Compares secrets by their digests, so the time taken says nothing about how much of a
/// guess was right.
fn same(a: &str, b: &str) -> bool {
    hooks::sha256(a.as_bytes()) == hooks::sha256(b.as_bytes())
}

/// The name of who is asking, if they proved it: a bearer token, basic credentials or a
/// dashboard session.
fn identify(server: &Server, headers: &HeaderMap) -> Option<String> {
    let auth = &server.config.auth;
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("Bearer ") || v.starts_with("Basic "))
    {
        let (user, right) = check_credentials(auth, value);
        return right.then(|| user.unwrap_or_else(|| "token".into()));
    }
    server
        .sessions
        .user(session_cookie(headers, cookie_name(server))?)
}

/// What an `Authorization` header claims, as a sign-in: which user (`None` for the
/// server's token) and whether the credentials are right. A scheme ferry does not know
/// is wrong credentials.
pub(crate) fn check_credentials(auth: &crate::Auth, value: &str) -> (Option<String>, bool) {
    if let Some(token) = value.strip_prefix("Bearer ") {
        return (None, by_token(auth, token.trim()).is_some());
    }
    let decoded = value
        .strip_prefix("Basic ")
        .and_then(|encoded| base64_decode(encoded.trim()));
    match decoded.as_deref().and_then(|d| d.split_once(':')) {
        Some((user, password)) => (
            Some(user.to_string()),
            by_password(auth, user, password).is_some(),
        ),
        None => (Some(String::new()), false),
    }
}

/// Who the token is: `token` when it is the server's.
fn by_token(auth: &crate::Auth, token: &str) -> Option<String> {
    auth.token
        .as_deref()
        .filter(|t| same(t, token))
        .map(|_| "token".to_string())
}

/// The user, when the password is theirs.
fn by_password(auth: &crate::Auth, user: &str, password: &str) -> Option<String> {
    auth.users
        .get(user)
        .filter(|p| same(p, password))
        .map(|_| user.to_string())
}

/// The dashboard session the request's cookie names.
fn session_cookie<'h>(headers: &'h HeaderMap, cookie: &str) -> Option<&'h str> {
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    cookies
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == cookie)
        .map(|(_, value)| value)
}

/// Refuses a request that may not read: private servers need a login to read too.
fn may_read(server: &Server, headers: &HeaderMap) -> Result<(), ApiError> {
    if server.config.auth.public || identify(server, headers).is_some() {
        Ok(())
    } else {
        Err(unauthorized(server))
    }
}

/// Who may change things, and read what only operators see (every hook received, every
/// branch polled), even on a `--public` server; every other request gets 401.
fn writer(server: &Server, headers: &HeaderMap) -> Result<String, ApiError> {
    identify(server, headers).ok_or_else(|| unauthorized(server))
}

fn unauthorized(server: &Server) -> ApiError {
    let auth = &server.config.auth;
    let hint = if auth.token.is_none() && auth.users.is_empty() {
        "the server has no token or users configured; start it with `--token-env NAME`"
    } else {
        "send `Authorization: Bearer TOKEN`, basic credentials, or log in on the dashboard"
    };
    problem(
        StatusCode::UNAUTHORIZED,
        format!("authentication required; {hint}"),
    )
}

fn base64_decode(text: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    String::from_utf8(bytes).ok()
}

#[derive(Deserialize)]
struct Login {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

async fn login(
    State(server): Shared,
    extensions: axum::http::Extensions,
    axum::Json(login): axum::Json<Login>,
) -> Answer {
    let auth = &server.config.auth;
    // Wrong guesses count against the user named and the address they came from.
    let user = match (&login.token, &login.user) {
        (Some(_), _) => None,
        (None, Some(user)) => Some(user.as_str()),
        (None, None) => Some(""),
    };
    let keys = crate::guard::attempt_keys(user, &extensions);
    if let Err(seconds) = server.sign_in.check(&keys) {
        return Ok(crate::guard::wait(seconds));
    }
    let who = match (&login.token, &login.user, &login.password) {
        (Some(token), _, _) => by_token(auth, token),
        (None, Some(user), Some(password)) => by_password(auth, user, password),
        _ => None,
    };
    let Some(who) = who else {
        server.sign_in.failed(&keys);
        return Err(problem(StatusCode::UNAUTHORIZED, "wrong token or password"));
    };
    // A right password clears its user's wrong ones; the address keeps its count.
    let user_keys: Vec<String> = keys
        .iter()
        .filter(|k| k.starts_with("user:"))
        .cloned()
        .collect();
    server.sign_in.succeeded(&user_keys);
    let Some(session) = server.sessions.open(&who) else {
        return Err(internal("no randomness for a session"));
    };
    let mut response = axum::Json(json!({ "user": who })).into_response();
    let attributes = if secure(&server) { "; Secure" } else { "" };
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "{}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{attributes}",
        cookie_name(&server),
        crate::guard::SESSION_MAX.as_secs()
    )) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

async fn logout(State(server): Shared, headers: HeaderMap) -> Answer {
    if let Some(session) = session_cookie(&headers, cookie_name(&server)) {
        server.sessions.close(session);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn whoami(State(server): Shared, headers: HeaderMap) -> Answer {
    Ok(axum::Json(json!({
        "user": identify(&server, &headers),
        "public": server.config.auth.public,
    }))
    .into_response())
}

// ---------------------------------------------------------------------------------------
// Dashboard

const INDEX: &str = include_str!("dashboard/index.html");
const APP: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");
const OPENAPI: &str = include_str!("../../../docs/openapi.yaml");

async fn dashboard() -> Answer {
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            ),
        ],
        INDEX,
    )
        .into_response())
}

async fn asset(Path(file): Path<String>) -> Answer {
    let (kind, body) = match file.as_str() {
        "app.js" => ("text/javascript; charset=utf-8", APP),
        "style.css" => ("text/css; charset=utf-8", STYLE),
        _ => return Err(problem(StatusCode::NOT_FOUND, format!("no asset `{file}`"))),
    };
    Ok(([(header::CONTENT_TYPE, kind)], body).into_response())
}

async fn openapi() -> Answer {
    Ok(([(header::CONTENT_TYPE, "application/yaml")], OPENAPI).into_response())
}

// ---------------------------------------------------------------------------------------
// Runs

async fn repos(State(server): Shared, headers: HeaderMap) -> Answer {
    may_read(&server, &headers)?;
    // Branches and tags nobody built are for people who signed in, even when runs are
    // public.
    let operator = identify(&server, &headers).is_some();
    let mut repos = Vec::new();
    for r in server.repos.iter() {
        let mut repo = json!({
            "name": r.config.name,
            "url": crate::repo::without_credentials(&r.config.url),
            "pipeline": r.config.pipeline,
            "poll_seconds": r.config.poll.map(|p| p.as_secs()),
        });
        if operator {
            // What polling has seen of each branch and tag: empty until the first look.
            let refs = server.store.seen_refs(&r.config.name).map_err(internal)?;
            repo["refs"] = json!(refs);
        }
        repos.push(repo);
    }
    Ok(axum::Json(repos).into_response())
}

#[derive(Deserialize)]
struct DeploymentsQuery {
    limit: Option<usize>,
    repo: Option<String>,
    environment: Option<String>,
}

/// What went to each environment, newest first.
async fn deployments(
    State(server): Shared,
    headers: HeaderMap,
    Query(query): Query<DeploymentsQuery>,
) -> Answer {
    may_read(&server, &headers)?;
    let found = server
        .store
        .deployments(&crate::store::DeploymentQuery {
            limit: query.limit.unwrap_or(50).clamp(1, 500),
            repo: query.repo,
            environment: query.environment,
            run: None,
        })
        .map_err(internal)?;
    Ok(axum::Json(found).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    before: Option<i64>,
    repo: Option<String>,
}

impl From<ListQuery> for Page {
    fn from(query: ListQuery) -> Page {
        Page {
            limit: query.limit.unwrap_or(50).clamp(1, 500),
            before: query.before,
            repo: query.repo,
        }
    }
}

/// The numbered `what` (`run`, `delivery`) that `get` finds: 400 for text that is not a
/// number, 404 for a number that names nothing.
fn numbered<T>(
    id: &str,
    what: &str,
    get: impl FnOnce(i64) -> crate::store::Result<Option<T>>,
) -> Result<T, ApiError> {
    let number: i64 = id.parse().map_err(|_| {
        problem(
            StatusCode::BAD_REQUEST,
            format!("`{id}` is not a {what} id"),
        )
    })?;
    match get(number) {
        Ok(Some(found)) => Ok(found),
        Ok(None) => Err(problem(
            StatusCode::NOT_FOUND,
            format!("there is no {what} #{number}"),
        )),
        Err(e) => Err(internal(e)),
    }
}

/// Deliveries, newest first, and what became of each. For people who signed in: they
/// include pushes to branches nobody builds and pull requests that started nothing.
async fn list_deliveries(
    State(server): Shared,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Answer {
    writer(&server, &headers)?;
    match server.store.deliveries(&query.into()) {
        Ok(found) => Ok(axum::Json(found).into_response()),
        Err(e) => Err(internal(e)),
    }
}

async fn show_delivery(
    State(server): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    writer(&server, &headers)?;
    let found = numbered(&id, "delivery", |id| server.store.delivery(id))?;
    Ok(axum::Json(found).into_response())
}

fn run_json(run: &Run) -> Value {
    let mut value = serde_json::to_value(run).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("duration_ms".into(), json!(run.duration_ms()));
        let branch = run.source.reference.strip_prefix("refs/heads/");
        map.insert("branch".into(), json!(branch));
    }
    value
}

async fn list_runs(
    State(server): Shared,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Answer {
    may_read(&server, &headers)?;
    match server.store.runs(&query.into()) {
        Ok(runs) => Ok(axum::Json(runs.iter().map(run_json).collect::<Vec<_>>()).into_response()),
        Err(e) => Err(internal(e)),
    }
}

/// The run, or the response that says why not.
fn find(server: &Server, headers: &HeaderMap, id: &str) -> Result<Run, ApiError> {
    may_read(server, headers)?;
    numbered(id, "run", |id| server.store.run(id))
}

async fn show_run(State(server): Shared, headers: HeaderMap, Path(id): Path<String>) -> Answer {
    let run = find(&server, &headers, &id)?;
    let (jobs, approvals) = match (server.store.jobs(run.id), server.store.approvals(run.id)) {
        (Ok(jobs), Ok(approvals)) => (jobs, approvals),
        (Err(e), _) | (_, Err(e)) => return Err(internal(e)),
    };
    let record = server.record_dir(&run);
    let artifacts: Vec<Value> = record
        .as_deref()
        .and_then(|dir| ferry_engine::artifacts::list(dir).ok())
        .unwrap_or_default()
        .iter()
        .map(|a| json!({ "name": a.name, "job": a.job, "files": a.file_count(), "size": a.size() }))
        .collect();
    let (annotations, summaries) = record.as_deref().map(said).unwrap_or_default();
    let deployments = server
        .store
        .deployments(&crate::store::DeploymentQuery {
            limit: 100,
            run: Some(run.id),
            ..Default::default()
        })
        .map_err(internal)?;
    let mut value = run_json(&run);
    if let Some(map) = value.as_object_mut() {
        map.insert("jobs".into(), json!(jobs));
        map.insert("approvals".into(), json!(approvals));
        map.insert("artifacts".into(), json!(artifacts));
        map.insert("annotations".into(), json!(annotations));
        map.insert("summaries".into(), json!(summaries));
        map.insert("deployments".into(), json!(deployments));
        let services: Vec<Value> = record
            .as_deref()
            .map(ferry_engine::record::service_logs)
            .unwrap_or_default()
            .into_iter()
            .map(|(job, service, size)| json!({ "job": job, "service": service, "size": size }))
            .collect();
        map.insert("services".into(), json!(services));
    }
    Ok(axum::Json(value).into_response())
}

/// The annotations a run's steps made, and the summaries they wrote
/// (`$FERRY_STEP_SUMMARY`, masked when the step ended), from its record.
fn said(dir: &std::path::Path) -> (Vec<Value>, Vec<Value>) {
    let Ok(text) = std::fs::read_to_string(dir.join("events.jsonl")) else {
        return Default::default();
    };
    let (annotations, mut summaries): (Vec<Value>, Vec<Value>) = text
        .lines()
        .filter(|line| {
            line.contains(r#""type":"annotation""#) || line.contains(r#""type":"summary""#)
        })
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["type"] == "annotation" || event["type"] == "summary")
        .partition(|event| event["type"] == "annotation");
    // Each step's is at most 1 MiB, but a matrix has many steps: the page gets the first
    // few MiB, and says where the rest is.
    let mut shown = 0;
    for summary in &mut summaries {
        shown += summary["markdown"].as_str().map_or(0, str::len);
        if shown > MAX_RUN_SUMMARIES {
            summary["markdown"] = Value::from(
                "*(not shown here: the run's summaries pass 4 MiB; `run.json` in the run record has it)*",
            );
        }
    }
    (annotations, summaries)
}

/// Most bytes of step summaries one run's page shows.
const MAX_RUN_SUMMARIES: usize = 4 << 20;

/// Where a run's event stream is: waiting for a queued run to start, replaying what a
/// running run said so far, following it live, or reading a finished run's record.
enum Feed {
    Wait,
    Live(
        std::collections::VecDeque<Arc<str>>,
        broadcast::Receiver<Arc<str>>,
    ),
    /// A finished run read from its record: the reader, and the batch it read last.
    Disk(
        Box<crate::replay::Replay>,
        std::collections::VecDeque<String>,
    ),
    Done,
}

/// Server-sent events of a run: everything it said so far, then each event as it
/// happens, then `end`. A queued run's stream waits for it to start; a finished run's
/// events come from its record.
async fn events(State(server): Shared, headers: HeaderMap, Path(id): Path<String>) -> Answer {
    let run = find(&server, &headers, &id)?;
    let id = run.id;
    let Some(viewer) = server.live.view(id) else {
        return Err(problem(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "run #{id} has as many viewers as the server takes now ({} a run, {} in all); try again later",
                crate::live::MAX_VIEWERS,
                crate::live::MAX_ALL_VIEWERS
            ),
        ));
    };
    let stream = futures_util::stream::unfold(Feed::Wait, move |mut feed| {
        let server = server.clone();
        // The stream holds the viewer's place until it is dropped.
        let _viewer = &viewer;
        async move {
            loop {
                feed = match feed {
                    Feed::Wait => match server.live.subscribe(id) {
                        Some(live) => {
                            let mut history: std::collections::VecDeque<Arc<str>> =
                                live.history.into();
                            if live.dropped > 0 {
                                let text = format!(
                                    "the first {} log lines are not shown live; each step's full log is at /api/runs/{id}/logs/JOB/STEP",
                                    live.dropped
                                );
                                history.push_front(
                                    json!({ "type": "notice", "text": text }).to_string().into(),
                                );
                            }
                            Feed::Live(history, live.receiver)
                        }
                        None => match server.store.run(id) {
                            Ok(Some(run)) if run.status.finished() || run.record.is_some() => {
                                match server.record_dir(&run) {
                                    Some(dir) => Feed::Disk(
                                        Box::new(crate::replay::Replay::open(&dir)),
                                        Default::default(),
                                    ),
                                    None => return Some((end(), Feed::Done)),
                                }
                            }
                            Ok(Some(_)) => {
                                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                                Feed::Wait
                            }
                            _ => return Some((end(), Feed::Done)),
                        },
                    },
                    Feed::Live(mut history, mut receiver) => {
                        if let Some(event) = history.pop_front() {
                            return Some((message(&event), Feed::Live(history, receiver)));
                        }
                        let item = match receiver.recv().await {
                            Ok(event) => message(&event),
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                let text = format!("{n} events were skipped; reload to see them");
                                message(&json!({ "type": "notice", "text": text }).to_string())
                            }
                            Err(broadcast::error::RecvError::Closed) => {
                                return Some((end(), Feed::Done));
                            }
                        };
                        return Some((item, Feed::Live(history, receiver)));
                    }
                    Feed::Disk(mut replay, mut lines) => {
                        if let Some(line) = lines.pop_front() {
                            return Some((message(&line), Feed::Disk(replay, lines)));
                        }
                        // The next batch, read off the runtime; a viewer that does not
                        // read holds this one batch and waits.
                        let read = tokio::task::spawn_blocking(move || {
                            let batch = replay.next_batch();
                            (replay, batch)
                        })
                        .await;
                        match read {
                            Ok((replay, batch)) if !batch.is_empty() => {
                                Feed::Disk(replay, batch.into())
                            }
                            _ => return Some((end(), Feed::Done)),
                        }
                    }
                    Feed::Done => return None,
                }
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

type SseItem = Result<SseEvent, Infallible>;

fn message(data: &str) -> SseItem {
    Ok(SseEvent::default().data(data))
}

fn end() -> SseItem {
    Ok(SseEvent::default().event("end").data(""))
}

async fn step_log(
    State(server): Shared,
    headers: HeaderMap,
    Path((id, job, step)): Path<(String, String, String)>,
) -> Answer {
    let run = find(&server, &headers, &id)?;
    let Some(dir) = server.record_dir(&run) else {
        return Err(problem(StatusCode::NOT_FOUND, "the run has not started"));
    };
    let Some(log) = crate::replay::step_logs(&dir).remove(&(job.clone(), step.clone())) else {
        return Err(problem(
            StatusCode::NOT_FOUND,
            format!("run #{} has no step `{step}` in job `{job}`", run.id),
        ));
    };
    match tokio::fs::read(dir.join(log)).await {
        Ok(bytes) => {
            Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response())
        }
        Err(_) => Err(problem(StatusCode::NOT_FOUND, "the step wrote no log")),
    }
}

/// A service's log (`services:`), as the run record keeps it. Only names the record lists
/// are served: nothing of the request becomes a path.
async fn service_log(
    State(server): Shared,
    headers: HeaderMap,
    Path((id, job, service)): Path<(String, String, String)>,
) -> Answer {
    let run = find(&server, &headers, &id)?;
    let Some(dir) = server.record_dir(&run) else {
        return Err(problem(StatusCode::NOT_FOUND, "the run has not started"));
    };
    let known = ferry_engine::record::service_logs(&dir)
        .into_iter()
        .any(|(j, s, _)| j == job && s == service);
    if !known {
        return Err(problem(
            StatusCode::NOT_FOUND,
            format!("run #{} has no service `{service}` in job `{job}`", run.id),
        ));
    }
    let path = ferry_engine::record::service_log_path(&dir, &job, &service);
    match tokio::fs::read(path).await {
        Ok(bytes) => {
            Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response())
        }
        Err(_) => Err(problem(StatusCode::NOT_FOUND, "the service wrote no log")),
    }
}

async fn list_artifacts(
    State(server): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let run = find(&server, &headers, &id)?;
    let list = server
        .record_dir(&run)
        .map(|dir| ferry_engine::artifacts::list(&dir))
        .transpose();
    match list {
        Ok(list) => {
            let list: Vec<Value> = list
                .unwrap_or_default()
                .iter()
                .map(|a| {
                    let files: Vec<Value> = a
                        .tree
                        .entries
                        .iter()
                        .filter_map(|e| match e {
                            ferry_engine::files::Entry::File { path, size, .. } => {
                                Some(json!({ "path": path, "size": size }))
                            }
                            _ => None,
                        })
                        .collect();
                    json!({ "name": a.name, "job": a.job, "step": a.step, "size": a.size(), "files": files })
                })
                .collect();
            Ok(axum::Json(list).into_response())
        }
        Err(e) => Err(internal(e)),
    }
}

/// The artifact and where its files' contents are, or the response that says why not.
fn artifact(
    server: &Server,
    headers: &HeaderMap,
    id: &str,
    name: &str,
) -> Result<
    (
        ferry_engine::artifacts::Artifact,
        ferry_engine::files::Blobs,
    ),
    ApiError,
> {
    if !ferry_model::is_artifact_name(name) {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            format!(
                "`{}` is not an artifact name: {}",
                name.escape_debug(),
                ferry_model::ARTIFACT_NAME_RULE
            ),
        ));
    }
    let run = find(server, headers, id)?;
    let missing = || {
        problem(
            StatusCode::NOT_FOUND,
            format!("run #{} has no artifact `{name}`", run.id),
        )
    };
    let dir = server.record_dir(&run).ok_or_else(missing)?;
    let state = server.state_dir(&run.source.repo).ok_or_else(missing)?;
    match ferry_engine::artifacts::read(&dir, name) {
        Ok(Some(artifact)) => Ok((artifact, ferry_engine::artifacts::blobs(&state))),
        Ok(None) => Err(missing()),
        Err(e) => Err(internal(e)),
    }
}

/// The whole artifact as a tar archive.
async fn artifact_tar(
    State(server): Shared,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
) -> Answer {
    let (artifact, blobs) = artifact(&server, &headers, &id, &name)?;
    // Every file is there before the answer starts: a missing one is a 500, not a cut tar.
    for (sha, _) in artifact.tree.files() {
        let found = match blobs.path(sha) {
            Ok(blob) => tokio::fs::metadata(blob).await.map(drop),
            Err(e) => Err(e),
        };
        found.map_err(internal)?;
    }
    let body = written_body(move |out| {
        use ferry_engine::files::Entry;
        use ferry_tar::{Header, Kind};
        let mut writer = ferry_tar::Writer::new(out);
        for entry in &artifact.tree.entries {
            let (kind, mode, size, sha) = match entry {
                Entry::Dir { mode, .. } => (Kind::Dir, *mode, 0, None),
                Entry::File {
                    mode, size, sha256, ..
                } => (Kind::File, *mode, *size, Some(sha256)),
                Entry::Link { target, .. } => (Kind::Symlink(target.clone()), 0o777, 0, None),
            };
            let header = Header {
                path: entry.path().to_string(),
                kind,
                mode,
                uid: 0,
                gid: 0,
                size,
                mtime: artifact.created / 1000,
            };
            match sha {
                Some(sha) => {
                    let mut file = std::fs::File::open(blobs.path(sha)?)?;
                    writer.append(&header, &mut file)?;
                }
                None => writer.append(&header, &mut std::io::empty())?,
            }
        }
        writer.finish().map(drop)
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (
                header::CONTENT_DISPOSITION,
                attachment(&format!("{name}.tar")),
            ),
        ],
        body,
    )
        .into_response())
}

/// A response body that `write` produces on a blocking thread, a chunk at a time: the
/// client's pace decides how much waits in memory (a few chunks), not the size of what is
/// sent. A failure part way is logged and cuts the body short.
fn written_body(
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send + 'static,
) -> Body {
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter {
            sender: sender.clone(),
            chunk: Vec::new(),
        };
        if let Err(e) = write(&mut out).and_then(|()| std::io::Write::flush(&mut out)) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("error: writing a download: {e}");
            }
            let _ = sender.blocking_send(Err(e));
        }
    });
    Body::from_stream(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|chunk| (chunk, receiver)) },
    ))
}

/// Gathers writes into chunks of [`ChunkWriter::SIZE`] for [`written_body`].
struct ChunkWriter {
    sender: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    chunk: Vec<u8>,
}

impl ChunkWriter {
    const SIZE: usize = 64 << 10;
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.chunk.extend_from_slice(data);
        if self.chunk.len() >= Self::SIZE {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.chunk.is_empty() {
            let chunk = Bytes::from(std::mem::take(&mut self.chunk));
            self.sender.blocking_send(Ok(chunk)).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
            })?;
        }
        Ok(())
    }
}

/// A `Content-Disposition` that saves as `file_name`, kept to characters that cannot end
/// the quoted string or the header.
fn attachment(file_name: &str) -> String {
    let safe: String = file_name
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\u{0}'..='\u{1f}' | '\u{7f}' => '_',
            c if c.is_ascii() => c,
            _ => '_',
        })
        .collect();
    format!("attachment; filename=\"{safe}\"")
}

/// One file of an artifact.
async fn artifact_file(
    State(server): Shared,
    headers: HeaderMap,
    Path((id, name, path)): Path<(String, String, String)>,
) -> Answer {
    let (artifact, blobs) = artifact(&server, &headers, &id, &name)?;
    let sha = artifact.tree.entries.iter().find_map(|e| match e {
        ferry_engine::files::Entry::File {
            path: p, sha256, ..
        } if *p == path => Some(sha256),
        _ => None,
    });
    let Some(sha) = sha else {
        return Err(problem(
            StatusCode::NOT_FOUND,
            format!("artifact `{name}` has no file `{path}`"),
        ));
    };
    let file_name = path.rsplit('/').next().unwrap_or(&path);
    let blob = blobs.path(sha).map_err(internal)?;
    let size = tokio::fs::metadata(&blob).await.map_err(internal)?.len();
    let body =
        written_body(move |out| std::io::copy(&mut std::fs::File::open(blob)?, out).map(drop));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, attachment(file_name)),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
struct Decide {
    job: String,
    #[serde(default = "yes")]
    approve: bool,
    #[serde(default)]
    reason: Option<String>,
}

fn yes() -> bool {
    true
}

async fn approve(
    State(server): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Json(decide): axum::Json<Decide>,
) -> Answer {
    let who = writer(&server, &headers)?;
    let run = find(&server, &headers, &id)?;
    let Some(dir) = server.record_dir(&run) else {
        return Err(problem(
            StatusCode::CONFLICT,
            format!("run #{} has not started", run.id),
        ));
    };
    let mut decision = ferry_engine::gate::decision(decide.approve, decide.reason);
    decision.by = who;
    match ferry_engine::gate::decide(&dir, &decide.job, &decision) {
        Ok(pending) => Ok(axum::Json(json!({
            "run": run.id,
            "job": pending.job,
            "environment": pending.environment,
            "approved": decision.approved,
            "by": decision.by,
        }))
        .into_response()),
        Err(e) => Err(problem(StatusCode::CONFLICT, e)),
    }
}

async fn cancel(State(server): Shared, headers: HeaderMap, Path(id): Path<String>) -> Answer {
    writer(&server, &headers)?;
    let run = find(&server, &headers, &id)?;
    match server.cancel(run.id) {
        Ok(true) => {
            Ok((StatusCode::ACCEPTED, axum::Json(json!({ "run": run.id }))).into_response())
        }
        Ok(false) => Err(problem(
            StatusCode::CONFLICT,
            format!("run #{} already {}", run.id, run.status.as_str()),
        )),
        Err(e) => Err(internal(e)),
    }
}

async fn rerun(State(server): Shared, headers: HeaderMap, Path(id): Path<String>) -> Answer {
    writer(&server, &headers)?;
    let run = find(&server, &headers, &id)?;
    if !run.status.finished() {
        return Err(problem(
            StatusCode::CONFLICT,
            format!("run #{} is still {}", run.id, run.status.as_str()),
        ));
    }
    match server.rerun(run.id) {
        Ok(new) => Ok((StatusCode::CREATED, axum::Json(json!({ "run": new }))).into_response()),
        Err(e) => Err(internal(e)),
    }
}

#[derive(Deserialize)]
struct Trigger {
    repo: Option<String>,
    #[serde(default, rename = "ref")]
    reference: String,
    #[serde(default)]
    inputs: BTreeMap<String, String>,
}

async fn trigger(
    State(server): Shared,
    headers: HeaderMap,
    axum::Json(request): axum::Json<Trigger>,
) -> Answer {
    writer(&server, &headers)?;
    let repo = match (request.repo, server.repos.as_slice()) {
        (Some(repo), _) => repo,
        (None, [only]) => only.config.name.clone(),
        (None, _) => {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                "the server builds several repositories; name one in `repo`",
            ));
        }
    };
    match server
        .trigger(&repo, &request.reference, request.inputs)
        .await
    {
        Ok(id) => Ok((StatusCode::CREATED, axum::Json(json!({ "run": id }))).into_response()),
        Err(e) => Err(problem(StatusCode::BAD_REQUEST, e)),
    }
}

// ---------------------------------------------------------------------------------------
// Webhooks

struct HeaderLookup<'a>(&'a HeaderMap);

impl hooks::Headers for HeaderLookup<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Verifies a hook against each repository's secret (the server's unless the repository
/// has its own), then keeps what it says. 401 for a bad or missing signature, 202 when
/// kept, 200 when it was a redelivery or starts nothing.
async fn hook(
    State(server): Shared,
    Path(forge): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let Some(forge) = Forge::parse(&forge) else {
        return Err(problem(
            StatusCode::NOT_FOUND,
            format!("no webhook endpoint for `{forge}`; use github, gitea, forgejo or gitlab"),
        ));
    };
    let lookup = HeaderLookup(&headers);
    // Which repository a hook is for is only known from its body, and the body is only
    // trusted once a secret verified it: try the secrets of the repositories there are.
    let mut last = HookError::NoSecret;
    let mut verified = Vec::new();
    for repo in &server.repos {
        match hooks::verify(forge, &lookup, &body, repo.config.webhook_secret.as_deref()) {
            Ok(()) => verified.push(repo.clone()),
            Err(e) => last = e,
        }
    }
    if verified.is_empty() {
        return Err(problem(StatusCode::UNAUTHORIZED, last.to_string()));
    }
    let hook = match hooks::parse(forge, &lookup, &body) {
        Ok(hook) => hook,
        Err(e) => return Err(problem(StatusCode::BAD_REQUEST, e.to_string())),
    };
    let (repository, urls, delivery, mut source) = match hook {
        Hook::Change {
            repository,
            urls,
            delivery,
            source,
        } => (repository, urls, delivery, source),
        Hook::Ignored(why) => {
            return Ok(axum::Json(json!({ "ignored": why })).into_response());
        }
    };
    let Some(repo) = verified.iter().find(|r| r.matches(&repository, &urls)) else {
        return Err(problem(
            StatusCode::NOT_FOUND,
            format!("`{repository}` is not a repository this server builds"),
        ));
    };
    source.repo = repo.config.name.clone();
    let body = hex::encode(hooks::sha256(&body));
    match server.deliver(&delivery, Some(&body), &source) {
        Ok(Some(id)) => Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({ "delivery": id, "repo": source.repo, "sha": source.sha })),
        )
            .into_response()),
        Ok(None) => Ok(axum::Json(json!({ "duplicate": delivery })).into_response()),
        Err(e) => Err(internal(e)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn basic_credentials_decode() {
        assert_eq!(
            super::base64_decode("YWRhOnMzY3JldA==").as_deref(),
            Some("ada:s3cret")
        );
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(super::same("abc", "abc"));
        assert!(!super::same("abc", "abd"));
        assert!(!super::same("abc", "ab"));
    }
}
