//! What real runtimes send (see shared/notes/MACHINE-FACTS.md, "What real
//! runtimes send to a CNI plugin"): `/proc/<pid>/ns/net` paths, CNI_ARGS in
//! any order or almost empty, runtimeConfig keys in either case, old
//! cniVersions, VERSION probes.

use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use vpc_cni_e2e::{
    node_pod_links, ping, result_ip, status_json, status_pods, used, wait_until, Netns, Node,
    Plugin,
};

/// The status record of `container_id`.
fn record(node: &Node, container_id: &str) -> Value {
    status_pods(node)
        .into_iter()
        .find(|p| p["containerId"] == container_id)
        .unwrap_or_else(|| panic!("status lists no {container_id}: {}", status_json(node)))
}

/// VERSION as podman sends it before ADD and DEL.
fn podman_version_probe(conf: &Value) {
    let v = Plugin::new("VERSION").config(conf).run();
    assert!(
        v.ok()["supportedVersions"]
            .as_array()
            .is_some_and(|a| a.contains(&json!(conf["cniVersion"]))),
        "{v}"
    );
}

/// A process in a pod namespace, killed and reaped on drop.
struct Task(Child);

impl Drop for Task {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn netns_given_as_proc_pid_path_works() {
    let node = Node::start();
    let pod_ns = Netns::new();
    // `ctr run --cni` hands the plugin /proc/<pid>/ns/net of the task.
    let task = Task(
        Command::new("ip")
            .args(["netns", "exec", pod_ns.name(), "sleep", "60"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep in the pod namespace"),
    );
    let proc_path = format!("/proc/{}/ns/net", task.0.id());
    let want = std::fs::metadata(pod_ns.path()).expect("stat netns").ino();
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::fs::metadata(&proc_path).is_ok_and(|m| m.ino() == want)
        }),
        "sleep never entered {}",
        pod_ns.name()
    );
    let out = node
        .plugin("ADD")
        .container_id("ctr-task-1")
        .netns(&proc_path)
        .args("")
        .run();
    let r = out.ok();
    assert_eq!(r["interfaces"][1]["sandbox"], proc_path.as_str(), "{r}");
    let ip = result_ip(r);
    // The interface landed in the task's namespace, which is pod_ns.
    let inside = pod_ns.ip(&["-4", "-br", "addr", "show", "dev", "eth0"]);
    assert!(inside.contains(&format!("{ip}/32")), "{inside}");
    assert!(ping(node.netns().name(), ip));
    assert_eq!(record(&node, "ctr-task-1")["netns"], proc_path.as_str());
    // CHECK with the same path, then ctr's DEL, which comes without a netns.
    node.plugin("CHECK")
        .container_id("ctr-task-1")
        .netns(&proc_path)
        .run()
        .ok();
    node.plugin("DEL")
        .container_id("ctr-task-1")
        .netns("")
        .args("")
        .run()
        .ok();
    assert_eq!(used(&node), 0);
    drop(task);
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn cni_args_in_any_order_and_podman_style() {
    let node = Node::start();

    // containerd's CRI sends the keys in random order.
    let ns = Netns::new();
    let shuffled = "IgnoreUnknown=1;K8S_POD_UID=7c0f3c1e-1111-4222-8333-444455556666;\
                    K8S_POD_NAME=nginx;K8S_POD_NAMESPACE=default;\
                    K8S_POD_INFRA_CONTAINER_ID=0123456789abcdef";
    let out = node
        .plugin("ADD")
        .container_id("0123456789abcdef")
        .netns(ns.path_str())
        .args(shuffled)
        .run();
    let r = out.ok();
    // aws-node's name: "eni" + sha1("default.nginx")[..11].
    assert_eq!(r["interfaces"][0]["name"], "enic440f455693", "{r}");
    let rec = record(&node, "0123456789abcdef");
    assert_eq!(rec["namespace"], "default", "{rec}");
    assert_eq!(rec["name"], "nginx", "{rec}");
    assert!(ping(node.netns().name(), result_ip(r)));

    // podman: VERSION first, only K8S_POD_NAME, /run/netns path.
    let podman_ns = Netns::new();
    let conf = node.conf("1.0.0");
    podman_version_probe(&conf);
    let out = node
        .plugin("ADD")
        .config(&conf)
        .container_id("5f1e2d3c4b5a")
        .netns(podman_ns.path_str())
        .args("IgnoreUnknown=1;K8S_POD_NAME=x")
        .run();
    let r = out.ok().clone();
    assert_eq!(r["cniVersion"], "1.0.0", "{r}");
    let rec = record(&node, "5f1e2d3c4b5a");
    assert_eq!(rec["name"], "x", "{rec}");
    assert!(rec["namespace"].is_null(), "{rec}");
    let ip = result_ip(&r);
    assert!(ping(node.netns().name(), ip));
    // podman's DEL: VERSION probe, then DEL with prevResult.
    podman_version_probe(&conf);
    let mut del_conf = conf.clone();
    del_conf["prevResult"] = r;
    node.plugin("DEL")
        .config(&del_conf)
        .container_id("5f1e2d3c4b5a")
        .netns(podman_ns.path_str())
        .args("IgnoreUnknown=1;K8S_POD_NAME=x")
        .run()
        .ok();
    assert_eq!(used(&node), 1, "{}", status_json(&node));
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn runtime_config_keys_in_either_case_are_accepted() {
    let node = Node::start();
    let cases = [
        (
            "cri",
            json!({"portMappings": [{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp"}]}),
        ),
        (
            "podman",
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}], "aliases": ["x"]}),
        ),
    ];
    let mut held = Vec::new();
    for (name, runtime_config) in cases {
        let ns = Netns::new();
        let mut conf = node.conf("1.1.0");
        conf["runtimeConfig"] = runtime_config;
        let out = node
            .plugin("ADD")
            .config(&conf)
            .container_id(&format!("cid-{name}"))
            .netns(ns.path_str())
            .args(&format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}"))
            .run();
        let ip = result_ip(out.ok());
        assert!(ping(node.netns().name(), ip), "{name}");
        node.plugin("DEL")
            .config(&conf)
            .container_id(&format!("cid-{name}"))
            .netns(ns.path_str())
            .run()
            .ok();
        held.push(ns);
    }
    assert_eq!(used(&node), 0);
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn old_cni_versions_get_results_in_their_own_shape() {
    let node = Node::start();
    let ns = Netns::new();
    let conf = node.conf("0.4.0");
    let out = node
        .plugin("ADD")
        .config(&conf)
        .container_id("old-0.4")
        .netns(ns.path_str())
        .args("K8S_POD_NAMESPACE=default;K8S_POD_NAME=old")
        .run();
    let r = out.ok().clone();
    assert_eq!(r["cniVersion"], "0.4.0", "{r}");
    assert_eq!(r["ips"][0]["version"], "4", "{r}");
    let ip = result_ip(&r);
    assert!(ping(node.netns().name(), ip));
    // CHECK exists since 0.4.0.
    let mut check = conf.clone();
    check["prevResult"] = r;
    node.plugin("CHECK")
        .config(&check)
        .container_id("old-0.4")
        .netns(ns.path_str())
        .run()
        .ok();
    node.plugin("DEL")
        .config(&conf)
        .container_id("old-0.4")
        .netns(ns.path_str())
        .run()
        .ok();

    // 0.3.1 too (no CHECK there).
    let ns31 = Netns::new();
    let out = node
        .plugin("ADD")
        .config(&node.conf("0.3.1"))
        .container_id("old-0.3.1")
        .netns(ns31.path_str())
        .args("K8S_POD_NAMESPACE=default;K8S_POD_NAME=older")
        .run();
    let r = out.ok();
    assert_eq!(r["cniVersion"], "0.3.1", "{r}");
    assert_eq!(r["ips"][0]["version"], "4", "{r}");
    node.plugin("DEL")
        .config(&node.conf("0.3.1"))
        .container_id("old-0.3.1")
        .netns(ns31.path_str())
        .run()
        .ok();
    assert_eq!(used(&node), 0);
    drop((ns, ns31));
    assert!(
        wait_until(Duration::from_secs(10), || node_pod_links(&node).is_empty()),
        "host veths go with the namespaces"
    );
}
