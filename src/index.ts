/**
 * durably — durable background jobs that run inside your own Node server.
 *
 * ```ts
 * import { task, start } from 'durably';
 * export const hello = task({ id: 'hello', run: async (p: { name: string }, { step }) => {
 *   return step.run('greet', () => `hello ${p.name}`);
 * }});
 * await start();
 * const h = await hello.trigger({ name: 'Ada' });
 * await h.result(); // 'hello Ada'
 * ```
 */
import { Engine, checkExpression, policyJson, resolveConfig, toMs, validateTaskId, type TaskDef } from './engine';
import { checkName, knownKeys, retentionMs, wellFormed } from './options';
import { parseFlow } from './flow';
import { definer } from './hmr';
import { DurablyError, badOption } from './errors';
import type { ConfigureOptions, EventInput, ListRunsOptions, Run, RunHandle, RunList, Schedule, ScheduleInput, ShutdownOptions, Stats, Task, TaskOptions, Token, TriggerOptions } from './types';

export * from './types';
export { DurablyError, NonRetriableError, RetryAfterError } from './errors';
export type { ErrorCode, StoredError } from './errors';

// One engine per process, even when this module is evaluated several times (Next.js
// bundles, HMR): it lives on globalThis.
const KEY = Symbol.for('durably.engine');
type Global = typeof globalThis & { [KEY]?: Engine };

/** The process's engine (internal: `durably/next` and `durably/testing` build on it). */
export function engine(): Engine {
  const g = globalThis as Global;
  return (g[KEY] ??= new Engine(resolveConfig({})));
}

/** Builds a task on an engine (shared by `task()` and the testing helper). */
export function defineTask<P, O>(getEngine: () => Engine, opts: TaskOptions<P, O>): Task<P, Awaited<O>> {
  if (opts === null || typeof opts !== 'object') throw badOption('task', 'task() takes an options object: task({ id, run })');
  const id = validateTaskId(opts.id);
  if (typeof opts.run !== 'function') throw badOption('run', `task "${id}" needs a run function: task({ id, run: async (payload, { step }) => … })`);
  const known = ['id', 'run', 'retry', 'on', 'schedule', 'concurrency', 'throttle', 'rateLimit', 'debounce', 'priority', 'idempotencyKey', 'idempotencyKeyTTL', 'singleton', 'timeout', 'cancelOn', 'onFailure', 'retention'];
  for (const k of Object.keys(opts)) {
    if (!known.includes(k)) throw badOption(k, `unknown task option; known options are ${known.join(', ')}`);
  }
  if (opts.onFailure !== undefined && typeof opts.onFailure !== 'function') throw badOption('onFailure', 'must be a function (payload, { error, runId, ctx }) => …');
  const { policy: flowPolicy, flow } = parseFlow(opts as TaskOptions<unknown, unknown>, toMs, checkExpression);
  let schedule: { cron: string; tz: string } | undefined;
  if (opts.schedule !== undefined) {
    const sc = typeof opts.schedule === 'string' ? { cron: opts.schedule } : opts.schedule;
    if (sc === null || typeof sc !== 'object' || typeof sc.cron !== 'string') throw badOption('schedule', "must be a cron pattern like '0 9 * * MON' or { cron, tz }");
    knownKeys('schedule', sc, ['cron', 'tz']);
    if (!wellFormed(sc.cron)) throw new DurablyError('E_BAD_CRON', "option `schedule`: not a cron pattern (it holds a lone surrogate); write 5 fields like '0 9 * * MON'", { option: 'schedule' });
    if (sc.tz !== undefined) checkName('schedule.tz', "an IANA time zone (like 'Europe/Paris')", sc.tz);
    schedule = { cron: sc.cron, tz: sc.tz ?? 'UTC' };
  }
  const retention = opts.retention === undefined ? undefined : retentionMs('retention', opts.retention);
  const policy = policyJson(opts.retry, opts.on, {
    ...flowPolicy,
    onFailure: opts.onFailure !== undefined,
    ...(schedule ? { schedule } : {}),
    ...(retention === undefined ? {} : { retention: retention < 0 ? 'forever' : retention }),
  });
  const on = opts.on === undefined ? undefined : (Array.isArray(opts.on) ? opts.on : [opts.on]).map((o) => (typeof o === 'string' ? o : o.event));
  getEngine().register({
    id,
    run: opts.run as TaskDef['run'],
    policyJson: policy,
    on,
    flow: Object.keys(flow).length > 0 ? flow : undefined,
    onFailure: opts.onFailure as TaskDef['onFailure'],
  }, process.env.NODE_ENV === 'development' ? definer() : undefined);
  return {
    id,
    async trigger(payload: P, options?: TriggerOptions) {
      const e = getEngine();
      const [runId] = await e.submitGroup([e.triggerItem(id, payload, options)]);
      return e.handle<Awaited<O>>(runId, id);
    },
    async batchTrigger(items: Array<{ payload: P; options?: TriggerOptions }>) {
      if (!Array.isArray(items)) throw badOption('items', 'batchTrigger takes an array of { payload, options? }');
      if (items.length === 0) return [];
      if (items.length > 10_000) throw badOption('items', 'at most 10000 runs per batchTrigger call');
      const e = getEngine();
      const json = items.map((it, i) => {
        if (it === null || typeof it !== 'object' || Array.isArray(it)) throw badOption(`items[${i}]`, 'must be { payload, options? }');
        knownKeys(`items[${i}]`, it, ['payload', 'options']);
        return e.triggerItem(id, it.payload, it.options);
      });
      const ids = await e.submitGroup(json);
      return ids.map((runId) => e.handle<Awaited<O>>(runId, id));
    },
  };
}

/** Defines (or, for an id already defined, replaces) a task. Never opens the store. */
export function task<P = void, O = unknown>(opts: TaskOptions<P, O>): Task<P, Awaited<O>> {
  return defineTask(engine, opts);
}

/** Triggers a task by id. Rejects with `E_UNKNOWN_TASK` if no task has that id here. */
export async function trigger<O = unknown>(taskId: string, payload?: unknown, opts?: TriggerOptions): Promise<RunHandle<O>> {
  const e = engine();
  const [runId] = await e.submitGroup([e.triggerItem(taskId, payload, opts)]);
  return e.handle<O>(runId, taskId);
}

/** Sets engine options. Call before anything opens the store (`start()`, a trigger …). */
export function configure(opts: ConfigureOptions): void {
  const e = engine();
  const config = resolveConfig(opts);
  if (e.isOpen) {
    throw new DurablyError('E_BAD_OPTION', 'configure() must be called before the engine opens its store (before start(), the first trigger or runs.get); call shutdown() first to change it');
  }
  e.config = config;
}

/** Opens the store and starts executing runs (idempotent). Runs left unfinished by an earlier process resume. */
export async function start(): Promise<void> {
  await engine().start();
}

/** Stops taking work, waits (up to `timeout`) for executing runs, flushes and closes the store. */
export async function shutdown(opts?: ShutdownOptions): Promise<void> {
  await engine().shutdown(opts);
}

export const runs = {
  /** A run with its steps, or null if no run has this id. */
  async get(id: string): Promise<Run | null> {
    return engine().getRun(id);
  },
  /** Runs newest first, filtered by task, status, tag and creation time; paginated. */
  async list(opts?: ListRunsOptions): Promise<RunList> {
    return engine().listRuns(opts);
  },
  /**
   * Cancels a run: its `ctx.signal` aborts, nothing after the cancel point runs, its waits
   * are removed, its status is `cancelled`. Resolves with false if it had already ended.
   */
  async cancel(id: string): Promise<boolean> {
    return engine().cancel(id);
  },
  /** Starts a new run of the same task with the same payload. */
  async replay(id: string): Promise<RunHandle> {
    return engine().replay(id);
  },
  /** A failed run continues from its failed step; completed steps keep their results. */
  async retry(id: string): Promise<void> {
    return engine().retry(id);
  },
};

/**
 * Sends events: each is stored (a repeated `id` is ignored), starts a run of every task
 * subscribed with `on`, and resumes every matching `step.waitForEvent` — in one durable
 * write. Resolves with the event ids once they are on disk.
 */
export async function send<N extends string>(events: EventInput<N> | EventInput<N>[]): Promise<{ ids: string[] }> {
  return engine().send(events as EventInput | EventInput[]);
}

export const tokens = {
  /**
   * Completes a token of `step.createToken`: the run waiting for it resumes with `data`
   * (or, if it is not waiting yet, will find `data` when it gets there).
   */
  async complete(token: string | Token, data?: unknown): Promise<{ resumed: boolean }> {
    return engine().completeToken(token, data ?? null);
  },
};

export const schedules = {
  /**
   * Creates a schedule (per user, per account …): runs `task` on `cron` in `tz`. Creating
   * again with the same task and `externalId` updates it.
   */
  async create(input: ScheduleInput): Promise<Schedule> {
    return engine().createSchedule(input);
  },
  /** Every schedule (those of task options included), or those of one task. */
  async list(opts?: { task?: string | { id: string } }): Promise<Schedule[]> {
    return engine().listSchedules(opts);
  },
  /** Deletes a schedule; resolves with false if there was none with this id. */
  async delete(id: string): Promise<boolean> {
    return engine().deleteSchedule(id);
  },
};

/** Queue depths of this process's engine. */
export async function stats(): Promise<Stats> {
  return engine().stats();
}
