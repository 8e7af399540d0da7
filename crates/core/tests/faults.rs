//! The promise under faults (issue "keep every promise under faults"): one bad op fails only
//! its run, an answer never comes before the write it names is durable, a failing store
//! stops the engine instead of letting memory run ahead of the disk, and bad input is refused
//! before anything changes. Time is a `ManualClock`; the store is the memory store behind a
//! test backend that knows what was synced and can fail like a full disk.

use durably_core::engine::EventIn;
use durably_core::model::RunStatus;
use durably_core::store::{Kv, KvStore, MemKv, Store};
use durably_core::{Engine, EngineOptions, ManualClock, Op, TaskPolicy, TriggerItem};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const EPOCH: u64 = 1_700_000_000_000;

/// A backend that keeps what `sync` made durable apart from what was applied, and fails
/// applies or syncs with ENOSPC when told to.
#[derive(Default)]
struct Disk {
    applied: MemKv,
    durable: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// 0: healthy; 1: applies fail; 2: syncs fail.
    fault: AtomicU8,
}

#[derive(Clone, Default)]
struct DiskKv(Arc<Disk>);

impl DiskKv {
    fn durable_has(&self, key: &[u8]) -> bool {
        self.0.durable.lock().unwrap().contains_key(key)
    }
    fn fail(&self, mode: u8) {
        self.0.fault.store(mode, Ordering::SeqCst);
    }
    /// A fresh backend holding only what was durable (a restart after power loss).
    fn after_power_loss(&self) -> DiskKv {
        let d = DiskKv::default();
        let durable = self.0.durable.lock().unwrap().clone();
        d.0.applied
            .apply(
                durable
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect(),
            )
            .unwrap();
        *d.0.durable.lock().unwrap() = durable;
        d
    }
}

fn full() -> durably_core::Error {
    std::io::Error::from_raw_os_error(28).into()
}

impl Kv for DiskKv {
    fn apply(&self, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> durably_core::Result<()> {
        if self.0.fault.load(Ordering::SeqCst) == 1 {
            return Err(full());
        }
        self.0.applied.apply(ops)
    }
    fn get(&self, key: &[u8]) -> durably_core::Result<Option<Vec<u8>>> {
        self.0.applied.get(key)
    }
    fn scan(
        &self,
        prefix: &[u8],
        reverse: bool,
        start: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> durably_core::Result<()> {
        self.0.applied.scan(prefix, reverse, start, visit)
    }
    fn sync(&self) -> durably_core::Result<()> {
        if self.0.fault.load(Ordering::SeqCst) == 2 {
            return Err(full());
        }
        let mut all = BTreeMap::new();
        self.0.applied.scan(b"", false, None, &mut |k, v| {
            all.insert(k.to_vec(), v.to_vec());
            true
        })?;
        *self.0.durable.lock().unwrap() = all;
        Ok(())
    }
    fn location(&self) -> String {
        "test disk".into()
    }
}

fn open(kv: &DiskKv, clock: &Arc<ManualClock>, opts: EngineOptions) -> Engine {
    let store: Arc<dyn Store> = Arc::new(KvStore::open(kv.clone()).unwrap());
    let engine = Engine::open(store, clock.clone(), opts).unwrap();
    let limited: TaskPolicy = serde_json::from_value(json!({"concurrency": {"limit": 1}})).unwrap();
    engine.register_task("t", TaskPolicy::default()).unwrap();
    engine.register_task("one", limited).unwrap();
    engine
}

fn item(v: Value) -> TriggerItem {
    serde_json::from_value(v).unwrap()
}

async fn trigger(engine: &Engine, v: Value) -> durably_core::Result<String> {
    let mut r = engine.trigger(vec![vec![item(v)]]).await;
    r.remove(0).map(|ids| ids.into_iter().next().unwrap())
}

async fn report(engine: &Engine, ops: Value) -> durably_core::Result<()> {
    engine
        .report(Op::parse_batch(&ops.to_string()).unwrap())
        .await
}

fn status(engine: &Engine, id: &str) -> RunStatus {
    engine.get_run(id).unwrap().unwrap().status
}

fn run_key(id: &str) -> Vec<u8> {
    format!("r/{id}").into_bytes()
}

/// Issue 9 #1: a `step.sendEvent` with an event id of 200 `é` (256 UTF-16 units in JS, 400
/// bytes) made the core reject the whole report after other ops of the batch changed memory:
/// the run completed in the same batch stayed `running` and held its slot forever.
#[tokio::test]
async fn one_bad_op_fails_only_its_own_run_and_the_rest_of_the_batch_lands() {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let kv = DiskKv::default();
    let engine = open(&kv, &clock, EngineOptions::default());
    let good = trigger(&engine, json!({"task": "one", "payload": 1}))
        .await
        .unwrap();
    let bad = trigger(&engine, json!({"task": "t", "payload": 2}))
        .await
        .unwrap();
    let queued = trigger(&engine, json!({"task": "one", "payload": 3}))
        .await
        .unwrap();
    assert_eq!(
        engine.try_claim(10).unwrap().len(),
        2,
        "good and bad (queued waits: limit 1)"
    );
    let long_id = "é".repeat(200);
    report(
        &engine,
        json!([
            {"op": "complete", "run": good, "output": "ok"},
            {"op": "sendEvent", "run": bad, "key": "notify", "events": [{"id": long_id, "name": "x"}]},
        ]),
    )
    .await
    .expect("the batch is accepted");
    assert_eq!(status(&engine, &good), RunStatus::Completed);
    let failed = engine.get_run(&bad).unwrap().unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    let err: Value = serde_json::from_str(failed.error.unwrap().get()).unwrap();
    assert_eq!(err["code"], "E_BAD_OPTION");
    assert!(
        err["message"].as_str().unwrap().contains("400 bytes"),
        "{err}"
    );
    // The slot of `one` was freed: the next run of the key starts.
    let next = engine.try_claim(10).unwrap();
    assert_eq!(
        next.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [queued.as_str()]
    );
    let out = engine
        .wait_result(&good, Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(out.status, RunStatus::Completed);
}

/// Issue 9 #3: a trigger answered by an idempotency key resolved with the first run's id
/// before the first run's own write was durable.
#[tokio::test]
async fn a_duplicate_trigger_answers_only_once_the_original_is_durable() {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let kv = DiskKv::default();
    let engine = open(
        &kv,
        &clock,
        EngineOptions {
            sim_sync_delay_ms: 50,
            ..EngineOptions::default()
        },
    );
    for _ in 0..3 {
        let key = format!("k{}", rand_suffix());
        let a = {
            let e = engine.clone();
            let key = key.clone();
            tokio::spawn(async move {
                trigger(
                    &e,
                    json!({"task": "t", "payload": 1, "idempotencyKey": key}),
                )
                .await
            })
        };
        // The spawned trigger runs up to its commit (current-thread runtime) first.
        tokio::task::yield_now().await;
        let b = trigger(
            &engine,
            json!({"task": "t", "payload": 2, "idempotencyKey": key}),
        )
        .await
        .unwrap();
        assert!(
            kv.durable_has(&run_key(&b)),
            "the duplicate answered {b} before that run was on disk"
        );
        assert_eq!(a.await.unwrap().unwrap(), b);
    }
    // Same for a repeated event id.
    let first = {
        let e = engine.clone();
        tokio::spawn(async move {
            let ev: Vec<EventIn> =
                serde_json::from_value(json!([{"id": "once", "name": "n"}])).unwrap();
            e.send(ev).await
        })
    };
    tokio::task::yield_now().await;
    let ev: Vec<EventIn> = serde_json::from_value(json!([{"id": "once", "name": "n"}])).unwrap();
    engine.send(ev).await.unwrap();
    assert!(
        kv.durable_has(b"e/once"),
        "the repeated event answered first"
    );
    first.await.unwrap().unwrap();
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Suspected in issue 9: a failed commit (disk full) left memory changed and `result()`
/// waiters hanging. Now the engine stops at the first failure (every call fails with
/// `E_DISK_FULL`), and an engine reopened on what the disk holds carries on.
#[tokio::test]
async fn a_full_disk_stops_the_engine_and_a_reopen_carries_on_with_nothing_acknowledged_lost() {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let kv = DiskKv::default();
    let engine = open(&kv, &clock, EngineOptions::default());
    let done = trigger(&engine, json!({"task": "t", "payload": "before"}))
        .await
        .unwrap();
    let running = trigger(&engine, json!({"task": "t", "payload": "running"}))
        .await
        .unwrap();
    assert_eq!(engine.try_claim(10).unwrap().len(), 2);
    report(
        &engine,
        json!([{"op": "complete", "run": done, "output": 1}]),
    )
    .await
    .unwrap();
    report(
        &engine,
        json!([{"op": "step", "run": running, "key": "a", "output": "kept"}]),
    )
    .await
    .unwrap();

    kv.fail(1);
    let waiter = {
        let e = engine.clone();
        let id = running.clone();
        tokio::spawn(async move { e.wait_result(&id, None).await })
    };
    let err = report(
        &engine,
        json!([{"op": "complete", "run": running, "output": 2}]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "E_DISK_FULL");
    assert!(err.to_string().contains("free space"), "{err}");
    // The engine decides nothing more: triggers, claims and reports fail with the code.
    let e = trigger(&engine, json!({"task": "t", "payload": "during"}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "E_DISK_FULL");
    assert_eq!(engine.try_claim(10).unwrap_err().code(), "E_DISK_FULL");
    assert_eq!(engine.claim(10).await.unwrap_err().code(), "E_DISK_FULL");
    // The owner closes it (waiters are told, not left hanging) …
    engine.close();
    assert!(waiter.await.unwrap().is_err());

    // … and reopens once there is space: the run that could not complete is replayed with
    // its stored step; the completed one stays completed.
    kv.fail(0);
    let kv2 = kv.after_power_loss();
    let engine = open(&kv2, &clock, EngineOptions::default());
    assert_eq!(status(&engine, &done), RunStatus::Completed);
    let c = engine.try_claim(10).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].id, running);
    assert_eq!(
        c[0].steps.len(),
        1,
        "the step acknowledged before the disk filled is there"
    );
    report(
        &engine,
        json!([{"op": "complete", "run": running, "output": 2}]),
    )
    .await
    .unwrap();
    assert_eq!(status(&engine, &running), RunStatus::Completed);
}

/// A sync that fails (not the apply) stops the engine the same way, and no later commit is
/// applied after it.
#[tokio::test]
async fn a_failed_sync_stops_the_engine_and_nothing_after_it_is_applied() {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let kv = DiskKv::default();
    let engine = open(&kv, &clock, EngineOptions::default());
    kv.fail(2);
    let e = trigger(&engine, json!({"task": "t", "payload": 1}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "E_DISK_FULL");
    kv.fail(0);
    let e = trigger(&engine, json!({"task": "t", "payload": 2}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "E_DISK_FULL", "stays stopped until reopened");
    let mut runs = 0;
    kv.scan(b"r/", false, None, &mut |_, _| {
        runs += 1;
        true
    })
    .unwrap();
    assert!(runs <= 1, "a trigger after the failure was applied");
}

/// Issue 9 #11: an event named `order/paid\0forged` resolved `waitForEvent('order/paid')`.
/// Names, ids and keys with NUL are refused, and names compare exactly.
#[tokio::test]
async fn names_ids_and_keys_with_nul_are_refused_before_anything_is_written() {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let kv = DiskKv::default();
    let engine = open(&kv, &clock, EngineOptions::default());
    for ev in [
        json!([{"name": "order/paid\u{0}forged"}]),
        json!([{"name": "ok", "id": "a\u{0}b"}]),
        json!([{"name": "ok"}, {"name": ""}]),
    ] {
        let events: Vec<EventIn> = serde_json::from_value(ev.clone()).unwrap();
        let err = engine.send(events).await.unwrap_err();
        assert_eq!(err.code(), "E_BAD_OPTION", "{ev}");
    }
    for bad in [
        json!({"task": "t", "payload": 1, "tags": ["a\u{0}b"]}),
        json!({"task": "t", "payload": 1, "idempotencyKey": "k\u{0}"}),
        json!({"task": "t", "payload": 1, "concurrencyKey": "x".repeat(300)}),
        json!({"task": "t", "payload": 1, "tags": ["é".repeat(65)]}),
    ] {
        let err = trigger(&engine, bad.clone()).await.unwrap_err();
        assert_eq!(err.code(), "E_BAD_OPTION", "{bad}");
    }
    let mut keys = 0;
    kv.scan(b"", false, None, &mut |k, _| {
        keys += usize::from(!k.starts_with(b"m/"));
        true
    })
    .unwrap();
    assert_eq!(keys, 0, "nothing but the store's own metadata was written");
}

/// Issue 9 #15: event data nested deeper than 128 levels made `on: { if }` silently match
/// nothing; it is refused at send() (and as a payload) with E_PAYLOAD_TOO_DEEP.
#[tokio::test]
async fn data_nested_too_deep_is_refused_with_its_own_code() {
    let clock = Arc::new(ManualClock::new(EPOCH));
    let kv = DiskKv::default();
    let engine = open(&kv, &clock, EngineOptions::default());
    let deep = format!("{}1{}", "[".repeat(130), "]".repeat(130));
    let events: Vec<EventIn> =
        serde_json::from_str(&format!(r#"[{{"name":"n","data":{deep}}}]"#)).unwrap();
    assert_eq!(
        engine.send(events).await.unwrap_err().code(),
        "E_PAYLOAD_TOO_DEEP"
    );
    let item: TriggerItem =
        serde_json::from_str(&format!(r#"{{"task":"t","payload":{deep}}}"#)).unwrap();
    let err = engine
        .trigger(vec![vec![item]])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(err.code(), "E_PAYLOAD_TOO_DEEP");
    // 100 levels are fine.
    let ok = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let item: TriggerItem =
        serde_json::from_str(&format!(r#"{{"task":"t","payload":{ok}}}"#)).unwrap();
    engine.trigger(vec![vec![item]]).await.remove(0).unwrap();
}

/// Poison runs: a run that was running each time the process died is failed with
/// `E_RUN_POISONED` after `crash_limit` crashes in a row, and the other runs carry on.
/// After a crash, the runs that were in flight (suspects) run one at a time, so a run that
/// was merely in flight beside the culprit does not collect its crashes.
#[tokio::test]
async fn a_run_that_kills_the_process_three_times_fails_as_poisoned() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(EPOCH));
    let open = || {
        let e = Engine::open(
            durably_core::open_sled(dir.path(), None).unwrap(),
            clock.clone(),
            EngineOptions::default(),
        )
        .unwrap();
        e.register_task("t", TaskPolicy::default()).unwrap();
        e
    };
    let (poison, bystander) = {
        let engine = open();
        let poison = trigger(&engine, json!({"task": "t", "payload": "kills"}))
            .await
            .unwrap();
        let bystander = trigger(&engine, json!({"task": "t", "payload": "fine"}))
            .await
            .unwrap();
        engine.close();
        (poison, bystander)
    };
    let claimed = |b: durably_core::engine::ClaimBatch| -> Vec<String> {
        let mut ids: Vec<String> = b.runs.into_iter().map(|c| c.id).collect();
        ids.sort();
        ids
    };
    // Life 1: both run; the process dies (the claim was durable before they were handed
    // out; closing releases the folder, as the OS does for a dead process).
    let engine = open();
    let mut both = vec![poison.clone(), bystander.clone()];
    both.sort();
    assert_eq!(claimed(engine.claim(10).await.unwrap().unwrap()), both);
    engine.close();
    // Life 2: one crash is not enough to hold anyone back (a deploy by SIGKILL must not slow
    // recovery): both run again, and the process dies again.
    let engine = open();
    assert_eq!(claimed(engine.claim(10).await.unwrap().unwrap()), both);
    engine.close();
    // Life 3: in flight at two crashes in a row, both are suspects: one runs at a time, and
    // the culprit (the older) is the one running when the process dies.
    let engine = open();
    let got = claimed(engine.claim(10).await.unwrap().unwrap());
    assert_eq!(got, std::slice::from_ref(&poison), "one suspect at a time");
    engine.close();
    // Life 4: three crashes in a row while it ran: it fails; the bystander (one crash) runs.
    let engine = open();
    let got = claimed(engine.claim(10).await.unwrap().unwrap());
    assert_eq!(got, std::slice::from_ref(&bystander));
    engine.flush().await.unwrap();
    let run = engine.get_run(&poison).unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    let err: Value = serde_json::from_str(run.error.unwrap().get()).unwrap();
    assert_eq!(err["code"], "E_RUN_POISONED");
    report(
        &engine,
        json!([{"op": "complete", "run": bystander, "output": 1}]),
    )
    .await
    .unwrap();
    assert_eq!(status(&engine, &bystander), RunStatus::Completed);
}
