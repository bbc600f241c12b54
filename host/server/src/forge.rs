//! Commit statuses: the check mark (or cross) beside a commit on GitHub, Gitea/Forgejo and
//! GitLab, set through each forge's documented REST endpoint.

use crate::hooks::Forge;
use crate::store::RunStatus;
use ferry_registry::remote::encode;

/// Where and how to report a repository's commit statuses.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusTarget {
    pub forge: Forge,
    /// The API root: `https://api.github.com`, `https://gitea.example.com`,
    /// `https://gitlab.example.com`.
    pub api: String,
    /// `owner/name` on the forge (GitLab: the project path or numeric id).
    pub project: String,
    pub token: String,
    /// The status name shown on the forge.
    pub context: String,
}

/// A status to report.
pub struct Status<'a> {
    pub sha: &'a str,
    pub status: RunStatus,
    pub description: &'a str,
    /// The run's page on the dashboard.
    pub url: &'a str,
}

impl StatusTarget {
    /// Sends one status. Blocking: call it off the async runtime.
    pub fn report(&self, status: &Status<'_>) -> Result<(), String> {
        let api = self.api.trim_end_matches('/');
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(15)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        let (url, response) = match self.forge {
            Forge::GitHub | Forge::Gitea => {
                let url = match self.forge {
                    Forge::GitHub => {
                        format!("{api}/repos/{}/statuses/{}", self.project, status.sha)
                    }
                    _ => format!(
                        "{api}/api/v1/repos/{}/statuses/{}",
                        self.project, status.sha
                    ),
                };
                let state = match status.status {
                    RunStatus::Queued | RunStatus::Running => "pending",
                    RunStatus::Passed => "success",
                    RunStatus::Failed => "failure",
                    RunStatus::Cancelled | RunStatus::Interrupted | RunStatus::Error => "error",
                };
                let auth = match self.forge {
                    Forge::GitHub => format!("Bearer {}", self.token),
                    _ => format!("token {}", self.token),
                };
                let body = serde_json::json!({
                    "state": state,
                    "target_url": status.url,
                    "description": status.description,
                    "context": self.context,
                });
                let response = agent
                    .post(&url)
                    .header("Authorization", &auth)
                    .header("Accept", "application/vnd.github+json")
                    .send_json(body);
                (url, response)
            }
            Forge::GitLab => {
                let state = match status.status {
                    RunStatus::Queued => "pending",
                    RunStatus::Running => "running",
                    RunStatus::Passed => "success",
                    RunStatus::Failed | RunStatus::Interrupted | RunStatus::Error => "failed",
                    RunStatus::Cancelled => "canceled",
                };
                let url = format!(
                    "{api}/api/v4/projects/{}/statuses/{}",
                    encode(&self.project),
                    status.sha
                );
                let response = agent
                    .post(&url)
                    .header("PRIVATE-TOKEN", &self.token)
                    .query("state", state)
                    .query("name", &self.context)
                    .query("target_url", status.url)
                    .query("description", status.description)
                    .send_empty();
                (url, response)
            }
        };
        match response {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!(
                "{} answered {} to `POST {url}`",
                self.forge.name(),
                r.status()
            )),
            Err(e) => Err(format!("cannot reach `{url}`: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gitlab_projects_are_one_segment() {
        assert_eq!(super::encode("acme/app"), "acme%2Fapp");
    }
}
