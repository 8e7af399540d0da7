//! Numbered migrations of the embedded store's layout, run by `KvStore::open` when a store
//! of an older schema is opened. Each is one atomic batch: a crash during a migration leaves
//! the store at its old schema, and the next open runs it again.

use super::kv::{event_index_keys, SEQ_BLOCK};
use super::Kv;
use crate::error::{Error, Result};
use crate::model::{EventRecord, RunRecord, RunState, WaitSpec};
use std::collections::HashSet;

/// Brings a store of schema `from` to the current one.
pub fn migrate<K: Kv>(kv: &K, from: u32) -> Result<()> {
    match from {
        1 => to_2(kv),
        _ => Err(Error::Store(format!(
            "the store at {} has schema {from}, which no durably release wrote",
            kv.location()
        ))),
    }
}

fn dec<T: serde::de::DeserializeOwned>(what: &str, b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::Store(format!("migration: corrupt {what}: {e}")))
}

fn enc<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Internal(format!("encode: {e}")))
}

/// Schema 1 ordered events by `(ingestion ms, seq)` with a seq that restarted with the
/// process; schema 2 orders them by one persistent sequence. Events are renumbered in their
/// old order; every cursor `(ts, seq)` of a live run becomes the number of the last event at
/// or before it, and each live run gets `created_seq`: the last event before its creation
/// (schema 1 matched events ingested at or after `createdAt`).
fn to_2<K: Kv>(kv: &K) -> Result<()> {
    let mut ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    // Events in their schema-1 order.
    let mut events: Vec<((u64, u64), EventRecord)> = Vec::new();
    let mut err = None;
    kv.scan(b"n/", false, None, &mut |k, _| {
        ops.push((k.to_vec(), None));
        true
    })?;
    kv.scan(
        b"e/",
        false,
        None,
        &mut |_, v| match dec::<EventRecord>("event", v) {
            Ok(e) => {
                events.push(((e.ts, e.seq), e));
                true
            }
            Err(e) => {
                err = Some(e);
                false
            }
        },
    )?;
    if let Some(e) = err {
        return Err(e);
    }
    events.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    let order: Vec<(u64, u64)> = events.iter().map(|(k, _)| *k).collect();
    // The new number of the last event at or before an old position (0: none).
    let renumber = |pos: (u64, u64)| order.partition_point(|k| *k <= pos) as u64;
    for (i, (_, mut e)) in events.into_iter().enumerate() {
        e.seq = i as u64 + 1;
        for k in event_index_keys(&e) {
            ops.push((k, Some(e.id.as_bytes().to_vec())));
        }
        let mut key = b"e/".to_vec();
        key.extend_from_slice(e.id.as_bytes());
        ops.push((key, Some(enc(&e)?)));
    }
    // Live runs: those with a queue entry or marked waiting.
    let mut live = HashSet::new();
    let mut max_queue_seq = 0;
    kv.scan(b"q/", false, None, &mut |k, v| {
        if k.len() == 18 {
            max_queue_seq =
                max_queue_seq.max(u64::from_be_bytes(k[10..18].try_into().unwrap_or_default()));
        }
        let id = v.split(|b| *b == 0).next().unwrap_or_default();
        live.insert(String::from_utf8_lossy(id).into_owned());
        true
    })?;
    kv.scan(b"w/", false, None, &mut |k, _| {
        live.insert(String::from_utf8_lossy(&k[2..]).into_owned());
        true
    })?;
    for id in &live {
        let rk = [b"r/", id.as_bytes()].concat();
        if let Some(v) = kv.get(&rk)? {
            let mut rec: RunRecord = dec("run", &v)?;
            rec.created_seq = renumber((rec.created_at, 0));
            ops.push((rk, Some(enc(&rec)?)));
        }
        let xk = [b"x/", id.as_bytes()].concat();
        if let Some(v) = kv.get(&xk)? {
            let raw: serde_json::Value = dec("run state", &v)?;
            let old = |field: &serde_json::Value| -> Option<(u64, u64)> {
                Some((field.get(0)?.as_u64()?, field.get(1)?.as_u64()?))
            };
            let mut st: RunState = dec("run state", &v)?;
            st.event_cursor = raw.get("event_cursor").and_then(old).map(renumber);
            let afters: Vec<Option<u64>> = raw
                .get("waits")
                .and_then(|w| w.as_array())
                .map(|ws| {
                    ws.iter()
                        .map(|w| w.get("after").and_then(old).map(renumber))
                        .collect()
                })
                .unwrap_or_default();
            for (w, a) in st.waits.iter_mut().zip(afters) {
                if let WaitSpec::Event { after, .. } = w {
                    *after = a;
                }
            }
            ops.push((xk, Some(enc(&st)?)));
        }
    }
    // Ended runs get their retention entry (schema 1 kept everything): 7 days after they
    // ended, the default; a task with its own retention is corrected at its next end.
    let mut ended = Vec::new();
    kv.scan(b"x/", false, None, &mut |k, v| {
        if let Ok(st) = serde_json::from_slice::<RunState>(v) {
            if st.status.is_terminal() {
                ended.push((st.ended_at.unwrap_or(0), k[2..].to_vec()));
            }
        }
        true
    })?;
    for (at, run) in ended {
        let mut k = b"z/".to_vec();
        k.extend_from_slice(&at.saturating_add(7 * 24 * 3_600_000).to_be_bytes());
        k.extend_from_slice(&run);
        ops.push((k, Some(Vec::new())));
    }
    let next = (order.len() as u64)
        .max(max_queue_seq)
        .saturating_add(SEQ_BLOCK);
    ops.push((b"m/seq".to_vec(), Some(next.to_be_bytes().to_vec())));
    ops.push((b"m/schema".to_vec(), Some(2u32.to_be_bytes().to_vec())));
    // The old `n/` keys are removed first in the batch; the new ones (one seq, not ts + seq:
    // never the same key) come after.
    kv.apply(ops)?;
    kv.sync()
}
