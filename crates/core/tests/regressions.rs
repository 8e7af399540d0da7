//! Regressions found in review: parallel waits on early events, one event for two waits of a run, debounce across a restart.

use durably_core::engine::{Claimed, EventIn};
use durably_core::model::StepStatus;
use durably_core::{open_memory, Engine, EngineOptions, ManualClock, Op, TaskPolicy, TriggerItem};
use serde_json::{json, Value};
use std::sync::Arc;

const EPOCH: u64 = 1_700_000_000_000;

fn engine_with(policy: Value) -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let engine = Engine::open(
        open_memory().unwrap(),
        clock.clone(),
        EngineOptions::default(),
    )
    .unwrap();
    let p: TaskPolicy = serde_json::from_value(policy).unwrap();
    engine.register_task("t", p).unwrap();
    (engine, clock)
}

async fn trigger(engine: &Engine, item: Value) -> String {
    let item: TriggerItem = serde_json::from_value(item).unwrap();
    let mut results = engine.trigger(vec![vec![item]]).await;
    results.remove(0).unwrap().into_iter().next().unwrap()
}

async fn report(engine: &Engine, ops: Value) {
    let ops = Op::parse_batch(&ops.to_string()).unwrap();
    engine.report(ops).await.unwrap();
}

async fn send(engine: &Engine, events: Value) {
    let events: Vec<EventIn> = serde_json::from_value(events).unwrap();
    engine.send(events).await.unwrap();
}

fn ev_wait(key: &str, name: &str) -> Value {
    json!({"kind": "event", "key": key, "events": [name]})
}

fn completed(c: &Claimed, key: &str) -> bool {
    c.steps
        .iter()
        .any(|s| s.key == key && s.status == StepStatus::Completed)
}

/// Two parallel waitForEvent (`Promise.all`) whose events both arrived before the run
/// reached them (`since: 'run-start'`): both must resolve. The wait processed first moves
/// the run's single event cursor past the other wait's (earlier) event.
#[tokio::test]
async fn review_parallel_waits_for_early_events_both_resolve() {
    let (engine, _clock) = engine_with(json!({}));
    let run = trigger(&engine, json!({"task": "t", "payload": {}})).await;
    assert_eq!(engine.try_claim(10).unwrap().len(), 1);
    send(&engine, json!([{"name": "y", "data": 1}])).await;
    send(&engine, json!([{"name": "x", "data": 2}])).await;
    report(
        &engine,
        json!([{"op": "wait", "run": run, "waits": [ev_wait("a", "x"), ev_wait("b", "y")]}]),
    )
    .await;
    let c = engine.try_claim(10).unwrap();
    assert_eq!(c.len(), 1);
    assert!(completed(&c[0], "a"));
    assert!(
        completed(&c[0], "b"),
        "wait b lost its early event y: {:?}",
        c[0].steps
    );
}

/// The same, once the run is parked: one event for two parallel waits on the same name.
#[tokio::test]
async fn review_one_event_resolves_two_parallel_waits_for_it() {
    let (engine, _clock) = engine_with(json!({}));
    let run = trigger(&engine, json!({"task": "t", "payload": {}})).await;
    assert_eq!(engine.try_claim(10).unwrap().len(), 1);
    report(
        &engine,
        json!([{"op": "wait", "run": run, "waits": [ev_wait("a", "x"), ev_wait("b", "x")]}]),
    )
    .await;
    send(&engine, json!([{"name": "x", "data": 1}])).await;
    let c = engine.try_claim(10).unwrap();
    assert_eq!(c.len(), 1);
    // The one event answers both waits: the replay finds both memoized.
    assert!(completed(&c[0], "a"));
    assert!(
        completed(&c[0], "b"),
        "wait b did not get the event: {:?}",
        c[0].steps
    );
}

/// Debounce across a restart: a trigger within the quiet period after a restart must be
/// absorbed by the pending run (one run per quiet period); `flow.debounced` is memory only.
#[tokio::test]
async fn review_debounce_survives_restart() {
    let dir = std::env::temp_dir().join(format!("durably-review-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let clock = Arc::new(ManualClock::new(EPOCH));
    let policy: TaskPolicy =
        serde_json::from_value(json!({"debounce": {"periodMs": 10_000}})).unwrap();
    let first = {
        let engine = Engine::open(
            durably_core::open_sled(&dir, None).unwrap(),
            clock.clone(),
            EngineOptions::default(),
        )
        .unwrap();
        engine.register_task("t", policy.clone()).unwrap();
        let a = trigger(&engine, json!({"task": "t", "payload": 1})).await;
        let b = trigger(&engine, json!({"task": "t", "payload": 2})).await;
        assert_eq!(a, b, "debounced in one process");
        engine.close();
        a
    };
    let engine = Engine::open(
        durably_core::open_sled(&dir, None).unwrap(),
        clock.clone(),
        EngineOptions::default(),
    )
    .unwrap();
    engine.register_task("t", policy).unwrap();
    let c = trigger(&engine, json!({"task": "t", "payload": 3})).await;
    clock.advance(20_000);
    let runs = engine.try_claim(10).unwrap();
    engine.close();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        c,
        first,
        "a trigger 0 ms after a restart starts a second run of the debounce key ({} runs claimed)",
        runs.len()
    );
}
