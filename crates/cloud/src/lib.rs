//! The cloud seen by one node: its identity, its ENIs and their addresses.
//!
//! [`Cloud`] is the only way the pool talks to EC2 or to the simulator, so the
//! pool never sees SDK types. Implementations: [`ec2`] (aws-sdk-ec2 and IMDS,
//! on a real instance) and [`sim::SimCloud`] (embedded: the demo, tests and
//! benches). Calls are async and may be slow (an EC2 Assign takes ≈ 0.5 s):
//! callers must never hold a lock across them.

pub mod bucket;
pub mod budget;
pub mod ec2;
pub mod limits;
pub mod sim;

use std::fmt;
use std::net::Ipv4Addr;

use async_trait::async_trait;
use ipnetwork::Ipv4Network;

pub use limits::InstanceLimits;

/// An ENI identity, e.g. `eni-0a1b2c3d4e5f60718`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EniId(pub String);

impl fmt::Display for EniId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub use vpc_cni_core::mac::MacAddr;

/// A VPC subnet an ENI lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    /// e.g. `subnet-0123`.
    pub id: String,
    /// The subnet's CIDR.
    pub cidr: Ipv4Network,
}

impl Subnet {
    /// The VPC router: the subnet's first host address, as in AWS.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cidr.network()) + 1)
    }
}

/// One ENI attached to this node, as the cloud reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eni {
    /// Its identity.
    pub id: EniId,
    /// Its MAC: how the node finds the kernel link that stands for it.
    pub mac: MacAddr,
    /// Attachment device index; 0 is the primary ENI.
    pub device_index: u32,
    /// The subnet it lives in.
    pub subnet: Subnet,
    /// The ENI's own primary address (never given to a pod).
    pub primary_ip: Ipv4Addr,
    /// Secondary addresses assigned to it (these are pod addresses).
    pub secondary_ips: Vec<Ipv4Addr>,
    /// /28 prefixes delegated to it (each holds 16 pod addresses).
    pub prefixes: Vec<Ipv4Network>,
}

impl Eni {
    /// Whether this is the node's primary ENI.
    pub fn is_primary(&self) -> bool {
        self.device_index == 0
    }
}

/// Who this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// e.g. `i-0123456789abcdef0`.
    pub instance_id: String,
    /// The instance type and its ENI/address limits.
    pub limits: InstanceLimits,
    /// The VPC's CIDR blocks.
    pub vpc_cidrs: Vec<Ipv4Network>,
    /// The node's primary private IP (the SNAT target).
    pub primary_ip: Ipv4Addr,
    /// The primary ENI's MAC.
    pub primary_mac: MacAddr,
    /// The primary ENI's subnet (new ENIs are created there).
    pub subnet: Subnet,
    /// The primary ENI's security groups (new ENIs get them).
    pub security_groups: Vec<String>,
}

/// An ENI this cluster and node created (found by its tags) that is not
/// attached: a leak candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachedEni {
    /// Its identity.
    pub id: EniId,
    /// When it was created (its `node.k8s.amazonaws.com/createdAt` tag), if known.
    pub created_at: Option<std::time::SystemTime>,
}

/// Why a cloud call failed. Variants mirror EC2's error codes so the pool can
/// react the same way to the simulator and to EC2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudError {
    /// EC2 `InsufficientFreeAddressesInSubnet`.
    #[error("subnet {subnet} has no free addresses left")]
    SubnetFull {
        /// The subnet.
        subnet: String,
    },
    /// EC2 `AttachmentLimitExceeded`: the instance type allows no more ENIs.
    #[error("instance type {instance_type} allows at most {limit} ENIs")]
    EniLimit {
        /// The instance type.
        instance_type: String,
        /// Its ENI limit.
        limit: u32,
    },
    /// EC2 `PrivateIpAddressLimitExceeded`: the ENI holds all it may.
    #[error("ENI {eni} allows at most {limit} IPv4 addresses")]
    IpLimit {
        /// The ENI.
        eni: EniId,
        /// Its limit (primary included).
        limit: u32,
    },
    /// EC2 `RequestLimitExceeded`: throttled; retry with backoff.
    #[error("throttled by the cloud API on {operation}")]
    Throttled {
        /// The API call.
        operation: &'static str,
    },
    /// An `*.NotFound` error.
    #[error("{what} not found")]
    NotFound {
        /// What was missing.
        what: String,
    },
    /// A request the cloud refused as invalid (a 4xx not covered above, e.g.
    /// `InvalidParameterValue`, `InvalidNetworkInterface.InUse`): retrying
    /// the same request will not help.
    #[error("cloud API {operation} rejected the request: {message}")]
    Rejected {
        /// The API call.
        operation: &'static str,
        /// What the cloud said.
        message: String,
    },
    /// A 5xx or transport failure.
    #[error("cloud API {operation} failed: {message}")]
    Api {
        /// The API call.
        operation: &'static str,
        /// What the cloud said.
        message: String,
    },
    /// EC2 `InsufficientCidrBlocks`: the subnet has no free aligned /28.
    #[error("subnet {subnet} has no free /28 block left for a prefix")]
    NoFreeCidrBlocks {
        /// The subnet.
        subnet: String,
    },
    /// The call did not answer in time (transport timeout); its effect is unknown.
    #[error("cloud API {operation} timed out")]
    Timeout {
        /// The API call.
        operation: &'static str,
    },
    /// EC2 `UnauthorizedOperation` or `AuthFailure`: retrying will not help.
    #[error("not authorized to call {operation}: {message}")]
    Unauthorized {
        /// The API call.
        operation: &'static str,
        /// What the cloud said.
        message: String,
    },
    /// The cloud attached an ENI but the node could not bring up its link.
    #[error("ENI {eni} attached but its link could not be set up: {message}")]
    Link {
        /// The ENI.
        eni: EniId,
        /// What went wrong.
        message: String,
    },
}

/// Result of a cloud call.
pub type Result<T> = std::result::Result<T, CloudError>;

/// The cloud API one node needs. Kept small on purpose (aws-node's 42-method
/// `APIs` interface is what we avoid): identity, inventory, and the four
/// mutations the pool makes.
#[async_trait]
pub trait Cloud: Send + Sync + 'static {
    /// Who this node is (IMDS on EC2).
    async fn node(&self) -> Result<NodeInfo>;

    /// Every ENI attached to this node, primary first, with its addresses.
    async fn enis(&self) -> Result<Vec<Eni>>;

    /// Creates an ENI in the node's subnet, attaches it at `device_index`, and
    /// returns it once its link exists on the node.
    async fn attach_eni(&self, device_index: u32) -> Result<Eni>;

    /// Assigns `count` more secondary addresses to `eni`; returns the new ones.
    async fn assign_ips(&self, eni: &EniId, count: u32) -> Result<Vec<Ipv4Addr>>;

    /// Returns secondary addresses of `eni` to the subnet.
    async fn unassign_ips(&self, eni: &EniId, ips: &[Ipv4Addr]) -> Result<()>;

    /// Delegates `count` more /28 prefixes to `eni`; returns the new ones.
    async fn assign_prefixes(&self, eni: &EniId, count: u32) -> Result<Vec<Ipv4Network>>;

    /// Returns delegated prefixes of `eni` to the subnet.
    async fn unassign_prefixes(&self, eni: &EniId, prefixes: &[Ipv4Network]) -> Result<()>;

    /// Detaches a surplus ENI of this node (waiting, bounded, until it is
    /// detached) and deletes it.
    async fn detach_and_delete_eni(&self, eni: &EniId) -> Result<()>;

    /// ENIs tagged `cluster.k8s.amazonaws.com/name=<cluster>` and
    /// `node.k8s.amazonaws.com/instance_id=<this node>` that are detached
    /// (status `available`).
    async fn detached_enis(&self) -> Result<Vec<DetachedEni>>;

    /// Deletes a detached ENI (leak collection).
    async fn delete_eni(&self, eni: &EniId) -> Result<()>;
}

impl CloudError {
    /// Whether retrying the same call later may succeed (throttling, 5xx,
    /// timeouts), as opposed to a verdict about the request itself.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CloudError::Throttled { .. } | CloudError::Api { .. } | CloudError::Timeout { .. }
        )
    }
}
