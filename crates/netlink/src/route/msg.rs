//! Builders for the rtnetlink messages vpc-cni sends (the dataplane, the
//! simulator's ENI fabric). Pure functions, so the exact shape of each
//! message is testable without root.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use vpc_cni_core::mac::MacAddr;

/// The main routing table.
pub const MAIN_TABLE: u32 = 254;

/// `ip link add <host> type veth peer name <ifname> netns <fd>`, each end
/// with the MAC and MTU we chose: creating the peer directly in the pod's
/// namespace avoids a link move (≈ 19 ms here), and choosing the MACs
/// ourselves saves reading them back. Both ends are created down: the peer
/// cannot come up in this message (the kernel configures it before the pair
/// is joined, and opening a veth without its peer fails with ENOTCONN), and
/// each end gets `addrgenmode none` before it comes up. One queue each,
/// asked for explicitly: otherwise veth allocates a queue per possible CPU
/// and then shrinks to one on each end, and shrinking a registered device's
/// queues waits for an (expedited) RCU grace period under the RTNL lock.
pub fn new_veth(
    host: &str,
    host_mac: MacAddr,
    peer: &str,
    peer_mac: MacAddr,
    peer_netns: RawFd,
    mtu: u32,
) -> RouteNetlinkMessage {
    let mut peer_msg = LinkMessage::default();
    peer_msg.attributes = vec![
        LinkAttribute::IfName(peer.to_string()),
        LinkAttribute::Address(peer_mac.0.to_vec()),
        LinkAttribute::Mtu(mtu),
        LinkAttribute::NetNsFd(peer_netns),
        LinkAttribute::NumTxQueues(1),
        LinkAttribute::NumRxQueues(1),
    ];
    let mut msg = LinkMessage::default();
    msg.attributes = vec![
        LinkAttribute::IfName(host.to_string()),
        LinkAttribute::Address(host_mac.0.to_vec()),
        LinkAttribute::Mtu(mtu),
        LinkAttribute::NumTxQueues(1),
        LinkAttribute::NumRxQueues(1),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]),
    ];
    RouteNetlinkMessage::NewLink(msg)
}

/// `ip link add <name> address <mac> [mtu <mtu>] type veth peer name <peer>`:
/// both ends in the namespace of the socket, the peer with the kernel's
/// choices (MAC, MTU). Both ends are created down.
pub fn new_veth_pair(
    name: &str,
    mac: MacAddr,
    mtu: Option<u32>,
    peer: &str,
) -> RouteNetlinkMessage {
    let mut peer_msg = LinkMessage::default();
    peer_msg
        .attributes
        .push(LinkAttribute::IfName(peer.to_string()));
    let mut msg = LinkMessage::default();
    msg.attributes = vec![
        LinkAttribute::IfName(name.to_string()),
        LinkAttribute::Address(mac.0.to_vec()),
    ];
    if let Some(mtu) = mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
    ]));
    RouteNetlinkMessage::NewLink(msg)
}

/// `ip link set <index> up`, leaving the MTU as it is.
pub fn link_up(index: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::SetLink(msg)
}

/// `ip link set <index> addrgenmode none`: pods get IPv4 only, and a
/// link-local address (with duplicate address detection and multicast
/// joins) on each veth end is a measurable part of bringing it up. The
/// kernel accepts this only on an existing link, so it is sent before "up".
pub fn set_no_ipv6_link_local(index: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes
        .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]));
    RouteNetlinkMessage::SetLink(msg)
}

/// For a veth: the index of its peer (`IFLA_LINK`), in the peer's namespace.
pub fn link_peer_index(msg: &RouteNetlinkMessage) -> Option<u32> {
    match msg {
        RouteNetlinkMessage::NewLink(l) => l.attributes.iter().find_map(|a| match a {
            LinkAttribute::Link(i) => Some(*i),
            _ => None,
        }),
        _ => None,
    }
}

/// `ip link show <name>`.
pub fn get_link_by_name(name: &str) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    RouteNetlinkMessage::GetLink(msg)
}

/// `ip link show` by index.
pub fn get_link_by_index(index: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    RouteNetlinkMessage::GetLink(msg)
}

/// `ip link show` (dump).
pub fn dump_links() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetLink(LinkMessage::default())
}

/// `ip link del` by index.
pub fn del_link(index: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    RouteNetlinkMessage::DelLink(msg)
}

/// `ip link set <index> alias <alias>`.
pub fn set_alias(index: u32, alias: &str) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes
        .push(LinkAttribute::IfAlias(alias.to_string()));
    RouteNetlinkMessage::SetLink(msg)
}

/// `ip link set <index> mtu <mtu> up`.
pub fn set_link_up(index: u32, mtu: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    msg.attributes.push(LinkAttribute::Mtu(mtu));
    RouteNetlinkMessage::SetLink(msg)
}

/// `ip addr add <addr>/<prefix> dev <index>`.
pub fn new_addr(index: u32, addr: Ipv4Addr, prefix: u8) -> RouteNetlinkMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix;
    msg.header.index = index;
    msg.attributes = vec![
        AddressAttribute::Local(IpAddr::V4(addr)),
        AddressAttribute::Address(IpAddr::V4(addr)),
    ];
    RouteNetlinkMessage::NewAddress(msg)
}

/// `ip addr add <addr>/<prefix> brd + dev <index>`: as an interface's
/// own address, with the subnet's broadcast address below /31.
pub fn new_ifaddr(index: u32, addr: Ipv4Addr, prefix: u8) -> RouteNetlinkMessage {
    let mut msg = new_addr(index, addr, prefix);
    if let RouteNetlinkMessage::NewAddress(a) = &mut msg {
        if prefix < 31 {
            let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
            a.attributes
                .push(AddressAttribute::Broadcast(Ipv4Addr::from(
                    u32::from(addr) | host_bits,
                )));
        }
    }
    msg
}

/// `ip addr show dev <index>` (dump, filtered by the caller).
pub fn dump_addrs() -> RouteNetlinkMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    RouteNetlinkMessage::GetAddress(msg)
}

/// An IPv4 route message in `table`.
fn route(dst: Ipv4Addr, prefix: u8, table: u32, scope: RouteScope) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = prefix;
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = scope;
    msg.header.kind = RouteType::Unicast;
    if table < 256 {
        msg.header.table = table as u8;
    } else {
        msg.header.table = 252; // RT_TABLE_COMPAT: the real id is in RTA_TABLE
    }
    msg.attributes.push(RouteAttribute::Table(table));
    if prefix > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
    }
    msg
}

/// `ip route add <dst>/<prefix> dev <oif> scope link table <table>`.
pub fn new_link_route(dst: Ipv4Addr, prefix: u8, oif: u32, table: u32) -> RouteNetlinkMessage {
    let mut msg = route(dst, prefix, table, RouteScope::Link);
    msg.attributes.push(RouteAttribute::Oif(oif));
    RouteNetlinkMessage::NewRoute(msg)
}

/// `ip route add default via <gw> dev <oif> [onlink] table <table>`.
pub fn new_default_route(gw: Ipv4Addr, oif: u32, table: u32, onlink: bool) -> RouteNetlinkMessage {
    let mut msg = route(Ipv4Addr::UNSPECIFIED, 0, table, RouteScope::Universe);
    if onlink {
        msg.header.flags = RouteFlags::Onlink;
    }
    msg.attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
    msg.attributes.push(RouteAttribute::Oif(oif));
    RouteNetlinkMessage::NewRoute(msg)
}

/// `ip route del <dst>/<prefix> [dev <oif>] table <table>`.
/// With `oif`, only the route through that link goes: a route the same
/// address got since through another link is left alone.
pub fn del_route(dst: Ipv4Addr, prefix: u8, table: u32, oif: Option<u32>) -> RouteNetlinkMessage {
    let mut msg = route(dst, prefix, table, RouteScope::NoWhere);
    msg.header.protocol = RouteProtocol::Unspec;
    msg.header.kind = RouteType::Unspec;
    if let Some(oif) = oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    RouteNetlinkMessage::DelRoute(msg)
}

/// `ip route get <dst>` restricted to `table` is not what CHECK needs; it
/// dumps the table instead.
pub fn dump_routes() -> RouteNetlinkMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    RouteNetlinkMessage::GetRoute(msg)
}

/// `ip neigh add <ip> lladdr <mac> dev <index> nud permanent`.
pub fn new_permanent_neigh(index: u32, ip: Ipv4Addr, mac: MacAddr) -> RouteNetlinkMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.kind = RouteType::Unicast;
    msg.attributes = vec![
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)),
        NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()),
    ];
    RouteNetlinkMessage::NewNeighbour(msg)
}

/// `ip rule add|del [from|to] <ip>/32 lookup <table> priority <prio>`.
pub fn rule(add: bool, ip: Ipv4Addr, from: bool, table: u32, priority: u32) -> RouteNetlinkMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.action = RuleAction::ToTable;
    if table < 256 {
        msg.header.table = table as u8;
    }
    if from {
        msg.header.src_len = 32;
        msg.attributes.push(RuleAttribute::Source(IpAddr::V4(ip)));
    } else {
        msg.header.dst_len = 32;
        msg.attributes
            .push(RuleAttribute::Destination(IpAddr::V4(ip)));
    }
    msg.attributes.push(RuleAttribute::Table(table));
    msg.attributes.push(RuleAttribute::Priority(priority));
    if add {
        RouteNetlinkMessage::NewRule(msg)
    } else {
        RouteNetlinkMessage::DelRule(msg)
    }
}

/// `ip rule add|del fwmark MARK/MARK lookup TABLE priority PRIORITY`.
pub fn mark_rule(add: bool, mark: u32, table: u32, priority: u32) -> RouteNetlinkMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.action = RuleAction::ToTable;
    if table < 256 {
        msg.header.table = table as u8;
    }
    msg.attributes.push(RuleAttribute::FwMark(mark));
    msg.attributes.push(RuleAttribute::FwMask(mark));
    msg.attributes.push(RuleAttribute::Table(table));
    msg.attributes.push(RuleAttribute::Priority(priority));
    if add {
        RouteNetlinkMessage::NewRule(msg)
    } else {
        RouteNetlinkMessage::DelRule(msg)
    }
}

/// The index of a link message.
pub fn link_index(msg: &RouteNetlinkMessage) -> Option<u32> {
    match msg {
        RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
        _ => None,
    }
}

/// The name and MAC of a link message.
pub fn link_name_mac(msg: &LinkMessage) -> (Option<&str>, Option<&[u8]>) {
    let mut name = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.as_str()),
            LinkAttribute::Address(a) => mac = Some(a.as_slice()),
            _ => {}
        }
    }
    (name, mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_peer_goes_straight_into_the_pod_namespace() {
        let msg = new_veth(
            "eniabc",
            MacAddr([2, 0, 0, 0, 0, 1]),
            "eth0",
            MacAddr([2, 0, 0, 0, 0, 2]),
            7,
            9001,
        );
        let RouteNetlinkMessage::NewLink(link) = msg else {
            panic!("not a NewLink");
        };
        let info = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i),
                _ => None,
            })
            .expect("link info");
        let peer = info
            .iter()
            .find_map(|i| match i {
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) => Some(p),
                _ => None,
            })
            .expect("peer");
        assert!(peer.attributes.contains(&LinkAttribute::NetNsFd(7)));
        assert!(peer
            .attributes
            .contains(&LinkAttribute::IfName("eth0".into())));
        assert!(
            !peer.header.flags.contains(LinkFlags::Up),
            "ENOTCONN if the peer comes up first"
        );
    }

    #[test]
    fn interface_address_carries_its_broadcast() {
        let RouteNetlinkMessage::NewAddress(a) = new_ifaddr(3, Ipv4Addr::new(10, 0, 0, 4), 20)
        else {
            panic!("not a NewAddress")
        };
        assert_eq!(a.header.prefix_len, 20);
        assert!(a
            .attributes
            .contains(&AddressAttribute::Broadcast(Ipv4Addr::new(10, 0, 15, 255))));
        let RouteNetlinkMessage::NewAddress(a) = new_ifaddr(3, Ipv4Addr::new(10, 0, 0, 4), 32)
        else {
            panic!("not a NewAddress")
        };
        assert!(!a
            .attributes
            .iter()
            .any(|x| matches!(x, AddressAttribute::Broadcast(_))));
    }

    #[test]
    fn veth_pair_for_an_eni_keeps_both_ends_here() {
        let msg = new_veth_pair("eth1", MacAddr([2, 0, 0, 0, 0, 1]), None, "vpc1");
        let RouteNetlinkMessage::NewLink(link) = msg else {
            panic!("not a NewLink");
        };
        assert!(link
            .attributes
            .contains(&LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1])));
        assert!(!link
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::Mtu(_) | LinkAttribute::NetNsFd(_))));
    }

    #[test]
    fn tables_above_255_go_in_the_attribute() {
        let RouteNetlinkMessage::NewRoute(r) =
            new_link_route(Ipv4Addr::new(10, 0, 0, 5), 32, 3, 1000)
        else {
            panic!()
        };
        assert_eq!(r.header.table, 252);
        assert!(r.attributes.contains(&RouteAttribute::Table(1000)));
    }
}
