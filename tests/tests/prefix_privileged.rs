//! Prefix delegation end to end: the real plugin against ipamd on the
//! simulated cloud, in prefix mode, and in prefix mode on a subnet too small
//! for any /28 (EC2's InsufficientCidrBlocks), where it must fall back to
//! secondary /32s instead of failing.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use vpc_cni_e2e::{result_ip, status_json, Node, PodSpec};

/// A CIDR as (network, prefix length).
#[derive(Debug, Clone, Copy)]
struct Cidr(Ipv4Addr, u8);

impl Cidr {
    fn parse(s: &str) -> Cidr {
        let (ip, len) = s.split_once('/').expect("a CIDR");
        Cidr(
            ip.parse().expect("an address"),
            len.parse().expect("a length"),
        )
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.1));
        u32::from(ip) & mask == u32::from(self.0)
    }
}

fn prefixes(status: &serde_json::Value) -> Vec<Cidr> {
    status["enis"]
        .as_array()
        .expect("enis")
        .iter()
        .flat_map(|e| e["prefixes"].as_array().expect("prefixes").clone())
        .map(|p| Cidr::parse(p.as_str().expect("prefix")))
        .collect()
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn prefix_mode_serves_pods_from_delegated_28s() {
    let node = Node::start_with(&[("ENABLE_PREFIX_DELEGATION", "true")]);
    let status = status_json(&node);
    let held = prefixes(&status);
    assert_eq!(held.len(), 1, "one warm prefix at start: {status}");
    assert_eq!(status["pool"]["total"], 16, "{status}");

    let pods: Vec<PodSpec> = (0..20)
        .map(|i| PodSpec::new(&format!("pd-{i:02}")))
        .collect();
    let ips: Vec<Ipv4Addr> = pods
        .iter()
        .map(|p| result_ip(node.add_call(p).run().ok()))
        .collect();
    assert_eq!(ips.iter().collect::<HashSet<_>>().len(), 20, "{ips:?}");
    let status = status_json(&node);
    let held = prefixes(&status);
    assert!(held.len() >= 2, "{status}");
    assert!(
        held.iter().all(|p| p.1 == 28 && u32::from(p.0) % 16 == 0),
        "{held:?}"
    );
    for ip in &ips {
        assert!(
            held.iter().any(|p| p.contains(*ip)),
            "{ip} not in a delegated prefix {held:?}"
        );
    }
    assert_eq!(status["pool"]["prefixFallback"], false, "{status}");
    for p in &pods {
        assert!(node.del_call(p).run().success());
    }
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn prefix_mode_on_a_subnet_without_a_free_28_falls_back_to_ips() {
    // A /27 has two aligned /28s, one holding AWS's reserved addresses and
    // the other the broadcast address: EC2 can never delegate a prefix here.
    let node = Node::start_with(&[
        ("ENABLE_PREFIX_DELEGATION", "true"),
        ("VPC_CNI_SIM_SUBNET_CIDR", "10.0.0.0/27"),
    ]);
    let status = status_json(&node);
    assert_eq!(status["pool"]["prefixFallback"], true, "{status}");
    assert_eq!(
        status["pool"]["blocked"],
        serde_json::Value::Null,
        "{status}"
    );
    assert!(prefixes(&status).is_empty(), "{status}");

    let pods: Vec<PodSpec> = (0..12)
        .map(|i| PodSpec::new(&format!("fb-{i:02}")))
        .collect();
    let ips: Vec<Ipv4Addr> = pods
        .iter()
        .map(|p| result_ip(node.add_call(p).run().ok()))
        .collect();
    assert_eq!(ips.iter().collect::<HashSet<_>>().len(), 12, "{ips:?}");
    let subnet = Cidr::parse("10.0.0.0/27");
    assert!(ips.iter().all(|ip| subnet.contains(*ip)), "{ips:?}");
    let status = status_json(&node);
    let secondaries: usize = status["enis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["secondaryIps"].as_array().unwrap().len())
        .sum();
    assert!(secondaries >= 12, "{status}");
    for p in &pods {
        assert!(node.del_call(p).run().success());
    }
}
