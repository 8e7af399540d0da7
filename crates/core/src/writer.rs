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

/// Upper bound of writes applied as one batch, so one huge backlog does not delay every
/// acknowledgement behind it.
const MAX_GROUP_WRITES: usize = 16_384;

impl Writer {
    /// `sync_delay` adds a pause to every sync: a stand-in for a slower disk in benchmarks.
    pub fn start(
        store: Arc<dyn Store>,
        durability: Durability,
        sync_delay: Duration,
    ) -> Result<Writer> {
        let (tx, rx) = mpsc::channel::<Request>();
        let (sync_tx, sync_rx) = mpsc::channel::<Vec<(Done, Result<()>)>>();
        let s1 = store.clone();
        let apply = std::thread::Builder::new()
            .name("durably-apply".into())
            .spawn(move || apply_loop(s1, rx, sync_tx, durability))
            .map_err(|e| Error::Internal(format!("cannot start the writer thread: {e}")))?;
        let sync = std::thread::Builder::new()
            .name("durably-sync".into())
            .spawn(move || sync_loop(store, sync_rx, durability, sync_delay))
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
        let res = store.commit(&writes);
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
) {
    match durability {
        Durability::Sync => {
            while let Ok(first) = rx.recv() {
                let mut group = first;
                while let Ok(mut more) = rx.try_recv() {
                    group.append(&mut more);
                }
                let res = store.sync();
                if !sync_delay.is_zero() {
                    std::thread::sleep(sync_delay);
                }
                if let Err(e) = &res {
                    tracing::error!("durably: store sync failed: {e}");
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
                if dirty && last.elapsed() >= interval {
                    if let Err(e) = store.sync() {
                        tracing::error!("durably: store sync failed: {e}");
                    }
                    dirty = false;
                    last = Instant::now();
                }
            }
        }
    }
    if let Err(e) = store.sync() {
        tracing::error!("durably: final store sync failed: {e}");
    }
}
