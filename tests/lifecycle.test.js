// shutdown() stops at the next durable point (issue: it waited for whole runs, 6 × 1 s
// steps took 5.5 s after a shutdown at 0.5 s), and start() while a shutdown is in flight
// leaves a working engine (issue: it resolved, but the engine was dead).
const { test, after } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { task, configure, start, shutdown, runs } = require('durably');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-lifecycle-'));
configure({ dataDir: dir });
after(async () => {
  await shutdown({ timeout: '2s' });
  fs.rmSync(dir, { recursive: true, force: true });
});

const executed = [];
let stepStarted;
const sixSteps = task({
  id: 'lifecycle-six-steps',
  run: async (_p, { step }) => {
    for (let i = 1; i <= 6; i++) {
      await step.run(`s${i}`, async () => {
        executed.push(i);
        stepStarted?.(i);
        await new Promise((r) => setTimeout(r, 300));
        return i;
      });
    }
    return 'done';
  },
});

test('shutdown stores the steps in flight and returns; no new step starts; the run resumes after start()', async () => {
  await start();
  const first = new Promise((r) => (stepStarted = r));
  const h = await sixSteps.trigger();
  await first; // step 1 is running
  stepStarted = undefined;
  await shutdown({ timeout: '10s' });
  assert.deepStrictEqual(executed, [1], 'only the step in flight ran; the run did not go on to step 2');
  // Step 1 was stored before shutdown returned.
  await start();
  const mid = await runs.get(h.id);
  assert.ok(mid.steps.some((s) => s.id === 's1' && s.status === 'completed'), JSON.stringify(mid.steps));
  assert.strictEqual(await h.result({ timeout: '10s' }), 'done');
  assert.deepStrictEqual(executed, [1, 2, 3, 4, 5, 6], 'resumed at step 2: no step ran twice');
});

test('start() during a shutdown waits for it and leaves a working engine', async () => {
  await start();
  const echo = task({ id: 'lifecycle-echo', run: async (p) => p });
  const closing = shutdown({ timeout: '2s' });
  await start(); // while the shutdown is in flight
  await closing;
  const h = await echo.trigger('alive');
  assert.strictEqual(await h.result({ timeout: '5s' }), 'alive');
});

test('a shutdown that cuts a step is not a crash: a run across more deploys than the poison limit still completes', async () => {
  // crashLimit is 3: a run running at 3 crashes in a row fails as poisoned. Four shutdowns,
  // each cutting the same long step short (timeout 20 ms), must not count.
  let started;
  let attempts = 0;
  const long = task({
    id: 'lifecycle-long-step',
    run: async (_p, { step, signal }) => {
      await step.run('long', async () => {
        attempts++;
        started?.();
        if (attempts <= 4) await new Promise((r) => signal.addEventListener('abort', r, { once: true })); // cut by the shutdown
        return 'ok';
      });
      return 'done';
    },
  });
  await start();
  let running = new Promise((r) => (started = r));
  const h = await long.trigger();
  for (let deploy = 1; deploy <= 4; deploy++) {
    await running;
    running = new Promise((r) => (started = r));
    await shutdown({ timeout: 20 });
    await start();
  }
  assert.strictEqual(await h.result({ timeout: '10s' }), 'done');
  assert.strictEqual(attempts, 5, 'the step ran again after each of the 4 shutdowns');
  const run = await runs.get(h.id);
  assert.strictEqual(run.status, 'completed');
});
