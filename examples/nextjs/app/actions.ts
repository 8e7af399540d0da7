'use server';

import { randomUUID } from 'node:crypto';
import { redirect } from 'next/navigation';
import { send } from 'durably';
import { onboardingEmail } from '@/jobs';
import { withToken } from '@/lib/operator';

/** The operator token the form carried (the runs page needs it outside development). */
function token(formData: FormData): string | undefined {
  const t = formData.get('token');
  return typeof t === 'string' && t.length > 0 && t.length <= 200 ? t : undefined;
}

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

function emailOf(formData: FormData): string {
  const email = String(formData.get('email') ?? '').trim().toLowerCase();
  if (!EMAIL.test(email) || email.length > 200) redirect(`/?error=${encodeURIComponent('Enter an email address like ada@example.com')}`);
  return email;
}

/** The sign-up form: both ways of starting work, each resolving once the work is on disk. */
export async function signUp(formData: FormData) {
  const email = emailOf(formData);
  const userId = `u_${randomUUID().slice(0, 8)}`;
  // Task style: one run of a known task, with a typed payload.
  await onboardingEmail.trigger({ userId, email }, { tags: [`user:${userId}`] });
  // Event style: every task subscribed to the event gets a run (here: onboarding-sequence).
  await send({ name: 'user/signed-up', data: { userId, email } });
  redirect(withToken(`/runs?signedUp=${encodeURIComponent(email)}`, token(formData)));
}

/** What the link in the confirmation email would do: resumes the waiting sequence. */
export async function confirmEmail(formData: FormData) {
  const email = emailOf(formData);
  await send({ name: 'user/confirmed', data: { email } });
  redirect(withToken(`/runs?confirmed=${encodeURIComponent(email)}`, token(formData)));
}
