//! Webhooks from GitHub, Gitea/Forgejo and GitLab: check who sent them, then read what
//! happened.
//!
//! GitHub and Gitea sign the body with HMAC-SHA256 of a shared secret; GitLab sends the
//! secret itself as a token. Either way the comparison runs in constant time, and a hook
//! that fails it starts nothing.

use crate::store::{Source, TriggerKind};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// The forges ferry takes webhooks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    Gitea,
    GitLab,
}

impl Forge {
    pub fn parse(name: &str) -> Option<Forge> {
        match name {
            "github" => Some(Forge::GitHub),
            "gitea" | "forgejo" => Some(Forge::Gitea),
            "gitlab" => Some(Forge::GitLab),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::Gitea => "gitea",
            Forge::GitLab => "gitlab",
        }
    }
}

/// Why a hook was refused; each becomes an HTTP status and a message for the sender.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("the `{0}` header is missing: is the webhook secret set at the forge?")]
    Unsigned(&'static str),
    #[error("the signature does not match: the forge and the server have different secrets")]
    BadSignature,
    #[error("no webhook secret is configured, so no hook is trusted")]
    NoSecret,
    #[error("the body is not a {0} event: {1}")]
    Malformed(&'static str, String),
}

/// A header lookup, case-insensitive, as the HTTP layer provides it.
pub trait Headers {
    fn get(&self, name: &str) -> Option<&str>;
}

/// Checks that `body` comes from someone who knows `secret`.
pub fn verify(
    forge: Forge,
    headers: &dyn Headers,
    body: &[u8],
    secret: Option<&str>,
) -> Result<(), HookError> {
    let secret = secret.ok_or(HookError::NoSecret)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    match forge {
        Forge::GitHub => {
            let header = "X-Hub-Signature-256";
            let value = headers.get(header).ok_or(HookError::Unsigned(header))?;
            mac.update(body);
            let given = value.trim().strip_prefix("sha256=").unwrap_or_default();
            let given = hex::decode(given).map_err(|_| HookError::BadSignature)?;
            mac.verify_slice(&given)
                .map_err(|_| HookError::BadSignature)
        }
        Forge::Gitea => {
            let value = ["X-Gitea-Signature", "X-Forgejo-Signature"]
                .into_iter()
                .find_map(|h| headers.get(h))
                .ok_or(HookError::Unsigned("X-Gitea-Signature"))?;
            mac.update(body);
            let given = hex::decode(value.trim()).map_err(|_| HookError::BadSignature)?;
            mac.verify_slice(&given)
                .map_err(|_| HookError::BadSignature)
        }
        Forge::GitLab => {
            let header = "X-Gitlab-Token";
            let token = headers.get(header).ok_or(HookError::Unsigned(header))?;
            // Compare MACs of the token rather than the token itself, so the time taken
            // says nothing about how much of it matched.
            let expected = mac.clone().chain_update(secret.as_bytes()).finalize();
            mac.update(token.as_bytes());
            mac.verify(&expected.into_bytes())
                .map_err(|_| HookError::BadSignature)
        }
    }
}

/// What a verified hook says.
#[derive(Debug, Clone, PartialEq)]
pub enum Hook {
    /// A push or pull request for the repository the forge names.
    Change {
        /// `owner/name` as the forge spells it.
        repository: String,
        /// Clone URLs the forge gives for it, to match a configured repository.
        urls: Vec<String>,
        /// Unique per delivery; a redelivery repeats it.
        delivery: String,
        source: Box<Source>,
    },
    /// A ping, a deleted branch, a closed pull request: acknowledged, runs nothing.
    Ignored(String),
}

/// Reads a verified hook.
pub fn parse(forge: Forge, headers: &dyn Headers, body: &[u8]) -> Result<Hook, HookError> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| HookError::Malformed(forge.name(), e.to_string()))?;
    let (event, delivery) = match forge {
        Forge::GitHub => (
            headers.get("X-GitHub-Event"),
            headers.get("X-GitHub-Delivery"),
        ),
        Forge::Gitea => (
            headers
                .get("X-Gitea-Event")
                .or_else(|| headers.get("X-Forgejo-Event")),
            headers
                .get("X-Gitea-Delivery")
                .or_else(|| headers.get("X-Forgejo-Delivery")),
        ),
        Forge::GitLab => (
            headers.get("X-Gitlab-Event"),
            headers
                .get("X-Gitlab-Event-UUID")
                .or_else(|| headers.get("Idempotency-Key")),
        ),
    };
    let event = event.unwrap_or_default().to_ascii_lowercase();
    // A forge that sends no delivery id still repeats the same body on a redelivery.
    let delivery = match delivery {
        Some(id) => format!("{}:{id}", forge.name()),
        None => format!("{}:body:{}", forge.name(), hex::encode(sha256(body))),
    };
    let malformed = |what: &str| HookError::Malformed(forge.name(), format!("no `{what}`"));
    let (repository, urls) = match forge {
        Forge::GitLab => (
            text(&json, "/project/path_with_namespace"),
            [
                "/project/git_http_url",
                "/project/git_ssh_url",
                "/project/web_url",
            ],
        ),
        _ => (
            text(&json, "/repository/full_name"),
            [
                "/repository/clone_url",
                "/repository/ssh_url",
                "/repository/html_url",
            ],
        ),
    };
    let urls: Vec<String> = urls
        .iter()
        .filter_map(|p| text(&json, p).map(str::to_string))
        .collect();
    let change = |source: Source| -> Result<Hook, HookError> {
        // Commit ids and refs go to git and into steps' environments: only well-formed
        // ones are taken (see `gitnames`).
        let checked = crate::gitnames::commit_id(&source.sha)
            .and(crate::gitnames::full_ref(&source.reference))
            .and(match &source.base {
                Some(base) => crate::gitnames::branch(base).map(drop),
                None => Ok(()),
            });
        checked.map_err(|e| HookError::Malformed(forge.name(), e))?;
        Ok(Hook::Change {
            repository: repository
                .ok_or_else(|| malformed("repository"))?
                .to_string(),
            urls: urls.clone(),
            delivery: delivery.clone(),
            source: Box::new(source),
        })
    };
    match (forge, event.as_str()) {
        (Forge::GitHub | Forge::Gitea, "push") | (Forge::GitLab, "push hook" | "tag push hook") => {
            let reference = text(&json, "/ref").ok_or_else(|| malformed("ref"))?;
            let sha = text(&json, "/after").ok_or_else(|| malformed("after"))?;
            if sha.bytes().all(|b| b == b'0') {
                return Ok(Hook::Ignored(format!("`{reference}` was deleted")));
            }
            let commits = json.get("commits").and_then(Value::as_array);
            let head = match forge {
                Forge::GitLab => {
                    commits.and_then(|c| c.iter().find(|c| text(c, "/id") == Some(sha)))
                }
                _ => json.get("head_commit").filter(|c| !c.is_null()),
            };
            let paths = changed_paths(commits.map(Vec::as_slice).unwrap_or_default(), &json);
            change(Source {
                paths,
                message: head
                    .and_then(|c| text(c, "/message"))
                    .map(first_line)
                    .unwrap_or_default(),
                author: head
                    .and_then(|c| text(c, "/author/name"))
                    .or_else(|| text(&json, "/user_name"))
                    .unwrap_or_default()
                    .to_string(),
                ..Source::new("", TriggerKind::Push, reference, sha)
            })
        }
        (Forge::GitHub | Forge::Gitea, "pull_request") => {
            let action = text(&json, "/action").unwrap_or_default();
            if !matches!(
                action,
                "opened" | "synchronize" | "synchronized" | "reopened"
            ) {
                return Ok(Hook::Ignored(format!("pull request {action}")));
            }
            let pr = json
                .get("pull_request")
                .ok_or_else(|| malformed("pull_request"))?;
            let number = json
                .get("number")
                .and_then(Value::as_u64)
                .ok_or_else(|| malformed("number"))?;
            let head_repo = text(pr, "/head/repo/full_name");
            let base_repo = text(pr, "/base/repo/full_name");
            change(pull_request(
                format!("refs/pull/{number}/head"),
                text(pr, "/head/sha").ok_or_else(|| malformed("pull_request.head.sha"))?,
                text(pr, "/base/ref").ok_or_else(|| malformed("pull_request.base.ref"))?,
                (text(pr, "/title"), text(pr, "/user/login")),
                head_repo.is_some() && head_repo != base_repo,
            ))
        }
        (Forge::GitLab, "merge request hook") => {
            let attributes = json
                .get("object_attributes")
                .ok_or_else(|| malformed("object_attributes"))?;
            let action = text(attributes, "/action").unwrap_or_default();
            if !matches!(action, "open" | "reopen" | "update") {
                return Ok(Hook::Ignored(format!("merge request {action}")));
            }
            let number = attributes
                .get("iid")
                .and_then(Value::as_u64)
                .ok_or_else(|| malformed("object_attributes.iid"))?;
            let project = |p: &str| attributes.get(p).and_then(Value::as_u64);
            change(pull_request(
                format!("refs/merge-requests/{number}/head"),
                text(attributes, "/last_commit/id")
                    .ok_or_else(|| malformed("object_attributes.last_commit.id"))?,
                text(attributes, "/target_branch")
                    .ok_or_else(|| malformed("object_attributes.target_branch"))?,
                (text(attributes, "/title"), text(&json, "/user/username")),
                project("source_project_id") != project("target_project_id"),
            ))
        }
        (_, "ping" | "system hook") => Ok(Hook::Ignored("ping".into())),
        (_, other) => Ok(Hook::Ignored(format!(
            "`{}` events start no run",
            if other.is_empty() { "unnamed" } else { other }
        ))),
    }
}

/// A pull (merge) request's source: its head commit, into `base`, with its title and
/// author.
fn pull_request(
    reference: String,
    sha: &str,
    base: &str,
    (title, author): (Option<&str>, Option<&str>),
    fork: bool,
) -> Source {
    Source {
        base: Some(base.to_string()),
        message: title.unwrap_or_default().to_string(),
        author: author.unwrap_or_default().to_string(),
        fork,
        ..Source::new("", TriggerKind::PullRequest, &reference, sha)
    }
}

fn text<'v>(value: &'v Value, pointer: &str) -> Option<&'v str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// The paths a push changed, from its commits; `None` when the forge left some out (it
/// lists at most 20 commits), so path filters do not wrongly skip the push.
fn changed_paths(commits: &[Value], json: &Value) -> Option<Vec<String>> {
    let total = json
        .get("total_commits_count")
        .and_then(Value::as_u64)
        .or_else(|| json.get("size").and_then(Value::as_u64));
    if commits.is_empty() || total.is_some_and(|t| t as usize > commits.len()) {
        return None;
    }
    let mut paths = Vec::new();
    for commit in commits {
        for list in ["added", "modified", "removed"] {
            for path in commit.get(list).and_then(Value::as_array)? {
                paths.push(path.as_str()?.to_string());
            }
        }
    }
    paths.sort();
    paths.dedup();
    Some(paths)
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    Sha256::digest(bytes).into()
}

/// The signature GitHub would send for `body`: for tests and for tools that replay hooks.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Map(HashMap<String, String>);

    impl Headers for Map {
        fn get(&self, name: &str) -> Option<&str> {
            self.0.get(&name.to_ascii_lowercase()).map(String::as_str)
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Map {
        Map(pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect())
    }

    const PUSH: &str = r#"{"ref":"refs/heads/main","before":"1111","after":"abcdabcdabcdabcdabcdabcdabcdabcdabcdabcd",
        "repository":{"full_name":"acme/app","clone_url":"https://example.com/acme/app.git"},
        "head_commit":{"id":"abcdabcdabcdabcdabcdabcdabcdabcdabcdabcd","message":"fix the build\n\nlong text","author":{"name":"Ada"}},
        "commits":[{"id":"abcdabcdabcdabcdabcdabcdabcdabcdabcdabcd","added":["b.rs"],"modified":["a.rs"],"removed":[]}]}"#;

    #[test]
    fn github_signatures_are_checked() {
        let body = PUSH.as_bytes();
        let good = format!("sha256={}", sign("s3cret", body));
        let ok = headers(&[("X-Hub-Signature-256", &good)]);
        assert_eq!(verify(Forge::GitHub, &ok, body, Some("s3cret")), Ok(()));
        assert_eq!(
            verify(Forge::GitHub, &ok, body, Some("other")),
            Err(HookError::BadSignature)
        );
        let mut tampered = body.to_vec();
        tampered[3] ^= 1;
        assert_eq!(
            verify(Forge::GitHub, &ok, &tampered, Some("s3cret")),
            Err(HookError::BadSignature)
        );
        assert_eq!(
            verify(Forge::GitHub, &headers(&[]), body, Some("s3cret")),
            Err(HookError::Unsigned("X-Hub-Signature-256"))
        );
        assert_eq!(
            verify(Forge::GitHub, &ok, body, None),
            Err(HookError::NoSecret)
        );
    }

    #[test]
    fn gitea_and_gitlab_are_checked_their_way() {
        let body = PUSH.as_bytes();
        let gitea = headers(&[("X-Gitea-Signature", &sign("k", body))]);
        assert_eq!(verify(Forge::Gitea, &gitea, body, Some("k")), Ok(()));
        let forgejo = headers(&[("X-Forgejo-Signature", &sign("k", body))]);
        assert_eq!(verify(Forge::Gitea, &forgejo, body, Some("k")), Ok(()));
        let gitlab = headers(&[("X-Gitlab-Token", "k")]);
        assert_eq!(verify(Forge::GitLab, &gitlab, body, Some("k")), Ok(()));
        assert_eq!(
            verify(Forge::GitLab, &gitlab, body, Some("kk")),
            Err(HookError::BadSignature)
        );
    }

    /// The example in GitHub's "Validating webhook deliveries": this secret and payload
    /// give this signature.
    const DOC_SECRET: &str = "It's a Secret to Everybody";
    const DOC_BODY: &[u8] = b"Hello, World!";
    const DOC_SIGNATURE: &str = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_signatures_match_githubs_documented_example() {
        let header = format!("sha256={DOC_SIGNATURE}");
        let sent = headers(&[("X-Hub-Signature-256", &header)]);
        assert_eq!(
            verify(Forge::GitHub, &sent, DOC_BODY, Some(DOC_SECRET)),
            Ok(())
        );
        assert_eq!(sign(DOC_SECRET, DOC_BODY), DOC_SIGNATURE);
        // What a wrong encoding would send instead: none of it passes.
        use base64::Engine;
        let raw = hex::decode(DOC_SIGNATURE).unwrap();
        for wrong in [
            DOC_SIGNATURE.to_string(),
            format!("sha1={DOC_SIGNATURE}"),
            format!(
                "sha256={}",
                base64::engine::general_purpose::STANDARD.encode(&raw)
            ),
            format!("sha256={}", &DOC_SIGNATURE[..62]),
            format!("sha256={DOC_SIGNATURE}00"),
        ] {
            let sent = headers(&[("X-Hub-Signature-256", &wrong)]);
            assert_eq!(
                verify(Forge::GitHub, &sent, DOC_BODY, Some(DOC_SECRET)),
                Err(HookError::BadSignature),
                "{wrong}"
            );
        }
    }

    #[test]
    fn gitea_signatures_match_an_independent_hmac() {
        // Gitea and Forgejo send the bare hex digest. Computed with
        // `openssl dgst -sha256 -hmac gitea-s3cret`, not with `sign`.
        let body = br#"{"ref":"refs/heads/main","after":"5b2c4e6b1f0a9d8c7e6f5a4b3c2d1e0f9a8b7c6d","repository":{"full_name":"acme/app"}}"#;
        let digest = "6a907dd2f8b17a9ff49d8f16a9544bdca84570e88871901340d6ea7ba25bf27b";
        for header in ["X-Gitea-Signature", "X-Forgejo-Signature"] {
            let sent = headers(&[(header, digest)]);
            assert_eq!(
                verify(Forge::Gitea, &sent, body, Some("gitea-s3cret")),
                Ok(())
            );
        }
        let doc = headers(&[("X-Gitea-Signature", DOC_SIGNATURE)]);
        assert_eq!(
            verify(Forge::Gitea, &doc, DOC_BODY, Some(DOC_SECRET)),
            Ok(())
        );
        // GitHub's prefixed form is not Gitea's header format.
        let prefixed = headers(&[("X-Gitea-Signature", &format!("sha256={digest}"))]);
        assert_eq!(
            verify(Forge::Gitea, &prefixed, body, Some("gitea-s3cret")),
            Err(HookError::BadSignature)
        );
    }

    #[test]
    fn gitlab_tokens_are_the_secret_itself() {
        // GitLab sends the configured secret token verbatim in `X-Gitlab-Token`.
        let ok = headers(&[("X-Gitlab-Token", DOC_SECRET)]);
        assert_eq!(
            verify(Forge::GitLab, &ok, DOC_BODY, Some(DOC_SECRET)),
            Ok(())
        );
        for wrong in [
            DOC_SIGNATURE,
            "It's a Secret to Everybody ",
            "it's a secret to everybody",
            "It's a Secret",
            "",
        ] {
            let sent = headers(&[("X-Gitlab-Token", wrong)]);
            assert_eq!(
                verify(Forge::GitLab, &sent, DOC_BODY, Some(DOC_SECRET)),
                Err(HookError::BadSignature),
                "{wrong:?}"
            );
        }
    }

    #[test]
    fn a_github_push_becomes_a_source() {
        let hook = parse(
            Forge::GitHub,
            &headers(&[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "d1")]),
            PUSH.as_bytes(),
        )
        .unwrap();
        let Hook::Change {
            repository,
            delivery,
            source,
            urls,
        } = hook
        else {
            panic!("{hook:?}")
        };
        assert_eq!(repository, "acme/app");
        assert_eq!(delivery, "github:d1");
        assert_eq!(urls, vec!["https://example.com/acme/app.git"]);
        assert_eq!(source.sha, "abcdabcdabcdabcdabcdabcdabcdabcdabcdabcd");
        assert_eq!(source.message, "fix the build");
        assert_eq!(source.paths, Some(vec!["a.rs".into(), "b.rs".into()]));
    }

    #[test]
    fn pull_requests_from_forks_are_marked() {
        let body = r#"{"action":"synchronize","number":7,
            "repository":{"full_name":"acme/app"},
            "pull_request":{"title":"t","head":{"sha":"ffffffffffffffffffffffffffffffffffffffff","repo":{"full_name":"eve/app"}},
                "base":{"ref":"main","repo":{"full_name":"acme/app"}},"user":{"login":"eve"}}}"#;
        let hook = parse(
            Forge::GitHub,
            &headers(&[("X-GitHub-Event", "pull_request")]),
            body.as_bytes(),
        )
        .unwrap();
        let Hook::Change { source, .. } = hook else {
            panic!("{hook:?}")
        };
        assert!(source.fork);
        assert_eq!(source.reference, "refs/pull/7/head");
        assert_eq!(source.base.as_deref(), Some("main"));
    }

    #[test]
    fn gitlab_pushes_and_deleted_branches() {
        let body = r#"{"ref":"refs/heads/dev","after":"abcdabcdabcdabcdabcdabcdabcdabcdabcdabcd","total_commits_count":1,
            "project":{"path_with_namespace":"acme/app","git_http_url":"http://gl/acme/app.git"},
            "commits":[{"id":"abcdabcdabcdabcdabcdabcdabcdabcdabcdabcd","message":"m","author":{"name":"A"},"added":[],"modified":["x"],"removed":[]}]}"#;
        let hook = parse(
            Forge::GitLab,
            &headers(&[("X-Gitlab-Event", "Push Hook")]),
            body.as_bytes(),
        )
        .unwrap();
        assert!(
            matches!(hook, Hook::Change { ref source, .. } if source.paths == Some(vec!["x".into()]))
        );
        let deleted =
            r#"{"ref":"refs/heads/dev","after":"0000000000000000000000000000000000000000"}"#;
        let hook = parse(
            Forge::GitLab,
            &headers(&[("X-Gitlab-Event", "Push Hook")]),
            deleted.as_bytes(),
        )
        .unwrap();
        assert!(matches!(hook, Hook::Ignored(_)));
    }
}
