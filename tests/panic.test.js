// A Rust panic inside the addon becomes a JS error (E_INTERNAL through the TS layer); it
// never aborts the process.
const { test } = require('node:test');
const assert = require('node:assert');
const native = require('../native.js');
const { fromNative } = require('../dist/errors.js');

test('a panic in a synchronous native call is thrown as an error, and the process lives on', () => {
  let caught;
  try {
    native.__panicForTests('boom in sync');
  } catch (e) {
    caught = fromNative(e);
  }
  assert.ok(caught, 'the panic was not thrown to JS');
  assert.strictEqual(caught.code, 'E_INTERNAL');
  assert.match(caught.message, /boom in sync/);
});

test('a panic in an async native call rejects its promise, and the process lives on', async () => {
  const err = await native.__panicForTestsAsync('boom in async').then(
    () => null,
    (e) => fromNative(e),
  );
  assert.ok(err, 'the promise did not reject');
  assert.strictEqual(err.code, 'E_INTERNAL');
  // The addon still works afterwards.
  assert.strictEqual(native.parseDuration('x', '2s'), 2000);
});
