use crate::exit;
use crate::report::style::Style;
use ferry_sandbox::{Sandbox, SandboxOptions};
use std::path::PathBuf;

/// Work with step plugins.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Show a component's world, imports, exports, `describe()` and requested capabilities.
    Inspect(InspectArgs),
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
        Command::Inspect(args) => inspect(args),
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
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return super::fail(format!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(async {
        let sandbox = Sandbox::new(SandboxOptions {
            cache_dir: ferry_sandbox::ComponentCache::default_dir(),
            builtins: ferry_builtins::BUILTINS,
            concurrency: 1,
        })
        .map_err(|e| e.to_string())?;
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
    crate::say!(
        "size:    {}",
        ferry_model::pipeline::format_size(inspection.size as u64)
    );
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
            let mut any = false;
            if let Some(ws) = needs.workspace {
                crate::say!("  workspace: {ws}");
                any = true;
            }
            for (path, access) in &needs.paths {
                crate::say!("  path: {} ({access})", path.display());
                any = true;
            }
            for (label, items) in [
                ("env", &needs.env),
                ("secrets", &needs.secrets),
                ("network", &needs.network),
                ("exec", &needs.exec),
            ] {
                if !items.is_empty() {
                    crate::say!("  {label}: {}", items.join(", "));
                    any = true;
                }
            }
            if !any {
                crate::say!("  nothing");
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
