//! How an ENI the simulator attaches shows up on the node.
//!
//! On EC2 an attached ENI appears as a new NIC. Here it appears as the node
//! end of a veth pair carrying the ENI's MAC (this machine's kernel has no
//! dummy links); the other end stands for the VPC fabric.

use std::io;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tracing::{debug, info, warn};
use vpc_cni_netlink::route::{Link, LinkId, RouteSocket};

use crate::Eni;

/// The MTU the VPC gives an ENI (jumbo frames), as EC2's DHCP sets it.
const ENI_MTU: u32 = 9001;

/// Makes an attached ENI appear on the node.
#[async_trait]
pub trait Fabric: Send + Sync {
    /// Makes `eni` appear on the node. For the `primary` ENI also does what
    /// the instance's OS does at boot (link up, MTU, primary address).
    /// Must be idempotent: an ENI that already has its link is left alone.
    async fn materialize(&self, eni: &Eni, primary: bool) -> Result<(), FabricError>;
}

/// A fabric that does nothing: ENIs exist only in the simulator's books.
/// For unit tests that run without root.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFabric;

#[async_trait]
impl Fabric for NoFabric {
    async fn materialize(&self, _eni: &Eni, _primary: bool) -> Result<(), FabricError> {
        Ok(())
    }
}

/// Why a [`Fabric`] could not make an ENI appear.
#[derive(Debug, thiserror::Error)]
pub enum FabricError {
    /// A netlink request failed (the error names it).
    #[error(transparent)]
    Netlink(#[from] vpc_cni_netlink::Error),
    /// Both names an ENI's link may take are held by other links.
    #[error("links {first} and {second} both exist{why}")]
    NamesTaken {
        /// The ENI's first-choice link name.
        first: String,
        /// Its second choice.
        second: String,
        /// What the kernel says about them.
        why: &'static str,
    },
    /// The runtime shut down while the request was queued.
    #[error("cancelled: the runtime is shutting down")]
    Cancelled,
    /// A link we just created is not there.
    #[error("link {0} vanished after creation")]
    Vanished(String),
}

/// The real fabric: a veth pair per ENI in the network namespace the
/// socket was opened in (the node namespace; ipamd runs inside it).
///
/// The node end is named `eth{device_index}` (or `ens{device_index}` if a
/// link with another MAC holds that name) and carries the ENI's MAC; the far
/// end, `vpc{device_index}` (or `vpcx{device_index}`), is up and stands for
/// the VPC. The primary ENI is brought up with MTU 9001 and its primary
/// address, as the OS does at boot; no default route is added, so nothing
/// can leave the namespace. Secondary ENIs stay down and unaddressed: ipamd's
/// dataplane configures them, as on EC2.
///
/// The requests go through the workspace's blocking netlink layer, on
/// tokio's blocking pool (`spawn_blocking`, as the dataplane's calls off
/// the pod path do): a few round trips, never on a worker.
#[derive(Debug, Clone)]
pub struct VethFabric {
    sock: Arc<Mutex<RouteSocket>>,
}

impl VethFabric {
    /// Opens a netlink socket in the calling thread's network namespace.
    /// The socket stays bound to the namespace it was opened in, even if
    /// the thread later moves. Needs no runtime; [`Fabric::materialize`]
    /// needs a tokio one.
    pub fn new() -> io::Result<Self> {
        let sock = RouteSocket::open().map_err(|e| match e {
            vpc_cni_netlink::Error::Io(e) => e,
            other => io::Error::other(other),
        })?;
        Ok(VethFabric {
            sock: Arc::new(Mutex::new(sock)),
        })
    }
}

/// [`Fabric::materialize`], blocking.
fn materialize(sock: &mut RouteSocket, eni: &Eni, primary: bool) -> Result<(), FabricError> {
    let links: Vec<ExistingLink> = sock
        .dump_links()?
        .into_iter()
        .map(ExistingLink::from)
        .collect();
    match plan(&links, eni)? {
        Plan::Reuse { name } => {
            debug!(eni = %eni.id, link = %name, "ENI link already present");
            Ok(())
        }
        Plan::Create { node, peer } => {
            create(sock, eni, primary, &node, &peer)?;
            info!(
                eni = %eni.id, link = %node, peer = %peer, mac = %eni.mac,
                "ENI link created"
            );
            Ok(())
        }
    }
}

fn index_of(sock: &mut RouteSocket, name: &str) -> Result<u32, FabricError> {
    sock.get_link(LinkId::Name(name))?
        .map(|l| l.index)
        .ok_or_else(|| FabricError::Vanished(name.to_string()))
}

/// `ip link add NODE address MAC [mtu 9001] type veth peer name PEER`,
/// then [`configure`]; on failure the pair is deleted again.
fn create(
    sock: &mut RouteSocket,
    eni: &Eni,
    primary: bool,
    node: &str,
    peer: &str,
) -> Result<(), FabricError> {
    sock.add_veth_pair(node, eni.mac, primary.then_some(ENI_MTU), peer)?;
    if let Err(e) = configure(sock, eni, primary, node, peer) {
        // A half-configured pair would be taken as done by the next call
        // (its MAC matches), so take it away; deleting one end removes
        // both.
        if let Ok(index) = index_of(sock, node) {
            if let Err(del) = sock.del_link(index) {
                warn!(link = node, error = %del, "could not remove half-made ENI link");
            }
        }
        return Err(e);
    }
    Ok(())
}

fn configure(
    sock: &mut RouteSocket,
    eni: &Eni,
    primary: bool,
    node: &str,
    peer: &str,
) -> Result<(), FabricError> {
    // `ip link set PEER mtu 9001 up`: the VPC side is always there and
    // takes jumbo frames.
    let peer_index = index_of(sock, peer)?;
    sock.set_up(peer_index, Some(ENI_MTU))?;
    if !primary {
        return Ok(());
    }
    // `ip link set NODE up; ip addr add PRIMARY/PREFIX brd + dev NODE`.
    let node_index = index_of(sock, node)?;
    sock.set_up(node_index, None)?;
    sock.add_ifaddr(node_index, eni.primary_ip, eni.subnet.cidr.prefix())?;
    Ok(())
}

#[async_trait]
impl Fabric for VethFabric {
    async fn materialize(&self, eni: &Eni, primary: bool) -> Result<(), FabricError> {
        let sock = Arc::clone(&self.sock);
        let eni = eni.clone();
        tokio::task::spawn_blocking(move || {
            let mut sock = sock.lock().expect("fabric socket poisoned");
            materialize(&mut sock, &eni, primary)
        })
        .await
        .map_err(|e| {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic())
            }
            FabricError::Cancelled
        })?
    }
}

/// What the kernel already has, as far as naming is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExistingLink {
    name: String,
    mac: Option<Vec<u8>>,
}

impl From<Link> for ExistingLink {
    fn from(link: Link) -> Self {
        ExistingLink {
            name: link.name,
            mac: link.mac,
        }
    }
}

/// What [`VethFabric`] will do for an ENI.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// A link with the ENI's MAC exists (a restart, or a retry): keep it.
    Reuse { name: String },
    /// Create a veth pair with these names.
    Create { node: String, peer: String },
}

/// Chooses the link names for `eni`, from the links that exist. Pure so the
/// naming rules are tested without root.
fn plan(links: &[ExistingLink], eni: &Eni) -> Result<Plan, FabricError> {
    if let Some(link) = links
        .iter()
        .find(|l| l.mac.as_deref() == Some(&eni.mac.0[..]))
    {
        return Ok(Plan::Reuse {
            name: link.name.clone(),
        });
    }
    let free = |candidates: [String; 2]| {
        candidates
            .into_iter()
            .find(|name| links.iter().all(|l| &l.name != name))
    };
    let i = eni.device_index;
    let taken = |first: &str, second: &str, why| FabricError::NamesTaken {
        first: format!("{first}{i}"),
        second: format!("{second}{i}"),
        why,
    };
    let node = free([format!("eth{i}"), format!("ens{i}")])
        .ok_or_else(|| taken("eth", "ens", " with other MACs"))?;
    let peer =
        free([format!("vpc{i}"), format!("vpcx{i}")]).ok_or_else(|| taken("vpc", "vpcx", ""))?;
    Ok(Plan::Create { node, peer })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use nix::sched::CloneFlags;

    use super::*;
    use crate::sim::{SimCloud, SimConfig};
    use crate::{Cloud, EniId, MacAddr, Subnet};

    fn eni(device_index: u32, mac: [u8; 6]) -> Eni {
        Eni {
            id: EniId(format!("eni-{device_index}")),
            mac: MacAddr(mac),
            device_index,
            subnet: Subnet {
                id: "subnet-1".into(),
                cidr: "10.0.0.0/20".parse().unwrap(),
            },
            primary_ip: Ipv4Addr::new(10, 0, 0, 4),
            secondary_ips: vec![],
            prefixes: vec![],
        }
    }

    fn link(name: &str, mac: [u8; 6]) -> ExistingLink {
        ExistingLink {
            name: name.into(),
            mac: Some(mac.to_vec()),
        }
    }

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const OTHER: [u8; 6] = [2, 9, 9, 9, 9, 9];

    #[test]
    fn plan_prefers_eth_and_vpc() {
        let links = [link("lo", [0; 6])];
        assert_eq!(
            plan(&links, &eni(1, MAC)).unwrap(),
            Plan::Create {
                node: "eth1".into(),
                peer: "vpc1".into()
            }
        );
    }

    #[test]
    fn plan_falls_back_when_names_are_taken() {
        let links = [link("eth1", OTHER), link("vpc1", OTHER)];
        assert_eq!(
            plan(&links, &eni(1, MAC)).unwrap(),
            Plan::Create {
                node: "ens1".into(),
                peer: "vpcx1".into()
            }
        );
        let links = [link("eth1", OTHER), link("ens1", OTHER)];
        assert!(plan(&links, &eni(1, MAC)).is_err());
    }

    #[test]
    fn plan_reuses_a_link_with_the_mac() {
        let links = [link("eth0", OTHER), link("ens0", MAC)];
        assert_eq!(
            plan(&links, &eni(0, MAC)).unwrap(),
            Plan::Reuse {
                name: "ens0".into()
            }
        );
    }

    async fn materialise_in_this_namespace() {
        let mut sock = RouteSocket::open().unwrap();
        // Squatters, to exercise the fallback names: `eth2` (another MAC)
        // and `vpc1`.
        RouteSocket::open()
            .unwrap()
            .add_veth_pair("eth2", MacAddr(OTHER), None, "vpc1")
            .unwrap();

        let fabric = Arc::new(VethFabric::new().unwrap());
        let cloud = SimCloud::new(SimConfig::default(), fabric.clone())
            .await
            .unwrap();
        let eni0 = cloud.enis().await.unwrap().remove(0);
        let eni1 = cloud.attach_eni(1).await.unwrap();
        let eni2 = cloud.attach_eni(2).await.unwrap();

        let eth0 = sock_link("eth0").expect("eth0");
        assert_eq!(eth0.mac, Some(eni0.mac.0.to_vec()));
        assert!(eth0.up);
        assert_eq!(eth0.mtu, Some(ENI_MTU));
        assert_eq!(
            sock.ipv4_addrs(eth0.index).unwrap(),
            vec![(eni0.primary_ip, 20)]
        );
        assert!(sock_link("vpc0").expect("vpc0").up);

        let eth1 = sock_link("eth1").expect("eth1");
        assert_eq!(eth1.mac, Some(eni1.mac.0.to_vec()));
        assert!(!eth1.up, "secondary ENIs are left to the dataplane");
        assert!(sock.ipv4_addrs(eth1.index).unwrap().is_empty());
        assert!(sock_link("vpcx1").expect("vpcx1").up);

        let ens2 = sock_link("ens2").expect("ens2");
        assert_eq!(ens2.mac, Some(eni2.mac.0.to_vec()));
        assert!(sock_link("vpc2").is_some());

        // A second materialisation (a restart) finds the MAC and adds nothing.
        let before = sock.dump_links().unwrap().len();
        fabric.materialize(&eni1, false).await.unwrap();
        fabric.materialize(&eni0, true).await.unwrap();
        assert_eq!(sock.dump_links().unwrap().len(), before);
    }

    /// A link of this namespace by name, through a socket of its own.
    fn sock_link(name: &str) -> Option<Link> {
        RouteSocket::open()
            .unwrap()
            .get_link(LinkId::Name(name))
            .unwrap()
    }

    #[test]
    #[ignore = "privileged: needs CAP_NET_ADMIN"]
    fn veth_fabric_in_a_private_netns() {
        // unshare(CLONE_NEWNET) moves only the calling thread, so the
        // machine's namespace is never touched, and the namespace goes away
        // with the thread.
        std::thread::spawn(|| {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(materialise_in_this_namespace());
        })
        .join()
        .expect("privileged test thread panicked");
    }
}
