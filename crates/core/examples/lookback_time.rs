//! How long parking a wait takes when its early event sits behind 100k others of its name
//! (the look-back of `waitForEvent`, under the scheduler lock): `cargo run --release -p
//! durably-core --example lookback_time`.
use durably_core::engine::EventIn;
use durably_core::{open_sled, Engine, EngineOptions, ManualClock, Op, TaskPolicy, TriggerItem};
use serde_json::{json, Value};
use std::sync::Arc;
#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("lookback-{}", std::process::id()));
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let engine = Engine::open(
        open_sled(&dir, None).unwrap(),
        clock,
        EngineOptions::default(),
    )
    .unwrap();
    engine.register_task("t", TaskPolicy::default()).unwrap();
    let item: TriggerItem =
        serde_json::from_value(json!({"task": "t", "payload": {"userId": "u-x"}})).unwrap();
    let run = engine
        .trigger(vec![vec![item]])
        .await
        .remove(0)
        .unwrap()
        .remove(0);
    for c in 0..20 {
        let evs: Vec<EventIn> = serde_json::from_value(Value::Array(
            (0..5000)
                .map(|i| json!({"name": "order/paid", "data": {"userId": format!("u-{c}-{i}")}}))
                .collect(),
        ))
        .unwrap();
        engine.send(evs).await.unwrap();
    }
    let evs: Vec<EventIn> =
        serde_json::from_value(json!([{"name": "order/paid", "data": {"userId": "u-x"}}])).unwrap();
    engine.send(evs).await.unwrap();
    engine.flush().await.unwrap();
    assert_eq!(engine.try_claim(1).unwrap().len(), 1);
    let ops = json!([{"op": "wait", "run": run, "waits": [{"kind": "event", "key": "w", "events": ["order/paid"], "if": "async.data.userId == event.data.userId", "sinceRunStart": true}]}]);
    let t = std::time::Instant::now();
    engine
        .report(Op::parse_batch(&ops.to_string()).unwrap())
        .await
        .unwrap();
    println!(
        "park with an if-equality lookback over 100k events: {:.2} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(engine.try_claim(1).unwrap().len(), 1);
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}
