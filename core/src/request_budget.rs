//! A request budget shared by several relay nodes (R43), without IO: the generic cell rate
//! algorithm (GCRA) over one stored number, the "theoretical arrival time" of the next request.
//! A burst of `burst` requests passes, then one more each `interval_ms`: the same rule the
//! `governor` crate applies on one node, written over a value that lives in the store the nodes
//! share, so an operator behind N nodes has one budget, not N.
//!
//! Clocks: the nodes compare their own clocks with a time another node wrote, so a skew of a
//! second shifts a refusal by a second (the nodes need NTP anyway, `cluster`).

use std::num::NonZeroU32;

/// A burst of `burst` requests, then one each `interval_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub interval_ms: u64,
    pub burst: u32,
}

impl Budget {
    /// `per_minute` requests at once, then one each `60 / per_minute` seconds.
    pub fn per_minute(per_minute: NonZeroU32) -> Budget {
        // At least a millisecond apart: a budget above 60 000 a minute is not "no budget".
        Budget { interval_ms: (60_000 / u64::from(per_minute.get())).max(1), burst: per_minute.get() }
    }

    /// Draws one request at `now_ms` from a budget whose stored arrival time is `tat_ms` (none
    /// yet: a full budget). Passes with the arrival time to store, or refuses with how long until
    /// the next request may come.
    pub fn draw(&self, tat_ms: Option<u64>, now_ms: u64) -> Result<u64, u64> {
        let tat = tat_ms.unwrap_or(now_ms).max(now_ms);
        let tolerance = self.interval_ms * u64::from(self.burst.saturating_sub(1));
        let ahead = tat - now_ms;
        if ahead > tolerance { Err(ahead - tolerance) } else { Ok(tat + self.interval_ms) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_request_per_interval() {
        let budget = Budget::per_minute(NonZeroU32::new(3).unwrap());
        assert_eq!(budget, Budget { interval_ms: 20_000, burst: 3 });
        let mut tat = None;
        for _ in 0..3 {
            tat = Some(budget.draw(tat, 1_000).unwrap());
        }
        assert_eq!(budget.draw(tat, 1_000), Err(20_000));
        assert_eq!(budget.draw(tat, 15_000), Err(6_000));
        // The refusal stored nothing: after the interval, one more passes and the next waits again.
        let next = budget.draw(tat, 21_000).unwrap();
        assert_eq!(budget.draw(Some(next), 21_000), Err(20_000));
    }

    #[test]
    fn a_time_long_past_is_a_full_budget() {
        let budget = Budget::per_minute(NonZeroU32::new(2).unwrap());
        let mut tat = Some(5_000);
        for _ in 0..2 {
            tat = Some(budget.draw(tat, 1_000_000).unwrap());
        }
        assert!(budget.draw(tat, 1_000_000).is_err());
    }

    #[test]
    fn one_a_minute_has_no_burst() {
        let budget = Budget::per_minute(NonZeroU32::new(1).unwrap());
        let tat = budget.draw(None, 0).unwrap();
        assert_eq!(budget.draw(Some(tat), 59_999), Err(1));
        assert!(budget.draw(Some(tat), 60_000).is_ok());
    }
}
