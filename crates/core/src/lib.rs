//! durably's engine: durable runs, steps and their scheduler over an embedded store.
//! No napi and no JS types here: `crates/node` binds this to Node.js.

#![forbid(unsafe_code)]

pub mod clock;
mod control;
pub mod duration;
pub mod engine;
pub mod error;
pub mod expr;
pub mod flow;
pub mod limits;
pub mod model;
pub mod retention;
pub mod retry;
pub mod schedule;
pub mod state;
pub mod store;
pub mod waits;
pub mod writer;

pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{Engine, EngineOptions, Op, TaskPolicy, TriggerItem};
pub use error::{Error, Result};
pub use writer::Durability;

use std::path::Path;
use std::sync::Arc;

/// Opens the sled store in `dir` (16 MiB cache unless given). DESIGN §2 says 64 MiB; sled
/// counts its cache in serialized bytes and the nodes it keeps take about 1.5× that, so 64
/// MiB cost ~95 MB of heap once the store is big, and no workload in `bench/` ran faster
/// with it than with 16 MiB (bench/RESULTS.md).
pub fn open_sled(dir: &Path, cache_bytes: Option<u64>) -> Result<Arc<dyn store::Store>> {
    let kv = store::SledKv::open(dir, cache_bytes.unwrap_or(16 * 1024 * 1024))?;
    let kv = store::Chunked::open(kv, store::DEFAULT_CHUNK)?;
    Ok(Arc::new(store::KvStore::open(kv)?))
}

/// A fresh in-memory store.
pub fn open_memory() -> Result<Arc<dyn store::Store>> {
    Ok(Arc::new(store::KvStore::open(store::MemKv::new())?))
}
