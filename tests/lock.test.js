// One engine per data folder (DESIGN §1.7): while this process has the store open, another
// process opening the same folder fails with E_DATA_DIR_LOCKED naming the folder's absolute
// path; shutdown() releases the folder; start() after shutdown() reopens it.
const { test, after } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFile } = require('node:child_process');
const { task, configure, start, shutdown, runs } = require('durably');

const root = path.resolve(__dirname, '..');
const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'durably-lock-')));
configure({ dataDir: dir });
after(async () => {
  await shutdown({ timeout: '2s' });
  fs.rmSync(dir, { recursive: true, force: true });
});

const echo = task({ id: 'lock-echo', run: async (p) => p });

/**
 * Opens `dataDir` from a child process (started in the package root, so that
 * require('durably') resolves) and reports what start() did.
 */
function openInChild(dataDir) {
  const script = `
    const { configure, start, shutdown } = require('durably');
    configure({ dataDir: process.argv[1] });
    start().then(
      async () => { await shutdown(); console.log(JSON.stringify({ ok: true })); },
      (e) => console.log(JSON.stringify({ ok: false, name: e.name, code: e.code, message: e.message })),
    );
  `;
  const env = { ...process.env };
  delete env.DURABLY_DATA_DIR;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', script, dataDir], { cwd: root, env, timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`child failed: ${err.message}\n${stderr}`));
      try {
        resolve(JSON.parse(stdout.trim().split('\n').pop()));
      } catch {
        reject(new Error(`child printed no result:\n${stdout}\n${stderr}`));
      }
    });
  });
}

test('another process opening a data folder in use fails with E_DATA_DIR_LOCKED naming its absolute path', async () => {
  await start();
  const h = await echo.trigger('before');
  assert.strictEqual(await h.result({ timeout: '5s' }), 'before');

  // A relative path in the child: the message must still name the absolute folder.
  const res = await openInChild(path.relative(root, dir));
  assert.strictEqual(res.ok, false, 'the child must not open a folder this process holds');
  assert.strictEqual(res.name, 'DurablyError');
  assert.strictEqual(res.code, 'E_DATA_DIR_LOCKED');
  assert.ok(res.message.includes(dir), `message ${JSON.stringify(res.message)} should contain ${dir}`);

  // This process's engine is unaffected.
  const h2 = await echo.trigger('still open');
  assert.strictEqual(await h2.result({ timeout: '5s' }), 'still open');
});

test('shutdown() releases the folder: another process can open it, then this process can reopen it', async () => {
  await start();
  const h = await echo.trigger('kept');
  assert.strictEqual(await h.result({ timeout: '5s' }), 'kept');
  await shutdown();

  const res = await openInChild(dir);
  assert.deepStrictEqual(res, { ok: true });

  await start();
  const earlier = await runs.get(h.id);
  assert.strictEqual(earlier.status, 'completed');
  assert.strictEqual(earlier.output, 'kept');
  const h2 = await echo.trigger('after reopen');
  assert.strictEqual(await h2.result({ timeout: '5s' }), 'after reopen');
});
