//! The adaptive warm pool's model (`VPC_CNI_WARM_POLICY=adaptive`).
//!
//! The warm pool exists to cover the pods that arrive while a refill is in
//! flight. With arrival rate λ (pods/s) and refill time T (from asking EC2
//! to the addresses being usable, budget waits included), a refill started
//! when the pool dips below W covers the gap if W ≥ λ·T; we keep
//! W = ⌈k·λ̂·T̂⌉ with k = 2, so a rate that doubles during the refill is
//! still covered.
//!
//! - λ̂ is the larger of two exponentially decaying rate estimates: a fast one
//!   (τ = 10 s), which sees a burst within seconds, and a slow one
//!   (τ = 10 min), which remembers that this node has bursts and decays to
//!   almost nothing after an idle half hour.
//! - T̂ is an exponentially weighted mean (α = 0.3) of measured refill times,
//!   starting from 1 s (an Assign is ≈ 0.5 s), each sample clipped at 10 s:
//!   a longer refill means the account is throttling, and every node
//!   holding more because of it would deepen the throttling.
//!
//! While the account is throttling (in the last minute a refill took over
//! twice T̂ and over 2 s — the budget's retries turn throttling into delay —
//! or failed with `RequestLimitExceeded`), the pool grows for
//! waiting pods only and leaves the warm margin for later: speculative calls
//! from every node are what keeps a congested account congested.
//!
//! An idle node therefore holds almost nothing beyond the policy floor (one
//! prefix in prefix mode, one address otherwise), a busy one holds what its
//! own traffic needs; and because ADDs waiting on an empty pool count as
//! demand, the first burst after idle is met with one right-sized call.

use std::time::Duration;

use tokio::time::Instant;

const FAST: f64 = 10.0;
const SLOW: f64 = 600.0;
const SAFETY: f64 = 2.0;
const ALPHA: f64 = 0.3;
/// The longest refill the model believes: EC2's own worst case (a new ENI
/// usable "up to 10 s" after Attach).
pub const MAX_REFILL: Duration = Duration::from_secs(10);

/// Arrival rate and refill latency as observed on this node.
#[derive(Debug, Clone)]
pub struct ArrivalModel {
    fast: f64,
    slow: f64,
    last: Instant,
    refill: Duration,
}

impl ArrivalModel {
    /// No arrivals seen; refills assumed to take 1 s.
    pub fn new(now: Instant) -> Self {
        ArrivalModel {
            fast: 0.0,
            slow: 0.0,
            last: now,
            refill: Duration::from_secs(1),
        }
    }

    fn decay(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.fast *= (-dt / FAST).exp();
        self.slow *= (-dt / SLOW).exp();
        self.last = now;
    }

    /// `n` pods arrived at `now`.
    pub fn arrivals(&mut self, n: u32, now: Instant) {
        self.decay(now);
        // Each arrival adds 1/τ: the estimate of a steady rate λ converges
        // to λ, and a burst of n shows as n/τ at once.
        self.fast += f64::from(n) / FAST;
        self.slow += f64::from(n) / SLOW;
    }

    /// A refill took `d`. Samples are clipped at [`MAX_REFILL`]: longer
    /// ones are throttling, an account-wide condition that more warm
    /// addresses on every node would only make worse.
    pub fn refill_took(&mut self, d: Duration) {
        let d = d.min(MAX_REFILL);
        self.refill = self.refill.mul_f64(1.0 - ALPHA) + d.mul_f64(ALPHA);
    }

    /// The estimated arrival rate (pods/s).
    pub fn rate(&mut self, now: Instant) -> f64 {
        self.decay(now);
        self.fast.max(self.slow)
    }

    /// The estimated refill time.
    pub fn refill(&self) -> Duration {
        self.refill
    }

    /// Free addresses to keep: ⌈k·λ̂·T̂⌉.
    pub fn warm(&mut self, now: Instant) -> u32 {
        let w = SAFETY * self.rate(now) * self.refill.as_secs_f64();
        // A trace of a past burst (under a tenth of an address) is nothing.
        (w - 0.1).ceil().clamp(0.0, f64::from(u32::MAX)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn steady_rate_is_learned_and_idle_decays() {
        let mut m = ArrivalModel::new(Instant::now());
        // One pod a second for ten minutes.
        for _ in 0..600 {
            tokio::time::advance(Duration::from_secs(1)).await;
            m.arrivals(1, Instant::now());
        }
        let r = m.rate(Instant::now());
        assert!((0.9..=1.15).contains(&r), "{r}");
        m.refill_took(Duration::from_secs(3));
        // T̂ = 0.7·1 + 0.3·3 = 1.6 s; W = ⌈2·λ·1.6⌉ ≈ 3.
        assert!(
            (2..=4).contains(&m.warm(Instant::now())),
            "{}",
            m.warm(Instant::now())
        );
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(
            m.warm(Instant::now()),
            1,
            "ten idle minutes: still remembered"
        );
        tokio::time::advance(Duration::from_secs(3000)).await;
        assert_eq!(m.warm(Instant::now()), 0, "an idle hour: forgotten");
    }

    #[test]
    fn throttled_refills_are_clipped() {
        let mut m = ArrivalModel::new(Instant::now());
        m.refill_took(Duration::from_secs(300));
        assert_eq!(m.refill(), Duration::from_millis(3700), "0.7·1 + 0.3·10");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_shows_at_once() {
        let mut m = ArrivalModel::new(Instant::now());
        assert_eq!(m.warm(Instant::now()), 0);
        m.arrivals(30, Instant::now());
        // 30 pods at once: fast estimate 3/s, 1 s refill, ×2.
        assert_eq!(m.warm(Instant::now()), 6);
    }
}
