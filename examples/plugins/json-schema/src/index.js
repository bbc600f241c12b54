// json-schema: validates JSON config files against a JSON Schema and annotates every
// violation at its file:line:col.

import { defineStep, Failed, InvalidInput, log, setOutput, workspace } from "@ferry-ci/sdk";
import { parse, JsonError } from "./json.js";
import { Schema } from "./schema.js";

/** `config/*.json`, `**\/*.json`: `*` stays within a path segment, `**` spans segments. */
export function glob(pattern) {
  let re = "";
  for (let i = 0; i < pattern.length; i += 1) {
    const c = pattern[i];
    if (c === "*" && pattern[i + 1] === "*") {
      const slash = pattern[i + 2] === "/";
      re += slash ? "(?:.*/)?" : ".*";
      i += slash ? 2 : 1;
    } else if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

function load(path, what) {
  if (!workspace.exists(path)) throw new InvalidInput(`${what} \`${path}\` does not exist in the workspace`);
  return parse(workspace.readText(path));
}

export const { describe, run } = defineStep({
  name: "json-schema",
  version: "0.1.0",
  description: "Validates JSON files against a JSON Schema; every violation is annotated at its line.",
  inputs: {
    schema: { type: "string", description: "The schema file, relative to the workspace.", required: true },
    files: { type: "list", description: "Files or glob patterns (`config/*.json`, `**/*.json`) to validate.", required: true },
    "max-errors": { type: "integer", description: "Violations annotated per file at most; 0 for all.", default: 0 },
  },
  outputs: {
    checked: "How many files were validated.",
    invalid: "How many files did not match the schema.",
  },
  capabilities: { workspace: "read" },
  run({ schema: schemaPath, files: patterns, "max-errors": maxErrors }) {
    let schema;
    try {
      schema = new Schema(load(schemaPath, "schema").value);
    } catch (e) {
      if (e instanceof JsonError) throw new InvalidInput(`schema ${schemaPath}:${e.message}`);
      throw e;
    }
    const all = workspace.files();
    const files = [];
    for (const pattern of patterns) {
      // A pattern never picks the schema itself; name it explicitly to validate it.
      const matched = /[*?]/.test(pattern)
        ? all.filter((f) => f !== schemaPath && glob(pattern).test(f))
        : [pattern];
      if (matched.length === 0) log.warn(`no file matches \`${pattern}\``);
      for (const f of matched) if (!files.includes(f)) files.push(f);
    }
    if (files.length === 0) throw new InvalidInput("no files to validate; check the `files` patterns");

    let invalid = 0;
    for (const file of files) {
      let document;
      try {
        document = load(file, "file");
      } catch (e) {
        if (!(e instanceof JsonError)) throw e;
        invalid += 1;
        log.annotate("error", `not valid JSON: ${e.message.replace(/^\d+:\d+: /, "")}`, {
          rule: "json",
          at: { file, line: e.line, column: e.column },
        });
        continue;
      }
      const errors = schema.validate(document.value);
      if (errors.length === 0) {
        log.info(`${file}: valid`);
        continue;
      }
      invalid += 1;
      const shown = maxErrors > 0 ? errors.slice(0, maxErrors) : errors;
      if (shown.length < errors.length) {
        log.warn(`${file}: ${errors.length - shown.length} more violations not annotated (\`max-errors: ${maxErrors}\`)`);
      }
      for (const { pointer, message } of shown) {
        const at = document.positions.get(pointer) ?? { line: 1, column: 1 };
        log.annotate("error", `${pointer || "/"}: ${message}`, {
          rule: "json-schema",
          at: { file, line: at.line, column: at.column },
        });
      }
    }
    setOutput("checked", files.length);
    setOutput("invalid", invalid);
    if (invalid > 0) {
      throw new Failed(`${invalid} of ${files.length} files do not match ${schemaPath}`);
    }
    log.info(`all ${files.length} files match ${schemaPath}`);
  },
});
