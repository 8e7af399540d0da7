//! The one writer, with group commit. Every write of the engine goes through here:
//!
//! - the *apply* thread drains every pending commit request and applies them as one store
//!   batch, then hands the batch's acknowledgements to the sync thread;
//! - the *sync* thread drains every batch handed to it, makes the store durable once
//!   (flush + fdatasync), then acknowledges them all.
//!
//! So while one group is being synced the next is already being applied (a pipeline), and
//! an acknowledgement always comes after its writes are on disk (`Durability::Sync`). In
//! `Durability::Batched` the acknowledgement comes after the apply and the sync thread
//! syncs every `interval_ms`: a power loss can lose that much acknowledged work.
//!
//! **Fail-stop.** The engine decides in memory before it writes, so a write that fails
//! (a full disk, an I/O error) leaves memory ahead of the disk. The first failure *poisons*
//! the writer: that group and every later request fail with the error (nothing after it is
//! applied, so the disk never holds a later decision without an earlier one), and `on_fail`
//! tells the engine, which stops deciding; the owner reopens the store and the engine
//! rebuilds its memory from what is on disk.

use crate::error::{Error, Result};
use crate::store::{Store, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledged means flushed and fdatasync'ed.
    Sync,
    /// Acknowledged means applied; synced every `interval_ms`.
    Batched { interval_ms: u64 },
}

/// Called once with the outcome of the commit, on the writer's threads.
pub type Done = Box<dyn FnOnce(Result<()>) + Send>;

struct Request {
    writes: Vec<Write>,
    done: Done,
}

pub struct Writer {
    tx: Mutex<Option<Sender<Request>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Told once, on the writer's thread, when a write first fails.
pub type OnFail = Arc<dyn Fn(&Error) + Send + Sync>;

/// The first failure, shared by both threads: once set, nothing more is applied.
#[derive(Clone)]
struct Poison {
    error: Arc<Mutex<Option<Error>>>,
    on_fail: OnFail,
}

impl Poison {
    fn get(&self) -> Option<Error> {
        self.error.lock().ok().and_then(|e| e.clone())
    }
    fn set(&self, e: &Error) {
        let first = match self.error.lock() {
            Ok(mut g) if g.is_none() => {
                *g = Some(e.clone());
                true
            }
            _ => false,
        };
        if first {
            tracing::error!(
                "durably: a store write failed, the engine stops until the store is reopened: {e}"
            );
            (self.on_fail)(e);
        }
    }
}

/// Upper bound of writes applied as one batch, so one huge backlog does not delay every
/// acknowledgement behind it.
const MAX_GROUP_WRITES: usize = 16_384;

impl Writer {
    /// `sync_delay` adds a pause to every sync: a stand-in for a slower disk in benchmarks.
    pub fn start(
        store: Arc<dyn Store>,
        durability: Durability,
        sync_delay: Duration,
        on_fail: OnFail,
    ) -> Result<Writer> {
        let (tx, rx) = mpsc::channel::<Request>();
        let (sync_tx, sync_rx) = mpsc::channel::<Vec<(Done, Result<()>)>>();
        let poison = Poison {
            error: Arc::new(Mutex::new(None)),
            on_fail,
        };
        let s1 = store.clone();
        let p1 = poison.clone();
        let apply = std::thread::Builder::new()
            .name("durably-apply".into())
            .spawn(move || apply_loop(s1, rx, sync_tx, durability, p1))
            .map_err(|e| Error::Internal(format!("cannot start the writer thread: {e}")))?;
        let sync = std::thread::Builder::new()
            .name("durably-sync".into())
            .spawn(move || sync_loop(store, sync_rx, durability, sync_delay, poison))
            .map_err(|e| Error::Internal(format!("cannot start the sync thread: {e}")))?;
        Ok(Writer {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(vec![apply, sync]),
        })
    }

    /// Queues writes; `done` runs once they are durable (or failed). After `stop`, `done`
    /// runs at once with `E_CLOSED`.
    pub fn submit(&self, writes: Vec<Write>, done: Done) {
        let tx = self.tx.lock().ok().and_then(|g| g.clone());
        match tx {
            Some(tx) => {
                if let Err(mpsc::SendError(req)) = tx.send(Request { writes, done }) {
                    (req.done)(Err(Error::Closed));
                }
            }
            None => done(Err(Error::Closed)),
        }
    }

    /// Commits and syncs everything queued so far, then stops both threads.
    pub fn stop(&self) {
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        let threads = self
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
    }
}

fn apply_loop(
    store: Arc<dyn Store>,
    rx: Receiver<Request>,
    sync_tx: Sender<Vec<(Done, Result<()>)>>,
    durability: Durability,
    poison: Poison,
) {
    while let Ok(first) = rx.recv() {
        let mut writes = first.writes;
        let mut dones = vec![first.done];
        while writes.len() < MAX_GROUP_WRITES {
            match rx.try_recv() {
                Ok(mut req) => {
                    writes.append(&mut req.writes);
                    dones.push(req.done);
                }
                Err(_) => break,
            }
        }
        let res = match poison.get() {
            Some(e) => Err(e),
            None => store.commit(&writes),
        };
        if let Err(e) = &res {
            poison.set(e);
        }
        drop(writes);
        match (durability, res) {
            (Durability::Sync, Ok(())) => {
                let _ = sync_tx.send(dones.into_iter().map(|d| (d, Ok(()))).collect());
            }
            (_, res) => {
                // Batched (acknowledge after apply) or a failed apply (nothing to sync).
                for d in dones {
                    d(res.clone());
                }
                if durability != Durability::Sync {
                    let _ = sync_tx.send(Vec::new()); // mark dirty
                }
            }
        }
    }
}

fn sync_loop(
    store: Arc<dyn Store>,
    rx: Receiver<Vec<(Done, Result<()>)>>,
    durability: Durability,
    sync_delay: Duration,
    poison: Poison,
) {
    match durability {
        Durability::Sync => {
            while let Ok(first) = rx.recv() {
                let mut group = first;
                while let Ok(mut more) = rx.try_recv() {
                    group.append(&mut more);
                }
                // A failure since these were applied fails them too: they may be on disk
                // without an earlier write they depend on.
                let res = match poison.get() {
                    Some(e) => Err(e),
                    None => store.sync(),
                };
                if !sync_delay.is_zero() {
                    std::thread::sleep(sync_delay);
                }
                if let Err(e) = &res {
                    poison.set(e);
                }
                for (done, _) in group {
                    done(res.clone());
                }
            }
        }
        Durability::Batched { interval_ms } => {
            let interval = Duration::from_millis(interval_ms.max(1));
            let mut dirty = false;
            let mut last = Instant::now();
            loop {
                let wait = interval.saturating_sub(last.elapsed());
                match rx.recv_timeout(wait) {
                    Ok(_) => dirty = true,
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                if dirty && last.elapsed() >= interval && poison.get().is_none() {
                    if let Err(e) = store.sync() {
                        poison.set(&e);
                    }
                    dirty = false;
                    last = Instant::now();
                }
            }
        }
    }
    if poison.get().is_none() {
        if let Err(e) = store.sync() {
            poison.set(&e);
        }
    }
}
