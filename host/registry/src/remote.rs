//! The OCI distribution API over HTTP(S), with the Bearer-token and basic authentication
//! registries ask for. Loopback registries (and hosts in `FERRY_INSECURE_REGISTRIES`) are
//! spoken to over plain HTTP, like Docker does; everything else over TLS.

use crate::artifact::{self, Descriptor, INDEX, Index, MANIFEST};
use crate::credentials::{self, Credentials};
use crate::store::{Fetched, Store};
use base64::Engine as _;
use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;
use ureq::http::{Method, Request, Response};

const MANIFEST_LIMIT: u64 = 4 << 20;
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json";

pub struct Remote {
    host: String,
    base: String,
    agent: ureq::Agent,
    credentials: Mutex<Option<Option<Credentials>>>,
    /// `Authorization` values by scope, reused until the registry refuses them.
    tokens: Mutex<HashMap<String, String>>,
}

impl Remote {
    /// A client for `host`; credentials are read from the Docker config the first time the
    /// registry asks for them, unless `credentials` are given.
    pub fn new(host: &str, credentials: Option<Credentials>) -> Remote {
        let insecure = std::env::var("FERRY_INSECURE_REGISTRIES").unwrap_or_default();
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let plain = matches!(name, "localhost" | "127.0.0.1" | "[::1]")
            || name.starts_with("127.")
            || insecure.split(',').any(|h| h.trim() == host);
        let scheme = if plain { "http" } else { "https" };
        // Docker Hub's API lives on another host than the name people write.
        let api = if host == "docker.io" {
            "registry-1.docker.io"
        } else {
            host
        };
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(10)))
                .timeout_global(Some(Duration::from_secs(600)))
                .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        Remote {
            host: host.to_string(),
            base: format!("{scheme}://{api}"),
            agent,
            credentials: Mutex::new(credentials.map(Some)),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn credentials(&self) -> Result<Option<Credentials>, String> {
        let mut cached = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
        if cached.is_none() {
            *cached = Some(credentials::lookup(&self.host)?);
        }
        Ok(cached.clone().flatten())
    }

    /// Checks that the registry answers and accepts the credentials (`ferry login`).
    pub fn ping(&self) -> Result<(), String> {
        let response = self.send(Method::GET, "/v2/", &[], &[], "")?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            401 => Err(format!("{} refused the credentials (HTTP 401)", self.host)),
            s => Err(format!("{} answered HTTP {s} at /v2/", self.host)),
        }
    }

    /// Sends a request, answering one authentication challenge if the registry makes one.
    fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        scope: &str,
    ) -> Result<Response<ureq::Body>, String> {
        let url = if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let attempt = |authorization: Option<&str>| {
            let mut request = Request::builder().method(method.clone()).uri(&url);
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            if let Some(a) = authorization {
                request = request.header("Authorization", a);
            }
            let request = request
                .body(body)
                .map_err(|e| format!("bad request to {url}: {e}"))?;
            self.agent
                .run(request)
                .map_err(|e| format!("cannot reach registry {}: {e}", self.host))
        };
        let known = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(scope)
            .cloned();
        let response = attempt(known.as_deref())?;
        if response.status() != 401 {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let authorization = self.authenticate(&challenge, scope)?;
        let response = attempt(Some(&authorization))?;
        if response.status() == 401 {
            return Err(self.refused());
        }
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(scope.to_string(), authorization);
        Ok(response)
    }

    fn refused(&self) -> String {
        format!(
            "{} refused the credentials (HTTP 401)\nhint: `ferry login {}` stores working ones",
            self.host, self.host
        )
    }

    /// The `Authorization` value that answers `challenge`.
    fn authenticate(&self, challenge: &str, scope: &str) -> Result<String, String> {
        let credentials = self.credentials()?;
        let (kind, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let basic = |c: &Credentials| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password))
            )
        };
        if kind.eq_ignore_ascii_case("basic") {
            return match &credentials {
                Some(c) => Ok(basic(c)),
                None => Err(format!(
                    "{} needs a login (HTTP 401)\nhint: run `ferry login {}`",
                    self.host, self.host
                )),
            };
        }
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(format!(
                "{} asks for `{kind}` authentication, which ferry does not speak",
                self.host
            ));
        }
        let param = |name: &str| {
            params.split(',').find_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                (k == name).then(|| v.trim_matches('"').to_string())
            })
        };
        let realm = param("realm")
            .ok_or_else(|| format!("{} sent a Bearer challenge without a realm", self.host))?;
        let mut url = format!("{realm}?");
        if let Some(service) = param("service") {
            url.push_str(&format!("service={}&", encode(&service)));
        }
        if !scope.is_empty() {
            url.push_str(&format!("scope={}", encode(scope)));
        }
        let mut request = Request::builder().method(Method::GET).uri(&url);
        if let Some(c) = &credentials {
            request = request.header("Authorization", basic(c));
        }
        let request = request
            .body(&[][..])
            .map_err(|e| format!("bad token request: {e}"))?;
        let mut response = self
            .agent
            .run(request)
            .map_err(|e| format!("cannot reach the token service of {}: {e}", self.host))?;
        if response.status() == 401 || response.status() == 403 {
            return Err(self.refused());
        }
        if !response.status().is_success() {
            return Err(format!(
                "the token service of {} answered HTTP {}",
                self.host,
                response.status().as_u16()
            ));
        }
        let body: serde_json::Value = response
            .body_mut()
            .with_config()
            .limit(MANIFEST_LIMIT)
            .read_json()
            .map_err(|e| format!("the token service of {} sent no token: {e}", self.host))?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| format!("the token service of {} sent no token", self.host))?;
        Ok(format!("Bearer {token}"))
    }

    fn pull_scope(repository: &str) -> String {
        format!("repository:{repository}:pull")
    }

    fn push_scope(repository: &str) -> String {
        format!("repository:{repository}:pull,push")
    }

    fn failure(&self, what: &str, mut response: Response<ureq::Body>) -> String {
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(4096)
            .read_to_string()
            .unwrap_or_default();
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("errors")?
                    .as_array()?
                    .iter()
                    .filter_map(|e| e.get("message")?.as_str().map(str::to_string))
                    .reduce(|a, b| format!("{a}; {b}"))
            })
            .unwrap_or_default();
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(": {detail}")
        };
        match status {
            403 => format!(
                "{} denied {what} (HTTP 403){detail}\nhint: the credentials from `ferry login {}` need access to it",
                self.host, self.host
            ),
            _ => format!("{what} on {} failed: HTTP {status}{detail}", self.host),
        }
    }

    /// Follows `Link: <…>; rel="next"` pagination, collecting one list field.
    fn paged(
        &self,
        first: String,
        field: &str,
        scope: &str,
    ) -> Result<Option<Vec<String>>, String> {
        let mut items = Vec::new();
        let mut next = Some(first);
        while let Some(path) = next.take() {
            let mut response = self.send(Method::GET, &path, &[], &[], scope)?;
            if response.status() == 404 {
                return Ok(None);
            }
            if !response.status().is_success() {
                return Err(self.failure(&format!("listing {path}"), response));
            }
            next = response
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(|link| {
                    let (target, rel) = link.split_once(';')?;
                    rel.contains("rel=\"next\"")
                        .then(|| target.trim().trim_matches(['<', '>']).to_string())
                });
            let body: serde_json::Value = response
                .body_mut()
                .with_config()
                .limit(MANIFEST_LIMIT)
                .read_json()
                .map_err(|e| format!("{} sent an unreadable list: {e}", self.host))?;
            items.extend(
                body.get(field)
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string)),
            );
        }
        Ok(Some(items))
    }
}

impl Store for Remote {
    fn manifest(&self, repository: &str, reference: &str) -> Result<Option<Fetched>, String> {
        let path = format!("/v2/{repository}/manifests/{reference}");
        let mut response = self.send(
            Method::GET,
            &path,
            &[("Accept", ACCEPT)],
            &[],
            &Self::pull_scope(repository),
        )?;
        if response.status() == 404 {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(self.failure(&format!("reading {repository}:{reference}"), response));
        }
        let media_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(MANIFEST)
            .to_string();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MANIFEST_LIMIT)
            .read_to_vec()
            .map_err(|e| format!("reading the manifest of {repository}:{reference}: {e}"))?;
        let digest = artifact::digest(&bytes);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(format!(
                "{} sent a manifest with digest {digest} for {repository}@{reference}: refusing it",
                self.host
            ));
        }
        Ok(Some(Fetched {
            bytes,
            digest,
            media_type,
        }))
    }

    fn blob(&self, repository: &str, digest: &str, limit: u64) -> Result<Vec<u8>, String> {
        let path = format!("/v2/{repository}/blobs/{digest}");
        let mut response =
            self.send(Method::GET, &path, &[], &[], &Self::pull_scope(repository))?;
        if !response.status().is_success() {
            return Err(self.failure(&format!("reading blob {digest} of {repository}"), response));
        }
        let mut bytes = Vec::new();
        response
            .body_mut()
            .as_reader()
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("reading blob {digest} of {repository}: {e}"))?;
        Ok(bytes)
    }

    fn has_blob(&self, repository: &str, digest: &str) -> Result<bool, String> {
        let path = format!("/v2/{repository}/blobs/{digest}");
        let response = self.send(Method::HEAD, &path, &[], &[], &Self::push_scope(repository))?;
        Ok(response.status().is_success())
    }

    fn put_blob(&self, repository: &str, digest: &str, bytes: &[u8]) -> Result<(), String> {
        if self.has_blob(repository, digest)? {
            return Ok(());
        }
        let scope = Self::push_scope(repository);
        let start = format!("/v2/{repository}/blobs/uploads/");
        let response = self.send(Method::POST, &start, &[], &[], &scope)?;
        if response.status() != 202 {
            return Err(self.failure(&format!("starting an upload to {repository}"), response));
        }
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("{} started an upload without a Location", self.host))?
            .to_string();
        let separator = if location.contains('?') { '&' } else { '?' };
        let target = format!("{location}{separator}digest={}", encode(digest));
        let length = bytes.len().to_string();
        let response = self.send(
            Method::PUT,
            &target,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", &length),
            ],
            bytes,
            &scope,
        )?;
        if response.status() != 201 {
            return Err(self.failure(&format!("uploading {digest} to {repository}"), response));
        }
        Ok(())
    }

    fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), String> {
        let path = format!("/v2/{repository}/manifests/{reference}");
        let response = self.send(
            Method::PUT,
            &path,
            &[("Content-Type", media_type)],
            bytes,
            &Self::push_scope(repository),
        )?;
        if response.status() != 201 {
            return Err(self.failure(&format!("pushing {repository}:{reference}"), response));
        }
        Ok(())
    }

    fn tags(&self, repository: &str) -> Result<Vec<String>, String> {
        let first = format!("/v2/{repository}/tags/list?n=1000");
        Ok(self
            .paged(first, "tags", &Self::pull_scope(repository))?
            .unwrap_or_default())
    }

    fn repositories(&self, prefix: &str) -> Result<Vec<String>, String> {
        let listed = self.paged(
            "/v2/_catalog?n=1000".to_string(),
            "repositories",
            "registry:catalog:*",
        );
        let all = match listed {
            Ok(Some(all)) => all,
            Ok(None) | Err(_) => {
                return Err(format!(
                    "{} does not list its repositories (no `/v2/_catalog`)\nhint: ask for one plugin with `ferry plugin info {}/{prefix}/NAME:TAG`",
                    self.host, self.host
                ));
            }
        };
        let prefix = prefix.trim_matches('/');
        Ok(all
            .into_iter()
            .filter(|r| prefix.is_empty() || r == prefix || r.starts_with(&format!("{prefix}/")))
            .collect())
    }

    fn native_referrers(
        &self,
        repository: &str,
        digest: &str,
    ) -> Result<Option<Vec<Descriptor>>, String> {
        let path = format!("/v2/{repository}/referrers/{digest}");
        let mut response = self.send(
            Method::GET,
            &path,
            &[("Accept", INDEX)],
            &[],
            &Self::pull_scope(repository),
        )?;
        if !response.status().is_success() {
            return Ok(None);
        }
        let index: Index = response
            .body_mut()
            .with_config()
            .limit(MANIFEST_LIMIT)
            .read_json()
            .map_err(|e| format!("{} sent an unreadable referrers list: {e}", self.host))?;
        Ok(Some(index.manifests))
    }
}

/// Percent-encodes a query value or a path segment: everything but RFC 3986's unreserved
/// characters.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
