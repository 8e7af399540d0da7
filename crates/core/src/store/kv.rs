//! The key layout of the embedded stores, over any ordered key-value backend.
//!
//! | key                              | value                      |
//! |----------------------------------|----------------------------|
//! | `m/schema`                       | schema version (u32 BE)    |
//! | `r/{run id}`                     | `RunRecord` JSON           |
//! | `x/{run id}`                     | `RunState` JSON            |
//! | `s/{run id}/{step key}`          | `StepRecord` JSON          |
//! | `q/{ready_at u64 BE}{seq u64 BE}`| `{run id}\0{task id}`      |
//! | `m/seq`                          | sequence numbers handed out up to here (u64 BE) |
//! | `e/{event id}`                   | `EventRecord` JSON         |
//! | `n/{name}\0{seq u64 BE}`         | event id: events by name, in ingestion order |
//! | `v/{name}\0{path}\0{value}\0{seq u64 BE}` | event id: events by (name, a scalar's path and value) |
//! | `u/{name}\0{seq u64 BE}`         | event id: events too big to index every value (`v/` is partial) |
//! | `g/{seq u64 BE}`                 | event id: every event in ingestion order (retention) |
//! | `w/{run id}`                     | empty: the run waits on an event, token or child |
//! | `k/{token id}`                   | `TokenRecord` JSON         |
//! | `f/{run id}`                     | `Flow` JSON (runs not ended) |
//! | `c/{schedule id}`                | `ScheduleRecord` JSON      |
//! | `i/{task}\0{key}`                | `{run id}\0{expires_at u64 BE}` |
//! | `p/b/{batch u64 BE}`             | JSON list of the run ids of a claim still running |
//! | `p/c/{run id}`                   | crashes in a row while the run ran (u32 BE) |
//! | `z/{purge_at u64 BE}{run id}`    | empty: an ended run, removed at `purge_at` (retention) |
//! | `j/{expires_at u64 BE}{task}\0{key}` | empty: when an idempotency key expires |
//!
//! Run ids are ULID-based and sort by creation time, so a reverse scan of `r/` lists runs
//! newest first. Everything lives in one keyspace because a sled batch is atomic only
//! within one tree.

use super::{Store, Write};
use crate::error::{Error, Result};
use crate::model::{EventRecord, QueueEntry, RunRecord, RunState, StepRecord, TokenRecord};

/// 1: durably 0.1. 2: events ordered by a persistent sequence (`n/` by seq, `v/`, `u/`,
/// `g/`, `m/seq`), never by wall time.
pub const SCHEMA_VERSION: u32 = 2;

/// Sequence numbers are reserved on disk this many at a time (`m/seq`): a commit writes the
/// key only when it uses a number beyond the reservation, and a reopened store continues
/// after it, so a number is never handed out twice.
pub(crate) const SEQ_BLOCK: u64 = 1 << 20;

/// An ordered byte key-value map with atomic batches.
pub trait Kv: Send + Sync + 'static {
    fn apply(&self, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()>;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Visits keys with `prefix` in order (or reverse), from `start` inclusive (forward)
    /// or strictly below `start` (reverse), until `visit` returns false.
    fn scan(
        &self,
        prefix: &[u8],
        reverse: bool,
        start: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()>;
    fn sync(&self) -> Result<()>;
    /// Where the data lives, for error messages.
    fn location(&self) -> String;
}

pub struct KvStore<K: Kv> {
    kv: K,
    /// `m/seq`: every sequence number below it may be in use.
    reserved: std::sync::atomic::AtomicU64,
}

fn key(prefix: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + id.len());
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

fn queue_key(ready_at: u64, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.extend_from_slice(b"q/");
    k.extend_from_slice(&ready_at.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn name_key(prefix: &str, name: &str, seq: u64) -> Vec<u8> {
    let mut k = key(prefix, name);
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn value_prefix(name: &str, path: &str, value: &str) -> Vec<u8> {
    let mut k = key("v/", name);
    k.push(0);
    k.extend_from_slice(path.as_bytes());
    k.push(0);
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k
}

/// Every index key of an event (`n/`, `g/`, `v/`, `u/`), for writing or removing them.
pub(crate) fn event_index_keys(e: &EventRecord) -> Vec<Vec<u8>> {
    let mut keys = vec![name_key("n/", &e.name, e.seq), {
        let mut k = b"g/".to_vec();
        k.extend_from_slice(&e.seq.to_be_bytes());
        k
    }];
    let data: serde_json::Value = serde_json::from_str(e.data.get()).unwrap_or_default();
    let (values, complete) = super::index::scalar_paths(&data);
    for (path, value) in values {
        let mut k = value_prefix(&e.name, &path, &value);
        k.extend_from_slice(&e.seq.to_be_bytes());
        keys.push(k);
    }
    if !complete {
        keys.push(name_key("u/", &e.name, e.seq));
    }
    keys
}

fn purge_key(at: u64, run: &str) -> Vec<u8> {
    let mut k = b"z/".to_vec();
    k.extend_from_slice(&at.to_be_bytes());
    k.extend_from_slice(run.as_bytes());
    k
}

fn expiry_key(at: u64, task: &str, key: &str) -> Vec<u8> {
    let mut k = b"j/".to_vec();
    k.extend_from_slice(&at.to_be_bytes());
    k.extend_from_slice(task.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn claims_key(batch: u64) -> Vec<u8> {
    let mut k = b"p/b/".to_vec();
    k.extend_from_slice(&batch.to_be_bytes());
    k
}

fn idem_key(task: &str, k: &str) -> Vec<u8> {
    let mut out = key("i/", task);
    out.push(0);
    out.extend_from_slice(k.as_bytes());
    out
}

fn step_key(run: &str, step: &str) -> Vec<u8> {
    let mut k = key("s/", run);
    k.push(b'/');
    k.extend_from_slice(step.as_bytes());
    k
}

fn enc<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Internal(format!("encode: {e}")))
}

fn dec<'a, T: serde::Deserialize<'a>>(what: &str, b: &'a [u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::Store(format!("corrupt {what} record: {e}")))
}

impl<K: Kv> KvStore<K> {
    /// The record at `k`, decoded, if any.
    fn get_json<T: serde::de::DeserializeOwned>(&self, what: &str, k: &[u8]) -> Result<Option<T>> {
        match self.kv.get(k)? {
            Some(v) => Ok(Some(dec(what, &v)?)),
            None => Ok(None),
        }
    }

    /// Every record under `prefix`, decoded, with its key; stops at the first corrupt one.
    fn scan_json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, T)>> {
        let mut out = Vec::new();
        let mut err = None;
        self.kv
            .scan(prefix, false, None, &mut |k, v| match dec(what, v) {
                Ok(t) => {
                    out.push((k.to_vec(), t));
                    true
                }
                Err(e) => {
                    err = Some(e);
                    false
                }
            })?;
        err.map_or(Ok(out), Err)
    }

    /// Wraps a backend, checking (and on a new store, writing) the schema version; a store
    /// of an older schema is migrated first (`migrate.rs`).
    pub fn open(kv: K) -> Result<Self> {
        match kv.get(b"m/schema")? {
            Some(v) => {
                let found = v
                    .as_slice()
                    .try_into()
                    .map(u32::from_be_bytes)
                    .unwrap_or(u32::MAX);
                if found > SCHEMA_VERSION {
                    return Err(Error::SchemaTooNew {
                        path: kv.location(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                if found < SCHEMA_VERSION {
                    super::migrate::migrate(&kv, found)?;
                }
            }
            None => {
                kv.apply(vec![(
                    b"m/schema".to_vec(),
                    Some(SCHEMA_VERSION.to_be_bytes().to_vec()),
                )])?;
                kv.sync()?;
            }
        }
        let reserved = match kv.get(b"m/seq")? {
            Some(v) => v.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0),
            None => 0,
        };
        Ok(KvStore {
            kv,
            reserved: std::sync::atomic::AtomicU64::new(reserved),
        })
    }

    pub fn kv(&self) -> &K {
        &self.kv
    }

    /// Visits the events of an index (`prefix` then a seq, valued by event id) with a seq
    /// strictly after `after`, oldest first, a page of ids at a time (so that `visit` may
    /// stop early without reading the rest, and no scan holds many ids).
    fn visit_index(
        &self,
        prefix: &[u8],
        after: u64,
        visit: &mut dyn FnMut(EventRecord) -> bool,
    ) -> Result<()> {
        let mut from = after.checked_add(1);
        while let Some(first) = from {
            let mut start = prefix.to_vec();
            start.extend_from_slice(&first.to_be_bytes());
            let mut page = Vec::with_capacity(64);
            self.kv.scan(prefix, false, Some(&start), &mut |k, v| {
                let seq = k[prefix.len()..]
                    .try_into()
                    .map(u64::from_be_bytes)
                    .unwrap_or(u64::MAX);
                page.push((seq, String::from_utf8_lossy(v).into_owned()));
                page.len() < 64
            })?;
            from = if page.len() < 64 {
                None
            } else {
                page.last().and_then(|(seq, _)| seq.checked_add(1))
            };
            for (seq, id) in page {
                // An index entry names its event; the record must agree (a name that only
                // shares a prefix, or a stale entry, is not this event).
                let Some(e) = self.event(&id)?.filter(|e| e.seq == seq) else {
                    continue;
                };
                if !visit(e) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

impl<K: Kv> Store for KvStore<K> {
    fn commit(&self, writes: &[Write]) -> Result<()> {
        use std::sync::atomic::Ordering;
        let mut ops = Vec::with_capacity(writes.len() + 1);
        let mut max_seq = 0;
        for w in writes {
            match w {
                Write::Enqueue(q) => max_seq = max_seq.max(q.seq),
                Write::PutEvent(e) => max_seq = max_seq.max(e.seq),
                Write::PutClaims { batch, .. } => max_seq = max_seq.max(*batch),
                _ => {}
            }
        }
        let reserved = self.reserved.load(Ordering::Acquire);
        let reserve = (max_seq >= reserved).then(|| max_seq.saturating_add(SEQ_BLOCK));
        if let Some(r) = reserve {
            ops.push((b"m/seq".to_vec(), Some(r.to_be_bytes().to_vec())));
        }
        for w in writes {
            let op = match w {
                Write::PutRun(r) => (key("r/", &r.id), Some(enc(r)?)),
                Write::PutState { id, state } => (key("x/", id), Some(enc(state)?)),
                Write::PutStep { run, key: k, step } => (step_key(run, k), Some(enc(step)?)),
                Write::Enqueue(q) => {
                    let mut v = Vec::with_capacity(q.id.len() + 1 + q.task.len());
                    v.extend_from_slice(q.id.as_bytes());
                    v.push(0);
                    v.extend_from_slice(q.task.as_bytes());
                    (queue_key(q.ready_at, q.seq), Some(v))
                }
                Write::Dequeue { ready_at, seq } => (queue_key(*ready_at, *seq), None),
                Write::PutEvent(e) => {
                    for k in event_index_keys(e) {
                        ops.push((k, Some(e.id.as_bytes().to_vec())));
                    }
                    (key("e/", &e.id), Some(enc(e)?))
                }
                Write::PutWaiting { run } => (key("w/", run), Some(Vec::new())),
                Write::DelWaiting { run } => (key("w/", run), None),
                Write::PutToken { id, token } => (key("k/", id), Some(enc(token)?)),
                Write::DelStep { run, key: k } => (step_key(run, k), None),
                Write::PutFlow { run, flow } => (key("f/", run), Some(enc(flow)?)),
                Write::DelFlow { run } => (key("f/", run), None),
                Write::PutSchedule(sc) => (key("c/", &sc.id), Some(enc(sc)?)),
                Write::PutClaims { batch, runs } => (claims_key(*batch), Some(enc(runs)?)),
                Write::DelClaims { batch } => (claims_key(*batch), None),
                Write::PutCrashes { run, crashes } => {
                    (key("p/c/", run), Some(crashes.to_be_bytes().to_vec()))
                }
                Write::DelCrashes { run } => (key("p/c/", run), None),
                Write::Probe(at) => (b"m/probe".to_vec(), Some(at.to_be_bytes().to_vec())),
                Write::DelSchedule { id } => (key("c/", id), None),
                Write::PutIdempotency {
                    task,
                    key: k,
                    run,
                    expires_at,
                } => {
                    let mut v = run.as_bytes().to_vec();
                    v.push(0);
                    v.extend_from_slice(&expires_at.to_be_bytes());
                    // Its expiry, for retention (a key replaced later leaves a stale one,
                    // which the purge recognises by the expiry it names).
                    ops.push((expiry_key(*expires_at, task, k), Some(Vec::new())));
                    (idem_key(task, k), Some(v))
                }
                Write::PutPurge { at, run } => (purge_key(*at, run), Some(Vec::new())),
                Write::DelRun {
                    run,
                    steps,
                    purge_at,
                } => {
                    for s in steps {
                        ops.push((step_key(run, s), None));
                    }
                    ops.push((key("x/", run), None));
                    ops.push((key("f/", run), None));
                    ops.push((key("w/", run), None));
                    ops.push((key("p/c/", run), None));
                    ops.push((purge_key(*purge_at, run), None));
                    (key("r/", run), None)
                }
                Write::DelEvent(e) => {
                    for k in event_index_keys(e) {
                        ops.push((k, None));
                    }
                    (key("e/", &e.id), None)
                }
                Write::DelIdempotency {
                    task,
                    key: k,
                    expires_at,
                    key_too,
                } => {
                    if *key_too {
                        ops.push((idem_key(task, k), None));
                    }
                    (expiry_key(*expires_at, task, k), None)
                }
                Write::DelPurgeEntry { at, run } => (purge_key(*at, run), None),
            };
            ops.push(op);
        }
        self.kv.apply(ops)?;
        if let Some(r) = reserve {
            self.reserved.fetch_max(r, Ordering::AcqRel);
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.kv.sync()
    }

    fn seq_floor(&self) -> Result<u64> {
        Ok(self.reserved.load(std::sync::atomic::Ordering::Acquire))
    }

    fn run(&self, id: &str) -> Result<Option<(RunRecord, Option<RunState>)>> {
        let Some(r) = self.kv.get(&key("r/", id))? else {
            return Ok(None);
        };
        let rec: RunRecord = dec("run", &r)?;
        let state = match self.kv.get(&key("x/", id))? {
            Some(s) => Some(dec("run state", &s)?),
            None => None,
        };
        Ok(Some((rec, state)))
    }

    fn run_record(&self, id: &str) -> Result<Option<RunRecord>> {
        self.get_json("run", &key("r/", id))
    }

    fn steps(&self, run: &str) -> Result<Vec<(String, StepRecord)>> {
        let prefix = step_key(run, "");
        let steps = self.scan_json("step", &prefix)?;
        Ok(steps
            .into_iter()
            .map(|(k, st)| (String::from_utf8_lossy(&k[prefix.len()..]).into_owned(), st))
            .collect())
    }

    fn queue_after(&self, after: Option<(u64, u64)>, limit: usize) -> Result<Vec<QueueEntry>> {
        let mut out = Vec::new();
        let start = after.map(|(at, seq)| queue_key(at, seq));
        self.kv.scan(b"q/", false, start.as_deref(), &mut |k, v| {
            if out.len() >= limit {
                return false;
            }
            if k.len() == 18 {
                let ready_at = u64::from_be_bytes(k[2..10].try_into().unwrap_or_default());
                let seq = u64::from_be_bytes(k[10..18].try_into().unwrap_or_default());
                if after == Some((ready_at, seq)) {
                    return true; // `start` is inclusive
                }
                let mut parts = v.splitn(2, |b| *b == 0);
                let id = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                let task = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                out.push(QueueEntry {
                    ready_at,
                    seq,
                    id,
                    task,
                });
            }
            true
        })?;
        Ok(out)
    }

    fn event(&self, id: &str) -> Result<Option<EventRecord>> {
        self.get_json("event", &key("e/", id))
    }

    fn events_after(
        &self,
        name: &str,
        after: u64,
        visit: &mut dyn FnMut(EventRecord) -> bool,
    ) -> Result<()> {
        let mut prefix = key("n/", name);
        prefix.push(0);
        self.visit_index(&prefix, after, visit)
    }

    fn events_with_value(
        &self,
        name: &str,
        path: &str,
        value: &str,
        after: u64,
        visit: &mut dyn FnMut(EventRecord) -> bool,
    ) -> Result<()> {
        self.visit_index(&value_prefix(name, path, value), after, visit)
    }

    fn events_partly_indexed(
        &self,
        name: &str,
        after: u64,
        visit: &mut dyn FnMut(EventRecord) -> bool,
    ) -> Result<()> {
        let mut prefix = key("u/", name);
        prefix.push(0);
        self.visit_index(&prefix, after, visit)
    }

    fn waiting_runs(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.kv.scan(b"w/", false, None, &mut |k, _| {
            out.push(String::from_utf8_lossy(&k[2..]).into_owned());
            true
        })?;
        Ok(out)
    }

    fn schedules(&self) -> Result<Vec<crate::schedule::ScheduleRecord>> {
        Ok(self
            .scan_json("schedule", b"c/")?
            .into_iter()
            .map(|(_, sc)| sc)
            .collect())
    }

    fn flows(&self) -> Result<Vec<(String, crate::flow::Flow)>> {
        let flows = self.scan_json("flow", b"f/")?;
        Ok(flows
            .into_iter()
            .map(|(k, f)| (String::from_utf8_lossy(&k[2..]).into_owned(), f))
            .collect())
    }

    fn idempotency(&self, task: &str, k: &str) -> Result<Option<(String, u64)>> {
        let Some(v) = self.kv.get(&idem_key(task, k))? else {
            return Ok(None);
        };
        if v.len() < 9 {
            return Ok(None);
        }
        let (run, rest) = v.split_at(v.len() - 9);
        let expires = u64::from_be_bytes(rest[1..9].try_into().unwrap_or_default());
        Ok(Some((String::from_utf8_lossy(run).into_owned(), expires)))
    }

    fn claims(&self) -> Result<Vec<(u64, Vec<String>)>> {
        Ok(self
            .scan_json::<Vec<String>>("claim", b"p/b/")?
            .into_iter()
            .map(|(k, runs)| {
                let batch = k[4..].try_into().map(u64::from_be_bytes).unwrap_or(0);
                (batch, runs)
            })
            .collect())
    }

    fn crashes(&self) -> Result<Vec<(String, u32)>> {
        let mut out = Vec::new();
        self.kv.scan(b"p/c/", false, None, &mut |k, v| {
            let n = v.try_into().map(u32::from_be_bytes).unwrap_or(0);
            out.push((String::from_utf8_lossy(&k[4..]).into_owned(), n));
            true
        })?;
        Ok(out)
    }

    fn due_for_purge(&self, now: u64, limit: usize) -> Result<super::Due> {
        let mut due = super::Due::default();
        self.kv.scan(b"z/", false, None, &mut |k, _| {
            if k.len() < 10 {
                return true;
            }
            let at = u64::from_be_bytes(k[2..10].try_into().unwrap_or_default());
            if at > now || due.runs.len() >= limit {
                return false;
            }
            due.runs
                .push((at, String::from_utf8_lossy(&k[10..]).into_owned()));
            true
        })?;
        self.kv.scan(b"j/", false, None, &mut |k, _| {
            if k.len() < 10 {
                return true;
            }
            let at = u64::from_be_bytes(k[2..10].try_into().unwrap_or_default());
            if at > now || due.keys.len() >= limit {
                return false;
            }
            let mut parts = k[10..].splitn(2, |b| *b == 0);
            let task = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let key = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            due.keys.push((at, task, key));
            true
        })?;
        Ok(due)
    }

    fn oldest_events(&self, visit: &mut dyn FnMut(EventRecord) -> bool) -> Result<()> {
        self.visit_index(b"g/", 0, visit)
    }

    fn oldest_live_run(&self) -> Result<Option<String>> {
        let mut oldest: Option<String> = None;
        self.kv.scan(b"q/", false, None, &mut |_, v| {
            let id = String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or_default())
                .into_owned();
            if oldest.as_ref().is_none_or(|o| id < *o) {
                oldest = Some(id);
            }
            true
        })?;
        self.kv.scan(b"w/", false, None, &mut |k, _| {
            let id = String::from_utf8_lossy(&k[2..]).into_owned();
            if oldest.as_ref().is_none_or(|o| id < *o) {
                oldest = Some(id);
            }
            true
        })?;
        Ok(oldest)
    }

    fn newest_run_id(&self) -> Result<Option<String>> {
        let mut out = None;
        self.kv.scan(b"r/", true, None, &mut |k, _| {
            out = Some(String::from_utf8_lossy(&k[2..]).into_owned());
            false
        })?;
        Ok(out)
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        self.get_json("token", &key("k/", id))
    }

    fn scan_runs(
        &self,
        before: Option<&str>,
        visit: &mut dyn FnMut(RunRecord, Option<RunState>) -> bool,
    ) -> Result<()> {
        let start = before.map(|b| key("r/", b));
        let mut err = None;
        self.kv.scan(b"r/", true, start.as_deref(), &mut |k, v| {
            let rec: RunRecord = match dec("run", v) {
                Ok(r) => r,
                Err(e) => {
                    err = Some(e);
                    return false;
                }
            };
            let mut sk = k.to_vec();
            sk[0] = b'x';
            let state = match self.kv.get(&sk) {
                Ok(Some(s)) => match dec("run state", &s) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        err = Some(e);
                        return false;
                    }
                },
                Ok(None) => None,
                Err(e) => {
                    err = Some(e);
                    return false;
                }
            };
            visit(rec, state)
        })?;
        err.map_or(Ok(()), Err)
    }
}
