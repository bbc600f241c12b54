//! {{name}}: a ferry step.

use ferry_sdk::{Capabilities, Error, Info, Input, Inputs, Step, info};

struct {{Type}};

impl Step for {{Type}} {
    fn info() -> Info {
        Info::new("{{name}}", env!("CARGO_PKG_VERSION"), "Greets someone.")
            .input(Input::string("who", "Whom to greet.").default("world"))
            .output("greeting", "The greeting.")
            // Ask only for what the step uses; the pipeline must grant each need.
            .capabilities(Capabilities::none())
    }

    fn run(inputs: &Inputs) -> Result<(), Error> {
        let who = inputs.string("who")?;
        if who.trim().is_empty() {
            return Err(Error::failed("`who` must not be empty"));
        }
        let greeting = format!("Hello, {who}!");
        info!("{greeting}");
        ferry_sdk::set_output("greeting", &greeting)
    }
}

ferry_sdk::export!({{Type}});
