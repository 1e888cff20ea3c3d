//! The node's kernel networking: pod veths, addresses, routes, neighbours,
//! policy-routing rules and ENI links, all over rtnetlink.
//!
//! Pod wiring has the same shape as aws-node's so operators' knowledge
//! carries over: pod `eth0` with its address /32, a default route via
//! 169.254.1.1 with a permanent neighbour entry for the host veth's MAC, a
//! host veth `eni<11 hex>` with a /32 route to the pod, and for pods on
//! secondary ENIs `ip rule` entries that send their traffic out of that ENI.
//!
//! Every call here is blocking (a few netlink round trips) and may enter a
//! pod's namespace for a moment, so callers run it outside the async
//! scheduler: `block_in_place` on the pod path, `spawn_blocking` elsewhere.

pub mod naming;
pub mod snat;
pub use vpc_cni_netlink::{netns, route as nl, route::msg};

/// The in-memory [`Dataplane`] of unit tests. Test-only (`cfg(test)`): its
/// users are the pod service's, the reaper's and reconcile's unit tests in
/// this crate; nothing of it is compiled into the daemon.
#[cfg(test)]
pub mod fake;

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::Mutex;

use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::route::{RouteAddress, RouteAttribute};
use netlink_packet_route::RouteNetlinkMessage;

use crate::cloud::MacAddr;
use crate::timing::{Laps, Phase};
use netns::NetnsError;
use nl::{Create, NlError, NlSocket, Req};

/// The gateway every pod routes through: link-local, answered by the
/// permanent neighbour entry, so no ARP ever leaves the pod for it.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// aws-node's rule priorities: "to pod → main" must win over "from pod → ENI
/// table", so traffic between pods on one node never leaves through an ENI.
pub const TO_POD_RULE_PRIORITY: u32 = 512;
/// See [`TO_POD_RULE_PRIORITY`].
pub const FROM_POD_RULE_PRIORITY: u32 = 1536;

/// Why the dataplane failed.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The pod's namespace could not be opened or entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A netlink request failed.
    #[error(transparent)]
    Netlink(#[from] NlError),
    /// CHECK found a difference.
    #[error("{0}")]
    Mismatch(String),
    /// A link that should exist does not.
    #[error("link {0} not found")]
    NoLink(String),
}

/// Result of a dataplane call.
pub type Result<T> = std::result::Result<T, DataplaneError>;

/// What one pod attachment looks like in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNet {
    /// Path of the pod's network namespace.
    pub netns: String,
    /// Interface name inside the pod (`eth0`).
    pub ifname: String,
    /// Host-side veth name (`eni…`).
    pub host_ifname: String,
    /// The pod's address.
    pub addr: Ipv4Addr,
    /// MTU of both veth ends.
    pub mtu: u32,
    /// Route table of the secondary ENI the address belongs to; `None` for
    /// the primary ENI, whose traffic uses the main table.
    pub eni_table: Option<u32>,
    /// Alias set on the host veth (`ip link set … alias`): who owns the
    /// attachment, so a restart can rebuild it from the kernel alone (see
    /// `crate::reconcile::kernel`). `None`: left unset.
    pub alias: Option<String>,
}

/// The MACs of a pod's veth pair. Chosen before the pair exists, so the
/// CNI result (and the checkpoint's record of it) can be written while the
/// kernel still creates the links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VethMacs {
    /// The host end.
    pub host: MacAddr,
    /// The pod end (`eth0`).
    pub pod: MacAddr,
}

impl VethMacs {
    /// Two random locally administered unicast MACs.
    pub fn random() -> Self {
        VethMacs {
            host: naming::random_mac(),
            pod: naming::random_mac(),
        }
    }
}

/// What ADD created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wired {
    /// Host veth index.
    pub host_ifindex: u32,
    /// Pod interface index (inside the pod's namespace).
    pub pod_ifindex: u32,
}

/// The kernel side of pod networking, as the pod service
/// (`crate::pod`), the reaper (`crate::reaper`) and start-up reconcile
/// (`crate::reconcile`) use it: the seam that lets their transactions and
/// rollbacks be tested without root. [`NetlinkDataplane`] is the real one;
/// unit tests use `fake::FakeDataplane`, which records what exists and fails
/// on demand.
///
/// Every method blocks (a few netlink round trips, maybe a moment in the
/// pod's namespace): callers run it outside the async scheduler
/// (`block_in_place` on the pod path, `spawn_blocking` elsewhere).
///
/// What one pod's wiring consists of, and which call removes which part:
///
/// | made by [`add_pod`](Dataplane::add_pod) | removed by |
/// |---|---|
/// | veth pair, peer `eth0` in the pod's namespace | [`reap_link`](Dataplane::reap_link), or the runtime destroying the namespace |
/// | pod side: address, routes, gateway neighbour | goes with the veth |
/// | host side: link up, alias, /32 host route | the route: [`del_pod`](Dataplane::del_pod), or goes with the veth |
/// | host side: `ip rule`s (to pod; from pod on a secondary ENI) | [`del_pod`](Dataplane::del_pod) only: rules outlive links |
pub trait Dataplane: Send + Sync {
    /// Wires one pod: creates the veth pair with its peer born in the pod's
    /// namespace (`ip link add <host> type veth peer <ifname> netns <ns>`),
    /// then the pod side in one batch (`ip link set up`,
    /// `ip addr add <addr>/32`, the routes to and via 169.254.1.1, the
    /// gateway's permanent neighbour entry), then the host side in one batch
    /// (`ip link set up`, alias, `ip route add <addr>/32 dev <host>`,
    /// `ip rule add to <addr> lookup main`, and on a secondary ENI
    /// `ip rule add from <addr> lookup <table>`). A host veth of the same
    /// name left by an earlier sandbox is replaced. `laps` times the veth,
    /// the pod side and the host side.
    ///
    /// On failure it removes what it made (host side, then the veth, which
    /// takes the pod side with it) before returning the error; that clean-up
    /// is best effort and its own errors are ignored. Undoing a success:
    /// [`Self::del_pod`] then [`Self::reap_link`] with the returned host
    /// index.
    fn add_pod(&self, pod: &PodNet, macs: VethMacs, laps: &mut Laps) -> Result<Wired>;

    /// Removes a pod's host side: `ip route del <addr>/32 [dev <index>]`,
    /// `ip rule del to <addr> lookup main` and, with `eni_table`,
    /// `ip rule del from <addr> lookup <table>`. Pieces already gone are not errors,
    /// so a retry after a failure finishes the job. The veth is left (see
    /// [`Self::reap_link`]). `host_ifindex` 0 matches the route through any
    /// link. There is no undo: wiring the pod again is an ADD.
    fn del_pod(&self, addr: Ipv4Addr, eni_table: Option<u32>, host_ifindex: u32) -> Result<()>;

    /// `ip link del` host link `index` if it still exists and still has
    /// `name` (indexes are not reused soon, names are). Returns whether it
    /// deleted anything. Deleting a veth deletes its peer and every route
    /// through it; rules stay.
    fn reap_link(&self, index: u32, name: &str) -> Result<bool>;

    /// CNI CHECK: the pod's interface, address and default route, and the
    /// host veth with its /32 route, are as [`Self::add_pod`] left them;
    /// [`DataplaneError::Mismatch`] says what differs. Changes nothing.
    fn check_pod(&self, pod: &PodNet) -> Result<()>;

    /// A dump in the node namespace (`ip link`, `ip route`, ...), for
    /// reconcile at start-up. Changes nothing.
    fn dump_node(&self, msg: RouteNetlinkMessage, op: &str) -> Result<Vec<RouteNetlinkMessage>>;

    /// The MAC of `ifname` inside the namespace at `netns` (`None` if it has
    /// no such link), for rebuilding a pod's ADD result at start-up.
    /// Changes nothing.
    fn pod_link_mac(&self, netns: &str, ifname: &str) -> Result<Option<MacAddr>>;
}

/// The netlink implementation, owning long-lived sockets in the node's
/// namespace.
pub struct NetlinkDataplane {
    /// The node namespace, to return to after opening a pod-side socket.
    home: File,
    /// Idle node-namespace sockets; each blocking call borrows one, so
    /// concurrent ADDs never share a socket and never open a new one in
    /// steady state.
    idle: Mutex<Vec<NlSocket>>,
}

impl NetlinkDataplane {
    /// Binds to the calling thread's namespace as the node namespace.
    pub fn new() -> Result<Self> {
        let home = netns::current().map_err(|source| NetnsError::Io {
            path: "/proc/thread-self/ns/net".into(),
            source,
        })?;
        let first = NlSocket::open()?;
        Ok(Self {
            home,
            idle: Mutex::new(vec![first]),
        })
    }

    fn with_node_socket<T>(&self, f: impl FnOnce(&mut NlSocket) -> Result<T>) -> Result<T> {
        let taken = self.idle.lock().expect("socket pool poisoned").pop();
        let mut sock = match taken {
            Some(s) => s,
            None => NlSocket::open()?,
        };
        let out = f(&mut sock);
        // A socket that saw an I/O error may hold stale replies; drop it.
        if !matches!(out, Err(DataplaneError::Netlink(NlError::Io(_)))) {
            self.idle.lock().expect("socket pool poisoned").push(sock);
        }
        out
    }

    /// Wires one pod: veth with the peer created in the pod's namespace,
    /// address, routes and neighbour inside, host route (and rules) outside.
    /// On failure everything it created is removed again. `laps` times the
    /// veth, the pod side and the host side.
    pub fn add_pod(&self, pod: &PodNet, macs: VethMacs, laps: &mut Laps) -> Result<Wired> {
        let target = netns::open(&pod.netns)?;
        let (host_mac, pod_mac) = (macs.host, macs.pod);
        self.with_node_socket(|node| {
            let (host_ifindex, peer_ifindex) = create_veth(node, pod, &target, host_mac, pod_mac)?;
            laps.lap(Phase::Veth);
            let undo_veth = |node: &mut NlSocket| {
                let _ = node.request(
                    Req::new(msg::del_link(host_ifindex), Create::No, "undo veth")
                        .tolerate(&[libc::ENODEV]),
                );
            };
            let pod_ifindex = match self.wire_inside(pod, &target, peer_ifindex, host_mac) {
                Ok(i) => i,
                Err(e) => {
                    undo_veth(node);
                    return Err(e);
                }
            };
            laps.lap(Phase::PodSide);
            let mut host: Vec<Req> = bring_up(host_ifindex, pod.mtu, &pod.host_ifname).into();
            if let Some(alias) = &pod.alias {
                // In the same batch: one more message, no more round trips.
                host.push(Req::new(
                    msg::set_alias(host_ifindex, alias),
                    Create::No,
                    format!("set {} alias", pod.host_ifname),
                ));
            }
            host.extend([
                Req::new(
                    msg::new_link_route(pod.addr, 32, host_ifindex, msg::MAIN_TABLE),
                    Create::Replace,
                    format!("add host route {}/32", pod.addr),
                ),
                // Every pod gets "to pod → main", as in aws-node: replies from
                // a pod on a secondary ENI would otherwise follow that pod's
                // "from" rule out of its ENI instead of reaching this pod.
                // Rules take no NLM_F_REPLACE (the kernel would append a
                // duplicate); EXCL with EEXIST tolerated is idempotent.
                Req::new(
                    msg::rule(true, pod.addr, false, msg::MAIN_TABLE, TO_POD_RULE_PRIORITY),
                    Create::Excl,
                    "add rule to pod",
                )
                .tolerate(&[libc::EEXIST]),
            ]);
            if let Some(table) = pod.eni_table {
                host.push(
                    Req::new(
                        msg::rule(true, pod.addr, true, table, FROM_POD_RULE_PRIORITY),
                        Create::Excl,
                        "add rule from pod",
                    )
                    .tolerate(&[libc::EEXIST]),
                );
            }
            if let Err(e) = node.batch(host) {
                let _ = self.del_host_side(node, pod.addr, pod.eni_table, Some(host_ifindex));
                undo_veth(node);
                return Err(e.into());
            }
            laps.lap(Phase::HostSide);
            Ok(Wired {
                host_ifindex,
                pod_ifindex,
            })
        })
    }

    /// The pod side, through a socket opened in the pod's namespace: link
    /// up, address, the two routes and the gateway's neighbour entry, in one
    /// batch. Returns the pod interface's index.
    fn wire_inside(
        &self,
        pod: &PodNet,
        target: &File,
        known_index: Option<u32>,
        host_mac: MacAddr,
    ) -> Result<u32> {
        let mut podsock = netns::socket_in(target, &self.home, &pod.netns)?;
        let pod_ifindex = match known_index {
            Some(i) => i,
            None => find_link(&mut podsock, &pod.ifname)?
                .ok_or_else(|| DataplaneError::NoLink(pod.ifname.clone()))?,
        };
        let mut reqs: Vec<Req> = bring_up(pod_ifindex, pod.mtu, &pod.ifname).into();
        reqs.extend([
            Req::new(
                msg::new_addr(pod_ifindex, pod.addr, 32),
                Create::Excl,
                format!("add address {}/32 in pod", pod.addr),
            ),
            Req::new(
                msg::new_link_route(POD_GATEWAY, 32, pod_ifindex, msg::MAIN_TABLE),
                Create::Replace,
                "add route 169.254.1.1 in pod",
            ),
            Req::new(
                msg::new_default_route(POD_GATEWAY, pod_ifindex, msg::MAIN_TABLE, false),
                Create::Replace,
                "add default route in pod",
            ),
            Req::new(
                msg::new_permanent_neigh(pod_ifindex, POD_GATEWAY, host_mac),
                Create::Replace,
                "add neighbour 169.254.1.1 in pod",
            ),
        ]);
        podsock.batch(reqs)?;
        Ok(pod_ifindex)
    }

    fn del_host_side(
        &self,
        node: &mut NlSocket,
        addr: Ipv4Addr,
        eni_table: Option<u32>,
        host_ifindex: Option<u32>,
    ) -> Result<()> {
        const GONE: &[i32] = &[libc::ESRCH, libc::ENOENT];
        let mut reqs = vec![Req::new(
            msg::del_route(addr, 32, msg::MAIN_TABLE, host_ifindex),
            Create::No,
            format!("delete host route {addr}/32"),
        )
        .tolerate(GONE)];
        reqs.push(
            Req::new(
                msg::rule(false, addr, false, msg::MAIN_TABLE, TO_POD_RULE_PRIORITY),
                Create::No,
                "delete rule to pod",
            )
            .tolerate(GONE),
        );
        if let Some(table) = eni_table {
            reqs.push(
                Req::new(
                    msg::rule(false, addr, true, table, FROM_POD_RULE_PRIORITY),
                    Create::No,
                    "delete rule from pod",
                )
                .tolerate(GONE),
            );
        }
        node.batch(reqs)?;
        Ok(())
    }

    /// Removes what DEL must remove before it answers: the host route and
    /// rules. The veth itself is left to the runtime's namespace teardown
    /// (or [`Self::reap_link`] later), because deleting a link costs a ≈ 20 ms
    /// RCU grace period under the RTNL lock. Missing pieces are not errors.
    /// `host_ifindex` 0 matches the route through any link.
    pub fn del_pod(&self, addr: Ipv4Addr, eni_table: Option<u32>, host_ifindex: u32) -> Result<()> {
        let oif = (host_ifindex != 0).then_some(host_ifindex);
        self.with_node_socket(|node| self.del_host_side(node, addr, eni_table, oif))
    }

    /// Deletes host link `index` if it still exists and still has `name`
    /// (indexes are not reused soon, names are: a new sandbox of the same pod
    /// gets the same host veth name). Returns whether it deleted anything.
    pub fn reap_link(&self, index: u32, name: &str) -> Result<bool> {
        self.with_node_socket(|node| {
            let current = match node.get(msg::get_link_by_index(index), "get link") {
                Ok(RouteNetlinkMessage::NewLink(l)) => l,
                Ok(_) => return Ok(false),
                Err(e) if e.errno() == Some(libc::ENODEV) => return Ok(false),
                Err(e) => return Err(e.into()),
            };
            if msg::link_name_mac(&current).0 != Some(name) {
                return Ok(false);
            }
            node.request(
                Req::new(
                    msg::del_link(index),
                    Create::No,
                    format!("delete host veth {name}"),
                )
                .tolerate(&[libc::ENODEV]),
            )?;
            Ok(true)
        })
    }

    /// A dump in the node namespace (`ip link`, `ip route`, ...), for
    /// reconcile at start-up.
    pub fn dump_node(
        &self,
        msg: RouteNetlinkMessage,
        op: &str,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.with_node_socket(|node| Ok(node.dump(msg, op)?))
    }

    /// The MAC of `ifname` inside the namespace at `netns` (`None` if it has
    /// no such link), for rebuilding a pod's ADD result at start-up.
    pub fn pod_link_mac(&self, netns: &str, ifname: &str) -> Result<Option<MacAddr>> {
        let target = netns::open(netns)?;
        let mut podsock = netns::socket_in(&target, &self.home, netns)?;
        match podsock.get(msg::get_link_by_name(ifname), "get link") {
            Ok(RouteNetlinkMessage::NewLink(l)) => Ok(msg::link_name_mac(&l)
                .1
                .and_then(|m| <[u8; 6]>::try_from(m).ok())
                .map(MacAddr)),
            Ok(_) => Ok(None),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// CNI CHECK: the pod's interface, address and routes, and the host
    /// route, are as ADD left them.
    pub fn check_pod(&self, pod: &PodNet) -> Result<()> {
        let target = netns::open(&pod.netns)?;
        let mut podsock = netns::socket_in(&target, &self.home, &pod.netns)?;
        let pod_ifindex = find_link(&mut podsock, &pod.ifname)?.ok_or_else(|| {
            DataplaneError::Mismatch(format!(
                "interface {} is missing in {}",
                pod.ifname, pod.netns
            ))
        })?;
        let has_addr =
            podsock
                .dump(msg::dump_addrs(), "dump addresses")?
                .iter()
                .any(|m| match m {
                    RouteNetlinkMessage::NewAddress(a) => a.header.index == pod_ifindex
                        && a.header.prefix_len == 32
                        && a.attributes.iter().any(
                            |attr| matches!(attr, AddressAttribute::Local(ip) if *ip == pod.addr),
                        ),
                    _ => false,
                });
        if !has_addr {
            return Err(DataplaneError::Mismatch(format!(
                "address {}/32 is missing on {}",
                pod.addr, pod.ifname
            )));
        }
        let routes = podsock.dump(msg::dump_routes(), "dump routes")?;
        let has_default = routes
            .iter()
            .any(|m| route_matches(m, 0, None, Some(POD_GATEWAY), pod_ifindex));
        if !has_default {
            return Err(DataplaneError::Mismatch(format!(
                "default route via {POD_GATEWAY} dev {} is missing in the pod",
                pod.ifname
            )));
        }
        self.with_node_socket(|node| {
            let host_ifindex = find_link(node, &pod.host_ifname)?.ok_or_else(|| {
                DataplaneError::Mismatch(format!("host veth {} is missing", pod.host_ifname))
            })?;
            let routes = node.dump(msg::dump_routes(), "dump routes")?;
            if !routes
                .iter()
                .any(|m| route_matches(m, 32, Some(pod.addr), None, host_ifindex))
            {
                return Err(DataplaneError::Mismatch(format!(
                    "host route {}/32 dev {} is missing",
                    pod.addr, pod.host_ifname
                )));
            }
            Ok(())
        })
    }

    /// SNAT of traffic leaving the VPC ([`snat`]): the `vpc_cni_nat` table
    /// and the rule that sends marked pod traffic out of the primary ENI,
    /// both removed instead when SNAT is external. Start-up only.
    pub fn setup_snat(
        &self,
        settings: &snat::SnatSettings,
        vpc_cidrs: &[ipnetwork::Ipv4Network],
        primary_ip: Ipv4Addr,
    ) -> std::result::Result<(), snat::SnatError> {
        snat::program(settings, vpc_cidrs, primary_ip)?;
        let rule = |add| msg::mark_rule(add, snat::MARK, msg::MAIN_TABLE, snat::MARK_RULE_PRIORITY);
        let req = if settings.external {
            Req::new(
                rule(false),
                Create::No,
                "delete rule fwmark 0x80 lookup main",
            )
            .tolerate(&[libc::ENOENT, libc::ESRCH])
        } else {
            Req::new(rule(true), Create::Excl, "add rule fwmark 0x80 lookup main")
                .tolerate(&[libc::EEXIST])
        };
        self.with_node_socket(|node| Ok(node.request(req)?))
            .map_err(|e| snat::SnatError::Rule(Box::new(e)))
    }

    /// Brings up a secondary ENI's link (found by MAC) and fills its route
    /// table: `gw dev <eni> scope link` and `default via gw dev <eni>`.
    /// Returns the link's name.
    pub fn setup_eni(
        &self,
        mac: MacAddr,
        table: u32,
        gateway: Ipv4Addr,
        mtu: u32,
    ) -> Result<String> {
        self.with_node_socket(|node| {
            let links = node.dump(msg::dump_links(), "dump links")?;
            let found = links.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => {
                    let (name, lladdr) = msg::link_name_mac(l);
                    (lladdr == Some(&mac.0[..]))
                        .then(|| (l.header.index, name.unwrap_or("").to_string()))
                }
                _ => None,
            });
            let Some((index, name)) = found else {
                return Err(DataplaneError::NoLink(format!("with MAC {mac}")));
            };
            node.batch(vec![
                Req::new(
                    msg::set_link_up(index, mtu),
                    Create::No,
                    format!("set {name} up"),
                ),
                Req::new(
                    msg::new_link_route(gateway, 32, index, table),
                    Create::Replace,
                    format!("add gateway route table {table}"),
                ),
                Req::new(
                    msg::new_default_route(gateway, index, table, false),
                    Create::Replace,
                    format!("add default route table {table}"),
                ),
            ])?;
            Ok(name)
        })
    }
}

/// The inherent methods do the work (they stay callable on a
/// `NetlinkDataplane` without the trait in scope); this forwards to them.
impl Dataplane for NetlinkDataplane {
    fn add_pod(&self, pod: &PodNet, macs: VethMacs, laps: &mut Laps) -> Result<Wired> {
        NetlinkDataplane::add_pod(self, pod, macs, laps)
    }

    fn del_pod(&self, addr: Ipv4Addr, eni_table: Option<u32>, host_ifindex: u32) -> Result<()> {
        NetlinkDataplane::del_pod(self, addr, eni_table, host_ifindex)
    }

    fn reap_link(&self, index: u32, name: &str) -> Result<bool> {
        NetlinkDataplane::reap_link(self, index, name)
    }

    fn check_pod(&self, pod: &PodNet) -> Result<()> {
        NetlinkDataplane::check_pod(self, pod)
    }

    fn dump_node(&self, msg: RouteNetlinkMessage, op: &str) -> Result<Vec<RouteNetlinkMessage>> {
        NetlinkDataplane::dump_node(self, msg, op)
    }

    fn pod_link_mac(&self, netns: &str, ifname: &str) -> Result<Option<MacAddr>> {
        NetlinkDataplane::pod_link_mac(self, netns, ifname)
    }
}

/// Kernels without IPv6 (or with it disabled) refuse addrgenmode; that is
/// what we wanted anyway.
const NO_IPV6: &[i32] = &[libc::EAFNOSUPPORT, libc::EOPNOTSUPP];

/// `addrgenmode none`, then `up` with the MTU: the order matters, the
/// kernel would generate the link-local address at "up".
fn bring_up(index: u32, mtu: u32, name: &str) -> [Req; 2] {
    [
        Req::new(
            msg::set_no_ipv6_link_local(index),
            Create::No,
            format!("set {name} addrgenmode none"),
        )
        .tolerate(NO_IPV6),
        Req::new(
            msg::set_link_up(index, mtu),
            Create::No,
            format!("set {name} up"),
        ),
    ]
}

/// Creates the veth pair, its peer born in the pod's namespace, and returns
/// the host end's index and, when the kernel echoes the new link (Linux ≥
/// 6.3), the peer's index (`IFLA_LINK`) — two round trips saved. A host veth
/// of the same name left by an earlier sandbox of the same pod (its
/// namespace not destroyed yet) is replaced, as aws-node does.
fn create_veth(
    node: &mut NlSocket,
    pod: &PodNet,
    target: &File,
    host_mac: MacAddr,
    pod_mac: MacAddr,
) -> Result<(u32, Option<u32>)> {
    let veth = || {
        msg::new_veth(
            &pod.host_ifname,
            host_mac,
            &pod.ifname,
            pod_mac,
            target.as_raw_fd(),
            pod.mtu,
        )
    };
    let op = format!(
        "create veth {} (peer {} in {})",
        pod.host_ifname, pod.ifname, pod.netns
    );
    let echoed = match node.request_echo(Req::new(veth(), Create::Excl, op.clone())) {
        Err(e) if e.errno() == Some(libc::EEXIST) => {
            if let Some(index) = find_link(node, &pod.host_ifname)? {
                tracing::info!(host_veth = %pod.host_ifname, "replacing stale host veth");
                node.request(
                    Req::new(msg::del_link(index), Create::No, "delete stale veth")
                        .tolerate(&[libc::ENODEV]),
                )?;
            }
            node.request_echo(Req::new(veth(), Create::Excl, op))?
        }
        other => other?,
    };
    if let Some(link) = echoed
        .as_ref()
        .filter(|m| msg::link_index(m).is_some_and(|i| i > 0))
    {
        let index = msg::link_index(link).expect("checked above");
        return Ok((index, msg::link_peer_index(link)));
    }
    let index = find_link(node, &pod.host_ifname)?
        .ok_or_else(|| DataplaneError::NoLink(pod.host_ifname.clone()))?;
    Ok((index, None))
}

fn find_link(sock: &mut NlSocket, name: &str) -> Result<Option<u32>> {
    match sock.get(msg::get_link_by_name(name), "get link") {
        Ok(m) => Ok(msg::link_index(&m)),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn route_matches(
    m: &RouteNetlinkMessage,
    prefix: u8,
    dst: Option<Ipv4Addr>,
    gw: Option<Ipv4Addr>,
    oif: u32,
) -> bool {
    let RouteNetlinkMessage::NewRoute(r) = m else {
        return false;
    };
    if r.header.destination_prefix_length != prefix {
        return false;
    }
    let mut got_dst = None;
    let mut got_gw = None;
    let mut got_oif = None;
    for attr in &r.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => got_dst = Some(*a),
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => got_gw = Some(*a),
            RouteAttribute::Oif(i) => got_oif = Some(*i),
            _ => {}
        }
    }
    (dst.is_none() || got_dst == dst) && got_gw == gw && got_oif == Some(oif)
}
