//! The node's EC2 budget: client-side token buckets per call class and
//! retries with exponential backoff and full jitter, wrapped around any
//! [`Cloud`].
//!
//! EC2 throttles per account, so one node must not spend the account's
//! budget in a burst, and a throttled or failed call must not be retried in
//! lock-step with the rest of the fleet (aws-node issues #405, #617, #887).
//! [`Budget`] makes every call take a token of its class first (waiting, not
//! failing, when the bucket is empty), and retries transient failures
//! ([`CloudError::is_transient`]: throttling, 5xx, timeouts) after
//! `random(0, min(max, base · 2^attempt))` (AWS's "full jitter"). A throttled
//! answer also empties the class's bucket, so the node's next calls of that
//! class wait for a refill instead of hitting the account again at once.
//! The provider underneath does no retries of its own.
//!
//! Call classes and EC2 actions: `mutating` (Create/Delete ENI, Assign/
//! Unassign addresses and prefixes), `attach` (Attach/Detach), `describe`
//! (DescribeNetworkInterfaces), `tags` (CreateTags, for providers that tag
//! after creation). IMDS (`node`) is not an EC2 API call and is not budgeted.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ipnetwork::Ipv4Network;
use rand::Rng;
use tokio::time::Instant;

use super::bucket::{BucketSpec, TokenBucket};
use super::{Cloud, CloudError, DetachedEni, Eni, EniId, NodeInfo, Result};

/// A class of EC2 calls sharing one client-side bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallClass {
    /// Create/Delete ENI, Assign/Unassign addresses and prefixes.
    Mutating,
    /// Attach/Detach ENI.
    Attach,
    /// DescribeNetworkInterfaces.
    Describe,
    /// CreateTags.
    Tags,
}

impl CallClass {
    /// Every class, in counter order.
    pub const ALL: [CallClass; 4] = [
        CallClass::Mutating,
        CallClass::Attach,
        CallClass::Describe,
        CallClass::Tags,
    ];

    /// Lower-case name (metrics, logs).
    pub fn name(self) -> &'static str {
        match self {
            CallClass::Mutating => "mutating",
            CallClass::Attach => "attach",
            CallClass::Describe => "describe",
            CallClass::Tags => "tags",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The budget's settings (`VPC_CNI_EC2_*`, read by the daemon's configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetSettings {
    /// Bucket per class, indexed like [`CallClass::ALL`].
    pub buckets: [BucketSpec; 4],
    /// First backoff ceiling (`VPC_CNI_EC2_BACKOFF_BASE_MS`, default 250).
    pub backoff_base: Duration,
    /// Largest backoff ceiling (`VPC_CNI_EC2_BACKOFF_MAX_MS`, default 20000).
    pub backoff_max: Duration,
    /// Attempts per call, the first included (`VPC_CNI_EC2_MAX_ATTEMPTS`,
    /// default 10).
    pub max_attempts: u32,
}

// Rates and bursts are validated finite and positive: equality is total.
impl Eq for BudgetSettings {}

impl Default for BudgetSettings {
    /// One node's share of EC2's per-account defaults: a fifth of each
    /// account bucket's burst and a tenth of its refill, so a handful of
    /// nodes starting together cannot drain the account, while one node's
    /// normal needs (one Assign per prefix, a few ENIs) never wait.
    fn default() -> Self {
        BudgetSettings {
            buckets: [
                BucketSpec::new(20.0, 0.5),
                BucketSpec::new(10.0, 0.5),
                BucketSpec::new(20.0, 2.0),
                BucketSpec::new(10.0, 0.5),
            ],
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(20),
            max_attempts: 10,
        }
    }
}

impl BudgetSettings {
    /// The backoff ceiling before retry number `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// What the budget has seen, per class.
#[derive(Debug, Default)]
struct Counters {
    calls: [AtomicU64; 4],
    throttled: [AtomicU64; 4],
    failed: [AtomicU64; 4],
    retries: [AtomicU64; 4],
}

/// A snapshot of the budget's counters for one class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Calls sent to the cloud (retries included).
    pub calls: u64,
    /// Of which answered `RequestLimitExceeded`.
    pub throttled: u64,
    /// Of which failed otherwise (5xx, timeouts, verdicts).
    pub failed: u64,
    /// Retries made.
    pub retries: u64,
}

/// A [`Cloud`] whose calls go through this node's EC2 budget.
pub struct Budget {
    inner: Arc<dyn Cloud>,
    settings: BudgetSettings,
    buckets: Mutex<[TokenBucket; 4]>,
    counters: Counters,
}

impl Budget {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Cloud>, settings: BudgetSettings) -> Self {
        Budget {
            inner,
            buckets: Mutex::new(settings.buckets.map(TokenBucket::new)),
            settings,
            counters: Counters::default(),
        }
    }

    /// The counters of `class`.
    pub fn stats(&self, class: CallClass) -> ClassStats {
        let i = class.index();
        let c = &self.counters;
        ClassStats {
            calls: c.calls[i].load(Ordering::Relaxed),
            throttled: c.throttled[i].load(Ordering::Relaxed),
            failed: c.failed[i].load(Ordering::Relaxed),
            retries: c.retries[i].load(Ordering::Relaxed),
        }
    }

    /// Waits for a token of `class`.
    async fn token(&self, class: CallClass) {
        loop {
            let wait = {
                let mut buckets = self.buckets.lock().expect("budget mutex poisoned");
                let b = &mut buckets[class.index()];
                let now = Instant::now();
                if b.try_take(now) {
                    return;
                }
                b.wait_time(now)
            };
            // tokio's timers tick in milliseconds: a shorter sleep may end
            // without the clock moving, and the bucket would never refill.
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }

    fn drain(&self, class: CallClass) {
        let mut buckets = self.buckets.lock().expect("budget mutex poisoned");
        let b = &mut buckets[class.index()];
        let now = Instant::now();
        while b.try_take(now) {}
    }

    /// Runs `call` under the budget of `class`, retrying transient failures.
    async fn run<T, F, Fut>(&self, class: CallClass, op: &'static str, call: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let i = class.index();
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.token(class).await;
            self.counters.calls[i].fetch_add(1, Ordering::Relaxed);
            let err = match call().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if matches!(err, CloudError::Throttled { .. }) {
                self.counters.throttled[i].fetch_add(1, Ordering::Relaxed);
                self.drain(class);
            } else {
                self.counters.failed[i].fetch_add(1, Ordering::Relaxed);
            }
            if !err.is_transient() || attempt >= self.settings.max_attempts {
                return Err(err);
            }
            let ceiling = self.settings.ceiling(attempt);
            let sleep = ceiling.mul_f64(rand::rng().random::<f64>());
            tracing::debug!(operation = op, attempt, error = %err, backoff_ms = sleep.as_millis() as u64, "retrying EC2 call");
            self.counters.retries[i].fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(sleep).await;
        }
    }
}

#[async_trait]
impl Cloud for Budget {
    async fn node(&self) -> Result<NodeInfo> {
        self.inner.node().await
    }

    async fn enis(&self) -> Result<Vec<Eni>> {
        self.run(CallClass::Describe, "DescribeNetworkInterfaces", || {
            self.inner.enis()
        })
        .await
    }

    async fn attach_eni(&self, device_index: u32) -> Result<Eni> {
        // Create (mutating) and Attach (attach): one token of each.
        self.token(CallClass::Attach).await;
        self.run(CallClass::Mutating, "CreateNetworkInterface", || {
            self.inner.attach_eni(device_index)
        })
        .await
    }

    async fn assign_ips(&self, eni: &EniId, count: u32) -> Result<Vec<Ipv4Addr>> {
        self.run(CallClass::Mutating, "AssignPrivateIpAddresses", || {
            self.inner.assign_ips(eni, count)
        })
        .await
    }

    async fn unassign_ips(&self, eni: &EniId, ips: &[Ipv4Addr]) -> Result<()> {
        self.run(CallClass::Mutating, "UnassignPrivateIpAddresses", || {
            self.inner.unassign_ips(eni, ips)
        })
        .await
    }

    async fn assign_prefixes(&self, eni: &EniId, count: u32) -> Result<Vec<Ipv4Network>> {
        self.run(CallClass::Mutating, "AssignPrivateIpAddresses", || {
            self.inner.assign_prefixes(eni, count)
        })
        .await
    }

    async fn unassign_prefixes(&self, eni: &EniId, prefixes: &[Ipv4Network]) -> Result<()> {
        self.run(CallClass::Mutating, "UnassignPrivateIpAddresses", || {
            self.inner.unassign_prefixes(eni, prefixes)
        })
        .await
    }

    async fn detach_and_delete_eni(&self, eni: &EniId) -> Result<()> {
        self.token(CallClass::Mutating).await;
        self.run(CallClass::Attach, "DetachNetworkInterface", || {
            self.inner.detach_and_delete_eni(eni)
        })
        .await
    }

    async fn detached_enis(&self) -> Result<Vec<DetachedEni>> {
        self.run(CallClass::Describe, "DescribeNetworkInterfaces", || {
            self.inner.detached_enis()
        })
        .await
    }

    async fn delete_eni(&self, eni: &EniId) -> Result<()> {
        self.run(CallClass::Mutating, "DeleteNetworkInterface", || {
            self.inner.delete_eni(eni)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Action, Fault, NoFabric, SimCloud, SimConfig};

    async fn budgeted(settings: BudgetSettings) -> (Arc<SimCloud>, Budget) {
        let sim = Arc::new(
            SimCloud::new(SimConfig::default(), Arc::new(NoFabric))
                .await
                .unwrap(),
        );
        let budget = Budget::new(sim.clone(), settings);
        (sim, budget)
    }

    #[test]
    fn backoff_ceiling_doubles_up_to_the_max() {
        let s = BudgetSettings::default();
        assert_eq!(s.ceiling(1), Duration::from_millis(250));
        assert_eq!(s.ceiling(2), Duration::from_millis(500));
        assert_eq!(s.ceiling(5), Duration::from_secs(4));
        assert_eq!(s.ceiling(8), Duration::from_secs(20));
        assert_eq!(s.ceiling(200), Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn calls_wait_for_tokens_instead_of_failing() {
        let settings = BudgetSettings {
            buckets: [BucketSpec::new(2.0, 1.0); 4],
            ..BudgetSettings::default()
        };
        let (sim, budget) = budgeted(settings).await;
        let eni = sim.enis().await.unwrap().remove(0).id;
        let t = Instant::now();
        for _ in 0..4 {
            budget.assign_ips(&eni, 1).await.unwrap();
        }
        // Two from the burst, then one a second.
        assert_eq!(t.elapsed(), Duration::from_secs(2));
        assert_eq!(budget.stats(CallClass::Mutating).calls, 4);
        assert_eq!(budget.stats(CallClass::Mutating).throttled, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_with_bounded_jittered_backoff() {
        let (sim, budget) = budgeted(BudgetSettings::default()).await;
        let eni = sim.enis().await.unwrap().remove(0).id;
        let vpc = sim.vpc();
        vpc.inject(Action::Assign, Fault::Throttle);
        vpc.inject(Action::Assign, Fault::ServerError);
        vpc.inject(Action::Assign, Fault::Timeout);
        let t = Instant::now();
        let ips = budget.assign_ips(&eni, 2).await.unwrap();
        assert_eq!(ips.len(), 2);
        let s = budget.stats(CallClass::Mutating);
        assert_eq!((s.calls, s.throttled, s.failed, s.retries), (4, 1, 2, 3));
        // The throttle drained the bucket, so the next two attempts wait for
        // a token each (2 s at 0.5/s; backoff sleeps overlap that wait),
        // then the 10 s timeout, then backoff ≤ 1 s: at most 15 s.
        assert!(t.elapsed() <= Duration::from_secs(15), "{:?}", t.elapsed());
        assert!(t.elapsed() >= Duration::from_secs(13), "{:?}", t.elapsed());
        assert_eq!(vpc.stats().of(Action::Assign).calls, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn verdicts_are_not_retried_and_attempts_are_bounded() {
        let settings = BudgetSettings {
            max_attempts: 3,
            ..BudgetSettings::default()
        };
        let (sim, budget) = budgeted(settings).await;
        let eni = sim.enis().await.unwrap().remove(0).id;
        assert!(matches!(
            budget.assign_ips(&eni, 100).await,
            Err(CloudError::IpLimit { .. })
        ));
        assert_eq!(budget.stats(CallClass::Mutating).calls, 1);
        for _ in 0..5 {
            sim.vpc().inject(Action::Assign, Fault::ServerError);
        }
        assert!(matches!(
            budget.assign_ips(&eni, 1).await,
            Err(CloudError::Api { .. })
        ));
        assert_eq!(budget.stats(CallClass::Mutating).calls, 4);
    }
}
