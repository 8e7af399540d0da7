#!/usr/bin/env node
// Soak: steady mixed load for an hour with retention on; is the store size and the
// process's memory flat once retention keeps up? (issue "bounded over months").
//
//   node bench/soak.js [--minutes 60] [--rate 200] [--retention 2m] [--out bench/soak]
//
// Every second, `rate` units of work: 3-step order runs throttled per customer (every
// customer key is new: per-key state must not add up), runs that sleep 1–20 s, events that
// start debounced digests (key: an expression, 'event.data.group'), runs waiting for a
// reply event (half get one, half time out), and cancels. Retention (default 2 minutes here,
// 7 days in production) removes what ended. Every 15 s it samples the process RSS, the JS
// heap, the store's size on disk and the engine's counters; at the end it prints the growth
// over the last 40 minutes and writes `<out>.csv` and `<out>.svg` (a plot).
'use strict';
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const args = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const MINUTES = Number(arg('minutes', 60));
const RATE = Number(arg('rate', 200));
const RETENTION = arg('retention', '2m');
const OUT = arg('out', path.join(__dirname, 'soak'));
const SAMPLE_MS = Number(process.env.SOAK_SAMPLE_MS ?? 15_000);

process.env.DURABLY_PURGE_INTERVAL_MS ??= '5000';
const durably = require('../dist/index.js');
const { task, configure, start, shutdown, send, runs, stats } = durably;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-soak-'));
configure({ dataDir: dir, retention: RETENTION, concurrency: 200 });

const order = task({
  id: 'soak-order',
  throttle: { limit: 5, period: '1s', key: (p) => p.customer },
  run: async (p, { step }) => {
    const a = await step.run('reserve', () => ({ sku: p.sku, qty: 1 }));
    const b = await step.run('charge', () => ({ cents: 100 * p.n }));
    await step.run('ship', () => ({ ok: true, a, b }));
    return 'shipped';
  },
});
const nap = task({
  id: 'soak-nap',
  run: async (p, { step }) => {
    await step.sleep('nap', p.ms);
    return step.run('after', () => p.ms);
  },
});
task({
  id: 'soak-digest',
  on: 'soak/signal',
  debounce: { period: '2s', key: 'event.data.group' },
  run: async (data, { step }) => step.run('digest', () => data.group),
});
const waiter = task({
  id: 'soak-waiter',
  run: async (p, { step }) => {
    const reply = await step.waitForEvent('reply', { event: 'soak/reply', match: 'data.id', timeout: '10s' });
    return reply ? 'answered' : 'timed out';
  },
});

function dirSize(d) {
  let n = 0;
  for (const e of fs.readdirSync(d, { withFileTypes: true })) {
    const p = path.join(d, e.name);
    n += e.isDirectory() ? dirSize(p) : fs.statSync(p).size;
  }
  return n;
}

const samples = [];
let counter = 0;
let submitted = 0;
let failures = 0;

async function tick() {
  const jobs = [];
  for (let i = 0; i < RATE; i++) {
    const n = ++counter;
    const kind = n % 8;
    if (kind < 4) jobs.push(order.trigger({ customer: `c-${n}`, sku: `s${n % 50}`, n: n % 10 }));
    else if (kind < 6) jobs.push(nap.trigger({ ms: 1000 + (n % 20) * 1000 }));
    else if (kind === 6) jobs.push(send({ name: 'soak/signal', data: { group: `g${n % 500}`, n } }));
    else {
      jobs.push(
        waiter.trigger({ id: `w${n}` }).then((h) => {
          if (n % 16 === 7) setTimeout(() => send({ name: 'soak/reply', data: { id: `w${n}` } }).catch(() => failures++), 1000);
          if (n % 160 === 15) setTimeout(() => h.cancel().catch(() => failures++), 500);
          return h;
        }),
      );
    }
  }
  const settled = await Promise.allSettled(jobs);
  submitted += settled.length;
  failures += settled.filter((s) => s.status === 'rejected').length;
}

async function sample(t0) {
  global.gc?.();
  const m = process.memoryUsage();
  const s = await stats();
  const row = {
    min: (Date.now() - t0) / 60_000,
    rssMB: m.rss / 2 ** 20,
    heapMB: m.heapUsed / 2 ** 20,
    storeMB: dirSize(dir) / 2 ** 20,
    ready: s.ready,
    delayed: s.delayed,
    waiting: s.waiting,
    running: s.running,
    flowKeys: s.flowKeys,
    runs: (await runs.list({ limit: 1000 })).runs.length,
    submitted,
    failures,
  };
  samples.push(row);
  process.stdout.write(`${row.min.toFixed(1)} min  rss ${row.rssMB.toFixed(0)} MB  heap ${row.heapMB.toFixed(0)} MB  store ${row.storeMB.toFixed(0)} MB  ready ${row.ready} delayed ${row.delayed} waiting ${row.waiting} flowKeys ${row.flowKeys}  submitted ${submitted} failed ${failures}\n`);
}

/** Least-squares slope of `key` per 10 minutes over samples after `fromMin`. */
function slope(key, fromMin) {
  const pts = samples.filter((s) => s.min >= fromMin);
  const n = pts.length;
  if (n < 2) return NaN;
  const mx = pts.reduce((a, p) => a + p.min, 0) / n;
  const my = pts.reduce((a, p) => a + p[key], 0) / n;
  const num = pts.reduce((a, p) => a + (p.min - mx) * (p[key] - my), 0);
  const den = pts.reduce((a, p) => a + (p.min - mx) ** 2, 0);
  return (num / den) * 10;
}

function svg() {
  const W = 720;
  const H = 300;
  const pad = 40;
  const maxX = Math.max(...samples.map((s) => s.min), 1);
  const maxY = Math.max(...samples.map((s) => Math.max(s.rssMB, s.storeMB)), 1) * 1.1;
  const x = (v) => pad + (v / maxX) * (W - 2 * pad);
  const y = (v) => H - pad - (v / maxY) * (H - 2 * pad);
  const line = (key, color) => `<polyline fill="none" stroke="${color}" stroke-width="2" points="${samples.map((s) => `${x(s.min).toFixed(1)},${y(s[key]).toFixed(1)}`).join(' ')}"/>`;
  const ticks = [];
  for (let m = 0; m <= maxX; m += 10) ticks.push(`<text x="${x(m)}" y="${H - pad + 16}" font-size="11" text-anchor="middle">${m}</text>`);
  for (let v = 0; v <= maxY; v += Math.max(50, Math.round(maxY / 5 / 50) * 50)) ticks.push(`<text x="${pad - 6}" y="${y(v) + 4}" font-size="11" text-anchor="end">${v}</text>`);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="${W / 2}" y="18" font-size="13" text-anchor="middle">durably soak: ${RATE} units/s, retention ${RETENTION} — MB over minutes</text>
<line x1="${pad}" y1="${H - pad}" x2="${W - pad}" y2="${H - pad}" stroke="#999"/><line x1="${pad}" y1="${pad}" x2="${pad}" y2="${H - pad}" stroke="#999"/>
${ticks.join('\n')}
${line('rssMB', '#c50f1f')}
${line('storeMB', '#0058a3')}
${line('heapMB', '#107c10')}
<text x="${W - pad}" y="${pad}" font-size="12" text-anchor="end" fill="#c50f1f">process RSS</text>
<text x="${W - pad}" y="${pad + 16}" font-size="12" text-anchor="end" fill="#0058a3">store on disk</text>
<text x="${W - pad}" y="${pad + 32}" font-size="12" text-anchor="end" fill="#107c10">JS heap</text>
</svg>\n`;
}

(async () => {
  await start();
  const t0 = Date.now();
  const end = t0 + MINUTES * 60_000;
  let next = Date.now();
  let nextSample = t0;
  while (Date.now() < end) {
    if (Date.now() >= nextSample) {
      await sample(t0);
      nextSample += SAMPLE_MS;
    }
    await tick();
    next += 1000;
    const wait = next - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    else next = Date.now(); // behind: do not try to catch up
  }
  await sample(t0);
  const from = Math.max(0, MINUTES - 40);
  const summary = {
    minutes: MINUTES,
    rate: RATE,
    retention: RETENTION,
    submitted,
    failures,
    lastRssMB: samples.at(-1).rssMB,
    lastStoreMB: samples.at(-1).storeMB,
    rssSlopeMBper10min: slope('rssMB', from),
    storeSlopeMBper10min: slope('storeMB', from),
    heapSlopeMBper10min: slope('heapMB', from),
    flowKeysMax: Math.max(...samples.map((s) => s.flowKeys)),
  };
  fs.writeFileSync(`${OUT}.csv`, ['min,rssMB,heapMB,storeMB,ready,delayed,waiting,running,flowKeys,runs,submitted,failures', ...samples.map((s) => [s.min.toFixed(2), s.rssMB.toFixed(1), s.heapMB.toFixed(1), s.storeMB.toFixed(1), s.ready, s.delayed, s.waiting, s.running, s.flowKeys, s.runs, s.submitted, s.failures].join(','))].join('\n') + '\n');
  fs.writeFileSync(`${OUT}.svg`, svg());
  console.log(JSON.stringify(summary));
  await shutdown();
  if (args.includes('--keep')) console.log(`store kept in ${dir}`);
  else fs.rmSync(dir, { recursive: true, force: true });
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
