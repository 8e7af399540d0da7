// Schedules through the public API, under the manual clock of durably/testing.
const { test } = require('node:test');
const assert = require('node:assert');
const { createTestEngine } = require('durably/testing');

function engineAt(t, iso) {
  const e = createTestEngine({ now: iso });
  t.after(() => e.close());
  return e;
}

test("a task's schedule fires at local time in its zone, on both sides of a DST switch", async (t) => {
  const e = engineAt(t, '2026-03-27T12:00:00Z'); // Paris switches to summer time on 03-29
  const ticks = [];
  e.task({ id: 'daily', schedule: { cron: '30 8 * * *', tz: 'Europe/Paris' }, run: async (p) => ticks.push(p.timestamp) });
  await e.idle();
  await e.advance('1 day');
  await e.advance('1 day');
  assert.deepStrictEqual(ticks, ['2026-03-28T07:30:00.000Z', '2026-03-29T06:30:00.000Z']);
});

test('after a long pause the missed ticks fire once, as the latest one', async (t) => {
  const e = engineAt(t, '2026-01-05T12:00:00Z');
  const ticks = [];
  e.task({ id: 'hourly', schedule: '0 * * * *', run: async (p) => ticks.push([p.timestamp, p.lastTimestamp]) });
  await e.idle();
  await e.advance('5h');
  assert.deepStrictEqual(ticks, [['2026-01-05T17:00:00.000Z', null]]);
  await e.advance('1h');
  assert.deepStrictEqual(ticks[1], ['2026-01-05T18:00:00.000Z', '2026-01-05T17:00:00.000Z']);
});

test('a clock moving backwards never fires a tick twice', async (t) => {
  const e = engineAt(t, '2026-01-05T12:30:00Z');
  const ticks = [];
  e.task({ id: 'hourly2', schedule: '0 * * * *', run: async (p) => ticks.push(p.timestamp) });
  await e.advance('30m');
  await e.setTime('2026-01-05T11:00:00Z');
  await e.advance('2h');
  assert.deepStrictEqual(ticks, ['2026-01-05T13:00:00.000Z'], 'the 13:00 tick fired once; 14:00 is not due yet');
});

test('schedules.create runs a task per externalId with its own payload; list and delete', async (t) => {
  const e = engineAt(t, '2026-01-05T12:00:00Z');
  const got = [];
  e.task({ id: 'digest', run: async (p) => got.push(p) });
  const s = await e.schedules.create({ task: 'digest', cron: '0 9 * * *', tz: 'America/New_York', externalId: 'user-42', payload: { userId: 42 } });
  assert.strictEqual(s.nextTick.toISOString(), '2026-01-05T14:00:00.000Z');
  const again = await e.schedules.create({ task: 'digest', cron: '0 10 * * *', tz: 'America/New_York', externalId: 'user-42', payload: { userId: 42 } });
  assert.strictEqual(again.id, s.id);
  assert.deepStrictEqual((await e.schedules.list({ task: 'digest' })).map((x) => x.cron), ['0 10 * * *']);
  await e.advance('3h');
  assert.deepStrictEqual(got, [{ userId: 42 }]);
  assert.strictEqual(await e.schedules.delete(s.id), true);
  await e.advance('1 day');
  assert.strictEqual(got.length, 1);
});

test('a bad cron pattern or zone fails at task() time naming the option', (t) => {
  const e = engineAt(t, '2026-01-05T12:00:00Z');
  assert.throws(() => e.task({ id: 'bad-cron', schedule: '0 25 * * *', run: async () => {} }), (err) => err.code === 'E_BAD_CRON' && /schedule/.test(err.message));
  assert.throws(() => e.task({ id: 'bad-tz', schedule: { cron: '0 9 * * *', tz: 'Mars/Base' }, run: async () => {} }), (err) => err.code === 'E_BAD_OPTION' && /schedule\.tz/.test(err.message));
});
