// Every error code has its section in docs/errors.md (STYLE "Errors": a test fails if one is
// missing). The codes come from the two places that define them: the `ErrorCode` union of
// the TS surface (read from dist/errors.d.ts) and the core's list (`errorCodes()`).
const { test } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');

function tsErrorCodes() {
  const dts = fs.readFileSync(path.join(root, 'dist', 'errors.d.ts'), 'utf8');
  const m = /export\s+(?:declare\s+)?type\s+ErrorCode\s*=([^;]*);/.exec(dts);
  assert.ok(m, 'dist/errors.d.ts declares `type ErrorCode` (run npm run build:ts)');
  const codes = [...m[1].matchAll(/['"](E_[A-Z0-9_]+)['"]/g)].map((x) => x[1]);
  assert.ok(codes.length > 0, 'ErrorCode lists codes');
  return codes;
}

function nativeErrorCodes() {
  const codes = require(path.join(root, 'native.js')).errorCodes();
  assert.ok(Array.isArray(codes) && codes.length > 0);
  return codes;
}

/** `## E_CODE` headings of docs/errors.md, each with the text of its section. */
function documentedCodes() {
  const file = path.join(root, 'docs', 'errors.md');
  assert.ok(fs.existsSync(file), 'docs/errors.md exists');
  const md = fs.readFileSync(file, 'utf8');
  const sections = new Map();
  const parts = md.split(/^## /m).slice(1);
  for (const part of parts) {
    const [heading, ...body] = part.split('\n');
    const code = /^`?(E_[A-Z0-9_]+)`?\s*$/.exec(heading.trim());
    if (code) sections.set(code[1], body.join('\n').trim());
  }
  return sections;
}

test('every code of the ErrorCode type has a non-empty section in docs/errors.md', () => {
  const docs = documentedCodes();
  const missing = tsErrorCodes().filter((c) => !docs.has(c));
  assert.deepStrictEqual(missing, [], `docs/errors.md lacks a "## CODE" section for: ${missing.join(', ')}`);
  const empty = tsErrorCodes().filter((c) => docs.get(c).length === 0);
  assert.deepStrictEqual(empty, [], `empty sections in docs/errors.md: ${empty.join(', ')}`);
});

test('every code the native core produces has a non-empty section in docs/errors.md', () => {
  const docs = documentedCodes();
  const missing = nativeErrorCodes().filter((c) => !docs.has(c));
  assert.deepStrictEqual(missing, [], `docs/errors.md lacks a "## CODE" section for: ${missing.join(', ')}`);
  const empty = nativeErrorCodes().filter((c) => docs.get(c).length === 0);
  assert.deepStrictEqual(empty, [], `empty sections in docs/errors.md: ${empty.join(', ')}`);
});

test('every code the native core produces is part of the ErrorCode type JS users see', () => {
  const ts = new Set(tsErrorCodes());
  const missing = nativeErrorCodes().filter((c) => !ts.has(c));
  assert.deepStrictEqual(missing, [], `ErrorCode in src/errors.ts lacks: ${missing.join(', ')}`);
});
