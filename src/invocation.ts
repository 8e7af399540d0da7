/**
 * One execution of a run, from the top: the step API user code calls (`ctx.step`), with
 * completed steps memoized, and the ops it reports through its executor (the `Engine`).
 * When every branch is parked on a wait, or a step must be retried later, the invocation
 * *suspends*: it reports one ending op and is dropped.
 */
import { randomUUID } from 'node:crypto';
import { DurablyError, NonRetriableError, RetryAfterError, badOption, deserializeError, serializeError, type StoredError } from './errors';
import { flowMembers } from './flow';
import { checkDepth, toJson } from './json';
import { checkExpression, checkName, knownKeys, toMs, toTime, utf8Length, wellFormed, type EngineConfig, type TaskDef } from './options';
import type { DurablyEvent, Duration, EventInput, Logger, StepApi, Task, TaskContext, Token, WaitForEventOptions } from './types';

export interface ClaimedStep {
  key: string;
  status: 'completed' | 'failed' | 'retrying' | 'waiting';
  attempts: number;
  output?: unknown;
  error?: StoredError;
  wakeAt?: number;
  child?: string;
}

export interface Claimed {
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

/** What an invocation needs from the engine that runs it. */
export interface Executor {
  readonly config: EngineConfig;
  readonly tasks: Map<string, TaskDef>;
  /** Queues an op; resolves once it (and the rest of its batch) is durable. */
  _report(op: string): Promise<void>;
  _warnOnce(key: string, message: string): void;
  _now(): number;
  eventsJson(events: EventInput | EventInput[]): string;
  readonly isOpen: boolean;
  /** Shutting down: no new step starts; a run with nothing parked is handed back. */
  readonly draining: boolean;
}

/** Codes of a report that failed because the store did (or closed): the run is replayed
 * after the store reopens, so its code must not see the failure as a step's. */
const STORE_DOWN = new Set(['E_DISK_FULL', 'E_STORE', 'E_CLOSED']);

/** A step key as stored: `id`, and `id:1`, `id:2` … for repeats. A literal id that itself
 * ends in `:<digits>` is stored with `:0` after it, so it never collides with a repeat. */
export function stepKey(id: string, n: number): string {
  if (n > 0) return `${id}:${n}`;
  return /:\d+$/.test(id) ? `${id}:0` : id;
}


/**
 * A promise that never settles, for a parked branch of a run. A fresh one each time: a
 * shared one would keep every parked run's continuation reachable (a leak of every
 * suspended invocation); a fresh one is garbage once the invocation is dropped.
 */
export function parked<T = never>(): Promise<T> {
  return new Promise<T>(() => {});
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
export class Invocation {
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
    private readonly engine: Executor,
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
    return this.retryOp !== null || this.waits.size > 0 || this.engine.draining;
  }

  /** Shutdown: stop at the next durable point (steps in flight are stored first). */
  drain(): void {
    if (this.stepsInFlight === 0) this.scheduleCheck();
  }

  /** No new step may start: a retry is pending, the run was aborted, or shutdown drains. */
  private get halted(): boolean {
    return this.retryOp !== null || this.aborted || this.engine.draining;
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
      } else if (this.waits.size === 0) {
        // Shutdown with nothing parked: hand the run back; it replays at the next start
        // from its stored steps.
        this.end(`{"op":"release","run":${id}}`);
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
    if (this.aborted) return; // see report()
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
    if (typeof id !== 'string' || id.length === 0 || utf8Length(id) > 256 || id.includes('\0') || !wellFormed(id)) {
      throw badOption('step id', `step.${what}(id, …) needs an id: a non-empty string of at most 256 bytes (UTF-8) of valid Unicode, without NUL`);
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
    return stepKey(id, n);
  }

  /**
   * Runs `work` as a tracked step: suspension waits for it to finish. `work` throws
   * `SUSPEND` to park the caller (its promise then never settles in this invocation).
   */
  private async tracked<T>(work: () => Promise<T>): Promise<T> {
    this.stepsInFlight++;
    try {
      const value = await work();
      // Cancelled (or timed out) while the step ran: its result is not given to the code,
      // so nothing after the cancel point runs.
      if (!this.aborted) return value;
    } catch (e) {
      if (e !== SUSPEND && !this.aborted) throw e;
    } finally {
      this.stepsInFlight--;
      if (this.stepsInFlight === 0 && (this.parking || this.dropped.size > 0)) this.scheduleCheck();
    }
    return parked();
  }

  private storeStep(key: string, attempt: number, output: string): Promise<void> {
    return this.report(`{"op":"step","run":${JSON.stringify(this.c.id)},"key":${JSON.stringify(key)},"attempt":${attempt},"output":${output}}`);
  }

  /**
   * Reports an op of a step in flight. If the store failed (a full disk) the step is not
   * stored: the invocation stops here (the run replays once the store is back), instead of
   * handing the failure to the code as the step's own.
   */
  private report(op: string): Promise<void> {
    // Aborted (cancelled, timed out, shut down, store down): nothing more of this attempt is
    // stored. After a shutdown, a late op would otherwise reach the next engine and land in
    // the run's next attempt.
    if (this.aborted) return Promise.reject(SUSPEND);
    return this.engine._report(op).catch((e: unknown) => {
      if (e instanceof DurablyError && STORE_DOWN.has(e.code)) {
        this.abort(e);
        throw SUSPEND;
      }
      throw e;
    });
  }

  async step<T>(id: string, fn: (info: { attempt: number }) => T | Promise<T>): Promise<Awaited<T>> {
    const key = this.key(id, 'run');
    if (typeof fn !== 'function') throw badOption('step fn', `step.run("${id}", fn) needs a function`);
    if (this.halted) return parked<Awaited<T>>();
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
          await this.report(`{"op":"stepFailed","run":${run},"key":${k},"attempt":${attempt},"error":${error}}`);
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
        await this.report(`{"op":"stepFailed","run":${run},"key":${k},"attempt":${attempt},"error":${JSON.stringify(serializeError(e))}}`);
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
    knownKeys('waitForEvent', opts, ['event', 'match', 'if', 'timeout', 'since']);
    const names = Array.isArray(opts.event) ? opts.event : [opts.event];
    if (names.length === 0) throw badOption('event', 'waitForEvent needs an event name (or a list of names)');
    names.forEach((n) => checkName('event', 'an event name', n));
    if (opts.if !== undefined) {
      if (typeof opts.if !== 'string') throw badOption('if', 'must be an expression string');
      checkExpression('if', opts.if);
    }
    if (opts.match !== undefined && (typeof opts.match !== 'string' || opts.match.length === 0 || !wellFormed(opts.match))) throw badOption('match', "must be a path like 'data.userId'");
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
    if (this.halted) return parked();
    const m = this.memo.get(key);
    if (m?.status === 'completed') return this.resolved(m.output as { ids: string[] });
    // Ids are given here, so that the step's stored result names the events it sent.
    const list = (Array.isArray(events) ? events : [events]).map((e) =>
      e !== null && typeof e === 'object' && e.id === undefined ? { ...e, id: `evt_${randomUUID().replace(/-/g, '')}` } : e,
    );
    const json = this.engine.eventsJson(list);
    // The core checks the data's depth only when the run reports the step (failing the run):
    // checked here, the call rejects. The list and each event add 2 levels.
    checkDepth('the data of an event', json, 2);
    const ids = list.map((e) => e.id as string);
    return this.tracked(async () => {
      await this.report(`{"op":"sendEvent","run":${JSON.stringify(this.c.id)},"key":${JSON.stringify(key)},"events":${json}}`);
      return this.resolved({ ids });
    });
  }

  invoke(id: string, task: Task<unknown, unknown> | string, payload: unknown): Promise<unknown> {
    const key = this.key(id, 'invoke');
    const taskId = typeof task === 'string' ? task : task !== null && typeof task === 'object' ? task.id : undefined;
    if (typeof taskId !== 'string') throw badOption('task', 'step.invoke(id, task, payload) needs a task (or a task id)');
    checkName('task', 'a task id', taskId);
    // A child of a task this process does not define would fail the step later: refused
    // at the call, as trigger() does (a child created by an earlier attempt is in the memo).
    if (!this.engine.tasks.has(taskId) && !this.memo.has(key)) {
      throw new DurablyError('E_UNKNOWN_TASK', `step.invoke("${id}") names the task "${taskId}", which no task() in this process defines; import its module, or pass the task object`);
    }
    const json = toJson(payload, `the payload of step.invoke("${id}")`, this.engine.config.maxPayloadBytes);
    checkDepth(`the payload of step.invoke("${id}")`, json);
    // The child goes through its task's flow control: its keys (functions of the payload)
    // are computed here, as for a trigger.
    const flow = this.engine.tasks.get(taskId)?.flow;
    const members = flow ? flowMembers(flow, payload, { data: payload }, undefined, () => this.engine._now(), toMs) : '';
    const keys = members ? `,"keys":{${members.slice(1)}}` : '';
    return this.wait(key, (m) =>
      m?.child !== undefined
        ? `{"kind":"child","key":${JSON.stringify(key)},"child":${JSON.stringify(m.child)}}`
        : `{"kind":"invoke","key":${JSON.stringify(key)},"task":${JSON.stringify(taskId)},"payload":${json}${keys}}`,
    );
  }

  createToken(id: string, opts?: { timeout?: Duration }): Promise<Token> {
    knownKeys('createToken', opts, ['timeout']);
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
    checkName('token', 'a token id', token.id);
    // Spliced into the run's report as a number: anything else would break the whole batch.
    const expiresAt = token.expiresAt === undefined || token.expiresAt === null ? undefined : toTime('token.expiresAt', token.expiresAt);
    return this.wait(key, (m) => {
      let text = `{"kind":"token","key":${JSON.stringify(key)},"token":${JSON.stringify(token.id)}`;
      const wakeAt = m?.wakeAt ?? expiresAt;
      if (wakeAt !== undefined && wakeAt !== null) text += `,"wakeAt":${wakeAt}`;
      return text + '}';
    });
  }
}
