//! The `if` expression language on arbitrary text (`<expr>\0<json>`: the expression, then
//! optionally the event it is evaluated against). Never panics or overflows the stack, and
//! binding `event` into the expression (as a wait does at registration) evaluates the same
//! as passing it as a root.
#![no_main]

use durably_core::expr;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    let (src, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(src) = std::str::from_utf8(src) else {
        return;
    };
    let Ok(e) = expr::parse("on.if", src) else {
        return;
    };
    let event: Value = serde_json::from_slice(rest).unwrap_or_else(|_| {
        json!({"name": "order/paid", "data": {"amount": 150, "user": {"id": "u1"}, "tags": ["a", 2]}})
    });
    let incoming = json!({"name": "x", "data": event.get("data").cloned().unwrap_or(Value::Null)});
    let both = expr::eval(&e, &[("event", &event), ("async", &incoming)]);
    let bound = e.clone().bind("event", &event);
    assert_eq!(
        expr::eval(&bound, &[("async", &incoming)]),
        both,
        "{src:?}: binding `event` changed the result"
    );
    let _ = expr::eval(&e, &[("async", &event)]);
    let _ = expr::eval(&e, &[]);
    for p in [
        &["data"][..],
        &["data", "amount"],
        &["data", "tags", "1"],
        &[],
    ] {
        let _ = expr::lookup(&event, p);
    }
});
