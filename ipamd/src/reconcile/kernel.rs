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
use crate::dataplane::{msg, Dataplane, DataplaneError};

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
    pub fn read<D: Dataplane + ?Sized>(dataplane: &D) -> Result<Self, DataplaneError> {
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
    fn host_veth_names() {
        assert!(is_host_veth_name("eni0123456789a"));
        assert!(!is_host_veth_name("eni0123456789"));
        assert!(!is_host_veth_name("eth0"));
        assert!(!is_host_veth_name("eni0123456789Z"));
    }
}
