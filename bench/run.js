#!/usr/bin/env node
// durably benchmark (DESIGN §5, workloads W1–W4), durability 'sync'.
//
//   node bench/run.js [--only W1,W3] [--sync-delay 2]
//
// Each workload runs in its own child process (the engine is a per-process singleton) on a
// fresh temporary dataDir. `--sync-delay N` sets DURABLY_SIM_SYNC_DELAY_MS=N: the core pauses
// N ms after every fsync (a stand-in for a cloud disk). Prints a table and one JSON line.
// Profiling: BENCH_NODE_ARGS='--perf-basic-prof' passes node flags to the children;
// BENCH_SCALE=10 makes W2/W4 ten times longer (the figures then are not the §5 workloads).
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const WORKLOADS = ['W1', 'W2', 'W2F', 'W3', 'W4', 'W5', 'W5B', 'E1', 'E2'];

// ---------------------------------------------------------------------------------------
// helpers

const now = () => process.hrtime.bigint();
// BENCH_MARKS=1: print CLOCK_MONOTONIC seconds at phase boundaries to stderr, to slice a
// `perf record -k mono` profile with `perf report --time a,b`.
const mark = (what) => process.env.BENCH_MARKS && process.stderr.write(`mark ${what} ${(Number(now()) / 1e9).toFixed(6)}\n`);
const ms = (ns) => Number(ns) / 1e6;

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

function summary(values) {
  const s = [...values].sort((a, b) => a - b);
  return { p50: percentile(s, 50), p95: percentile(s, 95), p99: percentile(s, 99), max: s[s.length - 1], n: s.length };
}

async function countCompleted(runs, taskId) {
  let n = 0;
  let cursor;
  do {
    const page = await runs.list({ taskId, status: 'completed', limit: 1000, cursor });
    n += page.runs.length;
    cursor = page.cursor;
  } while (cursor);
  return n;
}

/** Pre-enqueues n runs (batchTrigger takes at most 10,000 per call). */
async function enqueue(t, n) {
  const handles = [];
  for (let i = 0; i < n; i += 10_000) {
    const items = Array.from({ length: Math.min(10_000, n - i) }, (_, j) => ({ payload: { i: i + j } }));
    handles.push(...(await t.batchTrigger(items)));
  }
  return handles;
}

// ---------------------------------------------------------------------------------------
// workloads (child side)

// Profiling only (env BENCH_SCALE, default 1): multiplies the run counts of W2 and W4.
const SCALE = Math.max(1, Number(process.env.BENCH_SCALE) || 1);

const workloads = {
  // W1 enqueue: 10k triggers from 50 concurrent callers; batchTrigger of 1,000.
  async W1(d) {
    d.configure({ dataDir: d.dataDir });
    const t = d.task({ id: 'w1-noop', run: async () => null });
    // Warm-up (opens the store, JIT): not measured. The executor is not started.
    for (let i = 0; i < 200; i++) await t.trigger({ i });
    await t.batchTrigger(Array.from({ length: 1000 }, (_, i) => ({ payload: { i } })));

    const N = 10_000;
    const CALLERS = 50;
    let t0 = now();
    await Promise.all(
      Array.from({ length: CALLERS }, async (_, c) => {
        for (let i = 0; i < N / CALLERS; i++) await t.trigger({ c, i });
      }),
    );
    const singleMs = ms(now() - t0);

    const items = Array.from({ length: 1000 }, (_, i) => ({ payload: { i, user: `user-${i}` } }));
    t0 = now();
    await t.batchTrigger(items);
    const oneBatchMs = ms(now() - t0);
    t0 = now();
    for (let b = 0; b < 10; b++) await t.batchTrigger(items);
    const tenBatchesMs = ms(now() - t0);
    return {
      triggersPerSec: N / (singleMs / 1000),
      singleMs,
      batch1000Ms: oneBatchMs,
      batchRunsPerSec: 10_000 / (tenBatchesMs / 1000),
      tenBatchesMs,
    };
  },

  // W2 throughput: 10k pre-enqueued no-op runs at concurrency 50.
  async W2(d) {
    const N = 10_000 * SCALE;
    d.configure({ dataDir: d.dataDir, concurrency: 50 });
    let done = 0;
    let lastId = null;
    let allReturned;
    const returned = new Promise((r) => (allReturned = r));
    const t = d.task({
      id: 'w2-noop',
      run: async (_p, { run }) => {
        if (++done === N) {
          lastId = run.id;
          allReturned();
        }
        return null;
      },
    });
    const handles = await enqueue(t, N);
    const byId = new Map(handles.map((h) => [h.id, h]));
    const t0 = now();
    mark('exec-start');
    await d.start();
    await returned;
    const returnedMs = ms(now() - t0);
    // The last run to return: its result() resolves once its completion is durable. Reports
    // are sent in order and group-committed, so the earlier completions are durable by then
    // or within the same commit cycle; the count below checks that none is missing.
    await byId.get(lastId).result();
    const elapsedMs = ms(now() - t0);
    mark('exec-end');
    const completed = await countCompleted(d.runs, 'w2-noop');
    if (completed !== N) throw new Error(`W2: ${completed} of ${N} runs completed after the last result()`);
    return { runsPerSec: N / (elapsedMs / 1000), elapsedMs, lastReturnedMs: returnedMs, rssMb: process.memoryUsage().rss / 1048576 };
  },

  // W2F: W2 with flow control on — 10,000 distinct concurrency keys and 1,000 throttled
  // keys (limits that never bind), to measure the scheduler's overhead: ≥ 70% of W2.
  async W2F(d) {
    const N = 10_000 * SCALE;
    d.configure({ dataDir: d.dataDir, concurrency: 50 });
    let done = 0;
    let lastId = null;
    let allReturned;
    const returned = new Promise((r) => (allReturned = r));
    const t = d.task({
      id: 'w2f-noop',
      run: async (_p, { run }) => {
        if (++done === N) {
          lastId = run.id;
          allReturned();
        }
        return null;
      },
      concurrency: { limit: 5, key: (p) => `c${p.i % 10_000}` },
      throttle: { limit: 1000, period: '1s', key: (p) => `t${p.i % 1_000}` },
    });
    const handles = await enqueue(t, N);
    const byId = new Map(handles.map((h) => [h.id, h]));
    const t0 = now();
    await d.start();
    await returned;
    await byId.get(lastId).result();
    const elapsedMs = ms(now() - t0);
    const completed = await countCompleted(d.runs, 'w2f-noop');
    if (completed !== N) throw new Error(`W2F: ${completed} of ${N} runs completed after the last result()`);
    return { runsPerSec: N / (elapsedMs / 1000), elapsedMs };
  },

  // W3 latency: 500 sequential triggers, each awaited to durable completion.
  async W3(d) {
    d.configure({ dataDir: d.dataDir });
    const started = new Map();
    const t = d.task({
      id: 'w3-noop',
      run: async (p) => {
        started.set(p.i, now());
        return null;
      },
    });
    await d.start();
    for (let i = 0; i < 50; i++) await (await t.trigger({ i: -1 - i })).result(); // warm-up
    const toStart = [];
    const toDone = [];
    for (let i = 0; i < 500; i++) {
      const t0 = now();
      const h = await t.trigger({ i });
      await h.result();
      const t2 = now();
      toStart.push(ms(started.get(i) - t0));
      toDone.push(ms(t2 - t0));
    }
    return { triggerToStartMs: summary(toStart), triggerToCompletedMs: summary(toDone) };
  },

  // W4 workflow: 2,000 runs of 3 sequential step.run at concurrency 50.
  async W4(d) {
    const N = 2000 * SCALE;
    d.configure({ dataDir: d.dataDir, concurrency: 50 });
    let done = 0;
    let lastId = null;
    let allReturned;
    const returned = new Promise((r) => (allReturned = r));
    const t = d.task({
      id: 'w4-steps',
      run: async (p, { step, run }) => {
        const a = await step.run('one', () => p.i);
        const b = await step.run('two', () => a + 1);
        const c = await step.run('three', () => b + 1);
        if (++done === N) {
          lastId = run.id;
          allReturned();
        }
        return c;
      },
    });
    const handles = await enqueue(t, N);
    const byId = new Map(handles.map((h) => [h.id, h]));
    const t0 = now();
    mark('exec-start');
    await d.start();
    await returned;
    await byId.get(lastId).result();
    const elapsedMs = ms(now() - t0);
    mark('exec-end');
    const completed = await countCompleted(d.runs, 'w4-steps');
    if (completed !== N) throw new Error(`W4: ${completed} of ${N} runs completed after the last result()`);
    return { runsPerSec: N / (elapsedMs / 1000), elapsedMs };
  },

  // W5 sleep: 100k runs parked on a durable sleep → RSS growth and store size while parked;
  // then they all wake at once and drain. Runs arrive as in an app: one trigger() per call
  // from 50 concurrent callers (W5B: batchTrigger of 10k at a time).
  W5: (d) => parkAndDrain(d, 'single'),
  W5B: (d) => parkAndDrain(d, 'batch'),

  // E1 event ingest: 10k send() calls from 50 concurrent callers, each event starting a run
  // of its one subscriber.
  async E1(d) {
    const N = 10_000;
    d.configure({ dataDir: d.dataDir });
    d.task({ id: 'e1-sub', on: 'bench/e1', run: async () => null });
    for (let i = 0; i < 200; i++) await d.send({ name: 'bench/warm', data: { i } });
    const t0 = now();
    await Promise.all(
      Array.from({ length: 50 }, async (_, c) => {
        for (let i = 0; i < N / 50; i++) await d.send({ name: 'bench/e1', data: { c, i } });
      }),
    );
    const sendMs = ms(now() - t0);
    return { eventsPerSec: N / (sendMs / 1000), sendMs };
  },

  // E2 events to parked waits: 10k runs parked on waitForEvent (distinct match values), then
  // 10k matching events from 50 concurrent callers; time until every run completed.
  async E2(d) {
    const N = 10_000;
    d.configure({ dataDir: d.dataDir, concurrency: 100 });
    let done = 0;
    let allDone;
    const finished = new Promise((r) => (allDone = r));
    const t = d.task({
      id: 'e2-waiter',
      run: async (p, { step }) => {
        const e = await step.waitForEvent('paid', { event: 'bench/paid', match: 'data.k' });
        if (++done === N) allDone();
        return e ? 1 : 0;
      },
    });
    await d.start();
    await enqueue({ batchTrigger: (items) => t.batchTrigger(items.map((it) => ({ payload: { k: `k${it.payload.i}` } }))) }, N);
    for (;;) {
      const s = await d.stats();
      if (s.waiting >= N) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const t0 = now();
    await Promise.all(
      Array.from({ length: 50 }, async (_, c) => {
        for (let i = c; i < N; i += 50) await d.send({ name: 'bench/paid', data: { k: `k${i}` } });
      }),
    );
    const sendMs = ms(now() - t0);
    await finished;
    const allMs = ms(now() - t0);
    return { eventsPerSec: N / (sendMs / 1000), sendMs, resumedRunsPerSec: N / (allMs / 1000), allMs };
  },
};

function dirBytes(dir) {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    n += e.isDirectory() ? dirBytes(p) : fs.statSync(p).size;
  }
  return n;
}

async function parkAndDrain(d, load) {
  const N = Number(process.env.BENCH_W5_RUNS) || 100_000;
  d.configure({ dataDir: d.dataDir });
  let woke = 0;
  let allWoke;
  const drained = new Promise((r) => (allWoke = r));
  const t = d.task({
    id: 'w5-sleeper',
    run: async (p, { step }) => {
      await step.run('before', () => 1);
      await step.sleepUntil('nap', p.wakeAt);
      if (++woke === N) allWoke();
      return null;
    },
  });
  await d.start();
  for (let i = 0; i < 200; i++) await t.trigger({ wakeAt: 0 }); // warm-up
  woke = 0;
  global.gc?.();
  await new Promise((r) => setTimeout(r, 1000));
  const rss0 = process.memoryUsage().rss;
  const wakeAt = Date.now() + 40_000;
  const t0 = now();
  if (load === 'batch') {
    for (let i = 0; i < N; i += 10_000) {
      await t.batchTrigger(Array.from({ length: Math.min(10_000, N - i) }, () => ({ payload: { wakeAt } })));
    }
  } else {
    await Promise.all(
      Array.from({ length: 50 }, async () => {
        for (let i = 0; i < N / 50; i++) await t.trigger({ wakeAt });
      }),
    );
  }
  // Parked: every run has stored 'before' and reported its sleep.
  for (;;) {
    const s = await d.stats();
    if (s.delayed >= N && s.running === 0 && s.ready === 0) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const parkMs = ms(now() - t0);
  // RSS once the process has been idle for a second (the runs sleep for far longer).
  global.gc?.();
  await new Promise((r) => setTimeout(r, 1000));
  const rss1 = process.memoryUsage().rss;
  const storeBytes = dirBytes(d.dataDir);
  if (Date.now() >= wakeAt) throw new Error('W5: parking took longer than the sleep; raise the sleep');
  await new Promise((r) => setTimeout(r, wakeAt - Date.now()));
  const t1 = now();
  await drained;
  const drainMs = ms(now() - t1);
  return { runs: N, parkMs, rssGrowthMb: (rss1 - rss0) / 1048576, storeMb: storeBytes / 1048576, drainMs, drainRunsPerSec: N / (drainMs / 1000) };
}

async function child(name) {
  const dataDir = process.env.BENCH_DATA_DIR;
  const d = require('durably');
  const res = await workloads[name]({ ...d, dataDir });
  await d.shutdown();
  process.stdout.write(`RESULT ${JSON.stringify(res)}\n`);
}

// ---------------------------------------------------------------------------------------
// parent

function runChild(name, syncDelay) {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), `durably-bench-${name}-`));
  const env = { ...process.env, BENCH_DATA_DIR: dataDir };
  delete env.DURABLY_DATA_DIR;
  delete env.DURABLY_CONCURRENCY;
  delete env.DURABLY_DURABILITY;
  if (syncDelay > 0) env.DURABLY_SIM_SYNC_DELAY_MS = String(syncDelay);
  else delete env.DURABLY_SIM_SYNC_DELAY_MS;
  const nodeArgs = (process.env.BENCH_NODE_ARGS || '').split(' ').filter(Boolean);
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [...nodeArgs, __filename, '--child', name], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.setEncoding('utf8');
    c.stdout.on('data', (s) => (out += s));
    c.on('close', (code, signal) => {
      fs.rmSync(dataDir, { recursive: true, force: true });
      const m = /^RESULT (.*)$/m.exec(out);
      if (code !== 0 || !m) return reject(new Error(`${name} failed (code ${code}, signal ${signal}):\n${out}`));
      resolve(JSON.parse(m[1]));
    });
  });
}

const f0 = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : String(x));
const f2 = (x) => (Number.isFinite(x) ? x.toFixed(2) : String(x));

function verdict(value, target, higherIsBetter) {
  const met = higherIsBetter ? value >= target : value <= target;
  const pct = higherIsBetter ? ((target - value) / target) * 100 : ((value - target) / target) * 100;
  return met ? 'met' : `missed by ${pct.toFixed(0)}%`;
}

// The throwaway prototype's figures (BUILDCHAIN.md, same machine kind, C=50), for reference.
const PROTOTYPE = {
  0: { W1: 38_000, W2: 49_000, startP50: 0.53, doneP50: 1.12, doneP99: 2.5, W4: 11_000 },
  2: { W2: 15_000, doneP50: 5.5, W4: 3_800 },
};

function rows(r, syncDelay) {
  const out = [];
  const proto = PROTOTYPE[syncDelay] ?? {};
  // The §5 targets are for the local disk; with a simulated sync delay they are shown for scale.
  const local = syncDelay === 0;
  const add = (w, metric, value, fmt, target, hib, ref) =>
    out.push([
      w,
      metric,
      fmt(value),
      target === undefined ? '' : `${hib ? '≥' : '≤'} ${fmt(target)}`,
      target === undefined ? '' : local ? verdict(value, target, hib) : `(${verdict(value, target, hib)})`,
      ref === undefined ? '' : fmt(ref),
    ]);
  if (r.W1) {
    add('W1', 'triggers/s (50 callers, 10k)', r.W1.triggersPerSec, f0, 40_000, true, proto.W1);
    add('W1', 'batchTrigger(1000), ms/call', r.W1.batch1000Ms, f2);
    add('W1', 'batchTrigger ×10 → runs/s', r.W1.batchRunsPerSec, f0);
  }
  if (r.W2) add('W2', 'no-op runs/s (10k, C=50)', r.W2.runsPerSec, f0, 50_000, true, proto.W2);
  if (r.W2F) {
    add('W2F', 'no-op runs/s, 10k concurrency + 1k throttle keys', r.W2F.runsPerSec, f0);
    if (r.W2) add('W2F', 'W2F / W2 (%)', (100 * r.W2F.runsPerSec) / r.W2.runsPerSec, f0, 70, true);
  }
  if (r.W3) {
    const s = r.W3.triggerToStartMs;
    const c = r.W3.triggerToCompletedMs;
    add('W3', 'trigger→start p50 ms', s.p50, f2, 0.6, false, proto.startP50);
    add('W3', 'trigger→start p95 / p99 ms', s.p95, (x) => `${f2(x)} / ${f2(s.p99)}`);
    add('W3', 'trigger→completed p50 ms', c.p50, f2, 1.2, false, proto.doneP50);
    add('W3', 'trigger→completed p95 ms', c.p95, f2);
    add('W3', 'trigger→completed p99 ms', c.p99, f2, 3, false, proto.doneP99);
  }
  if (r.W4) add('W4', '3-step runs/s (2k, C=50)', r.W4.runsPerSec, f0, 12_000, true, proto.W4);
  for (const [w, how] of [['W5', 'trigger() ×50 callers'], ['W5B', 'batchTrigger 10k']]) {
    if (!r[w]) continue;
    add(w, `RSS growth, ${f0(r[w].runs)} runs asleep, ${how} (MB)`, r[w].rssGrowthMb, f0, 150, false);
    add(w, 'store size while asleep (MB)', r[w].storeMb, f0);
    add(w, 'runs parked per s (trigger → asleep)', r[w].runs / (r[w].parkMs / 1000), f0);
    add(w, 'drain after all wake, runs/s', r[w].drainRunsPerSec, f0);
  }
  if (r.E1) add('E1', 'send() events/s, 1 subscriber', r.E1.eventsPerSec, f0);
  if (r.E2) {
    add('E2', 'send() events/s to 10k parked waits', r.E2.eventsPerSec, f0);
    add('E2', 'parked runs resumed+completed /s', r.E2.resumedRunsPerSec, f0);
  }
  return out;
}

function table(data) {
  const head = ['', 'metric', 'value', 'target', '', 'prototype'];
  const all = [head, ...data];
  const w = head.map((_, i) => Math.max(...all.map((r) => String(r[i]).length)));
  return all.map((r) => r.map((c, i) => (i === 2 ? String(c).padStart(w[i]) : String(c).padEnd(w[i]))).join('  ').trimEnd()).join('\n');
}

async function parent(argv) {
  let only = WORKLOADS;
  let syncDelay = 0;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--only') only = argv[++i].split(',').map((s) => s.trim().toUpperCase());
    else if (argv[i] === '--sync-delay') syncDelay = Number(argv[++i]);
    else throw new Error(`unknown argument ${argv[i]}; usage: node bench/run.js [--only W1,W3] [--sync-delay 2]`);
  }
  for (const w of only) if (!WORKLOADS.includes(w)) throw new Error(`unknown workload ${w}`);
  if (!Number.isFinite(syncDelay) || syncDelay < 0) throw new Error('--sync-delay takes a number of ms');
  const results = {};
  for (const w of only) {
    const t0 = Date.now();
    results[w] = await runChild(w, syncDelay);
    process.stderr.write(`${w} done in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  }
  console.log(`durably bench — durability sync, sync delay ${syncDelay} ms, node ${process.version}, ${os.cpus().length} CPUs`);
  console.log(table(rows(results, syncDelay)));
  if (syncDelay > 0) console.log('(targets are for the local disk; with a simulated sync delay they are shown for scale only)');
  console.log(JSON.stringify({ syncDelayMs: syncDelay, node: process.version, date: new Date().toISOString(), results }));
}

if (process.argv[2] === '--child') {
  child(process.argv[3]).catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  parent(process.argv.slice(2)).catch((e) => {
    console.error(e.message);
    process.exit(1);
  });
}
