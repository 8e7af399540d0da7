//! What the core accepts from outside: names, ids, keys, and JSON values. Every check here
//! runs before anything changes (a call that fails one writes nothing), and the TS layer
//! applies the same limits, counted the same way (UTF-8 bytes), so a value JS accepts is
//! never refused later in the middle of a batch.

use crate::error::{Error, Result};

/// Longest event name, event id, token id, step id, flow key or idempotency key (bytes).
pub const MAX_NAME_BYTES: usize = 256;
/// Deepest nesting of a payload or event data: the core reads them (`match`, `if`, keys)
/// with serde_json, whose limit is 128; the event envelope adds a level.
pub const MAX_DEPTH: usize = 100;

/// A name or id: 1 to 256 bytes of UTF-8, no NUL (NUL separates key parts in the store, and
/// a name must never match another by prefix).
pub fn check_name(option: &str, what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > MAX_NAME_BYTES {
        return Err(Error::bad_option(
            option,
            format!(
                "{what} is a string of 1 to {MAX_NAME_BYTES} bytes (UTF-8), got {} bytes",
                s.len()
            ),
        ));
    }
    if s.contains('\0') {
        return Err(Error::bad_option(
            option,
            format!("{what} must not contain the NUL character (\\u0000)"),
        ));
    }
    Ok(())
}

/// How deeply `json` nests (0 for a scalar), counting brackets outside strings.
pub fn depth(json: &str) -> usize {
    let (mut depth, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for b in json.bytes() {
        if in_str {
            match b {
                _ if esc => esc = false,
                b'\\' => esc = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// A payload, event data or token data: at most `max_bytes` of JSON, at most `MAX_DEPTH`
/// levels deep.
pub fn check_value(what: &str, json: &str, max_bytes: usize) -> Result<()> {
    if json.len() > max_bytes {
        return Err(Error::PayloadTooLarge {
            what: what.to_string(),
            size: json.len(),
            limit: max_bytes,
        });
    }
    let d = depth(json);
    if d > MAX_DEPTH {
        return Err(Error::PayloadTooDeep {
            what: what.to_string(),
            depth: d,
            limit: MAX_DEPTH,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert_eq!(depth("1"), 0);
        assert_eq!(depth(r#"{"a":[1,{"b":2}]}"#), 3);
        assert_eq!(depth(r#"{"a":"[[[{{{\"]]"}"#), 1);
        assert_eq!(
            depth(&format!("{}{}", "[".repeat(150), "]".repeat(150))),
            150
        );
    }

    #[test]
    fn names_are_counted_in_bytes_and_refuse_nul() {
        assert!(check_name("id", "an event id", &"é".repeat(128)).is_ok());
        let e = check_name("id", "an event id", &"é".repeat(200)).unwrap_err();
        assert_eq!(e.code(), "E_BAD_OPTION");
        assert!(e.to_string().contains("400 bytes"), "{e}");
        assert!(check_name("name", "an event name", "order/paid\0forged").is_err());
        assert!(check_name("name", "an event name", "").is_err());
    }
}
