//! Registry credentials where Docker, Podman, skopeo and oras keep them: `config.json`
//! (`$DOCKER_CONFIG`, else `~/.docker`) with inline `auths` or credential helpers
//! (`docker-credential-<name>`). Passwords are passed to the registry and never printed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

/// The Docker config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn config_path() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".docker/config.json"),
    }
}

fn read_config() -> Result<Value, String> {
    let path = config_path();
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("`{}` is not valid JSON: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(format!("cannot read `{}`: {e}", path.display())),
    }
}

/// Keys in `auths` may carry a scheme and a path (`https://index.docker.io/v1/`).
fn normalize(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let key = key.split('/').next().unwrap_or(key);
    if key == "index.docker.io" || key == "registry-1.docker.io" {
        "docker.io"
    } else {
        key
    }
}

fn helper_for(config: &Value, host: &str) -> Option<String> {
    let helpers = config.get("credHelpers").and_then(Value::as_object);
    helpers
        .and_then(|h| h.iter().find(|(k, _)| normalize(k) == host))
        .and_then(|(_, v)| v.as_str())
        .or_else(|| config.get("credsStore").and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The credentials stored for `host`, if any.
pub fn lookup(host: &str) -> Result<Option<Credentials>, String> {
    let config = read_config()?;
    if let Some((_, entry)) = config
        .get("auths")
        .and_then(Value::as_object)
        .and_then(|auths| auths.iter().find(|(k, _)| normalize(k) == host))
    {
        if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
            let decoded = STANDARD
                .decode(auth)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    format!(
                        "the `auth` of {host} in `{}` is not base64 of `user:password`",
                        config_path().display()
                    )
                })?;
            if let Some((user, pass)) = decoded.split_once(':') {
                return Ok(Some(Credentials {
                    username: user.into(),
                    password: pass.into(),
                }));
            }
        }
        if let (Some(u), Some(p)) = (
            entry.get("username").and_then(Value::as_str),
            entry.get("password").and_then(Value::as_str),
        ) {
            return Ok(Some(Credentials {
                username: u.into(),
                password: p.into(),
            }));
        }
    }
    match helper_for(&config, host) {
        Some(helper) => helper_get(&helper, host),
        None => Ok(None),
    }
}

fn helper_get(helper: &str, host: &str) -> Result<Option<Credentials>, String> {
    let program = format!("docker-credential-{helper}");
    let output = run_helper(&program, "get", host.as_bytes())?;
    if !output.status.success() {
        // Helpers say "credentials not found" with a failure status: no credentials.
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("`{program} get` printed something that is not JSON: {e}"))?;
    let text = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or_default();
    Ok((!text("Secret").is_empty()).then(|| Credentials {
        username: text("Username").into(),
        password: text("Secret").into(),
    }))
}

fn run_helper(program: &str, verb: &str, input: &[u8]) -> Result<std::process::Output, String> {
    let mut child = Command::new(program)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run credential helper `{program}`: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| format!("credential helper `{program}`: {e}"))?;
    }
    child
        .wait_with_output()
        .map_err(|e| format!("credential helper `{program}`: {e}"))
}

/// Saves credentials for `host`: in its credential helper when one is configured, else
/// base64-encoded in `config.json` (created with mode 0600), keeping everything else there.
/// Returns where they went.
pub fn store(host: &str, credentials: &Credentials) -> Result<String, String> {
    let mut config = read_config()?;
    if let Some(helper) = helper_for(&config, host) {
        let program = format!("docker-credential-{helper}");
        let input = json!({"ServerURL": host, "Username": credentials.username, "Secret": credentials.password});
        let output = run_helper(&program, "store", input.to_string().as_bytes())?;
        if !output.status.success() {
            return Err(format!(
                "`{program} store` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        return Ok(format!("credential helper `{program}`"));
    }
    let auth = STANDARD.encode(format!("{}:{}", credentials.username, credentials.password));
    if !config.is_object() {
        config = json!({});
    }
    let auths = config
        .as_object_mut()
        .expect("an object")
        .entry("auths")
        .or_insert_with(|| json!({}));
    if !auths.is_object() {
        *auths = json!({});
    }
    auths
        .as_object_mut()
        .expect("an object")
        .insert(host.to_string(), json!({ "auth": auth }));
    let path = config_path();
    let bytes = serde_json::to_vec_pretty(&config).expect("JSON serializes");
    write_private(&path, &bytes).map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    Ok(format!("`{}`", path.display()))
}

/// Writes a file only its owner can read, whole.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
