// runs.retry gets a fresh timeout.finish budget; parallel waits on early events both resolve.
const { test } = require('node:test');
const assert = require('node:assert');
const { createTestEngine } = require('durably/testing');
const { NonRetriableError } = require('durably');

const EPOCH = Date.UTC(2024, 0, 1);
const MIN = 60_000;

function testEngine(t, opts = {}) {
  const e = createTestEngine({ now: EPOCH, ...opts });
  t.after(() => e.close());
  return e;
}

// runs.retry keeps the run's original startedAt, and load_claimed arms timeout.finish from
// it: a run retried later than `finish` after its first start is failed with E_TIMEOUT at
// once instead of getting a fresh `finish` budget.
test('review: runs.retry of a run with timeout.finish gets a fresh budget', async (t) => {
  const e = testEngine(t);
  let attempt = 0;
  const wf = e.task({
    id: 'tf',
    timeout: { finish: '1m' },
    run: async (_p, { step }) => {
      attempt++;
      if (attempt === 1) throw new NonRetriableError('first try fails');
      await step.sleep('s', '10s');
      return 'ok';
    },
  });
  const h = await wf.trigger({});
  await e.idle();
  assert.equal((await e.runs.get(h.id)).status, 'failed');
  await e.advance(5 * MIN);
  await e.runs.retry(h.id);
  await e.idle();
  await e.advance('10s');
  const run = await e.runs.get(h.id);
  assert.equal(run.status, 'completed', `retried run: ${run.status} ${JSON.stringify(run.error)}`);
});

// Promise.all over two waitForEvent whose events were both sent before the run reached
// the waits (since: 'run-start'): the second wait misses its event and the run hangs.
test('review: Promise.all of two waitForEvent, both events sent early', async (t) => {
  const e = testEngine(t);
  let gate;
  const gateP = new Promise((r) => (gate = r));
  const wf = e.task({
    id: 'pw',
    run: async (_p, { step }) => {
      await step.run('gate', () => gateP);
      const [a, b] = await Promise.all([
        step.waitForEvent('a', { event: 'x' }),
        step.waitForEvent('b', { event: 'y' }),
      ]);
      return [a && a.name, b && b.name];
    },
  });
  const h = await wf.trigger({});
  await new Promise((r) => setTimeout(r, 50));
  await e.send({ name: 'y' });
  await e.send({ name: 'x' });
  gate(1);
  await e.idle();
  const run = await e.runs.get(h.id);
  assert.equal(run.status, 'completed', `run is ${run.status}; steps ${JSON.stringify(run.steps.map((s) => [s.id, s.status]))}`);
});
