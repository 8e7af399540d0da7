//! Durations as users write them: a number of milliseconds, or a string such as
//! `'500ms'`, `'30s'`, `'1m'`, `'1h30m'`, `'1.5h'`, `'3 days'`, `'2 weeks'`.
//! Errors name the option and point at the column that is wrong.

use crate::error::{Error, Result};

const UNITS: &[(&[&str], f64)] = &[
    (&["ms", "msec", "msecs", "millisecond", "milliseconds"], 1.0),
    (&["s", "sec", "secs", "second", "seconds"], 1_000.0),
    (&["m", "min", "mins", "minute", "minutes"], 60_000.0),
    (&["h", "hr", "hrs", "hour", "hours"], 3_600_000.0),
    (&["d", "day", "days"], 86_400_000.0),
    (&["w", "week", "weeks"], 604_800_000.0),
];

/// Parses a duration string into milliseconds. `option` names the option in errors.
pub fn parse_duration(option: &str, text: &str) -> Result<u64> {
    let bad = |col: usize, why: &str| {
        Error::BadDuration {
        option: option.to_string(),
        reason: format!(
            "{why} at column {} of {text:?}; write a duration like '500ms', '30s', '5m', '1h30m', '3 days' or a number of milliseconds",
            col + 1
        ),
    }
    };
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut total = 0f64;
    let mut parts = 0;
    loop {
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        if start == i {
            return Err(bad(i, "expected a number"));
        }
        let n: f64 = text[start..i]
            .parse()
            .map_err(|_| bad(start, "not a number"))?;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = text[ustart..i].to_ascii_lowercase();
        let factor = if unit.is_empty() {
            if parts == 0 && i == bytes.len() {
                1.0 // a bare number is milliseconds
            } else {
                return Err(bad(ustart, "expected a unit (ms, s, m, h, d, w)"));
            }
        } else {
            UNITS
                .iter()
                .find(|(names, _)| names.contains(&unit.as_str()))
                .map(|(_, f)| *f)
                .ok_or_else(|| bad(ustart, &format!("unknown unit {unit:?}")))?
        };
        total += n * factor;
        parts += 1;
        if i < bytes.len() && bytes[i] == b',' {
            i += 1;
        }
    }
    if parts == 0 {
        return Err(bad(0, "empty duration"));
    }
    if !total.is_finite() || total > 1e15 {
        return Err(bad(0, "duration too large"));
    }
    Ok(total.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let cases = [
            ("500ms", 500),
            ("30s", 30_000),
            ("1m", 60_000),
            ("1h30m", 5_400_000),
            ("1.5h", 5_400_000),
            ("3 days", 259_200_000),
            ("2 weeks", 1_209_600_000),
            ("250", 250),
            ("1h 30m", 5_400_000),
            ("7d", 604_800_000),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_duration("d", text).unwrap(), ms, "{text}");
        }
    }

    #[test]
    fn errors_name_the_option_and_column() {
        let e = parse_duration("retry.minTimeout", "3 dayz").unwrap_err();
        assert_eq!(e.code(), "E_BAD_DURATION");
        let msg = e.to_string();
        assert!(
            msg.contains("retry.minTimeout") && msg.contains("column 3"),
            "{msg}"
        );
        for bad in ["", "abc", "5 5", "1h x", "h1"] {
            assert!(parse_duration("x", bad).is_err(), "{bad:?}");
        }
    }
}
