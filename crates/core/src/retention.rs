//! Retention: months of history stay bounded. When a run ends, its removal time is indexed
//! (`z/{purge_at}{run}`: ended + the task's `retention`, default 7 days); a background
//! thread removes what is due, a few hundred at a time, through the one writer:
//!
//! - ended runs with their steps (a run reopened by `runs.retry` since is live again and
//!   kept: the purge checks each run's state, under the scheduler lock, before removing it);
//! - events older than the retention that no wait can still match: a wait matches events
//!   since its run's creation, so only events before the oldest live run's creation go (and
//!   with them their dedup ids: a repeated id after that is a new event);
//! - idempotency keys past their expiry.
//!
//! Reads happen without the scheduler lock; the lock is held only to check the candidates
//! against what the scheduler holds and to queue the writes, so the scheduler never stalls.

use crate::engine::Engine;
use crate::error::Result;
use crate::store::Write;
use std::time::Duration;

/// What one pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    pub runs: usize,
    pub events: usize,
    pub keys: usize,
}

impl Engine {
    /// The time an ended run of `task` is removed, if it ever is.
    pub(crate) fn purge_at(&self, s: &crate::engine::Sched, task: &str, ended: u64) -> Option<u64> {
        let ms = match s.tasks.get(task).and_then(|p| p.retention) {
            Some(crate::engine::Retention::Forever(_)) => None,
            Some(crate::engine::Retention::Ms(ms)) => Some(ms),
            None => self.inner.opts.retention_ms,
        }?;
        Some(ended.saturating_add(ms))
    }

    /// Removes up to `limit` of each kind of what retention made due, now, and waits until
    /// that is on disk. Returns what it removed; the background pass calls it until it
    /// removes less than `limit`.
    pub fn purge(&self, limit: usize) -> Result<Purged> {
        self.check_open()?;
        let store = self.store()?;
        let now = self.inner.clock.now_ms();
        let due = store.due_for_purge(now, limit)?;
        // Runs: read without the lock.
        let mut runs = Vec::new();
        for (at, id) in due.runs {
            match store.run(&id)? {
                Some((rec, Some(st))) if st.status.is_terminal() => {
                    let ended = st.ended_at.unwrap_or(rec.created_at);
                    let steps = store.steps(&id)?.into_iter().map(|(k, _)| k).collect();
                    runs.push((id, at, ended, rec.task, steps));
                }
                // Reopened since (runs.retry), or gone: only the entry goes.
                _ => runs.push((id, at, u64::MAX, String::new(), Vec::new())),
            }
        }
        // Events before the oldest live run's creation and older than the retention.
        let mut events = Vec::new();
        if let Some(ms) = self.inner.opts.retention_ms {
            let horizon = match store.oldest_live_run()? {
                Some(id) => store.run_record(&id)?.map(|r| r.created_seq).unwrap_or(0),
                None => u64::MAX,
            };
            store.oldest_events(&mut |e| {
                if e.seq > horizon || e.ts.saturating_add(ms) > now || events.len() >= limit {
                    return false;
                }
                events.push(e);
                true
            })?;
        }
        let mut writes = Vec::new();
        let mut purged = Purged::default();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        {
            let s = self.sched()?;
            for (id, at, ended, task, steps) in runs {
                let live = s.running.contains_key(&id)
                    || s.entries.contains_key(&id)
                    || s.waiting.contains_key(&id)
                    || s.pending_outcomes.contains_key(&id);
                let expired = ended != u64::MAX
                    && !live
                    && self.purge_at(&s, &task, ended).is_some_and(|p| p <= now);
                if expired {
                    writes.push(Write::DelRun {
                        run: id,
                        steps,
                        purge_at: at,
                    });
                    purged.runs += 1;
                } else if ended == u64::MAX || live {
                    // Reopened since (its next end writes a new entry), or gone: the entry goes.
                    writes.push(Write::DelPurgeEntry { at, run: id });
                }
            }
            for e in events {
                if !s.pending_events.contains_key(&e.id) {
                    writes.push(Write::DelEvent(e));
                    purged.events += 1;
                }
            }
            for (expires_at, task, key) in due.keys {
                if s.pending_idem.contains_key(&(task.clone(), key.clone())) {
                    continue; // just being set again: left for a later pass
                }
                // The key itself goes only if this expiry is still its own (a key set again
                // later has a later expiry, and its own entry).
                let current = store.idempotency(&task, &key)?.map(|(_, e)| e);
                let key_too = current.is_some_and(|e| e == expires_at);
                purged.keys += usize::from(key_too);
                writes.push(Write::DelIdempotency {
                    task,
                    key,
                    expires_at,
                    key_too,
                });
            }
            if writes.is_empty() {
                return Ok(purged);
            }
            // Queued under the lock: any decision that comes later is written after.
            self.submit_then(
                writes,
                Box::new(move |r| {
                    let _ = done_tx.send(r);
                }),
            );
        }
        // Wait (without the lock) until the removals are applied, so that the next pass reads
        // past them: reading the same entries again would find their runs gone and stop the
        // pass early, and retention would fall behind a busy engine (the soak showed it).
        done_rx.recv().map_err(|_| crate::error::Error::Closed)??;
        Ok(purged)
    }
}

impl Engine {
    /// Removes everything retention made due, `limit` of each kind at a time (what the
    /// background pass does). Returns the totals.
    pub fn purge_due(&self, limit: usize) -> Result<Purged> {
        let mut total = Purged::default();
        loop {
            let p = self.purge(limit)?;
            total.runs += p.runs;
            total.events += p.events;
            total.keys += p.keys;
            if p.runs < limit && p.events < limit && p.keys < limit {
                return Ok(total);
            }
        }
    }
}

/// Runs `purge_due` every `every` until the engine closes: the retention thread.
pub(crate) fn spawn(engine: std::sync::Weak<crate::engine::Inner>, every: Duration) {
    let _ = std::thread::Builder::new()
        .name("durably-retention".into())
        .spawn(move || {
            let tick = Duration::from_millis(250).min(every);
            let mut waited = Duration::ZERO;
            loop {
                std::thread::sleep(tick);
                waited += tick;
                let Some(inner) = engine.upgrade() else {
                    return;
                };
                let e = Engine::from_inner(inner);
                if e.is_closed() {
                    return;
                }
                if waited < every {
                    continue;
                }
                waited = Duration::ZERO;
                match e.purge_due(500) {
                    Ok(p) if p != Purged::default() => {
                        tracing::debug!(
                            "durably: retention removed {} runs, {} events, {} idempotency keys",
                            p.runs,
                            p.events,
                            p.keys
                        );
                    }
                    Ok(_) => {}
                    Err(err) => {
                        if !e.is_closed() {
                            tracing::warn!("durably: retention pass failed: {err}");
                        }
                    }
                }
            }
        });
}
