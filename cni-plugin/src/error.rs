//! CNI error codes and the spec's error object.
//!
//! Codes 1–11 are the CNI spec's well-known codes; 50/51 are STATUS codes;
//! 100 and up are ours and documented here, so operators can map an event in
//! kubelet's log to a cause.

use serde::{Deserialize, Serialize};

/// Incompatible CNI version (the config's `cniVersion` is not supported).
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Unsupported field in the network configuration.
pub const UNSUPPORTED_FIELD: u32 = 2;
/// Container unknown or does not exist.
pub const UNKNOWN_CONTAINER: u32 = 3;
/// Invalid necessary environment variables (`CNI_COMMAND`, `CNI_CONTAINERID`, ...).
pub const INVALID_ENV: u32 = 4;
/// I/O failure (e.g. reading stdin).
pub const IO_FAILURE: u32 = 5;
/// Failed to decode content (stdin is not JSON).
pub const DECODE_FAILURE: u32 = 6;
/// Invalid network config (wrong type of a key, missing `name`, ...).
pub const INVALID_NETWORK_CONFIG: u32 = 7;
/// Try again later: ipamd unreachable or starting, or the pool is refilling.
pub const TRY_AGAIN_LATER: u32 = 11;
/// STATUS: the plugin cannot serve ADD now.
pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
/// STATUS: not available, and existing pods may have limited connectivity.
pub const PLUGIN_NOT_AVAILABLE_LIMITED: u32 = 51;

/// ipamd failed internally (a bug or an unexpected kernel answer); see its log.
pub const INTERNAL: u32 = 100;
/// The node has no free address and cannot get more: every ENI and address
/// the instance type (or `MAX_ENI`) allows is in use, or the subnet is full.
pub const POOL_EXHAUSTED: u32 = 101;
/// Wiring the pod's network (veth, address, routes) failed in the kernel.
pub const DATAPLANE: u32 = 102;
/// The cloud provider (EC2 or the simulator) refused or failed a call.
pub const CLOUD: u32 = 103;
/// CHECK found the pod's network different from what ADD set up.
pub const CHECK_FAILED: u32 = 104;
/// The daemon and plugin speak different wire protocol versions.
pub const PROTOCOL_MISMATCH: u32 = 105;
/// The daemon's answer could not be read (closed early, garbled, too large).
pub const BAD_DAEMON_ANSWER: u32 = 106;

/// The spec's error object, printed on stdout with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    /// The CNI error code (see the constants in this module).
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// Longer details; may be empty.
    #[serde(default)]
    pub details: String,
}

impl CniError {
    /// An error with no details.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}
