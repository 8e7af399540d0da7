// The quickstart, end to end through the public API on a fresh store.
const { test, after } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { task, configure, start, shutdown, runs } = require('durably');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-smoke-'));
configure({ dataDir: dir });
after(async () => {
  await shutdown();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a triggered run executes its steps and its result resolves with the output', async () => {
  const hello = task({
    id: 'smoke-hello',
    run: async (p, { step }) => {
      const greeting = await step.run('greet', () => `hello ${p.name}`);
      return { greeting };
    },
  });
  await start();
  const h = await hello.trigger({ name: 'Ada' });
  assert.deepStrictEqual(await h.result({ timeout: '10s' }), { greeting: 'hello Ada' });
  const run = await runs.get(h.id);
  assert.strictEqual(run.status, 'completed');
  assert.deepStrictEqual(run.steps.map((s) => [s.id, s.status, s.output]), [['greet', 'completed', 'hello Ada']]);
});
