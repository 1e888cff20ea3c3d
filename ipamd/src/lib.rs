//! ipamd: the vpc-cni node daemon, the composition root of the workspace.
//!
//! It owns every side effect of pod networking on one node. The `vpc-cni`
//! plugin forwards each CNI call over a Unix socket to [`server`], which hands
//! it to the pod service ([`pod`]): the service takes an address from the
//! allocator (`vpc-cni-core`'s [`alloc`]), wires the pod through the
//! [`dataplane`] (over `vpc-cni-netlink`) and records the allocation in the
//! checkpoint ([`store`]); a pod's identity (record, names, alias) is
//! [`identity`]. The warm pool ([`pool`]) keeps free addresses on the node's
//! ENIs through the [`cloud`] trait (`vpc-cni-cloud`: EC2 or the embedded
//! simulator); NetworkPolicy is [`policy`] (`vpc-cni-policy`). Every setting
//! is declared and parsed in [`config`]. Start reading at [`serve`]; the
//! crate graph is in `docs/architecture.md`.
//!
//! [`alloc`], [`cloud`] and [`policy`] are the other crates, re-exported so
//! the daemon's users (tests, benches, the demo) name one crate.
#![warn(missing_docs)]

pub use vpc_cni_cloud as cloud;
pub use vpc_cni_core::alloc;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod http;
pub mod identity;
pub mod install_cni;
pub mod known_env;
pub mod metered_cloud;
pub mod metrics;
pub mod pod;
pub use vpc_cni_policy as policy;
pub mod pool;
pub mod reaper;
pub mod reconcile;
pub mod server;
pub mod status;
pub mod store;
pub mod sysctl;
pub mod timing;
pub mod tuning;

pub use daemon::serve;
