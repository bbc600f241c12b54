//! What stands between a browser and the server's state: dashboard sessions that expire,
//! a limit on wrong passwords, a same-origin rule for every request that changes
//! something, and the headers that keep the dashboard out of other sites' frames.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A session unused this long is over.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// A session is over this long after sign-in, however much it is used.
pub const SESSION_MAX: Duration = Duration::from_secs(7 * 24 * 3600);

struct Session {
    user: String,
    created: Instant,
    used: Instant,
}

/// Dashboard sessions by cookie value.
#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A new session for `user`; its id, or `None` when the system has no randomness.
    pub fn open(&self, user: &str) -> Option<String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).ok()?;
        let id = hex::encode(bytes);
        let now = Instant::now();
        let mut sessions = crate::lock(&self.by_id);
        // Sign-ins are rare: the moment to forget sessions that ended.
        sessions.retain(|_, s| alive(s, now));
        sessions.insert(
            id.clone(),
            Session {
                user: user.to_string(),
                created: now,
                used: now,
            },
        );
        Some(id)
    }

    /// Who the session `id` is, if it has not ended; using it keeps it from idling out.
    pub fn user(&self, id: &str) -> Option<String> {
        let now = Instant::now();
        let mut sessions = crate::lock(&self.by_id);
        match sessions.get_mut(id) {
            Some(session) if alive(session, now) => {
                session.used = now;
                Some(session.user.clone())
            }
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn close(&self, id: &str) {
        crate::lock(&self.by_id).remove(id);
    }

    /// Moves a session's clock, for tests of expiry.
    #[cfg(test)]
    fn age(&self, id: &str, idle: Duration, since_created: Duration) {
        let now = Instant::now();
        if let Some(s) = crate::lock(&self.by_id).get_mut(id) {
            s.used = now.checked_sub(idle).unwrap_or(now);
            s.created = now.checked_sub(since_created).unwrap_or(now);
        }
    }
}

fn alive(session: &Session, now: Instant) -> bool {
    now.duration_since(session.used) < SESSION_IDLE
        && now.duration_since(session.created) < SESSION_MAX
}

/// Wrong passwords allowed per user, and per address, in [`ATTEMPT_WINDOW`].
pub const ATTEMPTS: u32 = 10;
pub const ATTEMPT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Failed sign-ins, counted per user name and per client address, so that neither
/// guessing one user's password from many addresses nor many users' from one address
/// goes faster than [`ATTEMPTS`] a window.
#[derive(Default)]
pub struct Attempts {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Attempts {
    /// `Err(seconds to wait)` when any of `keys` has used up its attempts.
    pub fn check(&self, keys: &[String]) -> Result<(), u64> {
        let now = Instant::now();
        let failures = crate::lock(&self.failures);
        let wait = keys
            .iter()
            .filter_map(|key| failures.get(key))
            .filter(|(count, since)| {
                *count >= ATTEMPTS && now.duration_since(*since) < ATTEMPT_WINDOW
            })
            .map(|(_, since)| (ATTEMPT_WINDOW - now.duration_since(*since)).as_secs() + 1)
            .max();
        wait.map_or(Ok(()), Err)
    }

    pub fn failed(&self, keys: &[String]) {
        let now = Instant::now();
        let mut failures = crate::lock(&self.failures);
        failures.retain(|_, (_, since)| now.duration_since(*since) < ATTEMPT_WINDOW);
        for key in keys {
            failures.entry(key.clone()).or_insert((0, now)).0 += 1;
        }
    }

    pub fn succeeded(&self, keys: &[String]) {
        let mut failures = crate::lock(&self.failures);
        for key in keys {
            failures.remove(key);
        }
    }
}

/// The keys a sign-in attempt counts against: the user named (its first 64 bytes, so a
/// long name costs the table no more than a short one), and the address it came from.
///
/// - The server's token (`None`) is a long random secret, not a password: guessing it is
///   hopeless, and counting against it would let anyone lock every API client out. Only
///   the address counts.
/// - An IPv6 address counts by its /64, which one machine usually holds whole.
/// - Loopback does not count: a reverse proxy on the same machine brings everyone from
///   there, and one guesser would lock everyone out. Limit by address at the proxy.
pub fn attempt_keys(user: Option<&str>, request: &axum::http::Extensions) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(user) = user {
        let cut = (0..=user.len().min(64))
            .rev()
            .find(|&i| user.is_char_boundary(i))
            .unwrap_or(0);
        keys.push(format!("user:{}", &user[..cut]));
    }
    if let Some(axum::extract::ConnectInfo(peer)) =
        request.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        && let Some(address) = crate::http::client(peer.ip())
    {
        keys.push(match address {
            std::net::IpAddr::V6(_) => format!("addr:{address}/64"),
            std::net::IpAddr::V4(_) => format!("addr:{address}"),
        });
    }
    keys
}

/// A `429` that says when to try again.
pub fn wait(seconds: u64) -> Response {
    let mut response = crate::api::refuse(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        format!("too many wrong sign-ins; try again in {seconds} s"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// Credentials on any request (a bearer token, basic credentials) are sign-ins: they are
/// checked here, before the route, and a wrong one counts against the user (or `token`)
/// and the address like a wrong one on the sign-in form, and is answered 401 whatever the
/// route. Otherwise a route that answers everyone (`GET /api/session`, a public server's
/// reads) would tell a guesser whether a guess was right, at full speed.
pub async fn limit_credentials(
    axum::extract::State(server): axum::extract::State<std::sync::Arc<crate::Server>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(value) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return next.run(request).await;
    };
    let (user, right) = crate::api::check_credentials(&server.config.auth, value);
    let keys = attempt_keys(user.as_deref(), request.extensions());
    if let Err(seconds) = server.sign_in.check(&keys) {
        return wait(seconds);
    }
    if !right {
        server.sign_in.failed(&keys);
        return crate::api::refuse(
            axum::http::StatusCode::UNAUTHORIZED,
            "wrong token or password",
        );
    }
    next.run(request).await
}

/// Why a request that would change something was refused as possibly forged, or `None`
/// when it is not.
///
/// A browser attaches cookies and remembered basic credentials to any request a page
/// makes, including pages of other sites and of other ports of this host (which count as
/// the same *site*, so `SameSite` cookies do not help). Such a request is taken only when
/// the browser says it comes from this origin (`Sec-Fetch-Site`, `Origin`) and it sends
/// JSON, which a form or a `no-cors` fetch cannot. A bearer token is never attached by a
/// browser on its own, so a request carrying one was made on purpose.
pub fn forged(headers: &HeaderMap, public_url: Option<&str>) -> Option<String> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if text(header::AUTHORIZATION.as_str()).is_some_and(|a| a.starts_with("Bearer ")) {
        return None;
    }
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Some(format!(
            "a {site} request may not change anything here; use the dashboard, or the API with a bearer token"
        ));
    }
    if let Some(origin) = text(header::ORIGIN.as_str()) {
        let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        let ours = text(header::HOST.as_str()) == Some(authority)
            || public_url.is_some_and(|url| url.trim_end_matches('/') == origin);
        if !ours {
            return Some(format!(
                "a request from `{origin}` may not change anything here; use the dashboard, or the API with a bearer token"
            ));
        }
    }
    let json = text(header::CONTENT_TYPE.as_str()).is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json {
        return Some(
            "a request that changes something sends JSON (`Content-Type: application/json`, even with an empty `{}`), or a bearer token".into(),
        );
    }
    None
}

/// Requests that change state (anything but `GET`, `HEAD`, `OPTIONS`) to `/api/` must not
/// be forged (see [`forged`]); signed webhooks under `/hooks/` prove themselves.
pub async fn same_origin(
    axum::extract::State(public_url): axum::extract::State<Option<String>>,
    request: Request,
    next: Next,
) -> Response {
    let changes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if changes
        && request.uri().path().starts_with("/api/")
        && let Some(why) = forged(request.headers(), public_url.as_deref())
    {
        return crate::api::refuse(axum::http::StatusCode::FORBIDDEN, why);
    }
    next.run(request).await
}

/// Headers on every response: no framing by other sites, no content sniffing, no referrer
/// leaving with a run's URL. Pages that set their own policy (the dashboard) keep it.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'; sandbox",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn sessions_end_when_idle_or_old() {
        let sessions = Sessions::default();
        let id = sessions.open("ada").unwrap();
        assert_eq!(sessions.user(&id).as_deref(), Some("ada"));
        sessions.age(&id, SESSION_IDLE + Duration::from_secs(1), SESSION_IDLE);
        assert_eq!(sessions.user(&id), None, "idle too long");
        let id = sessions.open("ada").unwrap();
        sessions.age(&id, Duration::ZERO, SESSION_MAX + Duration::from_secs(1));
        assert_eq!(sessions.user(&id), None, "too old, however used");
        let id = sessions.open("ada").unwrap();
        sessions.close(&id);
        assert_eq!(sessions.user(&id), None);
        assert_eq!(sessions.user("guess"), None);
    }

    #[test]
    fn wrong_passwords_are_limited_per_user_and_per_address() {
        let attempts = Attempts::default();
        let keys = |user: &str, addr: &str| vec![format!("user:{user}"), format!("addr:{addr}")];
        for _ in 0..ATTEMPTS {
            assert!(attempts.check(&keys("ada", "10.0.0.1")).is_ok());
            attempts.failed(&keys("ada", "10.0.0.1"));
        }
        let wait = attempts.check(&keys("ada", "10.0.0.2")).unwrap_err();
        assert!(wait > 0 && wait <= ATTEMPT_WINDOW.as_secs() + 1, "{wait}");
        assert!(
            attempts.check(&keys("bob", "10.0.0.1")).is_err(),
            "the address"
        );
        assert!(attempts.check(&keys("bob", "10.0.0.2")).is_ok());
    }

    #[test]
    fn attempts_count_against_the_user_and_a_remote_address() {
        let from = |addr: &str| {
            let mut extensions = axum::http::Extensions::new();
            extensions.insert(axum::extract::ConnectInfo(
                addr.parse::<std::net::SocketAddr>().unwrap(),
            ));
            extensions
        };
        assert_eq!(
            attempt_keys(Some("ada"), &from("10.0.0.1:5000")),
            ["user:ada", "addr:10.0.0.1"]
        );
        assert_eq!(
            attempt_keys(None, &from("[2001:db8:1:2:3:4:5:6]:1")),
            ["addr:2001:db8:1:2::/64"],
            "the token counts only against the address, an IPv6 one by its /64"
        );
        assert_eq!(
            attempt_keys(Some("ada"), &from("[::ffff:127.0.0.1]:1")),
            ["user:ada"],
            "loopback is a proxy's address"
        );
        let long = "é".repeat(100);
        let keys = attempt_keys(Some(&long), &axum::http::Extensions::new());
        assert!(keys[0].len() <= 5 + 64, "{}", keys[0].len());
    }

    #[test]
    fn requests_that_a_page_elsewhere_could_make_are_forged() {
        let json = ("content-type", "application/json");
        let ok = [
            headers(&[json, ("host", "ci:8080"), ("origin", "http://ci:8080")]),
            headers(&[json, ("sec-fetch-site", "same-origin")]),
            headers(&[("authorization", "Bearer t")]),
            headers(&[("content-type", "application/json; charset=utf-8")]),
        ];
        for h in &ok {
            assert_eq!(forged(h, None), None, "{h:?}");
        }
        let forgeries = [
            headers(&[json, ("sec-fetch-site", "same-site")]),
            headers(&[json, ("sec-fetch-site", "cross-site")]),
            headers(&[json, ("host", "ci:8080"), ("origin", "http://ci:9999")]),
            headers(&[json, ("host", "ci:8080"), ("origin", "null")]),
            headers(&[
                ("content-type", "text/plain"),
                ("sec-fetch-site", "same-origin"),
            ]),
            headers(&[("content-type", "application/x-www-form-urlencoded")]),
            headers(&[("authorization", "Basic YTpi")]),
            headers(&[]),
        ];
        for h in &forgeries {
            assert!(forged(h, None).is_some(), "{h:?}");
        }
        let proxied = headers(&[
            json,
            ("host", "127.0.0.1:8080"),
            ("origin", "https://ci.example.com"),
        ]);
        assert_eq!(forged(&proxied, Some("https://ci.example.com/")), None);
    }
}
