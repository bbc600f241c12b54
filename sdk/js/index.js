// SPDX-License-Identifier: Apache-2.0
// Write ferry pipeline steps in JavaScript.
//
// A step module declares itself once with `defineStep` and exports the result:
//
//   import { defineStep, log, setOutput } from "@ferry-ci/sdk";
//
//   export const { describe, run } = defineStep({
//     name: "greet",
//     version: "0.1.0",
//     description: "Says hello.",
//     inputs: {
//       who: { type: "string", description: "Whom to greet.", default: "world" },
//     },
//     outputs: { greeting: "What was said." },
//     capabilities: { workspace: "read" },
//     run({ who }) {
//       log.info(`hello, ${who}`);
//       setOutput("greeting", `hello, ${who}`);
//     },
//   });
//
// `ferry plugin build` bundles the module with its npm dependencies and compiles it into a
// component for world `ferry:js-sdk/step-js` (world `step` plus the WASI filesystem).

import * as wlog from "ferry:step/log@0.1.0";
import * as woutputs from "ferry:step/outputs@0.1.0";
import * as wprocess from "ferry:step/process@0.1.0";
import { getDirectories } from "wasi:filesystem/preopens@0.2.12";
import { getEnvironment } from "wasi:cli/environment@0.2.12";

/** Base of the errors that end a step; the message is shown to the user. */
export class StepError extends Error {
  constructor(message, tag) {
    super(message);
    this.name = new.target.name;
    // componentize-js returns `payload` as the `err` value of `run`'s result.
    this.payload = { tag, val: message };
  }
}

/** The step ran and its check failed (tests failed, lint found errors, ...). */
export class Failed extends StepError {
  constructor(message) {
    super(message, "failed");
  }
}

/** An input value was missing or malformed. */
export class InvalidInput extends StepError {
  constructor(message) {
    super(message, "invalid-input");
  }
}

/** The host refused something the step needed. */
export class Denied extends StepError {
  constructor(message) {
    super(message, "denied");
  }
}

/**
 * A program could not be run (`kind` is `denied`, `not-found`, `invalid` or
 * `spawn-failed`) or exited unsuccessfully with `check` on (`kind` is `exit`).
 */
export class ProcessError extends StepError {
  constructor(kind, message, result) {
    super(message, kind === "denied" ? "denied" : "failed");
    this.kind = kind;
    this.result = result;
  }
}

const INPUT_TYPES = ["string", "boolean", "number", "integer", "list"];

function spelling(spec, value) {
  if (spec.type === "list") return JSON.stringify(value.map(String));
  if (spec.type === "boolean") return value ? "true" : "false";
  return String(value);
}

function parse(name, spec, text) {
  switch (spec.type) {
    case "boolean":
      if (text !== "true" && text !== "false") {
        throw new InvalidInput(`input \`${name}\` must be \`true\` or \`false\`, got \`${text}\``);
      }
      return text === "true";
    case "number": {
      const n = Number(text);
      if (text.trim() === "" || Number.isNaN(n)) {
        throw new InvalidInput(`input \`${name}\` must be a number, got \`${text}\``);
      }
      return n;
    }
    case "integer": {
      // What the host accepts: an optional sign and digits, within 64 bits. A JavaScript
      // number holds integers exactly up to 2^53, so larger ones arrive as a BigInt.
      if (!/^\s*[-+]?\d+\s*$/.test(text)) {
        throw new InvalidInput(`input \`${name}\` must be a whole number, got \`${text}\``);
      }
      const n = BigInt(text.trim());
      return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
    }
    case "list": {
      let value;
      try {
        value = JSON.parse(text);
      } catch {
        value = undefined;
      }
      if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) {
        throw new InvalidInput(`input \`${name}\` must be a list of strings, got \`${text}\``);
      }
      return value;
    }
    default:
      return text;
  }
}

function checkDefinition(def) {
  if (!def || typeof def.name !== "string" || def.name === "") {
    throw new TypeError("defineStep: `name` is required");
  }
  if (typeof def.run !== "function") {
    throw new TypeError(`defineStep(${def.name}): \`run\` must be a function`);
  }
  for (const [name, spec] of Object.entries(def.inputs ?? {})) {
    if (!INPUT_TYPES.includes(spec.type ?? "string")) {
      throw new TypeError(
        `defineStep(${def.name}): input \`${name}\` has type \`${spec.type}\`; use one of ${INPUT_TYPES.join(", ")}`,
      );
    }
  }
  const workspace = def.capabilities?.workspace ?? "none";
  if (!["none", "read", "write"].includes(workspace)) {
    throw new TypeError(`defineStep(${def.name}): capabilities.workspace must be none, read or write`);
  }
}

// An input's `runs` (`"command"`, or `{ clippy: "cargo" }`) as the contract's variant.
function runsOf(name, runs) {
  if (runs === undefined || runs === null) return undefined;
  if (runs === "command") return { tag: "command" };
  if (typeof runs === "object") return { tag: "choice", val: Object.entries(runs).map(([v, p]) => [String(v), String(p)]) };
  throw new TypeError(`defineStep: input \`${name}\`: runs must be "command" or an object of value to program`);
}

function describeOf(def) {
  const caps = def.capabilities ?? {};
  return {
    name: def.name,
    version: def.version ?? "0.1.0",
    description: def.description ?? "",
    inputs: Object.entries(def.inputs ?? {}).map(([name, spec]) => ({
      name,
      description: spec.description ?? "",
      type: spec.type ?? "string",
      default: spec.default === undefined ? undefined : spelling({ type: spec.type ?? "string" }, spec.default),
      required: Boolean(spec.required),
      runs: runsOf(name, spec.runs),
    })),
    outputs: Object.entries(def.outputs ?? {}).map(([name, description]) => ({ name, description })),
    capabilities: {
      workspace: caps.workspace ?? "none",
      paths: Object.entries(caps.paths ?? {}).map(([path, mode]) => ({ path, write: mode === "write" })),
      env: [...(caps.env ?? [])],
      secrets: [...(caps.secrets ?? [])],
      network: [...(caps.network ?? [])],
      exec: [...(caps.exec ?? [])],
    },
  };
}

function inputsOf(def, given) {
  const specs = def.inputs ?? {};
  const problems = given.filter(({ name }) => !(name in specs)).map(({ name }) => `unknown input \`${name}\``);
  const values = {};
  for (const [name, spec] of Object.entries(specs)) {
    const found = given.find((i) => i.name === name);
    try {
      if (found) values[name] = parse(name, { type: spec.type ?? "string" }, found.value);
      else if (spec.default !== undefined) values[name] = spec.default;
      else if (spec.required) problems.push(`input \`${name}\` is required`);
      else values[name] = undefined;
    } catch (e) {
      problems.push(e.message);
    }
  }
  if (problems.length) throw new InvalidInput(problems.join("; "));
  return values;
}

function asStepError(e) {
  if (e instanceof StepError) return e;
  log.error(e instanceof Error ? `${e.name}: ${e.message}\n${e.stack ?? ""}`.trimEnd() : String(e));
  return new Failed(e instanceof Error ? `${e.name}: ${e.message}` : `uncaught ${String(e)}`);
}

/**
 * Declares a step and returns its `describe` and `run` exports.
 *
 * `inputs` maps each input name to `{ type, description, default, required }` (`type` is
 * `string`, `boolean`, `number` or `list`); `run` receives the values converted to those
 * types. `outputs` maps output names to descriptions. `capabilities` lists what the step
 * needs: `workspace` (`none`, `read`, `write`), `paths` (host path → `read`/`write`), `env`,
 * `secrets`, `network` and `exec`. `run` may be async; anything it throws fails the step.
 */
export function defineStep(def) {
  checkDefinition(def);
  return {
    describe: () => describeOf(def),
    async run(given) {
      try {
        await def.run(inputsOf(def, given));
      } catch (e) {
        throw asStepError(e);
      }
    },
  };
}

function write(level, parts) {
  wlog.write(level, parts.map((p) => (typeof p === "string" ? p : JSON.stringify(p))).join(" "));
}

/** The step log. Lines are masked for secrets by the host before they are stored. */
export const log = {
  debug: (...parts) => write("debug", parts),
  info: (...parts) => write("info", parts),
  warn: (...parts) => write("warn", parts),
  error: (...parts) => write("error", parts),
  /** Runs `body` inside a collapsible section titled `title`; returns what it returns. */
  group(title, body) {
    wlog.groupStart(title);
    let result;
    try {
      result = body();
    } catch (e) {
      wlog.groupEnd();
      throw e;
    }
    if (result instanceof Promise) return result.finally(() => wlog.groupEnd());
    wlog.groupEnd();
    return result;
  },
  /**
   * Records a finding for the run summary: `level` is `debug`, `info`, `warn` or `error`;
   * `at` is `{ file, line, column, endLine, endColumn }` with `file` relative to the
   * workspace root.
   */
  annotate(level, message, { rule, at } = {}) {
    wlog.annotate({
      level,
      message,
      rule,
      location: at && {
        file: at.file,
        line: at.line,
        column: at.column,
        endLine: at.endLine,
        endColumn: at.endColumn,
      },
    });
  },
};

/** Sets an output that later steps read as `${{ steps.<id>.outputs.<name> }}`. */
export function setOutput(name, value) {
  try {
    woutputs.set(name, String(value));
  } catch (e) {
    throw new Failed(`output \`${name}\` was refused: ${e?.payload ?? e}`);
  }
}

/**
 * Puts `dir` (a folder of the workspace, relative to its root, or of the job's `HOME`) on
 * the `PATH` of the job's later steps, as a line in `$FERRY_PATH` does. Heard only from a
 * step granted `workspace: write`.
 */
export function addPath(dir) {
  try {
    woutputs.addPath(String(dir));
  } catch (e) {
    throw new Failed(`cannot add \`${dir}\` to PATH: ${e?.payload ?? e}`);
  }
}

/**
 * Sets `name` in the environment of the job's later steps, as a line in `$FERRY_ENV`
 * does. Heard only from a step granted `workspace: write`; `PATH` and variables that make
 * programs load other code are refused.
 */
export function setEnv(name, value) {
  try {
    woutputs.setEnv(name, String(value));
  } catch (e) {
    throw new Failed(`cannot set \`${name}\` for later steps: ${e?.payload ?? e}`);
  }
}

/**
 * Keeps a workspace file (a report, say) with the run record, where it outlives the
 * workspace: `.ferry/runs/<run>/files/<job>/<step>/<path>`.
 */
export function keepFile(path) {
  try {
    woutputs.keep(path);
  } catch (e) {
    throw new Failed(`cannot keep \`${path}\`: ${e?.payload ?? e}`);
  }
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/**
 * Runs a granted host program without a shell and waits for it. Options: `cwd` (relative
 * to the workspace), `env` (an object), `stdin` (string or bytes), `echo` (default true:
 * the output streams into the log) and `check` (default true: an unsuccessful exit throws
 * `ProcessError`). Returns `{ exitCode, stdout, stderr, truncated, ok }` with text streams.
 */
export function exec(program, args = [], options = {}) {
  const { cwd, env = {}, stdin, echo = true, check = true } = options;
  let out;
  try {
    out = wprocess.run({
      program,
      args: args.map(String),
      cwd,
      env: Object.entries(env).map(([k, v]) => [k, String(v)]),
      stdin: typeof stdin === "string" ? encoder.encode(stdin) : stdin,
      echo,
    });
  } catch (e) {
    const err = e?.payload ?? e;
    throw new ProcessError(err?.tag ?? "spawn-failed", `${program}: ${err?.val ?? err}`);
  }
  const result = {
    exitCode: out.exitCode,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
    truncated: out.truncated,
    ok: out.exitCode === 0,
  };
  if (check && !result.ok) {
    const how = out.exitCode === undefined ? "was killed by a signal" : `exited with ${out.exitCode}`;
    throw new ProcessError("exit", `\`${[program, ...args].join(" ")}\` ${how}`, result);
  }
  return result;
}

let root;

function workspaceRoot() {
  if (!root) {
    const dirs = getDirectories();
    root = (dirs.find(([, path]) => path === "/workspace") ?? [])[0];
    if (!root) {
      throw new Denied(
        "reading the workspace was refused: the step is granted no access to it\n" +
          'hint: declare `capabilities: { workspace: "read" }` and grant it in the step\'s `permissions:`:\n' +
          "    permissions:\n      workspace: read",
      );
    }
  }
  return root;
}

/**
 * The error for a file operation on `path` (`write` when it wrote): a refusal of the sandbox
 * is `denied`, in words, with the YAML that would grant it; anything else fails the step.
 */
function fsError(path, e, write = false) {
  const code = e?.payload ?? e;
  if (code === "not-permitted" || code === "access" || code === "read-only") {
    const outside = path.startsWith("/") || path.split("/").includes("..");
    const error = outside
      ? new Denied(
          `${write ? "writing" : "reading"} \`${path}\` was refused: it is outside the workspace, ` +
            "and a step's workspace functions reach only the workspace\n" +
            "hint: name the file relative to the workspace's root (`config/app.json`)",
        )
      : new Denied(
          `${write ? "writing" : "reading"} \`${path}\` was refused: the step is granted ` +
            `${write ? "only to read the workspace" : "no access to the workspace"}\n` +
            "hint: declare `capabilities: { workspace: " +
            `"${write ? "write" : "read"}" }\` and grant it in the step's \`permissions:\`:\n` +
            `    permissions:\n      workspace: ${write ? "write" : "read"}`,
        );
    error.code = code;
    return error;
  }
  const what = {
    "no-entry": "does not exist",
    "is-directory": "is a directory",
    "not-directory": "is not a directory",
  }[code];
  const error = new Failed(`${path}: ${what ?? String(code)}`);
  error.code = code;
  return error;
}

function open(path, { dir = false, write = false, create = false } = {}) {
  try {
    return workspaceRoot().openAt(
      { symlinkFollow: false },
      path,
      { create, directory: dir, truncate: create },
      write ? { write: true } : { read: true },
    );
  } catch (e) {
    throw fsError(path, e, write);
  }
}

/**
 * The value of environment variable `name`, or `undefined`: what the pipeline's `env:` sets,
 * the host variables the step is granted (`permissions.env`) and its granted secrets
 * (masked wherever they reach the log). JavaScript steps have no `process.env`.
 */
export function env(name) {
  for (const [key, value] of getEnvironment()) {
    if (key === name) return value;
  }
  return undefined;
}

/**
 * The value of environment variable `name`, as `env` reads it; when the step does not see
 * it, throws `Denied` with the grant that would give it.
 */
export function requireEnv(name) {
  const value = env(name);
  if (value !== undefined) return value;
  throw new Denied(
    `environment variable \`${name}\` is not set for this step: a step sees only the variables its pipeline sets or grants it\n` +
      `hint: declare it in the step's \`capabilities: { env: ["${name}"] }\` (or \`secrets\`) and grant it in its \`permissions:\`, and set it on the host:\n` +
      `    permissions:\n      env: [${name}]\n` +
      "or, for a secret,\n" +
      `    permissions:\n      secrets: [${name}]`,
  );
}

/** Files of the workspace, by path relative to its root. */
export const workspace = {
  /** True when `path` exists. */
  exists(path) {
    try {
      workspaceRoot().statAt({ symlinkFollow: false }, path);
      return true;
    } catch (e) {
      if ((e?.payload ?? e) === "no-entry") return false;
      throw fsError(path, e);
    }
  },
  /** The file's bytes. */
  readBytes(path) {
    const fd = open(path);
    try {
      const chunks = [];
      let offset = 0n;
      for (;;) {
        const [chunk, end] = fd.read(1n << 20n, offset);
        chunks.push(chunk);
        offset += BigInt(chunk.length);
        if (end || chunk.length === 0) break;
      }
      const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
      let at = 0;
      for (const c of chunks) {
        all.set(c, at);
        at += c.length;
      }
      return all;
    } catch (e) {
      throw e instanceof StepError ? e : fsError(path, e);
    }
  },
  /** The file's text (UTF-8). */
  readText(path) {
    return decoder.decode(this.readBytes(path));
  },
  /** Writes `text` to `path`, replacing it; needs `workspace: write`. */
  writeText(path, text) {
    const fd = open(path, { write: true, create: true });
    try {
      const bytes = encoder.encode(text);
      let offset = 0;
      while (offset < bytes.length) {
        offset += Number(fd.write(bytes.subarray(offset), BigInt(offset)));
      }
    } catch (e) {
      throw fsError(path, e, true);
    }
  },
  /** Entries of a directory as `{ name, type }` (`type` is `file`, `directory`, `symlink`, ...). */
  list(dir = ".") {
    const fd = dir === "." ? workspaceRoot() : open(dir, { dir: true });
    try {
      const stream = fd.readDirectory();
      const entries = [];
      for (let e = stream.readDirectoryEntry(); e; e = stream.readDirectoryEntry()) {
        entries.push({ name: e.name, type: e.type === "regular-file" ? "file" : e.type });
      }
      return entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    } catch (e) {
      throw fsError(dir, e);
    }
  },
  /** Paths of every file below `dir`, sorted, skipping `.git`; symbolic links are not followed. */
  files(dir = ".") {
    const out = [];
    const visit = (d) => {
      for (const { name, type } of this.list(d)) {
        const path = d === "." ? name : `${d}/${name}`;
        if (type === "directory" && name !== ".git") visit(path);
        else if (type === "file") out.push(path);
      }
    };
    visit(dir);
    return out;
  },
};
