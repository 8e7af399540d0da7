//! Counts the keys and bytes of a (closed) data folder by keyspace, to see where its disk
//! goes: `cargo run --release -p durably-core --example store_stats -- <dataDir>`.

use durably_core::store::{Kv, KvStore, SledKv, Store};
use std::collections::BTreeMap;

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: store_stats <dataDir>");
    let kv = SledKv::open(std::path::Path::new(&dir), 16 << 20).expect("open the store");
    let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    kv.scan(b"", false, None, &mut |k, v| {
        let p = match k.first() {
            Some(0xFE) => "FE (chunk index)".to_string(),
            Some(0xFF) => "FF (chunks)".to_string(),
            _ => {
                let end = k
                    .iter()
                    .position(|b| *b == b'/')
                    .map(|i| i + 1)
                    .unwrap_or(k.len().min(2));
                let mut p = String::from_utf8_lossy(&k[..end]).into_owned();
                if p == "p/" && k.len() > 3 {
                    p = String::from_utf8_lossy(&k[..4]).into_owned();
                }
                p
            }
        };
        let e = by.entry(p).or_default();
        e.0 += 1;
        e.1 += (k.len() + v.len()) as u64;
        true
    })
    .expect("scan");
    let file = std::fs::metadata(std::path::Path::new(&dir).join("db"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!("db file: {:.1} MB", file as f64 / 1048576.0);
    let total: u64 = by.values().map(|v| v.1).sum();
    println!("live keys+values: {:.1} MB", total as f64 / 1048576.0);
    for (p, (n, b)) in by {
        println!("{p:>20} {n:>10} keys {:>10.1} MB", b as f64 / 1048576.0);
    }
    // Is retention keeping up? Ended runs whose removal time has passed.
    let store = KvStore::open(kv).expect("open the store");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let due = store
        .due_for_purge(now, usize::MAX)
        .expect("retention entries");
    let oldest = due.runs.iter().map(|(at, _)| *at).min();
    println!(
        "retention: {} ended runs due for removal{}",
        due.runs.len(),
        oldest.map_or(String::new(), |at| format!(
            ", the oldest {} s overdue",
            now.saturating_sub(at) / 1000
        ))
    );
}
