// durability: 'batched' acknowledges after the write is applied (synced every flushInterval);
// runs behave the same, and what was acknowledged is there after a restart.
const { test, after } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { task, configure, start, shutdown, runs } = require('durably');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-batched-'));
configure({ dataDir: dir, durability: 'batched', flushInterval: '20ms' });
after(async () => {
  await shutdown();
  fs.rmSync(dir, { recursive: true, force: true });
});

test("runs complete in 'batched' durability, and their history survives a restart", async () => {
  const t = task({ id: 'batched-steps', run: async (p, { step }) => step.run('double', () => p.n * 2) });
  await start();
  const handles = await Promise.all([1, 2, 3].map((n) => t.trigger({ n })));
  assert.deepStrictEqual(await Promise.all(handles.map((h) => h.result({ timeout: '10s' }))), [2, 4, 6]);
  await shutdown();
  await start();
  const list = await runs.list({ taskId: 'batched-steps' });
  assert.deepStrictEqual(list.runs.map((r) => r.status), ['completed', 'completed', 'completed']);
});

test('an unknown durability mode is rejected naming the option', () => {
  assert.throws(() => configure({ durability: 'sometimes' }), (e) => e.code === 'E_BAD_OPTION' && e.option === 'durability');
});
