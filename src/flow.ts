/**
 * Task flow-control options (concurrency, throttle, rate limit, debounce, priority,
 * idempotency, singleton, timeout, cancelOn): checked at `task()` time, turned into the
 * core's policy, and — for the parts that depend on the payload — evaluated at trigger time
 * into the strings the core stores (DESIGN §1.1: every `key` is a function of the payload).
 */
import { DurablyError, badOption } from './errors';
import type { Duration } from './types';

/**
 * A key: a function of the payload (`(p) => p.accountId`), or an expression over the run's
 * event in the `if` language (`'event.data.accountId'`; a direct trigger's event is
 * `{ data: payload }`), evaluated by the core. A constant is an expression too: `'"global"'`.
 */
export type KeyFn<P> = ((payload: P) => string | number) | string;

export interface FlowOptions<P> {
  /** At most `limit` runs executing at once (per key). Parked runs hold no slot. */
  concurrency?: { limit: number; key?: KeyFn<P> };
  /** At most `limit` (+ `burst`) starts in any window of `period` (per key); excess waits, in order. */
  throttle?: { limit: number; period: Duration; burst?: number; key?: KeyFn<P> };
  /** At most `limit` triggers per `period` (per key); excess runs are recorded `skipped`. */
  rateLimit?: { limit: number; period: Duration; key?: KeyFn<P> };
  /** One run per quiet `period` (per key); `maxWait` bounds the postponement. */
  debounce?: { period: Duration; key?: KeyFn<P>; maxWait?: Duration; mode?: 'trailing' | 'leading' };
  /** Higher starts first among ready runs. */
  priority?: number | ((payload: P) => number);
  /** A second trigger with the same key (within `idempotencyKeyTTL`, default 30 days) returns the first run. */
  idempotencyKey?: (payload: P) => string;
  idempotencyKeyTTL?: Duration;
  /** One active run per key: `'skip'` the new one, or `'cancel'` the active one. */
  singleton?: { key?: KeyFn<P>; mode: 'skip' | 'cancel' };
  /** `start`: cancelled if not started in time; `finish`: fails if running longer (retries included). */
  timeout?: { start?: Duration; finish?: Duration };
  /** Events that cancel the run: `match` compares a path of this run's event (or `{ data: payload }`) and the incoming one. */
  cancelOn?: Array<{ event: string; match?: string; if?: string; timeout?: Duration }>;
}

/** The parts evaluated in JS at trigger time (keys given as functions). */
export interface TaskFlow {
  concurrencyKey?: KeyFunction;
  throttleKey?: KeyFunction;
  rateLimitKey?: KeyFunction;
  debounceKey?: KeyFunction;
  singletonKey?: KeyFunction;
  idempotencyKey?: (payload: unknown) => string;
  idempotencyKeyTTL?: number;
  priority?: number | ((payload: unknown) => number);
  cancelOn?: Array<{ event: string; match?: string; if?: string; timeoutMs?: number }>;
}

type ToMs = (option: string, value: Duration) => number;
type KeyFunction = (payload: unknown) => string | number;

/** Refuses keys an options object does not know (a typo must not be ignored). */
function known(option: string, o: Record<string, unknown>, keys: readonly string[]): void {
  for (const k of Object.keys(o)) {
    if (!keys.includes(k)) throw badOption(`${option}.${k}`, `unknown option (known: ${keys.join(', ')})`);
  }
}

function limit(option: string, v: unknown): number {
  if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > 1_000_000) {
    throw badOption(option, `must be an integer from 1 to 1000000, got ${String(v)}`);
  }
  return v as number;
}

/**
 * A key option: a function stays in JS (`flow`); an expression goes to the core's policy
 * (`keys`), checked now so that a typo fails at task() time.
 */
function keyOption(
  option: string,
  v: unknown,
  exprs: Record<string, string>,
  kind: string,
  checkExpression: (option: string, src: string) => void,
): KeyFunction | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'function') return v as KeyFunction;
  if (typeof v === 'string') {
    checkExpression(option, v);
    exprs[kind] = v;
    return undefined;
  }
  throw badOption(option, "must be a function of the payload, like (p) => p.accountId, or an expression over the run's event, like 'event.data.accountId'");
}

function object(option: string, v: unknown): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw badOption(option, 'must be an object');
  return v as Record<string, unknown>;
}

function period(option: string, v: unknown, toMs: ToMs): number {
  const ms = toMs(option, v as Duration);
  if (ms <= 0) throw new DurablyError('E_BAD_DURATION', `option \`${option}\`: must be longer than 0`, { option });
  return ms;
}

/** Checks the flow options of a task: the core's policy fields, and the trigger-time parts. */
export function parseFlow(opts: FlowOptions<unknown>, toMs: ToMs, checkExpression: (option: string, src: string) => void): { policy: Record<string, unknown>; flow: TaskFlow; onFailure: boolean } {
  const policy: Record<string, unknown> = {};
  const flow: TaskFlow = {};
  const exprs: Record<string, string> = {};
  if (opts.concurrency !== undefined) {
    const c = object('concurrency', opts.concurrency);
    known('concurrency', c, ['limit', 'key']);
    policy.concurrency = { limit: limit('concurrency.limit', c.limit) };
    flow.concurrencyKey = keyOption('concurrency.key', c.key, exprs, 'concurrency', checkExpression);
  }
  if (opts.throttle !== undefined) {
    const t = object('throttle', opts.throttle);
    known('throttle', t, ['limit', 'period', 'burst', 'key']);
    const burst = t.burst === undefined ? 0 : t.burst;
    if (!Number.isInteger(burst) || (burst as number) < 0 || (burst as number) > 1_000_000) throw badOption('throttle.burst', 'must be an integer from 0 to 1000000');
    policy.throttle = { limit: limit('throttle.limit', t.limit), periodMs: period('throttle.period', t.period, toMs), burst };
    flow.throttleKey = keyOption('throttle.key', t.key, exprs, 'throttle', checkExpression);
  }
  if (opts.rateLimit !== undefined) {
    const r = object('rateLimit', opts.rateLimit);
    known('rateLimit', r, ['limit', 'period', 'key']);
    policy.rateLimit = { limit: limit('rateLimit.limit', r.limit), periodMs: period('rateLimit.period', r.period, toMs) };
    flow.rateLimitKey = keyOption('rateLimit.key', r.key, exprs, 'rateLimit', checkExpression);
  }
  if (opts.debounce !== undefined) {
    const d = object('debounce', opts.debounce);
    known('debounce', d, ['period', 'key', 'maxWait', 'mode']);
    const mode = d.mode === undefined ? 'trailing' : d.mode;
    if (mode !== 'trailing' && mode !== 'leading') throw badOption('debounce.mode', "must be 'trailing' or 'leading'");
    const periodMs = period('debounce.period', d.period, toMs);
    const maxWaitMs = d.maxWait === undefined ? undefined : period('debounce.maxWait', d.maxWait, toMs);
    if (maxWaitMs !== undefined && maxWaitMs < periodMs) throw badOption('debounce.maxWait', 'must be at least debounce.period');
    policy.debounce = { periodMs, maxWaitMs, mode };
    flow.debounceKey = keyOption('debounce.key', d.key, exprs, 'debounce', checkExpression);
  }
  if (opts.singleton !== undefined) {
    const sg = object('singleton', opts.singleton);
    known('singleton', sg, ['key', 'mode']);
    if (sg.mode !== 'skip' && sg.mode !== 'cancel') throw badOption('singleton.mode', "must be 'skip' or 'cancel'");
    policy.singleton = { mode: sg.mode };
    flow.singletonKey = keyOption('singleton.key', sg.key, exprs, 'singleton', checkExpression);
  }
  if (opts.timeout !== undefined) {
    const t = object('timeout', opts.timeout);
    known('timeout', t, ['start', 'finish']);
    policy.timeout = {
      startMs: t.start === undefined ? undefined : period('timeout.start', t.start, toMs),
      finishMs: t.finish === undefined ? undefined : period('timeout.finish', t.finish, toMs),
    };
  }
  if (opts.priority !== undefined) {
    if (typeof opts.priority !== 'function' && !Number.isInteger(opts.priority)) throw badOption('priority', 'must be an integer or a function of the payload');
    flow.priority = opts.priority as TaskFlow['priority'];
  }
  if (opts.idempotencyKey !== undefined) {
    if (typeof opts.idempotencyKey !== 'function') throw badOption('idempotencyKey', 'must be a function of the payload returning a string');
    flow.idempotencyKey = opts.idempotencyKey as (p: unknown) => string;
  }
  if (opts.idempotencyKeyTTL !== undefined) flow.idempotencyKeyTTL = period('idempotencyKeyTTL', opts.idempotencyKeyTTL, toMs);
  if (opts.cancelOn !== undefined) {
    if (!Array.isArray(opts.cancelOn)) throw badOption('cancelOn', "must be a list like [{ event: 'user/deleted', match: 'data.userId' }]");
    flow.cancelOn = opts.cancelOn.map((c, i) => {
      const o = object(`cancelOn[${i}]`, c);
      known(`cancelOn[${i}]`, o, ['event', 'match', 'if', 'timeout']);
      if (typeof o.event !== 'string' || o.event.length === 0 || Buffer.byteLength(o.event) > 256 || o.event.includes('\0') || !wellFormed(o.event)) {
        throw badOption(`cancelOn[${i}].event`, 'needs an event name: 1 to 256 bytes, without NUL');
      }
      if (o.match !== undefined && (typeof o.match !== 'string' || o.match.length === 0 || !wellFormed(o.match))) throw badOption(`cancelOn[${i}].match`, "must be a path like 'data.userId'");
      if (o.if !== undefined) {
        if (typeof o.if !== 'string') throw badOption(`cancelOn[${i}].if`, 'must be an expression string');
        checkExpression(`cancelOn[${i}].if`, o.if);
      }
      return {
        event: o.event,
        match: o.match as string | undefined,
        if: o.if as string | undefined,
        timeoutMs: o.timeout === undefined ? undefined : period(`cancelOn[${i}].timeout`, o.timeout, toMs),
      };
    });
  }
  if (Object.keys(exprs).length > 0) policy.keys = exprs;
  return { policy, flow, onFailure: false };
}

function evalKey(option: string, k: KeyFunction | undefined, payload: unknown): string | undefined {
  if (k === undefined) return undefined;
  let v: unknown;
  try {
    v = k(payload);
  } catch (e) {
    throw new DurablyError('E_BAD_OPTION', `option \`${option}\`: the key function threw: ${(e as Error)?.message ?? String(e)}`, { option, cause: e });
  }
  if (typeof v !== 'string' && typeof v !== 'number') {
    throw new DurablyError('E_BAD_OPTION', `option \`${option}\`: the key function must return a string or a number, got ${v === null ? 'null' : typeof v}`, { option });
  }
  return checkKey(option, String(v));
}

/** A key as the core stores it: 1 to 256 bytes (UTF-8), no NUL, no lone surrogate. */
function checkKey(option: string, k: string): string {
  if (k.length === 0 || Buffer.byteLength(k) > 256 || k.includes('\0') || !wellFormed(k)) {
    throw new DurablyError('E_BAD_OPTION', `option \`${option}\`: a key is 1 to 256 bytes (UTF-8) of valid Unicode without NUL, got ${k.length === 0 ? 'an empty string' : `${Buffer.byteLength(k)} bytes`}; hash longer values`, { option });
  }
  return k;
}

/** False for a string with a lone surrogate (it has no UTF-8 form). */
function wellFormed(s: string): boolean {
  return !/\p{Surrogate}/u.test(s);
}

/** Checks the flow options of one trigger before anything is built from them. */
function checkTriggerFlow(opts: TriggerFlowOptions): void {
  if (opts.idempotencyKey !== undefined) {
    if (typeof opts.idempotencyKey !== 'string') throw badOption('idempotencyKey', 'must be a string of 1 to 256 bytes');
    checkKey('idempotencyKey', opts.idempotencyKey);
  }
  if (opts.concurrencyKey !== undefined) {
    if (typeof opts.concurrencyKey !== 'string') throw badOption('concurrencyKey', 'must be a string of 1 to 256 bytes');
    checkKey('concurrencyKey', opts.concurrencyKey);
  }
  if (opts.priority !== undefined && !Number.isInteger(opts.priority)) throw badOption('priority', 'must be an integer');
}

function lookupPath(root: unknown, path: string): unknown {
  let v: unknown = root;
  for (const seg of path.split('.')) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[seg];
  }
  return v;
}

export interface TriggerFlowOptions {
  idempotencyKey?: string;
  idempotencyKeyTTL?: Duration;
  priority?: number;
  concurrencyKey?: string;
  ttl?: Duration;
}

/**
 * The flow keys of one trigger as JSON members (`,"priority":1,…`, or ''), from the task's
 * key functions over the payload (its own event being `own`) and the trigger's options.
 */
export function flowMembers(flow: TaskFlow | undefined, payload: unknown, own: unknown, opts: TriggerFlowOptions | undefined, now: () => number, toMs: ToMs): string {
  let out = '';
  const add = (name: string, v: unknown) => {
    if (v !== undefined) out += `,${JSON.stringify(name)}:${JSON.stringify(v)}`;
  };
  if (opts) checkTriggerFlow(opts);
  if (flow) {
    add('concurrencyKey', opts?.concurrencyKey ?? evalKey('concurrency.key', flow.concurrencyKey, payload));
    add('throttleKey', evalKey('throttle.key', flow.throttleKey, payload));
    add('rateLimitKey', evalKey('rateLimit.key', flow.rateLimitKey, payload));
    add('debounceKey', evalKey('debounce.key', flow.debounceKey, payload));
    add('singletonKey', evalKey('singleton.key', flow.singletonKey, payload));
    if (opts?.idempotencyKey === undefined && flow.idempotencyKey) add('idempotencyKey', evalKey('idempotencyKey', flow.idempotencyKey, payload));
    if (opts?.idempotencyKeyTTL === undefined) add('idempotencyTtlMs', flow.idempotencyKeyTTL);
    if (opts?.priority === undefined && flow.priority !== undefined) {
      const p = typeof flow.priority === 'function' ? flow.priority(payload) : flow.priority;
      if (!Number.isInteger(p)) throw badOption('priority', `must be an integer, got ${String(p)}`);
      add('priority', Math.max(-1_000_000, Math.min(1_000_000, p)));
    }
    if (flow.cancelOn) {
      const at = now();
      const list = flow.cancelOn.map((c) => ({
        event: c.event,
        ...(c.match !== undefined ? { path: c.match, value: JSON.stringify(lookupPath(own, c.match) ?? null) } : {}),
        ...(c.if !== undefined ? { if: c.if } : {}),
        ...(c.timeoutMs !== undefined ? { until: at + c.timeoutMs } : {}),
      }));
      add('cancelOn', list);
    }
  } else if (opts?.concurrencyKey !== undefined) {
    add('concurrencyKey', opts.concurrencyKey);
  }
  if (opts) {
    if (opts.idempotencyKey !== undefined) add('idempotencyKey', opts.idempotencyKey);
    if (opts.idempotencyKeyTTL !== undefined) add('idempotencyTtlMs', period('idempotencyKeyTTL', opts.idempotencyKeyTTL, toMs));
    if (opts.priority !== undefined) add('priority', Math.max(-1_000_000, Math.min(1_000_000, opts.priority)));
    if (opts.ttl !== undefined) add('ttlMs', period('ttl', opts.ttl, toMs));
  }
  return out;
}
