//! Flow control in the scheduler (DESIGN §3.5), through the public API only, as the JS
//! executor drives it: trigger runs, `try_claim` / `try_claim_batch` what is due, `report`
//! ops. Time is a `ManualClock` at a fixed epoch that moves only when a test moves it, so
//! every window and deadline is checked to the millisecond; nothing sleeps in real time
//! (`GUARD` only stops a hang).

use durably_core::engine::{Claimed, Outcome};
use durably_core::model::RunStatus;
use durably_core::{open_memory, open_sled, Engine, EngineOptions, ManualClock, Op, TaskPolicy};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout;

/// 2023-11-14T22:13:20Z: every test starts here.
const EPOCH: u64 = 1_700_000_000_000;
const MIN: u64 = 60_000;
/// Real time allowed for something that must happen at once; only a guard against hangs.
const GUARD: Duration = Duration::from_secs(5);

fn memory_engine() -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let engine = Engine::open(
        open_memory().unwrap(),
        clock.clone(),
        EngineOptions::default(),
    )
    .unwrap();
    (engine, clock)
}

fn sled_engine(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Engine {
    let store = open_sled(dir, None).unwrap();
    Engine::open(store, clock.clone(), EngineOptions::default()).unwrap()
}

/// A task policy in its wire form, e.g. `{"concurrency": {"limit": 1}}`.
fn policy(wire: Value) -> TaskPolicy {
    serde_json::from_value(wire).unwrap()
}

/// Triggers one run per wire item, in one durable commit; returns their ids in order.
async fn trigger_all(engine: &Engine, items: Vec<Value>) -> Vec<String> {
    let items = items
        .into_iter()
        .map(|w| serde_json::from_value(w).unwrap())
        .collect();
    let mut results = engine.trigger(vec![items]).await;
    results.remove(0).expect("the trigger is accepted")
}

async fn trigger(engine: &Engine, wire: Value) -> String {
    trigger_all(engine, vec![wire]).await.remove(0)
}

/// Reports ops in their wire form (`[{"op":"complete","run":…,"output":1}]`).
async fn report(engine: &Engine, ops: Value) {
    let ops = Op::parse_batch(&ops.to_string()).unwrap();
    engine.report(ops).await.unwrap();
}

async fn complete(engine: &Engine, id: &str) {
    report(
        engine,
        json!([{"op": "complete", "run": id, "output": null}]),
    )
    .await;
}

fn ids(claimed: &[Claimed]) -> Vec<&str> {
    claimed.iter().map(|c| c.id.as_str()).collect()
}

fn claim_ids(engine: &Engine) -> Vec<String> {
    let claimed = engine.try_claim(100).unwrap();
    ids(&claimed).into_iter().map(String::from).collect()
}

fn status(engine: &Engine, id: &str) -> RunStatus {
    engine.get_run(id).unwrap().expect("the run exists").status
}

async fn outcome(engine: &Engine, id: &str) -> Outcome {
    timeout(GUARD, engine.wait_result(id, None))
        .await
        .expect("the run has ended")
        .unwrap()
}

fn error_code(out: &Outcome) -> String {
    let err: Value = serde_json::from_str(out.error.as_ref().expect("an error").get()).unwrap();
    err["code"].as_str().unwrap_or_default().to_string()
}

// --- concurrency --------------------------------------------------------------------------

#[tokio::test]
async fn concurrency_per_key_is_never_exceeded_and_keys_run_side_by_side() {
    let (engine, _clock) = memory_engine();
    engine
        .register_task("t", policy(json!({"concurrency": {"limit": 1}})))
        .unwrap();
    let runs = trigger_all(
        &engine,
        vec![
            json!({"task": "t", "payload": 0, "concurrencyKey": "a"}),
            json!({"task": "t", "payload": 1, "concurrencyKey": "a"}),
            json!({"task": "t", "payload": 2, "concurrencyKey": "b"}),
            json!({"task": "t", "payload": 3, "concurrencyKey": "a"}),
        ],
    )
    .await;

    assert_eq!(claim_ids(&engine), [runs[0].as_str(), runs[2].as_str()]);
    assert!(claim_ids(&engine).is_empty(), "key a already has its run");
    assert_eq!(status(&engine, &runs[1]), RunStatus::Queued);
    assert_eq!(status(&engine, &runs[3]), RunStatus::Queued);
}

#[tokio::test]
async fn a_blocked_run_starts_when_a_slot_of_its_key_frees() {
    let (engine, _clock) = memory_engine();
    engine
        .register_task("t", policy(json!({"concurrency": {"limit": 1}})))
        .unwrap();
    let runs = trigger_all(
        &engine,
        vec![
            json!({"task": "t", "payload": 0, "concurrencyKey": "a"}),
            json!({"task": "t", "payload": 1, "concurrencyKey": "a"}),
            json!({"task": "t", "payload": 2, "concurrencyKey": "a"}),
        ],
    )
    .await;
    assert_eq!(claim_ids(&engine), [runs[0].as_str()]);

    complete(&engine, &runs[0]).await;
    assert_eq!(
        claim_ids(&engine),
        [runs[1].as_str()],
        "the oldest blocked run moves up"
    );
    assert!(claim_ids(&engine).is_empty());
    complete(&engine, &runs[1]).await;
    assert_eq!(claim_ids(&engine), [runs[2].as_str()]);
}

#[tokio::test]
async fn cancelling_a_blocked_run_does_not_stall_the_runs_behind_it() {
    let (engine, _clock) = memory_engine();
    engine
        .register_task("t", policy(json!({"concurrency": {"limit": 1}})))
        .unwrap();
    let runs = trigger_all(
        &engine,
        vec![
            json!({"task": "t", "payload": 0}),
            json!({"task": "t", "payload": 1}),
            json!({"task": "t", "payload": 2}),
        ],
    )
    .await;
    assert_eq!(claim_ids(&engine), [runs[0].as_str()]);
    assert!(claim_ids(&engine).is_empty(), "runs 1 and 2 are blocked");

    assert!(engine.cancel(&runs[1]).await.unwrap());
    complete(&engine, &runs[0]).await;
    assert_eq!(
        claim_ids(&engine),
        [runs[2].as_str()],
        "the freed slot goes to the next live blocked run"
    );
}

// --- throttle -----------------------------------------------------------------------------

#[tokio::test]
async fn throttle_starts_runs_at_exact_period_boundaries_in_fifo_order() {
    let (engine, clock) = memory_engine();
    engine
        .register_task(
            "t",
            policy(json!({"throttle": {"limit": 2, "periodMs": MIN}})),
        )
        .unwrap();
    let runs = trigger_all(
        &engine,
        (0..5).map(|i| json!({"task": "t", "payload": i})).collect(),
    )
    .await;

    assert_eq!(claim_ids(&engine), [runs[0].as_str(), runs[1].as_str()]);
    clock.advance(MIN - 1);
    assert!(claim_ids(&engine).is_empty(), "started 1 ms early");
    clock.advance(1);
    assert_eq!(claim_ids(&engine), [runs[2].as_str(), runs[3].as_str()]);
    clock.advance(MIN - 1);
    assert!(claim_ids(&engine).is_empty(), "started 1 ms early");
    clock.advance(1);
    assert_eq!(claim_ids(&engine), [runs[4].as_str()]);
}

#[tokio::test]
async fn a_cancelled_throttled_run_does_not_use_up_throttle_room() {
    let (engine, clock) = memory_engine();
    engine
        .register_task(
            "t",
            policy(json!({"throttle": {"limit": 1, "periodMs": MIN}})),
        )
        .unwrap();
    let runs = trigger_all(
        &engine,
        (0..3).map(|i| json!({"task": "t", "payload": i})).collect(),
    )
    .await;
    assert_eq!(claim_ids(&engine), [runs[0].as_str()]);

    assert!(engine.cancel(&runs[1]).await.unwrap());
    clock.advance(MIN);
    assert_eq!(
        claim_ids(&engine),
        [runs[2].as_str()],
        "the window's room goes to the next live run, not to the cancelled one"
    );
}

// --- rate limit ---------------------------------------------------------------------------

#[tokio::test]
async fn a_trigger_over_the_rate_limit_is_skipped_and_never_claimed() {
    let (engine, _clock) = memory_engine();
    engine
        .register_task(
            "t",
            policy(json!({"rateLimit": {"limit": 1, "periodMs": MIN}})),
        )
        .unwrap();
    let first = trigger(&engine, json!({"task": "t", "payload": 1})).await;
    let second = trigger(&engine, json!({"task": "t", "payload": 2})).await;

    assert_ne!(
        first, second,
        "a skipped trigger still gets a run of its own"
    );
    assert_eq!(status(&engine, &second), RunStatus::Skipped);
    let out = outcome(&engine, &second).await;
    assert_eq!(out.status, RunStatus::Skipped);
    assert_eq!(error_code(&out), "E_RUN_SKIPPED");
    assert_eq!(claim_ids(&engine), [first.as_str()]);
    assert!(claim_ids(&engine).is_empty());
}

// --- debounce -----------------------------------------------------------------------------

#[tokio::test]
async fn debounce_postpones_the_run_with_each_trigger_and_keeps_the_last_payload() {
    let (engine, clock) = memory_engine();
    engine
        .register_task("t", policy(json!({"debounce": {"periodMs": 10_000}})))
        .unwrap();
    let first = trigger(&engine, json!({"task": "t", "payload": 1})).await;
    clock.advance(9_999);
    assert!(claim_ids(&engine).is_empty(), "still in its quiet period");
    let second = trigger(&engine, json!({"task": "t", "payload": 2})).await;
    assert_eq!(second, first, "the burst resolves to one run");

    clock.advance(1);
    assert!(
        claim_ids(&engine).is_empty(),
        "the first trigger's deadline no longer applies"
    );
    clock.advance(9_998);
    assert!(claim_ids(&engine).is_empty(), "started 1 ms early");
    clock.advance(1);
    let claimed = engine.try_claim(100).unwrap();
    assert_eq!(ids(&claimed), [first.as_str()]);
    assert_eq!(claimed[0].payload.get(), "2");
}

// --- cancel -------------------------------------------------------------------------------

#[tokio::test]
async fn a_cancelled_running_run_is_handed_to_the_executor_to_abort() {
    let (engine, _clock) = memory_engine();
    engine.register_task("t", TaskPolicy::default()).unwrap();
    let id = trigger(&engine, json!({"task": "t", "payload": {}})).await;
    assert_eq!(claim_ids(&engine), [id.as_str()]);

    assert!(engine.cancel(&id).await.unwrap());
    let batch = engine.try_claim_batch(100).unwrap();
    assert!(batch.runs.is_empty());
    assert_eq!(batch.abort, [id.as_str()]);
    assert_eq!(status(&engine, &id), RunStatus::Cancelled);
    assert!(
        engine.try_claim_batch(100).unwrap().abort.is_empty(),
        "an abort is handed out once"
    );
    assert_eq!(error_code(&outcome(&engine, &id).await), "E_RUN_CANCELLED");
}

// --- priority -----------------------------------------------------------------------------

#[tokio::test]
async fn priorities_of_queued_runs_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(EPOCH));
    let runs = {
        let engine = sled_engine(dir.path(), &clock);
        engine.register_task("t", TaskPolicy::default()).unwrap();
        // Triggered in an order that differs from the priority order.
        let runs = trigger_all(
            &engine,
            vec![
                json!({"task": "t", "payload": "p1", "priority": 1}),
                json!({"task": "t", "payload": "p5", "priority": 5}),
                json!({"task": "t", "payload": "p0"}),
                json!({"task": "t", "payload": "p3", "priority": 3}),
            ],
        )
        .await;
        engine.close();
        runs
    };

    let engine = sled_engine(dir.path(), &clock);
    engine.register_task("t", TaskPolicy::default()).unwrap();
    assert_eq!(
        claim_ids(&engine),
        [
            runs[1].as_str(),
            runs[3].as_str(),
            runs[0].as_str(),
            runs[2].as_str()
        ],
        "highest priority first, as before the restart"
    );
    engine.close();
}
