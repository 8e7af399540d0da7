/**
 * Development only: forgets tasks that an edited module no longer defines.
 *
 * `next dev` re-evaluates a module when it is saved. A task renamed or removed there would
 * otherwise stay registered until the server restarts — its `on` subscription would go on
 * starting runs of code that no longer exists. So, when `NODE_ENV` is `development`, every
 * `task()` called while a module is being loaded is remembered with the module's file; once
 * that file's definitions have settled (no new one for `SETTLE_MS`), the tasks the file
 * defined in an earlier evaluation but not in this one are unregistered.
 *
 * Only definitions made while a module loads count (a loader frame — Node's, webpack's or
 * Turbopack's — is on the stack): a factory that defines tasks later, at request time, is
 * never taken for an edit. When the stack shows no file or no loader, nothing is forgotten:
 * the worst case is today's behaviour (the old task stays until a restart).
 */
import { dirname, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** durably's own files: the caller is the first frame outside them. */
const OUR_DIR = dirname(__filename) + sep;

/** Definitions from one file within this quiet period belong to one evaluation. */
export const SETTLE_MS = 300;

/** Frames of module loaders: Node (CJS, ESM), webpack, Turbopack. */
const LOADER = /\b(Module\._compile|ModuleJob\.run|__webpack_require__|__nested_webpack_require_|instantiateModule|esmImport|commonJsRequire|loadModule)\b/;
export interface Definer {
  file: string;
}

/** The file whose module evaluation is calling `task()`, or undefined (not loading, unknown). */
export function definer(): Definer | undefined {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 64; // a bundler's loader sits deep below the module's frame
  const stack = new Error().stack;
  Error.stackTraceLimit = limit;
  if (!stack || !LOADER.test(stack)) return undefined;
  for (const line of stack.split('\n').slice(1)) {
    // "at fn (file:line:col)" or "at file:line:col"
    const m = /^at (?:.*? \()?(.+?):\d+:\d+\)?$/.exec(line.trim());
    if (!m) continue;
    let file = m[1];
    if (file.startsWith('node:') || file.startsWith(OUR_DIR)) continue;
    if (file.startsWith('file://')) {
      try {
        file = fileURLToPath(file);
      } catch {
        /* keep the URL */
      }
      if (file.startsWith(OUR_DIR)) continue;
    }
    return { file };
  }
  return undefined;
}

interface FileState {
  /** Ids defined by the file's settled evaluations. */
  settled: Set<string>;
  /** Ids of the evaluation in progress. */
  current: Set<string>;
  timer?: ReturnType<typeof setTimeout>;
}

/**
 * Tracks which file defined which task; calls `forget(id)` for a task its file stopped
 * defining (and no other file defines), and `settled(file, ids)` after each evaluation.
 */
export class DevTaskSet {
  private files = new Map<string, FileState>();
  /** id → the file that defined it last. */
  private owner = new Map<string, string>();

  constructor(
    private readonly forget: (id: string, file: string) => void,
    private readonly settled?: (file: string, ids: string[]) => void,
  ) {}

  defined(id: string, by: Definer | undefined): void {
    if (!by) {
      this.owner.delete(id); // defined outside a module load: never forgotten
      return;
    }
    this.owner.set(id, by.file);
    let st = this.files.get(by.file);
    if (!st) this.files.set(by.file, (st = { settled: new Set(), current: new Set() }));
    st.current.add(id);
    if (st.timer) clearTimeout(st.timer);
    st.timer = setTimeout(() => this.settle(by.file), SETTLE_MS);
    st.timer.unref?.();
  }

  private settle(file: string): void {
    const st = this.files.get(file);
    if (!st) return;
    st.timer = undefined;
    for (const id of st.settled) {
      if (!st.current.has(id) && this.owner.get(id) === file) {
        this.owner.delete(id);
        this.forget(id, file);
      }
    }
    st.settled = st.current;
    st.current = new Set();
    this.settled?.(file, [...st.settled]);
  }
}
