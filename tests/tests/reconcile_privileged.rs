//! Reconcile on start, end to end: a damaged checkpoint (truncated, or
//! garbage) is reported and rebuilt from the kernel and the cloud; a node
//! switched from aws-node keeps its pods' addresses from aws-node's
//! checkpoint; a pod that vanished while ipamd was down is released into
//! the cooldown, not handed out at once.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::json;
use vpc_cni_e2e::{
    node_pod_links, node_pod_routes, result_ip, status_pods, used, wait_until, Node, PodSpec,
    TempDir,
};

fn add(node: &Node, pod: &PodSpec) -> Ipv4Addr {
    add_veth(node, pod).0
}

/// ADD, returning the address and the host veth's name.
fn add_veth(node: &Node, pod: &PodSpec) -> (Ipv4Addr, String) {
    let out = node.add_call(pod).run();
    let r = out.ok();
    let veth = r["interfaces"][0]["name"].as_str().unwrap().to_string();
    (result_ip(r), veth)
}

/// Pods, one of which vanishes (namespace removed, no DEL) while ipamd is
/// down; the checkpoint is then damaged by `damage` (if any) and ipamd
/// restarted. The survivors must keep their addresses (rebuilt from the
/// kernel when the checkpoint is damaged) and everything must keep
/// working. With the checkpoint intact the vanished pod is known and its
/// address rests in the cooldown; a damaged checkpoint cannot tell that it
/// ever existed (nothing in the kernel or the cloud does).
fn survives(damage: Option<&dyn Fn(&std::path::Path)>, what: &str) {
    let mut node = Node::start();
    let pods: Vec<PodSpec> = (0..3).map(|i| PodSpec::new(&format!("dmg-{i}"))).collect();
    let added: Vec<(Ipv4Addr, String)> = pods.iter().map(|p| add_veth(&node, p)).collect();
    let ips: Vec<Ipv4Addr> = added.iter().map(|a| a.0).collect();
    let mut pods = pods;
    let vanished = pods.pop().expect("three pods");
    let vanished_ip = ips[2];
    node.crash();
    let veth = added[2].1.clone();
    drop(vanished);
    assert!(
        wait_until(std::time::Duration::from_secs(10), || !node_pod_links(
            &node
        )
        .contains(&veth)),
        "the vanished pod's veth is still there"
    );
    if let Some(damage) = damage {
        damage(&node.dir().join("state"));
    }
    node.restart();

    let log = node.log();
    assert_eq!(
        log.contains("checkpoint damaged"),
        damage.is_some(),
        "{what}: the log must say what it found:\n{log}"
    );
    let restored: Vec<(String, String)> = status_pods(&node)
        .iter()
        .map(|p| {
            (
                p["containerId"].as_str().unwrap().to_string(),
                p["addr"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = pods
        .iter()
        .zip(&ips)
        .map(|(p, ip)| (p.container_id.clone(), ip.to_string()))
        .collect();
    assert_eq!(restored, want, "{what}: rebuilt from the kernel");
    assert_eq!(used(&node), 2);
    // A repeated ADD returns the address; CHECK passes; new pods never get
    // a survivor's address, nor (cooldown) the vanished pod's.
    assert_eq!(add(&node, &pods[0]), ips[0]);
    node.plugin("CHECK")
        .container_id(&pods[1].container_id)
        .netns(pods[1].netns.path_str())
        .args(&pods[1].cni_args())
        .run()
        .ok();
    let new: Vec<PodSpec> = (0..5).map(|i| PodSpec::new(&format!("new-{i}"))).collect();
    let new_ips: HashSet<Ipv4Addr> = new.iter().map(|p| add(&node, p)).collect();
    assert_eq!(new_ips.len(), 5);
    for ip in [ips[0], ips[1]] {
        assert!(!new_ips.contains(&ip), "{what}: {ip} handed out again");
    }
    if damage.is_none() {
        assert!(
            !new_ips.contains(&vanished_ip),
            "the vanished pod's {vanished_ip} must rest in the cooldown"
        );
        assert!(log.contains("released=1"), "{log}");
    }
    // DEL of a rebuilt pod unwires it.
    node.del_call(&pods[0]).run().ok();
    assert!(!node_pod_routes(&node)
        .iter()
        .any(|(dst, _)| dst == &ips[0].to_string()));
    assert_eq!(used(&node), 6);
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn a_pod_gone_while_ipamd_was_down_is_released_into_the_cooldown() {
    survives(None, "intact");
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn a_truncated_checkpoint_is_rebuilt_from_the_kernel() {
    survives(
        Some(&|state: &std::path::Path| {
            let snap = state.join("checkpoint.json");
            let len = std::fs::metadata(&snap).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(&snap).unwrap();
            f.set_len(len / 2).unwrap();
            for e in std::fs::read_dir(state).unwrap() {
                let p = e.unwrap().path();
                if p.to_string_lossy().ends_with(".log") {
                    std::fs::write(&p, b"").unwrap();
                }
            }
        }),
        "truncated",
    );
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn a_garbage_checkpoint_is_rebuilt_from_the_kernel() {
    survives(
        Some(&|state: &std::path::Path| {
            for e in std::fs::read_dir(state).unwrap() {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                if name == "checkpoint.json" || name.ends_with(".log") {
                    let junk: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
                    std::fs::write(&p, junk).unwrap();
                }
            }
        }),
        "garbage",
    );
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn a_node_switched_from_aws_node_keeps_its_pods_addresses() {
    let aws = TempDir::new();
    let aws_file = aws.path().join("ipam.json");
    let mut node = Node::start_with(&[("VPC_CNI_AWS_NODE_CHECKPOINT", aws_file.to_str().unwrap())]);
    // Pods wired the way aws-node wires them: same veth names and routes,
    // no owner alias on the host veth.
    let pods: Vec<PodSpec> = (0..2).map(|i| PodSpec::new(&format!("aws-{i}"))).collect();
    let added: Vec<(Ipv4Addr, String)> = pods.iter().map(|p| add_veth(&node, p)).collect();
    let ips: Vec<Ipv4Addr> = added.iter().map(|a| a.0).collect();
    for (_, veth) in &added {
        node.netns().ip(&["link", "set", veth, "alias", ""]);
    }
    node.crash();
    // aws-node ran here, not us: no checkpoint of ours.
    for e in std::fs::read_dir(node.dir().join("state")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name == "checkpoint.json" || name.starts_with("journal-") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let entry = |p: &PodSpec, ip: Ipv4Addr| {
        json!({"networkName": "aws-cni", "containerID": p.container_id, "ifName": "eth0",
               "ipv4": ip.to_string(), "allocationTimestamp": 1_700_000_000_000_000_000i64,
               "metadata": {"k8sPodNamespace": p.namespace, "k8sPodName": p.name}})
    };
    let gone = PodSpec::new("aws-gone");
    let doc = json!({"version": "vpc-cni-ipam/1", "allocations": [
        entry(&pods[0], ips[0]), entry(&pods[1], ips[1]),
        entry(&gone, "10.0.0.200".parse().unwrap()),
        {"networkName": "aws-cni", "containerID": "v6", "ifName": "eth0", "ipv6": "2001:db8::5",
         "allocationTimestamp": 0, "metadata": {}},
    ]});
    std::fs::write(&aws_file, serde_json::to_vec(&doc).unwrap()).unwrap();
    node.restart();

    let log = node.log();
    assert!(log.contains("taking over aws-node's"), "{log}");
    let restored: Vec<(String, String)> = status_pods(&node)
        .iter()
        .map(|p| {
            (
                p["containerId"].as_str().unwrap().to_string(),
                p["addr"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        restored,
        vec![
            (pods[0].container_id.clone(), ips[0].to_string()),
            (pods[1].container_id.clone(), ips[1].to_string()),
        ],
        "the gone pod and the IPv6 entry are not taken"
    );
    let new: Vec<PodSpec> = (0..6).map(|i| PodSpec::new(&format!("mig-{i}"))).collect();
    let new_ips: HashSet<Ipv4Addr> = new.iter().map(|p| add(&node, p)).collect();
    assert!(!new_ips.contains(&ips[0]) && !new_ips.contains(&ips[1]));
    // A migrated pod's repeated ADD, CHECK and DEL work.
    assert_eq!(add(&node, &pods[1]), ips[1]);
    node.plugin("CHECK")
        .container_id(&pods[1].container_id)
        .netns(pods[1].netns.path_str())
        .args(&pods[1].cni_args())
        .run()
        .ok();
    node.del_call(&pods[0]).run().ok();
    assert!(!node_pod_routes(&node)
        .iter()
        .any(|(dst, _)| dst == &ips[0].to_string()));
    // Our own checkpoint now exists: the next start does not read aws-node's.
    node.crash();
    std::fs::write(
        &aws_file,
        b"{\"version\": \"vpc-cni-ipam/1\", \"allocations\": []}",
    )
    .unwrap();
    node.restart();
    assert_eq!(used(&node), 7);
}
