//! Schedules: cron patterns with an IANA time zone (DESIGN §3.6). A static schedule comes
//! from a task's `schedule` option (id `task:<task id>`); dynamic ones from
//! `schedules.create` (with an `externalId` and their own payload).
//!
//! Each schedule stores when it last fired and when it fires next. After downtime, a
//! schedule whose next tick passed fires once (not once per missed tick), then moves to
//! the first tick after now. The next tick is always strictly after the last one fired, so
//! a clock moving backwards never fires a tick twice. Patterns are 5 fields (minute …
//! weekday) or 6 with seconds first; DST is handled by evaluating in the zone (a skipped
//! local time fires at the next valid time, a repeated one once).

use crate::error::{Error, Result};
use crate::model::Json;
use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleRecord {
    pub id: String,
    pub task: String,
    pub cron: String,
    pub tz: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Json>,
    /// The tick fired last (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tick: Option<u64>,
    /// The next tick to fire.
    pub next_tick: u64,
    /// From a task's `schedule` option (replaced when the task's definition changes).
    #[serde(default)]
    pub from_task: bool,
    pub created_at: u64,
}

/// Instants after 9999-12-31T23:59:59.999Z have no tick. Found by fuzzing: above
/// `i64::MAX` ms an instant wrapped to one before 1970 (`next_after(u64::MAX)` of `@daily`
/// was 0), and croner panics (in chrono) on an instant whose local time is past chrono's
/// range. croner searches no further than the year 5000 anyway.
pub const LAST_INSTANT_MS: u64 = 253_402_300_799_999;

/// A parsed pattern in its zone.
#[derive(Debug, Clone)]
pub struct Pattern {
    cron: Cron,
    tz: Tz,
}

impl Pattern {
    /// Parses `cron` in zone `tz` (IANA name; default UTC). Errors name `option`.
    pub fn parse(option: &str, cron: &str, tz: &str) -> Result<Pattern> {
        let bad = |why: &dyn std::fmt::Display| {
            Error::BadCron {
            option: option.to_string(),
            reason: format!("{cron:?} is not a cron pattern ({why}); write 5 fields like '0 9 * * MON' (minute hour day month weekday), or 6 with seconds first"),
        }
        };
        // croner reads an empty list item as nothing, so `,` is a field no time matches, and
        // a pattern that never fires has every search walk to the year 5000: ~10 s for
        // `, * * * *` in America/New_York, under the scheduler's lock. Found by fuzzing.
        if cron
            .split_whitespace()
            .any(|f| f.split(',').any(str::is_empty))
        {
            return Err(bad(&"a list has an empty item"));
        }
        let parsed = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(cron)
            .map_err(|e| bad(&e))?;
        let zone: Tz = tz.parse().map_err(|_| Error::BadOption {
            option: format!("{option}.tz"),
            reason: format!("{tz:?} is not an IANA time zone; use a name like 'Europe/Paris' or 'America/New_York'"),
        })?;
        Ok(Pattern {
            cron: parsed,
            tz: zone,
        })
    }

    /// Refuses a pattern that never fires (`0 0 31 2 *`: February has no 31st).
    pub fn check_fires(self) -> Result<Pattern> {
        // Any time will do: a pattern fires within a few years of every date, or never.
        if self.next_after(946_684_800_000).is_none() {
            return Err(Error::BadCron {
                option: "cron".into(),
                reason: "this pattern never fires (no date matches it, like February 31st); check the day and month fields".into(),
            });
        }
        Ok(self)
    }

    /// `ms` in the pattern's zone, down to the whole second; `None` past
    /// [`LAST_INSTANT_MS`]. Ticks fall on whole seconds, so the tick before or after an
    /// instant is the same from its second, and croner needs it: it allows a candidate up to
    /// one second past a start that it takes to be on a whole second. Found by fuzzing: in
    /// the second before the hour London repeats (2026-10-25T00:59:59.001Z to .999Z),
    /// `@hourly`'s last tick "at or before" was 01:00Z, after the instant.
    fn local(&self, ms: u64) -> Option<chrono::DateTime<Tz>> {
        if ms > LAST_INSTANT_MS {
            return None;
        }
        let at = Utc.timestamp_millis_opt((ms - ms % 1000) as i64).single()?;
        Some(at.with_timezone(&self.tz))
    }

    /// The last tick at or before `at_ms`.
    pub fn last_at_or_before(&self, at_ms: u64) -> Option<u64> {
        let at = self.local(at_ms)?;
        let prev = self.cron.find_previous_occurrence(&at, true).ok()?;
        u64::try_from(prev.timestamp_millis()).ok()
    }

    /// The first tick strictly after `after_ms`.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let at = self.local(after_ms)?;
        let next = self.cron.find_next_occurrence(&at, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> u64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis() as u64
    }

    #[test]
    fn weekly_pattern_in_a_zone() {
        let p = Pattern::parse("schedule", "0 9 * * MON", "Europe/Paris").unwrap();
        // Sunday 2026-03-01 12:00 UTC → Monday 09:00 Paris (UTC+1) = 08:00 UTC
        assert_eq!(
            p.next_after(ms("2026-03-01T12:00:00Z")),
            Some(ms("2026-03-02T08:00:00Z"))
        );
    }

    #[test]
    fn daily_tick_follows_the_zone_across_a_dst_change() {
        // Paris switches to summer time on 2026-03-29 (02:00 → 03:00).
        let p = Pattern::parse("schedule", "30 8 * * *", "Europe/Paris").unwrap();
        assert_eq!(
            p.next_after(ms("2026-03-28T12:00:00Z")),
            Some(ms("2026-03-29T06:30:00Z"))
        );
        assert_eq!(
            p.next_after(ms("2026-03-27T12:00:00Z")),
            Some(ms("2026-03-28T07:30:00Z"))
        );
    }

    #[test]
    fn a_local_time_skipped_by_dst_still_fires_once_that_day() {
        let p = Pattern::parse("schedule", "30 2 * * *", "Europe/Paris").unwrap();
        let next = p.next_after(ms("2026-03-28T12:00:00Z")).unwrap();
        // 02:30 does not exist on 2026-03-29 in Paris: the tick lands that day, after the gap.
        assert!(
            next >= ms("2026-03-29T01:00:00Z") && next < ms("2026-03-30T00:00:00Z"),
            "{next}"
        );
    }

    #[test]
    fn seconds_field_is_optional() {
        let p = Pattern::parse("schedule", "*/10 * * * * *", "UTC").unwrap();
        assert_eq!(
            p.next_after(ms("2026-01-01T00:00:01Z")),
            Some(ms("2026-01-01T00:00:10Z"))
        );
    }

    /// Found by fuzzing (`fuzz/`, target `cron`): an instant above `i64::MAX` ms (such as
    /// `u64::MAX`, the engine's "never") wrapped to a negative one, so `next_after(u64::MAX)`
    /// of `@daily` was 0, a tick before the instant; and croner panicked on chrono's last
    /// instant in a zone east of UTC.
    #[test]
    fn instants_beyond_the_range_have_no_tick() {
        let chrono_max = chrono::DateTime::<Utc>::MAX_UTC.timestamp_millis() as u64;
        for (cron, tz) in [("@daily", "UTC"), ("30 2 * * *", "Europe/Paris")] {
            let p = Pattern::parse("schedule", cron, tz).unwrap();
            for t in [
                u64::MAX,
                i64::MAX as u64 + 1,
                i64::MAX as u64,
                chrono_max,
                chrono_max - 3_600_000,
                LAST_INSTANT_MS + 1,
            ] {
                assert_eq!(p.next_after(t), None, "{cron} {t}");
                assert_eq!(p.last_at_or_before(t), None, "{cron} {t}");
            }
        }
        let p = Pattern::parse("schedule", "@daily", "UTC").unwrap();
        let t = ms("2999-12-31T12:00:00Z");
        assert_eq!(p.next_after(t), Some(ms("3000-01-01T00:00:00Z")));
        assert_eq!(p.last_at_or_before(t), Some(ms("2999-12-31T00:00:00Z")));
    }

    /// Found by fuzzing (`fuzz/`, target `cron`): in the last second before the hour that
    /// London repeats when summer time ends (01:00–02:00 local twice on 2026-10-25), the last
    /// tick of `@hourly` at or before 00:59:59.003Z was 01:00Z, after the instant, so a
    /// schedule due then would fire for the 01:00Z tick an hour early and skip it.
    #[test]
    fn ticks_around_a_repeated_hour_are_ordered_to_the_millisecond() {
        let p = Pattern::parse("schedule", "@hourly", "Europe/London").unwrap();
        let t = ms("2026-10-25T00:59:59.003Z");
        assert_eq!(p.last_at_or_before(t), Some(ms("2026-10-25T00:00:00Z")));
        assert_eq!(p.next_after(t), Some(ms("2026-10-25T01:00:00Z")));
        let mut t = ms("2026-10-24T23:59:58Z");
        while t < ms("2026-10-25T02:00:02Z") {
            let (last, next) = (p.last_at_or_before(t).unwrap(), p.next_after(t).unwrap());
            assert!(last <= t && t - last < 3_600_000, "{t}: last {last}");
            assert!(next > t && next - t <= 3_600_000, "{t}: next {next}");
            t += 9_973;
        }
    }

    /// Found by fuzzing (`fuzz/`, target `cron`): croner took `,` for a field that matches
    /// nothing, and a search for the tick of `, * * * *` in New York ran ~10 s.
    #[test]
    fn an_empty_list_item_is_an_error() {
        for cron in [
            ", * * * *",
            "* , * * *",
            "0 0 , * *",
            "* * * * * ,",
            "1,,2 * * * *",
            "5, * * * *",
        ] {
            let e = Pattern::parse("schedule", cron, "America/New_York").unwrap_err();
            assert_eq!(e.code(), "E_BAD_CRON");
            assert!(e.to_string().contains("empty item"), "{cron}: {e}");
        }
        let p = Pattern::parse("schedule", "0,30 9 * * MON,FRI", "America/New_York").unwrap();
        assert!(p.next_after(ms("2026-03-01T12:00:00Z")).is_some());
    }

    #[test]
    fn bad_patterns_and_zones_name_the_option() {
        let e = Pattern::parse("schedule", "61 * * * *", "UTC").unwrap_err();
        assert_eq!(e.code(), "E_BAD_CRON");
        assert!(e.to_string().contains("schedule"));
        let e = Pattern::parse("schedule", "0 9 * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(e.code(), "E_BAD_OPTION");
        assert!(e.to_string().contains("schedule.tz"));
    }
}

/// A schedule's spec on a task (`schedule: '0 9 * * MON'` or `{ cron, tz }`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ScheduleSpec {
    pub cron: String,
    #[serde(default = "utc")]
    pub tz: String,
}

fn utc() -> String {
    "UTC".into()
}

/// `schedules.create` input.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleIn {
    pub task: String,
    pub cron: String,
    #[serde(default = "utc")]
    pub tz: String,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub payload: Option<Json>,
}

/// A live schedule in the scheduler.
pub struct Live {
    pub rec: ScheduleRecord,
    pub pattern: Pattern,
}

use crate::engine::{AfterCommit, Engine, NewRun, Sched};
use crate::store::{Store, Write};
use std::cmp::Reverse;

fn iso(ms: u64) -> String {
    Utc.timestamp_millis_opt(ms as i64)
        .single()
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

impl Sched {
    pub(crate) fn add_schedule(&mut self, rec: ScheduleRecord, pattern: Pattern) {
        self.schedule_timers
            .push(Reverse((rec.next_tick, rec.id.clone())));
        self.schedules.insert(rec.id.clone(), Live { rec, pattern });
    }
}

impl Engine {
    /// Makes a task's `schedule` option a stored schedule (keeping its last tick when the
    /// pattern did not change), or removes it when the task no longer has one.
    pub(crate) fn sync_task_schedule(
        &self,
        s: &mut Sched,
        task: &str,
        spec: Option<&ScheduleSpec>,
        now: u64,
    ) -> Result<Vec<Write>> {
        let id = format!("task:{task}");
        let existing = s
            .schedules
            .get(&id)
            .map(|l| (l.rec.cron.clone(), l.rec.tz.clone(), l.rec.last_tick));
        let Some(spec) = spec else {
            if existing.is_some() {
                s.schedules.remove(&id);
                return Ok(vec![Write::DelSchedule { id }]);
            }
            return Ok(Vec::new());
        };
        if existing
            .as_ref()
            .is_some_and(|(c, z, _)| *c == spec.cron && *z == spec.tz)
        {
            return Ok(Vec::new());
        }
        let pattern = Pattern::parse("schedule", &spec.cron, &spec.tz)?;
        let last_tick = existing.and_then(|e| e.2);
        let after = last_tick.map_or(now, |l| l.max(now));
        let next_tick = pattern.next_after(after).unwrap_or(u64::MAX);
        let rec = ScheduleRecord {
            id,
            task: task.to_string(),
            cron: spec.cron.clone(),
            tz: spec.tz.clone(),
            external_id: None,
            payload: None,
            last_tick,
            next_tick,
            from_task: true,
            created_at: now,
        };
        let w = Write::PutSchedule(rec.clone());
        s.add_schedule(rec, pattern);
        Ok(vec![w])
    }

    /// Fires every schedule whose tick is due: one run per schedule (however many ticks
    /// were missed), then the schedule moves to its first tick after now.
    pub(crate) fn run_schedules(
        &self,
        s: &mut Sched,
        store: &dyn Store,
        now: u64,
        writes: &mut Vec<Write>,
        after: &mut AfterCommit,
    ) -> Result<()> {
        while s
            .schedule_timers
            .peek()
            .is_some_and(|Reverse((at, _))| *at <= now)
        {
            let Some(Reverse((at, id))) = s.schedule_timers.pop() else {
                break;
            };
            let Some(live) = s.schedules.get(&id) else {
                continue;
            };
            if live.rec.next_tick != at {
                continue; // superseded
            }
            if !s.tasks.contains_key(&live.rec.task) {
                // Its task is not (or no longer) defined here: nothing fires, and the tick
                // stays due. When the task is registered it fires once, for the latest tick.
                if s.schedules_without_task.insert(id.clone()) {
                    tracing::warn!(
                        "durably: schedule {id} is due but its task \"{}\" is not defined in this process; it fires when the task is",
                        live.rec.task
                    );
                }
                continue;
            }
            // After downtime, the run stands for the latest missed tick.
            let at = live
                .pattern
                .last_at_or_before(now)
                .filter(|t| *t >= at)
                .unwrap_or(at);
            let rec = live.rec.clone();
            let payload = match &rec.payload {
                Some(p) => p.clone(),
                None => crate::engine::to_raw(&serde_json::json!({
                    "timestamp": iso(at),
                    "lastTimestamp": rec.last_tick.map(iso),
                    "scheduleId": rec.id,
                    "externalId": rec.external_id,
                }))?,
            };
            let proto = NewRun {
                task: rec.task.clone(),
                payload,
                tags: vec![format!("schedule:{}", rec.id)],
                ready_at: now,
                event: None,
                parent: None,
                created_seq: None,
            };
            self.admit(s, store, proto, Default::default(), now, writes, after)?;
            let next = s
                .schedules
                .get(&id)
                .and_then(|l| l.pattern.next_after(at.max(now)))
                .unwrap_or(u64::MAX);
            if let Some(live) = s.schedules.get_mut(&id) {
                live.rec.last_tick = Some(at);
                live.rec.next_tick = next;
                writes.push(Write::PutSchedule(live.rec.clone()));
            }
            s.schedule_timers.push(Reverse((next, id)));
        }
        Ok(())
    }

    /// Creates (or, for a known `externalId` of the task, updates) a dynamic schedule.
    pub async fn create_schedule(&self, input: ScheduleIn) -> Result<ScheduleRecord> {
        self.check_open()?;
        let now = self.inner.clock.now_ms();
        let pattern = Pattern::parse("cron", &input.cron, &input.tz)?.check_fires()?;
        crate::limits::check_name("task", "the task of a schedule", &input.task)?;
        if let Some(ext) = &input.external_id {
            crate::limits::check_name("externalId", "an externalId", ext)?;
        }
        if let Some(p) = &input.payload {
            self.check_size("the schedule payload", p)?;
        }
        let rec = {
            let mut s = self.sched()?;
            // Like trigger(): a typo must not create a schedule nobody will ever run.
            if !s.tasks.contains_key(&input.task) {
                return Err(Error::UnknownTask { task: input.task });
            }
            let id = match &input.external_id {
                Some(ext) => format!("ext:{}:{ext}", input.task),
                None => s.next_id("sch", now),
            };
            let last_tick = s.schedules.get(&id).and_then(|l| l.rec.last_tick);
            let next_tick = pattern
                .next_after(last_tick.map_or(now, |l| l.max(now)))
                .unwrap_or(u64::MAX);
            let rec = ScheduleRecord {
                id,
                task: input.task,
                cron: input.cron,
                tz: input.tz,
                external_id: input.external_id,
                payload: input.payload,
                last_tick,
                next_tick,
                from_task: false,
                created_at: now,
            };
            s.add_schedule(rec.clone(), pattern);
            rec
        };
        self.notify_work();
        self.commit_after(
            vec![Write::PutSchedule(rec.clone())],
            AfterCommit::default(),
        )
        .await?;
        Ok(rec)
    }

    /// Every schedule, or those of one task, by id.
    pub fn list_schedules(&self, task: Option<&str>) -> Result<Vec<ScheduleRecord>> {
        let s = self.sched()?;
        let mut out: Vec<ScheduleRecord> = s
            .schedules
            .values()
            .filter(|l| task.is_none_or(|t| l.rec.task == t))
            .map(|l| l.rec.clone())
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Deletes a schedule; false if there was none with this id.
    pub async fn delete_schedule(&self, id: &str) -> Result<bool> {
        self.check_open()?;
        let existed = self.sched()?.schedules.remove(id).is_some();
        if existed {
            self.commit_after(
                vec![Write::DelSchedule { id: id.to_string() }],
                AfterCommit::default(),
            )
            .await?;
        }
        Ok(existed)
    }
}
