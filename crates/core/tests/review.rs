//! Defects found in review of the flow control and the clock (issues "keep every promise
//! under faults" and "correct across clock jumps and restarts"), each pinned by a test that
//! failed before its fix. Time is a `ManualClock` at a fixed epoch; nothing sleeps.

use durably_core::engine::{Claimed, EventIn, ListFilter};
use durably_core::model::{RunStatus, StepStatus};
use durably_core::schedule::ScheduleIn;
use durably_core::{open_memory, open_sled, Engine, EngineOptions, ManualClock, Op, TaskPolicy};
use serde_json::{json, Value};
use std::sync::Arc;

const EPOCH: u64 = 1_700_000_000_000;
const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;

fn engine(tasks: &[(&str, Value)]) -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let opts = EngineOptions {
        concurrency: 10_000,
        ..EngineOptions::default()
    };
    let engine = Engine::open(open_memory().unwrap(), clock.clone(), opts).unwrap();
    for (id, p) in tasks {
        engine.register_task(id, policy(p.clone())).unwrap();
    }
    (engine, clock)
}

fn policy(v: Value) -> TaskPolicy {
    serde_json::from_value(v).unwrap()
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

async fn send(engine: &Engine, events: Value) {
    let events: Vec<EventIn> = serde_json::from_value(events).unwrap();
    engine.send(events).await.unwrap();
}

fn ids(c: &[Claimed]) -> Vec<String> {
    c.iter().map(|c| c.id.clone()).collect()
}

fn status(engine: &Engine, id: &str) -> RunStatus {
    engine.get_run(id).unwrap().unwrap().status
}

fn error_code(engine: &Engine, id: &str) -> String {
    let run = engine.get_run(id).unwrap().unwrap();
    let e: Value = serde_json::from_str(run.error.expect("an error").get()).unwrap();
    e["code"].as_str().unwrap_or_default().to_string()
}

/// Issue 9 #4: a child of `step.invoke` was created with default flow facts: its task's
/// concurrency limit (and timeouts, throttle …) did not apply.
#[tokio::test]
async fn invoked_children_obey_their_tasks_concurrency_limit_and_rate_limit() {
    let (engine, _clock) = engine(&[
        ("parent", json!({})),
        ("child", json!({"concurrency": {"limit": 1}})),
        (
            "limited",
            json!({"rateLimit": {"limit": 1, "periodMs": HOUR}}),
        ),
    ]);
    let p1 = trigger(&engine, json!({"task": "parent", "payload": 1})).await;
    let p2 = trigger(&engine, json!({"task": "parent", "payload": 2})).await;
    assert_eq!(engine.try_claim(10).unwrap().len(), 2);
    let invoke = |run: &str| json!({"op": "wait", "run": run, "waits": [{"kind": "invoke", "key": "c", "task": "child", "payload": {}}]});
    report(&engine, json!([invoke(&p1), invoke(&p2)])).await;
    let first = engine.try_claim(10).unwrap();
    assert_eq!(
        first.len(),
        1,
        "one child at a time: the task's limit holds for invoked runs"
    );
    report(
        &engine,
        json!([{"op": "complete", "run": first[0].id, "output": "a"}]),
    )
    .await;
    let claimed = engine.try_claim(10).unwrap();
    let tasks: Vec<&str> = claimed.iter().map(|c| c.task.as_str()).collect();
    assert!(
        tasks.contains(&"child"),
        "the second child starts once the first ended: {tasks:?}"
    );

    // A child over its task's rate limit is skipped, and the parent's step fails with that.
    let p3 = trigger(&engine, json!({"task": "parent", "payload": 3})).await;
    let p4 = trigger(&engine, json!({"task": "parent", "payload": 4})).await;
    engine.try_claim(10).unwrap();
    let inv = |run: &str| json!({"op": "wait", "run": run, "waits": [{"kind": "invoke", "key": "l", "task": "limited", "payload": {}}]});
    report(&engine, json!([inv(&p3), inv(&p4)])).await;
    let again = engine.try_claim(10).unwrap();
    let resumed: Vec<&Claimed> = again.iter().filter(|c| c.id == p4).collect();
    assert_eq!(
        resumed.len(),
        1,
        "the parent whose child was skipped resumes at once"
    );
    let step = resumed[0].steps.iter().find(|s| s.key == "l").unwrap();
    assert_eq!(step.status, StepStatus::Failed);
    let err: Value = serde_json::from_str(step.error.as_ref().unwrap().get()).unwrap();
    assert!(
        err["message"].as_str().unwrap().contains("skipped"),
        "{err}"
    );
}

/// Issue 9 #6: `ttl` counted from the trigger: `{ delay: '1h', ttl: '10m' }` was always
/// cancelled before it was due.
#[tokio::test]
async fn ttl_counts_from_when_the_run_is_due_not_from_the_trigger() {
    let (engine, clock) = engine(&[("t", json!({}))]);
    let runs_at_1h = trigger(
        &engine,
        json!({"task": "t", "payload": 1, "delayMs": HOUR, "ttlMs": 10 * MIN}),
    )
    .await;
    let expires = trigger(&engine, json!({"task": "t", "payload": 2, "delayMs": HOUR, "ttlMs": 10 * MIN, "concurrencyKey": "x"})).await;
    clock.set(EPOCH + HOUR);
    let c = engine.try_claim(1).unwrap();
    assert_eq!(
        ids(&c),
        std::slice::from_ref(&runs_at_1h),
        "due at 1h, within its ttl"
    );
    engine.flush().await.unwrap();
    assert_eq!(
        status(&engine, &expires),
        RunStatus::Queued,
        "still within its ttl at 1h"
    );
    clock.set(EPOCH + HOUR + 10 * MIN + 1);
    engine.try_claim(0).unwrap();
    engine.flush().await.unwrap();
    assert_eq!(
        status(&engine, &expires),
        RunStatus::Cancelled,
        "not started 10 min after it was due"
    );
}

/// Issue 9 #8: a string `key` was one constant key: `debounce: { key: 'event.data.userId' }`
/// merged every user's events into one run. It is an expression over the run's event.
#[tokio::test]
async fn a_string_key_is_an_expression_over_the_event_or_payload() {
    let (engine, clock) = engine(&[
        (
            "digest",
            json!({"on": [{"event": "user/active"}], "debounce": {"periodMs": MIN}, "keys": {"debounce": "event.data.userId"}}),
        ),
        (
            "api",
            json!({"rateLimit": {"limit": 1, "periodMs": HOUR}, "keys": {"rateLimit": "event.data.account"}}),
        ),
    ]);
    send(
        &engine,
        json!([
            {"name": "user/active", "data": {"userId": "a"}},
            {"name": "user/active", "data": {"userId": "b"}},
            {"name": "user/active", "data": {"userId": "a"}},
        ]),
    )
    .await;
    clock.set(EPOCH + 2 * MIN);
    let c = engine.try_claim(10).unwrap();
    assert_eq!(
        c.len(),
        2,
        "one debounced run per user, not one for everybody"
    );
    // On a direct trigger the event is `{ data: payload }`.
    let a1 = trigger(&engine, json!({"task": "api", "payload": {"account": "A"}})).await;
    let b1 = trigger(&engine, json!({"task": "api", "payload": {"account": "B"}})).await;
    let a2 = trigger(&engine, json!({"task": "api", "payload": {"account": "A"}})).await;
    assert_eq!(status(&engine, &a1), RunStatus::Queued);
    assert_eq!(
        status(&engine, &b1),
        RunStatus::Queued,
        "another account has its own limit"
    );
    assert_eq!(status(&engine, &a2), RunStatus::Skipped);
}

#[tokio::test]
async fn a_bad_key_expression_fails_at_registration_naming_the_option() {
    let (engine, _clock) = engine(&[]);
    let err = engine
        .register_task(
            "t",
            policy(json!({"concurrency": {"limit": 1}, "keys": {"concurrency": "event.data.(x"}})),
        )
        .unwrap_err();
    assert_eq!(err.code(), "E_BAD_OPTION");
    assert!(err.to_string().contains("concurrency.key"), "{err}");
}

/// Issue 9 #13: `runs.replay` bypassed `singleton`: two runs of one key were active at once.
#[tokio::test]
async fn a_replay_obeys_singleton() {
    let (engine, _clock) = engine(&[("one", json!({"singleton": {"mode": "skip"}}))]);
    let first = trigger(
        &engine,
        json!({"task": "one", "payload": 1, "singletonKey": "k"}),
    )
    .await;
    engine.try_claim(10).unwrap();
    let replay = engine.replay(&first).await.unwrap();
    assert_eq!(status(&engine, &replay), RunStatus::Skipped);
    assert!(
        engine.try_claim(10).unwrap().is_empty(),
        "only the first run is active"
    );
    report(
        &engine,
        json!([{"op": "complete", "run": first, "output": 1}]),
    )
    .await;
    let again = engine.replay(&first).await.unwrap();
    assert_eq!(ids(&engine.try_claim(10).unwrap()), [again]);
}

/// Issue 9 #18: a cancelled run still listed a step `waiting` with a future wake time.
#[tokio::test]
async fn a_cancelled_run_keeps_no_waiting_step() {
    let (engine, _clock) = engine(&[("t", json!({}))]);
    let run = trigger(&engine, json!({"task": "t", "payload": {}})).await;
    engine.try_claim(10).unwrap();
    report(
        &engine,
        json!([{"op": "step", "run": run, "key": "a", "output": 1}]),
    )
    .await;
    report(
        &engine,
        json!([{"op": "wait", "run": run, "waits": [
            {"kind": "sleep", "key": "nap", "wakeAt": EPOCH + HOUR},
            {"kind": "event", "key": "ev", "events": ["x"], "wakeAt": EPOCH + 2 * HOUR}
        ]}]),
    )
    .await;
    assert!(engine.cancel(&run).await.unwrap());
    let steps = engine.get_run(&run).unwrap().unwrap().steps.unwrap();
    let listed: Vec<(&str, StepStatus)> = steps.iter().map(|s| (s.id.as_str(), s.status)).collect();
    assert_eq!(listed, [("a", StepStatus::Completed)]);
}

/// Issue 9 #17: `schedules.create` accepted an unknown task and a cron that never fires.
#[tokio::test]
async fn schedules_create_refuses_an_unknown_task_and_a_cron_that_never_fires() {
    let (engine, _clock) = engine(&[("t", json!({}))]);
    let input = |task: &str, cron: &str| -> ScheduleIn {
        serde_json::from_value(json!({"task": task, "cron": cron})).unwrap()
    };
    let e = engine
        .create_schedule(input("nope", "0 9 * * *"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "E_UNKNOWN_TASK");
    let e = engine
        .create_schedule(input("t", "0 0 31 2 *"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "E_BAD_CRON");
    assert!(e.to_string().contains("never fires"), "{e}");
    assert!(engine.list_schedules(None).unwrap().is_empty());
    let e = engine
        .register_task(
            "s",
            policy(json!({"schedule": {"cron": "0 0 30 2 *", "tz": "UTC"}})),
        )
        .unwrap_err();
    assert_eq!(e.code(), "E_BAD_CRON");
}

/// Issue 15 #2: `timeout.finish` was forgotten after a restart for runs parked on a wait.
#[tokio::test]
async fn timeout_finish_of_a_waiting_run_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(EPOCH));
    let open = || {
        let e = Engine::open(
            open_sled(dir.path(), None).unwrap(),
            clock.clone(),
            EngineOptions::default(),
        )
        .unwrap();
        e.register_task("t", policy(json!({"timeout": {"finishMs": 10 * MIN}})))
            .unwrap();
        e
    };
    let run = {
        let engine = open();
        let run = trigger(&engine, json!({"task": "t", "payload": {}})).await;
        engine.try_claim(10).unwrap();
        report(
            &engine,
            json!([{"op": "step", "run": run, "key": "a", "output": 1}]),
        )
        .await;
        report(&engine, json!([{"op": "wait", "run": run, "waits": [{"kind": "event", "key": "never", "events": ["never"]}]}])).await;
        engine.close();
        run
    };
    let engine = open();
    clock.set(EPOCH + 10 * MIN + 1);
    engine.try_claim(10).unwrap();
    engine.flush().await.unwrap();
    assert_eq!(status(&engine, &run), RunStatus::Failed);
    assert_eq!(error_code(&engine, &run), "E_TIMEOUT");
}

/// Issue 15 #3: a scheduled task removed from the code kept admitting a run per tick, and
/// when it came back every stale tick ran at once.
#[tokio::test]
async fn a_schedule_whose_task_is_gone_fires_nothing_and_its_return_fires_one_tick() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(EPOCH));
    let open = |with_task: bool| {
        let e = Engine::open(
            open_sled(dir.path(), None).unwrap(),
            clock.clone(),
            EngineOptions::default(),
        )
        .unwrap();
        if with_task {
            e.register_task(
                "cron",
                policy(json!({"schedule": {"cron": "*/10 * * * *", "tz": "UTC"}})),
            )
            .unwrap();
        }
        e
    };
    open(true).close();
    let engine = open(false); // the task was removed from the code
    for i in 1..=5 {
        clock.set(EPOCH + i * 10 * MIN);
        engine.try_claim(10).unwrap();
    }
    engine.flush().await.unwrap();
    assert!(
        engine
            .list_runs(ListFilter::default())
            .unwrap()
            .runs
            .is_empty(),
        "nothing fired"
    );
    engine.close();
    let engine = open(true); // and came back
    engine.try_claim(10).unwrap();
    engine.flush().await.unwrap();
    let runs = engine.list_runs(ListFilter::default()).unwrap().runs;
    assert_eq!(
        runs.len(),
        1,
        "one run for the missed ticks, not one per tick"
    );
}

/// Issue 15 #5: rate-limit and throttle windows were kept per key forever (~200 B each).
#[tokio::test]
async fn windows_of_a_key_are_freed_with_their_period() {
    let (engine, clock) = engine(&[
        (
            "api",
            json!({"rateLimit": {"limit": 5, "periodMs": MIN}, "keys": {"rateLimit": "event.data.user"}}),
        ),
        (
            "slow",
            json!({"throttle": {"limit": 1, "periodMs": MIN}, "keys": {"throttle": "event.data.user"}}),
        ),
    ]);
    for i in 0..500 {
        trigger(
            &engine,
            json!({"task": "api", "payload": {"user": format!("u{i}")}}),
        )
        .await;
        trigger(
            &engine,
            json!({"task": "slow", "payload": {"user": format!("u{i}")}}),
        )
        .await;
    }
    engine.try_claim(1_000).unwrap();
    assert_eq!(engine.stats().unwrap().flow_keys, 1_000);
    clock.set(EPOCH + MIN + 1);
    engine.try_claim(0).unwrap();
    assert_eq!(
        engine.stats().unwrap().flow_keys,
        0,
        "every window emptied and was dropped"
    );
}

/// A throttle window after the wall clock stepped back an hour holds one period, not the
/// hour of the step.
#[tokio::test]
async fn a_throttle_window_after_the_clock_stepped_back_holds_one_period() {
    let (engine, clock) = engine(&[("slow", json!({"throttle": {"limit": 1, "periodMs": MIN}}))]);
    let a = trigger(&engine, json!({"task": "slow", "payload": 1})).await;
    assert_eq!(
        ids(&engine.try_claim(10).unwrap()),
        std::slice::from_ref(&a)
    );
    clock.set(EPOCH - HOUR);
    let b = trigger(&engine, json!({"task": "slow", "payload": 2})).await;
    assert!(
        engine.try_claim(10).unwrap().is_empty(),
        "the window is full for one period"
    );
    clock.set(EPOCH - HOUR + MIN + 1);
    assert_eq!(ids(&engine.try_claim(10).unwrap()), [b]);
}

/// Events sent with a `ts` reach live waits and later waits with that same `ts` (issue 15
/// #9: the stored copy had the ingestion time instead).
#[tokio::test]
async fn an_event_has_one_ts_for_live_and_later_waits() {
    let (engine, _clock) = engine(&[("t", json!({}))]);
    let live = trigger(&engine, json!({"task": "t", "payload": {}})).await;
    let later = trigger(&engine, json!({"task": "t", "payload": {}})).await;
    engine.try_claim(10).unwrap();
    let w = |run: &str| json!({"op": "wait", "run": run, "waits": [{"kind": "event", "key": "e", "events": ["x"]}]});
    report(&engine, json!([w(&live)])).await;
    send(&engine, json!([{"name": "x", "ts": EPOCH - 5_000}])).await;
    report(&engine, json!([w(&later)])).await;
    let c = engine.try_claim(10).unwrap();
    assert_eq!(c.len(), 2);
    for run in &c {
        let step = run.steps.iter().find(|s| s.key == "e").unwrap();
        let ev: Value = serde_json::from_str(step.output.as_ref().unwrap().get()).unwrap();
        assert_eq!(ev["ts"], json!(EPOCH - 5_000), "run {}", run.id);
    }
}

/// Issue 15 (suspected, confirmed): runs of a task no process defines showed `queued` with
/// nothing that said why. `runs.get` says `waitingForTask`, `stats()` counts them.
#[tokio::test]
async fn a_run_whose_task_is_not_defined_says_it_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(EPOCH));
    let open = |with: bool| {
        let e = Engine::open(
            open_sled(dir.path(), None).unwrap(),
            clock.clone(),
            EngineOptions::default(),
        )
        .unwrap();
        if with {
            e.register_task("renamed", TaskPolicy::default()).unwrap();
        }
        e
    };
    let run = {
        let e = open(true);
        let run = trigger(&e, json!({"task": "renamed", "payload": 1})).await;
        e.close();
        run
    };
    let e = open(false);
    assert!(e.try_claim(10).unwrap().is_empty());
    let v = e.get_run(&run).unwrap().unwrap();
    assert_eq!(v.status, RunStatus::Queued);
    assert!(v.waiting_for_task);
    assert_eq!(e.stats().unwrap().waiting_for_task, 1);
    e.register_task("renamed", TaskPolicy::default()).unwrap();
    assert!(!e.get_run(&run).unwrap().unwrap().waiting_for_task);
    assert_eq!(ids(&e.try_claim(10).unwrap()), [run]);
}

/// A wall clock that can jump without telling anyone (NTP, a host resumed from suspend):
/// the system clock plus an offset.
struct JumpingClock(std::sync::atomic::AtomicU64);

impl durably_core::Clock for JumpingClock {
    fn now_ms(&self) -> u64 {
        durably_core::SystemClock.now_ms() + self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn real_wait(&self, deadline_ms: u64) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_millis(
            deadline_ms.saturating_sub(self.now_ms()),
        ))
    }
}

/// Issue 15, suspected: after the wall clock jumps forward, a timer waited for on a
/// monotonic timer computed before the jump fired late (an hour late for a 1 h delay).
/// The claimer looks again at least every second.
#[tokio::test]
async fn a_timer_fires_soon_after_the_wall_clock_jumps_past_it() {
    use durably_core::Clock;
    let clock = Arc::new(JumpingClock(std::sync::atomic::AtomicU64::new(0)));
    let engine = Engine::open(
        open_memory().unwrap(),
        clock.clone(),
        EngineOptions::default(),
    )
    .unwrap();
    engine.register_task("t", TaskPolicy::default()).unwrap();
    let item =
        serde_json::from_value(json!({"task": "t", "payload": 1, "delayMs": 3_600_000})).unwrap();
    let id = engine
        .trigger(vec![vec![item]])
        .await
        .remove(0)
        .unwrap()
        .remove(0);
    let claiming = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.claim(10).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await; // the claimer is asleep
    assert!(!claiming.is_finished(), "nothing is due before the jump");
    clock
        .0
        .store(3_600_000, std::sync::atomic::Ordering::SeqCst); // jump, unannounced
    let jumped = clock.now_ms();
    let batch = tokio::time::timeout(std::time::Duration::from_secs(5), claiming)
        .await
        .expect("the run was handed out within seconds of the jump, not an hour later")
        .unwrap()
        .unwrap()
        .expect("a batch");
    assert_eq!(
        batch.runs.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [id.as_str()]
    );
    assert!(
        clock.now_ms() - jumped <= 2_000,
        "within the claimer's 1 s nap"
    );
}

/// Issue 9 #18, after a wait timed out: the run woke (its wait resolved with null) and is
/// running again when it is cancelled — no step is left `waiting` with a wake time.
#[tokio::test]
async fn a_run_cancelled_while_running_after_its_wait_timed_out_keeps_no_waiting_step() {
    let (engine, clock) = engine(&[("t", json!({}))]);
    let run = trigger(&engine, json!({"task": "t", "payload": {}})).await;
    engine.try_claim(10).unwrap();
    report(
        &engine,
        json!([{"op": "wait", "run": run, "waits": [
            {"kind": "event", "key": "ev", "events": ["x"], "wakeAt": EPOCH + HOUR}
        ]}]),
    )
    .await;
    clock.advance(HOUR + 1);
    let c = engine.try_claim(10).unwrap();
    assert_eq!(c.len(), 1, "woken by the timeout");
    assert!(engine.cancel(&run).await.unwrap());
    engine.flush().await.unwrap();
    let steps = engine.get_run(&run).unwrap().unwrap().steps.unwrap();
    let waiting: Vec<&str> = steps
        .iter()
        .filter(|s| s.status == StepStatus::Waiting)
        .map(|s| s.id.as_str())
        .collect();
    assert!(
        waiting.is_empty(),
        "steps still waiting: {waiting:?} ({steps:?})"
    );
}
