// A full disk (issue: a failed commit left memory changed and result() waiters hanging):
// the data folder sits on a small tmpfs; once the disk is full, writes fail with
// E_DISK_FULL, new work is refused with that code (within lockTimeout: no hang), nothing
// acknowledged is lost, and when space returns durably carries on by itself.
// Needs root to mount a tmpfs (CI runs as root); skipped with a message otherwise.
const { test, before, after } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'durably-full-'));
let mounted = false;
try {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', mnt], { stdio: 'pipe' });
  mounted = true;
} catch (e) {
  // Reported by the test below.
}
const skip = mounted ? false : 'cannot mount a tmpfs here (needs root): the full-disk test is skipped';

const durably = require('durably');
const { task, configure, start, shutdown, runs, DurablyError } = durably;
const dataDir = path.join(mnt, 'store');
const filler = path.join(mnt, 'filler');
const logged = [];
configure({ dataDir, lockTimeout: '1s', logger: (level, message) => logged.push(`${level}: ${message}`) });

const work = task({
  id: 'full-work',
  retry: { maxAttempts: 1 },
  run: async (p, { step }) => {
    const a = await step.run('a', () => p.n);
    return a + 1;
  },
});

before(async () => {
  if (mounted) await start();
});
after(async () => {
  await shutdown({ timeout: '2s' }).catch(() => {});
  if (mounted) execFileSync('umount', ['-l', mnt]);
  fs.rmSync(mnt, { recursive: true, force: true });
});

/** Fills the disk with a file, leaving about `leave` bytes. */
function fill(leave) {
  const { bavail, bsize } = fs.statfsSync(mnt);
  const size = Math.max(0, bavail * bsize - leave);
  const fd = fs.openSync(filler, 'w');
  const chunk = Buffer.alloc(1 << 20, 7);
  let written = 0;
  try {
    while (written < size) written += fs.writeSync(fd, chunk, 0, Math.min(chunk.length, size - written));
  } catch (e) {
    if (e.code !== 'ENOSPC') throw e;
  } finally {
    fs.closeSync(fd);
  }
}

test('a full disk refuses work with E_DISK_FULL, loses nothing acknowledged, and work resumes when space returns', { skip }, async () => {
  const acked = [];
  for (let i = 0; i < 20; i++) acked.push(await work.trigger({ n: i }));
  for (const [i, h] of acked.entries()) assert.strictEqual(await h.result({ timeout: '5s' }), i + 1);

  fill(64 * 1024);
  // Write until the disk refuses: large payloads fill the rest quickly.
  const big = 'x'.repeat(200_000);
  let refused;
  for (let i = 0; i < 500 && !refused; i++) {
    try {
      acked.push(await work.trigger({ n: 100 + i, big }));
    } catch (e) {
      refused = e;
    }
  }
  assert.ok(refused, 'the disk filled up');
  assert.ok(refused instanceof DurablyError, `${refused}`);
  assert.strictEqual(refused.code, 'E_DISK_FULL', refused.message);
  assert.match(refused.message, /free space/);
  // While it stays full, new work is refused clearly, and promptly.
  const t0 = Date.now();
  await assert.rejects(work.trigger({ n: -1 }), (e) => e.code === 'E_DISK_FULL');
  assert.ok(Date.now() - t0 < 10_000, 'refused within lockTimeout, no hang');

  // Space returns: durably carries on by itself.
  fs.rmSync(filler);
  let resumed;
  for (let i = 0; i < 100 && !resumed; i++) {
    try {
      resumed = await work.trigger({ n: 1000 });
    } catch (e) {
      assert.strictEqual(e.code, 'E_DISK_FULL', e.message);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  assert.ok(resumed, `work resumed once space returned; log: ${logged.join('\n')}`);
  assert.strictEqual(await resumed.result({ timeout: '10s' }), 1001);
  // Every acknowledged run is there, and completes.
  for (const h of acked) {
    const r = await runs.get(h.id);
    assert.ok(r, `acknowledged run ${h.id} is in the store`);
    await h.result({ timeout: '10s' });
  }
  assert.ok(logged.some((l) => /E_DISK_FULL/.test(l)), 'the failure was logged');
});
