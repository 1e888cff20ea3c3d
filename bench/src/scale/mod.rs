//! The scale simulation: thousands of nodes against one simulated EC2
//! account (EC2's per-account buckets, measured latencies), in virtual time
//! (tokio's paused clock), comparing an aws-node-like policy with vpc-cni's
//! fixed and adaptive warm pools.

pub mod node;
pub mod plot;
pub mod report;

use std::sync::Arc;
use std::time::Duration;

use ipamd::alloc::AttachmentKey;
use ipamd::cloud::sim::{AccountLimits, Action, Behaviour, Latencies, SimStats, SimVpc};
use rand::Rng;
use tokio::time::Instant;

use self::node::{Node, Policy};
use self::report::Lone;

/// Nodes per /16 subnet (each holds up to ~50 addresses in these runs).
const NODES_PER_SUBNET: usize = 1000;
/// Nodes started per second (their start-up Describes stay under the
/// account's 20/s describe refill).
const START_RATE: f64 = 6.0;
/// Pods each node scales out to.
pub const PODS: usize = 30;

/// Calls the account saw during a phase, per action.
#[derive(Debug, Clone, Default)]
pub struct Calls {
    /// Per action, indexed like [`Action::ALL`]: (calls, throttled).
    pub by_action: Vec<(Action, u64, u64)>,
}

impl Calls {
    fn between(a: &SimStats, b: &SimStats) -> Self {
        Calls {
            by_action: Action::ALL
                .iter()
                .map(|&act| {
                    (
                        act,
                        b.of(act).calls - a.of(act).calls,
                        b.of(act).throttled - a.of(act).throttled,
                    )
                })
                .collect(),
        }
    }

    /// All calls.
    pub fn total(&self) -> u64 {
        self.by_action.iter().map(|c| c.1).sum()
    }

    /// All throttled answers.
    pub fn throttled(&self) -> u64 {
        self.by_action.iter().map(|c| c.2).sum()
    }

    /// Calls of one action that were not throttled.
    pub fn accepted(&self, action: Action) -> u64 {
        self.by_action
            .iter()
            .find(|c| c.0 == action)
            .map_or(0, |c| c.1 - c.2)
    }

    /// Calls that change EC2 state (everything but Describe).
    pub fn mutating(&self) -> u64 {
        self.total() - self.of(Action::Describe)
    }

    /// Calls of one action.
    pub fn of(&self, action: Action) -> u64 {
        self.by_action
            .iter()
            .find(|c| c.0 == action)
            .map_or(0, |c| c.1)
    }
}

/// What one phase measured.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// Per node: time from the phase's start to its first pod's address.
    pub first: Vec<Duration>,
    /// Per node: time to its last pod's address.
    pub all: Vec<Duration>,
    /// EC2 calls during the phase (until every pod had its address).
    pub calls: Calls,
    /// Addresses held beyond those in use, per node, at the phase's end
    /// (for the idle phase: just before the burst).
    pub idle_per_node: f64,
}

/// A fleet of nodes of one policy in one fresh account.
pub struct Fleet {
    /// Its nodes.
    pub nodes: Vec<Arc<Node>>,
    /// Pods per node.
    pub pods: Vec<std::sync::Mutex<Vec<AttachmentKey>>>,
    account: Arc<SimVpc>,
    serial: std::sync::atomic::AtomicU64,
}

fn cidr(k: usize) -> ipnetwork::Ipv4Network {
    ipnetwork::Ipv4Network::new(std::net::Ipv4Addr::new(10, k as u8, 0, 0), 16).expect("/16")
}

/// A fresh account with EC2's buckets and latencies, and enough /16
/// subnets for `nodes`.
pub fn account(nodes: usize) -> Vec<Arc<SimVpc>> {
    let behaviour = Behaviour {
        latencies: Latencies::ec2(),
        limits: Some(AccountLimits::ec2()),
        ..Behaviour::default()
    };
    let first = SimVpc::with_behaviour(cidr(0), cidr(0), behaviour).expect("valid CIDRs");
    let mut vpcs = Vec::new();
    for k in 1..nodes.div_ceil(NODES_PER_SUBNET) {
        vpcs.push(Arc::new(
            first.sibling(cidr(k), cidr(k)).expect("valid CIDRs"),
        ));
    }
    vpcs.insert(0, Arc::new(first));
    vpcs
}

impl Fleet {
    /// Launches `n` nodes of `policy` (each with `preheld` prefixes from
    /// launch), staggered at [`START_RATE`], then lets the account's
    /// buckets refill.
    pub async fn launch(policy: Policy, n: usize, preheld: u32) -> Result<Fleet, String> {
        let vpcs = account(n);
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let vpc = vpcs[i / NODES_PER_SUBNET].clone();
            let at = Duration::from_secs_f64(i as f64 / START_RATE);
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(at).await;
                Node::start(vpc, policy, preheld).await
            }));
        }
        let mut nodes = Vec::with_capacity(n);
        for t in tasks {
            nodes.push(Arc::new(t.await.map_err(|e| e.to_string())??));
        }
        // Let every bucket refill (the fullest takes 100 / 5 s).
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(Fleet {
            pods: (0..n).map(|_| std::sync::Mutex::new(Vec::new())).collect(),
            nodes,
            account: vpcs[0].clone(),
            serial: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn key(&self) -> AttachmentKey {
        let n = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        AttachmentKey::new(format!("pod{n}"), "eth0")
    }

    /// The account's counters now.
    pub fn stats(&self) -> SimStats {
        self.account.stats()
    }

    fn idle_per_node(&self) -> f64 {
        let idle: u64 = self
            .nodes
            .iter()
            .map(|n| {
                let (held, used) = n.held();
                u64::from(held.saturating_sub(used))
            })
            .sum();
        idle as f64 / self.nodes.len() as f64
    }

    /// Every node gets `pods` pods at once; returns when all have addresses.
    pub async fn scale_out(self: &Arc<Self>, pods: usize) -> Phase {
        let (t0, s0) = (Instant::now(), self.stats());
        let mut tasks = Vec::new();
        for i in 0..self.nodes.len() {
            let fleet = self.clone();
            tasks.push(tokio::spawn(async move {
                let node = fleet.nodes[i].clone();
                let adds: Vec<_> = (0..pods)
                    .map(|_| {
                        let (node, key) = (node.clone(), fleet.key());
                        tokio::spawn(async move {
                            let at = node.add(key.clone()).await;
                            (key, at)
                        })
                    })
                    .collect();
                let mut times = Vec::new();
                for a in adds {
                    let (key, at) = a.await.expect("ADD task");
                    fleet.pods[i].lock().expect("pods").push(key);
                    times.push(at.duration_since(t0));
                }
                let first = *times.iter().min().expect("pods > 0");
                let all = *times.iter().max().expect("pods > 0");
                (first, all)
            }));
        }
        let mut phase = Phase::default();
        for t in tasks {
            let (first, all) = t.await.expect("node task");
            phase.first.push(first);
            phase.all.push(all);
        }
        phase.calls = Calls::between(&s0, &self.stats());
        phase.idle_per_node = self.idle_per_node();
        phase
    }

    /// For `length`, every node replaces one pod every `every` (random
    /// phase): the pod count stays constant. Returns the calls made.
    pub async fn churn(self: &Arc<Self>, length: Duration, every: Duration) -> Phase {
        let (t0, s0) = (Instant::now(), self.stats());
        let end = t0 + length;
        let mut tasks = Vec::new();
        for i in 0..self.nodes.len() {
            let fleet = self.clone();
            tasks.push(tokio::spawn(async move {
                let phase = rand::rng().random_range(0.0..every.as_secs_f64());
                tokio::time::sleep(Duration::from_secs_f64(phase)).await;
                let node = fleet.nodes[i].clone();
                let mut worst = Duration::ZERO;
                while Instant::now() < end {
                    let old = fleet.pods[i].lock().expect("pods").pop();
                    if let Some(old) = old {
                        node.del(&old);
                    }
                    let key = fleet.key();
                    let asked = Instant::now();
                    node.add(key.clone()).await;
                    worst = worst.max(asked.elapsed());
                    fleet.pods[i].lock().expect("pods").insert(0, key);
                    tokio::time::sleep(every).await;
                }
                worst
            }));
        }
        let mut phase = Phase::default();
        for t in tasks {
            phase.all.push(t.await.expect("churn task"));
        }
        phase.calls = Calls::between(&s0, &self.stats());
        phase.idle_per_node = self.idle_per_node();
        phase
    }

    /// Deletes every pod, waits `idle`, then scales out again.
    pub async fn burst_after_idle(self: &Arc<Self>, idle: Duration, pods: usize) -> (f64, Phase) {
        for (i, node) in self.nodes.iter().enumerate() {
            for key in self.pods[i].lock().expect("pods").drain(..) {
                node.del(&key);
            }
        }
        tokio::time::sleep(idle).await;
        let held_idle = self.idle_per_node();
        (held_idle, self.scale_out(pods).await)
    }
}

/// The shortest time EC2's buckets allow for `calls` calls of a bucket of
/// `burst` tokens refilled at `rate`, plus one call's latency.
pub fn bucket_bound(calls: u64, burst: f64, rate: f64, latency: Duration) -> Duration {
    let beyond = (calls as f64 - burst).max(0.0);
    Duration::from_secs_f64(beyond / rate) + latency
}

/// The `q` quantile (0..=1) of `v` (nearest rank).
pub fn quantile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// Runs `f` on a fresh single-threaded runtime with a paused clock; every
/// task it spawned dies with the runtime.
pub fn virtual_time<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// One node started cold (`preheld`: its primary ENI holds a prefix from
/// launch) asked for [`PODS`] pods at once, in virtual time with EC2's
/// latencies and buckets: when its first and last pod got an address.
pub fn lone(policy: Policy, preheld: bool) -> Result<Lone, String> {
    virtual_time(async move {
        let vpcs = account(1);
        let t0 = tokio::time::Instant::now();
        let s0 = vpcs[0].stats();
        let node = Arc::new(Node::start(vpcs[0].clone(), policy, u32::from(preheld)).await?);
        let adds: Vec<_> = (0..PODS)
            .map(|i| {
                let node = node.clone();
                tokio::spawn(async move {
                    node.add(ipamd::alloc::AttachmentKey::new(format!("p{i}"), "eth0"))
                        .await
                })
            })
            .collect();
        let mut times = Vec::new();
        for a in adds {
            times.push(a.await.map_err(|e| e.to_string())?.duration_since(t0));
        }
        let calls = vpcs[0].stats();
        Ok(Lone {
            policy,
            preheld,
            phase: Phase {
                first: vec![*times.iter().min().expect("pods")],
                all: vec![*times.iter().max().expect("pods")],
                calls: Calls {
                    by_action: ipamd::cloud::sim::Action::ALL
                        .iter()
                        .map(|&a| {
                            (
                                a,
                                calls.of(a).calls - s0.of(a).calls,
                                calls.of(a).throttled - s0.of(a).throttled,
                            )
                        })
                        .collect(),
                },
                idle_per_node: 0.0,
            },
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_bounds() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_secs).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_secs(50));
        assert_eq!(quantile(&v, 0.99), Duration::from_secs(99));
        assert_eq!(quantile(&v, 1.0), Duration::from_secs(100));
        assert_eq!(
            bucket_bound(1000, 100.0, 5.0, Duration::from_millis(500)),
            Duration::from_millis(180_500)
        );
        assert_eq!(bucket_bound(50, 100.0, 5.0, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn subnets_are_siblings_in_one_account() {
        let vpcs = account(2500);
        assert_eq!(vpcs.len(), 3);
        assert_eq!(vpcs[2].subnet().cidr, cidr(2));
    }
}
