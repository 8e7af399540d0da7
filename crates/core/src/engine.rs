//! The engine: triggers, events, the scheduler and the driver protocol.
//!
//! The engine never calls user code. The JS executor *claims* batches of due runs
//! (`claim`, which waits until work is ready), runs them with memoized steps and *reports*
//! batches of ops (`report`). Rust owns all state, policy and time:
//!
//! - a trigger becomes runnable only after its write is durable;
//! - the queue index (`q/`) holds every run that has not ended and has a time to run (now,
//!   a delay, a retry, a sleep's end or a wait's timeout); recovery rebuilds the in-memory
//!   timers from it, so a run that was `running` when the process died is queued again and
//!   replayed with its completed steps memoized;
//! - `running` is kept in memory, not written: claiming costs no write, and a crash turns it
//!   back into `queued` exactly as recovery requires (see `docs/architecture.md`);
//! - a run parked on waits (`waiting`) is held by the wait indexes (`waits.rs`), not by JS;
//! - retries are scheduled here, with the task's policy and seeded jitter.
//!
//! Timers are scheduled in memory as soon as their write is queued: the writer applies
//! writes in order, so anything that happens to the run afterwards is written after it. Only
//! a *trigger* waits for durability before its run may start.

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::expr;
use crate::flow;
use crate::model::{
    EventRecord, Json, ParentRef, QueueEntry, RunRecord, RunState, RunStatus, StepRecord,
    StepStatus, WaitSpec,
};
use crate::retry::{seed, RetryPolicy};
use crate::state::{transition, Input};
use crate::store::{Store, Write};
use crate::waits::{WaitIndex, WaitingRun};
use crate::writer::{Done, Durability, Writer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, Notify};

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Runs executing at once, engine-wide.
    pub concurrency: usize,
    /// Largest payload / output / error / event data, in bytes of JSON.
    pub max_payload_bytes: usize,
    pub durability: Durability,
    /// Extra pause per sync, to measure as if on a slower disk (benchmarks only).
    pub sim_sync_delay_ms: u64,
    /// How many timers of runs waiting on time alone (sleeping, delayed, backing off) the
    /// scheduler keeps in memory; later ones stay in the store's queue index and are paged
    /// in as their time comes, so parked runs cost disk, not heap.
    pub timer_window: usize,
    /// A run that was running each time the process died this many times in a row fails
    /// with `E_RUN_POISONED` instead of being replayed again (a poison run).
    pub crash_limit: u32,
    /// How long an ended run is kept (and events no wait can match, see `retention.rs`);
    /// `None`: forever. A task's own `retention` wins.
    pub retention_ms: Option<u64>,
    /// How often the retention thread looks for what is due.
    pub purge_interval_ms: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            concurrency: 100,
            max_payload_bytes: 4 * 1024 * 1024,
            durability: Durability::Sync,
            sim_sync_delay_ms: 0,
            timer_window: 4096,
            crash_limit: 3,
            retention_ms: Some(7 * 24 * 3_600_000),
            purge_interval_ms: 60_000,
        }
    }
}

/// How long a task's ended runs are kept: a number of ms, or `"forever"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Retention {
    Ms(u64),
    Forever(ForeverTag),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForeverTag {
    Forever,
}

/// An event subscription of a task: `on: 'name'` or `{ event, if }`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OnSpec {
    pub event: String,
    #[serde(default, rename = "if")]
    pub if_expr: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskPolicy {
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default)]
    pub on: Vec<OnSpec>,
    #[serde(default)]
    pub concurrency: Option<flow::Concurrency>,
    #[serde(default)]
    pub throttle: Option<flow::Throttle>,
    #[serde(default)]
    pub rate_limit: Option<flow::RateLimit>,
    #[serde(default)]
    pub debounce: Option<flow::Debounce>,
    #[serde(default)]
    pub singleton: Option<flow::Singleton>,
    #[serde(default)]
    pub timeout: flow::Timeout,
    /// The task has an `onFailure` handler: a run that fails for good starts an
    /// `onFailure` run of the task.
    #[serde(default)]
    pub on_failure: bool,
    #[serde(default)]
    pub schedule: Option<crate::schedule::ScheduleSpec>,
    /// Keys given as expressions (`key: 'event.data.userId'`).
    #[serde(default)]
    pub keys: flow::KeyExprSources,
    /// How long its ended runs are kept (else the engine's `retention_ms`).
    #[serde(default)]
    pub retention: Option<Retention>,
    /// `keys`, compiled when the task is registered.
    #[serde(skip)]
    pub key_exprs: flow::KeyExprs,
}

/// One trigger as JS sends it. The flow-control fields repeat `flow::FlowKeys` (see
/// `take_keys`) instead of `#[serde(flatten)]`-ing it: flattening buffers the whole item,
/// which the `RawValue` payload cannot be read from.
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
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub concurrency_key: Option<String>,
    #[serde(default)]
    pub throttle_key: Option<String>,
    #[serde(default)]
    pub rate_limit_key: Option<String>,
    #[serde(default)]
    pub debounce_key: Option<String>,
    #[serde(default)]
    pub singleton_key: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub idempotency_ttl_ms: Option<u64>,
    /// Cancel the run if it has not started within this long (overrides `timeout.start`).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    #[serde(default)]
    pub cancel_on: Vec<flow::CancelOn>,
}

impl TriggerItem {
    fn take_keys(&mut self) -> flow::FlowKeys {
        flow::FlowKeys {
            priority: self.priority,
            concurrency_key: self.concurrency_key.take(),
            throttle_key: self.throttle_key.take(),
            rate_limit_key: self.rate_limit_key.take(),
            debounce_key: self.debounce_key.take(),
            singleton_key: self.singleton_key.take(),
            idempotency_key: self.idempotency_key.take(),
            idempotency_ttl_ms: self.idempotency_ttl_ms,
            ttl_ms: self.ttl_ms,
            cancel_on: std::mem::take(&mut self.cancel_on),
        }
    }
}

/// A run about to be created (by a trigger, an event, `step.invoke`, a replay, a schedule).
pub(crate) struct NewRun {
    pub task: String,
    pub payload: Json,
    pub tags: Vec<String>,
    pub ready_at: u64,
    pub event: Option<Json>,
    pub parent: Option<ParentRef>,
    /// Where its waits start looking (`RunRecord::created_seq`); `None`: now.
    pub created_seq: Option<u64>,
}

/// An event as sent: `id` is generated when absent.
#[derive(Debug, Deserialize)]
pub struct EventIn {
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub data: Option<Json>,
    #[serde(default)]
    pub ts: Option<u64>,
    /// Per subscribed task: the flow-control keys JS computed from `data`.
    #[serde(default)]
    pub keys: HashMap<String, flow::FlowKeys>,
}

/// A wait as reported by the executor: a `WaitSpec`, or a `step.invoke` whose child run the
/// engine creates.
#[derive(Debug)]
pub enum WaitReq {
    Invoke {
        key: String,
        task: String,
        payload: Json,
        /// The child task's flow keys, computed in JS from the payload.
        keys: flow::FlowKeys,
    },
    Spec(WaitSpec),
}

/// The wire form of a wait (`{"kind":"sleep","key":…}`): flat, because serde's tagged
/// enums buffer their content, which a `RawValue` payload cannot come from.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireWait {
    kind: String,
    key: String,
    #[serde(default)]
    wake_at: Option<u64>,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    path: String,
    #[serde(default)]
    value: String,
    #[serde(default, rename = "if")]
    if_expr: Option<String>,
    #[serde(default)]
    since_run_start: Option<bool>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    child: Option<String>,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    payload: Option<Json>,
    #[serde(default)]
    keys: Option<flow::FlowKeys>,
}

impl WireWait {
    fn into_req(self) -> Result<WaitReq> {
        let missing = |f: &str| Error::Internal(format!("wait `{}` lacks `{f}`", self.kind));
        Ok(match self.kind.as_str() {
            "sleep" => WaitReq::Spec(WaitSpec::Sleep {
                wake_at: self.wake_at.ok_or_else(|| missing("wakeAt"))?,
                key: self.key,
            }),
            "event" => {
                if self.events.is_empty() {
                    return Err(missing("events"));
                }
                WaitReq::Spec(WaitSpec::Event {
                    key: self.key,
                    events: self.events,
                    path: self.path,
                    value: self.value,
                    if_expr: self.if_expr,
                    wake_at: self.wake_at,
                    since_run_start: self.since_run_start.unwrap_or(true),
                    after: None,
                })
            }
            "token" => WaitReq::Spec(WaitSpec::Token {
                token: self.token.clone().ok_or_else(|| missing("token"))?,
                wake_at: self.wake_at,
                key: self.key,
            }),
            "child" => WaitReq::Spec(WaitSpec::Child {
                child: self.child.clone().ok_or_else(|| missing("child"))?,
                key: self.key,
            }),
            "invoke" => WaitReq::Invoke {
                task: self.task.clone().ok_or_else(|| missing("task"))?,
                payload: self.payload.unwrap_or_else(json_null),
                keys: self.keys.unwrap_or_default(),
                key: self.key,
            },
            other => return Err(Error::Internal(format!("unknown wait kind {other:?}"))),
        })
    }
}

struct InvokeReq {
    key: String,
    task: String,
    payload: Json,
    keys: flow::FlowKeys,
}

/// One op of a report from the executor. Ops of one run arrive in the order they happened;
/// `complete`, `fail`, `retryStep`, `wait` and `release` end the invocation.
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
    /// `step.sendEvent`: the events are sent and the step memoized in one commit.
    SendEvent {
        run: String,
        key: String,
        events: Vec<EventIn>,
    },
    /// Every branch of the run is parked on these waits: unload it until one resolves.
    Wait { run: String, waits: Vec<WaitReq> },
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
    #[serde(default)]
    events: Option<Vec<EventIn>>,
    #[serde(default)]
    waits: Option<Vec<WireWait>>,
}

pub(crate) fn json_null() -> Json {
    RawValue::from_string("null".to_string()).unwrap_or_else(|_| unreachable!("null is JSON"))
}

pub(crate) fn to_raw<T: Serialize>(v: &T) -> Result<Json> {
    serde_json::value::to_raw_value(v).map_err(|e| Error::Internal(format!("encode: {e}")))
}

impl Op {
    /// The run the op is about.
    pub fn run(&self) -> &str {
        match self {
            Op::Step { run, .. }
            | Op::StepFailed { run, .. }
            | Op::RetryStep { run, .. }
            | Op::SendEvent { run, .. }
            | Op::Wait { run, .. }
            | Op::Complete { run, .. }
            | Op::Fail { run, .. }
            | Op::Release { run } => run,
        }
    }

    /// Parses a JSON array of ops. An op that cannot be read does not sink the others: if it
    /// names its run, that run fails (non-retriable, `E_INTERNAL`) instead of hanging.
    pub fn parse_batch(text: &str) -> Result<Vec<Op>> {
        let raw: Vec<Box<RawValue>> = serde_json::from_str(text)
            .map_err(|e| Error::Internal(format!("malformed report from the JS layer: {e}")))?;
        Ok(Op::parse_each(raw.iter().map(|r| r.get())))
    }

    /// Parses ops given one text each (how the binding receives them: one op that cannot be
    /// read never sinks the others). An op that cannot be read fails its run (non-retriable,
    /// `E_INTERNAL`) instead of vanishing and leaving the run `running`; its run id is found
    /// even when the rest of the text is not JSON serde reads (a lone surrogate …).
    pub fn parse_each<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<Op> {
        let mut ops = Vec::new();
        for text in texts {
            let parsed = serde_json::from_str::<WireOp>(text)
                .map_err(|e| Error::Internal(format!("malformed report op: {e}")))
                .and_then(Op::from_wire);
            match parsed {
                Ok(op) => ops.push(op),
                Err(e) => {
                    tracing::error!("durably: {e}");
                    if let Some(run) = run_of(text) {
                        ops.push(Op::Fail {
                            run,
                            error: error_json(&e),
                            non_retriable: true,
                            retry_at: None,
                        });
                    }
                }
            }
        }
        ops
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
            "sendEvent" => Op::SendEvent {
                key: w.key.clone().ok_or_else(|| missing("key"))?,
                events: w.events.ok_or_else(|| missing("events"))?,
                run: w.run,
            },
            "wait" => Op::Wait {
                waits: w
                    .waits
                    .ok_or_else(|| missing("waits"))?
                    .into_iter()
                    .map(WireWait::into_req)
                    .collect::<Result<_>>()?,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child: Option<String>,
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
    /// The engine's clock at the claim: waits whose deadline passed have timed out.
    pub now: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<Json>,
    pub steps: Vec<ClaimedStep>,
    /// `"onFailure"`: call the task's `onFailure` with `failure` instead of `run`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Json>,
}

/// What a claim hands the executor: runs to execute, and running runs to abort (cancelled,
/// or past their `timeout.finish`).
#[derive(Debug, Serialize, Default)]
pub struct ClaimBatch {
    pub runs: Vec<Claimed>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub abort: Vec<String>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child: Option<String>,
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
    pub event: Option<Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView>>,
    /// It has not ended and no task with its id is defined in this process: it waits for one.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub waiting_for_task: bool,
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
    /// Runs due now (ready to start).
    pub ready: usize,
    /// Runs with a time in the future (delays, retries, sleeps, wait timeouts).
    pub delayed: usize,
    pub running: usize,
    /// Runs parked on events, tokens or child runs.
    pub waiting: usize,
    pub waiting_for_task: usize,
    pub next_wake_at: Option<u64>,
    /// A schedule tick, deadline or throttle release is due (the scheduler will act on it).
    pub control_due: bool,
    /// Throttle and rate-limit keys with starts in their window (freed with their period).
    pub flow_keys: usize,
}

pub(crate) struct RunningRun {
    pub task: String,
    /// Holds a slot of this concurrency key.
    pub slot: Option<flow::FlowKey>,
    pub entry: (u64, u64),
    pub attempt: u32,
    pub started_at: u64,
    pub max_attempts: u32,
    pub parent: Option<ParentRef>,
    pub event_cursor: Option<u64>,
    /// The claim it was handed out in (`Write::PutClaims`).
    pub batch: u64,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timer(Reverse<(u64, u64)>, String, String);

/// A ready run: higher priority first, then oldest (ready_at, seq).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ready(i32, Timer);

impl Timer {
    pub(crate) fn from_entry(e: QueueEntry) -> Self {
        Timer(Reverse((e.ready_at, e.seq)), e.id, e.task)
    }
    pub(crate) fn entry(self) -> QueueEntry {
        let Reverse((ready_at, seq)) = self.0;
        QueueEntry {
            ready_at,
            seq,
            id: self.1,
            task: self.2,
        }
    }
    pub(crate) fn at(&self) -> u64 {
        (self.0).0 .0
    }
}

#[derive(Default)]
pub(crate) struct Sched {
    pub tasks: HashMap<String, TaskPolicy>,
    /// Event name → subscribed tasks with their compiled `if`.
    pub subs: HashMap<String, Vec<(String, Option<expr::Expr>)>>,
    /// Runs whose time has not come, soonest first.
    pub(crate) timers: BinaryHeap<Timer>,
    /// Runs ready to start, by priority then oldest (ready_at, seq).
    pub(crate) ready: BinaryHeap<Ready>,
    /// Flow-control facts of runs that have not ended, and the state of the keys.
    pub flows: HashMap<String, Arc<flow::Flow>>,
    pub flow: flow::FlowState,
    /// `timeout.start` / `timeout.finish` deadlines: (at, run, finish?).
    pub(crate) deadlines: BinaryHeap<Reverse<(u64, String, bool)>>,
    /// Running runs the executor must abort (cancelled, timed out).
    pub abort: Vec<String>,
    /// `cancelOn` subscriptions of runs that have not ended.
    pub cancels: crate::waits::CancelIndex,
    /// Schedules by id, and their next ticks.
    pub(crate) schedules: HashMap<String, crate::schedule::Live>,
    pub(crate) schedule_timers: BinaryHeap<Reverse<(u64, String)>>,
    /// Schedules due while their task is not registered here: they fire (once) when it is.
    pub(crate) schedules_without_task: HashSet<String>,
    /// Idempotency keys decided but not yet applied.
    pub(crate) pending_idem: HashMap<(String, String), (String, u64)>,
    /// The live queue entry of each run that has one; heap entries that differ are stale.
    pub entries: HashMap<String, (u64, u64)>,
    /// Due runs of tasks this process has not registered: they wait, never fail.
    pub(crate) parked: HashMap<String, Vec<QueueEntry>>,
    pub running: HashMap<String, RunningRun>,
    /// Runs parked on waits, and the indexes that find them.
    pub waiting: HashMap<String, WaitingRun>,
    pub index: WaitIndex,
    /// Events and run outcomes decided but not yet applied to the store: lookups that read
    /// the store consult these too, so nothing slips between decision and commit.
    pub pending_events: HashMap<String, EventRecord>,
    /// The look-backs `report` read before taking the lock (`waits::Engine::prescan`),
    /// by (run, wait key); empty between reports.
    pub(crate) prescans: HashMap<(String, String), crate::waits::Prescan>,
    pub pending_outcomes: HashMap<String, Outcome>,
    pub pending_tokens: HashMap<String, Json>,
    /// Requeued runs to schedule once the current commit is applied.
    pub(crate) deferred: Vec<QueueEntry>,
    /// Runs triggered by this process that have not started yet: no state, no steps to load.
    pub(crate) fresh: HashSet<String>,
    pub(crate) waiters: HashMap<String, Vec<oneshot::Sender<Outcome>>>,
    pub(crate) seq: u64,
    pub(crate) ids: ulid::Generator,
    /// The time of the newest id handed out (ms).
    pub(crate) id_floor: u64,
    /// The timer window. A run waiting on time alone (no flow facts, no indexed wait) whose
    /// queue entry sorts after `spill_after` is kept only in the store's queue index: it has
    /// no `entries`, `timers` or `waiting` item. Every such entry at or before `spill_after`
    /// is in memory; `refill` pages the next ones in when their time comes.
    pub(crate) spill_after: Option<(u64, u64)>,
    /// How many runs are spilled (for `stats`; exact unless a restart intervened).
    pub(crate) spilled: usize,
    /// Timers kept in memory before the latest ones spill (`EngineOptions::timer_window`).
    pub(crate) timer_window: usize,
    /// `timers.len()` at which to spill again.
    pub(crate) timer_cap: usize,
    /// Duplicate queue entries found at open, whose removal may not be applied yet.
    pub(crate) stale_entries: HashSet<(u64, u64)>,
    /// Claims with runs still running: batch → how many.
    pub(crate) claims: HashMap<u64, usize>,
    /// Claims whose runs all left `running`: their records go with the next commit.
    pub(crate) claims_done: Vec<u64>,
    /// Runs with a crash count (they were running when the process died).
    pub(crate) crashes: HashMap<String, u32>,
    /// Runs whose crash count goes with the next commit (they made progress).
    pub(crate) crashes_done: Vec<String>,
    /// Runs that crashed the process `crash_limit` times: failed at the next claim.
    pub(crate) poisoned: Vec<(String, u32)>,
    /// The one suspect running now: a run in flight at the last `crash_limit - 1` crashes in a
    /// row. Suspects run one at a time, so that a crash while one runs is that run's alone: a
    /// run that happened to be in flight when another killed the process never collects the
    /// culprit's last crash.
    pub(crate) suspect_running: Option<String>,
    /// Suspects that were due while another ran: scheduled again when it leaves.
    pub(crate) suspects_held: Vec<QueueEntry>,
    /// Tasks whose due runs waited for their definition (logged once each).
    pub(crate) warned_tasks: HashSet<String>,
    /// Runs woken by a commit not applied yet (their stored state still says `waiting`).
    pub(crate) pending_wakes: HashSet<String>,
    pub(crate) wakes_deferred: Vec<String>,
}

impl Sched {
    pub(crate) fn schedule(&mut self, e: QueueEntry, now: u64) {
        if self.entries.get(&e.id) != Some(&(e.ready_at, e.seq)) {
            return; // superseded by a newer entry of the same run
        }
        if e.ready_at > now {
            if self
                .spill_after
                .is_some_and(|after| (e.ready_at, e.seq) > after && self.spillable(&e.id))
            {
                self.spill(&e.id);
                return;
            }
            self.timers.push(Timer::from_entry(e));
            if self.timers.len() > self.timer_cap.max(2 * self.timer_window) {
                self.shrink_timers();
            }
        } else {
            self.make_ready(e);
        }
    }

    /// Puts a due run in the ready queue (or with the runs waiting for their task).
    pub(crate) fn make_ready(&mut self, e: QueueEntry) {
        if self.tasks.contains_key(&e.task) {
            let priority = self.flows.get(&e.id).map(|f| f.priority).unwrap_or(0);
            self.ready.push(Ready(priority, Timer::from_entry(e)));
        } else {
            self.parked.entry(e.task.clone()).or_default().push(e);
        }
    }

    /// Logs, once per task, that due runs wait for a task this process has not defined. Called
    /// by the claimer (by then the process has registered its tasks; at open it has not yet).
    pub(crate) fn warn_parked(&mut self) {
        if self.parked.len() <= self.warned_tasks.len() {
            return;
        }
        let new: Vec<String> = self
            .parked
            .keys()
            .filter(|t| !self.warned_tasks.contains(*t))
            .cloned()
            .collect();
        for task in new {
            tracing::warn!(
                "durably: runs of task \"{task}\" are due, but no task with that id is defined in this process; they wait (nothing is lost) until it is: import its module where the engine starts (instrumentation.ts)"
            );
            self.warned_tasks.insert(task);
        }
    }

    /// Gives a run a new queue entry at `ready_at` (replacing its old one). It is scheduled
    /// once the commit that writes it is applied (`deferred` → `AfterCommit`): a claim reads
    /// the run's steps from the store and must see every write that led to the requeue.
    pub(crate) fn enqueue(&mut self, id: &str, task: &str, ready_at: u64) -> QueueEntry {
        let seq = self.next_seq();
        let e = QueueEntry {
            ready_at,
            seq,
            id: id.to_string(),
            task: task.to_string(),
        };
        self.entries.insert(e.id.clone(), (ready_at, seq));
        self.deferred.push(e.clone());
        e
    }

    /// Whether the run waits on time alone, so its queue entry in the store says all there is.
    fn spillable(&self, id: &str) -> bool {
        !self.flows.contains_key(id)
            && !self.waiting.get(id).is_some_and(WaitingRun::indexed)
            && !self.pending_outcomes.contains_key(id)
    }

    fn spill(&mut self, id: &str) {
        self.entries.remove(id);
        self.waiting.remove(id);
        self.fresh.remove(id);
        self.spilled += 1;
    }

    /// Keeps the `timer_window` soonest spillable timers (and every other one) in memory and
    /// leaves the later ones in the store.
    fn shrink_timers(&mut self) {
        let soonest_last = std::mem::take(&mut self.timers).into_sorted_vec();
        let mut kept = Vec::with_capacity(self.timer_window * 2);
        let mut in_window = 0;
        let mut last_kept = None;
        let mut spilled_any = false;
        for t in soonest_last.into_iter().rev() {
            let Reverse(key) = t.0;
            if self.entries.get(&t.1) != Some(&key) {
                continue; // stale
            }
            if !self.spillable(&t.1) {
                kept.push(t);
            } else if in_window < self.timer_window {
                in_window += 1;
                last_kept = Some(key);
                kept.push(t);
            } else {
                self.spill(&t.1);
                spilled_any = true;
            }
        }
        if spilled_any {
            self.spill_after = last_kept.or(Some((0, 0)));
        }
        self.timers = BinaryHeap::from(kept);
        self.timer_cap = 2 * self.timers.len();
    }

    /// Pages in spilled timers that are due, a window at a time, while the ready queue is
    /// shorter than the window and than `want` (a mass wake-up drains in windows), or while
    /// the run it would hand out next is younger than a due spilled one (which has priority 0,
    /// no flow facts, and is older: no starving behind new triggers).
    pub(crate) fn refill(&mut self, store: &dyn Store, now: u64, want: usize) -> Result<()> {
        while let Some(after) = self.spill_after {
            if after.0 > now {
                break;
            }
            let behind = self.ready.peek().is_some_and(|Ready(priority, t)| {
                let Reverse(key) = t.0;
                *priority < 0 || (*priority == 0 && key > after)
            });
            if self.ready.len() >= self.timer_window.max(want) && !behind {
                break;
            }
            let page = store.queue_after(Some(after), self.timer_window.max(1))?;
            let full = page.len() >= self.timer_window.max(1);
            self.spill_after = match page.last() {
                Some(e) if full => Some((e.ready_at, e.seq)),
                _ => None,
            };
            if self.spill_after.is_none() {
                self.spilled = 0;
            }
            for e in page {
                // In memory already (or superseded there), running, parked on an indexed wait,
                // or ended with the commit pending: not a spilled timer.
                if self.entries.contains_key(&e.id)
                    || self.running.contains_key(&e.id)
                    || self.waiting.contains_key(&e.id)
                    || self.pending_outcomes.contains_key(&e.id)
                    || self.stale_entries.contains(&(e.ready_at, e.seq))
                {
                    continue;
                }
                self.spilled = self.spilled.saturating_sub(1);
                self.entries.insert(e.id.clone(), (e.ready_at, e.seq));
                self.schedule(e, now);
            }
        }
        Ok(())
    }

    /// How many spilled timers are due by `now` (at most `cap`), without paging them in.
    pub(crate) fn count_due_spilled(
        &self,
        store: &dyn Store,
        now: u64,
        cap: usize,
    ) -> Result<usize> {
        let Some(mut after) = self.spill_after else {
            return Ok(0);
        };
        let mut n = 0;
        while after.0 <= now && n < cap {
            let page = store.queue_after(Some(after), 1024)?;
            let Some(last) = page.last() else { break };
            after = (last.ready_at, last.seq);
            for e in &page {
                if e.ready_at > now {
                    return Ok(n);
                }
                let live_elsewhere = self.entries.contains_key(&e.id)
                    || self.running.contains_key(&e.id)
                    || self.waiting.contains_key(&e.id)
                    || self.pending_outcomes.contains_key(&e.id)
                    || self.stale_entries.contains(&(e.ready_at, e.seq));
                n += usize::from(!live_elsewhere);
            }
            if page.len() < 1024 {
                break;
            }
        }
        Ok(n)
    }

    /// When the timers the scheduler keeps (in memory or spilled) next need a look.
    pub(crate) fn next_timer(&self) -> Option<u64> {
        let spilled = self.spill_after.map(|(at, _)| at);
        match (self.timers.peek().map(Timer::at), spilled) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn promote(&mut self, now: u64) {
        while self.timers.peek().is_some_and(|t| t.at() <= now) {
            if let Some(t) = self.timers.pop() {
                self.schedule(t.entry(), now);
            }
        }
    }

    /// A new id (`run_…`, `evt_…`): a ULID whose time never goes back, even when the wall
    /// clock does, so ids sort in creation order (`runs.list` scans them newest first).
    pub(crate) fn next_id(&mut self, prefix: &str, now: u64) -> String {
        self.id_floor = self.id_floor.max(now);
        let at = UNIX_EPOCH + Duration::from_millis(self.id_floor);
        let id = self
            .ids
            .generate_from_datetime(at)
            .unwrap_or_else(|_| ulid::Ulid::from_datetime(at));
        format!("{prefix}_{}", id.to_string().to_ascii_lowercase())
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq = self.seq.saturating_add(1);
        self.seq
    }

    /// What every decision leaves for its commit besides its own writes: requeued runs to
    /// schedule once applied, and the records of claims and crash counts that are done.
    pub(crate) fn drain_deferred(&mut self, writes: &mut Vec<Write>, after: &mut AfterCommit) {
        after.new_runs.append(&mut self.deferred);
        after.wakes.append(&mut self.wakes_deferred);
        for batch in self.claims_done.drain(..) {
            writes.push(Write::DelClaims { batch });
        }
        for run in self.crashes_done.drain(..) {
            writes.push(Write::DelCrashes { run });
        }
    }
}

pub struct Inner {
    store: RwLock<Option<Arc<dyn Store>>>,
    writer: Writer,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) opts: EngineOptions,
    sched: Mutex<Sched>,
    /// Wakes the claimer: new ready work, a new earlier deadline, a clock jump, shutdown.
    work: Arc<Notify>,
    closed: AtomicBool,
    /// Set when a store write or read failed (fail-stop, see `writer.rs`): memory may be ahead
    /// of the disk, so the engine decides nothing more; every call fails with this error until
    /// the owner reopens the store.
    failed: Arc<Mutex<Option<Error>>>,
    /// Set by `kick`: the pending claim returns (even empty) so the executor can claim again.
    kicked: AtomicBool,
}

/// The longest the claimer sleeps without looking at the wall clock again.
const MAX_NAP: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

/// Work decided under the scheduler lock, applied after its commit is durable.
#[derive(Default)]
pub(crate) struct AfterCommit {
    /// New runs: schedulable only once their trigger is durable.
    pub new_runs: Vec<QueueEntry>,
    pub finished: Vec<(String, Outcome)>,
    pub idem: Vec<(String, String)>,
    pub events: Vec<String>,
    pub tokens: Vec<String>,
    pub wakes: Vec<String>,
}

impl Engine {
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Engine {
        Engine { inner }
    }

    /// Queues writes whose outcome nobody awaits (a failure stops the engine all the same).
    /// Queues writes; `done` runs once they are durable (or failed).
    pub(crate) fn submit_then(&self, writes: Vec<Write>, done: crate::writer::Done) {
        self.inner.writer.submit(writes, done);
    }

    /// The retention entry of a run that ends now (none for a task kept forever).
    pub(crate) fn retain(
        &self,
        s: &Sched,
        task: &str,
        run: &str,
        now: u64,
        writes: &mut Vec<Write>,
    ) {
        if let Some(at) = self.purge_at(s, task, now) {
            writes.push(Write::PutPurge {
                at,
                run: run.to_string(),
            });
        }
    }

    /// Opens an engine over `store`, recovering every run that has not ended.
    pub fn open(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        opts: EngineOptions,
    ) -> Result<Engine> {
        if opts.concurrency == 0 {
            return Err(Error::bad_option("concurrency", "must be at least 1"));
        }
        let mut sched = Sched {
            timer_window: opts.timer_window.max(1),
            ..Sched::default()
        };
        let now = clock.now_ms();
        sched.seq = store.seq_floor()?;
        if let Some(newest) = store.newest_run_id()? {
            sched.id_floor = id_time(&newest);
        }
        let mut stale = Vec::new();
        let mut latest: HashMap<String, QueueEntry> = HashMap::new();
        for e in store.queue()? {
            sched.seq = sched.seq.max(e.seq);
            match latest.get(&e.id) {
                Some(prev) if prev.seq > e.seq => stale.push(e),
                _ => {
                    if let Some(old) = latest.insert(e.id.clone(), e) {
                        stale.push(old);
                    }
                }
            }
        }
        let recovered: Vec<QueueEntry> = latest.into_values().collect();
        for e in &recovered {
            sched.entries.insert(e.id.clone(), (e.ready_at, e.seq));
        }
        sched.stale_entries = stale.iter().map(|e| (e.ready_at, e.seq)).collect();
        let mut cleanup: Vec<Write> = stale
            .into_iter()
            .map(|e| Write::Dequeue {
                ready_at: e.ready_at,
                seq: e.seq,
            })
            .collect();
        for run in store.waiting_runs()? {
            match store.run(&run)? {
                Some((rec, Some(state))) if state.status == RunStatus::Waiting => {
                    let trigger = crate::waits::trigger_value(&rec);
                    sched.index.add(&run, &state.waits, &trigger)?;
                    sched
                        .waiting
                        .insert(run, WaitingRun::from_state(rec.task, &state));
                }
                _ => cleanup.push(Write::DelWaiting { run }),
            }
        }
        // Flow facts of the runs that have not ended: priorities, singleton keys, cancelOn.
        for (run, f) in store.flows()? {
            let live = sched.entries.contains_key(&run) || sched.waiting.contains_key(&run);
            let rec = if live { store.run_record(&run)? } else { None };
            let Some(rec) = rec else {
                cleanup.push(Write::DelFlow { run });
                continue;
            };
            if !f.cancel_on.is_empty() {
                let trigger = crate::waits::trigger_value(&rec);
                sched.cancels.add(&run, &f.cancel_on, &trigger)?;
            }
            if let Some(k) = &f.singleton_key {
                sched
                    .flow
                    .singletons
                    .insert((rec.task.clone(), k.clone()), run.clone());
            }
            if let Some(at) = f.start_by {
                sched.deadlines.push(Reverse((at, run.clone(), false)));
            }
            if let Some(ms) = f.finish_ms {
                // A run that started keeps its `timeout.finish` across a restart, also while
                // it waits (a run that was running is replayed, and its claim restores it too).
                let started = store
                    .run(&run)?
                    .and_then(|(_, st)| st)
                    .and_then(|st| st.started_at);
                if let Some(at) = started {
                    sched
                        .deadlines
                        .push(Reverse((at.saturating_add(ms), run.clone(), true)));
                }
            }
            if let (Some(k), Some(first)) = (&f.debounce_key, f.debounce_first) {
                // Still waiting to start: it keeps absorbing its key's triggers.
                if sched.entries.contains_key(&run) {
                    let d = crate::flow::Debounced {
                        run: run.clone(),
                        first_at: first,
                        record: None,
                    };
                    sched
                        .flow
                        .debounced
                        .insert((rec.task.clone(), k.clone()), d);
                }
            }
            sched.flows.insert(run, Arc::new(f));
        }
        // Poison runs: the runs of a claim still recorded were running when the process died.
        let limit = opts.crash_limit.max(1);
        let mut counts: HashMap<String, u32> = store.crashes()?.into_iter().collect();
        let live =
            |s: &Sched, run: &str| s.entries.contains_key(run) || s.waiting.contains_key(run);
        for (run, n) in &counts {
            if live(&sched, run) {
                sched.crashes.insert(run.clone(), *n); // not running at this crash: kept as is
            }
        }
        for (batch, runs) in store.claims()? {
            cleanup.push(Write::DelClaims { batch });
            for run in runs {
                if !live(&sched, &run) {
                    continue; // it ended before the crash
                }
                let n = counts.get(&run).copied().unwrap_or(0).saturating_add(1);
                counts.insert(run.clone(), n);
                if n >= limit {
                    tracing::warn!("durably: run {run} was running each of the last {n} times the process died: it fails with E_RUN_POISONED");
                    sched.crashes.remove(&run);
                    sched.poisoned.push((run, n));
                } else {
                    tracing::warn!("durably: run {run} was running when the process died ({n} time(s) in a row); it is replayed");
                    cleanup.push(Write::PutCrashes {
                        run: run.clone(),
                        crashes: n,
                    });
                    sched.crashes.insert(run, n);
                }
            }
        }
        for (run, _) in counts {
            if !live(&sched, &run) {
                cleanup.push(Write::DelCrashes { run });
            }
        }
        for e in recovered {
            sched.schedule(e, now);
        }
        for rec in store.schedules()? {
            match crate::schedule::Pattern::parse("schedule", &rec.cron, &rec.tz) {
                Ok(p) => sched.add_schedule(rec, p),
                Err(e) => tracing::warn!("durably: schedule {} ignored: {e}", rec.id),
            }
        }
        let work = Arc::new(Notify::new());
        let failed: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
        let on_fail = {
            let (work, failed) = (work.clone(), failed.clone());
            Arc::new(move |e: &Error| {
                if let Ok(mut f) = failed.lock() {
                    f.get_or_insert_with(|| e.clone());
                }
                work.notify_waiters();
                work.notify_one();
            })
        };
        let writer = Writer::start(
            store.clone(),
            opts.durability,
            Duration::from_millis(opts.sim_sync_delay_ms),
            on_fail,
        )?;
        if !cleanup.is_empty() {
            writer.submit(cleanup, Box::new(|_| {}));
        }
        let inner = Arc::new(Inner {
            store: RwLock::new(Some(store)),
            writer,
            clock: clock.clone(),
            opts,
            sched: Mutex::new(sched),
            work,
            closed: AtomicBool::new(false),
            failed,
            kicked: AtomicBool::new(false),
        });
        crate::retention::spawn(
            Arc::downgrade(&inner),
            Duration::from_millis(inner.opts.purge_interval_ms.max(1)),
        );
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

    pub(crate) fn sched(&self) -> Result<MutexGuard<'_, Sched>> {
        self.inner
            .sched
            .lock()
            .map_err(|_| Error::Internal("scheduler lock poisoned".into()))
    }

    pub(crate) fn store(&self) -> Result<Arc<dyn Store>> {
        let g = self
            .inner
            .store
            .read()
            .map_err(|_| Error::Internal("store lock poisoned".into()))?;
        g.clone().ok_or(Error::Closed)
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        match self.failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The store failure that stopped this engine, if one did (see `fail_stop`).
    pub fn failure(&self) -> Option<Error> {
        self.inner.failed.lock().ok().and_then(|f| f.clone())
    }

    /// Stops the engine deciding anything more after a store failure in the middle of a
    /// decision: memory may already be ahead of the disk. Every later call fails with `e`;
    /// the owner reopens the store, and the new engine rebuilds memory from the disk.
    pub(crate) fn fail_stop(&self, e: &Error) {
        if let Ok(mut f) = self.inner.failed.lock() {
            if f.is_none() {
                tracing::error!("durably: the engine stops until the store is reopened: {e}");
                *f = Some(e.clone());
            }
        }
        self.inner.work.notify_waiters();
        self.inner.work.notify_one();
    }

    /// Registers (or replaces) a task's policy and event subscriptions; its waiting runs
    /// become claimable.
    pub fn register_task(&self, id: &str, mut policy: TaskPolicy) -> Result<()> {
        let compiled = validate_policy(&policy)?;
        policy.key_exprs = flow::KeyExprs::compile(&policy.keys)?;
        let now = self.inner.clock.now_ms();
        let mut s = self.sched()?;
        for subs in s.subs.values_mut() {
            subs.retain(|(t, _)| t != id);
        }
        for (name, cond) in compiled {
            s.subs.entry(name).or_default().push((id.to_string(), cond));
        }
        let schedule_writes = self.sync_task_schedule(&mut s, id, policy.schedule.as_ref(), now)?;
        s.tasks.insert(id.to_string(), policy);
        let waiting: Vec<String> = s
            .schedules_without_task
            .iter()
            .filter(|sid| s.schedules.get(*sid).is_some_and(|l| l.rec.task == id))
            .cloned()
            .collect();
        for sid in waiting {
            s.schedules_without_task.remove(&sid);
            if let Some(at) = s.schedules.get(&sid).map(|l| l.rec.next_tick) {
                s.schedule_timers.push(Reverse((at, sid)));
            }
        }
        if let Some(parked) = s.parked.remove(id) {
            for e in parked {
                s.schedule(e, now);
            }
        }
        drop(s);
        if !schedule_writes.is_empty() {
            self.inner.writer.submit(schedule_writes, Box::new(|_| {}));
        }
        self.inner.work.notify_one();
        Ok(())
    }

    /// Forgets a task this process no longer defines (in development, a task removed or
    /// renamed in an edited module): its event subscriptions stop starting runs, and its runs
    /// and schedule wait for it as for any task no process defines. Stored runs are untouched.
    /// Returns whether the task was registered.
    pub fn unregister_task(&self, id: &str) -> Result<bool> {
        let mut s = self.sched()?;
        for subs in s.subs.values_mut() {
            subs.retain(|(t, _)| t != id);
        }
        s.subs.retain(|_, subs| !subs.is_empty());
        Ok(s.tasks.remove(id).is_some())
    }

    /// A payload, event data or token data: its size and nesting (`limits::check_value`).
    pub(crate) fn check_size(&self, what: &str, json: &Json) -> Result<()> {
        crate::limits::check_value(what, json.get(), self.inner.opts.max_payload_bytes)
    }

    /// An output or an error: its size only (the core stores it without reading it).
    fn check_output(&self, what: &str, json: &Json) -> Result<()> {
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

    /// Checks an op before anything changes (issue: one bad op must not poison the batch).
    /// A bad op becomes the failure of its own run (for good: the same op would come again),
    /// with the reason as its error; an error too large to store is replaced by one that says so.
    fn vet_op(&self, op: Op) -> Op {
        let checked = (|| -> Result<()> {
            match &op {
                Op::Step { key, output, .. } => {
                    check_step_key(key)?;
                    self.check_output(&format!("the output of step \"{key}\""), output)
                }
                Op::StepFailed { key, .. } | Op::RetryStep { key, .. } => check_step_key(key),
                Op::SendEvent { key, events, .. } => {
                    check_step_key(key)?;
                    self.check_events(events)
                }
                Op::Wait { waits, .. } => {
                    for w in waits {
                        self.check_wait(w)?;
                    }
                    Ok(())
                }
                Op::Complete { output, .. } => self.check_output("the output of the run", output),
                Op::Fail { .. } | Op::Release { .. } => Ok(()),
            }
        })();
        let op = match checked {
            Ok(()) => op,
            Err(e) => {
                tracing::warn!(
                    "durably: run {} reported a bad op, failing the run: {e}",
                    op.run()
                );
                Op::Fail {
                    run: op.run().to_string(),
                    error: error_json(&e),
                    non_retriable: true,
                    retry_at: None,
                }
            }
        };
        let max = self.inner.opts.max_payload_bytes;
        let fit = |error: Json| -> Json {
            if error.get().len() <= max {
                return error;
            }
            let e = Error::PayloadTooLarge {
                what: "the error thrown".into(),
                size: error.get().len(),
                limit: max,
            };
            error_json(&e)
        };
        match op {
            Op::StepFailed {
                run,
                key,
                error,
                attempt,
            } => Op::StepFailed {
                run,
                key,
                error: fit(error),
                attempt,
            },
            Op::RetryStep {
                run,
                key,
                error,
                attempt,
                retry_at,
            } => Op::RetryStep {
                run,
                key,
                error: fit(error),
                attempt,
                retry_at,
            },
            Op::Fail {
                run,
                error,
                non_retriable,
                retry_at,
            } => Op::Fail {
                run,
                error: fit(error),
                non_retriable,
                retry_at,
            },
            other => other,
        }
    }

    /// A wait as reported: names, ids and `if` expressions the engine will index.
    fn check_wait(&self, w: &WaitReq) -> Result<()> {
        match w {
            WaitReq::Invoke {
                key,
                task,
                payload,
                keys,
            } => {
                keys.check()?;
                check_step_key(key)?;
                crate::limits::check_name("task", "a task id", task)?;
                self.check_size("the payload of step.invoke", payload)
            }
            WaitReq::Spec(spec) => {
                check_step_key(spec.key())?;
                match spec {
                    WaitSpec::Event {
                        events,
                        if_expr,
                        value,
                        ..
                    } => {
                        if events.is_empty() {
                            return Err(Error::bad_option(
                                "event",
                                "waitForEvent needs an event name",
                            ));
                        }
                        for name in events {
                            crate::limits::check_name("event", "an event name", name)?;
                        }
                        if let Some(src) = if_expr {
                            expr::parse("waitForEvent.if", src)?;
                        }
                        if value.len() > crate::limits::MAX_NAME_BYTES * 64 {
                            return Err(Error::bad_option(
                                "match",
                                "the value to match is too large",
                            ));
                        }
                        Ok(())
                    }
                    WaitSpec::Token { token, .. } => {
                        crate::limits::check_name("token", "a token id", token)
                    }
                    WaitSpec::Child { child, .. } => {
                        crate::limits::check_name("child", "a run id", child)
                    }
                    WaitSpec::Sleep { .. } => Ok(()),
                }
            }
        }
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
        if let Some(t) = item
            .tags
            .iter()
            .find(|t| t.is_empty() || t.len() > 128 || t.contains('\0'))
        {
            return Err(Error::bad_option(
                "tags",
                format!("tag {t:?} must be 1 to 128 bytes (UTF-8) without NUL"),
            ));
        }
        flow::FlowKeys {
            priority: item.priority,
            concurrency_key: item.concurrency_key.clone(),
            throttle_key: item.throttle_key.clone(),
            rate_limit_key: item.rate_limit_key.clone(),
            debounce_key: item.debounce_key.clone(),
            singleton_key: item.singleton_key.clone(),
            idempotency_key: item.idempotency_key.clone(),
            idempotency_ttl_ms: item.idempotency_ttl_ms,
            ttl_ms: item.ttl_ms,
            cancel_on: item.cancel_on.clone(),
        }
        .check()
    }

    /// Enqueues runs durably. Each group is all-or-nothing: a group with one bad item is
    /// rejected whole and writes nothing; the accepted groups share one durable commit.
    /// Resolves after the commit is on disk; only then can the runs start. A trigger may
    /// resolve to an existing run (idempotency key, debounce) or a skipped one (rate limit,
    /// singleton skip).
    pub async fn trigger(&self, groups: Vec<Vec<TriggerItem>>) -> Vec<Result<Vec<String>>> {
        if let Err(e) = self.check_open() {
            return groups.iter().map(|_| Err(e.clone())).collect();
        }
        let now = self.inner.clock.now_ms();
        let mut results: Vec<Result<Vec<String>>> = Vec::with_capacity(groups.len());
        let mut writes = Vec::new();
        let mut after = AfterCommit::default();
        {
            let locked = self.store().and_then(|store| Ok((store, self.sched()?)));
            let (store, mut s) = match locked {
                Ok(x) => x,
                Err(e) => return groups.iter().map(|_| Err(e.clone())).collect(),
            };
            let n_groups = groups.len();
            for group in groups {
                if let Some(err) = group.iter().find_map(|i| self.validate_item(&s, i).err()) {
                    results.push(Err(err));
                    continue;
                }
                let mut ids = Vec::with_capacity(group.len());
                for mut item in group {
                    let keys = item.take_keys();
                    let ready_at = item
                        .run_at
                        .unwrap_or(now)
                        .max(now.saturating_add(item.delay_ms.unwrap_or(0)));
                    let proto = NewRun {
                        task: item.task,
                        payload: item.payload,
                        tags: item.tags,
                        ready_at,
                        event: None,
                        parent: None,
                        created_seq: None,
                    };
                    match self.admit(&mut s, &*store, proto, keys, now, &mut writes, &mut after) {
                        Ok(id) => ids.push(id),
                        Err(e) => {
                            // Every item was validated: this is the store failing (or a bug),
                            // maybe after memory changed, and this group must not commit half
                            // of its runs. Stop; a reopen rebuilds from the disk.
                            drop(s);
                            self.fail_stop(&e);
                            return results_err(n_groups, &e);
                        }
                    }
                }
                results.push(Ok(ids));
            }
            s.drain_deferred(&mut writes, &mut after);
        }
        self.inner.work.notify_one();
        // Even with nothing to write (every trigger answered by an idempotency key), the
        // answer waits for the writer: the run it names may be in a commit not yet durable.
        if let Err(e) = self.commit_after(writes, after).await {
            return results.into_iter().map(|r| r.and(Err(e.clone()))).collect();
        }
        results
    }

    /// Persists events (deduplicated by id), starts a run for every subscribed task and
    /// resumes every matching `waitForEvent`, in one durable commit. Resolves with the ids.
    pub async fn send(&self, events: Vec<EventIn>) -> Result<Vec<String>> {
        self.send_groups(vec![events])
            .await
            .pop()
            .unwrap_or_else(|| Ok(Vec::new()))
    }

    /// `send` for several callers at once: each group is validated on its own (a bad group
    /// fails alone, writing nothing); the accepted ones share one durable commit.
    pub async fn send_groups(&self, groups: Vec<Vec<EventIn>>) -> Vec<Result<Vec<String>>> {
        if let Err(e) = self.check_open() {
            return groups.iter().map(|_| Err(e.clone())).collect();
        }
        let now = self.inner.clock.now_ms();
        let mut writes = Vec::new();
        let mut after = AfterCommit::default();
        let mut results = Vec::with_capacity(groups.len());
        {
            let locked = self.store().and_then(|store| Ok((store, self.sched()?)));
            let (store, mut s) = match locked {
                Ok(x) => x,
                Err(e) => return groups.iter().map(|_| Err(e.clone())).collect(),
            };
            let n_groups = groups.len();
            for events in groups {
                if let Err(e) = self.check_events(&events) {
                    results.push(Err(e));
                    continue;
                }
                match self.ingest(&mut s, &*store, events, now, &mut writes, &mut after) {
                    Ok(ids) => results.push(Ok(ids)),
                    Err(e) => {
                        // Validated already: the store failed (or a bug), maybe halfway.
                        drop(s);
                        self.fail_stop(&e);
                        return results_err(n_groups, &e);
                    }
                }
            }
            s.drain_deferred(&mut writes, &mut after);
        }
        self.inner.work.notify_one();
        // Even when every event was a duplicate: the answer waits for the writer, since the
        // first copy may be in a commit not yet durable.
        if let Err(e) = self.commit_after(writes, after).await {
            return results.into_iter().map(|r| r.and(Err(e.clone()))).collect();
        }
        results
    }

    /// Completes a token of `step.createToken`: resumes the run waiting for it, or keeps the
    /// data for a `waitForToken` still to come. Resolves with whether a run was resumed.
    pub async fn complete_token(&self, token: &str, data: Json) -> Result<bool> {
        self.check_open()?;
        self.check_size("the token data", &data)?;
        crate::limits::check_name("token", "a token id", token)?;
        let now = self.inner.clock.now_ms();
        let mut writes = Vec::new();
        let mut after = AfterCommit::default();
        let resumed = {
            let mut s = self.sched()?;
            let waiting = s.index.tokens.get(token).cloned();
            let resumed = match waiting {
                Some((run, key)) => {
                    let step = completed_step(data.clone(), now);
                    self.wake(&mut s, &run, &key, step, None, now, &mut writes)
                }
                None => false,
            };
            let rec = crate::model::TokenRecord {
                run: None,
                key: None,
                data: Some(data.clone()),
                completed: true,
            };
            writes.push(Write::PutToken {
                id: token.to_string(),
                token: rec,
            });
            s.pending_tokens.insert(token.to_string(), data);
            after.tokens.push(token.to_string());
            s.drain_deferred(&mut writes, &mut after);
            resumed
        };
        self.inner.work.notify_one();
        self.commit_after(writes, after).await?;
        Ok(resumed)
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

    /// Commits, then applies `after` (new runs become claimable, waiters of finished runs are
    /// told, pending lookups are cleared).
    pub(crate) async fn commit_after(&self, writes: Vec<Write>, after: AfterCommit) -> Result<()> {
        let apply = self.after_commit(after);
        self.commit(writes, move |res| apply(res)).await
    }

    /// `commit_after` without waiting for the commit.
    /// `submit_after`, with a receiver told once the writes are durable (or failed).
    fn submit_after_rx(
        &self,
        writes: Vec<Write>,
        after: AfterCommit,
    ) -> oneshot::Receiver<Result<()>> {
        let apply = self.after_commit(after);
        let (tx, rx) = oneshot::channel();
        self.inner.writer.submit(
            writes,
            Box::new(move |res| {
                apply(&res);
                let _ = tx.send(res);
            }),
        );
        rx
    }

    fn after_commit(&self, after: AfterCommit) -> impl FnOnce(&Result<()>) + Send + 'static {
        let engine = self.clone();
        move |res| {
            let now = engine.inner.clock.now_ms();
            if let Ok(mut s) = engine.sched() {
                for id in &after.events {
                    s.pending_events.remove(id);
                }
                for t in &after.tokens {
                    s.pending_tokens.remove(t);
                }
                for k in &after.idem {
                    s.pending_idem.remove(k);
                }
                for (id, _) in &after.finished {
                    s.pending_outcomes.remove(id);
                }
                for id in &after.wakes {
                    s.pending_wakes.remove(id);
                }
                if res.is_ok() {
                    for e in after.new_runs {
                        s.schedule(e, now);
                    }
                    for (id, out) in after.finished {
                        if let Some(ws) = s.waiters.remove(&id) {
                            for w in ws {
                                let _ = w.send(out.clone());
                            }
                        }
                    }
                }
            }
            engine.inner.work.notify_one();
        }
    }

    /// Waits until at least one run is ready (or a running run must be aborted), then hands
    /// out up to `max` runs within the concurrency limits. `None` once the engine closes.
    pub async fn claim(&self, max: usize) -> Result<Option<ClaimBatch>> {
        loop {
            if self.inner.closed.load(Ordering::Acquire) {
                return Ok(None);
            }
            if let Some(e) = self.failure() {
                return Err(e);
            }
            let notified = self.inner.work.notified();
            let (batch, next_wake, durable) = match self.claim_now(max) {
                Ok(x) => x,
                Err(e) => {
                    self.fail_stop(&e);
                    return Err(e);
                }
            };
            if let Some(rx) = durable {
                // The claim's record must be on disk before its runs execute: a run that
                // kills the process is then counted (poison runs).
                rx.await.unwrap_or(Err(Error::Closed))?;
            }
            if !batch.runs.is_empty()
                || !batch.abort.is_empty()
                || self.inner.kicked.swap(false, Ordering::AcqRel)
            {
                return Ok(Some(batch));
            }
            // Wall-clock deadlines are waited for on a monotonic timer, which does not see
            // the wall clock jump forward or a host resume from suspend: look again at least
            // every `MAX_NAP`, so a deadline is never later than that.
            match next_wake.and_then(|at| self.inner.clock.real_wait(at)) {
                Some(d) => {
                    let _ = tokio::time::timeout(d.min(MAX_NAP), notified).await;
                }
                None if self.inner.clock.real_wait(u64::MAX).is_some() => {
                    let _ = tokio::time::timeout(MAX_NAP, notified).await;
                }
                None => notified.await,
            }
        }
    }

    /// Writes and syncs a few bytes: whether the store takes writes (again). A failure
    /// stops the engine like any failed write.
    pub async fn probe(&self) -> Result<()> {
        self.check_open()?;
        let now = self.inner.clock.now_ms();
        self.commit(vec![Write::Probe(now)], |_| {}).await
    }

    /// Resolves once every write queued so far is durable and its effects applied (runs it
    /// created are claimable).
    pub async fn flush(&self) -> Result<()> {
        self.commit(Vec::new(), |_| {}).await
    }

    /// Hands out up to `max` runs that are due now, without waiting (may be empty).
    pub fn try_claim(&self, max: usize) -> Result<Vec<Claimed>> {
        self.check_open()?;
        Ok(self.claim_now(max)?.0.runs)
    }

    /// Hands out due runs and aborts, without waiting.
    pub fn try_claim_batch(&self, max: usize) -> Result<ClaimBatch> {
        self.check_open()?;
        Ok(self.claim_now(max)?.0)
    }

    pub(crate) fn notify_work(&self) {
        self.inner.work.notify_one();
    }

    /// Makes the pending `claim` return now (empty if nothing is due): the executor has more
    /// room than when it asked. An executor with no room keeps a `claim(0)` pending, which
    /// still delivers aborts (cancel, timeout) and applies deadlines and schedules.
    pub fn kick(&self) {
        self.inner.kicked.store(true, Ordering::Release);
        self.inner.work.notify_one();
    }

    /// Applies due deadlines, promotes due timers and throttled runs, picks ready runs within
    /// the concurrency limits and loads them. Also returns when the scheduler must look again.
    #[allow(clippy::type_complexity)]
    fn claim_now(
        &self,
        max: usize,
    ) -> Result<(
        ClaimBatch,
        Option<u64>,
        Option<oneshot::Receiver<Result<()>>>,
    )> {
        let mut durable = None;
        let mut must_wait = false;
        loop {
            let now = self.inner.clock.now_ms();
            let mut cleanup = Vec::new();
            let mut after = AfterCommit::default();
            let (picked, abort, next_wake) = {
                let store = self.store()?;
                let mut s = self.sched()?;
                for (run, n) in std::mem::take(&mut s.poisoned) {
                    let error = serde_json::json!({
                        "name": "DurablyError",
                        "code": "E_RUN_POISONED",
                        "message": format!("run {run} was running each of the last {n} times the process died (a poison run: it may exit the process, run out of memory or crash native code); it was failed so that the other runs go on. Fix the task, then runs.retry(\"{run}\")"),
                    });
                    self.end_locked(
                        &mut s,
                        &*store,
                        &run,
                        RunStatus::Failed,
                        to_raw(&error)?,
                        now,
                        &mut cleanup,
                        &mut after,
                    )?;
                    cleanup.push(Write::DelCrashes { run });
                }
                if s.deadlines
                    .peek()
                    .is_some_and(|Reverse((at, _, _))| *at <= now)
                {
                    self.run_deadlines(&mut s, &*store, now, &mut cleanup, &mut after)?;
                    s.drain_deferred(&mut cleanup, &mut after);
                }
                if s.schedule_timers
                    .peek()
                    .is_some_and(|Reverse((at, _))| *at <= now)
                {
                    self.run_schedules(&mut s, &*store, now, &mut cleanup, &mut after)?;
                    s.drain_deferred(&mut cleanup, &mut after);
                }
                self.release_throttled(&mut s, now);
                s.flow.expire_windows(now);
                let room = self
                    .inner
                    .opts
                    .concurrency
                    .saturating_sub(s.running.len())
                    .min(max);
                // Promote first: then the in-memory timers are all in the future, and a shrink
                // while paging in can only move `spill_after` past now.
                s.promote(now);
                s.refill(&*store, now, room)?;
                let mut picked = Vec::new();
                let batch = s.seq.saturating_add(1); // taken below if anything is picked
                let mut refills = 0;
                while picked.len() < room {
                    // A due spilled run goes before a younger or lower-priority ready one: look
                    // again before each pick (cheap unless a spilled page is due).
                    if s.spill_after.is_some_and(|(at, _)| at <= now) {
                        s.refill(&*store, now, room - picked.len())?;
                    }
                    let Some(Ready(_, t)) = s.ready.pop() else {
                        // Stale entries may have filled the page of due spilled timers: page
                        // in more while there is room and some are due.
                        if refills < 4 && s.spill_after.is_some_and(|(at, _)| at <= now) {
                            refills += 1;
                            s.refill(&*store, now, room - picked.len())?;
                            continue;
                        }
                        break;
                    };
                    let e = t.entry();
                    if s.entries.get(&e.id) != Some(&(e.ready_at, e.seq)) {
                        continue; // superseded
                    }
                    // A run in flight at the last `crash_limit - 1` crashes in a row (at
                    // least 1) runs alone among such runs: one more crash is then its own.
                    // A single crash (a deploy by SIGKILL, an OOM kill) slows no recovery.
                    let serialize_at = self.inner.opts.crash_limit.saturating_sub(1).max(1);
                    let suspect = s.crashes.get(&e.id).is_some_and(|n| *n >= serialize_at);
                    if suspect && s.suspect_running.is_some() {
                        s.suspects_held.push(e);
                        continue;
                    }
                    let Some(slot) = self.may_start(&mut s, &e, now) else {
                        continue;
                    };
                    if suspect {
                        s.suspect_running = Some(e.id.clone());
                    }
                    s.entries.remove(&e.id);
                    if let Some(w) = s.waiting.remove(&e.id) {
                        // A sleep ended or a wait timed out: the other waits go.
                        s.index.remove(&e.id, &w.specs);
                        if w.indexed() {
                            cleanup.push(Write::DelWaiting { run: e.id.clone() });
                        }
                    }
                    let max_attempts = s
                        .tasks
                        .get(&e.task)
                        .map(|p| p.retry.max_attempts)
                        .unwrap_or(1);
                    s.running.insert(
                        e.id.clone(),
                        RunningRun {
                            task: e.task.clone(),
                            slot,
                            entry: (e.ready_at, e.seq),
                            attempt: 1,
                            started_at: now,
                            max_attempts,
                            parent: None,
                            event_cursor: None,
                            batch,
                        },
                    );
                    let fresh = s.fresh.remove(&e.id);
                    picked.push((e, max_attempts, fresh));
                }
                if !picked.is_empty() {
                    // Recorded before the runs execute: after a crash, the runs of an
                    // unfinished claim are counted (poison runs). The claim waits for the
                    // record to be durable when a run in it started before (recovered after a
                    // crash, woken, retried): a run triggered by this process and never
                    // started goes at once (trigger→start stays one commit); if it kills the
                    // process before its record is on disk, it is counted from its next
                    // life on, since it is then a recovered run.
                    must_wait |= picked.iter().any(|(_, _, fresh)| !fresh);
                    s.next_seq();
                    s.claims.insert(batch, picked.len());
                    cleanup.push(Write::PutClaims {
                        batch,
                        runs: picked.iter().map(|(e, _, _)| e.id.clone()).collect(),
                    });
                }
                s.warn_parked();
                let abort = std::mem::take(&mut s.abort);
                let timer = if room == 0 { None } else { s.next_timer() };
                let next_wake = match (timer, Self::next_control_wake(&s)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                (picked, abort, next_wake)
            };
            if !cleanup.is_empty() {
                let rx = self.submit_after_rx(cleanup, after);
                if must_wait {
                    durable = Some(rx);
                }
            }
            let picked_any = !picked.is_empty();
            let runs = if picked_any {
                self.load_claimed(picked, now)?
            } else {
                Vec::new()
            };
            if !runs.is_empty() || !abort.is_empty() {
                return Ok((ClaimBatch { runs, abort }, next_wake, durable));
            }
            // Nothing to hand out. Look again at once if what was picked turned out stale (more
            // may be ready) or something is already due; otherwise the caller waits.
            if !picked_any && next_wake.is_none_or(|at| at > now) {
                return Ok((ClaimBatch { runs, abort }, next_wake, durable));
            }
        }
    }

    fn load_claimed(&self, picked: Vec<(QueueEntry, u32, bool)>, now: u64) -> Result<Vec<Claimed>> {
        let store = self.store()?;
        let mut out = Vec::with_capacity(picked.len());
        let mut stale = Vec::new();
        // What the store told us about each run, applied under one lock at the end.
        let mut updates = Vec::new();
        let has_flows = !self.sched()?.flows.is_empty();
        for (e, max_attempts, fresh) in picked {
            let (rec, state, steps) = if fresh {
                // Triggered here and never started: the trigger record is all there is.
                match store.run_record(&e.id)? {
                    Some(rec) => (rec, None, Vec::new()),
                    None => {
                        stale.push(e);
                        continue;
                    }
                }
            } else {
                match store.run(&e.id)? {
                    Some((_, Some(st))) if st.status.is_terminal() => {
                        stale.push(e);
                        continue;
                    }
                    Some((rec, st)) => {
                        let steps = store
                            .steps(&e.id)?
                            .into_iter()
                            .map(|(key, s)| ClaimedStep {
                                key,
                                status: s.status,
                                attempts: s.attempts,
                                output: s.output,
                                error: s.error,
                                wake_at: s.wake_at,
                                child: s.child,
                            })
                            .collect();
                        (rec, st, steps)
                    }
                    None => {
                        stale.push(e);
                        continue;
                    }
                }
            };
            let attempt = state.as_ref().map(|s| s.attempts).unwrap_or(0).max(1);
            let first_start = state.as_ref().and_then(|st| st.started_at);
            let cursor = state.as_ref().and_then(|st| st.event_cursor);
            // A fresh run needs no update unless it has a parent (step.invoke).
            if !(fresh && rec.parent.is_none()) || has_flows {
                updates.push((
                    e.id.clone(),
                    attempt,
                    rec.parent.clone(),
                    cursor,
                    first_start,
                ));
            }
            out.push(Claimed {
                id: rec.id,
                task: rec.task,
                payload: rec.payload,
                attempt,
                max_attempts,
                created_at: rec.created_at,
                now,
                tags: rec.tags,
                event: rec.event,
                steps,
                kind: rec.kind,
                failure: rec.failure,
            });
        }
        if !updates.is_empty() {
            let mut s = self.sched()?;
            for (id, attempt, parent, cursor, first_start) in updates {
                let finish = s.flows.get(&id).and_then(|f| f.finish_ms);
                if let Some(r) = s.running.get_mut(&id) {
                    r.attempt = attempt;
                    r.parent = parent;
                    r.event_cursor = cursor;
                    if let Some(first) = first_start {
                        r.started_at = first;
                    }
                }
                if let Some(ms) = finish {
                    let at = first_start.unwrap_or(now).saturating_add(ms);
                    s.deadlines.push(Reverse((at, id, true)));
                }
            }
        }
        if !stale.is_empty() {
            // A queue entry of a run that already ended (or vanished): drop it.
            let mut s = self.sched()?;
            let writes = stale
                .into_iter()
                .map(|e| {
                    self.take_running(&mut s, &e.id, now);
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
        let plans = self.plan_scans(&ops);
        if plans.is_empty() {
            return self.apply_report(ops, HashMap::new()).await;
        }
        // A wait whose early event must be read in order: its look-back is read on a blocking
        // thread without the scheduler lock, and only its run's ops wait for it; the other
        // runs' ops of the batch go ahead (ops of different runs are independent).
        let scanning: HashSet<String> = plans.iter().map(|p| p.run.clone()).collect();
        let (later, now_ops): (Vec<Op>, Vec<Op>) =
            ops.into_iter().partition(|op| scanning.contains(op.run()));
        let engine = self.clone();
        let read = tokio::task::spawn_blocking(move || engine.prescan(plans));
        let (first, read) = tokio::join!(self.apply_report(now_ops, HashMap::new()), read);
        let prescans = read.unwrap_or_default();
        let second = self.apply_report(later, prescans).await;
        first.and(second)
    }

    async fn apply_report(
        &self,
        ops: Vec<Op>,
        prescans: HashMap<(String, String), crate::waits::Prescan>,
    ) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let now = self.inner.clock.now_ms();
        let mut writes = Vec::with_capacity(ops.len() * 2);
        let mut after = AfterCommit::default();
        {
            let store = self.store()?;
            let mut s = self.sched()?;
            s.prescans = prescans;
            for op in ops {
                let op = self.vet_op(op);
                if let Err(e) = self.apply_op(&mut s, &*store, op, now, &mut writes, &mut after) {
                    // Every op was vetted: what fails now is the store (or a bug), possibly
                    // after memory changed. Stop deciding; a reopen rebuilds from the disk.
                    drop(s);
                    self.fail_stop(&e);
                    return Err(e);
                }
            }
            s.drain_deferred(&mut writes, &mut after);
            s.prescans.clear();
        }
        self.inner.work.notify_one();
        if writes.is_empty() {
            return Ok(());
        }
        self.commit_after(writes, after).await
    }

    fn apply_op(
        &self,
        s: &mut Sched,
        store: &dyn Store,
        op: Op,
        now: u64,
        writes: &mut Vec<Write>,
        after: &mut AfterCommit,
    ) -> Result<()> {
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
                    return Ok(());
                }
                let mut step = completed_step(output, now);
                step.attempts = attempt;
                writes.push(Write::PutStep { run, key, step });
            }
            Op::StepFailed {
                run,
                key,
                error,
                attempt,
            } => {
                if !s.running.contains_key(&run) {
                    return Ok(());
                }
                let mut step = failed_step(error, now);
                step.attempts = attempt;
                writes.push(Write::PutStep { run, key, step });
            }
            Op::SendEvent { run, key, events } => {
                if !s.running.contains_key(&run) {
                    return Ok(());
                }
                let ids = self.ingest(s, store, events, now, writes, after)?;
                let step = completed_step(to_raw(&serde_json::json!({ "ids": ids }))?, now);
                writes.push(Write::PutStep { run, key, step });
            }
            Op::RetryStep {
                run,
                key,
                error,
                attempt,
                retry_at,
            } => {
                let Some(r) = self.take_running(s, &run, now) else {
                    return Ok(());
                };
                transition(RunStatus::Running, Input::Retry)?;
                let policy = s.tasks.get(&r.task).map(|p| p.retry).unwrap_or_default();
                let ready_at = retry_at
                    .unwrap_or_else(|| now + policy.delay_ms(attempt, seed(&run, &key, attempt)));
                let mut step = failed_step(error.clone(), now);
                step.status = StepStatus::Retrying;
                step.attempts = attempt;
                writes.push(Write::PutStep {
                    run: run.clone(),
                    key,
                    step,
                });
                self.requeue(s, writes, &r, &run, ready_at, now, r.attempt, Some(error));
            }
            Op::Wait { run, waits } => self.park(s, store, run, waits, now, writes, after)?,
            Op::Complete { run, output } => {
                let Some(r) = self.take_running(s, &run, now) else {
                    return Ok(());
                };
                transition(RunStatus::Running, Input::Complete)?;
                let out = Outcome {
                    status: RunStatus::Completed,
                    output: Some(output),
                    error: None,
                };
                self.finish(s, writes, after, &r, run, out, now);
            }
            Op::Fail {
                run,
                error,
                non_retriable,
                retry_at,
            } => {
                let Some(r) = self.take_running(s, &run, now) else {
                    return Ok(());
                };
                if non_retriable || r.attempt >= r.max_attempts {
                    transition(RunStatus::Running, Input::Fail)?;
                    if s.tasks.get(&r.task).is_some_and(|p| p.on_failure) {
                        self.start_on_failure(s, store, &run, &error, now, writes, after)?;
                    }
                    let out = Outcome {
                        status: RunStatus::Failed,
                        output: None,
                        error: Some(error),
                    };
                    self.finish(s, writes, after, &r, run, out, now);
                } else {
                    transition(RunStatus::Running, Input::Retry)?;
                    let policy = s.tasks.get(&r.task).map(|p| p.retry).unwrap_or_default();
                    let ready_at = retry_at.unwrap_or_else(|| {
                        now + policy.delay_ms(r.attempt, seed(&run, "", r.attempt))
                    });
                    self.requeue(
                        s,
                        writes,
                        &r,
                        &run,
                        ready_at,
                        now,
                        r.attempt + 1,
                        Some(error),
                    );
                }
            }
            Op::Release { run } => {
                let Some(r) = self.take_running(s, &run, now) else {
                    return Ok(());
                };
                let e = QueueEntry {
                    ready_at: r.entry.0,
                    seq: r.entry.1,
                    id: run,
                    task: r.task,
                };
                s.entries.insert(e.id.clone(), r.entry);
                s.schedule(e, now);
            }
        }
        Ok(())
    }

    /// Puts a run that left `running` back in the queue at `ready_at` (status delayed, or
    /// queued when due now).
    #[allow(clippy::too_many_arguments)]
    fn requeue(
        &self,
        s: &mut Sched,
        writes: &mut Vec<Write>,
        r: &RunningRun,
        run: &str,
        ready_at: u64,
        now: u64,
        attempts: u32,
        error: Option<Json>,
    ) {
        let e = s.enqueue(run, &r.task, ready_at);
        writes.push(Write::Dequeue {
            ready_at: r.entry.0,
            seq: r.entry.1,
        });
        writes.push(Write::Enqueue(e.clone()));
        writes.push(Write::PutState {
            id: run.to_string(),
            state: RunState {
                status: if ready_at > now {
                    RunStatus::Delayed
                } else {
                    RunStatus::Queued
                },
                attempts,
                ready_at: Some(ready_at),
                started_at: Some(r.started_at),
                ended_at: None,
                output: None,
                error,
                entry: Some((e.ready_at, e.seq)),
                waits: Vec::new(),
                event_cursor: r.event_cursor,
            },
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        s: &mut Sched,
        writes: &mut Vec<Write>,
        after: &mut AfterCommit,
        r: &RunningRun,
        run: String,
        out: Outcome,
        now: u64,
    ) {
        writes.push(Write::Dequeue {
            ready_at: r.entry.0,
            seq: r.entry.1,
        });
        writes.push(Write::PutState {
            id: run.clone(),
            state: RunState {
                status: out.status,
                attempts: r.attempt,
                ready_at: None,
                started_at: Some(r.started_at),
                ended_at: Some(now),
                output: out.output.clone(),
                error: out.error.clone(),
                entry: None,
                waits: Vec::new(),
                event_cursor: None,
            },
        });
        self.after_end(s, &run, &r.task, r.parent.as_ref(), &out, now, writes);
        self.retain(s, &r.task, &run, now, writes);
        after.finished.push((run, out));
    }

    /// `Op::Wait`: resolves what is already resolvable (an early event, a completed token or
    /// child, a passed deadline) and requeues the run at once; otherwise parks it on its waits.
    #[allow(clippy::too_many_arguments)]
    fn park(
        &self,
        s: &mut Sched,
        store: &dyn Store,
        run: String,
        reqs: Vec<WaitReq>,
        now: u64,
        writes: &mut Vec<Write>,
        after: &mut AfterCommit,
    ) -> Result<()> {
        let Some(r) = self.take_running(s, &run, now) else {
            return Ok(());
        };
        let Some((rec, _)) = store.run(&run)? else {
            return Ok(());
        };
        let trigger = crate::waits::trigger_value(&rec);
        // Every wait of this park looks from the same point (the cursor as it was), so one
        // wait consuming an event never hides an earlier event from another.
        let base_cursor = r.event_cursor;
        let mut cursor = r.event_cursor;
        let mut resolved: Vec<(String, StepRecord)> = Vec::new();
        let mut specs: Vec<WaitSpec> = Vec::new();
        for req in reqs {
            let spec = match req {
                WaitReq::Invoke {
                    key,
                    task,
                    payload,
                    keys,
                } => {
                    let inv = InvokeReq {
                        key,
                        task,
                        payload,
                        keys,
                    };
                    let failed = if !s.tasks.contains_key(&inv.task) {
                        Some(Error::UnknownTask {
                            task: inv.task.clone(),
                        })
                    } else {
                        self.check_size("the payload of step.invoke", &inv.payload)
                            .err()
                    };
                    if let Some(e) = failed {
                        let err = serde_json::json!({ "name": "DurablyError", "code": e.code(), "message": e.to_string() });
                        resolved.push((inv.key, failed_step(to_raw(&err)?, now)));
                        continue;
                    }
                    let proto = NewRun {
                        task: inv.task,
                        payload: inv.payload,
                        tags: Vec::new(),
                        ready_at: now,
                        event: None,
                        parent: Some(ParentRef {
                            run: run.clone(),
                            key: inv.key.clone(),
                        }),
                        created_seq: None,
                    };
                    // Through the child task's flow control (concurrency, throttle, rate limit,
                    // singleton, priority, timeouts, cancelOn): a skipped child's outcome is
                    // known at once and resolves the step below.
                    let child = self.admit(s, store, proto, inv.keys, now, writes, after)?;
                    WaitSpec::Child {
                        key: inv.key,
                        child,
                    }
                }
                WaitReq::Spec(spec) => spec,
            };
            match &spec {
                WaitSpec::Sleep { key, wake_at } if *wake_at <= now => {
                    resolved.push((key.clone(), completed_step(json_null(), now)));
                }
                WaitSpec::Event {
                    key,
                    events,
                    path,
                    value,
                    if_expr,
                    wake_at,
                    since_run_start,
                    ..
                } => {
                    let after_at = if *since_run_start {
                        base_cursor.unwrap_or(0).max(rec.created_seq)
                    } else {
                        s.seq
                    };
                    let value = crate::waits::canonical_text(value);
                    let cond = match if_expr {
                        Some(src) => {
                            Some(expr::parse("waitForEvent.if", src)?.bind("event", &trigger))
                        }
                        None => None,
                    };
                    let m = crate::waits::Matcher::new(path, &value, cond.as_ref());
                    let found = match s.prescans.remove(&(run.clone(), key.clone())) {
                        // Read up to `upto` without the lock: only what came since is left.
                        Some(p) if p.after == after_at => match p.found {
                            Some(e) => Some(e),
                            None => crate::waits::find_event(s, store, events, &m, p.upto)?,
                        },
                        _ => crate::waits::find_event(s, store, events, &m, after_at)?,
                    };
                    if let Some(ev) = found {
                        cursor = cursor.max(Some(ev.seq));
                        let json = crate::waits::event_json(&ev)?;
                        resolved.push((key.clone(), completed_step(json, now)));
                    } else if wake_at.is_some_and(|w| w <= now) {
                        resolved.push((key.clone(), completed_step(json_null(), now)));
                    } else {
                        let mut spec = spec.clone();
                        if let WaitSpec::Event {
                            after, value: v, ..
                        } = &mut spec
                        {
                            *after = Some(after_at);
                            *v = value;
                        }
                        specs.push(spec);
                    }
                }
                WaitSpec::Token {
                    key,
                    token,
                    wake_at,
                } => {
                    let done = match s.pending_tokens.get(token) {
                        Some(d) => Some(d.clone()),
                        None => store
                            .token(token)?
                            .filter(|t| t.completed)
                            .map(|t| t.data.unwrap_or_else(json_null)),
                    };
                    if let Some(data) = done {
                        resolved.push((key.clone(), completed_step(data, now)));
                    } else if wake_at.is_some_and(|w| w <= now) {
                        resolved.push((key.clone(), completed_step(json_null(), now)));
                    } else {
                        specs.push(spec);
                    }
                }
                WaitSpec::Child { key, child } => {
                    let outcome = match s.pending_outcomes.get(child) {
                        Some(o) => Some(o.clone()),
                        None => match store.run(child)? {
                            Some((crec, Some(st))) if st.status.is_terminal() => Some((
                                crec.task,
                                Outcome {
                                    status: st.status,
                                    output: st.output,
                                    error: st.error,
                                },
                            ))
                            .map(|(_, o)| o),
                            _ => None,
                        },
                    };
                    match outcome {
                        Some(o) => resolved.push((key.clone(), child_step(child, "", &o, now))),
                        None => specs.push(spec),
                    }
                }
                WaitSpec::Sleep { .. } => specs.push(spec),
            }
        }
        transition(RunStatus::Running, Input::Wait)?;
        // Child waits are stored as steps even when the run goes on, so that a replay
        // waits for the same child instead of starting another.
        for spec in &specs {
            let step = StepRecord {
                status: StepStatus::Waiting,
                attempts: 1,
                output: None,
                error: None,
                ended_at: now,
                wake_at: spec.wake_at(),
                child: match spec {
                    WaitSpec::Child { child, .. } => Some(child.clone()),
                    _ => None,
                },
            };
            writes.push(Write::PutStep {
                run: run.clone(),
                key: spec.key().to_string(),
                step,
            });
        }
        if !resolved.is_empty() {
            transition(RunStatus::Waiting, Input::Wake)?;
            for (key, step) in resolved {
                writes.push(Write::PutStep {
                    run: run.clone(),
                    key,
                    step,
                });
            }
            let r = RunningRun {
                event_cursor: cursor,
                ..r
            };
            self.requeue(s, writes, &r, &run, now, now, r.attempt, None);
            return Ok(());
        }
        writes.push(Write::Dequeue {
            ready_at: r.entry.0,
            seq: r.entry.1,
        });
        let wake = specs.iter().filter_map(WaitSpec::wake_at).min();
        let entry = match wake {
            Some(at) => {
                let e = s.enqueue(&run, &r.task, at);
                writes.push(Write::Enqueue(e.clone()));
                Some((e.ready_at, e.seq))
            }
            None => {
                s.entries.remove(&run);
                None
            }
        };
        let state = RunState {
            status: RunStatus::Waiting,
            attempts: r.attempt,
            ready_at: wake,
            started_at: Some(r.started_at),
            ended_at: None,
            output: None,
            error: None,
            entry,
            waits: specs,
            event_cursor: cursor,
        };
        let waiting = WaitingRun::from_state(r.task.clone(), &state);
        if waiting.indexed() {
            writes.push(Write::PutWaiting { run: run.clone() });
            s.index.add(&run, &state.waits, &trigger)?;
            for spec in &state.waits {
                if let WaitSpec::Token { key, token, .. } = spec {
                    let t = crate::model::TokenRecord {
                        run: Some(run.clone()),
                        key: Some(key.clone()),
                        data: None,
                        completed: false,
                    };
                    writes.push(Write::PutToken {
                        id: token.clone(),
                        token: t,
                    });
                }
            }
        }
        writes.push(Write::PutState {
            id: run.clone(),
            state,
        });
        s.waiting.insert(run, waiting);
        Ok(())
    }

    /// Resumes a waiting run whose wait `key` resolved with `step`. False if the run is not
    /// waiting on that key (then nothing is written).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn wake(
        &self,
        s: &mut Sched,
        run: &str,
        key: &str,
        step: StepRecord,
        cursor: Option<u64>,
        now: u64,
        writes: &mut Vec<Write>,
    ) -> bool {
        self.wake_many(s, run, vec![(key.to_string(), step)], cursor, now, writes)
    }

    /// `wake` with several of the run's waits resolved at once (one event answering two
    /// parallel waits of the run); the keys it does not wait on are ignored.
    pub(crate) fn wake_many(
        &self,
        s: &mut Sched,
        run: &str,
        steps: Vec<(String, StepRecord)>,
        cursor: Option<u64>,
        now: u64,
        writes: &mut Vec<Write>,
    ) -> bool {
        let Some(w) = s.waiting.get(run) else {
            return false;
        };
        let steps: Vec<(String, StepRecord)> = steps
            .into_iter()
            .filter(|(k, _)| w.specs.iter().any(|sp| sp.key() == k))
            .collect();
        if steps.is_empty() || transition(RunStatus::Waiting, Input::Wake).is_err() {
            return false;
        }
        let Some(w) = s.waiting.remove(run) else {
            return false;
        };
        s.index.remove(run, &w.specs);
        for (key, step) in steps {
            writes.push(Write::PutStep {
                run: run.to_string(),
                key,
                step,
            });
        }
        if let Some((at, seq)) = w.entry {
            writes.push(Write::Dequeue { ready_at: at, seq });
        }
        if w.indexed() {
            writes.push(Write::DelWaiting {
                run: run.to_string(),
            });
        }
        let e = s.enqueue(run, &w.task, now);
        s.pending_wakes.insert(run.to_string());
        s.wakes_deferred.push(run.to_string());
        writes.push(Write::Enqueue(e.clone()));
        writes.push(Write::PutState {
            id: run.to_string(),
            state: RunState {
                status: RunStatus::Queued,
                attempts: w.attempt,
                ready_at: Some(now),
                started_at: w.started_at,
                ended_at: None,
                output: None,
                error: None,
                entry: Some((e.ready_at, e.seq)),
                waits: Vec::new(),
                event_cursor: w.event_cursor.max(cursor),
            },
        });
        true
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
        let waiting_for_task = !status.is_terminal() && !s.tasks.contains_key(&rec.task);
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
            event: rec.event,
            parent: rec.parent,
            kind: rec.kind,
            priority: rec.flow.as_ref().map(|f| f.priority).filter(|p| *p != 0),
            steps: None,
            waiting_for_task,
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
                wake_at: s.wake_at,
                child: s.child,
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
            if let Some(since) = f.since {
                // Ids carry a time that never goes back and is never before `createdAt`:
                // once it is before `since`, so is every older run. A run whose clock stepped
                // back is skipped, not a reason to stop.
                if id_time(&rec.id) < since {
                    return false;
                }
                if rec.created_at < since {
                    return true;
                }
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
        let now = self.inner.clock.now_ms();
        let store = self.store()?;
        let mut s = self.sched()?;
        s.promote(now);
        // Timers spilled to the store that are due are ready, not delayed (counted there;
        // the claim pages them in).
        let due_spilled = s.count_due_spilled(&*store, now, 100_000)?;
        Ok(Stats {
            ready: s.ready.len() + due_spilled,
            // Live timers only: a cancelled or rescheduled run leaves its old one in the heap.
            delayed: (s
                .timers
                .iter()
                .filter(|t| s.entries.get(&t.1) == Some(&t.0 .0))
                .count()
                + s.spilled)
                .saturating_sub(due_spilled),
            running: s.running.len(),
            waiting: s.waiting.values().filter(|w| w.indexed()).count(),
            waiting_for_task: s.parked.values().map(Vec::len).sum(),
            next_wake_at: s.next_timer(),
            control_due: Self::next_control_wake(&s).is_some_and(|at| at <= now)
                || s.spill_after.is_some_and(|(at, _)| at <= now),
            flow_keys: s.flow.rate_windows.len() + s.flow.throttle_windows.len(),
        })
    }

    /// A graceful shutdown hands back every run this process still holds (executing, or
    /// claimed and not started), as `release` ops: they run again at the next start from
    /// their last stored step, their claim records go, and none counts as a crash (poison
    /// runs count only a process that died). Returns how many it released.
    pub async fn release_all(&self) -> Result<usize> {
        let ops: Vec<Op> = self
            .sched()?
            .running
            .keys()
            .map(|run| Op::Release { run: run.clone() })
            .collect();
        let n = ops.len();
        self.report(ops).await?;
        Ok(n)
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

pub(crate) fn completed_step(output: Json, now: u64) -> StepRecord {
    StepRecord {
        status: StepStatus::Completed,
        attempts: 1,
        output: Some(output),
        error: None,
        ended_at: now,
        wake_at: None,
        child: None,
    }
}

pub(crate) fn failed_step(error: Json, now: u64) -> StepRecord {
    StepRecord {
        status: StepStatus::Failed,
        attempts: 1,
        output: None,
        error: Some(error),
        ended_at: now,
        wake_at: None,
        child: None,
    }
}

/// The parent's `step.invoke` result for a child's outcome.
pub(crate) fn child_step(child: &str, task: &str, out: &Outcome, now: u64) -> StepRecord {
    if out.status == RunStatus::Completed {
        let mut st = completed_step(out.output.clone().unwrap_or_else(json_null), now);
        st.child = Some(child.to_string());
        return st;
    }
    let cause: serde_json::Value = out
        .error
        .as_ref()
        .and_then(|e| serde_json::from_str(e.get()).ok())
        .unwrap_or(serde_json::Value::Null);
    let why = cause
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or(out.status.as_str());
    let task = if task.is_empty() {
        String::new()
    } else {
        format!(" of task \"{task}\"")
    };
    let err = serde_json::json!({
        "name": "DurablyError",
        "code": "E_RUN_FAILED",
        "message": format!("child run {child}{task} {}: {why}", out.status.as_str()),
        "cause": cause,
    });
    let mut st = failed_step(to_raw(&err).unwrap_or_else(|_| json_null()), now);
    st.child = Some(child.to_string());
    st
}

/// Checks a task policy; returns its subscriptions with compiled `if` filters.
pub fn validate_policy(p: &TaskPolicy) -> Result<Vec<(String, Option<expr::Expr>)>> {
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
    if let Some(c) = &p.concurrency {
        flow::check_limit("concurrency.limit", c.limit)?;
    }
    if let Some(t) = &p.throttle {
        flow::check_limit("throttle.limit", t.limit)?;
        flow::check_period("throttle.period", t.period_ms)?;
    }
    if let Some(r) = &p.rate_limit {
        flow::check_limit("rateLimit.limit", r.limit)?;
        flow::check_period("rateLimit.period", r.period_ms)?;
    }
    if let Some(d) = &p.debounce {
        flow::check_period("debounce.period", d.period_ms)?;
        if d.max_wait_ms.is_some_and(|m| m < d.period_ms) {
            return Err(Error::bad_option(
                "debounce.maxWait",
                "must be at least debounce.period",
            ));
        }
    }
    if let Some(sc) = &p.schedule {
        crate::schedule::Pattern::parse("schedule", &sc.cron, &sc.tz)?.check_fires()?;
    }
    flow::KeyExprs::compile(&p.keys)?;
    let mut subs = Vec::new();
    let mut seen = HashSet::new();
    for on in &p.on {
        if on.event.is_empty() || on.event.len() > 256 {
            return Err(Error::bad_option(
                "on",
                "an event name is a string of 1 to 256 characters",
            ));
        }
        let cond = match &on.if_expr {
            Some(src) => Some(expr::parse("on.if", src)?),
            None => None,
        };
        if seen.insert(on.event.clone()) {
            subs.push((on.event.clone(), cond));
        }
    }
    Ok(subs)
}

/// `n` copies of a failure, one per caller.
fn results_err<T>(n: usize, e: &Error) -> Vec<Result<T>> {
    (0..n).map(|_| Err(e.clone())).collect()
}

/// The run id of an op's text (`"run":"run_…"`), read without a JSON parser.
fn run_of(text: &str) -> Option<String> {
    let at = text.find("\"run\":\"")? + 7;
    let id: String = text[at..]
        .chars()
        .take_while(|c| *c != '"' && *c != '\\')
        .collect();
    (!id.is_empty() && id.len() <= 64).then_some(id)
}

/// A step key as the executor reports it: its id, or `id:n` for a repeat.
fn check_step_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 2 * crate::limits::MAX_NAME_BYTES || key.contains('\0') {
        return Err(Error::bad_option(
            "step id",
            "a step id is a string of 1 to 256 bytes without NUL",
        ));
    }
    Ok(())
}

/// The stored form of one of our errors (`{ name, code, message }`).
pub(crate) fn error_json(e: &Error) -> Json {
    let v =
        serde_json::json!({ "name": "DurablyError", "code": e.code(), "message": e.to_string() });
    to_raw(&v).unwrap_or_else(|_| json_null())
}

/// The time a run id (`run_<ulid>`) was made at, in ms (0 if it is not one).
pub(crate) fn id_time(id: &str) -> u64 {
    id.split_once('_')
        .and_then(|(_, u)| ulid::Ulid::from_string(&u.to_ascii_uppercase()).ok())
        .map(|u| u.timestamp_ms())
        .unwrap_or(0)
}

/// Milliseconds since the epoch for a `SystemTime` (used by tests and the binding).
pub fn system_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
