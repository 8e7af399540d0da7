// Flow control and run management (DESIGN §1.1, §1.2, §1.6, §3.5), through durably/testing:
// a manual clock at a fixed epoch, so every window and deadline is checked to the
// millisecond. A run that must keep executing waits on a gate the test opens; nothing here
// sleeps in real time (`GUARD` and `reach()` only turn a hang into a failure).
const { test } = require('node:test');
const assert = require('node:assert');
const { createTestEngine } = require('durably/testing');
const { DurablyError } = require('durably');

/** 2024-01-01T00:00:00Z: every test engine starts here. */
const EPOCH = Date.UTC(2024, 0, 1);
const SEC = 1000;
const MIN = 60 * SEC;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
/** Real-time guard for `result()`: the run must already be done, this only stops a hang. */
const GUARD = { timeout: '2s' };

/** A fresh in-memory engine at EPOCH, closed when the test ends. */
function testEngine(t, opts = {}) {
  const e = createTestEngine({ now: EPOCH, ...opts });
  t.after(() => e.close());
  return e;
}

/** A promise the test resolves: a run awaiting `gate.p` keeps executing (and its slot) until `gate.open()`. */
function gate() {
  let open;
  const p = new Promise((r) => (open = r));
  return { p, open };
}

/** Counts happenings (run starts); `reach(n)` resolves once there were n (fails after 2 s of real time). */
function counter(what) {
  let n = 0;
  const waiters = [];
  return {
    get n() {
      return n;
    },
    hit() {
      n++;
      for (const w of waiters.filter((w) => n >= w.k)) w.resolve();
    },
    reach(k) {
      if (n >= k) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`expected ${k} ${what}, saw ${n}`)), 2000);
        waiters.push({ k, resolve: () => (clearTimeout(timer), resolve()) });
      });
    },
  };
}

/**
 * Proves the scheduler has looked at every run triggered before: a run of an unrestricted
 * task, triggered now, is ordered after them, so once it completed they were either started
 * or set aside (blocked, throttled). Deadlines and throttle windows due now are applied too.
 */
async function probe(e) {
  const p = e.task({ id: 'probe', run: async () => 'probed' });
  const h = await p.trigger();
  assert.strictEqual(await h.result(GUARD), 'probed');
}

async function runOf(e, id) {
  const run = await e.runs.get(id);
  assert.ok(run, `run ${id} exists`);
  return run;
}

async function statusOf(e, id) {
  return (await runOf(e, id)).status;
}

function stepOf(run, id) {
  return run.steps.find((s) => s.id === id);
}

/** Resolves with the error a promise rejects with (fails if it resolves). */
async function rejection(promise) {
  let caught;
  await assert.rejects(promise, (err) => {
    caught = err;
    return true;
  });
  return caught;
}

function durablyError(code, option) {
  return (e) => {
    assert.ok(e instanceof DurablyError, `expected a DurablyError, got ${e && e.stack}`);
    assert.strictEqual(e.code, code, e.message);
    if (option !== undefined) assert.strictEqual(e.option, option, e.message);
    return true;
  };
}

/** Milliseconds since EPOCH on the engine's clock. */
function elapsed(e) {
  return e.now().getTime() - EPOCH;
}

// --- concurrency --------------------------------------------------------------------------

test('concurrency: the limit is reached and never exceeded', async (t) => {
  const e = testEngine(t);
  const g = gate();
  const starts = counter('starts');
  let executing = 0;
  let most = 0;
  const c = e.task({
    id: 'conc-limit',
    concurrency: { limit: 2 },
    run: async (i) => {
      executing++;
      most = Math.max(most, executing);
      starts.hit();
      await g.p;
      executing--;
      return i;
    },
  });
  const hs = await c.batchTrigger([0, 1, 2, 3, 4].map((payload) => ({ payload })));
  await starts.reach(2);
  await probe(e);
  assert.strictEqual(starts.n, 2, 'a third run started while two held the slots');
  assert.deepStrictEqual(await Promise.all(hs.slice(2).map((h) => statusOf(e, h.id))), ['queued', 'queued', 'queued']);

  g.open();
  assert.deepStrictEqual(await Promise.all(hs.map((h) => h.result(GUARD))), [0, 1, 2, 3, 4]);
  assert.strictEqual(most, 2);
});

test('concurrency per key: a saturated key does not hold up another key', async (t) => {
  const e = testEngine(t);
  const gates = { a: gate(), b: gate() };
  const starts = counter('starts');
  const started = [];
  const c = e.task({
    id: 'conc-key',
    concurrency: { limit: 1, key: (p) => p.account },
    run: async (p) => {
      started.push(p.name);
      starts.hit();
      await gates[p.account].p;
      return p.name;
    },
  });
  const [a1, a2, b1] = await c.batchTrigger([
    { payload: { account: 'a', name: 'a1' } },
    { payload: { account: 'a', name: 'a2' } },
    { payload: { account: 'b', name: 'b1' } },
  ]);
  await starts.reach(2);
  await probe(e);
  assert.deepStrictEqual(started, ['a1', 'b1'], 'b1 runs beside a1; a2 waits for a1');
  assert.strictEqual(await statusOf(e, a2.id), 'queued');

  gates.a.open();
  assert.strictEqual(await a1.result(GUARD), 'a1');
  assert.strictEqual(await a2.result(GUARD), 'a2');
  assert.strictEqual(await statusOf(e, b1.id), 'running', 'b1 still holds key b');
  gates.b.open();
  assert.strictEqual(await b1.result(GUARD), 'b1');
});

test('concurrency: a run parked on step.sleep holds no slot', async (t) => {
  const e = testEngine(t);
  const c = e.task({
    id: 'conc-sleep',
    concurrency: { limit: 1 },
    run: async (p, { step }) => {
      if (p.sleep) await step.sleep('nap', '1h');
      return p.name;
    },
  });
  const sleeper = await c.trigger({ sleep: true, name: 'sleeper' });
  await e.idle();
  assert.strictEqual(await statusOf(e, sleeper.id), 'waiting');

  const other = await c.trigger({ name: 'other' });
  assert.strictEqual(await other.result(GUARD), 'other', 'ran while the sleeper was parked');
  assert.strictEqual(await statusOf(e, sleeper.id), 'waiting');

  await e.advance(HOUR);
  assert.strictEqual(await sleeper.result(GUARD), 'sleeper');
});

test('concurrency: the trigger option concurrencyKey overrides the key function', async (t) => {
  const e = testEngine(t);
  const g = gate();
  const starts = counter('starts');
  const started = [];
  const c = e.task({
    id: 'conc-override',
    concurrency: { limit: 1, key: (p) => p.account },
    run: async (p) => {
      started.push(p.name);
      starts.hit();
      await g.p;
      return p.name;
    },
  });
  const r1 = await c.trigger({ account: 'a', name: 'r1' });
  await starts.reach(1);
  // r2's payload says key a, its option says b; r3's payload says b, its option says a.
  const r2 = await c.trigger({ account: 'a', name: 'r2' }, { concurrencyKey: 'b' });
  const r3 = await c.trigger({ account: 'b', name: 'r3' }, { concurrencyKey: 'a' });
  await starts.reach(2);
  await probe(e);
  assert.deepStrictEqual(started, ['r1', 'r2']);
  assert.strictEqual(await statusOf(e, r3.id), 'queued', 'r3 waits behind r1 on key a');

  g.open();
  assert.deepStrictEqual(await Promise.all([r1, r2, r3].map((h) => h.result(GUARD))), ['r1', 'r2', 'r3']);
});

// --- throttle -----------------------------------------------------------------------------

test('throttle: excess runs start at period boundaries, in trigger order, none dropped', async (t) => {
  const e = testEngine(t);
  const starts = counter('starts');
  const started = [];
  const th = e.task({
    id: 'throttle',
    throttle: { limit: 2, period: '1m' },
    run: async (i) => {
      started.push([i, elapsed(e)]);
      starts.hit();
      return i;
    },
  });
  const hs = await th.batchTrigger([0, 1, 2, 3, 4].map((payload) => ({ payload })));
  await starts.reach(2);
  await e.advance(MIN - 1);
  await probe(e);
  assert.deepStrictEqual(started, [
    [0, 0],
    [1, 0],
  ]);
  assert.deepStrictEqual(await Promise.all(hs.slice(2).map((h) => statusOf(e, h.id))), ['queued', 'queued', 'queued']);

  await e.advance(1);
  await starts.reach(4);
  await e.advance(MIN);
  await starts.reach(5);
  assert.deepStrictEqual(started, [
    [0, 0],
    [1, 0],
    [2, MIN],
    [3, MIN],
    [4, 2 * MIN],
  ]);
  assert.deepStrictEqual(await Promise.all(hs.map((h) => h.result(GUARD))), [0, 1, 2, 3, 4]);
});

test('throttle per key: each key has its own window', async (t) => {
  const e = testEngine(t);
  const starts = counter('starts');
  const started = [];
  const th = e.task({
    id: 'throttle-key',
    throttle: { limit: 1, period: '1m', key: (p) => p.k },
    run: async (p) => {
      started.push([p.name, elapsed(e)]);
      starts.hit();
    },
  });
  await th.batchTrigger([{ payload: { k: 'a', name: 'a0' } }, { payload: { k: 'a', name: 'a1' } }, { payload: { k: 'b', name: 'b0' } }]);
  await starts.reach(2);
  await probe(e);
  assert.deepStrictEqual(started, [
    ['a0', 0],
    ['b0', 0],
  ]);
  await e.advance(MIN);
  await starts.reach(3);
  assert.deepStrictEqual(started[2], ['a1', MIN]);
});

test('throttle burst: up to limit + burst start at once, the rest wait for the window', async (t) => {
  const e = testEngine(t);
  const starts = counter('starts');
  const started = [];
  const th = e.task({
    id: 'throttle-burst',
    throttle: { limit: 1, period: '1m', burst: 2 },
    run: async (i) => {
      started.push([i, elapsed(e)]);
      starts.hit();
    },
  });
  await th.batchTrigger([0, 1, 2, 3].map((payload) => ({ payload })));
  await starts.reach(3);
  await e.advance(MIN - 1);
  await probe(e);
  assert.strictEqual(started.length, 3);
  await e.advance(1);
  await starts.reach(4);
  assert.deepStrictEqual(started, [
    [0, 0],
    [1, 0],
    [2, 0],
    [3, MIN],
  ]);
});

// --- rate limit ---------------------------------------------------------------------------

test('rateLimit: a trigger over the limit is recorded skipped and never executes', async (t) => {
  const e = testEngine(t);
  const executed = [];
  const rl = e.task({
    id: 'rate-limit',
    rateLimit: { limit: 2, period: '1m' },
    run: async (i) => {
      executed.push(i);
      return i;
    },
  });
  const hs = [];
  for (const i of [0, 1, 2]) hs.push(await rl.trigger(i));
  await e.idle();

  assert.strictEqual(new Set(hs.map((h) => h.id)).size, 3, 'the skipped trigger has a run of its own');
  const skipped = await runOf(e, hs[2].id);
  assert.strictEqual(skipped.status, 'skipped');
  assert.strictEqual(skipped.payload, 2);
  assert.strictEqual(skipped.startedAt, undefined);
  const err = await rejection(hs[2].result(GUARD));
  assert.ok(err instanceof DurablyError);
  assert.strictEqual(err.code, 'E_RUN_SKIPPED');
  assert.deepStrictEqual(await Promise.all(hs.slice(0, 2).map((h) => h.result(GUARD))), [0, 1]);
  assert.deepStrictEqual(executed, [0, 1]);
});

test('rateLimit: the window slides, so a trigger is accepted once the oldest leaves it', async (t) => {
  const e = testEngine(t);
  const rl = e.task({ id: 'rate-slide', rateLimit: { limit: 2, period: '1m' }, run: async (p) => p });
  const hs = [];
  hs.push(await rl.trigger('t=0'));
  await e.advance(30 * SEC);
  hs.push(await rl.trigger('t=30s'));
  await e.advance(30 * SEC - 1);
  hs.push(await rl.trigger('t=60s-1ms: both in the window'));
  await e.advance(1);
  hs.push(await rl.trigger('t=60s: the first left'));
  hs.push(await rl.trigger('t=60s again: the second is still in'));
  await e.advance(30 * SEC);
  hs.push(await rl.trigger('t=90s: the second left'));
  await e.idle();
  const statuses = await Promise.all(hs.map((h) => statusOf(e, h.id)));
  assert.deepStrictEqual(statuses, ['completed', 'completed', 'skipped', 'completed', 'skipped', 'completed']);
});

// --- debounce -----------------------------------------------------------------------------

test('debounce trailing: a burst runs once, after a quiet period, with the last payload and one handle', async (t) => {
  const e = testEngine(t);
  const ran = [];
  const db = e.task({
    id: 'debounce-trailing',
    debounce: { period: '10s' },
    run: async (p) => {
      ran.push([p, elapsed(e)]);
      return p;
    },
  });
  const h1 = await db.trigger(1);
  await e.advance(5 * SEC);
  const h2 = await db.trigger(2);
  await e.advance(4 * SEC);
  const h3 = await db.trigger(3);
  assert.strictEqual(h2.id, h1.id);
  assert.strictEqual(h3.id, h1.id);

  await e.advance(10 * SEC - 1);
  await probe(e);
  assert.deepStrictEqual(ran, [], 'ran before 10 s of quiet');
  await e.advance(1);
  assert.strictEqual(await h1.result(GUARD), 3);
  assert.deepStrictEqual(ran, [[3, 19 * SEC]]);
  const { runs } = await e.runs.list({ taskId: 'debounce-trailing' });
  assert.strictEqual(runs.length, 1);
});

test('debounce leading: the burst runs once with the first payload', async (t) => {
  const e = testEngine(t);
  const ran = [];
  const db = e.task({
    id: 'debounce-leading',
    debounce: { period: '10s', mode: 'leading' },
    run: async (p) => {
      ran.push(p);
      return p;
    },
  });
  const h1 = await db.trigger('first');
  await e.advance(5 * SEC);
  const h2 = await db.trigger('second');
  await e.advance(5 * SEC);
  const h3 = await db.trigger('third');
  assert.deepStrictEqual([h2.id, h3.id], [h1.id, h1.id]);
  await e.advance(10 * SEC);
  assert.strictEqual(await h1.result(GUARD), 'first');
  assert.deepStrictEqual(ran, ['first']);
});

test('debounce maxWait: a key kept hot still runs maxWait after its first trigger', async (t) => {
  const e = testEngine(t);
  const ran = [];
  const db = e.task({
    id: 'debounce-max-wait',
    debounce: { period: '10s', maxWait: '30s' },
    run: async (p) => {
      ran.push([p, elapsed(e)]);
      return p;
    },
  });
  const first = await db.trigger(0);
  // A trigger every 5 s: without maxWait the run would wait for 10 s of quiet forever.
  for (let s = 5; s <= 25; s += 5) {
    await e.advance(5 * SEC);
    assert.strictEqual((await db.trigger(s)).id, first.id);
  }
  await e.advance(5 * SEC - 1);
  await probe(e);
  assert.deepStrictEqual(ran, []);
  await e.advance(1);
  assert.strictEqual(await first.result(GUARD), 25);
  assert.deepStrictEqual(ran, [[25, 30 * SEC]]);
});

// --- priority -----------------------------------------------------------------------------

/**
 * An engine running one run at a time, its slot held by a gated blocker: runs triggered
 * meanwhile queue up, and start one by one, in the scheduler's order, once `release()`.
 */
async function oneSlotEngine(t) {
  const e = testEngine(t, { concurrency: 1 });
  const g = gate();
  const blocking = counter('blocker starts');
  const blocker = e.task({
    id: 'blocker',
    run: async () => {
      blocking.hit();
      await g.p;
    },
  });
  await blocker.trigger();
  await blocking.reach(1);
  return { e, release: g.open };
}

test('priority: among ready runs a higher task priority starts first', async (t) => {
  const { e, release } = await oneSlotEngine(t);
  const order = [];
  const mk = (id, priority) => e.task({ id, priority, run: async () => order.push(id) });
  const low = mk('prio-low', -1);
  const none = e.task({ id: 'prio-none', run: async () => order.push('prio-none') });
  const high = mk('prio-high', 10);
  const hs = [await low.trigger(), await none.trigger(), await high.trigger()];
  release();
  await Promise.all(hs.map((h) => h.result(GUARD)));
  assert.deepStrictEqual(order, ['prio-high', 'prio-none', 'prio-low']);
});

test('priority: a function of the payload orders the runs of one task', async (t) => {
  const { e, release } = await oneSlotEngine(t);
  const order = [];
  const p = e.task({ id: 'prio-fn', priority: (x) => x.n, run: async (x) => order.push(x.n) });
  const hs = [];
  for (const n of [1, 3, 2]) hs.push(await p.trigger({ n }));
  release();
  await Promise.all(hs.map((h) => h.result(GUARD)));
  assert.deepStrictEqual(order, [3, 2, 1]);
  assert.strictEqual((await runOf(e, hs[1].id)).priority, 3);
});

test('priority: the trigger option overrides the task priority', async (t) => {
  const { e, release } = await oneSlotEngine(t);
  const order = [];
  const p = e.task({ id: 'prio-override', priority: (x) => x.n, run: async (x) => order.push(x.name) });
  const hs = [await p.trigger({ n: 5, name: 'five' }), await p.trigger({ n: 1, name: 'one, raised to 9' }, { priority: 9 }), await p.trigger({ n: 3, name: 'three' })];
  release();
  await Promise.all(hs.map((h) => h.result(GUARD)));
  assert.deepStrictEqual(order, ['one, raised to 9', 'five', 'three']);
});

// --- idempotency --------------------------------------------------------------------------

test('idempotencyKey: a second trigger with the same key returns the first run, which executes once', async (t) => {
  const e = testEngine(t);
  const executed = [];
  const pay = e.task({
    id: 'idem-task',
    idempotencyKey: (p) => p.orderId,
    run: async (p) => {
      executed.push(p);
      return p.attempt;
    },
  });
  const h1 = await pay.trigger({ orderId: 'o1', attempt: 1 });
  await e.idle();
  const h2 = await pay.trigger({ orderId: 'o1', attempt: 2 });
  const other = await pay.trigger({ orderId: 'o2', attempt: 1 });
  assert.strictEqual(h2.id, h1.id);
  assert.notStrictEqual(other.id, h1.id);
  assert.strictEqual(await h2.result(GUARD), 1, "the second handle resolves with the first run's output");
  await other.result(GUARD);
  assert.deepStrictEqual(executed, [
    { orderId: 'o1', attempt: 1 },
    { orderId: 'o2', attempt: 1 },
  ]);
});

test('idempotencyKey as a trigger option returns the first run handle', async (t) => {
  const e = testEngine(t);
  let executed = 0;
  const job = e.task({ id: 'idem-option', run: async () => ++executed });
  const h1 = await job.trigger(null, { idempotencyKey: 'job-42' });
  const h2 = await job.trigger(null, { idempotencyKey: 'job-42' });
  assert.strictEqual(h2.id, h1.id);
  assert.strictEqual(await h1.result(GUARD), 1);
  await e.idle();
  assert.strictEqual(executed, 1);
});

test('idempotencyKey: two triggers with the same key in the same tick resolve to one run', async (t) => {
  const e = testEngine(t);
  const job = e.task({ id: 'idem-same-tick', idempotencyKey: (p) => p.k, run: async (p) => p.n });
  const [h1, h2] = await Promise.all([job.trigger({ k: 'x', n: 1 }), job.trigger({ k: 'x', n: 2 })]);
  assert.strictEqual(h2.id, h1.id);
  await e.idle();
  const { runs } = await e.runs.list({ taskId: 'idem-same-tick' });
  assert.strictEqual(runs.length, 1);
});

test('idempotencyKeyTTL: once it has passed the key creates a new run', async (t) => {
  const e = testEngine(t);
  const job = e.task({ id: 'idem-ttl', idempotencyKey: (p) => p.k, idempotencyKeyTTL: '1h', run: async () => null });
  const first = await job.trigger({ k: 'x' });
  await e.advance(HOUR - 1);
  assert.strictEqual((await job.trigger({ k: 'x' })).id, first.id, 'the key still lives 1 ms before its TTL');
  await e.advance(1);
  const later = await job.trigger({ k: 'x' });
  assert.notStrictEqual(later.id, first.id);
  assert.strictEqual((await job.trigger({ k: 'x' })).id, later.id, 'the new run holds the key now');
});

// --- singleton ----------------------------------------------------------------------------

test('singleton skip: a trigger while a run of its key is active is skipped', async (t) => {
  const e = testEngine(t);
  const g = gate();
  const starts = counter('starts');
  const executed = [];
  const s = e.task({
    id: 'singleton-skip',
    singleton: { key: (p) => p.user, mode: 'skip' },
    run: async (p) => {
      executed.push(p.name);
      starts.hit();
      await g.p;
      return p.name;
    },
  });
  const active = await s.trigger({ user: 'u1', name: 'active' });
  await starts.reach(1);
  const dup = await s.trigger({ user: 'u1', name: 'dup' });
  const otherKey = await s.trigger({ user: 'u2', name: 'other key' });

  assert.strictEqual(await statusOf(e, dup.id), 'skipped');
  assert.strictEqual((await rejection(dup.result(GUARD))).code, 'E_RUN_SKIPPED');
  g.open();
  assert.strictEqual(await active.result(GUARD), 'active');
  assert.strictEqual(await otherKey.result(GUARD), 'other key');
  assert.deepStrictEqual(executed.sort(), ['active', 'other key']);
});

test('singleton skip: once the active run has ended its key takes a new run', async (t) => {
  const e = testEngine(t);
  const s = e.task({ id: 'singleton-free', singleton: { mode: 'skip' }, run: async (p) => p });
  const first = await s.trigger(1);
  assert.strictEqual(await first.result(GUARD), 1);
  const second = await s.trigger(2);
  assert.strictEqual(await second.result(GUARD), 2);
});

test('singleton cancel: a new trigger cancels the active run of its key and runs itself', async (t) => {
  const e = testEngine(t);
  const g = gate();
  const starts = counter('starts');
  const aborted = [];
  const after = [];
  const s = e.task({
    id: 'singleton-cancel',
    singleton: { mode: 'cancel' },
    run: async (p, { step, signal }) => {
      signal.addEventListener('abort', () => aborted.push(p));
      starts.hit();
      if (p === 'old') await g.p;
      await step.run('after', () => after.push(p));
      return p;
    },
  });
  const old = await s.trigger('old');
  await starts.reach(1);
  const fresh = await s.trigger('new');

  assert.strictEqual((await rejection(old.result(GUARD))).code, 'E_RUN_CANCELLED');
  assert.strictEqual(await fresh.result(GUARD), 'new');
  g.open();
  await e.idle();
  assert.deepStrictEqual(aborted, ['old']);
  assert.deepStrictEqual(after, ['new'], 'the cancelled run took no step after its cancellation');
  assert.strictEqual(await statusOf(e, old.id), 'cancelled');
});

// --- timeouts -----------------------------------------------------------------------------
// A run is kept queued by a throttle window (not by a gated run: moving the manual clock
// waits until no run is executing).

test('timeout.start: a run not started in time is cancelled and never executes', async (t) => {
  const e = testEngine(t);
  const executed = [];
  const job = e.task({
    id: 'timeout-start',
    throttle: { limit: 1, period: '1h' },
    timeout: { start: '1m' },
    run: async (p) => executed.push(p),
  });
  const first = await job.trigger('first');
  const late = await job.trigger('late');
  await e.idle();
  await first.result(GUARD);

  await e.advance(MIN - 1);
  await probe(e);
  assert.strictEqual(await statusOf(e, late.id), 'queued');
  await e.advance(1);
  assert.strictEqual((await rejection(late.result(GUARD))).code, 'E_RUN_CANCELLED');
  const run = await runOf(e, late.id);
  assert.strictEqual(run.status, 'cancelled');
  assert.strictEqual(run.startedAt, undefined);

  await e.advance(HOUR);
  await probe(e);
  assert.deepStrictEqual(executed, ['first']);
});

test('the trigger option ttl cancels a run that has not started within it', async (t) => {
  const e = testEngine(t);
  const executed = [];
  const job = e.task({ id: 'trigger-ttl', throttle: { limit: 1, period: '1h' }, run: async (p) => executed.push(p) });
  await job.trigger('first');
  const late = await job.trigger('late', { ttl: '30s' });
  await e.advance(30 * SEC - 1);
  await probe(e);
  assert.strictEqual(await statusOf(e, late.id), 'queued');
  await e.advance(1);
  assert.strictEqual((await rejection(late.result(GUARD))).code, 'E_RUN_CANCELLED');
  await e.advance(HOUR);
  await probe(e);
  assert.deepStrictEqual(executed, ['first']);
});

test('timeout.finish: a run unfinished after it fails with E_TIMEOUT, and nothing after runs', async (t) => {
  const e = testEngine(t);
  const after = [];
  const job = e.task({
    id: 'timeout-finish',
    timeout: { finish: '1m' },
    run: async (_p, { step }) => {
      await step.run('before', () => 'b');
      await step.sleep('nap', '2m');
      await step.run('after', () => after.push(elapsed(e)));
    },
  });
  const h = await job.trigger();
  await e.idle();
  await e.advance(MIN - 1);
  await probe(e);
  assert.strictEqual(await statusOf(e, h.id), 'waiting');

  await e.advance(1);
  const err = await rejection(h.result(GUARD));
  assert.strictEqual(err.code, 'E_RUN_FAILED');
  assert.strictEqual(err.cause.code, 'E_TIMEOUT');
  const run = await runOf(e, h.id);
  assert.strictEqual(run.status, 'failed');
  assert.strictEqual(run.error.code, 'E_TIMEOUT');
  assert.strictEqual(run.endedAt.getTime(), EPOCH + MIN);

  await e.advance(2 * MIN);
  await probe(e);
  assert.deepStrictEqual(after, []);
  assert.strictEqual(await statusOf(e, h.id), 'failed');
});

test('timeout.finish counts from the first start: retries do not extend it', async (t) => {
  const e = testEngine(t);
  const attempts = [];
  const job = e.task({
    id: 'timeout-finish-retries',
    retry: { maxAttempts: 10, minTimeout: '40s', factor: 1, randomize: false },
    timeout: { finish: '1m' },
    run: async (_p, { attempt }) => {
      attempts.push([attempt, elapsed(e)]);
      throw new Error(`attempt ${attempt} failed`);
    },
  });
  const h = await job.trigger();
  await e.idle();
  await e.advance(40 * SEC);
  assert.deepStrictEqual(attempts, [
    [1, 0],
    [2, 40 * SEC],
  ]);

  await e.advance(20 * SEC);
  const err = await rejection(h.result(GUARD));
  assert.strictEqual(err.cause.code, 'E_TIMEOUT');
  const run = await runOf(e, h.id);
  assert.strictEqual(run.error.code, 'E_TIMEOUT');
  assert.strictEqual(run.endedAt.getTime(), EPOCH + MIN);
  await e.advance(10 * MIN);
  await probe(e);
  assert.strictEqual(attempts.length, 2, 'no attempt after the timeout');
});

// --- cancel -------------------------------------------------------------------------------

test('cancelling a sleeping run: cancelled, result() rejects, nothing after the sleep runs', async (t) => {
  const e = testEngine(t);
  const after = [];
  const job = e.task({
    id: 'cancel-sleeping',
    run: async (_p, { step }) => {
      await step.sleep('nap', '1h');
      await step.run('after', () => after.push('ran'));
    },
  });
  const h = await job.trigger();
  await e.idle();
  assert.strictEqual(await statusOf(e, h.id), 'waiting');

  assert.strictEqual(await e.runs.cancel(h.id), true);
  assert.strictEqual(await statusOf(e, h.id), 'cancelled');
  const err = await rejection(h.result(GUARD));
  assert.ok(err instanceof DurablyError);
  assert.strictEqual(err.code, 'E_RUN_CANCELLED');

  await e.advance(HOUR);
  await probe(e);
  assert.deepStrictEqual(after, []);
  const run = await runOf(e, h.id);
  assert.strictEqual(run.status, 'cancelled');
  assert.strictEqual(stepOf(run, 'after'), undefined);
});

test('cancelling a run waiting for an event: the event later does not resume it', async (t) => {
  const e = testEngine(t);
  const after = [];
  const job = e.task({
    id: 'cancel-waiting',
    run: async (_p, { step }) => {
      const ev = await step.waitForEvent('go', { event: 'cancel-test/go' });
      await step.run('after', () => after.push(ev));
    },
  });
  const h = await job.trigger();
  await e.idle();
  assert.strictEqual(await statusOf(e, h.id), 'waiting');

  assert.strictEqual(await e.runs.cancel(h.id), true);
  assert.strictEqual((await rejection(h.result(GUARD))).code, 'E_RUN_CANCELLED');
  await e.send({ name: 'cancel-test/go', data: {} });
  await e.idle();
  await probe(e);
  assert.deepStrictEqual(after, []);
  const run = await runOf(e, h.id);
  assert.strictEqual(run.status, 'cancelled');
  assert.notStrictEqual(stepOf(run, 'go')?.status, 'completed', 'the event was not delivered to it');
});

test('cancelling a running run aborts ctx.signal and no later step executes', async (t) => {
  const e = testEngine(t);
  const g = gate();
  const starts = counter('starts');
  const reached = gate();
  const after = [];
  let signal;
  const job = e.task({
    id: 'cancel-running',
    run: async (_p, ctx) => {
      signal = ctx.signal;
      await ctx.step.run('first', () => 1);
      starts.hit();
      await g.p;
      reached.open();
      await ctx.step.run('second', () => after.push('second'));
    },
  });
  const h = await job.trigger();
  await starts.reach(1);
  assert.strictEqual(signal.aborted, false);
  const aborted = new Promise((r) => signal.addEventListener('abort', r));

  assert.strictEqual(await h.cancel(), true);
  await aborted;
  assert.strictEqual(signal.aborted, true);
  assert.strictEqual(signal.reason?.code, 'E_RUN_CANCELLED');
  assert.strictEqual((await rejection(h.result(GUARD))).code, 'E_RUN_CANCELLED');

  g.open();
  await reached.p; // the code went on past the cancel point: its next step must not run
  await e.idle();
  assert.deepStrictEqual(after, []);
  const run = await runOf(e, h.id);
  assert.strictEqual(run.status, 'cancelled');
  assert.deepStrictEqual(
    run.steps.map((s) => s.id),
    ['first'],
  );
});

test('handle.cancel() cancels a run that has not started; it never executes', async (t) => {
  const e = testEngine(t);
  const executed = [];
  const job = e.task({ id: 'cancel-handle', run: async () => executed.push('ran') });
  const h = await job.trigger(null, { delay: '1h' });
  assert.strictEqual(await h.cancel(), true);
  assert.strictEqual(await statusOf(e, h.id), 'cancelled');
  await e.advance(HOUR);
  await probe(e);
  assert.deepStrictEqual(executed, []);
  assert.strictEqual((await rejection(h.result(GUARD))).code, 'E_RUN_CANCELLED');
});

test('cancelling a run that has ended resolves false and changes nothing', async (t) => {
  const e = testEngine(t);
  const job = e.task({ id: 'cancel-ended', run: async () => 'done' });
  const h = await job.trigger();
  assert.strictEqual(await h.result(GUARD), 'done');
  assert.strictEqual(await e.runs.cancel(h.id), false);
  assert.strictEqual(await h.cancel(), false);
  const run = await runOf(e, h.id);
  assert.strictEqual(run.status, 'completed');
  assert.strictEqual(run.output, 'done');
});

test(
  'cancelling a run queued behind a concurrency limit lets the next queued run start',
  async (t) => {
    const e = testEngine(t);
    const g = gate();
    const starts = counter('starts');
    const c = e.task({
      id: 'cancel-blocked',
      concurrency: { limit: 1 },
      run: async (p) => {
        starts.hit();
        if (p === 'first') await g.p;
        return p;
      },
    });
    const first = await c.trigger('first');
    await starts.reach(1);
    const doomed = await c.trigger('doomed');
    const next = await c.trigger('next');
    await probe(e);
    assert.strictEqual(await doomed.cancel(), true);
    g.open();
    assert.strictEqual(await first.result(GUARD), 'first');
    assert.strictEqual(await next.result(GUARD), 'next');
  },
);

// --- cancelOn -----------------------------------------------------------------------------

test('cancelOn with match: an event with the same value at the path cancels the run, others do not', async (t) => {
  const e = testEngine(t);
  const shipped = [];
  const job = e.task({
    id: 'cancel-on-match',
    cancelOn: [{ event: 'order/cancelled', match: 'data.orderId' }],
    run: async (p, { step }) => {
      await step.sleep('cool-off', '1d');
      await step.run('ship', () => shipped.push(p.orderId));
    },
  });
  const o1 = await job.trigger({ orderId: 'o1' });
  const o2 = await job.trigger({ orderId: 'o2' });
  await e.idle();
  await e.send({ name: 'order/cancelled', data: { orderId: 'o1' } });

  assert.strictEqual((await rejection(o1.result(GUARD))).code, 'E_RUN_CANCELLED');
  assert.strictEqual(await statusOf(e, o2.id), 'waiting');
  await e.advance(DAY);
  await o2.result(GUARD);
  assert.deepStrictEqual(shipped, ['o2']);
});

test('cancelOn with if: only an event for which the expression holds cancels the run', async (t) => {
  const e = testEngine(t);
  const job = e.task({
    id: 'cancel-on-if',
    cancelOn: [{ event: 'user/deleted', if: 'async.data.userId == event.data.userId && async.data.hard == true' }],
    run: async (_p, { step }) => {
      await step.sleep('wait', '1d');
      return 'finished';
    },
  });
  const h = await job.trigger({ userId: 'u1' });
  await e.idle();
  await e.send({ name: 'user/deleted', data: { userId: 'u1', hard: false } });
  await e.send({ name: 'user/deleted', data: { userId: 'u2', hard: true } });
  assert.strictEqual(await statusOf(e, h.id), 'waiting', 'neither event satisfies the expression');

  await e.send({ name: 'user/deleted', data: { userId: 'u1', hard: true } });
  assert.strictEqual((await rejection(h.result(GUARD))).code, 'E_RUN_CANCELLED');
  assert.strictEqual(await statusOf(e, h.id), 'cancelled');
});

// --- replay and retry ---------------------------------------------------------------------

test('runs.replay starts a new run of the same task with the same payload', async (t) => {
  const e = testEngine(t);
  const seen = [];
  const job = e.task({
    id: 'replay',
    run: async (p) => {
      seen.push(p);
      return p.n * 2;
    },
  });
  const h = await job.trigger({ n: 21 });
  assert.strictEqual(await h.result(GUARD), 42);

  const again = await e.runs.replay(h.id);
  assert.notStrictEqual(again.id, h.id);
  assert.strictEqual(again.taskId, 'replay');
  assert.strictEqual(await again.result(GUARD), 42);
  assert.deepStrictEqual(seen, [{ n: 21 }, { n: 21 }]);
  assert.deepStrictEqual((await runOf(e, again.id)).payload, { n: 21 });
  assert.strictEqual(await statusOf(e, h.id), 'completed', 'the original run is untouched');
});

test('runs.retry continues a failed run from its failed step; completed steps are not re-executed', async (t) => {
  const e = testEngine(t);
  const calls = { charge: 0, notify: 0 };
  let down = true;
  const job = e.task({
    id: 'retry-failed',
    retry: { maxAttempts: 1 },
    run: async (_p, { step }) => {
      const charge = await step.run('charge', () => {
        calls.charge++;
        return 'charged';
      });
      const notify = await step.run('notify', () => {
        calls.notify++;
        if (down) throw new Error('mail server down');
        return 'notified';
      });
      return [charge, notify];
    },
  });
  const h = await job.trigger();
  assert.strictEqual((await rejection(h.result(GUARD))).code, 'E_RUN_FAILED');
  assert.strictEqual(await statusOf(e, h.id), 'failed');

  down = false;
  await e.runs.retry(h.id);
  assert.deepStrictEqual(await h.result(GUARD), ['charged', 'notified']);
  assert.deepStrictEqual(calls, { charge: 1, notify: 2 });
  const run = await runOf(e, h.id);
  assert.strictEqual(run.status, 'completed');
  assert.strictEqual(stepOf(run, 'charge').output, 'charged');
});

test('runs.retry of a run that has not failed rejects with E_BAD_OPTION', async (t) => {
  const e = testEngine(t);
  const job = e.task({ id: 'retry-completed', run: async () => 'ok' });
  const h = await job.trigger();
  await h.result(GUARD);
  await assert.rejects(e.runs.retry(h.id), durablyError('E_BAD_OPTION'));
  assert.strictEqual(await statusOf(e, h.id), 'completed');
});

// --- onFailure ----------------------------------------------------------------------------

test('onFailure is called exactly once, after the last attempt, with the error and the payload', async (t) => {
  const e = testEngine(t);
  const attempts = [];
  const calls = [];
  const job = e.task({
    id: 'on-failure',
    retry: { maxAttempts: 3, minTimeout: '1s', factor: 2, randomize: false },
    run: async (_p, { attempt }) => {
      attempts.push(attempt);
      throw new Error(`attempt ${attempt} failed`);
    },
    onFailure: async (payload, { error, runId }) => {
      calls.push({ payload, message: error.message, runId, at: elapsed(e) });
    },
  });
  const h = await job.trigger({ orderId: 'o7' });
  await e.idle();
  await e.advance(SEC);
  assert.deepStrictEqual(attempts, [1, 2]);
  assert.deepStrictEqual(calls, [], 'not before the last attempt');

  await e.advance(2 * SEC);
  assert.deepStrictEqual(attempts, [1, 2, 3]);
  assert.strictEqual((await rejection(h.result(GUARD))).code, 'E_RUN_FAILED');
  await e.idle();
  assert.deepStrictEqual(calls, [{ payload: { orderId: 'o7' }, message: 'attempt 3 failed', runId: h.id, at: 3 * SEC }]);

  await e.advance(DAY);
  await probe(e);
  assert.strictEqual(calls.length, 1);
});

// --- bad options --------------------------------------------------------------------------

const badOptions = [
  ['concurrency.limit', 'E_BAD_OPTION', { concurrency: { limit: 0 } }],
  ['throttle.period', 'E_BAD_DURATION', { throttle: { limit: 1, period: 'soon' } }],
  ['debounce.mode', 'E_BAD_OPTION', { debounce: { period: '1s', mode: 'x' } }],
  ['singleton.mode', 'E_BAD_OPTION', { singleton: { mode: 'sometimes' } }],
  ['cancelOn[0].event', 'E_BAD_OPTION', { cancelOn: [{ match: 'data.id' }] }],
  ['rateLimit.limit', 'E_BAD_OPTION', { rateLimit: { limit: -1, period: '1m' } }],
  ['concurrency.key', 'E_BAD_OPTION', { concurrency: { limit: 1, key: 42 } }],
  ['throttle.key', 'E_BAD_OPTION', { throttle: { limit: 1, period: '1m', key: { path: 'a' } } }],
];

for (const [option, code, opts] of badOptions) {
  test(`task() rejects a bad ${option} with ${code} naming the option, and registers nothing`, async (t) => {
    const e = testEngine(t);
    assert.throws(() => e.task({ id: 'bad-options', run: async () => null, ...opts }), durablyError(code, option));
    await assert.rejects(e.trigger('bad-options'), durablyError('E_UNKNOWN_TASK'));
  });
}
