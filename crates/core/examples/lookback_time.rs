//! How long parking a `waitForEvent` takes when its early event sits behind 100k others of
//! its name, and how long another caller (`stats()`, which takes the scheduler lock) is held
//! up meanwhile: `cargo run --release -p durably-core --example lookback_time`.

use durably_core::engine::EventIn;
use durably_core::{open_sled, Engine, EngineOptions, ManualClock, Op, TaskPolicy, TriggerItem};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn park_behind_100k(cond: &str) -> (Duration, Duration) {
    let dir = std::env::temp_dir().join(format!("lookback-{}-{}", std::process::id(), cond.len()));
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let store = open_sled(&dir, None).unwrap();
    let engine = Engine::open(store, clock, EngineOptions::default()).unwrap();
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
        let evs = (0..5000)
            .map(|i| json!({"name": "order/paid", "data": {"userId": format!("u-{c}-{i}")}}))
            .collect();
        let evs: Vec<EventIn> = serde_json::from_value(Value::Array(evs)).unwrap();
        engine.send(evs).await.unwrap();
    }
    let last = json!([{"name": "order/paid", "data": {"userId": "u-x"}}]);
    engine
        .send(serde_json::from_value(last).unwrap())
        .await
        .unwrap();
    engine.flush().await.unwrap();
    assert_eq!(engine.try_claim(1).unwrap().len(), 1);

    // Another caller, timing how long each call into the scheduler waits.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (engine, stop) = (engine.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                engine.stats().unwrap();
                worst = worst.max(t.elapsed());
                std::thread::sleep(Duration::from_micros(200));
            }
            worst
        })
    };
    let wait = json!({"kind": "event", "key": "w", "events": ["order/paid"], "if": cond, "sinceRunStart": true});
    let ops = json!([{"op": "wait", "run": run, "waits": [wait]}]);
    let t = Instant::now();
    engine
        .report(Op::parse_batch(&ops.to_string()).unwrap())
        .await
        .unwrap();
    let park = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let stall = prober.join().unwrap();
    assert_eq!(
        engine.try_claim(1).unwrap().len(),
        1,
        "the early event resumed the run"
    );
    engine.close();
    let _ = std::fs::remove_dir_all(&dir);
    (park, stall)
}

#[tokio::main]
async fn main() {
    for (what, cond) in [
        (
            "if with an equality (value index)",
            "async.data.userId == event.data.userId",
        ),
        (
            "if without one (read in order)",
            "async.data.userId >= event.data.userId && async.data.userId <= event.data.userId",
        ),
    ] {
        let (park, stall) = park_behind_100k(cond).await;
        println!(
            "{what}: park {:.1} ms, longest wait of another caller {:.1} ms",
            park.as_secs_f64() * 1e3,
            stall.as_secs_f64() * 1e3
        );
    }
}
