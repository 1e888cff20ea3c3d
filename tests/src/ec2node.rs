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
