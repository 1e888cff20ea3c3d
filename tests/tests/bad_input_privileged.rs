//! Bad input against a running daemon: every case must fail with the
//! spec's code and leave nothing behind — no address allocated, no pod
//! listed, no host veth, no route, nothing inside the pod namespace.

use std::os::unix::fs::PermissionsExt;

use cni_plugin::error::{
    DECODE_FAILURE, INCOMPATIBLE_VERSION, INVALID_ENV, INVALID_NETWORK_CONFIG,
};
use serde_json::Value;
use vpc_cni_e2e::{assert_nothing_allocated, Netns, Node, PodSpec};

/// The pod namespace holds nothing but `lo`.
fn assert_pod_untouched(ns: &Netns) {
    let links: Vec<String> = ns
        .ip_json(&["link"])
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect();
    assert_eq!(links, ["lo"], "nothing may be created in {}", ns.name());
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn garbage_stdin_is_code_6() {
    let node = Node::start();
    let pod = PodSpec::new("garbage");
    for stdin in [
        &b"garbage"[..],
        b"",
        b"{\"cniVersion\":",
        b"\xff\xfe",
        b"[1,2]",
    ] {
        let out = node.add_call(&pod).stdin(stdin.to_vec()).run();
        out.err_code(u64::from(DECODE_FAILURE));
    }
    assert_nothing_allocated(&node);
    assert_pod_untouched(&pod.netns);
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn missing_required_env_is_code_4() {
    let node = Node::start();
    let pod = PodSpec::new("noenv");
    for var in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS"] {
        let out = node.add_call(&pod).unset(var).run();
        out.err_code(u64::from(INVALID_ENV));
        assert!(out.msg().contains(var), "the message names {var}: {out}");
        // An empty value is as good as a missing one.
        node.add_call(&pod)
            .env(var, "")
            .run()
            .err_code(u64::from(INVALID_ENV));
    }
    assert_nothing_allocated(&node);
    assert_pod_untouched(&pod.netns);
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn unsupported_cni_version_is_code_1() {
    let node = Node::start();
    let pod = PodSpec::new("ancient");
    let out = node.add_call(&pod).config(&node.conf("0.2.0")).run();
    out.err_code(u64::from(INCOMPATIBLE_VERSION));
    assert!(out.msg().contains("0.2.0"), "{out}");
    assert_nothing_allocated(&node);
    assert_pod_untouched(&pod.netns);
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn invalid_network_config_is_code_7() {
    let node = Node::start();
    let pod = PodSpec::new("badconf");
    let mut big_mtu = node.conf("1.1.0");
    big_mtu["mtu"] = Value::from("big");
    let mut no_name = node.conf("1.1.0");
    no_name.as_object_mut().unwrap().remove("name");
    for (what, conf) in [("mtu", big_mtu), ("name", no_name)] {
        let out = node.add_call(&pod).config(&conf).run();
        out.err_code(u64::from(INVALID_NETWORK_CONFIG));
        assert!(out.msg().contains(what), "the message names {what}: {out}");
    }
    assert_nothing_allocated(&node);
    assert_pod_untouched(&pod.netns);
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn a_netns_path_that_does_not_exist_fails_and_allocates_nothing() {
    let node = Node::start();
    let missing = format!("/run/netns/vpccni-e2e-{}-missing", std::process::id());
    for path in [missing.as_str(), "/proc/999999999/ns/net"] {
        let out = node
            .plugin("ADD")
            .container_id("no-such-netns")
            .netns(path)
            .args("K8S_POD_NAMESPACE=default;K8S_POD_NAME=nowhere")
            .run();
        let e = out.err();
        assert!(
            out.msg().contains(path) || e["details"].as_str().unwrap_or("").contains(path),
            "the message names the path: {out}"
        );
        assert_nothing_allocated(&node);
    }
    // The same container can be added once its namespace exists: the
    // failed ADD left no half-done entry behind.
    let ns = Netns::new();
    node.plugin("ADD")
        .container_id("no-such-netns")
        .netns(ns.path_str())
        .args("K8S_POD_NAMESPACE=default;K8S_POD_NAME=nowhere")
        .run()
        .ok();
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn a_non_root_client_is_refused_even_when_the_socket_is_open_to_all() {
    let node = Node::start();
    // Open the socket up, as a misconfigured hostPath mount might: ipamd
    // must still refuse by the peer's credentials.
    std::fs::set_permissions(node.dir(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the node dir");
    std::fs::set_permissions(node.socket(), std::fs::Permissions::from_mode(0o666))
        .expect("chmod the socket");
    let pod = PodSpec::new("sneaky");
    let state_before = vpc_cni_e2e::state_text(&node);
    for command in ["ADD", "DEL", "CHECK"] {
        let out = node
            .plugin(command)
            .container_id(&pod.container_id)
            .netns(pod.netns.path_str())
            .args(&pod.cni_args())
            .run_as_uid(65534)
            .run();
        out.err();
        assert!(
            out.msg().contains("permission denied"),
            "{command} must be refused with `permission denied`: {out}"
        );
    }
    assert_nothing_allocated(&node);
    assert_pod_untouched(&pod.netns);
    assert_eq!(
        vpc_cni_e2e::state_text(&node),
        state_before,
        "a refused client must not change the checkpoint"
    );
}

/// The kernel refuses part of the wiring (the pod already has an `eth0`):
/// ADD fails with the dataplane code, gives its address back, leaves no
/// host veth, route or rule, and does not touch what was already there.
#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn a_refused_add_undoes_what_it_did() {
    let node = Node::start();
    let pod = PodSpec::new("taken");
    pod.netns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
    ]);
    let out = node.add_call(&pod).run();
    out.err_code(u64::from(cni_plugin::error::DATAPLANE));
    assert!(
        out.msg().contains("eth0"),
        "the message names the interface: {out}"
    );
    assert_nothing_allocated(&node);
    let links: Vec<String> = pod
        .netns
        .ip_json(&["link"])
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        links,
        ["lo", "other0", "eth0"],
        "the pod's own links are untouched"
    );
    // The same attachment succeeds on another interface name.
    node.add_call(&pod).ifname("eth1").run().ok();
    assert_eq!(vpc_cni_e2e::used(&node), 1);
}
