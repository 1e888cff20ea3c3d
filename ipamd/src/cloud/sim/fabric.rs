//! How an ENI the simulator attaches shows up on the node.
//!
//! On EC2 an attached ENI appears as a new NIC. Here it appears as the node
//! end of a veth pair carrying the ENI's MAC (this machine's kernel has no
//! dummy links); the other end stands for the VPC fabric.

use std::io;

use async_trait::async_trait;
use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec, LinkVeth};
use tracing::{debug, info, warn};

use crate::cloud::Eni;

/// The MTU the VPC gives an ENI (jumbo frames), as EC2's DHCP sets it.
const ENI_MTU: u32 = 9001;

/// Makes an attached ENI appear on the node.
#[async_trait]
pub trait Fabric: Send + Sync {
    /// Makes `eni` appear on the node. For the `primary` ENI also does what
    /// the instance's OS does at boot (link up, MTU, primary address).
    /// Must be idempotent: an ENI that already has its link is left alone.
    async fn materialize(&self, eni: &Eni, primary: bool) -> Result<(), String>;
}

/// A fabric that does nothing: ENIs exist only in the simulator's books.
/// For unit tests that run without root.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFabric;

#[async_trait]
impl Fabric for NoFabric {
    async fn materialize(&self, _eni: &Eni, _primary: bool) -> Result<(), String> {
        Ok(())
    }
}

/// The real fabric: a veth pair per ENI in the network namespace the
/// connection was opened in (the node namespace; ipamd runs inside it).
///
/// The node end is named `eth{device_index}` (or `ens{device_index}` if a
/// link with another MAC holds that name) and carries the ENI's MAC; the far
/// end, `vpc{device_index}` (or `vpcx{device_index}`), is up and stands for
/// the VPC. The primary ENI is brought up with MTU 9001 and its primary
/// address, as the OS does at boot; no default route is added, so nothing
/// can leave the namespace. Secondary ENIs stay down and unaddressed: ipamd's
/// dataplane configures them, as on EC2.
#[derive(Debug, Clone)]
pub struct VethFabric {
    handle: Handle,
}

impl VethFabric {
    /// Opens a netlink connection in the calling thread's network namespace
    /// and drives it on the current tokio runtime.
    ///
    /// Fails if there is no current tokio runtime or the socket cannot be
    /// opened. The socket stays bound to the namespace it was opened in, even
    /// if the thread later moves.
    pub fn new() -> io::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let (connection, handle, _) = rtnetlink::new_connection()?;
        runtime.spawn(connection);
        Ok(VethFabric { handle })
    }

    async fn dump_links(&self) -> Result<Vec<ExistingLink>, String> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| format!("dump links: {e}"))?;
        Ok(msgs.iter().map(ExistingLink::from_message).collect())
    }

    async fn index_of(&self, name: &str) -> Result<u32, String> {
        let msg = self
            .handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await
            .map_err(|e| format!("get link {name}: {e}"))?;
        msg.map(|m| m.header.index)
            .ok_or_else(|| format!("link {name} vanished after creation"))
    }

    /// `ip link add NODE address MAC [mtu 9001] type veth peer name PEER`,
    /// then [`Self::configure`]; on failure the pair is deleted again.
    async fn create(&self, eni: &Eni, primary: bool, node: &str, peer: &str) -> Result<(), String> {
        let mut veth = LinkVeth::new(node, peer).address(eni.mac.0.to_vec());
        if primary {
            veth = veth.mtu(ENI_MTU);
        }
        self.handle
            .link()
            .add(veth.build())
            .execute()
            .await
            .map_err(|e| format!("create veth {node}/{peer}: {e}"))?;

        if let Err(e) = self.configure(eni, primary, node, peer).await {
            // A half-configured pair would be taken as done by the next call
            // (its MAC matches), so take it away; deleting one end removes
            // both.
            if let Ok(index) = self.index_of(node).await {
                if let Err(del) = self.handle.link().del(index).execute().await {
                    warn!(link = node, error = %del, "could not remove half-made ENI link");
                }
            }
            return Err(e);
        }
        Ok(())
    }

    async fn configure(
        &self,
        eni: &Eni,
        primary: bool,
        node: &str,
        peer: &str,
    ) -> Result<(), String> {
        // `ip link set PEER mtu 9001 up`: the VPC side is always there and
        // takes jumbo frames.
        let peer_index = self.index_of(peer).await?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(peer_index)
                    .mtu(ENI_MTU)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| format!("set {peer} up: {e}"))?;
        if !primary {
            return Ok(());
        }
        // `ip link set NODE up; ip addr add PRIMARY/PREFIX dev NODE`.
        let node_index = self.index_of(node).await?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(node_index).up().build())
            .execute()
            .await
            .map_err(|e| format!("set {node} up: {e}"))?;
        let prefix = eni.subnet.cidr.prefix();
        self.handle
            .address()
            .add(node_index, eni.primary_ip.into(), prefix)
            .execute()
            .await
            .map_err(|e| format!("add {}/{prefix} to {node}: {e}", eni.primary_ip))
    }
}

#[async_trait]
impl Fabric for VethFabric {
    async fn materialize(&self, eni: &Eni, primary: bool) -> Result<(), String> {
        let links = self.dump_links().await?;
        match plan(&links, eni)? {
            Plan::Reuse { name } => {
                debug!(eni = %eni.id, link = %name, "ENI link already present");
                Ok(())
            }
            Plan::Create { node, peer } => {
                self.create(eni, primary, &node, &peer).await?;
                info!(
                    eni = %eni.id, link = %node, peer = %peer, mac = %eni.mac,
                    "ENI link created"
                );
                Ok(())
            }
        }
    }
}

/// What the kernel already has, as far as naming is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExistingLink {
    name: String,
    mac: Option<Vec<u8>>,
}

impl ExistingLink {
    fn from_message(msg: &LinkMessage) -> Self {
        let mut link = ExistingLink {
            name: String::new(),
            mac: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::Address(mac) => link.mac = Some(mac.clone()),
                _ => {}
            }
        }
        link
    }
}

/// What [`VethFabric::materialize`] will do.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// A link with the ENI's MAC exists (a restart, or a retry): keep it.
    Reuse { name: String },
    /// Create a veth pair with these names.
    Create { node: String, peer: String },
}

/// Chooses the link names for `eni`, from the links that exist. Pure so the
/// naming rules are tested without root.
fn plan(links: &[ExistingLink], eni: &Eni) -> Result<Plan, String> {
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
    let node = free([format!("eth{i}"), format!("ens{i}")])
        .ok_or_else(|| format!("links eth{i} and ens{i} both exist with other MACs"))?;
    let peer = free([format!("vpc{i}"), format!("vpcx{i}")])
        .ok_or_else(|| format!("links vpc{i} and vpcx{i} both exist"))?;
    Ok(Plan::Create { node, peer })
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use netlink_packet_route::address::AddressAttribute;
    use netlink_packet_route::link::LinkFlags;
    use nix::sched::CloneFlags;

    use super::*;
    use crate::cloud::sim::{SimCloud, SimConfig};
    use crate::cloud::{Cloud, EniId, MacAddr, Subnet};

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
            plan(&links, &eni(1, MAC)),
            Ok(Plan::Create {
                node: "eth1".into(),
                peer: "vpc1".into()
            })
        );
    }

    #[test]
    fn plan_falls_back_when_names_are_taken() {
        let links = [link("eth1", OTHER), link("vpc1", OTHER)];
        assert_eq!(
            plan(&links, &eni(1, MAC)),
            Ok(Plan::Create {
                node: "ens1".into(),
                peer: "vpcx1".into()
            })
        );
        let links = [link("eth1", OTHER), link("ens1", OTHER)];
        assert!(plan(&links, &eni(1, MAC)).is_err());
    }

    #[test]
    fn plan_reuses_a_link_with_the_mac() {
        let links = [link("eth0", OTHER), link("ens0", MAC)];
        assert_eq!(
            plan(&links, &eni(0, MAC)),
            Ok(Plan::Reuse {
                name: "ens0".into()
            })
        );
    }

    struct Seen {
        index: u32,
        mac: Option<Vec<u8>>,
        up: bool,
        mtu: Option<u32>,
    }

    async fn link_named(handle: &Handle, name: &str) -> Option<Seen> {
        let msgs: Vec<LinkMessage> = handle.link().get().execute().try_collect().await.unwrap();
        msgs.into_iter().find_map(|m| {
            let mut found = false;
            let mut seen = Seen {
                index: m.header.index,
                mac: None,
                up: m.header.flags.contains(LinkFlags::Up),
                mtu: None,
            };
            for attr in &m.attributes {
                match attr {
                    LinkAttribute::IfName(n) => found = n == name,
                    LinkAttribute::Address(a) => seen.mac = Some(a.clone()),
                    LinkAttribute::Mtu(mtu) => seen.mtu = Some(*mtu),
                    _ => {}
                }
            }
            found.then_some(seen)
        })
    }

    async fn ipv4_of(handle: &Handle, index: u32) -> Vec<(Ipv4Addr, u8)> {
        let msgs: Vec<_> = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .unwrap();
        msgs.iter()
            .flat_map(|m| {
                m.attributes.iter().filter_map(move |a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect()
    }

    async fn materialise_in_this_namespace() {
        let (connection, handle, _) = rtnetlink::new_connection().unwrap();
        tokio::spawn(connection);
        // Squatters, to exercise the fallback names: `eth2` (another MAC)
        // and `vpc1`.
        handle
            .link()
            .add(
                LinkVeth::new("eth2", "vpc1")
                    .address(OTHER.to_vec())
                    .build(),
            )
            .execute()
            .await
            .unwrap();

        let fabric = Arc::new(VethFabric::new().unwrap());
        let cloud = SimCloud::new(SimConfig::default(), fabric.clone())
            .await
            .unwrap();
        let eni0 = cloud.enis().await.unwrap().remove(0);
        let eni1 = cloud.attach_eni(1).await.unwrap();
        let eni2 = cloud.attach_eni(2).await.unwrap();

        let eth0 = link_named(&handle, "eth0").await.expect("eth0");
        assert_eq!(eth0.mac, Some(eni0.mac.0.to_vec()));
        assert!(eth0.up);
        assert_eq!(eth0.mtu, Some(ENI_MTU));
        assert_eq!(
            ipv4_of(&handle, eth0.index).await,
            vec![(eni0.primary_ip, 20)]
        );
        assert!(link_named(&handle, "vpc0").await.expect("vpc0").up);

        let eth1 = link_named(&handle, "eth1").await.expect("eth1");
        assert_eq!(eth1.mac, Some(eni1.mac.0.to_vec()));
        assert!(!eth1.up, "secondary ENIs are left to the dataplane");
        assert!(ipv4_of(&handle, eth1.index).await.is_empty());
        assert!(link_named(&handle, "vpcx1").await.expect("vpcx1").up);

        let ens2 = link_named(&handle, "ens2").await.expect("ens2");
        assert_eq!(ens2.mac, Some(eni2.mac.0.to_vec()));
        assert!(link_named(&handle, "vpc2").await.is_some());

        // A second materialisation (a restart) finds the MAC and adds nothing.
        let before = fabric.dump_links().await.unwrap().len();
        fabric.materialize(&eni1, false).await.unwrap();
        fabric.materialize(&eni0, true).await.unwrap();
        assert_eq!(fabric.dump_links().await.unwrap().len(), before);
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
