//! Schedules under the manual clock: ticks in a DST-switching zone, one run after
//! downtime however many ticks were missed, a clock moving backwards, dynamic schedules.

use durably_core::engine::Claimed;
use durably_core::schedule::{ScheduleIn, ScheduleSpec};
use durably_core::{open_memory, open_sled, Engine, EngineOptions, ManualClock, Op, TaskPolicy};
use serde_json::{json, Value};
use std::sync::Arc;

fn ms(s: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .timestamp_millis() as u64
}

fn daily_paris() -> TaskPolicy {
    TaskPolicy {
        schedule: Some(ScheduleSpec {
            cron: "30 8 * * *".into(),
            tz: "Europe/Paris".into(),
        }),
        ..TaskPolicy::default()
    }
}

/// Claims what is due, letting a schedule that fires write its run first.
async fn due(engine: &Engine) -> Vec<Claimed> {
    let mut out = engine.try_claim(100).unwrap();
    engine.flush().await.unwrap();
    out.extend(engine.try_claim(100).unwrap());
    out
}

fn ticks(claimed: &[Claimed]) -> Vec<String> {
    claimed
        .iter()
        .map(|c| {
            let v: Value = serde_json::from_str(c.payload.get()).unwrap();
            v["timestamp"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test]
async fn cron_in_a_dst_switching_zone_fires_at_local_time_on_both_sides_of_the_switch() {
    // Paris moves to summer time on 2026-03-29: 08:30 local is 07:30Z before, 06:30Z after.
    let clock = Arc::new(ManualClock::new(ms("2026-03-27T12:00:00Z")));
    let engine = Engine::open(
        open_memory().unwrap(),
        clock.clone(),
        EngineOptions::default(),
    )
    .unwrap();
    engine.register_task("daily", daily_paris()).unwrap();

    clock.set(ms("2026-03-28T07:29:59.999Z"));
    assert!(due(&engine).await.is_empty(), "fired before 08:30 Paris");
    clock.set(ms("2026-03-28T07:30:00Z"));
    assert_eq!(ticks(&due(&engine).await), ["2026-03-28T07:30:00.000Z"]);

    clock.set(ms("2026-03-29T06:29:59.999Z"));
    assert!(due(&engine).await.is_empty());
    clock.set(ms("2026-03-29T06:30:00Z"));
    assert_eq!(ticks(&due(&engine).await), ["2026-03-29T06:30:00.000Z"]);
}

#[tokio::test]
async fn a_missed_tick_after_downtime_fires_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(ms("2026-01-05T12:00:00Z")));
    let engine = Engine::open(
        open_sled(dir.path(), None).unwrap(),
        clock.clone(),
        EngineOptions::default(),
    )
    .unwrap();
    engine.register_task("daily", daily_paris()).unwrap();
    clock.set(ms("2026-01-06T07:30:00Z"));
    let first = due(&engine).await;
    assert_eq!(first.len(), 1);
    let done = format!(
        r#"[{{"op":"complete","run":"{}","output":null}}]"#,
        first[0].id
    );
    engine
        .report(Op::parse_batch(&done).unwrap())
        .await
        .unwrap();
    engine.close();

    // Five days down: five ticks missed.
    clock.set(ms("2026-01-11T12:00:00Z"));
    let engine = Engine::open(
        open_sled(dir.path(), None).unwrap(),
        clock.clone(),
        EngineOptions::default(),
    )
    .unwrap();
    engine.register_task("daily", daily_paris()).unwrap();
    let claimed = due(&engine).await;
    assert_eq!(
        ticks(&claimed),
        ["2026-01-11T07:30:00.000Z"],
        "one run, for the latest missed tick"
    );
    assert!(due(&engine).await.is_empty());
    let next = engine.list_schedules(None).unwrap()[0].next_tick;
    assert_eq!(next, ms("2026-01-12T07:30:00Z"));
}

#[tokio::test]
async fn a_clock_moving_backwards_never_fires_a_tick_twice() {
    let clock = Arc::new(ManualClock::new(ms("2026-01-05T12:00:00Z")));
    let engine = Engine::open(
        open_memory().unwrap(),
        clock.clone(),
        EngineOptions::default(),
    )
    .unwrap();
    engine.register_task("daily", daily_paris()).unwrap();
    clock.set(ms("2026-01-06T07:30:00Z"));
    assert_eq!(due(&engine).await.len(), 1);

    // The clock jumps back a day and runs forward over the same tick again.
    clock.set(ms("2026-01-05T07:00:00Z"));
    assert!(due(&engine).await.is_empty());
    clock.set(ms("2026-01-06T07:30:00Z"));
    assert!(
        due(&engine).await.is_empty(),
        "the 2026-01-06 tick fired twice"
    );
    clock.set(ms("2026-01-07T07:30:00Z"));
    assert_eq!(ticks(&due(&engine).await), ["2026-01-07T07:30:00.000Z"]);
}

#[tokio::test]
async fn dynamic_schedules_are_created_updated_by_external_id_and_deleted() {
    let clock = Arc::new(ManualClock::new(ms("2026-01-05T12:00:00Z")));
    let engine = Engine::open(
        open_memory().unwrap(),
        clock.clone(),
        EngineOptions::default(),
    )
    .unwrap();
    engine
        .register_task("report", TaskPolicy::default())
        .unwrap();
    let input = |cron: &str| -> ScheduleIn {
        serde_json::from_value(json!({"task": "report", "cron": cron, "tz": "UTC", "externalId": "user-1", "payload": {"user": 1}})).unwrap()
    };
    let a = engine.create_schedule(input("0 * * * *")).await.unwrap();
    assert_eq!(a.next_tick, ms("2026-01-05T13:00:00Z"));
    let b = engine.create_schedule(input("30 * * * *")).await.unwrap();
    assert_eq!(
        a.id, b.id,
        "same task and externalId: the schedule is updated"
    );
    assert_eq!(engine.list_schedules(Some("report")).unwrap().len(), 1);

    clock.set(ms("2026-01-05T12:30:00Z"));
    let claimed = due(&engine).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        claimed[0].payload.get(),
        r#"{"user":1}"#,
        "a dynamic schedule's own payload"
    );

    assert!(engine.delete_schedule(&a.id).await.unwrap());
    assert!(!engine.delete_schedule(&a.id).await.unwrap());
    clock.set(ms("2026-01-05T14:30:00Z"));
    assert!(due(&engine).await.is_empty());
}

#[tokio::test]
async fn bad_cron_and_zone_are_rejected_naming_the_option() {
    let clock = Arc::new(ManualClock::new(ms("2026-01-05T12:00:00Z")));
    let engine = Engine::open(open_memory().unwrap(), clock, EngineOptions::default()).unwrap();
    let bad = TaskPolicy {
        schedule: Some(ScheduleSpec {
            cron: "0 25 * * *".into(),
            tz: "UTC".into(),
        }),
        ..TaskPolicy::default()
    };
    assert_eq!(
        engine.register_task("t", bad).unwrap_err().code(),
        "E_BAD_CRON"
    );
    let input: ScheduleIn =
        serde_json::from_value(json!({"task": "t", "cron": "0 9 * * *", "tz": "Nowhere/Land"}))
            .unwrap();
    let err = engine.create_schedule(input).await.unwrap_err();
    assert_eq!(err.code(), "E_BAD_OPTION");
    assert!(err.to_string().contains("tz"), "{err}");
}
