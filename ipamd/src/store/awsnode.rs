//! aws-node's checkpoint (`/var/run/aws-node/ipam.json`), read once when a
//! node switches from aws-node to vpc-cni and our own checkpoint is absent,
//! so its running pods keep their addresses.
//!
//! The format is aws-node's `CheckpointData` (amazon-vpc-cni-k8s,
//! `pkg/ipamd/datastore/data_store.go`, version stamp `vpc-cni-ipam/1`):
//!
//! ```json
//! {"version": "vpc-cni-ipam/1",
//!  "allocations": [{"networkName": "aws-cni", "containerID": "…", "ifName": "eth0",
//!                   "ipv4": "10.0.0.12", "allocationTimestamp": 1700000000000000000,
//!                   "metadata": {"k8sPodNamespace": "default", "k8sPodName": "web-0"}}]}
//! ```
//!
//! Only IPv4 entries are taken (this build is IPv4-only); the rest is
//! reported. aws-node names host veths and ENI route tables as we do, so
//! the kernel side of its pods needs no change.

use std::net::Ipv4Addr;
use std::path::Path;

use serde::Deserialize;

/// The version stamp aws-node writes.
pub const AWS_NODE_VERSION: &str = "vpc-cni-ipam/1";

/// One allocation aws-node recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsNodeAllocation {
    /// `containerID`.
    pub container_id: String,
    /// `ifName`.
    pub ifname: String,
    /// `ipv4`.
    pub addr: Ipv4Addr,
    /// `metadata.k8sPodNamespace`.
    pub namespace: Option<String>,
    /// `metadata.k8sPodName`.
    pub name: Option<String>,
    /// `allocationTimestamp` (nanoseconds since the epoch) in seconds.
    pub created_unix: u64,
}

#[derive(Deserialize)]
struct Data {
    version: String,
    #[serde(default)]
    allocations: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    #[serde(rename = "containerID", default)]
    container_id: String,
    #[serde(default)]
    if_name: String,
    #[serde(default)]
    ipv4: String,
    #[serde(default)]
    ipv6: String,
    #[serde(default)]
    allocation_timestamp: i64,
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    k8s_pod_namespace: String,
    #[serde(default)]
    k8s_pod_name: String,
}

/// Why aws-node's checkpoint was not taken.
#[derive(Debug, thiserror::Error)]
pub enum AwsNodeError {
    /// It could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// It is not aws-node's format.
    #[error("{path}: not an aws-node checkpoint: {reason}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// What was read: the IPv4 allocations, and entries skipped with the reason.
#[derive(Debug, Default)]
pub struct AwsNodeCheckpoint {
    /// The allocations taken.
    pub allocations: Vec<AwsNodeAllocation>,
    /// Entries not taken, and why.
    pub skipped: Vec<String>,
}

/// Reads aws-node's checkpoint at `path`; `Ok(None)` if there is none.
pub fn read(path: &Path) -> Result<Option<AwsNodeCheckpoint>, AwsNodeError> {
    let shown = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AwsNodeError::Io {
                path: shown,
                source,
            })
        }
    };
    parse(&bytes)
        .map(Some)
        .map_err(|reason| AwsNodeError::Format {
            path: shown,
            reason,
        })
}

/// Parses aws-node's checkpoint.
pub fn parse(bytes: &[u8]) -> Result<AwsNodeCheckpoint, String> {
    let data: Data = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if data.version != AWS_NODE_VERSION {
        return Err(format!(
            "version {:?}, expected {AWS_NODE_VERSION:?}",
            data.version
        ));
    }
    let mut out = AwsNodeCheckpoint::default();
    for e in data.allocations {
        let addr = match e.ipv4.parse::<Ipv4Addr>() {
            Ok(a) if !e.container_id.is_empty() => a,
            _ => {
                out.skipped.push(format!(
                    "container {:?}: no usable IPv4 address (ipv4 {:?}, ipv6 {:?})",
                    e.container_id, e.ipv4, e.ipv6
                ));
                continue;
            }
        };
        let some = |s: String| (!s.is_empty()).then_some(s);
        out.allocations.push(AwsNodeAllocation {
            container_id: e.container_id,
            ifname: if e.if_name.is_empty() {
                "eth0".into()
            } else {
                e.if_name
            },
            addr,
            namespace: some(e.metadata.k8s_pod_namespace),
            name: some(e.metadata.k8s_pod_name),
            created_unix: u64::try_from(e.allocation_timestamp / 1_000_000_000).unwrap_or(0),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_node_format_is_read() {
        let text = br#"{"version":"vpc-cni-ipam/1","allocations":[
            {"networkName":"aws-cni","containerID":"c1","ifName":"eth0","ipv4":"10.0.0.12",
             "allocationTimestamp":1700000000123456789,
             "metadata":{"k8sPodNamespace":"default","k8sPodName":"web-0"}},
            {"networkName":"aws-cni","containerID":"c2","ifName":"eth0","ipv6":"2001:db8::1",
             "allocationTimestamp":0,"metadata":{}}]}"#;
        let c = parse(text).unwrap();
        assert_eq!(c.allocations.len(), 1);
        let a = &c.allocations[0];
        assert_eq!(a.container_id, "c1");
        assert_eq!(a.addr, Ipv4Addr::new(10, 0, 0, 12));
        assert_eq!(a.name.as_deref(), Some("web-0"));
        assert_eq!(a.created_unix, 1_700_000_000);
        assert_eq!(c.skipped.len(), 1, "{:?}", c.skipped);
    }

    #[test]
    fn other_versions_are_refused() {
        assert!(parse(br#"{"version":"vpc-cni-ipam/2","allocations":[]}"#).is_err());
        assert!(parse(b"garbage").is_err());
    }
}
