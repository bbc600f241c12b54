declare module 'ferry:step/log@0.1.0' {
  /**
   * Writes one line (a trailing newline is not needed) at the given level.
   */
  export function write(level: Level, message: string): void;
  /**
   * Opens a collapsible group named `title`; groups nest.
   */
  export function groupStart(title: string): void;
  /**
   * Closes the innermost open group; does nothing when none is open.
   */
  export function groupEnd(): void;
  /**
   * Records an annotation for the run summary and the log.
   */
  export function annotate(annotation: Annotation): void;
  /**
   * Severity of a log line.
   * # Variants
   * 
   * ## `"debug"`
   * 
   * Detail for debugging the step itself.
   * ## `"info"`
   * 
   * Normal progress.
   * ## `"warn"`
   * 
   * Something the user should look at; the step goes on.
   * ## `"error"`
   * 
   * Something went wrong.
   */
  export type Level = 'debug' | 'info' | 'warn' | 'error';
  /**
   * Where in the workspace an annotation points. Lines and columns count from 1.
   */
  export interface Location {
    /**
     * Path relative to the workspace root.
     */
    file: string,
    /**
     * First line of the finding.
     */
    line?: number,
    /**
     * First column on `line`.
     */
    column?: number,
    /**
     * Last line, for findings that span lines.
     */
    endLine?: number,
    /**
     * Last column on `end-line`.
     */
    endColumn?: number,
  }
  /**
   * A finding shown beside the log, like a compiler diagnostic.
   */
  export interface Annotation {
    /**
     * How serious the finding is.
     */
    level: Level,
    /**
     * What was found, in one line.
     */
    message: string,
    /**
     * Short identifier of the rule or check, e.g. `clippy::needless_return`.
     */
    rule?: string,
    /**
     * Where; `none` for findings about the whole workspace.
     */
    location?: Location,
  }
}
