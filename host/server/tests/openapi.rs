//! Every API route the router serves is in `docs/openapi.yaml` with its methods, and the
//! document names no route the router lacks.

use std::collections::BTreeSet;
use yaml_rust2::{Yaml, YamlLoader};

/// `(path, method)` for each `.route("PATH", get(..).post(..))` in the router's source.
fn routes() -> BTreeSet<(String, String)> {
    // rustfmt may break a long `.route(` call across lines: read it as one.
    let source: String = include_str!("../src/api.rs")
        .split(".route(")
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join(".route(");
    let mut found = BTreeSet::new();
    for part in source.split(".route(\"").skip(1) {
        let (path, rest) = part.split_once('"').unwrap();
        if !path.starts_with("/api") && !path.starts_with("/hooks") {
            continue;
        }
        // OpenAPI has no catch-all segments: `{*path}` is documented as `{path}`.
        let path = path.replace("{*", "{");
        // The handlers: up to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map_or(rest.len(), |(i, _)| i);
        let call = &rest[..end];
        for method in ["get", "post", "delete", "put", "patch"] {
            if call.contains(&format!(" {method}(")) || call.contains(&format!(".{method}(")) {
                found.insert((path.clone(), method.to_string()));
            }
        }
    }
    found
}

#[test]
fn the_openapi_document_matches_the_router() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.yaml"
    ))
    .unwrap();
    let doc = &YamlLoader::load_from_str(&text).unwrap()[0];
    assert_eq!(doc["openapi"].as_str(), Some("3.1.0"));
    let mut documented = BTreeSet::new();
    let Yaml::Hash(paths) = &doc["paths"] else {
        panic!("no paths")
    };
    for (path, item) in paths {
        let Yaml::Hash(item) = item else { continue };
        for method in item.keys().filter_map(Yaml::as_str) {
            if method != "parameters" {
                documented.insert((path.as_str().unwrap().to_string(), method.to_string()));
            }
        }
    }
    let served = routes();
    assert!(
        served.len() > 15,
        "the route scan found too little: {served:?}"
    );
    let missing: Vec<_> = served.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "routes missing from docs/openapi.yaml: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "docs/openapi.yaml documents routes that are gone: {stale:?}"
    );
}
