//! A pod's identity on this node, in one place: the key an attachment is
//! known by (`CNI_CONTAINERID` + `CNI_IFNAME`, [`RecordKey`]), the record
//! the checkpoint keeps of it ([`PodRecord`]), the names derived from it
//! (host veth [`host_veth_name`], ENI route table [`eni_table`]), the owner
//! written into the host veth's alias so the kernel alone can tell whose a
//! veth is ([`Owner`]), the markers reconcile reads ([`WIRING_PENDING`],
//! [`UNKNOWN_OWNER_PREFIX`]) and the result an ADD returned.
//!
//! How an attachment is undone, whoever undoes it (DEL, GC, a failed ADD,
//! restart reconcile): its host route and rules go
//! ([`Dataplane::del_pod`](crate::dataplane::Dataplane::del_pod) with
//! [`PodRecord::pod_net`]'s address and table and the record's
//! `host_ifindex`), its host veth is reaped if the runtime leaves it
//! (`reap_link`), its address returns to the allocator under its key, and
//! the checkpoint forgets the key.

use std::net::Ipv4Addr;
use std::sync::Arc;

use cni_plugin::result::{AddResult, Interface, IpConfig, Route, CURRENT_VERSION};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use crate::dataplane::naming::host_veth_name;
use crate::dataplane::{PodNet, VethMacs, POD_GATEWAY};
use crate::store::{Record, RecordKey};

/// Prefix and format version of the alias.
pub const ALIAS_PREFIX: &str = "vpc-cni/1";

/// The kernel's `IFALIASZ` minus the terminating NUL.
pub const MAX_ALIAS_BYTES: usize = 255;

/// Container id prefix of an address held for a host veth nobody claims
/// (no checkpoint entry, no alias): never a runtime's container id, so CNI
/// GC leaves it alone.
pub const UNKNOWN_OWNER_PREFIX: &str = "unknown-owner:";

/// `host_ifindex` of a record journaled before its ADD finished wiring
/// (ADD journals first, so the fsync overlaps the netlink work, and records
/// the index lazily afterwards). After a crash such a record is kept only if
/// its /32 host route goes through the host veth found by its name; the
/// kernel never gives index 0 to a link.
pub const WIRING_PENDING: u32 = 0;

/// One wired attachment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS` at ADD.
    pub netns: String,
    /// Pod namespace from CNI_ARGS.
    pub namespace: Option<String>,
    /// Pod name from CNI_ARGS.
    pub name: Option<String>,
    /// The address.
    pub addr: Ipv4Addr,
    /// Device index of the ENI holding it.
    pub eni_index: u32,
    /// Host veth name.
    pub host_ifname: String,
    /// Host veth index (to reap exactly this link later).
    pub host_ifindex: u32,
    /// MTU used.
    pub mtu: u32,
    /// When ADD finished (seconds since the epoch).
    pub created_unix: u64,
    /// The result ADD returned (returned again for a repeated ADD). Shared,
    /// so the checkpoint's snapshots of every record do not copy it.
    pub result: Arc<Value>,
}

impl PodRecord {
    /// What the dataplane needs to wire, check or unwire this pod.
    pub fn pod_net(&self) -> PodNet {
        PodNet {
            netns: self.netns.clone(),
            ifname: self.ifname.clone(),
            host_ifname: self.host_ifname.clone(),
            addr: self.addr,
            mtu: self.mtu,
            eni_table: eni_table(self.eni_index),
            alias: None,
        }
    }
}

impl Record for PodRecord {
    fn key(&self) -> RecordKey {
        RecordKey {
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }
}

/// The route table of a secondary ENI: its device index + 1, as aws-node.
pub fn eni_table(device_index: u32) -> Option<u32> {
    (device_index > 0).then_some(device_index + 1)
}

/// Who owns a host veth, as its alias says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS` at ADD.
    pub netns: String,
    /// Device index of the ENI holding the address.
    pub eni_index: u32,
    /// MTU used.
    pub mtu: u32,
}

impl Owner {
    /// `vpc-cni/1 <eni index> <mtu> <ifname> <container id> <netns>`, or
    /// `None` if it does not fit the kernel's limit or a field holds a space
    /// (the container id and ifname never do: the plugin refuses them).
    pub fn alias(&self) -> Option<String> {
        if self.container_id.contains(' ') || self.ifname.contains(' ') {
            return None;
        }
        let text = format!(
            "{ALIAS_PREFIX} {} {} {} {} {}",
            self.eni_index, self.mtu, self.ifname, self.container_id, self.netns
        );
        (text.len() <= MAX_ALIAS_BYTES).then_some(text)
    }

    /// Reads an alias written by [`Owner::alias`].
    pub fn from_alias(alias: &str) -> Option<Self> {
        let rest = alias.strip_prefix(ALIAS_PREFIX)?.strip_prefix(' ')?;
        let mut parts = rest.splitn(5, ' ');
        let eni_index = parts.next()?.parse().ok()?;
        let mtu = parts.next()?.parse().ok()?;
        let ifname = parts.next()?.to_string();
        let container_id = parts.next()?.to_string();
        let netns = parts.next().unwrap_or("").to_string();
        (!ifname.is_empty() && !container_id.is_empty()).then_some(Owner {
            container_id,
            ifname,
            netns,
            eni_index,
            mtu,
        })
    }
}

/// The owner written into the host veth's alias at ADD.
pub fn alias_for(
    container_id: &str,
    ifname: &str,
    netns: &str,
    eni_index: u32,
    mtu: u32,
) -> Option<String> {
    Owner {
        container_id: container_id.to_string(),
        ifname: ifname.to_string(),
        netns: netns.to_string(),
        eni_index,
        mtu,
    }
    .alias()
}

/// The CNI result of an ADD that wired `pod` (also rebuilt by reconcile).
pub fn add_result(pod: &PodNet, macs: VethMacs) -> Value {
    let result = AddResult {
        cni_version: CURRENT_VERSION.to_string(),
        interfaces: vec![
            Interface {
                name: pod.host_ifname.clone(),
                mac: macs.host.to_string(),
                mtu: Some(pod.mtu),
                sandbox: None,
            },
            Interface {
                name: pod.ifname.clone(),
                mac: macs.pod.to_string(),
                mtu: Some(pod.mtu),
                sandbox: Some(pod.netns.clone()),
            },
        ],
        ips: vec![IpConfig {
            address: format!("{}/32", pod.addr),
            gateway: Some(POD_GATEWAY.to_string()),
            interface: Some(1),
        }],
        routes: vec![Route {
            dst: "0.0.0.0/0".into(),
            gw: Some(POD_GATEWAY.to_string()),
        }],
        dns: json!({}),
    };
    serde_json::to_value(result).expect("result serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_round_trips() {
        let o = Owner {
            container_id: "abc123".into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/cni-1 with space".into(),
            eni_index: 2,
            mtu: 9001,
        };
        let a = o.alias().unwrap();
        assert!(a.starts_with("vpc-cni/1 2 9001 eth0 abc123 "), "{a}");
        assert_eq!(Owner::from_alias(&a), Some(o));
        assert_eq!(Owner::from_alias("something else"), None);
        assert_eq!(Owner::from_alias("vpc-cni/1 x 9001 eth0 c n"), None);
    }

    #[test]
    fn too_long_an_owner_gets_no_alias() {
        let o = Owner {
            container_id: "c".repeat(300),
            ifname: "eth0".into(),
            netns: String::new(),
            eni_index: 0,
            mtu: 9001,
        };
        assert_eq!(o.alias(), None);
    }
}
