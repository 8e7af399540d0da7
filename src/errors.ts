/**
 * Errors. Everything durably itself throws is a `DurablyError` with a stable `code`
 * (documented in docs/errors.md). `NonRetriableError` and `RetryAfterError` are thrown by
 * user code to steer retries.
 */

export type ErrorCode =
  | 'E_UNKNOWN_TASK'
  | 'E_PAYLOAD_NOT_JSON'
  | 'E_PAYLOAD_TOO_LARGE'
  | 'E_PAYLOAD_TOO_DEEP'
  | 'E_DATA_DIR_LOCKED'
  | 'E_BAD_DURATION'
  | 'E_BAD_OPTION'
  | 'E_BAD_CRON'
  | 'E_RUN_NOT_FOUND'
  | 'E_ILLEGAL_TRANSITION'
  | 'E_SCHEMA_TOO_NEW'
  | 'E_STORE'
  | 'E_DISK_FULL'
  | 'E_NOT_A_STORE'
  | 'E_CLOSED'
  | 'E_TIMEOUT'
  | 'E_INTERNAL'
  | 'E_RUN_FAILED'
  | 'E_RUN_CANCELLED'
  | 'E_RUN_SKIPPED'
  | 'E_RUN_POISONED';

/** The stored form of an error: what `runs.get()` shows and `E_RUN_FAILED` carries as `cause`. */
export interface StoredError {
  name: string;
  message: string;
  stack?: string;
  code?: string;
  cause?: StoredError;
}

export class DurablyError extends Error {
  readonly code: ErrorCode;
  /** The option or argument at fault, when there is one. */
  readonly option?: string;
  constructor(code: ErrorCode, message: string, opts?: { cause?: unknown; option?: string }) {
    super(message, opts?.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'DurablyError';
    this.code = code;
    if (opts?.option) this.option = opts.option;
  }
}

/** Throw from a run or a step to fail it at once, without further attempts. */
export class NonRetriableError extends Error {
  constructor(message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = 'NonRetriableError';
  }
}

/** Throw to retry at a given time: `after` is a duration ('30s', ms) or a Date. */
export class RetryAfterError extends Error {
  readonly after: number | string | Date;
  constructor(message: string, after: number | string | Date, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = 'RetryAfterError';
    this.after = after;
  }
}

const NATIVE_ERROR = /^(E_[A-Z_]+): ([\s\S]*)$/;

/**
 * Turns an error from the native addon (`"E_CODE: message"`) into a `DurablyError`. Anything
 * else from the addon (a Rust panic, caught at the boundary) is `E_INTERNAL`.
 */
export function fromNative(e: unknown): unknown {
  if (e instanceof Error && !(e instanceof DurablyError)) {
    const m = NATIVE_ERROR.exec(e.message);
    if (m) {
      const code = m[1] as ErrorCode;
      const opt = /^option `([^`]+)`/.exec(m[2]);
      return new DurablyError(code, m[2], opt ? { option: opt[1] } : undefined);
    }
    return new DurablyError('E_INTERNAL', `internal error in durably's native core: ${e.message} (this is a bug, please report it)`, { cause: e });
  }
  return e;
}

/** Calls a synchronous native function, converting its errors. */
export function native<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw fromNative(e);
  }
}

export function badOption(option: string, reason: string): DurablyError {
  return new DurablyError('E_BAD_OPTION', `option \`${option}\`: ${reason}`, { option });
}

/** The stored, JSON form of any thrown value. */
export function serializeError(err: unknown, depth = 0): StoredError {
  if (err instanceof Error) {
    const out: StoredError = { name: err.name, message: String(err.message) };
    if (err.stack) out.stack = err.stack.length > 16_384 ? err.stack.slice(0, 16_384) : err.stack;
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string') out.code = code;
    if (err.cause !== undefined && depth < 3) out.cause = serializeError(err.cause, depth + 1);
    return out;
  }
  let message: string;
  try {
    message = typeof err === 'string' ? err : JSON.stringify(err) ?? String(err);
  } catch {
    message = String(err);
  }
  return { name: 'Error', message };
}

/** Rebuilds a thrown error from its stored form (a step that failed for good, on replay). */
export function deserializeError(e: StoredError): Error {
  if (e.name === 'DurablyError' && typeof e.code === 'string') {
    const err = new DurablyError(e.code as ErrorCode, e.message, e.cause !== undefined ? { cause: e.cause } : undefined);
    if (e.stack) err.stack = e.stack;
    return err;
  }
  const err = e.name === 'NonRetriableError' ? new NonRetriableError(e.message) : new Error(e.message);
  err.name = e.name;
  if (e.stack) err.stack = e.stack;
  if (e.code) (err as { code?: string }).code = e.code;
  return err;
}
