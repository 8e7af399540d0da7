/**
 * The native addon (crates/node, built by napi). Loaded once per process, by whichever
 * module needs it first; `durably/next` never imports this at module load.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports
export const addon = require('../native.js') as typeof import('../native');
export type NativeEngine = import('../native').NativeEngine;
