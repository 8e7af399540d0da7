// Development (`NODE_ENV=development`, as under `next dev`): a module edited and evaluated
// again that no longer defines a task — renamed or removed — unregisters it, so its `on`
// subscription stops starting runs of code that is gone. Tasks defined outside a module load
// (a factory called at request time) are never forgotten.
process.env.NODE_ENV = 'development';
const { test, after } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const durably = require('../dist/index.js');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-dev-reload-'));
const dist = path.join(__dirname, '..', 'dist', 'index.js');
const jobs = path.join(tmp, 'jobs.js');
const factory = path.join(tmp, 'factory.js');

after(async () => {
  await durably.shutdown();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const logs = [];
const watchers = [];
function waitForLog(re) {
  const seen = logs.find((l) => re.test(l));
  if (seen) return Promise.resolve(seen);
  return new Promise((resolve) => watchers.push({ re, resolve }));
}
durably.configure({
  dataDir: path.join(tmp, 'data'),
  logLevel: 'debug',
  logger: (level, message) => {
    const line = `${level}: ${message}`;
    logs.push(line);
    if (process.env.DEBUG_TEST) console.log(line);
    for (const w of watchers.splice(0)) {
      if (w.re.test(line)) w.resolve(line);
      else watchers.push(w);
    }
  },
});

function writeJobs(ids) {
  const defs = ids.map((id) => `task({ id: ${JSON.stringify(id)}, on: 'dev/ping', run: async () => ${JSON.stringify(id)} });`);
  fs.writeFileSync(jobs, `const { task } = require(${JSON.stringify(dist)});\n${defs.join('\n')}\n`);
}

/** What `next dev` does on save: the module is evaluated again. */
function loadJobs() {
  delete require.cache[require.resolve(jobs)];
  require(jobs);
}

const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

async function ping() {
  const sent = await durably.send({ name: 'dev/ping', data: {} });
  assert.strictEqual(sent.ids.length, 1);
  const { runs } = await durably.runs.list({ limit: 100 });
  return runs;
}

test('a task renamed in an edited module stops answering its events; the other tasks of the module and factory tasks keep theirs', async () => {
  await durably.start();
  fs.writeFileSync(factory, `const { task } = require(${JSON.stringify(dist)});\nexports.make = (id) => task({ id, on: 'dev/ping', run: async () => id });\n`);
  const { make } = require(factory);

  writeJobs(['old-name', 'kept']);
  loadJobs();
  await waitForLog(new RegExp(`tasks defined by ${escape(jobs)}: old-name, kept`));
  // A factory called after the modules loaded (at request time, say), twice with new ids.
  make('made-1');
  make('made-2');

  const before = new Set((await ping()).map((r) => r.taskId));
  for (const id of ['old-name', 'kept', 'made-1', 'made-2']) assert.ok(before.has(id), `the first event started ${id}`);

  // The edit: old-name becomes new-name.
  writeJobs(['new-name', 'kept']);
  loadJobs();
  const forgot = await waitForLog(/task "old-name" is no longer defined/);
  assert.match(forgot, new RegExp(escape(jobs)));

  const all = await ping();
  const started = (id) => all.filter((r) => r.taskId === id).length;
  assert.strictEqual(started('old-name'), 1, 'the renamed task answered only the event sent before the edit');
  assert.strictEqual(started('new-name'), 1, 'the new name answers the next event');
  assert.strictEqual(started('kept'), 2);
  assert.strictEqual(started('made-1'), 2, 'a task a factory defined at run time is never taken for an edit');
  assert.strictEqual(started('made-2'), 2);
  await assert.rejects(durably.trigger('old-name', {}), { code: 'E_UNKNOWN_TASK' });
  assert.ok(!logs.some((l) => /"(kept|made-1|made-2)" is no longer defined/.test(l)), logs.join('\n'));
});

test('tasks removed from a module that still defines another are forgotten; defining one again brings it back', async () => {
  writeJobs([]);
  fs.appendFileSync(jobs, `task({ id: 'placeholder', run: async () => null });\n`);
  loadJobs();
  await waitForLog(/task "kept" is no longer defined/);
  await waitForLog(/task "new-name" is no longer defined/);
  const runs = await ping();
  assert.strictEqual(runs.filter((r) => r.taskId === 'kept').length, 2, 'kept answers no event after it was removed');

  writeJobs(['kept']);
  loadJobs();
  await waitForLog(new RegExp(`tasks defined by ${escape(jobs)}: kept$`));
  const again = await ping();
  assert.strictEqual(again.filter((r) => r.taskId === 'kept').length, 3, 'kept answers events again once it is back');
});
