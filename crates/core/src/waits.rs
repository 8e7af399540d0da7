//! The wait indexes: how an event, a token or a finished child run finds the runs parked
//! on it without scanning every wait.
//!
//! Event waits are indexed by `name → match path → match value → waits`: an incoming event
//! is looked up once per distinct match path registered for its name (usually one), then
//! each candidate's `if` (already bound to the waiting run's trigger event) is evaluated.
//! The index lives in memory and is rebuilt on open from the runs marked waiting (`w/`).

use crate::engine::Sched;
use crate::error::{Error, Result};
use crate::expr::{self, Expr};
use crate::model::{EventRecord, Json, RunRecord, RunState, WaitSpec};
use crate::store::Store;
use serde_json::Value;
use std::collections::HashMap;

/// A run parked on waits.
#[derive(Debug, Clone)]
pub struct WaitingRun {
    pub task: String,
    pub entry: Option<(u64, u64)>,
    pub specs: Vec<WaitSpec>,
    pub attempt: u32,
    pub started_at: Option<u64>,
    pub event_cursor: Option<u64>,
}

impl WaitingRun {
    pub fn from_state(task: String, st: &RunState) -> Self {
        WaitingRun {
            task,
            entry: st.entry,
            specs: st.waits.clone(),
            attempt: st.attempts,
            started_at: st.started_at,
            event_cursor: st.event_cursor,
        }
    }
    /// Whether anything but a timer can resume it (then it is marked in `w/`).
    pub fn indexed(&self) -> bool {
        self.specs
            .iter()
            .any(|s| !matches!(s, WaitSpec::Sleep { .. }))
    }
}

#[derive(Debug, Clone)]
struct EventWait {
    run: String,
    key: String,
    cond: Option<Expr>,
    after: u64,
}

#[derive(Default)]
pub struct WaitIndex {
    events: HashMap<String, HashMap<String, HashMap<String, Vec<EventWait>>>>,
    /// token → (run, key)
    pub tokens: HashMap<String, (String, String)>,
}

impl WaitIndex {
    pub fn add(&mut self, run: &str, specs: &[WaitSpec], trigger: &Value) -> Result<()> {
        for spec in specs {
            match spec {
                WaitSpec::Event {
                    key,
                    events,
                    path,
                    value,
                    if_expr,
                    after,
                    ..
                } => {
                    let cond = match if_expr {
                        Some(src) => {
                            Some(expr::parse("waitForEvent.if", src)?.bind("event", trigger))
                        }
                        None => None,
                    };
                    for name in events {
                        self.events
                            .entry(name.clone())
                            .or_default()
                            .entry(path.clone())
                            .or_default()
                            .entry(canonical_text(value))
                            .or_default()
                            .push(EventWait {
                                run: run.to_string(),
                                key: key.clone(),
                                cond: cond.clone(),
                                after: after.unwrap_or(0),
                            });
                    }
                }
                WaitSpec::Token { key, token, .. } => {
                    self.tokens
                        .insert(token.clone(), (run.to_string(), key.clone()));
                }
                WaitSpec::Sleep { .. } | WaitSpec::Child { .. } => {}
            }
        }
        Ok(())
    }

    pub fn remove(&mut self, run: &str, specs: &[WaitSpec]) {
        for spec in specs {
            match spec {
                WaitSpec::Event {
                    events,
                    path,
                    value,
                    ..
                } => {
                    for name in events {
                        let Some(paths) = self.events.get_mut(name) else {
                            continue;
                        };
                        if let Some(values) = paths.get_mut(path) {
                            let v = canonical_text(value);
                            if let Some(list) = values.get_mut(&v) {
                                list.retain(|w| w.run != run);
                                if list.is_empty() {
                                    values.remove(&v);
                                }
                            }
                            if values.is_empty() {
                                paths.remove(path);
                            }
                        }
                        if paths.is_empty() {
                            self.events.remove(name);
                        }
                    }
                }
                WaitSpec::Token { token, .. } => {
                    if self.tokens.get(token).is_some_and(|(r, _)| r == run) {
                        self.tokens.remove(token);
                    }
                }
                WaitSpec::Sleep { .. } | WaitSpec::Child { .. } => {}
            }
        }
    }

    /// The (run, key) of every wait the event resumes, in registration order.
    pub fn matches(&self, name: &str, event: &Value, at: u64) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let Some(paths) = self.events.get(name) else {
            return out;
        };
        for (path, values) in paths {
            let v = if path.is_empty() {
                String::new()
            } else {
                canonical(lookup_path(event, path))
            };
            let Some(list) = values.get(&v) else { continue };
            for w in list {
                if at > w.after
                    && w.cond
                        .as_ref()
                        .is_none_or(|c| expr::eval(c, &[("async", event)]))
                {
                    out.push((w.run.clone(), w.key.clone()));
                }
            }
        }
        out
    }

    /// Whether any wait listens for events named `name`.
    pub fn listens(&self, name: &str) -> bool {
        self.events.contains_key(name)
    }
}

fn lookup_path<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    let parts: Vec<&str> = path.split('.').collect();
    expr::lookup(v, &parts)
}

/// The canonical JSON text of a match value (`null` when absent): equal values, equal text.
pub fn canonical(v: Option<&Value>) -> String {
    v.map(|v| serde_json::to_string(v).unwrap_or_default())
        .unwrap_or_else(|| "null".into())
}

/// Re-canonicalizes a match value given as JSON text (empty: no match path).
pub fn canonical_text(text: &str) -> String {
    if text.is_empty() {
        return String::new();
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => canonical(Some(&v)),
        Err(_) => text.to_string(),
    }
}

/// The event as user code sees it: `{ id, name, data, ts }`.
pub fn event_json(e: &EventRecord) -> Result<Json> {
    let text = format!(
        "{{\"id\":{},\"name\":{},\"data\":{},\"ts\":{}}}",
        serde_json::to_string(&e.id).unwrap_or_default(),
        serde_json::to_string(&e.name).unwrap_or_default(),
        e.data.get(),
        e.ts
    );
    serde_json::value::RawValue::from_string(text)
        .map_err(|e| Error::Internal(format!("event json: {e}")))
}

pub fn event_value(e: &EventRecord) -> Value {
    let data: Value = serde_json::from_str(e.data.get()).unwrap_or(Value::Null);
    serde_json::json!({ "id": e.id, "name": e.name, "data": data, "ts": e.ts })
}

/// The waiting run's own event, for `match` and `if`: its trigger event, or `{ data: payload }`
/// for a run triggered directly.
pub fn trigger_value(rec: &RunRecord) -> Value {
    match &rec.event {
        Some(e) => serde_json::from_str(e.get()).unwrap_or(Value::Null),
        None => {
            let data: Value = serde_json::from_str(rec.payload.get()).unwrap_or(Value::Null);
            serde_json::json!({ "data": data })
        }
    }
}

/// What a wait's event must meet: a `match` (a scalar under `path` whose canonical text is
/// `value`; empty path: none) and a bound `if`.
pub(crate) struct Matcher<'a> {
    pub path: &'a str,
    pub value: &'a str,
    pub cond: Option<&'a Expr>,
    /// The (path, canonical value) to look up in the value index, if it answers for this wait:
    /// the `match`, or an equality the `if` requires (`Expr::required_equality`).
    index: Option<(String, String)>,
}

impl<'a> Matcher<'a> {
    pub fn new(path: &'a str, value: &'a str, cond: Option<&'a Expr>) -> Self {
        let index = if path.is_empty() {
            cond.and_then(|c| c.required_equality("async"))
                .map(|(p, v)| (p, canonical(Some(&v))))
        } else {
            Some((path.to_string(), value.to_string()))
        }
        .filter(|(p, v)| crate::store::index::indexable(p, v));
        Matcher {
            path,
            value,
            cond,
            index,
        }
    }

    /// Whether finding its early event means reading events in order (no index answers).
    pub fn scans(&self) -> bool {
        self.index.is_none()
    }

    pub fn ok(&self, e: &EventRecord) -> bool {
        let v = event_value(e);
        let pv = if self.path.is_empty() {
            String::new()
        } else {
            canonical(lookup_path(&v, self.path))
        };
        pv == self.value && self.cond.is_none_or(|c| expr::eval(c, &[("async", &v)]))
    }

    /// The first stored event named one of `names` with `after < seq <= upto` that matches.
    fn first_stored(
        &self,
        store: &dyn Store,
        names: &[String],
        after: u64,
        upto: u64,
    ) -> Result<Option<EventRecord>> {
        let mut best: Option<EventRecord> = None;
        let mut keep = |e: Option<EventRecord>| {
            if let Some(e) = e {
                if best.as_ref().is_none_or(|b| e.seq < b.seq) {
                    best = Some(e);
                }
            }
        };
        for name in names {
            let first = |e: EventRecord, found: &mut Option<EventRecord>| {
                if e.seq > upto {
                    return false;
                }
                if e.name == *name && self.ok(&e) {
                    *found = Some(e);
                    return false;
                }
                true
            };
            let mut found = None;
            match &self.index {
                Some((path, value)) => {
                    store.events_with_value(name, path, value, after, &mut |e| {
                        first(e, &mut found)
                    })?;
                    let mut partial = None;
                    store.events_partly_indexed(name, after, &mut |e| first(e, &mut partial))?;
                    keep(partial);
                }
                None => store.events_after(name, after, &mut |e| first(e, &mut found))?,
            }
            keep(found);
        }
        Ok(best)
    }
}

/// The first event (oldest) named one of `names`, with a sequence number after `after`,
/// that matches: the race-free "the event may come before the wait" of DESIGN §3.4. A wait
/// with a `match` on a scalar under `data`, or an `if` that requires one to equal a string
/// (`Expr::required_equality`), looks it up in the value index; others read the events of
/// their names in order until one matches — under the scheduler lock only from where
/// `prescan` stopped reading without it.
pub(crate) fn find_event(
    s: &Sched,
    store: &dyn Store,
    names: &[String],
    m: &Matcher,
    after: u64,
) -> Result<Option<EventRecord>> {
    let mut best = m.first_stored(store, names, after, u64::MAX)?;
    for e in s.pending_events.values() {
        if names.contains(&e.name)
            && e.seq > after
            && best.as_ref().is_none_or(|b| e.seq < b.seq)
            && m.ok(e)
        {
            best = Some(e.clone());
        }
    }
    Ok(best)
}

/// The part of a wait's look-back read before the scheduler lock is taken: the first
/// matching event with `after < seq <= upto`, where every event up to `upto` was on disk
/// when the read began. Under the lock, `park` reads only past `upto`.
pub(crate) struct Prescan {
    pub after: u64,
    pub upto: u64,
    pub found: Option<EventRecord>,
}

/// An event wait whose look-back no index answers, to read before the lock (`prescan`).
pub(crate) struct ScanPlan {
    pub run: String,
    key: String,
    events: Vec<String>,
    path: String,
    value: String,
    cond: Expr,
    created_seq: u64,
}

impl crate::engine::Engine {
    /// The event waits in `ops` whose look-back no index answers: an `if` such as
    /// `async.data.amount > 100` reads the name's events in order (behind 100k events that
    /// held the scheduler lock for ~5 s). Cheap: a run record and a parse per event wait.
    pub(crate) fn plan_scans(&self, ops: &[crate::engine::Op]) -> Vec<ScanPlan> {
        let mut out = Vec::new();
        let Ok(store) = self.store() else { return out };
        for op in ops {
            let crate::engine::Op::Wait { run, waits } = op else {
                continue;
            };
            for w in waits {
                let crate::engine::WaitReq::Spec(WaitSpec::Event {
                    key,
                    events,
                    path,
                    value,
                    if_expr: Some(src),
                    since_run_start: true,
                    ..
                }) = w
                else {
                    continue;
                };
                let Ok(Some((rec, _))) = store.run(run) else {
                    continue;
                };
                let Ok(cond) = expr::parse("waitForEvent.if", src) else {
                    continue;
                };
                let cond = cond.bind("event", &trigger_value(&rec));
                let value = canonical_text(value);
                if Matcher::new(path, &value, Some(&cond)).scans() {
                    out.push(ScanPlan {
                        run: run.clone(),
                        key: key.clone(),
                        events: events.clone(),
                        path: path.clone(),
                        value,
                        cond,
                        created_seq: rec.created_seq,
                    });
                }
            }
        }
        out
    }

    /// Reads the planned look-backs without the scheduler lock (taken only briefly, for the
    /// runs' cursors and the newest sequence number below which every event is on disk: an
    /// event leaves `pending_events` once durable). Keyed by (run, wait key). Best effort:
    /// whatever it cannot prepare, `park` reads under the lock.
    pub(crate) fn prescan(&self, plans: Vec<ScanPlan>) -> HashMap<(String, String), Prescan> {
        let mut out = HashMap::new();
        let Ok(store) = self.store() else { return out };
        let (cursors, upto) = {
            let Ok(s) = self.sched() else { return out };
            let oldest_pending = s.pending_events.values().map(|e| e.seq).min();
            let upto = oldest_pending.map_or(s.seq, |p| p.saturating_sub(1).min(s.seq));
            let cursors: Vec<Option<Option<u64>>> = plans
                .iter()
                .map(|p| s.running.get(&p.run).map(|r| r.event_cursor))
                .collect();
            (cursors, upto)
        };
        for (p, cursor) in plans.into_iter().zip(cursors) {
            let Some(cursor) = cursor else { continue };
            let after = cursor.unwrap_or(0).max(p.created_seq);
            let m = Matcher::new(&p.path, &p.value, Some(&p.cond));
            if let Ok(found) = m.first_stored(&*store, &p.events, after, upto) {
                out.insert((p.run, p.key), Prescan { after, upto, found });
            }
        }
        out
    }
}

impl crate::engine::Engine {
    /// Checks events before anything is ingested: names, ids, data, and the flow keys JS
    /// computed for the tasks they start.
    pub(crate) fn check_events(&self, events: &[crate::engine::EventIn]) -> Result<()> {
        for ev in events {
            crate::limits::check_name("name", "an event name (like 'user/signed-up')", &ev.name)?;
            if let Some(id) = &ev.id {
                crate::limits::check_name("id", "an event id", id)?;
            }
            if let Some(d) = &ev.data {
                self.check_size("the event data", d)?;
            }
            for keys in ev.keys.values() {
                keys.check()?;
            }
        }
        Ok(())
    }

    /// Persists events (all or none are valid), deduplicated by id; starts a run per
    /// subscribed task and resumes the matching waits. Returns the event ids in order.
    pub(crate) fn ingest(
        &self,
        s: &mut Sched,
        store: &dyn Store,
        events: Vec<crate::engine::EventIn>,
        now: u64,
        writes: &mut Vec<crate::store::Write>,
        after: &mut crate::engine::AfterCommit,
    ) -> Result<Vec<String>> {
        use crate::engine::{completed_step, json_null, NewRun};
        use crate::store::Write;
        self.check_events(&events)?;
        let mut ids = Vec::with_capacity(events.len());
        for ev in events {
            let keys = ev.keys;
            let (id, given) = match ev.id {
                Some(id) => (id, true),
                None => (s.next_id("evt", now), false),
            };
            // A generated id is new; a given one may repeat (that is the dedup contract).
            let dup = given && (s.pending_events.contains_key(&id) || store.event(&id)?.is_some());
            if dup {
                ids.push(id);
                continue;
            }
            let seq = s.next_seq();
            let rec = EventRecord {
                id: id.clone(),
                name: ev.name,
                data: ev.data.unwrap_or_else(json_null),
                ts: ev.ts.unwrap_or(now),
                seq,
            };
            // Matching orders events by their sequence number, never by a wall clock.
            let at = seq;
            let json = event_json(&rec)?;
            let subs = s.subs.get(&rec.name).cloned().unwrap_or_default();
            let listens = s.index.listens(&rec.name);
            let cancels = s.cancels.listens(&rec.name);
            if !subs.is_empty() || listens || cancels {
                let needs_value = listens || cancels || subs.iter().any(|(_, c)| c.is_some());
                let value = if needs_value {
                    event_value(&rec)
                } else {
                    Value::Null
                };
                if cancels {
                    for run in s.cancels.matches(&rec.name, &value, now) {
                        let why =
                            format!("event \"{}\" ({}) matched its cancelOn", rec.name, rec.id);
                        self.cancel_locked(s, store, &run, &why, now, writes, after)?;
                    }
                }
                for (task, cond) in subs {
                    if cond
                        .as_ref()
                        .is_some_and(|c| !expr::eval(c, &[("event", &value)]))
                    {
                        continue;
                    }
                    let keys = keys.get(&task).cloned().unwrap_or_default();
                    let proto = NewRun {
                        task,
                        payload: rec.data.clone(),
                        tags: Vec::new(),
                        ready_at: now,
                        event: Some(json.clone()),
                        parent: None,
                        // Its waits see its own event and everything after it.
                        created_seq: Some(seq.saturating_sub(1)),
                    };
                    self.admit(s, store, proto, keys, now, writes, after)?;
                }
                if listens {
                    // Group by run: one event may answer several parallel waits of a run.
                    let mut by_run: Vec<(String, Vec<(String, crate::model::StepRecord)>)> =
                        Vec::new();
                    for (run, key) in s.index.matches(&rec.name, &value, at) {
                        let step = completed_step(json.clone(), now);
                        match by_run.iter_mut().find(|(r, _)| *r == run) {
                            Some((_, steps)) => steps.push((key, step)),
                            None => by_run.push((run, vec![(key, step)])),
                        }
                    }
                    for (run, steps) in by_run {
                        self.wake_many(s, &run, steps, Some(at), now, writes);
                    }
                }
            }
            writes.push(Write::PutEvent(rec.clone()));
            s.pending_events.insert(id.clone(), rec);
            after.events.push(id.clone());
            ids.push(id);
        }
        Ok(ids)
    }
}

/// `cancelOn` subscriptions of runs that have not ended, indexed like event waits:
/// name → match path → match value → runs (with their bound `if` and expiry).
/// A run's cancelOn subscription: (run, bound `if`, expiry).
type CancelSub = (String, Option<Expr>, Option<u64>);

#[derive(Default)]
pub struct CancelIndex {
    by_name: HashMap<String, HashMap<String, HashMap<String, Vec<CancelSub>>>>,
}

impl CancelIndex {
    pub fn add(
        &mut self,
        run: &str,
        specs: &[crate::flow::CancelOn],
        trigger: &Value,
    ) -> Result<()> {
        for c in specs {
            let cond = match &c.if_expr {
                Some(src) => Some(expr::parse("cancelOn.if", src)?.bind("event", trigger)),
                None => None,
            };
            self.by_name
                .entry(c.event.clone())
                .or_default()
                .entry(c.path.clone())
                .or_default()
                .entry(canonical_text(&c.value))
                .or_default()
                .push((run.to_string(), cond, c.until));
        }
        Ok(())
    }

    pub fn remove(&mut self, run: &str, specs: &[crate::flow::CancelOn]) {
        for c in specs {
            let Some(paths) = self.by_name.get_mut(&c.event) else {
                continue;
            };
            if let Some(values) = paths.get_mut(&c.path) {
                let v = canonical_text(&c.value);
                if let Some(list) = values.get_mut(&v) {
                    list.retain(|(r, _, _)| r != run);
                    if list.is_empty() {
                        values.remove(&v);
                    }
                }
                if values.is_empty() {
                    paths.remove(&c.path);
                }
            }
            if paths.is_empty() {
                self.by_name.remove(&c.event);
            }
        }
    }

    pub fn listens(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The runs this event cancels.
    pub fn matches(&self, name: &str, event: &Value, now: u64) -> Vec<String> {
        let mut out = Vec::new();
        let Some(paths) = self.by_name.get(name) else {
            return out;
        };
        for (path, values) in paths {
            let v = if path.is_empty() {
                String::new()
            } else {
                canonical(lookup_path(event, path))
            };
            let Some(list) = values.get(&v) else { continue };
            for (run, cond, until) in list {
                if until.is_none_or(|u| now < u)
                    && cond
                        .as_ref()
                        .is_none_or(|c| expr::eval(c, &[("async", event)]))
                {
                    out.push(run.clone());
                }
            }
        }
        out
    }
}
