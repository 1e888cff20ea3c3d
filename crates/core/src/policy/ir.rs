//! The policy IR: what one pod is allowed to send and receive, in terms the
//! nftables compiler can program directly (addresses and port ranges, no
//! labels). [`crate::policy::eval`] produces it from the cluster's objects;
//! the engine consumes it. Every collection is kept canonical (sorted,
//! merged, deduplicated; one `Allow` per distinct port set) so the same
//! policies always give equal `PodRules`, which lets the engine skip pods
//! whose rules did not change. (Equal traffic does not always mean equal
//! values: `{A: 80}, {A: 81}` and `{A: 80-81}` differ, and that only costs
//! a chain swap that was not needed.)

use std::net::Ipv4Addr;

/// A transport protocol NetworkPolicy can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP (the Kubernetes default when a port names no protocol).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// Inclusive port range on one protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// Protocol the range applies to.
    pub proto: Proto,
    /// First port, inclusive.
    pub first: u16,
    /// Last port, inclusive (`first` for a single port).
    pub last: u16,
}

/// The remote side of an allowed flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peers {
    /// Every address.
    Any,
    /// Inclusive intervals, `except` already subtracted, sorted, merged.
    Ranges(Vec<(Ipv4Addr, Ipv4Addr)>),
}

/// The destination ports of an allowed flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ports {
    /// Every port of every protocol (and port-less protocols too).
    Any,
    /// Sorted, merged per protocol.
    Ranges(Vec<PortRange>),
}

/// One allowed (peers × ports) product.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Allow {
    /// Who may be on the other end.
    pub peers: Peers,
    /// Which destination ports.
    pub ports: Ports,
}

/// `Open`: no policy isolates this direction. `Isolated(v)`: only `v` is
/// allowed (empty = deny all).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Isolation {
    /// No policy selects the pod for this direction: everything passes.
    Open,
    /// Only the listed products pass; canonical: sorted and deduplicated.
    Isolated(Vec<Allow>),
}

/// Everything the dataplane needs to enforce policy on one pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodRules {
    /// Traffic arriving at the pod.
    pub ingress: Isolation,
    /// Traffic leaving the pod.
    pub egress: Isolation,
}

/// Identifies a pod for label lookup: the CNI call's K8S_POD_NAMESPACE /
/// K8S_POD_NAME.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
}

impl PodKey {
    /// The key of a pod whose CNI call (or checkpoint record) named both its
    /// namespace and its name; `None` when either is missing (a pod the
    /// policy engine cannot match by labels).
    pub fn of(namespace: Option<&String>, name: Option<&String>) -> Option<PodKey> {
        Some(PodKey {
            namespace: namespace?.clone(),
            name: name?.clone(),
        })
    }
}
