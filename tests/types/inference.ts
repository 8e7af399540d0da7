// Type-level tests: this file must compile with `tsc --noEmit`; each @ts-expect-error
// line must be an error. Payload and output types flow from `run` into trigger/result.
import { task, trigger, type RunHandle } from 'durably';
import {
  runs,
  stats,
  NonRetriableError,
  RetryAfterError,
  DurablyError,
  type ErrorCode,
  type Task,
  type PayloadOf,
  type OutputOf,
  type TaskContext,
  type Run,
  type RunStatus,
} from 'durably';

const email = task({
  id: 'types-email',
  run: async (payload: { userId: string; email: string }, { step }) => {
    const n = await step.run('count', () => 3);
    const x: number = n;
    void x;
    return { sent: true as boolean };
  },
});

async function check() {
  const h = await email.trigger({ userId: 'u1', email: 'a@b.c' });
  const out: { sent: boolean } = await h.result();
  void out;
  // @ts-expect-error missing `email`
  await email.trigger({ userId: 'u1' });
  // @ts-expect-error wrong field type
  await email.trigger({ userId: 1, email: 'a@b.c' });
  // @ts-expect-error the output has no `nope`
  (await h.result()).nope;
  const handles = await email.batchTrigger([{ payload: { userId: 'a', email: 'b' } }]);
  const first: RunHandle<{ sent: boolean }> = handles[0];
  void first;
  const byId = await trigger<{ sent: boolean }>('types-email', { userId: 'u', email: 'e' });
  const o2: { sent: boolean } = await byId.result({ timeout: '5s' });
  void o2;
}
void check;

// ---- exact-type assertions ------------------------------------------------------------
// `Equals` is true only for identical types (not mere assignability), so a type that
// widens to `any` or `unknown` fails these checks.
type Equals<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function expectType<T>(_: T): void {}

// Payload and output flow from `run` into trigger(), batchTrigger() and result().
const invoice = task({
  id: 'types-invoice',
  run: async (p: { orderId: string; cents: number }, ctx) => {
    // step.run: the awaited return of fn, sync or async.
    const total = await ctx.step.run('total', async () => p.cents * 2);
    expectType<Equals<typeof total, number>>(true);
    const line = await ctx.step.run('line', () => ({ id: p.orderId, tags: ['a'] as string[] }));
    expectType<Equals<typeof line, { id: string; tags: string[] }>>(true);
    const nothing = await ctx.step.run('void', async () => {});
    expectType<Equals<typeof nothing, void>>(true);
    const nested = await ctx.step.run('nested', async () => Promise.resolve('s'));
    expectType<Equals<typeof nested, string>>(true);
    await ctx.step.run('attempt', ({ attempt }) => {
      expectType<Equals<typeof attempt, number>>(true);
    });
    // @ts-expect-error a step id is a string
    await ctx.step.run(1, () => 1);
    // @ts-expect-error a step needs a function
    await ctx.step.run('no-fn', 42);

    // ctx fields
    expectType<Equals<typeof ctx, TaskContext>>(true);
    expectType<Equals<typeof ctx.run.id, string>>(true);
    expectType<Equals<typeof ctx.run.taskId, string>>(true);
    expectType<Equals<typeof ctx.run.tags, string[]>>(true);
    expectType<Equals<typeof ctx.run.createdAt, Date>>(true);
    expectType<Equals<typeof ctx.attempt, number>>(true);
    expectType<Equals<typeof ctx.signal, AbortSignal>>(true);
    ctx.logger.info('total', { total });
    ctx.logger.warn('w');
    // @ts-expect-error no such logger level
    ctx.logger.trace('x');
    // @ts-expect-error ctx.attempt is read as a number
    const s: string = ctx.attempt;
    void s;
    return { invoiceId: `inv_${p.orderId}`, total };
  },
});

expectType<Equals<typeof invoice, Task<{ orderId: string; cents: number }, { invoiceId: string; total: number }>>>(true);
expectType<Equals<PayloadOf<typeof invoice>, { orderId: string; cents: number }>>(true);
expectType<Equals<OutputOf<typeof invoice>, { invoiceId: string; total: number }>>(true);

async function checkInvoice() {
  const h = await invoice.trigger({ orderId: 'o1', cents: 100 }, { delay: '5m', tags: ['billing'] });
  expectType<Equals<typeof h.id, string>>(true);
  expectType<Equals<typeof h.taskId, string>>(true);
  const out = await h.result({ timeout: 1000 });
  expectType<Equals<typeof out, { invoiceId: string; total: number }>>(true);

  const hs = await invoice.batchTrigger([
    { payload: { orderId: 'a', cents: 1 } },
    { payload: { orderId: 'b', cents: 2 }, options: { runAt: new Date() } },
  ]);
  const outs = await Promise.all(hs.map((x) => x.result()));
  expectType<Equals<typeof outs, { invoiceId: string; total: number }[]>>(true);

  // @ts-expect-error cents must be a number
  await invoice.trigger({ orderId: 'o1', cents: '100' });
  // @ts-expect-error a payload is required
  await invoice.trigger();
  // @ts-expect-error unknown payload field
  await invoice.trigger({ orderId: 'o1', cents: 1, extra: true });
  // @ts-expect-error batch items are typed too
  await invoice.batchTrigger([{ payload: { orderId: 'a' } }]);
  // @ts-expect-error batch items are { payload, options? }
  await invoice.batchTrigger([{ orderId: 'a', cents: 1 }]);
  // @ts-expect-error delay is a Duration (number | string)
  await invoice.trigger({ orderId: 'o1', cents: 1 }, { delay: true });
  // @ts-expect-error tags are strings
  await invoice.trigger({ orderId: 'o1', cents: 1 }, { tags: [1] });
  // @ts-expect-error no such trigger option
  await invoice.trigger({ orderId: 'o1', cents: 1 }, { dealy: '5m' });
  // @ts-expect-error the output is not a string
  const wrong: string = await h.result();
  void wrong;
}
void checkInvoice;

// A sync run function: the output is its return type, not a Promise.
const sync = task({ id: 'types-sync', run: (n: number) => n + 1 });
expectType<Equals<typeof sync, Task<number, number>>>(true);

// No payload parameter: trigger() takes no payload (P defaults to void).
const tick = task({ id: 'types-tick', run: async () => 'tock' as const });
async function checkTick() {
  const h = await tick.trigger();
  const out = await h.result();
  expectType<Equals<typeof out, 'tock'>>(true);
}
void checkTick;

// Task options are checked.
task({
  id: 'types-retry',
  retry: { maxAttempts: 3, factor: 2, minTimeout: '1s', maxTimeout: 60_000, randomize: false },
  run: async () => {},
});
// @ts-expect-error retry.maxAttempts is a number
task({ id: 'types-bad-retry', retry: { maxAttempts: '3' }, run: async () => {} });
// @ts-expect-error a task needs a run function
task({ id: 'types-no-run' });
// @ts-expect-error a task needs an id
task({ run: async () => {} });

// Errors and management types.
new NonRetriableError('x', { cause: new Error('y') });
new RetryAfterError('x', '30s');
new RetryAfterError('x', new Date());
// @ts-expect-error RetryAfterError needs `after`
new RetryAfterError('x');
function checkError(e: unknown) {
  if (e instanceof DurablyError) {
    expectType<Equals<typeof e.code, ErrorCode>>(true);
    expectType<Equals<typeof e.option, string | undefined>>(true);
    // @ts-expect-error codes are a closed union
    if (e.code === 'E_NOPE') return;
  }
}
void checkError;

async function checkRuns() {
  const r = await runs.get('run_x');
  expectType<Equals<typeof r, Run | null>>(true);
  if (r) {
    expectType<Equals<typeof r.status, RunStatus>>(true);
    expectType<Equals<typeof r.createdAt, Date>>(true);
    expectType<Equals<typeof r.steps[number]['attempts'], number>>(true);
  }
  const page = await runs.list({ taskId: 'types-invoice', status: 'failed', tag: 't', since: new Date(), limit: 10 });
  expectType<Equals<typeof page.cursor, string | undefined>>(true);
  // @ts-expect-error not a run status
  await runs.list({ status: 'sleeping' });
  const st = await stats();
  expectType<Equals<typeof st.ready, number>>(true);
}
void checkRuns;
