//! Durable waits through the public API, as the JS executor drives them: a run reports a
//! `wait` op (sleep, event, token) and is unloaded; an event, a token or the clock makes it
//! claimable again with the wait's step resolved. Time is a `ManualClock` at a fixed epoch,
//! so deadlines are checked to the millisecond; nothing sleeps in real time.

use durably_core::engine::{Claimed, EventIn};
use durably_core::model::{RunStatus, StepStatus};
use durably_core::{
    open_memory, open_sled, Engine, EngineOptions, ManualClock, Op, TaskPolicy, TriggerItem,
};
use serde_json::{json, Value};
use std::sync::Arc;

/// 2023-11-14T22:13:20Z: every test starts here.
const EPOCH: u64 = 1_700_000_000_000;

fn memory_engine(opts: EngineOptions) -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let engine = Engine::open(open_memory().unwrap(), clock.clone(), opts).unwrap();
    engine.register_task("t", TaskPolicy::default()).unwrap();
    (engine, clock)
}

fn sled_engine(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Engine {
    let store = open_sled(dir, None).unwrap();
    let engine = Engine::open(store, clock.clone(), EngineOptions::default()).unwrap();
    engine.register_task("t", TaskPolicy::default()).unwrap();
    engine
}

async fn trigger(engine: &Engine, payload: Value) -> String {
    let item: TriggerItem =
        serde_json::from_value(json!({"task": "t", "payload": payload})).unwrap();
    let mut results = engine.trigger(vec![vec![item]]).await;
    let ids = results.remove(0).expect("the trigger is accepted");
    ids.into_iter().next().unwrap()
}

/// Reports ops in their wire form (`[{"op":"wait","run":…,"waits":[…]}]`).
async fn report(engine: &Engine, ops: Value) {
    let ops = Op::parse_batch(&ops.to_string()).unwrap();
    engine.report(ops).await.unwrap();
}

async fn send(engine: &Engine, events: Value) -> Vec<String> {
    let events: Vec<EventIn> = serde_json::from_value(events).unwrap();
    engine.send(events).await.unwrap()
}

/// The wire form of `step.waitForEvent('paid', { event: 'order/paid', match: 'data.userId' })`
/// for a run whose own `data.userId` is `user`; `extra` adds `wakeAt`, `sinceRunStart` …
fn paid_wait(user: &str, extra: Value) -> Value {
    let mut w = json!({
        "kind": "event", "key": "paid", "events": ["order/paid"],
        "path": "data.userId", "value": serde_json::to_string(user).unwrap(),
    });
    if let (Some(w), Some(extra)) = (w.as_object_mut(), extra.as_object()) {
        w.extend(extra.clone());
    }
    w
}

async fn park(engine: &Engine, run: &str, waits: Value) {
    report(engine, json!([{"op": "wait", "run": run, "waits": waits}])).await;
}

fn ids(claimed: &[Claimed]) -> Vec<&str> {
    claimed.iter().map(|c| c.id.as_str()).collect()
}

fn status(engine: &Engine, id: &str) -> RunStatus {
    engine.get_run(id).unwrap().expect("the run exists").status
}

/// The resolved output of step `key` of a claimed run, as JSON.
fn step_output(c: &Claimed, key: &str) -> Value {
    let step = c
        .steps
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("run {} has no step {key}", c.id));
    assert_eq!(step.status, StepStatus::Completed, "step {key}");
    step.output
        .as_deref()
        .map(|r| serde_json::from_str(r.get()).unwrap())
        .unwrap_or(Value::Null)
}

// --- event waits --------------------------------------------------------------------------

#[tokio::test]
async fn an_event_resumes_only_the_one_run_whose_match_value_equals_among_a_thousand() {
    let (engine, _clock) = memory_engine(EngineOptions {
        concurrency: 2_000,
        ..EngineOptions::default()
    });
    let mut runs = Vec::new();
    for i in 0..1_000 {
        runs.push(trigger(&engine, json!({"userId": format!("u{i}")})).await);
    }
    assert_eq!(engine.try_claim(2_000).unwrap().len(), 1_000);
    let ops: Vec<Value> = runs
        .iter()
        .enumerate()
        .map(|(i, run)| json!({"op": "wait", "run": run, "waits": [paid_wait(&format!("u{i}"), json!({}))]}))
        .collect();
    report(&engine, Value::Array(ops)).await;
    assert_eq!(engine.stats().unwrap().waiting, 1_000);
    assert!(engine.try_claim(2_000).unwrap().is_empty());

    // Values equal as JSON text only: a number 500 is not the string "u500".
    send(
        &engine,
        json!([{"name": "order/paid", "data": {"userId": 500}}]),
    )
    .await;
    send(
        &engine,
        json!([{"name": "order/paid", "data": {"user": "u500"}}]),
    )
    .await;
    send(
        &engine,
        json!([{"name": "order/refunded", "data": {"userId": "u500"}}]),
    )
    .await;
    assert!(engine.try_claim(2_000).unwrap().is_empty());

    let sent = send(
        &engine,
        json!([{"name": "order/paid", "data": {"userId": "u500", "amount": 7}}]),
    )
    .await;
    let claimed = engine.try_claim(2_000).unwrap();
    assert_eq!(ids(&claimed), [runs[500].as_str()]);
    assert_eq!(
        step_output(&claimed[0], "paid"),
        json!({"id": sent[0], "name": "order/paid", "data": {"userId": "u500", "amount": 7}, "ts": EPOCH})
    );
    assert_eq!(engine.stats().unwrap().waiting, 999);
    assert_eq!(status(&engine, &runs[499]), RunStatus::Waiting);
    assert_eq!(status(&engine, &runs[501]), RunStatus::Waiting);
}

#[tokio::test]
async fn one_event_resumes_every_run_waiting_with_that_value() {
    let (engine, _clock) = memory_engine(EngineOptions::default());
    let a = trigger(&engine, json!({"userId": "u1"})).await;
    let b = trigger(&engine, json!({"userId": "u1"})).await;
    let c = trigger(&engine, json!({"userId": "u2"})).await;
    engine.try_claim(10).unwrap();
    for run in [&a, &b, &c] {
        let user = if *run == c { "u2" } else { "u1" };
        park(&engine, run, json!([paid_wait(user, json!({}))])).await;
    }
    send(
        &engine,
        json!([{"name": "order/paid", "data": {"userId": "u1"}}]),
    )
    .await;
    let mut woke: Vec<String> = engine
        .try_claim(10)
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    woke.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(woke, expected);
    assert_eq!(status(&engine, &c), RunStatus::Waiting);
}

#[tokio::test]
async fn an_event_wait_with_a_timeout_becomes_claimable_exactly_at_its_deadline() {
    let (engine, clock) = memory_engine(EngineOptions::default());
    let run = trigger(&engine, json!({"userId": "u1"})).await;
    engine.try_claim(10).unwrap();
    park(
        &engine,
        &run,
        json!([paid_wait("u1", json!({"wakeAt": EPOCH + 60_000}))]),
    )
    .await;
    let view = engine.get_run(&run).unwrap().unwrap();
    assert_eq!(view.status, RunStatus::Waiting);
    assert_eq!(view.ready_at, Some(EPOCH + 60_000));
    let stats = engine.stats().unwrap();
    assert_eq!(
        (stats.waiting, stats.delayed, stats.next_wake_at),
        (1, 1, Some(EPOCH + 60_000))
    );

    clock.advance(59_999);
    assert!(
        engine.try_claim(10).unwrap().is_empty(),
        "timed out 1 ms early"
    );
    clock.advance(1);
    let claimed = engine.try_claim(10).unwrap();
    assert_eq!(ids(&claimed), [run.as_str()]);
    // Handed back still waiting, with a deadline at or before `now`: the executor resolves it
    // with null.
    let step = claimed[0].steps.iter().find(|s| s.key == "paid").unwrap();
    assert_eq!(step.status, StepStatus::Waiting);
    assert_eq!(step.wake_at, Some(EPOCH + 60_000));
    assert!(step.wake_at.unwrap() <= claimed[0].now);

    // The timed-out wait left the index: a late event resumes nothing.
    assert_eq!(engine.stats().unwrap().waiting, 0);
    report(
        &engine,
        json!([{"op": "step", "run": run, "key": "paid", "output": null},
               {"op": "complete", "run": run, "output": "timed out"}]),
    )
    .await;
    send(
        &engine,
        json!([{"name": "order/paid", "data": {"userId": "u1"}}]),
    )
    .await;
    assert!(engine.try_claim(10).unwrap().is_empty());
    assert_eq!(status(&engine, &run), RunStatus::Completed);
}

#[tokio::test]
async fn an_event_sent_after_the_run_started_but_before_the_wait_resolves_it_at_registration() {
    let (engine, clock) = memory_engine(EngineOptions::default());
    let run = trigger(&engine, json!({"userId": "u1"})).await;
    engine.try_claim(10).unwrap();
    clock.advance(10);
    let sent = send(
        &engine,
        json!([{"name": "order/paid", "data": {"userId": "u1"}}]),
    )
    .await;
    clock.advance(10);

    park(
        &engine,
        &run,
        json!([paid_wait("u1", json!({"wakeAt": EPOCH + 60_000}))]),
    )
    .await;
    assert_eq!(
        status(&engine, &run),
        RunStatus::Queued,
        "requeued at once, never parked"
    );
    let claimed = engine.try_claim(10).unwrap();
    assert_eq!(ids(&claimed), [run.as_str()]);
    let ev = step_output(&claimed[0], "paid");
    assert_eq!(ev["id"], json!(sent[0]));
    assert_eq!(ev["ts"], json!(EPOCH + 10));
    assert_eq!(engine.stats().unwrap().waiting, 0);
}

#[tokio::test]
async fn a_wait_since_now_ignores_an_event_that_came_before_it() {
    let (engine, clock) = memory_engine(EngineOptions::default());
    let run = trigger(&engine, json!({"userId": "u1"})).await;
    engine.try_claim(10).unwrap();
    send(
        &engine,
        json!([{"name": "order/paid", "data": {"userId": "u1", "n": 1}}]),
    )
    .await;
    clock.advance(10);
    park(
        &engine,
        &run,
        json!([paid_wait("u1", json!({"sinceRunStart": false}))]),
    )
    .await;
    assert_eq!(status(&engine, &run), RunStatus::Waiting);
    assert!(engine.try_claim(10).unwrap().is_empty());

    send(
        &engine,
        json!([{"name": "order/paid", "data": {"userId": "u1", "n": 2}}]),
    )
    .await;
    let claimed = engine.try_claim(10).unwrap();
    assert_eq!(ids(&claimed), [run.as_str()]);
    assert_eq!(step_output(&claimed[0], "paid")["data"]["n"], json!(2));
}

#[tokio::test]
async fn an_event_from_before_the_run_was_created_does_not_resolve_its_wait() {
    let (engine, clock) = memory_engine(EngineOptions::default());
    send(
        &engine,
        json!([{"name": "order/paid", "data": {"userId": "u1"}}]),
    )
    .await;
    clock.advance(1);
    let run = trigger(&engine, json!({"userId": "u1"})).await;
    engine.try_claim(10).unwrap();
    park(&engine, &run, json!([paid_wait("u1", json!({}))])).await;
    assert_eq!(status(&engine, &run), RunStatus::Waiting);
    assert!(engine.try_claim(10).unwrap().is_empty());
}

#[tokio::test]
async fn event_waits_survive_a_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(EPOCH));
    let run = {
        let engine = sled_engine(dir.path(), &clock);
        let run = trigger(&engine, json!({"userId": "u1"})).await;
        engine.try_claim(10).unwrap();
        report(
            &engine,
            json!([{"op": "step", "run": run, "key": "before", "output": "b"}]),
        )
        .await;
        park(
            &engine,
            &run,
            json!([paid_wait("u1", json!({"wakeAt": EPOCH + 86_400_000}))]),
        )
        .await;
        assert_eq!(status(&engine, &run), RunStatus::Waiting);
        engine.close();
        run
    };
    clock.advance(60_000);

    let engine = sled_engine(dir.path(), &clock);
    assert_eq!(status(&engine, &run), RunStatus::Waiting);
    assert_eq!(
        engine.stats().unwrap().waiting,
        1,
        "the wait index is rebuilt"
    );
    assert!(engine.try_claim(10).unwrap().is_empty());
    send(
        &engine,
        json!([{"name": "order/paid", "data": {"userId": "u2"}}]),
    )
    .await;
    assert!(engine.try_claim(10).unwrap().is_empty());

    let sent = send(
        &engine,
        json!([{"name": "order/paid", "data": {"userId": "u1"}}]),
    )
    .await;
    let claimed = engine.try_claim(10).unwrap();
    assert_eq!(ids(&claimed), [run.as_str()]);
    assert_eq!(step_output(&claimed[0], "before"), json!("b"));
    assert_eq!(step_output(&claimed[0], "paid")["id"], json!(sent[0]));
    report(
        &engine,
        json!([{"op": "complete", "run": run, "output": "done"}]),
    )
    .await;
    engine.close();

    // Resumed and finished: the next open has nothing waiting.
    let engine = sled_engine(dir.path(), &clock);
    assert_eq!(status(&engine, &run), RunStatus::Completed);
    assert_eq!(engine.stats().unwrap().waiting, 0);
    engine.close();
}

#[tokio::test]
async fn a_sleep_survives_a_close_and_reopen_and_wakes_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(EPOCH));
    let run = {
        let engine = sled_engine(dir.path(), &clock);
        let run = trigger(&engine, json!({})).await;
        engine.try_claim(10).unwrap();
        park(
            &engine,
            &run,
            json!([{"kind": "sleep", "key": "nap", "wakeAt": EPOCH + 3_600_000}]),
        )
        .await;
        engine.close();
        run
    };
    let engine = sled_engine(dir.path(), &clock);
    assert_eq!(status(&engine, &run), RunStatus::Waiting);
    clock.advance(3_599_999);
    assert!(engine.try_claim(10).unwrap().is_empty());
    clock.advance(1);
    assert_eq!(ids(&engine.try_claim(10).unwrap()), [run.as_str()]);
    engine.close();
}

// --- tokens -------------------------------------------------------------------------------

#[tokio::test]
async fn a_token_completed_before_the_wait_resolves_it_at_registration() {
    let (engine, _clock) = memory_engine(EngineOptions::default());
    let run = trigger(&engine, json!({})).await;
    engine.try_claim(10).unwrap();
    let data = serde_json::value::to_raw_value(&json!({"approved": true})).unwrap();
    let resumed = engine.complete_token("tok_early", data).await.unwrap();
    assert!(!resumed, "nobody waits for it yet");

    park(
        &engine,
        &run,
        json!([{"kind": "token", "key": "approval", "token": "tok_early", "wakeAt": EPOCH + 60_000}]),
    )
    .await;
    assert_eq!(status(&engine, &run), RunStatus::Queued);
    let claimed = engine.try_claim(10).unwrap();
    assert_eq!(ids(&claimed), [run.as_str()]);
    assert_eq!(
        step_output(&claimed[0], "approval"),
        json!({"approved": true})
    );
}

#[tokio::test]
async fn completing_a_token_resumes_the_run_waiting_for_it() {
    let (engine, clock) = memory_engine(EngineOptions::default());
    let run = trigger(&engine, json!({})).await;
    engine.try_claim(10).unwrap();
    park(
        &engine,
        &run,
        json!([{"kind": "token", "key": "approval", "token": "tok_1", "wakeAt": EPOCH + 60_000}]),
    )
    .await;
    assert_eq!(status(&engine, &run), RunStatus::Waiting);
    clock.advance(30_000);
    let other = serde_json::value::to_raw_value(&json!("nope")).unwrap();
    assert!(!engine.complete_token("tok_2", other).await.unwrap());
    assert!(engine.try_claim(10).unwrap().is_empty());

    let data = serde_json::value::to_raw_value(&json!("yes")).unwrap();
    assert!(engine.complete_token("tok_1", data).await.unwrap());
    let claimed = engine.try_claim(10).unwrap();
    assert_eq!(ids(&claimed), [run.as_str()]);
    assert_eq!(step_output(&claimed[0], "approval"), json!("yes"));

    // Its timeout no longer applies.
    report(
        &engine,
        json!([{"op": "complete", "run": run, "output": 1}]),
    )
    .await;
    clock.advance(60_000);
    assert!(engine.try_claim(10).unwrap().is_empty());
    assert_eq!(status(&engine, &run), RunStatus::Completed);
}

// --- null results -------------------------------------------------------------------------

#[tokio::test]
async fn a_wait_resolved_with_null_and_a_null_output_stay_null_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(EPOCH));
    let engine = sled_engine(dir.path(), &clock);
    let run = trigger(&engine, json!({"userId": "u1"})).await;
    engine.try_claim(10).unwrap();
    park(
        &engine,
        &run,
        json!([paid_wait("u1", json!({"wakeAt": EPOCH + 1_000}))]),
    )
    .await;
    clock.advance(1_000);
    assert_eq!(ids(&engine.try_claim(10).unwrap()), [run.as_str()]);
    // A timed-out wait is memoized as null, and the run returns that null.
    report(
        &engine,
        json!([{"op": "step", "run": run, "key": "paid", "output": null},
               {"op": "complete", "run": run, "output": null}]),
    )
    .await;
    engine.close();

    let engine = sled_engine(dir.path(), &clock);
    let outcome = engine.wait_result(&run, None).await.unwrap();
    assert_eq!(outcome.status, RunStatus::Completed);
    assert_eq!(outcome.output.as_deref().map(|r| r.get()), Some("null"));
    let view = engine.get_run(&run).unwrap().unwrap();
    assert_eq!(view.output.as_deref().map(|r| r.get()), Some("null"));
    let steps = view.steps.unwrap();
    let paid = steps.iter().find(|s| s.id == "paid").unwrap();
    assert_eq!(paid.status, StepStatus::Completed);
    assert_eq!(paid.output.as_deref().map(|r| r.get()), Some("null"));
    engine.close();
}

// --- event order is a persistent sequence, never the wall clock ---------------------------

/// Issue 9 #5: the look-back for an event that came before the wait was capped at 10,000
/// events of its name. Now it is an index lookup (match) or an ordered read (no match).
#[tokio::test]
async fn an_early_event_is_found_behind_twenty_thousand_others_of_its_name() {
    let (engine, _clock) = memory_engine(EngineOptions::default());
    let run = trigger(&engine, json!({"userId": "u-early"})).await;
    send(
        &engine,
        json!([{"name": "order/paid", "data": {"userId": "u-early", "n": 0}}]),
    )
    .await;
    let noise: Vec<Value> = (0..20_000)
        .map(|i| json!({"name": "order/paid", "data": {"userId": format!("other-{i}")}}))
        .collect();
    for chunk in noise.chunks(5_000) {
        send(&engine, Value::Array(chunk.to_vec())).await;
    }
    engine.flush().await.unwrap();
    assert_eq!(ids(&engine.try_claim(10).unwrap()), [run.as_str()]);
    // With `match` (the value index) …
    park(&engine, &run, json!([paid_wait("u-early", json!({}))])).await;
    let c = engine.try_claim(10).unwrap();
    assert_eq!(
        ids(&c),
        [run.as_str()],
        "resumed at once by the early event"
    );
    assert_eq!(step_output(&c[0], "paid")["data"]["n"], json!(0));

    // … and with an `if` only (an ordered read of the name's events).
    let run2 = trigger(&engine, json!({"userId": "u2"})).await;
    let noise: Vec<Value> = (0..12_000)
        .map(|i| json!({"name": "plan/changed", "data": {"i": i}}))
        .collect();
    for chunk in noise.chunks(6_000) {
        send(&engine, Value::Array(chunk.to_vec())).await;
    }
    send(
        &engine,
        json!([{"name": "plan/changed", "data": {"i": -1, "late": true}}]),
    )
    .await;
    engine.flush().await.unwrap();
    assert_eq!(ids(&engine.try_claim(10).unwrap()), [run2.as_str()]);
    let w = json!({"kind": "event", "key": "late", "events": ["plan/changed"], "if": "async.data.late == true"});
    park(&engine, &run2, json!([w])).await;
    let c = engine.try_claim(10).unwrap();
    assert_eq!(ids(&c), [run2.as_str()]);
    assert_eq!(step_output(&c[0], "late")["data"]["i"], json!(-1));
}

/// Issue 15 #1: a run in `waitForEvent` stayed waiting after the wall clock stepped back and
/// a matching event came: events and cursors were ordered by wall time.
#[tokio::test]
async fn an_event_after_the_clock_stepped_back_still_resumes_its_wait() {
    let (engine, clock) = memory_engine(EngineOptions::default());
    let run = trigger(&engine, json!({"userId": "u1"})).await;
    engine.try_claim(10).unwrap();
    // A first event is consumed, moving the run's cursor to it.
    send(
        &engine,
        json!([{"name": "order/paid", "data": {"userId": "u1", "n": 1}}]),
    )
    .await;
    park(&engine, &run, json!([paid_wait("u1", json!({}))])).await;
    assert_eq!(ids(&engine.try_claim(10).unwrap()), [run.as_str()]);
    // The wall clock steps back a minute (NTP); the run waits for a second event …
    clock.set(EPOCH - 60_000);
    let w = json!({"kind": "event", "key": "second", "events": ["order/paid"], "path": "data.userId", "value": "\"u1\""});
    park(&engine, &run, json!([w])).await;
    assert_eq!(status(&engine, &run), RunStatus::Waiting);
    // … which comes, stamped a minute before the first.
    send(
        &engine,
        json!([{"name": "order/paid", "data": {"userId": "u1", "n": 2}}]),
    )
    .await;
    let c = engine.try_claim(10).unwrap();
    assert_eq!(ids(&c), [run.as_str()], "the second event resumes the wait");
    assert_eq!(step_output(&c[0], "second")["data"]["n"], json!(2));
}

/// Issue 15 #1, early side: an event that arrives after the run was created but is stamped
/// before its creation (the clock stepped back in between) is still "since run start".
#[tokio::test]
async fn an_early_event_stamped_before_the_run_by_a_clock_step_is_still_matched() {
    let (engine, clock) = memory_engine(EngineOptions::default());
    let run = trigger(&engine, json!({"userId": "u1"})).await;
    clock.set(EPOCH - 60_000);
    send(
        &engine,
        json!([{"name": "order/paid", "data": {"userId": "u1"}}]),
    )
    .await;
    assert_eq!(ids(&engine.try_claim(10).unwrap()), [run.as_str()]);
    park(&engine, &run, json!([paid_wait("u1", json!({}))])).await;
    assert_eq!(ids(&engine.try_claim(10).unwrap()), [run.as_str()]);
}

/// Sequence numbers survive a restart: events sent after a reopen order after the ones
/// before it, whatever the clock says, and a wait parked before the restart sees them.
#[tokio::test]
async fn events_after_a_restart_and_a_clock_step_order_after_the_ones_before() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(EPOCH));
    let run = {
        let engine = sled_engine(dir.path(), &clock);
        let run = trigger(&engine, json!({"userId": "u1"})).await;
        engine.try_claim(10).unwrap();
        send(
            &engine,
            json!([{"name": "order/paid", "data": {"userId": "u1", "n": 1}}]),
        )
        .await;
        park(&engine, &run, json!([paid_wait("u1", json!({}))])).await;
        assert_eq!(ids(&engine.try_claim(10).unwrap()), [run.as_str()]);
        let w = json!({"kind": "event", "key": "second", "events": ["order/paid"], "path": "data.userId", "value": "\"u1\""});
        park(&engine, &run, json!([w])).await;
        engine.close();
        run
    };
    clock.set(EPOCH - 3_600_000);
    let engine = sled_engine(dir.path(), &clock);
    assert_eq!(status(&engine, &run), RunStatus::Waiting);
    send(
        &engine,
        json!([{"name": "order/paid", "data": {"userId": "u1", "n": 2}}]),
    )
    .await;
    let c = engine.try_claim(10).unwrap();
    assert_eq!(ids(&c), [run.as_str()]);
    assert_eq!(step_output(&c[0], "second")["data"]["n"], json!(2));
}

/// Inngest's form of a wait, `if: 'async.data.userId == event.data.userId'`, is looked up in
/// the value index like a `match` (no ordered read under the scheduler lock) — with the same
/// answers as reading every event: the whole condition still decides, an `||` or a number
/// comparison (1 == 1.0) still finds its event.
#[tokio::test]
async fn a_wait_whose_if_requires_an_equality_finds_the_same_early_events_as_a_scan() {
    let (engine, _clock) = memory_engine(EngineOptions::default());
    let run = trigger(&engine, json!({"userId": "u-1"})).await;
    send(
        &engine,
        json!([
            {"name": "order/paid", "data": {"userId": "u-2", "amount": 90, "n": 1}},
            {"name": "order/paid", "data": {"userId": "u-1", "amount": 5, "n": 2}},
            {"name": "order/paid", "data": {"userId": "u-1", "amount": 50, "n": 3}},
            {"name": "order/paid", "data": {"userId": "u-1", "amount": 70, "n": 4}},
            {"name": "order/paid", "data": {"qty": 7.0, "n": 5}},
            {"name": "order/paid", "data": {"b": "y", "n": 6}},
        ]),
    )
    .await;
    engine.flush().await.unwrap();
    assert_eq!(ids(&engine.try_claim(10).unwrap()), [run.as_str()]);
    let wait = |key: &str, cond: &str| json!({"kind": "event", "key": key, "events": ["order/paid"], "if": cond, "sinceRunStart": true});
    let cases = [
        // (the `if`, the event it must find)
        ("async.data.userId == event.data.userId", 2),
        (
            "async.data.userId == event.data.userId && async.data.amount > 10",
            3,
        ),
        (
            "async.data.amount > 60 && event.data.userId == async.data.userId",
            4,
        ),
        ("async.data.qty == 7", 5),
        ("async.data.a == 'x' || async.data.b == 'y'", 6),
    ];
    for (i, (cond, n)) in cases.iter().enumerate() {
        let key = format!("w{i}");
        park(&engine, &run, json!([wait(&key, cond)])).await;
        let c = engine.try_claim(10).unwrap();
        assert_eq!(ids(&c), [run.as_str()], "{cond}: resumed at registration");
        assert_eq!(step_output(&c[0], &key)["data"]["n"], json!(n), "{cond}");
    }
    // No event meets it: the run waits.
    park(
        &engine,
        &run,
        json!([wait("none", "async.data.userId == 'u-3'")]),
    )
    .await;
    assert!(engine.try_claim(10).unwrap().is_empty());
}

/// A wait whose `if` no index answers reads its look-back before taking the scheduler lock,
/// then, under it, only what came since. Events sent meanwhile — before, during and after
/// that read — are neither missed nor taken out of order: the run always resumes with the
/// earliest matching event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_in_order_look_back_misses_no_event_sent_while_it_reads() {
    for round in 0..20 {
        let (engine, _clock) = memory_engine(EngineOptions::default());
        let run = trigger(&engine, json!({"min": 100})).await;
        let noise: Vec<Value> = (0..3_000)
            .map(|i| json!({"name": "plan/changed", "data": {"amount": i % 100}}))
            .collect();
        send(&engine, Value::Array(noise)).await;
        assert_eq!(ids(&engine.try_claim(10).unwrap()), [run.as_str()]);
        // Matching events (amount >= 100), numbered, sent one by one while the run parks.
        let sender = {
            let engine = engine.clone();
            tokio::spawn(async move {
                for n in 0..30 {
                    let filler: Vec<Value> = (0..50)
                        .map(|_| json!({"name": "plan/changed", "data": {"amount": 1}}))
                        .collect();
                    send(&engine, Value::Array(filler)).await;
                    send(
                        &engine,
                        json!([{"name": "plan/changed", "data": {"amount": 100 + n, "n": n}}]),
                    )
                    .await;
                }
            })
        };
        if round % 2 == 1 {
            tokio::task::yield_now().await;
        }
        let w = json!({"kind": "event", "key": "big", "events": ["plan/changed"], "if": "async.data.amount >= event.data.min"});
        park(&engine, &run, json!([w])).await;
        sender.await.unwrap();
        let c = engine.try_claim(10).unwrap();
        assert_eq!(ids(&c), [run.as_str()], "round {round}: the run resumed");
        assert_eq!(
            step_output(&c[0], "big")["data"]["n"],
            json!(0),
            "round {round}: with the earliest matching event"
        );
    }
}

/// A memory backend whose applies can be held back: an event can then be handed a sequence
/// number (and be pending) without being in the store yet. Counts the reads of an index.
#[derive(Default)]
struct Gate {
    kv: durably_core::store::MemKv,
    closed: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
    held: std::sync::atomic::AtomicUsize,
    scans: std::sync::atomic::AtomicUsize,
}

#[derive(Clone, Default)]
struct GateKv(Arc<Gate>);

impl durably_core::store::Kv for GateKv {
    fn apply(&self, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> durably_core::Result<()> {
        let mut closed = self.0.closed.lock().unwrap();
        if *closed {
            self.0
                .held
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        while *closed {
            closed = self.0.opened.wait(closed).unwrap();
        }
        drop(closed);
        self.0.kv.apply(ops)
    }
    fn get(&self, key: &[u8]) -> durably_core::Result<Option<Vec<u8>>> {
        self.0.kv.get(key)
    }
    fn scan(
        &self,
        prefix: &[u8],
        reverse: bool,
        start: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> durably_core::Result<()> {
        if prefix.starts_with(b"n/plan/changed") {
            self.0
                .scans
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.0.kv.scan(prefix, reverse, start, visit)
    }
    fn sync(&self) -> durably_core::Result<()> {
        Ok(())
    }
    fn location(&self) -> String {
        "gated memory".into()
    }
}

/// The event in flight to the disk while a run parks (sequence number handed out, not yet
/// applied) is found by the part of the look-back read under the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_not_yet_applied_when_the_look_back_is_read_is_still_found() {
    use std::sync::atomic::Ordering::SeqCst;
    let gate = GateKv::default();
    let store: Arc<dyn durably_core::store::Store> =
        Arc::new(durably_core::store::KvStore::open(gate.clone()).unwrap());
    let clock = Arc::new(ManualClock::new(EPOCH));
    let engine = Engine::open(store, clock, EngineOptions::default()).unwrap();
    engine.register_task("t", TaskPolicy::default()).unwrap();
    let run = trigger(&engine, json!({"min": 100})).await;
    let noise: Vec<Value> = (0..500)
        .map(|i| json!({"name": "plan/changed", "data": {"amount": i % 100}}))
        .collect();
    send(&engine, Value::Array(noise)).await;
    engine.flush().await.unwrap();
    assert_eq!(ids(&engine.try_claim(10).unwrap()), [run.as_str()]);
    engine.flush().await.unwrap(); // the claim's record: the next write held is the event's

    *gate.0.closed.lock().unwrap() = true;
    let sending = {
        let engine = engine.clone();
        tokio::spawn(async move {
            send(
                &engine,
                json!([{"name": "plan/changed", "data": {"amount": 500, "n": "early"}}]),
            )
            .await
        })
    };
    while gate.0.held.load(SeqCst) == 0 {
        tokio::task::yield_now().await; // until the event's write is held at the disk
    }
    let scans = gate.0.scans.load(SeqCst);
    let parking = {
        let engine = engine.clone();
        let run = run.clone();
        tokio::spawn(async move {
            let w = json!({"kind": "event", "key": "big", "events": ["plan/changed"], "if": "async.data.amount >= event.data.min"});
            park(&engine, &run, json!([w])).await
        })
    };
    // The look-back read without the lock, then the rest under it: two reads of the index.
    while gate.0.scans.load(SeqCst) < scans + 2 {
        tokio::task::yield_now().await;
    }
    *gate.0.closed.lock().unwrap() = false;
    gate.0.opened.notify_all();
    sending.await.unwrap();
    parking.await.unwrap();
    let c = engine.try_claim(10).unwrap();
    assert_eq!(ids(&c), [run.as_str()], "the early event resumed the run");
    assert_eq!(step_output(&c[0], "big")["data"]["n"], json!("early"));
}
