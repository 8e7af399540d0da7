//! Persistence. `Store` is the narrow domain trait the engine talks to; a Postgres store
//! can implement it directly. The embedded stores share one key layout (`docs/storage.md`)
//! through `KvStore`, over a `Kv` backend: sled on disk, a `BTreeMap` in memory. The same
//! conformance tests run over both.
//!
//! Every `commit` is atomic (all of its writes or none); `sync` makes every committed write
//! durable. The writer (`writer.rs`) calls `sync` once per group of commits.

mod chunk;
pub mod index;
mod kv;
mod mem;
mod migrate;
mod sled_kv;

pub use chunk::{Chunked, DEFAULT_CHUNK};
pub use kv::{Kv, KvStore};
pub use mem::MemKv;
pub use sled_kv::{SledKv, MARKER};

use crate::error::Result;
use crate::model::{EventRecord, QueueEntry, RunRecord, RunState, StepRecord, TokenRecord};

/// One write of a commit.
#[derive(Debug)]
pub enum Write {
    PutRun(RunRecord),
    PutState {
        id: String,
        state: RunState,
    },
    PutStep {
        run: String,
        key: String,
        step: StepRecord,
    },
    Enqueue(QueueEntry),
    Dequeue {
        ready_at: u64,
        seq: u64,
    },
    /// An event, indexed by id (dedup) and by (name, ingest time, seq).
    PutEvent(EventRecord),
    /// Marks a run as waiting on an event, a token or a child (rebuilt into memory on open).
    PutWaiting {
        run: String,
    },
    DelWaiting {
        run: String,
    },
    PutToken {
        id: String,
        token: TokenRecord,
    },
    DelStep {
        run: String,
        key: String,
    },
    /// The flow-control facts of a run that has not ended (restored on open).
    PutFlow {
        run: String,
        flow: crate::flow::Flow,
    },
    DelFlow {
        run: String,
    },
    /// An idempotency key of a task, naming its run until `expires_at`.
    PutIdempotency {
        task: String,
        key: String,
        run: String,
        expires_at: u64,
    },
    PutSchedule(crate::schedule::ScheduleRecord),
    DelSchedule {
        id: String,
    },
    /// The runs of one claim, while any of them runs: after a crash, those still live were
    /// running when the process died (see `Engine::open`, poison runs).
    PutClaims {
        batch: u64,
        runs: Vec<String>,
    },
    DelClaims {
        batch: u64,
    },
    /// How many times in a row a run was running when the process died.
    PutCrashes {
        run: String,
        crashes: u32,
    },
    DelCrashes {
        run: String,
    },
    /// A small write that proves the store takes writes again (after a full disk).
    Probe(u64),
    /// An ended run is removed at `at` (retention).
    PutPurge {
        at: u64,
        run: String,
    },
    /// Removes an ended run: its records, steps and retention entry (`purge_at`).
    DelRun {
        run: String,
        steps: Vec<String>,
        purge_at: u64,
    },
    /// Removes an event with its indexes.
    DelEvent(EventRecord),
    /// Removes an idempotency key's expiry entry, and the key if `key_too` (it expired).
    DelIdempotency {
        task: String,
        key: String,
        expires_at: u64,
        key_too: bool,
    },
    /// Removes a retention entry alone (its run was reopened, or is gone).
    DelPurgeEntry {
        at: u64,
        run: String,
    },
}

/// What retention found due (see `Store::due_for_purge`).
#[derive(Debug, Default)]
pub struct Due {
    /// `(purge_at, run)` of ended runs due for removal.
    pub runs: Vec<(u64, String)>,
    /// Idempotency keys that expired: `(expires_at, task, key)`.
    pub keys: Vec<(u64, String, String)>,
}

pub trait Store: Send + Sync + 'static {
    /// Applies the writes atomically (all or none). Not necessarily durable until `sync`.
    fn commit(&self, writes: &[Write]) -> Result<()>;
    /// Makes every committed write durable (flush + fdatasync on disk).
    fn sync(&self) -> Result<()>;
    /// The run's trigger record and its current state (`None` state: never changed since
    /// the trigger).
    fn run(&self, id: &str) -> Result<Option<(RunRecord, Option<RunState>)>>;
    /// Only the run's trigger record (for a run known never to have changed state).
    fn run_record(&self, id: &str) -> Result<Option<RunRecord>> {
        Ok(self.run(id)?.map(|(rec, _)| rec))
    }
    /// The run's steps in key order.
    fn steps(&self, run: &str) -> Result<Vec<(String, StepRecord)>>;
    /// Every queue entry: runs that have not ended (recovery rebuilds the scheduler from it).
    fn queue(&self) -> Result<Vec<QueueEntry>> {
        self.queue_after(None, usize::MAX)
    }
    /// Up to `limit` queue entries in (ready_at, seq) order, strictly after `after`: how the
    /// scheduler pages in timers it keeps only on disk.
    fn queue_after(&self, after: Option<(u64, u64)>, limit: usize) -> Result<Vec<QueueEntry>>;
    /// The event with this id, if stored.
    fn event(&self, id: &str) -> Result<Option<EventRecord>>;
    /// Visits events named `name` with a sequence number strictly after `after`, oldest
    /// first, until `visit` returns false.
    fn events_after(
        &self,
        name: &str,
        after: u64,
        visit: &mut dyn FnMut(EventRecord) -> bool,
    ) -> Result<()>;
    /// Like `events_after`, only the events whose scalar at `path` has the canonical JSON
    /// text `value`, through the value index (`index::indexable` says when it answers).
    /// Events too big to be indexed whole are not visited: see `events_partly_indexed`.
    fn events_with_value(
        &self,
        name: &str,
        path: &str,
        value: &str,
        after: u64,
        visit: &mut dyn FnMut(EventRecord) -> bool,
    ) -> Result<()>;
    /// The events named `name` after `after` whose values are not all in the value index.
    fn events_partly_indexed(
        &self,
        name: &str,
        after: u64,
        visit: &mut dyn FnMut(EventRecord) -> bool,
    ) -> Result<()>;
    /// Every sequence number below this may be in use (queue entries, events): a reopened
    /// engine continues after it.
    fn seq_floor(&self) -> Result<u64>;
    /// The id of the newest run (run ids sort by creation).
    fn newest_run_id(&self) -> Result<Option<String>>;
    /// Every claim still recorded (`Write::PutClaims`).
    fn claims(&self) -> Result<Vec<(u64, Vec<String>)>>;
    /// Every run's crash count (`Write::PutCrashes`).
    fn crashes(&self) -> Result<Vec<(String, u32)>>;
    /// Up to `limit` ended runs whose retention ended by `now`, and up to `limit` expired
    /// idempotency keys, oldest first.
    fn due_for_purge(&self, now: u64, limit: usize) -> Result<Due>;
    /// Events in sequence order, from the oldest, until `visit` returns false.
    fn oldest_events(&self, visit: &mut dyn FnMut(EventRecord) -> bool) -> Result<()>;
    /// The oldest run that has not ended (the smallest id with a queue entry or a wait).
    fn oldest_live_run(&self) -> Result<Option<String>>;
    /// Runs marked waiting on an event, a token or a child.
    fn waiting_runs(&self) -> Result<Vec<String>>;
    fn token(&self, id: &str) -> Result<Option<TokenRecord>>;
    /// Every schedule.
    fn schedules(&self) -> Result<Vec<crate::schedule::ScheduleRecord>>;
    /// The flow-control facts of every run that has not ended.
    fn flows(&self) -> Result<Vec<(String, crate::flow::Flow)>>;
    /// The run an idempotency key names, with its expiry.
    fn idempotency(&self, task: &str, key: &str) -> Result<Option<(String, u64)>>;
    /// Visits runs newest first, starting strictly before `before` (a run id) when given,
    /// until `visit` returns false.
    fn scan_runs(
        &self,
        before: Option<&str>,
        visit: &mut dyn FnMut(RunRecord, Option<RunState>) -> bool,
    ) -> Result<()>;
}

#[cfg(test)]
mod conformance;
