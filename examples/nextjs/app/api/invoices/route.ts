import { randomUUID } from 'node:crypto';
import { runs } from 'durably';
import { generateInvoice, type InvoiceLine } from '@/jobs';
import { bearer, isOperator } from '@/lib/operator';

export const dynamic = 'force-dynamic';

function bad(message: string, status = 400) {
  return Response.json({ error: { code: 'E_BAD_REQUEST', message } }, { status });
}

function isLine(l: unknown): l is InvoiceLine {
  const x = l as InvoiceLine;
  return typeof x === 'object' && x !== null && typeof x.description === 'string' && Number.isInteger(x.amountCents) && x.amountCents >= 0;
}

/**
 * POST { accountId, lines: [{ description, amountCents }] } → 202 { runId, invoiceId }.
 * (A real app checks here that the caller may bill this account.)
 */
export async function POST(request: Request) {
  let body: { accountId?: unknown; lines?: unknown };
  try {
    body = await request.json();
  } catch {
    return bad('send JSON: { "accountId": "acme", "lines": [{ "description": "…", "amountCents": 4900 }] }');
  }
  const { accountId, lines } = body ?? {};
  if (typeof accountId !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(accountId)) return bad('accountId: 1–64 letters, digits, _ or -');
  if (!Array.isArray(lines) || lines.length === 0 || lines.length > 500 || !lines.every(isLine)) {
    return bad('lines: 1–500 items of { description: string, amountCents: integer >= 0 }');
  }
  const invoiceId = `inv_${randomUUID().slice(0, 8)}`;
  // Resolves once the run is on disk: the invoice will be generated even if the server restarts now.
  const run = await generateInvoice.trigger({ accountId, invoiceId, lines }, { tags: [`account:${accountId}`] });
  return Response.json({ runId: run.id, invoiceId }, { status: 202 });
}

/** GET ?accountId=acme → the account's recent invoice runs (operator only: they hold payloads). */
export async function GET(request: Request) {
  if (!isOperator(bearer(request))) return bad('send the operator token: Authorization: Bearer $DURABLY_DASHBOARD_TOKEN', 403);
  const accountId = new URL(request.url).searchParams.get('accountId');
  if (!accountId) return bad('pass ?accountId=');
  const page = await runs.list({ taskId: generateInvoice.id, tag: `account:${accountId}`, limit: 50 });
  return Response.json({
    invoices: page.runs.map((r) => ({ runId: r.id, status: r.status, createdAt: r.createdAt, output: r.output ?? null })),
  });
}
