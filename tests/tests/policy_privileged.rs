//! NetworkPolicy through the real daemon: a `dir:` source, strict mode,
//! pods added by the real plugin, and packets between pod namespaces.
//!
//! The window test: with a policy that admits only `role=friend` to pods
//! `role=guarded`, 200 guarded pods are added one after the other, and
//! right after each ADD returns a denied peer (`stranger`) and the allowed
//! one (`friend`) each send datagrams to it. Not one of the stranger's may
//! arrive; every pod must hear from its friend (so the zero is not the
//! result of packets that could not have arrived anyway).

use std::collections::HashMap;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use vpc_cni_e2e::{tcp_reachable, wait_until, Node, Pod, PodSpec, TempDir};

const PORT: u16 = 7777;

/// A UDP socket created inside the namespace at `ns` (by a throwaway
/// thread; the socket stays in that namespace).
fn udp_in(ns: &Path, bind: SocketAddr) -> UdpSocket {
    let ns = ns.to_path_buf();
    thread::spawn(move || {
        let f = File::open(&ns).expect("open netns");
        setns(&f, CloneFlags::CLONE_NEWNET).expect("setns");
        let s = UdpSocket::bind(bind).expect("bind udp");
        s.set_nonblocking(true).expect("nonblocking");
        s
    })
    .join()
    .expect("socket thread")
}

/// Datagrams waiting on `s`, counted by sender address.
fn drain(s: &UdpSocket) -> HashMap<Ipv4Addr, usize> {
    let mut seen = HashMap::new();
    let mut buf = [0u8; 64];
    while let Ok((_, from)) = s.recv_from(&mut buf) {
        if let SocketAddr::V4(a) = from {
            *seen.entry(*a.ip()).or_default() += 1;
        }
    }
    seen
}

fn write_atomically(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write policy file");
    std::fs::rename(&tmp, dir.join(name)).expect("rename policy file");
}

fn pod_yaml(name: &str, role: &str, ip: Option<Ipv4Addr>) -> String {
    let status = ip.map_or(String::new(), |ip| format!("status:\n  podIP: {ip}\n"));
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n    role: {role}\nspec:\n  containers:\n  - name: c\n    image: busybox\n{status}"
    )
}

const NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  labels:\n    kubernetes.io/metadata.name: default\n";

const ONLY_FRIENDS: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: only-friends\n  namespace: default\nspec:\n  podSelector:\n    matchLabels:\n      role: guarded\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels:\n          role: friend\n";

/// Field order is drop order: the daemon stops before its directory goes.
struct Cluster {
    node: Node,
    policy_dir: TempDir,
    guarded: usize,
}

impl Cluster {
    fn start(mode: &str, instance: &str, guarded: usize) -> Self {
        let policy_dir = TempDir::new();
        write_atomically(policy_dir.path(), "namespace.yaml", NAMESPACE);
        write_atomically(policy_dir.path(), "policy.yaml", ONLY_FRIENDS);
        let mut pods = String::new();
        for i in 0..guarded {
            pods.push_str(&pod_yaml(&format!("guarded-{i:03}"), "guarded", None));
        }
        write_atomically(policy_dir.path(), "guarded.yaml", &pods);
        let source = format!("dir:{}", policy_dir.path().display());
        let node = Node::start_with(&[
            ("VPC_CNI_POLICY_SOURCE", &source),
            ("VPC_CNI_POLICY_MODE", mode),
            ("VPC_CNI_SIM_INSTANCE_TYPE", instance),
        ]);
        Cluster {
            node,
            policy_dir,
            guarded,
        }
    }

    fn dir(&self) -> PathBuf {
        self.policy_dir.path().to_path_buf()
    }
}

fn nft_table(node: &Node) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            node.netns().name(),
            "nft",
            "list",
            "table",
            "inet",
            "vpc_cni",
        ])
        .output()
        .expect("nft runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Adds `friend` and `stranger` (known, unselected: open) and publishes
/// their addresses; returns them once the engine enforces a snapshot
/// holding the friend's address (a canary pod hears the friend).
fn peers(c: &Cluster) -> (Pod, Pod) {
    write_atomically(
        &c.dir(),
        "peers.yaml",
        &(pod_yaml("friend", "friend", None) + &pod_yaml("stranger", "stranger", None)),
    );
    // Both must be known before ADD or strict mode denies them.
    let want = format!("pods={}", c.guarded + 2);
    assert!(
        wait_until(Duration::from_secs(5), || c.node.log().contains(&want)),
        "the source never published the peers:\n{}",
        c.node.log()
    );
    let friend = c.node.add_pod("friend");
    let stranger = c.node.add_pod("stranger");
    write_atomically(
        &c.dir(),
        "peers.yaml",
        &(pod_yaml("friend", "friend", Some(friend.ip))
            + &pod_yaml("stranger", "stranger", Some(stranger.ip))),
    );
    (friend, stranger)
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn strict_mode_has_no_window_for_200_new_pods_and_the_node_still_reaches_them() {
    const PODS: usize = 200;
    let c = Cluster::start("strict", "c5.4xlarge", PODS);
    let (friend, stranger) = peers(&c);
    let from_friend = udp_in(friend.netns().path(), SocketAddr::from(([0, 0, 0, 0], 0)));
    let from_stranger = udp_in(stranger.netns().path(), SocketAddr::from(([0, 0, 0, 0], 0)));

    // The first guarded pod doubles as a canary: once it hears the friend,
    // the snapshot with the friend's address is enforced.
    let mut guarded: Vec<(Pod, UdpSocket)> = Vec::with_capacity(PODS);
    for i in 0..PODS {
        let spec = PodSpec::new(&format!("guarded-{i:03}"));
        // The runtime makes the namespace before ADD; a listener bound
        // there now hears whatever reaches the pod from its first moment.
        let rx = udp_in(spec.netns.path(), SocketAddr::from(([0, 0, 0, 0], PORT)));
        let out = c.node.add_call(&spec).run();
        let ip = vpc_cni_e2e::result_ip(out.ok());
        let to = SocketAddr::from((ip, PORT));
        for _ in 0..3 {
            let _ = from_stranger.send_to(b"stranger", to);
        }
        let _ = from_friend.send_to(b"friend", to);
        if i == 0 {
            let heard = wait_until(Duration::from_secs(5), || {
                let _ = from_friend.send_to(b"friend", to);
                let seen = drain(&rx);
                assert_eq!(
                    seen.get(&stranger.ip),
                    None,
                    "stranger got through to the canary"
                );
                seen.contains_key(&friend.ip)
            });
            assert!(
                heard,
                "the friend never reached the canary; table:\n{}",
                nft_table(&c.node)
            );
        }
        let result = out.ok().clone();
        guarded.push((Pod { spec, ip, result }, rx));
    }
    // Late datagrams (an ARP resolution queue) land within moments; the
    // friend retries so every pod hears it at least once.
    let mut heard_friend = vec![false; PODS];
    wait_until(Duration::from_secs(5), || {
        for (i, (pod, rx)) in guarded.iter().enumerate() {
            let seen = drain(rx);
            assert_eq!(
                seen.get(&stranger.ip),
                None,
                "a datagram of the denied peer reached {} ({})",
                pod.spec.name,
                pod.ip
            );
            if seen.contains_key(&friend.ip) {
                heard_friend[i] = true;
            } else if !heard_friend[i] {
                let _ = from_friend.send_to(b"friend", SocketAddr::from((pod.ip, PORT)));
            }
        }
        heard_friend.iter().all(|h| *h)
    });
    let deaf: Vec<&str> = guarded
        .iter()
        .zip(&heard_friend)
        .filter(|(_, h)| !**h)
        .map(|((p, _), _)| p.spec.name.as_str())
        .collect();
    assert!(deaf.is_empty(), "pods the friend never reached: {deaf:?}");

    // Node → pod stays allowed under the policy; the stranger's TCP does not pass.
    let target = &guarded[PODS - 1].0;
    tcp_reachable(c.node.netns().path(), target.netns().path(), target.ip)
        .expect("the node reaches a guarded pod");
    tcp_reachable(friend.netns().path(), target.netns().path(), target.ip)
        .expect("the friend reaches a guarded pod over TCP");
    assert!(
        tcp_reachable(stranger.netns().path(), target.netns().path(), target.ip).is_err(),
        "the stranger must not reach a guarded pod over TCP"
    );
}
