//! The record decoders of the store and the JS boundary on arbitrary bytes: the stored
//! records (`RunRecord`, `RunState`, `StepRecord`, `EventRecord`, `TokenRecord`, `Flow`,
//! `ScheduleRecord`), the executor's report (`Op::parse_batch`) and the trigger, event and
//! policy inputs. Never panics; a stored record that decodes re-encodes to bytes that
//! decode again to the same encoding (what the store writes back, it can read).
#![no_main]

use durably_core::engine::{EventIn, OnSpec};
use durably_core::flow::{Flow, FlowKeys};
use durably_core::model::{EventRecord, RunRecord, RunState, StepRecord, TokenRecord, WaitSpec};
use durably_core::schedule::{ScheduleIn, ScheduleRecord, ScheduleSpec};
use durably_core::{Op, TaskPolicy, TriggerItem};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn roundtrip<T: Serialize + DeserializeOwned>(what: &str, data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<T>(data) else {
        return;
    };
    let once = serde_json::to_vec(&v).unwrap_or_else(|e| panic!("{what}: re-encode: {e}"));
    let back: T = serde_json::from_slice(&once).unwrap_or_else(|e| {
        panic!(
            "{what}: {} does not decode: {e}",
            String::from_utf8_lossy(&once)
        )
    });
    let twice = serde_json::to_vec(&back).unwrap_or_else(|e| panic!("{what}: re-encode: {e}"));
    assert_eq!(
        once,
        twice,
        "{what}: unstable encoding of {}",
        String::from_utf8_lossy(data)
    );
}

fn decode<T: DeserializeOwned>(data: &[u8]) {
    let _ = serde_json::from_slice::<T>(data);
}

fuzz_target!(|data: &[u8]| {
    roundtrip::<RunRecord>("run", data);
    roundtrip::<RunState>("run state", data);
    roundtrip::<StepRecord>("step", data);
    roundtrip::<EventRecord>("event", data);
    roundtrip::<TokenRecord>("token", data);
    roundtrip::<Flow>("flow", data);
    roundtrip::<ScheduleRecord>("schedule", data);
    roundtrip::<WaitSpec>("wait", data);
    roundtrip::<Vec<WaitSpec>>("waits", data);
    decode::<Vec<TriggerItem>>(data);
    decode::<Vec<Vec<TriggerItem>>>(data);
    decode::<Vec<EventIn>>(data);
    decode::<FlowKeys>(data);
    decode::<TaskPolicy>(data);
    decode::<OnSpec>(data);
    decode::<ScheduleSpec>(data);
    decode::<ScheduleIn>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Op::parse_batch(text);
    }
});
