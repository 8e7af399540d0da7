import { task } from 'durably';

// The smallest task, to try the JSON API with:
//   curl -X POST localhost:3000/durably/trigger -H 'content-type: application/json' \
//        -d '{"taskId":"hello","payload":{"name":"Ada"}}'
// In `next dev`, edit it and trigger again: the new code runs (no restart).
export const hello = task({
  id: 'hello',
  run: async (payload: { name?: string } | null) => {
    return { greeting: `Hello, ${payload?.name ?? 'world'}!`, version: 1 };
  },
});
