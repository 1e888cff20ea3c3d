//! The kernel's view of the node's pods: host veths (`eni…`), the /32 host
//! routes through them, and the owner each host veth carries in its alias.
//!
//! ADD sets the alias (`ip link set eniXXXX alias "vpc-cni/1 …"`) in the
//! same netlink batch as the host route, so the kernel alone can tell whose
//! a host veth is: after a lost or damaged checkpoint a restart rebuilds the
//! allocation from it instead of forgetting a running pod.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use netlink_packet_route::link::{LinkAttribute, LinkInfo};
use netlink_packet_route::route::{RouteAddress, RouteAttribute};
use netlink_packet_route::RouteNetlinkMessage;

use crate::cloud::MacAddr;
use crate::dataplane::{msg, DataplaneError, NetlinkDataplane};

/// Prefix and format version of the alias.
pub const ALIAS_PREFIX: &str = "vpc-cni/1";

/// The kernel's `IFALIASZ` minus the terminating NUL.
pub const MAX_ALIAS_BYTES: usize = 255;

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

/// One host veth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLink {
    /// Interface index.
    pub index: u32,
    /// Name (`eni…`).
    pub name: String,
    /// MAC.
    pub mac: Option<MacAddr>,
    /// The alias, if any.
    pub alias: Option<String>,
}

/// Host veths and host routes of the node namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelView {
    /// Veths named `eni…`, by index.
    pub links: HashMap<u32, HostLink>,
    /// Main-table /32 routes: destination → output interface index.
    pub routes: HashMap<Ipv4Addr, u32>,
}

impl KernelView {
    /// Dumps links and routes of the node namespace (`ip link`, `ip route`).
    pub fn read(dataplane: &NetlinkDataplane) -> Result<Self, DataplaneError> {
        let mut view = KernelView::default();
        for m in dataplane.dump_node(msg::dump_links(), "dump links")? {
            let RouteNetlinkMessage::NewLink(l) = m else {
                continue;
            };
            let mut link = HostLink {
                index: l.header.index,
                name: String::new(),
                mac: None,
                alias: None,
            };
            let mut veth = false;
            for a in &l.attributes {
                match a {
                    LinkAttribute::IfName(n) => link.name = n.clone(),
                    LinkAttribute::Address(m) => {
                        link.mac = <[u8; 6]>::try_from(m.as_slice()).ok().map(MacAddr)
                    }
                    LinkAttribute::IfAlias(s) => link.alias = Some(s.clone()),
                    LinkAttribute::LinkInfo(infos) => {
                        veth |= infos
                            .iter()
                            .any(|i| matches!(i, LinkInfo::Kind(k) if k.to_string() == "veth"))
                    }
                    _ => {}
                }
            }
            if veth && is_host_veth_name(&link.name) {
                view.links.insert(link.index, link);
            }
        }
        for m in dataplane.dump_node(msg::dump_routes(), "dump routes")? {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            if r.header.destination_prefix_length != 32 {
                continue;
            }
            let mut dst = None;
            let mut oif = None;
            let mut table = u32::from(r.header.table);
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Table(t) => table = *t,
                    _ => {}
                }
            }
            if let (Some(dst), Some(oif), true) = (dst, oif, table == msg::MAIN_TABLE) {
                if view.links.contains_key(&oif) {
                    view.routes.insert(dst, oif);
                }
            }
        }
        Ok(view)
    }

    /// The host link named `name`.
    pub fn link_named(&self, name: &str) -> Option<&HostLink> {
        self.links.values().find(|l| l.name == name)
    }

    /// The address routed through link `index`, if any.
    pub fn routed_through(&self, index: u32) -> Option<Ipv4Addr> {
        self.routes
            .iter()
            .find(|(_, &oif)| oif == index)
            .map(|(ip, _)| *ip)
    }
}

/// `eni` + 11 lowercase hex digits: ours, and aws-node's (same scheme).
pub fn is_host_veth_name(name: &str) -> bool {
    name.len() == 14
        && name.starts_with("eni")
        && name[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
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

    #[test]
    fn host_veth_names() {
        assert!(is_host_veth_name("eni0123456789a"));
        assert!(!is_host_veth_name("eni0123456789"));
        assert!(!is_host_veth_name("eth0"));
        assert!(!is_host_veth_name("eni0123456789Z"));
    }
}
