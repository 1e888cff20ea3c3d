//! ipamd: the vpc-cni node daemon.
//!
//! It owns every side effect of pod networking on one node. The `vpc-cni`
//! plugin forwards each CNI call over a Unix socket to [`server`], which hands
//! it to the pod service ([`pod`]): the service takes an address from the
//! allocator ([`alloc`]), wires the pod through netlink ([`dataplane`]) and
//! records the allocation ([`store`]). The warm pool ([`pool`]) keeps free
//! addresses on the node's ENIs through the [`cloud`] trait (EC2, or the
//! embedded simulator). Start reading at [`serve`].
#![warn(missing_docs)]

pub mod alloc;
pub mod cloud;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod demo;
pub mod http;
pub mod install_cni;
pub mod known_env;
pub mod metered_cloud;
pub mod metrics;
pub mod pod;
pub mod policy;
pub mod pool;
pub mod reaper;
pub mod reconcile;
pub mod server;
pub mod store;
pub mod sysctl;
pub mod timing;
pub mod tuning;

pub use daemon::serve;
