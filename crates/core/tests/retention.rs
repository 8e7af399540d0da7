//! Retention (issue "bounded over months"): ended runs older than their retention go with
//! their steps, events no wait can still match go, expired idempotency keys go — and nothing
//! a live run needs. `purge` is what the background pass calls; time is a `ManualClock`.

use durably_core::engine::{EventIn, ListFilter};
use durably_core::model::RunStatus;
use durably_core::retention::Purged;
use durably_core::{open_memory, Engine, EngineOptions, ManualClock, Op, TaskPolicy};
use serde_json::{json, Value};
use std::sync::Arc;

const EPOCH: u64 = 1_700_000_000_000;
const DAY: u64 = 24 * 3_600_000;

fn engine() -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let opts = EngineOptions {
        retention_ms: Some(7 * DAY),
        purge_interval_ms: 3_600_000, // the test calls purge itself
        ..EngineOptions::default()
    };
    let engine = Engine::open(open_memory().unwrap(), clock.clone(), opts).unwrap();
    engine.register_task("t", TaskPolicy::default()).unwrap();
    let p = |v: Value| serde_json::from_value::<TaskPolicy>(v).unwrap();
    engine
        .register_task("audit", p(json!({"retention": 30 * DAY})))
        .unwrap();
    engine
        .register_task("keep", p(json!({"retention": "forever"})))
        .unwrap();
    (engine, clock)
}

async fn trigger(engine: &Engine, v: Value) -> String {
    let item = serde_json::from_value(v).unwrap();
    engine
        .trigger(vec![vec![item]])
        .await
        .remove(0)
        .unwrap()
        .remove(0)
}

async fn report(engine: &Engine, ops: Value) {
    engine
        .report(Op::parse_batch(&ops.to_string()).unwrap())
        .await
        .unwrap();
}

async fn complete(engine: &Engine, run: &str) {
    report(engine, json!([{"op": "step", "run": run, "key": "a", "output": 1}, {"op": "complete", "run": run, "output": "ok"}])).await;
}

async fn purge(engine: &Engine) -> Purged {
    let p = engine.purge(1_000).unwrap();
    engine.flush().await.unwrap();
    p
}

fn exists(engine: &Engine, id: &str) -> bool {
    engine.get_run(id).unwrap().is_some()
}

#[tokio::test]
async fn ended_runs_go_after_their_retention_with_their_steps_and_live_runs_stay() {
    let (engine, clock) = engine();
    let done = trigger(&engine, json!({"task": "t", "payload": 1})).await;
    let audit = trigger(&engine, json!({"task": "audit", "payload": 2})).await;
    let kept = trigger(&engine, json!({"task": "keep", "payload": 3})).await;
    let asleep = trigger(&engine, json!({"task": "t", "payload": 4})).await;
    let queued = trigger(
        &engine,
        json!({"task": "t", "payload": 5, "delayMs": 20 * DAY}),
    )
    .await;
    assert_eq!(engine.try_claim(10).unwrap().len(), 4);
    for r in [&done, &audit, &kept] {
        complete(&engine, r).await;
    }
    report(&engine, json!([{"op": "wait", "run": asleep, "waits": [{"kind": "sleep", "key": "s", "wakeAt": EPOCH + 60 * DAY}]}])).await;

    clock.set(EPOCH + 7 * DAY - 1);
    assert_eq!(purge(&engine).await.runs, 0, "not yet");
    clock.set(EPOCH + 7 * DAY + 1);
    assert_eq!(purge(&engine).await.runs, 1);
    assert!(!exists(&engine, &done), "ended 7 days ago: removed");
    for r in [&audit, &kept, &asleep, &queued] {
        assert!(exists(&engine, r), "{r} stays");
    }
    clock.set(EPOCH + 31 * DAY);
    assert_eq!(
        purge(&engine).await.runs,
        1,
        "the audit task keeps its runs 30 days"
    );
    assert!(!exists(&engine, &audit));
    clock.set(EPOCH + 400 * DAY);
    purge(&engine).await;
    assert!(exists(&engine, &kept), "retention: 'forever'");
    assert!(exists(&engine, &asleep), "a live run is never removed");
    let listed = engine.list_runs(ListFilter::default()).unwrap().runs.len();
    assert_eq!(listed, 3);
    // A purged run is not found: replay and retry say so with a clear code.
    let e = engine.replay(&done).await.unwrap_err();
    assert_eq!(e.code(), "E_RUN_NOT_FOUND");
    assert!(e.to_string().contains("retention"), "{e}");
    assert_eq!(
        engine.retry(&done).await.unwrap_err().code(),
        "E_RUN_NOT_FOUND"
    );
}

#[tokio::test]
async fn a_run_reopened_by_retry_is_not_removed_by_its_old_entry() {
    let (engine, clock) = engine();
    let run = trigger(&engine, json!({"task": "t", "payload": 1})).await;
    engine.try_claim(10).unwrap();
    report(&engine, json!([{"op": "fail", "run": run, "error": {"name": "Error", "message": "x"}, "nonRetriable": true}])).await;
    clock.set(EPOCH + 6 * DAY);
    engine.retry(&run).await.unwrap(); // live again, 6 days in
    clock.set(EPOCH + 8 * DAY);
    purge(&engine).await;
    assert!(
        exists(&engine, &run),
        "the stale entry of its first end did not remove it"
    );
    assert_eq!(
        engine.get_run(&run).unwrap().unwrap().status,
        RunStatus::Queued
    );
    engine.try_claim(10).unwrap();
    complete(&engine, &run).await;
    clock.set(EPOCH + 15 * DAY + 1);
    purge(&engine).await;
    assert!(!exists(&engine, &run), "its second end's retention applies");
}

#[tokio::test]
async fn events_go_only_when_no_wait_can_still_match_them() {
    let (engine, clock) = engine();
    let send = |v: Value| {
        let events: Vec<EventIn> = serde_json::from_value(v).unwrap();
        engine.send(events)
    };
    send(json!([{"id": "old", "name": "x", "data": {"k": 1}}]))
        .await
        .unwrap();
    clock.set(EPOCH + DAY);
    // A run created now may, in a month, wait for an event sent after this moment.
    let long = trigger(
        &engine,
        json!({"task": "t", "payload": 1, "delayMs": 60 * DAY}),
    )
    .await;
    clock.set(EPOCH + 2 * DAY);
    send(json!([{"id": "after", "name": "x", "data": {"k": 2}}]))
        .await
        .unwrap();
    clock.set(EPOCH + 20 * DAY);
    let p = purge(&engine).await;
    assert_eq!(
        p.events, 1,
        "the event before every live run's creation goes"
    );
    // The one after `long` was created stays while `long` lives: it can still match it.
    clock.set(EPOCH + 61 * DAY);
    let c = engine.try_claim(10).unwrap();
    assert_eq!(c[0].id, long);
    report(&engine, json!([{"op": "wait", "run": long, "waits": [{"kind": "event", "key": "e", "events": ["x"]}]}])).await;
    let c = engine.try_claim(10).unwrap();
    assert_eq!(c.len(), 1, "the early event was still there for its wait");
    let step = c[0].steps.iter().find(|s| s.key == "e").unwrap();
    let ev: Value = serde_json::from_str(step.output.as_ref().unwrap().get()).unwrap();
    assert_eq!(ev["id"], "after");
    complete(&engine, &long).await;
    clock.set(EPOCH + 70 * DAY);
    assert_eq!(purge(&engine).await.events, 1);
    // Its dedup id went with it: the same id is a new event now.
    let ids = send(json!([{"id": "after", "name": "x"}])).await.unwrap();
    assert_eq!(ids, ["after"]);
}

#[tokio::test]
async fn expired_idempotency_keys_go_and_a_new_trigger_with_the_key_makes_a_new_run() {
    let (engine, clock) = engine();
    let a = trigger(
        &engine,
        json!({"task": "t", "payload": 1, "idempotencyKey": "k", "idempotencyTtlMs": DAY}),
    )
    .await;
    let again = trigger(
        &engine,
        json!({"task": "t", "payload": 2, "idempotencyKey": "k"}),
    )
    .await;
    assert_eq!(a, again);
    clock.set(EPOCH + DAY + 1);
    assert_eq!(purge(&engine).await.keys, 1);
    let b = trigger(
        &engine,
        json!({"task": "t", "payload": 3, "idempotencyKey": "k"}),
    )
    .await;
    assert_ne!(a, b);
}

/// A pass removes everything due, however much, not just the first batch: each batch is
/// applied before the next is read (the soak showed retention falling behind a busy engine
/// when a pass read its own removals again, found the runs gone and stopped).
#[tokio::test]
async fn a_pass_removes_everything_due_batch_after_batch() {
    let (engine, clock) = engine();
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(trigger(&engine, json!({"task": "t", "payload": i})).await);
    }
    assert_eq!(engine.try_claim(100).unwrap().len(), 60);
    for id in &ids {
        complete(&engine, id).await;
    }
    engine.flush().await.unwrap();
    clock.advance(7 * DAY + 1);
    let p = engine.purge_due(7).unwrap();
    assert_eq!(p.runs, 60, "{p:?}");
    engine.flush().await.unwrap();
    assert!(ids.iter().all(|id| !exists(&engine, id)));
}
