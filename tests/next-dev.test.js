// `next dev` on examples/nextjs: a task module edited on disk runs its new code on the next
// trigger (the module is re-evaluated and task() replaces the definition by id), and the
// engine stays one per process — no second open of the store, so no E_DATA_DIR_LOCKED.
const { test, before, after } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { exampleDir, prepareExample, lockExample, startServer, api, poll, runCompleted } = require('./fixtures/next-helper');

const helloFile = path.join(exampleDir, 'jobs', 'hello.ts');
const V1 = 'version: 1';
const V2 = 'version: 2';
let tmp;
let release;
let server;
let original;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-next-dev-'));
  release = await lockExample();
  await prepareExample();
  original = fs.readFileSync(helloFile, 'utf8');
  if (original.includes(V2)) {
    // Left edited by an interrupted run of this test.
    original = original.replace(V2, V1);
    fs.writeFileSync(helloFile, original);
  }
  assert.ok(original.includes(V1), `${helloFile} returns { …, ${V1} }`);
  server = await startServer({ mode: 'dev', env: { DURABLY_DATA_DIR: path.join(tmp, 'data') } });
});

after(async () => {
  if (original !== undefined) fs.writeFileSync(helloFile, original);
  if (server) await server.stop();
  release?.();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

async function triggerHello() {
  const r = await api(server, 'POST', 'trigger', { taskId: 'hello', payload: { name: 'Ada' } });
  assert.strictEqual(r.status, 202, JSON.stringify(r.body));
  return runCompleted(server, r.body.id);
}

test('in next dev the JSON API is open without a token', async () => {
  const r = await api(server, 'GET', 'runs', undefined, { token: null });
  assert.strictEqual(r.status, 200, JSON.stringify(r.body));
});

test('a task module edited on disk runs its new code on the next trigger', async (t) => {
  const first = await triggerHello();
  assert.deepStrictEqual(first.output, { greeting: 'Hello, Ada!', version: 1 });

  fs.writeFileSync(helloFile, original.replace(V1, V2));
  const t0 = Date.now();
  let triggers = 0;
  const edited = await poll(
    'a run of the edited hello task',
    async () => {
      triggers++;
      const run = await triggerHello();
      return run.output.version === 2 ? run : null;
    },
    { timeoutMs: 60_000, intervalMs: 300 },
  );
  assert.deepStrictEqual(edited.output, { greeting: 'Hello, Ada!', version: 2 });
  t.diagnostic(`new code ran ${Date.now() - t0} ms after the edit (trigger #${triggers} after it)`);
});

test('the dev server opened the store once (no E_DATA_DIR_LOCKED)', async () => {
  const stats = await api(server, 'GET', 'stats');
  assert.strictEqual(stats.status, 200, JSON.stringify(stats.body));
  assert.doesNotMatch(server.output(), /E_DATA_DIR_LOCKED|could not acquire lock/);
});

test('a task removed from an edited module stops starting runs for its events', async (t) => {
  // Add a second task that answers an event, then remove it again.
  const extra = `\nexport const helloAgain = task({\n  id: 'hello-again',\n  on: 'dev/hello-again',\n  run: async () => 'again',\n});\n`;
  fs.writeFileSync(helloFile, original + extra);
  await poll('hello-again to be defined', async () => (await api(server, 'POST', 'trigger', { taskId: 'hello-again' })).status === 202, { timeoutMs: 60_000, intervalMs: 300 });

  fs.writeFileSync(helloFile, original);
  const t0 = Date.now();
  // Each request re-evaluates the edited module; the removed task is unregistered once its
  // file's definitions settle.
  const gone = await poll(
    'hello-again to be unregistered',
    async () => {
      const r = await api(server, 'POST', 'trigger', { taskId: 'hello-again' });
      return r.status !== 202 ? r : null;
    },
    { timeoutMs: 60_000, intervalMs: 300 },
  );
  assert.strictEqual(gone.body.error?.code ?? gone.body.code, 'E_UNKNOWN_TASK', JSON.stringify(gone.body));
  t.diagnostic(`the removed task was unregistered ${Date.now() - t0} ms after the edit`);

  const count = async () => {
    const list = await api(server, 'GET', 'runs?taskId=hello-again&limit=100');
    assert.strictEqual(list.status, 200, JSON.stringify(list.body));
    return list.body.runs.length;
  };
  const before = await count();
  assert.ok(before >= 1, 'the triggers before the removal made runs');
  // An event's runs are created with the event, before send() answers.
  const sent = await api(server, 'POST', 'send', { name: 'dev/hello-again', data: {} });
  assert.strictEqual(sent.status, 202, JSON.stringify(sent.body));
  assert.strictEqual(await count(), before, 'the event sent after the removal started no run of the removed task');
});
