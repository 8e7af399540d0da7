import { confirmEmail, signUp } from './actions';

export default async function Home({ searchParams }: { searchParams: Promise<{ error?: string; token?: string }> }) {
  const { error, token } = await searchParams;
  return (
    <main>
      <h1>Sign up</h1>
      <p className="note">
        Signing up runs a server action that triggers the <code>onboarding-email</code> task and sends the{' '}
        <code>user/signed-up</code> event, which starts the <code>onboarding-sequence</code>: a welcome email, a durable
        sleep, tips, then a wait for <code>user/confirmed</code>. Both run inside this Next.js server and survive a restart.
      </p>
      {error ? <p className="failed">{error}</p> : null}
      <form action={signUp} id="sign-up">
        {token ? <input type="hidden" name="token" value={token} /> : null}
        <input name="email" type="email" placeholder="ada@example.com" required />
        <button type="submit">Sign up</button>
      </form>

      <h2>Confirm an address</h2>
      <p className="note">What the link in the confirmation email would do: sends <code>user/confirmed</code>.</p>
      <form action={confirmEmail} id="confirm">
        {token ? <input type="hidden" name="token" value={token} /> : null}
        <input name="email" type="email" placeholder="ada@example.com" required />
        <button type="submit">Confirm</button>
      </form>

      <h2>Invoices</h2>
      <p className="note">A route handler feeds the <code>generate-invoice</code> task:</p>
      <pre>{`curl -X POST http://127.0.0.1:3000/api/invoices -H 'content-type: application/json' \\
     -d '{"accountId":"acme","lines":[{"description":"Pro plan","amountCents":4900}]}'`}</pre>
    </main>
  );
}
