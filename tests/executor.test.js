// The executor: cancel reaches a run that holds the last slot; one bad op does not sink a batch.
const { test } = require('node:test');
const assert = require('node:assert');
const { createTestEngine } = require('durably/testing');
const { RetryAfterError } = require('durably');

const EPOCH = Date.UTC(2024, 0, 1);

function testEngine(t, opts = {}) {
  const e = createTestEngine({ now: EPOCH, ...opts });
  t.after(() => e.close());
  return e;
}

// With every JS slot busy, the claim loop waits for a slot and never calls claim(): the
// abort of a cancelled run (delivered only with a claim batch) never reaches it, so its
// ctx.signal never fires. A run that stops on its signal then holds the slot forever and the
// whole executor stalls.
test('review: cancelling a run aborts its ctx.signal even when every slot is busy', async (t) => {
  const e = testEngine(t, { concurrency: 1 });
  let aborted = false;
  let started;
  const startedP = new Promise((r) => (started = r));
  const wf = e.task({
    id: 'long',
    run: async (_p, { signal }) => {
      started();
      await new Promise((r) => signal.addEventListener('abort', () => { aborted = true; r(); }));
      return 'stopped';
    },
  });
  const other = e.task({ id: 'other', run: async () => 'ok' });
  const h = await wf.trigger({});
  await startedP;
  assert.equal(await e.runs.cancel(h.id), true);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(aborted, true, 'ctx.signal fired after runs.cancel()');
  const h2 = await other.trigger({});
  assert.equal(await h2.result({ timeout: '1s' }), 'ok');
});

// RetryAfterError with an invalid Date makes the executor report `"retryAt":NaN`: the whole
// report batch fails to parse, so that run — and any other run whose op shared the batch —
// stays `running` in the core forever and its result() never settles.
test('review: RetryAfterError with an invalid Date does not hang the run (or its batch)', async (t) => {
  const e = testEngine(t);
  const bad = e.task({
    id: 'bad',
    retry: { maxAttempts: 2 },
    run: async () => {
      throw new RetryAfterError('later', new Date('not a date'));
    },
  });
  const good = e.task({ id: 'good', run: async () => 'ok' });
  const [hb, hg] = await Promise.all([bad.trigger({}), good.trigger({})]);
  const r = await Promise.allSettled([hb.result({ timeout: '1s' }), hg.result({ timeout: '1s' })]);
  const runB = await e.runs.get(hb.id);
  const runG = await e.runs.get(hg.id);
  assert.equal(r[1].status, 'fulfilled', `good run: ${runG.status} ${r[1].reason}`);
  assert.notEqual(runB.status, 'running', 'bad run is not stuck running');
});
