//! The value index of events: which scalars of an event's `data` are indexed, so that a
//! `waitForEvent` with `match` finds an event that came early by (name, path, value) with
//! one ordered lookup, at any volume of events, instead of scanning every event of its name.
//!
//! Indexed: each string, number or boolean reached from `data` through objects only, at most
//! `MAX_DEPTH` keys deep, whose canonical JSON text is at most `MAX_VALUE` bytes — the first
//! `MAX_VALUES` of them in key order. An event with more is marked partly indexed and looked
//! at directly by waits that use the index. A wait uses the index only when its path and
//! value are of the indexed kind (`indexable`); otherwise it scans the events of its name.

use serde_json::Value;

pub const MAX_DEPTH: usize = 4;
pub const MAX_VALUE: usize = 256;
pub const MAX_VALUES: usize = 32;

/// The indexed `(path, canonical value)` pairs of an event's data, and whether that is all
/// of its indexable values.
pub fn scalar_paths(data: &Value) -> (Vec<(String, String)>, bool) {
    let mut out = Vec::new();
    let mut complete = true;
    walk(data, &mut String::from("data"), 0, &mut out, &mut complete);
    (out, complete)
}

fn walk(
    v: &Value,
    path: &mut String,
    depth: usize,
    out: &mut Vec<(String, String)>,
    complete: &mut bool,
) {
    match v {
        Value::Object(m) if depth < MAX_DEPTH => {
            for (k, child) in m {
                if k.is_empty() || k.contains('.') || k.contains('\0') {
                    continue; // no dotted path can name it
                }
                let len = path.len();
                path.push('.');
                path.push_str(k);
                walk(child, path, depth + 1, out, complete);
                path.truncate(len);
            }
        }
        Value::String(_) | Value::Number(_) | Value::Bool(_) if depth > 0 => {
            let text = serde_json::to_string(v).unwrap_or_default();
            if text.len() <= MAX_VALUE {
                if out.len() == MAX_VALUES {
                    *complete = false;
                } else {
                    out.push((path.clone(), text));
                }
            }
        }
        _ => {}
    }
}

/// Whether a wait on `path` (from the event's root, like `data.userId`) for the canonical
/// value `value` can be answered by the index: a path under `data` through object keys
/// (no numeric segment, which could index an array) and a scalar value.
pub fn indexable(path: &str, value: &str) -> bool {
    let mut segs = path.split('.');
    if segs.next() != Some("data") {
        return false;
    }
    let rest: Vec<&str> = segs.collect();
    if rest.is_empty()
        || rest.len() > MAX_DEPTH
        || rest
            .iter()
            .any(|s| s.is_empty() || s.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if value.len() > MAX_VALUE {
        return false;
    }
    matches!(
        serde_json::from_str::<Value>(value),
        Ok(Value::String(_) | Value::Number(_) | Value::Bool(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_through_objects_are_indexed_arrays_and_deep_values_are_not() {
        let (v, complete) = scalar_paths(&json!({
            "userId": "u1", "n": 2, "ok": true, "none": null,
            "user": { "plan": "pro", "a": { "b": { "c": { "d": "too deep" } } } },
            "items": [{ "id": 1 }], "dot.ted": "x"
        }));
        assert!(complete);
        assert_eq!(
            v,
            vec![
                ("data.n".to_string(), "2".to_string()),
                ("data.ok".into(), "true".into()),
                ("data.user.plan".into(), "\"pro\"".into()),
                ("data.userId".into(), "\"u1\"".into()),
            ]
        );
    }

    #[test]
    fn an_event_with_more_values_than_the_cap_is_marked_partial() {
        let data: serde_json::Map<String, Value> =
            (0..40).map(|i| (format!("k{i:02}"), json!(i))).collect();
        let (v, complete) = scalar_paths(&Value::Object(data));
        assert_eq!(v.len(), MAX_VALUES);
        assert!(!complete);
    }

    #[test]
    fn only_waits_the_index_can_answer_use_it() {
        assert!(indexable("data.userId", "\"u1\""));
        assert!(indexable("data.user.plan", "\"pro\""));
        assert!(!indexable("data.items.0.id", "1"), "may index an array");
        assert!(!indexable("id", "\"e1\""), "not under data");
        assert!(
            !indexable("data.userId", "null"),
            "absent values match by scan"
        );
        assert!(
            !indexable("data.user", "{\"a\":1}"),
            "objects are not indexed"
        );
        assert!(!indexable("data.a.b.c.d.e", "1"), "deeper than the index");
    }
}
