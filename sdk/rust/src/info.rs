// SPDX-License-Identifier: Apache-2.0
//! What a step declares about itself.

use crate::wit;

/// The type of an input; values arrive as text and are checked against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Boolean,
    Number,
    Integer,
    List,
}

/// One input under `with:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Name as written under `with:`.
    pub name: String,
    /// What the input means, for `ferry plugin inspect`.
    pub description: String,
    /// How ferry checks the value.
    pub kind: Kind,
    /// The value used when the pipeline gives none, in its YAML spelling.
    pub default: Option<String>,
    /// Whether a pipeline must give a value.
    pub required: bool,
    /// What the value makes the step run, so ferry checks the program's grant before
    /// anything runs: see [`Input::runs_command`] and [`Input::runs_choice`].
    pub runs: Option<Runs>,
}

/// What an input's value makes a step run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runs {
    /// A command line: its first word is the program. Given, it takes the place of any
    /// [`Runs::Choice`] input.
    Command,
    /// Values each naming the program they run: (`clippy`, `cargo`).
    Choice(Vec<(String, String)>),
}

impl Input {
    fn new(name: &str, description: &str, kind: Kind) -> Self {
        Input {
            name: name.into(),
            description: description.into(),
            kind,
            default: None,
            required: false,
            runs: None,
        }
    }

    /// Any text.
    pub fn string(name: &str, description: &str) -> Self {
        Input::new(name, description, Kind::String)
    }

    /// `true` or `false`; defaults to `false` unless [`Input::default`] says otherwise.
    pub fn boolean(name: &str, description: &str) -> Self {
        Input::new(name, description, Kind::Boolean).default("false")
    }

    /// A decimal number.
    pub fn number(name: &str, description: &str) -> Self {
        Input::new(name, description, Kind::Number)
    }

    /// A whole number that fits 64 bits: the host refuses `1.5` before the step starts.
    pub fn integer(name: &str, description: &str) -> Self {
        Input::new(name, description, Kind::Integer)
    }

    /// A list of strings (`with: { paths: [a, b] }`).
    pub fn list(name: &str, description: &str) -> Self {
        Input::new(name, description, Kind::List)
    }

    /// The pipeline must give a value.
    pub fn required(mut self) -> Self {
        self.required = true;
        self.default = None;
        self
    }

    /// The value used when the pipeline gives none.
    pub fn default(mut self, value: &str) -> Self {
        self.default = Some(value.into());
        self.required = false;
        self
    }

    /// The value is a command line whose first word is a host program: ferry checks that
    /// the pipeline grants it, and finds it, before anything runs.
    pub fn runs_command(mut self) -> Self {
        self.runs = Some(Runs::Command);
        self
    }

    /// The value picks a host program: (`value`, `program`) pairs, checked before anything
    /// runs as for [`Input::runs_command`].
    pub fn runs_choice<'a>(mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        self.runs = Some(Runs::Choice(
            pairs
                .into_iter()
                .map(|(v, p)| (v.to_string(), p.to_string()))
                .collect(),
        ));
        self
    }
}

/// Access to the job workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workspace {
    /// Not mounted.
    None,
    /// Mounted read-only.
    Read,
    /// Mounted read-write.
    Write,
}

/// What the step needs from the host. ferry refuses to start a step whose needs the pipeline
/// does not grant, and gives it nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Access to the job workspace.
    pub workspace: Workspace,
    /// Host paths beyond the workspace, with `true` for write access.
    pub paths: Vec<(String, bool)>,
    /// Host environment variables the step reads.
    pub env: Vec<String>,
    /// Secrets the step receives as environment variables.
    pub secrets: Vec<String>,
    /// Hosts the step connects to, as `host` or `host:port`.
    pub network: Vec<String>,
    /// Host programs the step runs through [`exec`](crate::exec).
    pub exec: Vec<String>,
}

fn strings<S: Into<String>>(items: impl IntoIterator<Item = S>) -> Vec<String> {
    items.into_iter().map(Into::into).collect()
}

impl Capabilities {
    /// Nothing at all, not even the workspace.
    pub fn none() -> Self {
        Capabilities {
            workspace: Workspace::None,
            paths: Vec::new(),
            env: Vec::new(),
            secrets: Vec::new(),
            network: Vec::new(),
            exec: Vec::new(),
        }
    }

    /// Read the workspace (granted to every step by default).
    pub fn read_workspace() -> Self {
        Capabilities {
            workspace: Workspace::Read,
            ..Capabilities::none()
        }
    }

    /// Read and write the workspace (`permissions: { workspace: write }`).
    pub fn write_workspace() -> Self {
        Capabilities {
            workspace: Workspace::Write,
            ..Capabilities::none()
        }
    }

    /// A host path beyond the workspace; `"*"` for the paths the pipeline grants the step,
    /// for a step told where to read or write by an input (see [`crate::host_path`]).
    pub fn path(mut self, path: &str, write: bool) -> Self {
        self.paths.push((path.into(), write));
        self
    }

    /// Host environment variables the step reads.
    pub fn env<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.env.extend(strings(names));
        self
    }

    /// Secrets the step receives as environment variables.
    pub fn secrets<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.secrets.extend(strings(names));
        self
    }

    /// Hosts (`host` or `host:port`) the step connects to.
    pub fn network<S: Into<String>>(mut self, hosts: impl IntoIterator<Item = S>) -> Self {
        self.network.extend(strings(hosts));
        self
    }

    /// Host programs the step runs through [`crate::exec`].
    pub fn exec<S: Into<String>>(mut self, programs: impl IntoIterator<Item = S>) -> Self {
        self.exec.extend(strings(programs));
        self
    }
}

/// Everything `describe()` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Short name, e.g. `license-header`.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// One paragraph for users.
    pub description: String,
    /// Inputs accepted under `with:`.
    pub inputs: Vec<Input>,
    /// Outputs the step may set, as (name, description).
    pub outputs: Vec<(String, String)>,
    /// What the step needs from the host.
    pub capabilities: Capabilities,
}

impl Info {
    /// A step that takes nothing and needs only to read the workspace.
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        Info {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            capabilities: Capabilities::read_workspace(),
        }
    }

    /// Declares an input.
    pub fn input(mut self, input: Input) -> Self {
        self.inputs.push(input);
        self
    }

    /// Declares an output.
    pub fn output(mut self, name: &str, description: &str) -> Self {
        self.outputs.push((name.into(), description.into()));
        self
    }

    /// Declares what the step needs (the default is [`Capabilities::read_workspace`]).
    pub fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    pub(crate) fn into_wit(self) -> wit::StepInfo {
        let c = self.capabilities;
        wit::StepInfo {
            name: self.name,
            version: self.version,
            description: self.description,
            inputs: self
                .inputs
                .into_iter()
                .map(|i| wit::InputSpec {
                    name: i.name,
                    description: i.description,
                    type_: match i.kind {
                        Kind::String => wit::InputType::String,
                        Kind::Boolean => wit::InputType::Boolean,
                        Kind::Number => wit::InputType::Number,
                        Kind::Integer => wit::InputType::Integer,
                        Kind::List => wit::InputType::List,
                    },
                    default: i.default,
                    required: i.required,
                    runs: i.runs.map(|r| match r {
                        Runs::Command => wit::Runs::Command,
                        Runs::Choice(pairs) => wit::Runs::Choice(pairs),
                    }),
                })
                .collect(),
            outputs: self
                .outputs
                .into_iter()
                .map(|(name, description)| wit::OutputSpec { name, description })
                .collect(),
            capabilities: wit::Capabilities {
                workspace: match c.workspace {
                    Workspace::None => wit::WorkspaceAccess::None,
                    Workspace::Read => wit::WorkspaceAccess::Read,
                    Workspace::Write => wit::WorkspaceAccess::Write,
                },
                paths: c
                    .paths
                    .into_iter()
                    .map(|(path, write)| wit::PathNeed { path, write })
                    .collect(),
                env: c.env,
                secrets: c.secrets,
                network: c.network,
                exec: c.exec,
            },
        }
    }
}
