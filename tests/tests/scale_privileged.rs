//! Many pods: concurrent ADDs that cross onto a second ENI, ADD/DEL churn
//! that must leave nothing behind, and a node whose pool runs out.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use cni_plugin::error::{PLUGIN_NOT_AVAILABLE, POOL_EXHAUSTED};
use serde_json::Value;
use vpc_cni_e2e::{
    node_pod_links, node_pod_routes, node_pod_rules, node_rules, ping, result_ip, status_json,
    status_pods, tcp_reachable, used, wait_until, Node, PodSpec,
};

/// The simulated m5.large fills its primary ENI with these 9 addresses.
fn on_primary_eni(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[..3] == [10, 0, 0] && (5..=13).contains(&o[3])
}

fn in_subnet(ip: Ipv4Addr) -> bool {
    // 10.0.0.0/20
    u32::from(ip) & 0xffff_f000 == u32::from(Ipv4Addr::new(10, 0, 0, 0))
}

/// `ip -j rule` omits `srclen`/`dstlen` for a /32.
fn host_len(len: &Value) -> bool {
    len.is_null() || *len == 32
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn sixteen_concurrent_adds_get_distinct_addresses_across_two_enis() {
    const PODS: usize = 16;
    let node = Arc::new(Node::start());
    let specs: Vec<PodSpec> = (0..PODS)
        .map(|i| PodSpec::new(&format!("burst-{i:02}")))
        .collect();
    let specs = Arc::new(specs);
    let barrier = Arc::new(Barrier::new(PODS));
    let handles: Vec<_> = (0..PODS)
        .map(|i| {
            let (node, specs, barrier) = (node.clone(), specs.clone(), barrier.clone());
            thread::spawn(move || {
                let call = node.add_call(&specs[i]);
                barrier.wait();
                call.run()
            })
        })
        .collect();
    let outputs: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("ADD thread panicked"))
        .collect();
    let ips: Vec<Ipv4Addr> = outputs.iter().map(|o| result_ip(o.ok())).collect();

    let distinct: HashSet<_> = ips.iter().collect();
    assert_eq!(distinct.len(), PODS, "addresses must be distinct: {ips:?}");
    assert!(
        ips.iter().all(|ip| in_subnet(*ip)),
        "all in 10.0.0.0/20: {ips:?}"
    );
    let status = status_json(&node);
    assert_eq!(status["pool"]["used"], PODS, "{status}");
    assert_eq!(status["pods"].as_array().unwrap().len(), PODS, "{status}");
    assert_eq!(node_pod_links(&node).len(), PODS);
    assert_eq!(node_pod_routes(&node).len(), PODS);

    // 16 > 9: some pods live on the second ENI.
    let primary = ips
        .iter()
        .position(|ip| on_primary_eni(*ip))
        .expect("a pod on the primary ENI");
    let secondary = ips
        .iter()
        .position(|ip| !on_primary_eni(*ip))
        .expect("a pod beyond the primary ENI's 9 addresses");
    let (p_ip, s_ip) = (ips[primary], ips[secondary]);
    let rec = status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["addr"] == s_ip.to_string())
        .expect("status lists the secondary-ENI pod");
    assert_eq!(rec["eniIndex"], 1, "{rec}");

    // Its policy-routing rules: from <ip> → the ENI's table, to <ip> → main.
    let rules = node_rules(&node);
    let from = rules
        .iter()
        .find(|r| r["src"] == s_ip.to_string() && host_len(&r["srclen"]))
        .unwrap_or_else(|| panic!("no `from {s_ip}` rule: {rules:?}"));
    assert_ne!(
        from["table"], "main",
        "from-rule must use the ENI table: {from}"
    );
    let to = rules
        .iter()
        .find(|r| r["dst"] == s_ip.to_string() && host_len(&r["dstlen"]))
        .unwrap_or_else(|| panic!("no `to {s_ip}` rule: {rules:?}"));
    assert_eq!(to["table"], "main", "{to}");
    assert!(
        to["priority"].as_u64() < from["priority"].as_u64(),
        "to-pod must win over from-pod: {to} {from}"
    );

    let p_ns = specs[primary].netns.path();
    let s_ns = specs[secondary].netns.path();
    let mut failures = Vec::new();
    if let Err(e) = tcp_reachable(s_ns, p_ns, p_ip) {
        failures.push(format!("TCP {s_ip} (ENI 1) → {p_ip} (ENI 0): {e}"));
    }
    if let Err(e) = tcp_reachable(p_ns, s_ns, s_ip) {
        failures.push(format!("TCP {p_ip} (ENI 0) → {s_ip} (ENI 1): {e}"));
    }
    if let Err(e) = tcp_reachable(node.netns().path(), s_ns, s_ip) {
        failures.push(format!("TCP node → {s_ip} (ENI 1): {e}"));
    }
    assert!(
        failures.is_empty(),
        "{failures:#?}\nrules: {rules:#?}\nnode routes: {}\ntable 2: {}",
        node.netns().ip(&["route"]),
        node.netns().ip(&["route", "show", "table", "all"]),
    );
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn churn_of_200_pods_leaves_nothing_behind() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 50;
    let node = Arc::new(Node::start());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let node = node.clone();
            thread::spawn(move || {
                let mut seen = Vec::new();
                for i in 0..PER_THREAD {
                    let spec = PodSpec::new(&format!("churn-{t}-{i:02}"));
                    let ip = result_ip(node.add_call(&spec).run().ok());
                    seen.push(ip);
                    node.del_call(&spec).run().ok();
                    // As a runtime does after DEL: destroy the sandbox's netns.
                    drop(spec);
                }
                seen
            })
        })
        .collect();
    let mut ips = HashSet::new();
    for h in handles {
        ips.extend(h.join().expect("churn thread panicked"));
    }
    assert!(ips.iter().all(|ip| in_subnet(*ip)), "{ips:?}");
    // Freed addresses go to the back of the queue, so churn cycles through
    // the second ENI's addresses too: their rules must go as well.
    assert!(
        ips.iter().any(|ip| !on_primary_eni(*ip)),
        "churn should have used the second ENI: {ips:?}"
    );

    let status = status_json(&node);
    assert_eq!(status["pool"]["used"], 0, "{status}");
    assert_eq!(status["pods"], serde_json::json!([]), "{status}");
    assert_eq!(
        node_pod_routes(&node),
        Vec::new(),
        "no host route may remain"
    );
    assert_eq!(
        node_pod_rules(&node),
        Vec::<Value>::new(),
        "no pod rule may remain"
    );
    // The veths go with their namespaces, which the kernel destroys
    // asynchronously: wait for that, boundedly.
    let clean = wait_until(Duration::from_secs(20), || node_pod_links(&node).is_empty());
    assert!(clean, "host veths left: {:?}", node_pod_links(&node));
    let metrics = &status_json(&node)["metrics"];
    assert_eq!(metrics["ADD"]["calls"], THREADS * PER_THREAD, "{metrics}");
    assert_eq!(metrics["ADD"]["errors"], 0, "{metrics}");
    assert_eq!(metrics["DEL"]["errors"], 0, "{metrics}");
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn a_full_pool_refuses_add_with_101_naming_the_limit_until_a_pod_leaves() {
    // t3.medium: 3 ENIs × 5 secondary IPs; MAX_ENI=1 keeps the primary only.
    let node = Node::start_with(&[("VPC_CNI_SIM_INSTANCE_TYPE", "t3.medium"), ("MAX_ENI", "1")]);
    let pods: Vec<_> = (0..5).map(|i| node.add_pod(&format!("fill-{i}"))).collect();
    assert_eq!(used(&node), 5);

    let sixth = PodSpec::new("sixth");
    let out = node.add_call(&sixth).run();
    out.err_code(u64::from(POOL_EXHAUSTED));
    let msg = out.msg();
    for needle in ["5", "t3.medium", "MAX_ENI=1"] {
        assert!(msg.contains(needle), "message must name {needle:?}: {msg}");
    }
    // Nothing was allocated or wired for it.
    let status = status_json(&node);
    assert_eq!(status["pool"]["used"], 5, "{status}");
    assert!(
        !status_pods(&node)
            .iter()
            .any(|p| p["containerId"] == sixth.container_id),
        "{status}"
    );
    assert_eq!(
        node_pod_links(&node).len(),
        5,
        "no host veth for the refused pod"
    );
    assert_eq!(node_pod_routes(&node).len(), 5);
    let inside: Vec<String> = sixth
        .netns
        .ip_json(&["link"])
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect();
    assert_eq!(inside, ["lo"], "no interface in the refused pod");
    // STATUS tells the runtime the node cannot take pods now (CNI code 50).
    let out = node.plugin("STATUS").unset("CNI_IFNAME").run();
    out.err_code(u64::from(PLUGIN_NOT_AVAILABLE));

    // One pod leaves; the sixth now fits.
    node.del_pod(&pods[2].spec);
    let ip = result_ip(node.add_call(&sixth).run().ok());
    assert_eq!(used(&node), 5);
    assert!(ping(node.netns().name(), ip));
    node.del_pod(&pods[0].spec);
    node.plugin("STATUS").unset("CNI_IFNAME").run().ok();
}
