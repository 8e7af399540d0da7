// Durable waits and events (DESIGN §1.2, §1.3, §1.10, §3.4), through durably/testing: a
// manual clock at a fixed epoch, so every deadline is checked to the millisecond and days of
// workflow take milliseconds. Nothing here sleeps in real time; `result({ timeout })` only
// guards against a hang.
const { test } = require('node:test');
const assert = require('node:assert');
const { createTestEngine } = require('durably/testing');
const { DurablyError, NonRetriableError } = require('durably');

/** 2024-01-01T00:00:00Z: every test engine starts here. */
const EPOCH = Date.UTC(2024, 0, 1);
const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
/** Real-time guard for `result()`: the run must already be done, this only stops a hang. */
const GUARD = { timeout: '2s' };

/** A fresh in-memory engine at EPOCH, closed when the test ends. */
function testEngine(t) {
  const e = createTestEngine({ now: EPOCH });
  t.after(() => e.close());
  return e;
}

async function runOf(e, id) {
  const run = await e.runs.get(id);
  assert.ok(run, `run ${id} exists`);
  return run;
}

function stepOf(run, id) {
  return run.steps.find((s) => s.id === id);
}

async function statusOf(e, id) {
  return (await runOf(e, id)).status;
}

/** All runs of a task, oldest first. */
async function runsOfTask(e, taskId) {
  const { runs } = await e.runs.list({ taskId, limit: 1000 });
  return runs.reverse();
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

// --- sleep ----------------------------------------------------------------------------------

test('sleep wakes exactly at its deadline under the manual clock, and not 1 ms before', async (t) => {
  const e = testEngine(t);
  const after = [];
  const wf = e.task({
    id: 'sleep-3-days',
    run: async (_p, { step }) => {
      await step.run('before', () => 'b');
      await step.sleep('nap', '3 days');
      return step.run('after', () => {
        after.push(e.now().getTime());
        return 'a';
      });
    },
  });
  const h = await wf.trigger();
  await e.idle();

  let run = await runOf(e, h.id);
  assert.strictEqual(run.status, 'waiting');
  const nap = stepOf(run, 'nap');
  assert.strictEqual(nap.status, 'waiting');
  assert.ok(nap.wakeAt instanceof Date);
  assert.strictEqual(nap.wakeAt.getTime(), EPOCH + 3 * DAY);

  await e.advance(3 * DAY - 1);
  run = await runOf(e, h.id);
  assert.strictEqual(run.status, 'waiting', 'woke 1 ms early');
  assert.strictEqual(stepOf(run, 'after'), undefined);
  assert.deepStrictEqual(after, []);

  await e.advance(1);
  assert.strictEqual(await h.result(GUARD), 'a');
  run = await runOf(e, h.id);
  assert.strictEqual(run.status, 'completed');
  assert.strictEqual(stepOf(run, 'nap').status, 'completed');
  assert.deepStrictEqual(after, [EPOCH + 3 * DAY], 'the step after the sleep ran once, at the deadline');
});

test('sleepUntil wakes at the given Date (and accepts an ISO string)', async (t) => {
  const e = testEngine(t);
  const wf = e.task({
    id: 'sleep-until',
    run: async (_p, { step }) => {
      await step.sleepUntil('noon', new Date(EPOCH + 12 * HOUR));
      await step.sleepUntil('evening', new Date(EPOCH + 18 * HOUR).toISOString());
      return 'done';
    },
  });
  const h = await wf.trigger();
  await e.idle();
  assert.strictEqual(stepOf(await runOf(e, h.id), 'noon').wakeAt.getTime(), EPOCH + 12 * HOUR);

  await e.setTime(EPOCH + 12 * HOUR - 1);
  assert.strictEqual(await statusOf(e, h.id), 'waiting');
  await e.setTime(EPOCH + 12 * HOUR);
  let run = await runOf(e, h.id);
  assert.strictEqual(stepOf(run, 'noon').status, 'completed');
  assert.strictEqual(stepOf(run, 'evening').wakeAt.getTime(), EPOCH + 18 * HOUR);
  assert.strictEqual(run.status, 'waiting');

  await e.advance(6 * HOUR - 1);
  assert.strictEqual(await statusOf(e, h.id), 'waiting');
  await e.advance(1);
  assert.strictEqual(await h.result(GUARD), 'done');
});

test('a sleepUntil in the past resolves at once', async (t) => {
  const e = testEngine(t);
  const wf = e.task({
    id: 'sleep-until-past',
    run: async (_p, { step }) => {
      await step.sleepUntil('yesterday', new Date(EPOCH - DAY));
      return 'went on';
    },
  });
  const h = await wf.trigger();
  await e.idle();
  assert.strictEqual(await h.result(GUARD), 'went on');
});

// --- send() and `on` ----------------------------------------------------------------------

test('send() of one event starts a run of every subscribed task, with ctx.event and payload = event.data', async (t) => {
  const e = testEngine(t);
  const seen = [];
  const subscriber = (id) =>
    e.task({
      id,
      on: 'user/signed-up',
      run: async (payload, ctx) => {
        seen.push({ task: id, payload, event: ctx.event });
        return payload.email;
      },
    });
  subscriber('welcome-email');
  subscriber('crm-sync');
  const bystander = e.task({ id: 'bystander', on: 'user/deleted', run: async () => 'no' });

  const { ids } = await e.send({ name: 'user/signed-up', data: { email: 'a@b.c' } });
  assert.strictEqual(ids.length, 1);
  assert.match(ids[0], /\S/);
  await e.idle();

  const welcome = await runsOfTask(e, 'welcome-email');
  const crm = await runsOfTask(e, 'crm-sync');
  assert.strictEqual(welcome.length, 1);
  assert.strictEqual(crm.length, 1);
  assert.deepStrictEqual(await runsOfTask(e, bystander.id), []);
  for (const r of [welcome[0], crm[0]]) {
    assert.strictEqual(r.status, 'completed');
    assert.strictEqual(r.output, 'a@b.c');
    assert.deepStrictEqual(r.payload, { email: 'a@b.c' });
  }

  const expected = { id: ids[0], name: 'user/signed-up', data: { email: 'a@b.c' }, ts: EPOCH };
  assert.deepStrictEqual(seen.map((s) => s.task).sort(), ['crm-sync', 'welcome-email']);
  for (const s of seen) {
    assert.deepStrictEqual(s.payload, { email: 'a@b.c' });
    assert.deepStrictEqual(s.event, expected, `${s.task}'s ctx.event`);
  }
  assert.deepStrictEqual((await runOf(e, welcome[0].id)).event, expected, 'runs.get shows the trigger event');
});

test('an event sent again with the same id is deduplicated: no second runs', async (t) => {
  const e = testEngine(t);
  let calls = 0;
  e.task({
    id: 'dedup-sub',
    on: 'order/placed',
    run: async () => {
      calls++;
    },
  });
  const first = await e.send({ id: 'evt-order-1', name: 'order/placed', data: { n: 1 } });
  await e.idle();
  const again = await e.send({ id: 'evt-order-1', name: 'order/placed', data: { n: 2 } });
  const inBatch = await e.send([
    { id: 'evt-order-1', name: 'order/placed', data: { n: 3 } },
    { id: 'evt-order-2', name: 'order/placed', data: { n: 4 } },
    { id: 'evt-order-2', name: 'order/placed', data: { n: 5 } },
  ]);
  await e.idle();

  assert.deepStrictEqual(first.ids, ['evt-order-1']);
  assert.deepStrictEqual(again.ids, ['evt-order-1'], 'the duplicate resolves with its id');
  assert.deepStrictEqual(inBatch.ids, ['evt-order-1', 'evt-order-2', 'evt-order-2']);
  const runs = await runsOfTask(e, 'dedup-sub');
  assert.deepStrictEqual(
    runs.map((r) => r.payload),
    [{ n: 1 }, { n: 4 }],
    'one run per event id, with the data of its first send',
  );
  assert.strictEqual(calls, 2);
});

test("on: { event, if } starts a run only for events that pass the filter", async (t) => {
  const e = testEngine(t);
  e.task({
    id: 'big-orders',
    on: { event: 'order/placed', if: "event.data.amount > 100 && event.data.currency == 'EUR'" },
    run: async (p) => p.amount,
  });
  await e.send([
    { name: 'order/placed', data: { amount: 50, currency: 'EUR' } },
    { name: 'order/placed', data: { amount: 500, currency: 'EUR' } },
    { name: 'order/placed', data: { amount: 500, currency: 'USD' } },
    { name: 'order/placed', data: { currency: 'EUR' } },
    { name: 'order/placed', data: { amount: 101, currency: 'EUR' } },
  ]);
  await e.idle();
  const runs = await runsOfTask(e, 'big-orders');
  assert.deepStrictEqual(
    runs.map((r) => r.output),
    [500, 101],
  );
});

test('on: [a, b] starts a run for either event', async (t) => {
  const e = testEngine(t);
  e.task({
    id: 'audit',
    on: ['user/signed-up', { event: 'user/deleted', if: 'event.data.hard == true' }],
    run: async (_p, { event }) => event.name,
  });
  await e.send([
    { name: 'user/signed-up', data: {} },
    { name: 'user/deleted', data: { hard: false } },
    { name: 'user/deleted', data: { hard: true } },
    { name: 'user/renamed', data: {} },
  ]);
  await e.idle();
  const runs = await runsOfTask(e, 'audit');
  assert.deepStrictEqual(
    runs.map((r) => r.output),
    ['user/signed-up', 'user/deleted'],
  );
});

// --- waitForEvent ---------------------------------------------------------------------------

/** A run triggered with `{ userId }` that waits for 'order/paid' of the same user. */
function paidWaiter(e, id, opts = {}) {
  return e.task({
    id,
    run: async (_p, { step }) => step.waitForEvent('paid', { event: 'order/paid', match: 'data.userId', timeout: '1d', ...opts }),
  });
}

test("waitForEvent with match resumes only on an event whose value at the path equals the run's", async (t) => {
  const e = testEngine(t);
  const wf = paidWaiter(e, 'wait-match');
  const h1 = await wf.trigger({ userId: 'u1' });
  const h2 = await wf.trigger({ userId: 'u2' });
  await e.idle();
  assert.strictEqual(await statusOf(e, h1.id), 'waiting');
  const paid = stepOf(await runOf(e, h1.id), 'paid');
  assert.strictEqual(paid.status, 'waiting');
  assert.strictEqual(paid.wakeAt.getTime(), EPOCH + DAY, 'the wait times out after 1 day');

  await e.advance(MIN);
  await e.send({ name: 'order/paid', data: { userId: 'u3', amount: 1 } });
  await e.send({ name: 'order/paid', data: { amount: 1 } });
  await e.send({ name: 'order/other', data: { userId: 'u1' } });
  await e.idle();
  assert.strictEqual(await statusOf(e, h1.id), 'waiting', 'a non-matching event does not resume');
  assert.strictEqual(await statusOf(e, h2.id), 'waiting');

  const { ids } = await e.send({ name: 'order/paid', data: { userId: 'u1', amount: 42 } });
  await e.idle();
  assert.deepStrictEqual(await h1.result(GUARD), { id: ids[0], name: 'order/paid', data: { userId: 'u1', amount: 42 }, ts: EPOCH + MIN });
  assert.strictEqual(await statusOf(e, h2.id), 'waiting', "u1's event leaves u2 waiting");
});

test("waitForEvent's if filters the incoming event (async) against the run's own (event)", async (t) => {
  const e = testEngine(t);
  const wf = e.task({
    id: 'wait-if',
    run: async (_p, { step }) =>
      step.waitForEvent('big', {
        event: 'order/paid',
        if: 'async.data.amount > 100 && async.data.userId == event.data.userId',
        timeout: '1d',
      }),
  });
  const h = await wf.trigger({ userId: 'u1' });
  await e.idle();
  await e.send({ name: 'order/paid', data: { userId: 'u1', amount: 100 } });
  await e.send({ name: 'order/paid', data: { userId: 'u2', amount: 500 } });
  await e.send({ name: 'order/paid', data: { userId: 'u1', amount: '500' } });
  await e.idle();
  assert.strictEqual(await statusOf(e, h.id), 'waiting', 'no event passed the filter');

  await e.send({ name: 'order/paid', data: { userId: 'u1', amount: 100.5 } });
  await e.idle();
  const ev = await h.result(GUARD);
  assert.deepStrictEqual(ev.data, { userId: 'u1', amount: 100.5 });
});

test('waitForEvent on several event names resolves with whichever comes first', async (t) => {
  const e = testEngine(t);
  const wf = e.task({
    id: 'wait-any',
    run: async (_p, { step }) => {
      const ev = await step.waitForEvent('outcome', { event: ['order/paid', 'order/cancelled'], match: 'data.orderId', timeout: '7d' });
      return ev.name;
    },
  });
  const h1 = await wf.trigger({ orderId: 'o1' });
  const h2 = await wf.trigger({ orderId: 'o2' });
  await e.idle();

  await e.send({ name: 'order/cancelled', data: { orderId: 'o1' } });
  await e.idle();
  assert.strictEqual(await h1.result(GUARD), 'order/cancelled');
  await e.send({ name: 'order/paid', data: { orderId: 'o1' } });
  await e.idle();
  const run1 = await runOf(e, h1.id);
  assert.strictEqual(stepOf(run1, 'outcome').output.name, 'order/cancelled', 'a later event changes nothing');

  // Both in one send: the first in order wins.
  await e.send([
    { name: 'order/paid', data: { orderId: 'o2' } },
    { name: 'order/cancelled', data: { orderId: 'o2' } },
  ]);
  await e.idle();
  assert.strictEqual(await h2.result(GUARD), 'order/paid');
});

/** Like paidWaiter, but returns `{ got }`, so that these tests do not depend on a bare null output (tested on its own below). */
function wrappedPaidWaiter(e, id, opts = {}) {
  return e.task({
    id,
    run: async (_p, { step }) => ({ got: await step.waitForEvent('paid', { event: 'order/paid', match: 'data.userId', timeout: '1d', ...opts }) }),
  });
}

test('waitForEvent resolves with null when its timeout passes, exactly at the deadline', async (t) => {
  const e = testEngine(t);
  const wf = wrappedPaidWaiter(e, 'wait-timeout', { timeout: '2h' });
  const h = await wf.trigger({ userId: 'u1' });
  await e.idle();
  await e.advance(2 * HOUR - 1);
  assert.strictEqual(await statusOf(e, h.id), 'waiting');
  await e.advance(1);
  assert.deepStrictEqual(await h.result(GUARD), { got: null });
  assert.strictEqual(await statusOf(e, h.id), 'completed');

  // An event after the timeout is ignored.
  await e.send({ name: 'order/paid', data: { userId: 'u1' } });
  await e.idle();
  const run = await runOf(e, h.id);
  assert.deepStrictEqual(run.output, { got: null });
  assert.strictEqual(stepOf(run, 'paid').status, 'completed');
});

test('a run that returns null (a timed-out wait) resolves result() with null, not undefined', async (t) => {
  const e = testEngine(t);
  const wf = paidWaiter(e, 'null-output', { timeout: '1h' });
  const h = await wf.trigger({ userId: 'u1' });
  await e.advance(HOUR);
  assert.strictEqual((await runOf(e, h.id)).status, 'completed');
  assert.strictEqual(await h.result(GUARD), null);
  assert.strictEqual((await runOf(e, h.id)).output, null);
});

/** Sleeps an hour, then waits for 'order/paid' of its user. */
function sleepThenWait(e, id, since) {
  return e.task({
    id,
    run: async (_p, { step }) => {
      await step.sleep('first', '1h');
      return step.waitForEvent('paid', { event: 'order/paid', match: 'data.userId', timeout: '1d', ...(since ? { since } : {}) });
    },
  });
}

test('an event sent after the run started but before it reached waitForEvent is matched (no race)', async (t) => {
  const e = testEngine(t);
  const wf = sleepThenWait(e, 'early-event');
  const h = await wf.trigger({ userId: 'u1' });
  await e.idle();
  await e.advance(10 * MIN);
  const { ids } = await e.send({ name: 'order/paid', data: { userId: 'u1' } });
  await e.idle();
  assert.strictEqual(stepOf(await runOf(e, h.id), 'paid'), undefined, 'the run has not reached the wait yet');

  await e.advance(50 * MIN);
  const ev = await h.result(GUARD);
  assert.ok(ev, 'the early event resolves the wait');
  assert.strictEqual(ev.id, ids[0]);
  assert.strictEqual(ev.ts, EPOCH + 10 * MIN);
});

test("since: 'now' does not match an event that came before the wait", async (t) => {
  const e = testEngine(t);
  const wf = sleepThenWait(e, 'since-now', 'now');
  const h = await wf.trigger({ userId: 'u1' });
  await e.idle();
  await e.advance(10 * MIN);
  await e.send({ name: 'order/paid', data: { userId: 'u1', n: 'early' } });
  await e.advance(50 * MIN);
  assert.strictEqual(await statusOf(e, h.id), 'waiting');
  assert.strictEqual(stepOf(await runOf(e, h.id), 'paid').status, 'waiting');

  await e.advance(MIN);
  await e.send({ name: 'order/paid', data: { userId: 'u1', n: 'late' } });
  await e.idle();
  assert.strictEqual((await h.result(GUARD)).data.n, 'late');
});

test('an event sent before the run was created is not matched', async (t) => {
  const e = testEngine(t);
  const wf = wrappedPaidWaiter(e, 'before-creation', { timeout: '1h' });
  await e.send({ name: 'order/paid', data: { userId: 'u1' } });
  await e.advance(1);
  const h = await wf.trigger({ userId: 'u1' });
  await e.advance(HOUR);
  assert.deepStrictEqual(await h.result(GUARD), { got: null });
});

test('two waits for the same event name in a row get two different events', async (t) => {
  const e = testEngine(t);
  const wf = e.task({
    id: 'two-ticks',
    run: async (_p, { step }) => {
      await step.sleep('s', '1h');
      const a = await step.waitForEvent('a', { event: 'tick', timeout: '1d' });
      const b = await step.waitForEvent('b', { event: 'tick', timeout: '1d' });
      return [a && a.data.n, b && b.data.n];
    },
  });
  const h = await wf.trigger();
  await e.idle();
  await e.send({ name: 'tick', data: { n: 1 } });
  await e.advance(1);
  await e.send({ name: 'tick', data: { n: 2 } });
  await e.advance(HOUR);
  assert.deepStrictEqual(await h.result(GUARD), [1, 2]);
});

test('one event resumes every run waiting for it', async (t) => {
  const e = testEngine(t);
  const wf = e.task({
    id: 'broadcast-wait',
    run: async (p, { step }) => {
      const ev = await step.waitForEvent('go', { event: 'release/published', timeout: '1d' });
      return `${p.n}:${ev.data.version}`;
    },
  });
  const hs = await Promise.all([1, 2, 3].map((n) => wf.trigger({ n })));
  await e.idle();
  await e.send({ name: 'release/published', data: { version: '1.0' } });
  await e.idle();
  assert.deepStrictEqual(await Promise.all(hs.map((h) => h.result(GUARD))), ['1:1.0', '2:1.0', '3:1.0']);
});

// --- sendEvent ------------------------------------------------------------------------------

test('step.sendEvent sends once: a later step failing and being retried does not send again', async (t) => {
  const e = testEngine(t);
  let flaky = 0;
  const received = [];
  e.task({
    id: 'on-invoice',
    on: 'invoice/created',
    run: async (p, { event }) => {
      received.push(event.id);
      return p.n;
    },
  });
  const wf = e.task({
    id: 'send-then-fail',
    retry: { maxAttempts: 3, minTimeout: '1s', randomize: false },
    run: async (_p, { step }) => {
      const sent = await step.sendEvent('notify', [
        { name: 'invoice/created', data: { n: 1 } },
        { name: 'invoice/created', data: { n: 2 } },
      ]);
      await step.run('flaky', () => {
        flaky++;
        if (flaky === 1) throw new Error('transient');
        return 'ok';
      });
      return sent;
    },
  });
  const h = await wf.trigger();
  await e.idle();
  assert.strictEqual(flaky, 1);
  assert.strictEqual(await statusOf(e, h.id), 'delayed', 'the flaky step waits for its retry');

  await e.advance('1s');
  const sent = await h.result(GUARD);
  assert.strictEqual(flaky, 2, 'the run was replayed');
  assert.strictEqual(sent.ids.length, 2);
  await e.idle();
  const runs = await runsOfTask(e, 'on-invoice');
  assert.deepStrictEqual(runs.map((r) => r.payload).sort((a, b) => a.n - b.n), [{ n: 1 }, { n: 2 }], 'one run per sent event');
  assert.deepStrictEqual(received.sort(), [...sent.ids].sort(), 'the subscribed task saw exactly the sent events, once each');
  assert.deepStrictEqual(stepOf(await runOf(e, h.id), 'notify').output, sent);
});

test('step.sendEvent resumes a run waiting for that event', async (t) => {
  const e = testEngine(t);
  const waiter = paidWaiter(e, 'sendevent-waiter');
  const payer = e.task({
    id: 'payer',
    run: async (p, { step }) => step.sendEvent('pay', { name: 'order/paid', data: { userId: p.userId } }),
  });
  const w = await waiter.trigger({ userId: 'u9' });
  await e.idle();
  const sent = await (await payer.trigger({ userId: 'u9' })).result(GUARD);
  await e.idle();
  const ev = await w.result(GUARD);
  assert.strictEqual(ev.id, sent.ids[0]);
});

// --- invoke ---------------------------------------------------------------------------------

test('step.invoke starts a child run and resolves with its output', async (t) => {
  const e = testEngine(t);
  const child = e.task({
    id: 'double',
    run: async (p, { step }) => {
      await step.sleep('think', '5m');
      return p.n * 2;
    },
  });
  const parent = e.task({
    id: 'invoke-parent',
    run: async (p, { step }) => {
      const doubled = await step.invoke('double-it', child, { n: p.n });
      return { doubled };
    },
  });
  const h = await parent.trigger({ n: 21 });
  await e.idle();
  const waiting = await runOf(e, h.id);
  assert.strictEqual(waiting.status, 'waiting');
  const inv = stepOf(waiting, 'double-it');
  assert.strictEqual(inv.status, 'waiting');
  assert.ok(inv.child, 'the step names its child run');
  const kid = await runOf(e, inv.child);
  assert.strictEqual(kid.taskId, 'double');
  assert.deepStrictEqual(kid.payload, { n: 21 });
  assert.deepStrictEqual(kid.parent, { run: h.id, key: 'double-it' });

  await e.advance('5m');
  assert.deepStrictEqual(await h.result(GUARD), { doubled: 42 });
  assert.strictEqual(await statusOf(e, inv.child), 'completed');
  assert.strictEqual((await runsOfTask(e, 'double')).length, 1, 'the replay did not start a second child');
});

/** A child that fails for good, and a parent that either catches its invoke error or not. */
function failingChild(e, catchIt) {
  const child = e.task({
    id: `declines-${catchIt}`,
    run: async () => {
      throw new NonRetriableError('card declined');
    },
  });
  return e.task({
    id: `invoke-failing-${catchIt}`,
    retry: { maxAttempts: 1 },
    run: async (_p, { step }) => {
      if (!catchIt) return step.invoke('charge', child, {});
      try {
        await step.invoke('charge', child, {});
        return 'not reached';
      } catch (err) {
        return { name: err.name, code: err.code, message: err.message, isDurablyError: err instanceof DurablyError, cause: err.cause };
      }
    },
  });
}

test("step.invoke of a failing child throws E_RUN_FAILED carrying the child's error", async (t) => {
  const e = testEngine(t);
  const parent = failingChild(e, true);
  const h = await parent.trigger();
  await e.idle();
  const caught = await h.result(GUARD);
  assert.strictEqual(caught.code, 'E_RUN_FAILED');
  assert.strictEqual(caught.name, 'DurablyError');
  assert.ok(caught.message.includes('card declined'), caught.message);
});

test("step.invoke's error is a DurablyError instance whose cause is the child's stored error", async (t) => {
  const e = testEngine(t);
  const parent = failingChild(e, true);
  const h = await parent.trigger();
  await e.idle();
  const caught = await h.result(GUARD);
  assert.strictEqual(caught.isDurablyError, true, 'instanceof DurablyError');
  assert.ok(caught.cause, 'the error has a cause');
  assert.strictEqual(caught.cause.name, 'NonRetriableError');
  assert.strictEqual(caught.cause.message, 'card declined');
});

test("an uncaught step.invoke failure fails the parent with the child's error", async (t) => {
  const e = testEngine(t);
  const parent = failingChild(e, false);
  const h = await parent.trigger();
  await e.idle();
  const err = await rejection(h.result(GUARD));
  assert.ok(err instanceof DurablyError);
  assert.strictEqual(err.code, 'E_RUN_FAILED');
  assert.ok(err.message.includes('card declined'), err.message);
  const run = await runOf(e, h.id);
  assert.strictEqual(run.status, 'failed');
  assert.strictEqual(run.attempts, 1);
  assert.strictEqual(stepOf(run, 'charge').status, 'failed');
});

// --- tokens ---------------------------------------------------------------------------------

/** createToken → hand it out (into `issued`) → optional sleep → waitForToken. */
function approval(e, id, { timeout = '1d', sleep } = {}) {
  const issued = [];
  const wf = e.task({
    id,
    run: async (_p, { step }) => {
      const token = await step.createToken('approval-token', { timeout });
      await step.run('email-link', () => {
        issued.push(token);
        return token.id;
      });
      if (sleep) await step.sleep('pause', sleep);
      return { data: await step.waitForToken('approval', token) };
    },
  });
  return { wf, issued };
}

test('waitForToken resolves with the data given to tokens.complete', async (t) => {
  const e = testEngine(t);
  const { wf, issued } = approval(e, 'token-approve');
  const h = await wf.trigger();
  await e.idle();
  assert.strictEqual(issued.length, 1);
  const token = issued[0];
  assert.match(token.id, /\S/);
  assert.strictEqual(token.expiresAt, EPOCH + DAY);
  assert.strictEqual(await statusOf(e, h.id), 'waiting');

  await e.advance(HOUR);
  assert.deepStrictEqual(await e.tokens.complete(token.id, { approved: true, by: 'ada' }), { resumed: true });
  await e.idle();
  assert.deepStrictEqual(await h.result(GUARD), { data: { approved: true, by: 'ada' } });
  assert.strictEqual(issued.length, 1, 'the token was handed out once');
});

test('tokens.complete before the run reaches waitForToken is kept for it', async (t) => {
  const e = testEngine(t);
  const { wf, issued } = approval(e, 'token-early', { sleep: '1h' });
  const h = await wf.trigger();
  await e.idle();
  assert.deepStrictEqual(await e.tokens.complete(issued[0], 'yes'), { resumed: false }, 'nobody waits yet');
  await e.idle();
  assert.strictEqual(await statusOf(e, h.id), 'waiting', 'the run still sleeps');

  await e.advance(HOUR);
  assert.deepStrictEqual(await h.result(GUARD), { data: 'yes' });
});

test('waitForToken resolves with null when the token expires', async (t) => {
  const e = testEngine(t);
  const { wf, issued } = approval(e, 'token-expire', { timeout: '2h' });
  const h = await wf.trigger();
  await e.idle();
  assert.strictEqual(stepOf(await runOf(e, h.id), 'approval').wakeAt.getTime(), EPOCH + 2 * HOUR);
  await e.advance(2 * HOUR - 1);
  assert.strictEqual(await statusOf(e, h.id), 'waiting');
  await e.advance(1);
  assert.deepStrictEqual(await h.result(GUARD), { data: null });

  assert.deepStrictEqual(await e.tokens.complete(issued[0].id, 'too late'), { resumed: false });
  await e.idle();
  assert.deepStrictEqual((await runOf(e, h.id)).output, { data: null });
});

// --- parallel waits -------------------------------------------------------------------------

function sleepAndWait(e, id) {
  return e.task({
    id,
    run: async (_p, { step }) => {
      const [slept, ev] = await Promise.all([step.sleep('a', '1h'), step.waitForEvent('b', { event: 'go', timeout: '1d' })]);
      return { slept: slept ?? null, got: ev && ev.data };
    },
  });
}

test('Promise.all of a sleep and an event wait: the event first, then the sleep', async (t) => {
  const e = testEngine(t);
  const h = await sleepAndWait(e, 'all-event-first').trigger();
  await e.idle();
  let run = await runOf(e, h.id);
  assert.deepStrictEqual(run.steps.map((s) => [s.id, s.status]).sort(), [['a', 'waiting'], ['b', 'waiting']], 'both waits are parked at once');

  await e.advance(10 * MIN);
  await e.send({ name: 'go', data: 1 });
  await e.idle();
  run = await runOf(e, h.id);
  assert.strictEqual(run.status, 'waiting', 'still sleeping');
  assert.strictEqual(stepOf(run, 'b').status, 'completed');
  assert.strictEqual(stepOf(run, 'a').wakeAt.getTime(), EPOCH + HOUR, 'the sleep keeps its deadline');

  await e.advance(50 * MIN - 1);
  assert.strictEqual(await statusOf(e, h.id), 'waiting');
  await e.advance(1);
  assert.deepStrictEqual(await h.result(GUARD), { slept: null, got: 1 });
});

test('Promise.all of a sleep and an event wait: the sleep first, then the event', async (t) => {
  const e = testEngine(t);
  const h = await sleepAndWait(e, 'all-sleep-first').trigger();
  await e.idle();
  await e.advance(HOUR);
  let run = await runOf(e, h.id);
  assert.strictEqual(run.status, 'waiting');
  assert.strictEqual(stepOf(run, 'a').status, 'completed');
  assert.strictEqual(stepOf(run, 'b').wakeAt.getTime(), EPOCH + DAY, 'the event wait keeps its timeout');

  await e.send({ name: 'go', data: 2 });
  await e.idle();
  assert.deepStrictEqual(await h.result(GUARD), { slept: null, got: 2 });
});

test('Promise.race of a sleep and an event wait moves on when the event comes first', async (t) => {
  const e = testEngine(t);
  let afterRuns = 0;
  const wf = e.task({
    id: 'race',
    run: async (_p, { step }) => {
      const winner = await Promise.race([step.sleep('timer', '1h').then(() => 'timer'), step.waitForEvent('go', { event: 'go' }).then(() => 'event')]);
      await step.run('after', () => {
        afterRuns++;
        return winner;
      });
      return winner;
    },
  });
  const h = await wf.trigger();
  await e.idle();
  await e.advance(MIN);
  await e.send({ name: 'go' });
  await e.idle();
  const run = await runOf(e, h.id);
  assert.strictEqual(run.status, 'completed', `the run moved on without waiting for the losing sleep (status ${run.status})`);
  assert.strictEqual(run.output, 'event');

  // The losing sleep's deadline passing later changes nothing.
  await e.advance(2 * HOUR);
  assert.strictEqual((await runOf(e, h.id)).output, 'event');
  assert.strictEqual(afterRuns, 1);
});

// --- the seed's workflow ------------------------------------------------------------------

test('the 3-day onboarding flow runs end to end in well under a second of real time', async (t) => {
  const t0 = process.hrtime.bigint();
  const e = testEngine(t);
  const sent = [];
  const sendEmail = (to, template) => sent.push(`${template} → ${to} @ day ${(e.now().getTime() - EPOCH) / DAY}`);
  e.task({
    id: 'onboarding-sequence',
    on: 'user/signed-up',
    run: async (data, { step }) => {
      await step.run('send-welcome', () => sendEmail(data.email, 'welcome'));
      await step.sleep('wait-3-days', '3 days');
      const confirmed = await step.waitForEvent('wait-confirmed', { event: 'user/confirmed', match: 'data.email', timeout: '7d' });
      if (confirmed) await step.run('send-tips', () => sendEmail(data.email, 'tips'));
      else await step.run('send-nudge', () => sendEmail(data.email, 'nudge'));
      return { confirmed: confirmed !== null };
    },
  });

  await e.send([
    { name: 'user/signed-up', data: { email: 'ada@example.com' } },
    { name: 'user/signed-up', data: { email: 'bob@example.com' } },
  ]);
  await e.idle();
  assert.deepStrictEqual(sent, ['welcome → ada@example.com @ day 0', 'welcome → bob@example.com @ day 0']);

  await e.advance('3 days');
  await e.advance('1 day');
  await e.send({ name: 'user/confirmed', data: { email: 'ada@example.com' } });
  await e.idle();
  await e.advance('6 days');
  const runs = await runsOfTask(e, 'onboarding-sequence');
  const byEmail = Object.fromEntries(runs.map((r) => [r.payload.email, r]));
  assert.strictEqual(byEmail['ada@example.com'].status, 'completed');
  assert.deepStrictEqual(byEmail['ada@example.com'].output, { confirmed: true });
  assert.strictEqual(byEmail['bob@example.com'].status, 'completed');
  assert.deepStrictEqual(byEmail['bob@example.com'].output, { confirmed: false });
  assert.deepStrictEqual(sent.slice(2), ['tips → ada@example.com @ day 4', 'nudge → bob@example.com @ day 10']);

  const elapsedMs = Number(process.hrtime.bigint() - t0) / 1e6;
  assert.ok(elapsedMs < 1000, `10 days of workflow took ${elapsedMs.toFixed(1)} ms of real time`);
});

// --- bad input ------------------------------------------------------------------------------

test('waitForEvent with a malformed if fails with E_BAD_OPTION naming the column', async (t) => {
  const e = testEngine(t);
  const wf = e.task({
    id: 'bad-if',
    run: async (_p, { step }) => {
      try {
        await step.waitForEvent('w', { event: 'x', if: 'async.data.amount >> 100' });
        return 'not reached';
      } catch (err) {
        return { isDurablyError: err instanceof DurablyError, code: err.code, message: err.message };
      }
    },
  });
  const h = await wf.trigger();
  await e.idle();
  const res = await h.result(GUARD);
  assert.strictEqual(res.isDurablyError, true);
  assert.strictEqual(res.code, 'E_BAD_OPTION');
  assert.match(res.message, /column \d+/);
  assert.ok(res.message.includes('async.data.amount >> 100'), res.message);
});

test('step calls with bad arguments reject their promise rather than throw synchronously', async (t) => {
  const e = testEngine(t);
  const child = e.task({ id: 'bad-args-child', run: async () => 1 });
  const wf = e.task({
    id: 'bad-args',
    run: async (_p, { step }) => {
      const calls = {
        'waitForEvent if': () => step.waitForEvent('w', { event: 'x', if: 'a = 1' }),
        'waitForEvent no event': () => step.waitForEvent('w2', {}),
        'sleep duration': () => step.sleep('s', 'forever'),
        'sleepUntil date': () => step.sleepUntil('u', 'not a date'),
        'invoke payload': () => step.invoke('i', child, { n: 1n }),
        'waitForToken token': () => step.waitForToken('k', null),
        'sendEvent name': () => step.sendEvent('e', { name: '' }),
      };
      const out = {};
      for (const [what, call] of Object.entries(calls)) {
        let p;
        try {
          p = call();
        } catch (err) {
          out[what] = `threw ${err.code} synchronously`;
          continue;
        }
        out[what] = await p.then(
          () => 'resolved',
          (err) => `rejected ${err.code}`,
        );
      }
      return out;
    },
  });
  const h = await wf.trigger();
  await e.idle();
  assert.deepStrictEqual(await h.result(GUARD), {
    'waitForEvent if': 'rejected E_BAD_OPTION',
    'waitForEvent no event': 'rejected E_BAD_OPTION',
    'sleep duration': 'rejected E_BAD_DURATION',
    'sleepUntil date': 'rejected E_BAD_OPTION',
    'invoke payload': 'rejected E_PAYLOAD_NOT_JSON',
    'waitForToken token': 'rejected E_BAD_OPTION',
    'sendEvent name': 'rejected E_BAD_OPTION',
  });
});

test("task({ on: { event, if } }) with a malformed if throws E_BAD_OPTION at task() time", (t) => {
  const e = testEngine(t);
  assert.throws(
    () => e.task({ id: 'bad-on-if', on: { event: 'x', if: 'a = 1' }, run: async () => {} }),
    (err) => err instanceof DurablyError && err.code === 'E_BAD_OPTION' && /column \d+/.test(err.message),
  );
  assert.throws(
    () => e.task({ id: 'bad-on-if-list', on: ['ok', { event: 'y', if: 'event.data.n >' }], run: async () => {} }),
    (err) => err instanceof DurablyError && err.code === 'E_BAD_OPTION',
  );
});

test('send() of an event without a name rejects with E_BAD_OPTION and stores nothing', async (t) => {
  const e = testEngine(t);
  e.task({ id: 'named-sub', on: 'ok/evt', run: async (p) => p });
  for (const bad of [{}, { name: '' }, [{ id: 'evt-1', name: 'ok/evt', data: 1 }, { name: '' }], { name: 7 }, null]) {
    const err = await rejection(e.send(bad));
    assert.ok(err instanceof DurablyError, `send(${JSON.stringify(bad)}) rejects with a DurablyError`);
    assert.strictEqual(err.code, 'E_BAD_OPTION', JSON.stringify(bad));
  }
  await e.idle();
  assert.deepStrictEqual(await runsOfTask(e, 'named-sub'), [], 'no run was started by a rejected send');

  // evt-1 was not stored: sending it now is not a duplicate.
  await e.send({ id: 'evt-1', name: 'ok/evt', data: 2 });
  await e.idle();
  assert.deepStrictEqual((await runsOfTask(e, 'named-sub')).map((r) => r.output), [2]);
});

test('send() with data that is not JSON (BigInt) rejects with E_PAYLOAD_NOT_JSON and stores nothing', async (t) => {
  const e = testEngine(t);
  e.task({ id: 'bigint-sub', on: 'ok/evt', run: async (p) => p });
  const err = await rejection(e.send([{ id: 'evt-ok', name: 'ok/evt', data: 1 }, { name: 'ok/evt', data: { n: 10n } }]));
  assert.ok(err instanceof DurablyError);
  assert.strictEqual(err.code, 'E_PAYLOAD_NOT_JSON');
  await e.idle();
  assert.deepStrictEqual(await runsOfTask(e, 'bigint-sub'), []);
  await e.send({ id: 'evt-ok', name: 'ok/evt', data: 3 });
  await e.idle();
  assert.deepStrictEqual((await runsOfTask(e, 'bigint-sub')).map((r) => r.output), [3]);
});
