//! Retry policy: exponential backoff with seeded jitter. The jitter comes from a hash of
//! (run id, step key, attempt), so a schedule is reproducible in tests and across restarts.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub factor: f64,
    pub min_timeout_ms: u64,
    pub max_timeout_ms: u64,
    pub randomize: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            factor: 2.0,
            min_timeout_ms: 1_000,
            max_timeout_ms: 3_600_000,
            randomize: true,
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `failed_attempt + 1`, after attempt `failed_attempt` (1-based) failed.
    /// Without jitter: `min * factor^(failed_attempt-1)`, capped at `max`. With jitter the
    /// delay is multiplied by a factor in [1, 2) and capped again.
    pub fn delay_ms(&self, failed_attempt: u32, seed: u64) -> u64 {
        let exp = failed_attempt.saturating_sub(1).min(64) as i32;
        let mut d = self.min_timeout_ms as f64 * self.factor.powi(exp);
        if self.randomize {
            d *= 1.0 + unit_interval(seed);
        }
        let max = self.max_timeout_ms as f64;
        if !d.is_finite() || d > max {
            d = max;
        }
        d.round() as u64
    }
}

/// A seed from the identity of a retry, stable across processes (FNV-1a).
pub fn seed(run: &str, key: &str, attempt: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in run
        .bytes()
        .chain([0])
        .chain(key.bytes())
        .chain(attempt.to_le_bytes())
    {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64 finaliser mapped to [0, 1).
fn unit_interval(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_without_jitter_doubles_until_the_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            factor: 2.0,
            min_timeout_ms: 1_000,
            max_timeout_ms: 10_000,
            randomize: false,
        };
        let delays: Vec<u64> = (1..=6).map(|a| p.delay_ms(a, 0)).collect();
        assert_eq!(delays, [1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
    }

    #[test]
    fn jitter_is_reproducible_and_bounded() {
        let p = RetryPolicy::default();
        for attempt in 1..8 {
            let s = seed("run_x", "step", attempt);
            let a = p.delay_ms(attempt, s);
            assert_eq!(a, p.delay_ms(attempt, s));
            let base = (1_000f64 * 2f64.powi(attempt as i32 - 1)) as u64;
            assert!(a >= base && a < 2 * base, "attempt {attempt}: {a}");
        }
        assert_ne!(seed("a", "s", 1), seed("a", "s", 2));
    }
}
