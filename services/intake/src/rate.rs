//! Per-user rate limiting of grant requests (GCRA, as a token bucket with a
//! burst allowance). Each intake instance limits on its own.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};

use crate::domain::keys::UserId;

/// Limits how often each user may ask for grants.
#[derive(Debug, Clone)]
pub struct GrantLimiter {
    limiter: Arc<DefaultKeyedRateLimiter<UserId>>,
}

impl GrantLimiter {
    /// `per_minute` requests a minute on average, bursts of up to `burst`.
    pub fn new(per_minute: NonZeroU32, burst: NonZeroU32) -> Self {
        let quota = Quota::with_period(Duration::from_secs(60) / per_minute.get())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        Self {
            limiter: Arc::new(RateLimiter::keyed(quota)),
        }
    }

    /// Admits one request of `user`, or says how long to wait.
    pub fn check(&self, user: &UserId) -> Result<(), Duration> {
        self.limiter
            .check_key(user)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets users whose allowance is full again, bounding memory.
    pub fn prune(&self) {
        self.limiter.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(burst: u32) -> GrantLimiter {
        GrantLimiter::new(NonZeroU32::MIN, NonZeroU32::new(burst).unwrap())
    }

    #[test]
    fn a_burst_is_admitted_then_the_user_waits() {
        let limiter = limiter(3);
        let alice = UserId::parse("alice").unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.check(&alice), Ok(()));
        }
        let wait = limiter.check(&alice).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
    }

    #[test]
    fn users_are_limited_separately() {
        let limiter = limiter(1);
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        assert!(limiter.check(&alice).is_ok());
        assert!(limiter.check(&alice).is_err());
        assert!(limiter.check(&bob).is_ok());
    }
}
