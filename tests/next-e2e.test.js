// End to end in a real Next.js 16 app (examples/nextjs): `next build` (4 build workers, no
// store opened), then `next start` on 127.0.0.1 with a temporary data folder. The sign-up
// server action is posted the way a browser without JavaScript posts it (the form's hidden
// $ACTION_ID_ field, multipart, same origin); the JSON API of `durably/next` drives the rest.
const { test, before, after } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { buildExample, lockExample, startServer, api, poll, getRun, runCompleted, TOKEN } = require('./fixtures/next-helper');

let tmp;
let release;
let server;
let build;
const outputs = [];

function serverEnv() {
  return { DURABLY_DATA_DIR: path.join(tmp, 'data'), ONBOARDING_SLEEP: '3s', ONBOARDING_CONFIRM_TIMEOUT: '2m' };
}

async function start() {
  server = await startServer({ mode: 'start', env: serverEnv() });
  outputs.push(server);
  return server;
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-next-e2e-'));
  release = await lockExample();
  build = await buildExample();
  await start();
});

after(async () => {
  if (server) await server.stop();
  release?.();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** The run of `taskId` whose payload has this email (newest first). */
async function findRun(taskId, email) {
  const r = await api(server, 'GET', `runs?taskId=${encodeURIComponent(taskId)}&limit=200`);
  assert.strictEqual(r.status, 200, JSON.stringify(r.body));
  return r.body.runs.find((run) => run.payload && run.payload.email === email) ?? null;
}

test('next build succeeds with experimental.cpus = 4 and opens no store in its workers', (t) => {
  // buildExample() throws if the build failed, ran with another worker count, or created
  // the data folder given as DURABLY_DATA_DIR.
  if (build.built) t.diagnostic(`next build took ${build.ms} ms`);
  else t.diagnostic('reused .next: a build of identical sources passed the same checks');
  assert.ok(fs.existsSync(path.join(__dirname, '..', 'examples', 'nextjs', '.next', 'BUILD_ID')));
});

test('the sign-up server action, posted as a browser without JavaScript posts it, starts the email task and the sequence', async () => {
  const home = await fetch(server.base + '/');
  assert.strictEqual(home.status, 200);
  const html = await home.text();
  const form = /<form[^>]*id="sign-up"[^>]*>([\s\S]*?)<\/form>/.exec(html);
  assert.ok(form, 'the home page renders the sign-up form');
  const action = /name="(\$ACTION_ID_[0-9a-f]+)"/.exec(form[1]);
  assert.ok(action, `the sign-up form carries its server action id: ${form[0]}`);

  const email = `ada-${Date.now()}@example.com`;
  const fd = new FormData();
  fd.append(action[1], '');
  fd.append('email', email);
  const res = await fetch(server.base + '/', { method: 'POST', body: fd, redirect: 'manual', headers: { origin: server.base } });
  assert.strictEqual(res.status, 303, await res.text());
  assert.strictEqual(res.headers.get('location'), `/runs?signedUp=${encodeURIComponent(email)}`);

  // Task style: onboarding-email ran to completion.
  const emailRun = await poll('the onboarding-email run', () => findRun('onboarding-email', email));
  const done = await runCompleted(server, emailRun.id);
  assert.strictEqual(done.output.sent, true);
  assert.deepStrictEqual(done.steps.map((s) => s.id).sort(), ['load-user', 'send-confirmation']);
  // Event style: user/signed-up started the sequence, now in its durable sleep.
  const seq = await poll('the onboarding-sequence run', () => findRun('onboarding-sequence', email));
  assert.strictEqual(seq.event.name, 'user/signed-up');

  // The runs page shows payloads: under `next start` it needs the operator token.
  const closed = await (await fetch(server.base + res.headers.get('location'))).text();
  assert.ok(!closed.includes(emailRun.id) && !closed.includes(email), 'no runs or payloads without the token');
  assert.match(closed, /operator token/);
  const inv = await fetch(server.base + '/api/invoices?accountId=acme');
  assert.strictEqual(inv.status, 403, 'the invoices listing needs the token too');
  // With it, the page (a dynamic server component) lists them and refreshes itself.
  const page = await fetch(server.base + res.headers.get('location') + `&token=${TOKEN}`);
  assert.strictEqual(page.status, 200);
  const runsHtml = await page.text();
  assert.match(runsHtml, /<meta http-equiv="refresh" content="2"/);
  assert.ok(runsHtml.includes(emailRun.id) && runsHtml.includes(seq.id), 'the runs page lists both runs');
});

test('through the JSON API: trigger and send start runs; the sequence sleeps, waits for user/confirmed, completes', async () => {
  const email = `grace-${Date.now()}@example.com`;
  const trig = await api(server, 'POST', 'trigger', { taskId: 'onboarding-email', payload: { userId: 'u_grace', email }, options: { tags: ['user:u_grace'] } });
  assert.strictEqual(trig.status, 202, JSON.stringify(trig.body));
  assert.strictEqual(trig.body.taskId, 'onboarding-email');
  const sent = await api(server, 'POST', 'send', { name: 'user/signed-up', data: { userId: 'u_grace', email } });
  assert.strictEqual(sent.status, 202, JSON.stringify(sent.body));
  assert.strictEqual(sent.body.ids.length, 1);

  const emailRun = await runCompleted(server, trig.body.id);
  assert.deepStrictEqual(emailRun.tags, ['user:u_grace']);
  const byTag = await api(server, 'GET', 'runs?tag=user%3Au_grace');
  assert.deepStrictEqual(byTag.body.runs.map((r) => r.id), [trig.body.id]);

  const seq = await poll('the sequence run', () => findRun('onboarding-sequence', email));
  // After the 3 s sleep it sends the tips, then parks on waitForEvent.
  await poll('the sequence to wait for user/confirmed', async () => {
    const r = await getRun(server, seq.id);
    return r.steps.some((s) => s.id === 'wait-for-confirmation' && s.status === 'waiting') ? r : null;
  }, { timeoutMs: 20_000 });
  const confirm = await api(server, 'POST', 'send', { name: 'user/confirmed', data: { email } });
  assert.strictEqual(confirm.status, 202);
  const done = await runCompleted(server, seq.id);
  assert.strictEqual(done.output.confirmed, true);
  assert.deepStrictEqual(
    done.steps.map((s) => s.id).sort(),
    ['pause-before-tips', 'send-getting-started', 'send-tips', 'send-welcome', 'wait-for-confirmation'],
  );

  const invoice = await fetch(server.base + '/api/invoices', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ accountId: 'acme', lines: [{ description: 'Pro plan', amountCents: 4900 }, { description: 'Seats', amountCents: 1100 }] }),
  });
  assert.strictEqual(invoice.status, 202);
  const { runId } = await invoice.json();
  const inv = await runCompleted(server, runId);
  assert.strictEqual(inv.output.totalCents, 6000);
  assert.deepStrictEqual(inv.tags, ['account:acme']);
});

test('a run asleep when the server gets SIGTERM completes after a restart, without repeating its steps', async (t) => {
  const email = `sleeper-${Date.now()}@example.com`;
  const sent = await api(server, 'POST', 'send', { name: 'user/signed-up', data: { userId: 'u_sleeper', email } });
  assert.strictEqual(sent.status, 202);
  const seq = await poll('the sequence to be asleep', async () => {
    const run = await findRun('onboarding-sequence', email);
    if (!run) return null;
    const r = await getRun(server, run.id);
    return r.steps.some((s) => s.id === 'pause-before-tips' && s.status === 'waiting') ? r : null;
  });
  const first = server;
  const t0 = Date.now();
  const exit = await first.stop('SIGTERM');
  const stopMs = Date.now() - t0;
  assert.notStrictEqual(exit.signal, 'SIGKILL', `next start did not stop on SIGTERM:\n${first.output()}`);
  assert.ok(first.output().includes(`to=${email} template=welcome`));
  assert.ok(!first.output().includes(`to=${email} template=tips`), 'the sleep had not ended before the SIGTERM');

  server = null;
  await start();
  await api(server, 'POST', 'send', { name: 'user/confirmed', data: { email } });
  const done = await runCompleted(server, seq.id, 30_000);
  assert.strictEqual(done.output.confirmed, true);
  const out = server.output();
  assert.ok(out.includes(`to=${email} template=tips`), 'the restarted server ran the rest of the run');
  assert.ok(!out.includes(`to=${email} template=welcome`), 'the completed step was not run again');
  assert.strictEqual(done.steps.find((s) => s.id === 'send-welcome').attempts, 1);
  t.diagnostic(`next start exited ${stopMs} ms after SIGTERM`);
});

test('bad input answers 4xx with a JSON error code, never 500', async () => {
  const cases = [
    ['POST', 'trigger', { taskId: 'no-such-task', payload: {} }, 400, 'E_UNKNOWN_TASK'],
    ['POST', 'trigger', { payload: {} }, 400, 'E_BAD_OPTION'],
    ['POST', 'trigger', { taskId: 'hello', options: { delay: 'soon' } }, 400, 'E_BAD_DURATION'],
    ['POST', 'trigger', { taskId: 'hello', options: { tags: 'x' } }, 400, 'E_BAD_OPTION'],
    ['POST', 'trigger', '{"taskId": ', 400, 'E_BAD_REQUEST'],
    ['POST', 'trigger', [1, 2], 400, 'E_BAD_REQUEST'],
    ['POST', 'send', { data: {} }, 400, 'E_BAD_OPTION'],
    ['GET', 'runs/run_does_not_exist', undefined, 404, 'E_RUN_NOT_FOUND'],
    ['GET', 'runs?limit=abc', undefined, 400, 'E_BAD_OPTION'],
    ['GET', 'runs?status=sleeping', undefined, 400, 'E_BAD_OPTION'],
    ['GET', 'nothing/here', undefined, 404, 'E_NOT_FOUND'],
    ['GET', 'trigger', undefined, 405, 'E_METHOD_NOT_ALLOWED'],
    ['POST', 'runs/run_x/cancel', {}, 404, 'E_RUN_NOT_FOUND'],
    ['POST', 'runs/run_x/replay', {}, 404, 'E_RUN_NOT_FOUND'],
  ];
  for (const [method, p, body, status, code] of cases) {
    const r = await api(server, method, p, body);
    assert.strictEqual(r.status, status, `${method} ${p}: ${JSON.stringify(r.body)}`);
    assert.strictEqual(r.body.error.code, code, `${method} ${p}`);
    assert.strictEqual(typeof r.body.error.message, 'string');
  }
  // A form post (not JSON) cannot reach a mutation.
  const form = await api(server, 'POST', 'trigger', '{"taskId":"hello"}', { headers: { 'content-type': 'text/plain' } });
  assert.strictEqual(form.status, 415);
  // In production (next start) the API is closed without the token.
  for (const token of [null, 'wrong-token']) {
    const r = await api(server, 'GET', 'runs', undefined, { token });
    assert.strictEqual(r.status, 403);
    assert.strictEqual(r.body.error.code, 'E_FORBIDDEN');
    const w = await api(server, 'POST', 'trigger', { taskId: 'hello' }, { token });
    assert.strictEqual(w.status, 403);
  }
  const inv = await fetch(server.base + '/api/invoices', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"accountId":"acme"}' });
  assert.strictEqual(inv.status, 400);
});

test('no server process found the data folder locked', () => {
  for (const s of outputs) {
    assert.doesNotMatch(s.output(), /E_DATA_DIR_LOCKED|could not acquire lock/);
  }
});
