import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * This demo's stand-in for your app's own auth. The pages and routes that show runs and
 * their payloads are open in development (`next dev`) and test; otherwise they need the
 * operator token `DURABLY_DASHBOARD_TOKEN` (`npm run demo` makes one and prints a link):
 * `?token=` on the pages (their links carry it), `Authorization: Bearer` on the API.
 */
export function isOperator(token: string | null | undefined): boolean {
  const env = process.env.NODE_ENV;
  if (env === 'development' || env === 'test') return true;
  const expected = process.env.DURABLY_DASHBOARD_TOKEN;
  if (!expected || !token) return false;
  const a = createHash('sha256').update(token).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

/** The token of an API request: `Authorization: Bearer <token>`. */
export function bearer(request: Request): string | null {
  return /^Bearer\s+(.+)$/i.exec(request.headers.get('authorization') ?? '')?.[1]?.trim() ?? null;
}

/** `?token=…` to append to a link (empty when there is none). */
export function withToken(href: string, token: string | undefined): string {
  if (!token) return href;
  return `${href}${href.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`;
}
