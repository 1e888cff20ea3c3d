//! One pod's life as a runtime drives it: ADD, CHECK, DEL (in every way
//! real runtimes send it), repeated ADD, GC and STATUS, against a real ipamd
//! in a node namespace, looking at the result from outside (status, `ip`,
//! packets).

use std::net::Ipv4Addr;
use std::time::Duration;

use cni_plugin::error::CHECK_FAILED;
use serde_json::{json, Value};
use vpc_cni_e2e::{
    assert_nothing_allocated, node_pod_links, node_pod_routes, ping, status_json, status_pods,
    tcp_reachable, used, wait_until, Node, Pod, PodSpec,
};

/// The ADD result has the CNI 1.1 shape and names what ADD built.
fn assert_result_shape(pod: &Pod) {
    let r = &pod.result;
    assert_eq!(r["cniVersion"], "1.1.0", "{r}");
    let host = pod.host_ifname();
    assert!(
        host.len() == 14
            && host.starts_with("eni")
            && host[3..].chars().all(|c| c.is_ascii_hexdigit()),
        "host veth must be eni + 11 hex: {r}"
    );
    assert!(r["interfaces"][0].get("sandbox").is_none(), "{r}");
    assert_eq!(r["interfaces"][1]["name"], "eth0", "{r}");
    assert_eq!(r["interfaces"][1]["sandbox"], pod.netns().path_str(), "{r}");
    assert_eq!(r["ips"][0]["interface"], 1, "{r}");
    assert_eq!(r["ips"][0]["gateway"], "169.254.1.1", "{r}");
    let ip = pod.ip.octets();
    assert_eq!(
        &ip[..3],
        &[10, 0, 0],
        "first addresses come from the primary ENI: {r}"
    );
    assert!((5..=13).contains(&ip[3]), "{r}");
}

/// The kernel holds what the result says: eth0 with the /32 and a default
/// route via 169.254.1.1 in the pod, a /32 host route via the veth on the node.
fn assert_wired(node: &Node, pod: &Pod) {
    let addrs = pod.netns().ip_json(&["addr", "show", "dev", "eth0"]);
    let has_ip = addrs[0]["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .any(|a| a["local"] == pod.ip.to_string() && a["prefixlen"] == 32);
    assert!(has_ip, "eth0 in the pod lacks {}/32: {addrs:?}", pod.ip);
    let routes = pod.netns().ip_json(&["route"]);
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == "169.254.1.1" && r["dev"] == "eth0"),
        "pod lacks default via 169.254.1.1: {routes:?}"
    );
    let host_routes = node_pod_routes(node);
    assert!(
        host_routes.contains(&(pod.ip.to_string(), pod.host_ifname().to_string())),
        "node lacks {} dev {}: {host_routes:?}",
        pod.ip,
        pod.host_ifname()
    );
}

fn check(node: &Node, pod: &Pod) -> vpc_cni_e2e::CniOutput {
    let mut conf = node.conf("1.1.0");
    conf["prevResult"] = pod.result.clone();
    node.plugin("CHECK")
        .container_id(&pod.spec.container_id)
        .netns(pod.netns().path_str())
        .args(&pod.spec.cni_args())
        .config(&conf)
        .run()
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn two_pods_talk_to_each_other_and_to_the_node_and_check_sees_a_broken_route() {
    let node = Node::start();
    let a = node.add_pod("alpha");
    let b = node.add_pod("bravo");
    assert_ne!(a.ip, b.ip);
    assert_ne!(a.host_ifname(), b.host_ifname());
    for pod in [&a, &b] {
        assert_result_shape(pod);
        assert_wired(&node, pod);
    }
    let node_ns = node.netns().path();
    tcp_reachable(a.netns().path(), b.netns().path(), b.ip).expect("TCP alpha → bravo");
    tcp_reachable(b.netns().path(), a.netns().path(), a.ip).expect("TCP bravo → alpha");
    tcp_reachable(node_ns, a.netns().path(), a.ip).expect("TCP node → alpha");
    tcp_reachable(node_ns, b.netns().path(), b.ip).expect("TCP node → bravo");
    assert!(ping(a.netns().name(), b.ip), "ping alpha → bravo");
    assert!(ping(b.netns().name(), a.ip), "ping bravo → alpha");
    assert!(ping(node.netns().name(), a.ip), "ping node → alpha");
    assert!(ping(node.netns().name(), b.ip), "ping node → bravo");

    check(&node, &a).ok();
    check(&node, &b).ok();

    a.netns().ip(&["route", "del", "default"]);
    let out = check(&node, &a);
    out.err_code(u64::from(CHECK_FAILED));
    assert!(
        out.msg().contains("default"),
        "the message says what is wrong: {out}"
    );
    // The other pod is untouched by it.
    check(&node, &b).ok();
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn del_twice_succeeds_and_frees_the_address_once() {
    let node = Node::start();
    let pod = node.add_pod("twice");
    let other = node.add_pod("bystander");
    assert_eq!(used(&node), 2);
    node.del_pod(&pod.spec);
    node.del_pod(&pod.spec);
    assert_eq!(used(&node), 1, "{}", status_json(&node));
    let pods = status_pods(&node);
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0]["containerId"], other.spec.container_id);
    let routes = node_pod_routes(&node);
    assert!(
        !routes.iter().any(|(dst, _)| *dst == pod.ip.to_string()),
        "DEL removes the host route: {routes:?}"
    );
    assert!(
        ping(node.netns().name(), other.ip),
        "the other pod still works"
    );
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn del_after_the_pod_netns_is_gone_succeeds_and_frees_the_address() {
    let node = Node::start();
    let Pod { spec, ip, result } = node.add_pod("gone");
    let host = result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let path = spec.netns.path_str().to_string();
    let (container_id, args) = (spec.container_id.clone(), spec.cni_args());
    drop(spec); // the runtime destroyed the namespace before DEL
    node.plugin("DEL")
        .container_id(&container_id)
        .netns(&path)
        .args(&args)
        .run()
        .ok();
    assert!(
        !node_pod_routes(&node)
            .iter()
            .any(|(d, _)| *d == ip.to_string()),
        "host route to {ip} must be gone"
    );
    assert!(
        wait_until(Duration::from_secs(10), || !node_pod_links(&node)
            .contains(&host)),
        "host veth {host} must go with the namespace"
    );
    assert_nothing_allocated(&node);
    // The address is free again: the next pod may get it.
    let next = node.add_pod("next");
    assert_eq!(used(&node), 1);
    assert!(ping(node.netns().name(), next.ip));
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn a_host_veth_the_runtime_leaves_behind_is_reaped_after_the_delay() {
    let node = Node::start_with(&[("VPC_CNI_VETH_REAP_DELAY_MS", "100")]);
    let pod = node.add_pod("lingering");
    let keep = node.add_pod("staying");
    // DEL, but the runtime keeps the namespace (and so the veth) alive.
    node.del_pod(&pod.spec);
    assert_eq!(used(&node), 1);
    let host = pod.host_ifname().to_string();
    assert!(
        wait_until(Duration::from_secs(10), || !node_pod_links(&node)
            .contains(&host)),
        "host veth {host} must be reaped; links: {:?}",
        node_pod_links(&node)
    );
    // Its peer went with it; the namespace itself is the runtime's.
    let inside = pod.netns().ip_json(&["link"]);
    assert!(
        !inside.iter().any(|l| l["ifname"] == "eth0"),
        "the pod's eth0 goes with its peer: {inside:?}"
    );
    // The other pod's veth is not touched.
    assert!(node_pod_links(&node).contains(&keep.host_ifname().to_string()));
    assert!(ping(node.netns().name(), keep.ip));
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn del_with_empty_netns_succeeds_as_containerd_sends_it() {
    let node = Node::start();
    // containerd CRI: DEL on stop with the path, DEL on remove with CNI_NETNS="".
    let cri = node.add_pod("cri");
    node.del_pod(&cri.spec);
    let second = node
        .plugin("DEL")
        .container_id(&cri.spec.container_id)
        .netns("")
        .args(&cri.spec.cni_args())
        .run();
    second.ok();
    // `ctr run --cni`: the only DEL comes with CNI_NETNS="" and no CNI_ARGS.
    let ctr = node.add_pod("ctr");
    node.plugin("DEL")
        .container_id(&ctr.spec.container_id)
        .netns("")
        .run()
        .ok();
    // And with CNI_NETNS absent altogether.
    let absent = node.add_pod("absent");
    node.plugin("DEL")
        .container_id(&absent.spec.container_id)
        .unset("CNI_NETNS")
        .run()
        .ok();
    let status = status_json(&node);
    assert_eq!(status["pool"]["used"], 0, "{status}");
    assert_eq!(status["pods"], json!([]), "{status}");
    assert_eq!(node_pod_routes(&node), Vec::new());
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn del_for_an_unknown_container_succeeds() {
    let node = Node::start();
    let ns = vpc_cni_e2e::Netns::new();
    for netns in [ns.path_str(), "", "/run/netns/vpccni-e2e-does-not-exist"] {
        node.plugin("DEL")
            .container_id("never-added")
            .netns(netns)
            .args("K8S_POD_NAMESPACE=default;K8S_POD_NAME=ghost")
            .run()
            .ok();
    }
    assert_nothing_allocated(&node);
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn add_twice_returns_the_same_address_and_allocates_once() {
    let node = Node::start();
    let spec = PodSpec::new("again");
    let first = node.add_call(&spec).run().ok().clone();
    let second = node.add_call(&spec).run().ok().clone();
    assert_eq!(first["ips"], second["ips"], "same address");
    assert_eq!(
        first["interfaces"][0]["name"], second["interfaces"][0]["name"],
        "same host veth"
    );
    let status = status_json(&node);
    assert_eq!(status["pool"]["used"], 1, "{status}");
    assert_eq!(status["pods"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(node_pod_links(&node).len(), 1);
    assert_eq!(node_pod_routes(&node).len(), 1);
    let ip = vpc_cni_e2e::result_ip(&first);
    assert!(ping(node.netns().name(), ip), "the pod still works");
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn gc_releases_every_attachment_not_listed_as_valid() {
    let node = Node::start();
    let keep1 = node.add_pod("keep-1");
    let stale1 = node.add_pod("stale-1");
    let keep2 = node.add_pod("keep-2");
    let stale2 = node.add_pod("stale-2");
    assert_eq!(used(&node), 4);

    let mut conf = node.conf("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([
        {"containerID": keep1.spec.container_id, "ifname": "eth0"},
        {"containerID": keep2.spec.container_id, "ifname": "eth0"},
    ]);
    node.plugin("GC")
        .unset("CNI_IFNAME")
        .config(&conf)
        .run()
        .ok();

    let status = status_json(&node);
    assert_eq!(status["pool"]["used"], 2, "{status}");
    let mut kept: Vec<&str> = status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p: &Value| p["containerId"].as_str().unwrap())
        .collect();
    kept.sort_unstable();
    assert_eq!(kept, ["cid-keep-1", "cid-keep-2"], "{status}");
    let routes = node_pod_routes(&node);
    let dsts: Vec<&str> = routes.iter().map(|(d, _)| d.as_str()).collect();
    for gone in [&stale1, &stale2] {
        assert!(
            !dsts.contains(&gone.ip.to_string().as_str()),
            "host route to {} must be gone: {routes:?}",
            gone.ip
        );
    }
    for kept in [&keep1, &keep2] {
        assert!(dsts.contains(&kept.ip.to_string().as_str()), "{routes:?}");
        assert!(
            ping(node.netns().name(), kept.ip),
            "kept pod {} works",
            kept.ip
        );
    }
    let links = node_pod_links(&node);
    assert!(
        !links.contains(&stale1.host_ifname().to_string()),
        "{links:?}"
    );
    assert!(
        !links.contains(&stale2.host_ifname().to_string()),
        "{links:?}"
    );
    // GC is idempotent.
    node.plugin("GC")
        .unset("CNI_IFNAME")
        .config(&conf)
        .run()
        .ok();
    assert_eq!(used(&node), 2);
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn status_succeeds_on_a_ready_daemon() {
    let node = Node::start();
    let out = node
        .plugin("STATUS")
        .unset("CNI_IFNAME")
        .unset("CNI_CONTAINERID")
        .run();
    assert_eq!(out.ok(), &Value::Null, "STATUS prints nothing on success");
    let status = status_json(&node);
    assert_eq!(status["pool"]["ready"], true, "{status}");
    assert_eq!(
        status["pool"]["total"], 9,
        "m5.large fills its primary ENI: {status}"
    );
    assert_eq!(status["pool"]["capacity"], 27, "3 ENIs × 9: {status}");
    assert_eq!(status["enis"][0]["primaryIp"], "10.0.0.4", "{status}");
    let addrs = node.netns().ip_json(&["addr", "show", "dev", "eth0"]);
    assert!(
        addrs[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["local"] == Ipv4Addr::new(10, 0, 0, 4).to_string()),
        "node eth0 has the primary IP: {addrs:?}"
    );
}

/// While ipamd fills its pool (here, a slow simulated EC2), the socket is
/// already there: ADD answers "try again later" naming the socket, STATUS
/// answers "not available"; once ready, the same ADD succeeds.
#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn a_starting_daemon_answers_try_again_with_its_socket() {
    let mut node = Node::spawn_with(&[("VPC_CNI_SIM_API_LATENCY_MS", "700")]);
    let bound = wait_until(Duration::from_secs(10), || node.socket().exists());
    assert!(bound, "ipamd never bound its socket:\n{}", node.log());
    let pod = PodSpec::new("early");
    let out = node.add_call(&pod).run();
    out.err_code(u64::from(cni_plugin::error::TRY_AGAIN_LATER));
    let socket = node.socket().display().to_string();
    assert!(
        out.msg().contains(&socket) && out.msg().contains("starting"),
        "{out}"
    );
    node.plugin("STATUS")
        .run()
        .err_code(u64::from(cni_plugin::error::PLUGIN_NOT_AVAILABLE));
    node.wait_ready();
    node.add_call(&pod).run().ok();
}
