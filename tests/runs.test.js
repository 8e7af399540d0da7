// Delayed triggers and the management API (DESIGN §1.2, §1.6): a delayed run is stored as
// `delayed` with its ready time and starts no sooner; runs.list filters by task, status and
// tag and pages newest first with a cursor that is absent on the last page.
const { test, before, after } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { task, configure, start, shutdown, runs, NonRetriableError } = require('durably');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-runs-'));
configure({ dataDir: dir });
before(() => start());
after(async () => {
  await shutdown({ timeout: '2s' });
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a delayed trigger is stored as delayed with readyAt = createdAt + delay, and runs no sooner', async () => {
  let executedAt = null;
  const t = task({
    id: 'runs-delayed',
    run: async (p) => {
      executedAt = Date.now();
      return p.n * 2;
    },
  });
  const h = await t.trigger({ n: 21 }, { delay: '300ms' });
  const queued = await runs.get(h.id);
  assert.strictEqual(queued.status, 'delayed');
  assert.ok(queued.createdAt instanceof Date && queued.readyAt instanceof Date);
  const wait = queued.readyAt.getTime() - queued.createdAt.getTime();
  assert.ok(wait >= 300 && wait < 310, `readyAt - createdAt = ${wait} ms`);
  assert.strictEqual(queued.startedAt, undefined);
  assert.strictEqual(queued.attempts, 0);
  assert.strictEqual(executedAt, null, 'not executed yet');
  const listed = await runs.list({ taskId: 'runs-delayed', status: 'delayed' });
  assert.deepStrictEqual(listed.runs.map((r) => r.id), [h.id]);

  assert.strictEqual(await h.result({ timeout: '5s' }), 42);
  const done = await runs.get(h.id);
  assert.strictEqual(done.status, 'completed');
  assert.strictEqual(done.output, 42);
  assert.strictEqual(done.attempts, 1);
  assert.ok(executedAt >= queued.readyAt.getTime(), 'executed no sooner than readyAt');
  assert.ok(done.startedAt.getTime() >= queued.readyAt.getTime(), 'started no sooner than readyAt');
  assert.ok(done.endedAt.getTime() >= done.startedAt.getTime());
});

test('a runAt in the past runs at once, a runAt in the future waits as delayed', async () => {
  const t = task({ id: 'runs-run-at', run: async () => 'ran' });
  const past = await t.trigger(null, { runAt: new Date(Date.now() - 60_000) });
  assert.strictEqual(await past.result({ timeout: '5s' }), 'ran');
  const at = new Date(Date.now() + 3_600_000);
  const future = await t.trigger(null, { runAt: at.toISOString() });
  const run = await runs.get(future.id);
  assert.strictEqual(run.status, 'delayed');
  assert.strictEqual(run.readyAt.getTime(), at.getTime());
});

test('runs.list filters by task id, status and tag, newest first', async () => {
  const a = task({ id: 'runs-list-a', run: async (i) => i });
  const b = task({
    id: 'runs-list-b',
    run: async (p) => {
      if (p === 'fail') throw new NonRetriableError('no');
      return p;
    },
  });
  const as = [];
  for (let i = 0; i < 5; i++) as.push(await a.trigger(i, { tags: [i % 2 === 0 ? 'list-even' : 'list-odd', 'list-all'] }));
  const bOk = await b.trigger('ok', { tags: ['list-all'] });
  const bFail = await b.trigger('fail', { tags: ['list-all'] });
  for (const h of [...as, bOk]) await h.result({ timeout: '5s' });
  await assert.rejects(bFail.result({ timeout: '5s' }));

  const ids = async (opts) => (await runs.list(opts)).runs.map((r) => r.id);
  const newestFirst = (hs) => hs.map((h) => h.id).reverse();

  assert.deepStrictEqual(await ids({ taskId: 'runs-list-a' }), newestFirst(as));
  assert.deepStrictEqual(await ids({ taskId: 'runs-list-b' }), newestFirst([bOk, bFail]));
  assert.deepStrictEqual(await ids({ tag: 'list-even' }), newestFirst([as[0], as[2], as[4]]));
  assert.deepStrictEqual(await ids({ tag: 'list-odd' }), newestFirst([as[1], as[3]]));
  assert.deepStrictEqual(await ids({ tag: 'list-all' }), newestFirst([...as, bOk, bFail]));
  assert.deepStrictEqual(await ids({ status: 'failed' }), [bFail.id]);
  assert.deepStrictEqual(await ids({ taskId: 'runs-list-b', status: 'completed' }), [bOk.id]);
  assert.deepStrictEqual(await ids({ taskId: 'runs-list-a', status: 'failed' }), []);
  assert.deepStrictEqual(await ids({ taskId: 'runs-list-a', tag: 'list-odd', status: 'completed' }), newestFirst([as[1], as[3]]));
  assert.deepStrictEqual(await ids({ taskId: 'no-such-task' }), []);
  assert.deepStrictEqual(await ids({ tag: 'no-such-tag' }), []);

  const page = await runs.list({ taskId: 'runs-list-a' });
  assert.strictEqual(page.cursor, undefined, 'everything fits in one page');
  for (const [i, r] of page.runs.entries()) {
    assert.strictEqual(r.taskId, 'runs-list-a');
    assert.strictEqual(r.status, 'completed');
    assert.strictEqual(r.payload, 4 - i);
    assert.strictEqual(r.output, 4 - i);
    assert.ok(r.createdAt instanceof Date);
    assert.ok(!('steps' in r), 'list entries carry no steps');
    if (i > 0) assert.ok(r.createdAt.getTime() <= page.runs[i - 1].createdAt.getTime());
  }
});

test('runs.list pages with a cursor: newest first, no duplicates, no cursor on the last page', async () => {
  const t = task({ id: 'runs-page', run: async (i) => i });
  // One batch: five runs created in the same durable write (often the same millisecond).
  const hs = await t.batchTrigger([0, 1, 2, 3, 4].map((i) => ({ payload: i })));
  for (const h of hs) await h.result({ timeout: '5s' });
  const expected = hs.map((h) => h.id).reverse();

  const pages = [];
  let cursor;
  do {
    const page = await runs.list({ taskId: 'runs-page', limit: 2, cursor });
    pages.push(page.runs.map((r) => r.id));
    cursor = page.cursor;
    assert.ok(pages.length <= 5, 'pagination terminates');
  } while (cursor !== undefined);
  assert.deepStrictEqual(pages.map((p) => p.length), [2, 2, 1]);
  assert.deepStrictEqual(pages.flat(), expected);

  // A last page that is exactly full has no cursor either.
  const full = await runs.list({ taskId: 'runs-page', limit: 5 });
  assert.deepStrictEqual(full.runs.map((r) => r.id), expected);
  assert.strictEqual(full.cursor, undefined);
  const twoPages = await runs.list({ taskId: 'runs-page', limit: 4 });
  assert.ok(twoPages.cursor);
  const rest = await runs.list({ taskId: 'runs-page', limit: 4, cursor: twoPages.cursor });
  assert.deepStrictEqual(rest.runs.map((r) => r.id), expected.slice(4));
  assert.strictEqual(rest.cursor, undefined);
});

test('runs.list with since returns only runs created at or after that time', async () => {
  const t = task({ id: 'runs-since', run: async () => null });
  const first = await t.trigger();
  await first.result({ timeout: '5s' });
  const firstCreated = (await runs.get(first.id)).createdAt;
  // Wait for the clock to move past the first run's millisecond (no fixed sleep).
  while (Date.now() <= firstCreated.getTime()) await new Promise((r) => setImmediate(r));
  const second = await t.trigger();
  await second.result({ timeout: '5s' });
  const secondCreated = (await runs.get(second.id)).createdAt;
  const ids = async (since) => (await runs.list({ taskId: 'runs-since', since })).runs.map((r) => r.id);
  assert.deepStrictEqual(await ids(firstCreated), [second.id, first.id]);
  assert.deepStrictEqual(await ids(secondCreated), [second.id]);
  assert.deepStrictEqual(await ids(secondCreated.toISOString()), [second.id]);
  assert.deepStrictEqual(await ids(secondCreated.getTime() + 1), []);
});

test('runs.get returns null for an id that does not exist', async () => {
  assert.strictEqual(await runs.get('run_does_not_exist'), null);
});
