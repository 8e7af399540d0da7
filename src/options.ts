/**
 * Options as users give them, checked and turned into what the core takes: durations,
 * times, task ids, retry and event-subscription policies, and `configure()`'s settings.
 * Bad input throws a `DurablyError` naming the option, before anything is opened or written.
 */
import * as path from 'node:path';
import { DurablyError, badOption, native } from './errors';
import { addon } from './native';
import type { TaskFlow } from './flow';
import { checkLevel, checkSink, type LogLevel, type LogSink } from './log';
import type { ConfigureOptions, Duration, FailureInfo, OnOption, RetryOptions, TaskContext } from './types';

export interface EngineConfig {
  dataDir: string | null; // null: in-memory
  concurrency: number;
  durability: 'sync' | 'batched';
  flushIntervalMs: number;
  maxPayloadBytes: number;
  cacheBytes?: number;
  manualClockMs?: number;
  /** Benchmarks only (env DURABLY_SIM_SYNC_DELAY_MS): pause after every sync. */
  simSyncDelayMs?: number;
  /** Tests only (env DURABLY_TIMER_WINDOW): timers of parked runs kept in memory. */
  timerWindow?: number;
  /** How long a call that needs the store waits for a data folder held by another process. */
  lockTimeoutMs: number;
  /** Crashes in a row while a run ran before it fails with E_RUN_POISONED. */
  crashLimit: number;
  logLevel: LogLevel;
  logger?: LogSink;
  /** Ended runs are kept this long (ms); -1: forever. */
  retentionMs: number;
}

/** A retention option: a duration of at least a minute, or `'forever'` / `false`. */
export function retentionMs(option: string, v: unknown): number {
  if (v === false || v === 'forever') return -1;
  const ms = toMs(option, v as Duration);
  if (ms < 60_000) throw badOption(option, "must be at least a minute ('1m'), or 'forever'");
  return ms;
}

/**
 * Refuses keys `obj` does not know (a typo like `idempotencyKeys` must not be ignored:
 * that is a card charged twice). `option` names the object in the message.
 */
export function knownKeys(option: string, obj: unknown, known: readonly string[]): void {
  if (obj === undefined) return;
  // Options of the wrong type (null, a string, an array …) are refused, not taken as none.
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) throw badOption(option, `takes an options object ({ ${known.join(', ')} }), got ${describe(obj)}`);
  for (const k of Object.keys(obj)) {
    if (!known.includes(k)) {
      const near = known.find((x) => x.toLowerCase().startsWith(k.toLowerCase().slice(0, 4)));
      const hint = near ? `; did you mean \`${near}\`?` : '';
      throw badOption(`${option}.${k}`, `unknown option${hint} (known: ${known.join(', ')})`);
    }
  }
}

/** What a value is, for messages (never throws: a BigInt or a symbol cannot be JSON-stringified). */
export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v;
}

/** False for a string with a lone surrogate: it has no UTF-8 form (the core would not read it). */
export function wellFormed(s: string): boolean {
  return !/\p{Surrogate}/u.test(s);
}

/** Bytes of UTF-8: the core counts ids, names and keys in bytes. */
export function utf8Length(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

/** A name or id the core stores as a key: 1 to 256 bytes of UTF-8, no NUL. */
export function checkName(option: string, what: string, value: unknown, max = 256): string {
  if (typeof value !== 'string' || value.length === 0 || utf8Length(value) > max || value.includes('\0') || !wellFormed(value)) {
    const got = typeof value !== 'string' ? describe(value) : !wellFormed(value) ? 'a string with a lone surrogate (not valid Unicode)' : `${utf8Length(value)} bytes${value.includes('\0') ? ' with a NUL' : ''}`;
    throw badOption(option, `${what} is a string of 1 to ${max} bytes (UTF-8) without NUL, got ${got}`);
  }
  return value;
}

export interface TaskDef {
  id: string;
  run: (payload: any, ctx: TaskContext) => unknown;
  policyJson: string;
  /** Event names that start the task (`on`), for computing flow keys in `send()`. */
  on?: string[];
  flow?: TaskFlow;
  onFailure?: (payload: any, info: FailureInfo) => unknown;
}

/** About 1,000 years: longer durations are typos, and would overflow times. */
const MAX_DURATION_MS = 3.2e13;
/** The latest time a JS Date can hold. */
const MAX_TIME_MS = 8.64e15;

/** Milliseconds from a duration option; `E_BAD_DURATION` names the option. */
export function toMs(option: string, value: Duration): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0 || value > MAX_DURATION_MS) {
      throw new DurablyError('E_BAD_DURATION', `option \`${option}\`: ${value} is not a duration; use a number of milliseconds >= 0 or a string like '30s', '5m', '3 days'`, { option });
    }
    return Math.round(value);
  }
  if (typeof value === 'string') {
    const ms = native(() => addon.parseDuration(option, value));
    if (ms > MAX_DURATION_MS) {
      throw new DurablyError('E_BAD_DURATION', `option \`${option}\`: ${value} is too long; the longest duration is about 1,000 years`, { option });
    }
    return ms;
  }
  throw new DurablyError('E_BAD_DURATION', `option \`${option}\`: expected a number of milliseconds or a string like '30s', got ${typeof value}`, { option });
}

export function toTime(option: string, value: Date | string | number): number {
  const ms = value instanceof Date ? value.getTime() : typeof value === 'string' ? Date.parse(value) : value;
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0 || ms > MAX_TIME_MS) {
    throw badOption(option, `${String(value)} is not a valid time; pass a Date, an ISO 8601 string or milliseconds since the epoch`);
  }
  return Math.round(ms);
}

const TASK_ID = /^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$/;

export function validateTaskId(id: unknown): string {
  if (typeof id !== 'string' || !TASK_ID.test(id)) {
    throw badOption('id', `task id ${typeof id === 'string' ? JSON.stringify(id) : describe(id)} must be 1–128 characters of letters, digits and . _ : / - (starting with a letter or digit)`);
  }
  return id;
}

/** The JSON policy of a task (`{ retry, on }`), checked by the core without opening anything. */
export function policyJson(retry: RetryOptions | undefined, on: OnOption | undefined, extra: Record<string, unknown> = {}): string {
  const r = { ...(JSON.parse(retryPolicyJson(retry)) as Record<string, unknown>), ...extra };
  if (on !== undefined) r.on = onSpecs(on);
  const text = JSON.stringify(r);
  native(() => addon.checkPolicy(text));
  return text;
}

function onSpecs(on: OnOption): Array<{ event: string; if?: string }> {
  const list = Array.isArray(on) ? on : [on];
  if (list.length === 0) throw badOption('on', 'list at least one event name');
  return list.map((o, i) => {
    const opt = Array.isArray(on) ? `on[${i}]` : 'on';
    if (typeof o === 'string') {
      checkName(opt, 'an event name', o);
      return { event: o };
    }
    if (o === null || typeof o !== 'object' || typeof o.event !== 'string' || o.event.length === 0) {
      throw badOption(opt, "must be an event name or { event: 'name', if?: 'expression' }");
    }
    knownKeys(opt, o, ['event', 'if']);
    checkName(`${opt}.event`, 'an event name', o.event);
    if (o.if !== undefined && (typeof o.if !== 'string' || !wellFormed(o.if))) throw badOption(`${opt}.if`, 'must be an expression string');
    return o.if === undefined ? { event: o.event } : { event: o.event, if: o.if };
  });
}

export function checkExpression(option: string, src: string): void {
  if (typeof src !== 'string' || !wellFormed(src)) throw badOption(option, 'must be an expression string (of valid Unicode: no lone surrogate)');
  native(() => addon.checkExpression(option, src));
}

export function retryPolicyJson(retry: RetryOptions | undefined): string {
  const r = retry === undefined ? {} : retry;
  if (r === null || typeof r !== 'object' || Array.isArray(r)) throw badOption('retry', 'must be an object like { maxAttempts: 3 }');
  knownKeys('retry', r, ['maxAttempts', 'factor', 'minTimeout', 'maxTimeout', 'randomize']);
  // `undefined` means the default; anything else (null included) must be valid.
  const maxAttempts = r.maxAttempts === undefined ? 4 : r.maxAttempts;
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 1000) {
    throw badOption('retry.maxAttempts', `must be an integer from 1 to 1000, got ${String(maxAttempts)}`);
  }
  const factor = r.factor === undefined ? 2 : r.factor;
  if (typeof factor !== 'number' || !Number.isFinite(factor) || factor < 1) {
    throw badOption('retry.factor', `must be a number >= 1, got ${String(factor)}`);
  }
  const minTimeoutMs = toMs('retry.minTimeout', r.minTimeout === undefined ? 1000 : r.minTimeout);
  const maxTimeoutMs = toMs('retry.maxTimeout', r.maxTimeout === undefined ? 3_600_000 : r.maxTimeout);
  if (minTimeoutMs > maxTimeoutMs) throw badOption('retry.minTimeout', 'must not exceed retry.maxTimeout');
  const randomize = r.randomize === undefined ? true : r.randomize;
  if (typeof randomize !== 'boolean') throw badOption('retry.randomize', 'must be true or false');
  return JSON.stringify({ retry: { maxAttempts, factor, minTimeoutMs, maxTimeoutMs, randomize } });
}

export function resolveConfig(opts: ConfigureOptions, env: NodeJS.ProcessEnv = process.env): EngineConfig {
  if (opts === null || typeof opts !== 'object' || Array.isArray(opts)) throw badOption('configure', 'pass an object like { dataDir: "./.durably" }');
  const known = ['dataDir', 'concurrency', 'durability', 'flushInterval', 'maxPayloadBytes', 'cacheBytes', 'lockTimeout', 'crashLimit', 'logLevel', 'logger', 'retention'];
  for (const k of Object.keys(opts)) {
    if (!known.includes(k)) throw badOption(k, `unknown option; known options are ${known.join(', ')}`);
    // `undefined` means the default; null is a wrong value, not "none" (for a duration, toMs says so).
    if ((opts as Record<string, unknown>)[k] === null && k !== 'flushInterval' && k !== 'lockTimeout') throw badOption(k, 'must not be null; leave it out for the default');
  }
  if (opts.dataDir !== undefined && (typeof opts.dataDir !== 'string' || opts.dataDir.length === 0 || opts.dataDir.includes('\0') || !wellFormed(opts.dataDir))) {
    throw badOption('dataDir', 'must be a folder path: a non-empty string without NUL');
  }
  const dataDir = env.DURABLY_DATA_DIR || opts.dataDir || './.durably';
  const concurrency = env.DURABLY_CONCURRENCY ? Number(env.DURABLY_CONCURRENCY) : (opts.concurrency ?? 100);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 100_000) {
    throw badOption('concurrency', `must be an integer from 1 to 100000, got ${String(concurrency)}`);
  }
  const durability = (env.DURABLY_DURABILITY as 'sync' | 'batched' | undefined) || (opts.durability === undefined ? 'sync' : opts.durability);
  if (durability !== 'sync' && durability !== 'batched') throw badOption('durability', `must be 'sync' or 'batched', got ${typeof durability === 'string' ? JSON.stringify(durability) : typeof durability}`);
  const flushIntervalMs = toMs('flushInterval', opts.flushInterval === undefined ? 100 : opts.flushInterval);
  // The core takes it as a u32 of milliseconds: a longer one would silently wrap around.
  if (flushIntervalMs > 0xffff_ffff) throw new DurablyError('E_BAD_DURATION', 'option `flushInterval`: at most 49 days (4294967295 ms); the default is 100 ms', { option: 'flushInterval' });
  const maxPayloadBytes = opts.maxPayloadBytes ?? 4 * 1024 * 1024;
  if (!Number.isInteger(maxPayloadBytes) || maxPayloadBytes < 1024 || maxPayloadBytes > 512 * 1024 * 1024) {
    throw badOption('maxPayloadBytes', 'must be an integer from 1024 to 536870912');
  }
  if (opts.cacheBytes !== undefined && (!Number.isSafeInteger(opts.cacheBytes) || opts.cacheBytes < 2 ** 20 || opts.cacheBytes > 2 ** 40)) {
    throw badOption('cacheBytes', `must be an integer from 1048576 (1 MiB) to 1099511627776 (1 TiB), got ${String(opts.cacheBytes)}`);
  }
  const lockTimeoutMs = toMs('lockTimeout', opts.lockTimeout === undefined ? '10s' : opts.lockTimeout);
  const logLevel = checkLevel(env.DURABLY_LOG || (opts.logLevel === undefined ? 'warn' : opts.logLevel), env.DURABLY_LOG ? 'DURABLY_LOG' : 'logLevel');
  const logger = checkSink(opts.logger);
  const retention = retentionMs(env.DURABLY_RETENTION ? 'DURABLY_RETENTION' : 'retention', env.DURABLY_RETENTION || (opts.retention ?? '7d'));
  const crashLimit = opts.crashLimit ?? 3;
  if (!Number.isInteger(crashLimit) || crashLimit < 1 || crashLimit > 1000) throw badOption('crashLimit', `must be an integer from 1 to 1000, got ${String(crashLimit)}`);
  const sim = Number(env.DURABLY_SIM_SYNC_DELAY_MS ?? 0);
  const simSyncDelayMs = Number.isFinite(sim) && sim > 0 ? Math.round(sim) : undefined;
  const window = Number(env.DURABLY_TIMER_WINDOW ?? NaN);
  const timerWindow = Number.isInteger(window) && window >= 1 ? window : undefined;
  return { dataDir: path.resolve(dataDir), concurrency, durability, flushIntervalMs, maxPayloadBytes, cacheBytes: opts.cacheBytes, simSyncDelayMs, timerWindow, lockTimeoutMs, crashLimit, logLevel, logger, retentionMs: retention };
}
