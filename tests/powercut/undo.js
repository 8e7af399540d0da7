// The undo half of a power cut (see powercut.c): reads the journal that powercut.so wrote
// while the process ran and, once that process is dead, puts every file under the folder
// back to its content and size at its last fsync. Every write not fsynced is dropped.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const MAGIC = 0x52544350;
const HEADER = 64;

/**
 * Parses the journal into records { type, seq, dev, ino, off, oldSize, aux, body }.
 *
 * The last record may be torn: the cut's SIGKILL is a fatal signal, and the kernel ends a
 * large write to a regular file early when one is pending, so a process killed while it
 * appends a big pre-image (a 2 MB value) leaves part of it. That record's own write had not
 * started (the shim journals first, then writes), so it is dropped with nothing to undo.
 * Only the end of the journal can be torn: records are appended one at a time under a lock.
 */
function readJournal(file) {
  const buf = fs.existsSync(file) ? fs.readFileSync(file) : Buffer.alloc(0);
  const out = [];
  let at = 0;
  while (at < buf.length) {
    if (buf.length - at < HEADER) break; // a torn last header
    if (buf.readUInt32LE(at) !== MAGIC) throw new Error(`powercut journal ${file}: bad magic at byte ${at}`);
    const len = Number(buf.readBigUInt64LE(at + 48));
    if (buf.length - at - HEADER < len) break; // a torn last record
    out.push({
      type: String.fromCharCode(buf.readUInt32LE(at + 4)),
      seq: Number(buf.readBigUInt64LE(at + 8)),
      dev: buf.readBigUInt64LE(at + 16),
      ino: buf.readBigUInt64LE(at + 24),
      off: Number(buf.readBigUInt64LE(at + 32)),
      oldSize: Number(buf.readBigUInt64LE(at + 40)),
      aux: buf.readBigUInt64LE(at + 56),
      body: buf.subarray(at + HEADER, at + HEADER + len),
    });
    at += HEADER + len;
  }
  return out;
}

/** dev:ino → path of every regular file under dir. */
function inodes(dir) {
  const map = new Map();
  const walk = (d) => {
    for (const ent of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, ent.name);
      if (ent.isDirectory()) walk(p);
      else if (ent.isFile()) {
        const st = fs.lstatSync(p, { bigint: true });
        map.set(`${st.dev}:${st.ino}`, p);
      }
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return map;
}

/**
 * Drops every journaled change that no fsync covered. Call only once the traced process is
 * dead. Returns what it did: { records, writes, syncs, rangeSyncs, undone, bytesDropped,
 * files: { relPath: { undone, bytesDropped, synced } } }.
 */
function undo(dir, journalFile) {
  const recs = readJournal(journalFile);
  const gen = new Map(); // dev:ino → generation (bumped when the inode is unlinked)
  const files = new Map(); // dev:ino#gen → { key, changes, syncedUpto, paths }
  let allSyncedUpto = 0;
  const stats = { records: recs.length, writes: 0, syncs: 0, rangeSyncs: 0, undone: 0, bytesDropped: 0, files: {} };
  const entry = (r) => {
    const key = `${r.dev}:${r.ino}`;
    const kg = `${key}#${gen.get(key) || 0}`;
    let f = files.get(kg);
    if (!f) files.set(kg, (f = { key, kg, changes: [], syncedUpto: 0, paths: new Set(), syncs: 0 }));
    return f;
  };
  for (const r of recs) {
    switch (r.type) {
      case 'W':
      case 'T':
      case 'F':
        if (r.type === 'W') stats.writes++;
        entry(r).changes.push(r);
        break;
      case 'S': {
        const f = entry(r);
        f.syncedUpto = Math.max(f.syncedUpto, Number(r.aux));
        f.syncs++;
        stats.syncs++;
        break;
      }
      case 'A':
        allSyncedUpto = Math.max(allSyncedUpto, Number(r.aux));
        stats.syncs++;
        break;
      case 'G': {
        const key = `${r.dev}:${r.ino}`;
        gen.set(key, (gen.get(key) || 0) + 1);
        break;
      }
      case 'O':
        entry(r).paths.add(r.body.toString('utf8'));
        break;
      case 'R':
        stats.rangeSyncs++;
        break;
      default:
        throw new Error(`powercut journal ${journalFile}: unknown record type ${r.type}`);
    }
  }
  const live = inodes(dir);
  for (const f of files.values()) {
    if (f.kg !== `${f.key}#${gen.get(f.key) || 0}`) continue; // unlinked since: gone anyway
    const upto = Math.max(f.syncedUpto, allSyncedUpto);
    const drop = f.changes.filter((c) => c.seq >= upto);
    const p = live.get(f.key);
    const rel = p ? path.relative(dir, p) : `${[...f.paths].join('|') || f.key} (gone)`;
    const bytes = drop.reduce((s, c) => s + (c.type === 'W' ? Number(c.aux) : 0), 0);
    stats.files[rel] = { undone: drop.length, bytesDropped: bytes, synced: f.syncs };
    if (!drop.length) continue;
    if (!p) continue; // removed by something the shim does not see: nothing left to undo
    const fd = fs.openSync(p, 'r+');
    try {
      for (let i = drop.length - 1; i >= 0; i--) {
        const c = drop[i];
        if (c.body.length) fs.writeSync(fd, c.body, 0, c.body.length, c.off);
        fs.ftruncateSync(fd, c.oldSize);
      }
    } finally {
      fs.closeSync(fd);
    }
    stats.undone += drop.length;
    stats.bytesDropped += bytes;
  }
  return stats;
}

module.exports = { readJournal, undo };
