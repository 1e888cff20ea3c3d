//! The `ec2` provider end to end against a real moto server: ipamd in a node
//! namespace, IMDSv2 and EC2 on the node's loopback, ENIs materialised as
//! veths by the fixture when moto says they are attached.

use std::net::Ipv4Addr;
use std::time::Duration;

use vpc_cni_e2e::ec2node::{tcp_source_seen, VpcNs};
use vpc_cni_e2e::ec2node::{Ec2Node, CLUSTER};
use vpc_cni_e2e::moto::{Moto, MotoVpc};
use vpc_cni_e2e::{ping, status_json, tcp_reachable, used, wait_until};

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
}

/// Adds pods until one lands on a secondary ENI; returns all of them.
fn pods_past_the_primary(n: &Ec2Node, moto: &Moto, prefix: &str) -> Vec<vpc_cni_e2e::Pod> {
    let mut pods = Vec::new();
    for i in 0..=M5_SECONDARIES {
        pods.push(n.node.add_pod(&format!("{prefix}-{i:02}")));
    }
    let primary = n.enis(moto).remove(0);
    assert!(
        pods.iter().any(|p| !primary.secondary.contains(&p.ip)),
        "ten pods cannot all fit on the primary ENI"
    );
    pods
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn scale_up_attaches_a_tagged_eni_with_its_route_table_and_rules() {
    let (moto, vpc) = setup();
    let n = Ec2Node::start(&moto, &vpc, "m5.large", None, &[]);
    let pods = pods_past_the_primary(&n, &moto, "scale");
    let enis = n.enis(&moto);
    assert!(enis.len() >= 2, "a second ENI must be attached: {enis:?}");
    let eni1 = &enis[1];
    assert_eq!(eni1.device_index, Some(1));
    assert_eq!(
        eni1.subnet_id, vpc.subnet_id,
        "new ENIs go into the primary subnet"
    );
    assert_eq!(
        eni1.groups,
        vec![vpc.sg_id.clone()],
        "with the primary ENI's groups"
    );
    assert_eq!(
        eni1.tag("node.k8s.amazonaws.com/instance_id"),
        Some(n.instance_id.as_str())
    );
    assert_eq!(eni1.tag("cluster.k8s.amazonaws.com/name"), Some(CLUSTER));
    assert!(eni1
        .tag("node.k8s.amazonaws.com/createdAt")
        .is_some_and(|t| t.ends_with('Z')));
    // Its link: up, MTU 9001, and route table 2 with the subnet's gateway.
    let ns = n.node.netns();
    let link = ns.ip_json(&["link", "show", "eth1"]);
    assert_eq!(link[0]["address"], eni1.mac.as_str());
    assert_eq!(link[0]["mtu"], 9001);
    assert!(
        link[0]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP"),
        "{link:?}"
    );
    let table = ns.ip(&["route", "show", "table", "2"]);
    assert!(
        table.contains("default via 10.0.0.1 dev eth1"),
        "table 2: {table}"
    );
    // A pod on it: from-rule to table 2 at 1536 and to-rule to main at 512.
    let on_eni1 = pods
        .iter()
        .find(|p| eni1.secondary.contains(&p.ip))
        .expect("a pod on ENI 1");
    let rules = ns.ip(&["rule", "show"]);
    assert!(
        rules.contains(&format!("1536:\tfrom {} lookup 2", on_eni1.ip)),
        "{rules}"
    );
    assert!(
        rules.contains(&format!("512:\tfrom all to {} lookup main", on_eni1.ip)),
        "{rules}"
    );
    for p in &pods {
        assert!(ping(ns.name(), p.ip), "node cannot reach {}", p.ip);
    }
    assert!(n.fabric_errors().is_empty(), "{:?}", n.fabric_errors());
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn restart_finds_its_enis_and_keeps_its_pods() {
    let (moto, vpc) = setup();
    let mut n = Ec2Node::start(&moto, &vpc, "m5.large", None, &[]);
    let pods = pods_past_the_primary(&n, &moto, "keep");
    // Ten pods and a warm ENI's worth of free addresses: all three ENIs.
    assert!(
        wait_until(Duration::from_secs(10), || n.enis(&moto).len() == 3),
        "the pool never attached its third ENI: {}",
        n.node.log()
    );
    // The crash must not race the checkpoint's write of the last ADD (that
    // is the checkpoint's business, not this test's).
    let checkpoint = n.node.dir().join("state");
    assert!(wait_until(Duration::from_secs(5), || {
        let text = std::fs::read_dir(&checkpoint)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|f| std::fs::read_to_string(f.path()).ok())
            .collect::<String>();
        pods.iter().all(|p| text.contains(&format!("\"{}\"", p.ip)))
    }));
    let before: Vec<String> = n.enis(&moto).iter().map(|e| e.id.clone()).collect();
    n.node.crash_and_restart();
    let after: Vec<String> = n.enis(&moto).iter().map(|e| e.id.clone()).collect();
    assert_eq!(
        before, after,
        "a restart must reuse the attached ENIs, not attach more"
    );
    assert_eq!(used(&n.node), pods.len() as u64);
    for p in &pods {
        assert!(
            ping(n.node.netns().name(), p.ip),
            "{} lost by the restart",
            p.ip
        );
    }
    let extra = n.node.add_pod("after-restart");
    assert!(
        pods.iter().all(|p| p.ip != extra.ip),
        "{} handed out twice",
        extra.ip
    );
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn pods_on_two_nodes_reach_each_other_across_the_vpc() {
    let (moto, vpc) = setup();
    let fabric = VpcNs::new(&vpc);
    let a = Ec2Node::start(&moto, &vpc, "m5.large", Some(fabric.side("a")), &[]);
    let b = Ec2Node::start(&moto, &vpc, "m5.large", Some(fabric.side("b")), &[]);
    let pods_a = pods_past_the_primary(&a, &moto, "a");
    let pods_b = pods_past_the_primary(&b, &moto, "b");
    let a1 = a.enis(&moto).remove(1);
    let b1 = b.enis(&moto).remove(1);
    // One pod on each ENI of each node.
    let pick = |pods: &[vpc_cni_e2e::Pod], eni: &vpc_cni_e2e::moto::MotoEni, on: bool| {
        pods.iter()
            .find(|p| eni.secondary.contains(&p.ip) == on)
            .map(|p| (p.netns().path().to_path_buf(), p.ip))
            .expect("a pod")
    };
    let (a_primary, a_second) = (pick(&pods_a, &a1, false), pick(&pods_a, &a1, true));
    let (b_primary, b_second) = (pick(&pods_b, &b1, false), pick(&pods_b, &b1, true));
    for (from, to) in [
        (&a_primary, &b_primary),
        (&a_primary, &b_second),
        (&a_second, &b_primary),
        (&a_second, &b_second),
        (&b_second, &a_second),
    ] {
        tcp_reachable(&from.0, &to.0, to.1)
            .unwrap_or_else(|e| panic!("{} cannot reach {}: {e}", from.1, to.1));
    }
    assert!(a.fabric_errors().is_empty(), "{:?}", a.fabric_errors());
    assert!(b.fabric_errors().is_empty(), "{:?}", b.fabric_errors());
}

/// A pod on a secondary ENI opens a connection to an address outside the
/// VPC; returns the source address the far end saw.
fn source_seen_outside(
    env: &[(&str, &str)],
) -> (std::net::Ipv4Addr, std::net::Ipv4Addr, std::net::Ipv4Addr) {
    let (moto, vpc) = setup();
    let fabric = VpcNs::new(&vpc);
    let (inet, far) = fabric.internet(&vpc);
    let n = Ec2Node::start(&moto, &vpc, "m5.large", Some(fabric.side("n")), env);
    // What the instance's DHCP client does: a default route via the gateway.
    n.node.netns().ip(&[
        "route",
        "add",
        "default",
        "via",
        &fabric.gateway.to_string(),
        "dev",
        "eth0",
    ]);
    let pods = pods_past_the_primary(&n, &moto, "out");
    let eni1 = n.enis(&moto).remove(1);
    let pod = pods
        .iter()
        .find(|p| eni1.secondary.contains(&p.ip))
        .expect("a pod on ENI 1");
    let seen = tcp_source_seen(pod.netns().path(), inet.path(), far)
        .unwrap_or_else(|e| panic!("pod {} cannot reach {far}: {e}\n{}", pod.ip, n.node.log()));
    (seen, pod.ip, n.primary.primary_ip)
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn traffic_leaving_the_vpc_is_snatted_to_the_primary_address() {
    let (seen, _pod, primary) = source_seen_outside(&[]);
    assert_eq!(seen, primary);
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn external_snat_keeps_the_pod_address() {
    let (seen, pod, _) = source_seen_outside(&[("AWS_VPC_K8S_CNI_EXTERNALSNAT", "true")]);
    assert_eq!(seen, pod);
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn excluded_cidrs_keep_the_pod_address() {
    let (seen, pod, _) = source_seen_outside(&[(
        "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS",
        "192.0.2.0/24,198.51.100.0/24",
    )]);
    assert_eq!(seen, pod);
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn scale_down_returns_addresses_after_cooldown() {
    let (moto, vpc) = setup();
    let n = Ec2Node::start(
        &moto,
        &vpc,
        "m5.large",
        None,
        &[
            ("WARM_IP_TARGET", "1"),
            ("WARM_ENI_TARGET", "0"),
            ("IP_COOLDOWN_PERIOD", "0"),
            ("VPC_CNI_RELEASE_DELAY_S", "0"),
        ],
    );
    let pods = pods_past_the_primary(&n, &moto, "down");
    let held = |n: &Ec2Node| -> usize { n.enis(&moto).iter().map(|e| e.secondary.len()).sum() };
    let peak = held(&n);
    assert!(
        peak >= pods.len(),
        "{peak} addresses for {} pods",
        pods.len()
    );
    for p in &pods[1..] {
        n.node.del_pod(&p.spec);
    }
    // The pool's surplus scan runs every 30 s; give it two rounds.
    assert!(
        wait_until(Duration::from_secs(75), || held(&n) <= 3),
        "surplus never returned: {} addresses still held in EC2 for 1 pod\n{}",
        held(&n),
        n.node.log()
    );
    assert!(
        ping(n.node.netns().name(), pods[0].ip),
        "the remaining pod lost its address"
    );
    let still: Vec<Ipv4Addr> = n
        .enis(&moto)
        .iter()
        .flat_map(|e| e.secondary.clone())
        .collect();
    assert!(
        still.contains(&pods[0].ip),
        "{} was returned while in use",
        pods[0].ip
    );
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn leaked_detached_eni_is_collected_and_others_are_kept() {
    let (moto, vpc) = setup();
    let (instance_id, primary) = vpc.run_instance(&moto, "m5.large");
    let create = |instance: &str, created_at: &str| -> String {
        vpc_cni_e2e::moto::create_tagged_eni(
            moto.addr(),
            &vpc.subnet_id,
            CLUSTER,
            instance,
            Some(created_at),
        )
    };
    // Ours and old (a crash between create and attach, an hour ago).
    let leaked = create(&instance_id, "2020-01-01T00:00:00Z");
    // Ours but within the grace period (an attach may be under way).
    let fresh = create(&instance_id, "2099-01-01T00:00:00Z");
    // Another node's.
    let foreign = create("i-0123456789abcdef0", "2020-01-01T00:00:00Z");
    assert_eq!(
        moto.eni(&leaked).map(|e| e.status),
        Some("available".into())
    );
    let n = Ec2Node::start_instance(&moto, &vpc, instance_id, primary, "m5.large", None, &[]);
    assert!(
        wait_until(Duration::from_secs(20), || moto.eni(&leaked).is_none()),
        "the leaked ENI was not collected\n{}",
        n.node.log()
    );
    assert!(
        moto.eni(&fresh).is_some(),
        "an ENI inside its grace period was deleted"
    );
    assert!(
        moto.eni(&foreign).is_some(),
        "another node's ENI was deleted"
    );
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn an_unreachable_metadata_service_stops_start_up_with_a_clear_message() {
    // A fresh namespace: its loopback is up and nothing listens there.
    let ns = vpc_cni_e2e::Netns::new();
    ns.ip(&["link", "set", "lo", "up"]);
    let dir = vpc_cni_e2e::TempDir::new();
    let out = std::process::Command::new("timeout")
        .args(["120", "ip", "netns", "exec", ns.name()])
        .arg(vpc_cni_e2e::bin_path("ipamd"))
        .arg("serve")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("VPC_CNI_CLOUD", "ec2")
        .env("VPC_CNI_SOCKET", dir.path().join("ipamd.sock"))
        .env("VPC_CNI_STATE_DIR", dir.path().join("state"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL_EC2", "http://127.0.0.1:9")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("HOME", "/nonexistent")
        .output()
        .expect("run ipamd serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("instance metadata"), "{stderr}");
    assert!(
        stderr.contains("instance-id"),
        "the message names what it asked: {stderr}"
    );
    assert!(
        !dir.path().join("ipamd.sock").exists(),
        "the socket is removed"
    );
    let tables = ns.exec(&["nft", "list", "tables"]);
    assert!(
        String::from_utf8_lossy(&tables.stdout).trim().is_empty(),
        "nothing programmed"
    );
}
