// Type-level tests: this file must compile with `tsc --noEmit`; each @ts-expect-error
// line must be an error. Payload and output types flow from `run` into trigger/result.
import { task, trigger, type RunHandle } from 'durably';

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
