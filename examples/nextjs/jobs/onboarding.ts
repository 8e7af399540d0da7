import { task } from 'durably';
import { sendEmail } from './mailer';

// Task style (like Trigger.dev): the sign-up action triggers this task with a typed payload.
export const onboardingEmail = task({
  id: 'onboarding-email',
  retry: { maxAttempts: 3, minTimeout: '200ms' },
  run: async (payload: { userId: string; email: string }, { step }) => {
    const user = await step.run('load-user', () => ({ id: payload.userId, email: payload.email, name: payload.email.split('@')[0] }));
    // Retried on its own if the provider throws; 'load-user' is not run again.
    const sent = await step.run('send-confirmation', () => sendEmail({ to: user.email, template: 'confirm-your-address', vars: { name: user.name } }));
    return { sent: true, messageId: sent.messageId };
  },
});

// Event style (like Inngest): every 'user/signed-up' event starts one run of this task.
export const onboardingSequence = task({
  id: 'onboarding-sequence',
  on: 'user/signed-up',
  run: async (user: { userId: string; email: string }, { step }) => {
    await step.run('send-welcome', () => sendEmail({ to: user.email, template: 'welcome' }));

    // A durable sleep: the server may restart meanwhile; the run wakes up on time after it.
    // Days in a real app; seconds here so that the demo completes while you watch.
    await step.sleep('pause-before-tips', process.env.ONBOARDING_SLEEP || '5s');
    await step.run('send-tips', () => sendEmail({ to: user.email, template: 'tips' }));

    // Waits for the 'user/confirmed' event with the same data.email as this run's event.
    // An event that arrived while the run slept still counts.
    const confirmed = await step.waitForEvent('wait-for-confirmation', {
      event: 'user/confirmed',
      match: 'data.email',
      timeout: process.env.ONBOARDING_CONFIRM_TIMEOUT || '10m',
    });
    if (!confirmed) {
      await step.run('send-reminder', () => sendEmail({ to: user.email, template: 'please-confirm' }));
      return { confirmed: false };
    }
    await step.run('send-getting-started', () => sendEmail({ to: user.email, template: 'getting-started' }));
    return { confirmed: true, confirmedAt: new Date(confirmed.ts).toISOString() };
  },
});
