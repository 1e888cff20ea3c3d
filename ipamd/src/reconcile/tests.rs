use serde_json::json;

use super::*;
use crate::cloud::{EniId, Subnet};
use crate::identity::alias_for;

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

// `prepare` and `apply` against the fake dataplane: what a crash left in
// the kernel, read back and repaired.

mod with_dataplane {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::dataplane::fake::{Call, FakeDataplane, Rule, Step};
    use crate::dataplane::{FROM_POD_RULE_PRIORITY, TO_POD_RULE_PRIORITY};
    use crate::pod::testkit::TempDir;
    use crate::store::{Durability, Store};
    use crate::timing::Laps;

    fn pending(cid: &str, addr: Ipv4Addr, link: u32) -> PodRecord {
        let mut r = record(cid, addr, link, &format!("/nonexistent/{cid}"));
        r.host_ifindex = WIRING_PENDING;
        r.eni_index = 1;
        r
    }

    fn pod_net(r: &PodRecord) -> PodNet {
        PodNet {
            netns: r.netns.clone(),
            ifname: r.ifname.clone(),
            host_ifname: r.host_ifname.clone(),
            addr: r.addr,
            mtu: r.mtu,
            eni_table: eni_table(r.eni_index),
            alias: alias_for(&r.container_id, &r.ifname, &r.netns, r.eni_index, r.mtu),
        }
    }

    /// The node after a crash: `half`'s ADD had made its veth (pod side
    /// included) but not its host side; `wired`'s ADD had wired everything
    /// but not yet recorded the index; `gone`'s pod went while ipamd was
    /// down, its veth with its namespace, leaving its rules.
    struct Crashed {
        dir: TempDir,
        dp: Arc<FakeDataplane>,
        records: Vec<PodRecord>,
    }

    fn crashed() -> Crashed {
        let dp = Arc::new(FakeDataplane::new());
        let half = pending("half", ip(5), 10);
        dp.insert_veth(&pod_net(&half), VethMacs::random(), true);
        let wired = pending("wired", ip(6), 11);
        dp.add_pod(&pod_net(&wired), VethMacs::random(), &mut Laps::default())
            .unwrap();
        let mut gone = record("gone", ip(7), 77, "/nonexistent/gone");
        gone.eni_index = 1;
        for (from, table, priority) in [
            (
                false,
                crate::dataplane::msg::MAIN_TABLE,
                TO_POD_RULE_PRIORITY,
            ),
            (true, 2, FROM_POD_RULE_PRIORITY),
        ] {
            dp.insert_rule(Rule {
                from,
                addr: gone.addr,
                table,
                priority,
            });
        }
        Crashed {
            dir: TempDir::new("reconcile"),
            dp,
            records: vec![half, wired, gone],
        }
    }

    /// Restarts on `c`: the checkpoint as the crash left it, reconcile's
    /// plan, the allocator with the held addresses, then `apply`. Returns
    /// the plan, the allocator and how many steps failed.
    async fn restart(c: &Crashed) -> (Plan, Arc<Allocator>, usize) {
        let state = c.dir.path().join("state");
        let before = Store::<PodRecord>::open(&state, Durability::Sync).unwrap();
        before.start(c.records.clone()).unwrap();
        let store = Store::<PodRecord>::open(&state, Durability::Sync).unwrap();
        let plan = prepare(
            &store,
            &c.dp,
            vec![eni(1, &[ip(5), ip(6), ip(7)])],
            Path::new("/nonexistent/aws-node.json"),
            9001,
        )
        .await
        .unwrap();
        let alloc = Arc::new(Allocator::new(16, Duration::ZERO));
        for (key, addr) in plan.held() {
            alloc.reserve(&key, addr).unwrap();
        }
        alloc.grow(1, &[ip(5), ip(6), ip(7)]).unwrap();
        let failed = apply(&plan, &c.dp, &alloc, Duration::ZERO);
        (plan, alloc, failed)
    }

    fn held(alloc: &Allocator, cid: &str) -> Option<Ipv4Addr> {
        alloc
            .lookup(&AttachmentKey::new(cid, "eth0"))
            .map(|l| l.addr)
    }

    #[tokio::test]
    async fn a_crash_mid_add_is_undone_and_a_finished_one_kept() {
        let c = crashed();
        let wired_veth = c.dp.veth_named(&c.records[1].host_ifname).unwrap();
        let (plan, alloc, failed) = restart(&c).await;
        assert_eq!(failed, 0);
        assert_eq!(keys(&plan.keep), ["wired"]);
        assert_eq!(plan.keep[0].host_ifindex, wired_veth.index);
        assert_eq!(plan.report.released, 2);
        assert_eq!(plan.report.reaped, 1);
        // The half-made ADD: its veth deleted, its address free.
        let half = &c.records[0];
        let left = c.dp.leftovers(half.addr, &half.host_ifname);
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(held(&alloc, "half"), None);
        assert!(c.dp.calls().contains(&Call::DelPod {
            addr: half.addr,
            eni_table: Some(2),
            host_ifindex: WIRING_PENDING,
        }));
        // The gone pod: its rules removed, its address free.
        assert!(c.dp.leftovers(ip(7), "gone").is_empty());
        assert_eq!(held(&alloc, "gone"), None);
        // The finished ADD: untouched and still held.
        let left = c.dp.leftovers(ip(6), &c.records[1].host_ifname);
        assert_eq!(left.veths, vec![wired_veth]);
        assert_eq!(left.rules.len(), 2);
        assert_eq!(held(&alloc, "wired"), Some(ip(6)));
        assert_eq!(alloc.usage().used, 1);
    }

    /// Failures while repairing are counted, never fatal, and addresses
    /// are released all the same (a leftover route is better than a node
    /// that does not start; the next restart tries again).
    #[tokio::test]
    async fn repair_failures_are_counted_and_the_addresses_still_released() {
        let c = crashed();
        c.dp.fail_at(Step::DelPod);
        c.dp.fail_at(Step::ReapLink);
        let (_, alloc, failed) = restart(&c).await;
        assert_eq!(failed, 2);
        assert_eq!(held(&alloc, "half"), None);
        assert_eq!(held(&alloc, "gone"), None);
        assert_eq!(alloc.usage().used, 1);
        assert!(
            c.dp.veth_named(&c.records[0].host_ifname).is_some(),
            "the half-made veth is still there"
        );
    }

    #[tokio::test]
    async fn an_unreadable_kernel_fails_reconcile() {
        let c = crashed();
        c.dp.fail_at(Step::Dump);
        let store =
            Store::<PodRecord>::open(&c.dir.path().join("state"), Durability::Sync).unwrap();
        let err = prepare(
            &store,
            &c.dp,
            Vec::new(),
            Path::new("/nonexistent/aws-node.json"),
            9001,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ReconcileError::Kernel(_)), "{err}");
    }
}
