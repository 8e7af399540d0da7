//! `schedule::Pattern::parse` on arbitrary text (`<cron>\n<tz>\n<ms>`, the last two
//! optional) and, when it parses, `next_after` / `last_at_or_before` at a few instants:
//! never panics, the next tick is strictly after, the last one at or before.
#![no_main]

use durably_core::schedule::{Pattern, LAST_INSTANT_MS};
use libfuzzer_sys::fuzz_target;

const TIMES: &[u64] = &[
    0,
    1,
    1_700_000_000_000, // 2023-11-14
    1_774_745_999_999, // just before Paris' spring DST change, 2026-03-29
    1_792_889_999_999, // just before Paris' autumn DST change, 2026-10-25
    4_102_444_799_999, // 2099-12-31T23:59:59.999Z
    LAST_INSTANT_MS,   // 9999-12-31T23:59:59.999Z
    LAST_INSTANT_MS + 1,
    8_210_266_876_799_999, // chrono's last instant
    i64::MAX as u64,
    u64::MAX,
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let cron = lines.next().unwrap_or("");
    let tz = lines.next().unwrap_or("UTC");
    let extra = lines.next().and_then(|t| t.trim().parse::<u64>().ok());
    let Ok(p) = Pattern::parse("schedule", cron, tz) else {
        return;
    };
    // A pattern that never fires (`* * * 31 2,4,6,9,11 *`) has croner walk to the year 5000
    // on every search: up to ~0.1 s in a release build, ~10x that here. Look once, not at
    // every instant (the cost is noted in fuzz/README.md).
    let now = 1_700_000_000_000;
    if p.next_after(now).is_none() && p.last_at_or_before(now).is_none() {
        return;
    }
    for &t in TIMES.iter().chain(extra.iter()) {
        let next = p.next_after(t);
        if let Some(n) = next {
            assert!(n > t, "{cron:?} in {tz:?}: next_after({t}) = {n}");
        }
        let last = p.last_at_or_before(t);
        if let Some(l) = last {
            assert!(l <= t, "{cron:?} in {tz:?}: last_at_or_before({t}) = {l}");
            // What the scheduler does after a fire: the following tick is later still.
            if let Some(n2) = p.next_after(l) {
                assert!(n2 > l, "{cron:?} in {tz:?}: next_after({l}) = {n2}");
            }
        }
    }
});
