//! `ferry plugin`: create, build, test and inspect steps.

mod project;
mod registry;
mod scaffold;
mod test;
mod watch;

use crate::exit;
use crate::report::style::Style;
use ferry_sandbox::{Inspection, Sandbox};
use project::{Language, Project};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Work with step plugins.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a step project that builds and passes its tests as generated.
    New(NewArgs),
    /// Build a step project into `dist/<name>.wasm` with its language's toolchain.
    Build(BuildArgs),
    /// Build a step project and run it in throwaway workspaces: the cases of its
    /// `ferry-tests.yaml`, or once with `--with` inputs.
    Test(TestArgs),
    /// Show a component's world, imports, exports, `describe()` and requested capabilities.
    Inspect(InspectArgs),
    /// Publish a component as a wasm OCI artifact to a registry or the local plugin store.
    Push(registry::PushArgs),
    /// Resolve a plugin, check it, and put its component in the local cache.
    Pull(registry::PullArgs),
    /// List the plugins of a registry namespace or plugin folder.
    List(registry::ListArgs),
    /// Show a published plugin: versions, digest, description, inputs, requested
    /// capabilities and signatures.
    Info(registry::InfoArgs),
    /// Sign a published plugin; the signature is stored beside it as an OCI referrer.
    Sign(registry::SignArgs),
    /// Make an ed25519 key pair for `ferry plugin sign`.
    Keygen(registry::KeygenArgs),
}

#[derive(clap::Args)]
pub struct NewArgs {
    /// The step's name: lowercase letters, digits and dashes
    name: String,
    /// The language to write it in
    #[arg(long, value_enum)]
    lang: Language,
    /// Where to create the project [default: ./NAME]
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct BuildArgs {
    /// The step project [default: .]
    dir: Option<PathBuf>,
}

#[derive(clap::Args, Clone)]
pub struct TestArgs {
    /// The step project, or a built `.wasm` component [default: .]
    dir: Option<PathBuf>,
    /// Run only this case (repeatable)
    #[arg(long, value_name = "NAME")]
    case: Vec<String>,
    /// Run the step once with this input instead of the test cases (repeatable)
    #[arg(long = "with", value_name = "NAME=VALUE")]
    with: Vec<String>,
    /// With `--with`: a directory copied into the throwaway workspace
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// Use the component built last instead of building first
    #[arg(long)]
    no_build: bool,
    /// Build and test again each time a file of the project changes, until Ctrl-C
    #[arg(long, conflicts_with = "no_build")]
    watch: bool,
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// A `.wasm` component, or the name of a built-in step
    file: String,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

pub fn execute(command: Command) -> u8 {
    match command {
        Command::New(args) => new(args),
        Command::Build(args) => build(args),
        Command::Test(args) => test(args),
        Command::Inspect(args) => inspect(args),
        Command::Push(args) => registry::push(args),
        Command::Pull(args) => registry::pull(args),
        Command::List(args) => registry::list(args),
        Command::Info(args) => registry::info(args),
        Command::Sign(args) => registry::sign(args),
        Command::Keygen(args) => registry::keygen(args),
    }
}

fn new(args: NewArgs) -> u8 {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    if let Err(e) = scaffold::create(&dir, &args.name, args.lang) {
        return super::fail(e);
    }
    let shown = dir.display();
    crate::say!("created {} step `{}` in {shown}", args.lang, args.name);
    crate::say!("");
    crate::say!(
        "  ferry plugin build {shown}   # builds {shown}/dist/{}.wasm",
        args.name
    );
    crate::say!(
        "  ferry plugin test {shown}    # runs {shown}/{}",
        test::TESTS_FILE
    );
    exit::PASSED
}

fn build(args: BuildArgs) -> u8 {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("."));
    let Some(runtime) = runtime() else {
        return exit::USAGE;
    };
    match runtime.block_on(build_and_check(&dir)) {
        Ok((project, inspection)) => {
            print_built(&project, &inspection);
            exit::PASSED
        }
        Err(e) => super::fail(e),
    }
}

/// Builds the project in `dir` and checks that the result is a usable step.
async fn build_and_check(dir: &Path) -> Result<(Project, Inspection), String> {
    let project = Project::detect(dir)?;
    eprintln!(
        "building {} step `{}` ({})",
        project.language,
        project.name,
        dir.display()
    );
    let wasm = project.build()?;
    let inspection = inspect_file(&wasm).await?;
    Ok((project, inspection))
}

async fn inspect_file(wasm: &Path) -> Result<Inspection, String> {
    let bytes =
        std::fs::read(wasm).map_err(|e| format!("cannot read `{}`: {e}", wasm.display()))?;
    let sandbox =
        super::sandbox(1).map_err(|_| "cannot start the WebAssembly engine".to_string())?;
    let name = wasm
        .file_stem()
        .map_or("component".into(), |s| s.to_string_lossy().into_owned());
    sandbox.inspect(bytes, &name).await.map_err(|e| {
        format!(
            "`{}` is not a usable step: {e}\nhint: a step implements world `ferry:step/step` (describe and run) or is a `wasi:cli/command`",
            wasm.display()
        )
    })
}

fn print_built(project: &Project, inspection: &Inspection) {
    let style = Style::stdout();
    let info = &inspection.info;
    crate::say!(
        "{} {} {} → {}",
        style.bold("built"),
        info.name,
        info.version,
        project.artifact().display()
    );
    crate::say!("  world:  {}", info.world);
    crate::say!("  size:   {}", display_size(inspection.size));
    crate::say!("  digest: {}", inspection.digest);
    crate::say!("  needs:  {}", needs_summary(info));
}

/// One line: `workspace: read · exec: git`, or `nothing`.
fn needs_summary(info: &ferry_sandbox::PluginInfo) -> String {
    match &info.needs {
        None => "what `permissions:` grants (a wasi:cli/command declares nothing)".into(),
        Some(needs) if need_lines(needs).is_empty() => "nothing".into(),
        Some(needs) => need_lines(needs).join(" · "),
    }
}

/// Each declared need as `workspace: read`, `path: /opt/sdk (read)`, `exec: git, cargo`.
fn need_lines(needs: &ferry_sandbox::grant::Needs) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(ws) = needs.workspace {
        lines.push(format!("workspace: {ws}"));
    }
    for (path, access) in &needs.paths {
        lines.push(format!("path: {} ({access})", path.display()));
    }
    for (label, items) in needs.lists() {
        if !items.is_empty() {
            lines.push(format!("{label}: {}", items.join(", ")));
        }
    }
    lines
}

fn test(args: TestArgs) -> u8 {
    let target = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let Some(runtime) = runtime() else {
        return exit::USAGE;
    };
    if args.watch && target.is_file() {
        return super::fail(format!(
            "`--watch` builds a project again when it changes, and `{}` is a component file\nhint: give the project's folder",
            target.display()
        ));
    }
    let code = runtime.block_on(async {
        match args.watch {
            true => watch::run(&target, || run_tests(target.clone(), args.clone())).await,
            false => run_tests(target.clone(), args.clone()).await,
        }
    });
    runtime.shutdown_background();
    code
}

async fn run_tests(target: PathBuf, args: TestArgs) -> u8 {
    let style = Style::stdout();
    // A component file runs as is; a project is built first (unless --no-build).
    let (project_dir, wasm) = if target.is_file() {
        let dir = target.parent().unwrap_or(Path::new(".")).to_path_buf();
        (dir, target.clone())
    } else {
        let project = match Project::detect(&target) {
            Ok(p) => p,
            Err(e) => return super::fail(e),
        };
        if !args.no_build {
            eprintln!("building {} step `{}`", project.language, project.name);
            if let Err(e) = project.build() {
                return super::fail(e);
            }
        } else if !project.artifact().is_file() {
            return super::fail(format!(
                "`{}` has not been built\nhint: drop `--no-build`, or run `ferry plugin build {}`",
                project.artifact().display(),
                target.display()
            ));
        }
        (project.dir.clone(), project.artifact())
    };
    let wasm = match std::path::absolute(&wasm) {
        Ok(p) => p,
        Err(e) => return super::fail(format!("cannot resolve `{}`: {e}", wasm.display())),
    };
    let inspection = match inspect_file(&wasm).await {
        Ok(i) => i,
        Err(e) => return super::fail(e),
    };
    let declared = test::declared_permissions(&inspection.info);
    let tests_file = project_dir.join(test::TESTS_FILE);
    let ad_hoc = !args.with.is_empty() || args.workspace.is_some() || !tests_file.is_file();
    let mut cases = if ad_hoc {
        match test::Case::ad_hoc(&args.with, args.workspace.clone()) {
            Ok(case) => vec![case],
            Err(e) => return super::fail(e),
        }
    } else {
        match test::load(&tests_file) {
            Ok(cases) => cases,
            Err(report) => {
                super::print_report(&report);
                return exit::USAGE;
            }
        }
    };
    if !args.case.is_empty() {
        for wanted in &args.case {
            if !cases.iter().any(|c| &c.name == wanted) {
                let hint =
                    ferry_model::diag::suggest(wanted, cases.iter().map(|c| c.name.as_str()))
                        .map(|s| format!("\nhint: did you mean `{s}`?"))
                        .unwrap_or_default();
                return super::fail(format!(
                    "no case `{wanted}` in {}{hint}",
                    tests_file.display()
                ));
            }
        }
        cases.retain(|c| args.case.contains(&c.name));
    }
    let sandbox = match super::sandbox(1) {
        Ok(s) => Arc::new(s),
        Err(code) => return code,
    };
    let (mut passed, mut failed) = (0, 0);
    for case in &cases {
        let outcome = match test::run_case(&sandbox, &wasm, &declared, &project_dir, case).await {
            Ok(o) => o,
            Err(e) => return super::fail(format!("case `{}`: {e}", case.name)),
        };
        if ad_hoc {
            for line in &outcome.log {
                crate::say!("  {line}");
            }
            for (name, value) in &outcome.outputs {
                crate::say!("{} {name} = {value:?}", style.dim("output"));
            }
            return if outcome.passed {
                crate::say!("{}", style.green("✓ passed"));
                exit::PASSED
            } else {
                crate::say!(
                    "{}",
                    style.red(&format!(
                        "✗ failed: {}",
                        outcome.message.unwrap_or_default()
                    ))
                );
                exit::FAILED
            };
        }
        let problems = outcome.mismatches(case);
        if problems.is_empty() {
            passed += 1;
            crate::say!("{} {}", style.green("✓"), case.name);
        } else {
            failed += 1;
            crate::say!("{} {}", style.red("✗"), case.name);
            for problem in &problems {
                crate::say!("    {problem}");
            }
            let tail = outcome.log.len().saturating_sub(20);
            if !outcome.log.is_empty() {
                crate::say!("    {}", style.dim("log:"));
            }
            for line in &outcome.log[tail..] {
                crate::say!("    {} {line}", style.dim("│"));
            }
        }
    }
    let summary = format!("{passed} passed, {failed} failed");
    if failed == 0 {
        crate::say!("{}", style.green(&format!("✓ {summary}")));
        exit::PASSED
    } else {
        crate::say!("{}", style.red(&format!("✗ {summary}")));
        exit::FAILED
    }
}

/// A component's size for people: `80.0 KiB`, `18.5 MiB`.
fn display_size(bytes: usize) -> String {
    let bytes = bytes as f64;
    if bytes >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", bytes / 1024.0)
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            super::fail(format!("cannot start the runtime: {e}"));
            None
        }
    }
}

fn inspect(args: InspectArgs) -> u8 {
    let (bytes, name) = match ferry_builtins::builtin(&args.file) {
        Some(bytes) => (bytes.to_vec(), args.file.clone()),
        None => {
            let path = PathBuf::from(&args.file);
            match std::fs::read(&path) {
                Ok(bytes) => (
                    bytes,
                    path.file_stem()
                        .map_or("component".into(), |s| s.to_string_lossy().into_owned()),
                ),
                Err(e) => {
                    return super::fail(format!(
                        "cannot read `{}`: {e}\nhint: give a component file or a built-in step name ({})",
                        args.file,
                        ferry_builtins::BUILTINS
                            .iter()
                            .map(|(n, _)| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
    };
    let Some(runtime) = runtime() else {
        return exit::USAGE;
    };
    let result = runtime.block_on(async {
        let sandbox: Sandbox =
            super::sandbox(1).map_err(|_| "cannot start the WebAssembly engine".to_string())?;
        sandbox.inspect(bytes, &name).await
    });
    let inspection = match result {
        Ok(i) => i,
        Err(e) => return super::fail(format!("`{}` cannot be used as a step: {e}", args.file)),
    };
    if args.json {
        crate::say!(
            "{}",
            serde_json::to_string_pretty(&inspection).unwrap_or_default()
        );
        return exit::PASSED;
    }
    let style = Style::stdout();
    let info = &inspection.info;
    crate::say!("{} {}", style.bold(&info.name), info.version);
    if !info.description.is_empty() {
        crate::say!("{}", info.description);
    }
    crate::say!("");
    crate::say!("world:   {}", info.world);
    crate::say!("digest:  {}", inspection.digest);
    crate::say!("size:    {}", display_size(inspection.size));
    crate::say!("\n{}", style.bold("inputs"));
    if info.inputs.is_empty() {
        crate::say!("  (none)");
    }
    for input in &info.inputs {
        let mut line = format!("  {} ({})", input.name, input.kind);
        if input.required {
            line.push_str(" required");
        }
        if let Some(d) = &input.default {
            line.push_str(&format!(" default {d:?}"));
        }
        match &input.runs {
            Some(ferry_sandbox::Runs::Command) => line.push_str(", runs its first word"),
            Some(ferry_sandbox::Runs::Choice(pairs)) => {
                let shown: Vec<String> = pairs.iter().map(|(v, p)| format!("{v} → {p}")).collect();
                line.push_str(&format!(", runs {}", shown.join(", ")));
            }
            None => {}
        }
        crate::say!("{line}\n      {}", input.description);
    }
    if !info.outputs.is_empty() {
        crate::say!("\n{}", style.bold("outputs"));
        for (name, description) in &info.outputs {
            crate::say!("  {name}\n      {description}");
        }
    }
    crate::say!("\n{}", style.bold("capabilities requested"));
    match &info.needs {
        None => {
            crate::say!(
                "  none declared: a wasi:cli/command gets exactly what `permissions:` grants"
            )
        }
        Some(needs) => {
            let lines = need_lines(needs);
            if lines.is_empty() {
                crate::say!("  nothing");
            }
            for line in lines {
                crate::say!("  {line}");
            }
        }
    }
    crate::say!("\n{}", style.bold("imports"));
    for i in &inspection.imports {
        crate::say!("  {i}");
    }
    crate::say!("\n{}", style.bold("exports"));
    for e in &inspection.exports {
        crate::say!("  {e}");
    }
    exit::PASSED
}
