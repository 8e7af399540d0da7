//! The core's logs, routed to the app. The core emits `tracing` events ("store sync failed",
//! "schedule ignored", "run … was running when the process died"); without a subscriber
//! they went nowhere. This module is that subscriber: events at or above the level
//! (`configure({ logLevel })`, `DURABLY_LOG`, default `warn`) go to the JS logger given with
//! `setLogger` (`configure({ logger })`), or to stderr when there is none.

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{span, Event, Level, Metadata};

/// `(level, message)`, called on the JS thread; weak: it never keeps the process alive.
type Sink = ThreadsafeFunction<(String, String), (), (String, String), Status, false, true>;

/// 0 silent, 1 error, 2 warn, 3 info, 4 debug.
static LEVEL: AtomicU8 = AtomicU8::new(2);
static SINK: Mutex<Option<Sink>> = Mutex::new(None);

fn rank(l: &Level) -> u8 {
    match *l {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        _ => 4,
    }
}

fn name(rank: u8) -> &'static str {
    match rank {
        1 => "error",
        2 => "warn",
        3 => "info",
        _ => "debug",
    }
}

/// Sets the level (`silent`, `error`, `warn`, `info`, `debug`) and the JS function that
/// receives `(level, message)`; without one, messages go to stderr.
#[napi]
pub fn set_logger(level: String, logger: Option<Function<(String, String), ()>>) -> Result<()> {
    let rank = match level.as_str() {
        "silent" => 0,
        "error" => 1,
        "warn" => 2,
        "info" => 3,
        "debug" => 4,
        other => {
            return Err(napi::Error::from_reason(format!(
                "E_BAD_OPTION: option `logLevel`: {other:?} is not one of 'silent', 'error', 'warn', 'info', 'debug'"
            )))
        }
    };
    let sink = match logger {
        Some(f) => Some(
            f.build_threadsafe_function::<(String, String)>()
                .weak::<true>()
                .build()?,
        ),
        None => None,
    };
    LEVEL.store(rank, Ordering::Release);
    if let Ok(mut s) = SINK.lock() {
        *s = sink;
    }
    Ok(())
}

/// Installs the subscriber (once per process; a subscriber the host set first wins).
pub fn install() {
    let _ = tracing::subscriber::set_global_default(ToApp);
}

struct ToApp;

#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let sep = if self.fields.is_empty() { "" } else { ", " };
            let _ = write!(self.fields, "{sep}{}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let sep = if self.fields.is_empty() { "" } else { ", " };
            let _ = write!(self.fields, "{sep}{}={value}", field.name());
        }
    }
}

impl tracing::Subscriber for ToApp {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes() // the level can change at run time
    }
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        rank(m.level()) <= LEVEL.load(Ordering::Acquire)
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, e: &Event<'_>) {
        let mut t = Text::default();
        e.record(&mut t);
        let mut msg = t.message;
        let msg = msg
            .strip_prefix("durably: ")
            .map(str::to_string)
            .unwrap_or_else(|| std::mem::take(&mut msg));
        let msg = if t.fields.is_empty() {
            msg
        } else {
            format!("{msg} ({})", t.fields)
        };
        let level = name(rank(e.metadata().level())).to_string();
        let sent = SINK.lock().ok().and_then(|s| {
            s.as_ref().map(|f| {
                f.call(
                    (level.clone(), msg.clone()),
                    ThreadsafeFunctionCallMode::NonBlocking,
                )
            })
        });
        if !matches!(sent, Some(Status::Ok)) {
            eprintln!("[durably] {level}: {msg}");
        }
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}
