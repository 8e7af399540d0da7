//! The embedded store's key layout (`store/kv.rs`) over arbitrary bytes: an in-memory
//! `Kv` holding arbitrary keys and values (the `q/` queue keys and `{run}\0{task}` values,
//! the `i/` idempotency values, the `n/` event index, JSON records, the schema version),
//! read back through every `Store` method, then recovered by `Engine::open`. Corrupt data
//! may be an error; it must never panic.
//!
//! Input: a sequence of up to 64 `[key len u16 BE][key][value len u16 BE][value]`.
#![no_main]

use durably_core::store::{Kv, KvStore, MemKv, Store};
use durably_core::{Engine, EngineOptions, ManualClock};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fn take<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let len = u16::from_be_bytes(*len) as usize;
    let len = len.min(rest.len());
    let (v, rest) = rest.split_at(len);
    *data = rest;
    Some(v)
}

fn be(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut ops = Vec::new();
    while let (Some(k), Some(v)) = (take(&mut rest), take(&mut rest)) {
        ops.push((k.to_vec(), Some(v.to_vec())));
        if ops.len() == 64 {
            break; // more entries only slow each run down
        }
    }
    let kv = MemKv::new();
    if kv.apply(ops.clone()).is_err() {
        return;
    }
    let Ok(store) = KvStore::open(kv) else {
        return;
    };
    let _ = store.queue();
    let _ = store.queue_after(None, 3);
    let _ = store.waiting_runs();
    let _ = store.schedules();
    let _ = store.flows();
    let _ = store.scan_runs(None, &mut |_, _| true);
    for (k, _) in &ops {
        let (Some(prefix), Some(id)) = (k.get(..2), k.get(2..)) else {
            continue;
        };
        let id_str = String::from_utf8_lossy(id);
        match prefix {
            b"r/" | b"x/" => {
                let _ = store.run(&id_str);
                let _ = store.run_record(&id_str);
                let _ = store.steps(&id_str);
                let _ = store.scan_runs(Some(&id_str), &mut |_, _| false);
            }
            b"s/" => {
                let run = id_str.split('/').next().unwrap_or("");
                let _ = store.steps(run);
            }
            b"q/" => {
                let _ = store.queue_after(Some((be(id), be(id.get(8..).unwrap_or(&[])))), 10);
            }
            b"e/" => {
                let _ = store.event(&id_str);
            }
            b"n/" => {
                let mut parts = id.splitn(2, |b| *b == 0);
                let name = String::from_utf8_lossy(parts.next().unwrap_or(&[]));
                let at = parts.next().unwrap_or(&[]);
                let _ = store.events_after(&name, 0, &mut |_| true);
                let _ = store.events_after(&name, be(at), &mut |_| true);
                let _ = store.events_partly_indexed(&name, be(at), &mut |_| true);
            }
            b"v/" => {
                let mut parts = id.splitn(3, |b| *b == 0);
                let name = String::from_utf8_lossy(parts.next().unwrap_or(&[])).into_owned();
                let path = String::from_utf8_lossy(parts.next().unwrap_or(&[])).into_owned();
                let value = String::from_utf8_lossy(parts.next().unwrap_or(&[])).into_owned();
                let _ = store.events_with_value(&name, &path, &value, 0, &mut |_| true);
            }
            b"z/" | b"j/" => {
                let _ = store.due_for_purge(be(id), 10);
            }
            b"p/" => {
                let _ = store.claims();
                let _ = store.crashes();
            }
            b"g/" => {
                let _ = store.oldest_events(&mut |_| true);
                let _ = store.oldest_live_run();
            }
            b"k/" => {
                let _ = store.token(&id_str);
            }
            b"i/" => {
                let mut parts = id_str.splitn(2, '\0');
                let task = parts.next().unwrap_or("");
                let key = parts.next().unwrap_or("");
                let _ = store.idempotency(task, key);
            }
            _ => {}
        }
    }
    // Recovery reads everything above and rebuilds the scheduler from it.
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    if let Ok(engine) = Engine::open(Arc::new(store), clock, EngineOptions::default()) {
        let _ = engine.try_claim(10);
        engine.close();
    }
});
