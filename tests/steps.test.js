// Steps and retries (DESIGN §1.3, §1.5, §3.2): a step runs until it succeeds once and is
// memoized after that; each step has its own retry budget and code outside steps shares
// the run's; NonRetriableError fails at once; parallel steps are in flight together;
// reused step ids are stored as id, id:1, id:2.
const { test, before, after } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { task, configure, start, shutdown, runs, DurablyError, NonRetriableError } = require('durably');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-steps-'));
configure({ dataDir: dir });
before(() => start());
after(async () => {
  await shutdown({ timeout: '2s' });
  fs.rmSync(dir, { recursive: true, force: true });
});

// Fast, deterministic retries: 10 ms, 20 ms, … without jitter.
const fastRetry = (maxAttempts) => ({ maxAttempts, minTimeout: 10, randomize: false });

/** Asserts that `promise` rejects with E_RUN_FAILED carrying the original error; returns it. */
async function assertRunFailed(promise, { name, message }) {
  let caught;
  await assert.rejects(promise, (e) => {
    caught = e;
    return true;
  });
  assert.ok(caught instanceof DurablyError, `expected a DurablyError, got ${caught}`);
  assert.strictEqual(caught.code, 'E_RUN_FAILED');
  assert.ok(caught.message.includes(message), `message ${JSON.stringify(caught.message)} should contain ${JSON.stringify(message)}`);
  const cause = caught.cause;
  assert.strictEqual(cause.name, name);
  assert.strictEqual(cause.message, message);
  assert.strictEqual(typeof cause.stack, 'string');
  assert.ok(cause.stack.includes(message), 'the stored stack is the original error\'s stack');
  return caught;
}

test('a failing step is retried until it succeeds, and the completed step before it does not run again', async () => {
  let aRuns = 0;
  const bAttempts = [];
  const t = task({
    id: 'steps-retry-until-success',
    retry: fastRetry(3),
    run: async (_p, { step }) => {
      const a = await step.run('a', () => {
        aRuns++;
        return 'A';
      });
      const b = await step.run('b', ({ attempt }) => {
        bAttempts.push(attempt);
        if (bAttempts.length < 3) throw new Error(`b failed ${bAttempts.length}`);
        return `B after ${attempt}`;
      });
      return [a, b];
    },
  });
  const h = await t.trigger();
  assert.deepStrictEqual(await h.result({ timeout: '5s' }), ['A', 'B after 3']);
  assert.strictEqual(aRuns, 1, 'step a is memoized across the retries of step b');
  assert.deepStrictEqual(bAttempts, [1, 2, 3], 'step b sees its own 1-based attempt');

  const run = await runs.get(h.id);
  assert.strictEqual(run.status, 'completed');
  const steps = Object.fromEntries(run.steps.map((s) => [s.id, s]));
  assert.deepStrictEqual(Object.keys(steps).sort(), ['a', 'b']);
  assert.strictEqual(steps.a.status, 'completed');
  assert.strictEqual(steps.a.attempts, 1);
  assert.strictEqual(steps.a.output, 'A');
  assert.strictEqual(steps.b.status, 'completed');
  assert.strictEqual(steps.b.attempts, 3);
  assert.strictEqual(steps.b.output, 'B after 3');
});

test('a step that runs out of attempts fails the run, and the step ran exactly maxAttempts times', async () => {
  let flakyRuns = 0;
  const t = task({
    id: 'steps-retry-exhausted',
    retry: fastRetry(2),
    run: async (_p, { step }) => {
      await step.run('flaky', () => {
        flakyRuns++;
        throw new Error(`flaky failed ${flakyRuns}`);
      });
    },
  });
  const h = await t.trigger();
  await assertRunFailed(h.result({ timeout: '5s' }), { name: 'Error', message: 'flaky failed 2' });
  assert.strictEqual(flakyRuns, 2);
  const run = await runs.get(h.id);
  assert.strictEqual(run.status, 'failed');
  const flaky = run.steps.find((s) => s.id === 'flaky');
  assert.strictEqual(flaky.status, 'failed');
  assert.strictEqual(flaky.attempts, 2);
});

test('a step that runs out of attempts fails the run without further replays of the run', async () => {
  let executions = 0;
  let stepRuns = 0;
  const t = task({
    id: 'steps-retry-exhausted-no-replays',
    retry: fastRetry(3),
    run: async (_p, { step }) => {
      executions++;
      await step.run('flaky', () => {
        stepRuns++;
        throw new Error(`flaky failed ${stepRuns}`);
      });
    },
  });
  const h = await t.trigger();
  await assertRunFailed(h.result({ timeout: '5s' }), { name: 'Error', message: 'flaky failed 3' });
  assert.strictEqual(stepRuns, 3);
  assert.strictEqual(executions, 3, 'one execution per step attempt, no replays after the step failed for good');
  assert.strictEqual((await runs.get(h.id)).attempts, 1, 'the run-level budget was not used');
});

test('NonRetriableError thrown from a step fails the run at once with the original error as cause', async () => {
  let stepRuns = 0;
  let reachedAfter = false;
  const t = task({
    id: 'steps-nonretriable-step',
    retry: fastRetry(5),
    run: async (_p, { step }) => {
      await step.run('charge', () => {
        stepRuns++;
        throw new NonRetriableError('card declined');
      });
      reachedAfter = true;
    },
  });
  const h = await t.trigger();
  await assertRunFailed(h.result({ timeout: '5s' }), { name: 'NonRetriableError', message: 'card declined' });
  assert.strictEqual(stepRuns, 1, 'the step is not retried');
  assert.strictEqual(reachedAfter, false);

  const run = await runs.get(h.id);
  assert.strictEqual(run.status, 'failed');
  assert.strictEqual(run.attempts, 1);
  assert.strictEqual(run.error.name, 'NonRetriableError');
  assert.strictEqual(run.error.message, 'card declined');
  const charge = run.steps.find((s) => s.id === 'charge');
  assert.strictEqual(charge.status, 'failed');
  assert.strictEqual(charge.attempts, 1);
  assert.strictEqual(charge.error.message, 'card declined');

  // The outcome is stored: asking again gives the same rejection without running anything.
  await assertRunFailed(h.result({ timeout: '5s' }), { name: 'NonRetriableError', message: 'card declined' });
  assert.strictEqual(stepRuns, 1);
});

test('NonRetriableError thrown from run code fails the run at once', async () => {
  let executions = 0;
  const t = task({
    id: 'steps-nonretriable-run',
    retry: fastRetry(5),
    run: async () => {
      executions++;
      throw new NonRetriableError('bad input');
    },
  });
  const h = await t.trigger();
  await assertRunFailed(h.result({ timeout: '5s' }), { name: 'NonRetriableError', message: 'bad input' });
  assert.strictEqual(executions, 1);
  const run = await runs.get(h.id);
  assert.strictEqual(run.status, 'failed');
  assert.strictEqual(run.attempts, 1);
  assert.strictEqual(run.error.message, 'bad input');
});

test('a throw outside steps is retried per the retry policy and fails the run after maxAttempts', async () => {
  const seen = [];
  const t = task({
    id: 'steps-run-level-retry',
    retry: fastRetry(3),
    run: async (_p, { attempt }) => {
      seen.push(attempt);
      throw new Error(`run failed ${seen.length}`);
    },
  });
  const h = await t.trigger();
  await assertRunFailed(h.result({ timeout: '5s' }), { name: 'Error', message: 'run failed 3' });
  assert.deepStrictEqual(seen, [1, 2, 3], 'executed maxAttempts times, ctx.attempt counting up');
  const run = await runs.get(h.id);
  assert.strictEqual(run.status, 'failed');
  assert.strictEqual(run.attempts, 3);
  assert.strictEqual(run.error.message, 'run failed 3');
});

test('a run-level retry replays the run without re-running its completed steps', async () => {
  let stepRuns = 0;
  let executions = 0;
  const t = task({
    id: 'steps-run-retry-memoized',
    retry: fastRetry(3),
    run: async (_p, { step }) => {
      executions++;
      const v = await step.run('once', () => {
        stepRuns++;
        return { n: 42 };
      });
      if (executions === 1) throw new Error('transient');
      return v;
    },
  });
  const h = await t.trigger();
  assert.deepStrictEqual(await h.result({ timeout: '5s' }), { n: 42 });
  assert.strictEqual(executions, 2);
  assert.strictEqual(stepRuns, 1);
  assert.strictEqual((await runs.get(h.id)).attempts, 2);
});

test('steps under Promise.all are in flight at the same time', async () => {
  const log = [];
  let aIn;
  let bIn;
  const aEntered = new Promise((r) => (aIn = r));
  const bEntered = new Promise((r) => (bIn = r));
  const t = task({
    id: 'steps-parallel',
    retry: fastRetry(1),
    run: async (_p, { step }) =>
      Promise.all([
        // Each step waits for the other to have started: if the engine ran them one after
        // the other, the first would never finish and result() would time out.
        step.run('a', async () => {
          log.push('a:enter');
          aIn();
          await bEntered;
          log.push('a:exit');
          return 'A';
        }),
        step.run('b', async () => {
          log.push('b:enter');
          bIn();
          await aEntered;
          log.push('b:exit');
          return 'B';
        }),
      ]),
  });
  const h = await t.trigger();
  try {
    assert.deepStrictEqual(await h.result({ timeout: '3s' }), ['A', 'B']);
  } finally {
    aIn(); // on failure, let the run finish so that shutdown does not wait for it
    bIn();
  }
  assert.deepStrictEqual(log.slice(0, 2).sort(), ['a:enter', 'b:enter'], 'both steps entered before either exited');
  assert.deepStrictEqual(log.slice(2).sort(), ['a:exit', 'b:exit']);
  const run = await runs.get(h.id);
  assert.deepStrictEqual(
    run.steps.map((s) => [s.id, s.status, s.output]).sort(),
    [
      ['a', 'completed', 'A'],
      ['b', 'completed', 'B'],
    ],
  );
});

test('a retriable failure of one parallel step lets the other finish and be stored; the replay re-runs only the failed one', async () => {
  let aRuns = 0;
  let bRuns = 0;
  let releaseB;
  const bMayFinish = new Promise((r) => (releaseB = r));
  const t = task({
    id: 'steps-parallel-retry',
    retry: fastRetry(3),
    run: async (_p, { step }) =>
      Promise.all([
        step.run('a', async () => {
          aRuns++;
          if (aRuns === 1) {
            // Fail while b is still in flight.
            setImmediate(releaseB);
            throw new Error('a once');
          }
          return 'A';
        }),
        step.run('b', async () => {
          bRuns++;
          await bMayFinish;
          return 'B';
        }),
      ]),
  });
  const h = await t.trigger();
  try {
    assert.deepStrictEqual(await h.result({ timeout: '3s' }), ['A', 'B']);
  } finally {
    releaseB();
  }
  assert.strictEqual(aRuns, 2);
  assert.strictEqual(bRuns, 1, 'b finished during the failed attempt and is memoized');
  const steps = Object.fromEntries((await runs.get(h.id)).steps.map((s) => [s.id, [s.status, s.attempts, s.output]]));
  assert.deepStrictEqual(steps, { a: ['completed', 2, 'A'], b: ['completed', 1, 'B'] });
});

test('a reused step id is stored as id, id:1, id:2 and each is memoized on replay', async (t) => {
  const warn = t.mock.method(console, 'warn', () => {});
  const calls = [];
  let laterRuns = 0;
  const tk = task({
    id: 'steps-reused-id',
    retry: fastRetry(3),
    run: async (_p, { step }) => {
      const outs = [];
      for (const i of [0, 1, 2]) {
        outs.push(
          await step.run('same', () => {
            calls.push(i);
            return `out${i}`;
          }),
        );
      }
      // Fails once, which forces a replay of the whole run.
      await step.run('later', () => {
        laterRuns++;
        if (laterRuns === 1) throw new Error('once');
        return 'ok';
      });
      return outs;
    },
  });
  const h = await tk.trigger();
  assert.deepStrictEqual(await h.result({ timeout: '5s' }), ['out0', 'out1', 'out2']);
  assert.strictEqual(laterRuns, 2, 'the run was replayed');
  assert.deepStrictEqual(calls, [0, 1, 2], 'no "same" step ran again on the replay');

  const run = await runs.get(h.id);
  const steps = Object.fromEntries(run.steps.map((s) => [s.id, [s.status, s.output]]));
  assert.deepStrictEqual(steps, {
    same: ['completed', 'out0'],
    'same:1': ['completed', 'out1'],
    'same:2': ['completed', 'out2'],
    later: ['completed', 'ok'],
  });
  const warnings = warn.mock.calls.filter((c) => c.arguments.join(' ').includes('"same"'));
  assert.strictEqual(warnings.length, 1, 'the reuse is warned about once, not on every replay');
});

test('ctx carries the run id, task id, tags, creation time and attempt', async () => {
  let seen;
  const t = task({
    id: 'steps-ctx',
    run: async (p, ctx) => {
      seen = {
        payload: p,
        id: ctx.run.id,
        taskId: ctx.run.taskId,
        tags: ctx.run.tags,
        createdAt: ctx.run.createdAt,
        attempt: ctx.attempt,
        aborted: ctx.signal.aborted,
        logger: ['debug', 'info', 'warn', 'error'].map((l) => typeof ctx.logger[l]),
      };
      return 'ok';
    },
  });
  const h = await t.trigger({ x: 1 }, { tags: ['t1', 't2'] });
  await h.result({ timeout: '5s' });
  const run = await runs.get(h.id);
  assert.deepStrictEqual(seen.payload, { x: 1 });
  assert.strictEqual(seen.id, h.id);
  assert.strictEqual(seen.taskId, 'steps-ctx');
  assert.strictEqual(h.taskId, 'steps-ctx');
  assert.deepStrictEqual(seen.tags, ['t1', 't2']);
  assert.ok(seen.createdAt instanceof Date);
  assert.strictEqual(seen.createdAt.getTime(), run.createdAt.getTime());
  assert.strictEqual(seen.attempt, 1);
  assert.strictEqual(seen.aborted, false);
  assert.deepStrictEqual(seen.logger, ['function', 'function', 'function', 'function']);
});
