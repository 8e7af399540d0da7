//! The records the engine persists. Payloads, outputs and errors are JSON text the core
//! stores without interpreting (`RawValue`), so they cross the JS boundary as bytes.
//!
//! A run is split in two records so that a status change never rewrites the payload:
//! `RunRecord` is written once at trigger time; `RunState` is the mutable part, absent
//! until the run first changes state after its trigger.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub type Json = Box<RawValue>;

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
    /// When the run first becomes ready (later than `created_at` for a delayed trigger).
    pub ready_at: u64,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Json>,
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
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StepRecord {
    pub status: StepStatus,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Json>,
    pub ended_at: u64,
}

/// A run is a row of the ready/timer index until it ends: `(ready_at, seq)` orders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub ready_at: u64,
    pub seq: u64,
    pub id: String,
    pub task: String,
}
