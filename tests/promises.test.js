// Promises a user relies on, each broken once (issues "keep every promise under faults"
// and "correct across clock jumps and restarts"): unknown options are refused, step ids
// never collide, nothing runs after a cancel point, shutdown stops at the next durable point
// and start() during a shutdown works, and durably's own messages reach the app's logger.
const { test, before, after } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const durably = require('durably');
const { task, configure, start, shutdown, runs, send, schedules, trigger, DurablyError } = durably;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-promises-'));
const logged = [];
configure({ dataDir: dir, logLevel: 'info', logger: (level, message) => logged.push({ level, message }) });
before(() => start());
after(async () => {
  await shutdown({ timeout: '2s' });
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Asserts a DurablyError E_BAD_OPTION naming `option`. */
function badOption(option) {
  return (e) => {
    assert.ok(e instanceof DurablyError, `expected a DurablyError, got ${e}`);
    assert.strictEqual(e.code, 'E_BAD_OPTION', e.message);
    assert.strictEqual(e.option, option, e.message);
    return true;
  };
}

const echo = task({ id: 'promises-echo', run: async (p) => p });

test('unknown options are refused at the call, naming the option, and nothing is written', async () => {
  const before = (await runs.list({ limit: 1000 })).runs.length;
  // A typo that would charge a card twice:
  await assert.rejects(echo.trigger({}, { idempotencyKeys: 'order-1' }), badOption('trigger.idempotencyKeys'));
  await assert.rejects(trigger('promises-echo', {}, { delayy: '1s' }), badOption('trigger.delayy'));
  await assert.rejects(echo.batchTrigger([{ payload: 1 }, { payload: 2, options: { tag: ['x'] } }]), badOption('trigger.tag'));
  await assert.rejects(send({ name: 'x', dat: {} }), badOption('event.dat'));
  await assert.rejects(runs.list({ staus: 'failed' }), badOption('runs.list.staus'));
  await assert.rejects(schedules.create({ task: 'promises-echo', cron: '0 9 * * *', timezone: 'UTC' }), badOption('schedules.create.timezone'));
  const h = await echo.trigger('ok');
  await assert.rejects(h.result({ timeot: '1s' }), badOption('result.timeot'));
  assert.strictEqual((await runs.list({ limit: 1000 })).runs.length, before + 1, 'only the good trigger was stored');
  // Nested task options, at task() time:
  const def = (extra) => () => task({ id: 'promises-typo', run: async () => 1, ...extra });
  assert.throws(def({ retry: { minTimeoutInMs: 100 } }), badOption('retry.minTimeoutInMs'));
  assert.throws(def({ concurrency: { limt: 1 } }), badOption('concurrency.limt'));
  assert.throws(def({ throttle: { limit: 1, period: '1s', brust: 2 } }), badOption('throttle.brust'));
  assert.throws(def({ debounce: { period: '1s', maxwait: '1m' } }), badOption('debounce.maxwait'));
  assert.throws(def({ singleton: { mode: 'skip', keys: 'x' } }), badOption('singleton.keys'));
  assert.throws(def({ timeout: { finsh: '1m' } }), badOption('timeout.finsh'));
  assert.throws(def({ cancelOn: [{ event: 'x', matches: 'data.id' }] }), badOption('cancelOn[0].matches'));
  assert.throws(def({ schedule: { cron: '* * * * *', zone: 'UTC' } }), badOption('schedule.zone'));
  assert.throws(def({ on: { event: 'x', iff: 'true' } }), badOption('on.iff'));
  assert.throws(() => configure({ dataDirr: '/tmp/x' }), badOption('dataDirr'));
});

test('limits are counted in bytes on both sides: an event id of 200 é is refused at the call, not in the core', async () => {
  const id = 'é'.repeat(200); // 200 UTF-16 units, 400 bytes
  await assert.rejects(send({ name: 'x', id }), badOption('event.id'));
  await assert.rejects(send({ name: 'order/paid\u0000forged' }), badOption('event.name'));
  await assert.rejects(echo.trigger(1, { tags: ['é'.repeat(65)] }), badOption('tags'));
  let seen;
  const t = task({
    id: 'promises-send-bad-id',
    run: async (_p, { step }) => {
      try {
        await step.sendEvent('notify', { name: 'x', id });
      } catch (e) {
        seen = e;
      }
      return 'handled';
    },
  });
  const h = await t.trigger();
  assert.strictEqual(await h.result({ timeout: '5s' }), 'handled');
  assert.ok(seen instanceof DurablyError && seen.code === 'E_BAD_OPTION', `${seen}`);
});

test('a repeated step id (stored as id:1) never collides with a literal id "id:1"', async () => {
  let calls = 0;
  const t = task({
    id: 'promises-step-keys',
    retry: { maxAttempts: 2, minTimeout: 10, randomize: false },
    run: async (_p, { step, attempt }) => {
      const a = await step.run('charge', () => `first ${++calls}`);
      const b = await step.run('charge', () => `repeat ${++calls}`);
      const c = await step.run('charge:1', () => `literal ${++calls}`);
      if (attempt === 1) throw new Error('replay me');
      return [a, b, c];
    },
  });
  const h = await t.trigger();
  assert.deepStrictEqual(await h.result({ timeout: '5s' }), ['first 1', 'repeat 2', 'literal 3']);
  const run = await runs.get(h.id);
  assert.deepStrictEqual(run.steps.map((s) => s.id).sort(), ['charge', 'charge:1', 'charge:1:0']);
});

test('nothing after the cancel point runs: a step in flight at the cancel finishes, the code after it does not', async () => {
  let release;
  const gate = new Promise((r) => (release = r));
  const after = [];
  let inStep;
  const entered = new Promise((r) => (inStep = r));
  const t = task({
    id: 'promises-cancel-in-flight',
    run: async (_p, { step }) => {
      await step.run('slow', async () => {
        inStep();
        await gate;
        return 1;
      });
      after.push('code after the step');
      await step.run('next', () => after.push('next step'));
    },
  });
  const h = await t.trigger();
  await entered;
  assert.strictEqual(await runs.cancel(h.id), true);
  release();
  await assert.rejects(h.result({ timeout: '5s' }), (e) => e.code === 'E_RUN_CANCELLED');
  await new Promise((r) => setTimeout(r, 50));
  assert.deepStrictEqual(after, []);
  assert.strictEqual((await runs.get(h.id)).status, 'cancelled');
});

test("the core's own messages reach the configured logger", async () => {
  // A step reported for a run that is not running is ignored by the core, with a warning.
  const { engine } = require('../dist/index.js');
  const h = await echo.trigger('x', { delay: '1h' });
  await engine()._report(`{"op":"step","run":${JSON.stringify(h.id)},"key":"a","output":1}`);
  const mine = (l) => /not running/.test(l.message) && l.message.includes(h.id);
  for (let i = 0; i < 100 && !logged.some(mine); i++) await new Promise((r) => setTimeout(r, 20));
  const hit = logged.find(mine);
  assert.ok(hit, `the core's warning reached the logger: ${JSON.stringify(logged)}`);
  assert.strictEqual(hit.level, 'warn');
});
