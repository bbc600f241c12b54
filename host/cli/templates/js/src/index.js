// {{name}}: a ferry step.

import { defineStep, Failed, log, setOutput } from "@ferry-ci/sdk";

export const { describe, run } = defineStep({
  name: "{{name}}",
  version: "0.1.0",
  description: "Greets someone.",
  inputs: {
    who: { type: "string", description: "Whom to greet.", default: "world" },
  },
  outputs: { greeting: "The greeting." },
  // Ask only for what the step uses; the pipeline must grant each need.
  capabilities: {},
  run({ who }) {
    if (!who.trim()) throw new Failed("`who` must not be empty");
    const greeting = `Hello, ${who}!`;
    log.info(greeting);
    setOutput("greeting", greeting);
  },
});
