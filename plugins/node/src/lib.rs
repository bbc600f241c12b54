//! ferry's built-in `node` setup step: checks the host's Node.js, installs the project's
//! packages with npm (`npm ci` with a lockfile, else `npm install`), and puts
//! `node_modules/.bin` on `PATH` for the job's later steps.
//!
//! npm's downloads stay in the job's private `HOME` between runs, and with
//! `keep: [node_modules]` on the job a warm run installs nothing: the packages are installed
//! again only when `package.json`, the lockfile or the Node.js version changed.

use ferry_sdk::exec::Command;
use ferry_sdk::setup::{Stamp, version_matches, workspace_relative};
use ferry_sdk::{Capabilities, Error, Info, Input, Inputs, Step, info, set_output};
use std::path::Path;

struct Node;

impl Step for Node {
    fn info() -> Info {
        Info::new(
            "node",
            env!("CARGO_PKG_VERSION"),
            "Checks the host's Node.js, installs the project's packages with npm, and puts node_modules/.bin on PATH for the job's later steps.",
        )
        .input(Input::string(
            "version",
            "The version Node.js must have, by leading components: `20`, `20.11`. Empty: any.",
        ))
        .input(Input::string("directory", "The folder holding `package.json`, in the workspace.").default("."))
        .input(Input::string(
            "install",
            "`ci` (the default when there is a lockfile), `install`, or `none`.",
        ))
        .input(Input::string("registry", "A registry other than npm's (npm's `--registry`)."))
        .output("node-version", "Node.js's version: `20.11.1`.")
        .capabilities(Capabilities::write_workspace().exec(["*"]).network(["*"]))
    }

    fn run(inputs: &Inputs) -> Result<(), Error> {
        let wanted = inputs.optional("version").unwrap_or_default();
        let dir = workspace_relative(&inputs.string("directory")?, "directory")?;
        let version = Command::new("node")
            .arg("--version")
            .quiet()
            .run()?
            .check()?
            .stdout_text();
        let version = version.trim().trim_start_matches('v').to_string();
        if !version_matches(&version, &wanted) {
            return Err(Error::Failed(format!(
                "`node` is Node.js {version}, not {wanted}\nhint: put a Node.js {wanted} first on PATH (nvm, fnm, or the pipeline's `env: PATH`)"
            )));
        }
        let at = |file: &str| format!("{dir}/{file}");
        if !Path::new(&at("package.json")).is_file() {
            return Err(Error::InvalidInput(format!(
                "there is no `package.json` in `{dir}`"
            )));
        }
        let locked = ["package-lock.json", "npm-shrinkwrap.json"]
            .iter()
            .any(|f| Path::new(&at(f)).is_file());
        let install = inputs
            .optional("install")
            .filter(|i| !i.trim().is_empty())
            .unwrap_or_else(|| if locked { "ci" } else { "install" }.to_string());
        if !matches!(install.as_str(), "ci" | "install" | "none") {
            return Err(Error::InvalidInput(format!(
                "`install: {install}`: write `ci`, `install` or `none`"
            )));
        }
        if install != "none" {
            let registry = inputs.optional("registry").filter(|r| !r.is_empty());
            if let Some(url) = registry.as_deref().filter(|u| !web_address(u)) {
                return Err(Error::InvalidInput(format!(
                    "`registry: {url}` is not an http:// or https:// address"
                )));
            }
            // What the packages come from, as the repository has it: a lockfile `npm install`
            // writes is not the repository's, and the next sync removes it.
            let mut stamp = Stamp::default();
            stamp
                .fact("node", &version)
                .fact("install", &install)
                .fact("registry", registry.as_deref().unwrap_or(""));
            for file in ["package.json", "package-lock.json", "npm-shrinkwrap.json"] {
                stamp.file(&at(file));
            }
            let stamp_file = at("node_modules/.ferry-installed");
            if stamp.matches(&stamp_file) {
                info!("packages in `{}` are up to date", at("node_modules"));
            } else {
                let mut argv = vec![
                    install.clone(),
                    "--no-audit".into(),
                    "--no-fund".into(),
                    "--prefer-offline".into(),
                ];
                if let Some(registry) = registry.clone() {
                    argv.extend(["--registry".into(), registry]);
                }
                Command::new("npm")
                    .args(argv)
                    .cwd(dir.as_str())
                    .run()?
                    .check()?;
                std::fs::create_dir_all(at("node_modules")).map_err(|e| {
                    Error::Failed(format!("cannot create `{}`: {e}", at("node_modules")))
                })?;
                stamp.write(&stamp_file)?;
            }
        }
        ferry_sdk::add_path(&at("node_modules/.bin"))?;
        info!(
            "Node.js {version}; `{}` on PATH for the job's later steps",
            at("node_modules/.bin")
        );
        set_output("node-version", &version)
    }
}

/// An `http://` or `https://` address: what npm's `--registry` takes, and never an option.
fn web_address(text: &str) -> bool {
    ["http://", "https://"].iter().any(|p| text.starts_with(p))
        && !text.contains(char::is_whitespace)
}

ferry_sdk::export!(Node);
