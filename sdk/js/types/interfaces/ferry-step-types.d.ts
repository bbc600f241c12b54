declare module 'ferry:step/types@0.1.0' {
  /**
   * The type of an input value, used to check `with:` values before the step starts and
   * to render documentation. Values always reach `run` as strings in their YAML spelling.
   * # Variants
   * 
   * ## `"string"`
   * 
   * Any text.
   * ## `"boolean"`
   * 
   * `true` or `false`.
   * ## `"number"`
   * 
   * A decimal number.
   * ## `"integer"`
   * 
   * A whole number (`3`, `-2`) that fits 64 bits; `1.5` and `1e3` are refused.
   * ## `"list"`
   * 
   * A list of strings, passed to `run` as a JSON array.
   */
  export type InputType = 'string' | 'boolean' | 'number' | 'integer' | 'list';
  /**
   * What an input's value makes the step run, so that the host knows the program before
   * the step starts: it checks the `exec:` grant and finds the program on `PATH` then, and
   * a missing grant or program stops the run before any step starts (exit 2), as every
   * other configuration error does.
   */
  export type Runs = RunsCommand | RunsChoice;
  /**
   * The value is a command line; its first word is the program (`ruff check .`).
   * Given, it takes the place of any `choice` input of the same step.
   */
  export interface RunsCommand {
    tag: 'command',
  }
  /**
   * The value picks a program: pairs of (value, program), such as
   * (`clippy`, `cargo`). A value not listed runs nothing the host can tell.
   */
  export interface RunsChoice {
    tag: 'choice',
    val: Array<[string, string]>,
  }
  /**
   * One input the step accepts under `with:`.
   */
  export interface InputSpec {
    /**
     * Name as written under `with:` (kebab-case by convention).
     */
    name: string,
    /**
     * What the input means, shown by `ferry plugin inspect`.
     */
    description: string,
    /**
     * How the host checks the value.
     */
    type: InputType,
    /**
     * The value used when the pipeline gives none; `none` means no default.
     */
    'default'?: string,
    /**
     * When true, a pipeline that omits the input is rejected before anything runs.
     */
    required: boolean,
    /**
     * What the value makes the step run, if it names a host program (see `runs`).
     */
    runs?: Runs,
  }
  /**
   * One output the step may set through the `outputs` interface.
   */
  export interface OutputSpec {
    /**
     * Name read by later steps as `${{ steps.<id>.outputs.<name> }}`.
     */
    name: string,
    /**
     * What the output means.
     */
    description: string,
  }
  /**
   * How much of the job workspace a step needs.
   * # Variants
   * 
   * ## `"none"`
   * 
   * The step never looks at the workspace; it is not mounted.
   * ## `"read"`
   * 
   * The workspace is mounted read-only at `/workspace`.
   * ## `"write"`
   * 
   * The workspace is mounted read-write at `/workspace`.
   */
  export type WorkspaceAccess = 'none' | 'read' | 'write';
  /**
   * A host path beyond the workspace that the step needs.
   */
  export interface PathNeed {
    /**
     * Absolute host path; it is mounted at the same path inside the guest.
     */
    path: string,
    /**
     * True when the step writes below the path.
     */
    write: boolean,
  }
  /**
   * Everything a step needs from the host. The host refuses to start a step whose needs
   * the pipeline did not grant, and gives the step only what it both declared and was
   * granted (deny by default).
   */
  export interface Capabilities {
    /**
     * Access to the job workspace.
     */
    workspace: WorkspaceAccess,
    /**
     * Host paths beyond the workspace.
     */
    paths: Array<PathNeed>,
    /**
     * Names of environment variables the step reads.
     */
    env: Array<string>,
    /**
     * Names of secrets the step receives (as environment variables, masked in logs).
     * `*` means the secrets the pipeline grants the step, for steps told by an input
     * which secret to use.
     */
    secrets: Array<string>,
    /**
     * Hosts the step connects to, as `host` or `host:port`.
     */
    network: Array<string>,
    /**
     * Host programs the step runs through the `process` interface, by name. A step
     * that runs programs its user names (a linter or test runner given as an input)
     * declares `*`: it then gets exactly the programs the pipeline grants it, and none
     * when none are granted.
     */
    exec: Array<string>,
  }
  /**
   * What a step says about itself. Returned by `describe`, which must be cheap, pure and
   * must not touch the filesystem, the network or other processes.
   */
  export interface StepInfo {
    /**
     * Short name, e.g. `shell` or `license-check`.
     */
    name: string,
    /**
     * Semantic version of the step.
     */
    version: string,
    /**
     * One paragraph for users.
     */
    description: string,
    /**
     * Inputs the step accepts; any other key under `with:` is rejected.
     */
    inputs: Array<InputSpec>,
    /**
     * Outputs the step may set.
     */
    outputs: Array<OutputSpec>,
    /**
     * What the step needs from the host.
     */
    capabilities: Capabilities,
  }
  /**
   * Why a step did not succeed. The host reports each case differently.
   */
  export type StepError = StepErrorFailed | StepErrorInvalidInput | StepErrorDenied;
  /**
   * The step ran and its check failed (tests failed, lint found errors, ...).
   */
  export interface StepErrorFailed {
    tag: 'failed',
    val: string,
  }
  /**
   * An input value was missing or malformed; names the input and what was wrong.
   */
  export interface StepErrorInvalidInput {
    tag: 'invalid-input',
    val: string,
  }
  /**
   * The host refused something the step tried to do; names what was refused.
   */
  export interface StepErrorDenied {
    tag: 'denied',
    val: string,
  }
  /**
   * An input value as given under `with:` after expressions were evaluated.
   */
  export interface Input {
    /**
     * The input's name, as declared in `step-info.inputs`.
     */
    name: string,
    /**
     * The value: text, `true`/`false`, a decimal number, or a JSON array of strings for
     * `list` inputs.
     */
    value: string,
  }
}
