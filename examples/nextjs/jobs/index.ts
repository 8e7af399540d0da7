// Every task module of the app. instrumentation.ts imports this before start(), so that
// runs left over from before a restart find their code; route handlers and server actions
// import it (or one of its modules) to trigger tasks.
import './events';

export * from './onboarding';
export * from './invoices';
export * from './hello';
