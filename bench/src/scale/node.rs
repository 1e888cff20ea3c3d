//! One simulated node per policy: ours (the real [`Pool`] behind the real
//! [`Budget`]) or an aws-node-like reference model.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipamd::alloc::AttachmentKey;
use ipamd::cloud::budget::{Budget, BudgetSettings};
use ipamd::cloud::sim::{NoFabric, SimCloud, SimVpc};
use ipamd::cloud::{Cloud, CloudError, EniId};
use ipamd::config::{PoolSettings, WarmPolicy};
use ipamd::pool::{NoLinks, Pool};
use rand::Rng;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What the ADD path of pod.rs waits for the pool at most.
const GROWTH_WAIT: Duration = Duration::from_secs(3600);

/// The policies compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// A model of aws-node: a 5 s pool loop, WARM_PREFIX_TARGET=1 met one
    /// prefix per loop, aws-sdk-go's default retryer (3 retries, throttle
    /// backoff 2^n × U(0.5, 1) s, 5xx 2^n × U(30, 60) ms), no client buckets.
    AwsNodeLike,
    /// vpc-cni with aws-node's default targets (WARM_PREFIX_TARGET=1).
    Fixed,
    /// vpc-cni with `VPC_CNI_WARM_POLICY=adaptive`.
    Adaptive,
}

impl Policy {
    /// All, in report order.
    pub const ALL: [Policy; 3] = [Policy::AwsNodeLike, Policy::Fixed, Policy::Adaptive];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Policy::AwsNodeLike => "aws-node-like",
            Policy::Fixed => "vpc-cni fixed",
            Policy::Adaptive => "vpc-cni adaptive",
        }
    }
}

/// One node under test.
pub enum Node {
    /// Ours.
    Ours(Arc<Pool>),
    /// The reference model.
    AwsNode(Arc<AwsNodeModel>),
}

impl Node {
    /// Launches an m5.large in `vpc` with `preheld` prefixes on its primary
    /// ENI from launch (a launch template's `Ipv4PrefixCount`), and starts
    /// its IPAM daemon.
    pub async fn start(vpc: Arc<SimVpc>, policy: Policy, preheld: u32) -> Result<Node, String> {
        let sim = Arc::new(
            SimCloud::in_vpc(vpc, "m5.large", Arc::new(NoFabric))
                .await
                .map_err(|e| e.to_string())?,
        );
        if preheld > 0 {
            sim.preassign_prefixes(preheld).map_err(|e| e.to_string())?;
        }
        match policy {
            Policy::AwsNodeLike => Ok(Node::AwsNode(AwsNodeModel::start(sim).await?)),
            Policy::Fixed | Policy::Adaptive => {
                let cloud: Arc<dyn Cloud> = Arc::new(Budget::new(sim, BudgetSettings::default()));
                let settings = PoolSettings {
                    prefix_delegation: true,
                    policy: if policy == Policy::Adaptive {
                        WarmPolicy::Adaptive
                    } else {
                        WarmPolicy::Fixed
                    },
                    ..PoolSettings::default()
                };
                let pool = Pool::start(cloud, Arc::new(NoLinks), settings, 9001, &[])
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(pool.clone().run(Duration::from_secs(30)));
                Ok(Node::Ours(pool))
            }
        }
    }

    /// One pod ADD, as pod.rs does it: an address now, or wait for the pool
    /// to grow. Returns when the pod has its address.
    pub async fn add(&self, key: AttachmentKey) -> Instant {
        match self {
            Node::Ours(pool) => {
                let deadline = Instant::now() + GROWTH_WAIT;
                loop {
                    if pool.alloc().allocate(&key).is_ok() {
                        pool.nudge();
                        return Instant::now();
                    }
                    pool.wait_for_growth(deadline.saturating_duration_since(Instant::now()))
                        .await;
                }
            }
            Node::AwsNode(m) => m.add().await,
        }
    }

    /// One pod DEL.
    pub fn del(&self, key: &AttachmentKey) {
        match self {
            Node::Ours(pool) => {
                pool.alloc().release(key);
            }
            Node::AwsNode(m) => m.del(),
        }
    }

    /// (addresses held, addresses in use).
    pub fn held(&self) -> (u32, u32) {
        match self {
            Node::Ours(pool) => {
                let u = pool.alloc().usage();
                (u.total as u32, u.used as u32)
            }
            Node::AwsNode(m) => (
                m.total.load(Ordering::Acquire),
                m.used.load(Ordering::Acquire),
            ),
        }
    }
}

/// aws-node, reduced to what matters for EC2 traffic and pod wait.
pub struct AwsNodeModel {
    sim: Arc<SimCloud>,
    eni: EniId,
    /// Its datastore's prefixes (aws-node keeps its own books).
    prefixes: std::sync::Mutex<Vec<ipnetwork::Ipv4Network>>,
    total: AtomicU32,
    used: AtomicU32,
    grown: Notify,
}

const AWS_NODE_LOOP: Duration = Duration::from_secs(5);
const PREFIX: u32 = 16;
/// aws-node returns a free prefix after its 30 s decrease interval when
/// more than WARM_PREFIX_TARGET prefixes are free.
const AWS_NODE_DECREASE: Duration = Duration::from_secs(30);

impl AwsNodeModel {
    async fn start(sim: Arc<SimCloud>) -> Result<Arc<Self>, String> {
        // aws-node describes its ENIs at start, too.
        let enis = sdk_retry(|| sim.enis()).await.map_err(|e| e.to_string())?;
        let primary = &enis[0];
        let m = Arc::new(AwsNodeModel {
            eni: primary.id.clone(),
            total: AtomicU32::new(primary.prefixes.len() as u32 * PREFIX),
            prefixes: std::sync::Mutex::new(primary.prefixes.clone()),
            used: AtomicU32::new(0),
            grown: Notify::new(),
            sim,
        });
        let run = m.clone();
        tokio::spawn(async move { run.run().await });
        Ok(m)
    }

    async fn run(self: Arc<Self>) {
        // Nodes start at random phases of their loop.
        let phase = rand::rng().random_range(0.0..AWS_NODE_LOOP.as_secs_f64());
        tokio::time::sleep(Duration::from_secs_f64(phase)).await;
        let mut last_decrease = Instant::now();
        loop {
            let (total, used) = (
                self.total.load(Ordering::Acquire),
                self.used.load(Ordering::Acquire),
            );
            if total - used < PREFIX && total / PREFIX < 9 {
                if let Ok(p) = sdk_retry(|| self.sim.assign_prefixes(&self.eni, 1)).await {
                    self.total
                        .fetch_add(p.len() as u32 * PREFIX, Ordering::AcqRel);
                    self.prefixes.lock().expect("model mutex").extend(p);
                    self.grown.notify_waiters();
                }
            } else if total - used >= 2 * PREFIX && last_decrease.elapsed() >= AWS_NODE_DECREASE {
                // Free a whole prefix: the model keeps the used addresses
                // packed, so the highest prefix is the free one.
                last_decrease = Instant::now();
                let last = self.prefixes.lock().expect("model mutex").last().copied();
                if let Some(p) = last {
                    let one = [p];
                    if sdk_retry(|| self.sim.unassign_prefixes(&self.eni, &one))
                        .await
                        .is_ok()
                    {
                        self.total.fetch_sub(PREFIX, Ordering::AcqRel);
                        self.prefixes.lock().expect("model mutex").pop();
                    }
                }
            }
            tokio::time::sleep(AWS_NODE_LOOP).await;
        }
    }

    async fn add(&self) -> Instant {
        loop {
            let grown = self.grown.notified();
            let used = self.used.load(Ordering::Acquire);
            if used < self.total.load(Ordering::Acquire)
                && self
                    .used
                    .compare_exchange(used, used + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return Instant::now();
            }
            grown.await;
        }
    }

    fn del(&self) {
        self.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// aws-sdk-go's default retryer: 3 retries; throttling backs off
/// 2^n × U(0.5, 1) s, other transient errors 2^n × U(30, 60) ms.
async fn sdk_retry<T, F, Fut>(call: F) -> Result<T, CloudError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, CloudError>>,
{
    let mut n = 0u32;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && n < 3 => {
                let (lo, hi) = if matches!(e, CloudError::Throttled { .. }) {
                    (0.5, 1.0)
                } else {
                    (0.03, 0.06)
                };
                let d = f64::from(1u32 << n) * rand::rng().random_range(lo..hi);
                tokio::time::sleep(Duration::from_secs_f64(d)).await;
                n += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
