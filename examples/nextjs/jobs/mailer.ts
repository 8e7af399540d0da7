// A stand-in for an email provider: it logs instead of sending. Calls to it happen inside
// step.run, so each email goes out once per step even when the run is replayed after a
// retry or a restart.
import { randomUUID } from 'node:crypto';

export interface Email {
  to: string;
  template: string;
  vars?: Record<string, string | number>;
}

export async function sendEmail(email: Email): Promise<{ messageId: string }> {
  const messageId = `msg_${randomUUID().slice(0, 8)}`;
  const vars = email.vars ? ' ' + JSON.stringify(email.vars) : '';
  console.log(`[mailer] ${messageId} to=${email.to} template=${email.template}${vars}`);
  return { messageId };
}
