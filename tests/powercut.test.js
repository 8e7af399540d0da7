// Power-loss test of "acknowledged means on disk" (DESIGN: trigger() and a step's promise
// resolve only after the write is fsynced), without FUSE and without network.
//
// A worker (tests/fixtures/powercut-worker.js) runs a workload in `sync` durability under
// tests/powercut/powercut.so, an LD_PRELOAD library that journals the pre-image of every
// write to the data folder and every fsync (see the comment at the top of powercut.c for why
// this is LazyFS's clear-cache). The worker prints each acknowledgement as it happens. A cut:
// SIGSTOP the worker (nothing more gets acknowledged), SIGKILL it, then undo every write
// that no fsync covered (tests/powercut/undo.js). A checker process (same file, no shim)
// then opens the store and verifies the acknowledgements: the store opens at all, the run
// exists with its payload, the step is stored completed with its output. It checks all of
// this life's, 1000 older ones at random, and after the last cut every one. The next worker
// continues in the same folder, as a server would after the power came back; a store that
// no longer opens is counted (all its acknowledgements as lost) and replaced by a new one.
//
//   POWERCUT_SEED=<n>   replay a printed seed        POWERCUT_CUTS=<n>  cuts per variant
//   POWERCUT_KEEP=1     keep the data folders, journals and acknowledgements
//
// The shim's own self-test runs first, so a shim that journals nothing cannot make the
// durability tests pass vacuously; they also require that their cuts did drop writes.
'use strict';
const { describe, test, before, after } = require('node:test');
const assert = require('node:assert');
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { undo, readJournal } = require('./powercut/undo.js');

const WORKER = path.join(__dirname, 'fixtures', 'powercut-worker.js');
const SHIM_SRC = path.join(__dirname, 'powercut', 'powercut.c');
const SELFTEST_SRC = path.join(__dirname, 'powercut', 'selftest.c');
const CUTS = Number(process.env.POWERCUT_CUTS || 20);
const MIN_RUN_MS = 300;
const MAX_RUN_MS = 2000;
const SMALL = 64 * 1024; // the summary tells losses of small values (far below sled's blob size) apart

const gcc = spawnSync('gcc', ['--version'], { stdio: 'ignore' });
const skip =
  process.platform !== 'linux'
    ? 'the powercut shim is Linux-only (LD_PRELOAD, /proc/self/fd)'
    : gcc.error || gcc.status !== 0
      ? 'gcc not found: cannot build the powercut LD_PRELOAD shim (apt-get install gcc)'
      : false;
if (skip) console.log(`# powercut tests skipped: ${skip}`);

// mulberry32
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

const base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'durably-powercut-')));
const SHIM = path.join(base, 'powercut.so');
const SELFTEST = path.join(base, 'selftest');
const KEEP = process.env.POWERCUT_KEEP === '1';
const children = new Set();

before(() => {
  if (skip) return;
  for (const args of [
    ['-shared', '-fPIC', '-O2', '-Wall', '-o', SHIM, SHIM_SRC, '-ldl', '-lpthread'],
    ['-O2', '-Wall', '-o', SELFTEST, SELFTEST_SRC],
  ]) {
    const r = spawnSync('gcc', args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`gcc ${args.join(' ')} failed:\n${r.stderr}`);
  }
});

after(() => {
  for (const c of children) c.kill('SIGKILL');
  if (KEEP) console.log(`# powercut files kept in ${base}`);
  else fs.rmSync(base, { recursive: true, force: true });
});

/** Spawns a process; `ready` resolves once a stdout line matches `readyRe` (or at exit). */
function launch(cmd, args, env, readyRe) {
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  let onReady;
  const ready = new Promise((r) => (onReady = r));
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (d) => {
    stdout += d;
    if (readyRe && readyRe.test(stdout)) onReady(true);
  });
  child.stderr.on('data', (d) => (stderr += d));
  const exit = new Promise((resolve) =>
    child.on('close', (code, signal) => {
      children.delete(child);
      onReady(false);
      resolve({ code, signal, stdout, stderr });
    }),
  );
  return { child, ready, exit };
}

/** The cut: stop (no more acknowledgements), kill, wait until the process is gone. */
async function cut(p) {
  p.child.kill('SIGSTOP');
  p.child.kill('SIGKILL');
  return p.exit;
}

function workerEnv(extra) {
  const env = { ...process.env, ...extra };
  delete env.DURABLY_DATA_DIR; // would override the worker's dataDir
  delete env.DURABLY_CONCURRENCY;
  delete env.NODE_OPTIONS;
  if (!extra.LD_PRELOAD) delete env.LD_PRELOAD;
  return env;
}

test('powercut shim: a cut leaves every file as of its last fsync (self-test)', { skip }, async () => {
  const dir = path.join(base, 'selftest-dir');
  const expect = path.join(base, 'selftest-expect');
  const journal = path.join(base, 'selftest-journal');
  fs.mkdirSync(dir);
  fs.mkdirSync(expect);
  const p = launch(SELFTEST, [dir, expect], workerEnv({ LD_PRELOAD: SHIM, POWERCUT_DIR: dir, POWERCUT_JOURNAL: journal }), /^READY$/m);
  const ok = await p.ready;
  const r = await cut(p);
  assert.ok(ok, `self-test did not get ready: code ${r.code} signal ${r.signal}\n${r.stdout}\n${r.stderr}`);

  const names = fs.readdirSync(dir).sort();
  assert.deepStrictEqual(names, ['a', 'b', 'c', 'd', 'f', 'g', 'h', 'i'], 'metadata operations pass through');
  // Before the undo the files hold unsynced data (else the comparison below proves nothing).
  const differs = names.filter((n) => {
    const want = fs.existsSync(path.join(expect, n)) ? fs.readFileSync(path.join(expect, n)) : Buffer.alloc(0);
    return !fs.readFileSync(path.join(dir, n)).equals(want);
  });
  assert.deepStrictEqual(differs, ['a', 'b', 'c', 'd', 'h', 'i'], 'files with unsynced changes before the cut');

  const types = new Set(readJournal(journal).map((x) => x.type));
  for (const t of ['W', 'T', 'F', 'S', 'G', 'O', 'R']) assert.ok(types.has(t), `journal has a ${t} record`);
  const stats = undo(dir, journal);
  for (const n of names) {
    const got = fs.readFileSync(path.join(dir, n));
    if (fs.existsSync(path.join(expect, n))) {
      assert.ok(got.equals(fs.readFileSync(path.join(expect, n))), `${n} equals its content at its last fsync (${got.length} B)`);
    } else {
      assert.strictEqual(got.length, 0, `${n} was never fsynced: empty after the cut`);
    }
  }
  assert.strictEqual(stats.files.b.synced, 0);
  assert.ok(stats.files.c.synced >= 1, 'fdatasync through a second (read-only) descriptor counts');
  assert.strictEqual(stats.files.f.undone, 0, 'a new file that reuses an unlinked inode keeps its synced data');
});

// The two variants run side by side (each is mostly waiting for its worker), to stay near a
// minute in all on two cores.
describe('power cuts', { concurrency: 2 }, () => {
  test('with small payloads only: no acknowledged run or step is lost', { skip, timeout: 240_000 }, (t) => torture(t, 'small'));
  test('with 300 KB and 2 MB payloads and step outputs: no acknowledged run or step is lost', { skip, timeout: 240_000 }, (t) =>
    torture(t, 'mixed'),
  );
});

/** Acknowledgements of one store: `run <id> <bytes> <hash>` / `step <run> <step> <bytes> <hash>`. */
class Acks {
  constructor() {
    this.runs = new Map(); // id → line
    this.steps = new Map(); // `${run}/${step}` → line
    this.conflicts = [];
  }
  add(lines) {
    for (const l of lines) {
      const f = l.split(' ');
      if (f[0] === 'run') this.runs.set(f[1], l);
      else if (f[0] === 'step') {
        const key = `${f[1]}/${f[2]}`;
        const prev = this.steps.get(key);
        // A step acknowledged again (a replay after a cut) must return the output it was
        // acknowledged with; another output means the first one was lost and the step re-ran.
        if (prev && prev.split(' ')[4] !== f[4]) this.conflicts.push(`${key} (${f[3]} B): acknowledged again with another output`);
        else if (!prev) this.steps.set(key, l);
      }
    }
  }
}

async function torture(t, variant) {
  const seed = process.env.POWERCUT_SEED ? Number(process.env.POWERCUT_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
  console.log(`# powercut (${variant}) seed ${seed} (POWERCUT_SEED=${seed} to replay)`);
  t.diagnostic(`seed ${seed}`);
  const rand = prng(seed); // the schedule: lives' seeds and run times
  const sampler = prng(seed ^ 0x5eed5eed); // which older acknowledgements to re-check
  const t0 = Date.now();

  let store = 0; // a store that fails to open is replaced by a fresh one, to keep measuring
  let dataDir;
  let acks;
  const newStore = () => {
    store++;
    dataDir = path.join(base, `${variant}-data-${store}`);
    fs.mkdirSync(dataDir, { recursive: true });
    acks = new Acks();
  };
  newStore();

  const sum = { cuts: 0, runs: 0, steps: 0, openFailures: [], died: [], dropped: 0, droppedBlobs: 0, droppedDb: 0, syncs: 0 };
  const lostRuns = new Map(); // `${variant}#${store} ${id}` → payload bytes
  const lostSteps = new Map(); // `${variant}#${store} ${run}/${step}` → output bytes
  const bytesOf = (l) => Number((l.match(/\((\d+) B\)/) || [0, 0])[1]);
  const closeStore = () => {
    sum.runs += acks.runs.size;
    sum.steps += acks.steps.size;
  };

  for (let i = 0; i < CUTS; i++) {
    const last = i === CUTS - 1;
    const lifeSeed = (rand() * 2 ** 32) >>> 0;
    const runMs = MIN_RUN_MS + Math.floor(rand() * (MAX_RUN_MS - MIN_RUN_MS));
    const journal = path.join(base, `${variant}-journal-${i}`);
    const env = workerEnv({ LD_PRELOAD: SHIM, POWERCUT_DIR: dataDir, POWERCUT_JOURNAL: journal });
    const tStart = Date.now();
    const w = launch(process.execPath, [WORKER, 'work', dataDir, variant, String(lifeSeed)], env, /^RUNNING$/m);
    const running = await w.ready;
    const startMs = Date.now() - tStart;
    let r;
    if (running) {
      await new Promise((res) => setTimeout(res, runMs));
      r = await cut(w);
    } else {
      r = await w.exit;
    }
    sum.cuts++;
    if (r.signal !== 'SIGKILL') {
      // It ended by itself: it could not open the store, or it failed while running.
      sum.died.push(`cut ${i}: worker exited with code ${r.code} before the cut: ${(r.stdout.match(/^OPENFAIL.*$/m) || [r.stderr.trim().split('\n').slice(-3).join(' | ')])[0]}`);
    }
    const fresh = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('ack '))
      .map((l) => l.slice(4));
    const before = { runs: acks.runs.size, steps: acks.steps.size };
    acks.add(fresh);
    for (const c of acks.conflicts.splice(0)) lostSteps.set(`${variant}#${store} ${c.split(' ')[0]}`, bytesOf(c));

    const u = undo(dataDir, journal);
    sum.dropped += u.undone;
    sum.syncs += u.syncs;
    for (const [f, s] of Object.entries(u.files)) {
      if (f.startsWith('blobs')) sum.droppedBlobs += s.undone;
      if (f === 'db') sum.droppedDb += s.undone;
    }
    if (!KEEP) fs.rmSync(journal, { force: true });

    // Check this life's acknowledgements, a sample of 1000 older ones (a cut must not lose
    // what earlier lives were promised either), and after the last cut all of them.
    const runLines = [...acks.runs.values()];
    const stepLines = [...acks.steps.values()];
    const pick = (lines, from) => (last ? lines : [...lines.slice(from), ...sample(lines.slice(0, from), 1000, sampler)]);
    const toCheck = [...pick(runLines, before.runs), ...pick(stepLines, before.steps)];
    const ackFile = path.join(base, `${variant}-check-${i}`);
    fs.writeFileSync(ackFile, toCheck.map((l) => `${l}\n`).join(''));
    const tCheck = Date.now();
    const c = launch(process.execPath, [WORKER, 'check', dataDir, ackFile], workerEnv({}));
    const cr = await c.exit;
    const checkMs = Date.now() - tCheck;
    if (!KEEP) fs.rmSync(ackFile, { force: true });
    let res;
    try {
      res = JSON.parse(cr.stdout.trim().split('\n').pop());
    } catch {
      res = { opened: false, error: `checker exited with code ${cr.code} signal ${cr.signal}: ${cr.stderr.trim().split('\n').slice(0, 3).join(' | ')}`, runs: 0, steps: 0, lostRuns: [], lostSteps: [] };
    }
    for (const l of res.lostRuns) lostRuns.set(`${variant}#${store} ${l.split(' ')[0]}`, bytesOf(l));
    for (const l of res.lostSteps) lostSteps.set(`${variant}#${store} ${l.split(' ')[0]}`, bytesOf(l));
    const line =
      `# [${variant}] cut ${i}: start ${startMs} ms, ran ${running ? runMs : 0} ms, check ${checkMs} ms; ` +
      `+${acks.runs.size - before.runs} runs +${acks.steps.size - before.steps} steps acknowledged; dropped ${u.undone} unsynced changes ` +
      `(${(u.bytesDropped / 1e6).toFixed(1)} MB in ${Object.values(u.files).filter((s) => s.undone).length} files); ` +
      (res.opened
        ? `store opened, ${res.runs} runs / ${res.steps} steps checked, lost ${res.lostRuns.length} / ${res.lostSteps.length}`
        : `STORE FAILED TO OPEN: ${res.error.slice(0, 200)}`);
    console.log(line);
    for (const l of [...res.lostRuns, ...res.lostSteps].slice(0, 3)) console.log(`#   [${variant}] lost: ${l}`);
    if (!res.opened) {
      sum.openFailures.push(`cut ${i}: ${res.error.slice(0, 300)}`);
      // Every acknowledgement in this store is unverifiable: count it as checked and lost.
      for (const [id, l] of acks.runs) lostRuns.set(`${variant}#${store} ${id}`, Number(l.split(' ')[2]));
      for (const [id, l] of acks.steps) lostSteps.set(`${variant}#${store} ${id}`, Number(l.split(' ')[3]));
      closeStore();
      if (!KEEP) fs.rmSync(dataDir, { recursive: true, force: true });
      newStore();
    }
  }
  closeStore();
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  const summary =
    `powercut (${variant}) seed ${seed}: ${sum.cuts} cuts in ${secs} s, ${store} store(s); ` +
    `acknowledged ${sum.runs} runs and ${sum.steps} steps checked; lost ${lostRuns.size} runs and ${lostSteps.size} steps ` +
    `(of which ${[...lostRuns.values()].filter((b) => b < SMALL).length} runs and ${[...lostSteps.values()].filter((b) => b < SMALL).length} steps ` +
    `had a value under ${SMALL / 1024} KiB); ` +
    `store failed to open ${sum.openFailures.length}×; workers that died before their cut ${sum.died.length}; ` +
    `unsynced changes dropped ${sum.dropped} (db ${sum.droppedDb}, blobs ${sum.droppedBlobs}); fsyncs seen ${sum.syncs}`;
  console.log(`# ${summary}`);
  t.diagnostic(summary);

  // Not vacuous: there was work, the shim saw the store's fsyncs, and cuts dropped writes.
  assert.ok(sum.runs > 0 && sum.steps > 0, 'the workload acknowledged runs and steps');
  assert.ok(sum.syncs > 0, 'the shim saw the store fsync');
  assert.ok(sum.dropped > 0, 'the cuts dropped unsynced writes');
  // The promise.
  const problems = [
    ...sum.openFailures.map((f) => `store failed to open after ${f}`),
    ...sum.died,
    ...(lostRuns.size ? [`${lostRuns.size} acknowledged runs lost, e.g. ${[...lostRuns.keys()].slice(0, 3).join(', ')}`] : []),
    ...(lostSteps.size ? [`${lostSteps.size} acknowledged steps lost, e.g. ${[...lostSteps.keys()].slice(0, 3).join(', ')}`] : []),
  ];
  assert.deepStrictEqual(problems, [], `${summary}\n(replay: POWERCUT_SEED=${seed} node --test tests/powercut.test.js)`);
}

/** Up to n elements of arr, chosen with rand. */
function sample(arr, n, rand) {
  if (arr.length <= n) return arr;
  const a = arr.slice();
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(rand() * (a.length - i));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a.slice(0, n);
}
