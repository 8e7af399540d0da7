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
import { DurablyError, badOption, fromNative, native } from './errors';
import { Invocation, type Claimed, type Executor } from './invocation';
import { addon, type NativeEngine } from './native';
import { log, setLogging } from './log';
import { checkName, describe, knownKeys, toMs, toTime, wellFormed, type EngineConfig, type TaskDef } from './options';
import { flowMembers } from './flow';
import { DevTaskSet, type Definer } from './hmr';
import { toJson } from './json';
import type { EventInput, ListRunsOptions, ResultOptions, Run, RunHandle, RunList, Schedule, ScheduleInput, ShutdownOptions, Stats, Token, TriggerOptions } from './types';
import type { StoredError } from './errors';

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

/** Every option `trigger()` takes. */
const TRIGGER_OPTIONS = ['delay', 'runAt', 'idempotencyKey', 'idempotencyKeyTTL', 'priority', 'tags', 'ttl', 'concurrencyKey'] as const;

export class Engine implements Executor {
  config: EngineConfig;
  readonly tasks = new Map<string, TaskDef>();
  /** Development: which module defined which task, to forget removed ones. */
  private devTasks?: DevTaskSet;
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
  /** The open in progress (first open, waiting for the folder, or reopening after a failure). */
  private opening: Promise<NativeEngine> | null = null;
  /**
   * Why the open is waiting (the folder held by another process; the store failed and is
   * being reopened): calls that need the store give up after `lockTimeout` with this error.
   */
  private waitingFor: DurablyError | null = null;
  private waitingListeners: Array<() => void> = [];
  /** A shutdown in progress: start() and calls that open wait for it. */
  private closing: Promise<void> | null = null;
  /** Set by shutdown(): an open waiting in the background gives up. */
  private stopped = false;
  /** Reopening after the store failed (a full disk): see `recover`. */
  private recovering = false;
  /** Shutting down: runs stop at their next durable point. */
  draining = false;

  constructor(config: EngineConfig) {
    this.config = config;
  }

  get isOpen(): boolean {
    return this.nat !== null;
  }

  private openOptions() {
    const c = this.config;
    return {
      dataDir: c.dataDir ?? undefined,
      concurrency: c.concurrency,
      maxPayloadBytes: c.maxPayloadBytes,
      durability: c.durability,
      flushIntervalMs: c.flushIntervalMs,
      cacheBytes: c.cacheBytes,
      manualClockMs: c.manualClockMs,
      simSyncDelayMs: c.simSyncDelayMs,
      timerWindow: c.timerWindow,
      crashLimit: c.crashLimit,
      retentionMs: c.retentionMs,
      purgeIntervalMs: Number(process.env.DURABLY_PURGE_INTERVAL_MS) > 0 ? Number(process.env.DURABLY_PURGE_INTERVAL_MS) : undefined,
    };
  }

  /**
   * The native engine, opened on first need (never at import or by configure()). While the
   * data folder is held by another process (a rolling deploy: the old server still runs),
   * the open waits in the background and this gives up after `lockTimeout` with
   * E_DATA_DIR_LOCKED; the engine takes over the moment the folder is free.
   */
  async native(): Promise<NativeEngine> {
    if (this.closing) await this.closing;
    if (this.nat) return this.nat;
    const opening = this.beginOpen();
    let timer: NodeJS.Timeout | undefined;
    try {
      for (;;) {
        const waited = new Promise<null>((r) => (timer = setTimeout(() => r(null), this.config.lockTimeoutMs)));
        const nat = await Promise.race([opening, waited]);
        clearTimeout(timer);
        if (nat) return nat;
        // A slow open (recovering a large store) is waited for; a folder held by another
        // process, or a store that keeps failing, is not.
        if (this.waitingFor) throw this.waitingFor;
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** The native engine of an in-memory store (durably/testing), opened at once. */
  nativeSync(): NativeEngine {
    if (this.nat) return this.nat;
    if (this.config.dataDir !== null) throw new DurablyError('E_CLOSED', 'the engine is not open yet; await start() first');
    const nat = native(() => addon.NativeEngine.open(this.openOptions()));
    this.connect(nat);
    return nat;
  }

  private beginOpen(): Promise<NativeEngine> {
    if (this.opening) return this.opening;
    this.stopped = false;
    const p: Promise<NativeEngine> = this.openLoop().finally(() => {
      if (this.opening === p) this.opening = null;
    });
    p.catch(() => {});
    this.opening = p;
    return p;
  }

  private async openLoop(): Promise<NativeEngine> {
    if (process.env.NEXT_PHASE === 'phase-production-build') {
      throw new DurablyError('E_BAD_OPTION', 'durably does not open its store during `next build`; trigger runs from request handlers, server actions or instrumentation, not at module import time');
    }
    setLogging(this.config.logLevel, this.config.logger, (l, f) =>
      // The core calls back with (level, message); napi types it as one tuple.
      addon.setLogger(l, f && (((...a: unknown[]) => (Array.isArray(a[0]) ? f(a[0][0], a[0][1]) : f(a[0] as string, a[1] as string))) as unknown as (arg: [string, string]) => void)),
    );
    if (this.config.dataDir === null) return this.nativeSync();
    let pause = 100;
    for (;;) {
      if (this.stopped) throw new DurablyError('E_CLOSED', 'the engine is shut down; call start() again to reopen it');
      let nat: NativeEngine;
      try {
        nat = await addon.openEngine(this.openOptions());
      } catch (e) {
        const err = fromNative(e);
        if (!(err instanceof DurablyError)) throw err;
        const heldElsewhere = err.code === 'E_DATA_DIR_LOCKED' && !/open in this process/.test(err.message);
        const stillFailing = this.recovering && (err.code === 'E_DISK_FULL' || err.code === 'E_STORE');
        if (!heldElsewhere && !stillFailing) throw err;
        if (!this.waitingFor && heldElsewhere) {
          log.warn(`${err.message}. Waiting for it; calls that need the store wait up to ${this.config.lockTimeoutMs} ms.`);
        }
        this.setWaiting(err);
        await new Promise((r) => setTimeout(r, heldElsewhere ? 100 : pause));
        pause = Math.min(pause * 2, 5000);
        continue;
      }
      if (this.stopped) {
        nat.close();
        throw new DurablyError('E_CLOSED', 'the engine is shut down; call start() again to reopen it');
      }
      if (this.recovering) {
        // Is there room again? A write that fails stops the new engine at once.
        try {
          await nat.probe();
        } catch (e) {
          nat.close();
          this.setWaiting(fromNative(e) as DurablyError);
          await new Promise((r) => setTimeout(r, pause));
          pause = Math.min(pause * 2, 5000);
          continue;
        }
      }
      const waited = this.waitingFor;
      this.connect(nat);
      if (waited) log.warn(`the data folder ${this.config.dataDir} is ours now${this.recovering ? ' (the store works again)' : ''}; carrying on.`);
      this.waitingFor = null;
      this.recovering = false;
      return nat;
    }
  }

  private setWaiting(err: DurablyError): void {
    this.waitingFor = err;
    const ls = this.waitingListeners;
    this.waitingListeners = [];
    for (const l of ls) l();
  }

  /** Makes `nat` this engine's: registers the tasks, installs the exit hooks, starts executing. */
  private connect(nat: NativeEngine): void {
    try {
      for (const t of this.tasks.values()) native(() => nat.registerTask(t.id, t.policyJson));
    } catch (e) {
      nat.close(); // release the data folder: a later start() must not find it locked
      throw e;
    }
    this.nat = nat;
    this.abort = new AbortController();
    if (this.config.dataDir) {
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
    if (this.started && !this.loop) this.loop = this.claimLoop();
  }

  register(def: TaskDef, by?: Definer): void {
    this.tasks.set(def.id, def); // the newest definition of an id wins (HMR)
    if (this.nat) {
      const nat = this.nat;
      native(() => nat.registerTask(def.id, def.policyJson));
    }
    if (process.env.NODE_ENV === 'development') {
      this.devTasks ??= new DevTaskSet(
        (id, file) => {
          this.unregister(id);
          log.info(`task "${id}" is no longer defined in ${file}: it is unregistered (its events and schedule start nothing; its stored runs wait for a task with that id)`);
        },
        (file, ids) => log.debug(`tasks defined by ${file}: ${ids.join(', ') || '(none)'}`),
      );
      this.devTasks.defined(def.id, by);
    }
  }

  /** Forgets a task this process no longer defines (development: see `hmr.ts`). */
  unregister(id: string): void {
    this.tasks.delete(id);
    if (this.nat) {
      const nat = this.nat;
      native(() => nat.unregisterTask(id));
    }
  }

  /**
   * Opens the store and executes runs. Resolves once open — or at once when the folder is
   * held by another process: then the engine waits for it in the background and takes over
   * when that process exits, so a new server serves pages meanwhile.
   */
  async start(): Promise<void> {
    if (this.closing) await this.closing;
    this.started = true;
    if (this.nat) {
      if (!this.loop) this.loop = this.claimLoop();
      return;
    }
    const opening = this.beginOpen();
    const waiting = new Promise<null>((r) => {
      if (this.waitingFor) r(null);
      else this.waitingListeners.push(() => r(null));
    });
    await Promise.race([opening, waiting]);
  }

  /**
   * The store failed (a full disk, an I/O error): the native engine stopped deciding.
   * Runs in flight stop (they replay from their stored steps), the store is reopened —
   * retrying with a back-off until a write works again — and execution carries on.
   * Calls meanwhile wait up to `lockTimeout`, then fail with the store's error.
   */
  private recover(err: DurablyError): void {
    if (this.recovering || !this.nat) return;
    this.recovering = true;
    log.error(`${err.code}: ${err.message}. Execution stops until the store works again; durably retries by itself.`);
    for (const inv of this.invocations.values()) inv.abort(err);
    this.setWaiting(err);
    const started = this.started;
    this.closeNow();
    this.started = started;
    this.loop = null;
    this.beginOpen();
  }

  // ---- triggering ---------------------------------------------------------------

  /** Builds one trigger item (validated) as JSON text with the payload spliced in. */
  triggerItem(taskId: string, payload: unknown, opts: TriggerOptions | undefined): string {
    if (typeof taskId !== 'string') throw badOption('taskId', `trigger(taskId, payload) takes the id of a task (a string), got ${describe(taskId)}`);
    const def = this.tasks.get(taskId);
    if (!def) {
      throw new DurablyError('E_UNKNOWN_TASK', `no task with id "${taskId}" is registered in this process; define it with task({ id: "${taskId}", run }) and import the module before triggering it (check the id for typos)`);
    }
    const body = toJson(payload, 'the payload', this.config.maxPayloadBytes);
    let extra = '';
    if (opts !== undefined) {
      if (opts === null || typeof opts !== 'object' || Array.isArray(opts)) throw badOption('options', 'trigger options must be an object');
      knownKeys('trigger', opts, TRIGGER_OPTIONS);
      if (opts.delay !== undefined) extra += `,"delayMs":${toMs('delay', opts.delay)}`;
      if (opts.runAt !== undefined) extra += `,"runAt":${toTime('runAt', opts.runAt)}`;
      if (opts.tags !== undefined) {
        const tags = opts.tags;
        if (!Array.isArray(tags) || tags.length > 20) throw badOption('tags', 'must be an array of at most 20 strings of 1 to 128 bytes');
        for (const t of tags) checkName('tags', 'a tag', t, 128);
        extra += `,"tags":${JSON.stringify(tags)}`;
      }
    }
    if (def.flow || opts !== undefined) extra += flowMembers(def.flow, payload, { data: payload }, opts, () => this._now(), toMs);
    return `{"task":${JSON.stringify(taskId)},"payload":${body}${extra}}`;
  }

  /** Sends a group of trigger items (all or nothing), batched with the others of this tick. */
  submitGroup(items: string[]): Promise<string[]> {
    return new Promise((resolve, reject) => {
      this.triggerQueue.push({ json: `[${items.join(',')}]`, resolve, reject });
      if (this.triggerQueue.length === 1) queueMicrotask(() => this.flushTriggers());
    });
  }

  private flushTriggers(): void {
    const groups = this.triggerQueue;
    this.triggerQueue = [];
    this.settle(groups, (nat, json) => nat.trigger(json));
  }

  /** One native call (trigger, send) for the calls of a tick, once the store is open. */
  private settle(groups: PendingGroup[], call: (nat: NativeEngine, json: string[]) => Promise<string>): void {
    // One text per group: a group the core cannot read fails alone.
    const json = groups.map((g) => g.json);
    if (this.nat) {
      settleGroups(groups, call(this.nat, json));
      return;
    }
    this.native().then(
      (nat) => settleGroups(groups, call(nat, json)),
      (e) => {
        for (const g of groups) g.reject(e);
      },
    );
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
    knownKeys('result', opts, ['timeout']);
    const timeout = opts?.timeout === undefined ? undefined : toMs('timeout', opts.timeout);
    const deadline = timeout === undefined ? undefined : Date.now() + timeout;
    let text: string;
    for (;;) {
      const nat = await this.native();
      try {
        text = await nat.waitResult(id, deadline === undefined ? undefined : Math.max(0, deadline - Date.now()));
        break;
      } catch (e) {
        const err = fromNative(e);
        // The store is being reopened (it failed, or a shutdown raced a restart): wait on.
        if (err instanceof DurablyError && err.code === 'E_CLOSED' && (this.recovering || this.opening)) continue;
        throw err;
      }
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
    knownKeys(where, ev, ['name', 'data', 'id', 'ts']);
    checkName(`${where}.name`, "an event needs a name (like 'user/signed-up')", ev.name);
    let text = `{"name":${JSON.stringify(ev.name)}`;
    if (ev.id !== undefined) {
      checkName(`${where}.id`, 'an event id', ev.id);
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
    return new Promise((resolve, reject) => {
      this.sendQueue.push({ json, resolve: (ids) => resolve({ ids }), reject });
      if (this.sendQueue.length === 1) queueMicrotask(() => this.flushSends());
    });
  }

  private flushSends(): void {
    const groups = this.sendQueue;
    this.sendQueue = [];
    this.settle(groups, (nat, json) => nat.send(json));
  }

  async completeToken(token: string | Token, data: unknown): Promise<{ resumed: boolean }> {
    const id = typeof token === 'string' ? token : token?.id;
    if (typeof id !== 'string' || id.length === 0) throw badOption('token', 'pass the token (or its id) that step.createToken returned');
    checkName('token', 'a token id', id);
    const json = toJson(data, 'the token data', this.config.maxPayloadBytes);
    return { resumed: await this.nativeCall((nat) => nat.completeToken(id, json)) };
  }

  // ---- management ---------------------------------------------------------------

  private async nativeCall<T>(f: (nat: NativeEngine) => Promise<T> | T): Promise<T> {
    const nat = await this.native();
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
    const run = await this.getRun(newId);
    return this.handle(newId, run?.taskId ?? '');
  }

  async createSchedule(input: ScheduleInput): Promise<Schedule> {
    if (input === null || typeof input !== 'object') throw badOption('schedules.create', 'takes { task, cron, tz?, externalId?, payload? }');
    knownKeys('schedules.create', input, ['task', 'cron', 'tz', 'externalId', 'payload']);
    const task = typeof input.task === 'string' ? input.task : input.task !== null && typeof input.task === 'object' ? input.task.id : undefined;
    if (typeof task !== 'string' || task.length === 0) throw badOption('task', 'schedules.create needs the task (or its id) to run');
    checkName('task', 'a task id', task);
    if (typeof input.cron !== 'string') throw badOption('cron', "must be a cron pattern like '0 9 * * MON'");
    if (!wellFormed(input.cron)) throw new DurablyError('E_BAD_CRON', "option `cron`: not a cron pattern (it holds a lone surrogate); write 5 fields like '0 9 * * MON'", { option: 'cron' });
    if (input.tz !== undefined) checkName('tz', "an IANA time zone (like 'Europe/Paris')", input.tz);
    if (input.externalId !== undefined) checkName('externalId', 'an externalId', input.externalId);
    let text = `{"task":${JSON.stringify(task)},"cron":${JSON.stringify(input.cron)}`;
    if (input.tz !== undefined) text += `,"tz":${JSON.stringify(input.tz)}`;
    if (input.externalId !== undefined) text += `,"externalId":${JSON.stringify(input.externalId)}`;
    if (input.payload !== undefined) text += `,"payload":${toJson(input.payload, 'the schedule payload', this.config.maxPayloadBytes)}`;
    text += '}';
    const rec = await this.nativeCall((nat) => nat.createSchedule(text));
    return scheduleOut(JSON.parse(rec));
  }

  async listSchedules(opts?: { task?: string | { id: string } }): Promise<Schedule[]> {
    knownKeys('schedules.list', opts, ['task']);
    const task = opts?.task === undefined ? undefined : typeof opts.task === 'string' ? opts.task : opts.task?.id;
    if (opts?.task !== undefined && typeof task !== 'string') throw badOption('task', 'schedules.list({ task }) takes a task or its id');
    const text = await this.nativeCall((nat) => nat.listSchedules(task));
    return (JSON.parse(text) as Record<string, unknown>[]).map(scheduleOut);
  }

  async deleteSchedule(id: string): Promise<boolean> {
    if (typeof id !== 'string' || id.length === 0) throw badOption('id', 'schedules.delete(id) takes a schedule id');
    return this.nativeCall((nat) => nat.deleteSchedule(id));
  }

  async retry(id: string): Promise<void> {
    if (typeof id !== 'string' || id.length === 0) throw badOption('id', 'runs.retry(id) takes a run id string');
    await this.nativeCall((nat) => nat.retry(id));
  }

  async getRun(id: string): Promise<Run | null> {
    if (typeof id !== 'string') throw badOption('id', 'runs.get(id) takes a run id string');
    const text = await this.nativeCall((nat) => nat.getRun(id));
    if (text === null) return null;
    const run = dates(JSON.parse(text)) as Run;
    run.steps = (run.steps ?? []).map((s) => dates(s as unknown as Record<string, unknown>) as unknown as Run['steps'][number]);
    return run;
  }

  async listRuns(opts: ListRunsOptions = {}): Promise<RunList> {
    if (opts === null || typeof opts !== 'object') throw badOption('runs.list', 'takes an options object');
    knownKeys('runs.list', opts, ['taskId', 'status', 'tag', 'since', 'limit', 'cursor']);
    const filter: Record<string, unknown> = {};
    for (const k of ['taskId', 'tag', 'cursor'] as const) {
      if (opts[k] !== undefined && typeof opts[k] !== 'string') throw badOption(k, `runs.list({ ${k} }) takes a string, got ${describe(opts[k])}`);
    }
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
    if (opts.cursor !== undefined) filter.cursor = checkName('cursor', 'a cursor (the `cursor` of a previous page)', opts.cursor);
    const page = JSON.parse(await this.nativeCall((nat) => nat.listRuns(JSON.stringify(filter)))) as RunList;
    page.runs.forEach((r) => dates(r as unknown as Record<string, unknown>));
    return page;
  }

  async stats(): Promise<Stats> {
    const s = JSON.parse(await this.nativeCall((nat) => nat.stats()));
    return { ready: s.ready, delayed: s.delayed, running: s.running, waiting: s.waiting, waitingForTask: s.waitingForTask, flowKeys: s.flowKeys };
  }

  /** The engine's clock (the manual clock of durably/testing), or the wall clock if closed. */
  now(): number {
    return this.nat ? this.nat.now() : (this.config.manualClockMs ?? Date.now());
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
    const nat = this.nat;
    while (this.started && nat && this.nat === nat) {
      // With no room, a claim(0) stays pending all the same: it brings aborts (cancel,
      // timeout.finish) for the runs that hold the slots, and `kick()` ends it when a slot
      // frees.
      const room = this.draining ? 0 : Math.max(0, this.room());
      this.claimRoom = room;
      let text: string | null;
      try {
        text = await nat.claim(room);
      } catch (e) {
        const err = fromNative(e);
        if (!this.started || this.nat !== nat) break;
        if (nat.failure() !== null && err instanceof DurablyError) {
          this.loop = null;
          this.recover(err);
          return;
        }
        log.error(`claim failed: ${(err as Error)?.message ?? String(err)}`);
        await new Promise((r) => setTimeout(r, 100));
        continue;
      } finally {
        this.claimRoom = null;
      }
      if (text === null) break;
      const batch = JSON.parse(text) as { runs: Claimed[]; abort?: string[] };
      for (const id of batch.abort ?? []) this.invocations.get(id)?.abort();
      for (const c of batch.runs) {
        // Claimed while shutting down: handed back at once, to run at the next start.
        if (this.draining || !this.started) void this.report(`{"op":"release","run":${JSON.stringify(c.id)}}`).catch(() => {});
        else void this.execute(c);
      }
    }
    if (this.nat === nat) this.loop = null;
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
    nat.report(ops).then(
      () => {
        for (const w of waiters) w.resolve();
      },
      (e) => {
        const err = fromNative(e);
        for (const w of waiters) w.reject(err);
        // The store failed (the engine stopped): reopen it and carry on.
        if (err instanceof DurablyError && this.nat === nat && nat.failure() !== null) this.recover(err);
      },
    );
  }

  private warnOnce(key: string, message: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    log.warn(message);
  }

  private async execute(c: Claimed): Promise<void> {
    this.inflight++;
    const inv = new Invocation(this, c);
    this.invocations.set(c.id, inv);
    try {
      await inv.run();
    } catch (e) {
      if (this.started) log.error(`run ${c.id} could not be reported: ${(e as Error)?.message ?? String(e)}`);
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
    return this.now();
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
    const nat = this.nativeSync();
    native(() => nat.advance(ms));
  }

  setClock(ms: number): void {
    const nat = this.nativeSync();
    native(() => nat.setTime(ms));
  }

  /** Resolves when no run is executing and every report is durable. */
  whenIdle(): Promise<void> {
    if (this.inflight === 0 && this.unacked === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  // ---- lifecycle ----------------------------------------------------------------

  /**
   * Stops at the next durable point: no new run starts and no new step; steps in flight
   * finish and are stored (up to `timeout`); runs then stop where they are and resume from
   * their stored steps at the next start. Then the store is closed.
   */
  async shutdown(opts?: ShutdownOptions): Promise<void> {
    knownKeys('shutdown', opts, ['timeout']);
    const timeout = toMs('timeout', opts?.timeout === undefined ? '10s' : opts.timeout);
    if (this.closing) return this.closing;
    this.stopped = true; // an open waiting for the folder gives up
    this.started = false;
    if (!this.nat && this.opening) await this.opening.catch(() => {});
    if (!this.nat) return;
    const nat = this.nat;
    const closing = (async () => {
      this.draining = true;
      nat.kick(); // the pending claim returns (with room 0 from now on)
      for (const inv of this.invocations.values()) inv.drain();
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<void>((r) => (timer = setTimeout(r, timeout)));
      await Promise.race([this.whenIdle(), timedOut]);
      clearTimeout(timer);
      const why = new DurablyError('E_CLOSED', 'the engine is shutting down');
      this.abort.abort(why);
      for (const inv of this.invocations.values()) inv.abort(why);
      // Hand back what is still held (cut by the timeout, or claimed as the drain began):
      // a shutdown is not a crash, so no run counts toward the poison-run limit for it.
      await nat.releaseAll().catch((e: unknown) => log.warn(`shutdown could not hand back its runs: ${(fromNative(e) as Error).message}`));
      const loop = this.loop;
      this.closeNow();
      await loop;
    })();
    this.closing = closing.finally(() => {
      this.closing = null;
      this.draining = false;
    });
    return this.closing;
  }

  /** Closes the store at once (runs still executing are replayed on the next start). */
  closeNow(): void {
    const nat = this.nat;
    if (!nat) return;
    this.started = false;
    this.nat = null;
    this.loop = null;
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
      log.error(`close failed: ${(fromNative(e) as Error).message}`);
    }
  }
}


export { resolveConfig, toMs, toTime, validateTaskId, policyJson, checkExpression, retryPolicyJson, type EngineConfig, type TaskDef } from './options';
