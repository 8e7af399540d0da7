// Runs once per server process (next start, and next dev's server), never during next build.
// Importing every task module before start() matters: runs left unfinished by the previous
// process (asleep, waiting for an event, interrupted by a deploy) resume only once their
// task's code is registered here.
export async function register() {
  if (process.env.NEXT_RUNTIME === 'nodejs') {
    await import('./jobs');
    const { start } = await import('durably');
    await start();
  }
}
