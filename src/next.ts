/**
 * `durably/next`: the Next.js glue.
 *
 * - `withDurably(nextConfig)` keeps the package (it holds a native addon) out of the server
 *   bundles: `serverExternalPackages: ['durably']`, merged with the app's own settings.
 * - `durablyRoutes({ auth })` (alias `dashboard`) returns the `{ GET, POST }` route handlers of
 *   the JSON API, mounted at `app/durably/[[...path]]/route.ts`:
 *
 * ```ts
 * import '@/jobs';                      // every task module (also re-registers them after an edit in next dev)
 * import { durablyRoutes } from 'durably/next';
 * export const dynamic = 'force-dynamic';
 * export const { GET, POST } = durablyRoutes();
 * ```
 *
 * Invariants: importing this module loads neither the addon nor the engine (next.config
 * imports it, and `next build` imports route modules in worker processes): the engine is
 * required on the first request. Bad input answers 4xx with `{ error: { code, message } }`,
 * never 500. The API is closed unless the app runs in development or test (`NODE_ENV` is
 * `development` or `test`, as `next dev` and test runners set it), `auth` allows the request,
 * or it carries `Authorization: Bearer $DURABLY_DASHBOARD_TOKEN`. Mutations are
 * POSTs whose body must be `application/json`: a cross-site form cannot send that, and a
 * cross-site `fetch` of it needs a CORS preflight this API never grants.
 */
import { timingSafeEqual, createHash } from 'node:crypto';
// errors.ts imports nothing: loading it here loads neither the engine nor the addon.
import { badOption, type ErrorCode } from './errors';
import type { EventInput, ListRunsOptions, RunStatus, TriggerOptions } from './types';

type Api = typeof import('./index');

let api: Api | null = null;
/** The engine's public API, loaded on the first request (never at import). */
function durably(): Api {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (api ??= require('./index') as Api);
}

// ---- next.config --------------------------------------------------------------------

/** The part of a Next.js config `withDurably` touches (the rest is passed through as is). */
export interface NextConfigLike {
  serverExternalPackages?: string[];
}

/** A Next.js config function: `(phase, { defaultConfig }) => config`. */
export type NextConfigFunction<C> = (phase: string, context: { defaultConfig: any }) => C | Promise<C>;

function addExternal<C extends NextConfigLike>(config: C | undefined): C {
  if (config !== undefined && (config === null || typeof config !== 'object' || Array.isArray(config))) {
    throw badOption('nextConfig', `withDurably() takes a Next.js config object (or a config function), got ${config === null ? 'null' : Array.isArray(config) ? 'an array' : typeof config}`);
  }
  const c = (config ?? {}) as C;
  const given = c.serverExternalPackages;
  if (given !== undefined && (!Array.isArray(given) || !given.every((p) => typeof p === 'string'))) {
    throw badOption('serverExternalPackages', 'must be a list of package names, like [\'sharp\']');
  }
  const list = given ?? [];
  if (list.includes('durably')) return c;
  return { ...c, serverExternalPackages: [...list, 'durably'] };
}

/**
 * Adds `durably` to `serverExternalPackages` (the native addon must be loaded by Node, not
 * bundled), keeping every other setting. Takes a config object or a config function.
 *
 * ```ts
 * // next.config.ts
 * import type { NextConfig } from 'next';
 * import { withDurably } from 'durably/next';
 * const nextConfig: NextConfig = { reactStrictMode: true };
 * export default withDurably(nextConfig);
 * ```
 */
export function withDurably<C extends NextConfigLike>(config: NextConfigFunction<C>): NextConfigFunction<C>;
export function withDurably<C extends NextConfigLike>(config: Promise<C>): Promise<C>;
export function withDurably<C extends NextConfigLike>(config?: C): C;
export function withDurably<C extends NextConfigLike>(config?: C | Promise<C> | NextConfigFunction<C>): C | Promise<C> | NextConfigFunction<C> {
  if (typeof config === 'function') {
    const fn = config;
    return async (phase, context) => addExternal(await fn(phase, context));
  }
  // `export default Promise.resolve(config)` is a config Next.js accepts too.
  if (config !== null && typeof config === 'object' && typeof (config as { then?: unknown }).then === 'function') {
    return (config as Promise<C>).then((c) => addExternal(c));
  }
  return addExternal(config as C | undefined);
}

/** Query parameters each GET endpoint takes (others are refused, not ignored). */
const QUERY: Record<string, readonly string[]> = { runs: ['taskId', 'status', 'tag', 'since', 'limit', 'cursor'] };

function checkQuery(url: URL, endpoint: string): void {
  const known = QUERY[endpoint] ?? [];
  for (const k of url.searchParams.keys()) {
    if (!known.includes(k)) {
      throw new HttpError(400, 'E_BAD_OPTION', `option \`${k.slice(0, 100)}\`: unknown query parameter of GET ${endpoint}${known.length ? ` (known: ${known.join(', ')})` : ' (it takes none)'}`);
    }
  }
}

/** Refuses body keys an endpoint does not take (a typo must not be ignored). */
function bodyKeys(b: Record<string, unknown>, what: string, known: readonly string[]): void {
  for (const k of Object.keys(b)) {
    if (!known.includes(k)) {
      throw new HttpError(400, 'E_BAD_OPTION', `option \`${k.slice(0, 100)}\`: unknown key of the ${what} body${known.length ? ` (known: ${known.join(', ')})` : ' (it takes none: send {} or nothing)'}`);
    }
  }
}

// ---- the JSON API -------------------------------------------------------------------

export interface DurablyRoutesOptions {
  /**
   * Decides whether a request may use the API: return `true` to allow, `false` to deny
   * (403), or a `Response` to answer with (a redirect to your login page …). Without it,
   * the API is open only when `NODE_ENV` is `development` or `test` and denied otherwise
   * (production, staging, unset …) — unless the request carries
   * `Authorization: Bearer <DURABLY_DASHBOARD_TOKEN>` (accepted in every case when that
   * variable is set).
   */
  auth?: (request: Request) => boolean | Response | Promise<boolean | Response>;
  /**
   * Where the route is mounted (default '/durably'); used only when the handler is called
   * without Next's `params` (from a test, or another framework).
   */
  basePath?: string;
  /** Largest request body in bytes (default 8 MiB). */
  maxBodyBytes?: number;
}

/** The second argument Next passes to a route handler. */
export interface RouteContext {
  params?: unknown;
}

export type RouteHandler = (request: Request, context?: RouteContext) => Promise<Response>;

export interface DurablyRoutes {
  GET: RouteHandler;
  POST: RouteHandler;
}

/** Codes of the HTTP API besides those of `DurablyError`. */
export type HttpErrorCode = 'E_BAD_REQUEST' | 'E_FORBIDDEN' | 'E_NOT_FOUND' | 'E_METHOD_NOT_ALLOWED';

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: HttpErrorCode | ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

const STATUS_OF_CODE: Record<string, number> = {
  E_UNKNOWN_TASK: 400,
  E_BAD_OPTION: 400,
  E_BAD_DURATION: 400,
  E_PAYLOAD_NOT_JSON: 400,
  E_PAYLOAD_TOO_LARGE: 400,
  E_PAYLOAD_TOO_DEEP: 400,
  E_DISK_FULL: 507,
  E_RUN_NOT_FOUND: 404,
  E_DATA_DIR_LOCKED: 503,
  E_NOT_A_STORE: 500,
  E_CLOSED: 503,
  E_TIMEOUT: 504,
};

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' },
  });
}

/** A `DurablyError` (by shape: this module may sit beside another copy of the package). */
function isDurablyError(e: unknown): e is { code: string; message: string; option?: unknown } {
  return e instanceof Error && e.name === 'DurablyError' && typeof (e as { code?: unknown }).code === 'string';
}

/**
 * A message for an HTTP client: absolute paths of this machine (the data folder) are
 * replaced by their last segment. The server log keeps the whole message.
 */
function publicMessage(message: string): string {
  return message.replace(/(?:[A-Za-z]:)?(?:\/[^\s/'"`]+){2,}\/?/g, (p) => `…/${p.replace(/\/$/, '').split('/').pop()}`);
}

function errorResponse(e: unknown): Response {
  if (e instanceof HttpError) return json(e.status, { error: { code: e.code, message: e.message } });
  if (isDurablyError(e)) {
    if ((STATUS_OF_CODE[e.code] ?? 500) >= 500) console.error(`[durably] the JSON API answered ${e.code}:`, e.message);
    const body: { code: string; message: string; option?: string } = { code: e.code, message: publicMessage(e.message) };
    if (typeof e.option === 'string') body.option = e.option;
    return json(STATUS_OF_CODE[e.code] ?? 500, { error: body });
  }
  console.error('[durably] the JSON API failed:', e);
  return json(500, { error: { code: 'E_INTERNAL', message: 'internal error; see the server log' } });
}

function sameSecret(given: string, expected: string): boolean {
  // Compare digests: constant time, whatever the lengths.
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

async function authorize(request: Request, auth: DurablyRoutesOptions['auth']): Promise<Response | null> {
  const token = process.env.DURABLY_DASHBOARD_TOKEN;
  if (token) {
    const m = /^Bearer\s+(.+)$/i.exec(request.headers.get('authorization') ?? '');
    if (m && sameSecret(m[1].trim(), token)) return null;
  }
  if (auth) {
    let verdict: boolean | Response;
    try {
      verdict = await auth(request);
    } catch (e) {
      console.error('[durably] the auth callback threw; denying the request:', e);
      verdict = false;
    }
    if (verdict instanceof Response) return verdict;
    if (verdict === true) return null;
    return json(403, { error: { code: 'E_FORBIDDEN', message: 'the auth callback of durablyRoutes() denied this request' } });
  }
  // Fail closed: only a development or test server is open without auth.
  const env = process.env.NODE_ENV;
  if (env === 'development' || env === 'test') return null;
  return json(403, {
    error: {
      code: 'E_FORBIDDEN',
      message: token
        ? 'send the token of DURABLY_DASHBOARD_TOKEN as `Authorization: Bearer <token>`'
        : 'the durably API is closed outside development: set DURABLY_DASHBOARD_TOKEN and send it as `Authorization: Bearer <token>`, or pass durablyRoutes({ auth: (request) => … })',
    },
  });
}

/** The path segments after the mount point: from Next's catch-all param, or from the URL. */
async function segments(request: Request, context: RouteContext | undefined, basePath: string): Promise<string[]> {
  if (context && context.params !== undefined && context.params !== null) {
    const params = (await context.params) as Record<string, unknown> | null;
    const all = Object.values(params ?? {}).find(Array.isArray) as unknown[] | undefined;
    return (all ?? []).map(String).filter((s) => s.length > 0);
  }
  let p = new URL(request.url).pathname;
  const base = basePath.replace(/\/+$/, '');
  if (base && (p === base || p.startsWith(base + '/'))) p = p.slice(base.length);
  return p
    .split('/')
    .filter((s) => s.length > 0)
    .map((s) => {
      try {
        return decodeURIComponent(s);
      } catch {
        throw new HttpError(400, 'E_BAD_REQUEST', `bad URL segment ${JSON.stringify(s)}`);
      }
    });
}

async function readJson(request: Request, maxBytes: number): Promise<unknown> {
  const type = request.headers.get('content-type') ?? '';
  if (!/^application\/json\b/i.test(type.trim())) {
    throw new HttpError(415, 'E_BAD_REQUEST', 'POST bodies must be JSON with `Content-Type: application/json`');
  }
  const declared = Number(request.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > maxBytes) {
    throw new HttpError(413, 'E_PAYLOAD_TOO_LARGE', `the request body is over ${maxBytes} bytes`);
  }
  let text = '';
  if (request.body) {
    const reader = request.body.getReader();
    const decoder = new TextDecoder();
    let size = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > maxBytes) {
        await reader.cancel().catch(() => {});
        throw new HttpError(413, 'E_PAYLOAD_TOO_LARGE', `the request body is over ${maxBytes} bytes`);
      }
      text += decoder.decode(value, { stream: true });
    }
    text += decoder.decode();
  }
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, 'E_BAD_REQUEST', `the request body is not valid JSON: ${(e as Error).message}`);
  }
}

function object(body: unknown, what: string): Record<string, unknown> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new HttpError(400, 'E_BAD_REQUEST', `${what} takes a JSON object body`);
  }
  return body as Record<string, unknown>;
}

function listOptions(url: URL): ListRunsOptions {
  const q = url.searchParams;
  const opts: ListRunsOptions = {};
  const taskId = q.get('taskId');
  if (taskId !== null) opts.taskId = taskId;
  const status = q.get('status');
  if (status !== null) opts.status = status as RunStatus; // checked by runs.list
  const tag = q.get('tag');
  if (tag !== null) opts.tag = tag;
  const since = q.get('since');
  if (since !== null) opts.since = /^\d+$/.test(since) ? Number(since) : since;
  const limit = q.get('limit');
  if (limit !== null) opts.limit = Number(limit); // NaN, 0 or a fraction: E_BAD_OPTION from runs.list
  const cursor = q.get('cursor');
  if (cursor !== null) opts.cursor = cursor;
  return opts;
}

const ENDPOINTS = [
  'GET  runs?taskId&status&tag&since&limit&cursor',
  'GET  runs/:id',
  'GET  stats',
  'POST trigger           { taskId, payload, options }',
  'POST send              { name, data, id? }',
  'POST tokens/:id/complete { data }',
  'POST runs/:id/cancel',
  'POST runs/:id/replay',
  'POST runs/:id/retry',
];

async function get(request: Request, path: string[]): Promise<Response> {
  const d = durably();
  const url = new URL(request.url);
  if (path.length === 0) {
    checkQuery(url, '/');
    return json(200, { name: 'durably', endpoints: ENDPOINTS });
  }
  if ((path[0] === 'runs' && path.length <= 2) || (path[0] === 'stats' && path.length === 1)) checkQuery(url, path.length === 1 ? path[0] : 'runs/:id');
  if (path[0] === 'runs' && path.length === 1) {
    return json(200, await d.runs.list(listOptions(new URL(request.url))));
  }
  if (path[0] === 'runs' && path.length === 2) {
    const run = await d.runs.get(path[1]);
    if (run === null) throw new HttpError(404, 'E_RUN_NOT_FOUND', `no run with id ${JSON.stringify(path[1].slice(0, 200))}`);
    return json(200, run);
  }
  if (path[0] === 'stats' && path.length === 1) return json(200, await d.stats());
  if (isPostRoute(path)) throw new HttpError(405, 'E_METHOD_NOT_ALLOWED', `use POST for /${path.join('/')}`);
  throw new HttpError(404, 'E_NOT_FOUND', `no endpoint GET /${path.join('/')}; endpoints: ${ENDPOINTS.join('; ')}`);
}

function isPostRoute(path: string[]): boolean {
  return (
    (path.length === 1 && (path[0] === 'trigger' || path[0] === 'send')) ||
    (path.length === 3 && path[0] === 'tokens' && path[2] === 'complete') ||
    (path.length === 3 && path[0] === 'runs' && (path[2] === 'cancel' || path[2] === 'replay' || path[2] === 'retry'))
  );
}

async function post(request: Request, path: string[], maxBodyBytes: number): Promise<Response> {
  if (!isPostRoute(path)) {
    const isGet = path.length === 0 || path[0] === 'stats' || (path[0] === 'runs' && path.length <= 2);
    if (isGet) throw new HttpError(405, 'E_METHOD_NOT_ALLOWED', `use GET for /${path.join('/')}`);
    throw new HttpError(404, 'E_NOT_FOUND', `no endpoint POST /${path.join('/')}; endpoints: ${ENDPOINTS.join('; ')}`);
  }
  const body = await readJson(request, maxBodyBytes);
  const d = durably();
  if (path[0] === 'trigger') {
    const b = object(body, 'POST trigger');
    bodyKeys(b, 'POST trigger', ['taskId', 'payload', 'options']);
    if (typeof b.taskId !== 'string' || b.taskId.length === 0) {
      throw new HttpError(400, 'E_BAD_OPTION', 'option `taskId`: POST trigger takes { taskId: "task-id", payload, options? }');
    }
    const handle = await d.trigger(b.taskId, b.payload, b.options as TriggerOptions | undefined);
    return json(202, { id: handle.id, taskId: handle.taskId });
  }
  if (path[0] === 'send') {
    if (Array.isArray(body)) return json(202, await d.send(body as EventInput[]));
    // send() checks the event, its unknown keys included.
    return json(202, await d.send(object(body, 'POST send') as unknown as EventInput));
  }
  if (path[0] === 'tokens') {
    const b = object(body, 'POST tokens/:id/complete');
    bodyKeys(b, 'POST tokens/:id/complete', ['data']);
    return json(200, await d.tokens.complete(path[1], b.data ?? null));
  }
  // runs/:id/cancel, runs/:id/replay, runs/:id/retry: no body, or {}.
  bodyKeys(object(body, `POST runs/:id/${path[2]}`), `POST runs/:id/${path[2]}`, []);
  const id = path[1];
  if (path[2] === 'cancel') return json(200, { cancelled: await d.runs.cancel(id) });
  if (path[2] === 'retry') {
    await d.runs.retry(id);
    return json(202, { id });
  }
  const handle = await d.runs.replay(id);
  return json(202, { id: handle.id, taskId: handle.taskId });
}

/**
 * The JSON API as Next.js route handlers, for `app/durably/[[...path]]/route.ts`:
 * `export const { GET, POST } = durablyRoutes({ auth })` (and `export const dynamic =
 * 'force-dynamic'`). Endpoints, relative to the mount point:
 *
 * - `GET runs?taskId&status&tag&since&limit&cursor` → `{ runs, cursor? }`
 * - `GET runs/:id` → the run with its steps (404 `E_RUN_NOT_FOUND`)
 * - `GET stats` → queue depths
 * - `POST trigger` `{ taskId, payload, options }` → 202 `{ id, taskId }`
 * - `POST send` `{ name, data, id? }` → 202 `{ ids }`
 * - `POST tokens/:id/complete` `{ data }` → `{ resumed }`
 * - `POST runs/:id/cancel` → `{ cancelled }`; `POST runs/:id/replay` → 202 `{ id, taskId }` (the new
 *   run); `POST runs/:id/retry` → 202 `{ id }` (a failed run continues from its failed step)
 *
 * Errors are `{ error: { code, message } }`: 400 for bad input (`E_UNKNOWN_TASK`,
 * `E_BAD_OPTION`, `E_PAYLOAD_*`, `E_BAD_REQUEST`), 403 `E_FORBIDDEN`, 404, 405, 415.
 */
export function durablyRoutes(options: DurablyRoutesOptions = {}): DurablyRoutes {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) throw badOption('durablyRoutes', 'durablyRoutes() takes an options object: durablyRoutes({ auth })');
  for (const k of Object.keys(options)) {
    if (!['auth', 'basePath', 'maxBodyBytes'].includes(k)) throw badOption(`durablyRoutes.${k}`, 'unknown option of durablyRoutes() (known: auth, basePath, maxBodyBytes)');
  }
  if (options.auth !== undefined && typeof options.auth !== 'function') throw badOption('auth', 'durablyRoutes({ auth }): auth must be a function (request) => boolean | Response');
  const basePath = options.basePath === undefined ? '/durably' : options.basePath;
  if (typeof basePath !== 'string' || !basePath.startsWith('/') || basePath.includes('\0')) throw badOption('basePath', "must be the path the route is mounted at, like '/durably'");
  const maxBodyBytes = options.maxBodyBytes === undefined ? 8 * 1024 * 1024 : options.maxBodyBytes;
  if (!Number.isSafeInteger(maxBodyBytes) || maxBodyBytes < 1) throw badOption('maxBodyBytes', `must be a positive integer (bytes), got ${String(maxBodyBytes)}`);
  const handle = async (method: 'GET' | 'POST', request: Request, context?: RouteContext): Promise<Response> => {
    try {
      const denied = await authorize(request, options.auth);
      if (denied) return denied;
      const path = await segments(request, context, basePath);
      return method === 'GET' ? await get(request, path) : await post(request, path, maxBodyBytes);
    } catch (e) {
      return errorResponse(e);
    }
  };
  return {
    GET: (request, context) => handle('GET', request, context),
    POST: (request, context) => handle('POST', request, context),
  };
}

/** The name DESIGN §1.9 uses: `export const { GET, POST } = dashboard({ auth })`. */
export const dashboard = durablyRoutes;
