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
