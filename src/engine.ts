/**
 * The JS side of the driver protocol. The Rust core owns state, policy and time; this
 * file only runs user code:
 *
 * - `trigger` calls made in the same tick are sent to the core as one batch (one crossing,
 *   one durable commit); each resolves once its runs are on disk.
 * - the executor keeps one `claim(n)` pending; the core resolves it with due runs, each
 *   of which is invoked from the top with its completed steps memoized (replay).
 * - ops (step done, step failed, run completed …) are reported in batches, one crossing per
 *   event-loop turn; a step's promise resolves only after its result is durable.
 * - a retriable step failure suspends the invocation: no new step starts, the steps in
 *   flight finish and are stored, then `retryStep` hands the run back to the core, which
 *   schedules the next attempt.
 */
import { randomUUID } from 'node:crypto';
import * as path from 'node:path';
import { DurablyError, NonRetriableError, RetryAfterError, badOption, deserializeError, fromNative, native, serializeError, type StoredError } from './errors';
import { flowMembers, type TaskFlow } from './flow';
import { toJson } from './json';
import type {
  ConfigureOptions,
  FailureInfo,
  Schedule,
  ScheduleInput,
  DurablyEvent,
  EventInput,
  OnOption,
  Task,
  Token,
  WaitForEventOptions,
  Duration,
  ListRunsOptions,
  Logger,
  ResultOptions,
  RetryOptions,
  Run,
  RunHandle,
  RunList,
  ShutdownOptions,
  Stats,
  StepApi,
  TaskContext,
  TriggerOptions,
} from './types';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const addon = require('../native.js') as typeof import('../native');
type NativeEngine = import('../native').NativeEngine;

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
    throw badOption('id', `task id ${JSON.stringify(id)} must be 1–128 characters of letters, digits and . _ : / - (starting with a letter or digit)`);
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
      if (o.length === 0 || o.length > 256) throw badOption(opt, 'an event name is a string of 1 to 256 characters');
      return { event: o };
    }
    if (o === null || typeof o !== 'object' || typeof o.event !== 'string' || o.event.length === 0) {
      throw badOption(opt, "must be an event name or { event: 'name', if?: 'expression' }");
    }
    if (o.if !== undefined && typeof o.if !== 'string') throw badOption(`${opt}.if`, 'must be an expression string');
    return o.if === undefined ? { event: o.event } : { event: o.event, if: o.if };
  });
}

export function checkExpression(option: string, src: string): void {
  native(() => addon.checkExpression(option, src));
}

export function retryPolicyJson(retry: RetryOptions | undefined): string {
  const r = retry ?? {};
  if (typeof r !== 'object') throw badOption('retry', 'must be an object like { maxAttempts: 3 }');
  const maxAttempts = r.maxAttempts ?? 4;
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 1000) {
    throw badOption('retry.maxAttempts', `must be an integer from 1 to 1000, got ${String(maxAttempts)}`);
  }
  const factor = r.factor ?? 2;
  if (typeof factor !== 'number' || !Number.isFinite(factor) || factor < 1) {
    throw badOption('retry.factor', `must be a number >= 1, got ${String(factor)}`);
  }
  const minTimeoutMs = toMs('retry.minTimeout', r.minTimeout ?? 1000);
  const maxTimeoutMs = toMs('retry.maxTimeout', r.maxTimeout ?? 3_600_000);
  if (minTimeoutMs > maxTimeoutMs) throw badOption('retry.minTimeout', 'must not exceed retry.maxTimeout');
  const randomize = r.randomize ?? true;
  if (typeof randomize !== 'boolean') throw badOption('retry.randomize', 'must be true or false');
  return JSON.stringify({ retry: { maxAttempts, factor, minTimeoutMs, maxTimeoutMs, randomize } });
}

export function resolveConfig(opts: ConfigureOptions, env: NodeJS.ProcessEnv = process.env): EngineConfig {
  if (opts === null || typeof opts !== 'object') throw badOption('configure', 'pass an object like { dataDir: "./.durably" }');
  const known = ['dataDir', 'concurrency', 'durability', 'flushInterval', 'maxPayloadBytes', 'cacheBytes'];
  for (const k of Object.keys(opts)) {
    if (!known.includes(k)) throw badOption(k, `unknown option; known options are ${known.join(', ')}`);
  }
  const dataDir = env.DURABLY_DATA_DIR || opts.dataDir || './.durably';
  if (typeof dataDir !== 'string') throw badOption('dataDir', 'must be a folder path');
  const concurrency = env.DURABLY_CONCURRENCY ? Number(env.DURABLY_CONCURRENCY) : (opts.concurrency ?? 100);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 100_000) {
    throw badOption('concurrency', `must be an integer from 1 to 100000, got ${String(concurrency)}`);
  }
  const durability = (env.DURABLY_DURABILITY as 'sync' | 'batched' | undefined) || opts.durability || 'sync';
  if (durability !== 'sync' && durability !== 'batched') throw badOption('durability', `must be 'sync' or 'batched', got ${JSON.stringify(durability)}`);
  const flushIntervalMs = toMs('flushInterval', opts.flushInterval ?? 100);
  const maxPayloadBytes = opts.maxPayloadBytes ?? 4 * 1024 * 1024;
  if (!Number.isInteger(maxPayloadBytes) || maxPayloadBytes < 1024 || maxPayloadBytes > 512 * 1024 * 1024) {
    throw badOption('maxPayloadBytes', 'must be an integer from 1024 to 536870912');
  }
  if (opts.cacheBytes !== undefined && (!Number.isInteger(opts.cacheBytes) || opts.cacheBytes < 1 << 20)) {
    throw badOption('cacheBytes', 'must be an integer of at least 1048576');
  }
  const sim = Number(env.DURABLY_SIM_SYNC_DELAY_MS ?? 0);
  const simSyncDelayMs = Number.isFinite(sim) && sim > 0 ? Math.round(sim) : undefined;
  const window = Number(env.DURABLY_TIMER_WINDOW ?? NaN);
  const timerWindow = Number.isInteger(window) && window >= 1 ? window : undefined;
  return { dataDir: path.resolve(dataDir), concurrency, durability, flushIntervalMs, maxPayloadBytes, cacheBytes: opts.cacheBytes, simSyncDelayMs, timerWindow };
}

interface ClaimedStep {
  key: string;
  status: 'completed' | 'failed' | 'retrying' | 'waiting';
  attempts: number;
  output?: unknown;
  error?: StoredError;
  wakeAt?: number;
  child?: string;
}

interface Claimed {
  id: string;
  task: string;
  payload: unknown;
  attempt: number;
  maxAttempts: number;
  createdAt: number;
  now: number;
  tags?: string[];
  event?: DurablyEvent;
  steps: ClaimedStep[];
  kind?: 'onFailure';
  failure?: { runId: string; error: StoredError };
}

interface PendingGroup {
  json: string;
  resolve: (ids: string[]) => void;
  reject: (e: unknown) => void;
}

/**
 * Settles the callers of one batched native call (trigger or send): its answer has one
 * entry per group, `{ ids }` or `{ error: "E_CODE: message" }`; a failed call fails them all.
 */
function settleGroups(groups: PendingGroup[], call: Promise<string>): void {
  call.then(
    (text) => {
      const results = JSON.parse(text) as Array<{ ids?: string[]; error?: string }>;
      results.forEach((r, i) => {
        if (r.ids) groups[i].resolve(r.ids);
        else groups[i].reject(fromNative(new Error(r.error)));
      });
    },
    (e) => {
      const err = fromNative(e);
      for (const g of groups) g.reject(err);
    },
  );
}

/**
 * A promise that never settles, for a parked branch of a run. A fresh one each time: a
 * shared one would keep every parked run's continuation reachable (a leak of every
 * suspended invocation); a fresh one is garbage once the invocation is dropped.
 */
function parked<T = never>(): Promise<T> {
  return new Promise<T>(() => {});
}

function scheduleOut(r: Record<string, unknown>): Schedule {
  const out: Schedule = {
    id: r.id as string,
    task: r.task as string,
    cron: r.cron as string,
    tz: r.tz as string,
    nextTick: new Date(r.nextTick as number),
    fromTask: r.fromTask === true,
  };
  if (r.externalId !== undefined) out.externalId = r.externalId as string;
  if (r.payload !== undefined) out.payload = r.payload;
  if (typeof r.lastTick === 'number') out.lastTick = new Date(r.lastTick);
  return out;
}

function dates<T extends Record<string, unknown>>(v: T): T {
  for (const k of ['createdAt', 'startedAt', 'endedAt', 'readyAt', 'wakeAt']) {
    if (typeof v[k] === 'number') (v as Record<string, unknown>)[k] = new Date(v[k] as number);
  }
  return v;
}

export class Engine {
  config: EngineConfig;
  readonly tasks = new Map<string, TaskDef>();
  private nat: NativeEngine | null = null;
  private started = false;
  private loop: Promise<void> | null = null;
  private inflight = 0;
  /** The room the pending claim asked for (null: no claim pending). */
  private claimRoom: number | null = null;
  private idleWaiters: Array<() => void> = [];
  private triggerQueue: PendingGroup[] = [];
  private sendQueue: PendingGroup[] = [];
  private ops: string[] = [];
  private opWaiters: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
  private reportScheduled = false;
  private unacked = 0;
  private abort = new AbortController();
  private exitHook: (() => void) | null = null;
  private signalHook: ((sig: NodeJS.Signals) => void) | null = null;
  private warned = new Set<string>();
  private readonly invocations = new Map<string, Invocation>();

  constructor(config: EngineConfig) {
    this.config = config;
  }

  get isOpen(): boolean {
    return this.nat !== null;
  }

  /** Opens the store on first need; never at import or by configure(). */
  open(): NativeEngine {
    if (this.nat) return this.nat;
    if (process.env.NEXT_PHASE === 'phase-production-build') {
      throw new DurablyError('E_BAD_OPTION', 'durably does not open its store during `next build`; trigger runs from request handlers, server actions or instrumentation, not at module import time');
    }
    const c = this.config;
    const nat = native(() =>
      addon.NativeEngine.open({
        dataDir: c.dataDir ?? undefined,
        concurrency: c.concurrency,
        maxPayloadBytes: c.maxPayloadBytes,
        durability: c.durability,
        flushIntervalMs: c.flushIntervalMs,
        cacheBytes: c.cacheBytes,
        manualClockMs: c.manualClockMs,
        simSyncDelayMs: c.simSyncDelayMs,
        timerWindow: c.timerWindow,
      }),
    );
    try {
      for (const t of this.tasks.values()) native(() => nat.registerTask(t.id, t.policyJson));
    } catch (e) {
      nat.close(); // release the data folder: a later start() must not find it locked
      throw e;
    }
    this.nat = nat;
    this.abort = new AbortController();
    if (c.dataDir) {
      // Acknowledged writes are already on disk; this only releases the folder promptly.
      this.exitHook = () => this.closeNow();
      process.once('exit', this.exitHook);
      this.signalHook = (sig) => {
        const alone = process.listenerCount(sig) === 0;
        if (!alone) {
          this.closeNow();
          return;
        }
        void this.shutdown({ timeout: 5000 }).finally(() => process.kill(process.pid, sig));
      };
      process.once('SIGTERM', this.signalHook);
      process.once('SIGINT', this.signalHook);
    }
    return nat;
  }

  register(def: TaskDef): void {
    this.tasks.set(def.id, def); // the newest definition of an id wins (HMR)
    if (this.nat) {
      const nat = this.nat;
      native(() => nat.registerTask(def.id, def.policyJson));
    }
  }

  async start(): Promise<void> {
    this.open();
    if (this.started) return;
    this.started = true;
    this.loop = this.claimLoop();
  }

  // ---- triggering ---------------------------------------------------------------

  /** Builds one trigger item (validated) as JSON text with the payload spliced in. */
  triggerItem(taskId: string, payload: unknown, opts: TriggerOptions | undefined): string {
    const def = this.tasks.get(taskId);
    if (!def) {
      throw new DurablyError('E_UNKNOWN_TASK', `no task with id "${taskId}" is registered in this process; define it with task({ id: "${taskId}", run }) and import the module before triggering it (check the id for typos)`);
    }
    const body = toJson(payload, 'the payload', this.config.maxPayloadBytes);
    let extra = '';
    if (opts !== undefined) {
      if (opts === null || typeof opts !== 'object') throw badOption('options', 'trigger options must be an object');
      if (opts.delay !== undefined) extra += `,"delayMs":${toMs('delay', opts.delay)}`;
      if (opts.runAt !== undefined) extra += `,"runAt":${toTime('runAt', opts.runAt)}`;
      if (opts.tags !== undefined) {
        const tags = opts.tags;
        if (!Array.isArray(tags) || tags.length > 20 || tags.some((t) => typeof t !== 'string' || t.length === 0 || t.length > 128)) {
          throw badOption('tags', 'must be an array of at most 20 strings of 1–128 characters');
        }
        extra += `,"tags":${JSON.stringify(tags)}`;
      }
    }
    if (def.flow || opts !== undefined) extra += flowMembers(def.flow, payload, { data: payload }, opts, () => this._now(), toMs);
    return `{"task":${JSON.stringify(taskId)},"payload":${body}${extra}}`;
  }

  /** Sends a group of trigger items (all or nothing), batched with the others of this tick. */
  submitGroup(items: string[]): Promise<string[]> {
    const nat = this.open();
    return new Promise((resolve, reject) => {
      this.triggerQueue.push({ json: `[${items.join(',')}]`, resolve, reject });
      if (this.triggerQueue.length === 1) queueMicrotask(() => this.flushTriggers(nat));
    });
  }

  private flushTriggers(nat: NativeEngine): void {
    const groups = this.triggerQueue;
    this.triggerQueue = [];
    settleGroups(groups, nat.trigger(`[${groups.map((g) => g.json).join(',')}]`));
  }

  handle<O>(id: string, taskId: string): RunHandle<O> {
    return {
      id,
      taskId,
      result: (opts?: ResultOptions) => this.result<O>(id, opts),
      cancel: () => this.cancel(id),
    };
  }

  async result<O>(id: string, opts?: ResultOptions): Promise<O> {
    const timeout = opts?.timeout === undefined ? undefined : toMs('timeout', opts.timeout);
    const nat = this.open();
    let text: string;
    try {
      text = await nat.waitResult(id, timeout);
    } catch (e) {
      throw fromNative(e);
    }
    const out = JSON.parse(text) as { status: string; output?: O; error?: StoredError };
    if (out.status === 'completed') return out.output as O;
    if (out.status === 'failed') {
      const err = out.error ?? { name: 'Error', message: 'unknown error' };
      throw new DurablyError('E_RUN_FAILED', `run ${id} failed: ${err.name}: ${err.message}`, { cause: err });
    }
    if (out.status === 'cancelled') {
      throw new DurablyError('E_RUN_CANCELLED', out.error?.message ?? `run ${id} was cancelled`, { cause: out.error });
    }
    if (out.status === 'skipped') {
      throw new DurablyError('E_RUN_SKIPPED', out.error?.message ?? `run ${id} was skipped`, { cause: out.error });
    }
    throw new DurablyError('E_RUN_FAILED', `run ${id} ended as ${out.status}`);
  }

  // ---- events and tokens --------------------------------------------------------

  /** One event as JSON text, validated, with its data spliced in. */
  eventJson(ev: EventInput, i: number | null): string {
    const where = i === null ? 'event' : `events[${i}]`;
    if (ev === null || typeof ev !== 'object') throw badOption(where, "an event is { name: 'user/signed-up', data?: {…}, id?: '…' }");
    if (typeof ev.name !== 'string' || ev.name.length === 0 || ev.name.length > 256) {
      throw badOption(`${where}.name`, "an event needs a name: a string of 1 to 256 characters, like 'user/signed-up'");
    }
    let text = `{"name":${JSON.stringify(ev.name)}`;
    if (ev.id !== undefined) {
      if (typeof ev.id !== 'string' || ev.id.length === 0 || ev.id.length > 256) throw badOption(`${where}.id`, 'an event id is a string of 1 to 256 characters');
      text += `,"id":${JSON.stringify(ev.id)}`;
    }
    if (ev.ts !== undefined) text += `,"ts":${toTime(`${where}.ts`, ev.ts)}`;
    if (ev.data !== undefined) text += `,"data":${toJson(ev.data, `the data of event "${ev.name}"`, this.config.maxPayloadBytes)}`;
    // Flow keys are functions of the payload: computed here for every task the event starts.
    let keys = '';
    for (const def of this.tasks.values()) {
      if (!def.flow || !def.on?.includes(ev.name)) continue;
      const members = flowMembers(def.flow, ev.data ?? null, { name: ev.name, data: ev.data ?? null }, undefined, () => this._now(), toMs);
      if (members) keys += `${keys ? ',' : ''}${JSON.stringify(def.id)}:{${members.slice(1)}}`;
    }
    if (keys) text += `,"keys":{${keys}}`;
    return text + '}';
  }

  eventsJson(events: EventInput | EventInput[]): string {
    const list = Array.isArray(events) ? events : [events];
    if (list.length > 10_000) throw badOption('events', 'at most 10000 events per send');
    return `[${list.map((e, i) => this.eventJson(e, Array.isArray(events) ? i : null)).join(',')}]`;
  }

  /** Sends events; the sends of one tick share one crossing and one durable commit. */
  send(events: EventInput | EventInput[]): Promise<{ ids: string[] }> {
    let json: string;
    try {
      json = this.eventsJson(events);
    } catch (e) {
      return Promise.reject(e);
    }
    const nat = this.open();
    return new Promise((resolve, reject) => {
      this.sendQueue.push({ json, resolve: (ids) => resolve({ ids }), reject });
      if (this.sendQueue.length === 1) queueMicrotask(() => this.flushSends(nat));
    });
  }

  private flushSends(nat: NativeEngine): void {
    const groups = this.sendQueue;
    this.sendQueue = [];
    settleGroups(groups, nat.send(`[${groups.map((g) => g.json).join(',')}]`));
  }


  async completeToken(token: string | Token, data: unknown): Promise<{ resumed: boolean }> {
    const id = typeof token === 'string' ? token : token?.id;
    if (typeof id !== 'string' || id.length === 0) throw badOption('token', 'pass the token (or its id) that step.createToken returned');
    const json = toJson(data, 'the token data', this.config.maxPayloadBytes);
    const nat = this.open();
    try {
      return { resumed: await nat.completeToken(id, json) };
    } catch (e) {
      throw fromNative(e);
    }
  }

  // ---- management ---------------------------------------------------------------

  private async nativeCall<T>(f: (nat: NativeEngine) => Promise<T>): Promise<T> {
    const nat = this.open();
    try {
      return await f(nat);
    } catch (e) {
      throw fromNative(e);
    }
  }

  async cancel(id: string): Promise<boolean> {
    if (typeof id !== 'string' || id.length === 0) throw badOption('id', 'runs.cancel(id) takes a run id string');
    return this.nativeCall((nat) => nat.cancel(id));
  }

  async replay(id: string): Promise<RunHandle<unknown>> {
    if (typeof id !== 'string' || id.length === 0) throw badOption('id', 'runs.replay(id) takes a run id string');
    const newId = await this.nativeCall((nat) => nat.replay(id));
    const run = this.getRun(newId);
    return this.handle(newId, run?.taskId ?? '');
  }

  async createSchedule(input: ScheduleInput): Promise<Schedule> {
    if (input === null || typeof input !== 'object') throw badOption('schedules.create', 'takes { task, cron, tz?, externalId?, payload? }');
    const task = typeof input.task === 'string' ? input.task : input.task?.id;
    if (typeof task !== 'string' || task.length === 0) throw badOption('task', 'schedules.create needs the task (or its id) to run');
    if (typeof input.cron !== 'string') throw badOption('cron', "must be a cron pattern like '0 9 * * MON'");
    if (input.tz !== undefined && typeof input.tz !== 'string') throw badOption('tz', "must be an IANA time zone like 'Europe/Paris'");
    if (input.externalId !== undefined && (typeof input.externalId !== 'string' || input.externalId.length === 0)) throw badOption('externalId', 'must be a non-empty string');
    let text = `{"task":${JSON.stringify(task)},"cron":${JSON.stringify(input.cron)}`;
    if (input.tz !== undefined) text += `,"tz":${JSON.stringify(input.tz)}`;
    if (input.externalId !== undefined) text += `,"externalId":${JSON.stringify(input.externalId)}`;
    if (input.payload !== undefined) text += `,"payload":${toJson(input.payload, 'the schedule payload', this.config.maxPayloadBytes)}`;
    text += '}';
    const rec = await this.nativeCall((nat) => nat.createSchedule(text));
    return scheduleOut(JSON.parse(rec));
  }

  listSchedules(opts?: { task?: string | { id: string } }): Schedule[] {
    const task = opts?.task === undefined ? undefined : typeof opts.task === 'string' ? opts.task : opts.task.id;
    const nat = this.open();
    return (JSON.parse(native(() => nat.listSchedules(task))) as Record<string, unknown>[]).map(scheduleOut);
  }

  async deleteSchedule(id: string): Promise<boolean> {
    if (typeof id !== 'string' || id.length === 0) throw badOption('id', 'schedules.delete(id) takes a schedule id');
    return this.nativeCall((nat) => nat.deleteSchedule(id));
  }

  async retry(id: string): Promise<void> {
    if (typeof id !== 'string' || id.length === 0) throw badOption('id', 'runs.retry(id) takes a run id string');
    await this.nativeCall((nat) => nat.retry(id));
  }

  getRun(id: string): Run | null {
    if (typeof id !== 'string') throw badOption('id', 'runs.get(id) takes a run id string');
    const nat = this.open();
    const text = native(() => nat.getRun(id));
    if (text === null) return null;
    const run = dates(JSON.parse(text)) as Run;
    run.steps = (run.steps ?? []).map((s) => dates(s as unknown as Record<string, unknown>) as unknown as Run['steps'][number]);
    return run;
  }

  listRuns(opts: ListRunsOptions = {}): RunList {
    if (opts === null || typeof opts !== 'object') throw badOption('runs.list', 'takes an options object');
    const filter: Record<string, unknown> = {};
    if (opts.taskId !== undefined) filter.taskId = opts.taskId;
    if (opts.status !== undefined) {
      const ok = ['delayed', 'queued', 'running', 'waiting', 'completed', 'failed', 'cancelled', 'skipped'];
      if (!ok.includes(opts.status)) throw badOption('status', `must be one of ${ok.join(', ')}`);
      filter.status = opts.status;
    }
    if (opts.tag !== undefined) filter.tag = opts.tag;
    if (opts.since !== undefined) filter.since = toTime('since', opts.since);
    if (opts.limit !== undefined) {
      if (!Number.isInteger(opts.limit) || opts.limit < 1) throw badOption('limit', 'must be a positive integer (at most 1000 is used)');
      filter.limit = opts.limit;
    }
    if (opts.cursor !== undefined) filter.cursor = opts.cursor;
    const nat = this.open();
    const page = JSON.parse(native(() => nat.listRuns(JSON.stringify(filter)))) as RunList;
    page.runs.forEach((r) => dates(r as unknown as Record<string, unknown>));
    return page;
  }

  stats(): Stats {
    const nat = this.open();
    const s = JSON.parse(native(() => nat.stats()));
    return { ready: s.ready, delayed: s.delayed, running: s.running, waiting: s.waiting, waitingForTask: s.waitingForTask };
  }

  now(): number {
    return this.open().now();
  }

  // ---- executor -----------------------------------------------------------------

  private room(): number {
    // A run's slot frees when its function returns, before its completion is durable; the
    // ops waiting for the disk are capped at 4 × concurrency so that backlog stays bounded
    // (a deeper pipeline makes bigger commit groups: W2 went from ~42k to ~50k runs/s).
    const c = this.config.concurrency;
    return c - this.inflight - Math.max(0, this.unacked - 4 * c);
  }

  private async claimLoop(): Promise<void> {
    while (this.started && this.nat) {
      // With no room, a claim(0) stays pending all the same: it brings aborts (cancel,
      // timeout.finish) for the runs that hold the slots, and `kick()` ends it when a slot
      // frees.
      const room = Math.max(0, this.room());
      this.claimRoom = room;
      let text: string | null;
      try {
        text = await this.nat.claim(room);
      } catch (e) {
        if (!this.started) break;
        console.error('[durably] claim failed:', fromNative(e));
        await new Promise((r) => setTimeout(r, 100));
        continue;
      } finally {
        this.claimRoom = null;
      }
      if (text === null) break;
      const batch = JSON.parse(text) as { runs: Claimed[]; abort?: string[] };
      for (const id of batch.abort ?? []) this.invocations.get(id)?.abort();
      for (const c of batch.runs) void this.execute(c);
    }
  }

  private freeSlot(): void {
    if (this.claimRoom === 0 && this.room() > 0 && this.nat) {
      this.claimRoom = null; // one kick per pending claim
      this.nat.kick();
    }
    if (this.inflight === 0 && this.unacked === 0) {
      const ws = this.idleWaiters;
      this.idleWaiters = [];
      for (const r of ws) r();
    }
  }

  /** Queues an op; resolves once it (and the rest of its batch) is durable. */
  private report(op: string): Promise<void> {
    this.ops.push(op);
    this.unacked++;
    const p = new Promise<void>((resolve, reject) => this.opWaiters.push({ resolve, reject }));
    if (!this.reportScheduled) {
      this.reportScheduled = true;
      setImmediate(() => this.flushReports());
    }
    return p.finally(() => {
      this.unacked--;
      this.freeSlot();
    });
  }

  private flushReports(): void {
    this.reportScheduled = false;
    const ops = this.ops;
    const waiters = this.opWaiters;
    this.ops = [];
    this.opWaiters = [];
    const nat = this.nat;
    if (!nat) {
      const e = new DurablyError('E_CLOSED', 'the engine is shut down; call start() again to reopen it');
      for (const w of waiters) w.reject(e);
      return;
    }
    nat.report(`[${ops.join(',')}]`).then(
      () => {
        for (const w of waiters) w.resolve();
      },
      (e) => {
        const err = fromNative(e);
        for (const w of waiters) w.reject(err);
      },
    );
  }

  private warnOnce(key: string, message: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    console.warn(`[durably] ${message}`);
  }

  private async execute(c: Claimed): Promise<void> {
    this.inflight++;
    const inv = new Invocation(this, c);
    this.invocations.set(c.id, inv);
    try {
      await inv.run();
    } catch (e) {
      if (this.started) console.error(`[durably] run ${c.id} could not be reported:`, e);
    } finally {
      if (this.invocations.get(c.id) === inv) this.invocations.delete(c.id);
      this.inflight--;
      this.freeSlot();
    }
  }

  /** Internal hooks for `Invocation`. */
  _report(op: string): Promise<void> {
    return this.report(op);
  }
  _warnOnce(key: string, message: string): void {
    this.warnOnce(key, message);
  }
  _now(): number {
    return this.nat ? this.nat.now() : Date.now();
  }
  get _signal(): AbortSignal {
    return this.abort.signal;
  }

  /** No run ready or executing, nothing waiting for the disk (testing helper). */
  quiet(): boolean {
    if (this.inflight !== 0 || this.unacked !== 0 || this.triggerQueue.length !== 0 || this.sendQueue.length !== 0 || !this.nat) return false;
    const s = JSON.parse(this.nat.stats()) as { ready: number; running: number; controlDue: boolean };
    return s.ready === 0 && s.running === 0 && !s.controlDue;
  }

  /** Resolves once every write queued so far is applied (what it started is claimable). */
  async flush(): Promise<void> {
    await this.nativeCall((nat) => nat.flush());
  }

  advanceClock(ms: number): void {
    const nat = this.open();
    native(() => nat.advance(ms));
  }

  setClock(ms: number): void {
    const nat = this.open();
    native(() => nat.setTime(ms));
  }

  /** Resolves when no run is executing and every report is durable. */
  whenIdle(): Promise<void> {
    if (this.inflight === 0 && this.unacked === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  // ---- lifecycle ----------------------------------------------------------------

  async shutdown(opts?: ShutdownOptions): Promise<void> {
    const timeout = toMs('timeout', opts?.timeout ?? '10s');
    if (!this.nat) return;
    this.started = false;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<void>((r) => (timer = setTimeout(r, timeout)));
    await Promise.race([this.whenIdle(), timedOut]);
    clearTimeout(timer);
    this.abort.abort(new DurablyError('E_CLOSED', 'the engine is shutting down'));
    for (const inv of this.invocations.values()) inv.abort(new DurablyError('E_CLOSED', 'the engine is shutting down'));
    this.closeNow();
    await this.loop;
    this.loop = null;
  }

  /** Closes the store at once (runs still executing are replayed on the next start). */
  closeNow(): void {
    const nat = this.nat;
    if (!nat) return;
    this.started = false;
    this.nat = null;
    if (this.exitHook) process.removeListener('exit', this.exitHook);
    if (this.signalHook) {
      process.removeListener('SIGTERM', this.signalHook);
      process.removeListener('SIGINT', this.signalHook);
    }
    this.exitHook = null;
    this.signalHook = null;
    try {
      nat.close();
    } catch (e) {
      console.error('[durably] close failed:', fromNative(e));
    }
  }
}

/** Thrown inside a tracked step to park the invocation (never escapes to user code). */
const SUSPEND = Symbol('durably.suspend');

/** Errors thrown into run code by a step that failed for good: not retried again at run level. */
const finalStepErrors = new WeakSet<object>();

function rethrowable(e: StoredError): Error {
  const err = deserializeError(e);
  finalStepErrors.add(err);
  return err;
}

function lookupPath(root: unknown, path: string): unknown {
  let v: unknown = root;
  for (const seg of path.split('.')) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[seg];
  }
  return v;
}

/** `ctx.step`: one object per run, its methods on the prototype. */
class Steps implements StepApi {
  constructor(private readonly inv: Invocation) {}
  run<T>(id: string, fn: (info: { attempt: number }) => T | Promise<T>): Promise<Awaited<T>> {
    return this.inv.step(id, fn);
  }
  // Every step call reports errors by rejecting its promise, never by throwing.
  async sleep(id: string, duration: Duration): Promise<void> {
    return this.inv.sleep(id, () => this.inv.now() + toMs('duration', duration));
  }
  async sleepUntil(id: string, until: Date | string | number): Promise<void> {
    return this.inv.sleep(id, () => toTime('until', until));
  }
  async waitForEvent<N extends string>(id: string, opts: WaitForEventOptions<N>): Promise<DurablyEvent<N> | null> {
    return this.inv.waitForEvent(id, opts) as Promise<DurablyEvent<N> | null>;
  }
  async sendEvent(id: string, events: EventInput | EventInput[]): Promise<{ ids: string[] }> {
    return this.inv.sendEvent(id, events);
  }
  async invoke<P, O>(id: string, task: Task<P, O>, payload: P): Promise<O> {
    return this.inv.invoke(id, task as Task<unknown, unknown>, payload) as Promise<O>;
  }
  async createToken(id: string, opts?: { timeout?: Duration }): Promise<Token> {
    return this.inv.createToken(id, opts);
  }
  async waitForToken<T = unknown>(id: string, token: Token): Promise<T | null> {
    return this.inv.waitForToken(id, token) as Promise<T | null>;
  }
}

/** `ctx`: built per run, its costlier parts (logger, signal, run info) made on first use. */
class Context {
  readonly step: StepApi;
  readonly attempt: number;
  readonly event?: DurablyEvent;
  private info?: TaskContext['run'];
  private log?: Logger;
  constructor(
    private readonly inv: Invocation,
    private readonly c: Claimed,
  ) {
    this.step = new Steps(inv);
    this.attempt = c.attempt;
    if (c.event) this.event = c.event;
  }
  get run(): TaskContext['run'] {
    return (this.info ??= { id: this.c.id, taskId: this.c.task, tags: this.c.tags ?? [], createdAt: new Date(this.c.createdAt) });
  }
  get logger(): Logger {
    return (this.log ??= this.inv.logger());
  }
  get signal(): AbortSignal {
    return this.inv.signal;
  }
}

/**
 * One execution of a run, from the top. Steps with a stored result return it; new steps
 * run. When every branch is parked on a wait (sleep, event, token, child run) or a step
 * must be retried later, the invocation *suspends*: it reports one ending op and is dropped.
 */
class Invocation {
  private readonly seen = new Map<string, number>();
  private readonly memo: Map<string, ClaimedStep>;
  private stepsInFlight = 0;
  private retryOp: string | null = null;
  /** Waits reached and not resolved: key → (spec, the resolution count when reached). */
  private readonly waits = new Map<string, { spec: string; gen: number }>();
  /** Waits the run moved on from (the losers of a race): parked on only if nothing else is. */
  private readonly dropped = new Map<string, string>();
  /** How many step results the code has been given so far. */
  private resolves = 0;
  private checkScheduled = false;
  private ended = false;
  private suspended: (() => void) | null = null;
  private readonly suspendedP: Promise<void>;
  /** Created on first use of `ctx.signal` (most runs never look at it). */
  private controller: AbortController | null = null;
  private abortReason: unknown = undefined;
  private aborted = false;

  constructor(
    private readonly engine: Engine,
    private readonly c: Claimed,
  ) {
    this.memo = new Map(c.steps.map((s) => [s.key, s]));
    this.suspendedP = new Promise((r) => (this.suspended = r));
  }

  logger(): Logger {
    const prefix = `[durably ${this.c.task} ${this.c.id}]`;
    return {
      debug: (m, d) => (d === undefined ? console.debug(prefix, m) : console.debug(prefix, m, d)),
      info: (m, d) => (d === undefined ? console.info(prefix, m) : console.info(prefix, m, d)),
      warn: (m, d) => (d === undefined ? console.warn(prefix, m) : console.warn(prefix, m, d)),
      error: (m, d) => (d === undefined ? console.error(prefix, m) : console.error(prefix, m, d)),
    };
  }

  /** Cancelled or timed out (or shutting down): stop here; the core already ended the run. */
  abort(reason?: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.abortReason = reason ?? new DurablyError('E_RUN_CANCELLED', `run ${this.c.id} was cancelled`);
    this.controller?.abort(this.abortReason);
    this.suspended?.();
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.aborted) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  private get parking(): boolean {
    return this.retryOp !== null || this.waits.size > 0;
  }

  /** Suspends once no step is in flight and something is parked (after this turn's code ran). */
  private scheduleCheck(): void {
    if (this.checkScheduled || this.ended) return;
    this.checkScheduled = true;
    setImmediate(() => {
      this.checkScheduled = false;
      if (this.ended || this.stepsInFlight !== 0) return;
      if (!this.parking && this.dropped.size > 0) {
        // Nothing else to wait for: the code still awaits a wait it seemed to move on from
        // (e.g. Promise.all over a wait and a branch of several steps).
        for (const [key, spec] of this.dropped) this.waits.set(key, { spec, gen: this.resolves });
        this.dropped.clear();
      }
      if (this.parking) this.suspended?.();
    });
  }

  /** The code got a step's result. */
  private resolved<T>(value: T): T {
    this.resolves++;
    return value;
  }

  async run(): Promise<void> {
    const c = this.c;
    const def = this.engine.tasks.get(c.task);
    if (!def) {
      this.end(`{"op":"release","run":${JSON.stringify(c.id)}}`);
      return;
    }
    // Every step call reports errors by rejecting its promise, never by throwing.
    const ctx = new Context(this, c) as TaskContext;
    const onFailure = def.onFailure;
    const run =
      c.kind === 'onFailure'
        ? (async () => (onFailure && c.failure ? onFailure(c.payload, { runId: c.failure.runId, error: c.failure.error, ctx }) : null))()
        : (async () => def.run(c.payload, ctx))();
    let outcome: { ok: true; value: unknown } | { ok: false; error: unknown } | null;
    try {
      outcome = await Promise.race([run.then((value) => ({ ok: true as const, value })), this.suspendedP.then(() => null)]);
    } catch (error) {
      outcome = { ok: false, error };
    }
    // A function that settled ends the run, even with waits pending: nothing awaits them
    // any more (the losers of a race, or branches not awaited).
    this.ended = true;
    if (this.aborted) return; // the core ended it (cancel, timeout): nothing to report
    const id = JSON.stringify(c.id);
    if (outcome === null) {
      if (this.retryOp !== null) {
        this.end(this.retryOp);
      } else {
        const waits = [...this.waits.values()].map((w) => w.spec).join(',');
        this.end(`{"op":"wait","run":${id},"waits":[${waits}]}`);
      }
      return;
    }
    if (outcome.ok) {
      let output: string;
      try {
        output = toJson(outcome.value, `the output of run ${c.id}`, this.engine.config.maxPayloadBytes);
      } catch (e) {
        this.end(`{"op":"fail","run":${id},"nonRetriable":true,"error":${JSON.stringify(serializeError(e))}}`);
        return;
      }
      this.end(`{"op":"complete","run":${id},"output":${output}}`);
      return;
    }
    const err = outcome.error;
    let extra = '';
    if (
      err instanceof NonRetriableError ||
      (typeof err === 'object' && err !== null && finalStepErrors.has(err)) ||
      (err instanceof DurablyError && err.code === 'E_PAYLOAD_NOT_JSON')
    ) {
      extra = ',"nonRetriable":true';
    } else if (err instanceof RetryAfterError) extra = `,"retryAt":${this.retryAt(err)}`;
    this.end(`{"op":"fail","run":${id}${extra},"error":${JSON.stringify(serializeError(err))}}`);
  }

  /**
   * Reports the op that ends the invocation. Not awaited: the run's slot frees as soon as its
   * function is done, while the op waits for the disk with the others of its batch (the
   * executor caps how many such ops may be outstanding).
   */
  private end(op: string): void {
    this.engine._report(op).catch((e) => {
      if (this.engine.isOpen) console.error(`[durably] run ${this.c.id} could not be reported:`, e);
    });
  }

  now(): number {
    return this.engine._now();
  }

  private retryAt(err: RetryAfterError): number {
    const a = err.after;
    if (a instanceof Date) return Number.isFinite(a.getTime()) ? Math.max(0, a.getTime()) : this.engine._now();
    try {
      return this.engine._now() + toMs('RetryAfterError.after', a);
    } catch {
      return this.engine._now();
    }
  }

  /** The storage key of a step id: `id`, then `id:1`, `id:2` … when code reuses it. */
  private key(id: string, what: string): string {
    if (typeof id !== 'string' || id.length === 0 || id.length > 256) {
      throw badOption('step id', `step.${what}(id, …) needs an id: a non-empty string of at most 256 characters`);
    }
    // Creating a step after a result came in means the code moved on: waits reached before
    // that result and still pending lost a race. They are not parked on (unless nothing else is).
    for (const [key, w] of this.waits) {
      if (w.gen < this.resolves) {
        this.waits.delete(key);
        this.dropped.set(key, w.spec);
      }
    }
    const n = this.seen.get(id) ?? 0;
    this.seen.set(id, n + 1);
    if (n === 1) {
      this.engine._warnOnce(`${this.c.task}\0${id}`, `task "${this.c.task}" uses step id "${id}" more than once in a run; the repeats are stored as "${id}:1", "${id}:2" … — give each step its own id so that changing the code keeps results matched`);
    }
    return n === 0 ? id : `${id}:${n}`;
  }

  /**
   * Runs `work` as a tracked step: suspension waits for it to finish. `work` throws
   * `SUSPEND` to park the caller (its promise then never settles in this invocation).
   */
  private async tracked<T>(work: () => Promise<T>): Promise<T> {
    this.stepsInFlight++;
    try {
      return await work();
    } catch (e) {
      if (e !== SUSPEND) throw e;
    } finally {
      this.stepsInFlight--;
      if (this.stepsInFlight === 0 && (this.parking || this.dropped.size > 0)) this.scheduleCheck();
    }
    return parked();
  }

  private storeStep(key: string, attempt: number, output: string): Promise<void> {
    return this.engine._report(`{"op":"step","run":${JSON.stringify(this.c.id)},"key":${JSON.stringify(key)},"attempt":${attempt},"output":${output}}`);
  }

  async step<T>(id: string, fn: (info: { attempt: number }) => T | Promise<T>): Promise<Awaited<T>> {
    const key = this.key(id, 'run');
    if (typeof fn !== 'function') throw badOption('step fn', `step.run("${id}", fn) needs a function`);
    if (this.retryOp !== null || this.aborted) return parked<Awaited<T>>();
    const m = this.memo.get(key);
    if (m?.status === 'completed') return this.resolved((m.output ?? null) as Awaited<T>);
    if (m?.status === 'failed') throw rethrowable(m.error ?? { name: 'Error', message: 'step failed' });
    const attempt = (m?.attempts ?? 0) + 1;
    const run = JSON.stringify(this.c.id);
    const k = JSON.stringify(key);
    return this.tracked(async (): Promise<Awaited<T>> => {
      let value: Awaited<T>;
      try {
        value = await fn({ attempt });
      } catch (err) {
        const error = JSON.stringify(serializeError(err));
        const final = err instanceof NonRetriableError || attempt >= this.c.maxAttempts;
        if (final) {
          await this.engine._report(`{"op":"stepFailed","run":${run},"key":${k},"attempt":${attempt},"error":${error}}`);
          if (typeof err === 'object' && err !== null) finalStepErrors.add(err);
          throw err;
        }
        const at = err instanceof RetryAfterError ? `,"retryAt":${this.retryAt(err)}` : '';
        this.retryOp ??= `{"op":"retryStep","run":${run},"key":${k},"attempt":${attempt}${at},"error":${error}}`;
        throw SUSPEND;
      }
      let output: string;
      try {
        output = toJson(value, `the output of step "${key}"`, this.engine.config.maxPayloadBytes);
      } catch (e) {
        await this.engine._report(`{"op":"stepFailed","run":${run},"key":${k},"attempt":${attempt},"error":${JSON.stringify(serializeError(e))}}`);
        const err = new NonRetriableError((e as Error).message, { cause: e });
        finalStepErrors.add(err);
        throw err;
      }
      await this.storeStep(key, attempt, output);
      return this.resolved(JSON.parse(output) as Awaited<T>);
    });
  }

  /**
   * A durable wait: resolves from the memo when it already resolved (or timed out at the
   * stored deadline); otherwise parks `spec` and never resolves in this invocation.
   */
  private async wait(key: string, spec: (m: ClaimedStep | undefined) => string): Promise<unknown> {
    if (this.retryOp !== null || this.aborted) return parked();
    const m = this.memo.get(key);
    if (m?.status === 'completed') return this.resolved(m.output ?? null);
    if (m?.status === 'failed') throw rethrowable(m.error ?? { name: 'Error', message: 'wait failed' });
    if (m?.status === 'waiting' && m.wakeAt !== undefined && m.wakeAt <= this.c.now && m.child === undefined) {
      // Its deadline passed: a sleep is over, a wait timed out (null). Memoize that.
      return this.tracked(async () => {
        await this.storeStep(key, 1, 'null');
        return this.resolved(null);
      });
    }
    this.waits.set(key, { spec: spec(m), gen: this.resolves });
    this.scheduleCheck();
    return parked();
  }

  sleep(id: string, until: () => number): Promise<void> {
    const key = this.key(id, 'sleep');
    return this.wait(key, (m) => {
      const wakeAt = m?.wakeAt ?? until();
      return `{"kind":"sleep","key":${JSON.stringify(key)},"wakeAt":${wakeAt}}`;
    }) as Promise<void>;
  }

  waitForEvent(id: string, opts: WaitForEventOptions<string>): Promise<unknown> {
    const key = this.key(id, 'waitForEvent');
    if (opts === null || typeof opts !== 'object') throw badOption('waitForEvent', "pass { event: 'name', match?, if?, timeout? }");
    const names = Array.isArray(opts.event) ? opts.event : [opts.event];
    if (names.length === 0 || names.some((n) => typeof n !== 'string' || n.length === 0 || n.length > 256)) {
      throw badOption('event', 'waitForEvent needs an event name (or a list of names) of 1 to 256 characters');
    }
    if (opts.if !== undefined) {
      if (typeof opts.if !== 'string') throw badOption('if', 'must be an expression string');
      native(() => addon.checkExpression('if', opts.if as string));
    }
    if (opts.match !== undefined && (typeof opts.match !== 'string' || opts.match.length === 0)) throw badOption('match', "must be a path like 'data.userId'");
    if (opts.since !== undefined && opts.since !== 'run-start' && opts.since !== 'now') throw badOption('since', "must be 'run-start' or 'now'");
    const timeoutMs = opts.timeout === undefined ? undefined : toMs('timeout', opts.timeout);
    return this.wait(key, (m) => {
      let text = `{"kind":"event","key":${JSON.stringify(key)},"events":${JSON.stringify(names)}`;
      if (opts.match !== undefined) {
        const own = this.c.event ?? { data: this.c.payload };
        text += `,"path":${JSON.stringify(opts.match)},"value":${JSON.stringify(JSON.stringify(lookupPath(own, opts.match) ?? null))}`;
      }
      if (opts.if !== undefined) text += `,"if":${JSON.stringify(opts.if)}`;
      const wakeAt = m?.wakeAt ?? (timeoutMs === undefined ? undefined : this.engine._now() + timeoutMs);
      if (wakeAt !== undefined) text += `,"wakeAt":${wakeAt}`;
      if (opts.since === 'now') text += ',"sinceRunStart":false';
      return text + '}';
    });
  }

  async sendEvent(id: string, events: EventInput | EventInput[]): Promise<{ ids: string[] }> {
    const key = this.key(id, 'sendEvent');
    if (this.retryOp !== null) return parked();
    const m = this.memo.get(key);
    if (m?.status === 'completed') return this.resolved(m.output as { ids: string[] });
    // Ids are given here, so that the step's stored result names the events it sent.
    const list = (Array.isArray(events) ? events : [events]).map((e) =>
      e !== null && typeof e === 'object' && e.id === undefined ? { ...e, id: `evt_${randomUUID().replace(/-/g, '')}` } : e,
    );
    const json = this.engine.eventsJson(list);
    const ids = list.map((e) => e.id as string);
    return this.tracked(async () => {
      await this.engine._report(`{"op":"sendEvent","run":${JSON.stringify(this.c.id)},"key":${JSON.stringify(key)},"events":${json}}`);
      return this.resolved({ ids });
    });
  }

  invoke(id: string, task: Task<unknown, unknown> | string, payload: unknown): Promise<unknown> {
    const key = this.key(id, 'invoke');
    const taskId = typeof task === 'string' ? task : task?.id;
    if (typeof taskId !== 'string') throw badOption('task', 'step.invoke(id, task, payload) needs a task (or a task id)');
    const json = toJson(payload, `the payload of step.invoke("${id}")`, this.engine.config.maxPayloadBytes);
    return this.wait(key, (m) =>
      m?.child !== undefined
        ? `{"kind":"child","key":${JSON.stringify(key)},"child":${JSON.stringify(m.child)}}`
        : `{"kind":"invoke","key":${JSON.stringify(key)},"task":${JSON.stringify(taskId)},"payload":${json}}`,
    );
  }

  createToken(id: string, opts?: { timeout?: Duration }): Promise<Token> {
    const timeoutMs = opts?.timeout === undefined ? undefined : toMs('timeout', opts.timeout);
    return this.step(id, (): Token => ({
      id: `tok_${randomUUID().replace(/-/g, '')}`,
      expiresAt: timeoutMs === undefined ? null : this.engine._now() + timeoutMs,
    }));
  }

  waitForToken(id: string, token: Token): Promise<unknown> {
    const key = this.key(id, 'waitForToken');
    if (token === null || typeof token !== 'object' || typeof token.id !== 'string') {
      throw badOption('token', 'step.waitForToken(id, token) takes the token that step.createToken returned');
    }
    return this.wait(key, (m) => {
      let text = `{"kind":"token","key":${JSON.stringify(key)},"token":${JSON.stringify(token.id)}`;
      const wakeAt = m?.wakeAt ?? token.expiresAt ?? undefined;
      if (wakeAt !== undefined && wakeAt !== null) text += `,"wakeAt":${wakeAt}`;
      return text + '}';
    });
  }
}
