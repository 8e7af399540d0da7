//! The napi-rs binding: converts arguments, calls one engine method, converts the result.
//! No business logic here. Payloads, claims and reports cross as JSON text. Errors cross
//! as `"E_CODE: message"`, which the TS layer turns into a `DurablyError` with `.code`.

use durably_core::engine::{EventIn, ListFilter};
use durably_core::{
    Durability, Engine, EngineOptions, ManualClock, Op, SystemClock, TaskPolicy, TriggerItem,
};
use napi::bindgen_prelude::*;
use napi_derive::napi;

pub mod logs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn js_err(e: durably_core::Error) -> napi::Error {
    napi::Error::from_reason(format!("{}: {}", e.code(), e))
}

/// Text from the JS layer that cannot be read: what users gave (a policy, a schedule) is
/// refused as a bad option, naming what it is.
fn bad_json(what: &str, e: serde_json::Error) -> napi::Error {
    napi::Error::from_reason(format!(
        "E_BAD_OPTION: option `{what}`: cannot be read: {e}"
    ))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v)
        .map_err(|e| napi::Error::from_reason(format!("E_INTERNAL: encode: {e}")))
}

#[napi(object)]
pub struct OpenOptions {
    /// Folder of the sled store; absent for an in-memory store.
    pub data_dir: Option<String>,
    pub concurrency: Option<u32>,
    pub max_payload_bytes: Option<u32>,
    /// 'sync' (default) or 'batched'.
    pub durability: Option<String>,
    pub flush_interval_ms: Option<u32>,
    pub cache_bytes: Option<f64>,
    /// Start a manual clock at this time (ms since epoch) instead of the system clock.
    pub manual_clock_ms: Option<f64>,
    /// Benchmarks only: pause this long after every sync (a stand-in for a slow disk).
    pub sim_sync_delay_ms: Option<u32>,
    /// Tests only: how many timers of parked runs stay in memory (the rest are paged in).
    pub timer_window: Option<u32>,
    /// Crashes in a row while a run ran before it fails with E_RUN_POISONED.
    pub crash_limit: Option<u32>,
    /// How long ended runs are kept (ms); -1: forever.
    pub retention_ms: Option<f64>,
    /// How often the retention pass looks for what is due (ms).
    pub purge_interval_ms: Option<f64>,
}

#[napi]
pub struct NativeEngine {
    engine: Engine,
    manual: Option<Arc<ManualClock>>,
}

/// Parses a duration string ('500ms', '1h30m', '3 days') into milliseconds.
#[napi(catch_unwind)]
pub fn parse_duration(option: String, text: String) -> Result<f64> {
    durably_core::duration::parse_duration(&option, &text)
        .map(|v| v as f64)
        .map_err(js_err)
}

/// Checks a task policy (`{ retry, on }`) without opening anything: bad options fail at
/// `task()` time.
#[napi(catch_unwind)]
pub fn check_policy(policy_json: String) -> Result<()> {
    let policy: TaskPolicy =
        serde_json::from_str(&policy_json).map_err(|e| bad_json("task policy", e))?;
    durably_core::engine::validate_policy(&policy)
        .map(|_| ())
        .map_err(js_err)
}

/// Parses an `if` expression, for errors at the call that gives it.
#[napi(catch_unwind)]
pub fn check_expression(option: String, src: String) -> Result<()> {
    durably_core::expr::parse(&option, &src)
        .map(|_| ())
        .map_err(js_err)
}

/// Every error code the core produces (docs/errors.md documents each).
#[napi]
pub fn error_codes() -> Vec<String> {
    durably_core::Error::CODES
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// `NativeEngine.open` off the JS thread: opening a large store (recovery) or a folder a
/// handle of this process just released (sled frees its lock a moment later) takes time the
/// event loop must not spend waiting.
#[napi]
pub async fn open_engine(opts: OpenOptions) -> Result<NativeEngine> {
    match tokio::task::spawn_blocking(move || {
        std::panic::catch_unwind(move || NativeEngine::open(opts))
    })
    .await
    {
        Ok(Ok(res)) => res,
        Ok(Err(_)) => Err(napi::Error::from_reason(
            "E_INTERNAL: opening the store panicked (this is a bug in durably, please report it)",
        )),
        Err(e) => Err(napi::Error::from_reason(format!(
            "E_INTERNAL: the open task failed: {e}"
        ))),
    }
}

#[napi]
impl NativeEngine {
    /// Opens the store (sled in `dataDir`, or memory) and recovers every unfinished run.
    #[napi(factory, catch_unwind)]
    pub fn open(opts: OpenOptions) -> Result<NativeEngine> {
        let durability = match opts.durability.as_deref() {
            None | Some("sync") => Durability::Sync,
            Some("batched") => Durability::Batched {
                interval_ms: opts.flush_interval_ms.unwrap_or(100) as u64,
            },
            Some(other) => {
                return Err(js_err(durably_core::Error::bad_option(
                    "durability",
                    format!("{other:?} is not one of 'sync', 'batched'"),
                )))
            }
        };
        let defaults = EngineOptions::default();
        let eo = EngineOptions {
            concurrency: opts
                .concurrency
                .map(|c| c as usize)
                .unwrap_or(defaults.concurrency),
            max_payload_bytes: opts
                .max_payload_bytes
                .map(|c| c as usize)
                .unwrap_or(defaults.max_payload_bytes),
            durability,
            sim_sync_delay_ms: opts.sim_sync_delay_ms.unwrap_or(0) as u64,
            timer_window: opts
                .timer_window
                .map(|w| w as usize)
                .unwrap_or(defaults.timer_window),
            crash_limit: opts.crash_limit.unwrap_or(defaults.crash_limit),
            retention_ms: match opts.retention_ms {
                None => defaults.retention_ms,
                Some(ms) if ms < 0.0 => None,
                Some(ms) => Some(ms as u64),
            },
            purge_interval_ms: opts
                .purge_interval_ms
                .map(|ms| ms.max(1.0) as u64)
                .unwrap_or(defaults.purge_interval_ms),
        };
        let store = match &opts.data_dir {
            Some(dir) => durably_core::open_sled(
                &PathBuf::from(dir),
                opts.cache_bytes.map(|b| b.max(0.0) as u64),
            ),
            None => durably_core::open_memory(),
        }
        .map_err(js_err)?;
        let (clock, manual): (Arc<dyn durably_core::Clock>, _) = match opts.manual_clock_ms {
            Some(ms) => {
                let m = Arc::new(ManualClock::new(ms.max(0.0) as u64));
                (m.clone(), Some(m))
            }
            None => (Arc::new(SystemClock), None),
        };
        let engine = Engine::open(store, clock, eo).map_err(js_err)?;
        Ok(NativeEngine { engine, manual })
    }

    #[napi(catch_unwind)]
    pub fn register_task(&self, id: String, policy_json: String) -> Result<()> {
        let policy: TaskPolicy =
            serde_json::from_str(&policy_json).map_err(|e| bad_json("task policy", e))?;
        self.engine.register_task(&id, policy).map_err(js_err)
    }

    /// Forgets a task (development: removed from an edited module); false if it was unknown.
    #[napi(catch_unwind)]
    pub fn unregister_task(&self, id: String) -> Result<bool> {
        self.engine.unregister_task(&id).map_err(js_err)
    }

    /// `groups`: one JSON text per group, `[{task, payload, delayMs?, runAt?, tags?}, …]`.
    /// Resolves with one entry per group: `{ ids }` or `{ error: "E_CODE: message" }`.
    #[napi]
    pub async fn trigger(&self, groups: Vec<String>) -> Result<String> {
        // Each group is parsed on its own, so that one malformed group fails alone.
        let mut slots: Vec<std::result::Result<usize, String>> = Vec::with_capacity(groups.len());
        let mut parsed: Vec<Vec<TriggerItem>> = Vec::new();
        for g in &groups {
            match serde_json::from_str::<Vec<TriggerItem>>(g) {
                Ok(items) => {
                    slots.push(Ok(parsed.len()));
                    parsed.push(items);
                }
                Err(e) => slots.push(Err(format!(
                    "E_BAD_OPTION: option `trigger`: malformed trigger request: {e}"
                ))),
            }
        }
        let mut results = self
            .engine
            .trigger(parsed)
            .await
            .into_iter()
            .map(Some)
            .collect::<Vec<_>>();
        let out: Vec<serde_json::Value> = slots
            .into_iter()
            .map(|slot| match slot {
                Ok(i) => match results[i].take() {
                    Some(Ok(ids)) => serde_json::json!({ "ids": ids }),
                    Some(Err(e)) => serde_json::json!({ "error": format!("{}: {}", e.code(), e) }),
                    None => serde_json::json!({ "error": "E_INTERNAL: missing result" }),
                },
                Err(msg) => serde_json::json!({ "error": msg }),
            })
            .collect();
        to_json(&out)
    }

    /// `groups`: one JSON text per `send()` call, `[{ id?, name, data?, ts? }, …]`. Resolves
    /// with one entry per group: `{ ids }` or `{ error: "E_CODE: message" }`; a group that
    /// cannot be read fails alone.
    #[napi]
    pub async fn send(&self, groups: Vec<String>) -> Result<String> {
        let mut slots: Vec<std::result::Result<usize, String>> = Vec::with_capacity(groups.len());
        let mut parsed: Vec<Vec<EventIn>> = Vec::new();
        for g in &groups {
            match serde_json::from_str::<Vec<EventIn>>(g) {
                Ok(events) => {
                    slots.push(Ok(parsed.len()));
                    parsed.push(events);
                }
                Err(e) => slots.push(Err(format!(
                    "E_BAD_OPTION: option `events`: malformed events: {e}"
                ))),
            }
        }
        let mut results: Vec<_> = self
            .engine
            .send_groups(parsed)
            .await
            .into_iter()
            .map(Some)
            .collect();
        let out: Vec<serde_json::Value> = slots
            .into_iter()
            .map(|slot| match slot {
                Ok(i) => match results[i].take() {
                    Some(Ok(ids)) => serde_json::json!({ "ids": ids }),
                    Some(Err(e)) => serde_json::json!({ "error": format!("{}: {}", e.code(), e) }),
                    None => serde_json::json!({ "error": "E_INTERNAL: missing result" }),
                },
                Err(msg) => serde_json::json!({ "error": msg }),
            })
            .collect();
        to_json(&out)
    }

    /// Completes a token with `dataJson`; resolves with whether a waiting run resumed.
    #[napi]
    pub async fn complete_token(&self, token: String, data_json: String) -> Result<bool> {
        let data = serde_json::value::RawValue::from_string(data_json)
            .map_err(|e| bad_json("token data", e))?;
        self.engine
            .complete_token(&token, data)
            .await
            .map_err(js_err)
    }

    /// Resolves with `{ runs, abort? }` (JSON): runs to execute and running runs to abort;
    /// null once the engine closes.
    #[napi]
    pub async fn claim(&self, max: u32) -> Result<Option<String>> {
        match self.engine.claim(max as usize).await.map_err(js_err)? {
            Some(c) => Ok(Some(to_json(&c)?)),
            None => Ok(None),
        }
    }

    /// Makes the pending claim return now: the executor has more room than it asked for.
    #[napi]
    pub fn kick(&self) {
        self.engine.kick();
    }

    /// Cancels a run; resolves with false if it had already ended.
    #[napi]
    pub async fn cancel(&self, id: String) -> Result<bool> {
        self.engine.cancel(&id).await.map_err(js_err)
    }

    /// Starts a new run with the same task and payload; resolves with its id.
    #[napi]
    pub async fn replay(&self, id: String) -> Result<String> {
        self.engine.replay(&id).await.map_err(js_err)
    }

    /// Creates or updates (same task + externalId) a schedule; resolves with it (JSON).
    #[napi]
    pub async fn create_schedule(&self, json: String) -> Result<String> {
        let input: durably_core::schedule::ScheduleIn =
            serde_json::from_str(&json).map_err(|e| bad_json("schedule", e))?;
        to_json(&self.engine.create_schedule(input).await.map_err(js_err)?)
    }

    /// Every schedule (of one task when given), as JSON.
    #[napi(catch_unwind)]
    pub fn list_schedules(&self, task: Option<String>) -> Result<String> {
        to_json(
            &self
                .engine
                .list_schedules(task.as_deref())
                .map_err(js_err)?,
        )
    }

    /// Deletes a schedule; resolves with false if there was none with this id.
    #[napi]
    pub async fn delete_schedule(&self, id: String) -> Result<bool> {
        self.engine.delete_schedule(&id).await.map_err(js_err)
    }

    /// Writes and syncs a few bytes: rejects if the store does not take writes.
    #[napi]
    pub async fn probe(&self) -> Result<()> {
        self.engine.probe().await.map_err(js_err)
    }

    /// Resolves once every write queued so far is durable and applied.
    #[napi]
    pub async fn flush(&self) -> Result<()> {
        self.engine.flush().await.map_err(js_err)
    }

    /// Re-opens a failed run from its failed step.
    #[napi]
    pub async fn retry(&self, id: String) -> Result<()> {
        self.engine.retry(&id).await.map_err(js_err)
    }

    /// Applies ops, one JSON text each; resolves once they are durable.
    #[napi]
    pub async fn report(&self, ops: Vec<String>) -> Result<()> {
        let ops = Op::parse_each(ops.iter().map(String::as_str));
        self.engine.report(ops).await.map_err(js_err)
    }

    #[napi]
    pub async fn wait_result(&self, id: String, timeout_ms: Option<f64>) -> Result<String> {
        let timeout = timeout_ms.map(|t| Duration::from_millis(t.max(0.0) as u64));
        let out = self
            .engine
            .wait_result(&id, timeout)
            .await
            .map_err(js_err)?;
        to_json(&out)
    }

    #[napi(catch_unwind)]
    pub fn get_run(&self, id: String) -> Result<Option<String>> {
        match self.engine.get_run(&id).map_err(js_err)? {
            Some(v) => Ok(Some(to_json(&v)?)),
            None => Ok(None),
        }
    }

    #[napi(catch_unwind)]
    pub fn list_runs(&self, filter_json: String) -> Result<String> {
        let f: ListFilter = serde_json::from_str(&filter_json).map_err(|e| {
            js_err(durably_core::Error::bad_option(
                "runs.list",
                format!("bad filter: {e}"),
            ))
        })?;
        to_json(&self.engine.list_runs(f).map_err(js_err)?)
    }

    #[napi(catch_unwind)]
    pub fn stats(&self) -> Result<String> {
        to_json(&self.engine.stats().map_err(js_err)?)
    }

    /// The store failure that stopped the engine ("E_CODE: message"), if one did: it decides
    /// nothing more until the store is reopened.
    #[napi]
    pub fn failure(&self) -> Option<String> {
        self.engine
            .failure()
            .map(|e| format!("{}: {}", e.code(), e))
    }

    #[napi]
    pub fn now(&self) -> f64 {
        self.engine.clock().now_ms() as f64
    }

    /// Manual clock only: moves time forward by `ms`.
    #[napi]
    pub fn advance(&self, ms: f64) -> Result<()> {
        let m = self.manual.as_ref().ok_or_else(|| {
            napi::Error::from_reason("E_BAD_OPTION: advance() needs a manual clock")
        })?;
        m.advance(ms.max(0.0) as u64);
        Ok(())
    }

    /// Manual clock only: sets the time (backwards too).
    #[napi]
    pub fn set_time(&self, ms: f64) -> Result<()> {
        let m = self.manual.as_ref().ok_or_else(|| {
            napi::Error::from_reason("E_BAD_OPTION: setTime() needs a manual clock")
        })?;
        m.set(ms.max(0.0) as u64);
        Ok(())
    }

    /// Shutdown: hands back every run still held (they replay at the next start and count
    /// as no crash); resolves with how many, once durable.
    #[napi]
    pub async fn release_all(&self) -> Result<u32> {
        let n = self.engine.release_all().await.map_err(js_err)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Settles a pending claim, commits and syncs everything, releases the data folder.
    #[napi(catch_unwind)]
    pub fn close(&self) {
        self.engine.close();
    }
}

// sled and the claim/report path allocate many small buffers; the system allocator took
// about 30% of CPU samples in the W2 profile (bench/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's option enum (the same index in v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// durably lives in the app's own server process, so memory it frees goes back to the OS at
/// once instead of after mimalloc v3's default 1 s: after a burst (100k runs parked on
/// sleeps) that is ~35% less RSS (bench W5), at a cost within the noise of W2/W4.
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
#[napi_derive::module_init]
fn init() {
    logs::install();
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option; mimalloc allows this at any time, from any thread.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

/// Test hook: panics inside Rust, so tests can prove a panic becomes a JS error (never an
/// abort of the process). Not part of the public API.
#[napi(catch_unwind, js_name = "__panicForTests")]
pub fn panic_for_tests(message: String) -> Result<()> {
    panic!("{message}");
}

/// Test hook: the same inside an async call (napi rejects its promise).
#[napi(js_name = "__panicForTestsAsync")]
pub async fn panic_for_tests_async(message: String) -> Result<()> {
    if !message.is_empty() {
        panic!("{message}");
    }
    Ok(())
}
