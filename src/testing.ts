/**
 * `durably/testing`: an engine with an in-memory store and a manual clock, for unit tests
 * of workflows. Days of sleeps and waits run in milliseconds:
 *
 * ```ts
 * const t = createTestEngine();
 * const wf = t.task({ id: 'wf', run: async (p, { step }) => { await step.sleep('s', '3 days'); return 1; } });
 * const h = await wf.trigger({});
 * await t.advance('3 days');
 * assert.equal(await h.result(), 1);
 * await t.close();
 * ```
 */
import { Engine, resolveConfig, toMs, toTime } from './engine';
import { knownKeys } from './options';
import { defineTask } from './index';
import type { Duration, EventInput, ListRunsOptions, Run, RunHandle, RunList, Schedule, ScheduleInput, Task, TaskOptions, Token, TriggerOptions } from './types';

export interface TestEngineOptions {
  /** The manual clock's start (default: the real time when created). */
  now?: Date | number | string;
  /** Runs executing at once (default 100). */
  concurrency?: number;
}

export interface TestEngine {
  /** Defines a task on this engine only. */
  task<P = void, O = unknown>(opts: TaskOptions<P, O>): Task<P, Awaited<O>>;
  trigger<O = unknown>(taskId: string, payload?: unknown, opts?: TriggerOptions): Promise<RunHandle<O>>;
  send(events: EventInput | EventInput[]): Promise<{ ids: string[] }>;
  runs: {
    get(id: string): Promise<Run | null>;
    list(opts?: ListRunsOptions): Promise<RunList>;
    cancel(id: string): Promise<boolean>;
    replay(id: string): Promise<RunHandle>;
    retry(id: string): Promise<void>;
  };
  tokens: { complete(token: string | Token, data?: unknown): Promise<{ resumed: boolean }> };
  schedules: {
    create(input: ScheduleInput): Promise<Schedule>;
    list(opts?: { task?: string | { id: string } }): Promise<Schedule[]>;
    delete(id: string): Promise<boolean>;
  };
  /** Moves the clock forward, runs everything that became due, resolves when idle. */
  advance(duration: Duration): Promise<void>;
  /** Sets the clock (backwards too), runs what is due, resolves when idle. */
  setTime(time: Date | number | string): Promise<void>;
  /** Resolves once nothing is ready or running. */
  idle(): Promise<void>;
  /** The manual clock's time. */
  now(): Date;
  close(): Promise<void>;
}

export function createTestEngine(opts: TestEngineOptions = {}): TestEngine {
  knownKeys('createTestEngine', opts, ['now', 'concurrency']);
  const start = opts.now === undefined ? Date.now() : toTime('now', opts.now);
  // Every run is kept (retention 'forever'): a test that advances the clock by weeks must not
  // see runs removed under it.
  const config = { ...resolveConfig({ concurrency: opts.concurrency, retention: 'forever' }, {}), dataDir: null, manualClockMs: start };
  const engine = new Engine(config);
  // Executing from the start: a task's own `.trigger()` runs without further ado.
  const started: Promise<void> = engine.start();
  started.catch(() => {});
  const ensure = () => started;
  const idle = async () => {
    await ensure();
    for (;;) {
      // Let claims, runs and reports move, and the writer apply what they decided (a
      // schedule's run, a requeue); idle is two quiet looks in a row.
      await new Promise((r) => setImmediate(r));
      await engine.flush();
      if (!engine.quiet()) {
        await engine.whenIdle();
        continue;
      }
      await new Promise((r) => setImmediate(r));
      await engine.flush();
      if (engine.quiet()) return;
    }
  };
  return {
    task: (def) => defineTask(() => engine, def),
    async trigger<O>(taskId: string, payload?: unknown, o?: TriggerOptions) {
      await ensure();
      const [id] = await engine.submitGroup([engine.triggerItem(taskId, payload, o)]);
      return engine.handle<O>(id, taskId);
    },
    async send(events) {
      await ensure();
      return engine.send(events);
    },
    runs: {
      async get(id) {
        return engine.getRun(id);
      },
      async list(o) {
        return engine.listRuns(o);
      },
      async cancel(id) {
        await ensure();
        return engine.cancel(id);
      },
      async replay(id) {
        await ensure();
        return engine.replay(id);
      },
      async retry(id) {
        await ensure();
        return engine.retry(id);
      },
    },
    tokens: {
      async complete(token, data) {
        await ensure();
        return engine.completeToken(token, data ?? null);
      },
    },
    schedules: {
      async create(input) {
        await ensure();
        return engine.createSchedule(input);
      },
      async list(o) {
        await ensure();
        return engine.listSchedules(o);
      },
      async delete(id) {
        await ensure();
        return engine.deleteSchedule(id);
      },
    },
    async advance(duration) {
      const ms = toMs('duration', duration);
      await idle();
      engine.advanceClock(ms);
      await idle();
    },
    async setTime(time) {
      const ms = toTime('time', time);
      await idle();
      engine.setClock(ms);
      await idle();
    },
    idle,
    now: () => new Date(engine.now()),
    async close() {
      await engine.shutdown({ timeout: '1s' });
    },
  };
}
