//! The built-in `shell` step: runs the script of a `run:` step with the shell `shell:` names.
//!
//! The script reaches the shell as one argument, never through another shell, and the host
//! grants exec of exactly that shell (see `permissions` in DESIGN.md).

wit_bindgen::generate!({
    path: "../../wit",
    world: "step",
});

use ferry::step::process::{self, Command};
use ferry::step::types::{Capabilities, InputSpec, InputType, WorkspaceAccess};

struct Shell;

/// How each supported shell takes a script, following what GitHub Actions does so that
/// scripts behave the same after a move: fail on the first error, no profile files.
fn argv(shell: &str, script: &str) -> Result<(String, Vec<String>), StepError> {
    let script = script.to_string();
    let (program, args): (&str, Vec<String>) = match shell {
        "sh" => ("sh", vec!["-e".into(), "-c".into(), script]),
        "bash" => (
            "bash",
            vec![
                "--noprofile".into(),
                "--norc".into(),
                "-eo".into(),
                "pipefail".into(),
                "-c".into(),
                script,
            ],
        ),
        "pwsh" | "powershell" => (
            shell,
            vec![
                "-NoLogo".into(),
                "-NoProfile".into(),
                "-NonInteractive".into(),
                "-Command".into(),
                format!(
                    "$ErrorActionPreference = 'stop'\n{script}\nif ((Test-Path -LiteralPath variable:\\LASTEXITCODE)) {{ exit $LASTEXITCODE }}"
                ),
            ],
        ),
        "cmd" => (
            "cmd",
            vec![
                "/D".into(),
                "/E:ON".into(),
                "/V:OFF".into(),
                "/S".into(),
                "/C".into(),
                script,
            ],
        ),
        other => {
            return Err(StepError::InvalidInput(format!(
                "unsupported shell `{other}`; use one of sh, bash, pwsh, powershell, cmd"
            )));
        }
    };
    Ok((program.to_string(), args))
}

impl Guest for Shell {
    fn describe() -> StepInfo {
        StepInfo {
            name: "shell".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Runs a script with a host shell; this is what `run:` steps use.".into(),
            inputs: vec![
                InputSpec {
                    name: "script".into(),
                    description: "The script to run.".into(),
                    type_: InputType::String,
                    default: None,
                    required: true,
                    runs: None,
                },
                InputSpec {
                    name: "shell".into(),
                    description: "sh, bash, pwsh, powershell or cmd.".into(),
                    type_: InputType::String,
                    default: Some("sh".into()),
                    required: false,
                    runs: None,
                },
                InputSpec {
                    name: "working-directory".into(),
                    description: "Directory to run in, relative to the workspace.".into(),
                    type_: InputType::String,
                    default: None,
                    required: false,
                    runs: None,
                },
            ],
            outputs: vec![],
            capabilities: Capabilities {
                workspace: WorkspaceAccess::Write,
                paths: vec![],
                env: vec![],
                secrets: vec![],
                network: vec![],
                // The host grants the shell that `shell:` picks; nothing else.
                exec: vec![],
            },
        }
    }

    fn run(inputs: Vec<Input>) -> Result<(), StepError> {
        let get = |name: &str| {
            inputs
                .iter()
                .find(|i| i.name == name)
                .map(|i| i.value.clone())
        };
        let script = get("script")
            .ok_or_else(|| StepError::InvalidInput("input `script` is required".into()))?;
        let shell = get("shell").unwrap_or_else(|| "sh".into());
        let (program, args) = argv(&shell, &script)?;
        let output = process::run(&Command {
            program,
            args,
            cwd: get("working-directory"),
            env: vec![],
            stdin: None,
            echo: true,
        })
        .map_err(|e| match e {
            process::Error::Denied(m) => StepError::Denied(m),
            process::Error::NotFound(m)
            | process::Error::Invalid(m)
            | process::Error::SpawnFailed(m) => StepError::Failed(m),
        })?;
        match output.exit_code {
            Some(0) => Ok(()),
            Some(code) => Err(StepError::Failed(format!(
                "process completed with exit code {code}"
            ))),
            None => Err(StepError::Failed(format!("{shell} was killed by a signal"))),
        }
    }
}

export!(Shell);
