// Durable waits survive kill -9 (DESIGN §1.3, §3.3, §3.7): a child process parks a run on a
// real-time sleep (or an event wait), the test SIGKILLs it, and a second process on the same
// data folder finishes the run: the step before the wait ran once, the step after it ran
// once, in the second process, and not before the sleep's deadline.
const { test, after } = require('node:test');
const assert = require('node:assert');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const WORKER = path.join(__dirname, 'fixtures', 'wait-worker.js');
const root = path.resolve(__dirname, '..');
const base = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-wait-crash-'));
const children = new Set();
after(() => {
  for (const c of children) c.kill('SIGKILL');
  fs.rmSync(base, { recursive: true, force: true });
});

/**
 * Starts the worker; `line(prefix)` resolves with the JSON after the first stdout line
 * starting with `prefix` (rejects if the child exits first), `exit` with how it ended.
 */
function worker(args, extraEnv = {}) {
  const env = { ...process.env, ...extraEnv };
  delete env.DURABLY_DATA_DIR; // would override the worker's dataDir
  const child = spawn(process.execPath, [WORKER, ...args], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => (stderr += d));
  const exit = new Promise((resolve) => {
    child.on('close', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    });
  });
  const line = (prefix) =>
    new Promise((resolve, reject) => {
      const look = () => {
        // Complete lines only: a long line may arrive in several chunks.
        const m = stdout.split('\n').slice(0, -1).find((l) => l.startsWith(`${prefix} `));
        if (m) {
          resolve(JSON.parse(m.slice(prefix.length + 1)));
          return true;
        }
        return false;
      };
      child.stdout.on('data', (d) => {
        stdout += d;
        look();
      });
      exit.then(({ code, signal }) => {
        if (!look()) reject(new Error(`worker ${args.join(' ')} exited (code ${code}, signal ${signal}) before printing ${prefix}\nstdout:\n${stdout}\nstderr:\n${stderr}`));
      });
    });
  return { child, line, exit };
}

async function killHard(w) {
  w.child.kill('SIGKILL');
  const { signal } = await w.exit;
  assert.strictEqual(signal, 'SIGKILL', 'the first process was killed, not exited');
}

/** `${step} → [{ pid, at }]` of one run, from the effects file. */
function effectsOf(file, runId) {
  const out = {};
  for (const l of fs.readFileSync(file, 'utf8').split('\n').filter(Boolean)) {
    const [run, step, pid, at] = l.split(' ');
    if (run !== runId) continue;
    (out[step] ??= []).push({ pid: Number(pid), at: Number(at) });
  }
  return out;
}

test('a real-time sleep survives kill -9: another process wakes the run at the deadline, each step once', { timeout: 30_000 }, async () => {
  const dataDir = path.join(base, 'sleep');
  const effects = path.join(base, 'sleep-effects.log');

  const first = worker([dataDir, effects, 'park-sleep']);
  const parked = await first.line('READY');
  await killHard(first);
  assert.strictEqual(parked.status, 'waiting');
  const nap = parked.steps.find((s) => s.id === 'nap');
  assert.strictEqual(nap.status, 'waiting');
  const wakeAt = Date.parse(nap.wakeAt);
  assert.ok(Number.isFinite(wakeAt), `the sleep has a deadline (${nap.wakeAt})`);
  assert.deepStrictEqual(Object.keys(effectsOf(effects, parked.id)), ['before'], 'killed while sleeping');

  const second = worker([dataDir, effects, 'resume', parked.id]);
  const done = await second.line('DONE');
  const { code } = await second.exit;
  assert.strictEqual(code, 0);
  assert.strictEqual(done.status, 'completed');
  assert.strictEqual(done.output, 'rested');
  assert.deepStrictEqual(done.steps.map((s) => [s.id, s.status]).sort(), [
    ['after', 'completed'],
    ['before', 'completed'],
    ['nap', 'completed'],
  ]);

  const ran = effectsOf(effects, parked.id);
  assert.strictEqual(ran.before.length, 1, "'before' ran once: memoized across the crash");
  assert.strictEqual(ran.after.length, 1, "'after' ran once");
  assert.strictEqual(ran.before[0].pid, first.child.pid);
  assert.strictEqual(ran.after[0].pid, second.child.pid, "'after' ran in the second process");
  assert.ok(ran.after[0].at >= wakeAt, `'after' ran at ${ran.after[0].at}, ${wakeAt - ran.after[0].at} ms before the sleep's deadline ${wakeAt}`);
});

test('an event wait survives kill -9: send() in another process resumes the run', { timeout: 30_000 }, async () => {
  const dataDir = path.join(base, 'event');
  const effects = path.join(base, 'event-effects.log');

  const first = worker([dataDir, effects, 'park-event']);
  const parked = await first.line('READY');
  await killHard(first);
  assert.strictEqual(parked.status, 'waiting');
  assert.strictEqual(parked.steps.find((s) => s.id === 'confirmed').status, 'waiting');

  const second = worker([dataDir, effects, 'send', parked.id]);
  const done = await second.line('DONE');
  assert.strictEqual((await second.exit).code, 0);
  assert.strictEqual(done.status, 'completed');
  assert.deepStrictEqual(done.output, { orderId: 'o-1', paid: true });
  const confirmed = done.steps.find((s) => s.id === 'confirmed');
  assert.strictEqual(confirmed.status, 'completed');
  assert.strictEqual(confirmed.output.name, 'crash/confirmed');

  const ran = effectsOf(effects, parked.id);
  assert.strictEqual(ran.before.length, 1);
  assert.strictEqual(ran.after.length, 1);
  assert.strictEqual(ran.after[0].pid, second.child.pid);
});

test('runs asleep beyond the in-memory timer window survive kill -9 and each wakes at its own deadline', { timeout: 30_000 }, async () => {
  // A window of 2: of the 12 sleeping runs, 10 are kept only in the store's queue index and
  // paged in by the second process as their deadlines come.
  const env = { DURABLY_TIMER_WINDOW: '2' };
  const dataDir = path.join(base, 'many');
  const effects = path.join(base, 'many-effects.log');

  const first = worker([dataDir, effects, 'park-many'], env);
  const parked = await first.line('READY');
  await killHard(first);
  assert.strictEqual(parked.length, 12);

  const second = worker([dataDir, effects, 'resume-many', parked.map((r) => r.id).join(',')], env);
  const done = await second.line('DONE');
  assert.strictEqual((await second.exit).code, 0);
  assert.deepStrictEqual(done.map((r) => r.status), Array(12).fill('completed'));
  const woke = [];
  for (const run of parked) {
    const wakeAt = Date.parse(run.steps.find((s) => s.id === 'nap').wakeAt);
    const ran = effectsOf(effects, run.id);
    assert.strictEqual(ran.before.length, 1, "'before' ran once");
    assert.strictEqual(ran.after.length, 1, "'after' ran once");
    assert.strictEqual(ran.after[0].pid, second.child.pid);
    assert.ok(ran.after[0].at >= wakeAt, `'after' ran ${wakeAt - ran.after[0].at} ms before the deadline`);
    woke.push([wakeAt, ran.after[0].at]);
  }
  // Woken in deadline order: a later deadline never ran before an earlier one.
  woke.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < woke.length; i++) {
    if (woke[i][0] > woke[i - 1][0]) assert.ok(woke[i][1] >= woke[i - 1][1], 'woken in deadline order');
  }
});
