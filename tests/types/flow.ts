// Flow-control key functions are typed by the task's payload: TypeScript infers it from
// `run` when `run` comes before them in the object (or when the key's parameter is annotated).
import { task } from 'durably';

interface Invoice {
  accountId: string;
  invoiceId: string;
  lines: string[];
}

export const runFirst = task({
  id: 'types-throttled',
  run: async (p: Invoice, { step }) => {
    await step.run('x', () => p.invoiceId);
    return p.invoiceId;
  },
  throttle: { limit: 10, period: '1m', key: (p) => p.accountId },
  concurrency: { limit: 2, key: (p) => p.accountId },
  priority: (p) => p.lines.length,
  idempotencyKey: (p) => `${p.accountId}:${p.invoiceId}`,
});

export const annotatedKey = task({
  id: 'types-annotated',
  throttle: { limit: 10, period: '1m', key: (p: Invoice) => p.accountId },
  run: async (p: Invoice) => p.lines.length,
});

async function check() {
  await runFirst.trigger({ accountId: 'a', invoiceId: 'i', lines: [] });
  const n: number = await (await annotatedKey.trigger({ accountId: 'a', invoiceId: 'i', lines: [] })).result();
  void n;
  // @ts-expect-error the payload type comes from run
  await runFirst.trigger({ accountId: 'a' });
  task({
    id: 'types-bad-key',
    run: async (p: { accountId: string }) => p.accountId,
    // @ts-expect-error no such field on the payload
    concurrency: { limit: 1, key: (p) => p.nope },
  });
}
void check;

export const annotatedKeyWithContext = task({
  id: 'types-annotated-ctx',
  throttle: { limit: 10, period: '1m', key: (p: Invoice) => p.accountId },
  run: async (p: Invoice, { step }) => step.run('n', () => p.lines.length),
});
