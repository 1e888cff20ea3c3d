//! The `ec2` provider end to end against a real moto server: ipamd in a node
//! namespace, IMDSv2 and EC2 on the node's loopback, ENIs materialised as
//! veths by the fixture when moto says they are attached.

use std::net::Ipv4Addr;
use std::time::Duration;

use vpc_cni_e2e::ec2node::{Ec2Node, CLUSTER};
use vpc_cni_e2e::moto::{Moto, MotoVpc};
use vpc_cni_e2e::{ping, status_json, used, wait_until};

/// Secondary addresses per ENI of an m5.large (10 IPv4 − the primary).
const M5_SECONDARIES: usize = 9;

fn setup() -> (Moto, MotoVpc) {
    let moto = Moto::start();
    moto.reset();
    let vpc = MotoVpc::create(&moto);
    (moto, vpc)
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn cold_start_fills_the_pool_and_wires_a_pod() {
    let (moto, vpc) = setup();
    let n = Ec2Node::start(&moto, &vpc, "m5.large", None, &[]);
    // WARM_ENI_TARGET=1: a whole ENI's worth of free addresses.
    let primary = n.enis(&moto).remove(0);
    assert_eq!(primary.device_index, Some(0));
    assert!(
        wait_until(Duration::from_secs(10), || {
            status_json(&n.node)["pool"]["total"].as_u64().unwrap_or(0) >= M5_SECONDARIES as u64
        }),
        "pool never filled: {}\n{}",
        status_json(&n.node),
        n.node.log()
    );
    let pod = n.node.add_pod("web-0");
    let held: Vec<Ipv4Addr> = n
        .enis(&moto)
        .iter()
        .flat_map(|e| e.secondary.clone())
        .collect();
    assert!(held.contains(&pod.ip), "{} not among {held:?}", pod.ip);
    assert_eq!(used(&n.node), 1);
    assert!(
        ping(n.node.netns().name(), pod.ip),
        "node cannot reach its pod"
    );
    assert!(n.fabric_errors().is_empty(), "{:?}", n.fabric_errors());
    let _ = CLUSTER;
}
