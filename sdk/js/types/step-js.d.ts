/// <reference path="./interfaces/ferry-step-archive.d.ts" />
/// <reference path="./interfaces/ferry-step-log.d.ts" />
/// <reference path="./interfaces/ferry-step-outputs.d.ts" />
/// <reference path="./interfaces/ferry-step-process.d.ts" />
/// <reference path="./interfaces/ferry-step-types.d.ts" />
/// <reference path="./interfaces/wasi-cli-environment.d.ts" />
/// <reference path="./interfaces/wasi-clocks-wall-clock.d.ts" />
/// <reference path="./interfaces/wasi-filesystem-preopens.d.ts" />
/// <reference path="./interfaces/wasi-filesystem-types.d.ts" />
/// <reference path="./interfaces/wasi-io-error.d.ts" />
/// <reference path="./interfaces/wasi-io-poll.d.ts" />
/// <reference path="./interfaces/wasi-io-streams.d.ts" />
declare module 'ferry:js-sdk/step-js@0.1.0' {
  export type StepInfo = import('ferry:step/types@0.1.0').StepInfo;
  export type StepError = import('ferry:step/types@0.1.0').StepError;
  export type Input = import('ferry:step/types@0.1.0').Input;
  export type * as FerryStepArchive010 from 'ferry:step/archive@0.1.0'; // import ferry:step/archive@0.1.0
  export type * as FerryStepLog010 from 'ferry:step/log@0.1.0'; // import ferry:step/log@0.1.0
  export type * as FerryStepOutputs010 from 'ferry:step/outputs@0.1.0'; // import ferry:step/outputs@0.1.0
  export type * as FerryStepProcess010 from 'ferry:step/process@0.1.0'; // import ferry:step/process@0.1.0
  export type * as FerryStepTypes010 from 'ferry:step/types@0.1.0'; // import ferry:step/types@0.1.0
  export type * as WasiCliEnvironment0212 from 'wasi:cli/environment@0.2.12'; // import wasi:cli/environment@0.2.12
  export type * as WasiClocksWallClock0212 from 'wasi:clocks/wall-clock@0.2.12'; // import wasi:clocks/wall-clock@0.2.12
  export type * as WasiFilesystemPreopens0212 from 'wasi:filesystem/preopens@0.2.12'; // import wasi:filesystem/preopens@0.2.12
  export type * as WasiFilesystemTypes0212 from 'wasi:filesystem/types@0.2.12'; // import wasi:filesystem/types@0.2.12
  export type * as WasiIoError0212 from 'wasi:io/error@0.2.12'; // import wasi:io/error@0.2.12
  export type * as WasiIoPoll0212 from 'wasi:io/poll@0.2.12'; // import wasi:io/poll@0.2.12
  export type * as WasiIoStreams0212 from 'wasi:io/streams@0.2.12'; // import wasi:io/streams@0.2.12
  /**
  * Describes the step. Called before `run`, possibly in another instance.
  */
  export function describe(): StepInfo;
  /**
  * Runs the step once with its inputs (every declared input with a value, defaults
  * applied by the host).
  */
  export function run(inputs: Array<Input>): void;
  export type Result<T, E> = { tag: 'ok', val: T } | { tag: 'err', val: E };
}
