/**
 * Payloads, outputs and events are JSON. Values JSON cannot represent faithfully (BigInt,
 * functions, symbols, Map, Set, cycles) are rejected with `E_PAYLOAD_NOT_JSON` instead of
 * being silently dropped, and oversized ones with `E_PAYLOAD_TOO_LARGE` — before anything is
 * written.
 */
import { DurablyError } from './errors';

function notJson(what: string, key: string, reason: string): DurablyError {
  const where = key === '' ? '' : ` (at key "${key}")`;
  return new DurablyError(
    'E_PAYLOAD_NOT_JSON',
    `${what} is not JSON: it contains ${reason}${where}; pass plain objects, arrays, strings, numbers, booleans and null (convert BigInt to a string, Map to an object)`,
  );
}

export function toJson(value: unknown, what: string, limit: number): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value === undefined ? null : value, function (key, v) {
      switch (typeof v) {
        case 'bigint':
          throw notJson(what, key, 'a BigInt');
        case 'function':
          throw notJson(what, key, 'a function');
        case 'symbol':
          throw notJson(what, key, 'a symbol');
        case 'object':
          if (v instanceof Map || v instanceof Set) throw notJson(what, key, `a ${v.constructor.name}`);
      }
      return v;
    });
  } catch (e) {
    if (e instanceof DurablyError) throw e;
    throw notJson(what, '', /circular/i.test(String((e as Error)?.message)) ? 'a cycle' : String((e as Error)?.message));
  }
  if (text === undefined) throw notJson(what, '', 'nothing JSON can hold');
  if (text.length > limit / 3) {
    const size = Buffer.byteLength(text);
    if (size > limit) {
      throw new DurablyError(
        'E_PAYLOAD_TOO_LARGE',
        `${what} is ${size} bytes, over the limit of ${limit} bytes; store large data elsewhere (a file, a bucket) and pass a reference, or raise configure({ maxPayloadBytes })`,
      );
    }
  }
  return text;
}

/** Deepest nesting of a payload or event data the core reads (its `limits::MAX_DEPTH`). */
export const MAX_DEPTH = 100;

/** How deeply the JSON `text` nests (0 for a scalar), counting brackets outside strings. */
export function depth(text: string): number {
  let d = 0;
  let max = 0;
  let inStr = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inStr) {
      if (c === 92) i++; // a backslash: skip the escaped character
      else if (c === 34) inStr = false;
    } else if (c === 34) inStr = true;
    else if (c === 91 || c === 123) max = Math.max(max, ++d);
    else if (c === 93 || c === 125) d--;
  }
  return max;
}

/**
 * Refuses JSON nested deeper than the core reads (`E_PAYLOAD_TOO_DEEP`), for values the core
 * would only check later, as part of a run's report (step.invoke, step.sendEvent): there the
 * run would fail instead of the call. `envelope` levels of `text` are not the value's own.
 */
export function checkDepth(what: string, text: string, envelope = 0): void {
  const d = depth(text) - envelope;
  if (d > MAX_DEPTH) {
    throw new DurablyError('E_PAYLOAD_TOO_DEEP', `${what} is nested ${d} levels deep, over the limit of ${MAX_DEPTH}; flatten it, or pass the deep part as a JSON string`);
  }
}
