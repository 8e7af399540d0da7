// Poison runs (issue: a run whose execution kills the process replayed forever): a run that
// was running each of the last 3 times the process died fails with E_RUN_POISONED; the
// healthy runs in flight beside it at the first crash are not blamed (suspects run one at a
// time after a crash) and complete. Real processes, killed by the run itself: process.exit
// (exit hooks run) and process.abort (a native crash: nothing runs).
const { test } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const worker = path.join(__dirname, 'fixtures', 'poison-worker.js');

function life(dir, mode, how, extra = []) {
  const env = { ...process.env };
  delete env.DURABLY_DATA_DIR;
  const r = spawnSync(process.execPath, [worker, dir, mode, how, ...extra], { cwd: root, env, encoding: 'utf8', timeout: 30_000 });
  const lines = r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
  return { status: r.status, signal: r.signal, lines, stderr: r.stderr };
}

for (const how of ['exit', 'abort']) {
  test(`a run that kills the process (${how === 'exit' ? 'process.exit' : 'a native crash'}) three times fails with E_RUN_POISONED; the others complete`, () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `durably-poison-${how}-`));
    try {
      const seeded = life(dir, 'seed', how);
      assert.strictEqual(seeded.status, 0, seeded.stderr);
      const ids = seeded.lines[0];
      const deaths = [];
      for (let i = 0; i < 6; i++) {
        const l = life(dir, 'life', how);
        if (l.lines.some((x) => x.survived)) break;
        deaths.push(l.signal ?? l.status);
      }
      assert.strictEqual(deaths.length, 3, `the server died ${deaths.length} times (${deaths.join(', ')}) before the poison run was stopped`);
      const check = life(dir, 'check', how, [JSON.stringify(ids)]);
      const report = check.lines.find((x) => x.runs);
      assert.ok(report, `the check life reported: ${JSON.stringify(check.lines)} ${check.stderr}`);
      const boom = report.runs.find((r) => r.id === ids.boom);
      assert.strictEqual(boom.status, 'failed');
      assert.strictEqual(boom.code, 'E_RUN_POISONED');
      assert.deepStrictEqual(boom.steps, ['before'], 'its completed step is kept (runs.retry can continue it)');
      assert.strictEqual(report.boomError.code, 'E_RUN_FAILED');
      assert.strictEqual(report.boomError.cause, 'E_RUN_POISONED');
      for (const id of ids.fine) {
        const r = report.runs.find((x) => x.id === id);
        assert.strictEqual(r.status, 'completed', `healthy run ${id} completed (not blamed for the crashes)`);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}
