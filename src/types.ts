/** Public types of durably. */
import type { StoredError } from './errors';
import type { FlowOptions } from './flow';
export type { FlowOptions, KeyFn } from './flow';

/** Milliseconds, or a string such as '500ms', '30s', '5m', '1h30m', '3 days', '2 weeks'. */
export type Duration = number | string;

export type RunStatus =
  | 'delayed'
  | 'queued'
  | 'running'
  | 'waiting'
  | 'completed'
  | 'failed'
  | 'cancelled'
  | 'skipped';

export interface RetryOptions {
  /** Attempts in all, the first included (default 4). */
  maxAttempts?: number;
  /** Each delay is the previous one times `factor` (default 2). */
  factor?: number;
  /** Delay before the second attempt (default '1s'). */
  minTimeout?: Duration;
  /** Longest delay (default '1h'). */
  maxTimeout?: Duration;
  /** Multiply each delay by a random factor in [1, 2) (default true). */
  randomize?: boolean;
}

export interface Logger {
  debug(message: string, data?: unknown): void;
  info(message: string, data?: unknown): void;
  warn(message: string, data?: unknown): void;
  error(message: string, data?: unknown): void;
}

/**
 * Event payloads by name, for typed `send()`, `on` and `waitForEvent`. Extend it by module
 * augmentation:
 * ```ts
 * declare module 'durably' { interface Events { 'user/signed-up': { email: string } } }
 * ```
 */
// eslint-disable-next-line @typescript-eslint/no-empty-interface
export interface Events {}

/** The data of event `N`: typed when `Events` declares it. */
export type EventData<N extends string> = N extends keyof Events ? Events[N] : unknown;

/** An event as sent. `id` deduplicates: a second send with the same id is ignored. */
export interface EventInput<N extends string = string> {
  name: N;
  data?: EventData<N>;
  id?: string;
  /** Milliseconds since the epoch; defaults to now. */
  ts?: number;
}

/** An event as stored and as runs see it. */
export interface DurablyEvent<N extends string = string> {
  id: string;
  name: N;
  data: EventData<N>;
  ts: number;
}

export interface WaitForEventOptions<N extends string> {
  /** One event name, or several: the first to arrive wins. */
  event: N | N[];
  /**
   * A path whose value must be equal in this run's own event (its trigger event, or
   * `{ data: payload }`) and the incoming one, e.g. `'data.userId'`.
   */
  match?: string;
  /** A filter expression over `event` (this run's event) and `async` (the incoming one). */
  if?: string;
  /** Give up after this long and resolve with `null` (no timeout: wait forever). */
  timeout?: Duration;
  /**
   * `'run-start'` (default): an event that arrived after the run was created but before it
   * reached this wait still matches. `'now'`: only events from this point on.
   */
  since?: 'run-start' | 'now';
}

export interface Token {
  id: string;
  /** When waiting for it gives up (ms since the epoch), if it has a timeout. */
  expiresAt: number | null;
}

export interface StepApi {
  /**
   * Runs `fn` once and stores its JSON result durably; on a replay (after a retry, a
   * restart or a crash) returns the stored result without running `fn` again. Each step
   * has its own retry budget. Run several at once with `Promise.all`.
   */
  run<T>(id: string, fn: (info: { attempt: number }) => T | Promise<T>): Promise<Awaited<T>>;
  /** Resumes after `duration`, durably: the process may restart meanwhile. */
  sleep(id: string, duration: Duration): Promise<void>;
  /** Resumes at `until` (a Date, an ISO string or ms since the epoch), durably. */
  sleepUntil(id: string, until: Date | string | number): Promise<void>;
  /** The first matching event, or `null` when `timeout` passes first. */
  waitForEvent<N extends string>(id: string, opts: WaitForEventOptions<N>): Promise<DurablyEvent<N> | null>;
  /** Sends events exactly once, even across replays. */
  sendEvent(id: string, events: EventInput | EventInput[]): Promise<{ ids: string[] }>;
  /** Starts a child run and resolves with its output; throws `E_RUN_FAILED` if it fails. */
  invoke<P, O>(id: string, task: Task<P, O>, payload: P): Promise<O>;
  /** A token to hand out (an email link, a button); complete it with `tokens.complete`. */
  createToken(id: string, opts?: { timeout?: Duration }): Promise<Token>;
  /** The data given to `tokens.complete(token.id, data)`, or `null` when the token expires. */
  waitForToken<T = unknown>(id: string, token: Token): Promise<T | null>;
}

export interface RunInfo {
  id: string;
  taskId: string;
  tags: string[];
  createdAt: Date;
}

export interface TaskContext {
  step: StepApi;
  run: RunInfo;
  /** 1-based attempt of the run's own code (steps count their attempts separately). */
  attempt: number;
  logger: Logger;
  /** Aborts when the engine shuts down while this run is executing. */
  signal: AbortSignal;
  /** The event that started this run, for event-triggered runs. */
  event?: DurablyEvent;
}

export interface TriggerOptions {
  /** Start no sooner than this long from now. */
  delay?: Duration;
  /** A second trigger with the same key (while it lives) returns the first run's handle. */
  idempotencyKey?: string;
  /** How long the idempotency key lives (default 30 days). */
  idempotencyKeyTTL?: Duration;
  /** Higher starts first among ready runs (overrides the task's `priority`). */
  priority?: number;
  /** The concurrency key of this run (overrides the task's `concurrency.key`). */
  concurrencyKey?: string;
  /** Cancel the run if it has not started within this long. */
  ttl?: Duration;
  /** Start no sooner than this time. */
  runAt?: Date | string | number;
  /** Up to 20 strings (1–128 characters) to filter runs by: `runs.list({ tag })`. */
  tags?: string[];
}

export interface ResultOptions {
  /** Reject with `E_TIMEOUT` if the run has not ended after this long (real time). */
  timeout?: Duration;
}

export interface RunHandle<O = unknown> {
  id: string;
  taskId: string;
  /** Cancels the run; resolves with false if it had already ended. */
  cancel(): Promise<boolean>;
  /**
   * The run's output once it completes. Rejects with `E_RUN_FAILED` (its `cause` is the
   * stored error) if it failed, or `E_TIMEOUT`.
   */
  result(opts?: ResultOptions): Promise<O>;
}

/** Which events start a task: a name, several, or with an `if` filter over `event`. */
export type OnOption = string | { event: string; if?: string } | Array<string | { event: string; if?: string }>;

export interface FailureInfo {
  /** The run that failed for good. */
  runId: string;
  /** Its stored error. */
  error: StoredError;
  ctx: TaskContext;
}

export interface TaskOptions<P, O> extends FlowOptions<P> {
  /** Unique and stable: the durable identity of the task. */
  id: string;
  run: (payload: P, ctx: TaskContext) => O | Promise<O>;
  retry?: RetryOptions;
  /**
   * Runs on a clock: a cron pattern (5 fields, or 6 with seconds first) in UTC, or
   * `{ cron, tz }` with an IANA zone. The payload is `{ timestamp, lastTimestamp, scheduleId }`
   * (ISO strings). After downtime a missed tick fires once.
   */
  schedule?: string | { cron: string; tz?: string };
  /** Called once (durably, as a run of its own) after a run of this task failed for good. */
  onFailure?: (payload: P, info: FailureInfo) => unknown;
  /** How long this task's ended runs are kept (default: `configure({ retention })`, 7 days). */
  retention?: Duration | 'forever' | false;
  /** Start a run (with `payload = event.data`) for every matching event sent with `send()`. */
  on?: OnOption;
}

export interface Task<P, O> {
  readonly id: string;
  /** Enqueues a run durably; resolves once it is on disk. */
  trigger(payload: P, opts?: TriggerOptions): Promise<RunHandle<O>>;
  /** Enqueues many runs in one durable write: all of them or none. */
  batchTrigger(items: Array<{ payload: P; options?: TriggerOptions }>): Promise<RunHandle<O>[]>;
}

export type PayloadOf<T> = T extends Task<infer P, unknown> ? P : never;
export type OutputOf<T> = T extends Task<unknown, infer O> ? O : never;

export interface StepInfo {
  id: string;
  status: 'completed' | 'failed' | 'retrying' | 'waiting';
  /** For a waiting step: when its sleep ends or its wait times out. */
  wakeAt?: Date;
  /** For `step.invoke`: the child run. */
  child?: string;
  attempts: number;
  output?: unknown;
  error?: StoredError;
  endedAt: Date;
}

export interface Run<P = unknown, O = unknown> {
  id: string;
  taskId: string;
  status: RunStatus;
  payload: P;
  output?: O;
  error?: StoredError;
  attempts: number;
  tags: string[];
  createdAt: Date;
  startedAt?: Date;
  endedAt?: Date;
  /** When a delayed run (a delayed trigger, a retry, a sleep) becomes ready. */
  readyAt?: Date;
  /** The event that started the run. */
  event?: DurablyEvent;
  /** The run that started this one with `step.invoke`. */
  parent?: { run: string; key: string };
  /** `'onFailure'` for the run that called a task's `onFailure`. */
  kind?: 'onFailure';
  priority?: number;
  /**
   * True while the run has not ended and no task with its `taskId` is defined in this
   * process (renamed, removed, or its module not imported where the engine starts): it
   * waits, nothing is lost, and it runs once the task is defined again.
   */
  waitingForTask?: boolean;
  steps: StepInfo[];
}

export interface ListRunsOptions {
  taskId?: string;
  status?: RunStatus;
  tag?: string;
  /** Only runs created at or after this time. */
  since?: Date | string | number;
  /** Page size: default 50, at most 1000. */
  limit?: number;
  /** The `cursor` of the previous page. */
  cursor?: string;
}

export interface RunList {
  /** Newest first; `steps` are not included (use `runs.get`). */
  runs: Array<Omit<Run, 'steps'>>;
  /** Present when there may be more runs: pass it back to get the next page. */
  cursor?: string;
}

export interface ConfigureOptions {
  /** Folder of the embedded store (default './.durably', env DURABLY_DATA_DIR). */
  dataDir?: string;
  /** Runs executing at once in this process (default 100, env DURABLY_CONCURRENCY). */
  concurrency?: number;
  /**
   * 'sync' (default): acknowledged means fsynced. 'batched': synced every
   * `flushInterval` (default 100 ms); a power loss can lose that much acknowledged work.
   */
  durability?: 'sync' | 'batched';
  flushInterval?: Duration;
  /** Largest payload, step output or run output, in bytes of JSON (default 4 MiB). */
  maxPayloadBytes?: number;
  /** Bytes of sled's page cache (default 16 MiB, at least 1 MiB). More helps only when
   * runs often read records that have left the cache, e.g. replays of long-parked runs. */
  cacheBytes?: number;
  /**
   * How long a call that needs the store (a trigger, runs.get …) waits when the data folder
   * is held by another process — during a rolling deploy, until the old server exits —
   * before it fails with E_DATA_DIR_LOCKED (default '10s'). Also how long calls wait while
   * the store is reopened after a failure (a full disk) before failing with its code.
   */
  lockTimeout?: Duration;
  /**
   * A run that was running each time the process died this many times in a row (it exits the
   * process, runs out of memory, crashes native code) fails with E_RUN_POISONED instead of
   * being replayed forever (default 3).
   */
  crashLimit?: number;
  /**
   * How long ended runs (completed, failed, cancelled, skipped) are kept, with their steps
   * (default '7 days', env DURABLY_RETENTION): a duration of at least '1m', or 'forever'.
   * Events go once older than this and no waiting run can still match them; expired
   * idempotency keys go too. A task's own `retention` wins for its runs. Removal runs in
   * the background, a few hundred records at a time.
   */
  retention?: Duration | 'forever' | false;
  /** The least severe of durably's own messages shown (default 'warn', env DURABLY_LOG). */
  logLevel?: 'silent' | 'error' | 'warn' | 'info' | 'debug';
  /**
   * Where durably's own messages go (default: the console): a function `(level, message)`,
   * or an object with `error` / `warn` / `info` / `debug` methods (pino, winston …).
   */
  logger?: ((level: 'error' | 'warn' | 'info' | 'debug', message: string) => void) | Partial<Record<'error' | 'warn' | 'info' | 'debug', (message: string) => void>>;
}

/** The payload of a run started by a schedule that has no payload of its own. */
export interface ScheduledPayload {
  /** The tick, as an ISO string. */
  timestamp: string;
  /** The tick before it, if any. */
  lastTimestamp: string | null;
  scheduleId: string;
  externalId?: string | null;
}

export interface ScheduleInput {
  /** The task (or its id) to run. */
  task: string | { id: string };
  cron: string;
  /** IANA time zone (default 'UTC'). */
  tz?: string;
  /** Your id for it (a user id …): creating again with the same task and externalId updates it. */
  externalId?: string;
  /** The runs' payload (default: a `ScheduledPayload`). */
  payload?: unknown;
}

export interface Schedule {
  id: string;
  task: string;
  cron: string;
  tz: string;
  externalId?: string;
  payload?: unknown;
  /** The tick fired last. */
  lastTick?: Date;
  nextTick: Date;
  /** From a task's `schedule` option. */
  fromTask: boolean;
}

export interface ShutdownOptions {
  /** How long to wait for executing runs to reach their next durable point (default '10s'). */
  timeout?: Duration;
}

export interface Stats {
  ready: number;
  delayed: number;
  running: number;
  /** Runs parked on events, tokens or child runs. */
  waiting: number;
  /** Runs whose task is not registered in this process: they wait. */
  waitingForTask: number;
  /** Throttle and rate-limit keys with starts in their window (each freed with its period). */
  flowKeys: number;
}
