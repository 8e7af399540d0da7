//! The timer window: the scheduler keeps only the soonest `timer_window` timers of runs that
//! wait on time alone in memory; later ones live in the store's queue index and are paged in
//! as their time comes. These tests use a window of 2 so that nearly every timer is spilled,
//! and check what a user relies on: every run wakes exactly at its deadline, in order, a
//! spilled run can be cancelled, and a restart loses nothing. Manual clock throughout.

use durably_core::engine::{Claimed, EventIn};
use durably_core::model::RunStatus;
use durably_core::store::Store;
use durably_core::{
    open_memory, open_sled, Engine, EngineOptions, ManualClock, Op, TaskPolicy, TriggerItem,
};
use serde_json::{json, Value};
use std::sync::Arc;

const EPOCH: u64 = 1_700_000_000_000;

fn open_with(store: Arc<dyn Store>, clock: &Arc<ManualClock>, window: usize) -> Engine {
    let opts = EngineOptions {
        timer_window: window,
        ..EngineOptions::default()
    };
    let engine = Engine::open(store, clock.clone(), opts).unwrap();
    engine.register_task("t", TaskPolicy::default()).unwrap();
    engine
}

fn open(store: Arc<dyn Store>, clock: &Arc<ManualClock>) -> Engine {
    open_with(store, clock, 2)
}

async fn trigger(engine: &Engine, item: Value) -> String {
    let item: TriggerItem = serde_json::from_value(item).unwrap();
    let mut results = engine.trigger(vec![vec![item]]).await;
    results.remove(0).unwrap().remove(0)
}

async fn report(engine: &Engine, ops: Value) {
    engine
        .report(Op::parse_batch(&ops.to_string()).unwrap())
        .await
        .unwrap();
}

/// Triggers a run, starts it and parks it on a sleep until `wake_at`.
async fn sleeper(engine: &Engine, wake_at: u64) -> String {
    let run = trigger(engine, json!({"task": "t", "payload": {}})).await;
    let claimed = engine.try_claim(100).unwrap();
    assert_eq!(ids(&claimed), [run.as_str()]);
    report(
        engine,
        json!([{"op": "wait", "run": run, "waits": [{"kind": "sleep", "key": "nap", "wakeAt": wake_at}]}]),
    )
    .await;
    run
}

/// `n` runs parked on sleeps until `wake_at`, in parking order.
async fn sleepers(engine: &Engine, n: usize, wake_at: u64) -> Vec<String> {
    let mut runs = Vec::with_capacity(n);
    for _ in 0..n {
        runs.push(sleeper(engine, wake_at).await);
    }
    runs
}

fn ids(claimed: &[Claimed]) -> Vec<&str> {
    claimed.iter().map(|c| c.id.as_str()).collect()
}

/// Claims everything due now, in claim order.
fn claim_all(engine: &Engine) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let c = engine.try_claim(100).unwrap();
        if c.is_empty() {
            return out;
        }
        out.extend(c.into_iter().map(|c| c.id));
    }
}

fn status(engine: &Engine, id: &str) -> RunStatus {
    engine.get_run(id).unwrap().unwrap().status
}

/// Runs parked with deadlines in reverse order of parking (so paging in must reorder them),
/// three of them sharing one deadline.
async fn park_many(engine: &Engine) -> Vec<(u64, String)> {
    let mut runs = Vec::new();
    for i in 0..12u64 {
        let at = EPOCH + 1_000 * (12 - i.min(9));
        runs.push((at, sleeper(engine, at).await));
    }
    runs
}

/// Advances to each deadline in turn: nothing wakes a millisecond early, and at the
/// deadline exactly the runs due then wake, oldest first.
fn wake_in_order(engine: &Engine, clock: &ManualClock, runs: &[(u64, String)]) {
    let mut deadlines: Vec<u64> = runs.iter().map(|(at, _)| *at).collect();
    deadlines.sort();
    deadlines.dedup();
    for at in deadlines {
        clock.set(at - 1);
        assert!(claim_all(engine).is_empty(), "nothing is due before {at}");
        clock.set(at);
        let due: Vec<String> = runs
            .iter()
            .filter(|(a, _)| *a == at)
            .map(|(_, r)| r.clone())
            .collect();
        assert_eq!(claim_all(engine), due, "the runs due at {at}");
    }
}

#[tokio::test]
async fn runs_asleep_beyond_the_window_wake_exactly_at_their_deadlines_in_order() {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let engine = open(open_memory().unwrap(), &clock);
    let runs = park_many(&engine).await;
    let stats = engine.stats().unwrap();
    assert_eq!(stats.delayed, 12, "spilled runs are still counted");
    assert_eq!(stats.next_wake_at, Some(EPOCH + 3_000));
    wake_in_order(&engine, &clock, &runs);
    assert_eq!(engine.stats().unwrap().delayed, 0);
}

#[tokio::test]
async fn a_mass_wake_up_beyond_the_window_hands_out_every_run() {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let engine = open(open_memory().unwrap(), &clock);
    let runs = sleepers(&engine, 25, EPOCH + 60_000).await;
    clock.set(EPOCH + 60_000);
    let first = engine.try_claim(10).unwrap();
    assert_eq!(first.len(), 10, "one claim fills its batch across pages");
    let mut woke: Vec<String> = first.into_iter().map(|c| c.id).collect();
    woke.extend(claim_all(&engine));
    assert_eq!(woke, runs);
}

#[tokio::test]
async fn a_spilled_sleeping_run_can_be_cancelled_and_never_wakes() {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let engine = open(open_memory().unwrap(), &clock);
    let runs = park_many(&engine).await;
    let (at, victim) = runs[0].clone(); // the latest deadline: certainly spilled
    assert!(engine.cancel(&victim).await.unwrap());
    assert_eq!(status(&engine, &victim), RunStatus::Cancelled);
    assert!(
        !engine.cancel(&victim).await.unwrap(),
        "a second cancel finds it ended"
    );
    assert_eq!(engine.stats().unwrap().delayed, 11);
    clock.set(at + 1);
    let woke = claim_all(&engine);
    assert_eq!(woke.len(), 11);
    assert!(!woke.contains(&victim));
}

#[tokio::test]
async fn a_spilled_delayed_trigger_can_be_cancelled_and_never_starts() {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let engine = open(open_memory().unwrap(), &clock);
    let mut runs = Vec::new();
    for i in 0..8u64 {
        let item = json!({"task": "t", "payload": {}, "delayMs": 1_000 * (8 - i)});
        runs.push(trigger(&engine, item).await);
    }
    let victim = runs[0].clone(); // delayed the longest
    assert!(engine.cancel(&victim).await.unwrap());
    assert_eq!(status(&engine, &victim), RunStatus::Cancelled);
    clock.set(EPOCH + 10_000);
    let started = claim_all(&engine);
    let mut expected: Vec<String> = runs[1..].to_vec();
    expected.reverse(); // the shortest delay starts first
    assert_eq!(started, expected);
}

#[tokio::test]
async fn an_event_wait_with_a_far_timeout_still_resolves_among_spilled_sleepers() {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let engine = open(open_memory().unwrap(), &clock);
    park_many(&engine).await;
    let run = trigger(&engine, json!({"task": "t", "payload": {}})).await;
    engine.try_claim(100).unwrap();
    let wait = json!({"kind": "event", "key": "paid", "events": ["order/paid"], "wakeAt": EPOCH + 86_400_000});
    report(
        &engine,
        json!([{"op": "wait", "run": run, "waits": [wait]}]),
    )
    .await;
    let events: Vec<EventIn> =
        serde_json::from_value(json!([{"name": "order/paid", "data": {}}])).unwrap();
    engine.send(events).await.unwrap();
    assert_eq!(claim_all(&engine), [run]);
}

#[tokio::test]
async fn spilled_timers_survive_a_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(EPOCH));
    let runs = {
        let engine = open(open_sled(dir.path(), None).unwrap(), &clock);
        let runs = park_many(&engine).await;
        engine.close();
        runs
    };
    let engine = open(open_sled(dir.path(), None).unwrap(), &clock);
    assert_eq!(engine.stats().unwrap().delayed, 12);
    for (_, run) in &runs {
        assert_eq!(status(&engine, run), RunStatus::Waiting);
    }
    wake_in_order(&engine, &clock, &runs);
    engine.close();
}

#[tokio::test]
async fn a_window_of_zero_works_as_a_window_of_one() {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let engine = open_with(open_memory().unwrap(), &clock, 0);
    let run = trigger(
        &engine,
        json!({"task": "t", "payload": {}, "delayMs": 1_000}),
    )
    .await;
    // A claim on another thread, so that a scheduler that spins fails the test, not hangs it.
    let claim = |engine: &Engine| {
        let (tx, rx) = std::sync::mpsc::channel();
        let engine = engine.clone();
        std::thread::spawn(move || {
            let _ = tx.send(engine.try_claim(10).map(|c| ids(&c).join(",")));
        });
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("try_claim returns")
            .unwrap()
    };
    assert_eq!(claim(&engine), "");
    clock.set(EPOCH + 1_000);
    assert_eq!(claim(&engine), run);
}

#[tokio::test]
async fn due_spilled_sleepers_go_before_runs_triggered_after_they_woke() {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let engine = open(open_memory().unwrap(), &clock);
    let t = EPOCH + 1_000;
    let sleepers = sleepers(&engine, 6, t).await;
    clock.set(t + 1);
    // New work keeps the ready queue at the window's size: two queued, one more per claim.
    trigger(&engine, json!({"task": "t", "payload": {}})).await;
    trigger(&engine, json!({"task": "t", "payload": {}})).await;
    let mut claimed = Vec::new();
    for _ in 0..12 {
        claimed.extend(engine.try_claim(1).unwrap().into_iter().map(|c| c.id));
        trigger(&engine, json!({"task": "t", "payload": {}})).await;
    }
    assert_eq!(
        &claimed[..6],
        &sleepers[..],
        "oldest first: the sleepers woke at t"
    );
}

#[tokio::test]
async fn stats_show_work_due_while_only_spilled_runs_are_due() {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let engine = open(open_memory().unwrap(), &clock);
    let t = EPOCH + 1_000;
    let runs = sleepers(&engine, 6, t).await;
    // The two kept in memory are cancelled; the four spilled ones remain.
    assert!(engine.cancel(&runs[0]).await.unwrap());
    assert!(engine.cancel(&runs[1]).await.unwrap());
    clock.set(t);
    let s = engine.stats().unwrap();
    assert!(
        s.ready > 0 || s.control_due,
        "stats look idle while 4 runs are due: {s:?}"
    );
    assert_eq!(claim_all(&engine), runs[2..].to_vec());
}

/// A small seeded generator (xorshift), so a failing sequence can be replayed by its seed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Random delayed triggers, sleeps, completions, cancels and clock moves (and, on sled,
/// restarts) against a window of 3, checked against a model of when each live run is due: a
/// run is handed out exactly when it is due (never before, never left behind once due), never
/// twice, never after a cancel, and `stats().delayed` counts exactly the runs not yet due.
async fn model_check(seed: u64, steps: usize, dir: Option<&std::path::Path>) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let clock = Arc::new(ManualClock::new(EPOCH));
    let store = || match dir {
        Some(d) => open_sled(d, None).unwrap(),
        None => open_memory().unwrap(),
    };
    let mut engine = open_with(store(), &clock, 3);
    // Live runs that are not running → when they are due.
    let mut due: std::collections::HashMap<String, u64> = Default::default();
    let mut now = EPOCH;
    for step in 0..steps {
        match rng.below(10) {
            0..=2 => {
                let delay = rng.below(5_000);
                let item = json!({"task": "t", "payload": {}, "delayMs": delay});
                due.insert(trigger(&engine, item).await, now + delay);
            }
            3 if !due.is_empty() => {
                let mut ids: Vec<&String> = due.keys().collect();
                ids.sort();
                let victim = ids[rng.below(ids.len() as u64) as usize].clone();
                assert!(
                    engine.cancel(&victim).await.unwrap(),
                    "seed {seed} step {step}"
                );
                due.remove(&victim);
            }
            4..=6 => {
                now += rng.below(3_000);
                clock.set(now);
            }
            7 if dir.is_some() => {
                engine.close();
                engine = open_with(store(), &clock, 3);
            }
            _ => {}
        }
        // Hand out everything due; each run either completes or sleeps again.
        for id in claim_all(&engine) {
            let at = due.remove(&id);
            assert!(
                at.is_some_and(|at| at <= now),
                "seed {seed} step {step}: {id} handed out at {now}, due {at:?}"
            );
            if rng.below(2) == 0 {
                report(
                    &engine,
                    json!([{"op": "complete", "run": id, "output": null}]),
                )
                .await;
            } else {
                let wake_at = now + 1 + rng.below(4_000);
                let wait =
                    json!({"kind": "sleep", "key": format!("nap-{step}"), "wakeAt": wake_at});
                report(&engine, json!([{"op": "wait", "run": id, "waits": [wait]}])).await;
                due.insert(id, wake_at);
            }
        }
        let left: Vec<_> = due.iter().filter(|(_, at)| **at <= now).collect();
        assert!(
            left.is_empty(),
            "seed {seed} step {step}: due but not handed out: {left:?}"
        );
        assert_eq!(
            engine.stats().unwrap().delayed,
            due.len(),
            "seed {seed} step {step}"
        );
    }
    engine.close();
}

#[tokio::test]
async fn random_schedules_match_a_model_of_due_times() {
    for seed in 1..=20 {
        model_check(seed, 300, None).await;
    }
}

#[tokio::test]
async fn random_schedules_with_restarts_match_the_model_on_sled() {
    for seed in 1..=5 {
        let dir = tempfile::tempdir().unwrap();
        model_check(seed, 150, Some(dir.path())).await;
    }
}
