//! vpc-cni's pure core: the decisions of the node daemon, with no I/O.
//!
//! Nothing here touches the network, the kernel's netlink, the cloud or the
//! filesystem, and nothing needs an async runtime, so every rule is unit
//! tested in microseconds and any part of the daemon can use it. The
//! workspace's crate-graph test keeps it that way by checking
//! this crate's dependency closure.
//!
//! - [`alloc`]: the lock-free per-node address allocator.
//! - [`plan`]: the warm-pool planner (targets and one step at a time).
//! - [`limits`]: ENI and address limits per instance type, embedded.
//! - [`policy`]: NetworkPolicy's model, per-pod rules and their evaluation.
//! - [`mac`]: hardware addresses.
//! - [`settings`]: the error every bad setting gets.
#![warn(missing_docs)]

pub mod alloc;
pub mod limits;
pub mod mac;
pub mod plan;
pub mod policy;
pub mod settings;
