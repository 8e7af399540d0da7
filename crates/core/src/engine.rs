//! The engine: triggers, the scheduler and the driver protocol.
//!
//! The engine never calls user code. The JS executor *claims* batches of due runs
//! (`claim`, which waits until work is ready), runs them with memoized steps and *reports*
//! batches of ops (`report`). Rust owns all state, policy and time:
//!
//! - a trigger becomes runnable only after its write is durable;
//! - the queue index (`q/`) holds every run that has not ended; recovery rebuilds the
//!   in-memory timers from it, so a run that was `running` when the process died is simply
//!   queued again and replayed with its completed steps memoized;
//! - `running` is kept in memory, not written: claiming costs no write, and a crash turns it
//!   back into `queued` exactly as recovery requires (see `docs/architecture.md`);
//! - retries are scheduled here, with the task's policy and seeded jitter.

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::model::{Json, QueueEntry, RunRecord, RunState, RunStatus, StepRecord, StepStatus};
use crate::retry::{seed, RetryPolicy};
use crate::state::{transition, Input};
use crate::store::{Store, Write};
use crate::writer::{Done, Durability, Writer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, Notify};

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Runs executing at once, engine-wide.
    pub concurrency: usize,
    /// Largest payload / output / error, in bytes of JSON.
    pub max_payload_bytes: usize,
    pub durability: Durability,
    /// Extra pause per sync, to measure as if on a slower disk (benchmarks only).
    pub sim_sync_delay_ms: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            concurrency: 100,
            max_payload_bytes: 4 * 1024 * 1024,
            durability: Durability::Sync,
            sim_sync_delay_ms: 0,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskPolicy {
    #[serde(default)]
    pub retry: RetryPolicy,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerItem {
    pub task: String,
    pub payload: Json,
    #[serde(default)]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub run_at: Option<u64>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// One op of a report from the executor. Ops of one run arrive in the order they happened;
/// `complete`, `fail`, `retryStep` and `release` end the invocation.
#[derive(Debug)]
pub enum Op {
    /// A step succeeded; its output is memoized.
    Step {
        run: String,
        key: String,
        output: Json,
        attempt: u32,
    },
    /// A step failed for good (non-retriable, or its last attempt); replays throw `error`.
    StepFailed {
        run: String,
        key: String,
        error: Json,
        attempt: u32,
    },
    /// A step failed and has attempts left: the run is delayed until its next attempt.
    RetryStep {
        run: String,
        key: String,
        error: Json,
        attempt: u32,
        retry_at: Option<u64>,
    },
    /// The run function returned.
    Complete { run: String, output: Json },
    /// The run function threw (outside a step, or a step's final error was not caught).
    Fail {
        run: String,
        error: Json,
        non_retriable: bool,
        retry_at: Option<u64>,
    },
    /// The executor dropped the invocation without an outcome (shutdown): queue it again.
    Release { run: String },
}

/// The wire form of an op (`{"op":"step","run":…}`). serde's internally tagged enums
/// buffer their content, which `RawValue` cannot come from, hence this flat struct.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireOp {
    op: String,
    run: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    output: Option<Json>,
    #[serde(default)]
    error: Option<Json>,
    #[serde(default)]
    attempt: Option<u32>,
    #[serde(default)]
    retry_at: Option<u64>,
    #[serde(default)]
    non_retriable: bool,
}

fn json_null() -> Json {
    RawValue::from_string("null".to_string()).unwrap_or_else(|_| unreachable!("null is JSON"))
}

impl Op {
    /// Parses a JSON array of ops.
    pub fn parse_batch(text: &str) -> Result<Vec<Op>> {
        let wire: Vec<WireOp> = serde_json::from_str(text)
            .map_err(|e| Error::Internal(format!("malformed report from the JS layer: {e}")))?;
        wire.into_iter().map(Op::from_wire).collect()
    }

    fn from_wire(w: WireOp) -> Result<Op> {
        let missing = |f: &str| Error::Internal(format!("report op `{}` lacks `{f}`", w.op));
        let error = || w.error.clone().unwrap_or_else(json_null);
        Ok(match w.op.as_str() {
            "step" => Op::Step {
                key: w.key.clone().ok_or_else(|| missing("key"))?,
                output: w.output.clone().unwrap_or_else(json_null),
                attempt: w.attempt.unwrap_or(1),
                run: w.run,
            },
            "stepFailed" => Op::StepFailed {
                key: w.key.clone().ok_or_else(|| missing("key"))?,
                error: error(),
                attempt: w.attempt.unwrap_or(1),
                run: w.run,
            },
            "retryStep" => Op::RetryStep {
                key: w.key.clone().ok_or_else(|| missing("key"))?,
                error: error(),
                attempt: w.attempt.unwrap_or(1),
                retry_at: w.retry_at,
                run: w.run,
            },
            "complete" => Op::Complete {
                output: w.output.unwrap_or_else(json_null),
                run: w.run,
            },
            "fail" => Op::Fail {
                error: error(),
                non_retriable: w.non_retriable,
                retry_at: w.retry_at,
                run: w.run,
            },
            "release" => Op::Release { run: w.run },
            other => return Err(Error::Internal(format!("unknown report op {other:?}"))),
        })
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedStep {
    pub key: String,
    pub status: StepStatus,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Json>,
}

/// A run handed to the executor.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Claimed {
    pub id: String,
    pub task: String,
    pub payload: Json,
    pub attempt: u32,
    pub max_attempts: u32,
    pub created_at: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub steps: Vec<ClaimedStep>,
}

/// How a run ended, for `result()`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub status: RunStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Json>,
}

impl Clone for Outcome {
    fn clone(&self) -> Self {
        Outcome {
            status: self.status,
            output: self.output.clone(),
            error: self.error.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    pub id: String,
    pub status: StepStatus,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Json>,
    pub ended_at: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub id: String,
    pub task_id: String,
    pub status: RunStatus,
    pub payload: Json,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Json>,
    pub attempts: u32,
    pub tags: Vec<String>,
    pub created_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListFilter {
    pub task_id: Option<String>,
    pub status: Option<RunStatus>,
    pub tag: Option<String>,
    pub since: Option<u64>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RunPage {
    pub runs: Vec<RunView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Counts for `stats()` and for the testing helper's idle detection.
#[derive(Debug, Clone, Copy, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub ready: usize,
    pub delayed: usize,
    pub running: usize,
    pub waiting_for_task: usize,
    pub next_wake_at: Option<u64>,
}

struct RunningRun {
    task: String,
    entry: (u64, u64),
    attempt: u32,
    started_at: u64,
    max_attempts: u32,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Timer(Reverse<(u64, u64)>, String, String);

impl Timer {
    fn from_entry(e: QueueEntry) -> Self {
        Timer(Reverse((e.ready_at, e.seq)), e.id, e.task)
    }
    fn entry(self) -> QueueEntry {
        let Reverse((ready_at, seq)) = self.0;
        QueueEntry {
            ready_at,
            seq,
            id: self.1,
            task: self.2,
        }
    }
}

#[derive(Default)]
struct Sched {
    tasks: HashMap<String, TaskPolicy>,
    /// Runs whose time has not come, soonest first.
    timers: BinaryHeap<Timer>,
    /// Runs ready to start, oldest (ready_at, seq) first.
    ready: BinaryHeap<Timer>,
    /// Due runs of tasks this process has not registered: they wait, never fail.
    parked: HashMap<String, Vec<QueueEntry>>,
    running: HashMap<String, RunningRun>,
    waiters: HashMap<String, Vec<oneshot::Sender<Outcome>>>,
    seq: u64,
    ids: ulid::Generator,
}

impl Sched {
    fn schedule(&mut self, e: QueueEntry, now: u64) {
        if e.ready_at > now {
            self.timers.push(Timer::from_entry(e));
        } else if self.tasks.contains_key(&e.task) {
            self.ready.push(Timer::from_entry(e));
        } else {
            self.parked.entry(e.task.clone()).or_default().push(e);
        }
    }

    fn promote(&mut self, now: u64) {
        while self.timers.peek().is_some_and(|t| (t.0).0 .0 <= now) {
            if let Some(t) = self.timers.pop() {
                self.schedule(t.entry(), now);
            }
        }
    }

    fn next_id(&mut self, now: u64) -> String {
        let at = UNIX_EPOCH + Duration::from_millis(now);
        let id = self
            .ids
            .generate_from_datetime(at)
            .unwrap_or_else(|_| ulid::Ulid::from_datetime(at));
        format!("run_{}", id.to_string().to_ascii_lowercase())
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

struct Inner {
    store: RwLock<Option<Arc<dyn Store>>>,
    writer: Writer,
    clock: Arc<dyn Clock>,
    opts: EngineOptions,
    sched: Mutex<Sched>,
    /// Wakes the claimer: new ready work, a new earlier deadline, a clock jump, shutdown.
    work: Notify,
    closed: AtomicBool,
}

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Opens an engine over `store`, recovering every run that has not ended.
    pub fn open(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        opts: EngineOptions,
    ) -> Result<Engine> {
        if opts.concurrency == 0 {
            return Err(Error::bad_option("concurrency", "must be at least 1"));
        }
        let mut sched = Sched::default();
        let now = clock.now_ms();
        for e in store.queue()? {
            sched.seq = sched.seq.max(e.seq);
            sched.schedule(e, now);
        }
        let writer = Writer::start(
            store.clone(),
            opts.durability,
            Duration::from_millis(opts.sim_sync_delay_ms),
        )?;
        let inner = Arc::new(Inner {
            store: RwLock::new(Some(store)),
            writer,
            clock: clock.clone(),
            opts,
            sched: Mutex::new(sched),
            work: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        clock.add_waker(Arc::new(move || {
            if let Some(i) = weak.upgrade() {
                i.work.notify_one();
            }
        }));
        Ok(Engine { inner })
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub fn options(&self) -> &EngineOptions {
        &self.inner.opts
    }

    fn sched(&self) -> Result<MutexGuard<'_, Sched>> {
        self.inner
            .sched
            .lock()
            .map_err(|_| Error::Internal("scheduler lock poisoned".into()))
    }

    fn store(&self) -> Result<Arc<dyn Store>> {
        let g = self
            .inner
            .store
            .read()
            .map_err(|_| Error::Internal("store lock poisoned".into()))?;
        g.clone().ok_or(Error::Closed)
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Registers (or replaces) a task's policy; its waiting runs become claimable.
    pub fn register_task(&self, id: &str, policy: TaskPolicy) -> Result<()> {
        validate_policy(&policy)?;
        let now = self.inner.clock.now_ms();
        let mut s = self.sched()?;
        s.tasks.insert(id.to_string(), policy);
        if let Some(parked) = s.parked.remove(id) {
            for e in parked {
                s.schedule(e, now);
            }
        }
        drop(s);
        self.inner.work.notify_one();
        Ok(())
    }

    fn check_size(&self, what: &str, json: &Json) -> Result<()> {
        let size = json.get().len();
        if size > self.inner.opts.max_payload_bytes {
            return Err(Error::PayloadTooLarge {
                what: what.to_string(),
                size,
                limit: self.inner.opts.max_payload_bytes,
            });
        }
        Ok(())
    }

    fn validate_item(&self, s: &Sched, item: &TriggerItem) -> Result<()> {
        if !s.tasks.contains_key(&item.task) {
            return Err(Error::UnknownTask {
                task: item.task.clone(),
            });
        }
        self.check_size("the payload", &item.payload)?;
        if item.tags.len() > 20 {
            return Err(Error::bad_option("tags", "at most 20 tags per run"));
        }
        if let Some(t) = item.tags.iter().find(|t| t.is_empty() || t.len() > 128) {
            return Err(Error::bad_option(
                "tags",
                format!("tag {t:?} must be 1 to 128 characters"),
            ));
        }
        Ok(())
    }

    /// Enqueues runs durably. Each group is all-or-nothing: a group with one bad item is
    /// rejected whole and writes nothing; the accepted groups share one durable commit.
    /// Resolves after the commit is on disk; only then can the runs start.
    pub async fn trigger(&self, groups: Vec<Vec<TriggerItem>>) -> Vec<Result<Vec<String>>> {
        if let Err(e) = self.check_open() {
            return groups.iter().map(|_| Err(e.clone())).collect();
        }
        let now = self.inner.clock.now_ms();
        let mut results: Vec<Result<Vec<String>>> = Vec::with_capacity(groups.len());
        let mut writes = Vec::new();
        let mut entries = Vec::new();
        {
            let mut s = match self.sched() {
                Ok(s) => s,
                Err(e) => return groups.iter().map(|_| Err(e.clone())).collect(),
            };
            for group in groups {
                if let Some(err) = group.iter().find_map(|i| self.validate_item(&s, i).err()) {
                    results.push(Err(err));
                    continue;
                }
                let mut ids = Vec::with_capacity(group.len());
                for item in group {
                    let id = s.next_id(now);
                    let seq = s.next_seq();
                    let ready_at = item
                        .run_at
                        .unwrap_or(now)
                        .max(now.saturating_add(item.delay_ms.unwrap_or(0)));
                    let entry = QueueEntry {
                        ready_at,
                        seq,
                        id: id.clone(),
                        task: item.task.clone(),
                    };
                    writes.push(Write::PutRun(RunRecord {
                        id: id.clone(),
                        task: item.task,
                        payload: item.payload,
                        tags: item.tags,
                        created_at: now,
                        ready_at,
                    }));
                    writes.push(Write::Enqueue(entry.clone()));
                    entries.push(entry);
                    ids.push(id);
                }
                results.push(Ok(ids));
            }
        }
        if writes.is_empty() {
            return results;
        }
        let engine = self.clone();
        let committed = self
            .commit(writes, move |res| {
                if res.is_ok() {
                    engine.schedule_all(entries);
                }
            })
            .await;
        if let Err(e) = committed {
            return results.into_iter().map(|r| r.and(Err(e.clone()))).collect();
        }
        results
    }

    fn schedule_all(&self, entries: Vec<QueueEntry>) {
        let now = self.inner.clock.now_ms();
        if let Ok(mut s) = self.sched() {
            for e in entries {
                s.schedule(e, now);
            }
        }
        self.inner.work.notify_one();
    }

    /// Submits writes to the group-commit writer; `after` runs on the writer thread once they
    /// are durable (or failed), before this future resolves.
    async fn commit(
        &self,
        writes: Vec<Write>,
        after: impl FnOnce(&Result<()>) + Send + 'static,
    ) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let done: Done = Box::new(move |res| {
            after(&res);
            let _ = tx.send(res);
        });
        self.inner.writer.submit(writes, done);
        rx.await.unwrap_or(Err(Error::Closed))
    }

    /// Waits until at least one run is ready (or the engine closes: `None`), then hands out
    /// up to `max` runs, within the engine's concurrency limit.
    pub async fn claim(&self, max: usize) -> Result<Option<Vec<Claimed>>> {
        loop {
            if self.inner.closed.load(Ordering::Acquire) {
                return Ok(None);
            }
            let notified = self.inner.work.notified();
            let (claimed, next_wake) = self.claim_now(max)?;
            if !claimed.is_empty() {
                return Ok(Some(claimed));
            }
            match next_wake.and_then(|at| self.inner.clock.real_wait(at)) {
                Some(d) => {
                    let _ = tokio::time::timeout(d, notified).await;
                }
                None => notified.await,
            }
        }
    }

    /// Hands out up to `max` runs that are due now, without waiting (may be empty).
    pub fn try_claim(&self, max: usize) -> Result<Vec<Claimed>> {
        self.check_open()?;
        Ok(self.claim_now(max)?.0)
    }

    /// Promotes due timers, picks ready runs and loads them. Also returns the next timer
    /// deadline when there is room to run more.
    fn claim_now(&self, max: usize) -> Result<(Vec<Claimed>, Option<u64>)> {
        loop {
            let now = self.inner.clock.now_ms();
            let (picked, next_wake) = {
                let mut s = self.sched()?;
                s.promote(now);
                let room = self
                    .inner
                    .opts
                    .concurrency
                    .saturating_sub(s.running.len())
                    .min(max);
                let mut picked = Vec::new();
                while picked.len() < room {
                    let Some(t) = s.ready.pop() else { break };
                    let e = t.entry();
                    let max_attempts = s
                        .tasks
                        .get(&e.task)
                        .map(|p| p.retry.max_attempts)
                        .unwrap_or(1);
                    s.running.insert(
                        e.id.clone(),
                        RunningRun {
                            task: e.task.clone(),
                            entry: (e.ready_at, e.seq),
                            attempt: 1,
                            started_at: now,
                            max_attempts,
                        },
                    );
                    picked.push((e, max_attempts));
                }
                let next_wake = if room == 0 {
                    None
                } else {
                    s.timers.peek().map(|t| (t.0).0 .0)
                };
                (picked, next_wake)
            };
            if picked.is_empty() {
                return Ok((Vec::new(), next_wake));
            }
            let claimed = self.load_claimed(picked)?;
            if !claimed.is_empty() {
                return Ok((claimed, next_wake));
            }
        }
    }

    fn load_claimed(&self, picked: Vec<(QueueEntry, u32)>) -> Result<Vec<Claimed>> {
        let store = self.store()?;
        let mut out = Vec::with_capacity(picked.len());
        let mut stale = Vec::new();
        for (e, max_attempts) in picked {
            let loaded = store.run(&e.id)?;
            let Some((rec, state)) = loaded else {
                stale.push(e);
                continue;
            };
            let attempts = state.as_ref().map(|s| s.attempts).unwrap_or(0);
            if state.as_ref().is_some_and(|s| s.status.is_terminal()) {
                stale.push(e);
                continue;
            }
            let steps = store
                .steps(&e.id)?
                .into_iter()
                .map(|(key, s)| ClaimedStep {
                    key,
                    status: s.status,
                    attempts: s.attempts,
                    output: s.output,
                    error: s.error,
                })
                .collect();
            let attempt = attempts.max(1);
            if let Ok(mut s) = self.sched() {
                if let Some(r) = s.running.get_mut(&e.id) {
                    r.attempt = attempt;
                    if let Some(first) = state.as_ref().and_then(|s| s.started_at) {
                        r.started_at = first;
                    }
                }
            }
            out.push(Claimed {
                id: rec.id,
                task: rec.task,
                payload: rec.payload,
                attempt,
                max_attempts,
                created_at: rec.created_at,
                tags: rec.tags,
                steps,
            });
        }
        if !stale.is_empty() {
            // A queue entry of a run that already ended (or vanished): drop it.
            let mut s = self.sched()?;
            let writes = stale
                .into_iter()
                .map(|e| {
                    s.running.remove(&e.id);
                    Write::Dequeue {
                        ready_at: e.ready_at,
                        seq: e.seq,
                    }
                })
                .collect();
            drop(s);
            self.inner.writer.submit(writes, Box::new(|_| {}));
        }
        Ok(out)
    }

    /// Applies a batch of ops from the executor; resolves once they are durable.
    pub async fn report(&self, ops: Vec<Op>) -> Result<()> {
        self.check_open()?;
        let now = self.inner.clock.now_ms();
        let mut writes = Vec::with_capacity(ops.len() * 2);
        let mut finished: Vec<(String, Outcome)> = Vec::new();
        let mut rescheduled: Vec<QueueEntry> = Vec::new();
        let mut released: Vec<QueueEntry> = Vec::new();
        {
            let mut s = self.sched()?;
            for op in ops {
                match op {
                    Op::Step {
                        run,
                        key,
                        output,
                        attempt,
                    } => {
                        if !s.running.contains_key(&run) {
                            tracing::warn!(
                                run,
                                key,
                                "durably: step reported for a run that is not running; ignored"
                            );
                            continue;
                        }
                        let step = StepRecord {
                            status: StepStatus::Completed,
                            attempts: attempt,
                            output: Some(output),
                            error: None,
                            ended_at: now,
                        };
                        writes.push(Write::PutStep { run, key, step });
                    }
                    Op::StepFailed {
                        run,
                        key,
                        error,
                        attempt,
                    } => {
                        if !s.running.contains_key(&run) {
                            continue;
                        }
                        let step = StepRecord {
                            status: StepStatus::Failed,
                            attempts: attempt,
                            output: None,
                            error: Some(error),
                            ended_at: now,
                        };
                        writes.push(Write::PutStep { run, key, step });
                    }
                    Op::RetryStep {
                        run,
                        key,
                        error,
                        attempt,
                        retry_at,
                    } => {
                        let Some(r) = s.running.remove(&run) else {
                            continue;
                        };
                        transition(RunStatus::Running, Input::Retry)?;
                        let policy = s.tasks.get(&r.task).map(|p| p.retry).unwrap_or_default();
                        let ready_at = retry_at.unwrap_or_else(|| {
                            now + policy.delay_ms(attempt, seed(&run, &key, attempt))
                        });
                        let seq = s.next_seq();
                        let step = StepRecord {
                            status: StepStatus::Retrying,
                            attempts: attempt,
                            output: None,
                            error: Some(error.clone()),
                            ended_at: now,
                        };
                        writes.push(Write::PutStep {
                            run: run.clone(),
                            key,
                            step,
                        });
                        let entry = QueueEntry {
                            ready_at,
                            seq,
                            id: run.clone(),
                            task: r.task.clone(),
                        };
                        self.push_requeue(&mut writes, &r, run, &entry, r.attempt, Some(error));
                        rescheduled.push(entry);
                    }
                    Op::Complete { run, output } => {
                        let Some(r) = s.running.remove(&run) else {
                            continue;
                        };
                        transition(RunStatus::Running, Input::Complete)?;
                        let out = Outcome {
                            status: RunStatus::Completed,
                            output: Some(output),
                            error: None,
                        };
                        self.push_finish(&mut writes, &r, &run, &out, now);
                        finished.push((run, out));
                    }
                    Op::Fail {
                        run,
                        error,
                        non_retriable,
                        retry_at,
                    } => {
                        let Some(r) = s.running.remove(&run) else {
                            continue;
                        };
                        if non_retriable || r.attempt >= r.max_attempts {
                            transition(RunStatus::Running, Input::Fail)?;
                            let out = Outcome {
                                status: RunStatus::Failed,
                                output: None,
                                error: Some(error),
                            };
                            self.push_finish(&mut writes, &r, &run, &out, now);
                            finished.push((run, out));
                        } else {
                            transition(RunStatus::Running, Input::Retry)?;
                            let policy = s.tasks.get(&r.task).map(|p| p.retry).unwrap_or_default();
                            let ready_at = retry_at.unwrap_or_else(|| {
                                now + policy.delay_ms(r.attempt, seed(&run, "", r.attempt))
                            });
                            let seq = s.next_seq();
                            let entry = QueueEntry {
                                ready_at,
                                seq,
                                id: run.clone(),
                                task: r.task.clone(),
                            };
                            self.push_requeue(
                                &mut writes,
                                &r,
                                run,
                                &entry,
                                r.attempt + 1,
                                Some(error),
                            );
                            rescheduled.push(entry);
                        }
                    }
                    Op::Release { run } => {
                        let Some(r) = s.running.remove(&run) else {
                            continue;
                        };
                        released.push(QueueEntry {
                            ready_at: r.entry.0,
                            seq: r.entry.1,
                            id: run,
                            task: r.task,
                        });
                    }
                }
            }
            for e in released {
                s.schedule(e, now);
            }
        }
        self.inner.work.notify_one();
        if writes.is_empty() {
            return Ok(());
        }
        let engine = self.clone();
        self.commit(writes, move |res| {
            if res.is_err() {
                return;
            }
            let now = engine.inner.clock.now_ms();
            if let Ok(mut s) = engine.sched() {
                for e in rescheduled {
                    s.schedule(e, now);
                }
                for (id, out) in finished {
                    if let Some(ws) = s.waiters.remove(&id) {
                        for w in ws {
                            let _ = w.send(out.clone());
                        }
                    }
                }
            }
            engine.inner.work.notify_one();
        })
        .await
    }

    fn push_requeue(
        &self,
        writes: &mut Vec<Write>,
        r: &RunningRun,
        run: String,
        entry: &QueueEntry,
        attempts: u32,
        error: Option<Json>,
    ) {
        writes.push(Write::Dequeue {
            ready_at: r.entry.0,
            seq: r.entry.1,
        });
        writes.push(Write::Enqueue(entry.clone()));
        writes.push(Write::PutState {
            id: run,
            state: RunState {
                status: RunStatus::Delayed,
                attempts,
                ready_at: Some(entry.ready_at),
                started_at: Some(r.started_at),
                ended_at: None,
                output: None,
                error,
            },
        });
    }

    fn push_finish(
        &self,
        writes: &mut Vec<Write>,
        r: &RunningRun,
        run: &str,
        out: &Outcome,
        now: u64,
    ) {
        writes.push(Write::Dequeue {
            ready_at: r.entry.0,
            seq: r.entry.1,
        });
        writes.push(Write::PutState {
            id: run.to_string(),
            state: RunState {
                status: out.status,
                attempts: r.attempt,
                ready_at: None,
                started_at: Some(r.started_at),
                ended_at: Some(now),
                output: out.output.clone(),
                error: out.error.clone(),
            },
        });
    }

    /// Resolves with the run's outcome once it ends; `E_TIMEOUT` after `timeout` (real time).
    pub async fn wait_result(&self, id: &str, timeout: Option<Duration>) -> Result<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.sched()?
            .waiters
            .entry(id.to_string())
            .or_default()
            .push(tx);
        let store = self.store()?;
        match store.run(id)? {
            None => {
                self.drop_waiter(id);
                return Err(Error::RunNotFound { id: id.to_string() });
            }
            Some((_, Some(st))) if st.status.is_terminal() => {
                self.drop_waiter(id);
                return Ok(Outcome {
                    status: st.status,
                    output: st.output,
                    error: st.error,
                });
            }
            _ => {}
        }
        let res = match timeout {
            Some(d) => match tokio::time::timeout(d, rx).await {
                Ok(r) => r.map_err(|_| Error::Closed),
                Err(_) => Err(Error::Timeout {
                    what: format!("run {id} to finish"),
                    ms: d.as_millis() as u64,
                }),
            },
            None => rx.await.map_err(|_| Error::Closed),
        };
        if res.is_err() {
            self.drop_waiter(id);
        }
        res
    }

    fn drop_waiter(&self, id: &str) {
        if let Ok(mut s) = self.sched() {
            if let Some(ws) = s.waiters.get_mut(id) {
                ws.retain(|w| !w.is_closed());
                if ws.is_empty() {
                    s.waiters.remove(id);
                }
            }
        }
    }

    fn view(&self, rec: RunRecord, state: Option<RunState>, now: u64, s: &Sched) -> RunView {
        let state = state.unwrap_or_else(|| RunState::initial(&rec));
        let mut status = state.status;
        let mut started_at = state.started_at;
        let mut attempts = state.attempts;
        if let Some(r) = s.running.get(&rec.id) {
            status = RunStatus::Running;
            started_at = started_at.or(Some(r.started_at));
            attempts = r.attempt;
        } else if status == RunStatus::Delayed && state.ready_at.is_some_and(|at| at <= now) {
            status = RunStatus::Queued;
        }
        RunView {
            id: rec.id,
            task_id: rec.task,
            status,
            payload: rec.payload,
            output: state.output,
            error: state.error,
            attempts,
            tags: rec.tags,
            created_at: rec.created_at,
            started_at,
            ended_at: state.ended_at,
            ready_at: if status.is_terminal() {
                None
            } else {
                state.ready_at
            },
            steps: None,
        }
    }

    /// A run with its steps, or `None`.
    pub fn get_run(&self, id: &str) -> Result<Option<RunView>> {
        let store = self.store()?;
        let Some((rec, state)) = store.run(id)? else {
            return Ok(None);
        };
        let steps = store
            .steps(id)?
            .into_iter()
            .map(|(key, s)| StepView {
                id: key,
                status: s.status,
                attempts: s.attempts,
                output: s.output,
                error: s.error,
                ended_at: s.ended_at,
            })
            .collect();
        let now = self.inner.clock.now_ms();
        let s = self.sched()?;
        let mut v = self.view(rec, state, now, &s);
        v.steps = Some(steps);
        Ok(Some(v))
    }

    /// Runs newest first, filtered; `cursor` continues a previous page.
    pub fn list_runs(&self, f: ListFilter) -> Result<RunPage> {
        let limit = f.limit.unwrap_or(50).clamp(1, 1000);
        let store = self.store()?;
        let now = self.inner.clock.now_ms();
        let s = self.sched()?;
        let mut runs = Vec::new();
        let mut more = false;
        store.scan_runs(f.cursor.as_deref(), &mut |rec, state| {
            if f.since.is_some_and(|since| rec.created_at < since) {
                return false;
            }
            if f.task_id.as_ref().is_some_and(|t| *t != rec.task) {
                return true;
            }
            if f.tag.as_ref().is_some_and(|t| !rec.tags.contains(t)) {
                return true;
            }
            let v = self.view(rec, state, now, &s);
            if f.status.is_some_and(|st| st != v.status) {
                return true;
            }
            if runs.len() == limit {
                more = true;
                return false;
            }
            runs.push(v);
            true
        })?;
        let cursor = if more {
            runs.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(RunPage { runs, cursor })
    }

    pub fn stats(&self) -> Result<Stats> {
        let s = self.sched()?;
        Ok(Stats {
            ready: s.ready.len(),
            delayed: s.timers.len(),
            running: s.running.len(),
            waiting_for_task: s.parked.values().map(Vec::len).sum(),
            next_wake_at: s.timers.peek().map(|t| (t.0).0 .0),
        })
    }

    /// Stops handing out work, settles a pending `claim` with `None`, commits and syncs
    /// everything queued, and closes the store (releasing the data folder's lock).
    pub fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.work.notify_waiters();
        self.inner.work.notify_one();
        self.inner.writer.stop();
        if let Ok(mut g) = self.inner.store.write() {
            if let Some(store) = g.take() {
                if let Err(e) = store.sync() {
                    tracing::error!("durably: final sync failed: {e}");
                }
            }
        }
        if let Ok(mut s) = self.sched() {
            s.waiters.clear();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }
}

fn validate_policy(p: &TaskPolicy) -> Result<()> {
    let r = &p.retry;
    if r.max_attempts == 0 {
        return Err(Error::bad_option("retry.maxAttempts", "must be at least 1"));
    }
    if !(r.factor.is_finite() && r.factor >= 1.0) {
        return Err(Error::bad_option("retry.factor", "must be a number >= 1"));
    }
    if r.min_timeout_ms > r.max_timeout_ms {
        return Err(Error::bad_option(
            "retry.minTimeout",
            "must not exceed retry.maxTimeout",
        ));
    }
    Ok(())
}

/// Milliseconds since the epoch for a `SystemTime` (used by tests and the binding).
pub fn system_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
