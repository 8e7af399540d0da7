#![allow(unsafe_code)] // the counting allocator below
//! Memory of parked runs without JS: triggers N runs, claims them and parks each on a
//! one-hour sleep, then prints the growth of live heap bytes (counted by a wrapper around the
//! system allocator) and of RSS.
//! `cargo run --release --example park_memory -- 100000 [mem|sled]`; `CACHE=<bytes>` sets
//! sled's cache.

use durably_core::{
    open_memory, open_sled, Engine, EngineOptions, ManualClock, Op, TaskPolicy, TriggerItem,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        System.realloc(p, l, n)
    }
}
#[global_allocator]
static A: Counting = Counting;

fn rss_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / 1048576.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(30_000);
    let kind = args.get(2).cloned().unwrap_or_else(|| "mem".into());
    let dir = std::env::temp_dir().join(format!("durably-park-{}", std::process::id()));
    let store = if kind == "sled" {
        open_sled(
            &dir,
            std::env::var("CACHE").ok().and_then(|c| c.parse().ok()),
        )
        .unwrap()
    } else {
        open_memory().unwrap()
    };
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let engine = Engine::open(store, clock, EngineOptions::default()).unwrap();
    engine.register_task("s", TaskPolicy::default()).unwrap();
    let base = rss_mb();
    let live0 = LIVE.load(Ordering::Relaxed);
    let mut done = 0;
    while done < n {
        let items: Vec<TriggerItem> = (0..100)
            .map(|_| serde_json::from_str(r#"{"task":"s","payload":{}}"#).unwrap())
            .collect();
        engine.trigger(vec![items]).await.into_iter().for_each(|r| {
            r.unwrap();
        });
        engine.flush().await.unwrap();
        let claimed = engine.try_claim(100).unwrap();
        let mut ops = String::from("[");
        for (i, c) in claimed.iter().enumerate() {
            if i > 0 {
                ops.push(',');
            }
            ops.push_str(&format!(
                r#"{{"op":"step","run":"{id}","key":"before","attempt":1,"output":1}},{{"op":"wait","run":"{id}","waits":[{{"kind":"sleep","key":"nap","wakeAt":1700003600000}}]}}"#,
                id = c.id
            ));
        }
        ops.push(']');
        engine.report(Op::parse_batch(&ops).unwrap()).await.unwrap();
        done += claimed.len();
    }
    engine.flush().await.unwrap();
    let grown = rss_mb() - base;
    let live = (LIVE.load(Ordering::Relaxed) - live0) as f64;
    println!(
        "live heap growth {:.0} MB, {:.0} B/run",
        live / 1048576.0,
        live / n as f64
    );
    println!(
        "{kind}: {n} runs parked, RSS growth {grown:.0} MB, {:.2} KB/run",
        grown * 1024.0 / n as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
