"""{{name}}: a ferry step."""

import ferry_sdk as ferry


class {{Type}}(ferry.Step):
    """Greets someone."""

    name = "{{name}}"
    version = "0.1.0"
    inputs = [ferry.Input("who", "Whom to greet.", default="world")]
    outputs = [ferry.Output("greeting", "The greeting.")]
    # Ask only for what the step uses; the pipeline must grant each need.
    capabilities = ferry.Capabilities()

    def run(self, inputs):
        if not inputs.who.strip():
            raise ferry.Failed("`who` must not be empty")
        greeting = f"Hello, {inputs.who}!"
        ferry.log.info(greeting)
        ferry.set_output("greeting", greeting)


WitWorld = ferry.export({{Type}})
