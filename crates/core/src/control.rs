//! Run control: admitting triggers through flow control (idempotency, rate limit,
//! singleton, debounce), creating and ending runs, cancellation, deadlines, `runs.replay`
//! and `runs.retry`. Everything here runs under the scheduler lock and only *decides*: the
//! writes go to the group-commit writer, and `AfterCommit` applies what must wait for them.

use crate::engine::{to_raw, AfterCommit, Engine, NewRun, Outcome, RunningRun, Sched};
use crate::error::{Error, Result};
use crate::flow::{self, DebounceMode, Flow, FlowKey, FlowKeys, SingletonMode};
use crate::model::{Json, ParentRef, QueueEntry, RunRecord, RunState, RunStatus, StepStatus};
use crate::state::{transition, Input};
use crate::store::{Store, Write};
use std::cmp::Reverse;
use std::sync::Arc;

/// Idempotency keys live 30 days unless the task or trigger says otherwise.
const DEFAULT_IDEMPOTENCY_TTL_MS: u64 = 30 * 24 * 3_600_000;

impl Engine {
    /// Runs a new trigger through the task's flow control; returns the id of the run the
    /// trigger resolves to (new, existing or skipped).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn admit(
        &self,
        s: &mut Sched,
        store: &dyn Store,
        proto: NewRun,
        keys: FlowKeys,
        now: u64,
        writes: &mut Vec<Write>,
        after: &mut AfterCommit,
    ) -> Result<String> {
        let policy = s.tasks.get(&proto.task).cloned().unwrap_or_default();
        let keys = self.key_exprs(&policy, &proto, keys);
        // A child of `step.invoke` is already once-only (the parent's step), and its parent
        // waits for *this* run: idempotency and debounce, which answer with another run, do
        // not apply to it. Every other limit does.
        let invoked = proto.parent.is_some();
        let task = proto.task.clone();
        let fk = |k: &Option<String>| -> FlowKey { (task.clone(), k.clone().unwrap_or_default()) };
        // Idempotency: a live key resolves to its run, and nothing else happens.
        let idem = keys
            .idempotency_key
            .as_ref()
            .filter(|_| !invoked)
            .map(|k| (proto.task.clone(), k.clone()));
        if let Some(ik) = &idem {
            let found = match s.pending_idem.get(ik) {
                Some(v) => Some(v.clone()),
                None => store.idempotency(&ik.0, &ik.1)?,
            };
            if let Some((run, expires)) = found {
                if expires > now {
                    return Ok(run);
                }
            }
        }
        // Rate limit: over the limit → recorded as skipped, never executed.
        if let Some(rl) = policy.rate_limit {
            let key = fk(&keys.rate_limit_key);
            let w = s.flow.rate_windows.entry(key.clone()).or_default();
            if !w.has_room(now, rl.period_ms, rl.limit as usize) {
                let why = "rate limit reached";
                return Ok(self.skipped_run(s, proto, now, why, writes, after));
            }
            s.flow.record(true, &key, now, rl.period_ms);
        }
        // Singleton: one active run per key.
        let proto =
            match self.singleton_gate(s, store, &policy, proto, &keys, now, writes, after)? {
                Ok(proto) => proto,
                Err(skipped) => return Ok(skipped),
            };
        // Debounce: a pending run of the key absorbs the trigger and is postponed.
        let mut proto = proto;
        if let Some(db) = policy.debounce.filter(|_| !invoked) {
            let key = fk(&keys.debounce_key);
            let pending = s
                .flow
                .debounced
                .get(&key)
                .filter(|d| s.entries.contains_key(&d.run))
                .map(|d| (d.run.clone(), d.first_at));
            let until = |first: u64| match db.max_wait_ms {
                Some(m) => (now + db.period_ms).min(first.saturating_add(m)),
                None => now + db.period_ms,
            };
            if let Some((run, first_at)) = pending {
                let ready_at = until(first_at);
                if let Some((at, seq)) = s.entries.get(&run).copied() {
                    writes.push(Write::Dequeue { ready_at: at, seq });
                }
                let e = s.enqueue(&run, &proto.task, ready_at);
                writes.push(Write::Enqueue(e));
                if db.mode == DebounceMode::Trailing {
                    // The record as last written (after a restart: as stored) gets the new payload.
                    let known = s
                        .flow
                        .debounced
                        .get(&key)
                        .and_then(|d| d.record.as_ref())
                        .map(clone_record);
                    let rec = match known {
                        Some(r) => Some(r),
                        None => store.run_record(&run)?,
                    };
                    if let Some(mut rec) = rec {
                        rec.payload = proto.payload;
                        rec.ready_at = ready_at;
                        writes.push(Write::PutRun(clone_record(&rec)));
                        if let Some(d) = s.flow.debounced.get_mut(&key) {
                            d.record = Some(rec);
                        }
                    }
                }
                return Ok(run);
            }
            proto.ready_at = proto.ready_at.max(until(now));
        }
        let f = Flow {
            priority: keys.priority.unwrap_or(0),
            concurrency_key: keys.concurrency_key.clone(),
            throttle_key: keys.throttle_key.clone(),
            singleton_key: policy
                .singleton
                .map(|_| keys.singleton_key.clone().unwrap_or_default()),
            cancel_on: keys.cancel_on.clone(),
            // The time to start counts from when the run is due, not from the trigger: a
            // run delayed an hour with a ttl of 10 minutes has until 1h10.
            start_by: keys
                .ttl_ms
                .or(policy.timeout.start_ms)
                .map(|t| proto.ready_at.saturating_add(t)),
            finish_ms: policy.timeout.finish_ms,
            debounce_key: policy
                .debounce
                .filter(|_| !invoked)
                .map(|_| keys.debounce_key.clone().unwrap_or_default()),
            debounce_first: policy.debounce.filter(|_| !invoked).map(|_| now),
        };
        let debounce_key = policy
            .debounce
            .filter(|_| !invoked)
            .map(|_| fk(&keys.debounce_key));
        let (id, kept) =
            self.create_run_kept(s, proto, f, now, debounce_key.is_some(), writes, after)?;
        if let Some(key) = debounce_key {
            s.flow.debounced.insert(
                key,
                flow::Debounced {
                    run: id.clone(),
                    first_at: now,
                    record: kept,
                },
            );
        }
        if let Some(ik) = idem {
            let ttl = keys
                .idempotency_ttl_ms
                .unwrap_or(DEFAULT_IDEMPOTENCY_TTL_MS);
            let expires_at = now.saturating_add(ttl);
            writes.push(Write::PutIdempotency {
                task: ik.0.clone(),
                key: ik.1.clone(),
                run: id.clone(),
                expires_at,
            });
            s.pending_idem.insert(ik.clone(), (id.clone(), expires_at));
            after.idem.push(ik);
        }
        Ok(id)
    }

    /// `singleton`: with another run of the key active, a new one is skipped (`Err(its id)`)
    /// or the active one is cancelled; otherwise the new run goes ahead (`Ok(proto)`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn singleton_gate(
        &self,
        s: &mut Sched,
        store: &dyn Store,
        policy: &crate::engine::TaskPolicy,
        proto: NewRun,
        keys: &FlowKeys,
        now: u64,
        writes: &mut Vec<Write>,
        after: &mut AfterCommit,
    ) -> Result<std::result::Result<NewRun, String>> {
        let Some(sg) = policy.singleton else {
            return Ok(Ok(proto));
        };
        let key = (
            proto.task.clone(),
            keys.singleton_key.clone().unwrap_or_default(),
        );
        let Some(active) = s.flow.singletons.get(&key).cloned() else {
            return Ok(Ok(proto));
        };
        match sg.mode {
            SingletonMode::Skip => {
                let why = "another run of this singleton key is active";
                Ok(Err(self.skipped_run(s, proto, now, why, writes, after)))
            }
            SingletonMode::Cancel => {
                let why = "replaced by a newer run of its singleton key";
                self.cancel_locked(s, store, &active, why, now, writes, after)?;
                Ok(Ok(proto))
            }
        }
    }

    /// The keys of a trigger, with those the task gives as expressions (a string `key`,
    /// like `'event.data.accountId'`) evaluated over the run's event — `{ data: payload }`
    /// for a direct trigger. A key JS computed (a function) wins.
    pub(crate) fn key_exprs(
        &self,
        policy: &crate::engine::TaskPolicy,
        proto: &NewRun,
        mut keys: FlowKeys,
    ) -> FlowKeys {
        let exprs = &policy.key_exprs;
        if exprs.is_empty() {
            return keys;
        }
        let event = match &proto.event {
            Some(e) => serde_json::from_str(e.get()).unwrap_or_default(),
            None => serde_json::json!({
                "data": serde_json::from_str::<serde_json::Value>(proto.payload.get()).unwrap_or_default()
            }),
        };
        let eval = |e: &crate::expr::Expr| crate::expr::key_value(e, &[("event", &event)]);
        let fill = |slot: &mut Option<String>, e: &Option<crate::expr::Expr>| {
            if slot.is_none() {
                if let Some(e) = e {
                    *slot = Some(eval(e));
                }
            }
        };
        fill(&mut keys.concurrency_key, &exprs.concurrency);
        fill(&mut keys.throttle_key, &exprs.throttle);
        fill(&mut keys.rate_limit_key, &exprs.rate_limit);
        fill(&mut keys.debounce_key, &exprs.debounce);
        fill(&mut keys.singleton_key, &exprs.singleton);
        keys
    }

    /// Writes a new run and its queue entry (scheduled once the commit is durable), and
    /// registers its flow-control facts.
    pub(crate) fn create_run(
        &self,
        s: &mut Sched,
        proto: NewRun,
        f: Flow,
        now: u64,
        writes: &mut Vec<Write>,
        after: &mut AfterCommit,
    ) -> Result<String> {
        Ok(self
            .create_run_kept(s, proto, f, now, false, writes, after)?
            .0)
    }

    /// `create_run`, also returning a copy of the record when `keep` (debounce rewrites it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_run_kept(
        &self,
        s: &mut Sched,
        proto: NewRun,
        f: Flow,
        now: u64,
        keep: bool,
        writes: &mut Vec<Write>,
        after: &mut AfterCommit,
    ) -> Result<(String, Option<RunRecord>)> {
        let id = s.next_id("run", now);
        let has_flow = !f.is_default();
        let rec = RunRecord {
            id: id.clone(),
            task: proto.task,
            payload: proto.payload,
            tags: proto.tags,
            created_at: now,
            created_seq: proto.created_seq.unwrap_or(s.seq),
            ready_at: proto.ready_at,
            event: proto.event,
            parent: proto.parent,
            flow: if has_flow { Some(f.clone()) } else { None },
            kind: None,
            failure: None,
        };
        if has_flow {
            self.register_flow(s, &rec, f.clone())?;
            writes.push(Write::PutFlow {
                run: id.clone(),
                flow: f,
            });
        }
        let kept = keep.then(|| clone_record(&rec));
        self.new_run(s, rec, writes, after);
        Ok((id, kept))
    }

    /// Indexes a live run's flow facts: priority, singleton, `cancelOn`, deadlines.
    pub(crate) fn register_flow(&self, s: &mut Sched, rec: &RunRecord, f: Flow) -> Result<()> {
        if !f.cancel_on.is_empty() {
            let trigger = crate::waits::trigger_value(rec);
            s.cancels.add(&rec.id, &f.cancel_on, &trigger)?;
        }
        if let Some(k) = &f.singleton_key {
            s.flow
                .singletons
                .insert((rec.task.clone(), k.clone()), rec.id.clone());
        }
        if let Some(at) = f.start_by {
            s.deadlines.push(Reverse((at, rec.id.clone(), false)));
        }
        s.flows.insert(rec.id.clone(), Arc::new(f));
        Ok(())
    }

    /// Writes a new run and its queue entry; it is scheduled once the commit is durable.
    pub(crate) fn new_run(
        &self,
        s: &mut Sched,
        rec: RunRecord,
        writes: &mut Vec<Write>,
        after: &mut AfterCommit,
    ) {
        let seq = s.next_seq();
        let e = QueueEntry {
            ready_at: rec.ready_at,
            seq,
            id: rec.id.clone(),
            task: rec.task.clone(),
        };
        s.entries.insert(e.id.clone(), (e.ready_at, e.seq));
        s.fresh.insert(e.id.clone());
        writes.push(Write::PutRun(rec));
        writes.push(Write::Enqueue(e.clone()));
        after.new_runs.push(e);
    }

    /// A run recorded as `skipped` (rate limit, singleton skip): stored, never executed. Its
    /// outcome is known at once (a parent's `step.invoke` resolves with it).
    fn skipped_run(
        &self,
        s: &mut Sched,
        proto: NewRun,
        now: u64,
        why: &str,
        writes: &mut Vec<Write>,
        after: &mut AfterCommit,
    ) -> String {
        let id = s.next_id("run", now);
        self.retain(s, &proto.task, &id, now, writes);
        let error = serde_json::json!({ "name": "DurablyError", "code": "E_RUN_SKIPPED", "message": format!("run skipped: {why}") });
        writes.push(Write::PutRun(RunRecord {
            id: id.clone(),
            task: proto.task,
            payload: proto.payload,
            tags: proto.tags,
            created_at: now,
            created_seq: proto.created_seq.unwrap_or(s.seq),
            ready_at: now,
            event: proto.event,
            parent: proto.parent,
            flow: None,
            kind: None,
            failure: None,
        }));
        writes.push(Write::PutState {
            id: id.clone(),
            state: RunState {
                status: RunStatus::Skipped,
                attempts: 0,
                ready_at: None,
                started_at: None,
                ended_at: Some(now),
                output: None,
                error: to_raw(&error).ok(),
                entry: None,
                waits: Vec::new(),
                event_cursor: None,
            },
        });
        let out = Outcome {
            status: RunStatus::Skipped,
            output: None,
            error: to_raw(&error).ok(),
        };
        s.pending_outcomes.insert(id.clone(), out.clone());
        after.finished.push((id.clone(), out));
        id
    }

    /// Removes a run from `running`, freeing its concurrency slot (the oldest run blocked
    /// on that key moves up).
    pub(crate) fn take_running(&self, s: &mut Sched, run: &str, now: u64) -> Option<RunningRun> {
        let r = s.running.remove(run)?;
        // It left `running` with the process alive: its claim may be forgotten, and a crash
        // count it had starts again.
        if let Some(n) = s.claims.get_mut(&r.batch) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.claims.remove(&r.batch);
                s.claims_done.push(r.batch);
            }
        }
        if s.crashes.remove(run).is_some() {
            s.crashes_done.push(run.to_string());
        }
        if s.suspect_running.as_deref() == Some(run) {
            s.suspect_running = None;
            for e in std::mem::take(&mut s.suspects_held) {
                s.schedule(e, now);
            }
        }
        if let Some(slot) = &r.slot {
            if let Some(n) = s.flow.executing.get_mut(slot) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    s.flow.executing.remove(slot);
                }
            }
            let slot = slot.clone();
            self.move_up(s, &slot, now);
        }
        Some(r)
    }

    /// A slot of `key` freed: the oldest blocked run that is still live moves up (a cancelled
    /// one is skipped). It is marked, so that if it ends before it takes the slot (cancelled
    /// while ready), the next one moves up instead (a slot is never left idle).
    pub(crate) fn move_up(&self, s: &mut Sched, key: &FlowKey, now: u64) {
        let mut next = None;
        while let Some(e) = s.flow.blocked.get_mut(key).and_then(|q| q.pop_front()) {
            if s.entries.get(&e.id) == Some(&(e.ready_at, e.seq)) {
                next = Some(e);
                break;
            }
        }
        if s.flow.blocked.get(key).is_some_and(|q| q.is_empty()) {
            s.flow.blocked.remove(key);
        }
        if let Some(e) = next {
            // It was due when it was blocked: ready now, even if the wall clock has since
            // stepped back before its time (as a timer, the slot would idle until then).
            let _ = now;
            s.flow.moved_up.insert(e.id.clone(), key.clone());
            s.make_ready(e);
        }
    }

    /// Flow control at the moment a ready run would start. `Some(slot)` if it may start now
    /// (`slot`: the concurrency key it will hold); `None` if it was set aside (blocked on
    /// its concurrency key, or waiting for throttle room).
    pub(crate) fn may_start(
        &self,
        s: &mut Sched,
        e: &QueueEntry,
        now: u64,
    ) -> Option<Option<FlowKey>> {
        let (concurrency, throttle) = match s.tasks.get(&e.task) {
            Some(p) if p.concurrency.is_some() || p.throttle.is_some() => {
                (p.concurrency, p.throttle)
            }
            _ => return Some(None),
        };
        let f = s.flows.get(&e.id).cloned();
        let mut slot = None;
        if let Some(c) = concurrency {
            let key = (
                e.task.clone(),
                f.as_ref()
                    .and_then(|f| f.concurrency_key.clone())
                    .unwrap_or_default(),
            );
            if s.flow.executing.get(&key).copied().unwrap_or(0) >= c.limit as usize {
                // A run moved up for a slot that another took meanwhile keeps its place.
                let q = s.flow.blocked.entry(key).or_default();
                if s.flow.moved_up.remove(&e.id).is_some() {
                    q.push_front(e.clone());
                } else {
                    q.push_back(e.clone());
                }
                return None;
            }
            slot = Some(key);
        }
        if let Some(th) = throttle {
            if !s.flow.throttle_passed.remove(&e.id) {
                let key = (
                    e.task.clone(),
                    f.as_ref()
                        .and_then(|f| f.throttle_key.clone())
                        .unwrap_or_default(),
                );
                let cap = (th.limit + th.burst) as usize;
                let queued = s.flow.throttled.get(&key).is_some_and(|q| !q.is_empty());
                let w = s.flow.throttle_windows.entry(key.clone()).or_default();
                if queued || !w.has_room(now, th.period_ms, cap) {
                    let at = w.next_room(th.period_ms).max(now + 1);
                    s.flow
                        .throttled
                        .entry(key.clone())
                        .or_default()
                        .push_back(e.clone());
                    if !queued {
                        s.flow.throttle_timers.push(Reverse((at, key)));
                    }
                    return None;
                }
                s.flow.record(false, &key, now, th.period_ms);
            }
        }
        if let Some(k) = &slot {
            *s.flow.executing.entry(k.clone()).or_default() += 1;
        }
        s.flow.moved_up.remove(&e.id);
        Some(slot)
    }

    /// Moves throttled runs whose window has room back to ready (oldest first).
    pub(crate) fn release_throttled(&self, s: &mut Sched, now: u64) {
        while s
            .flow
            .throttle_timers
            .peek()
            .is_some_and(|Reverse((at, _))| *at <= now)
        {
            let Some(Reverse((_, key))) = s.flow.throttle_timers.pop() else {
                break;
            };
            let Some(th) = s.tasks.get(&key.0).and_then(|p| p.throttle) else {
                continue;
            };
            let cap = (th.limit + th.burst) as usize;
            loop {
                let has = s.flow.throttled.get(&key).is_some_and(|q| !q.is_empty());
                if !has {
                    s.flow.throttled.remove(&key);
                    break;
                }
                let w = s.flow.throttle_windows.entry(key.clone()).or_default();
                if !w.has_room(now, th.period_ms, cap) {
                    let at = w.next_room(th.period_ms).max(now + 1);
                    s.flow.throttle_timers.push(Reverse((at, key.clone())));
                    break;
                }
                let Some(e) = s.flow.throttled.get_mut(&key).and_then(|q| q.pop_front()) else {
                    break;
                };
                if s.entries.get(&e.id) != Some(&(e.ready_at, e.seq)) {
                    continue; // cancelled while it waited: it takes no room
                }
                s.flow.record(false, &key, now, th.period_ms); // its start
                s.flow.throttle_passed.insert(e.id.clone());
                s.schedule(e, now);
            }
        }
    }

    /// The soonest time flow control or a deadline needs the scheduler.
    pub(crate) fn next_control_wake(s: &Sched) -> Option<u64> {
        let a = s.flow.throttle_timers.peek().map(|Reverse((at, _))| *at);
        let b = s.deadlines.peek().map(|Reverse((at, _, _))| *at);
        let c = s.schedule_timers.peek().map(|Reverse((at, _))| *at);
        [a, b, c].into_iter().flatten().min()
    }

    /// Applies due `timeout.start` / `timeout.finish` deadlines.
    pub(crate) fn run_deadlines(
        &self,
        s: &mut Sched,
        store: &dyn Store,
        now: u64,
        writes: &mut Vec<Write>,
        after: &mut AfterCommit,
    ) -> Result<()> {
        while s
            .deadlines
            .peek()
            .is_some_and(|Reverse((at, _, _))| *at <= now)
        {
            let Some(Reverse((_, run, finish))) = s.deadlines.pop() else {
                break;
            };
            if !s.flows.contains_key(&run) {
                continue; // ended already
            }
            if finish {
                let error = serde_json::json!({ "name": "DurablyError", "code": "E_TIMEOUT", "message": "the run did not finish within its timeout.finish" });
                self.end_locked(
                    s,
                    store,
                    &run,
                    RunStatus::Failed,
                    to_raw(&error)?,
                    now,
                    writes,
                    after,
                )?;
            } else {
                let started = s.running.contains_key(&run)
                    || s.waiting.contains_key(&run)
                    || (!s.fresh.contains(&run)
                        && store
                            .run(&run)?
                            .and_then(|(_, st)| st)
                            .and_then(|st| st.started_at)
                            .is_some());
                if !started {
                    self.cancel_locked(
                        s,
                        store,
                        &run,
                        "it did not start within its timeout.start (ttl)",
                        now,
                        writes,
                        after,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Cancels a run that has not ended. False if it had ended (or does not exist).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn cancel_locked(
        &self,
        s: &mut Sched,
        store: &dyn Store,
        run: &str,
        why: &str,
        now: u64,
        writes: &mut Vec<Write>,
        after: &mut AfterCommit,
    ) -> Result<bool> {
        let error = serde_json::json!({ "name": "DurablyError", "code": "E_RUN_CANCELLED", "message": format!("run {run} was cancelled: {why}") });
        self.end_locked(
            s,
            store,
            run,
            RunStatus::Cancelled,
            to_raw(&error)?,
            now,
            writes,
            after,
        )
    }

    /// Ends a run that has not ended — running, waiting, queued or delayed — as cancelled or
    /// failed (deadlines). A running run is also reported to the executor to abort.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn end_locked(
        &self,
        s: &mut Sched,
        store: &dyn Store,
        run: &str,
        status: RunStatus,
        error: Json,
        now: u64,
        writes: &mut Vec<Write>,
        after: &mut AfterCommit,
    ) -> Result<bool> {
        let input = if status == RunStatus::Cancelled {
            Input::Cancel
        } else {
            Input::Fail
        };
        let mut waits = None;
        let (from, task, entry, attempts, started_at) =
            if let Some(r) = self.take_running(s, run, now) {
                s.abort.push(run.to_string());
                (
                    RunStatus::Running,
                    r.task,
                    Some(r.entry),
                    r.attempt,
                    Some(r.started_at),
                )
            } else if let Some(w) = s.waiting.remove(run) {
                s.index.remove(run, &w.specs);
                writes.push(Write::DelWaiting {
                    run: run.to_string(),
                });
                s.entries.remove(run);
                waits = Some(w.specs);
                (RunStatus::Waiting, w.task, w.entry, w.attempt, w.started_at)
            } else if let Some(entry) = s.entries.remove(run) {
                let state = store.run(run)?;
                let (task, st) = match state {
                    Some((rec, st)) => (rec.task, st),
                    None => (String::new(), None),
                };
                let from = st.as_ref().map(|st| st.status).unwrap_or(RunStatus::Queued);
                let from = if from == RunStatus::Delayed || from == RunStatus::Waiting {
                    from
                } else {
                    RunStatus::Queued
                };
                (
                    from,
                    task,
                    Some(entry),
                    st.as_ref().map(|st| st.attempts).unwrap_or(0),
                    st.and_then(|st| st.started_at),
                )
            } else if let Some((task, from, entry, attempts, started_at)) =
                self.spilled_run(s, store, run)?
            {
                s.spilled = s.spilled.saturating_sub(1);
                (from, task, Some(entry), attempts, started_at)
            } else {
                return Ok(false);
            };
        // A run moved up for a freed slot that ends before taking it passes the slot on.
        if let Some(key) = s.flow.moved_up.remove(run) {
            self.move_up(s, &key, now);
        }
        // Cancel is legal from every live state; a deadline failure of a run that is not
        // running goes through `running` in the table, so check it as such.
        let check_from = if input == Input::Fail {
            RunStatus::Running
        } else {
            from
        };
        transition(check_from, input)?;
        if let Some((at, seq)) = entry {
            writes.push(Write::Dequeue { ready_at: at, seq });
        }
        // Its waits go with it: no step of an ended run stays `waiting` (a child run's step
        // stays, naming the child). Parked in memory, its waits are exactly those. Otherwise
        // (asleep beyond the window, recovered after a restart, handed back) the stored state
        // may list waits that have since resolved — by a wake whose commit is still pending,
        // or by the executor storing a deadline's result — whose results must stay: only the
        // steps the store still has as `waiting` go, and none while a wake is pending.
        let keys: Vec<String> = match waits {
            Some(w) => w
                .iter()
                .filter(|w| !matches!(w, crate::model::WaitSpec::Child { .. }))
                .map(|w| w.key().to_string())
                .collect(),
            None if from == RunStatus::Waiting && !s.pending_wakes.contains(run) => {
                let listed: Vec<String> = store
                    .run(run)?
                    .and_then(|(_, st)| st)
                    .map(|st| st.waits)
                    .unwrap_or_default()
                    .iter()
                    .filter(|w| !matches!(w, crate::model::WaitSpec::Child { .. }))
                    .map(|w| w.key().to_string())
                    .collect();
                if listed.is_empty() {
                    Vec::new()
                } else {
                    store
                        .steps(run)?
                        .into_iter()
                        .filter(|(k, st)| st.status == StepStatus::Waiting && listed.contains(k))
                        .map(|(k, _)| k)
                        .collect()
                }
            }
            // Running again after a wait's deadline passed: the executor has not stored that
            // wait's null result yet, so its step is still stored `waiting` (past its time).
            None if from == RunStatus::Running && !s.pending_wakes.contains(run) => store
                .steps(run)?
                .into_iter()
                .filter(|(_, st)| st.status == StepStatus::Waiting && st.child.is_none())
                .map(|(k, _)| k)
                .collect(),
            None => Vec::new(),
        };
        for key in keys {
            writes.push(Write::DelStep {
                run: run.to_string(),
                key,
            });
        }
        writes.push(Write::PutState {
            id: run.to_string(),
            state: RunState {
                status,
                attempts,
                ready_at: None,
                started_at,
                ended_at: Some(now),
                output: None,
                error: Some(error.clone()),
                entry: None,
                waits: Vec::new(),
                event_cursor: None,
            },
        });
        let out = Outcome {
            status,
            output: None,
            error: Some(error),
        };
        let parent = store.run_record(run)?.and_then(|r| r.parent);
        self.after_end(s, run, &task, parent.as_ref(), &out, now, writes);
        self.retain(s, &task, run, now, writes);
        after.finished.push((run.to_string(), out));
        Ok(true)
    }

    /// A live run that the scheduler keeps only in the store (its timer spilled, see
    /// `Sched::spill_after`): its task, state, queue entry, attempts and start.
    #[allow(clippy::type_complexity)]
    fn spilled_run(
        &self,
        s: &Sched,
        store: &dyn Store,
        run: &str,
    ) -> Result<Option<(String, RunStatus, (u64, u64), u32, Option<u64>)>> {
        let Some(after) = s.spill_after else {
            return Ok(None); // nothing is spilled
        };
        if s.pending_outcomes.contains_key(run) {
            return Ok(None);
        }
        let Some((rec, st)) = store.run(run)? else {
            return Ok(None);
        };
        let entry = match &st {
            Some(st) if !st.status.is_terminal() => st.entry,
            Some(_) => None,
            // Never changed since its (delayed) trigger: its entry is at its `ready_at`.
            None => {
                let mut after = (rec.ready_at, 0);
                let mut found = None;
                'pages: loop {
                    let page = store.queue_after(Some(after), 1024)?;
                    let Some(last) = page.last() else { break };
                    after = (last.ready_at, last.seq);
                    for e in page {
                        if e.ready_at > rec.ready_at {
                            break 'pages;
                        }
                        if e.id == run {
                            found = Some((e.ready_at, e.seq));
                            break 'pages;
                        }
                    }
                }
                found
            }
        };
        // Spilled entries sort after `spill_after`; anything else is in memory or stale.
        let Some(entry) = entry.filter(|e| *e > after) else {
            return Ok(None);
        };
        let from = match st.as_ref().map(|st| st.status) {
            Some(s @ (RunStatus::Delayed | RunStatus::Waiting)) => s,
            _ => RunStatus::Queued,
        };
        let attempts = st.as_ref().map(|st| st.attempts).unwrap_or(0);
        Ok(Some((
            rec.task,
            from,
            entry,
            attempts,
            st.and_then(|st| st.started_at),
        )))
    }

    /// Bookkeeping when a run ends: flow facts, singleton and debounce keys, `cancelOn`,
    /// and the parent's `step.invoke`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn after_end(
        &self,
        s: &mut Sched,
        run: &str,
        task: &str,
        parent: Option<&ParentRef>,
        out: &Outcome,
        now: u64,
        writes: &mut Vec<Write>,
    ) {
        s.fresh.remove(run);
        s.flow.throttle_passed.remove(run);
        if let Some(f) = s.flows.remove(run) {
            writes.push(Write::DelFlow {
                run: run.to_string(),
            });
            s.cancels.remove(run, &f.cancel_on);
            if let Some(k) = &f.debounce_key {
                let key = (task.to_string(), k.clone());
                if s.flow.debounced.get(&key).is_some_and(|d| d.run == run) {
                    s.flow.debounced.remove(&key);
                }
            }
            if let Some(k) = &f.singleton_key {
                let key = (task.to_string(), k.clone());
                if s.flow.singletons.get(&key).is_some_and(|r| r == run) {
                    s.flow.singletons.remove(&key);
                }
            }
        }
        // (The debounce key, from the flow facts above: no scan of every pending key.)
        if let Some(p) = parent {
            let step = crate::engine::child_step(run, task, out, now);
            if !self.wake(s, &p.run, &p.key, step.clone(), None, now, writes) {
                writes.push(Write::PutStep {
                    run: p.run.clone(),
                    key: p.key.clone(),
                    step,
                });
            }
        }
        // Until its commit applies, the store still shows the run live: lookups (a child's
        // outcome, a second cancel, a page-in of its spilled timer) consult this first.
        s.pending_outcomes.insert(run.to_string(), out.clone());
    }

    /// Starts the `onFailure` run of a task after a run failed for good.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_on_failure(
        &self,
        s: &mut Sched,
        store: &dyn Store,
        run: &str,
        error: &Json,
        now: u64,
        writes: &mut Vec<Write>,
        after: &mut AfterCommit,
    ) -> Result<()> {
        let Some(rec) = store.run_record(run)? else {
            return Ok(());
        };
        if rec.kind.is_some() || !s.tasks.get(&rec.task).is_some_and(|p| p.on_failure) {
            return Ok(());
        }
        let failure = serde_json::json!({ "runId": run, "error": serde_json::from_str::<serde_json::Value>(error.get()).unwrap_or_default() });
        let id = s.next_id("run", now);
        let rec = RunRecord {
            id,
            task: rec.task,
            payload: rec.payload,
            tags: rec.tags,
            created_at: now,
            created_seq: s.seq,
            ready_at: now,
            event: rec.event,
            parent: None,
            flow: None,
            kind: Some("onFailure".into()),
            failure: Some(to_raw(&failure)?),
        };
        self.new_run(s, rec, writes, after);
        Ok(())
    }

    /// Cancels a run: it stops at its next step (its `ctx.signal` aborts), its waits are
    /// removed and its status is `cancelled`. False if it had already ended.
    pub async fn cancel(&self, id: &str) -> Result<bool> {
        self.check_open()?;
        let now = self.inner.clock.now_ms();
        let mut writes = Vec::new();
        let mut after = AfterCommit::default();
        let done = {
            let store = self.store()?;
            let mut s = self.sched()?;
            if store.run(id)?.is_none() && !s.entries.contains_key(id) {
                return Err(Error::RunNotFound { id: id.to_string() });
            }
            let done = match self.cancel_locked(
                &mut s,
                &*store,
                id,
                "runs.cancel() was called",
                now,
                &mut writes,
                &mut after,
            ) {
                Ok(done) => done,
                Err(e) => {
                    drop(s);
                    self.fail_stop(&e);
                    return Err(e);
                }
            };
            s.drain_deferred(&mut writes, &mut after);
            done
        };
        self.notify_work();
        // Even with nothing to write (the run had ended): the end it saw may be in a commit
        // not yet durable; "it had ended" is answered once that end is.
        self.commit_after(writes, after).await?;
        Ok(done)
    }

    /// Starts a new run of the same task with the same payload and tags; returns its id.
    pub async fn replay(&self, id: &str) -> Result<String> {
        self.check_open()?;
        let now = self.inner.clock.now_ms();
        let mut writes = Vec::new();
        let mut after = AfterCommit::default();
        let new_id = {
            let store = self.store()?;
            let mut s = self.sched()?;
            let rec = store
                .run_record(id)?
                .ok_or_else(|| Error::RunNotFound { id: id.to_string() })?;
            if !s.tasks.contains_key(&rec.task) {
                return Err(Error::UnknownTask { task: rec.task });
            }
            let mut f = rec.flow.clone().unwrap_or_default();
            f.start_by = None;
            f.debounce_key = None; // a replay is its own run, not part of a burst
            f.debounce_first = None;
            let policy = s.tasks.get(&rec.task).cloned().unwrap_or_default();
            let keys = FlowKeys {
                singleton_key: f.singleton_key.clone(),
                ..FlowKeys::default()
            };
            let proto = NewRun {
                task: rec.task,
                payload: rec.payload,
                tags: rec.tags,
                ready_at: now,
                event: rec.event,
                parent: None,
                created_seq: None,
            };
            // A replay obeys `singleton` like a trigger: skipped while another run of its key
            // is active (or that run is cancelled, in `cancel` mode).
            let decided = self
                .singleton_gate(
                    &mut s,
                    &*store,
                    &policy,
                    proto,
                    &keys,
                    now,
                    &mut writes,
                    &mut after,
                )
                .and_then(|gate| match gate {
                    Ok(proto) => self.create_run(&mut s, proto, f, now, &mut writes, &mut after),
                    Err(skipped) => Ok(skipped),
                });
            match decided {
                Ok(id) => id,
                Err(e) => {
                    drop(s);
                    self.fail_stop(&e);
                    return Err(e);
                }
            }
        };
        self.notify_work();
        self.commit_after(writes, after).await?;
        Ok(new_id)
    }

    /// Re-opens a failed run: its failed steps run again (with fresh attempts), completed
    /// steps keep their results.
    pub async fn retry(&self, id: &str) -> Result<()> {
        self.check_open()?;
        let now = self.inner.clock.now_ms();
        let mut writes = Vec::new();
        let mut after = AfterCommit::default();
        {
            let store = self.store()?;
            let mut s = self.sched()?;
            let (rec, state) = store
                .run(id)?
                .ok_or_else(|| Error::RunNotFound { id: id.to_string() })?;
            let status = state
                .as_ref()
                .map(|s| s.status)
                .unwrap_or(RunStatus::Queued);
            if status != RunStatus::Failed {
                return Err(Error::bad_option(
                    "runs.retry",
                    format!(
                        "only a failed run can be retried; run {id} is {}",
                        status.as_str()
                    ),
                ));
            }
            transition(RunStatus::Failed, Input::Reopen)?;
            for (key, step) in store.steps(id)? {
                if matches!(step.status, StepStatus::Failed | StepStatus::Retrying) {
                    writes.push(Write::DelStep {
                        run: id.to_string(),
                        key,
                    });
                }
            }
            let e = s.enqueue(id, &rec.task, now);
            writes.push(Write::Enqueue(e.clone()));
            writes.push(Write::PutState {
                id: id.to_string(),
                state: RunState {
                    status: RunStatus::Queued,
                    attempts: 1,
                    ready_at: Some(now),
                    // A manual retry starts a fresh `timeout.finish` budget.
                    started_at: None,
                    ended_at: None,
                    output: None,
                    error: None,
                    entry: Some((e.ready_at, e.seq)),
                    waits: Vec::new(),
                    event_cursor: None,
                },
            });
            if let Some(mut f) = rec.flow.clone() {
                f.start_by = None;
                self.register_flow(&mut s, &rec, f.clone())?;
                writes.push(Write::PutFlow {
                    run: id.to_string(),
                    flow: f,
                });
            }
            s.drain_deferred(&mut writes, &mut after);
        }
        self.notify_work();
        self.commit_after(writes, after).await
    }
}

fn clone_record(r: &RunRecord) -> RunRecord {
    RunRecord {
        id: r.id.clone(),
        task: r.task.clone(),
        payload: r.payload.clone(),
        tags: r.tags.clone(),
        created_at: r.created_at,
        created_seq: r.created_seq,
        ready_at: r.ready_at,
        event: r.event.clone(),
        parent: r.parent.clone(),
        flow: r.flow.clone(),
        kind: r.kind.clone(),
        failure: r.failure.clone(),
    }
}
