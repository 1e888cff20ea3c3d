//! ipamd restarts (an upgrade, an OOM kill, a crash) while pods run: the
//! pods it wired keep their addresses, no new pod gets one of them, and
//! DEL, CHECK and a repeated ADD of the old pods work after the restart.

use std::collections::HashSet;

use vpc_cni_e2e::{node_pod_routes, result_ip, status_json, used, Node, PodSpec};

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn pods_keep_their_addresses_across_a_crash() {
    let mut node = Node::start();
    let old: Vec<PodSpec> = (0..3).map(|i| PodSpec::new(&format!("old-{i}"))).collect();
    let old_ips: Vec<_> = old
        .iter()
        .map(|p| result_ip(node.add_call(p).run().ok()))
        .collect();
    // ADD answers only once its allocation is durable: no waiting here.
    let state = vpc_cni_e2e::state_text(&node);
    for p in &old {
        assert!(
            state.contains(&p.container_id),
            "{} not in the checkpoint after its ADD answered:\n{state}",
            p.container_id
        );
    }

    node.crash_and_restart();

    assert_eq!(used(&node), 3, "{}", status_json(&node));
    // New pods never get an old pod's address.
    let new: Vec<PodSpec> = (0..6).map(|i| PodSpec::new(&format!("new-{i}"))).collect();
    let new_ips: HashSet<_> = new
        .iter()
        .map(|p| result_ip(node.add_call(p).run().ok()))
        .collect();
    assert_eq!(new_ips.len(), 6);
    for ip in &old_ips {
        assert!(
            !new_ips.contains(ip),
            "{ip} of a running pod was handed out again"
        );
    }
    // A repeated ADD of an old pod returns its address; CHECK passes.
    assert_eq!(result_ip(node.add_call(&old[0]).run().ok()), old_ips[0]);
    node.plugin("CHECK")
        .container_id(&old[0].container_id)
        .netns(old[0].netns.path_str())
        .args(&old[0].cni_args())
        .run()
        .ok();
    // DEL of an old pod removes its route and frees its address.
    node.del_call(&old[1]).run().ok();
    assert_eq!(used(&node), 8);
    let routes = node_pod_routes(&node);
    assert!(
        !routes.iter().any(|(dst, _)| dst == &old_ips[1].to_string()),
        "route of the deleted pod left behind: {routes:?}"
    );
}
