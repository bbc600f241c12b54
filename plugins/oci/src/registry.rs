//! The OCI distribution API: pulling base images and pushing built ones, with the token
//! (Bearer) and basic authentication registries ask for. Every pulled blob is checked
//! against its digest before it is kept.

use crate::Platform;
use crate::layout::{self as oci, Store};
use ferry_sdk::http::{self, Body, Response, Url};
use serde_json::Value;
use std::io::{self, Read};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(300);
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, String> {
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) if d.starts_with("sha256:") && d.len() == 71 => (r, Some(d.to_string())),
            Some(_) => return Err(format!("`{text}`: a digest is `sha256:` and 64 hex digits")),
            None => (text, None),
        };
        let (name, tag) = match rest.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t.to_string())),
            _ => (rest, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_string(), path.to_string())
            }
            Some(_) => ("docker.io".to_string(), name.to_string()),
            None => ("docker.io".to_string(), format!("library/{name}")),
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c))
        };
        if !valid(&repository) {
            return Err(format!(
                "`{text}`: a repository name is lowercase letters, digits and `._-/`"
            ));
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The tag or digest to ask for.
    pub fn target(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// A session with one registry.
pub struct Client {
    base: Url,
    credentials: Option<(String, String)>,
    authorization: Option<String>,
}

impl Client {
    pub fn new(registry: &str, credentials: Option<(String, String)>) -> Result<Client, String> {
        if registry == "docker.io" {
            return Err(
                "Docker Hub is https-only, and https is not available inside a step yet; use a registry reachable over http (a mirror or a local registry)".into(),
            );
        }
        Ok(Client {
            base: Url::parse(&format!("http://{registry}/v2/"))?,
            credentials,
            authorization: None,
        })
    }

    fn url(&self, path: &str) -> Url {
        Url {
            path: format!("/v2/{path}"),
            ..self.base.clone()
        }
    }

    /// Sends a request, answering one authentication challenge and following redirects.
    fn send(
        &mut self,
        method: &str,
        mut url: Url,
        accept: &[(&str, &str)],
        mut body: Option<(&mut dyn Read, u64)>,
        scope: &str,
    ) -> Result<Response, String> {
        let mut challenged = false;
        for _ in 0..5 {
            let mut headers: Vec<(&str, &str)> = accept.to_vec();
            if let Some(a) = &self.authorization {
                headers.push(("Authorization", a));
            }
            let payload = match body.as_mut() {
                Some((reader, n)) => Body::Reader(&mut **reader, *n),
                None => Body::Empty,
            };
            let response = http::send(method, &url, &headers, payload, TIMEOUT)
                .map_err(|e| format!("{method} {}{}: {e}", url.authority, url.path))?;
            match response.status {
                401 if !challenged && self.authorization.is_none() => {
                    challenged = true;
                    let challenge = response
                        .header("www-authenticate")
                        .unwrap_or("")
                        .to_string();
                    self.authenticate(&challenge, scope)?;
                    if body.is_some() {
                        // The body was consumed; the caller starts the upload again.
                        return Err("retry".into());
                    }
                }
                301 | 302 | 303 | 307 | 308 if method == "GET" || method == "HEAD" => {
                    let location = response
                        .header("location")
                        .ok_or("a redirect without a Location")?
                        .to_string();
                    url = url.join(&location)?;
                    // Redirects go to storage that has its own authorization in the URL.
                    self.authorization = self
                        .authorization
                        .take()
                        .filter(|_| url.authority == self.base.authority);
                }
                _ => return Ok(response),
            }
        }
        Err(format!(
            "{method} {}: too many redirects or challenges",
            url.path
        ))
    }

    fn authenticate(&mut self, challenge: &str, scope: &str) -> Result<(), String> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let params: Vec<(String, String)> = params
            .split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| {
                (
                    k.trim().to_ascii_lowercase(),
                    v.trim().trim_matches('"').to_string(),
                )
            })
            .collect();
        let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let basic = self
            .credentials
            .as_ref()
            .map(|(u, p)| format!("Basic {}", http::base64(format!("{u}:{p}").as_bytes())));
        if scheme.eq_ignore_ascii_case("basic") {
            self.authorization = Some(basic.ok_or_else(|| {
                format!("{} asks for a user name and password: set `username` and `password` (the name of a granted secret)", self.base.authority)
            })?);
            return Ok(());
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(format!(
                "{} asks for `{scheme}` authentication, which is not supported",
                self.base.authority
            ));
        }
        let realm = param("realm").ok_or("a Bearer challenge without a realm")?;
        let mut query = Vec::new();
        if let Some(service) = param("service") {
            query.push(format!("service={}", encode(&service)));
        }
        query.push(format!(
            "scope={}",
            encode(&param("scope").unwrap_or_else(|| scope.to_string()))
        ));
        let url = Url::parse(&format!("{realm}?{}", query.join("&")))?;
        let headers: Vec<(&str, &str)> = basic
            .iter()
            .map(|b| ("Authorization", b.as_str()))
            .collect();
        let mut response = http::send("GET", &url, &headers, Body::Empty, TIMEOUT)
            .map_err(|e| format!("token from {realm}: {e}"))?;
        if response.status != 200 {
            return Err(format!(
                "{realm} refused a token ({}): check `username` and `password`",
                response.status
            ));
        }
        let value: Value =
            serde_json::from_slice(&response.bytes(1 << 20).map_err(|e| e.to_string())?)
                .map_err(|e| format!("the token from {realm} is not JSON: {e}"))?;
        let token = value["token"]
            .as_str()
            .or(value["access_token"].as_str())
            .ok_or("the token response has no token")?;
        self.authorization = Some(format!("Bearer {token}"));
        Ok(())
    }

    /// Pulls `reference` for `platform` into `store`; returns the manifest digest.
    pub fn pull(
        &mut self,
        reference: &Reference,
        platform: &Platform,
        store: &Store,
    ) -> Result<String, String> {
        let scope = format!("repository:{}:pull", reference.repository);
        let (mut digest, mut manifest) =
            self.manifest(reference, reference.target(), &scope, store)?;
        if manifest["manifests"].is_array() {
            let chosen = manifest["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| platform.matches(&m["platform"]))
                .and_then(|m| m["digest"].as_str())
                .ok_or_else(|| {
                    format!(
                        "`{reference}` has no image for {}/{}",
                        platform.os, platform.architecture
                    )
                })?
                .to_string();
            (digest, manifest) = self.manifest(reference, &chosen, &scope, store)?;
        }
        let mut blobs: Vec<&Value> = vec![&manifest["config"]];
        blobs.extend(manifest["layers"].as_array().into_iter().flatten());
        for blob in blobs {
            let d = blob["digest"]
                .as_str()
                .ok_or("a descriptor without a digest")?;
            if store.has(d) {
                continue;
            }
            let url = self.url(&format!("{}/blobs/{d}", reference.repository));
            let mut response = self.send("GET", url, &[], None, &scope)?;
            if response.status != 200 {
                return Err(format!(
                    "blob {d} of `{reference}`: HTTP {}",
                    response.status
                ));
            }
            store
                .import(response.body(), d)
                .map_err(|e| format!("`{reference}`: {e}"))?;
        }
        Ok(digest)
    }

    /// A manifest's bytes and media type, checked against `target` when it is a digest;
    /// `None` when the registry does not have it.
    fn manifest_bytes(
        &mut self,
        reference: &Reference,
        target: &str,
        scope: &str,
    ) -> Result<Option<(Vec<u8>, String)>, String> {
        let url = self.url(&format!("{}/manifests/{target}", reference.repository));
        let mut response = self.send("GET", url, &[("Accept", ACCEPT)], None, scope)?;
        match response.status {
            200 => {}
            404 => return Ok(None),
            s => {
                return Err(format!(
                    "manifest of `{reference}`: HTTP {s}: {}",
                    response.text().unwrap_or_default().trim()
                ));
            }
        }
        let media_type = response
            .header("content-type")
            .unwrap_or(oci::MANIFEST)
            .to_string();
        let bytes = response.bytes(8 << 20).map_err(|e| e.to_string())?;
        let digest = oci::sha256(&bytes);
        if target.starts_with("sha256:") && digest != target {
            return Err(format!(
                "the registry sent a manifest for `{target}` whose bytes hash to `{digest}`"
            ));
        }
        Ok(Some((bytes, media_type)))
    }

    fn manifest(
        &mut self,
        reference: &Reference,
        target: &str,
        scope: &str,
        store: &Store,
    ) -> Result<(String, Value), String> {
        let (bytes, _) = self
            .manifest_bytes(reference, target, scope)?
            .ok_or_else(|| format!("`{reference}` is not in the registry"))?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("manifest of `{reference}`: {e}"))?;
        let (digest, _) = store.put(&bytes).map_err(|e| e.to_string())?;
        Ok((digest, value))
    }

    /// The digest `reference`'s tag points at, if it exists.
    pub fn digest_of(&mut self, reference: &Reference) -> Result<Option<String>, String> {
        let scope = format!("repository:{}:pull", reference.repository);
        Ok(self
            .manifest_bytes(reference, reference.target(), &scope)?
            .map(|(bytes, _)| oci::sha256(&bytes)))
    }

    /// Points `tag` at the manifest `digest` of `image`'s repository, byte for byte.
    pub fn copy_manifest(
        &mut self,
        image: &Reference,
        digest: &str,
        tag: &str,
    ) -> Result<(), String> {
        let scope = format!("repository:{}:pull,push", image.repository);
        let (bytes, media_type) = self.manifest_bytes(image, digest, &scope)?.ok_or_else(|| {
            format!(
                "`{digest}` is not in `{}/{}`",
                image.registry, image.repository
            )
        })?;
        self.put_manifest(image, tag, &bytes, &media_type, &scope)
    }

    fn put_manifest(
        &mut self,
        reference: &Reference,
        tag: &str,
        bytes: &[u8],
        media_type: &str,
        scope: &str,
    ) -> Result<(), String> {
        let url = self.url(&format!("{}/manifests/{tag}", reference.repository));
        let n = bytes.len() as u64;
        let mut body = bytes;
        let mut response = match self.send(
            "PUT",
            url.clone(),
            &[("Content-Type", media_type)],
            Some((&mut body, n)),
            scope,
        ) {
            Err(e) if e == "retry" => {
                let mut body = bytes;
                self.send(
                    "PUT",
                    url,
                    &[("Content-Type", media_type)],
                    Some((&mut body, n)),
                    scope,
                )?
            }
            other => other?,
        };
        if response.status != 201 && response.status != 200 {
            let status = response.status;
            return Err(format!(
                "the registry refused the manifest of `{reference}` (HTTP {status}): {}",
                response.text().unwrap_or_default().trim()
            ));
        }
        Ok(())
    }

    /// Pushes the image whose manifest is `manifest_digest` in `store` to `reference`.
    pub fn push(
        &mut self,
        reference: &Reference,
        store: &Store,
        manifest_digest: &str,
    ) -> Result<(), String> {
        let scope = format!("repository:{}:pull,push", reference.repository);
        let manifest = store.json(manifest_digest).map_err(|e| e.to_string())?;
        let mut blobs: Vec<(String, u64)> = Vec::new();
        for d in std::iter::once(&manifest["config"])
            .chain(manifest["layers"].as_array().into_iter().flatten())
        {
            blobs.push((
                d["digest"].as_str().unwrap_or_default().to_string(),
                d["size"].as_u64().unwrap_or_default(),
            ));
        }
        for (digest, size) in blobs {
            let head = self.send(
                "HEAD",
                self.url(&format!("{}/blobs/{digest}", reference.repository)),
                &[],
                None,
                &scope,
            )?;
            if head.status == 200 {
                continue;
            }
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.upload(reference, store, &digest, size, &scope) {
                    Err(e) if e == "retry" && attempt < 3 => continue,
                    other => break other?,
                }
            }
        }
        let bytes = std::fs::read(store.blob_path(manifest_digest)).map_err(|e| e.to_string())?;
        let media_type = manifest["mediaType"]
            .as_str()
            .unwrap_or(oci::MANIFEST)
            .to_string();
        self.put_manifest(reference, reference.target(), &bytes, &media_type, &scope)
    }

    fn upload(
        &mut self,
        reference: &Reference,
        store: &Store,
        digest: &str,
        size: u64,
        scope: &str,
    ) -> Result<(), String> {
        let start = self.url(&format!("{}/blobs/uploads/", reference.repository));
        let mut empty = io::empty();
        let mut response = self.send("POST", start, &[], Some((&mut empty, 0)), scope)?;
        if response.status != 202 {
            let status = response.status;
            return Err(format!(
                "the registry refused an upload to `{}` (HTTP {status}): {}",
                reference.repository,
                response.text().unwrap_or_default().trim()
            ));
        }
        let location = response
            .header("location")
            .ok_or("the registry gave no upload location")?
            .to_string();
        let mut url = self.base.join(&location)?;
        url.path
            .push(if url.path.contains('?') { '&' } else { '?' });
        url.path.push_str(&format!("digest={}", encode(digest)));
        let mut blob = store.open_blob(digest).map_err(|e| e.to_string())?;
        let mut response = self.send(
            "PUT",
            url,
            &[("Content-Type", "application/octet-stream")],
            Some((&mut blob, size)),
            scope,
        )?;
        if response.status != 201 {
            let status = response.status;
            return Err(format!(
                "the registry refused blob {digest} (HTTP {status}): {}",
                response.text().unwrap_or_default().trim()
            ));
        }
        Ok(())
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references_like_docker() {
        let r = Reference::parse("127.0.0.1:5000/team/app:1.0").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "team/app", Some("1.0"))
        );
        let r = Reference::parse("alpine").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "library/alpine")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("localhost:5000/app@{d}")).unwrap();
        assert_eq!(r.target(), d);
        assert!(Reference::parse("localhost/App").is_err());
    }
}
