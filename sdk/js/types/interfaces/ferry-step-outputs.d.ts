declare module 'ferry:step/outputs@0.1.0' {
  /**
   * Sets output `name` to `value`; setting it again replaces the value. Names are made
   * of letters, digits, `-` and `_` (declare them in `step-info.outputs` so users can
   * find them); all outputs of a step together are limited to 1 MiB. The error says why
   * a value was refused.
   */
  export function set(name: string, value: string): void;
  /**
   * Keeps a file of the workspace with the run record, so that it outlives the workspace
   * (a test report, a coverage file): it is copied now to
   * `.ferry/runs/<run>/files/<job>/<step>/<path>`. `path` is relative to the workspace
   * root; a path that leaves the workspace (`..`, absolute, through a symbolic link), a
   * directory, and a file over 100 MiB are refused, and the error says why.
   */
  export function keep(path: string): void;
  /**
   * Puts `dir` on the `PATH` of the job's later steps, before what is there, as a line
   * in `$FERRY_PATH` does for a host program: a folder of the workspace (relative to its root)
   * or of the job's `HOME` (absolute). Heard only from a step granted `workspace: write`; when
   * the step ends the folder is checked and the step log says what was refused. A setup step
   * (a venv, a toolchain) uses it so later steps find their programs.
   */
  export function addPath(dir: string): void;
  /**
   * Sets variable `name` to `value` in the environment of the job's later steps, as a
   * line in `$FERRY_ENV` does. Heard only from a step granted `workspace: write`. `PATH`
   * (use `add-path`), `FERRY_*` and the variables that make programs load other code
   * (`LD_PRELOAD`, `NODE_OPTIONS`, `PYTHONPATH`, ...) are refused with a warning when the
   * step ends; a name that is not a variable name, or a value holding NUL, now.
   */
  export function setEnv(name: string, value: string): void;
}
