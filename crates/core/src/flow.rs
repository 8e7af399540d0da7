//! Flow control, decided in the scheduler before JS is called (DESIGN §3.5):
//!
//! - `concurrency` — at most `limit` runs of a task (per key) *executing*; runs over the
//!   limit wait in a per-key queue and move up when a run of the key leaves `running`
//!   (parked runs hold no slot);
//! - `throttle` — at most `limit + burst` starts per key in any sliding window of `period`;
//!   excess waits in FIFO order (never dropped) until the window has room;
//! - `rateLimit` — at most `limit` triggers per key per sliding `period`; excess runs are
//!   recorded `skipped` and never execute;
//! - `debounce` — one run per quiet `period` per key, postponed by each trigger (up to
//!   `maxWait` after the first); trailing keeps the last payload, leading the first;
//! - `singleton` — one active run per key: a new trigger is skipped, or cancels the active run;
//! - `priority` — higher starts first among ready runs.
//!
//! Keys are strings computed in JS from the payload at trigger time. The per-run keys
//! (`Flow`) are stored with the run and in its queue entry, so recovery restores them.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Concurrency {
    pub limit: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Throttle {
    pub limit: u32,
    pub period_ms: u64,
    #[serde(default)]
    pub burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    pub limit: u32,
    pub period_ms: u64,
}

/// The keys a task gives as expressions (`concurrency: { key: 'event.data.accountId' }`),
/// in the `if` language, evaluated over the run's event (`{ data: payload }` for a direct
/// trigger) when it is triggered. Sources as given, compiled at registration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyExprSources {
    #[serde(default)]
    pub concurrency: Option<String>,
    #[serde(default)]
    pub throttle: Option<String>,
    #[serde(default)]
    pub rate_limit: Option<String>,
    #[serde(default)]
    pub debounce: Option<String>,
    #[serde(default)]
    pub singleton: Option<String>,
}

/// `KeyExprSources`, compiled.
#[derive(Debug, Clone, Default)]
pub struct KeyExprs {
    pub concurrency: Option<crate::expr::Expr>,
    pub throttle: Option<crate::expr::Expr>,
    pub rate_limit: Option<crate::expr::Expr>,
    pub debounce: Option<crate::expr::Expr>,
    pub singleton: Option<crate::expr::Expr>,
}

impl KeyExprs {
    pub fn compile(src: &KeyExprSources) -> Result<KeyExprs> {
        let c = |option: &str, s: &Option<String>| -> Result<Option<crate::expr::Expr>> {
            s.as_deref()
                .map(|s| crate::expr::parse(option, s))
                .transpose()
        };
        Ok(KeyExprs {
            concurrency: c("concurrency.key", &src.concurrency)?,
            throttle: c("throttle.key", &src.throttle)?,
            rate_limit: c("rateLimit.key", &src.rate_limit)?,
            debounce: c("debounce.key", &src.debounce)?,
            singleton: c("singleton.key", &src.singleton)?,
        })
    }
    pub fn is_empty(&self) -> bool {
        self.concurrency.is_none()
            && self.throttle.is_none()
            && self.rate_limit.is_none()
            && self.debounce.is_none()
            && self.singleton.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum DebounceMode {
    #[default]
    Trailing,
    Leading,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Debounce {
    pub period_ms: u64,
    #[serde(default)]
    pub max_wait_ms: Option<u64>,
    #[serde(default)]
    pub mode: DebounceMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SingletonMode {
    Skip,
    Cancel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Singleton {
    pub mode: SingletonMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Timeout {
    #[serde(default)]
    pub start_ms: Option<u64>,
    #[serde(default)]
    pub finish_ms: Option<u64>,
}

/// An event that cancels a run (`cancelOn`), with its match value taken from the payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelOn {
    pub event: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub if_expr: Option<String>,
    /// The cancellation applies until then (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
}

/// The flow-control facts of one run, fixed at trigger time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flow {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub singleton_key: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cancel_on: Vec<CancelOn>,
    /// Cancelled if not started by then (`timeout.start`, or the trigger's `ttl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_by: Option<u64>,
    /// Fails this long after its first start (`timeout.finish`); retries do not extend it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_ms: Option<u64>,
    /// The debounce key of a debounced run, and when its burst began (restored on open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce_first: Option<u64>,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

impl Flow {
    pub fn is_default(&self) -> bool {
        *self == Flow::default()
    }
}

pub fn check_limit(option: &str, limit: u32) -> Result<()> {
    if limit == 0 {
        return Err(Error::bad_option(option, "must be at least 1"));
    }
    Ok(())
}

pub fn check_period(option: &str, ms: u64) -> Result<()> {
    if ms == 0 {
        return Err(Error::bad_option(option, "must be longer than 0 ms"));
    }
    Ok(())
}

/// A sliding window of event times (starts or triggers) for one key.
#[derive(Debug, Default)]
pub struct Window {
    times: VecDeque<u64>,
}

impl Window {
    fn prune(&mut self, now: u64, period: u64) {
        // After the wall clock stepped back, a start "in the future" counts as now: the
        // window then holds at most one period, not the size of the step.
        if self.times.back().is_some_and(|&t| t > now) {
            for t in self.times.iter_mut() {
                *t = (*t).min(now);
            }
        }
        while self.times.front().is_some_and(|&t| t + period <= now) {
            self.times.pop_front();
        }
    }
    /// Whether one more fits (`cap` per `period`) at `now`.
    pub fn has_room(&mut self, now: u64, period: u64, cap: usize) -> bool {
        self.prune(now, period);
        self.times.len() < cap
    }
    /// Records one at `now`; true if the window was empty (then it needs an expiry).
    pub fn record(&mut self, now: u64) -> bool {
        let was_empty = self.times.is_empty();
        self.times.push_back(now);
        was_empty
    }
    /// When the window next has room (assuming it is full now).
    pub fn next_room(&self, period: u64) -> u64 {
        self.times.front().map(|t| t + period).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }
}

/// (task, key)
pub type FlowKey = (String, String);

#[derive(Debug)]
pub struct Debounced {
    pub run: String,
    pub first_at: u64,
    /// The run's record as last written (trailing mode rewrites its payload).
    pub record: Option<crate::model::RunRecord>,
}

/// The in-memory state of flow control (rebuilt as runs flow; windows restart empty).
#[derive(Default)]
pub struct FlowState {
    /// Runs executing per concurrency key.
    pub executing: HashMap<FlowKey, usize>,
    /// Runs over their concurrency limit, oldest first.
    pub blocked: HashMap<FlowKey, VecDeque<crate::model::QueueEntry>>,
    /// Starts per throttle key, and the runs waiting for room (FIFO).
    pub throttle_windows: HashMap<FlowKey, Window>,
    pub throttled: HashMap<FlowKey, VecDeque<crate::model::QueueEntry>>,
    /// Runs released from a throttle queue: their start is already counted.
    pub throttle_passed: std::collections::HashSet<String>,
    /// When each throttled key next has room, soonest first.
    pub throttle_timers: std::collections::BinaryHeap<std::cmp::Reverse<(u64, FlowKey)>>,
    /// Triggers per rate-limit key.
    pub rate_windows: HashMap<FlowKey, Window>,
    /// When each non-empty window (throttle or rate limit) may have emptied: `(at, rate?,
    /// key, period)`. Windows are dropped once empty, so a key costs nothing after its
    /// period (keys are often per user or per account: without this they added up forever).
    pub window_expiry: std::collections::BinaryHeap<std::cmp::Reverse<(u64, bool, FlowKey, u64)>>,
    /// The pending (not yet started) run of each debounce key.
    pub debounced: HashMap<FlowKey, Debounced>,
    /// The active run of each singleton key.
    pub singletons: HashMap<FlowKey, String>,
    /// Runs moved up for a freed concurrency slot that have not taken it yet, with the key.
    pub moved_up: HashMap<String, FlowKey>,
}

impl FlowKeys {
    /// Keys are names (1 to 256 bytes, no NUL); `cancelOn` filters must parse.
    pub fn check(&self) -> Result<()> {
        let keys = [
            ("concurrencyKey", &self.concurrency_key),
            ("throttle.key", &self.throttle_key),
            ("rateLimit.key", &self.rate_limit_key),
            ("debounce.key", &self.debounce_key),
            ("singleton.key", &self.singleton_key),
            ("idempotencyKey", &self.idempotency_key),
        ];
        for (option, k) in keys {
            if let Some(k) = k {
                if k.len() > crate::limits::MAX_NAME_BYTES || k.contains('\0') {
                    return Err(Error::bad_option(
                        option,
                        format!(
                            "a key is a string of at most {} bytes without NUL",
                            crate::limits::MAX_NAME_BYTES
                        ),
                    ));
                }
            }
        }
        for (i, c) in self.cancel_on.iter().enumerate() {
            crate::limits::check_name(&format!("cancelOn[{i}].event"), "an event name", &c.event)?;
            if let Some(src) = &c.if_expr {
                crate::expr::parse(&format!("cancelOn[{i}].if"), src)?;
            }
        }
        Ok(())
    }
}

impl FlowState {
    /// Records a start (throttle) or a trigger (rate limit) in its key's window.
    pub fn record(&mut self, rate: bool, key: &FlowKey, now: u64, period: u64) {
        let windows = if rate {
            &mut self.rate_windows
        } else {
            &mut self.throttle_windows
        };
        if windows.entry(key.clone()).or_default().record(now) {
            self.window_expiry.push(std::cmp::Reverse((
                now.saturating_add(period),
                rate,
                key.clone(),
                period,
            )));
        }
    }

    /// Drops the windows that have emptied by `now`.
    pub fn expire_windows(&mut self, now: u64) {
        while let Some(std::cmp::Reverse((at, rate, key, period))) =
            self.window_expiry.peek().cloned()
        {
            if at > now {
                break;
            }
            self.window_expiry.pop();
            let windows = if rate {
                &mut self.rate_windows
            } else {
                &mut self.throttle_windows
            };
            let Some(w) = windows.get_mut(&key) else {
                continue;
            };
            w.prune(now, period);
            match w.times.front() {
                None => {
                    windows.remove(&key);
                }
                Some(&first) => self.window_expiry.push(std::cmp::Reverse((
                    first.saturating_add(period).max(now + 1),
                    rate,
                    key,
                    period,
                ))),
            }
        }
    }
}

/// The flow-control keys of one trigger, computed in JS from the payload.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowKeys {
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
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    #[serde(default)]
    pub cancel_on: Vec<CancelOn>,
}
