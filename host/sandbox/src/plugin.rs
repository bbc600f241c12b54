//! Loading components: compiled cache, world detection, `describe()`, inspection.

use crate::bindings::{self, types};
use crate::cache::{self, ComponentCache};
use crate::grant::Needs;
use crate::state::StepState;
use ferry_model::Access;
use serde::Serialize;
use std::path::PathBuf;
use wasmtime::component::{Component, InstancePre};
use wasmtime_wasi::p2::bindings::CommandPre;

/// Which world a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// `ferry:step/step@0.1.0`.
    Step,
    /// `wasi:cli/command`.
    Command,
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            World::Step => "ferry:step/step@0.1.0",
            World::Command => "wasi:cli/command",
        })
    }
}

/// One input of a step, as declared by `describe()`.
#[derive(Debug, Clone, Serialize)]
pub struct InputSpec {
    pub name: String,
    pub description: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub default: Option<String>,
    pub required: bool,
    /// What the value makes the step run (`runs` in the contract).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<Runs>,
}

/// What an input's value makes a step run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runs {
    /// A command line: its first word is the program.
    Command,
    /// Values each naming the program they run.
    Choice(Vec<(String, String)>),
}

/// What a component says about itself.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    pub world: World,
    pub name: String,
    pub version: String,
    pub description: String,
    pub inputs: Vec<InputSpec>,
    pub outputs: Vec<(String, String)>,
    /// Declared needs; `None` for `wasi:cli/command` components, which get exactly their
    /// grants.
    pub needs: Option<Needs>,
}

/// A loaded, pre-instantiated component.
pub struct Plugin {
    pub digest: String,
    pub info: PluginInfo,
    pub kind: PluginKind,
    pub cache: cache::Loaded,
}

pub enum PluginKind {
    Step(bindings::StepPre<StepState>),
    Command(CommandPre<StepState>),
}

/// The component's world, imports and exports, and `describe()` for `ferry plugin inspect`.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub digest: String,
    pub size: usize,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub info: PluginInfo,
}

pub(crate) fn interface_names(
    engine: &wasmtime::Engine,
    component: &Component,
) -> (Vec<String>, Vec<String>) {
    let ty = component.component_type();
    let imports = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let exports = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    (imports, exports)
}

/// Where a component comes from.
pub(crate) enum Source<'a> {
    Bytes(&'a [u8]),
    File(&'a std::path::Path),
}

/// Loads a component: compile or mmap from the cache, link, detect the world.
pub(crate) fn prepare(
    engine: &wasmtime::Engine,
    linker: &wasmtime::component::Linker<StepState>,
    cache: &ComponentCache,
    source: Source<'_>,
) -> Result<(Component, String, cache::Loaded, PluginKind), String> {
    let loaded = match source {
        Source::Bytes(bytes) => cache.load(engine, bytes),
        Source::File(path) => cache.load_file(engine, path),
    };
    let (component, digest, loaded) =
        loaded.map_err(|e| format!("not a valid WebAssembly component: {}", root_cause(&e)))?;
    let pre: InstancePre<StepState> = linker.instantiate_pre(&component).map_err(|e| {
        format!(
            "the component needs imports ferry does not provide: {}\nhint: a step may import `ferry:step` interfaces and WASI 0.2 (`wasi:cli/imports`)",
            root_cause(&e)
        )
    })?;
    let kind = match bindings::StepPre::new(pre.clone()) {
        Ok(step) => PluginKind::Step(step),
        Err(step_err) => match CommandPre::new(pre) {
            Ok(command) => PluginKind::Command(command),
            Err(_) => {
                return Err(format!(
                    "the component implements neither world `ferry:step/step@0.1.0` nor `wasi:cli/command` ({})",
                    root_cause(&step_err)
                ));
            }
        },
    };
    Ok((component, digest, loaded, kind))
}

pub(crate) fn root_cause(e: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    parts.dedup();
    parts.join(": ")
}

pub(crate) fn command_info(name: &str) -> PluginInfo {
    PluginInfo {
        world: World::Command,
        name: name.to_string(),
        version: String::new(),
        description: "A wasi:cli/command component; its exit code decides success.".into(),
        inputs: vec![InputSpec {
            name: "args".into(),
            description: "Arguments after the program name.".into(),
            kind: "list".into(),
            default: Some("[]".into()),
            required: false,
            runs: None,
        }],
        outputs: Vec::new(),
        needs: None,
    }
}

pub(crate) fn step_info(info: types::StepInfo) -> PluginInfo {
    let caps = info.capabilities;
    let access = |a: types::WorkspaceAccess| match a {
        types::WorkspaceAccess::None => None,
        types::WorkspaceAccess::Read => Some(Access::Read),
        types::WorkspaceAccess::Write => Some(Access::Write),
    };
    PluginInfo {
        world: World::Step,
        name: info.name,
        version: info.version,
        description: info.description,
        inputs: info
            .inputs
            .into_iter()
            .map(|i| InputSpec {
                name: i.name,
                description: i.description,
                kind: match i.type_ {
                    types::InputType::String => "string",
                    types::InputType::Boolean => "boolean",
                    types::InputType::Number => "number",
                    types::InputType::Integer => "integer",
                    types::InputType::List => "list",
                }
                .into(),
                default: i.default,
                required: i.required,
                runs: i.runs.map(|r| match r {
                    types::Runs::Command => Runs::Command,
                    types::Runs::Choice(pairs) => Runs::Choice(pairs),
                }),
            })
            .collect(),
        outputs: info
            .outputs
            .into_iter()
            .map(|o| (o.name, o.description))
            .collect(),
        needs: Some(Needs {
            workspace: access(caps.workspace),
            paths: caps
                .paths
                .into_iter()
                .map(|p| {
                    (
                        PathBuf::from(p.path),
                        if p.write { Access::Write } else { Access::Read },
                    )
                })
                .collect(),
            env: caps.env,
            secrets: caps.secrets,
            network: caps.network,
            exec: caps.exec,
        }),
    }
}
