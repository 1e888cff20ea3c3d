//! rtnetlink (`NETLINK_ROUTE`): links, addresses, routes, rules and
//! neighbours. Messages are netlink-packet-route's types, built by the pure
//! functions in [`msg`]; [`RouteSocket`] sends them one at a time, in
//! batches (one `sendmsg`, one ack), as dumps or as GETs, and has short
//! verbs for what the cloud side needs (`dump_links`, `get_link`,
//! `add_veth_pair`, `set_up`, `add_ifaddr`, `del_link`).
//!
//! The dataplane knows this module as `dataplane::nl` and its types by
//! their first names: [`NlSocket`], [`NlError`], [`NlResult`].

pub mod msg;

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;
use vpc_cni_core::mac::MacAddr;

use crate::error::{Error, Result};
use crate::socket::{Protocol, Request, Socket};

pub use crate::socket::Create;

/// The rtnetlink family.
#[derive(Debug, Clone, Copy)]
pub struct Route;

impl Protocol for Route {
    const FAMILY: isize = NETLINK_ROUTE;
    const NAME: &'static str = "route";
    type Message = RouteNetlinkMessage;
}

/// A blocking `NETLINK_ROUTE` socket bound to the namespace it was opened in.
pub type RouteSocket = Socket<Route>;
/// One rtnetlink request of a batch.
pub type Req = Request<RouteNetlinkMessage>;
/// The dataplane's name for [`RouteSocket`].
pub type NlSocket = RouteSocket;
/// The dataplane's name for the crate's [`Error`].
pub type NlError = Error;
/// The dataplane's name for the crate's [`Result`].
pub type NlResult<T> = Result<T>;

/// A link, by name or by index (`ip link show dev eth0` / `index 3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkId<'a> {
    /// By interface name.
    Name(&'a str),
    /// By interface index.
    Index(u32),
}

/// What callers usually want of a link message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name (empty if the kernel sent none).
    pub name: String,
    /// Hardware address, if it has one.
    pub mac: Option<Vec<u8>>,
    /// Administratively up.
    pub up: bool,
    /// MTU, if reported.
    pub mtu: Option<u32>,
}

impl Link {
    /// Reads a link message.
    pub fn from_message(msg: &LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mac: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            mtu: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(a) => link.mac = Some(a.clone()),
                LinkAttribute::Mtu(m) => link.mtu = Some(*m),
                _ => {}
            }
        }
        link
    }

    /// Whether its hardware address is `mac`.
    pub fn has_mac(&self, mac: MacAddr) -> bool {
        self.mac.as_deref() == Some(&mac.0[..])
    }
}

impl Socket<Route> {
    /// `ip link show`: every link of the namespace.
    pub fn dump_links(&mut self) -> Result<Vec<Link>> {
        Ok(self
            .dump(msg::dump_links(), "dump links")?
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })
            .collect())
    }

    /// `ip link show dev <name>` / by index; `None` if there is no such
    /// link (`ENODEV`).
    pub fn get_link(&mut self, id: LinkId<'_>) -> Result<Option<Link>> {
        let req = match id {
            LinkId::Name(name) => msg::get_link_by_name(name),
            LinkId::Index(index) => msg::get_link_by_index(index),
        };
        match self.get(req, "get link") {
            Ok(RouteNetlinkMessage::NewLink(l)) => Ok(Some(Link::from_message(&l))),
            Ok(_) => Ok(None),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `ip link add <name> address <mac> [mtu <mtu>] type veth peer name
    /// <peer>`; EEXIST if `name` exists.
    pub fn add_veth_pair(
        &mut self,
        name: &str,
        mac: MacAddr,
        mtu: Option<u32>,
        peer: &str,
    ) -> Result<()> {
        self.request(Req::new(
            msg::new_veth_pair(name, mac, mtu, peer),
            Create::Excl,
            format!("create veth {name} (peer {peer})"),
        ))
    }

    /// `ip link set <index> [mtu <mtu>] up`.
    pub fn set_up(&mut self, index: u32, mtu: Option<u32>) -> Result<()> {
        let msg = match mtu {
            Some(mtu) => msg::set_link_up(index, mtu),
            None => msg::link_up(index),
        };
        self.request(Req::new(msg, Create::No, format!("set link {index} up")))
    }

    /// `ip addr add <addr>/<prefix> brd + dev <index>`; EEXIST if present.
    pub fn add_ifaddr(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        self.request(Req::new(
            msg::new_ifaddr(index, addr, prefix),
            Create::Excl,
            format!("add address {addr}/{prefix} to link {index}"),
        ))
    }

    /// `ip -4 addr show dev <index>`: its IPv4 addresses and prefixes.
    pub fn ipv4_addrs(&mut self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
        Ok(self
            .dump(msg::dump_addrs(), "dump addresses")?
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => Some(a),
                _ => None,
            })
            .flat_map(|a| {
                a.attributes.iter().filter_map(move |attr| match attr {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some((*ip, a.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    /// `ip link del <index>`; a link already gone (`ENODEV`) is not an error.
    pub fn del_link(&mut self, index: u32) -> Result<()> {
        self.request(
            Req::new(
                msg::del_link(index),
                Create::No,
                format!("delete link {index}"),
            )
            .tolerate(&[libc::ENODEV]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_message_reads_as_a_link() {
        let mut m = LinkMessage::default();
        m.header.index = 4;
        m.header.flags = LinkFlags::Up;
        m.attributes = vec![
            LinkAttribute::IfName("eth1".into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
            LinkAttribute::Mtu(9001),
        ];
        let link = Link::from_message(&m);
        assert_eq!(
            link,
            Link {
                index: 4,
                name: "eth1".into(),
                mac: Some(vec![2, 0, 0, 0, 0, 1]),
                up: true,
                mtu: Some(9001),
            }
        );
        assert!(link.has_mac(MacAddr([2, 0, 0, 0, 0, 1])));
        assert!(!link.has_mac(MacAddr([2, 0, 0, 0, 0, 2])));
    }
}
