//! One scenario suite, run against both providers: the embedded simulator
//! and the `ec2` provider on a real moto server. Only what moto does
//! faithfully is asserted here (shapes, identities, tags, which addresses an
//! ENI holds, NotFound); limits, exhaustion, prefixes and throttling are
//! the simulator's alone (see the sim's own tests). Passing on both is how
//! the simulator's fidelity is checked against an implementation nobody on
//! this project wrote.
//!
//! Each run happens on a thread inside a network namespace of its own (an
//! attached ENI appears there as a veth carrying its MAC), never in the
//! machine's namespace.

use std::collections::HashSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipamd::cloud::ec2::{Ec2Cloud, Ec2Settings};
use ipamd::cloud::sim::{SimCloud, SimConfig, VethFabric};
use ipamd::cloud::{Cloud, CloudError, EniId};
use nix::sched::{setns, CloneFlags};
use vpc_cni_e2e::ec2node::CLUSTER;
use vpc_cni_e2e::imds::{EniFabric, Forward, Imds};
use vpc_cni_e2e::moto::{Moto, MotoVpc};
use vpc_cni_e2e::Netns;

/// How the suite makes a leaked ENI (created for this node, never attached).
type Leak = Box<dyn Fn() -> EniId + Send + Sync>;

/// Runs `f` on a current-thread runtime on a thread inside `ns`.
fn in_netns<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send + 'static,
) -> T {
    let path = ns.path().to_path_buf();
    std::thread::spawn(move || {
        let file = File::open(&path).expect("open the node namespace");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("enter the node namespace");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        f(&rt)
    })
    .join()
    .expect("suite thread")
}

fn has_link_with_mac(ns: &Netns, mac: &str) -> bool {
    ns.ip_json(&["link", "show"])
        .iter()
        .any(|l| l["address"].as_str() == Some(mac))
}

/// The scenarios. `ns` is where the node's links appear.
async fn suite(cloud: &dyn Cloud, ns: &Netns, leak: &Leak) {
    // Identity: the instance type's real limits; the primary ENI.
    let node = cloud.node().await.expect("node");
    assert_eq!(node.limits.name, "m5.large");
    assert_eq!((node.limits.max_enis, node.limits.ipv4_per_eni), (3, 10));
    assert!(node.subnet.cidr.contains(node.primary_ip));
    assert!(node
        .vpc_cidrs
        .iter()
        .any(|c| c.contains(node.subnet.cidr.network())));
    let enis = cloud.enis().await.expect("enis");
    assert_eq!(
        enis.len(),
        1,
        "a fresh node has its primary ENI only: {enis:?}"
    );
    let primary = enis[0].clone();
    assert!(primary.is_primary());
    assert_eq!(primary.mac, node.primary_mac);
    assert_eq!(primary.primary_ip, node.primary_ip);
    assert_eq!(primary.subnet, node.subnet);

    // Assign by count: that many new addresses, in the subnet, distinct.
    let got = cloud.assign_ips(&primary.id, 3).await.expect("assign");
    assert_eq!(got.len(), 3, "{got:?}");
    let distinct: HashSet<Ipv4Addr> = got.iter().copied().collect();
    assert_eq!(distinct.len(), 3);
    for ip in &got {
        assert!(node.subnet.cidr.contains(*ip), "{ip} outside the subnet");
        assert_ne!(*ip, node.primary_ip);
        assert!(!primary.secondary_ips.contains(ip), "{ip} was already held");
    }
    let held = cloud.enis().await.expect("enis")[0].secondary_ips.clone();
    for ip in &got {
        assert!(held.contains(ip), "{ip} missing from the ENI");
    }

    // Unassign: exactly those go.
    cloud
        .unassign_ips(&primary.id, &got[..2])
        .await
        .expect("unassign");
    let held = cloud.enis().await.expect("enis")[0].secondary_ips.clone();
    assert!(!held.contains(&got[0]) && !held.contains(&got[1]));
    assert!(held.contains(&got[2]));

    // Attach: a new ENI at the index asked, in the primary subnet, whose
    // link appears on the node with its MAC.
    let eni1 = cloud.attach_eni(1).await.expect("attach");
    assert_eq!(eni1.device_index, 1);
    assert_eq!(eni1.subnet, node.subnet);
    assert_ne!(eni1.mac, primary.mac);
    assert!(
        has_link_with_mac(ns, &eni1.mac.to_string()),
        "no link for {}",
        eni1.mac
    );
    let listed = cloud.enis().await.expect("enis");
    assert_eq!(
        listed
            .iter()
            .map(|e| (e.device_index, e.id.clone()))
            .collect::<Vec<_>>(),
        vec![(0, primary.id.clone()), (1, eni1.id.clone())]
    );
    let two = cloud
        .assign_ips(&eni1.id, 2)
        .await
        .expect("assign on ENI 1");
    assert_eq!(two.len(), 2);
    assert!(cloud.detached_enis().await.expect("detached").is_empty());

    // Detach and delete: gone from the node and not left as a leak.
    cloud
        .detach_and_delete_eni(&eni1.id)
        .await
        .expect("detach+delete");
    let listed = cloud.enis().await.expect("enis");
    assert_eq!(listed.len(), 1);
    assert!(cloud.detached_enis().await.expect("detached").is_empty());

    // A leaked ENI of this node is listed, and deleting it removes it.
    let leaked = leak();
    let detached = cloud.detached_enis().await.expect("detached");
    assert_eq!(
        detached.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        vec![leaked.clone()]
    );
    cloud.delete_eni(&leaked).await.expect("delete leaked");
    assert!(cloud.detached_enis().await.expect("detached").is_empty());

    // An ENI that does not exist: NotFound, for every call that names one.
    let ghost = EniId("eni-0000000000000dead".into());
    for result in [
        cloud.assign_ips(&ghost, 1).await.map(drop),
        cloud.unassign_ips(&ghost, &[got[2]]).await,
        cloud.delete_eni(&ghost).await,
    ] {
        assert!(
            matches!(result, Err(CloudError::NotFound { .. })),
            "expected NotFound, got {result:?}"
        );
    }
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn suite_on_the_simulator() {
    let ns = Arc::new(Netns::new());
    let ns2 = ns.clone();
    in_netns(&ns, move |rt| {
        rt.block_on(async {
            let fabric = Arc::new(VethFabric::new().expect("fabric"));
            let sim = Arc::new(
                SimCloud::new(SimConfig::default(), fabric)
                    .await
                    .expect("sim"),
            );
            let for_leak = sim.clone();
            let leak: Leak = Box::new(move || for_leak.leak_eni().expect("leak"));
            suite(sim.as_ref(), &ns2, &leak).await;
        })
    });
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn suite_on_ec2_against_moto() {
    let moto = Moto::start();
    moto.reset();
    let vpc = MotoVpc::create(&moto);
    let (instance_id, _primary) = vpc.run_instance(&moto, "m5.large");
    let ns = Arc::new(Netns::new());
    let _fabric = EniFabric::start(&moto, &vpc, &instance_id, &ns, None);
    let imds = Imds::start(&ns, moto.addr(), &vpc, &instance_id, "m5.large");
    let ec2 = Forward::start(&ns, moto.addr());
    // Nothing of the caller's AWS settings; static credentials; both
    // endpoints on the node namespace's loopback. (This test process runs
    // this one test: nextest gives each test its own process.)
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AWS_")) {
        std::env::remove_var(k);
    }
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL_EC2", ec2.url()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url()),
        ("AWS_CONFIG_FILE", "/dev/null".to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_string()),
        ("HOME", "/nonexistent".to_string()),
    ] {
        std::env::set_var(k, v);
    }
    // The suite runs inside the node namespace: moto is reached through the
    // forwarder there.
    let (moto_addr, subnet, leak_for) = (ec2.addr(), vpc.subnet_id.clone(), instance_id.clone());
    let leak: Leak = Box::new(move || {
        EniId(vpc_cni_e2e::moto::create_tagged_eni(
            moto_addr, &subnet, CLUSTER, &leak_for, None,
        ))
    });
    let ns2 = ns.clone();
    in_netns(&ns, move |rt| {
        rt.block_on(async {
            let settings = Ec2Settings {
                cluster_name: Some(CLUSTER.into()),
                ..Ec2Settings::default()
            };
            let cloud = Ec2Cloud::new(settings).await.expect("ec2 provider");
            suite(&cloud, &ns2, &leak).await;
        })
    });
}
