//! Names and MACs for pod links.

use sha1::{Digest, Sha1};

use crate::cloud::MacAddr;

/// The host veth name: `eni` + the first 11 hex characters of
/// sha1("<namespace>.<pod>"), exactly as aws-node names it, so operators'
/// scripts and habits carry over. Without a pod name (podman without
/// Kubernetes, `ctr run`), the container id stands in for it. A second
/// interface of the same pod (`CNI_IFNAME` other than `eth0`) adds the
/// interface name, so its veth never collides with the first one's.
pub fn host_veth_name(
    namespace: Option<&str>,
    pod: Option<&str>,
    container_id: &str,
    ifname: &str,
) -> String {
    let mut key = match pod {
        Some(pod) if !pod.is_empty() => format!("{}.{}", namespace.unwrap_or("default"), pod),
        _ => format!("container.{container_id}"),
    };
    if ifname != "eth0" {
        key.push('.');
        key.push_str(ifname);
    }
    let digest = Sha1::digest(key.as_bytes());
    let mut name = String::with_capacity(14);
    name.push_str("eni");
    for byte in digest.iter().take(6) {
        name.push_str(&format!("{byte:02x}"));
    }
    name.truncate(14);
    name
}

/// A random locally administered unicast MAC.
pub fn random_mac() -> MacAddr {
    let mut mac: [u8; 6] = rand::random();
    mac[0] = (mac[0] & 0xfe) | 0x02;
    MacAddr(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_aws_node_naming() {
        // `printf default.nginx | sha1sum` = c440f455693b69cd...
        assert_eq!(
            host_veth_name(Some("default"), Some("nginx"), "c1", "eth0"),
            "enic440f455693"
        );
    }

    #[test]
    fn same_pod_same_name_other_pod_other_name() {
        let a = host_veth_name(Some("ns1"), Some("web"), "c1", "eth0");
        assert_eq!(a, host_veth_name(Some("ns1"), Some("web"), "c2", "eth0"));
        assert_ne!(a, host_veth_name(Some("ns2"), Some("web"), "c1", "eth0"));
        assert_ne!(a, host_veth_name(Some("ns1"), Some("web"), "c1", "eth1"));
    }

    #[test]
    fn falls_back_to_container_id() {
        let a = host_veth_name(None, None, "abc", "eth0");
        assert_ne!(a, host_veth_name(None, None, "abd", "eth0"));
        assert_eq!(a, host_veth_name(Some("x"), Some(""), "abc", "eth0"));
    }

    #[test]
    fn macs_are_local_unicast() {
        for _ in 0..100 {
            let m = random_mac();
            assert_eq!(m.0[0] & 0x01, 0, "unicast");
            assert_eq!(m.0[0] & 0x02, 0x02, "locally administered");
        }
    }
}
