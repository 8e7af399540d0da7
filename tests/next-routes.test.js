// `durably/next` without Next: withDurably() on every shape of config, and the route
// handlers called directly with web Requests (routing, auth, errors, limits) against an
// engine on a temporary data folder. The full app is tested in next-e2e / next-dev.
const { test, before, after } = require('node:test');
const assert = require('node:assert');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
// As test runners (Jest, Vitest) set it: the API is open in development and test only.
process.env.NODE_ENV = 'test';
const { withDurably, durablyRoutes, dashboard } = require('../dist/next.js');
const durably = require('../dist/index.js');

let tmp;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-next-routes-'));
  durably.configure({ dataDir: tmp });
  durably.task({ id: 'echo', run: async (p) => ({ echoed: p }) });
  durably.task({
    id: 'approval',
    run: async (_p, { step }) => {
      const token = await step.createToken('token');
      return step.waitForToken('approved', token);
    },
  });
  await durably.start();
});

after(async () => {
  await durably.shutdown();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Runs `fn` with env vars set (undefined deletes), restoring them afterwards. */
async function withEnv(vars, fn) {
  const saved = {};
  for (const [k, v] of Object.entries(vars)) {
    saved[k] = process.env[k];
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

function req(method, p, body, headers = {}) {
  const init = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.headers['content-type'] ??= 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  return new Request(`http://127.0.0.1:3000/durably/${p}`, init);
}

async function call(routes, method, p, body, headers, context) {
  const res = await routes[method](req(method, p, body, headers), context);
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : null };
}

test('importing durably/next loads neither the engine nor the native addon', () => {
  const code = `
    const { withDurably } = require(${JSON.stringify(path.join(root, 'dist', 'next.js'))});
    withDurably({});
    const loaded = Object.keys(require.cache).filter((k) => /native\\.js$|\\.node$|engine\\.js$/.test(k));
    process.stdout.write(JSON.stringify(loaded));`;
  const out = execFileSync(process.execPath, ['-e', code], { encoding: 'utf8' });
  assert.deepStrictEqual(JSON.parse(out), []);
});

test('withDurably adds durably to serverExternalPackages and keeps the rest of the config', async () => {
  assert.deepStrictEqual(withDurably(), { serverExternalPackages: ['durably'] });
  const user = { reactStrictMode: true, serverExternalPackages: ['sharp'], experimental: { cpus: 2 } };
  const out = withDurably(user);
  assert.deepStrictEqual(out, { reactStrictMode: true, serverExternalPackages: ['sharp', 'durably'], experimental: { cpus: 2 } });
  assert.deepStrictEqual(user.serverExternalPackages, ['sharp'], 'the input is not mutated');
  const already = { serverExternalPackages: ['durably'] };
  assert.deepStrictEqual(withDurably(already).serverExternalPackages, ['durably']);

  // A config function (sync or async) stays a function and gets the same treatment.
  const fn = withDurably((phase, { defaultConfig }) => ({ distDir: `${phase}-${typeof defaultConfig}`, serverExternalPackages: ['pg'] }));
  assert.strictEqual(typeof fn, 'function');
  assert.deepStrictEqual(await fn('phase-production-server', { defaultConfig: {} }), { distDir: 'phase-production-server-object', serverExternalPackages: ['pg', 'durably'] });
  const asyncFn = withDurably(async () => ({ poweredByHeader: false }));
  assert.deepStrictEqual(await asyncFn('phase-development-server', { defaultConfig: {} }), { poweredByHeader: false, serverExternalPackages: ['durably'] });
  // A Promise of a config (which Next.js accepts) keeps the user's settings (it dropped them).
  const promised = withDurably(Promise.resolve({ basePath: '/app', serverExternalPackages: ['pg'] }));
  assert.ok(promised instanceof Promise);
  assert.deepStrictEqual(await promised, { basePath: '/app', serverExternalPackages: ['pg', 'durably'] });
});

test('dashboard is durablyRoutes under the name DESIGN uses', () => {
  assert.strictEqual(dashboard, durablyRoutes);
  const r = dashboard();
  assert.strictEqual(typeof r.GET, 'function');
  assert.strictEqual(typeof r.POST, 'function');
  assert.throws(() => durablyRoutes({ auth: 'yes' }), /auth must be a function/);
});

test('trigger, list, get, send and token completion through the handlers', async () => {
  const routes = durablyRoutes();
  const t = await call(routes, 'POST', 'trigger', { taskId: 'echo', payload: { n: 1 }, options: { tags: ['t1'] } });
  assert.strictEqual(t.status, 202, JSON.stringify(t.body));
  assert.strictEqual(t.body.taskId, 'echo');
  assert.strictEqual(t.headers.get('cache-control'), 'no-store');
  assert.deepStrictEqual(await durably.engine().result(t.body.id, { timeout: '10s' }), { echoed: { n: 1 } });

  const list = await call(routes, 'GET', 'runs?taskId=echo&tag=t1&limit=10');
  assert.strictEqual(list.status, 200);
  assert.deepStrictEqual(list.body.runs.map((r) => r.id), [t.body.id]);
  assert.strictEqual(typeof list.body.runs[0].createdAt, 'string', 'dates are ISO strings');

  // Next passes the catch-all segments as params (a Promise since Next 15).
  const one = await call(routes, 'GET', 'ignored', undefined, {}, { params: Promise.resolve({ path: ['runs', t.body.id] }) });
  assert.strictEqual(one.status, 200);
  assert.strictEqual(one.body.status, 'completed');
  assert.deepStrictEqual(one.body.output, { echoed: { n: 1 } });

  const root = await call(routes, 'GET', '', undefined, {}, { params: Promise.resolve({}) });
  assert.strictEqual(root.status, 200);
  assert.ok(Array.isArray(root.body.endpoints));

  const stats = await call(routes, 'GET', 'stats');
  assert.strictEqual(stats.status, 200);
  assert.strictEqual(typeof stats.body.ready, 'number');

  const sent = await call(routes, 'POST', 'send', { name: 'thing/happened', data: { x: 1 }, id: 'evt-route-1' });
  assert.strictEqual(sent.status, 202);
  assert.deepStrictEqual(sent.body.ids, ['evt-route-1']);

  // A run waiting for a token resumes with the data POSTed to tokens/:id/complete.
  const a = await call(routes, 'POST', 'trigger', { taskId: 'approval' });
  let token;
  for (let i = 0; i < 100 && !token; i++) {
    const run = await durably.runs.get(a.body.id);
    token = run.steps.find((s) => s.id === 'token' && s.status === 'completed')?.output?.id;
    if (!token) await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(token, 'the run created its token');
  const done = await call(routes, 'POST', `tokens/${token}/complete`, { data: { ok: true } });
  assert.strictEqual(done.status, 200, JSON.stringify(done.body));
  assert.deepStrictEqual(await durably.engine().result(a.body.id, { timeout: '10s' }), { ok: true });
});

test('bad input is a 4xx JSON error with a code', async () => {
  const routes = durablyRoutes({ maxBodyBytes: 1000 });
  const cases = [
    ['POST', 'trigger', { taskId: 'nope' }, 400, 'E_UNKNOWN_TASK'],
    ['POST', 'trigger', { taskId: 7 }, 400, 'E_BAD_OPTION'],
    ['POST', 'trigger', { taskId: 'echo', options: { runAt: 'someday' } }, 400, 'E_BAD_OPTION'],
    ['POST', 'trigger', { taskId: 'echo', options: { delay: -1 } }, 400, 'E_BAD_DURATION'],
    ['POST', 'trigger', 'not json', 400, 'E_BAD_REQUEST'],
    ['POST', 'trigger', 'null', 400, 'E_BAD_REQUEST'],
    ['POST', 'trigger', { taskId: 'echo', payload: 'x'.repeat(2000) }, 413, 'E_PAYLOAD_TOO_LARGE'],
    ['POST', 'send', { name: '' }, 400, 'E_BAD_OPTION'],
    ['POST', 'tokens//complete', {}, 404, 'E_NOT_FOUND'],
    ['GET', 'runs/nope', undefined, 404, 'E_RUN_NOT_FOUND'],
    ['GET', 'runs?since=yesterday', undefined, 400, 'E_BAD_OPTION'],
    ['GET', 'runs?limit=0', undefined, 400, 'E_BAD_OPTION'],
    ['GET', 'runs?status=nope', undefined, 400, 'E_BAD_OPTION'],
    ['GET', 'send', undefined, 405, 'E_METHOD_NOT_ALLOWED'],
    ['POST', 'runs', {}, 405, 'E_METHOD_NOT_ALLOWED'],
    ['POST', 'elsewhere', {}, 404, 'E_NOT_FOUND'],
    ['POST', 'runs/run_1/cancel', {}, 404, 'E_RUN_NOT_FOUND'],
    ['POST', 'runs/run_1/replay', {}, 404, 'E_RUN_NOT_FOUND'],
  ];
  for (const [method, p, body, status, code] of cases) {
    const r = await call(routes, method, p, body);
    assert.strictEqual(r.status, status, `${method} ${p}: ${JSON.stringify(r.body)}`);
    assert.strictEqual(r.body.error.code, code, `${method} ${p}: ${JSON.stringify(r.body)}`);
  }
  const big = await durablyRoutes().POST(req('POST', 'trigger', { taskId: 'echo', payload: 'x'.repeat(5 * 1024 * 1024) }));
  assert.strictEqual(big.status, 400);
  assert.strictEqual((await big.json()).error.code, 'E_PAYLOAD_TOO_LARGE');
  const text = await call(routes, 'POST', 'trigger', '{"taskId":"echo"}', { 'content-type': 'text/plain' });
  assert.strictEqual(text.status, 415);
  assert.strictEqual(text.body.error.code, 'E_BAD_REQUEST');
});

test('auth: open in development and test only; closed otherwise (unset, staging, prod …) unless the token or the callback allows', async () => {
  const routes = durablyRoutes();
  for (const env of ['development', 'test']) {
    await withEnv({ NODE_ENV: env, DURABLY_DASHBOARD_TOKEN: undefined }, async () => {
      assert.strictEqual((await call(routes, 'GET', 'runs')).status, 200, env);
    });
  }
  // Issue: it failed open for anything but exactly 'production'.
  for (const env of [undefined, '', 'staging', 'prod', 'Production', 'preview']) {
    await withEnv({ NODE_ENV: env, DURABLY_DASHBOARD_TOKEN: undefined }, async () => {
      assert.strictEqual((await call(routes, 'GET', 'runs')).status, 403, `NODE_ENV=${env}`);
      assert.strictEqual((await call(routes, 'POST', 'runs/x/cancel', {})).status, 403, `NODE_ENV=${env}`);
    });
  }
  await withEnv({ NODE_ENV: 'production', DURABLY_DASHBOARD_TOKEN: undefined }, async () => {
    const r = await call(routes, 'GET', 'runs');
    assert.strictEqual(r.status, 403);
    assert.strictEqual(r.body.error.code, 'E_FORBIDDEN');
    assert.match(r.body.error.message, /DURABLY_DASHBOARD_TOKEN/);
    assert.strictEqual((await call(routes, 'POST', 'trigger', { taskId: 'echo' })).status, 403);
  });
  await withEnv({ NODE_ENV: 'production', DURABLY_DASHBOARD_TOKEN: 's3cret' }, async () => {
    assert.strictEqual((await call(routes, 'GET', 'runs')).status, 403);
    assert.strictEqual((await call(routes, 'GET', 'runs', undefined, { authorization: 'Bearer wrong' })).status, 403);
    assert.strictEqual((await call(routes, 'GET', 'runs', undefined, { authorization: 'Bearer s3cret' })).status, 200);
    assert.strictEqual((await call(routes, 'GET', 'runs', undefined, { authorization: 'bearer  s3cret ' })).status, 200);
  });

  const seen = [];
  const custom = durablyRoutes({
    auth: (request) => {
      seen.push(request.url);
      const who = request.headers.get('x-user');
      if (who === 'admin') return true;
      if (who === 'guest') return Response.redirect('http://127.0.0.1:3000/login', 307);
      if (who === 'crash') throw new Error('session store down');
      return false;
    },
  });
  const consoleError = console.error;
  const logged = [];
  console.error = (...args) => logged.push(args.join(' '));
  await withEnv({ NODE_ENV: 'production', DURABLY_DASHBOARD_TOKEN: 's3cret' }, async () => {
    assert.strictEqual((await call(custom, 'GET', 'runs', undefined, { 'x-user': 'admin' })).status, 200);
    assert.strictEqual((await call(custom, 'GET', 'runs', undefined, { 'x-user': 'nobody' })).status, 403);
    assert.strictEqual((await custom.GET(req('GET', 'runs', undefined, { 'x-user': 'guest' }))).status, 307);
    assert.strictEqual((await call(custom, 'GET', 'runs', undefined, { 'x-user': 'crash' })).status, 403);
    // The operator's token is accepted whatever the callback says.
    assert.strictEqual((await call(custom, 'GET', 'runs', undefined, { authorization: 'Bearer s3cret' })).status, 200);
  }).finally(() => (console.error = consoleError));
  assert.ok(logged.some((l) => l.includes('session store down')), 'a throwing auth callback is logged');
  // The callback decides in development too.
  await withEnv({ NODE_ENV: 'development' }, async () => {
    assert.strictEqual((await call(custom, 'GET', 'runs')).status, 403);
  });
  assert.ok(seen.length >= 5);
});

test('basePath: mounted elsewhere, the handlers route by the URL when Next gives no params', async () => {
  const routes = durablyRoutes({ basePath: '/admin/jobs/' });
  const res = await routes.GET(new Request('http://127.0.0.1:3000/admin/jobs/runs?limit=1'));
  assert.strictEqual(res.status, 200);
  assert.ok(Array.isArray((await res.json()).runs));
  const enc = await routes.GET(new Request('http://127.0.0.1:3000/admin/jobs/runs/%E2%9C%93'));
  assert.strictEqual(enc.status, 404);
  assert.match((await enc.json()).error.message, /✓/);
});

