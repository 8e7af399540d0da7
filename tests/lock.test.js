// One engine per data folder (DESIGN §1.7), and rolling deploys (issue: a second server on
// the same folder answered every request with a 500): while this process holds a data
// folder, another process's start() resolves at once and waits for the folder in the
// background; its calls that need the store wait up to `lockTimeout`, then reject with
// E_DATA_DIR_LOCKED naming the folder's absolute path (its JSON API answers 503 without
// the path); the moment this process shuts down, the other takes over and runs what is
// queued — nothing lost.
const { test, after } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { task, configure, start, shutdown, runs } = require('durably');

const root = path.resolve(__dirname, '..');
const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'durably-lock-')));
configure({ dataDir: dir });
after(async () => {
  await shutdown({ timeout: '2s' });
  fs.rmSync(dir, { recursive: true, force: true });
});

const echo = task({ id: 'lock-echo', run: async (p) => p });

/**
 * A second server on `dataDir` (started in the package root, so that require('durably')
 * resolves). It prints one JSON line per event; `send(line)` writes a command to it.
 */
function secondServer(dataDir, lockTimeout) {
  const script = `
    const { configure, start, shutdown, task, trigger, runs } = require('durably');
    const { durablyRoutes } = require('durably/next');
    configure({ dataDir: process.argv[1], lockTimeout: process.argv[2] });
    task({ id: 'lock-echo', run: async (p) => ({ by: process.pid, p }) });
    const out = (o) => console.log(JSON.stringify(o));
    const t0 = Date.now();
    start().then(() => out({ started: true, ms: Date.now() - t0 }), (e) => out({ startFailed: e.code, message: e.message }));
    const routes = durablyRoutes({ auth: () => true });
    require('node:readline').createInterface({ input: process.stdin }).on('line', async (line) => {
      const cmd = JSON.parse(line);
      try {
        if (cmd.do === 'trigger') {
          const h = await trigger('lock-echo', cmd.payload);
          out({ triggered: h.id, result: await h.result({ timeout: '20s' }) });
        } else if (cmd.do === 'api') {
          const res = await routes.GET(new Request('http://127.0.0.1/durably/runs'));
          out({ api: res.status, body: await res.json() });
        } else if (cmd.do === 'get') {
          const r = await runs.get(cmd.id);
          out({ got: r && { status: r.status, output: r.output } });
        } else if (cmd.do === 'exit') {
          await shutdown();
          out({ exited: true });
          process.exit(0);
        }
      } catch (e) {
        out({ failed: e.code, message: e.message, after: Date.now() - t0 });
      }
    });
  `;
  const env = { ...process.env, NODE_ENV: 'production' };
  delete env.DURABLY_DATA_DIR;
  const child = spawn(process.execPath, ['-e', script, dataDir, lockTimeout], { cwd: root, env, stdio: ['pipe', 'pipe', 'pipe'] });
  const lines = [];
  const waiters = [];
  let buf = '';
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  child.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = JSON.parse(buf.slice(0, i));
      buf = buf.slice(i + 1);
      lines.push(line);
      for (const w of waiters.splice(0)) w();
    }
  });
  return {
    child,
    stderr: () => stderr,
    send: (o) => child.stdin.write(JSON.stringify(o) + '\n'),
    /** The next line (after those already taken) that has `key`. */
    async next(key, ms = 30_000) {
      const deadline = Date.now() + ms;
      for (;;) {
        const i = lines.findIndex((l) => key in l);
        if (i >= 0) return lines.splice(i, 1)[0];
        if (Date.now() > deadline) throw new Error(`no ${key} from the second server; stderr:\n${stderr}`);
        await new Promise((r) => {
          waiters.push(r);
          setTimeout(r, 200);
        });
      }
    },
  };
}

test('a second process on a folder in use starts at once, and its calls fail with E_DATA_DIR_LOCKED after lockTimeout', async () => {
  await start();
  const h = await echo.trigger('before');
  assert.strictEqual(await h.result({ timeout: '5s' }), 'before');

  const s = secondServer(path.relative(root, dir), '300ms');
  try {
    const started = await s.next('started');
    assert.ok(started.ms < 2000, `start() resolved in ${started.ms} ms, while the folder is held elsewhere`);
    s.send({ do: 'trigger', payload: 1 });
    const failed = await s.next('failed');
    assert.strictEqual(failed.failed, 'E_DATA_DIR_LOCKED');
    assert.ok(failed.message.includes(dir), `message ${JSON.stringify(failed.message)} should name ${dir}`);
    assert.match(failed.message, /another process/);
    // The JSON API of that server answers 503, without naming the server's folders.
    s.send({ do: 'api' });
    const api = await s.next('api');
    assert.strictEqual(api.api, 503);
    assert.strictEqual(api.body.error.code, 'E_DATA_DIR_LOCKED');
    assert.ok(!api.body.error.message.includes(dir), api.body.error.message);
    // This process's engine is unaffected.
    const h2 = await echo.trigger('still open');
    assert.strictEqual(await h2.result({ timeout: '5s' }), 'still open');
    s.send({ do: 'exit' });
    await s.next('exited');
  } finally {
    s.child.kill('SIGKILL');
  }
});

test('a rolling deploy: the new server takes over the moment the old one shuts down, and runs what was queued', async () => {
  await start();
  const queued = await echo.trigger('queued before the deploy', { delay: '1500ms' });
  const s = secondServer(dir, '30s');
  try {
    await s.next('started');
    // A trigger on the new server waits for the folder (within lockTimeout) …
    s.send({ do: 'trigger', payload: 'new server' });
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    await shutdown(); // … the old server goes away …
    const done = await s.next('triggered');
    // … and the new one took over: it ran the trigger, and the run the old one had queued.
    assert.strictEqual(done.result.p, 'new server');
    assert.notStrictEqual(done.result.by, process.pid);
    for (let i = 0; i < 100; i++) {
      s.send({ do: 'get', id: queued.id });
      const g = await s.next('got');
      if (g.got.status === 'completed') {
        assert.deepStrictEqual(g.got.output.p, 'queued before the deploy', 'the new server ran it');
        break;
      }
      if (i === 99) assert.fail(`the queued run did not complete on the new server: ${JSON.stringify(g)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    console.log(`# takeover: the waiting trigger completed ${Date.now() - t0} ms after the old server's shutdown began`);
    s.send({ do: 'exit' });
    await s.next('exited');
  } finally {
    s.child.kill('SIGKILL');
  }
  // And back: this process reopens the folder and sees everything.
  await start();
  const earlier = await runs.get(queued.id);
  assert.strictEqual(earlier.status, 'completed');
});
