//! The request/response frames exchanged between the `vpc-cni` plugin and ipamd.
//!
//! One connection carries one call: the client writes one JSON [`Request`],
//! shuts down its write half, and reads one JSON [`Response`] until EOF.
//! Framing by EOF keeps both sides trivial and needs no length prefix; a
//! request is a few KiB at most.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::CniError;

/// Bumped when a frame changes incompatibly; ipamd refuses other versions
/// with a clear message instead of misreading them.
pub const PROTOCOL_VERSION: u32 = 1;

/// Upper bound on one frame, so a confused or hostile peer cannot make the
/// other side buffer without limit.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// What the caller asks ipamd to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    /// CNI ADD.
    Add,
    /// CNI DEL.
    Del,
    /// CNI CHECK.
    Check,
    /// CNI STATUS.
    Status,
    /// CNI GC.
    Gc,
    /// Not a CNI verb: `ipamd status` asks a running daemon for its pool and pods.
    Introspect,
}

impl Command {
    /// The `CNI_COMMAND` spelling, e.g. `ADD`.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Introspect => "INTROSPECT",
        }
    }
}

/// Kubernetes identity of the pod, from `CNI_ARGS`. Every field is optional:
/// podman sends only `K8S_POD_NAME`, `ctr run --cni` sends nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodArgs {
    /// `K8S_POD_NAMESPACE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `K8S_POD_NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `K8S_POD_INFRA_CONTAINER_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infra_container_id: Option<String>,
    /// `K8S_POD_UID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// One call from the plugin to ipamd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Always [`PROTOCOL_VERSION`] when sent by this crate.
    pub v: u32,
    /// The CNI verb.
    pub command: Command,
    /// `CNI_CONTAINERID`; empty for STATUS and GC.
    #[serde(default)]
    pub container_id: String,
    /// `CNI_NETNS`; empty when the runtime sends none (second DEL, STATUS, GC).
    #[serde(default)]
    pub netns: String,
    /// `CNI_IFNAME`; empty for STATUS and GC.
    #[serde(default)]
    pub ifname: String,
    /// Pod identity from `CNI_ARGS`.
    #[serde(default)]
    pub args: PodArgs,
    /// The network configuration exactly as read from stdin (with
    /// `prevResult`, `runtimeConfig`, `cni.dev/valid-attachments` if present).
    #[serde(default)]
    pub config: Value,
}

impl Request {
    /// A request about the daemon rather than a container (STATUS, GC,
    /// INTROSPECT): no container id, netns, ifname or pod.
    pub fn for_daemon(command: Command, config: Value) -> Self {
        Request {
            v: PROTOCOL_VERSION,
            command,
            container_id: String::new(),
            netns: String::new(),
            ifname: String::new(),
            args: PodArgs::default(),
            config,
        }
    }
}

/// ipamd's answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Response {
    /// Success. `result` is a CNI 1.1.0 result for ADD (and `{}` otherwise);
    /// the plugin rewrites it for the caller's `cniVersion`.
    Ok {
        /// The result object.
        result: Value,
    },
    /// Failure, with a CNI error code.
    Error(CniError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        let req = Request {
            v: PROTOCOL_VERSION,
            command: Command::Add,
            container_id: "abc".into(),
            netns: "/var/run/netns/cni-1".into(),
            ifname: "eth0".into(),
            args: PodArgs {
                namespace: Some("default".into()),
                name: Some("web-0".into()),
                ..PodArgs::default()
            },
            config: serde_json::json!({"cniVersion": "1.1.0", "name": "vpc", "type": "vpc-cni"}),
        };
        let text = serde_json::to_string(&req).unwrap();
        assert!(text.contains("\"command\":\"ADD\""), "{text}");
        let back: Request = serde_json::from_str(&text).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn response_round_trips() {
        for resp in [
            Response::Ok {
                result: serde_json::json!({"cniVersion": "1.1.0"}),
            },
            Response::Error(CniError::new(11, "ipamd is starting")),
        ] {
            let text = serde_json::to_string(&resp).unwrap();
            assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), resp);
        }
    }
}
