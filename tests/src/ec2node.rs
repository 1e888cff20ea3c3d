//! A node on "EC2": an instance launched in moto, its namespace booted with
//! the primary ENI, the IMDS responder and moto forwarded onto the node's
//! loopback, the ENI fabric following attachments, and `ipamd serve` with
//! `VPC_CNI_CLOUD=ec2` inside. Nothing of the caller's AWS settings reaches
//! the daemon: its environment is cleared, credentials are static, HOME and
//! the shared config files point into the node's temporary directory, and
//! both endpoints are on the node's loopback.

use crate::imds::{EniFabric, Forward, Imds, VpcSide};
use crate::moto::{Moto, MotoEni, MotoVpc};
use crate::{Netns, Node};

/// The cluster tag value the tests' daemons use.
pub const CLUSTER: &str = "e2e";

/// One EC2 node. Drops the daemon first, then the fixtures.
#[derive(Debug)]
pub struct Ec2Node {
    /// The node (daemon, namespace, directory).
    pub node: Node,
    /// The instance id.
    pub instance_id: String,
    /// The primary ENI as launched.
    pub primary: MotoEni,
    fabric: EniFabric,
    _imds: Imds,
    _ec2: Forward,
}

impl Ec2Node {
    /// Launches an instance of `instance_type` in `vpc` and starts its node,
    /// waiting until the plugin's STATUS succeeds. `side` puts the far ends
    /// of its ENIs into a shared VPC namespace. `env` adds daemon settings.
    pub fn start(
        moto: &Moto,
        vpc: &MotoVpc,
        instance_type: &str,
        side: Option<VpcSide>,
        env: &[(&str, &str)],
    ) -> Self {
        let (instance_id, primary) = vpc.run_instance(moto, instance_type);
        Self::start_instance(moto, vpc, instance_id, primary, instance_type, side, env)
    }

    /// [`Ec2Node::start`] for an instance that already exists (a restart on a
    /// fresh node namespace is not what EC2 does; use
    /// [`Node::crash_and_restart`] for that).
    pub fn start_instance(
        moto: &Moto,
        vpc: &MotoVpc,
        instance_id: String,
        primary: MotoEni,
        instance_type: &str,
        side: Option<VpcSide>,
        env: &[(&str, &str)],
    ) -> Self {
        let netns = Netns::new();
        let fabric = EniFabric::start(moto, vpc, &instance_id, &netns, side);
        let imds = Imds::start(&netns, moto.addr(), vpc, &instance_id, instance_type);
        let ec2 = Forward::start(&netns, moto.addr());
        let (imds_url, ec2_url) = (imds.url(), ec2.url());
        let mut all: Vec<(&str, &str)> = vec![
            ("VPC_CNI_CLOUD", "ec2"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL_EC2", &ec2_url),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds_url),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            ("HOME", "/nonexistent"),
            ("CLUSTER_NAME", CLUSTER),
        ];
        all.extend_from_slice(env);
        let mut node = Node::spawn_in(netns, &all);
        node.wait_ready();
        Ec2Node {
            node,
            instance_id,
            primary,
            fabric,
            _imds: imds,
            _ec2: ec2,
        }
    }

    /// The ENIs attached to this instance in moto, by device index.
    pub fn enis(&self, moto: &Moto) -> Vec<MotoEni> {
        let mut enis = moto.enis(&[("attachment.instance-id", &self.instance_id)]);
        enis.sort_by_key(|e| e.device_index);
        enis
    }

    /// Errors the fabric met (empty when all is well).
    pub fn fabric_errors(&self) -> Vec<String> {
        self.fabric.errors()
    }
}

/// The shared "VPC" namespace: the far end of every node's ENI links, with
/// each address an ENI holds routed to that ENI's link (the fabric keeps the
/// routes), proxy ARP on those links and the subnet's gateway address on its
/// loopback, so nodes reach each other (and the gateway) the way the VPC
/// fabric delivers packets.
#[derive(Debug)]
pub struct VpcNs {
    /// The namespace.
    pub ns: Netns,
    /// The subnet's gateway (first host address).
    pub gateway: std::net::Ipv4Addr,
}

impl VpcNs {
    /// Creates the namespace for `vpc`.
    pub fn new(vpc: &MotoVpc) -> Self {
        let ns = Netns::new();
        let network: std::net::Ipv4Addr = vpc
            .subnet_cidr
            .split_once('/')
            .and_then(|(a, _)| a.parse().ok())
            .expect("subnet CIDR");
        let gateway = std::net::Ipv4Addr::from(u32::from(network) + 1);
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["addr", "add", &format!("{gateway}/32"), "dev", "lo"]);
        for (key, value) in [
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv4/conf/all/rp_filter", "0"),
            ("net/ipv4/conf/default/rp_filter", "0"),
        ] {
            crate::imds::write_sysctl(ns.name(), key, value).expect("sysctl in the VPC namespace");
        }
        VpcNs { ns, gateway }
    }

    /// The fabric side for a node tagged `tag` (short, unique per node).
    pub fn side(&self, tag: &str) -> VpcSide {
        VpcSide {
            ns: self.ns.name().to_string(),
            tag: tag.to_string(),
        }
    }

    /// An "internet" namespace outside the VPC at `198.51.100.2`, behind the
    /// VPC namespace (`198.51.100.1`), routing the VPC's CIDR back there.
    pub fn internet(&self, vpc: &MotoVpc) -> (Netns, std::net::Ipv4Addr) {
        let inet = Netns::new();
        self.ns.ip(&[
            "link",
            "add",
            "inet0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            inet.name(),
        ]);
        self.ns
            .ip(&["addr", "add", "198.51.100.1/24", "dev", "inet0"]);
        self.ns.ip(&["link", "set", "inet0", "up"]);
        inet.ip(&["link", "set", "lo", "up"]);
        inet.ip(&["addr", "add", "198.51.100.2/24", "dev", "eth0"]);
        inet.ip(&["link", "set", "eth0", "up"]);
        inet.ip(&["route", "add", &vpc.cidr, "via", "198.51.100.1"]);
        (inet, std::net::Ipv4Addr::new(198, 51, 100, 2))
    }
}

/// Connects over TCP from namespace `from` to `ip` in namespace `to` and
/// returns the source address the server saw (what SNAT made of it). Both
/// ends run on throwaway threads; the caller never changes namespace.
pub fn tcp_source_seen(
    from: &std::path::Path,
    to: &std::path::Path,
    ip: std::net::Ipv4Addr,
) -> Result<std::net::Ipv4Addr, String> {
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::Duration;
    let (to, from) = (to.to_path_buf(), from.to_path_buf());
    let enter = |p: &std::path::Path| -> Result<(), String> {
        let f = std::fs::File::open(p).map_err(|e| format!("open {}: {e}", p.display()))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns {}: {e}", p.display()))
    };
    let listener = std::thread::spawn(move || -> Result<TcpListener, String> {
        enter(&to)?;
        TcpListener::bind(SocketAddr::from((ip, 0))).map_err(|e| format!("bind {ip}: {e}"))
    })
    .join()
    .map_err(|_| "bind thread panicked")??;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let client = std::thread::spawn(move || -> Result<(), String> {
        enter(&from)?;
        TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(3))
            .map(drop)
            .map_err(|e| format!("connect {ip}:{port}: {e}"))
    });
    let client = client.join().map_err(|_| "client thread panicked")?;
    client?;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        match listener.accept() {
            Ok((_, SocketAddr::V4(peer))) => return Ok(*peer.ip()),
            Ok((_, peer)) => return Err(format!("unexpected peer {peer}")),
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
}
