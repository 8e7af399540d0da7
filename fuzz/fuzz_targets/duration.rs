//! `parse_duration` on arbitrary text: never panics, and an accepted duration is a sane
//! number of milliseconds (at most 1e15, so it neither wrapped nor saturated) that reads
//! back the same when written as `<n>ms`.
#![no_main]

use durably_core::duration::parse_duration;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_duration("fuzz", text) {
        Ok(ms) => {
            assert!(ms <= 1_000_000_000_000_000, "{text:?} gave {ms}");
            assert_eq!(parse_duration("fuzz", &format!("{ms}ms")).ok(), Some(ms));
            assert_eq!(parse_duration("fuzz", &format!("{ms}")).ok(), Some(ms));
        }
        Err(e) => {
            assert_eq!(e.code(), "E_BAD_DURATION");
            assert!(e.to_string().contains("fuzz"));
        }
    }
});
