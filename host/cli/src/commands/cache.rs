//! `ferry cache`: see and trim the step and dependency caches of a repository.

use crate::exit;
use crate::say;
use ferry_engine::cache::Cache;
use ferry_model::pipeline::{format_size, parse_size};
use std::path::PathBuf;

/// See and trim a repository's step and dependency caches.
#[derive(clap::Subcommand)]
pub enum Command {
    /// List cached step results and dependency caches, most recently used first
    Ls(LsArgs),
    /// Remove every cached step result and dependency cache
    Clear(Where),
    /// Evict the least recently used entries down to the size limit, and unused files
    Prune(PruneArgs),
}

#[derive(clap::Args)]
pub struct Where {
    /// Pipeline file whose `.ferry/` holds the cache [default: ferry.yaml]
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    place: Where,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct PruneArgs {
    #[command(flatten)]
    place: Where,
    /// Keep at most this much, e.g. `2GiB` [default: FERRY_CACHE_SIZE, `[cache] size` in config.toml, or 10GiB]
    #[arg(long, value_name = "SIZE")]
    max_size: Option<String>,
}

fn open(place: Where) -> Result<Cache, u8> {
    let state_dir = super::state_dir_of(place.file)?;
    let limit = ferry_compose::config::cache_limit().map_err(super::fail)?;
    Ok(Cache::new(&state_dir, limit))
}

pub fn execute(command: Command) -> u8 {
    match command {
        Command::Ls(args) => ls(args),
        Command::Clear(place) => {
            let cache = match open(place) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match cache.clear() {
                Ok(p) => {
                    eprintln!("removed {} entries ({})", p.entries, format_size(p.bytes));
                    exit::PASSED
                }
                Err(e) => super::fail(format!("cannot clear `{}`: {e}", cache.dir().display())),
            }
        }
        Command::Prune(args) => {
            let cache = match open(args.place) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let limit = match args.max_size.as_deref().map(parse_size) {
                None => cache.limit(),
                Some(Some(limit)) => limit,
                Some(None) => {
                    return super::fail(format!(
                        "`{}` is not a size\nhint: write e.g. `2GiB` or `500MB`",
                        args.max_size.unwrap_or_default()
                    ));
                }
            };
            match cache.prune(limit) {
                Ok(p) => {
                    eprintln!(
                        "evicted {} entries and {} unused files ({}); the cache now fits in {}",
                        p.entries,
                        p.blobs,
                        format_size(p.bytes),
                        format_size(limit)
                    );
                    exit::PASSED
                }
                Err(e) => super::fail(format!("cannot prune `{}`: {e}", cache.dir().display())),
            }
        }
    }
}

fn ls(args: LsArgs) -> u8 {
    let cache = match open(args.place) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let listed = match cache.list() {
        Ok(l) => l,
        Err(e) => return super::fail(format!("cannot read `{}`: {e}", cache.dir().display())),
    };
    if args.json {
        let rows: Vec<serde_json::Value> = listed
            .iter()
            .map(|l| {
                serde_json::json!({
                    "kind": l.kind,
                    "key": l.key,
                    "origin": l.origin,
                    "size": l.size,
                    "last_used": ferry_engine::record::rfc3339(
                        l.last_used
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as u64)
                    ),
                })
            })
            .collect();
        say!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return exit::PASSED;
    }
    if listed.is_empty() {
        eprintln!("the cache under `{}` is empty", cache.dir().display());
        return exit::PASSED;
    }
    say!("{:<5} {:>10}  {:<19}  KEY", "KIND", "SIZE", "LAST USED");
    let mut total = 0;
    for l in &listed {
        total += l.size;
        let used = ferry_engine::record::rfc3339(
            l.last_used
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        );
        let key = match l.origin.is_empty() {
            true => l.key.clone(),
            false => format!("{} ({})", &l.key[..l.key.len().min(16)], l.origin),
        };
        say!(
            "{:<5} {:>10}  {:<19}  {key}",
            l.kind,
            format_size(l.size),
            &used[..used.len().min(19)]
        );
    }
    eprintln!(
        "{} entries, {} (limit {})",
        listed.len(),
        format_size(total),
        format_size(cache.limit())
    );
    exit::PASSED
}
