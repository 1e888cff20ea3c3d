//! A token bucket on tokio's clock: EC2's throttling model, used by the
//! simulator (the account's buckets, server side) and by the EC2 budget
//! (this node's buckets, client side).
//!
//! Tokens refill continuously at `rate` per second up to `capacity`; a call
//! takes one. Time comes from `tokio::time::Instant`, so a paused test clock
//! drives refills deterministically.

use std::time::Duration;

use tokio::time::Instant;

/// Size and refill rate of a bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketSpec {
    /// Most tokens held (the burst).
    pub capacity: f64,
    /// Tokens added per second.
    pub rate: f64,
}

impl BucketSpec {
    /// A bucket of `capacity` tokens refilled at `rate` per second.
    pub const fn new(capacity: f64, rate: f64) -> Self {
        BucketSpec { capacity, rate }
    }
}

/// A token bucket, full when made.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    spec: BucketSpec,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(spec: BucketSpec) -> Self {
        TokenBucket {
            spec,
            tokens: spec.capacity,
            last: Instant::now(),
        }
    }

    /// Its size and rate.
    pub fn spec(&self) -> BucketSpec {
        self.spec
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.spec.rate).min(self.spec.capacity);
        self.last = now;
    }

    /// Takes a token if one is there.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is there (zero if one is).
    pub fn wait_time(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        if self.spec.rate <= 0.0 {
            // Never refills: an hour is as good as forever and keeps callers' sleeps finite.
            return Duration::from_secs(3600);
        }
        Duration::from_secs_f64((1.0 - self.tokens) / self.spec.rate)
    }

    /// Tokens now in the bucket.
    pub fn tokens(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill_at_rate() {
        let mut b = TokenBucket::new(BucketSpec::new(3.0, 2.0));
        let t0 = Instant::now();
        assert!(b.try_take(t0) && b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0));
        assert_eq!(b.wait_time(t0), Duration::from_millis(500));
        tokio::time::advance(Duration::from_millis(499)).await;
        assert!(!b.try_take(Instant::now()));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(b.try_take(Instant::now()));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(b.tokens(Instant::now()), 3.0, "never above capacity");
    }
}
