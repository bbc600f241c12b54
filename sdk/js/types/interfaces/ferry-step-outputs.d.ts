declare module 'ferry:step/outputs@0.1.0' {
  /**
   * Sets output `name` to `value`; setting it again replaces the value. Names are made
   * of letters, digits, `-` and `_` (declare them in `step-info.outputs` so users can
   * find them); all outputs of a step together are limited to 1 MiB. The error says why
   * a value was refused.
   */
  export function set(name: string, value: string): void;
}
