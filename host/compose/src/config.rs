//! The user's settings: `~/.config/ferry/config.toml`.

use std::collections::BTreeMap;

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    #[serde(default)]
    pub plugins: UserPlugins,
    #[serde(default)]
    pub cache: UserCache,
}

/// `[plugins]`: see [`crate::plugins::Policy`].
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UserPlugins {
    pub registry: Option<String>,
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
    #[serde(default, rename = "require-signatures")]
    pub require_signatures: BTreeMap<String, Vec<String>>,
}

/// `[cache]`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UserCache {
    /// Most bytes the step and dependency caches of a repository keep (`10GiB`).
    pub size: Option<String>,
    /// An OCI repository (or folder) shared by several machines.
    pub remote: Option<String>,
}

impl UserConfig {
    /// Reads the file; a missing one is the defaults, a malformed one an error naming it.
    pub fn load() -> Result<UserConfig, String> {
        let path = ferry_registry::config_dir().join("config.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).map_err(|e| format!("`{}` is not valid: {e}", path.display()))
            }
            Err(_) => Ok(UserConfig::default()),
        }
    }
}

/// How many bytes the caches keep: `FERRY_CACHE_SIZE`, else `[cache] size`, else 10 GiB.
pub fn cache_limit() -> Result<u64, String> {
    let (text, from) = match std::env::var("FERRY_CACHE_SIZE") {
        Ok(v) if !v.is_empty() => (v, "FERRY_CACHE_SIZE".to_string()),
        _ => match UserConfig::load()?.cache.size {
            Some(v) => (v, "`[cache] size` in config.toml".to_string()),
            None => return Ok(ferry_engine::cache::DEFAULT_LIMIT),
        },
    };
    ferry_model::pipeline::parse_size(&text).ok_or_else(|| {
        format!("{from} is `{text}`, not a size\nhint: write e.g. `10GiB` or `500MB`")
    })
}

/// The shared cache, if one is configured: `FERRY_CACHE_REMOTE`, else `[cache] remote`.
pub fn cache_remote() -> Result<Option<crate::remote_cache::OciCache>, String> {
    let text = match std::env::var("FERRY_CACHE_REMOTE") {
        Ok(v) if !v.is_empty() => v,
        _ => match UserConfig::load()?.cache.remote {
            Some(v) => v,
            None => return Ok(None),
        },
    };
    crate::remote_cache::OciCache::new(&text).map(Some)
}
