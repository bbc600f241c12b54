declare module 'ferry:step/process@0.1.0' {
  /**
   * Most bytes of each stream that `run` returns; the log still sees everything (up to
   * the step's log cap).
   */
  export function maxOutputBytes(): bigint;
  /**
   * Runs a program to completion.
   */
  export function run(cmd: Command): Output;
  /**
   * What to run.
   */
  export interface Command {
    /**
     * A program of the exec grant, as the grant names it: a name found on `PATH` (`git`),
     * a file of the workspace (`.venv/bin/pytest`, also written `./.venv/bin/pytest`) or an
     * absolute path. A path with `..` is refused.
     */
    program: string,
    /**
     * Arguments, passed verbatim (no shell, no globbing).
     */
    args: Array<string>,
    /**
     * Working directory relative to the workspace root; `none` means the root. A path
     * that leaves the workspace (`..`, absolute, a symbolic link) is refused.
     */
    cwd?: string,
    /**
     * Extra environment variables for the child, on top of what the step itself sees
     * (the pipeline's `env:` values and its granted variables and secrets) and of `PATH`,
     * `CI`, `FERRY_WORKSPACE` and `FERRY_OUTPUT`. Host variables that were not granted
     * never reach the child.
     */
    env: Array<[string, string]>,
    /**
     * Bytes written to the child's standard input, then closed.
     */
    stdin?: Uint8Array,
    /**
     * When false the child's output is returned but not copied into the log.
     */
    echo: boolean,
  }
  /**
   * What a finished program produced.
   */
  export interface Output {
    /**
     * Exit code; `none` when a signal ended the program.
     */
    exitCode?: number,
    /**
     * Standard output, at most `max-output-bytes` of it.
     */
    stdout: Uint8Array,
    /**
     * Standard error, at most `max-output-bytes` of it.
     */
    stderr: Uint8Array,
    /**
     * True when either stream was cut at the cap.
     */
    truncated: boolean,
  }
  /**
   * Why a program could not be run.
   */
  export type Error = ErrorDenied | ErrorNotFound | ErrorInvalid | ErrorSpawnFailed;
  /**
   * The program is not in the step's exec grant; the message names the grant.
   */
  export interface ErrorDenied {
    tag: 'denied',
    val: string,
  }
  /**
   * The program is granted but was not found: not on the step's `PATH`, or no program
   * at the granted path.
   */
  export interface ErrorNotFound {
    tag: 'not-found',
    val: string,
  }
  /**
   * A working directory outside the workspace, a bad argument, ...
   */
  export interface ErrorInvalid {
    tag: 'invalid',
    val: string,
  }
  /**
   * The operating system refused to start the program.
   */
  export interface ErrorSpawnFailed {
    tag: 'spawn-failed',
    val: string,
  }
}
