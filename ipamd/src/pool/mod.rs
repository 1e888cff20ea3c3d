//! The warm pool: keeps free addresses on the node's ENIs so ADD never waits
//! for the cloud, and gives back what it does not need without thrashing.
//!
//! Targets follow aws-node (`WARM_ENI_TARGET`, `WARM_IP_TARGET`,
//! `MINIMUM_IP_TARGET`, `WARM_PREFIX_TARGET`, `ENABLE_PREFIX_DELEGATION`,
//! `MAX_ENI`) or, opt-in, the adaptive model of [`adaptive`]. Decisions are
//! pure ([`plan`]); [`Pool`] executes them without holding a lock across a
//! cloud call. In prefix mode, a subnet without a free /28
//! (`InsufficientCidrBlocks`) makes the pool fall back to /32s for
//! [`PREFIX_RETRY`], after which prefixes are tried again; the /32s are the
//! first surplus returned. Surplus goes back to EC2 only above the target
//! plus one growth step, and only once it has lasted `release_delay`.
//! Inventory is checked against EC2 at start and then at a jittered
//! interval of minutes (never polled in steady state): leaked ENIs are
//! deleted, addresses EC2 holds for us that we do not know are returned.

pub mod adaptive;
pub use vpc_cni_core::plan;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rand::Rng;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::alloc::{Allocator, AttachmentKey, Usage};
use crate::cloud::{Cloud, CloudError, Eni, EniId, MacAddr, NodeInfo};
use crate::dataplane::{DataplaneError, NetlinkDataplane};
use crate::identity::eni_table;
use vpc_cni_core::plan::{PoolSettings, WarmPolicy};

use self::adaptive::ArrivalModel;
use self::plan::SurplusTimer;
pub use self::plan::{EniState, Grow, Limits, Step, Target, PREFIX_SIZE};

/// How long the pool stays on /32s after EC2 said the subnet has no free /28.
pub const PREFIX_RETRY: Duration = Duration::from_secs(300);

/// How long a fill waits before its first EC2 call, so that the ADDs of a
/// burst (arriving within microseconds of each other) all count as demand
/// and one call of the right size serves them. Short beside an Assign's
/// ≈ 0.5 s.
pub const COALESCE: Duration = Duration::from_millis(20);

/// How long after a throttled or very slow refill the adaptive policy
/// grows for waiting pods only (its warm margin waits for the account).
pub const CONGESTION_HOLD: Duration = Duration::from_secs(60);

/// Below this pod arrival rate (per second) a node counts as quiet.
pub const QUIET_RATE: f64 = 0.005;

/// How often the pool looks for surplus (a local scan, no EC2 call).
const SURPLUS_TICK: Duration = Duration::from_secs(30);

/// Sets up the node side of a secondary ENI (find the link by MAC, MTU, up,
/// its route table). Blocking; the pool calls it off the runtime.
pub trait EniLinker: Send + Sync + 'static {
    /// Returns the link's name.
    fn setup_eni(
        &self,
        mac: MacAddr,
        table: u32,
        gateway: Ipv4Addr,
        mtu: u32,
    ) -> Result<String, DataplaneError>;
}

impl EniLinker for NetlinkDataplane {
    fn setup_eni(
        &self,
        mac: MacAddr,
        table: u32,
        gateway: Ipv4Addr,
        mtu: u32,
    ) -> Result<String, DataplaneError> {
        NetlinkDataplane::setup_eni(self, mac, table, gateway, mtu)
    }
}

/// No node side at all (simulations without a kernel dataplane).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLinks;

impl EniLinker for NoLinks {
    fn setup_eni(
        &self,
        mac: MacAddr,
        _: u32,
        _: Ipv4Addr,
        _: u32,
    ) -> Result<String, DataplaneError> {
        Ok(format!("eni-{mac}"))
    }
}

/// Mutable state of the controller, behind one std mutex (never held
/// across an `.await`).
struct State {
    enis: BTreeMap<u32, Eni>,
    /// ENIs attached but whose link is not set up yet (device indexes).
    unlinked: BTreeSet<u32>,
    /// Why the pool last failed to grow (shown in ADD errors and status).
    blocked: Option<String>,
    /// In prefix mode: /32s until then (the subnet had no free /28).
    fallback_until: Option<Instant>,
    model: ArrivalModel,
    surplus: SurplusTimer,
    /// Addresses EC2 lists on our ENIs that we do not know, first seen when.
    strangers: HashMap<Ipv4Addr, Instant>,
    /// Until then the account is throttling us: the adaptive policy grows
    /// for waiting pods only, not for its warm margin.
    congested_until: Option<Instant>,
    /// Detached ENIs tagged for this node, first seen when.
    detached_seen: HashMap<EniId, Instant>,
}

/// Where the pool counts leak collection and cloud-side reconcile.
#[derive(Clone)]
pub struct PoolEvents {
    /// Leak collection (`eni_deleted`, `eni_delete_failed`).
    pub leaks: crate::metrics::EventMetrics,
    /// Reconcile with EC2 (`cloud_ips_returned`).
    pub reconcile: crate::metrics::EventMetrics,
}

/// The pool controller.
pub struct Pool {
    cloud: Arc<dyn Cloud>,
    alloc: Arc<Allocator>,
    linker: Arc<dyn EniLinker>,
    /// Swapped whole by live tuning ([`Self::update_settings`]); read
    /// through [`Self::settings`] once per decision.
    settings: ArcSwap<PoolSettings>,
    node: NodeInfo,
    limits: Limits,
    mtu: u32,
    state: Mutex<State>,
    waiting: AtomicU32,
    wake: Notify,
    grown: Notify,
    ready: AtomicBool,
    /// Leak collection and cloud-side reconcile events (set by the daemon).
    events: std::sync::OnceLock<PoolEvents>,
}

impl Pool {
    /// Reads the node and its ENIs, sets up secondary ENI links, puts their
    /// addresses into the allocator and collects leaked ENIs. Does not grow
    /// the pool yet. `held` are allocations from before a restart: their
    /// addresses are reserved before any ENI's addresses enter the
    /// allocator, so they are never handed to another pod.
    pub async fn start(
        cloud: Arc<dyn Cloud>,
        linker: Arc<dyn EniLinker>,
        settings: PoolSettings,
        mtu: u32,
        held: &[(AttachmentKey, Ipv4Addr)],
    ) -> Result<Arc<Self>, CloudError> {
        let node = cloud.node().await?;
        let enis = cloud.enis().await?;
        Self::start_for(node, enis, cloud, linker, settings, mtu, held).await
    }

    /// [`Self::start`] for a node and ENIs the caller has already read (the
    /// daemon needs the identity for SNAT and the ENIs for reconcile first),
    /// so a start asks IMDS and EC2 once each.
    pub async fn start_for(
        node: NodeInfo,
        enis: Vec<Eni>,
        cloud: Arc<dyn Cloud>,
        linker: Arc<dyn EniLinker>,
        settings: PoolSettings,
        mtu: u32,
        held: &[(AttachmentKey, Ipv4Addr)],
    ) -> Result<Arc<Self>, CloudError> {
        let limits = Limits::new(&node.limits, &settings);
        // Room for fallback /32s on top of prefixes.
        let alloc = Arc::new(Allocator::new(
            (limits.capacity() + limits.ips_per_eni) as usize,
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
            linker,
            settings: ArcSwap::from_pointee(settings),
            node,
            limits,
            mtu,
            state: Mutex::new(State {
                enis: BTreeMap::new(),
                unlinked: BTreeSet::new(),
                blocked: None,
                fallback_until: None,
                model: ArrivalModel::new(Instant::now()),
                surplus: SurplusTimer::default(),
                strangers: HashMap::new(),
                congested_until: None,
                detached_seen: HashMap::new(),
            }),
            waiting: AtomicU32::new(0),
            wake: Notify::new(),
            grown: Notify::new(),
            ready: AtomicBool::new(false),
            events: std::sync::OnceLock::new(),
        });
        for eni in enis {
            if let Err(e) = pool.adopt(eni).await {
                // Retried by every fill; the pool reports itself blocked.
                tracing::warn!(error = %e, "ENI attached but not usable yet");
                pool.lock().blocked = Some(e.to_string());
            }
        }
        tracing::info!(
            instance_id = %pool.node.instance_id,
            instance_type = %pool.node.limits.name,
            max_enis = pool.limits.max_enis,
            ips_per_eni = pool.limits.ips_per_eni,
            prefix_delegation = pool.settings().prefix_delegation,
            policy = ?pool.settings().policy,
            "pool started"
        );
        Ok(pool)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("pool mutex poisoned")
    }

    /// Takes an attached ENI into the pool. A secondary ENI's link is set up
    /// first; if that fails (on EC2 the link can appear late) the ENI is
    /// still recorded, so its device index is not attached again, but its
    /// addresses wait until [`Self::relink`] succeeds.
    async fn adopt(&self, eni: Eni) -> Result<(), CloudError> {
        let linked = self.link(&eni).await;
        let index = eni.device_index;
        let addrs = addresses_of(&eni);
        self.lock().enis.insert(index, eni);
        match linked {
            Ok(()) => {
                self.grow_alloc(index, &addrs);
                Ok(())
            }
            Err(e) => {
                self.lock().unlinked.insert(index);
                Err(e)
            }
        }
    }

    /// Sets up a secondary ENI's link and route table (nothing for the primary).
    async fn link(&self, eni: &Eni) -> Result<(), CloudError> {
        let Some(table) = eni_table(eni.device_index) else {
            return Ok(());
        };
        let linker = self.linker.clone();
        let (mac, gw, mtu) = (eni.mac, eni.subnet.gateway(), self.mtu);
        let name = tokio::task::spawn_blocking(move || linker.setup_eni(mac, table, gw, mtu))
            .await
            .map_err(|e| link_error(eni, e.to_string()))?
            .map_err(|e| link_error(eni, e.to_string()))?;
        tracing::info!(eni = %eni.id, link = %name, table, "secondary ENI link set up");
        Ok(())
    }

    /// Retries the link set-up of ENIs whose first attempt failed; their
    /// addresses join the allocator once it succeeds.
    async fn relink(&self) -> Result<(), CloudError> {
        let pending: Vec<u32> = self.lock().unlinked.iter().copied().collect();
        for index in pending {
            let Some(eni) = self.lock().enis.get(&index).cloned() else {
                continue;
            };
            self.link(&eni).await?;
            self.lock().unlinked.remove(&index);
            self.grow_alloc(index, &addresses_of(&eni));
        }
        Ok(())
    }

    /// Node identity.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<PoolSettings> {
        self.settings.load_full()
    }

    /// Live tuning: new targets take effect at the next fill, which this
    /// starts. Limits (`MAX_ENI`), the mode and the cooldown are fixed at start.
    pub fn update_settings(&self, settings: PoolSettings) {
        self.settings.store(Arc::new(settings));
        self.nudge();
    }

    /// Counts leak collection and reconcile in these metrics.
    pub fn observe_with(&self, events: PoolEvents) {
        let _ = self.events.set(events);
    }

    /// Runs `f` on the event metrics, once the daemon has set them.
    fn with_events(&self, f: impl FnOnce(&PoolEvents)) {
        if let Some(e) = self.events.get() {
            f(e);
        }
    }

    fn leak_event(&self, kind: &'static str) {
        self.with_events(|e| e.leaks.event(kind, 1));
    }

    /// How many addresses the pool aims to hold now.
    pub fn desired_total(&self) -> u32 {
        self.target().total
    }

    /// Whether the first fill has finished (STATUS, "starting" answers).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// ENIs with their addresses.
    pub fn enis(&self) -> Vec<Eni> {
        self.lock().enis.values().cloned().collect()
    }

    /// Why the pool cannot grow, if it cannot.
    pub fn blocked_reason(&self) -> Option<String> {
        self.lock().blocked.clone()
    }

    /// Whether the pool is growing with /32s because the subnet had no /28.
    pub fn in_prefix_fallback(&self) -> bool {
        self.lock()
            .fallback_until
            .is_some_and(|t| Instant::now() < t)
    }

    /// Whether more addresses could still come (not at the limit, not blocked).
    pub fn can_grow(&self) -> bool {
        self.alloc.usage().total < self.limits.capacity() as usize
            && self.blocked_reason().is_none()
    }

    /// Called after each allocation: counts the arrival (adaptive policy)
    /// and asks the controller to re-check its target.
    pub fn nudge(&self) {
        self.lock().model.arrivals(1, Instant::now());
        self.wake.notify_one();
    }

    /// Waits until the pool grows or `timeout` passes. While waiting, the
    /// caller counts as demand, so the next growth step is sized for every
    /// waiting ADD at once.
    pub async fn wait_for_growth(&self, timeout: Duration) {
        let grown = self.grown.notified();
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
        let _ = tokio::time::timeout(timeout, grown).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }

    /// The message ADD returns when no address is left.
    pub fn exhausted_message(&self, usage: Usage) -> String {
        let mut msg = format!(
            "no free pod address on this node: all {} addresses are in use; the node may hold at most {} ({}: {} ENIs x {} {}",
            usage.total,
            self.limits.capacity(),
            self.node.limits.name,
            self.limits.max_enis,
            self.limits.ips_per_eni,
            if self.settings().prefix_delegation { "prefixes" } else { "secondary IPs" },
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

    /// The target for the current use. On a quiet node (under one pod
    /// arrival per [`QUIET_RATE`]⁻¹ seconds, as the arrival model's ten-minute
    /// memory sees it) the slack is dropped: hysteresis protects a node
    /// with traffic from thrashing, an idle one gives its spare prefix back.
    pub fn target(&self) -> Target {
        let mut t = self.raw_target();
        if self.lock().model.rate(Instant::now()) < QUIET_RATE {
            t.slack = 0;
        }
        t
    }

    fn raw_target(&self) -> Target {
        let used = self.alloc.usage().used as u32;
        let waiting = self.waiting.load(Ordering::Acquire);
        match self.settings().policy {
            WarmPolicy::Fixed => plan::fixed_target(&self.settings(), &self.limits, used, waiting),
            WarmPolicy::Adaptive => {
                let now = Instant::now();
                let mut st = self.lock();
                let congested = st.congested_until.is_some_and(|t| now < t);
                let warm = if congested { 0 } else { st.model.warm(now) };
                drop(st);
                let demand = used.saturating_add(waiting);
                let slack = if self.settings().prefix_delegation {
                    PREFIX_SIZE
                } else {
                    (warm / 2).max(2)
                };
                plan::finish(
                    &self.settings(),
                    &self.limits,
                    demand,
                    demand.saturating_add(warm),
                    slack,
                )
            }
        }
    }

    /// Addresses on ENIs whose link is usable: what [`Self::view`] counts
    /// as the pool's total, without looking at the allocator.
    fn usable_total(&self) -> u32 {
        let st = self.lock();
        st.enis
            .values()
            .filter(|e| !st.unlinked.contains(&e.device_index))
            .map(address_count)
            .sum()
    }

    /// The planner's view of the ENIs, and the addresses on usable ones.
    fn view(&self) -> (Vec<EniState>, u32) {
        let free = self.alloc.free_by_eni();
        let st = self.lock();
        let mut total = 0;
        let enis = st
            .enis
            .values()
            .map(|e| {
                let usable = !st.unlinked.contains(&e.device_index);
                let f: HashSet<Ipv4Addr> = free
                    .get(&e.device_index)
                    .map(|v| v.iter().copied().collect())
                    .unwrap_or_default();
                if usable {
                    total += address_count(e);
                }
                EniState {
                    device_index: e.device_index,
                    ips: e.secondary_ips.len() as u32,
                    prefixes: e.prefixes.len() as u32,
                    free_ips: e.secondary_ips.iter().filter(|ip| f.contains(ip)).count() as u32,
                    free_prefixes: e
                        .prefixes
                        .iter()
                        .filter(|p| p.iter().all(|ip| f.contains(&ip)))
                        .count() as u32,
                    usable,
                }
            })
            .collect();
        (enis, total)
    }

    fn grow_mode(&self) -> Grow {
        if self.settings().prefix_delegation && !self.in_prefix_fallback() {
            Grow::Prefixes
        } else {
            Grow::Ips
        }
    }

    /// Runs one fill pass: steps until the target is met or a step fails.
    pub async fn fill(&self) {
        if let Err(e) = self.relink().await {
            tracing::warn!(error = %e, "ENI link still not usable");
            self.lock().blocked = Some(e.to_string());
            self.grown.notify_waiters();
            self.ready.store(true, Ordering::Release);
            return;
        }
        loop {
            let target = self.target();
            // Checked first, on the pool's own counts: this runs after every
            // ADD, and the per-ENI view below scans the allocator.
            if self.usable_total() >= target.total {
                break;
            }
            let (enis, total) = self.view();
            let Some(step) = plan::grow_step(
                &self.limits,
                &enis,
                total,
                target,
                self.grow_mode(),
                plan::whole_eni(&self.settings()),
            ) else {
                break;
            };
            let started = Instant::now();
            let result = self.execute(step.clone()).await;
            // The budget retries throttled calls, so the pool sees
            // throttling as delay: a refill over twice the usual (and over
            // 2 s) or a throttled failure means the account is congested.
            let usual = self.lock().model.refill();
            let slow = started.elapsed() > (usual * 2).max(Duration::from_secs(2));
            if slow || matches!(result, Err(CloudError::Throttled { .. })) {
                self.lock().congested_until = Some(Instant::now() + CONGESTION_HOLD);
            }
            match result {
                Ok(()) => {
                    self.lock().model.refill_took(started.elapsed());
                    self.lock().blocked = None;
                    self.grown.notify_waiters();
                }
                Err(CloudError::NoFreeCidrBlocks { subnet }) => {
                    // aws-node fails here (#2749, #1836); we go on with /32s.
                    tracing::warn!(%subnet, retry_in_s = PREFIX_RETRY.as_secs(), "no free /28 in the subnet; falling back to secondary IPs");
                    self.lock().fallback_until = Some(Instant::now() + PREFIX_RETRY);
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?step, "pool cannot grow");
                    self.lock().blocked = Some(e.to_string());
                    self.grown.notify_waiters();
                    break;
                }
            }
        }
        self.ready.store(true, Ordering::Release);
    }

    /// Returns surplus if it has lasted `release_delay`; one step per call.
    /// Returns whether it gave anything back.
    pub async fn shrink(&self) -> bool {
        let (enis, total) = self.view();
        let target = self.target();
        let step = plan::shrink_step(&enis, total, target);
        let due = self.lock().surplus.observe(
            step.is_some(),
            Instant::now().into_std(),
            self.settings().release_delay,
        );
        let Some(step) = step.filter(|_| due) else {
            return false;
        };
        match self.execute(step.clone()).await {
            Ok(()) => {
                tracing::info!(?step, "surplus returned");
                self.lock().surplus.reset();
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, ?step, "surplus not returned");
                false
            }
        }
    }

    async fn execute(&self, step: Step) -> Result<(), CloudError> {
        match step {
            Step::Idle => Ok(()),
            Step::Assign {
                device_index,
                count,
            } => {
                let Some(id) = self.eni_id(device_index) else {
                    return Ok(());
                };
                let ips = self.cloud.assign_ips(&id, count).await?;
                tracing::info!(eni = %id, count = ips.len(), "addresses assigned");
                if let Some(e) = self.lock().enis.get_mut(&device_index) {
                    e.secondary_ips.extend_from_slice(&ips);
                }
                self.grow_alloc(device_index, &ips);
                Ok(())
            }
            Step::AssignPrefixes {
                device_index,
                count,
            } => {
                let Some(id) = self.eni_id(device_index) else {
                    return Ok(());
                };
                let prefixes = self.cloud.assign_prefixes(&id, count).await?;
                tracing::info!(eni = %id, prefixes = ?prefixes, "prefixes assigned");
                if let Some(e) = self.lock().enis.get_mut(&device_index) {
                    e.prefixes.extend_from_slice(&prefixes);
                }
                let addrs: Vec<Ipv4Addr> = prefixes.iter().flat_map(|p| p.iter()).collect();
                self.grow_alloc(device_index, &addrs);
                Ok(())
            }
            Step::Attach { device_index } => {
                let eni = self.cloud.attach_eni(device_index).await?;
                tracing::info!(eni = %eni.id, device_index, "ENI attached");
                self.adopt(eni).await
            }
            Step::Release {
                device_index,
                count,
            } => {
                let Some(eni) = self.lock().enis.get(&device_index).cloned() else {
                    return Ok(());
                };
                let free: HashSet<Ipv4Addr> = self
                    .alloc
                    .free_by_eni()
                    .remove(&device_index)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let pick: Vec<Ipv4Addr> = eni
                    .secondary_ips
                    .iter()
                    .rev()
                    .filter(|ip| free.contains(ip))
                    .take(count as usize)
                    .copied()
                    .collect();
                let removed = self.alloc.shrink(&pick);
                if removed.is_empty() {
                    return Ok(());
                }
                if let Err(e) = self.cloud.unassign_ips(&eni.id, &removed).await {
                    self.grow_alloc(device_index, &removed);
                    return Err(e);
                }
                if let Some(e) = self.lock().enis.get_mut(&device_index) {
                    e.secondary_ips.retain(|ip| !removed.contains(ip));
                }
                Ok(())
            }
            Step::ReleasePrefix { device_index } => {
                let Some(eni) = self.lock().enis.get(&device_index).cloned() else {
                    return Ok(());
                };
                for prefix in eni.prefixes.iter().rev() {
                    let addrs: Vec<Ipv4Addr> = prefix.iter().collect();
                    let removed = self.alloc.shrink(&addrs);
                    if removed.len() != addrs.len() {
                        // A pod took one meanwhile: put the rest back.
                        self.grow_alloc(device_index, &removed);
                        continue;
                    }
                    if let Err(e) = self.cloud.unassign_prefixes(&eni.id, &[*prefix]).await {
                        self.grow_alloc(device_index, &removed);
                        return Err(e);
                    }
                    if let Some(e) = self.lock().enis.get_mut(&device_index) {
                        e.prefixes.retain(|p| p != prefix);
                    }
                    return Ok(());
                }
                Ok(())
            }
            Step::DeleteEni { device_index } => {
                let Some(eni) = self.lock().enis.get(&device_index).cloned() else {
                    return Ok(());
                };
                let addrs = addresses_of(&eni);
                let removed = self.alloc.shrink(&addrs);
                if removed.len() != addrs.len() {
                    self.grow_alloc(device_index, &removed);
                    return Ok(());
                }
                if let Err(e) = self.cloud.detach_and_delete_eni(&eni.id).await {
                    self.grow_alloc(device_index, &removed);
                    return Err(e);
                }
                self.lock().enis.remove(&device_index);
                Ok(())
            }
        }
    }

    fn eni_id(&self, device_index: u32) -> Option<EniId> {
        self.lock().enis.get(&device_index).map(|e| e.id.clone())
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

    /// Deletes detached ENIs tagged for this node once they are older than
    /// the grace period (by their creation tag, or since we first saw them).
    pub async fn collect_leaks(&self) {
        let detached = self.cloud.detached_enis().await;
        self.with_events(|e| e.leaks.run(detached.is_ok()));
        let detached = match detached {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "could not list detached ENIs");
                return;
            }
        };
        let now = Instant::now();
        let grace = self.settings().leak_grace;
        let due: Vec<EniId> = {
            let mut st = self.lock();
            st.detached_seen
                .retain(|id, _| detached.iter().any(|d| &d.id == id));
            detached
                .iter()
                .filter(|d| {
                    let seen = *st.detached_seen.entry(d.id.clone()).or_insert(now);
                    let old_by_tag = d
                        .created_at
                        .and_then(|c| SystemTime::now().duration_since(c).ok())
                        .is_some_and(|age| age >= grace);
                    old_by_tag || now.duration_since(seen) >= grace
                })
                .map(|d| d.id.clone())
                .collect()
        };
        for id in due {
            match self.cloud.delete_eni(&id).await {
                Ok(()) => {
                    tracing::info!(eni = %id, "leaked ENI deleted");
                    self.leak_event("eni_deleted");
                    self.lock().detached_seen.remove(&id);
                }
                Err(e) => {
                    self.leak_event("eni_delete_failed");
                    tracing::warn!(eni = %id, error = %e, "leaked ENI not deleted")
                }
            }
        }
    }

    /// Compares the books with EC2 (one Describe): addresses EC2 holds on
    /// our ENIs that we do not know are returned once they have stayed
    /// unknown for the cooldown; then collects leaked ENIs.
    pub async fn reconcile(&self) {
        let cloud = self.cloud.enis().await;
        self.with_events(|e| e.reconcile.run(cloud.is_ok()));
        let cloud = match cloud {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "reconcile: could not list ENIs");
                return;
            }
        };
        let now = Instant::now();
        let mut due: Vec<(EniId, Vec<Ipv4Addr>)> = Vec::new();
        {
            let mut st = self.lock();
            let mut seen = HashSet::new();
            for ce in &cloud {
                let Some(local) = st.enis.get(&ce.device_index).filter(|l| l.id == ce.id) else {
                    continue;
                };
                let known: HashSet<Ipv4Addr> = local.secondary_ips.iter().copied().collect();
                let strangers: Vec<Ipv4Addr> = ce
                    .secondary_ips
                    .iter()
                    .filter(|ip| !known.contains(ip))
                    .copied()
                    .collect();
                let mut ripe = Vec::new();
                for ip in strangers {
                    seen.insert(ip);
                    let first = *st.strangers.entry(ip).or_insert(now);
                    if now.duration_since(first) >= self.settings().cooldown {
                        ripe.push(ip);
                    }
                }
                if !ripe.is_empty() {
                    due.push((ce.id.clone(), ripe));
                }
            }
            st.strangers.retain(|ip, _| seen.contains(ip));
        }
        for (eni, ips) in due {
            match self.cloud.unassign_ips(&eni, &ips).await {
                Ok(()) => {
                    tracing::info!(eni = %eni, ips = ?ips, "addresses unknown locally returned");
                    self.with_events(|e| e.reconcile.event("cloud_ips_returned", ips.len() as u64));
                    let mut st = self.lock();
                    for ip in &ips {
                        st.strangers.remove(ip);
                    }
                }
                Err(e) => tracing::warn!(eni = %eni, error = %e, "unknown addresses not returned"),
            }
        }
        self.collect_leaks().await;
    }

    /// The controller loop: fill now, then whenever nudged; look for surplus
    /// every [`SURPLUS_TICK`]; reconcile with EC2 every
    /// `reconcile_interval` ± 20 % (jittered so a fleet started together
    /// does not describe in lock-step). A blocked pool retries after
    /// `resync`, not on every ADD's nudge: otherwise each pod would cost one
    /// more failing cloud call.
    pub async fn run(self: Arc<Self>, resync: Duration) {
        let mut retry_at: Option<Instant> = None;
        let mut next_reconcile = Instant::now() + jittered(self.settings().reconcile_interval);
        let mut next_surplus = Instant::now() + SURPLUS_TICK;
        let mut leaks_checked = false;
        loop {
            let now = Instant::now();
            if retry_at.is_some_and(|t| now >= t) {
                self.lock().blocked = None;
                retry_at = None;
            }
            if self.blocked_reason().is_none() {
                self.fill().await;
                if self.blocked_reason().is_some() {
                    retry_at = Some(Instant::now() + resync);
                }
            }
            if !leaks_checked {
                // Once at start, after the first fill: leaked ENIs never
                // delay the first pods.
                self.collect_leaks().await;
                leaks_checked = true;
            }
            let now = Instant::now();
            if now >= next_surplus {
                while self.shrink().await {}
                next_surplus = now + SURPLUS_TICK;
            }
            if now >= next_reconcile {
                self.reconcile().await;
                next_reconcile = now + jittered(self.settings().reconcile_interval);
            }
            let mut until = next_surplus.min(next_reconcile);
            if let Some(t) = retry_at {
                until = until.min(t);
            }
            let _ = tokio::time::timeout_at(until, self.wake.notified()).await;
        }
    }
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.8..1.2))
}

/// How many pod addresses an ENI holds.
fn address_count(eni: &Eni) -> u32 {
    eni.secondary_ips.len() as u32 + eni.prefixes.len() as u32 * PREFIX_SIZE
}

/// Every pod address an ENI holds: its /32s and all of its prefixes'.
fn addresses_of(eni: &Eni) -> Vec<Ipv4Addr> {
    eni.secondary_ips
        .iter()
        .copied()
        .chain(eni.prefixes.iter().flat_map(|p| p.iter()))
        .collect()
}

fn link_error(eni: &Eni, message: String) -> CloudError {
    CloudError::Link {
        eni: eni.id.clone(),
        message,
    }
}

#[cfg(test)]
mod tests;
