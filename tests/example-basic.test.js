// examples/basic is run as a user would run it (twice, on one data folder): it must finish,
// and the second run must list the first run's history from the store.
const { test } = require('node:test');
const assert = require('node:assert');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

test('examples/basic completes its runs, and a second run shows the first one from the store', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-example-'));
  const run = () =>
    execFileSync(process.execPath, [path.join(__dirname, '..', 'examples', 'basic', 'index.js')], {
      env: { ...process.env, DURABLY_DATA_DIR: dir },
      encoding: 'utf8',
      timeout: 60_000,
    });
  try {
    const first = run();
    assert.match(first, /onboarding-email → \{ sent: true \}/);
    assert.match(first, /E_RUN_FAILED: amount 5000 flagged as fraud/);
    assert.doesNotMatch(first, /History from earlier demo runs/);
    const second = run();
    assert.match(second, /History from earlier demo runs \(5 runs in the store\)/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
