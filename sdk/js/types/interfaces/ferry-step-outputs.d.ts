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
}
