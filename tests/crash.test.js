// Crash torture (DESIGN §3.2, §3.3, §3.7): a child process triggers 500 runs of a 3-step
// task and executes them; the test SIGKILLs it at random moments and restarts it until it
// finishes. Afterwards every acknowledged run is completed, each run's step side effects
// happened in step order, and re-executed steps are bounded by the steps that could have been
// in flight at the kills (kills × concurrency).
//
// Reproduce a failure with the printed seed: CRASH_SEED=<seed> node --test tests/crash.test.js
const { test, after } = require('node:test');
const assert = require('node:assert');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const WORKER = path.join(__dirname, 'fixtures', 'crash-worker.js');
const RUNS = 500;
const CONCURRENCY = 50;
const KILLS = 5;
const STEP_DELAY_MS = 40; // steps await up to this long before their side effect: kills find steps in flight
const STEPS = ['step1', 'step2', 'step3'];

// mulberry32: small seeded PRNG so a failing schedule of kills can be replayed.
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const children = new Set();
const base = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-crash-'));
let keep = false;
after(async () => {
  for (const c of children) c.kill('SIGKILL');
  const { shutdown } = require('durably');
  await shutdown();
  if (keep) console.log(`# crash test files kept in ${base}`);
  else fs.rmSync(base, { recursive: true, force: true });
});

/** Starts the worker; `running` resolves when it reports RUNNING (or null if it exited first). */
function spawnWorker(dataDir, workDir, extraEnv) {
  const env = { ...process.env, CRASH_RUNS: String(RUNS), CRASH_CONCURRENCY: String(CONCURRENCY), CRASH_STEP_DELAY_MS: String(STEP_DELAY_MS), ...extraEnv };
  delete env.DURABLY_DATA_DIR; // would override the worker's dataDir
  delete env.DURABLY_CONCURRENCY;
  const child = spawn(process.execPath, [WORKER, dataDir, workDir], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  let onRunning;
  const running = new Promise((r) => (onRunning = r));
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (d) => {
    stdout += d;
    if (/^RUNNING$/m.test(stdout)) onRunning(true);
  });
  child.stderr.on('data', (d) => (stderr += d));
  const exit = new Promise((resolve) => {
    child.on('close', (code, signal) => {
      children.delete(child);
      onRunning(null);
      resolve({ code, signal, stdout, stderr, done: /^DONE /m.test(stdout) });
    });
  });
  return { child, running, exit };
}

test('SIGKILL at random moments loses no acknowledged run and re-runs only steps in flight', { timeout: 60_000 }, (t) => torture(t, 'plain', {}));

// Runs sleep (1–300 ms) between step1 and step2 and the scheduler keeps only 16 timers in
// memory: kills land while most sleeping runs exist only in the store's queue index.
test('SIGKILL with runs asleep beyond the in-memory timer window loses no run either', { timeout: 60_000 }, (t) =>
  torture(t, 'asleep', { CRASH_SLEEP_MS: '300', DURABLY_TIMER_WINDOW: '16' }),
);

async function torture(t, name, extraEnv) {
  const seed = process.env.CRASH_SEED ? Number(process.env.CRASH_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
  console.log(`# crash test (${name}) seed ${seed} (CRASH_SEED=${seed} to replay)`);
  t.diagnostic(`seed ${seed}`);
  const rand = prng(seed);
  const sleeps = Boolean(extraEnv.CRASH_SLEEP_MS);
  const dataDir = path.join(base, `${name}-data`);
  const workDir = path.join(base, `${name}-work`);
  fs.mkdirSync(workDir, { recursive: true });
  keep = true; // until the assertions pass

  const t0 = Date.now();
  let kills = 0;
  const delays = [];
  let finished = false;
  let lives = 0;
  for (let i = 0; i < KILLS && !finished; i++) {
    // The first kill comes early (often while the 500 triggers are being acknowledged).
    const delay = i === 0 ? Math.floor(rand() * 20) : 20 + Math.floor(rand() * 280);
    const w = spawnWorker(dataDir, workDir, extraEnv);
    lives++;
    const ok = await w.running;
    let timer;
    if (ok) timer = setTimeout(() => w.child.kill('SIGKILL'), delay);
    const r = await w.exit;
    clearTimeout(timer);
    if (r.signal === 'SIGKILL') {
      kills++;
      delays.push(delay);
    } else if (r.code !== 0 || !r.done) {
      assert.fail(`worker life ${lives} exited with code ${r.code} signal ${r.signal}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
    }
    if (r.done) finished = true;
  }
  if (!finished) {
    const w = spawnWorker(dataDir, workDir, extraEnv);
    lives++;
    const r = await w.exit;
    assert.ok(r.code === 0 && r.done, `final worker exited with code ${r.code} signal ${r.signal}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  }
  const elapsed = Date.now() - t0;
  assert.ok(kills >= 1, `no kill landed before the worker finished (seed ${seed}); the workload is too short`);

  // Acknowledged runs: the ids the worker wrote after their triggers resolved.
  const ids = fs.readFileSync(path.join(workDir, 'ids.txt'), 'utf8').split('\n').filter(Boolean);
  assert.strictEqual(new Set(ids).size, ids.length, 'a run id was acknowledged twice');
  assert.strictEqual(ids.length, RUNS, 'the worker wrote every acknowledged id');
  assert.ok(fs.existsSync(path.join(workDir, 'triggered')));

  // The child is gone: open its store here with the public API.
  const { configure, runs, shutdown } = require('durably');
  await shutdown(); // the previous test's store, if any
  configure({ dataDir, concurrency: CONCURRENCY });
  for (const id of ids) {
    const run = await runs.get(id);
    assert.ok(run, `acknowledged run ${id} is missing from the store`);
    assert.strictEqual(run.status, 'completed', `acknowledged run ${id} is ${run.status}`);
    const expected = (sleeps ? [...STEPS, 'nap'] : STEPS).map((s) => [s, 'completed']).sort();
    assert.deepStrictEqual(run.steps.map((s) => [s.id, s.status]).sort(), expected, `steps of ${id}`);
  }
  // Runs that became durable but whose ids the killed worker never wrote down execute too.
  const all = [];
  let cursor;
  do {
    const page = await runs.list({ limit: 1000, cursor });
    all.push(...page.runs);
    cursor = page.cursor;
  } while (cursor);
  const notDone = all.filter((r) => r.status !== 'completed');
  assert.deepStrictEqual(notDone.map((r) => `${r.id} ${r.status}`), [], 'every run in the store is completed');
  const inStore = new Set(all.map((r) => r.id));

  // Side effects: first occurrences in step order, every step at least once, few repeats.
  const effects = new Map();
  const lines = fs.readFileSync(path.join(workDir, 'effects.log'), 'utf8').split('\n').filter(Boolean);
  for (const line of lines) {
    const [id, step] = line.split(' ');
    assert.ok(STEPS.includes(step), `malformed side-effect line ${JSON.stringify(line)}`);
    assert.ok(inStore.has(id), `a step ran for ${id}, which is not in the store`);
    if (!effects.has(id)) effects.set(id, []);
    effects.get(id).push(step);
  }
  let duplicates = 0;
  let runsWithDuplicates = 0;
  for (const id of inStore) {
    const seq = effects.get(id) ?? [];
    const first = STEPS.map((s) => seq.indexOf(s));
    assert.ok(first.every((i) => i >= 0), `run ${id}: a step never ran (${seq.join(', ')})`);
    assert.ok(first[0] < first[1] && first[1] < first[2], `run ${id}: steps ran out of order (${seq.join(', ')})`);
    const extra = seq.length - STEPS.length;
    duplicates += extra;
    if (extra > 0) runsWithDuplicates++;
  }
  const bound = kills * CONCURRENCY;
  const summary = `seed ${seed}: ${lives} worker lives, ${kills} kills after ${delays.join('/')} ms, ${elapsed} ms in all; ${all.length} runs (${ids.length} acknowledged), ${lines.length} step executions, ${duplicates} duplicated (in ${runsWithDuplicates} runs; bound ${bound})`;
  t.diagnostic(summary);
  assert.ok(duplicates <= bound, `${duplicates} duplicated step executions exceed kills × concurrency = ${bound}`);
  keep = false;
}
