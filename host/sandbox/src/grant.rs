//! Turning a step's declared needs and the pipeline's grants into what the step gets.
//!
//! Deny by default: a step gets nothing it did not both declare (in `describe()`) and get
//! granted (in `permissions:`). A declared need that was not granted refuses the step before
//! it starts, with a hint showing the ferry.yaml lines that would grant it.

use ferry_model::{Access, NetworkGrant, Pipeline, Source, Step};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// What a step declared it needs (`ferry:step/types.capabilities`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Needs {
    /// `None` when the step does not use the workspace.
    pub workspace: Option<Access>,
    pub paths: Vec<(PathBuf, Access)>,
    pub env: Vec<String>,
    pub secrets: Vec<String>,
    pub network: Vec<String>,
    pub exec: Vec<String>,
}

impl Needs {
    /// The list-valued needs by their `permissions:` key.
    pub fn lists(&self) -> [(&'static str, &[String]); 4] {
        [
            ("env", &self.env),
            ("secrets", &self.secrets),
            ("network", &self.network),
            ("exec", &self.exec),
        ]
    }
}

/// What a step actually gets.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    pub workspace: Option<Access>,
    /// The workspace access of the host programs the step starts: what the pipeline grants
    /// (`permissions.workspace`), whatever the plugin declared for itself, so that the YAML
    /// alone says whether `cargo` may write `target/`.
    pub program_workspace: Access,
    pub paths: Vec<(PathBuf, Access)>,
    /// Environment the step sees: pipeline `env:` values, granted host variables and granted
    /// secrets.
    pub env: BTreeMap<String, String>,
    /// Reachable hosts.
    pub network: Vec<NetworkGrant>,
    /// Program name to absolute path; `None` when granted but not found on `PATH`.
    pub exec: BTreeMap<String, Option<PathBuf>>,
    /// Host `PATH` handed to child processes so that they find their own tools.
    pub path_var: Option<OsString>,
    pub memory: u64,
    /// Bytes of data each host program may map: `permissions.memory` when set, else
    /// [`DEFAULT_HOST_MEMORY`] (compilers need more than a wasm step).
    pub host_memory: u64,
    pub log_limit: u64,
}

/// Data each host program may map when the pipeline sets no `memory:`.
pub const DEFAULT_HOST_MEMORY: u64 = 8 << 30;

/// A refusal before the step starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    pub hint: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\nhint: {}", self.message, self.hint)
    }
}

/// Where a step lives, for messages.
pub struct StepSite<'a> {
    pub pipeline: &'a Pipeline,
    pub step: &'a Step,
    pub job: &'a str,
}

impl StepSite<'_> {
    fn location(&self, span: ferry_model::Span) -> String {
        Source::new(&self.pipeline.file, "").location(span)
    }

    /// Where to add a grant: the effective `permissions:` block, or the step itself.
    pub fn grant_site(&self) -> String {
        match self.step.permissions_span {
            Some(span) => format!("`permissions:` at {}", self.location(span)),
            None => format!(
                "step `{}` at {}",
                self.step.name,
                self.location(self.step.span)
            ),
        }
    }
}

/// Host values the grant needs; passed in so tests can control them.
pub struct Host<'a> {
    pub env: &'a (dyn Fn(&str) -> Option<String> + Sync),
    pub path_var: Option<OsString>,
    /// Where `exec:` grants of workspace files (`.venv/bin/pytest`) are found; `None` before
    /// the job has a workspace.
    pub workspace: Option<&'a Path>,
}

/// The exec, secrets, network or paths need of a step that runs programs, uses secrets,
/// reaches hosts or opens host paths its user names in an input: whatever the pipeline grants
/// that step.
pub const ANY_PROGRAM: &str = "*";

/// Computes the grant for a step, or the refusal that lists every missing grant at once.
pub fn grant(
    site: &StepSite,
    declared: &Needs,
    pipeline_env: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
    host: &Host,
) -> Result<Grant, Refusal> {
    let step = site.step;
    let granted = &step.permissions;
    let mut needs = declared.clone();
    if step.is_run {
        // A `run:` step is a host command by nature: it may write the workspace, runs its
        // shell, and gets exactly what its `permissions:` grant: env, secrets, host paths,
        // hosts (through the proxy) and the programs whose toolchains its script runs.
        needs.workspace = Some(Access::Write);
        needs.env = granted.env.iter().cloned().collect();
        needs.secrets = granted.secrets.iter().cloned().collect();
        needs.paths = granted.paths.iter().map(|(p, a)| (p.clone(), *a)).collect();
        needs.network = granted.network.iter().map(|g| g.to_string()).collect();
        needs.exec = granted.exec.iter().cloned().collect();
    }
    let mut missing = Missing::default();

    let workspace_granted = if step.is_run {
        Access::Write
    } else {
        granted.workspace
    };
    if needs.workspace == Some(Access::Write) && workspace_granted != Access::Write {
        missing.workspace = true;
    }
    let mut paths = Vec::new();
    for (path, access) in &needs.paths {
        if path.as_os_str() == ANY_PROGRAM {
            // Host locations the user names in inputs (`path: ./deploy/staging`): the
            // paths the pipeline grants, with the access it grants.
            paths.extend(granted.paths.iter().map(|(p, a)| (p.clone(), *a)));
            continue;
        }
        let ok = granted
            .paths
            .iter()
            .any(|(g, a)| path.starts_with(g) && a >= access);
        if ok {
            paths.push((path.clone(), *access));
        } else {
            missing.paths.push((path.clone(), *access));
        }
    }
    let mut env = pipeline_env.clone();
    for name in &needs.env {
        if granted.env.contains(name) {
            if let Some(value) = (host.env)(name) {
                env.insert(name.clone(), value);
            }
        } else if !pipeline_env.contains_key(name) {
            missing.env.insert(name.clone());
        }
    }
    for name in &needs.secrets {
        if name == ANY_PROGRAM {
            // A step told which secret to use by an input (`token: DEPLOY_TOKEN`) gets the
            // ones granted to it, and no other.
            for granted in &granted.secrets {
                if let Some(value) = secrets.get(granted) {
                    env.insert(granted.clone(), value.clone());
                }
            }
        } else if granted.secrets.contains(name) {
            if let Some(value) = secrets.get(name) {
                env.insert(name.clone(), value.clone());
            }
        } else {
            missing.secrets.insert(name.clone());
        }
    }
    let mut network = Vec::new();
    for text in &needs.network {
        if text == ANY_PROGRAM {
            // The hosts are the user's choice (a registry, a webhook): the grant is the list.
            network.extend(granted.network.iter().cloned());
            continue;
        }
        let Some(need) = NetworkGrant::parse(text) else {
            missing
                .invalid
                .push(format!("network need `{text}` is not a host or host:port"));
            continue;
        };
        let overlapping: Vec<NetworkGrant> = granted
            .network
            .iter()
            .filter(|g| {
                g.host == need.host
                    && (g.port.is_none() || need.port.is_none() || g.port == need.port)
            })
            .map(|g| NetworkGrant {
                host: need.host.clone(),
                port: need.port.or(g.port),
            })
            .collect();
        if overlapping.is_empty() {
            missing.network.insert(need.to_string());
        }
        network.extend(overlapping);
    }
    let mut exec = BTreeMap::new();
    if step.is_run
        && let Some(shell) = step.with.get("shell").and_then(|t| t.as_literal())
    {
        exec.insert(shell.to_string(), find(shell, host));
    }
    for program in &needs.exec {
        if program == ANY_PROGRAM {
            // The programs are the user's choice: the grant is the list.
            for granted in &granted.exec {
                exec.insert(granted.clone(), find(granted, host));
            }
        } else if granted.exec.contains(program) {
            exec.insert(program.clone(), find(program, host));
        } else {
            missing.exec.insert(program.clone());
        }
    }
    if let Some(refusal) = missing.refusal(site) {
        return Err(refusal);
    }
    Ok(Grant {
        workspace: needs.workspace,
        program_workspace: workspace_granted,
        paths,
        env,
        network,
        exec,
        path_var: host.path_var.clone(),
        memory: granted.memory_limit(),
        host_memory: granted.memory.unwrap_or(DEFAULT_HOST_MEMORY),
        log_limit: granted.log_limit(),
    })
}

fn find(program: &str, host: &Host) -> Option<PathBuf> {
    let path = host.path_var.as_deref().unwrap_or_default();
    ferry_engine::os::resolve_program(program, path, host.workspace)
}

#[derive(Default)]
struct Missing {
    workspace: bool,
    paths: Vec<(PathBuf, Access)>,
    env: BTreeSet<String>,
    secrets: BTreeSet<String>,
    network: BTreeSet<String>,
    exec: BTreeSet<String>,
    invalid: Vec<String>,
}

impl Missing {
    fn refusal(&self, site: &StepSite) -> Option<Refusal> {
        if !self.invalid.is_empty() {
            return Some(Refusal {
                message: format!(
                    "the plugin declares an invalid need: {}",
                    self.invalid.join("; ")
                ),
                hint: "this is a bug in the plugin; report it to its authors".into(),
            });
        }
        let mut what = Vec::new();
        let mut yaml = Vec::new();
        if self.workspace {
            what.push("write access to the workspace".to_string());
            yaml.push("workspace: write".to_string());
        }
        if !self.paths.is_empty() {
            what.push(format!(
                "host paths {}",
                join(
                    self.paths
                        .iter()
                        .map(|(p, a)| format!("{} ({a})", p.display()))
                )
            ));
            let items: Vec<String> = self
                .paths
                .iter()
                .map(|(p, a)| format!("{}: {a}", p.display()))
                .collect();
            yaml.push(format!("paths: {{ {} }}", items.join(", ")));
        }
        for (label, key, set) in [
            ("environment variables", "env", &self.env),
            ("secrets", "secrets", &self.secrets),
            ("network access to", "network", &self.network),
            ("exec of", "exec", &self.exec),
        ] {
            if set.is_empty() {
                continue;
            }
            what.push(format!("{label} {}", join(set.iter().cloned())));
            let items: Vec<String> = set
                .iter()
                .map(|s| {
                    if key == "network" {
                        format!("\"{s}\"")
                    } else {
                        s.clone()
                    }
                })
                .collect();
            yaml.push(format!("{key}: [{}]", items.join(", ")));
        }
        if what.is_empty() {
            return None;
        }
        let mut hint = format!("grant it in {}:\n    permissions:", site.grant_site());
        for line in &yaml {
            hint.push_str("\n      ");
            hint.push_str(line);
        }
        Some(Refusal {
            message: format!(
                "step `{}` of job `{}` needs {} but the pipeline does not grant it",
                site.step.name,
                site.job,
                what.join(", ")
            ),
            hint,
        })
    }
}

fn join(items: impl Iterator<Item = String>) -> String {
    items
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Variables every step and every process it runs sees, whatever was granted: they describe
/// the run. `FERRY_PIPELINE_DIR` is what relative `permissions.paths` are relative to, so a
/// step given such a path as an input finds it.
pub fn standard_env(
    run_id: &str,
    job: &str,
    step: &str,
    pipeline_dir: &std::path::Path,
) -> [(&'static str, String); 6] {
    [
        ("CI", "true".into()),
        (
            "FERRY_PIPELINE_DIR",
            ferry_model::pipeline::host_path(pipeline_dir, ".")
                .to_string_lossy()
                .into_owned(),
        ),
        ("FERRY", "true".into()),
        ("FERRY_RUN_ID", run_id.into()),
        ("FERRY_JOB", job.into()),
        ("FERRY_STEP", step.into()),
    ]
}

/// Whether `ip` is on the public internet: not loopback, private, link-local (cloud
/// metadata services), shared (carrier NAT), unspecified, multicast or broadcast. An
/// untrusted run reaches only these, so a hostile pull request cannot reach the machine's
/// own services or its network's by granting itself their address, or a name that resolves
/// to one.
pub fn public_address(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public_address(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || v6.segments()[..6] == [0, 0, 0, 0, 0, 0])
        }
    }
}

/// The message for something a running step tried without a grant.
pub fn runtime_denial_text(site: &crate::state::Site, what: &str, yaml: &str) -> String {
    // A plugin that runs what its user names needs the grant only; another must also say
    // in `describe()` that it runs the program.
    let who = if site.runs_any_program {
        "grant it"
    } else {
        "the plugin must declare it in describe() and the pipeline grant it"
    };
    format!(
        "{what} is not granted to step `{}` of job `{}`\nhint: {who} in {}:\n    permissions:\n      {yaml}",
        site.step, site.job, site.grant_site
    )
}

#[cfg(test)]
mod tests {
    use super::public_address;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::127.0.0.1",
        ] {
            assert!(!public_address(private.parse().unwrap()), "{private}");
        }
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(public_address(public.parse().unwrap()), "{public}");
        }
    }
}
