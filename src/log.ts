/**
 * durably's own messages (the core's, through the addon, and the JS layer's): at or above
 * `configure({ logLevel })` (default 'warn', env DURABLY_LOG), to `configure({ logger })`
 * when given — a function `(level, message)` or an object with `error`/`warn`/`info`/`debug`
 * methods (console, pino, winston …) — else to the console.
 */
import { badOption } from './errors';

export type LogLevel = 'silent' | 'error' | 'warn' | 'info' | 'debug';
export type LogSink = ((level: Exclude<LogLevel, 'silent'>, message: string) => void) | Partial<Record<Exclude<LogLevel, 'silent'>, (message: string) => void>>;

const RANK: Record<LogLevel, number> = { silent: 0, error: 1, warn: 2, info: 3, debug: 4 };

let level: LogLevel = 'warn';
let sink: LogSink | undefined;

export function checkLevel(v: unknown, option = 'logLevel'): LogLevel {
  if (typeof v !== 'string' || !Object.prototype.hasOwnProperty.call(RANK, v)) throw badOption(option, `must be one of 'silent', 'error', 'warn', 'info', 'debug', got ${typeof v === 'string' ? JSON.stringify(v) : typeof v}`);
  return v as LogLevel;
}

export function checkSink(v: unknown): LogSink | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'function') return v as LogSink;
  if (v !== null && typeof v === 'object' && ['error', 'warn', 'info', 'debug'].some((m) => typeof (v as Record<string, unknown>)[m] === 'function')) return v as LogSink;
  throw badOption('logger', 'must be a function (level, message) => void, or an object with error/warn/info/debug methods (console, pino …)');
}

/** Sets where messages go; `native` forwards the core's messages too. */
export function setLogging(l: LogLevel, s: LogSink | undefined, native?: (level: string, fn?: (level: string, message: string) => void) => void): void {
  level = l;
  sink = s;
  native?.(l, s === undefined ? undefined : (lv, m) => emit(lv as Exclude<LogLevel, 'silent'>, m, true));
}

function emit(l: Exclude<LogLevel, 'silent'>, message: string, fromCore = false): void {
  if (!fromCore && RANK[l] > RANK[level]) return;
  try {
    if (typeof sink === 'function') return sink(l, message);
    if (sink) {
      const f = sink[l] ?? sink.warn ?? sink.error;
      if (f) return f.call(sink, `[durably] ${message}`);
    }
  } catch {
    // a logger that throws must not break the engine
  }
  const line = `[durably] ${message}`;
  if (l === 'error') console.error(line);
  else if (l === 'warn') console.warn(line);
  else if (l === 'info') console.info(line);
  else console.debug(line);
}

export const log = {
  error: (m: string) => emit('error', m),
  warn: (m: string) => emit('warn', m),
  info: (m: string) => emit('info', m),
  debug: (m: string) => emit('debug', m),
};
