import { runs, type RunStatus } from 'durably';
import { isOperator, withToken } from '@/lib/operator';

// Read at request time, never prerendered: `next build` must not open the store.
export const dynamic = 'force-dynamic';

const STATUSES: RunStatus[] = ['delayed', 'queued', 'running', 'waiting', 'completed', 'failed', 'cancelled', 'skipped'];

function short(value: unknown, max = 90): string {
  if (value === undefined) return '';
  const text = JSON.stringify(value) ?? '';
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** Steps in the order they ended; one still waiting sorts last. */
function at(d: Date | undefined): number {
  return d ? d.getTime() : Number.MAX_SAFE_INTEGER;
}

export default async function RunsPage({ searchParams }: { searchParams: Promise<{ status?: string; signedUp?: string; confirmed?: string; token?: string }> }) {
  const q = await searchParams;
  if (!isOperator(q.token)) {
    return (
      <main>
        <h1>Recent runs</h1>
        <p className="failed">This page shows run payloads: open it with the operator token, <code>/runs?token=…</code> (the link `npm run demo` prints).</p>
      </main>
    );
  }
  const status = STATUSES.find((s) => s === q.status);
  const page = await runs.list({ limit: 30, ...(status ? { status } : {}) });
  // The current step of each run (runs.list leaves steps out; runs.get is an in-process read).
  const details = await Promise.all(page.runs.map((r) => runs.get(r.id)));
  return (
    <main>
      {/* Simple live view: the page reloads itself every 2 seconds. */}
      <meta httpEquiv="refresh" content="2" />
      <h1>Recent runs</h1>
      {q.signedUp ? <p className="completed">Signed up {q.signedUp}: watch its runs below.</p> : null}
      {q.confirmed ? <p className="completed">Sent user/confirmed for {q.confirmed}.</p> : null}
      <p className="note">
        Filter: <a href={withToken('/runs', q.token)}>all</a>
        {STATUSES.map((s) => (
          <span key={s}>
            {' · '}
            <a href={withToken(`/runs?status=${s}`, q.token)}>{s}</a>
          </span>
        ))}
      </p>
      <table>
        <thead>
          <tr>
            <th>created</th>
            <th>task</th>
            <th>status</th>
            <th>steps</th>
            <th>payload</th>
            <th>output / error</th>
          </tr>
        </thead>
        <tbody>
          {page.runs.map((r, i) => {
            const steps = [...(details[i]?.steps ?? [])].sort((a, b) => at(a.endedAt) - at(b.endedAt));
            return (
              <tr key={r.id} id={r.id}>
                <td title={r.id}>{r.createdAt.toISOString().replace('T', ' ').slice(0, 19)}</td>
                <td>{r.taskId}</td>
                <td className={r.status}>{r.status}</td>
                <td>
                  {steps.map((s) => (
                    <div key={s.id} className={s.status}>
                      {s.id} {s.status === 'completed' ? '✓' : `(${s.status})`}
                    </div>
                  ))}
                </td>
                <td>
                  <code>{short(r.payload)}</code>
                </td>
                <td>
                  <code>{r.error ? `${r.error.name}: ${r.error.message}` : short(r.output)}</code>
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      {page.runs.length === 0 ? <p className="note">No runs yet: sign up on the home page.</p> : null}
    </main>
  );
}
