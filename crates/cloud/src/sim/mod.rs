//! The embedded simulated cloud: the default provider for the demo, tests and
//! benches.
//!
//! Account state and node view are split so several nodes can share one VPC:
//! [`SimVpc`] owns the VPC's addresses, ENI identities and the account's API
//! behaviour ([`Behaviour`]: latencies, EC2's per-account token buckets,
//! injected 5xx and timeouts, call counters); [`SimCloud`] is one node
//! (instance, its ENIs) in it. Limits follow the instance type
//! ([`super::limits`]), subnets run out of addresses and of aligned /28
//! blocks, and EC2's all-or-nothing semantics are kept (a failed call changes
//! nothing). All waiting is on tokio's clock, so a paused test clock runs
//! hours of simulated EC2 in milliseconds. A [`Fabric`] decides how an
//! attached ENI appears on the node: [`VethFabric`] as a veth pair in the
//! node namespace, [`NoFabric`] not at all.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use ipamd::cloud::Cloud;
//! use ipamd::cloud::sim::{SimCloud, SimConfig, VethFabric};
//!
//! let cloud = SimCloud::new(SimConfig::default(), Arc::new(VethFabric::new()?)).await?;
//! let eni = cloud.attach_eni(1).await?;
//! let ips = cloud.assign_ips(&eni.id, 9).await?;
//! # Ok(())
//! # }
//! ```

mod addresses;
mod behaviour;
mod fabric;
mod persist;

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use ipnetwork::Ipv4Network;
use rand::Rng;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use self::addresses::SubnetAddresses;
pub use self::behaviour::{
    AccountLimits, Action, ActionStats, Behaviour, Fault, FaultRates, Latencies, SimStats,
};
use self::behaviour::{Gate, Verdict};
pub use self::fabric::{Fabric, FabricError, NoFabric, VethFabric};
pub use self::persist::{PersistentSim, SIM_STATE_FILE};
use super::limits::{self, InstanceLimits};
use super::{Cloud, CloudError, DetachedEni, Eni, EniId, MacAddr, NodeInfo, Result, Subnet};

/// Largest and smallest CIDR blocks AWS accepts for a VPC or a subnet.
const CIDR_PREFIXES: std::ops::RangeInclusive<u8> = 16..=28;

/// The length of a delegated prefix.
const DELEGATED_PREFIX: u8 = 28;

/// Why a simulated VPC or node could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The instance type is not in [`limits`]'s table.
    #[error("unknown instance type {name:?}; known types: {known}")]
    UnknownInstanceType {
        /// The name asked for.
        name: String,
        /// Every known type, comma-separated.
        known: String,
    },
    /// The subnet does not lie inside the VPC's CIDR.
    #[error("subnet {subnet} is not inside VPC {vpc}")]
    SubnetOutsideVpc {
        /// The subnet's CIDR.
        subnet: Ipv4Network,
        /// The VPC's CIDR.
        vpc: Ipv4Network,
    },
    /// A CIDR block outside AWS's /16../28 range.
    #[error("{what} CIDR {cidr} must be between /16 and /28, as in AWS")]
    CidrSize {
        /// `"VPC"` or `"subnet"`.
        what: &'static str,
        /// The CIDR given.
        cidr: Ipv4Network,
    },
    /// The node's primary ENI could not be created (the subnet is full).
    #[error("cannot create the primary ENI")]
    PrimaryEni(#[source] CloudError),
    /// The primary ENI could not be made to appear on the node.
    #[error("primary ENI {eni} could not be materialised: {source}")]
    Fabric {
        /// The primary ENI.
        eni: EniId,
        /// What the fabric said.
        #[source]
        source: FabricError,
    },
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// EC2 instance type, e.g. `m5.large`; sets the ENI and address limits.
    pub instance_type: String,
    /// The VPC's CIDR.
    pub vpc_cidr: Ipv4Network,
    /// The node's subnet; must lie inside `vpc_cidr`.
    pub subnet_cidr: Ipv4Network,
    /// How long API calls take (finer control: [`SimVpc::with_behaviour`]).
    pub api_latency: ApiLatency,
}

/// How long the simulated EC2 API takes to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiLatency {
    /// Every call takes this long; a new ENI is usable at once.
    Uniform(Duration),
    /// EC2's measured latencies ([`Latencies::ec2`]): an Assign ≈ 0.5 s, a
    /// new ENI usable ≈ 5 s after Attach, IMDS ≈ 1 s behind.
    Ec2,
}

impl ApiLatency {
    /// The per-call latencies.
    pub fn latencies(self) -> Latencies {
        match self {
            ApiLatency::Uniform(d) => Latencies::uniform(d),
            ApiLatency::Ec2 => Latencies::ec2(),
        }
    }
}

impl std::str::FromStr for ApiLatency {
    type Err = String;

    /// Whole milliseconds, or `ec2`.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("ec2") {
            return Ok(ApiLatency::Ec2);
        }
        s.parse::<u64>()
            .map(|ms| ApiLatency::Uniform(Duration::from_millis(ms)))
            .map_err(|_| "must be whole milliseconds or `ec2`".to_string())
    }
}

impl Default for SimConfig {
    /// An m5.large in 10.0.0.0/16, subnet 10.0.0.0/20, instant API.
    fn default() -> Self {
        SimConfig {
            instance_type: "m5.large".into(),
            vpc_cidr: Ipv4Network::new(Ipv4Addr::new(10, 0, 0, 0), 16)
                .expect("/16 is a valid prefix"),
            subnet_cidr: Ipv4Network::new(Ipv4Addr::new(10, 0, 0, 0), 20)
                .expect("/20 is a valid prefix"),
            api_latency: ApiLatency::Uniform(Duration::ZERO),
        }
    }
}

/// One simulated VPC with one subnet in one account: the state several
/// [`SimCloud`] nodes share, including the account's API throttling.
#[derive(Debug)]
pub struct SimVpc {
    id: String,
    cidr: Ipv4Network,
    subnet: Subnet,
    security_group: String,
    /// Random per VPC, so ENI ids and MACs of different VPCs differ.
    tag: u64,
    // A std mutex, not tokio's: critical sections are short bookkeeping and
    // never span an `.await` (the simulated latency is slept outside).
    state: Mutex<VpcState>,
    /// The account's API behaviour, shared by every VPC of the account.
    gate: Arc<Mutex<Gate>>,
}

#[derive(Debug)]
struct VpcState {
    addresses: SubnetAddresses,
    enis_created: u32,
    /// Created but not attached ENIs (status `available`), with their owner
    /// node (the `node.k8s.amazonaws.com/instance_id` tag) and creation time.
    detached: BTreeMap<EniId, (Eni, String, SystemTime)>,
}

impl SimVpc {
    /// A VPC with CIDR `vpc_cidr` and one subnet `subnet_cidr` inside it. Host
    /// bits are ignored (`10.0.0.5/20` means `10.0.0.0/20`). Instant API,
    /// EC2's default buckets.
    pub fn new(
        vpc_cidr: Ipv4Network,
        subnet_cidr: Ipv4Network,
    ) -> std::result::Result<SimVpc, SimError> {
        Self::with_behaviour(vpc_cidr, subnet_cidr, Behaviour::default())
    }

    /// Like [`Self::new`], with the API behaving as `behaviour` says.
    pub fn with_behaviour(
        vpc_cidr: Ipv4Network,
        subnet_cidr: Ipv4Network,
        behaviour: Behaviour,
    ) -> std::result::Result<SimVpc, SimError> {
        let vpc = normalise("VPC", vpc_cidr)?;
        let subnet = normalise("subnet", subnet_cidr)?;
        if !subnet.is_subnet_of(vpc) {
            return Err(SimError::SubnetOutsideVpc { subnet, vpc });
        }
        let mut rng = rand::rng();
        Ok(SimVpc {
            id: random_id("vpc-", &mut rng),
            cidr: vpc,
            subnet: Subnet {
                id: random_id("subnet-", &mut rng),
                cidr: subnet,
            },
            security_group: random_id("sg-", &mut rng),
            // 36 bits: 9 hex digits of an ENI id, and one MAC octet.
            tag: rng.random::<u64>() & 0xf_ffff_ffff,
            state: Mutex::new(VpcState {
                addresses: SubnetAddresses::new(subnet),
                enis_created: 0,
                detached: BTreeMap::new(),
            }),
            gate: Arc::new(Mutex::new(Gate::new(behaviour))),
        })
    }

    /// Another VPC (with its own subnet) in the same account: it shares this
    /// one's buckets, latencies, injected faults and counters. A fleet
    /// larger than one /16 subnet spreads over several of these.
    pub fn sibling(
        &self,
        vpc_cidr: Ipv4Network,
        subnet_cidr: Ipv4Network,
    ) -> std::result::Result<SimVpc, SimError> {
        let mut vpc = Self::new(vpc_cidr, subnet_cidr)?;
        vpc.gate = self.gate.clone();
        Ok(vpc)
    }

    /// The VPC's id, `vpc-` and 17 hex digits.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The VPC's CIDR.
    pub fn cidr(&self) -> Ipv4Network {
        self.cidr
    }

    /// The VPC's one subnet.
    pub fn subnet(&self) -> &Subnet {
        &self.subnet
    }

    /// Addresses of the subnet nobody holds (reserved ones excluded).
    pub fn free_addresses(&self) -> u32 {
        self.lock().addresses.free()
    }

    /// Whether `ip` is held by an ENI or reserved by AWS.
    pub fn is_used(&self, ip: Ipv4Addr) -> bool {
        self.lock().addresses.is_used(ip)
    }

    /// Marks `ip` as held by someone outside the simulation (another
    /// tenant's ENI); returns whether it was free.
    pub fn occupy(&self, ip: Ipv4Addr) -> bool {
        self.lock().addresses.occupy(ip)
    }

    /// Occupies one address in every free aligned /28, leaving the subnet
    /// with plenty of addresses but no block to delegate (the fragmented
    /// subnet of aws-node issues #2749, #1836). Returns how many it took.
    pub fn fragment(&self) -> u32 {
        let mut state = self.lock();
        let mut taken = 0;
        let base = u32::from(self.subnet.cidr.network());
        let block_len = 1u32 << (32 - DELEGATED_PREFIX);
        for start in (0..self.subnet.cidr.size()).step_by(block_len as usize) {
            let first = base + start;
            if (first..first + block_len).all(|ip| !state.addresses.is_used(Ipv4Addr::from(ip))) {
                let mid = Ipv4Addr::from(first + 7);
                taken += u32::from(state.addresses.occupy(mid));
            }
        }
        taken
    }

    /// Makes an address taken by [`Self::occupy`] or [`Self::fragment`] free again.
    pub fn vacate(&self, ip: Ipv4Addr) -> bool {
        self.lock().addresses.release(ip)
    }

    /// Counters of the calls the account has seen.
    pub fn stats(&self) -> SimStats {
        self.gate().stats()
    }

    /// Makes the next call of `action` fail with `fault` (queued in order).
    pub fn inject(&self, action: Action, fault: Fault) {
        self.gate().inject(action, fault);
    }

    /// Changes the latencies from now on.
    pub fn set_latencies(&self, latencies: Latencies) {
        self.gate().set_latencies(latencies);
    }

    fn latencies(&self) -> Latencies {
        *self.gate().latencies()
    }

    fn lock(&self) -> MutexGuard<'_, VpcState> {
        self.state
            .lock()
            .expect("sim VPC state poisoned: a panic interrupted an update")
    }

    fn gate(&self) -> MutexGuard<'_, Gate> {
        self.gate
            .lock()
            .expect("sim gate poisoned: a panic interrupted an update")
    }

    /// One API round trip of `action`: throttling and injected faults are
    /// decided on arrival, then the latency passes; the caller applies the
    /// effect afterwards, so a failed call changes nothing.
    async fn call(&self, action: Action) -> Result<()> {
        let verdict = self.gate().admit(action);
        let (wait, result) = match verdict {
            Verdict::Proceed(d) => (d, Ok(())),
            Verdict::Fail(d, e) => (d, Err(e)),
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        if let Err(e) = &result {
            debug!(action = action.name(), error = %e, "simulated call failed");
        }
        result
    }

    fn subnet_full(&self) -> CloudError {
        CloudError::SubnetFull {
            subnet: self.subnet.id.clone(),
        }
    }

    /// `count` lowest free addresses, or `SubnetFull` and none taken.
    fn take(&self, count: u32) -> Result<Vec<Ipv4Addr>> {
        self.lock()
            .addresses
            .take_lowest(count)
            .ok_or_else(|| self.subnet_full())
    }

    /// `count` free /28 blocks, or `NoFreeCidrBlocks` and none taken.
    fn take_blocks(&self, count: u32) -> Result<Vec<Ipv4Network>> {
        let mut state = self.lock();
        let mut taken = Vec::with_capacity(count as usize);
        for _ in 0..count {
            match state.addresses.take_block(DELEGATED_PREFIX) {
                Some(b) => taken.push(b),
                None => {
                    for b in taken {
                        state.addresses.release_block(b);
                    }
                    return Err(CloudError::NoFreeCidrBlocks {
                        subnet: self.subnet.id.clone(),
                    });
                }
            }
        }
        Ok(taken)
    }

    fn release(&self, ips: &[Ipv4Addr]) {
        let mut state = self.lock();
        for ip in ips {
            if !state.addresses.release(*ip) {
                warn!(
                    ip = %ip, subnet = %self.subnet.id,
                    "released an address that was not in use"
                );
            }
        }
    }

    fn release_eni(&self, eni: &Eni) {
        let mut state = self.lock();
        state.addresses.release(eni.primary_ip);
        for ip in &eni.secondary_ips {
            state.addresses.release(*ip);
        }
        for p in &eni.prefixes {
            state.addresses.release_block(*p);
        }
    }

    /// A new ENI in the subnet, with the lowest free address as its primary.
    fn create_eni(&self, device_index: u32) -> Result<Eni> {
        let mut state = self.lock();
        let primary_ip = *state
            .addresses
            .take_lowest(1)
            .ok_or_else(|| self.subnet_full())?
            .first()
            .expect("took one address");
        state.enis_created += 1;
        let n = state.enis_created;
        // Locally administered unicast (02:…), unique within the VPC.
        let tag_octet = self.tag.to_le_bytes()[0];
        let [c0, c1, c2, c3] = n.to_be_bytes();
        Ok(Eni {
            id: EniId(format!("eni-{:09x}{n:08x}", self.tag)),
            mac: MacAddr([0x02, tag_octet, c0, c1, c2, c3]),
            device_index,
            subnet: self.subnet.clone(),
            primary_ip,
            secondary_ips: Vec::new(),
            prefixes: Vec::new(),
        })
    }
}

/// Something assigned but not yet visible to the node's inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lagging {
    Ip(Ipv4Addr),
    Prefix(Ipv4Network),
}

/// One simulated node (an EC2 instance) in a [`SimVpc`].
pub struct SimCloud {
    instance_id: String,
    limits: InstanceLimits,
    vpc: Arc<SimVpc>,
    /// By device index, so listing comes out primary first. A std mutex, for
    /// the same reason as [`SimVpc`]'s; when both are taken, this one first.
    enis: Mutex<BTreeMap<u32, Eni>>,
    /// Assignments IMDS does not show yet, and from when it will.
    lagging: Mutex<Vec<(Instant, Lagging)>>,
    fabric: Arc<dyn Fabric>,
}

impl std::fmt::Debug for SimCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCloud")
            .field("instance_id", &self.instance_id)
            .field("limits", &self.limits)
            .field("vpc", &self.vpc.id)
            .finish_non_exhaustive()
    }
}

impl SimCloud {
    /// A node of type `config.instance_type` in a VPC of its own, with its
    /// primary ENI created and materialised through `fabric`.
    pub async fn new(
        config: SimConfig,
        fabric: Arc<dyn Fabric>,
    ) -> std::result::Result<SimCloud, SimError> {
        // Check the instance type before building the VPC, so the error a
        // user sees first is about what they most likely mistyped.
        lookup_limits(&config.instance_type)?;
        let behaviour = Behaviour {
            latencies: config.api_latency.latencies(),
            ..Behaviour::default()
        };
        let vpc = Arc::new(SimVpc::with_behaviour(
            config.vpc_cidr,
            config.subnet_cidr,
            behaviour,
        )?);
        SimCloud::in_vpc(vpc, &config.instance_type, fabric).await
    }

    /// A node of type `instance_type` in an existing (possibly shared) VPC,
    /// with its primary ENI created and materialised through `fabric`.
    pub async fn in_vpc(
        vpc: Arc<SimVpc>,
        instance_type: &str,
        fabric: Arc<dyn Fabric>,
    ) -> std::result::Result<SimCloud, SimError> {
        let limits = lookup_limits(instance_type)?;
        let primary = vpc.create_eni(0).map_err(SimError::PrimaryEni)?;
        let cloud = SimCloud {
            instance_id: random_id("i-", &mut rand::rng()),
            limits,
            vpc,
            enis: Mutex::new(BTreeMap::from([(0, primary.clone())])),
            lagging: Mutex::new(Vec::new()),
            fabric,
        };
        if let Err(source) = cloud.fabric.materialize(&primary, true).await {
            // The instance never booted: give its address back.
            cloud.vpc.release(&[primary.primary_ip]);
            return Err(SimError::Fabric {
                eni: primary.id,
                source,
            });
        }
        debug!(
            instance = %cloud.instance_id,
            instance_type,
            eni = %primary.id,
            ip = %primary.primary_ip,
            "simulated instance started"
        );
        Ok(cloud)
    }

    /// The instance id, `i-` and 17 hex digits.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The instance type's limits.
    pub fn limits(&self) -> &InstanceLimits {
        &self.limits
    }

    /// The VPC this node lives in.
    pub fn vpc(&self) -> &Arc<SimVpc> {
        &self.vpc
    }

    /// Delegates `count` prefixes to the primary ENI without an API call, as
    /// a launch template with `Ipv4PrefixCount` does at boot.
    pub fn preassign_prefixes(&self, count: u32) -> Result<Vec<Ipv4Network>> {
        let blocks = self.vpc.take_blocks(count)?;
        self.lock()
            .get_mut(&0)
            .expect("the primary ENI is always there")
            .prefixes
            .extend_from_slice(&blocks);
        Ok(blocks)
    }

    /// Assigns `count` secondary addresses to the primary ENI without an API
    /// call, as a launch template's `SecondaryPrivateIpAddressCount` does.
    pub fn preassign_ips(&self, count: u32) -> Result<Vec<Ipv4Addr>> {
        let ips = self.vpc.take(count)?;
        self.lock()
            .get_mut(&0)
            .expect("the primary ENI is always there")
            .secondary_ips
            .extend_from_slice(&ips);
        Ok(ips)
    }

    /// Creates a tagged ENI for this node and leaves it detached, without an
    /// API call: what a crash between Create and Attach leaves behind.
    pub fn leak_eni(&self) -> Result<EniId> {
        let eni = self.vpc.create_eni(0)?;
        let id = eni.id.clone();
        self.vpc.lock().detached.insert(
            id.clone(),
            (eni, self.instance_id.clone(), SystemTime::now()),
        );
        Ok(id)
    }

    /// Assigns `ips` to `eni` behind the node's back (as another controller
    /// or a crashed ipamd would have): for leak-collection tests.
    pub fn assign_behind_the_back(&self, eni: &EniId, count: u32) -> Result<Vec<Ipv4Addr>> {
        let ips = self.vpc.take(count)?;
        find_mut(&mut self.lock(), eni)?
            .secondary_ips
            .extend_from_slice(&ips);
        Ok(ips)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u32, Eni>> {
        self.enis
            .lock()
            .expect("sim node state poisoned: a panic interrupted an update")
    }

    fn ip_limit(&self, eni: &EniId) -> CloudError {
        CloudError::IpLimit {
            eni: eni.clone(),
            limit: self.limits.ipv4_per_eni,
        }
    }

    fn lag(&self, items: impl IntoIterator<Item = Lagging>) {
        let lag = self.vpc.latencies().imds_lag;
        if lag.is_zero() {
            return;
        }
        let at = Instant::now() + lag;
        self.lagging
            .lock()
            .expect("sim lag list poisoned")
            .extend(items.into_iter().map(|i| (at, i)));
    }

    /// Attaches a created ENI; on failure deletes it again, as the ec2
    /// provider does (if that fails too, it stays behind detached).
    async fn attach_created(&self, eni: Eni, device_index: u32) -> Result<Eni> {
        let attached = self.vpc.call(Action::Attach).await.and_then(|()| {
            let mut enis = self.lock();
            if enis.len() >= self.limits.max_enis as usize {
                return Err(CloudError::EniLimit {
                    instance_type: self.limits.name.clone(),
                    limit: self.limits.max_enis,
                });
            }
            if let Some(taken) = enis.get(&device_index) {
                return Err(CloudError::Rejected {
                    operation: "AttachNetworkInterface",
                    message: format!(
                        "InvalidParameterValue: device index {device_index} is already used by {}",
                        taken.id
                    ),
                });
            }
            self.vpc.lock().detached.remove(&eni.id);
            enis.insert(device_index, eni.clone());
            Ok(())
        });
        if let Err(e) = attached {
            match self.vpc.call(Action::Delete).await {
                Ok(()) => {
                    self.vpc.lock().detached.remove(&eni.id);
                    self.vpc.release_eni(&eni);
                }
                Err(del) => {
                    warn!(eni = %eni.id, error = %del, "could not delete an ENI whose attach failed; left for leak collection");
                }
            }
            return Err(e);
        }
        Ok(eni)
    }
}

fn find_mut<'a>(enis: &'a mut BTreeMap<u32, Eni>, id: &EniId) -> Result<&'a mut Eni> {
    enis.values_mut()
        .find(|e| &e.id == id)
        .ok_or_else(|| CloudError::NotFound {
            what: format!("ENI {id}"),
        })
}

fn rejected(operation: &'static str, message: impl Into<String>) -> CloudError {
    CloudError::Rejected {
        operation,
        message: message.into(),
    }
}

#[async_trait]
impl Cloud for SimCloud {
    async fn node(&self) -> Result<NodeInfo> {
        // IMDS, not the EC2 API: no bucket, but a round trip.
        let d = self.vpc.latencies().describe;
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
        let primary = self.lock().get(&0).cloned().expect("primary ENI");
        Ok(NodeInfo {
            instance_id: self.instance_id.clone(),
            limits: self.limits.clone(),
            vpc_cidrs: vec![self.vpc.cidr],
            primary_ip: primary.primary_ip,
            primary_mac: primary.mac,
            subnet: primary.subnet,
            security_groups: vec![self.vpc.security_group.clone()],
        })
    }

    async fn enis(&self) -> Result<Vec<Eni>> {
        self.vpc.call(Action::Describe).await?;
        let now = Instant::now();
        let hidden: Vec<Lagging> = {
            let mut lagging = self.lagging.lock().expect("sim lag list poisoned");
            lagging.retain(|(at, _)| *at > now);
            lagging.iter().map(|(_, l)| *l).collect()
        };
        let mut enis: Vec<Eni> = self.lock().values().cloned().collect();
        if !hidden.is_empty() {
            for eni in &mut enis {
                eni.secondary_ips
                    .retain(|ip| !hidden.contains(&Lagging::Ip(*ip)));
                eni.prefixes
                    .retain(|p| !hidden.contains(&Lagging::Prefix(*p)));
            }
        }
        Ok(enis)
    }

    async fn attach_eni(&self, device_index: u32) -> Result<Eni> {
        self.vpc.call(Action::Create).await?;
        let eni = self.vpc.create_eni(device_index)?;
        // Tagged and `available` until attached: a crash here leaks it.
        self.vpc.lock().detached.insert(
            eni.id.clone(),
            (eni.clone(), self.instance_id.clone(), SystemTime::now()),
        );
        let eni = self.attach_created(eni, device_index).await?;
        let ready = self.vpc.latencies().eni_ready;
        if !ready.is_zero() {
            tokio::time::sleep(ready).await;
        }
        if let Err(e) = self.fabric.materialize(&eni, false).await {
            warn!(
                eni = %eni.id, device_index, error = %e,
                "ENI attached but its link failed"
            );
            return Err(CloudError::Link {
                eni: eni.id,
                message: e.to_string(),
            });
        }
        debug!(eni = %eni.id, device_index, mac = %eni.mac, ip = %eni.primary_ip, "ENI attached");
        Ok(eni)
    }

    async fn assign_ips(&self, eni: &EniId, count: u32) -> Result<Vec<Ipv4Addr>> {
        const OP: &str = "AssignPrivateIpAddresses";
        self.vpc.call(Action::Assign).await?;
        if count == 0 {
            // EC2 rejects a zero count; so do we, so a caller's bug shows up
            // in the simulator too.
            return Err(rejected(
                OP,
                "SecondaryPrivateIpAddressCount must be at least 1",
            ));
        }
        let ips = {
            let mut enis = self.lock();
            let target = find_mut(&mut enis, eni)?;
            let held = (target.secondary_ips.len() + target.prefixes.len()) as u64;
            if held + u64::from(count) > u64::from(self.limits.secondaries_per_eni()) {
                return Err(self.ip_limit(eni));
            }
            let ips = self.vpc.take(count)?;
            target.secondary_ips.extend_from_slice(&ips);
            ips
        };
        self.lag(ips.iter().map(|ip| Lagging::Ip(*ip)));
        debug!(eni = %eni, ips = ?ips, "addresses assigned");
        Ok(ips)
    }

    async fn unassign_ips(&self, eni: &EniId, ips: &[Ipv4Addr]) -> Result<()> {
        const OP: &str = "UnassignPrivateIpAddresses";
        self.vpc.call(Action::Unassign).await?;
        if ips.is_empty() {
            return Err(rejected(OP, "PrivateIpAddress list must not be empty"));
        }
        {
            let mut enis = self.lock();
            let target = find_mut(&mut enis, eni)?;
            // Check everything before changing anything: EC2 is
            // all-or-nothing.
            if let Some(primary) = ips.iter().find(|ip| **ip == target.primary_ip) {
                return Err(rejected(
                    OP,
                    format!("{primary} is the primary address of {eni} and cannot be unassigned"),
                ));
            }
            if let Some(missing) = ips.iter().find(|ip| !target.secondary_ips.contains(ip)) {
                return Err(CloudError::NotFound {
                    what: format!("address {missing} on ENI {eni}"),
                });
            }
            let drop: HashSet<Ipv4Addr> = ips.iter().copied().collect();
            target.secondary_ips.retain(|ip| !drop.contains(ip));
            let released: Vec<Ipv4Addr> = drop.into_iter().collect();
            self.vpc.release(&released);
        }
        debug!(eni = %eni, ips = ?ips, "addresses unassigned");
        Ok(())
    }

    async fn assign_prefixes(&self, eni: &EniId, count: u32) -> Result<Vec<Ipv4Network>> {
        const OP: &str = "AssignPrivateIpAddresses";
        self.vpc.call(Action::Assign).await?;
        if count == 0 {
            return Err(rejected(OP, "Ipv4PrefixCount must be at least 1"));
        }
        let blocks = {
            let mut enis = self.lock();
            let target = find_mut(&mut enis, eni)?;
            // A prefix takes one of the ENI's address slots.
            let held = (target.secondary_ips.len() + target.prefixes.len()) as u64;
            if held + u64::from(count) > u64::from(self.limits.secondaries_per_eni()) {
                return Err(self.ip_limit(eni));
            }
            let blocks = self.vpc.take_blocks(count)?;
            target.prefixes.extend_from_slice(&blocks);
            blocks
        };
        self.lag(blocks.iter().map(|p| Lagging::Prefix(*p)));
        debug!(eni = %eni, prefixes = ?blocks, "prefixes assigned");
        Ok(blocks)
    }

    async fn unassign_prefixes(&self, eni: &EniId, prefixes: &[Ipv4Network]) -> Result<()> {
        const OP: &str = "UnassignPrivateIpAddresses";
        self.vpc.call(Action::Unassign).await?;
        if prefixes.is_empty() {
            return Err(rejected(OP, "Ipv4Prefix list must not be empty"));
        }
        let mut enis = self.lock();
        let target = find_mut(&mut enis, eni)?;
        if let Some(missing) = prefixes.iter().find(|p| !target.prefixes.contains(p)) {
            return Err(CloudError::NotFound {
                what: format!("prefix {missing} on ENI {eni}"),
            });
        }
        target.prefixes.retain(|p| !prefixes.contains(p));
        let mut state = self.vpc.lock();
        for p in prefixes {
            state.addresses.release_block(*p);
        }
        Ok(())
    }

    async fn detach_and_delete_eni(&self, eni: &EniId) -> Result<()> {
        {
            let enis = self.lock();
            let found =
                enis.values()
                    .find(|e| &e.id == eni)
                    .ok_or_else(|| CloudError::NotFound {
                        what: format!("ENI {eni}"),
                    })?;
            if found.is_primary() {
                return Err(rejected(
                    "DetachNetworkInterface",
                    format!("OperationNotPermitted: {eni} is the instance's primary ENI"),
                ));
            }
        }
        self.vpc.call(Action::Detach).await?;
        let detached = {
            let mut enis = self.lock();
            let index = enis
                .iter()
                .find(|(_, e)| &e.id == eni)
                .map(|(i, _)| *i)
                .ok_or_else(|| CloudError::NotFound {
                    what: format!("ENI {eni}"),
                })?;
            enis.remove(&index).expect("found above")
        };
        self.vpc.lock().detached.insert(
            eni.clone(),
            (detached, self.instance_id.clone(), SystemTime::now()),
        );
        self.delete_eni(eni).await?;
        info!(eni = %eni, "ENI detached and deleted");
        Ok(())
    }

    async fn detached_enis(&self) -> Result<Vec<DetachedEni>> {
        self.vpc.call(Action::Describe).await?;
        Ok(self
            .vpc
            .lock()
            .detached
            .iter()
            .filter(|(_, (_, owner, _))| *owner == self.instance_id)
            .map(|(id, (_, _, created))| DetachedEni {
                id: id.clone(),
                created_at: Some(*created),
            })
            .collect())
    }

    async fn delete_eni(&self, eni: &EniId) -> Result<()> {
        self.vpc.call(Action::Delete).await?;
        if self.lock().values().any(|e| &e.id == eni) {
            return Err(rejected(
                "DeleteNetworkInterface",
                format!("InvalidNetworkInterface.InUse: {eni} is attached"),
            ));
        }
        let removed = self.vpc.lock().detached.remove(eni);
        match removed {
            Some((e, _, _)) => {
                self.vpc.release_eni(&e);
                Ok(())
            }
            None => Err(CloudError::NotFound {
                what: format!("ENI {eni}"),
            }),
        }
    }
}

fn lookup_limits(instance_type: &str) -> std::result::Result<InstanceLimits, SimError> {
    limits::lookup(instance_type).ok_or_else(|| SimError::UnknownInstanceType {
        name: instance_type.to_string(),
        known: limits::known_types().collect::<Vec<_>>().join(", "),
    })
}

fn normalise(what: &'static str, cidr: Ipv4Network) -> std::result::Result<Ipv4Network, SimError> {
    if !CIDR_PREFIXES.contains(&cidr.prefix()) {
        return Err(SimError::CidrSize { what, cidr });
    }
    Ok(Ipv4Network::new(cidr.network(), cidr.prefix()).expect("prefix checked above"))
}

/// `prefix` and 17 random hex digits, the shape of EC2 resource ids.
fn random_id(prefix: &str, rng: &mut impl Rng) -> String {
    let n = rng.random::<u128>() & ((1u128 << 68) - 1);
    format!("{prefix}{n:017x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn config(instance_type: &str, subnet: &str) -> SimConfig {
        SimConfig {
            instance_type: instance_type.into(),
            subnet_cidr: net(subnet),
            ..SimConfig::default()
        }
    }

    async fn sim(instance_type: &str, subnet: &str) -> SimCloud {
        SimCloud::new(config(instance_type, subnet), Arc::new(NoFabric))
            .await
            .unwrap()
    }

    async fn primary(cloud: &SimCloud) -> Eni {
        cloud.enis().await.unwrap().remove(0)
    }

    fn is_ec2_id(id: &str, prefix: &str) -> bool {
        id.strip_prefix(prefix).is_some_and(|hex| {
            hex.len() == 17
                && hex
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        })
    }

    /// Records what was materialised; fails for secondary ENIs, or for all,
    /// on demand.
    #[derive(Default)]
    struct RecordingFabric {
        calls: Mutex<Vec<(EniId, bool)>>,
        fail_secondary: bool,
        fail_primary: bool,
    }

    #[async_trait]
    impl Fabric for RecordingFabric {
        async fn materialize(
            &self,
            eni: &Eni,
            primary: bool,
        ) -> std::result::Result<(), FabricError> {
            self.calls.lock().unwrap().push((eni.id.clone(), primary));
            if (primary && self.fail_primary) || (!primary && self.fail_secondary) {
                return Err(FabricError::Vanished("eth9".into()));
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn primary_eni_exists_after_new() {
        let fabric = Arc::new(RecordingFabric::default());
        let cloud = SimCloud::new(SimConfig::default(), fabric.clone())
            .await
            .unwrap();
        let enis = cloud.enis().await.unwrap();
        assert_eq!(enis.len(), 1);
        let eni = &enis[0];
        assert!(eni.is_primary());
        assert_eq!(
            eni.primary_ip,
            ip("10.0.0.4"),
            "lowest non-reserved address"
        );
        assert!(eni.secondary_ips.is_empty());
        assert_eq!(eni.subnet.cidr, net("10.0.0.0/20"));
        assert!(is_ec2_id(&eni.id.0, "eni-"), "{}", eni.id);
        assert_eq!(eni.mac.0[0], 0x02, "locally administered unicast");
        assert_eq!(*fabric.calls.lock().unwrap(), vec![(eni.id.clone(), true)]);

        let node = cloud.node().await.unwrap();
        assert!(is_ec2_id(&node.instance_id, "i-"), "{}", node.instance_id);
        assert_eq!(node.limits, limits::lookup("m5.large").unwrap());
        assert_eq!(node.vpc_cidrs, vec![net("10.0.0.0/16")]);
        assert!(is_ec2_id(&eni.subnet.id, "subnet-"));
        assert!(is_ec2_id(cloud.vpc().id(), "vpc-"));
    }

    #[tokio::test]
    async fn assign_within_limit_hands_out_lowest_addresses() {
        let cloud = sim("m5.large", "10.0.0.0/20").await;
        let eni = primary(&cloud).await;
        let first = cloud.assign_ips(&eni.id, 2).await.unwrap();
        assert_eq!(first, vec![ip("10.0.0.5"), ip("10.0.0.6")]);
        let rest = cloud.assign_ips(&eni.id, 7).await.unwrap();
        assert_eq!(rest.len(), 7);
        assert_eq!(rest.last(), Some(&ip("10.0.0.13")));
        let listed = primary(&cloud).await.secondary_ips;
        assert_eq!(listed, [first, rest].concat());
    }

    #[tokio::test]
    async fn assign_beyond_ip_limit_assigns_nothing() {
        let cloud = sim("t3.medium", "10.0.0.0/20").await;
        let eni = primary(&cloud).await;
        let free = cloud.vpc().free_addresses();
        let err = cloud.assign_ips(&eni.id, 6).await.unwrap_err();
        assert_eq!(
            err,
            CloudError::IpLimit {
                eni: eni.id.clone(),
                limit: 6
            }
        );
        assert!(primary(&cloud).await.secondary_ips.is_empty());
        assert_eq!(cloud.vpc().free_addresses(), free);

        assert_eq!(cloud.assign_ips(&eni.id, 5).await.unwrap().len(), 5);
        assert!(matches!(
            cloud.assign_ips(&eni.id, 1).await,
            Err(CloudError::IpLimit { limit: 6, .. })
        ));
        assert_eq!(primary(&cloud).await.secondary_ips.len(), 5);
    }

    #[tokio::test]
    async fn zero_count_is_rejected_like_ec2() {
        let cloud = sim("m5.large", "10.0.0.0/20").await;
        let eni = primary(&cloud).await;
        assert!(matches!(
            cloud.assign_ips(&eni.id, 0).await,
            Err(CloudError::Rejected { .. })
        ));
        assert!(matches!(
            cloud.unassign_ips(&eni.id, &[]).await,
            Err(CloudError::Rejected { .. })
        ));
    }

    #[tokio::test]
    async fn attach_beyond_max_enis_fails() {
        let cloud = sim("t3.medium", "10.0.0.0/20").await;
        let eni1 = cloud.attach_eni(1).await.unwrap();
        assert_eq!(eni1.device_index, 1);
        assert_eq!(eni1.primary_ip, ip("10.0.0.5"));
        assert!(eni1.secondary_ips.is_empty());
        let err = cloud.attach_eni(1).await.unwrap_err();
        assert!(
            matches!(&err, CloudError::Rejected { message, .. } if message.contains("device index 1")),
            "{err}"
        );
        cloud.attach_eni(2).await.unwrap();
        assert_eq!(
            cloud.attach_eni(3).await,
            Err(CloudError::EniLimit {
                instance_type: "t3.medium".into(),
                limit: 3
            })
        );
        let enis = cloud.enis().await.unwrap();
        let indices: Vec<u32> = enis.iter().map(|e| e.device_index).collect();
        assert_eq!(indices, vec![0, 1, 2]);
        let mut macs: Vec<_> = enis.iter().map(|e| e.mac).collect();
        macs.dedup();
        assert_eq!(macs.len(), 3);
    }

    #[tokio::test]
    async fn enis_are_listed_by_device_index() {
        let cloud = sim("m5.4xlarge", "10.0.0.0/20").await;
        for i in [5, 2, 7] {
            cloud.attach_eni(i).await.unwrap();
        }
        let indices: Vec<u32> = cloud
            .enis()
            .await
            .unwrap()
            .iter()
            .map(|e| e.device_index)
            .collect();
        assert_eq!(indices, vec![0, 2, 5, 7]);
    }

    #[tokio::test]
    async fn small_subnet_runs_out() {
        // A /28 has 16 addresses, 11 usable; the primary ENI holds one.
        let cloud = sim("m5.large", "10.0.0.0/28").await;
        let eni0 = primary(&cloud).await;
        assert_eq!(cloud.vpc().free_addresses(), 10);
        cloud.assign_ips(&eni0.id, 5).await.unwrap();
        let eni1 = cloud.attach_eni(1).await.unwrap();
        assert_eq!(cloud.vpc().free_addresses(), 4);

        let full = CloudError::SubnetFull {
            subnet: eni0.subnet.id.clone(),
        };
        assert_eq!(cloud.assign_ips(&eni1.id, 5).await, Err(full.clone()));
        assert_eq!(cloud.vpc().free_addresses(), 4, "all or nothing");
        assert!(cloud.enis().await.unwrap()[1].secondary_ips.is_empty());

        cloud.assign_ips(&eni1.id, 4).await.unwrap();
        assert_eq!(cloud.vpc().free_addresses(), 0);
        assert_eq!(cloud.attach_eni(2).await, Err(full.clone()));
        assert_eq!(cloud.enis().await.unwrap().len(), 2);
        assert_eq!(cloud.assign_ips(&eni0.id, 1).await, Err(full));
    }

    #[tokio::test]
    async fn reserved_addresses_are_never_handed_out() {
        let cloud = sim("m5.large", "10.0.0.16/28").await;
        let eni0 = primary(&cloud).await;
        cloud.assign_ips(&eni0.id, 9).await.unwrap();
        cloud.attach_eni(1).await.unwrap();
        assert_eq!(cloud.vpc().free_addresses(), 0);

        let mut held: Vec<Ipv4Addr> = cloud
            .enis()
            .await
            .unwrap()
            .into_iter()
            .flat_map(|e| std::iter::once(e.primary_ip).chain(e.secondary_ips))
            .collect();
        held.sort();
        let usable: Vec<Ipv4Addr> = (20..=30).map(|o| Ipv4Addr::new(10, 0, 0, o)).collect();
        assert_eq!(held, usable, "10.0.0.16-19 and 10.0.0.31 are AWS's");
    }

    #[tokio::test]
    async fn unassign_then_assign_reuses_the_address() {
        let cloud = sim("m5.large", "10.0.0.0/20").await;
        let eni = primary(&cloud).await;
        let ips = cloud.assign_ips(&eni.id, 3).await.unwrap();
        assert_eq!(ips, vec![ip("10.0.0.5"), ip("10.0.0.6"), ip("10.0.0.7")]);
        let free = cloud.vpc().free_addresses();

        cloud
            .unassign_ips(&eni.id, &[ip("10.0.0.6")])
            .await
            .unwrap();
        assert_eq!(cloud.vpc().free_addresses(), free + 1);
        assert!(!cloud.vpc().is_used(ip("10.0.0.6")));
        assert_eq!(
            primary(&cloud).await.secondary_ips,
            vec![ip("10.0.0.5"), ip("10.0.0.7")]
        );

        assert_eq!(
            cloud.assign_ips(&eni.id, 1).await.unwrap(),
            vec![ip("10.0.0.6")]
        );
        assert_eq!(cloud.vpc().free_addresses(), free);
    }

    #[tokio::test]
    async fn unknown_eni_or_address_is_not_found_and_changes_nothing() {
        let cloud = sim("m5.large", "10.0.0.0/20").await;
        let eni = primary(&cloud).await;
        let ghost = EniId("eni-00000000000000000".into());
        assert!(matches!(
            cloud.assign_ips(&ghost, 1).await,
            Err(CloudError::NotFound { .. })
        ));
        assert!(matches!(
            cloud.unassign_ips(&ghost, &[ip("10.0.0.5")]).await,
            Err(CloudError::NotFound { .. })
        ));

        let held = cloud.assign_ips(&eni.id, 2).await.unwrap();
        let free = cloud.vpc().free_addresses();
        let err = cloud
            .unassign_ips(&eni.id, &[held[0], ip("10.0.0.99")])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CloudError::NotFound { what } if what.contains("10.0.0.99")),
            "{err}"
        );
        assert_eq!(primary(&cloud).await.secondary_ips, held);
        assert_eq!(cloud.vpc().free_addresses(), free);

        // The primary address is held, but it is not the caller's to give back.
        assert!(matches!(
            cloud.unassign_ips(&eni.id, &[eni.primary_ip]).await,
            Err(CloudError::Rejected { .. })
        ));
        assert!(cloud.vpc().is_used(eni.primary_ip));
    }

    #[tokio::test(start_paused = true)]
    async fn every_call_takes_the_api_latency() {
        let latency = Duration::from_millis(250);
        let config = SimConfig {
            api_latency: ApiLatency::Uniform(latency),
            ..SimConfig::default()
        };
        let cloud = SimCloud::new(config, Arc::new(NoFabric)).await.unwrap();
        let eni = primary(&cloud).await;

        let start = tokio::time::Instant::now();
        cloud.node().await.unwrap();
        assert_eq!(start.elapsed(), latency);
        cloud.enis().await.unwrap();
        let ips = cloud.assign_ips(&eni.id, 1).await.unwrap();
        cloud.unassign_ips(&eni.id, &ips).await.unwrap();
        // Create + Attach.
        cloud.attach_eni(1).await.unwrap();
        assert_eq!(start.elapsed(), latency * 6);
        // Failed calls cost the round trip too: Create, the refused Attach,
        // and the Delete of the ENI just created.
        cloud.attach_eni(1).await.unwrap_err();
        assert_eq!(start.elapsed(), latency * 9);
        assert!(cloud.detached_enis().await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_assigns_respect_the_limit() {
        let cloud = Arc::new(sim("m5.large", "10.0.0.0/20").await);
        let eni = primary(&cloud).await;
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cloud, id) = (cloud.clone(), eni.id.clone());
                tokio::spawn(async move { cloud.assign_ips(&id, 1).await })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(e) => assert!(matches!(e, CloudError::IpLimit { .. }), "{e}"),
            }
        }
        assert_eq!(ok, 9);
        let mut held = primary(&cloud).await.secondary_ips;
        held.sort();
        held.dedup();
        assert_eq!(held.len(), 9);
    }

    #[tokio::test]
    async fn nodes_sharing_a_vpc_never_share_an_address() {
        let vpc = Arc::new(SimVpc::new(net("10.0.0.0/16"), net("10.0.0.0/24")).unwrap());
        let a = SimCloud::in_vpc(vpc.clone(), "m5.large", Arc::new(NoFabric))
            .await
            .unwrap();
        let b = SimCloud::in_vpc(vpc.clone(), "t3.medium", Arc::new(NoFabric))
            .await
            .unwrap();
        let (ea, eb) = (primary(&a).await, primary(&b).await);
        assert_eq!(
            (ea.primary_ip, eb.primary_ip),
            (ip("10.0.0.4"), ip("10.0.0.5"))
        );
        assert_ne!(ea.id, eb.id);
        assert_ne!(ea.mac, eb.mac);
        assert_ne!(a.instance_id(), b.instance_id());
        let ia = a.assign_ips(&ea.id, 2).await.unwrap();
        let ib = b.assign_ips(&eb.id, 2).await.unwrap();
        assert_eq!(ia, vec![ip("10.0.0.6"), ip("10.0.0.7")]);
        assert_eq!(ib, vec![ip("10.0.0.8"), ip("10.0.0.9")]);
        // A node cannot touch another node's ENI.
        assert!(matches!(
            a.unassign_ips(&eb.id, &ib).await,
            Err(CloudError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn link_failure_leaves_the_eni_attached() {
        let fabric = Arc::new(RecordingFabric {
            fail_secondary: true,
            ..Default::default()
        });
        let cloud = SimCloud::new(SimConfig::default(), fabric.clone())
            .await
            .unwrap();
        let err = cloud.attach_eni(1).await.unwrap_err();
        let CloudError::Link { eni, .. } = err else {
            panic!("{err}")
        };
        let enis = cloud.enis().await.unwrap();
        assert_eq!(enis.len(), 2);
        assert_eq!(enis[1].id, eni);
        assert_eq!(fabric.calls.lock().unwrap()[1], (eni, false));
    }

    #[tokio::test]
    async fn primary_link_failure_fails_start_and_frees_the_address() {
        let vpc = Arc::new(SimVpc::new(net("10.0.0.0/16"), net("10.0.0.0/28")).unwrap());
        let fabric = Arc::new(RecordingFabric {
            fail_primary: true,
            ..Default::default()
        });
        let err = SimCloud::in_vpc(vpc.clone(), "m5.large", fabric)
            .await
            .unwrap_err();
        assert!(matches!(err, SimError::Fabric { .. }), "{err}");
        assert_eq!(vpc.free_addresses(), 11);
    }

    #[tokio::test]
    async fn config_is_validated() {
        let err = SimCloud::new(config("m5.huge", "10.0.0.0/20"), Arc::new(NoFabric))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"m5.huge\""), "{msg}");
        assert!(
            msg.contains("m5.large") && msg.contains("t3.medium"),
            "{msg}"
        );

        let err = SimCloud::new(config("m5.large", "10.1.0.0/20"), Arc::new(NoFabric))
            .await
            .unwrap_err();
        assert!(matches!(err, SimError::SubnetOutsideVpc { .. }), "{err}");

        let err = SimCloud::new(config("m5.large", "10.0.0.0/29"), Arc::new(NoFabric))
            .await
            .unwrap_err();
        assert!(
            matches!(err, SimError::CidrSize { what: "subnet", .. }),
            "{err}"
        );

        // Host bits are ignored, as in AWS's console.
        let cloud = sim("m5.large", "10.0.0.77/20").await;
        assert_eq!(cloud.vpc().subnet().cidr, net("10.0.0.0/20"));
    }

    #[tokio::test]
    async fn subnet_too_full_for_a_primary_eni() {
        let vpc = Arc::new(SimVpc::new(net("10.0.0.0/16"), net("10.0.0.0/28")).unwrap());
        let first = SimCloud::in_vpc(vpc.clone(), "m5.large", Arc::new(NoFabric))
            .await
            .unwrap();
        first
            .assign_ips(&primary(&first).await.id, 9)
            .await
            .unwrap();
        first.attach_eni(1).await.unwrap();
        let err = SimCloud::in_vpc(vpc, "m5.large", Arc::new(NoFabric))
            .await
            .unwrap_err();
        assert!(
            matches!(err, SimError::PrimaryEni(CloudError::SubnetFull { .. })),
            "{err}"
        );
    }

    #[tokio::test]
    async fn prefixes_are_aligned_28s_and_share_the_slot_limit() {
        let cloud = sim("t3.medium", "10.0.0.0/24").await;
        let eni = primary(&cloud).await;
        let free = cloud.vpc().free_addresses();
        let p = cloud.assign_prefixes(&eni.id, 2).await.unwrap();
        assert_eq!(p, vec![net("10.0.0.16/28"), net("10.0.0.32/28")]);
        assert_eq!(cloud.vpc().free_addresses(), free - 32);
        cloud.assign_ips(&eni.id, 2).await.unwrap();
        // t3.medium: 5 slots per ENI; 2 prefixes + 2 addresses leave one.
        assert!(matches!(
            cloud.assign_prefixes(&eni.id, 2).await,
            Err(CloudError::IpLimit { limit: 6, .. })
        ));
        assert_eq!(cloud.assign_prefixes(&eni.id, 1).await.unwrap().len(), 1);
        assert_eq!(primary(&cloud).await.prefixes.len(), 3);
        cloud.unassign_prefixes(&eni.id, &p[..1]).await.unwrap();
        assert!(!cloud.vpc().is_used(ip("10.0.0.20")));
        assert!(matches!(
            cloud.unassign_prefixes(&eni.id, &p[..1]).await,
            Err(CloudError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn fragmented_subnet_has_addresses_but_no_blocks() {
        let cloud = sim("m5.large", "10.0.0.0/24").await;
        let eni = primary(&cloud).await;
        assert_eq!(
            cloud.vpc().fragment(),
            14,
            "16 blocks, first and last not whole"
        );
        let free = cloud.vpc().free_addresses();
        assert!(free > 200, "{free}");
        assert_eq!(
            cloud.assign_prefixes(&eni.id, 1).await,
            Err(CloudError::NoFreeCidrBlocks {
                subnet: eni.subnet.id.clone()
            })
        );
        assert_eq!(cloud.vpc().free_addresses(), free, "nothing taken");
        // Single addresses still come: the fallback aws-node lacks.
        assert_eq!(cloud.assign_ips(&eni.id, 3).await.unwrap().len(), 3);
        // One block whole again: prefixes work again.
        assert!(cloud.vpc().vacate(ip("10.0.0.167")));
        assert_eq!(
            cloud.assign_prefixes(&eni.id, 1).await.unwrap(),
            vec![net("10.0.0.160/28")]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn account_buckets_throttle_with_request_limit_exceeded() {
        let vpc = Arc::new(SimVpc::new(net("10.0.0.0/16"), net("10.0.0.0/16")).unwrap());
        let a = SimCloud::in_vpc(vpc.clone(), "m5.24xlarge", Arc::new(NoFabric))
            .await
            .unwrap();
        let b = SimCloud::in_vpc(vpc.clone(), "m5.24xlarge", Arc::new(NoFabric))
            .await
            .unwrap();
        let (ea, eb) = (primary(&a).await, primary(&b).await);
        // 100 Assign tokens for the whole account, shared by both nodes.
        for i in 0..100 {
            let (c, e) = if i % 2 == 0 { (&a, &ea) } else { (&b, &eb) };
            let r = c.assign_ips(&e.id, 1).await;
            if i < 98 {
                r.unwrap();
            } else {
                // Each ENI holds at most 49; the calls still cost tokens.
                assert!(matches!(r, Err(CloudError::IpLimit { .. })), "{r:?}");
            }
        }
        let eni1 = a.attach_eni(1).await.unwrap();
        assert_eq!(
            a.assign_ips(&eni1.id, 1).await,
            Err(CloudError::Throttled {
                operation: "AssignPrivateIpAddresses"
            })
        );
        // Other actions have buckets of their own.
        a.unassign_ips(&ea.id, &ea.secondary_ips)
            .await
            .unwrap_or(());
        // 5 tokens a second.
        tokio::time::advance(Duration::from_millis(200)).await;
        a.assign_ips(&eni1.id, 1).await.unwrap();
        assert!(a.assign_ips(&eni1.id, 1).await.is_err());
        let stats = vpc.stats();
        assert_eq!(stats.of(Action::Assign).calls, 103);
        assert_eq!(stats.of(Action::Assign).throttled, 2);
        assert_eq!(stats.of(Action::Create).calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn injected_faults_change_nothing_and_take_their_time() {
        let vpc = Arc::new(
            SimVpc::with_behaviour(
                net("10.0.0.0/16"),
                net("10.0.0.0/20"),
                Behaviour {
                    latencies: Latencies::ec2(),
                    faults: FaultRates {
                        timeout_after: Duration::from_secs(7),
                        ..FaultRates::default()
                    },
                    ..Behaviour::default()
                },
            )
            .unwrap(),
        );
        let cloud = SimCloud::in_vpc(vpc.clone(), "m5.large", Arc::new(NoFabric))
            .await
            .unwrap();
        let eni = primary(&cloud).await;
        let free = vpc.free_addresses();
        vpc.inject(Action::Assign, Fault::ServerError);
        vpc.inject(Action::Assign, Fault::Timeout);
        let t = Instant::now();
        assert!(matches!(
            cloud.assign_ips(&eni.id, 2).await,
            Err(CloudError::Api { .. })
        ));
        assert_eq!(t.elapsed(), Latencies::ec2().reject);
        let t = Instant::now();
        assert_eq!(
            cloud.assign_ips(&eni.id, 2).await,
            Err(CloudError::Timeout {
                operation: "AssignPrivateIpAddresses"
            })
        );
        assert_eq!(t.elapsed(), Duration::from_secs(7));
        assert_eq!(vpc.free_addresses(), free);
        let t = Instant::now();
        let ips = cloud.assign_ips(&eni.id, 2).await.unwrap();
        assert_eq!(t.elapsed(), Duration::from_millis(500), "an Assign ≈ 0.5 s");
        // IMDS lags by a second.
        assert!(cloud.enis().await.unwrap()[0].secondary_ips.is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cloud.enis().await.unwrap()[0].secondary_ips, ips);
        // A new ENI is usable only seconds after Attach answers.
        let t = Instant::now();
        cloud.attach_eni(1).await.unwrap();
        assert_eq!(t.elapsed(), Duration::from_secs(6));
        assert_eq!(vpc.stats().of(Action::Assign).failed, 2);
    }

    #[tokio::test]
    async fn detach_delete_and_leaks() {
        let cloud = sim("m5.large", "10.0.0.0/24").await;
        let free = cloud.vpc().free_addresses();
        let eni = cloud.attach_eni(1).await.unwrap();
        cloud.assign_prefixes(&eni.id, 1).await.unwrap();
        cloud.assign_ips(&eni.id, 1).await.unwrap();
        cloud.detach_and_delete_eni(&eni.id).await.unwrap();
        assert_eq!(cloud.vpc().free_addresses(), free, "everything returned");
        assert_eq!(cloud.enis().await.unwrap().len(), 1);
        let p = primary(&cloud).await;
        assert!(matches!(
            cloud.detach_and_delete_eni(&p.id).await,
            Err(CloudError::Rejected { .. })
        ));

        let leaked = cloud.leak_eni().unwrap();
        let other = SimCloud::in_vpc(cloud.vpc().clone(), "m5.large", Arc::new(NoFabric))
            .await
            .unwrap();
        other.leak_eni().unwrap();
        let mine = cloud.detached_enis().await.unwrap();
        assert_eq!(mine.len(), 1, "only this node's");
        assert_eq!(mine[0].id, leaked);
        assert!(mine[0].created_at.is_some());
        cloud.delete_eni(&leaked).await.unwrap();
        assert!(cloud.detached_enis().await.unwrap().is_empty());
        assert!(matches!(
            cloud.delete_eni(&p.id).await,
            Err(CloudError::Rejected { .. })
        ));
    }

    #[tokio::test]
    async fn failed_attach_deletes_the_created_eni_or_leaks_it() {
        let cloud = sim("t3.medium", "10.0.0.0/24").await;
        let free = cloud.vpc().free_addresses();
        cloud.vpc().inject(Action::Attach, Fault::Throttle);
        assert!(matches!(
            cloud.attach_eni(1).await,
            Err(CloudError::Throttled { .. })
        ));
        assert_eq!(cloud.vpc().free_addresses(), free);
        cloud.vpc().inject(Action::Attach, Fault::ServerError);
        cloud.vpc().inject(Action::Delete, Fault::ServerError);
        assert!(cloud.attach_eni(1).await.is_err());
        assert_eq!(cloud.detached_enis().await.unwrap().len(), 1, "leaked");
    }

    #[tokio::test]
    async fn sibling_vpcs_share_the_account() {
        let a = SimVpc::new(net("10.0.0.0/16"), net("10.0.0.0/16")).unwrap();
        let b = a.sibling(net("10.1.0.0/16"), net("10.1.0.0/16")).unwrap();
        let na = SimCloud::in_vpc(Arc::new(a), "m5.large", Arc::new(NoFabric))
            .await
            .unwrap();
        let nb = SimCloud::in_vpc(Arc::new(b), "m5.large", Arc::new(NoFabric))
            .await
            .unwrap();
        na.enis().await.unwrap();
        nb.enis().await.unwrap();
        assert_eq!(na.vpc().stats().of(Action::Describe).calls, 2);
        assert_eq!(primary(&nb).await.primary_ip, ip("10.1.0.4"));
    }

    #[tokio::test]
    async fn node_reports_its_primary_eni() {
        let cloud = sim("m5.large", "10.0.0.0/24").await;
        let p = primary(&cloud).await;
        let n = cloud.node().await.unwrap();
        assert_eq!(n.primary_ip, p.primary_ip);
        assert_eq!(n.primary_mac, p.mac);
        assert_eq!(n.subnet, p.subnet);
        assert_eq!(n.security_groups.len(), 1);
        assert!(is_ec2_id(&n.security_groups[0], "sg-"));
    }
}
