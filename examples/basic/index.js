// A plain Node script using durably: defines two tasks, triggers runs, and shows them
// completing durably. Run it twice: the second run lists the first run's history from the
// store in ./.durably-demo (delete that folder to start over).
const path = require('node:path');
const { task, configure, start, shutdown, runs, NonRetriableError } = require('durably');

configure({ dataDir: path.join(__dirname, '.durably-demo') });

const sentEmails = [];
let flaky = 0;

// Task style (Trigger.dev-like): typed payload, memoized steps, retries per step.
const onboardingEmail = task({
  id: 'onboarding-email',
  retry: { maxAttempts: 3, minTimeout: '50ms', factor: 2 },
  run: async (payload, { step, logger }) => {
    const user = await step.run('load-user', () => ({ id: payload.userId, email: payload.email }));
    await step.run('send', ({ attempt }) => {
      // The mail provider fails now and then; the step is retried, 'load-user' is not re-run.
      if (flaky++ % 3 === 0) throw new Error(`mail provider timeout (attempt ${attempt})`);
      sentEmails.push(user.email);
      return { messageId: `msg-${user.id}` };
    });
    logger.info(`welcome email sent to ${user.email}`);
    return { sent: true };
  },
});

// Parallel steps, and a failure that must not be retried.
const chargeCard = task({
  id: 'charge-card',
  run: async (payload, { step }) => {
    const [fraud, balance] = await Promise.all([
      step.run('fraud-check', () => ({ ok: payload.amount < 1000 })),
      step.run('balance', () => ({ cents: 5_000 })),
    ]);
    if (!fraud.ok) throw new NonRetriableError(`amount ${payload.amount} flagged as fraud`);
    return step.run('charge', () => ({ charged: payload.amount, left: balance.cents - payload.amount }));
  },
});

async function main() {
  const before = await runs.list({ limit: 1000 });
  if (before.runs.length > 0) {
    console.log(`History from earlier demo runs (${before.runs.length} runs in the store):`);
    for (const r of before.runs.slice(0, 8)) {
      console.log(`  ${r.createdAt.toISOString()}  ${r.taskId.padEnd(17)} ${r.status.padEnd(9)} ${r.id}`);
    }
    if (before.runs.length > 8) console.log(`  … and ${before.runs.length - 8} more`);
    console.log();
  }

  await start();
  const t0 = process.hrtime.bigint();
  const handles = await Promise.all(
    ['ada', 'grace', 'linus'].map((name) => onboardingEmail.trigger({ userId: name, email: `${name}@example.com` }, { tags: ['demo'] })),
  );
  const ok = await chargeCard.trigger({ amount: 120 });
  const fraud = await chargeCard.trigger({ amount: 5_000 });
  console.log(`Triggered ${handles.length + 2} runs (each durably stored before its trigger returned).`);

  for (const h of handles) console.log(`  ${h.id} onboarding-email →`, await h.result({ timeout: '10s' }));
  console.log(`  ${ok.id} charge-card      →`, await ok.result({ timeout: '10s' }));
  await fraud.result({ timeout: '10s' }).catch((e) => console.log(`  ${fraud.id} charge-card      → ${e.code}: ${e.cause.message}`));
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;

  const detail = await runs.get(handles[0].id);
  console.log(`\nSteps of ${detail.id} (status ${detail.status}):`);
  for (const s of detail.steps) console.log(`  ${s.id.padEnd(10)} ${s.status.padEnd(9)} attempts=${s.attempts}`);
  console.log(`\nEmails sent: ${sentEmails.join(', ')}; all runs finished in ${ms.toFixed(1)} ms (with retries).`);
  console.log('Run `npm run demo:basic` again: the history above will list these runs from the store.');
  await shutdown();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
