// The JSON API of durably (runs, trigger, send, tokens), served by this app.
// Open in `next dev`; in production it needs `Authorization: Bearer $DURABLY_DASHBOARD_TOKEN`
// or an auth callback: durablyRoutes({ auth: async (request) => isAdmin(request) }).
import '@/jobs'; // registers every task (and, in next dev, re-registers them after an edit)
import { durablyRoutes } from 'durably/next';

export const dynamic = 'force-dynamic';

export const { GET, POST } = durablyRoutes();
