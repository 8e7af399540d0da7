// The bad-input matrix: every public function and HTTP endpoint, called with wrong types,
// sizes, ids, options, unicode and NUL, must answer a DurablyError with a documented code
// (an HTTP endpoint: a 4xx `{ error: { code, message } }`, never 500), settle in bounded
// time, never E_INTERNAL, and write nothing. Async functions reject (never throw at the
// call); task(), configure(), createTestEngine(), durablyRoutes() and withDurably() throw
// at the call. The cases are generated: each entry point × each argument × a list of bad
// values. errors.test.js, promises.test.js and next-routes.test.js hold the hand-written
// cases (messages, option names, same-tick isolation of triggers); this file is the sweep.
const { test, before, after } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { isDeepStrictEqual } = require('node:util');

// As test runners set it: the JSON API is open in development and test.
process.env.NODE_ENV = 'test';
const durably = require('durably');
const { task, trigger, configure, start, shutdown, runs, send, schedules, tokens, stats, DurablyError } = durably;
const { createTestEngine } = require('durably/testing');
const { durablyRoutes, withDurably } = require('durably/next');

const LIMIT = 4096;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-bad-input-'));
configure({ dataDir: dir, maxPayloadBytes: LIMIT, logLevel: 'silent' });
before(() => start());
after(async () => {
  await shutdown({ timeout: '2s' });
  fs.rmSync(dir, { recursive: true, force: true });
});

/** How long any call may take to settle before it counts as a hang. */
const BOUND_MS = 3000;

// ---- bad values ---------------------------------------------------------------------

function deepArray(n) {
  let v = 1;
  for (let i = 0; i < n; i++) v = [v];
  return v;
}
function deepObject(n) {
  let v = 1;
  for (let i = 0; i < n; i++) v = { a: v };
  return v;
}
const cyclic = { a: 1 };
cyclic.self = cyclic;

/** Values of the wrong type for a string, an object or a number. */
const NOT_STRING = [
  ['a number', 42],
  ['a boolean', true],
  ['null', null],
  ['an array', ['x']],
  ['an object', { x: 1 }],
  ['a function', () => 'x'],
  ['a symbol', Symbol('bad')],
  ['a BigInt', 10n],
];
/** Strings outside 1–256 bytes of well-formed UTF-8 without NUL. */
const BAD_STRINGS = [
  ['an empty string', ''],
  ['300 bytes', 'x'.repeat(300)],
  ['200 × é (400 bytes)', 'é'.repeat(200)],
  ['a NUL', 'a\0b'],
  ['a lone surrogate', 'a\ud800b'],
];
/** Every bad value for a name, id or key. */
const BAD_NAMES = [...NOT_STRING, ...BAD_STRINGS];
/** Values that are not an options object (undefined, "no options", is fine). */
const NOT_OBJECT = [
  ['a number', 5],
  ['a string', 'fast'],
  ['a boolean', true],
  ['null', null],
  ['an array', []],
  ['a function', () => ({})],
  ['a symbol', Symbol('opts')],
  ['a BigInt', 1n],
];
/** Bad values of a numeric option that takes a positive integer. */
const BAD_COUNTS = [
  ['NaN', NaN],
  ['Infinity', Infinity],
  ['-Infinity', -Infinity],
  ['negative', -1],
  ['zero', 0],
  ['non-integer', 1.5],
  ['a numeric string', '5'],
  ['null', null],
  ['a boolean', true],
  ['an object', {}],
];
/** Durations that cannot be read (E_BAD_DURATION). */
const BAD_DURATIONS = [
  ['NaN', NaN],
  ['Infinity', Infinity],
  ['negative', -1],
  ['over 1,000 years', 1e20],
  ['unparseable', 'soon'],
  ['an empty string', ''],
  ['an unknown unit', '5 parsecs'],
  ['a NUL', '5s\0'],
  ['a lone surrogate', '5\ud800s'],
  ['an object', {}],
  ['an array', []],
  ['a boolean', true],
  ['null', null],
  ['a BigInt', 5n],
];
/** Times that cannot be read (E_BAD_OPTION). */
const BAD_TIMES = [
  ['unparseable', 'not a date'],
  ['an empty string', ''],
  ['an Invalid Date', new Date(NaN)],
  ['NaN', NaN],
  ['Infinity', Infinity],
  ['negative', -1],
  ['past the last Date', 1e20],
  ['an object', {}],
  ['an array', []],
  ['a boolean', true],
  ['null', null],
];
/** Payloads (and event/token data) durably must refuse, with their codes. */
const BAD_PAYLOADS = [
  ['a BigInt', 10n, 'E_PAYLOAD_NOT_JSON'],
  ['a nested BigInt', { order: { amount: 10n } }, 'E_PAYLOAD_NOT_JSON'],
  ['a function', () => 1, 'E_PAYLOAD_NOT_JSON'],
  ['a symbol', Symbol('p'), 'E_PAYLOAD_NOT_JSON'],
  ['a nested symbol', { s: Symbol('p') }, 'E_PAYLOAD_NOT_JSON'],
  ['a Map', new Map([['a', 1]]), 'E_PAYLOAD_NOT_JSON'],
  ['a Set', new Set([1]), 'E_PAYLOAD_NOT_JSON'],
  ['a cycle', cyclic, 'E_PAYLOAD_NOT_JSON'],
  ['over maxPayloadBytes', 'x'.repeat(LIMIT), 'E_PAYLOAD_TOO_LARGE'],
  ['over maxPayloadBytes in bytes, not characters', 'é'.repeat(LIMIT / 2 + 8), 'E_PAYLOAD_TOO_LARGE'],
  ['150 levels of arrays', deepArray(150), 'E_PAYLOAD_TOO_DEEP'],
  ['150 levels of objects', deepObject(150), 'E_PAYLOAD_TOO_DEEP'],
];

// ---- running a case -------------------------------------------------------------------

function show(v) {
  if (typeof v === 'symbol' || typeof v === 'bigint' || typeof v === 'function') return String(v);
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 120 ? `${s.slice(0, 120)}…` : s;
  } catch {
    return String(v);
  }
}

function describeError(e) {
  return e instanceof Error ? `${e.name}${e.code ? ` ${e.code}` : ''}: ${String(e.message).slice(0, 200)}` : `a thrown ${show(e)}`;
}

/** Settles `p` or gives up after `ms`: `{ value }`, `{ error }` or `{ hang: true }`. */
async function within(p, ms = BOUND_MS) {
  let timer;
  const hang = new Promise((r) => (timer = setTimeout(() => r({ hang: true }), ms)));
  try {
    return await Promise.race([p.then((value) => ({ value }), (error) => ({ error })), hang]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * What the durable state of the process engine looks like: its runs, schedules, and the
 * runs parked on waits or on an unknown task (the statuses of runs already there, and so
 * the ready/running/delayed counts, may move on by themselves: those are not compared).
 */
async function mainSnapshot() {
  const list = await runs.list({ limit: 1000 });
  const s = await stats();
  const sc = await schedules.list();
  return JSON.stringify({ runs: list.runs.map((r) => r.id), waiting: s.waiting, waitingForTask: s.waitingForTask, schedules: sc.map((x) => [x.id, x.cron, x.tz]) });
}

/** Waits until nothing is ready or running (after a call that wrongly wrote something). */
async function quiet(statsOf = stats) {
  for (let i = 0; i < 50; i++) {
    const s = await statsOf();
    if (s.ready === 0 && s.running === 0) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The problems of a DurablyError `e` against the case's expectations. */
function checkError(c, e) {
  const problems = [];
  if (!(e instanceof DurablyError)) return [`not a DurablyError: ${describeError(e)}`];
  if (e.code === 'E_INTERNAL') problems.push(`E_INTERNAL (a defect): ${e.message}`);
  else if (!c.codes.includes(e.code)) problems.push(`code ${e.code}, expected ${c.codes.join(' or ')}: ${e.message}`);
  if (c.option !== undefined && e.option !== c.option) problems.push(`option ${show(e.option)}, expected ${show(c.option)} (${e.message})`);
  if (typeof e.message !== 'string' || e.message.length < 10) problems.push(`no useful message: ${show(e.message)}`);
  return problems;
}

/**
 * Runs one case and returns its problems (empty: it behaved). A case is
 * `{ call, codes, option?, sync?, allow?, judge?, snapshot?, after? }`: `sync` calls must
 * throw at the call, the others must return a promise that rejects; `allow(value)` accepts
 * a documented non-error answer (null for an unknown run …); `judge(value)` checks an
 * answer that is not an error (an HTTP response); `snapshot()` must not change.
 * `outcome` gives the outcome of a call made elsewhere (inside a run).
 */
async function runCase(c) {
  const before = c.snapshot ? await c.snapshot() : null;
  const problems = [];
  let outcome = c.outcome;
  if (!outcome) {
    let returned;
    try {
      returned = c.call();
    } catch (error) {
      outcome = { error, sync: true };
    }
    if (!outcome) {
      if (c.sync) outcome = { value: returned, sync: true };
      else if (!(returned instanceof Promise)) outcome = { value: returned, notPromise: true };
      else outcome = await within(returned);
    }
  }
  if (outcome.sync && !c.sync) problems.push(`threw at the call instead of rejecting: ${describeError(outcome.error)}`);
  if (outcome.notPromise) problems.push(`returned ${show(outcome.value)}, not a promise`);
  if (outcome.hang) problems.push(`did not settle within ${BOUND_MS} ms`);
  let accepted = false;
  if ('value' in outcome && !outcome.notPromise) {
    if (c.judge) {
      const p = c.judge(outcome.value);
      accepted = p.length === 0;
      problems.push(...p);
    } else if (c.allow && c.allow(outcome.value)) accepted = true;
    else problems.push(c.sync ? `accepted (returned ${show(outcome.value)}) instead of throwing` : `resolved with ${show(outcome.value)}`);
  }
  if ('error' in outcome && !(outcome.sync && !c.sync && !(outcome.error instanceof DurablyError))) problems.push(...checkError(c, outcome.error));
  if (c.after) problems.push(...((await c.after(outcome)) ?? []));
  if (before !== null) {
    if ('value' in outcome && !accepted) await quiet(c.stats);
    const now = await c.snapshot();
    if (now !== before) problems.push(`something was written: ${before} → ${now}`);
  }
  return problems;
}

/** One test per entry point (or family), with a subtest per case. */
function matrix(title, build) {
  test(title, async (t) => {
    const cases = await build();
    for (const c of cases) {
      await t.test(c.name, async () => {
        const problems = await runCase(c);
        assert.deepStrictEqual(problems, [], `${c.name}:\n  ${problems.join('\n  ')}`);
      });
    }
  });
}

// ---- tasks the cases use -------------------------------------------------------------

let targetRuns = 0;
const target = task({
  id: 'bi-target',
  run: async () => {
    targetRuns++;
    return 'ran';
  },
});
// A subscriber of the events the send cases use: a stored event would start a run of it.
task({ id: 'bi-subscriber', on: 'bi/evt', run: async () => 'ran' });
// Tasks whose key functions return what a key cannot be.
const badKeys = [
  ['an empty string', ''],
  ['300 bytes', 'x'.repeat(300)],
  ['a NUL', 'a\0b'],
  ['a lone surrogate', 'a\ud800b'],
  ['an object', { k: 1 }],
  ['null', null],
  ['undefined', undefined],
];
const keyTasks = [];
for (const [i, [what, key]] of badKeys.entries()) {
  for (const kind of ['concurrency', 'throttle', 'rateLimit', 'debounce', 'singleton', 'idempotencyKey']) {
    const fn = () => key;
    const opts =
      kind === 'concurrency' ? { concurrency: { limit: 5, key: fn } }
      : kind === 'throttle' ? { throttle: { limit: 5, period: '1s', key: fn } }
      : kind === 'rateLimit' ? { rateLimit: { limit: 5, period: '1s', key: fn } }
      : kind === 'debounce' ? { debounce: { period: '1s', key: fn } }
      : kind === 'singleton' ? { singleton: { mode: 'skip', key: fn } }
      : { idempotencyKey: fn };
    keyTasks.push([`${kind} key returning ${what}`, task({ id: `bi-key-${kind}-${i}`, on: `bi/key-${kind}-${i}`, ...opts, run: async () => 'ran' }), `bi/key-${kind}-${i}`]);
  }
}
const priorityTasks = [
  ['NaN', NaN],
  ['1.5', 1.5],
  ['a string', '1'],
  ['null', null],
].map(([what, v], i) => [what, task({ id: `bi-priority-${i}`, priority: () => v, run: async () => 'ran' })]);

// ---- the sync entry points: task(), configure(), createTestEngine(), durablyRoutes(), withDurably()

let taskSeq = 0;
/** A task() case: throws E_BAD_OPTION/DURATION/CRON at the call and registers nothing. */
function taskCase(name, opts, codes, option) {
  const id = `bi-task-${taskSeq++}`;
  const full = typeof opts === 'function' ? opts(id) : { id, run: async () => 1, ...opts };
  return {
    name: `task(): ${name}`,
    sync: true,
    call: () => task(full),
    codes: Array.isArray(codes) ? codes : [codes],
    option,
    after: () => (durably.engine().tasks.has(id) ? [`task ${id} was registered`] : []),
  };
}

matrix('task() throws at the call for every bad option and registers nothing', () => {
  const cases = [];
  const run = async () => 1;
  for (const [what, v] of NOT_OBJECT) cases.push(taskCase(`options that are ${what}`, () => v, 'E_BAD_OPTION'));
  cases.push(taskCase('no options', () => undefined, 'E_BAD_OPTION'));
  for (const [what, v] of [...BAD_NAMES, ['undefined', undefined], ['a space', 'has space'], ['a non-ASCII letter', 'é'], ['129 characters', 'x'.repeat(129)]]) {
    cases.push(taskCase(`id is ${what}`, () => ({ id: v, run }), 'E_BAD_OPTION', 'id'));
  }
  for (const [what, v] of [...NOT_STRING.filter(([w]) => w !== 'a function'), ['a string', 'go'], ['undefined', undefined]]) {
    cases.push(taskCase(`run is ${what}`, (id) => ({ id, run: v }), 'E_BAD_OPTION', 'run'));
  }
  cases.push(taskCase('an unknown option', { retires: 3 }, 'E_BAD_OPTION', 'retires'));
  // retry
  for (const [what, v] of NOT_OBJECT) cases.push(taskCase(`retry is ${what}`, { retry: v }, 'E_BAD_OPTION', 'retry'));
  cases.push(taskCase('an unknown retry option', { retry: { maxAttempt: 3 } }, 'E_BAD_OPTION', 'retry.maxAttempt'));
  for (const [what, v] of [...BAD_COUNTS, ['over 1000', 1001]]) cases.push(taskCase(`retry.maxAttempts is ${what}`, { retry: { maxAttempts: v } }, 'E_BAD_OPTION', 'retry.maxAttempts'));
  for (const [what, v] of [['NaN', NaN], ['Infinity', Infinity], ['below 1', 0.5], ['negative', -2], ['a string', '2'], ['null', null]]) {
    cases.push(taskCase(`retry.factor is ${what}`, { retry: { factor: v } }, 'E_BAD_OPTION', 'retry.factor'));
  }
  for (const [what, v] of BAD_DURATIONS) {
    cases.push(taskCase(`retry.minTimeout is ${what}`, { retry: { minTimeout: v } }, 'E_BAD_DURATION', 'retry.minTimeout'));
    cases.push(taskCase(`retry.maxTimeout is ${what}`, { retry: { maxTimeout: v } }, 'E_BAD_DURATION', 'retry.maxTimeout'));
  }
  for (const [what, v] of [['a number', 1], ['a string', 'yes'], ['null', null]]) cases.push(taskCase(`retry.randomize is ${what}`, { retry: { randomize: v } }, 'E_BAD_OPTION', 'retry.randomize'));
  // on
  for (const [what, v] of [...BAD_NAMES.filter(([w]) => w !== 'an array' && w !== 'an object'), ['an empty list', []]]) cases.push(taskCase(`on is ${what}`, { on: v }, 'E_BAD_OPTION'));
  for (const [what, v] of BAD_NAMES) {
    cases.push(taskCase(`on[] holds ${what}`, { on: ['bi/ok', v] }, 'E_BAD_OPTION'));
    cases.push(taskCase(`on.event is ${what}`, { on: { event: v } }, 'E_BAD_OPTION'));
  }
  for (const [what, v] of [['a number', 1], ['an object', {}], ['bad syntax', '=='], ['an unknown operator', 'event.data.x ~= 1'], ['a lone surrogate', '"\ud800" == event.name']]) {
    cases.push(taskCase(`on.if is ${what}`, { on: { event: 'bi/ok', if: v } }, 'E_BAD_OPTION'));
  }
  cases.push(taskCase('an unknown on option', { on: { event: 'bi/ok', iff: 'true' } }, 'E_BAD_OPTION', 'on.iff'));
  // schedule
  for (const [what, v] of [...NOT_STRING.filter(([w]) => w !== 'an object'), ['an object without cron', {}]]) cases.push(taskCase(`schedule is ${what}`, { schedule: v }, ['E_BAD_OPTION', 'E_BAD_CRON']));
  for (const [what, v] of [['an empty string', ''], ['4 fields', '* * * *'], ['a minute of 61', '61 * * * *'], ['words', 'every monday'], ['a NUL', '* * * * *\0'], ['a lone surrogate', '* * * * \ud800'], ['10,000 characters', '* '.repeat(5000)]]) {
    cases.push(taskCase(`schedule cron is ${what}`, { schedule: v }, 'E_BAD_CRON'));
    cases.push(taskCase(`schedule.cron is ${what}`, { schedule: { cron: v } }, 'E_BAD_CRON'));
  }
  for (const [what, v] of [['not a zone', 'Mars/Olympus'], ['an empty string', ''], ['a NUL', 'Europe/Paris\0'], ['a lone surrogate', 'Europe/\ud800'], ['300 bytes', 'x'.repeat(300)], ['a number', 1], ['null', null]]) {
    cases.push(taskCase(`schedule.tz is ${what}`, { schedule: { cron: '0 9 * * *', tz: v } }, 'E_BAD_OPTION'));
  }
  cases.push(taskCase('an unknown schedule option', { schedule: { cron: '0 9 * * *', zone: 'UTC' } }, 'E_BAD_OPTION', 'schedule.zone'));
  // flow control
  const keyValues = [['a number', 1], ['a boolean', true], ['an object', {}], ['null', null], ['bad syntax', '=='], ['a lone surrogate', '"\ud800"'], ['an empty string', '']];
  for (const [name, base, limitKey] of [
    ['concurrency', {}, 'limit'],
    ['throttle', { period: '1s' }, 'limit'],
    ['rateLimit', { period: '1s' }, 'limit'],
  ]) {
    for (const [what, v] of NOT_OBJECT) cases.push(taskCase(`${name} is ${what}`, { [name]: v }, 'E_BAD_OPTION', name));
    for (const [what, v] of [...BAD_COUNTS, ['over 1,000,000', 1e7]]) cases.push(taskCase(`${name}.${limitKey} is ${what}`, { [name]: { ...base, [limitKey]: v } }, 'E_BAD_OPTION', `${name}.${limitKey}`));
    for (const [what, v] of keyValues) cases.push(taskCase(`${name}.key is ${what}`, { [name]: { ...base, limit: 1, key: v } }, 'E_BAD_OPTION'));
    cases.push(taskCase(`an unknown ${name} option`, { [name]: { ...base, limit: 1, keys: 'x' } }, 'E_BAD_OPTION', `${name}.keys`));
  }
  for (const [name, base] of [
    ['throttle', { limit: 1 }],
    ['rateLimit', { limit: 1 }],
    ['debounce', {}],
  ]) {
    for (const [what, v] of [...BAD_DURATIONS, ['zero', 0], ['undefined', undefined]]) cases.push(taskCase(`${name}.period is ${what}`, { [name]: { ...base, period: v } }, 'E_BAD_DURATION', `${name}.period`));
  }
  for (const [what, v] of [['NaN', NaN], ['negative', -1], ['non-integer', 1.5], ['huge', 1e300], ['a string', '2'], ['null', null]]) {
    cases.push(taskCase(`throttle.burst is ${what}`, { throttle: { limit: 1, period: '1s', burst: v } }, 'E_BAD_OPTION', 'throttle.burst'));
  }
  for (const [what, v] of NOT_OBJECT) cases.push(taskCase(`debounce is ${what}`, { debounce: v }, 'E_BAD_OPTION', 'debounce'));
  for (const [what, v] of BAD_DURATIONS) cases.push(taskCase(`debounce.maxWait is ${what}`, { debounce: { period: '1s', maxWait: v } }, 'E_BAD_DURATION', 'debounce.maxWait'));
  cases.push(taskCase('debounce.maxWait shorter than its period', { debounce: { period: '1m', maxWait: '1s' } }, 'E_BAD_OPTION', 'debounce.maxWait'));
  for (const [what, v] of [['an unknown mode', 'both'], ['a number', 1], ['null', null]]) cases.push(taskCase(`debounce.mode is ${what}`, { debounce: { period: '1s', mode: v } }, 'E_BAD_OPTION', 'debounce.mode'));
  for (const [what, v] of keyValues) cases.push(taskCase(`debounce.key is ${what}`, { debounce: { period: '1s', key: v } }, 'E_BAD_OPTION'));
  for (const [what, v] of NOT_OBJECT) cases.push(taskCase(`singleton is ${what}`, { singleton: v }, 'E_BAD_OPTION', 'singleton'));
  for (const [what, v] of [['missing', undefined], ['unknown', 'queue'], ['a number', 1]]) cases.push(taskCase(`singleton.mode is ${what}`, { singleton: { mode: v } }, 'E_BAD_OPTION', 'singleton.mode'));
  for (const [what, v] of keyValues) cases.push(taskCase(`singleton.key is ${what}`, { singleton: { mode: 'skip', key: v } }, 'E_BAD_OPTION'));
  for (const [what, v] of NOT_OBJECT) cases.push(taskCase(`timeout is ${what}`, { timeout: v }, 'E_BAD_OPTION', 'timeout'));
  for (const [what, v] of [...BAD_DURATIONS, ['zero', 0]]) {
    cases.push(taskCase(`timeout.start is ${what}`, { timeout: { start: v } }, 'E_BAD_DURATION', 'timeout.start'));
    cases.push(taskCase(`timeout.finish is ${what}`, { timeout: { finish: v } }, 'E_BAD_DURATION', 'timeout.finish'));
  }
  cases.push(taskCase('an unknown timeout option', { timeout: { finsh: '1m' } }, 'E_BAD_OPTION', 'timeout.finsh'));
  for (const [what, v] of [['NaN', NaN], ['Infinity', Infinity], ['non-integer', 1.5], ['a string', '1'], ['null', null], ['an object', {}]]) {
    cases.push(taskCase(`priority is ${what}`, { priority: v }, 'E_BAD_OPTION', 'priority'));
  }
  for (const [what, v] of [['a string', 'order-id'], ['a number', 1], ['null', null], ['an object', {}]]) {
    cases.push(taskCase(`idempotencyKey is ${what}`, { idempotencyKey: v }, 'E_BAD_OPTION', 'idempotencyKey'));
  }
  for (const [what, v] of [...BAD_DURATIONS, ['zero', 0]]) cases.push(taskCase(`idempotencyKeyTTL is ${what}`, { idempotencyKeyTTL: v }, 'E_BAD_DURATION', 'idempotencyKeyTTL'));
  for (const [what, v] of [['an object', {}], ['a string', 'user/deleted'], ['null', null], ['a number', 1]]) cases.push(taskCase(`cancelOn is ${what}`, { cancelOn: v }, 'E_BAD_OPTION', 'cancelOn'));
  for (const [what, v] of NOT_OBJECT) cases.push(taskCase(`cancelOn[0] is ${what}`, { cancelOn: [v] }, 'E_BAD_OPTION', 'cancelOn[0]'));
  for (const [what, v] of [...BAD_NAMES, ['undefined', undefined]]) cases.push(taskCase(`cancelOn[0].event is ${what}`, { cancelOn: [{ event: v }] }, 'E_BAD_OPTION', 'cancelOn[0].event'));
  for (const [what, v] of [['a number', 1], ['an empty string', ''], ['a lone surrogate', 'data.\ud800'], ['null', null]]) {
    cases.push(taskCase(`cancelOn[0].match is ${what}`, { cancelOn: [{ event: 'bi/cancel', match: v }] }, 'E_BAD_OPTION', 'cancelOn[0].match'));
  }
  for (const [what, v] of [['a number', 1], ['bad syntax', '=='], ['a lone surrogate', '"\ud800" == "x"']]) {
    cases.push(taskCase(`cancelOn[0].if is ${what}`, { cancelOn: [{ event: 'bi/cancel', if: v }] }, 'E_BAD_OPTION', 'cancelOn[0].if'));
  }
  for (const [what, v] of BAD_DURATIONS) cases.push(taskCase(`cancelOn[0].timeout is ${what}`, { cancelOn: [{ event: 'bi/cancel', timeout: v }] }, 'E_BAD_DURATION', 'cancelOn[0].timeout'));
  cases.push(taskCase('an unknown cancelOn option', { cancelOn: [{ event: 'bi/cancel', matches: 'data.id' }] }, 'E_BAD_OPTION', 'cancelOn[0].matches'));
  for (const [what, v] of [['a string', 'notify'], ['a number', 1], ['null', null], ['an object', {}]]) cases.push(taskCase(`onFailure is ${what}`, { onFailure: v }, 'E_BAD_OPTION', 'onFailure'));
  return cases;
});

matrix('configure() throws at the call for every bad option and changes nothing', () => {
  const cases = [];
  const configOf = () => JSON.stringify(durably.engine().config);
  const add = (name, opts, codes, option) => {
    let before;
    cases.push({
      name: `configure(): ${name}`,
      sync: true,
      call: () => {
        before = configOf();
        return configure(opts);
      },
      codes: Array.isArray(codes) ? codes : [codes],
      option,
      after: () => (configOf() !== before ? ['the configuration changed'] : []),
    });
  };
  // The engine is open: a valid configure() is refused too (E_BAD_OPTION without an
  // option), so each case names the option it expects, to tell the two apart.
  for (const [what, v] of [...NOT_OBJECT, ['undefined', undefined]]) add(`options that are ${what}`, v, 'E_BAD_OPTION', 'configure');
  add('an unknown option', { dataDirr: dir }, 'E_BAD_OPTION', 'dataDirr');
  for (const [what, v] of [...NOT_STRING.filter(([w]) => w !== 'null'), ['null', null], ['an empty string', ''], ['a NUL', `${dir}\0x`], ['false', false]]) {
    add(`dataDir is ${what}`, { dataDir: v }, 'E_BAD_OPTION', 'dataDir');
  }
  for (const [what, v] of [...BAD_COUNTS, ['over 100000', 100001]]) add(`concurrency is ${what}`, { concurrency: v }, 'E_BAD_OPTION', 'concurrency');
  for (const [what, v] of [['unknown', 'fast'], ['a number', 1], ['null', null], ['an empty string', '']]) add(`durability is ${what}`, { durability: v }, 'E_BAD_OPTION', 'durability');
  for (const [what, v] of [...BAD_DURATIONS, ['over 2^32 ms (the core takes a u32)', 1e12]]) add(`flushInterval is ${what}`, { flushInterval: v }, 'E_BAD_DURATION', 'flushInterval');
  for (const [what, v] of [...BAD_COUNTS, ['below 1024', 10], ['over 512 MiB', 2 ** 30]]) add(`maxPayloadBytes is ${what}`, { maxPayloadBytes: v }, 'E_BAD_OPTION', 'maxPayloadBytes');
  for (const [what, v] of [...BAD_COUNTS, ['below 1 MiB', 1000], ['over 1 TiB', 2 ** 41]]) add(`cacheBytes is ${what}`, { cacheBytes: v }, 'E_BAD_OPTION', 'cacheBytes');
  for (const [what, v] of BAD_DURATIONS) add(`lockTimeout is ${what}`, { lockTimeout: v }, 'E_BAD_DURATION', 'lockTimeout');
  for (const [what, v] of [...BAD_COUNTS, ['over 1000', 1001]]) add(`crashLimit is ${what}`, { crashLimit: v }, 'E_BAD_OPTION', 'crashLimit');
  for (const [what, v] of [['unknown', 'loud'], ['an inherited property name', 'toString'], ['a number', 1], ['null', null], ['an empty string', '']]) add(`logLevel is ${what}`, { logLevel: v }, 'E_BAD_OPTION', 'logLevel');
  for (const [what, v] of [['a number', 1], ['a string', 'console'], ['a boolean', true], ['null', null], ['an object without methods', {}], ['an array', []]]) add(`logger is ${what}`, { logger: v }, 'E_BAD_OPTION', 'logger');
  return cases;
});

matrix('createTestEngine() throws at the call for every bad option', () => {
  const cases = [];
  const add = (name, opts, codes, option) =>
    cases.push({
      name: `createTestEngine(): ${name}`,
      sync: true,
      call: () => createTestEngine(opts),
      codes: [codes],
      option,
      after: async (o) => {
        if (o.value && typeof o.value.close === 'function') await o.value.close();
      },
    });
  for (const [what, v] of NOT_OBJECT) add(`options that are ${what}`, v, 'E_BAD_OPTION', 'createTestEngine');
  add('an unknown option', { nw: 0 }, 'E_BAD_OPTION', 'createTestEngine.nw');
  for (const [what, v] of BAD_TIMES) add(`now is ${what}`, { now: v }, 'E_BAD_OPTION', 'now');
  for (const [what, v] of BAD_COUNTS) add(`concurrency is ${what}`, { concurrency: v }, 'E_BAD_OPTION', 'concurrency');
  return cases;
});

matrix('durablyRoutes() and withDurably() throw a DurablyError at the call for bad options', () => {
  const cases = [];
  const add = (name, call, option, sync = true) => cases.push({ name, sync, call, codes: ['E_BAD_OPTION'], option });
  for (const [what, v] of NOT_OBJECT) add(`durablyRoutes(): options that are ${what}`, () => durablyRoutes(v), 'durablyRoutes');
  add('durablyRoutes(): an unknown option', () => durablyRoutes({ authh: () => true }), 'durablyRoutes.authh');
  for (const [what, v] of [['a string', 'yes'], ['a boolean', true], ['null', null], ['an object', {}]]) add(`durablyRoutes(): auth is ${what}`, () => durablyRoutes({ auth: v }), 'auth');
  for (const [what, v] of [['a number', 1], ['null', null], ['an object', {}], ['a NUL', '/durably\0'], ['relative', 'durably']]) add(`durablyRoutes(): basePath is ${what}`, () => durablyRoutes({ basePath: v }), 'basePath');
  for (const [what, v] of BAD_COUNTS) add(`durablyRoutes(): maxBodyBytes is ${what}`, () => durablyRoutes({ maxBodyBytes: v }), 'maxBodyBytes');
  for (const [what, v] of [['a number', 5], ['a string', 'next.config'], ['a boolean', true], ['null', null], ['an array', []], ['a symbol', Symbol('c')], ['a BigInt', 1n]]) {
    add(`withDurably(): a config that is ${what}`, () => withDurably(v), 'nextConfig');
  }
  for (const [what, v] of [['a string', 'sharp'], ['a number', 1], ['null', null], ['an object', {}], ['a list with a number', ['sharp', 1]]]) {
    add(`withDurably(): serverExternalPackages is ${what}`, () => withDurably({ serverExternalPackages: v }), 'serverExternalPackages');
  }
  add('withDurably(): a config function that returns a number', () => withDurably(() => 5)('phase-production-server', { defaultConfig: {} }), 'nextConfig', false);
  add('withDurably(): a config promise that resolves to a string', () => withDurably(Promise.resolve('x')), 'nextConfig', false);
  return cases;
});

// ---- the async API of the process engine ---------------------------------------------

/** Trigger options and their bad values: [name, options, codes, option]. */
function badTriggerOptions() {
  const out = [];
  for (const [what, v] of NOT_OBJECT) out.push([`options that are ${what}`, v, ['E_BAD_OPTION']]);
  out.push(['an unknown option', { idempotencyKeys: 'order-1' }, ['E_BAD_OPTION'], 'trigger.idempotencyKeys']);
  for (const [what, v] of BAD_DURATIONS) out.push([`delay is ${what}`, { delay: v }, ['E_BAD_DURATION'], 'delay']);
  for (const [what, v] of BAD_TIMES) out.push([`runAt is ${what}`, { runAt: v }, ['E_BAD_OPTION'], 'runAt']);
  for (const [what, v] of [...BAD_DURATIONS, ['zero', 0]]) out.push([`ttl is ${what}`, { ttl: v }, ['E_BAD_DURATION'], 'ttl']);
  for (const [what, v] of [...BAD_DURATIONS, ['zero', 0]]) out.push([`idempotencyKeyTTL is ${what}`, { idempotencyKey: 'k', idempotencyKeyTTL: v }, ['E_BAD_DURATION'], 'idempotencyKeyTTL']);
  for (const [what, v] of [['NaN', NaN], ['Infinity', Infinity], ['non-integer', 1.5], ['a string', '1'], ['null', null], ['an object', {}], ['a BigInt', 1n]]) {
    out.push([`priority is ${what}`, { priority: v }, ['E_BAD_OPTION'], 'priority']);
  }
  for (const [what, v] of BAD_NAMES) {
    out.push([`idempotencyKey is ${what}`, { idempotencyKey: v }, ['E_BAD_OPTION'], 'idempotencyKey']);
    out.push([`concurrencyKey is ${what}`, { concurrencyKey: v }, ['E_BAD_OPTION'], 'concurrencyKey']);
  }
  for (const [what, v] of [...NOT_STRING.filter(([w]) => w !== 'an array'), ['a string', 'urgent'], ['21 tags', Array.from({ length: 21 }, (_, i) => `t${i}`)]]) {
    out.push([`tags is ${what}`, { tags: v }, ['E_BAD_OPTION'], 'tags']);
  }
  for (const [what, v] of [...NOT_STRING, ['an empty string', ''], ['129 bytes', 'x'.repeat(129)], ['65 × é (130 bytes)', 'é'.repeat(65)], ['a NUL', 'a\0b'], ['a lone surrogate', 'a\ud800b']]) {
    out.push([`a tag is ${what}`, { tags: ['ok', v] }, ['E_BAD_OPTION'], 'tags']);
  }
  return out;
}

/** Event objects and their bad values: [name, event, codes]. */
function badEvents() {
  const out = [];
  for (const [what, v] of [...NOT_OBJECT.filter(([w]) => w !== 'an array')]) out.push([`an event that is ${what}`, v, ['E_BAD_OPTION']]);
  out.push(['an unknown event key', { name: 'bi/evt', dat: {} }, ['E_BAD_OPTION']]);
  for (const [what, v] of [...BAD_NAMES, ['undefined', undefined]]) out.push([`name is ${what}`, { name: v }, ['E_BAD_OPTION']]);
  for (const [what, v] of BAD_NAMES) out.push([`id is ${what}`, { name: 'bi/evt', id: v }, ['E_BAD_OPTION']]);
  for (const [what, v] of BAD_TIMES) out.push([`ts is ${what}`, { name: 'bi/evt', ts: v }, ['E_BAD_OPTION']]);
  for (const [what, v, code] of BAD_PAYLOADS) out.push([`data is ${what}`, { name: 'bi/evt', data: v }, [code]]);
  return out;
}

const UNKNOWN_RUN = 'run_00000000000000000000000000';

matrix('the async API rejects bad input with a documented code and writes nothing', async () => {
  const cases = [];
  const snapshot = mainSnapshot;
  const add = (name, call, codes, extra = {}) => cases.push({ name, call, codes: Array.isArray(codes) ? codes : [codes], snapshot, ...extra });
  const done = await target.trigger('ok');
  await done.result({ timeout: '5s' });
  targetRuns = 0;

  // trigger(taskId, payload, options) and task.trigger(payload, options)
  for (const [what, v] of [...NOT_STRING, ['undefined', undefined]]) add(`trigger(): task id is ${what}`, () => trigger(v, {}), 'E_BAD_OPTION', { option: 'taskId' });
  for (const [what, v] of BAD_STRINGS) add(`trigger(): task id is ${what}`, () => trigger(v, {}), ['E_BAD_OPTION', 'E_UNKNOWN_TASK']);
  add('trigger(): an unknown task id', () => trigger('bi-no-such-task', {}), 'E_UNKNOWN_TASK');
  for (const [what, v, code] of BAD_PAYLOADS) {
    add(`trigger(): payload is ${what}`, () => trigger('bi-target', v), code);
    add(`task.trigger(): payload is ${what}`, () => target.trigger(v), code);
  }
  for (const [what, opts, codes, option] of badTriggerOptions()) {
    add(`trigger(): ${what}`, () => trigger('bi-target', {}, opts), codes, { option });
    add(`task.trigger(): ${what}`, () => target.trigger({}, opts), codes, { option });
  }
  for (const [what, t] of keyTasks) add(`task.trigger(): a ${what}`, () => t.trigger({}), 'E_BAD_OPTION');
  for (const [what, t] of priorityTasks) add(`task.trigger(): a priority function returning ${what}`, () => t.trigger({}), 'E_BAD_OPTION', { option: 'priority' });

  // batchTrigger(items)
  for (const [what, v] of [...NOT_OBJECT.filter(([w]) => w !== 'an array'), ['undefined', undefined]]) add(`batchTrigger(): items that are ${what}`, () => target.batchTrigger(v), 'E_BAD_OPTION', { option: 'items' });
  for (const [what, v] of NOT_OBJECT.filter(([w]) => w !== 'an array')) add(`batchTrigger(): an item that is ${what}`, () => target.batchTrigger([{ payload: 1 }, v]), 'E_BAD_OPTION', { option: 'items[1]' });
  add('batchTrigger(): an item that is an array', () => target.batchTrigger([{ payload: 1 }, []]), 'E_BAD_OPTION', { option: 'items[1]' });
  add('batchTrigger(): an item with an unknown key', () => target.batchTrigger([{ payload: 1 }, { payload: 2, option: { idempotencyKey: 'k' } }]), 'E_BAD_OPTION', { option: 'items[1].option' });
  add('batchTrigger(): 10,001 items', () => target.batchTrigger(Array.from({ length: 10_001 }, () => ({ payload: 1 }))), 'E_BAD_OPTION', { option: 'items' });
  for (const [what, v, code] of BAD_PAYLOADS) add(`batchTrigger(): a payload is ${what}`, () => target.batchTrigger([{ payload: 1 }, { payload: v }]), code);
  for (const [what, opts, codes, option] of badTriggerOptions()) add(`batchTrigger(): ${what}`, () => target.batchTrigger([{ payload: 1 }, { payload: 2, options: opts }]), codes, { option });

  // handle.result(options)
  for (const [what, v] of NOT_OBJECT) add(`handle.result(): options that are ${what}`, () => done.result(v), 'E_BAD_OPTION');
  add('handle.result(): an unknown option', () => done.result({ timeot: '1s' }), 'E_BAD_OPTION', { option: 'result.timeot' });
  for (const [what, v] of BAD_DURATIONS) add(`handle.result(): timeout is ${what}`, () => done.result({ timeout: v }), 'E_BAD_DURATION', { option: 'timeout' });

  // runs.*
  const isNull = (v) => v === null;
  for (const [what, v] of [...NOT_STRING, ['undefined', undefined]]) add(`runs.get(): id is ${what}`, () => runs.get(v), 'E_BAD_OPTION');
  for (const [what, v] of BAD_STRINGS) add(`runs.get(): id is ${what}`, () => runs.get(v), 'E_BAD_OPTION', { allow: isNull });
  add('runs.get(): an unknown id', () => runs.get(UNKNOWN_RUN), 'E_BAD_OPTION', { allow: isNull });
  for (const verb of ['cancel', 'replay', 'retry']) {
    for (const [what, v] of [...NOT_STRING, ['undefined', undefined]]) add(`runs.${verb}(): id is ${what}`, () => runs[verb](v), 'E_BAD_OPTION');
    for (const [what, v] of BAD_STRINGS) add(`runs.${verb}(): id is ${what}`, () => runs[verb](v), ['E_BAD_OPTION', 'E_RUN_NOT_FOUND']);
    add(`runs.${verb}(): an unknown id`, () => runs[verb](UNKNOWN_RUN), 'E_RUN_NOT_FOUND');
  }
  add('runs.retry(): a run that did not fail', () => runs.retry(done.id), 'E_BAD_OPTION');
  const empty = (v) => v !== null && typeof v === 'object' && Array.isArray(v.runs) && v.runs.length === 0;
  for (const [what, v] of NOT_OBJECT) add(`runs.list(): options that are ${what}`, () => runs.list(v), 'E_BAD_OPTION');
  add('runs.list(): an unknown option', () => runs.list({ staus: 'failed' }), 'E_BAD_OPTION', { option: 'runs.list.staus' });
  for (const key of ['taskId', 'tag', 'cursor']) {
    for (const [what, v] of NOT_STRING) add(`runs.list(): ${key} is ${what}`, () => runs.list({ [key]: v }), 'E_BAD_OPTION');
    for (const [what, v] of BAD_STRINGS) add(`runs.list(): ${key} is ${what}`, () => runs.list({ [key]: v }), 'E_BAD_OPTION', { allow: empty });
  }
  add('runs.list(): a cursor that is no cursor', () => runs.list({ cursor: 'garbage' }), 'E_BAD_OPTION', { allow: empty });
  for (const [what, v] of [...NOT_STRING, ['unknown', 'sleeping'], ['an empty string', '']]) add(`runs.list(): status is ${what}`, () => runs.list({ status: v }), 'E_BAD_OPTION', { option: 'status' });
  for (const [what, v] of BAD_TIMES) add(`runs.list(): since is ${what}`, () => runs.list({ since: v }), 'E_BAD_OPTION', { option: 'since' });
  for (const [what, v] of BAD_COUNTS) add(`runs.list(): limit is ${what}`, () => runs.list({ limit: v }), 'E_BAD_OPTION', { option: 'limit' });

  // schedules.*
  const sched = (extra) => ({ task: 'bi-target', cron: '0 9 * * *', ...extra });
  for (const [what, v] of [...NOT_OBJECT, ['undefined', undefined]]) add(`schedules.create(): input that is ${what}`, () => schedules.create(v), 'E_BAD_OPTION');
  add('schedules.create(): an unknown key', () => schedules.create(sched({ timezone: 'UTC' })), 'E_BAD_OPTION', { option: 'schedules.create.timezone' });
  for (const [what, v] of [...BAD_NAMES, ['undefined', undefined], ['an object without id', {}], ['an object with a numeric id', { id: 5 }]]) {
    add(`schedules.create(): task is ${what}`, () => schedules.create(sched({ task: v })), ['E_BAD_OPTION', 'E_UNKNOWN_TASK']);
  }
  add('schedules.create(): an unknown task', () => schedules.create(sched({ task: 'bi-no-such-task' })), 'E_UNKNOWN_TASK');
  for (const [what, v] of [...NOT_STRING, ['undefined', undefined]]) add(`schedules.create(): cron is ${what}`, () => schedules.create(sched({ cron: v })), ['E_BAD_OPTION', 'E_BAD_CRON']);
  for (const [what, v] of [['an empty string', ''], ['4 fields', '* * * *'], ['a minute of 61', '61 * * * *'], ['words', 'every monday'], ['a NUL', '0 9 * * *\0'], ['a lone surrogate', '0 9 * * \ud800'], ['10,000 characters', '* '.repeat(5000)]]) {
    add(`schedules.create(): cron is ${what}`, () => schedules.create(sched({ cron: v })), 'E_BAD_CRON');
  }
  for (const [what, v] of [...NOT_STRING, ['not a zone', 'Mars/Olympus'], ['an empty string', ''], ['a NUL', 'UTC\0'], ['a lone surrogate', 'Europe/\ud800'], ['300 bytes', 'x'.repeat(300)]]) {
    add(`schedules.create(): tz is ${what}`, () => schedules.create(sched({ tz: v })), 'E_BAD_OPTION');
  }
  for (const [what, v] of BAD_NAMES) add(`schedules.create(): externalId is ${what}`, () => schedules.create(sched({ externalId: v })), 'E_BAD_OPTION', { option: 'externalId' });
  for (const [what, v, code] of BAD_PAYLOADS) add(`schedules.create(): payload is ${what}`, () => schedules.create(sched({ payload: v })), code);
  const none = (v) => Array.isArray(v) && v.length === 0;
  for (const [what, v] of NOT_OBJECT) add(`schedules.list(): options that are ${what}`, () => schedules.list(v), 'E_BAD_OPTION');
  add('schedules.list(): an unknown option', () => schedules.list({ taskId: 'bi-target' }), 'E_BAD_OPTION', { option: 'schedules.list.taskId' });
  for (const [what, v] of [...NOT_STRING, ['an object without id', {}]]) add(`schedules.list(): task is ${what}`, () => schedules.list({ task: v }), 'E_BAD_OPTION');
  for (const [what, v] of BAD_STRINGS) add(`schedules.list(): task is ${what}`, () => schedules.list({ task: v }), 'E_BAD_OPTION', { allow: none });
  const no = (v) => v === false;
  for (const [what, v] of [...NOT_STRING, ['undefined', undefined]]) add(`schedules.delete(): id is ${what}`, () => schedules.delete(v), 'E_BAD_OPTION');
  for (const [what, v] of BAD_STRINGS) add(`schedules.delete(): id is ${what}`, () => schedules.delete(v), 'E_BAD_OPTION', { allow: no });
  add('schedules.delete(): an unknown id', () => schedules.delete('sch_none'), 'E_BAD_OPTION', { allow: no });

  // tokens.complete(token, data)
  for (const [what, v] of [...BAD_NAMES, ['undefined', undefined], ['an object without id', {}]]) add(`tokens.complete(): token is ${what}`, () => tokens.complete(v, 1), 'E_BAD_OPTION', { option: 'token' });
  for (const [what, v] of BAD_STRINGS) add(`tokens.complete(): token.id is ${what}`, () => tokens.complete({ id: v, expiresAt: null }, 1), 'E_BAD_OPTION', { option: 'token' });
  for (const [what, v, code] of BAD_PAYLOADS) add(`tokens.complete(): data is ${what}`, () => tokens.complete('tok_bad_input_matrix', v), code);

  // send(events)
  for (const [what, v] of [['undefined', undefined], ['a number', 1], ['a string', 'bi/evt'], ['a boolean', true], ['null', null], ['a function', () => 1], ['a symbol', Symbol('e')], ['a BigInt', 1n]]) {
    add(`send(): events that are ${what}`, () => send(v), 'E_BAD_OPTION');
  }
  add('send(): 10,001 events', () => send(Array.from({ length: 10_001 }, () => ({ name: 'bi/evt' }))), 'E_BAD_OPTION', { option: 'events' });
  for (const [what, ev, codes] of badEvents()) {
    add(`send(): ${what}`, () => send(ev), codes);
    add(`send([]): ${what}`, () => send([{ name: 'bi/evt' }, ev]), codes);
  }
  for (const [what, , name] of keyTasks) add(`send(): a subscriber's ${what}`, () => send({ name, data: {} }), 'E_BAD_OPTION');

  // stats() and start() take no arguments; shutdown() is last (see below).
  return cases;
});

test('a bad call does not fail a good call of the same tick', async () => {
  const cases = [
    ['send with a lone surrogate in the name', () => send({ name: '\ud800' })],
    ['send with a lone surrogate in the id', () => send({ name: 'bi/evt', id: '\ud800' })],
    ['send with 150 levels of data', () => send({ name: 'bi/evt', data: deepArray(150) })],
    ['trigger with a lone surrogate tag', () => target.trigger({}, { tags: ['\ud800'] })],
    ['trigger with 150 levels of payload', () => target.trigger(deepArray(150))],
  ];
  for (const [what, bad] of cases) {
    const beforeRuns = (await runs.list({ limit: 1000 })).runs.length;
    const [good1, good2, wrong] = await Promise.allSettled([send({ name: 'bi/evt', data: { ok: 1 } }), target.trigger('good'), bad()]);
    assert.strictEqual(good1.status, 'fulfilled', `${what}: a good send next to it failed: ${good1.reason && describeError(good1.reason)}`);
    assert.strictEqual(good2.status, 'fulfilled', `${what}: a good trigger next to it failed: ${good2.reason && describeError(good2.reason)}`);
    assert.strictEqual(wrong.status, 'rejected', `${what} was accepted`);
    assert.deepStrictEqual(checkError({ codes: ['E_BAD_OPTION', 'E_PAYLOAD_TOO_DEEP'] }, wrong.reason), [], what);
    await good2.value.result({ timeout: '5s' });
    await quiet();
    assert.strictEqual((await runs.list({ limit: 1000 })).runs.length, beforeRuns + 2, `${what}: only the good calls were stored`);
  }
  targetRuns = 0;
});

// ---- the HTTP API ------------------------------------------------------------------

matrix('every HTTP endpoint answers bad input with a 4xx JSON error and writes nothing', async () => {
  const routes = durablyRoutes({ maxBodyBytes: 64 * 1024 });
  const cases = [];
  const request = (method, p, body, headers = {}) => {
    const init = { method, headers: { ...headers } };
    if (body !== undefined) {
      init.headers['content-type'] ??= 'application/json';
      init.body = typeof body === 'string' ? body : JSON.stringify(body);
    }
    return new Request(`http://127.0.0.1:3000/durably/${p}`, init);
  };
  /** The answer must be a 4xx (`status` if given) `{ error: { code, message } }` with one of `codes`. */
  const judge = (codes, status) => (r) => {
    const problems = [];
    if (!(r.status >= 400 && r.status < 500)) problems.push(`status ${r.status}, expected a 4xx: ${show(r.json)}`);
    else if (status !== undefined && r.status !== status) problems.push(`status ${r.status}, expected ${status}`);
    const e = r.json?.error;
    if (!e || typeof e.code !== 'string' || typeof e.message !== 'string') problems.push(`not a JSON error: ${show(r.json)}`);
    else if (e.code === 'E_INTERNAL') problems.push(`E_INTERNAL: ${e.message}`);
    else if (!codes.includes(e.code)) problems.push(`code ${e.code}, expected ${codes.join(' or ')}: ${e.message}`);
    return problems;
  };
  const add = (name, method, p, body, codes, status, headers, allowEmptyPage = false) =>
    cases.push({
      name: `HTTP ${method} ${name}`,
      snapshot: mainSnapshot,
      codes,
      call: async () => {
        const res = await routes[method](request(method, p, body, headers));
        const text = await res.text();
        let json;
        try {
          json = JSON.parse(text);
        } catch {
          json = text;
        }
        return { status: res.status, json };
      },
      judge: (r) => {
        // A filter nothing can match may answer an empty page.
        if (allowEmptyPage && r.status === 200 && Array.isArray(r.json?.runs) && r.json.runs.length === 0) return [];
        return judge(codes, status)(r);
      },
    });
  /** Values JSON carries unchanged (lone surrogates and NULs go over the wire as escapes). */
  const jsonSafe = (v) => {
    try {
      const text = JSON.stringify(v);
      return text !== undefined && isDeepStrictEqual(JSON.parse(text), v);
    } catch {
      return false;
    }
  };
  const S = (v) => JSON.stringify(v);

  // trigger
  for (const [what, v, code] of BAD_PAYLOADS.filter(([, v]) => jsonSafe(v))) add(`trigger: payload is ${what}`, 'POST', 'trigger', `{"taskId":"bi-target","payload":${S(v)}}`, [code]);
  for (const [what, v] of [...NOT_STRING.filter(([, v]) => jsonSafe(v)), ['missing', undefined]]) add(`trigger: taskId is ${what}`, 'POST', 'trigger', { taskId: v }, ['E_BAD_OPTION']);
  for (const [what, v] of BAD_STRINGS) add(`trigger: taskId is ${what}`, 'POST', 'trigger', `{"taskId":${S(v)}}`, ['E_BAD_OPTION', 'E_UNKNOWN_TASK']);
  add('trigger: an unknown taskId', 'POST', 'trigger', { taskId: 'bi-no-such-task' }, ['E_UNKNOWN_TASK']);
  add('trigger: an unknown body key', 'POST', 'trigger', { taskId: 'bi-target', option: { idempotencyKey: 'k' } }, ['E_BAD_OPTION', 'E_BAD_REQUEST']);
  for (const [what, opts, codes] of badTriggerOptions().filter(([, o]) => jsonSafe(o))) add(`trigger: ${what}`, 'POST', 'trigger', `{"taskId":"bi-target","options":${S(opts)}}`, codes);
  for (const [what, text] of [['an array', '[]'], ['a number', '5'], ['a string', '"x"'], ['null', 'null'], ['not JSON', '{taskId:'], ['a NUL byte', '\0'], ['truncated', '{"taskId":"bi-target"']]) {
    add(`trigger: a body that is ${what}`, 'POST', 'trigger', text, ['E_BAD_REQUEST']);
  }
  add('trigger: a body that is not application/json', 'POST', 'trigger', { taskId: 'bi-target' }, ['E_BAD_REQUEST'], 415, { 'content-type': 'text/plain' });
  add('trigger: a body over maxBodyBytes', 'POST', 'trigger', { taskId: 'bi-target', payload: 'x'.repeat(70 * 1024) }, ['E_PAYLOAD_TOO_LARGE'], 413);

  // send
  for (const [what, ev, codes] of badEvents().filter(([, ev]) => ev !== null && typeof ev === 'object' && jsonSafe(ev))) {
    add(`send: ${what}`, 'POST', 'send', S(ev), codes);
    add(`send [list]: ${what}`, 'POST', 'send', `[{"name":"bi/evt"},${S(ev)}]`, codes);
  }
  for (const [what, text] of [['a number', '5'], ['a string', '"bi/evt"'], ['null', 'null'], ['not JSON', '{name'], ['a list holding a number', '[{"name":"bi/evt"},5]']]) {
    add(`send: a body that is ${what}`, 'POST', 'send', text, ['E_BAD_REQUEST', 'E_BAD_OPTION']);
  }

  // tokens/:id/complete
  for (const [what, seg] of [['a NUL', '%00'], ['300 bytes', 'x'.repeat(300)], ['400 bytes of é', '%C3%A9'.repeat(200)], ['a lone surrogate (invalid UTF-8)', '%ED%A0%80'], ['bad percent-encoding', '%E0%A4%A']]) {
    add(`tokens/:id/complete: id is ${what}`, 'POST', `tokens/${seg}/complete`, { data: 1 }, ['E_BAD_OPTION', 'E_BAD_REQUEST']);
  }
  add('tokens/:id/complete: an empty id', 'POST', 'tokens//complete', { data: 1 }, ['E_NOT_FOUND', 'E_BAD_OPTION']);
  for (const [what, v, code] of BAD_PAYLOADS.filter(([, v]) => jsonSafe(v))) add(`tokens/:id/complete: data is ${what}`, 'POST', 'tokens/tok_bad_input_matrix/complete', `{"data":${S(v)}}`, [code]);
  add('tokens/:id/complete: an unknown body key', 'POST', 'tokens/tok_bad_input_matrix/complete', { dat: 1 }, ['E_BAD_OPTION', 'E_BAD_REQUEST']);
  for (const [what, text] of [['an array', '[]'], ['a number', '5'], ['not JSON', '{data'], ['null', 'null']]) {
    add(`tokens/:id/complete: a body that is ${what}`, 'POST', 'tokens/tok_bad_input_matrix/complete', text, ['E_BAD_REQUEST']);
  }

  // runs/:id/cancel|replay|retry and GET runs/:id
  const badRunIds = [['unknown', UNKNOWN_RUN], ['a NUL', '%00'], ['300 bytes', 'x'.repeat(300)], ['a lone surrogate (invalid UTF-8)', '%ED%A0%80'], ['bad percent-encoding', '%']];
  for (const verb of ['cancel', 'replay', 'retry']) {
    for (const [what, seg] of badRunIds) add(`runs/:id/${verb}: id is ${what}`, 'POST', `runs/${seg}/${verb}`, {}, ['E_RUN_NOT_FOUND', 'E_BAD_OPTION', 'E_BAD_REQUEST']);
    for (const [what, text] of [['an array', '[]'], ['a number', '5'], ['not JSON', '{'], ['an object with an unknown key', '{"force":true}']]) {
      add(`runs/:id/${verb}: a body that is ${what}`, 'POST', `runs/${UNKNOWN_RUN}/${verb}`, text, ['E_BAD_REQUEST', 'E_BAD_OPTION']);
    }
  }
  for (const [what, seg] of badRunIds) add(`runs/:id: id is ${what}`, 'GET', `runs/${seg}`, undefined, ['E_RUN_NOT_FOUND', 'E_BAD_OPTION', 'E_BAD_REQUEST']);

  // GET runs?…, stats, wrong methods
  for (const [what, q] of [
    ['status unknown', 'status=sleeping'],
    ['status empty', 'status='],
    ['since unparseable', 'since=yesterday-ish'],
    ['since past the last Date', 'since=99999999999999999999'],
    ['limit NaN', 'limit=abc'],
    ['limit 0', 'limit=0'],
    ['limit negative', 'limit=-1'],
    ['limit non-integer', 'limit=1.5'],
    ['limit Infinity', 'limit=Infinity'],
    ['an unknown parameter', 'staus=failed'],
  ]) {
    add(`runs?${q} (${what})`, 'GET', `runs?${q}`, undefined, ['E_BAD_OPTION']);
  }
  for (const [what, q] of [['taskId with a NUL', 'taskId=%00'], ['tag of 300 bytes', `tag=${'x'.repeat(300)}`], ['a cursor that is no cursor', 'cursor=garbage'], ['taskId with a lone surrogate', 'taskId=%ED%A0%80']]) {
    add(`runs?… (${what})`, 'GET', `runs?${q}`, undefined, ['E_BAD_OPTION'], undefined, undefined, true);
  }
  add('stats/extra', 'GET', 'stats/extra', undefined, ['E_NOT_FOUND'], 404);
  add('stats?x=1 (an unknown parameter)', 'GET', 'stats?x=1', undefined, ['E_BAD_OPTION']);
  add('trigger (a POST route)', 'GET', 'trigger', undefined, ['E_METHOD_NOT_ALLOWED'], 405);
  add('runs (a GET route)', 'POST', 'runs', {}, ['E_METHOD_NOT_ALLOWED'], 405);
  return cases;
});

// ---- the step API inside a run -------------------------------------------------------

/** Step calls by case name; a run of `bi-steps` makes one and records what it got. */
const stepCalls = new Map();
const stepOutcomes = new Map();
const stepRunner = task({
  id: 'bi-steps',
  retry: { maxAttempts: 1 },
  run: async (name, { step }) => {
    const f = stepCalls.get(name);
    let p;
    try {
      p = f(step);
    } catch (error) {
      stepOutcomes.get(name)({ error, sync: true });
      return 'threw';
    }
    if (!(p instanceof Promise)) {
      stepOutcomes.get(name)({ value: p, notPromise: true });
      return 'returned';
    }
    try {
      stepOutcomes.get(name)({ value: await p });
      return 'resolved';
    } catch (error) {
      stepOutcomes.get(name)({ error });
      return 'rejected';
    }
  },
});
const child = task({ id: 'bi-child', run: async (p) => p });

matrix('every step function rejects bad input inside a run with a documented code, stores no step, and other runs go on', async () => {
  const list = [];
  const add = (name, f, codes, option) => list.push({ name: `step.${name}`, f, codes: Array.isArray(codes) ? codes : [codes], option });
  const ids = [...BAD_NAMES, ['undefined', undefined]];
  const fns = {
    run: (id) => (s) => s.run(id, () => 1),
    sleep: (id) => (s) => s.sleep(id, '1s'),
    sleepUntil: (id) => (s) => s.sleepUntil(id, Date.now() + 1000),
    waitForEvent: (id) => (s) => s.waitForEvent(id, { event: 'bi/never', timeout: '1s' }),
    sendEvent: (id) => (s) => s.sendEvent(id, { name: 'bi/evt' }),
    invoke: (id) => (s) => s.invoke(id, child, 1),
    createToken: (id) => (s) => s.createToken(id),
    waitForToken: (id) => (s) => s.waitForToken(id, { id: 'tok_bad_input_matrix', expiresAt: null }),
  };
  for (const [fname, mk] of Object.entries(fns)) {
    for (const [what, id] of ids) add(`${fname}(): id is ${what}`, mk(id), 'E_BAD_OPTION', 'step id');
  }
  for (const [what, fn] of [...NOT_STRING.filter(([w]) => w !== 'a function'), ['a string', 'go'], ['undefined', undefined]]) add(`run(): fn is ${what}`, (s) => s.run('a', fn), 'E_BAD_OPTION');
  for (const [what, d] of [...BAD_DURATIONS, ['undefined', undefined]]) add(`sleep(): duration is ${what}`, (s) => s.sleep('a', d), 'E_BAD_DURATION');
  for (const [what, t] of [...BAD_TIMES, ['undefined', undefined]]) add(`sleepUntil(): time is ${what}`, (s) => s.sleepUntil('a', t), 'E_BAD_OPTION');
  // waitForEvent
  for (const [what, o] of [...NOT_OBJECT, ['undefined', undefined]]) add(`waitForEvent(): options that are ${what}`, (s) => s.waitForEvent('a', o), 'E_BAD_OPTION');
  add('waitForEvent(): an unknown option', (s) => s.waitForEvent('a', { event: 'bi/never', timout: '1s' }), 'E_BAD_OPTION', 'waitForEvent.timout');
  for (const [what, v] of [...BAD_NAMES.filter(([w]) => w !== 'an array'), ['undefined', undefined], ['an empty list', []], ['a list with a bad name', ['bi/never', '']]]) {
    add(`waitForEvent(): event is ${what}`, (s) => s.waitForEvent('a', { event: v }), 'E_BAD_OPTION');
  }
  for (const [what, v] of [['a number', 1], ['an object', {}], ['bad syntax', '=='], ['a lone surrogate', '"\ud800" == async.name']]) {
    add(`waitForEvent(): if is ${what}`, (s) => s.waitForEvent('a', { event: 'bi/never', if: v }), 'E_BAD_OPTION');
  }
  for (const [what, v] of [['a number', 1], ['an empty string', ''], ['a lone surrogate', 'data.\ud800'], ['null', null], ['an object', {}]]) {
    add(`waitForEvent(): match is ${what}`, (s) => s.waitForEvent('a', { event: 'bi/never', match: v }), 'E_BAD_OPTION', 'match');
  }
  for (const [what, v] of BAD_DURATIONS) add(`waitForEvent(): timeout is ${what}`, (s) => s.waitForEvent('a', { event: 'bi/never', timeout: v }), 'E_BAD_DURATION', 'timeout');
  for (const [what, v] of [['unknown', 'then'], ['a number', 1], ['null', null]]) add(`waitForEvent(): since is ${what}`, (s) => s.waitForEvent('a', { event: 'bi/never', since: v }), 'E_BAD_OPTION', 'since');
  // sendEvent
  for (const [what, v] of [['undefined', undefined], ['a number', 1], ['a string', 'bi/evt'], ['null', null], ['a symbol', Symbol('e')]]) add(`sendEvent(): events that are ${what}`, (s) => s.sendEvent('a', v), 'E_BAD_OPTION');
  for (const [what, ev, codes] of badEvents()) add(`sendEvent(): event ${what}`, (s) => s.sendEvent('a', ev), codes);
  // invoke
  for (const [what, v] of [...NOT_STRING.filter(([w]) => w !== 'an object'), ['undefined', undefined], ['an object without id', {}], ['an object with a numeric id', { id: 5 }]]) {
    add(`invoke(): task is ${what}`, (s) => s.invoke('a', v, 1), 'E_BAD_OPTION', 'task');
  }
  for (const [what, v] of BAD_STRINGS) add(`invoke(): task id is ${what}`, (s) => s.invoke('a', v, 1), ['E_BAD_OPTION', 'E_UNKNOWN_TASK']);
  add('invoke(): an unknown task', (s) => s.invoke('a', 'bi-no-such-task', 1), 'E_UNKNOWN_TASK');
  for (const [what, v, code] of BAD_PAYLOADS) add(`invoke(): payload is ${what}`, (s) => s.invoke('a', child, v), code);
  // createToken
  for (const [what, v] of NOT_OBJECT) add(`createToken(): options that are ${what}`, (s) => s.createToken('a', v), 'E_BAD_OPTION');
  add('createToken(): an unknown option', (s) => s.createToken('a', { timout: '1s' }), 'E_BAD_OPTION', 'createToken.timout');
  for (const [what, v] of BAD_DURATIONS) add(`createToken(): timeout is ${what}`, (s) => s.createToken('a', { timeout: v }), 'E_BAD_DURATION', 'timeout');
  // waitForToken
  for (const [what, v] of [...NOT_OBJECT, ['undefined', undefined], ['an object without id', {}]]) add(`waitForToken(): token is ${what}`, (s) => s.waitForToken('a', v), 'E_BAD_OPTION', 'token');
  for (const [what, v] of BAD_NAMES) add(`waitForToken(): token.id is ${what}`, (s) => s.waitForToken('a', { id: v, expiresAt: null }), 'E_BAD_OPTION', 'token');
  for (const [what, v] of [['a string', 'soon'], ['NaN', NaN], ['Infinity', Infinity], ['negative', -1], ['an object', {}], ['a boolean', true]]) {
    add(`waitForToken(): token.expiresAt is ${what}`, (s) => s.waitForToken('a', { id: 'tok_bad_input_matrix', expiresAt: v }), 'E_BAD_OPTION');
  }

  // All runs at once (one batch), each making one bad call; then a case per run.
  const settled = new Map();
  for (const c of list) {
    stepCalls.set(c.name, c.f);
    settled.set(c.name, new Promise((r) => stepOutcomes.set(c.name, r)));
  }
  const handles = await stepRunner.batchTrigger(list.map((c) => ({ payload: c.name })));
  const results = await Promise.all(
    list.map(async (c, i) => {
      const reported = await within(settled.get(c.name), BOUND_MS);
      const outcome = reported.hang ? { hang: true } : reported.value;
      // The run ends by itself once its code caught the error.
      const ended = outcome.hang ? null : await within(handles[i].result({ timeout: BOUND_MS }), BOUND_MS + 500);
      return { c, h: handles[i], outcome, ended };
    }),
  );
  const cases = results.map(({ c, h, outcome, ended }) => ({
    name: c.name,
    codes: c.codes,
    option: c.option,
    outcome,
    after: async () => {
      const problems = [];
      const run = await runs.get(h.id);
      if (outcome.hang) {
        const why = run.error ? `${run.status} with ${run.error.code ?? run.error.name}: ${run.error.message}` : run.status;
        problems.push(`(the run is ${why})`);
        await runs.cancel(h.id).catch(() => {});
      } else if ('error' in ended || ended.hang) {
        problems.push(`the run did not end cleanly after its code caught the error: ${ended.hang ? 'a hang' : describeError(ended.error)}`);
      }
      if (run && run.steps.length > 0) problems.push(`a step was stored: ${run.steps.map((s) => `${s.id}:${s.status}`).join(', ')}`);
      return problems;
    },
  }));
  // And the engine goes on: a plain run completes.
  cases.push({
    name: 'step: the engine still runs other runs afterwards',
    codes: [],
    call: async () => (await child.trigger('still working')).result({ timeout: '5s' }),
    allow: (v) => v === 'still working',
  });
  return cases;
});

// ---- durably/testing: the engine's methods ---------------------------------------------

matrix("createTestEngine()'s methods reject bad input and write nothing", async () => {
  const t = createTestEngine({ now: '2026-01-01T00:00:00Z' });
  const echo = t.task({ id: 'bi-test-echo', run: async (p) => p });
  const h = await echo.trigger(1);
  await t.idle();
  const snapshot = async () => {
    const list = await t.runs.list({ limit: 1000 });
    const sc = await t.schedules.list();
    return JSON.stringify({ runs: list.runs.map((r) => [r.id, r.status]), schedules: sc.map((s) => s.id), now: t.now().getTime() });
  };
  const cases = [];
  const add = (name, call, codes, extra = {}) => cases.push({ name: `testing: ${name}`, call, codes: Array.isArray(codes) ? codes : [codes], snapshot, stats: async () => ({ ready: 0, running: 0 }), ...extra });
  for (const [what, v] of [...NOT_OBJECT.slice(0, 4), ['an unknown option', { id: 'bi-test-x', run: async () => 1, retires: 1 }], ['a bad id', { id: 'has space', run: async () => 1 }]]) {
    add(`t.task(): ${what}`, () => t.task(v), 'E_BAD_OPTION', { sync: true, snapshot: undefined });
  }
  for (const [what, v] of [...NOT_STRING, ['undefined', undefined]]) add(`t.trigger(): task id is ${what}`, () => t.trigger(v, 1), 'E_BAD_OPTION', { option: 'taskId' });
  add('t.trigger(): an unknown task id', () => t.trigger('bi-target', 1), 'E_UNKNOWN_TASK');
  // The test engine has the default limit (4 MiB).
  const MiB4 = 4 * 1024 * 1024;
  const payloads = [
    ...BAD_PAYLOADS.filter(([, , code]) => code !== 'E_PAYLOAD_TOO_LARGE'),
    ['over 4 MiB', 'x'.repeat(MiB4), 'E_PAYLOAD_TOO_LARGE'],
    ['over 4 MiB in bytes, not characters', 'é'.repeat(MiB4 / 2 + 8), 'E_PAYLOAD_TOO_LARGE'],
  ];
  for (const [what, v, code] of payloads) add(`t.trigger(): payload is ${what}`, () => t.trigger('bi-test-echo', v), code);
  for (const [what, opts, codes, option] of badTriggerOptions()) add(`t.trigger(): ${what}`, () => t.trigger('bi-test-echo', 1, opts), codes, { option });
  for (const [what, ev, codes] of badEvents().filter(([w]) => !/maxPayloadBytes/.test(w))) add(`t.send(): ${what}`, () => t.send(ev), codes);
  add('t.send(): data over 4 MiB', () => t.send({ name: 'bi/evt', data: 'x'.repeat(MiB4) }), 'E_PAYLOAD_TOO_LARGE');
  for (const verb of ['get', 'cancel', 'replay', 'retry']) {
    for (const [what, v] of [...NOT_STRING, ['undefined', undefined]]) add(`t.runs.${verb}(): id is ${what}`, () => t.runs[verb](v), 'E_BAD_OPTION');
  }
  for (const verb of ['cancel', 'replay', 'retry']) add(`t.runs.${verb}(): an unknown id`, () => t.runs[verb](UNKNOWN_RUN), 'E_RUN_NOT_FOUND');
  for (const [what, v] of NOT_OBJECT) add(`t.runs.list(): options that are ${what}`, () => t.runs.list(v), 'E_BAD_OPTION');
  add('t.runs.list(): an unknown option', () => t.runs.list({ staus: 'failed' }), 'E_BAD_OPTION');
  for (const [what, v] of BAD_COUNTS) add(`t.runs.list(): limit is ${what}`, () => t.runs.list({ limit: v }), 'E_BAD_OPTION');
  for (const [what, v] of [...BAD_NAMES, ['undefined', undefined]]) add(`t.tokens.complete(): token is ${what}`, () => t.tokens.complete(v, 1), 'E_BAD_OPTION');
  for (const [what, v, code] of payloads) add(`t.tokens.complete(): data is ${what}`, () => t.tokens.complete('tok_x', v), code);
  for (const [what, v] of [...NOT_OBJECT, ['undefined', undefined]]) add(`t.schedules.create(): input that is ${what}`, () => t.schedules.create(v), 'E_BAD_OPTION');
  for (const [what, v] of [['an empty string', ''], ['words', 'every monday'], ['a lone surrogate', '0 9 * * \ud800']]) add(`t.schedules.create(): cron is ${what}`, () => t.schedules.create({ task: 'bi-test-echo', cron: v }), 'E_BAD_CRON');
  for (const [what, v] of [['not a zone', 'Mars/Olympus'], ['a lone surrogate', '\ud800'], ['a number', 1]]) add(`t.schedules.create(): tz is ${what}`, () => t.schedules.create({ task: 'bi-test-echo', cron: '0 9 * * *', tz: v }), 'E_BAD_OPTION');
  for (const [what, v] of BAD_NAMES) add(`t.schedules.create(): externalId is ${what}`, () => t.schedules.create({ task: 'bi-test-echo', cron: '0 9 * * *', externalId: v }), 'E_BAD_OPTION');
  for (const [what, v] of NOT_OBJECT) add(`t.schedules.list(): options that are ${what}`, () => t.schedules.list(v), 'E_BAD_OPTION');
  for (const [what, v] of [...NOT_STRING, ['undefined', undefined]]) add(`t.schedules.delete(): id is ${what}`, () => t.schedules.delete(v), 'E_BAD_OPTION');
  for (const [what, v] of [...BAD_DURATIONS, ['undefined', undefined]]) add(`t.advance(): duration is ${what}`, () => t.advance(v), 'E_BAD_DURATION');
  for (const [what, v] of [...BAD_TIMES, ['undefined', undefined]]) add(`t.setTime(): time is ${what}`, () => t.setTime(v), 'E_BAD_OPTION');
  for (const [what, v] of NOT_OBJECT) add(`handle.result(): options that are ${what}`, () => h.result(v), 'E_BAD_OPTION');
  cases.push({ name: 'testing: close', codes: [], call: () => t.close(), allow: () => true });
  return cases;
});

// ---- shutdown(), last: a wrong call must not stop the engine -------------------------------

matrix('shutdown() rejects bad options and keeps the engine running', () => {
  const cases = [];
  const stillRunning = async () => {
    const h = await target.trigger('after shutdown()');
    const r = await within(h.result({ timeout: '2s' }), 3000);
    if ('value' in r) return [];
    await start(); // for the cases that follow
    return [`the engine stopped running runs: ${describeError(r.error ?? 'a hang')}`];
  };
  const add = (name, v, codes, option) => cases.push({ name: `shutdown(): ${name}`, call: () => shutdown(v), codes: [codes], option, after: stillRunning });
  for (const [what, v] of NOT_OBJECT) add(`options that are ${what}`, v, 'E_BAD_OPTION');
  add('an unknown option', { timout: '1s' }, 'E_BAD_OPTION', 'shutdown.timout');
  for (const [what, v] of BAD_DURATIONS) add(`timeout is ${what}`, { timeout: v }, 'E_BAD_DURATION', 'timeout');
  return cases;
});
