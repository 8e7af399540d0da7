//! The scheduler, through the public API only, as the JS executor drives it: trigger runs,
//! `try_claim` what is due, `report` ops. Time is a `ManualClock` at a fixed epoch and moves
//! only when a test moves it, so every deadline is checked to the millisecond, and nothing
//! here sleeps in real time (`timeout` only guards against a hang).

use durably_core::engine::{Claimed, ListFilter, Outcome};
use durably_core::model::{RunStatus, StepStatus};
use durably_core::retry::RetryPolicy;
use durably_core::{
    open_memory, open_sled, Clock, Engine, EngineOptions, ManualClock, Op, TaskPolicy, TriggerItem,
};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout;

/// 2023-11-14T22:13:20Z: every test starts here.
const EPOCH: u64 = 1_700_000_000_000;
/// Real time allowed for something that must happen at once; only a guard against hangs.
const GUARD: Duration = Duration::from_secs(5);

fn memory_engine(opts: EngineOptions) -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let engine = Engine::open(open_memory().unwrap(), clock.clone(), opts).unwrap();
    (engine, clock)
}

fn sled_engine(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Engine {
    let store = open_sled(dir, None).unwrap();
    Engine::open(store, clock.clone(), EngineOptions::default()).unwrap()
}

/// A retry policy without jitter, so that the schedule is exact.
fn exact_retry(max_attempts: u32) -> TaskPolicy {
    TaskPolicy {
        retry: RetryPolicy {
            max_attempts,
            factor: 2.0,
            min_timeout_ms: 1_000,
            max_timeout_ms: 10_000,
            randomize: false,
        },
        ..TaskPolicy::default()
    }
}

/// A trigger item in its wire form, e.g. `{"task":"t","payload":{},"delayMs":5000}`.
fn item(wire: Value) -> TriggerItem {
    serde_json::from_value(wire).unwrap()
}

async fn trigger(engine: &Engine, wire: Value) -> String {
    let mut results = engine.trigger(vec![vec![item(wire)]]).await;
    assert_eq!(results.len(), 1);
    let ids = results.remove(0).expect("the trigger is accepted");
    assert_eq!(ids.len(), 1);
    ids.into_iter().next().unwrap()
}

/// Reports ops in their wire form (`[{"op":"step","run":…,"key":"a","output":1}]`).
async fn report(engine: &Engine, ops: Value) {
    let ops = Op::parse_batch(&ops.to_string()).unwrap();
    engine.report(ops).await.unwrap();
}

fn ids(claimed: &[Claimed]) -> Vec<&str> {
    claimed.iter().map(|c| c.id.as_str()).collect()
}

fn status(engine: &Engine, id: &str) -> RunStatus {
    engine.get_run(id).unwrap().expect("the run exists").status
}

fn raw(json: &Option<Box<serde_json::value::RawValue>>) -> Option<&str> {
    json.as_deref().map(|r| r.get())
}

fn listed(engine: &Engine, filter: ListFilter) -> Vec<String> {
    let page = engine.list_runs(filter).unwrap();
    page.runs.into_iter().map(|r| r.id).collect()
}

// --- time ---------------------------------------------------------------------------------

#[tokio::test]
async fn delayed_trigger_starts_at_its_deadline_and_not_before() {
    let (engine, clock) = memory_engine(EngineOptions::default());
    engine.register_task("t", TaskPolicy::default()).unwrap();
    let id = trigger(
        &engine,
        json!({"task": "t", "payload": {}, "delayMs": 5000}),
    )
    .await;

    assert!(engine.try_claim(10).unwrap().is_empty());
    assert_eq!(status(&engine, &id), RunStatus::Delayed);
    let stats = engine.stats().unwrap();
    assert_eq!((stats.delayed, stats.ready), (1, 0));
    assert_eq!(stats.next_wake_at, Some(EPOCH + 5_000));

    clock.advance(4_999);
    assert!(
        engine.try_claim(10).unwrap().is_empty(),
        "started 1 ms early"
    );

    clock.advance(1);
    let claimed = engine.try_claim(10).unwrap();
    assert_eq!(ids(&claimed), [id.as_str()]);
    assert_eq!(claimed[0].attempt, 1);
    assert_eq!(status(&engine, &id), RunStatus::Running);
}

#[tokio::test]
async fn run_at_in_the_past_starts_at_once() {
    let (engine, _clock) = memory_engine(EngineOptions::default());
    engine.register_task("t", TaskPolicy::default()).unwrap();
    let id = trigger(
        &engine,
        json!({"task": "t", "payload": {}, "runAt": EPOCH - 60_000}),
    )
    .await;
    assert_eq!(ids(&engine.try_claim(10).unwrap()), [id.as_str()]);
}

#[tokio::test]
async fn due_runs_start_in_the_order_they_became_ready() {
    let (engine, clock) = memory_engine(EngineOptions::default());
    engine.register_task("t", TaskPolicy::default()).unwrap();
    let late = trigger(&engine, json!({"task": "t", "payload": 1, "delayMs": 300})).await;
    let early = trigger(&engine, json!({"task": "t", "payload": 2, "delayMs": 100})).await;
    let now = trigger(&engine, json!({"task": "t", "payload": 3})).await;
    let also_early = trigger(&engine, json!({"task": "t", "payload": 4, "delayMs": 100})).await;

    clock.advance(1_000);
    let claimed = engine.try_claim(10).unwrap();
    assert_eq!(
        ids(&claimed),
        [
            now.as_str(),
            early.as_str(),
            also_early.as_str(),
            late.as_str()
        ]
    );
}

#[tokio::test]
async fn claim_wakes_when_the_manual_clock_reaches_a_deadline() {
    let (engine, clock) = memory_engine(EngineOptions::default());
    engine.register_task("t", TaskPolicy::default()).unwrap();
    let id = trigger(
        &engine,
        json!({"task": "t", "payload": {}, "delayMs": 60_000}),
    )
    .await;

    let claimer = tokio::spawn({
        let engine = engine.clone();
        async move { engine.claim(10).await }
    });
    // On this single-threaded runtime, yielding lets the claimer run until it parks.
    tokio::task::yield_now().await;
    assert!(!claimer.is_finished(), "nothing is due yet");

    clock.advance(59_999);
    tokio::task::yield_now().await;
    assert!(
        !claimer.is_finished(),
        "claim resolved 1 ms before the deadline"
    );

    clock.advance(1);
    let claimed = timeout(GUARD, claimer)
        .await
        .expect("the clock reaching the deadline wakes the claim")
        .unwrap()
        .unwrap()
        .expect("the engine is open");
    assert_eq!(ids(&claimed.runs), [id.as_str()]);
}

#[tokio::test]
async fn claim_wakes_when_a_run_is_triggered() {
    let (engine, _clock) = memory_engine(EngineOptions::default());
    engine.register_task("t", TaskPolicy::default()).unwrap();
    let claimer = tokio::spawn({
        let engine = engine.clone();
        async move { engine.claim(10).await }
    });
    tokio::task::yield_now().await;
    assert!(!claimer.is_finished());

    let id = trigger(&engine, json!({"task": "t", "payload": {}})).await;
    let claimed = timeout(GUARD, claimer).await.unwrap().unwrap().unwrap();
    assert_eq!(
        ids(&claimed.expect("the engine is open").runs),
        [id.as_str()]
    );
}

#[tokio::test]
async fn a_pending_claim_settles_with_nothing_when_the_engine_closes() {
    let (engine, _clock) = memory_engine(EngineOptions::default());
    let claimer = tokio::spawn({
        let engine = engine.clone();
        async move { engine.claim(10).await }
    });
    tokio::task::yield_now().await;
    assert!(!claimer.is_finished());

    engine.close();
    let settled = timeout(GUARD, claimer).await.unwrap().unwrap().unwrap();
    assert!(settled.is_none());
}

// --- retries ------------------------------------------------------------------------------

#[tokio::test]
async fn step_retry_follows_the_exact_backoff_schedule() {
    let (engine, clock) = memory_engine(EngineOptions::default());
    engine.register_task("t", exact_retry(5)).unwrap();
    let id = trigger(&engine, json!({"task": "t", "payload": {}})).await;
    let claimed = engine.try_claim(10).unwrap();
    assert_eq!(ids(&claimed), [id.as_str()]);
    assert!(claimed[0].steps.is_empty());

    for (attempt, backoff) in [(1u32, 1_000u64), (2, 2_000), (3, 4_000)] {
        report(
            &engine,
            json!([{"op": "retryStep", "run": id, "key": "a", "attempt": attempt,
                    "error": {"message": format!("boom {attempt}")}}]),
        )
        .await;
        let run = engine.get_run(&id).unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Delayed, "after attempt {attempt}");
        assert_eq!(run.ready_at, Some(clock.now_ms() + backoff));

        clock.advance(backoff - 1);
        assert!(
            engine.try_claim(10).unwrap().is_empty(),
            "attempt {} started 1 ms before its backoff of {backoff} ms",
            attempt + 1
        );
        clock.advance(1);
        let claimed = engine.try_claim(10).unwrap();
        assert_eq!(ids(&claimed), [id.as_str()], "attempt {}", attempt + 1);
        // A step retry spends the step's attempts, not the run's.
        assert_eq!(claimed[0].attempt, 1);
        let steps = &claimed[0].steps;
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].key, "a");
        assert_eq!(steps[0].status, StepStatus::Retrying);
        assert_eq!(steps[0].attempts, attempt);
        let error = format!(r#"{{"message":"boom {attempt}"}}"#);
        assert_eq!(raw(&steps[0].error), Some(error.as_str()));
    }

    report(
        &engine,
        json!([{"op": "step", "run": id, "key": "a", "attempt": 4, "output": "ok"},
               {"op": "complete", "run": id, "output": null}]),
    )
    .await;
    let run = engine.get_run(&id).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    let steps = run.steps.unwrap();
    assert_eq!(steps[0].status, StepStatus::Completed);
    assert_eq!(steps[0].attempts, 4);
    assert_eq!(raw(&steps[0].output), Some(r#""ok""#));
}

#[tokio::test]
async fn a_step_retry_at_an_explicit_time_waits_until_exactly_then() {
    let (engine, clock) = memory_engine(EngineOptions::default());
    engine.register_task("t", exact_retry(5)).unwrap();
    let id = trigger(&engine, json!({"task": "t", "payload": {}})).await;
    engine.try_claim(10).unwrap();
    report(
        &engine,
        json!([{"op": "retryStep", "run": id, "key": "a", "attempt": 1,
                "retryAt": EPOCH + 90_000, "error": {"message": "rate limited"}}]),
    )
    .await;
    clock.advance(89_999);
    assert!(engine.try_claim(10).unwrap().is_empty());
    clock.advance(1);
    assert_eq!(ids(&engine.try_claim(10).unwrap()), [id.as_str()]);
}

#[tokio::test]
async fn run_level_failure_is_retried_until_max_attempts_then_fails() {
    let (engine, clock) = memory_engine(EngineOptions::default());
    engine.register_task("t", exact_retry(3)).unwrap();
    let id = trigger(&engine, json!({"task": "t", "payload": {}})).await;

    let claimed = engine.try_claim(10).unwrap();
    assert_eq!((claimed[0].attempt, claimed[0].max_attempts), (1, 3));
    for (attempt, backoff) in [(1u32, 1_000u64), (2, 2_000)] {
        report(
            &engine,
            json!([{"op": "fail", "run": id, "error": {"message": format!("boom {attempt}")}}]),
        )
        .await;
        let run = engine.get_run(&id).unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Delayed, "after attempt {attempt}");
        assert_eq!(run.attempts, attempt + 1);

        clock.advance(backoff - 1);
        assert!(engine.try_claim(10).unwrap().is_empty());
        clock.advance(1);
        let claimed = engine.try_claim(10).unwrap();
        assert_eq!(ids(&claimed), [id.as_str()]);
        assert_eq!(claimed[0].attempt, attempt + 1);
    }

    let waiter = tokio::spawn({
        let (engine, id) = (engine.clone(), id.clone());
        async move { engine.wait_result(&id, None).await }
    });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "the run has not ended yet");

    report(
        &engine,
        json!([{"op": "fail", "run": id, "error": {"message": "boom 3"}}]),
    )
    .await;
    let outcome: Outcome = timeout(GUARD, waiter).await.unwrap().unwrap().unwrap();
    assert_eq!(outcome.status, RunStatus::Failed);
    assert_eq!(raw(&outcome.error), Some(r#"{"message":"boom 3"}"#));
    assert!(outcome.output.is_none());

    let run = engine.get_run(&id).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.attempts, 3);
    assert_eq!(run.ended_at, Some(clock.now_ms()));
    clock.advance(3_600_000);
    assert!(
        engine.try_claim(10).unwrap().is_empty(),
        "a failed run never runs again"
    );
}

#[tokio::test]
async fn non_retriable_failure_fails_at_once() {
    let (engine, clock) = memory_engine(EngineOptions::default());
    engine.register_task("t", exact_retry(5)).unwrap();
    let id = trigger(&engine, json!({"task": "t", "payload": {}})).await;
    engine.try_claim(10).unwrap();

    report(
        &engine,
        json!([{"op": "fail", "run": id, "nonRetriable": true,
                "error": {"name": "NonRetriableError", "message": "bad input"}}]),
    )
    .await;
    let run = engine.get_run(&id).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.attempts, 1);
    let outcome = timeout(GUARD, engine.wait_result(&id, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.status, RunStatus::Failed);
    let error: Value = serde_json::from_str(raw(&outcome.error).unwrap()).unwrap();
    assert_eq!(
        error,
        json!({"name": "NonRetriableError", "message": "bad input"})
    );
    clock.advance(3_600_000);
    assert!(engine.try_claim(10).unwrap().is_empty());
}

#[tokio::test]
async fn completed_steps_are_handed_back_on_replay() {
    let (engine, clock) = memory_engine(EngineOptions::default());
    engine.register_task("t", exact_retry(3)).unwrap();
    let id = trigger(&engine, json!({"task": "t", "payload": {"user": "u1"}})).await;
    engine.try_claim(10).unwrap();

    // Raw text on purpose: outputs come back byte for byte, not re-serialised.
    let ops = format!(
        r#"[{{"op":"step","run":"{id}","key":"fetch","output":{{"rows": [1, 2.50]}}}},
            {{"op":"step","run":"{id}","key":"charge","output":"ch_1"}},
            {{"op":"fail","run":"{id}","error":{{"message":"crashed after charge"}}}}]"#
    );
    engine.report(Op::parse_batch(&ops).unwrap()).await.unwrap();

    clock.advance(1_000);
    let claimed = engine.try_claim(10).unwrap();
    assert_eq!(ids(&claimed), [id.as_str()]);
    assert_eq!(claimed[0].attempt, 2);
    assert_eq!(claimed[0].payload.get(), r#"{"user":"u1"}"#);
    let steps: Vec<(&str, StepStatus, Option<&str>)> = claimed[0]
        .steps
        .iter()
        .map(|s| (s.key.as_str(), s.status, raw(&s.output)))
        .collect();
    assert_eq!(
        steps,
        [
            ("charge", StepStatus::Completed, Some(r#""ch_1""#)),
            (
                "fetch",
                StepStatus::Completed,
                Some(r#"{"rows": [1, 2.50]}"#)
            ),
        ]
    );
}

#[tokio::test]
async fn a_released_run_is_handed_out_again_with_its_steps() {
    let (engine, _clock) = memory_engine(EngineOptions::default());
    engine.register_task("t", TaskPolicy::default()).unwrap();
    let id = trigger(&engine, json!({"task": "t", "payload": {}})).await;
    engine.try_claim(10).unwrap();
    report(
        &engine,
        json!([{"op": "step", "run": id, "key": "a", "output": 1},
               {"op": "release", "run": id}]),
    )
    .await;
    let claimed = engine.try_claim(10).unwrap();
    assert_eq!(ids(&claimed), [id.as_str()]);
    assert_eq!(claimed[0].attempt, 1, "a release is not a failed attempt");
    assert_eq!(claimed[0].steps.len(), 1);
    assert_eq!(raw(&claimed[0].steps[0].output), Some("1"));
}

// --- restarts -----------------------------------------------------------------------------

#[tokio::test]
async fn recovery_requeues_a_run_that_was_running_when_the_engine_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(EPOCH));
    let id = {
        let engine = sled_engine(dir.path(), &clock);
        engine.register_task("t", TaskPolicy::default()).unwrap();
        let id = trigger(&engine, json!({"task": "t", "payload": {"n": 1}})).await;
        assert_eq!(ids(&engine.try_claim(10).unwrap()), [id.as_str()]);
        report(
            &engine,
            json!([{"op": "step", "run": id, "key": "charge", "output": {"charged": true}}]),
        )
        .await;
        assert_eq!(status(&engine, &id), RunStatus::Running);
        engine.close();
        id
    };
    clock.advance(60_000);

    let engine = sled_engine(dir.path(), &clock);
    engine.register_task("t", TaskPolicy::default()).unwrap();
    assert_eq!(status(&engine, &id), RunStatus::Queued);
    let claimed = engine.try_claim(10).unwrap();
    assert_eq!(ids(&claimed), [id.as_str()]);
    assert_eq!(claimed[0].payload.get(), r#"{"n":1}"#);
    assert_eq!(claimed[0].steps.len(), 1);
    assert_eq!(claimed[0].steps[0].key, "charge");
    assert_eq!(claimed[0].steps[0].status, StepStatus::Completed);
    assert_eq!(
        raw(&claimed[0].steps[0].output),
        Some(r#"{"charged":true}"#)
    );

    report(
        &engine,
        json!([{"op": "complete", "run": id, "output": "done"}]),
    )
    .await;
    assert_eq!(status(&engine, &id), RunStatus::Completed);
    let outcome = timeout(GUARD, engine.wait_result(&id, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.status, RunStatus::Completed);
    assert_eq!(raw(&outcome.output), Some(r#""done""#));
    engine.close();

    // And a completed run stays completed across the next restart.
    let engine = sled_engine(dir.path(), &clock);
    engine.register_task("t", TaskPolicy::default()).unwrap();
    assert!(engine.try_claim(10).unwrap().is_empty());
    assert_eq!(status(&engine, &id), RunStatus::Completed);
    engine.close();
}

#[tokio::test]
async fn a_delayed_run_keeps_its_deadline_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(EPOCH));
    let id = {
        let engine = sled_engine(dir.path(), &clock);
        engine.register_task("t", TaskPolicy::default()).unwrap();
        let id = trigger(
            &engine,
            json!({"task": "t", "payload": {}, "delayMs": 10_000}),
        )
        .await;
        engine.close();
        id
    };
    let engine = sled_engine(dir.path(), &clock);
    engine.register_task("t", TaskPolicy::default()).unwrap();
    clock.advance(9_999);
    assert!(engine.try_claim(10).unwrap().is_empty());
    clock.advance(1);
    assert_eq!(ids(&engine.try_claim(10).unwrap()), [id.as_str()]);
    engine.close();
}

#[tokio::test]
async fn runs_of_an_unregistered_task_wait_until_it_registers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(EPOCH));
    let (due, delayed) = {
        let a = sled_engine(dir.path(), &clock);
        a.register_task("t", TaskPolicy::default()).unwrap();
        let due = trigger(&a, json!({"task": "t", "payload": {}})).await;
        let delayed = trigger(&a, json!({"task": "t", "payload": {}, "delayMs": 1_000})).await;
        a.close();
        (due, delayed)
    };

    let b = sled_engine(dir.path(), &clock);
    assert!(b.try_claim(10).unwrap().is_empty());
    assert_eq!(b.stats().unwrap().waiting_for_task, 1);
    assert_eq!(status(&b, &due), RunStatus::Queued, "waiting, never failed");

    // Its deadline passing does not start it either.
    clock.advance(1_000);
    assert!(b.try_claim(10).unwrap().is_empty());
    assert_eq!(b.stats().unwrap().waiting_for_task, 2);

    b.register_task("other", TaskPolicy::default()).unwrap();
    assert!(b.try_claim(10).unwrap().is_empty());

    b.register_task("t", TaskPolicy::default()).unwrap();
    assert_eq!(b.stats().unwrap().waiting_for_task, 0);
    let claimed = b.try_claim(10).unwrap();
    assert_eq!(ids(&claimed), [due.as_str(), delayed.as_str()]);
    b.close();
}

// --- triggers that are refused ------------------------------------------------------------

#[tokio::test]
async fn trigger_of_unknown_task_is_rejected_and_writes_nothing() {
    let (engine, _clock) = memory_engine(EngineOptions::default());
    engine
        .register_task("send-email", TaskPolicy::default())
        .unwrap();
    let results = engine
        .trigger(vec![vec![item(
            json!({"task": "send-emial", "payload": {}}),
        )]])
        .await;
    let err = results.into_iter().next().unwrap().unwrap_err();
    assert_eq!(err.code(), "E_UNKNOWN_TASK");
    assert!(err.to_string().contains("send-emial"), "{err}");

    assert!(listed(&engine, ListFilter::default()).is_empty());
    let stats = engine.stats().unwrap();
    assert_eq!(
        (stats.ready, stats.delayed, stats.waiting_for_task),
        (0, 0, 0)
    );
    assert!(engine.try_claim(10).unwrap().is_empty());
}

/// A batch (one group) is admitted whole or not at all: an item refused midway leaves no
/// trace of the items before it, in memory or on disk.
#[tokio::test]
async fn a_batch_with_one_refused_item_writes_none_of_its_items() {
    let (engine, _clock) = memory_engine(EngineOptions {
        max_payload_bytes: 64,
        ..EngineOptions::default()
    });
    let limited: TaskPolicy = serde_json::from_value(json!({"concurrency": {"limit": 1}})).unwrap();
    engine.register_task("t", limited).unwrap();
    for bad in [
        json!({"task": "nope", "payload": 2}),
        json!({"task": "t", "payload": "x".repeat(100)}),
    ] {
        let group = vec![
            item(json!({"task": "t", "payload": 1, "idempotencyKey": "k1"})),
            item(bad),
            item(json!({"task": "t", "payload": 3})),
        ];
        let results = engine.trigger(vec![group]).await;
        assert!(results.into_iter().next().unwrap().is_err());
        engine.flush().await.unwrap();
        assert!(listed(&engine, ListFilter::default()).is_empty());
        assert_eq!(engine.stats().unwrap().ready, 0);
        assert!(engine.try_claim(10).unwrap().is_empty());
    }
    // The idempotency key of the refused batch was never taken.
    let ok = engine
        .trigger(vec![vec![item(
            json!({"task": "t", "payload": 1, "idempotencyKey": "k1"}),
        )]])
        .await;
    let id = ok.into_iter().next().unwrap().unwrap().remove(0);
    assert_eq!(listed(&engine, ListFilter::default()), [id]);
}

#[tokio::test]
async fn payload_over_the_limit_is_rejected_and_writes_nothing() {
    let (engine, _clock) = memory_engine(EngineOptions {
        max_payload_bytes: 64,
        ..EngineOptions::default()
    });
    engine.register_task("t", TaskPolicy::default()).unwrap();
    let at_limit = format!(r#""{}""#, "x".repeat(62));
    let over = format!(r#""{}""#, "x".repeat(63));
    assert_eq!((at_limit.len(), over.len()), (64, 65));

    let wire = |payload: &str| format!(r#"{{"task":"t","payload":{payload}}}"#);
    let over_item: TriggerItem = serde_json::from_str(&wire(&over)).unwrap();
    let err = engine
        .trigger(vec![vec![over_item]])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(err.code(), "E_PAYLOAD_TOO_LARGE");
    let msg = err.to_string();
    assert!(msg.contains("65") && msg.contains("64"), "{msg}");
    assert!(listed(&engine, ListFilter::default()).is_empty());
    assert!(engine.try_claim(10).unwrap().is_empty());

    let at_item: TriggerItem = serde_json::from_str(&wire(&at_limit)).unwrap();
    let ok = engine.trigger(vec![vec![at_item]]).await.remove(0).unwrap();
    assert_eq!(listed(&engine, ListFilter::default()), ok);
}

#[tokio::test]
async fn a_group_with_one_bad_item_writes_nothing() {
    let (engine, _clock) = memory_engine(EngineOptions::default());
    engine.register_task("t", TaskPolicy::default()).unwrap();
    let results = engine
        .trigger(vec![
            vec![
                item(json!({"task": "t", "payload": 1})),
                item(json!({"task": "t", "payload": 2, "delayMs": 1_000})),
                item(json!({"task": "nope", "payload": 3})),
            ],
            vec![item(json!({"task": "t", "payload": 4}))],
        ])
        .await;
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].as_ref().unwrap_err().code(), "E_UNKNOWN_TASK");
    let accepted = results[1].as_ref().expect("the other group is accepted");

    assert_eq!(&listed(&engine, ListFilter::default()), accepted);
    let stats = engine.stats().unwrap();
    assert_eq!((stats.ready, stats.delayed), (1, 0));
    let claimed = engine.try_claim(10).unwrap();
    assert_eq!(ids(&claimed), [accepted[0].as_str()]);
    assert_eq!(claimed[0].payload.get(), "4");
}

// --- concurrency --------------------------------------------------------------------------

#[tokio::test]
async fn concurrency_limit_is_never_exceeded() {
    let (engine, clock) = memory_engine(EngineOptions {
        concurrency: 3,
        ..EngineOptions::default()
    });
    engine.register_task("t", exact_retry(3)).unwrap();
    let batch = (0..10)
        .map(|i| item(json!({"task": "t", "payload": i})))
        .collect();
    let runs = engine.trigger(vec![batch]).await.remove(0).unwrap();

    let first = engine.try_claim(100).unwrap();
    assert_eq!(
        ids(&first),
        [runs[0].as_str(), runs[1].as_str(), runs[2].as_str()]
    );
    assert!(engine.try_claim(100).unwrap().is_empty());
    let stats = engine.stats().unwrap();
    assert_eq!((stats.running, stats.ready), (3, 7));

    report(
        &engine,
        json!([{"op": "complete", "run": runs[0], "output": null}]),
    )
    .await;
    assert_eq!(ids(&engine.try_claim(100).unwrap()), [runs[3].as_str()]);
    assert!(engine.try_claim(100).unwrap().is_empty());

    // Every way of leaving `running` frees the slot, and only one.
    report(
        &engine,
        json!([{"op": "fail", "run": runs[1], "error": {}}]),
    )
    .await;
    assert_eq!(ids(&engine.try_claim(100).unwrap()), [runs[4].as_str()]);
    report(
        &engine,
        json!([{"op": "retryStep", "run": runs[2], "key": "a", "attempt": 1, "error": {}}]),
    )
    .await;
    assert_eq!(ids(&engine.try_claim(100).unwrap()), [runs[5].as_str()]);
    report(&engine, json!([{"op": "release", "run": runs[3]}])).await;
    assert_eq!(ids(&engine.try_claim(100).unwrap()), [runs[3].as_str()]);
    assert_eq!(engine.stats().unwrap().running, 3);

    // Retries coming due do not squeeze past the limit either.
    clock.advance(10_000);
    assert!(engine.try_claim(100).unwrap().is_empty());
    assert_eq!(engine.stats().unwrap().running, 3);
}

// --- results and listing ------------------------------------------------------------------

#[tokio::test]
async fn wait_result_resolves_when_the_run_completes() {
    let (engine, _clock) = memory_engine(EngineOptions::default());
    engine.register_task("t", TaskPolicy::default()).unwrap();
    let id = trigger(&engine, json!({"task": "t", "payload": {}})).await;

    let waiter = tokio::spawn({
        let (engine, id) = (engine.clone(), id.clone());
        async move { engine.wait_result(&id, None).await }
    });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "the run has not even started");

    engine.try_claim(10).unwrap();
    let ops = format!(r#"[{{"op":"complete","run":"{id}","output":{{"sent": true}}}}]"#);
    engine.report(Op::parse_batch(&ops).unwrap()).await.unwrap();
    let outcome = timeout(GUARD, waiter).await.unwrap().unwrap().unwrap();
    assert_eq!(outcome.status, RunStatus::Completed);
    assert_eq!(raw(&outcome.output), Some(r#"{"sent": true}"#));
    assert!(outcome.error.is_none());

    // Asked after the end, it answers from the store at once.
    let again = timeout(GUARD, engine.wait_result(&id, None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw(&again.output), Some(r#"{"sent": true}"#));
}

#[tokio::test]
async fn wait_result_of_an_unknown_run_is_rejected() {
    let (engine, _clock) = memory_engine(EngineOptions::default());
    let err = timeout(GUARD, engine.wait_result("run_nope", None))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), "E_RUN_NOT_FOUND");
}

#[tokio::test]
async fn list_runs_pages_newest_first_with_cursor() {
    let (engine, clock) = memory_engine(EngineOptions::default());
    engine.register_task("t", TaskPolicy::default()).unwrap();
    let mut runs = Vec::new();
    for i in 0..5 {
        runs.push(trigger(&engine, json!({"task": "t", "payload": i})).await);
        clock.advance(1);
    }
    // Runs move on while being listed: the oldest one has ended.
    assert_eq!(ids(&engine.try_claim(1).unwrap()), [runs[0].as_str()]);
    report(
        &engine,
        json!([{"op": "complete", "run": runs[0], "output": 0}]),
    )
    .await;

    let page = |cursor: Option<String>| {
        engine
            .list_runs(ListFilter {
                limit: Some(2),
                cursor,
                ..ListFilter::default()
            })
            .unwrap()
    };
    let p1 = page(None);
    let p1_ids: Vec<&str> = p1.runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(p1_ids, [runs[4].as_str(), runs[3].as_str()]);
    assert_eq!(p1.cursor.as_deref(), Some(runs[3].as_str()));

    let p2 = page(p1.cursor);
    let p2_ids: Vec<&str> = p2.runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(p2_ids, [runs[2].as_str(), runs[1].as_str()]);
    assert_eq!(p2.cursor.as_deref(), Some(runs[1].as_str()));

    let p3 = page(p2.cursor);
    let p3_ids: Vec<&str> = p3.runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(p3_ids, [runs[0].as_str()]);
    assert_eq!(p3.runs[0].status, RunStatus::Completed);
    assert_eq!(p3.cursor, None, "no cursor on the last page");

    // A page that ends exactly at the last run has no cursor either.
    let all = engine
        .list_runs(ListFilter {
            limit: Some(5),
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!(all.runs.len(), 5);
    assert_eq!(all.cursor, None);
}

#[tokio::test]
async fn list_runs_filters_by_status_task_and_tag() {
    let (engine, clock) = memory_engine(EngineOptions::default());
    engine.register_task("a", TaskPolicy::default()).unwrap();
    engine.register_task("b", TaskPolicy::default()).unwrap();
    let a1 = trigger(
        &engine,
        json!({"task": "a", "payload": {}, "tags": ["vip"]}),
    )
    .await;
    clock.advance(1);
    let b1 = trigger(
        &engine,
        json!({"task": "b", "payload": {}, "tags": ["vip", "eu"]}),
    )
    .await;
    clock.advance(1);
    let a2 = trigger(&engine, json!({"task": "a", "payload": {}})).await;
    clock.advance(1);
    let b2 = trigger(
        &engine,
        json!({"task": "b", "payload": {}, "delayMs": 60_000}),
    )
    .await;
    // a1 completed, b1 running, a2 queued, b2 delayed.
    assert_eq!(
        ids(&engine.try_claim(2).unwrap()),
        [a1.as_str(), b1.as_str()]
    );
    report(&engine, json!([{"op": "complete", "run": a1, "output": 1}])).await;

    let with_status = |status| ListFilter {
        status: Some(status),
        ..ListFilter::default()
    };
    assert_eq!(
        listed(&engine, with_status(RunStatus::Completed)),
        [a1.as_str()]
    );
    assert_eq!(
        listed(&engine, with_status(RunStatus::Running)),
        [b1.as_str()]
    );
    assert_eq!(
        listed(&engine, with_status(RunStatus::Queued)),
        [a2.as_str()]
    );
    assert_eq!(
        listed(&engine, with_status(RunStatus::Delayed)),
        [b2.as_str()]
    );
    assert!(listed(&engine, with_status(RunStatus::Failed)).is_empty());

    let of_task = |task: &str| ListFilter {
        task_id: Some(task.into()),
        ..ListFilter::default()
    };
    assert_eq!(listed(&engine, of_task("a")), [a2.as_str(), a1.as_str()]);
    assert_eq!(listed(&engine, of_task("b")), [b2.as_str(), b1.as_str()]);
    assert!(listed(&engine, of_task("c")).is_empty());

    let tagged = |tag: &str| ListFilter {
        tag: Some(tag.into()),
        ..ListFilter::default()
    };
    assert_eq!(listed(&engine, tagged("vip")), [b1.as_str(), a1.as_str()]);
    assert_eq!(listed(&engine, tagged("eu")), [b1.as_str()]);
    assert!(listed(&engine, tagged("VIP")).is_empty(), "tags are exact");

    // Filters combine, and pages count only matching runs.
    let vip_a = ListFilter {
        tag: Some("vip".into()),
        ..of_task("a")
    };
    assert_eq!(listed(&engine, vip_a), [a1.as_str()]);
    let since = ListFilter {
        since: Some(EPOCH + 2),
        ..ListFilter::default()
    };
    assert_eq!(listed(&engine, since), [b2.as_str(), a2.as_str()]);
    let p1 = engine
        .list_runs(ListFilter {
            limit: Some(1),
            ..tagged("vip")
        })
        .unwrap();
    assert_eq!(p1.runs[0].id, b1);
    assert_eq!(p1.cursor.as_deref(), Some(b1.as_str()));
    let p2 = engine
        .list_runs(ListFilter {
            limit: Some(1),
            cursor: p1.cursor,
            ..tagged("vip")
        })
        .unwrap();
    assert_eq!(p2.runs[0].id, a1);
    assert_eq!(p2.cursor, None);
}

/// Issue 15 #1: `runs.list({ since })` stopped at the first run older than `since` in id
/// order; after the wall clock stepped back, newer runs sat behind it and were hidden.
#[tokio::test]
async fn list_since_finds_every_run_created_since_even_after_the_clock_stepped_back() {
    let (engine, clock) = memory_engine(EngineOptions::default());
    engine.register_task("t", TaskPolicy::default()).unwrap();
    clock.set(EPOCH + 10_000);
    let a = trigger(&engine, json!({"task": "t", "payload": 1})).await;
    clock.set(EPOCH); // NTP steps the clock back 10 s
    let b = trigger(&engine, json!({"task": "t", "payload": 2})).await;
    clock.set(EPOCH + 20_000);
    let c = trigger(&engine, json!({"task": "t", "payload": 3})).await;
    let since = |ms: u64| ListFilter {
        since: Some(ms),
        ..ListFilter::default()
    };
    // Newest first by creation order (ids never go back in time).
    assert_eq!(
        listed(&engine, since(EPOCH)),
        [c.clone(), b.clone(), a.clone()]
    );
    // `since` filters on createdAt: b was created "at" EPOCH, before EPOCH + 5 s.
    assert_eq!(
        listed(&engine, since(EPOCH + 5_000)),
        [c.clone(), a.clone()]
    );
    assert_eq!(listed(&engine, since(EPOCH + 15_000)), [c]);
}
