// SPDX-License-Identifier: Apache-2.0
// Types of the ferry JavaScript SDK (`index.js`). The contract's own types, generated from
// the WIT by `cargo xtask js-types`, are in `types/`.

/// <reference path="./types/step-js.d.ts" />

import type { StepInfo, StepError as WitStepError, Input as WitInput } from "ferry:step/types@0.1.0";

export type InputType = "string" | "boolean" | "number" | "integer" | "list";

type ValueOf<T extends InputType> = T extends "boolean"
  ? boolean
  : T extends "number"
    ? number
    : T extends "integer"
      ? number | bigint
      : T extends "list"
        ? string[]
        : string;

export interface InputSpec<T extends InputType = InputType> {
  /** How the host checks the value and how `run` receives it; default `string`. */
  type?: T;
  /** What the input means, shown by `ferry plugin inspect`. */
  description?: string;
  /** Used when the pipeline gives no value. */
  default?: ValueOf<T>;
  /** When true, a pipeline that omits the input is rejected before anything runs. */
  required?: boolean;
  /**
   * The host program the value makes the step run, checked against the grant before
   * anything runs: `"command"` (the value is a command line) or value to program
   * (`{ clippy: "cargo" }`).
   */
  runs?: "command" | Record<string, string>;
}

export interface Capabilities {
  workspace?: "none" | "read" | "write";
  /** Host paths beyond the workspace, mapped to `read` or `write`. */
  paths?: Record<string, "read" | "write">;
  env?: string[];
  secrets?: string[];
  /** Hosts as `host` or `host:port`. */
  network?: string[];
  /** Host programs run with `exec`. */
  exec?: string[];
}

type Values<I extends Record<string, InputSpec>> = {
  [K in keyof I]: I[K] extends InputSpec<infer T> ? ValueOf<T> | undefined : never;
};

export interface StepDefinition<I extends Record<string, InputSpec>> {
  name: string;
  version?: string;
  description?: string;
  inputs?: I;
  /** Output names mapped to descriptions. */
  outputs?: Record<string, string>;
  capabilities?: Capabilities;
  run(inputs: Values<I>): void | Promise<void>;
}

/** Declares a step; export the result's `describe` and `run` from the module. */
export function defineStep<I extends Record<string, InputSpec>>(
  definition: StepDefinition<I>,
): { describe(): StepInfo; run(inputs: WitInput[]): Promise<void> };

/** Base of the errors that end a step; `payload` is what `run` returns to the host. */
export class StepError extends Error {
  payload: WitStepError;
}
export class Failed extends StepError {
  constructor(message: string);
}
export class InvalidInput extends StepError {
  constructor(message: string);
}
export class Denied extends StepError {
  constructor(message: string);
}

export interface ExecResult {
  exitCode?: number;
  stdout: string;
  stderr: string;
  truncated: boolean;
  ok: boolean;
}

export class ProcessError extends StepError {
  kind: "denied" | "not-found" | "invalid" | "spawn-failed" | "exit";
  result?: ExecResult;
}

export interface ExecOptions {
  /** Working directory relative to the workspace root. */
  cwd?: string;
  env?: Record<string, string>;
  stdin?: string | Uint8Array;
  /** Copy the output into the log (default true). */
  echo?: boolean;
  /** Throw `ProcessError` on an unsuccessful exit (default true). */
  check?: boolean;
}

export function exec(program: string, args?: string[], options?: ExecOptions): ExecResult;

export interface Location {
  file: string;
  line?: number;
  column?: number;
  endLine?: number;
  endColumn?: number;
}

type Level = "debug" | "info" | "warn" | "error";

export const log: {
  debug(...parts: unknown[]): void;
  info(...parts: unknown[]): void;
  warn(...parts: unknown[]): void;
  error(...parts: unknown[]): void;
  group<T>(title: string, body: () => T): T;
  annotate(level: Level, message: string, options?: { rule?: string; at?: Location }): void;
};

export function setOutput(name: string, value: unknown): void;

/** Puts a folder of the workspace (or of the job's `HOME`) on the `PATH` of the job's later steps. */
export function addPath(dir: string): void;

/** Sets a variable in the environment of the job's later steps (not `PATH`). */
export function setEnv(name: string, value: unknown): void;
/**
 * The value of environment variable `name`, or `undefined`: the pipeline's `env:` values, the
 * host variables the step is granted (`permissions.env`) and its granted secrets.
 */
export function env(name: string): string | undefined;

/**
 * The value of environment variable `name`, as `env` reads it; when the step does not see
 * it, throws `Denied` with the grant that would give it.
 */
export function requireEnv(name: string): string;

/** Keeps a workspace file with the run record: `.ferry/runs/<run>/files/<job>/<step>/<path>`. */
export function keepFile(path: string): void;

export const workspace: {
  exists(path: string): boolean;
  readBytes(path: string): Uint8Array;
  readText(path: string): string;
  writeText(path: string, text: string): void;
  list(dir?: string): { name: string; type: string }[];
  files(dir?: string): string[];
};
