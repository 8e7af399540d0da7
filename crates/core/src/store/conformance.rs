//! Store conformance: the behaviours the engine relies on, written once and run over every
//! embedded backend (`KvStore<MemKv>` and `KvStore<SledKv>`). A new backend passes these
//! before the engine runs on it.
//!
//! Each behaviour is a generic function over a `Backend`, a factory that can open the same
//! data again (sled: drop and reopen the folder; memory: a second handle on the same map),
//! so that "reopened" has a meaning for both.

use super::kv::SCHEMA_VERSION;
use super::{Chunked, Kv, KvStore, MemKv, SledKv, Store, Write};
use crate::error::Result;
use crate::model::{QueueEntry, RunRecord, RunState, RunStatus, StepRecord, StepStatus};
use serde_json::value::RawValue;
use std::sync::Arc;

/// A fixed reference epoch (ms): records carry plausible, reproducible times.
const EPOCH: u64 = 1_700_000_000_000;

/// Opens (again) the data of one test.
trait Backend {
    type K: Kv;
    fn create() -> Self;
    /// A new handle on this backend's data; the previous one must be dropped first.
    fn open_kv(&self) -> Result<Self::K>;
    fn open(&self) -> Result<KvStore<Self::K>> {
        KvStore::open(self.open_kv()?)
    }
}

/// A `MemKv` shared between handles, so the memory store can be "reopened".
struct SharedMem(Arc<MemKv>);

impl Kv for SharedMem {
    fn apply(&self, ops: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        self.0.apply(ops)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.0.get(key)
    }
    fn scan(
        &self,
        prefix: &[u8],
        reverse: bool,
        start: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.0.scan(prefix, reverse, start, visit)
    }
    fn sync(&self) -> Result<()> {
        self.0.sync()
    }
    fn location(&self) -> String {
        self.0.location()
    }
}

struct Mem(Arc<MemKv>);

impl Backend for Mem {
    type K = SharedMem;
    fn create() -> Self {
        Mem(Arc::new(MemKv::new()))
    }
    fn open_kv(&self) -> Result<SharedMem> {
        Ok(SharedMem(self.0.clone()))
    }
}

struct Sled(tempfile::TempDir);

/// sled as the engine uses it: behind `Chunked`, here with tiny chunks so that every
/// behaviour also runs over values split across keys.
impl Backend for Sled {
    type K = Chunked<SledKv>;
    fn create() -> Self {
        Sled(tempfile::tempdir().expect("a temporary folder"))
    }
    fn open_kv(&self) -> Result<Chunked<SledKv>> {
        Chunked::open(SledKv::open(self.0.path(), 1024 * 1024)?, 64)
    }
}

/// Records are built from their stored JSON form, so that fields added to them later (with
/// serde defaults, as stored records require anyway) leave these tests valid.
fn record<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn run(id: &str, task: &str, created_at: u64) -> RunRecord {
    record(&format!(
        r#"{{"id":"{id}","task":"{task}","payload":{{}},"created_at":{created_at},"ready_at":{created_at}}}"#
    ))
}

fn completed_step(output: &str, attempts: u32) -> StepRecord {
    record(&format!(
        r#"{{"status":"completed","attempts":{attempts},"output":{output},"ended_at":{EPOCH}}}"#
    ))
}

fn put_step(run: &str, key: &str, output: &str) -> Write {
    Write::PutStep {
        run: run.to_string(),
        key: key.to_string(),
        step: completed_step(output, 1),
    }
}

fn entry(ready_at: u64, seq: u64, id: &str) -> QueueEntry {
    QueueEntry {
        ready_at,
        seq,
        id: id.to_string(),
        task: "t".to_string(),
    }
}

fn scanned_ids(store: &dyn Store, before: Option<&str>) -> Vec<String> {
    let mut ids = Vec::new();
    store
        .scan_runs(before, &mut |rec, _| {
            ids.push(rec.id);
            true
        })
        .unwrap();
    ids
}

// --- the behaviours --------------------------------------------------------------------

fn a_commit_is_visible_whole_and_round_trips_every_record<B: Backend>() {
    let b = B::create();
    let store = b.open().unwrap();
    // Whitespace, key order, number spelling and escapes are the caller's: stored as bytes.
    let payload = r#"{ "b" : 1.50,"a":[1e3, "caf\u00e9", null] ,"z":{}}"#;
    let the_run: RunRecord = record(&format!(
        r#"{{"id":"run_1","task":"email","payload":{payload},"tags":["vip","eu"],"created_at":{EPOCH},"ready_at":{}}}"#,
        EPOCH + 5_000
    ));
    assert!(store.run("run_1").unwrap().is_none());

    store
        .commit(&[
            Write::PutRun(the_run),
            Write::PutState {
                id: "run_1".into(),
                state: record(&format!(
                    r#"{{"status":"failed","attempts":3,"started_at":{},"ended_at":{},
                        "error":{{"name":"Error","message":"boom"}}}}"#,
                    EPOCH + 5_000,
                    EPOCH + 9_000
                )),
            },
            Write::PutStep {
                run: "run_1".into(),
                key: "fetch".into(),
                step: record(&format!(
                    r#"{{"status":"retrying","attempts":2,"error":{{"message":"timeout"}},"ended_at":{}}}"#,
                    EPOCH + 7_000
                )),
            },
            put_step("run_1", "charge", r#"{"id": "ch_1",  "amount":  42}"#),
            Write::Enqueue(entry(EPOCH + 5_000, 1, "run_1")),
        ])
        .unwrap();

    let (rec, state) = store.run("run_1").unwrap().expect("the run is stored");
    assert_eq!(rec.id, "run_1");
    assert_eq!(rec.task, "email");
    assert_eq!(rec.payload.get(), payload, "payload bytes are kept exactly");
    assert_eq!(rec.tags, ["vip", "eu"]);
    assert_eq!((rec.created_at, rec.ready_at), (EPOCH, EPOCH + 5_000));

    let state = state.expect("the state is stored");
    assert_eq!(state.status, RunStatus::Failed);
    assert_eq!(state.attempts, 3);
    assert_eq!(state.ready_at, None);
    assert_eq!(state.started_at, Some(EPOCH + 5_000));
    assert_eq!(state.ended_at, Some(EPOCH + 9_000));
    assert!(state.output.is_none());
    assert_eq!(
        state.error.as_deref().map(RawValue::get),
        Some(r#"{"name":"Error","message":"boom"}"#)
    );

    let steps = store.steps("run_1").unwrap();
    let keys: Vec<&str> = steps.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["charge", "fetch"]);
    let (_, charge) = &steps[0];
    assert_eq!(charge.status, StepStatus::Completed);
    assert_eq!(
        charge.output.as_deref().map(RawValue::get),
        Some(r#"{"id": "ch_1",  "amount":  42}"#)
    );
    let (_, fetch) = &steps[1];
    assert_eq!(fetch.status, StepStatus::Retrying);
    assert_eq!(fetch.attempts, 2);
    assert_eq!(fetch.ended_at, EPOCH + 7_000);
    assert_eq!(
        fetch.error.as_deref().map(RawValue::get),
        Some(r#"{"message":"timeout"}"#)
    );

    assert_eq!(store.queue().unwrap(), [entry(EPOCH + 5_000, 1, "run_1")]);
}

fn a_run_without_a_state_change_has_no_state<B: Backend>() {
    let b = B::create();
    let store = b.open().unwrap();
    store
        .commit(&[Write::PutRun(run("run_1", "t", EPOCH))])
        .unwrap();
    let (rec, state) = store.run("run_1").unwrap().unwrap();
    assert_eq!(rec.id, "run_1");
    assert!(state.is_none());
    assert!(store.steps("run_1").unwrap().is_empty());
}

fn a_later_write_of_a_key_replaces_the_earlier_one<B: Backend>() {
    let b = B::create();
    let store = b.open().unwrap();
    store.commit(&[put_step("run_1", "a", "1")]).unwrap();
    store.commit(&[put_step("run_1", "a", "2")]).unwrap();
    let steps = store.steps("run_1").unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].1.output.as_deref().map(RawValue::get), Some("2"));
}

fn a_reader_never_sees_half_a_commit<B: Backend>() {
    let b = B::create();
    let store: Arc<dyn Store> = Arc::new(b.open().unwrap());
    const RUNS: u64 = 300;
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..RUNS {
                let id = format!("run_{i:04}");
                // The queue entry goes first: a partial apply would expose it without its run.
                store
                    .commit(&[
                        Write::Enqueue(entry(EPOCH + i, i, &id)),
                        put_step(&id, "a", "1"),
                        Write::PutRun(run(&id, "t", EPOCH + i)),
                        Write::PutState {
                            id: id.clone(),
                            state: RunState::initial(&run(&id, "t", EPOCH + i)),
                        },
                    ])
                    .unwrap();
            }
        })
    };
    let mut seen = 0;
    while seen < RUNS as usize {
        let queue = store.queue().unwrap();
        for e in &queue {
            let (_, state) = store
                .run(&e.id)
                .unwrap()
                .unwrap_or_else(|| panic!("queued {} without its run record", e.id));
            assert!(state.is_some(), "queued {} without its state", e.id);
            assert_eq!(store.steps(&e.id).unwrap().len(), 1, "{} steps", e.id);
        }
        seen = queue.len();
    }
    writer.join().unwrap();
}

fn the_queue_is_ordered_by_ready_at_then_seq_and_dequeue_removes<B: Backend>() {
    let b = B::create();
    let store = b.open().unwrap();
    // Written out of order; big-endian keys must order numerically, not as text
    // (256 > 255 and 2^32 > 2^32 - 1 compare wrongly in little-endian or decimal).
    store
        .commit(&[
            Write::Enqueue(entry(EPOCH + 256, 1, "run_d")),
            Write::Enqueue(entry(EPOCH, 9, "run_b")),
            Write::Enqueue(entry(EPOCH + 255, 2, "run_c")),
            Write::Enqueue(entry(EPOCH, 3, "run_a")),
            Write::Enqueue(entry(EPOCH + (1 << 32), 4, "run_f")),
            Write::Enqueue(entry(EPOCH + (1 << 32) - 1, 5, "run_e")),
        ])
        .unwrap();
    let ids = |store: &dyn Store| -> Vec<String> {
        store.queue().unwrap().into_iter().map(|e| e.id).collect()
    };
    assert_eq!(
        ids(&store),
        ["run_a", "run_b", "run_c", "run_d", "run_e", "run_f"]
    );
    assert_eq!(store.queue().unwrap()[0], entry(EPOCH, 3, "run_a"));

    store
        .commit(&[
            Write::Dequeue {
                ready_at: EPOCH,
                seq: 9,
            },
            Write::Dequeue {
                ready_at: EPOCH + 256,
                seq: 1,
            },
        ])
        .unwrap();
    assert_eq!(ids(&store), ["run_a", "run_c", "run_e", "run_f"]);

    // Same time, other seq: not the same entry.
    store
        .commit(&[Write::Dequeue {
            ready_at: EPOCH,
            seq: 4,
        }])
        .unwrap();
    assert_eq!(ids(&store), ["run_a", "run_c", "run_e", "run_f"]);
}

fn queue_entries_keep_their_run_and_task<B: Backend>() {
    let b = B::create();
    let store = b.open().unwrap();
    let e = QueueEntry {
        ready_at: EPOCH,
        seq: 7,
        id: "run_01hx".into(),
        task: "emails/send-welcome".into(),
    };
    store.commit(&[Write::Enqueue(e.clone())]).unwrap();
    assert_eq!(store.queue().unwrap(), [e]);
}

fn steps_come_in_key_order_and_never_from_a_prefix_sibling_run<B: Backend>() {
    let b = B::create();
    let store = b.open().unwrap();
    store
        .commit(&[
            put_step("run_1", "b", "\"1/b\""),
            put_step("run_10", "a", "\"10/a\""),
            put_step("run_1", "a:1", "\"1/a:1\""),
            put_step("run_1x", "a", "\"1x/a\""),
            put_step("run_1", "a", "\"1/a\""),
            put_step("run_", "a", "\"_/a\""),
            put_step("run_1", "c/d", "\"1/c/d\""),
        ])
        .unwrap();
    let steps = |run: &str| -> Vec<(String, String)> {
        store
            .steps(run)
            .unwrap()
            .into_iter()
            .map(|(k, s)| (k, s.output.unwrap().get().to_string()))
            .collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        steps("run_1"),
        pairs(&[
            ("a", "\"1/a\""),
            ("a:1", "\"1/a:1\""),
            ("b", "\"1/b\""),
            ("c/d", "\"1/c/d\""),
        ])
    );
    assert_eq!(steps("run_10"), pairs(&[("a", "\"10/a\"")]));
    assert_eq!(steps("run_"), pairs(&[("a", "\"_/a\"")]));
    assert!(steps("run_2").is_empty());
    assert!(steps("run").is_empty());
}

fn scan_runs_visits_newest_first_and_the_cursor_continues_strictly_below<B: Backend>() {
    let b = B::create();
    let store = b.open().unwrap();
    let ids = ["run_a", "run_b", "run_c", "run_c0", "run_d"];
    let mut writes: Vec<Write> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| Write::PutRun(run(id, "t", EPOCH + i as u64)))
        .collect();
    // Records of other kinds sort around `r/` (queue below, steps and states above):
    // none of them may show up as, or hide, a run.
    writes.push(Write::Enqueue(entry(EPOCH, 1, "run_a")));
    writes.push(put_step("run_d", "a", "1"));
    writes.push(Write::PutState {
        id: "run_b".into(),
        state: RunState::initial(&run("run_b", "t", EPOCH)),
    });
    store.commit(&writes).unwrap();

    assert_eq!(
        scanned_ids(&store, None),
        ["run_d", "run_c0", "run_c", "run_b", "run_a"]
    );
    assert_eq!(
        scanned_ids(&store, Some("run_d")),
        ["run_c0", "run_c", "run_b", "run_a"]
    );
    assert_eq!(scanned_ids(&store, Some("run_c")), ["run_b", "run_a"]);
    // A cursor need not exist (the run may have been deleted since).
    assert_eq!(scanned_ids(&store, Some("run_bz")), ["run_b", "run_a"]);
    assert!(scanned_ids(&store, Some("run_a")).is_empty());
    assert_eq!(scanned_ids(&store, Some("run_z")).len(), 5);

    // The state is handed over with its record.
    let mut states = Vec::new();
    store
        .scan_runs(None, &mut |rec, state| {
            states.push((rec.id, state.map(|s| s.status)));
            true
        })
        .unwrap();
    assert_eq!(states[3], ("run_b".to_string(), Some(RunStatus::Queued)));
    assert_eq!(states[0], ("run_d".to_string(), None));
}

fn scan_runs_stops_when_the_visitor_returns_false<B: Backend>() {
    let b = B::create();
    let store = b.open().unwrap();
    let writes: Vec<Write> = (0..5)
        .map(|i| Write::PutRun(run(&format!("run_{i}"), "t", EPOCH + i)))
        .collect();
    store.commit(&writes).unwrap();
    let mut visited = Vec::new();
    store
        .scan_runs(None, &mut |rec, _| {
            visited.push(rec.id);
            visited.len() < 2
        })
        .unwrap();
    assert_eq!(visited, ["run_4", "run_3"]);

    let mut visited = Vec::new();
    store
        .scan_runs(Some("run_3"), &mut |rec, _| {
            visited.push(rec.id);
            false
        })
        .unwrap();
    assert_eq!(visited, ["run_2"]);
}

fn an_empty_store_has_no_runs_and_no_queue<B: Backend>() {
    let b = B::create();
    let store = b.open().unwrap();
    assert!(store.run("run_1").unwrap().is_none());
    assert!(store.steps("run_1").unwrap().is_empty());
    assert!(store.queue().unwrap().is_empty());
    assert!(scanned_ids(&store, None).is_empty());
    assert!(scanned_ids(&store, Some("run_1")).is_empty());
}

fn a_reopened_store_keeps_everything_after_sync<B: Backend>() {
    let b = B::create();
    {
        let store = b.open().unwrap();
        store
            .commit(&[
                Write::PutRun(record(&format!(
                    r#"{{"id":"run_1","task":"t","payload":{{"n": 1}},"created_at":{EPOCH},"ready_at":{EPOCH}}}"#
                ))),
                Write::PutState {
                    id: "run_1".into(),
                    state: record(&format!(
                        r#"{{"status":"completed","attempts":1,"started_at":{EPOCH},"ended_at":{},"output":[1, 2]}}"#,
                        EPOCH + 10
                    )),
                },
                put_step("run_1", "a", r#""a""#),
                Write::PutRun(run("run_2", "t", EPOCH + 1)),
                Write::Enqueue(entry(EPOCH + 1, 2, "run_2")),
            ])
            .unwrap();
        store.sync().unwrap();
    }

    let store = b.open().unwrap();
    let (rec, state) = store.run("run_1").unwrap().expect("run_1 survives");
    assert_eq!(rec.payload.get(), r#"{"n": 1}"#);
    let state = state.expect("its state survives");
    assert_eq!(state.status, RunStatus::Completed);
    assert_eq!(state.output.as_deref().map(RawValue::get), Some("[1, 2]"));
    let steps = store.steps("run_1").unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(
        steps[0].1.output.as_deref().map(RawValue::get),
        Some(r#""a""#)
    );
    assert_eq!(store.queue().unwrap(), [entry(EPOCH + 1, 2, "run_2")]);
    assert_eq!(scanned_ids(&store, None), ["run_2", "run_1"]);
    assert_eq!(
        store.kv().get(b"m/schema").unwrap(),
        Some(SCHEMA_VERSION.to_be_bytes().to_vec()),
        "reopening keeps the schema version"
    );
}

fn a_new_store_records_its_schema_version<B: Backend>() {
    let b = B::create();
    let store = b.open().unwrap();
    assert_eq!(
        store.kv().get(b"m/schema").unwrap(),
        Some(SCHEMA_VERSION.to_be_bytes().to_vec())
    );
}

fn a_store_written_by_a_newer_schema_refuses_to_open<B: Backend>() {
    let b = B::create();
    {
        let kv = b.open_kv().unwrap();
        kv.apply(vec![(
            b"m/schema".to_vec(),
            Some((SCHEMA_VERSION + 1).to_be_bytes().to_vec()),
        )])
        .unwrap();
        kv.sync().unwrap();
    }
    let err = b.open().err().expect("opening a newer store fails");
    assert_eq!(err.code(), "E_SCHEMA_TOO_NEW");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("schema {}", SCHEMA_VERSION + 1)),
        "{msg}"
    );
    // Refusing must not downgrade the marker: a newer build can still open it.
    assert_eq!(
        b.open_kv().unwrap().get(b"m/schema").unwrap(),
        Some((SCHEMA_VERSION + 1).to_be_bytes().to_vec())
    );
}

fn a_store_at_the_current_schema_opens<B: Backend>() {
    let b = B::create();
    {
        let kv = b.open_kv().unwrap();
        kv.apply(vec![(
            b"m/schema".to_vec(),
            Some(SCHEMA_VERSION.to_be_bytes().to_vec()),
        )])
        .unwrap();
        kv.sync().unwrap();
    }
    b.open().unwrap();
}

/// Instantiates every behaviour for every backend: `mem::<name>` and `sled::<name>`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod mem {
            $( #[test] fn $name() { super::$name::<super::Mem>() } )*
        }
        mod sled {
            $( #[test] fn $name() { super::$name::<super::Sled>() } )*
        }
    };
}

conformance!(
    a_commit_is_visible_whole_and_round_trips_every_record,
    a_run_without_a_state_change_has_no_state,
    a_later_write_of_a_key_replaces_the_earlier_one,
    a_reader_never_sees_half_a_commit,
    the_queue_is_ordered_by_ready_at_then_seq_and_dequeue_removes,
    queue_entries_keep_their_run_and_task,
    steps_come_in_key_order_and_never_from_a_prefix_sibling_run,
    scan_runs_visits_newest_first_and_the_cursor_continues_strictly_below,
    scan_runs_stops_when_the_visitor_returns_false,
    an_empty_store_has_no_runs_and_no_queue,
    a_reopened_store_keeps_everything_after_sync,
    a_new_store_records_its_schema_version,
    a_store_written_by_a_newer_schema_refuses_to_open,
    a_store_at_the_current_schema_opens,
);

// --- sled only ---------------------------------------------------------------------------

#[test]
fn sled_a_second_open_of_an_open_folder_fails_and_names_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let first = SledKv::open(dir.path(), 1024 * 1024).unwrap();
    let err = SledKv::open(dir.path(), 1024 * 1024)
        .err()
        .expect("the folder is locked by the first open");
    assert_eq!(err.code(), "E_DATA_DIR_LOCKED");
    let folder = dir.path().canonicalize().unwrap();
    let msg = err.to_string();
    assert!(msg.contains(&folder.display().to_string()), "{msg}");

    // The lock goes with the first handle.
    drop(first);
    SledKv::open(dir.path(), 1024 * 1024).unwrap();
}

#[test]
fn sled_a_second_open_through_the_store_fails_with_the_same_code() {
    let dir = tempfile::tempdir().unwrap();
    let _first = crate::open_sled(dir.path(), None).unwrap();
    let err = crate::open_sled(dir.path(), None)
        .err()
        .expect("the folder is locked");
    assert_eq!(err.code(), "E_DATA_DIR_LOCKED");
}

#[test]
fn sled_large_values_never_make_blob_files_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    // 2 MiB and 300 KB payloads, and 17 values of 7 KiB in one node's worth of keys.
    let big = |n: usize| format!("\"{}\"", "x".repeat(n));
    let mut writes = Vec::new();
    let mut rec = run("run_big", "t", EPOCH);
    rec.payload = RawValue::from_string(big(2 << 20)).unwrap();
    writes.push(Write::PutRun(rec));
    writes.push(put_step("run_big", "s", &big(300_000)));
    for i in 0..17 {
        writes.push(put_step("run_many", &format!("s{i:02}"), &big(7 * 1024)));
    }
    {
        let store = crate::open_sled(dir.path(), None).unwrap();
        store.commit(&writes).unwrap();
        store.sync().unwrap();
    }
    let blobs = dir.path().join("blobs");
    let count = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(count, 0, "sled wrote {count} blob files (never synced)");
    let store = crate::open_sled(dir.path(), None).unwrap();
    let (rec, _) = store.run("run_big").unwrap().unwrap();
    assert_eq!(rec.payload.get().len(), (2 << 20) + 2);
    assert_eq!(
        store.steps("run_big").unwrap()[0]
            .1
            .output
            .as_ref()
            .unwrap()
            .get()
            .len(),
        300_002
    );
    assert_eq!(store.steps("run_many").unwrap().len(), 17);
}

#[test]
fn sled_a_folder_with_other_files_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db"), b"SQLite format 3\0 not ours").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    let err = crate::open_sled(dir.path(), None).err().expect("refused");
    assert_eq!(err.code(), "E_NOT_A_STORE");
    assert!(err.to_string().contains("notes.txt"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("db")).unwrap(),
        b"SQLite format 3\0 not ours"
    );
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["db", "notes.txt"], "nothing was written");
    // A refused open holds nothing: the folder is not left marked open in this process.
    let err = crate::open_sled(dir.path(), None).err().unwrap();
    assert_eq!(err.code(), "E_NOT_A_STORE");
}

#[test]
fn sled_a_new_store_gets_its_marker_and_a_foreign_sled_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(crate::open_sled(dir.path(), None).unwrap());
    assert!(dir.path().join(super::MARKER).exists());

    // Somebody else's sled database (no marker, no schema key): refused.
    let other = tempfile::tempdir().unwrap();
    {
        let db = ::sled::open(other.path()).unwrap();
        db.insert(b"users/1", b"ada").unwrap();
        db.flush().unwrap();
    }
    let err = crate::open_sled(other.path(), None).err().expect("refused");
    assert_eq!(err.code(), "E_NOT_A_STORE");
    assert!(!other.path().join(super::MARKER).exists());
}

#[test]
fn sled_a_store_of_durably_0_1_without_a_marker_opens_and_is_marked() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = ::sled::open(dir.path()).unwrap();
        db.insert(b"m/schema", &1u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    drop(crate::open_sled(dir.path(), None).unwrap());
    assert!(dir.path().join(super::MARKER).exists());
}

#[test]
fn sled_cache_bytes_out_of_range_fail_before_anything_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [0, 1000, 1 << 41] {
        let err = crate::open_sled(dir.path(), Some(bad))
            .err()
            .expect("refused");
        assert_eq!(err.code(), "E_BAD_OPTION", "{bad}");
    }
    // Nothing stays marked open.
    crate::open_sled(dir.path(), Some(1 << 32)).unwrap();
}

#[test]
fn a_schema_1_store_is_migrated_events_renumbered_in_order_and_live_cursors_kept() {
    let kv = Arc::new(MemKv::new());
    let old_event = |id: &str, name: &str, ts: u64, seq: u64| -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let mut n = format!("n/{name}\0").into_bytes();
        n.extend_from_slice(&ts.to_be_bytes());
        n.extend_from_slice(&seq.to_be_bytes());
        vec![
            (n, Some(id.as_bytes().to_vec())),
            (
                format!("e/{id}").into_bytes(),
                Some(format!(r#"{{"id":"{id}","name":"{name}","data":{{"k":"{id}"}},"ts":{ts},"seq":{seq}}}"#).into_bytes()),
            ),
        ]
    };
    let mut ops = vec![(b"m/schema".to_vec(), Some(1u32.to_be_bytes().to_vec()))];
    // Two processes' worth of events: the seq restarted at 1 after a restart.
    ops.extend(old_event("e1", "a", EPOCH, 5));
    ops.extend(old_event("e2", "b", EPOCH + 10, 6));
    ops.extend(old_event("e3", "a", EPOCH + 20, 1));
    // A live run created at EPOCH + 15 that consumed e1, waiting with a cursor [EPOCH, 5].
    ops.push((
        b"r/run_w".to_vec(),
        Some(
            format!(
                r#"{{"id":"run_w","task":"t","payload":{{}},"created_at":{},"ready_at":{}}}"#,
                EPOCH + 15,
                EPOCH + 15
            )
            .into_bytes(),
        ),
    ));
    ops.push((b"x/run_w".to_vec(), Some(format!(r#"{{"status":"waiting","attempts":1,"event_cursor":[{EPOCH},5],"waits":[{{"kind":"event","key":"w","events":["a"],"after":[{EPOCH},5]}}]}}"#).into_bytes())));
    ops.push((b"w/run_w".to_vec(), Some(Vec::new())));
    kv.apply(ops).unwrap();
    let store = KvStore::open(SharedMem(kv.clone())).unwrap();
    assert_eq!(
        kv.get(b"m/schema").unwrap(),
        Some(2u32.to_be_bytes().to_vec())
    );
    let seqs: Vec<(String, u64)> = ["e1", "e2", "e3"]
        .iter()
        .map(|id| (id.to_string(), store.event(id).unwrap().unwrap().seq))
        .collect();
    assert_eq!(seqs, [("e1".into(), 1), ("e2".into(), 2), ("e3".into(), 3)]);
    let mut after = Vec::new();
    store
        .events_after("a", 1, &mut |e| {
            after.push(e.id);
            true
        })
        .unwrap();
    assert_eq!(after, ["e3"], "events of `a` after e1, by the new order");
    let mut by_value = Vec::new();
    store
        .events_with_value("a", "data.k", "\"e3\"", 0, &mut |e| {
            by_value.push(e.id);
            true
        })
        .unwrap();
    assert_eq!(by_value, ["e3"]);
    let (rec, st) = store.run("run_w").unwrap().unwrap();
    assert_eq!(
        rec.created_seq, 2,
        "events at or after its creation (e3) still match"
    );
    let st = st.unwrap();
    assert_eq!(st.event_cursor, Some(1));
    match &st.waits[0] {
        crate::model::WaitSpec::Event { after, .. } => assert_eq!(*after, Some(1)),
        other => panic!("{other:?}"),
    }
    assert!(store.seq_floor().unwrap() > 3);
}

#[test]
fn sled_opening_a_damaged_store_never_panics() {
    // Garbage over parts of the log (a failing disk): the open either recovers what it can
    // or fails with a code; it never panics (sled's recovery panics on some damage: caught).
    for (offset, len) in [
        (0u64, 64usize),
        (4096, 4096),
        (70_000, 100_000),
        (200_000, 8),
    ] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = crate::open_sled(dir.path(), None).unwrap();
            let mut writes = Vec::new();
            for i in 0..2_000 {
                writes.push(put_step(
                    "run_x",
                    &format!("s{i:05}"),
                    &format!("\"{}\"", "v".repeat(40)),
                ));
            }
            store.commit(&writes).unwrap();
            store.sync().unwrap();
        }
        let path = dir.path().join("db");
        let mut bytes = std::fs::read(&path).unwrap();
        let start = (offset as usize).min(bytes.len());
        let end = (start + len).min(bytes.len());
        for (i, b) in bytes[start..end].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(151) ^ 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        let opened = std::panic::catch_unwind(|| crate::open_sled(dir.path(), None).map(|_| ()));
        match opened {
            Ok(Ok(())) => {}
            Ok(Err(e)) => assert!(["E_STORE", "E_INTERNAL"].contains(&e.code()), "{e}"),
            Err(_) => panic!("opening a store damaged at {offset}+{len} panicked"),
        }
    }
}
