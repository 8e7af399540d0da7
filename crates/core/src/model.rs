//! The records the engine persists. Payloads, outputs and errors are JSON text the core
//! stores without interpreting (`RawValue`), so they cross the JS boundary as bytes.
//!
//! A run is split in two records so that a status change never rewrites the payload:
//! `RunRecord` is written once at trigger time; `RunState` is the mutable part, absent
//! until the run first changes state after its trigger.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub type Json = Box<RawValue>;

/// A sequence number, also from its schema-1 form `[ts, seq]` (`store/migrate.rs` rewrites
/// the ones that still matter; this keeps the others readable).
fn seq_or_pair<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Seq {
        One(u64),
        Pair([u64; 2]),
    }
    Ok(Option::<Seq>::deserialize(d)?.map(|s| match s {
        Seq::One(n) | Seq::Pair([_, n]) => n,
    }))
}

/// A present JSON value, `null` included, is `Some` (serde would read `null` as `None`).
fn some_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Json>, D::Error> {
    Json::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Delayed,
    Queued,
    Running,
    Waiting,
    Completed,
    Failed,
    Cancelled,
    Skipped,
}

impl RunStatus {
    pub const ALL: [RunStatus; 8] = [
        RunStatus::Delayed,
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Waiting,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Skipped,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Delayed => "delayed",
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Skipped => "skipped",
        }
    }
    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled | RunStatus::Skipped
        )
    }
}

/// Written once, when the run is triggered.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub task: String,
    pub payload: Json,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub created_at: u64,
    /// The event sequence number when the run was created: its waits (`since: 'run-start'`)
    /// match events after it. An event-triggered run's is just before its event.
    #[serde(default)]
    pub created_seq: u64,
    /// When the run first becomes ready (later than `created_at` for a delayed trigger).
    pub ready_at: u64,
    /// The event that started the run (`{ id, name, data, ts }`), for event-triggered runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Json>,
    /// The run and step that invoked this run (`step.invoke`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRef>,
    /// Flow-control keys and limits fixed at trigger time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<crate::flow::Flow>,
    /// `"onFailure"` for the run that calls a task's `onFailure` after another run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// For an `onFailure` run: the failed run's id and error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Json>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRef {
    pub run: String,
    pub key: String,
}

/// The mutable part of a run. Absent in the store until the first state change after
/// the trigger; `RunState::initial` gives what it means then.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunState {
    pub status: RunStatus,
    /// Run-level attempts started (code outside steps shares this budget).
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
    #[serde(
        default,
        deserialize_with = "some_json",
        skip_serializing_if = "Option::is_none"
    )]
    pub output: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Json>,
    /// The run's queue index entry `(ready_at, seq)` while it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<(u64, u64)>,
    /// While `waiting`: the waits that can resume it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waits: Vec<WaitSpec>,
    /// The sequence number of the newest event a wait of this run consumed: later waits
    /// match only events after it (or after the run's creation).
    #[serde(
        default,
        deserialize_with = "seq_or_pair",
        skip_serializing_if = "Option::is_none"
    )]
    pub event_cursor: Option<u64>,
}

impl RunState {
    pub fn initial(rec: &RunRecord) -> RunState {
        RunState {
            status: if rec.ready_at > rec.created_at {
                RunStatus::Delayed
            } else {
                RunStatus::Queued
            },
            attempts: 0,
            ready_at: Some(rec.ready_at),
            started_at: None,
            ended_at: None,
            output: None,
            error: None,
            entry: None,
            waits: Vec::new(),
            event_cursor: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Succeeded; `output` is memoized and returned on every replay.
    Completed,
    /// Failed for good (non-retriable or out of attempts); replays throw `error`.
    Failed,
    /// Failed `attempts` times so far; the run is delayed until the next attempt.
    Retrying,
    /// A durable wait (sleep, event, token, child run) not yet resolved; `wake_at` is its
    /// deadline (the sleep's end or the wait's timeout), if any.
    Waiting,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub status: StepStatus,
    pub attempts: u32,
    #[serde(
        default,
        deserialize_with = "some_json",
        skip_serializing_if = "Option::is_none"
    )]
    pub output: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Json>,
    pub ended_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<u64>,
    /// The child run of a `step.invoke`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<String>,
}

/// What a waiting step waits for. Kept in the run's state and in the wait indexes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum WaitSpec {
    /// `step.sleep` / `step.sleepUntil`: resolves at `wake_at`.
    #[serde(rename_all = "camelCase")]
    Sleep { key: String, wake_at: u64 },
    /// `step.waitForEvent`: the first event named one of `events` whose value at `path`
    /// equals `value` (canonical JSON) and that satisfies `if`; `null` at `wake_at`.
    #[serde(rename_all = "camelCase")]
    Event {
        key: String,
        events: Vec<String>,
        #[serde(default)]
        path: String,
        #[serde(default)]
        value: String,
        #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
        if_expr: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wake_at: Option<u64>,
        /// Match events from the run's creation (`false`: only events after the wait).
        #[serde(default = "yes")]
        since_run_start: bool,
        /// Set by the engine: only events with a sequence number after this match.
        #[serde(
            default,
            deserialize_with = "seq_or_pair",
            skip_serializing_if = "Option::is_none"
        )]
        after: Option<u64>,
    },
    /// `step.waitForToken`: `tokens.complete(token, data)`; `null` at `wake_at`.
    #[serde(rename_all = "camelCase")]
    Token {
        key: String,
        token: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wake_at: Option<u64>,
    },
    /// `step.invoke`: the child run's outcome.
    #[serde(rename_all = "camelCase")]
    Child { key: String, child: String },
}

fn yes() -> bool {
    true
}

impl WaitSpec {
    pub fn key(&self) -> &str {
        match self {
            WaitSpec::Sleep { key, .. }
            | WaitSpec::Event { key, .. }
            | WaitSpec::Token { key, .. }
            | WaitSpec::Child { key, .. } => key,
        }
    }
    pub fn wake_at(&self) -> Option<u64> {
        match self {
            WaitSpec::Sleep { wake_at, .. } => Some(*wake_at),
            WaitSpec::Event { wake_at, .. } | WaitSpec::Token { wake_at, .. } => *wake_at,
            WaitSpec::Child { .. } => None,
        }
    }
}

/// A stored event. `seq` orders events (and wait cursors): it comes from one persistent,
/// strictly increasing counter, so a wall clock that steps back never reorders them. `ts`
/// is the time the sender gave (or the ingestion time): shown, never compared.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: String,
    pub name: String,
    pub data: Json,
    pub ts: u64,
    pub seq: u64,
}

/// A token of `step.createToken`: who waits for it, or the data it was completed with
/// before anyone waited.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(
        default,
        deserialize_with = "some_json",
        skip_serializing_if = "Option::is_none"
    )]
    pub data: Option<Json>,
    #[serde(default)]
    pub completed: bool,
}

/// A run is a row of the ready/timer index until it ends: `(ready_at, seq)` orders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub ready_at: u64,
    pub seq: u64,
    pub id: String,
    pub task: String,
}
