// The driver protocol under text the core cannot read (the JS layer validates first, so this
// is defence in depth — found by the bad-input matrix calling the addon directly): one bad
// op or group never sinks the others, and a run whose op cannot be read fails instead of
// hanging `running`.
const { test } = require('node:test');
const assert = require('node:assert');
const { NativeEngine } = require('../native.js');

const POLICY = '{"retry":{"maxAttempts":1,"factor":2,"minTimeoutMs":1000,"maxTimeoutMs":3600000,"randomize":true}}';
const LONE = '"\\ud800"'; // a JSON escape serde refuses: a lone surrogate

function engine() {
  const nat = NativeEngine.open({ manualClockMs: 1_700_000_000_000 });
  nat.registerTask('t', POLICY);
  return nat;
}

test('a trigger group or an event group the core cannot read fails alone', async () => {
  const nat = engine();
  const t = JSON.parse(await nat.trigger(['[{"task":"t","payload":1}]', `[{"task":${LONE},"payload":1}]`]));
  assert.ok(t[0].ids, JSON.stringify(t));
  assert.match(t[1].error, /^E_BAD_OPTION/);
  const s = JSON.parse(await nat.send(['[{"name":"ok"}]', `[{"name":${LONE}}]`]));
  assert.ok(s[0].ids, JSON.stringify(s));
  assert.match(s[1].error, /^E_BAD_OPTION/);
  nat.close();
});

test('an op the core cannot read fails its run; the other ops of the batch land', async () => {
  const nat = engine();
  const [{ ids: [a] }, { ids: [b] }] = JSON.parse(await nat.trigger(['[{"task":"t","payload":1}]', '[{"task":"t","payload":2}]']));
  const claimed = JSON.parse(await nat.claim(10));
  assert.strictEqual(claimed.runs.length, 2);
  await nat.report([`{"op":"wait","run":"${a}","waits":[{"kind":"sleep","key":${LONE},"wakeAt":1}]}`, `{"op":"complete","run":"${b}","output":2}`]);
  await nat.flush();
  const ra = JSON.parse(nat.getRun(a));
  const rb = JSON.parse(nat.getRun(b));
  assert.strictEqual(ra.status, 'failed', 'not left running');
  assert.strictEqual(ra.error.code, 'E_INTERNAL');
  assert.strictEqual(rb.status, 'completed');
  nat.close();
});

test('a schedule or a policy the core cannot read is E_BAD_OPTION, not E_INTERNAL', async () => {
  const nat = engine();
  await assert.rejects(nat.createSchedule(`{"task":"t","cron":"* * * * *","tz":${LONE}}`), /^Error: E_BAD_OPTION/);
  assert.throws(() => nat.registerTask('u', `{"on":[{"event":${LONE}}]}`), /E_BAD_OPTION/);
  nat.close();
});
