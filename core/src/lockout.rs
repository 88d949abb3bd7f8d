//! Failed-login throttling (R15): failures slow down exponentially, then lock.
//!
//! The same rule applies per account and per source address. State is a plain record the caller
//! stores; time is a parameter. A lock does not expire: unlocking is an admin action.

use serde::{Deserialize, Serialize};

/// Tunables, fixed by the relay's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures tolerated without delay.
    pub free_failures: u32,
    /// Delay after the first failure beyond the free ones; doubles with each further failure.
    pub base_delay_ms: u64,
    /// Upper bound of a single delay.
    pub max_delay_ms: u64,
    /// Failures (consecutive, without a success) after which the subject is locked.
    pub lock_after: u32,
}

impl LockoutPolicy {
    /// The relay's policy: 3 free tries, then 1 s, 2 s, 4 s ... up to 60 s; locked at 8.
    pub const STANDARD: LockoutPolicy =
        LockoutPolicy { free_failures: 3, base_delay_ms: 1_000, max_delay_ms: 60_000, lock_after: 8 };
}

/// What is known about one subject (an account or a source address).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempts {
    /// Consecutive failures since the last success or unlock.
    pub failures: u32,
    /// Unix ms of the last failure.
    pub last_failure_ms: u64,
    pub locked: bool,
}

/// Whether an attempt may proceed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Too soon after the last failure: retry after this Unix ms.
    RetryAfter(u64),
    Locked,
}

impl LockoutPolicy {
    /// The wait imposed after `failures` consecutive failures.
    pub fn delay_ms(&self, failures: u32) -> u64 {
        if failures <= self.free_failures {
            return 0;
        }
        let doublings = (failures - self.free_failures - 1).min(32);
        self.base_delay_ms.saturating_mul(1u64 << doublings).min(self.max_delay_ms)
    }

    pub fn check(&self, attempts: &Attempts, now_ms: u64) -> Verdict {
        if attempts.locked {
            return Verdict::Locked;
        }
        let ready_at = attempts.last_failure_ms.saturating_add(self.delay_ms(attempts.failures));
        if now_ms < ready_at { Verdict::RetryAfter(ready_at) } else { Verdict::Allowed }
    }

    /// Records a failure; returns the new state (which may now be locked).
    pub fn record_failure(&self, attempts: Attempts, now_ms: u64) -> Attempts {
        let failures = attempts.failures.saturating_add(1);
        Attempts { failures, last_failure_ms: now_ms, locked: attempts.locked || failures >= self.lock_after }
    }

    /// A success clears the failures (not a lock: a locked subject never gets to succeed).
    pub fn record_success(&self, attempts: Attempts) -> Attempts {
        Attempts { failures: 0, last_failure_ms: attempts.last_failure_ms, locked: attempts.locked }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: LockoutPolicy = LockoutPolicy::STANDARD;

    #[test]
    fn delays_grow_exponentially_and_are_capped() {
        let delays: Vec<u64> = (0..12).map(|f| P.delay_ms(f)).collect();
        assert_eq!(delays, [0, 0, 0, 0, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]);
    }

    #[test]
    fn failures_slow_down_then_lock() {
        let mut a = Attempts::default();
        let mut now = 1_000_000;
        for _ in 0..3 {
            assert_eq!(P.check(&a, now), Verdict::Allowed);
            a = P.record_failure(a, now);
        }
        assert_eq!(P.check(&a, now), Verdict::Allowed, "three free failures");
        a = P.record_failure(a, now);
        assert_eq!(P.check(&a, now + 10), Verdict::RetryAfter(now + 1_000));
        assert_eq!(P.check(&a, now + 1_000), Verdict::Allowed);
        while !a.locked {
            now += 100_000;
            a = P.record_failure(a, now);
        }
        assert_eq!(a.failures, P.lock_after);
        assert_eq!(P.check(&a, now + 10_000_000), Verdict::Locked, "locks do not expire");
    }

    #[test]
    fn success_resets_failures_but_not_a_lock() {
        let a = Attempts { failures: 5, last_failure_ms: 10, locked: false };
        assert_eq!(P.record_success(a).failures, 0);
        let locked = Attempts { locked: true, ..a };
        assert!(P.record_success(locked).locked);
    }
}
