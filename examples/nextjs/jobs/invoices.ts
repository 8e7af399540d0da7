import { task } from 'durably';
import { sendEmail } from './mailer';

export interface InvoiceLine {
  description: string;
  amountCents: number;
}

export interface InvoicePayload {
  accountId: string;
  invoiceId: string;
  lines: InvoiceLine[];
}

// One run per invoice, fed by app/api/invoices/route.ts. Runs are tagged `account:<id>`.
// Per account, at most INVOICE_THROTTLE (default 100) invoices start per minute: a burst
// from one account waits its turn (in order, nothing dropped) and never starves the others.
export const generateInvoice = task({
  id: 'generate-invoice',
  throttle: { limit: Number(process.env.INVOICE_THROTTLE ?? 100), period: '1m', key: (p: InvoicePayload) => p.accountId },
  run: async (p: InvoicePayload, { step }) => {
    const totalCents = await step.run('compute-total', () => p.lines.reduce((sum, l) => sum + l.amountCents, 0));
    const pdf = await step.run('render-pdf', () => ({ path: `/invoices/${p.accountId}/${p.invoiceId}.pdf`, pages: 1 + Math.floor(p.lines.length / 20) }));
    await step.run('email-invoice', () =>
      sendEmail({ to: `billing+${p.accountId}@example.com`, template: 'invoice', vars: { invoiceId: p.invoiceId, totalCents } }),
    );
    return { invoiceId: p.invoiceId, totalCents, pdf: pdf.path };
  },
});
