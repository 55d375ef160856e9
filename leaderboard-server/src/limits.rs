//! What the server accepts: a body size limit (larger is 413), a rate limit per token (a
//! burst over it is 429 with `Retry-After`), and uploads per student per lab in any 24 hours
//! (the cohort's daily limit, counted in the database so a restart does not reset it).

use governor::{Quota, RateLimiter, clock::Clock, clock::DefaultClock};
use std::num::NonZeroU32;

/// The largest request body (a bundle with 1000 runs per side and a 64 KiB change fits).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The largest change text an upload may carry.
pub const MAX_CHANGE_BYTES: usize = 64 * 1024;
/// The largest roster.
pub const MAX_ROSTER_ROWS: usize = 5000;
/// Uploads per student per lab in 24 hours, unless the cohort says otherwise.
pub const DEFAULT_DAILY_LIMIT: u32 = 20;
/// The most a cohort may allow.
pub const MAX_DAILY_LIMIT: u32 = 100_000;

/// Requests per token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_minute: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_minute: NonZeroU32::new(120).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// The limiter, keyed by who holds the token.
pub struct Limiter {
    inner: governor::DefaultKeyedRateLimiter<String>,
}

impl Limiter {
    pub fn new(limit: RateLimit) -> Limiter {
        let quota = Quota::per_minute(limit.per_minute).allow_burst(limit.burst);
        Limiter {
            inner: RateLimiter::keyed(quota),
        }
    }

    /// `Err(seconds to wait)` when `key` is over its rate.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.inner
            .check_key(&key.to_string())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                wait.as_secs().max(1)
            })?;
        // Forget idle keys now and then, so memory stays bounded by the active tokens.
        if self.inner.len() > 10_000 {
            self.inner.retain_recent();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_over_the_limit_is_refused_per_key() {
        let l = Limiter::new(RateLimit {
            per_minute: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(3).unwrap(),
        });
        for _ in 0..3 {
            assert!(l.check("a").is_ok());
        }
        let wait = l.check("a").unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(l.check("b").is_ok(), "another token has its own budget");
    }
}
