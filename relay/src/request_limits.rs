//! Request discipline (issue 13): how often one operator may ask for sessions, and how often one
//! device may be asked. An operator account must not be able to flood a teller's screen with
//! prompts, and a flood from one operator must not lock others out of the device.
//!
//! Both limits are GCRA buckets: a burst of `per_minute` requests, then one more each
//! `60 / per_minute` seconds. The operator's bucket is drawn on every request that passes
//! authentication; the device's only by a request about to reach the endpoint (after the policy
//! and the one-pending-request check), so refused requests cost the device nothing and a
//! legitimate operator after a refused flood is still asked for. The defaults are 6 requests a
//! minute per operator and 4 per device (`--session-requests-per-operator-per-min`,
//! `--session-requests-per-device-per-min`). Where each check sits among the others, and the
//! `session.refused` record every refusal leaves, is `sockets::viewer`.
//!
//! With several nodes (R43) the operator's bucket is one for the service: its arrival time lives
//! in the shared store (`sightline_core::request_budget`), so asking through N nodes does not
//! give an operator N budgets. While the store cannot be reached, each node falls back to its own
//! bucket (the `governor` crate): still limited, per node, rather than unlimited or refusing
//! everyone. A device's requests all reach the node that holds its link, so its bucket is that
//! node's, as with one node.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use sightline_core::request_budget::Budget;
use sightline_store::Collection;

type Keyed<C> = RateLimiter<String, DashMapStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

impl Shared {
    /// One draw on `name`'s shared budget: the verdict, or the store's failure.
    async fn draw(&self, name: &str) -> Result<Result<(), Duration>, sightline_store::StoreError> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut verdict = Ok(());
        let drawn = self
            .store
            .update::<u64, _>(Collection::RequestBudgets, name, |tat| match self.budget.draw(tat, now_ms) {
                Ok(next) => {
                    verdict = Ok(());
                    Some(next)
                }
                Err(wait_ms) => {
                    verdict = Err(Duration::from_millis(wait_ms));
                    None
                }
            })
            .await;
        match drawn {
            // The store answers; this operator's requests race each other: refused, not let
            // through on a bucket of this node's own.
            Err(sightline_store::StoreError::Contention(_)) => {
                return Ok(Err(Duration::from_millis(self.budget.interval_ms)));
            }
            other => {
                other?;
            }
        }
        if !self.reachable.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::info!("operators' request budgets are shared again");
        }
        Ok(verdict)
    }
}

/// Which bucket refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Operator,
    Device,
}

pub struct RequestLimits<C: Clock + Clone = DefaultClock> {
    clock: C,
    per_operator: Keyed<C>,
    per_device: Keyed<C>,
    /// The operators' budgets the nodes share, when there are several (`None`: this node alone).
    shared: Option<Shared>,
}

/// Operators' budgets in the store the nodes share.
struct Shared {
    store: sightline_store::Store,
    budget: Budget,
    /// Whether the last draw reached the store (to log a change once, not every request).
    reachable: std::sync::atomic::AtomicBool,
}

impl RequestLimits<DefaultClock> {
    pub fn new(operator_per_minute: NonZeroU32, device_per_minute: NonZeroU32) -> Self {
        Self::with_clock(operator_per_minute, device_per_minute, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RequestLimits<C> {
    pub fn with_clock(operator_per_minute: NonZeroU32, device_per_minute: NonZeroU32, clock: C) -> Self {
        RequestLimits {
            per_operator: RateLimiter::dashmap_with_clock(Quota::per_minute(operator_per_minute), clock.clone()),
            per_device: RateLimiter::dashmap_with_clock(Quota::per_minute(device_per_minute), clock.clone()),
            clock,
            shared: None,
        }
    }

    /// Shares the operators' budgets with the other nodes on `store` (R43).
    pub fn shared_through(mut self, store: sightline_store::Store, operator_per_minute: NonZeroU32) -> Self {
        let budget = Budget::per_minute(operator_per_minute);
        self.shared = Some(Shared { store, budget, reachable: true.into() });
        self
    }

    /// Draws on the operator's bucket; when empty, how long until the next request may come.
    /// With several nodes the bucket is the service's; this node's own while the store fails.
    pub async fn operator(&self, name: &str) -> Result<(), Duration> {
        if let Some(shared) = &self.shared {
            match shared.draw(name).await {
                Ok(verdict) => return verdict,
                Err(e) => {
                    if shared.reachable.swap(false, std::sync::atomic::Ordering::Relaxed) {
                        tracing::warn!(error = %e, "operators' request budgets are this node's own until the shared store answers");
                    }
                }
            }
        }
        self.operator_here(name)
    }

    fn operator_here(&self, name: &str) -> Result<(), Duration> {
        self.per_operator.check_key(&name.to_owned()).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Draws on the device's bucket.
    pub fn device(&self, device_id: &str) -> Result<(), Duration> {
        self.per_device.check_key(&device_id.to_owned()).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets keys whose buckets are full again, so memory follows the active keys only.
    pub fn forget_idle(&self) {
        self.per_operator.retain_recent();
        self.per_device.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limits(clock: &FakeRelativeClock) -> RequestLimits<FakeRelativeClock> {
        RequestLimits::with_clock(NonZeroU32::new(3).unwrap(), NonZeroU32::new(2).unwrap(), clock.clone())
    }

    #[test]
    fn an_operator_gets_a_burst_then_one_request_per_interval() {
        let clock = FakeRelativeClock::default();
        let l = limits(&clock);
        for _ in 0..3 {
            assert_eq!(l.operator_here("op"), Ok(()));
        }
        let wait = l.operator_here("op").unwrap_err();
        assert!(wait > Duration::from_secs(19) && wait <= Duration::from_secs(20), "{wait:?}");
        // Another operator has a bucket of their own.
        assert_eq!(l.operator_here("other"), Ok(()));
        clock.advance(Duration::from_secs(20));
        assert_eq!(l.operator_here("op"), Ok(()));
        assert!(l.operator_here("op").is_err());
    }

    #[test]
    fn devices_have_their_own_buckets() {
        let clock = FakeRelativeClock::default();
        let l = limits(&clock);
        assert_eq!(l.device("d1"), Ok(()));
        assert_eq!(l.device("d1"), Ok(()));
        assert!(l.device("d1").is_err());
        assert_eq!(l.device("d2"), Ok(()));
        // The operator's bucket is separate from the device's.
        assert_eq!(l.operator_here("d1"), Ok(()));
        clock.advance(Duration::from_secs(30));
        assert_eq!(l.device("d1"), Ok(()));
    }
}
