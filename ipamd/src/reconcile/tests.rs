use serde_json::json;

use super::*;
use crate::cloud::{EniId, Subnet};

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

fn record(cid: &str, addr: Ipv4Addr, link: u32, netns: &str) -> PodRecord {
    PodRecord {
        container_id: cid.into(),
        ifname: "eth0".into(),
        netns: netns.into(),
        namespace: Some("default".into()),
        name: Some(cid.into()),
        addr,
        eni_index: 0,
        host_ifname: format!("eni{link:011x}"),
        host_ifindex: link,
        mtu: 9001,
        created_unix: 1,
        result: Arc::new(json!({})),
    }
}

fn link(index: u32, alias: Option<String>) -> HostLink {
    HostLink {
        index,
        name: format!("eni{index:011x}"),
        mac: Some(MacAddr([2, 0, 0, 0, 0, index as u8])),
        alias,
    }
}

fn eni(index: u32, ips: &[Ipv4Addr]) -> Eni {
    Eni {
        id: EniId(format!("eni-{index}")),
        mac: MacAddr([2, 1, 0, 0, 0, index as u8]),
        device_index: index,
        subnet: Subnet {
            id: "subnet-1".into(),
            cidr: "10.0.0.0/20".parse().unwrap(),
        },
        primary_ip: ip(4),
        secondary_ips: ips.to_vec(),
        prefixes: Vec::new(),
    }
}

fn kernel(links: Vec<HostLink>, routes: &[(Ipv4Addr, u32)]) -> KernelView {
    KernelView {
        links: links.into_iter().map(|l| (l.index, l)).collect(),
        routes: routes.iter().copied().collect(),
    }
}

fn run(inputs: Inputs, live_netns: &[&str]) -> Plan {
    let live: Vec<String> = live_netns.iter().map(|s| s.to_string()).collect();
    plan(
        inputs,
        move |p| live.iter().any(|l| l == p),
        |_, _| Some(MacAddr([2, 9, 9, 9, 9, 9])),
    )
}

fn keys(records: &[PodRecord]) -> Vec<&str> {
    let mut v: Vec<&str> = records.iter().map(|r| r.container_id.as_str()).collect();
    v.sort_unstable();
    v
}

#[test]
fn live_pods_keep_their_addresses_and_gone_ones_are_released() {
    let inputs = Inputs {
        checkpoint: vec![
            record("veth-alive", ip(5), 10, "/gone"),
            record("netns-alive", ip(6), 11, "/run/netns/b"),
            record("gone", ip(7), 12, "/gone"),
        ],
        kernel: kernel(vec![link(10, None)], &[(ip(5), 10)]),
        enis: vec![eni(0, &[ip(5), ip(6), ip(7)])],
        default_mtu: 9001,
        ..Inputs::default()
    };
    let p = run(inputs, &["/run/netns/b"]);
    assert_eq!(keys(&p.keep), ["netns-alive", "veth-alive"]);
    assert_eq!(p.release.len(), 1);
    assert_eq!(p.release[0].record.container_id, "gone");
    assert!(p.release[0].unwire);
    assert!(p.reap.is_empty());
    assert_eq!(p.report.kept, 2);
    assert_eq!(p.report.released, 1);
    // Every address is reserved before the pool fills, released ones too.
    assert_eq!(p.held().len(), 3);
}

#[test]
fn a_record_whose_wiring_was_never_confirmed_needs_its_route() {
    // ADD journals before it wires: a crash in between leaves a record
    // with no index. Kept only if the wiring is complete (its address routed
    // through its veth, found by name), however alive the pod's namespace
    // is; a half-made veth is reaped.
    let pending = |cid: &str, addr: Ipv4Addr, link: u32, netns: &str| {
        let mut r = record(cid, addr, link, netns);
        r.host_ifindex = WIRING_PENDING;
        r
    };
    let inputs = Inputs {
        checkpoint: vec![
            pending("wired", ip(5), 10, "/run/netns/a"),
            pending("no-route", ip(6), 11, "/run/netns/b"),
            pending("no-veth", ip(7), 12, "/run/netns/c"),
        ],
        kernel: kernel(vec![link(10, None), link(11, None)], &[(ip(5), 10)]),
        enis: vec![eni(0, &[ip(5), ip(6), ip(7)])],
        default_mtu: 9001,
        ..Inputs::default()
    };
    let p = run(inputs, &["/run/netns/a", "/run/netns/b", "/run/netns/c"]);
    assert_eq!(keys(&p.keep), ["wired"]);
    assert_eq!(
        p.keep[0].host_ifindex, 10,
        "the index is read back from the kernel"
    );
    let mut released: Vec<&str> = p
        .release
        .iter()
        .map(|r| r.record.container_id.as_str())
        .collect();
    released.sort_unstable();
    assert_eq!(released, ["no-route", "no-veth"]);
    assert_eq!(p.reap.len(), 1, "the half-made veth goes");
    assert_eq!(p.reap[0].index, 11);
}

#[test]
fn a_lost_allocation_is_rebuilt_from_the_alias() {
    let alias = alias_for("cid-x", "eth0", "/run/netns/x", 1, 1500).unwrap();
    let inputs = Inputs {
        kernel: kernel(vec![link(20, Some(alias))], &[(ip(9), 20)]),
        enis: vec![eni(0, &[]), eni(1, &[ip(9)])],
        default_mtu: 9001,
        ..Inputs::default()
    };
    let p = run(inputs, &[]);
    assert_eq!(p.report.rebuilt, 1);
    let r = &p.keep[0];
    assert_eq!(
        (
            r.container_id.as_str(),
            r.addr,
            r.eni_index,
            r.mtu,
            r.host_ifindex
        ),
        ("cid-x", ip(9), 1, 1500, 20)
    );
    assert_eq!(r.result["ips"][0]["address"], "10.0.0.9/32");
    assert_eq!(r.result["interfaces"][1]["mac"], "02:09:09:09:09:09");
}

#[test]
fn a_routed_veth_without_owner_is_held_and_one_without_route_is_reaped() {
    let inputs = Inputs {
        kernel: kernel(vec![link(30, None), link(31, None)], &[(ip(11), 30)]),
        enis: vec![eni(0, &[ip(11)])],
        default_mtu: 9001,
        ..Inputs::default()
    };
    let p = run(inputs, &[]);
    assert_eq!(p.report.held_unknown, 1);
    assert!(p.keep[0].container_id.starts_with(UNKNOWN_OWNER_PREFIX));
    assert_eq!(p.keep[0].addr, ip(11));
    assert_eq!(p.reap.len(), 1);
    assert_eq!(p.reap[0].index, 31);
}

#[test]
fn one_address_has_one_holder_the_routed_one() {
    let inputs = Inputs {
        checkpoint: vec![
            record("stale", ip(5), 40, "/run/netns/a"),
            record("real", ip(5), 41, "/run/netns/b"),
        ],
        kernel: kernel(vec![link(40, None), link(41, None)], &[(ip(5), 41)]),
        enis: vec![eni(0, &[ip(5)])],
        default_mtu: 9001,
        ..Inputs::default()
    };
    let p = run(inputs, &["/run/netns/a", "/run/netns/b"]);
    assert_eq!(keys(&p.keep), ["real"]);
    assert_eq!(p.report.duplicates, 1);
    assert!(!p.release[0].unwire, "the route and rules are the winner's");
    assert!(p.reap.is_empty(), "the loser's veth is left to the runtime");
}

#[test]
fn the_cloud_corrects_the_eni_and_reports_unknown_addresses() {
    let mut r = record("a", ip(5), 50, "/run/netns/a");
    r.eni_index = 2;
    let inputs = Inputs {
        checkpoint: vec![r, record("b", ip(6), 51, "/run/netns/b")],
        kernel: kernel(vec![], &[]),
        enis: vec![eni(0, &[]), eni(1, &[ip(5)])],
        default_mtu: 9001,
        ..Inputs::default()
    };
    let p = run(inputs, &["/run/netns/a", "/run/netns/b"]);
    let a = p.keep.iter().find(|r| r.container_id == "a").unwrap();
    assert_eq!(a.eni_index, 1);
    assert_eq!(
        p.report.not_in_cloud, 1,
        "b's address is on no ENI but its pod lives"
    );
    assert_eq!(p.keep.len(), 2);
}

#[test]
fn addresses_of_a_delegated_prefix_belong_to_its_eni() {
    let mut with_prefix = eni(1, &[]);
    with_prefix.prefixes = vec!["10.0.0.32/28".parse().unwrap()];
    let inputs = Inputs {
        checkpoint: vec![record("p", Ipv4Addr::new(10, 0, 0, 40), 70, "/run/netns/p")],
        kernel: kernel(vec![], &[]),
        enis: vec![eni(0, &[]), with_prefix],
        default_mtu: 9001,
        ..Inputs::default()
    };
    let p = run(inputs, &["/run/netns/p"]);
    assert_eq!(p.keep[0].eni_index, 1);
    assert_eq!(p.report.not_in_cloud, 0);
}

#[test]
fn aws_node_allocations_are_matched_by_host_veth_name() {
    let name = naming::host_veth_name(Some("default"), Some("web-0"), "c1", "eth0");
    let host = HostLink {
        index: 60,
        name: name.clone(),
        mac: None,
        alias: None,
    };
    let alloc = |cid: &str, pod: &str, addr| AwsNodeAllocation {
        container_id: cid.into(),
        ifname: "eth0".into(),
        addr,
        namespace: Some("default".into()),
        name: Some(pod.into()),
        created_unix: 7,
    };
    let inputs = Inputs {
        migrated: vec![alloc("c1", "web-0", ip(12)), alloc("c2", "web-1", ip(13))],
        kernel: kernel(vec![host], &[(ip(12), 60)]),
        enis: vec![eni(0, &[ip(12), ip(13)])],
        default_mtu: 9001,
        ..Inputs::default()
    };
    let p = run(inputs, &[]);
    assert_eq!(p.report.migrated, 1);
    assert_eq!(p.keep[0].container_id, "c1");
    assert_eq!(p.keep[0].host_ifname, name);
    assert_eq!(p.keep[0].host_ifindex, 60);
    assert_eq!(p.keep[0].name.as_deref(), Some("web-0"));
    assert_eq!(p.release.len(), 1, "web-1 has no veth: gone");
    assert_eq!(p.report.held_unknown, 0, "the routed veth was claimed");
}
