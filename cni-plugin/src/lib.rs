//! Wire vocabulary shared by the `vpc-cni` plugin and ipamd, and the
//! plugin's own logic.
//!
//! Start at [`wire`] for the socket protocol, [`result`] for the CNI result
//! types and [`error`] for the error codes. The plugin itself starts at
//! [`plugin::run`], which parses the environment ([`env`]) and stdin
//! ([`config`]), answers VERSION and forwards everything else to ipamd
//! ([`client`]). The crate depends on serde only: kubelet execs the plugin
//! for every pod, so it must start fast.
#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod env;
pub mod error;
mod log;
pub mod plugin;
pub mod result;
pub mod wire;

#[cfg(test)]
mod testutil;

pub use error::CniError;
