//! Time for the whole core. Everything that reads the time or waits for it goes through a
//! `Clock`, so that scheduler tests and `durably/testing` run days of workflow in
//! milliseconds with the `ManualClock`. Times are wall-clock milliseconds since the Unix
//! epoch (what we persist); never `Instant`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub type Waker = Arc<dyn Fn() + Send + Sync>;

pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// How long to wait in real time until `deadline_ms` is due; `None` when only an
    /// explicit move of the clock can bring it (the manual clock).
    fn real_wait(&self, deadline_ms: u64) -> Option<Duration>;
    /// Called whenever the clock jumps (manual clock only), so sleepers re-check deadlines.
    fn add_waker(&self, _waker: Waker) {}
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
    fn real_wait(&self, deadline_ms: u64) -> Option<Duration> {
        Some(Duration::from_millis(
            deadline_ms.saturating_sub(self.now_ms()),
        ))
    }
}

/// A clock that moves only when told to. `advance` and `set` wake every registered
/// sleeper, which then re-reads `now_ms` and runs whatever became due.
#[derive(Default)]
pub struct ManualClock {
    now: AtomicU64,
    wakers: Mutex<Vec<Waker>>,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> Self {
        ManualClock {
            now: AtomicU64::new(start_ms),
            wakers: Mutex::new(Vec::new()),
        }
    }
    pub fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
        self.wake();
    }
    /// Sets the time, backwards too (tests of clocks that jump back).
    pub fn set(&self, ms: u64) {
        self.now.store(ms, Ordering::SeqCst);
        self.wake();
    }
    fn wake(&self) {
        let wakers = self.wakers.lock().map(|w| w.clone()).unwrap_or_default();
        for w in wakers {
            w();
        }
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
    fn real_wait(&self, _deadline_ms: u64) -> Option<Duration> {
        None
    }
    fn add_waker(&self, waker: Waker) {
        if let Ok(mut w) = self.wakers.lock() {
            w.push(waker);
        }
    }
}
