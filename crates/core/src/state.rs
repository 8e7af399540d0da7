//! The run state machine, as one pure function: no IO, no clock.
//!
//! - `delayed`  — entered by a trigger with `delay`/`runAt` or a retry backoff; the run has a
//!   future `ready_at` in the queue index. Left by `Due` (→ queued) or `Cancel`.
//! - `queued`   — ready to start, ordered by (priority, ready_at, seq). Left by `Claim`
//!   (→ running), `Cancel`, `Skip`.
//! - `running`  — handed to the JS executor, which holds one of the engine's concurrency slots
//!   for it. Left by `Complete`, `Fail`, `Retry` (→ delayed), `Wait` (→ waiting), `Cancel`,
//!   or `Recover` (the process died; → queued, replayed from the top with memoized steps).
//! - `waiting`  — parked on a durable wait; holds no slot and no JS memory. Left by `Wake`.
//! - `completed`, `failed`, `cancelled`, `skipped` — terminal; only `Reopen` (`runs.retry`)
//!   leaves `failed`, back to `queued`.
//!
//! The engine applies the next state and the effects in one atomic store batch; an illegal
//! pair is an `E_ILLEGAL_TRANSITION` error, never a silent no-op.

use crate::error::{Error, Result};
use crate::model::RunStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Due,
    Claim,
    Complete,
    Fail,
    Retry,
    Wait,
    Wake,
    Cancel,
    Recover,
    Skip,
    /// `runs.retry`: a failed run continues from its failed step.
    Reopen,
}

impl Input {
    pub const ALL: [Input; 11] = [
        Input::Due,
        Input::Claim,
        Input::Complete,
        Input::Fail,
        Input::Retry,
        Input::Wait,
        Input::Wake,
        Input::Cancel,
        Input::Recover,
        Input::Skip,
        Input::Reopen,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Input::Due => "due",
            Input::Claim => "claim",
            Input::Complete => "complete",
            Input::Fail => "fail",
            Input::Retry => "retry",
            Input::Wait => "wait",
            Input::Wake => "wake",
            Input::Cancel => "cancel",
            Input::Recover => "recover",
            Input::Skip => "skip",
            Input::Reopen => "reopen",
        }
    }
}

/// What the engine must do besides storing the next status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effects {
    /// The run leaves `running`: its concurrency slot frees.
    pub release_slot: bool,
    /// The run ends: remove it from the queue index and wake `result()` waiters.
    pub finish: bool,
    /// The run must be (re)scheduled in the queue index.
    pub schedule: bool,
}

pub fn transition(from: RunStatus, input: Input) -> Result<(RunStatus, Effects)> {
    use Input as I;
    use RunStatus as S;
    let next = match (from, input) {
        (S::Delayed, I::Due) => S::Queued,
        (S::Queued, I::Claim) => S::Running,
        (S::Running, I::Complete) => S::Completed,
        (S::Running, I::Fail) => S::Failed,
        (S::Running, I::Retry) => S::Delayed,
        (S::Running, I::Wait) => S::Waiting,
        (S::Running, I::Recover) => S::Queued,
        (S::Waiting, I::Wake) => S::Queued,
        (S::Delayed | S::Queued | S::Running | S::Waiting, I::Cancel) => S::Cancelled,
        (S::Delayed | S::Queued, I::Skip) => S::Skipped,
        (S::Failed, I::Reopen) => S::Queued,
        _ => {
            return Err(Error::IllegalTransition {
                from: from.as_str(),
                input: input.as_str(),
            })
        }
    };
    let effects = Effects {
        release_slot: from == S::Running,
        finish: next.is_terminal(),
        schedule: matches!(next, S::Delayed | S::Queued) && from != S::Delayed,
    };
    Ok((next, effects))
}

#[cfg(test)]
mod tests {
    use super::*;
    use RunStatus as S;

    const LEGAL: &[(S, Input, S)] = &[
        (S::Delayed, Input::Due, S::Queued),
        (S::Queued, Input::Claim, S::Running),
        (S::Running, Input::Complete, S::Completed),
        (S::Running, Input::Fail, S::Failed),
        (S::Running, Input::Retry, S::Delayed),
        (S::Running, Input::Wait, S::Waiting),
        (S::Running, Input::Recover, S::Queued),
        (S::Waiting, Input::Wake, S::Queued),
        (S::Delayed, Input::Cancel, S::Cancelled),
        (S::Queued, Input::Cancel, S::Cancelled),
        (S::Running, Input::Cancel, S::Cancelled),
        (S::Waiting, Input::Cancel, S::Cancelled),
        (S::Delayed, Input::Skip, S::Skipped),
        (S::Queued, Input::Skip, S::Skipped),
        (S::Failed, Input::Reopen, S::Queued),
    ];

    #[test]
    fn every_legal_pair_reaches_its_state() {
        for &(from, input, to) in LEGAL {
            assert_eq!(
                transition(from, input).unwrap().0,
                to,
                "{from:?} + {input:?}"
            );
        }
    }

    #[test]
    fn every_other_pair_is_rejected() {
        for from in S::ALL {
            for input in Input::ALL {
                if LEGAL.iter().any(|&(f, i, _)| f == from && i == input) {
                    continue;
                }
                let err = transition(from, input).unwrap_err();
                assert_eq!(err.code(), "E_ILLEGAL_TRANSITION", "{from:?} + {input:?}");
            }
        }
    }

    #[test]
    fn terminal_states_are_left_only_by_reopening_a_failed_run() {
        for from in S::ALL.into_iter().filter(|s| s.is_terminal()) {
            for input in Input::ALL {
                let reopen = from == S::Failed && input == Input::Reopen;
                assert_eq!(
                    transition(from, input).is_ok(),
                    reopen,
                    "{from:?} + {input:?}"
                );
            }
        }
    }

    #[test]
    fn leaving_running_releases_the_slot_and_ending_finishes() {
        let (_, fx) = transition(S::Running, Input::Complete).unwrap();
        assert!(fx.release_slot && fx.finish && !fx.schedule);
        let (_, fx) = transition(S::Running, Input::Retry).unwrap();
        assert!(fx.release_slot && !fx.finish && fx.schedule);
        let (_, fx) = transition(S::Queued, Input::Claim).unwrap();
        assert!(!fx.release_slot && !fx.finish && !fx.schedule);
    }
}
