//! The warm pool: keeps free addresses on the node's ENIs so ADD never waits
//! for the cloud.
//!
//! This is the simple first version: it fills towards aws-node's targets
//! (`WARM_ENI_TARGET`, `WARM_IP_TARGET`, `MINIMUM_IP_TARGET`, `MAX_ENI`),
//! assigning whole ENIs' worth of addresses at a time in ENI mode, and
//! attaching ENIs up to the instance type's limit. The decision ([`plan`]) is
//! pure; [`Pool`] executes it without holding any lock across a cloud call.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::alloc::{Allocator, AttachmentKey, Usage};
use crate::cloud::{Cloud, CloudError, Eni, InstanceLimits, NodeInfo};
use crate::config::PoolSettings;
use crate::dataplane::NetlinkDataplane;

/// What the pool should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing: the pool meets its target or cannot grow.
    Idle,
    /// Assign `count` addresses to the ENI at `device_index`.
    Assign {
        /// The ENI's device index.
        device_index: u32,
        /// How many.
        count: u32,
    },
    /// Attach a new ENI at `device_index`.
    Attach {
        /// The device index to use.
        device_index: u32,
    },
}

/// The limits the pool works within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// ENIs this node may have (instance type, capped by `MAX_ENI`).
    pub max_enis: u32,
    /// Secondary addresses per ENI (the instance type's IPv4 limit − 1).
    pub ips_per_eni: u32,
}

impl Limits {
    /// From the instance type and settings.
    pub fn new(instance: &InstanceLimits, settings: &PoolSettings) -> Self {
        let max_enis = settings
            .max_eni
            .map_or(instance.max_enis, |m| m.min(instance.max_enis));
        Self {
            max_enis,
            ips_per_eni: instance.ipv4_per_eni.saturating_sub(1),
        }
    }

    /// The most pod addresses this node may hold.
    pub fn capacity(&self) -> u32 {
        self.max_enis * self.ips_per_eni
    }
}

/// How many addresses the pool should hold for `used` pods.
pub fn desired_total(settings: &PoolSettings, limits: &Limits, used: u32) -> u32 {
    let want = match settings.warm_ip_target {
        Some(warm) => used.saturating_add(warm),
        None => used.saturating_add(settings.warm_eni_target.saturating_mul(limits.ips_per_eni)),
    };
    // At least one free address, so an ADD that finds the pool empty
    // always makes it grow (WARM_IP_TARGET=0 would otherwise stall it).
    want.max(used.saturating_add(1))
        .max(settings.minimum_ip_target.unwrap_or(0))
        .min(limits.capacity())
}

/// The next step towards the target, given the addresses per ENI
/// (device index → secondary address count).
pub fn plan(
    settings: &PoolSettings,
    limits: &Limits,
    enis: &BTreeMap<u32, u32>,
    used: u32,
) -> Step {
    let total: u32 = enis.values().sum();
    let desired = desired_total(settings, limits, used);
    if total >= desired {
        return Step::Idle;
    }
    let missing = desired - total;
    if let Some((&device_index, &have)) = enis.iter().find(|(_, &n)| n < limits.ips_per_eni) {
        let room = limits.ips_per_eni - have;
        // ENI mode takes a whole ENI's worth in one call (fewer EC2 calls);
        // WARM_IP_TARGET mode takes exactly what is missing.
        let count = if settings.warm_ip_target.is_some() {
            missing.min(room)
        } else {
            room
        };
        return Step::Assign {
            device_index,
            count,
        };
    }
    if (enis.len() as u32) < limits.max_enis {
        let device_index = (0..).find(|i| !enis.contains_key(i)).unwrap_or(0);
        return Step::Attach { device_index };
    }
    Step::Idle
}

/// The route table of a secondary ENI: its device index + 1, as aws-node.
pub fn eni_table(device_index: u32) -> Option<u32> {
    (device_index > 0).then_some(device_index + 1)
}

/// The pool controller.
pub struct Pool {
    cloud: Arc<dyn Cloud>,
    alloc: Arc<Allocator>,
    dataplane: Arc<NetlinkDataplane>,
    /// Swapped whole by live tuning ([`Self::update_settings`]); read
    /// through [`Self::settings`] once per decision.
    settings: ArcSwap<PoolSettings>,
    node: NodeInfo,
    limits: Limits,
    mtu: u32,
    enis: Mutex<BTreeMap<u32, Eni>>,
    /// ENIs attached but whose link is not set up yet (device indexes).
    unlinked: Mutex<BTreeSet<u32>>,
    wake: Notify,
    grown: Notify,
    ready: AtomicBool,
    /// Why the pool last failed to grow (shown in ADD errors and status).
    blocked: Mutex<Option<String>>,
}

impl Pool {
    /// Reads the node and its ENIs, sets up secondary ENI links, and puts
    /// their addresses into the allocator. Does not grow the pool yet.
    /// `held` are allocations from before a restart: their addresses are
    /// reserved before any ENI's addresses enter the allocator, so they are
    /// never handed to another pod.
    pub async fn start(
        cloud: Arc<dyn Cloud>,
        dataplane: Arc<NetlinkDataplane>,
        settings: PoolSettings,
        mtu: u32,
        held: &[(AttachmentKey, Ipv4Addr)],
    ) -> Result<Arc<Self>, CloudError> {
        let node = cloud.node().await?;
        let limits = Limits::new(&node.limits, &settings);
        let alloc = Arc::new(Allocator::new(
            limits.capacity() as usize,
            settings.cooldown,
        ));
        for (key, addr) in held {
            if let Err(e) = alloc.reserve(key, *addr) {
                tracing::warn!(container_id = %key.container_id, error = %e, "allocation from the checkpoint not restored");
            }
        }
        let pool = Arc::new(Self {
            cloud: cloud.clone(),
            alloc,
            dataplane,
            settings: ArcSwap::from_pointee(settings),
            node,
            limits,
            mtu,
            enis: Mutex::new(BTreeMap::new()),
            unlinked: Mutex::new(BTreeSet::new()),
            wake: Notify::new(),
            grown: Notify::new(),
            ready: AtomicBool::new(false),
            blocked: Mutex::new(None),
        });
        for eni in cloud.enis().await? {
            if let Err(e) = pool.adopt(eni).await {
                // Retried by every fill; the pool reports itself blocked.
                tracing::warn!(error = %e, "ENI attached but not usable yet");
                *pool.blocked.lock().expect("pool mutex poisoned") = Some(e.to_string());
            }
        }
        tracing::info!(
            instance_id = %pool.node.instance_id,
            instance_type = %pool.node.limits.name,
            max_enis = pool.limits.max_enis,
            ips_per_eni = pool.limits.ips_per_eni,
            "pool started"
        );
        Ok(pool)
    }

    /// Takes an attached ENI into the pool. A secondary ENI's link is set up
    /// first; if that fails (on EC2 the link can appear late) the ENI is
    /// still recorded, so its device index is not attached again, but its
    /// addresses wait until [`Self::relink`] succeeds.
    async fn adopt(&self, eni: Eni) -> Result<(), CloudError> {
        let linked = self.link(&eni).await;
        let (index, ips) = (eni.device_index, eni.secondary_ips.clone());
        self.enis
            .lock()
            .expect("pool mutex poisoned")
            .insert(index, eni);
        match linked {
            Ok(()) => {
                self.grow_alloc(index, &ips);
                Ok(())
            }
            Err(e) => {
                self.unlinked
                    .lock()
                    .expect("pool mutex poisoned")
                    .insert(index);
                Err(e)
            }
        }
    }

    /// Sets up a secondary ENI's link and route table (nothing for the primary).
    async fn link(&self, eni: &Eni) -> Result<(), CloudError> {
        let Some(table) = eni_table(eni.device_index) else {
            return Ok(());
        };
        let dp = self.dataplane.clone();
        let (mac, gw, mtu) = (eni.mac, eni.subnet.gateway(), self.mtu);
        let name = tokio::task::spawn_blocking(move || dp.setup_eni(mac, table, gw, mtu))
            .await
            .map_err(|e| link_error(eni, e.to_string()))?
            .map_err(|e| link_error(eni, e.to_string()))?;
        tracing::info!(eni = %eni.id, link = %name, table, "secondary ENI link set up");
        Ok(())
    }

    /// Retries the link set-up of ENIs whose first attempt failed; their
    /// addresses join the allocator once it succeeds.
    async fn relink(&self) -> Result<(), CloudError> {
        let pending: Vec<u32> = self
            .unlinked
            .lock()
            .expect("pool mutex poisoned")
            .iter()
            .copied()
            .collect();
        for index in pending {
            let Some(eni) = self
                .enis
                .lock()
                .expect("pool mutex poisoned")
                .get(&index)
                .cloned()
            else {
                continue;
            };
            self.link(&eni).await?;
            self.unlinked
                .lock()
                .expect("pool mutex poisoned")
                .remove(&index);
            self.grow_alloc(index, &eni.secondary_ips);
        }
        Ok(())
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<PoolSettings> {
        self.settings.load_full()
    }

    /// Live tuning: new targets take effect at the next fill, which this
    /// starts. Limits (`MAX_ENI`) and the cooldown are fixed at start.
    pub fn update_settings(&self, settings: PoolSettings) {
        self.settings.store(Arc::new(settings));
        self.nudge();
    }

    /// How many addresses the pool aims to hold now.
    pub fn desired_total(&self) -> u32 {
        desired_total(
            &self.settings(),
            &self.limits,
            self.alloc.usage().used as u32,
        )
    }

    /// Node identity.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether the first fill has finished (STATUS, "starting" answers).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// ENIs with their addresses.
    pub fn enis(&self) -> Vec<Eni> {
        self.enis
            .lock()
            .expect("pool mutex poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Why the pool cannot grow, if it cannot.
    pub fn blocked_reason(&self) -> Option<String> {
        self.blocked.lock().expect("pool mutex poisoned").clone()
    }

    /// Whether more addresses could still come (not at the limit, not blocked).
    pub fn can_grow(&self) -> bool {
        self.alloc.usage().total < self.limits.capacity() as usize
            && self.blocked_reason().is_none()
    }

    /// Asks the controller to re-check its target (after an allocation).
    pub fn nudge(&self) {
        self.wake.notify_one();
    }

    /// Waits until the pool grows or `timeout` passes.
    pub async fn wait_for_growth(&self, timeout: Duration) {
        let grown = self.grown.notified();
        self.nudge();
        let _ = tokio::time::timeout(timeout, grown).await;
    }

    /// The message ADD returns when no address is left.
    pub fn exhausted_message(&self, usage: Usage) -> String {
        let mut msg = format!(
            "no free pod address on this node: all {} addresses are in use; the node may hold at most {} ({}: {} ENIs x {} secondary IPs",
            usage.total,
            self.limits.capacity(),
            self.node.limits.name,
            self.limits.max_enis,
            self.limits.ips_per_eni,
        );
        if let Some(max) = self.settings().max_eni {
            msg.push_str(&format!(", MAX_ENI={max}"));
        }
        msg.push(')');
        if let Some(reason) = self.blocked_reason() {
            msg.push_str(&format!("; the pool cannot grow: {reason}"));
        }
        msg
    }

    /// Runs one fill pass: steps until the target is met or a step fails.
    pub async fn fill(&self) {
        if let Err(e) = self.relink().await {
            tracing::warn!(error = %e, "ENI link still not usable");
            *self.blocked.lock().expect("pool mutex poisoned") = Some(e.to_string());
            self.grown.notify_waiters();
            self.ready.store(true, Ordering::Release);
            return;
        }
        loop {
            let counts: BTreeMap<u32, u32> = {
                let unlinked = self.unlinked.lock().expect("pool mutex poisoned").clone();
                self.enis
                    .lock()
                    .expect("pool mutex poisoned")
                    .iter()
                    // An ENI without its link takes no new addresses.
                    .map(|(i, e)| {
                        let n = if unlinked.contains(i) {
                            self.limits.ips_per_eni
                        } else {
                            e.secondary_ips.len() as u32
                        };
                        (*i, n)
                    })
                    .collect()
            };
            let used = self.alloc.usage().used as u32;
            let step = plan(&self.settings(), &self.limits, &counts, used);
            let result = match step {
                Step::Idle => break,
                Step::Assign {
                    device_index,
                    count,
                } => self.assign(device_index, count).await,
                Step::Attach { device_index } => match self.cloud.attach_eni(device_index).await {
                    Ok(eni) => {
                        tracing::info!(eni = %eni.id, device_index, "ENI attached");
                        self.adopt(eni).await
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => {
                    *self.blocked.lock().expect("pool mutex poisoned") = None;
                    self.grown.notify_waiters();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pool cannot grow");
                    *self.blocked.lock().expect("pool mutex poisoned") = Some(e.to_string());
                    self.grown.notify_waiters();
                    break;
                }
            }
        }
        self.ready.store(true, Ordering::Release);
    }

    async fn assign(&self, device_index: u32, count: u32) -> Result<(), CloudError> {
        let id = match self
            .enis
            .lock()
            .expect("pool mutex poisoned")
            .get(&device_index)
        {
            Some(e) => e.id.clone(),
            None => return Ok(()),
        };
        let ips: Vec<Ipv4Addr> = self.cloud.assign_ips(&id, count).await?;
        tracing::info!(eni = %id, count = ips.len(), "addresses assigned");
        if let Some(eni) = self
            .enis
            .lock()
            .expect("pool mutex poisoned")
            .get_mut(&device_index)
        {
            eni.secondary_ips.extend_from_slice(&ips);
        }
        self.grow_alloc(device_index, &ips);
        Ok(())
    }

    fn grow_alloc(&self, device_index: u32, ips: &[Ipv4Addr]) {
        // The allocator is sized for the node's limits, which the pool never
        // exceeds; if it ever did, the extra addresses simply stay unused.
        if let Err(e) = self.alloc.grow(device_index, ips) {
            tracing::error!(error = %e, device_index, "addresses not added to the allocator");
        }
    }

    /// The allocator the pool fills.
    pub fn alloc(&self) -> &Arc<Allocator> {
        &self.alloc
    }

    /// The controller loop: fill now, then whenever nudged, and every
    /// `resync` (a blocked pool retries then: a subnet may have freed up).
    pub async fn run(self: Arc<Self>, resync: Duration) {
        // A blocked pool (subnet full, limit, throttled) is retried once per
        // `resync`, not on every ADD's nudge: otherwise each pod would cost
        // one more failing cloud call.
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            let now = tokio::time::Instant::now();
            if retry_at.is_some_and(|t| now >= t) {
                *self.blocked.lock().expect("pool mutex poisoned") = None;
                retry_at = None;
            }
            if self.blocked_reason().is_none() {
                self.fill().await;
                if self.blocked_reason().is_some() {
                    retry_at = Some(tokio::time::Instant::now() + resync);
                }
            }
            let wait = retry_at.map_or(resync, |t| t.saturating_duration_since(now));
            let _ = tokio::time::timeout(wait, self.wake.notified()).await;
        }
    }
}

fn link_error(eni: &Eni, message: String) -> CloudError {
    CloudError::Link {
        eni: eni.id.clone(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PoolSettings {
        PoolSettings {
            warm_eni_target: 1,
            warm_ip_target: None,
            minimum_ip_target: None,
            max_eni: None,
            cooldown: Duration::from_secs(30),
        }
    }

    fn m5_large() -> Limits {
        Limits {
            max_enis: 3,
            ips_per_eni: 9,
        }
    }

    #[test]
    fn cold_node_fills_its_primary_eni_at_once() {
        let enis = BTreeMap::from([(0, 0)]);
        assert_eq!(
            plan(&settings(), &m5_large(), &enis, 0),
            Step::Assign {
                device_index: 0,
                count: 9
            }
        );
    }

    #[test]
    fn full_eni_with_pods_attaches_the_next() {
        let enis = BTreeMap::from([(0, 9)]);
        assert_eq!(plan(&settings(), &m5_large(), &enis, 0), Step::Idle);
        assert_eq!(
            plan(&settings(), &m5_large(), &enis, 3),
            Step::Attach { device_index: 1 }
        );
    }

    #[test]
    fn warm_ip_target_takes_exactly_what_is_missing() {
        let s = PoolSettings {
            warm_ip_target: Some(2),
            ..settings()
        };
        let enis = BTreeMap::from([(0, 1)]);
        assert_eq!(
            plan(&s, &m5_large(), &enis, 1),
            Step::Assign {
                device_index: 0,
                count: 2
            }
        );
    }

    #[test]
    fn never_beyond_max_eni_or_capacity() {
        let s = PoolSettings {
            max_eni: Some(1),
            ..settings()
        };
        let l = Limits::new(
            &InstanceLimits {
                name: "t3.medium".into(),
                max_enis: 3,
                ipv4_per_eni: 6,
                vcpus: 2,
            },
            &s,
        );
        assert_eq!(l.capacity(), 5);
        let enis = BTreeMap::from([(0, 5)]);
        assert_eq!(plan(&s, &l, &enis, 5), Step::Idle);
        assert_eq!(desired_total(&s, &l, 5), 5);
    }

    #[test]
    fn minimum_ip_target_is_a_floor() {
        let s = PoolSettings {
            warm_ip_target: Some(1),
            minimum_ip_target: Some(12),
            ..settings()
        };
        assert_eq!(desired_total(&s, &m5_large(), 0), 12);
    }

    #[test]
    fn secondary_enis_get_their_own_table() {
        assert_eq!(eni_table(0), None);
        assert_eq!(eni_table(1), Some(2));
    }
}
