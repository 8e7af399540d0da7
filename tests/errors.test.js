// Bad input fails with a typed DurablyError at the call, and writes nothing (DESIGN §1.1,
// §1.2, §3.8): non-JSON and oversized payloads, unknown task ids, bad durations, tags and
// task options. Async functions reject, they never throw synchronously.
const { test, before, after } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { task, trigger, configure, start, shutdown, runs, DurablyError } = require('durably');

const LIMIT = 2048;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-errors-'));
// concurrency 1: runs execute one after another in trigger order, so once a run triggered
// later has finished, anything wrongly enqueued earlier has run too (see assertNothingRan).
configure({ dataDir: dir, maxPayloadBytes: LIMIT, concurrency: 1 });
before(() => start());
after(async () => {
  await shutdown({ timeout: '2s' });
  fs.rmSync(dir, { recursive: true, force: true });
});

let targetRuns = 0;
const target = task({
  id: 'errors-target',
  run: async () => {
    targetRuns++;
  },
});
const sentinel = task({ id: 'errors-sentinel', run: async () => 'done' });
const accepted = task({ id: 'errors-accepted', run: async (p) => typeof p });

const stored = async () => (await runs.list({ limit: 1000 })).runs.length;

/** A validator for assert.rejects/throws: a DurablyError with this code (and option). */
function durablyError(code, option) {
  return (e) => {
    assert.ok(e instanceof DurablyError, `expected a DurablyError, got ${e && e.stack}`);
    assert.strictEqual(e.code, code, e.message);
    if (option !== undefined) assert.strictEqual(e.option, option, e.message);
    assert.ok(e.message.length > 0);
    return true;
  };
}

/** `call()` returns a promise (no synchronous throw) that rejects per `check`; the store is unchanged. */
async function rejectsWithoutWriting(call, check) {
  const before = await stored();
  let p;
  assert.doesNotThrow(() => {
    p = call();
  }, 'an async API must reject, not throw synchronously');
  assert.ok(p instanceof Promise);
  await assert.rejects(p, check);
  assert.strictEqual(await stored(), before, 'nothing was written');
}

/** Nothing of errors-target ever executed (runs run in order, one at a time). */
async function assertNothingRan() {
  await (await sentinel.trigger()).result({ timeout: '5s' });
  assert.strictEqual(targetRuns, 0);
}

test('payloads JSON cannot represent are rejected with E_PAYLOAD_NOT_JSON and nothing is stored', async () => {
  const cyclic = { a: 1 };
  cyclic.self = cyclic;
  const cases = [
    ['a BigInt', 10n],
    ['a nested BigInt', { amount: 10n }],
    ['a cycle', cyclic],
    ['a function', () => 1],
    ['a nested function', { cb() {} }],
    ['a Map', new Map([['a', 1]])],
    ['a nested Map', { m: new Map() }],
    ['a Set', new Set([1])],
    ['a symbol', { s: Symbol('x') }],
  ];
  for (const [what, payload] of cases) {
    await rejectsWithoutWriting(() => target.trigger(payload), (e) => {
      durablyError('E_PAYLOAD_NOT_JSON')(e);
      assert.match(e.message, /not JSON/, what);
      return true;
    });
    await rejectsWithoutWriting(() => trigger('errors-target', payload), durablyError('E_PAYLOAD_NOT_JSON'));
  }
  await assertNothingRan();
});

test('the rejection of a nested non-JSON value names its key', async () => {
  await assert.rejects(target.trigger({ order: { amount: 10n } }), (e) => {
    durablyError('E_PAYLOAD_NOT_JSON')(e);
    assert.match(e.message, /amount/);
    assert.match(e.message, /BigInt/);
    return true;
  });
});

test('triggering an id no task registered rejects with E_UNKNOWN_TASK and stores nothing', async () => {
  await rejectsWithoutWriting(() => trigger('nope', {}), (e) => {
    durablyError('E_UNKNOWN_TASK')(e);
    assert.match(e.message, /"nope"/);
    return true;
  });
  await rejectsWithoutWriting(() => trigger('nope'), durablyError('E_UNKNOWN_TASK'));
});

test('a payload over maxPayloadBytes is rejected with E_PAYLOAD_TOO_LARGE; one at the limit is accepted', async () => {
  // JSON of a string of n ASCII characters is n + 2 bytes.
  await rejectsWithoutWriting(() => target.trigger('x'.repeat(LIMIT - 1)), (e) => {
    durablyError('E_PAYLOAD_TOO_LARGE')(e);
    assert.match(e.message, new RegExp(`${LIMIT + 1} bytes`));
    assert.match(e.message, new RegExp(`limit of ${LIMIT} bytes`));
    return true;
  });
  await rejectsWithoutWriting(() => target.trigger({ big: 'x'.repeat(10 * LIMIT) }), durablyError('E_PAYLOAD_TOO_LARGE'));
  // The limit counts bytes, not characters: 1024 two-byte characters are 2050 bytes.
  await rejectsWithoutWriting(() => target.trigger('é'.repeat(1024)), durablyError('E_PAYLOAD_TOO_LARGE'));
  await rejectsWithoutWriting(
    () => target.batchTrigger([{ payload: 1 }, { payload: 'x'.repeat(LIMIT) }]),
    durablyError('E_PAYLOAD_TOO_LARGE'),
  );

  const before = await stored();
  const h = await accepted.trigger('x'.repeat(LIMIT - 2));
  assert.strictEqual(await h.result({ timeout: '5s' }), 'string');
  assert.strictEqual(await stored(), before + 1);
  await assertNothingRan();
});

test('a bad delay rejects with E_BAD_DURATION naming the delay option', async () => {
  for (const delay of ['5 parsecs', '', 'soon', -1, Number.NaN, Infinity, {}]) {
    await rejectsWithoutWriting(() => target.trigger({}, { delay }), durablyError('E_BAD_DURATION', 'delay'));
  }
  await rejectsWithoutWriting(() => trigger('errors-target', {}, { delay: '5 parsecs' }), (e) => {
    durablyError('E_BAD_DURATION', 'delay')(e);
    assert.match(e.message, /parsecs/);
    return true;
  });
  await assertNothingRan();
});

test('bad tags, a bad runAt and non-object options reject with E_BAD_OPTION', async () => {
  const badTags = ['one', [''], ['x'.repeat(129)], Array.from({ length: 21 }, (_, i) => `t${i}`), [1], [null]];
  for (const tags of badTags) {
    await rejectsWithoutWriting(() => target.trigger({}, { tags }), durablyError('E_BAD_OPTION', 'tags'));
  }
  await rejectsWithoutWriting(() => target.trigger({}, { runAt: 'not a date' }), durablyError('E_BAD_OPTION', 'runAt'));
  await rejectsWithoutWriting(() => target.trigger({}, 'fast'), durablyError('E_BAD_OPTION'));
  await assertNothingRan();
});

test('a batchTrigger with one bad item rejects and stores none of the batch', async () => {
  const good = { payload: { ok: true } };
  await rejectsWithoutWriting(() => target.batchTrigger([good, { payload: { n: 1n } }, good]), durablyError('E_PAYLOAD_NOT_JSON'));
  await rejectsWithoutWriting(() => target.batchTrigger([good, { payload: 1, options: { delay: 'soon' } }]), durablyError('E_BAD_DURATION', 'delay'));
  await rejectsWithoutWriting(() => target.batchTrigger([good, { payload: 1, options: { tags: [''] } }]), durablyError('E_BAD_OPTION', 'tags'));
  await rejectsWithoutWriting(() => target.batchTrigger([good, null]), durablyError('E_BAD_OPTION'));
  await rejectsWithoutWriting(() => target.batchTrigger('not an array'), durablyError('E_BAD_OPTION'));
  await assertNothingRan();
});

test('a bad batch does not affect a good trigger made in the same tick', async () => {
  const before = await stored();
  const [ok, bad] = await Promise.allSettled([
    accepted.trigger('fine'),
    target.batchTrigger([{ payload: 1 }, { payload: 2n }]),
  ]);
  assert.strictEqual(ok.status, 'fulfilled');
  assert.strictEqual(bad.status, 'rejected');
  durablyError('E_PAYLOAD_NOT_JSON')(bad.reason);
  assert.strictEqual(await ok.value.result({ timeout: '5s' }), 'string');
  assert.strictEqual(await stored(), before + 1);
  await assertNothingRan();
});

test('task() with bad options throws synchronously with a code and the option, and registers nothing', async () => {
  const run = async () => {};
  const cases = [
    [{ id: '', run }, 'E_BAD_OPTION', 'id'],
    [{ id: 'has space', run }, 'E_BAD_OPTION', 'id'],
    [{ id: 42, run }, 'E_BAD_OPTION', 'id'],
    [{ run }, 'E_BAD_OPTION', 'id'],
    [{ id: 'errors-no-run' }, 'E_BAD_OPTION', 'run'],
    [{ id: 'errors-run-not-fn', run: 'go' }, 'E_BAD_OPTION', 'run'],
    [{ id: 'errors-max-0', run, retry: { maxAttempts: 0 } }, 'E_BAD_OPTION', 'retry.maxAttempts'],
    [{ id: 'errors-max-frac', run, retry: { maxAttempts: 1.5 } }, 'E_BAD_OPTION', 'retry.maxAttempts'],
    [{ id: 'errors-min-soon', run, retry: { minTimeout: 'soon' } }, 'E_BAD_DURATION', 'retry.minTimeout'],
    [{ id: 'errors-max-neg', run, retry: { maxTimeout: -5 } }, 'E_BAD_DURATION', 'retry.maxTimeout'],
    [{ id: 'errors-factor', run, retry: { factor: 0.5 } }, 'E_BAD_OPTION', 'retry.factor'],
    [{ id: 'errors-retry-str', run, retry: 'often' }, 'E_BAD_OPTION', 'retry'],
    [{ id: 'errors-unknown-opt', run, retires: 3 }, 'E_BAD_OPTION', 'retires'],
  ];
  for (const [opts, code, option] of cases) {
    assert.throws(() => task(opts), durablyError(code, option), JSON.stringify(opts));
    if (typeof opts.id === 'string' && opts.id.startsWith('errors-')) {
      await assert.rejects(trigger(opts.id, {}), durablyError('E_UNKNOWN_TASK'), `${opts.id} must not be registered`);
    }
  }
  assert.throws(() => task(), durablyError('E_BAD_OPTION'));
  assert.throws(() => task(null), durablyError('E_BAD_OPTION'));
});

test(
  'task() with an out-of-range retry duration throws E_BAD_DURATION naming the option',
  () => {
    const run = async () => {};
    assert.throws(() => task({ id: 'errors-huge-max', run, retry: { maxTimeout: 1e20 } }), durablyError('E_BAD_DURATION', 'retry.maxTimeout'));
    assert.throws(() => task({ id: 'errors-huge-min', run, retry: { minTimeout: 1e20, maxTimeout: 1e21 } }), durablyError('E_BAD_DURATION', 'retry.minTimeout'));
  },
);

test('configure() with bad options throws synchronously', () => {
  assert.throws(() => configure({ dataDir: dir, maxPayloadBytes: 10 }), durablyError('E_BAD_OPTION', 'maxPayloadBytes'));
  assert.throws(() => configure({ dataDir: dir, concurrency: 0 }), durablyError('E_BAD_OPTION', 'concurrency'));
  assert.throws(() => configure({ dataDir: dir, dataDri: 'x' }), durablyError('E_BAD_OPTION', 'dataDri'));
});

test('every async API reports bad input by rejecting, never by throwing synchronously', async () => {
  const h = await accepted.trigger(null);
  await h.result({ timeout: '5s' });
  const calls = [
    [() => trigger('nope'), 'E_UNKNOWN_TASK'],
    [() => target.trigger(1n), 'E_PAYLOAD_NOT_JSON'],
    [() => target.trigger({}, { delay: 'soon' }), 'E_BAD_DURATION'],
    [() => target.batchTrigger('nope'), 'E_BAD_OPTION'],
    [() => target.batchTrigger([{ payload: 1n }]), 'E_PAYLOAD_NOT_JSON'],
    [() => runs.get(42), 'E_BAD_OPTION'],
    [() => runs.list(null), 'E_BAD_OPTION'],
    [() => runs.list({ limit: 0 }), 'E_BAD_OPTION'],
    [() => runs.list({ status: 'sleeping' }), 'E_BAD_OPTION'],
    [() => runs.list({ since: 'yesterday-ish' }), 'E_BAD_OPTION'],
    [() => h.result({ timeout: 'soon' }), 'E_BAD_DURATION'],
    [() => shutdown({ timeout: 'soon' }), 'E_BAD_DURATION'],
  ];
  for (const [call, code] of calls) {
    await rejectsWithoutWriting(call, durablyError(code));
  }
  // The engine is still running after the rejected shutdown().
  assert.strictEqual(await (await accepted.trigger(1)).result({ timeout: '5s' }), 'number');
  await assertNothingRan();
});

test('a step output that is not JSON or too large fails the run at once, without retrying the step', async () => {
  let bigint = 0;
  let large = 0;
  const t = task({
    id: 'errors-bad-step-output',
    retry: { maxAttempts: 3, minTimeout: 10, randomize: false },
    run: async (which, { step }) => {
      if (which === 'bigint') await step.run('out', () => (bigint++, 1n));
      else await step.run('out', () => (large++, 'x'.repeat(LIMIT)));
    },
  });
  for (const [which, code] of [
    ['bigint', 'E_PAYLOAD_NOT_JSON'],
    ['large', 'E_PAYLOAD_TOO_LARGE'],
  ]) {
    const h = await t.trigger(which);
    await assert.rejects(h.result({ timeout: '5s' }), (e) => {
      durablyError('E_RUN_FAILED')(e);
      assert.strictEqual(e.cause.cause?.code, code, JSON.stringify(e.cause));
      return true;
    });
    const run = await runs.get(h.id);
    assert.strictEqual(run.status, 'failed');
    assert.strictEqual(run.attempts, 1);
    assert.strictEqual(run.steps.find((s) => s.id === 'out').status, 'failed');
  }
  assert.deepStrictEqual([bigint, large], [1, 1]);
});

test('a run output that is not JSON fails the run at once with E_PAYLOAD_NOT_JSON', async () => {
  let executions = 0;
  const t = task({
    id: 'errors-bad-run-output',
    retry: { maxAttempts: 3, minTimeout: 10, randomize: false },
    run: async () => {
      executions++;
      return { total: 5n };
    },
  });
  const h = await t.trigger();
  await assert.rejects(h.result({ timeout: '5s' }), (e) => {
    durablyError('E_RUN_FAILED')(e);
    assert.strictEqual(e.cause.code, 'E_PAYLOAD_NOT_JSON');
    assert.match(e.message, /total/);
    return true;
  });
  assert.strictEqual(executions, 1);
  assert.strictEqual((await runs.get(h.id)).status, 'failed');
});

test(
  'an out-of-range numeric delay or runAt rejects with a typed error and does not fail other triggers of the same tick',
  async () => {
    const cases = [
      [{ delay: 1e20 }, 'E_BAD_DURATION', 'delay'],
      [{ delay: Number.MAX_VALUE }, 'E_BAD_DURATION', 'delay'],
      [{ delay: 1e16 }, 'E_BAD_DURATION', 'delay'], // now + 1e16 ms is past the last time a Date can hold
      [{ runAt: 1e20 }, 'E_BAD_OPTION', 'runAt'],
    ];
    for (const [opts, code, option] of cases) {
      const before = await stored();
      const [good, bad] = await Promise.allSettled([accepted.trigger('good'), target.trigger({}, opts)]);
      assert.strictEqual(good.status, 'fulfilled', `a good trigger next to ${JSON.stringify(opts)} failed: ${good.reason?.message}`);
      assert.strictEqual(bad.status, 'rejected', `${JSON.stringify(opts)} was accepted`);
      durablyError(code, option)(bad.reason);
      assert.strictEqual(await stored(), before + 1);
    }
    await assertNothingRan();
  },
);
