use std::net::Ipv4Addr;

use super::*;
use crate::identity::add_result;

#[test]
fn valid_attachments_are_parsed() {
    let conf = json!({"cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}]});
    let set = valid_attachments(&conf).unwrap();
    assert!(set.contains(&AttachmentKey::new("a", "eth0")));
    let bad = json!({"cni.dev/valid-attachments": [{"containerID": "a"}]});
    assert_eq!(
        valid_attachments(&bad).unwrap_err().code,
        code::INVALID_NETWORK_CONFIG
    );
}

#[test]
fn mtu_from_config_is_validated() {
    assert_eq!(conf_mtu(&json!({})).unwrap(), None);
    assert_eq!(conf_mtu(&json!({"mtu": 1500})).unwrap(), Some(1500));
    assert_eq!(
        conf_mtu(&json!({"mtu": "big"})).unwrap_err().code,
        code::INVALID_NETWORK_CONFIG
    );
    assert_eq!(
        conf_mtu(&json!({"mtu": 100})).unwrap_err().code,
        code::INVALID_NETWORK_CONFIG
    );
}

#[test]
fn result_has_the_spec_shape() {
    let pod = PodNet {
        netns: "/var/run/netns/p".into(),
        ifname: "eth0".into(),
        host_ifname: "eni0123456789a".into(),
        addr: Ipv4Addr::new(10, 0, 0, 7),
        mtu: 9001,
        eni_table: None,
        alias: None,
    };
    let macs = VethMacs {
        host: crate::cloud::MacAddr([2, 0, 0, 0, 0, 1]),
        pod: crate::cloud::MacAddr([2, 0, 0, 0, 0, 2]),
    };
    let r = add_result(&pod, macs);
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["interfaces"][0]["name"], "eni0123456789a");
    assert_eq!(r["interfaces"][1]["sandbox"], "/var/run/netns/p");
    assert_eq!(r["interfaces"][1]["mac"], "02:00:00:00:00:02");
    assert_eq!(r["ips"][0]["address"], "10.0.0.7/32");
    assert_eq!(r["ips"][0]["interface"], 1);
    assert_eq!(r["routes"][0]["gw"], "169.254.1.1");
}

// Rollback: every step of ADD, DEL and GC made to fail against the fakes of
// `testkit`, and what each failure must leave behind.

mod rollback {
    use cni_plugin::error as code;

    use super::super::testkit::{eventually, host_veth, key, Harness, JournalOp, REAP_DELAY};
    use crate::dataplane::fake::{Call, Step};
    use crate::policy::engine::Mode as PolicyMode;

    /// What a failed ADD of `id` must leave: nothing. The pod table forgot
    /// it, its address is back in the pool, the kernel holds nothing of it,
    /// the checkpoint has no record of it, the policy hook does not know it.
    async fn assert_add_undone(h: &Harness, id: &str, used_before: usize) {
        assert!(!h.knows(id), "the pod table still has {id}");
        assert_eq!(h.holds(id), None, "{id} still holds an address");
        assert_eq!(h.used(), used_before, "addresses in use");
        if let Some(addr) = h.wired_addr(id) {
            let left = h.leftovers(id, addr);
            assert!(left.is_empty(), "left in the kernel: {left:?}");
        }
        assert!(!h.recorded(id).await, "the checkpoint still has {id}");
        if let Some(p) = &h.policy {
            assert!(
                !p.pods().contains(&host_veth(id)),
                "the policy hook still has {id}"
            );
        }
    }

    /// The same key ADDs again, gets an address and is wired and recorded.
    async fn assert_adds_again(h: &Harness, id: &str) {
        let used = h.used();
        let result = h.add(id).await.expect("ADD after the failure");
        let addr = h.holds(id).expect("an address");
        assert_eq!(result["ips"][0]["address"], format!("{addr}/32"));
        assert_eq!(h.used(), used + 1);
        h.check(id).await.expect("wired as ADD left it");
        assert!(h.recorded(id).await);
    }

    /// ADD fails at `step` of the dataplane: the dataplane undid its part,
    /// the service the rest.
    async fn add_fails_at(h: &Harness, step: Step, want: u32) {
        let used = h.used();
        h.dp.fail_at(step);
        let err = h.add("p").await.unwrap_err();
        assert_eq!(err.code, want, "{err:?}");
        assert!(h.wired_addr("p").is_some(), "add_pod was called");
        assert_add_undone(h, "p", used).await;
        assert!(h.dp.is_empty(), "{:?}", h.dp.veths());
        assert_adds_again(h, "p").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn add_wires_and_records_and_del_unwires_and_reaps() {
        let h = Harness::builder().secondary_eni().build().await;
        let used = h.used();
        h.add("p").await.unwrap();
        let addr = h.holds("p").unwrap();
        let left = h.leftovers("p", addr);
        assert_eq!(left.veths.len(), 1);
        assert_eq!(left.routes, vec![left.veths[0].index]);
        assert_eq!(left.rules.len(), 2, "to the pod, and from it to its ENI");
        let rec = h.checkpoint().await;
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].host_ifindex, left.veths[0].index, "the lazy index");
        h.del("p").await.unwrap();
        assert_eq!(h.used(), used);
        let left = h.leftovers("p", addr);
        assert!(left.routes.is_empty() && left.rules.is_empty(), "{left:?}");
        assert_eq!(left.veths.len(), 1, "the veth is left to the reaper");
        eventually("the reaper deleted the veth", || h.dp.is_empty()).await;
        assert!(!h.recorded("p").await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn add_without_a_free_address_fails_and_takes_nothing() {
        let h = Harness::new().await;
        let mut i = 0;
        while h.alloc.allocate(&key(&format!("other-{i}"))).is_ok() {
            i += 1;
        }
        let used = h.used();
        let err = h.add("p").await.unwrap_err();
        assert_eq!(err.code, code::POOL_EXHAUSTED, "{err:?}");
        assert!(h.dp.calls().is_empty(), "never reached the dataplane");
        assert_add_undone(&h, "p", used).await;
        h.alloc.release(&key("other-0"));
        assert_adds_again(&h, "p").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn add_whose_netns_is_gone_is_undone() {
        let h = Harness::new().await;
        add_fails_at(&h, Step::Netns, code::INVALID_ENV).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn add_failing_to_create_the_veth_is_undone() {
        let h = Harness::new().await;
        add_fails_at(&h, Step::Veth, code::DATAPLANE).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn add_failing_on_the_pod_side_is_undone() {
        let h = Harness::new().await;
        add_fails_at(&h, Step::PodSide, code::DATAPLANE).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn add_failing_on_the_host_side_is_undone() {
        let h = Harness::builder().secondary_eni().build().await;
        add_fails_at(&h, Step::HostSide, code::DATAPLANE).await;
        let addr = h.holds("p").unwrap();
        assert_eq!(
            h.leftovers("p", addr).rules.len(),
            2,
            "the retry has both rules"
        );
    }

    /// The dataplane's own clean-up is best effort: when it fails too, the
    /// service still gives the address back and forgets the pod; the stale
    /// veth is replaced by the next ADD of the pod (its route goes with it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn add_whose_dataplane_cleanup_fails_still_frees_the_address() {
        let h = Harness::new().await;
        let used = h.used();
        h.dp.fail_at(Step::HostSide);
        h.dp.fail_undo(true);
        let err = h.add("p").await.unwrap_err();
        assert_eq!(err.code, code::DATAPLANE);
        h.dp.heal();
        let addr = h.wired_addr("p").unwrap();
        assert!(!h.knows("p"));
        assert_eq!(h.holds("p"), None);
        assert_eq!(h.used(), used);
        assert!(!h.recorded("p").await);
        let left = h.leftovers("p", addr);
        assert_eq!((left.veths.len(), left.routes.len()), (1, 1), "{left:?}");
        let stale = left.veths[0].index;
        assert_adds_again(&h, "p").await;
        let veths = h.dp.veths();
        assert_eq!(veths.len(), 1, "the stale veth was replaced: {veths:?}");
        assert_ne!(veths[0].index, stale);
        let routes = h.dp.routes();
        assert!(
            routes.values().all(|oif| *oif == veths[0].index),
            "no route through the stale veth: {routes:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn add_whose_strict_policy_fails_is_undone_and_the_hook_forgets_it() {
        let h = Harness::builder().policy(PolicyMode::Strict).build().await;
        let used = h.used();
        h.policy.as_ref().unwrap().fail_next();
        let err = h.add("p").await.unwrap_err();
        assert_eq!(err.code, code::DATAPLANE, "{err:?}");
        assert!(h.dp.calls().is_empty(), "the veth is made after the policy");
        assert_add_undone(&h, "p", used).await;
        assert_adds_again(&h, "p").await;
        assert!(h.policy.as_ref().unwrap().pods().contains(&host_veth("p")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn add_whose_standard_policy_fails_goes_on() {
        let h = Harness::builder()
            .policy(PolicyMode::Standard)
            .build()
            .await;
        h.policy.as_ref().unwrap().fail_next();
        h.add("p").await.expect("standard mode only logs");
        h.check("p").await.unwrap();
        assert!(h.recorded("p").await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn add_failing_after_the_policy_hook_makes_it_forget_the_pod() {
        let h = Harness::builder()
            .policy(PolicyMode::Strict)
            .secondary_eni()
            .build()
            .await;
        add_fails_at(&h, Step::HostSide, code::DATAPLANE).await;
    }

    /// Wired, but the journal could not make the allocation durable: ADD
    /// fails, and everything — the wiring included — is undone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn add_whose_record_is_not_durable_is_unwired_and_undone() {
        let h = Harness::builder()
            .policy(PolicyMode::Strict)
            .secondary_eni()
            .build()
            .await;
        let used = h.used();
        h.journal.fail_next(JournalOp::Put);
        let err = h.add("p").await.unwrap_err();
        assert_eq!(err.code, code::INTERNAL, "{err:?}");
        assert_add_undone(&h, "p", used).await;
        assert!(
            h.dp.is_empty(),
            "the veth is deleted at once: {:?}",
            h.dp.veths()
        );
        assert_adds_again(&h, "p").await;
    }

    /// Not durable, and removing the host side fails too: the pod stays
    /// wired and known (its address is not handed to anyone else while the
    /// kernel may still route it to this pod); a DEL removes it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn add_not_durable_whose_unwiring_fails_stays_for_del() {
        let h = Harness::new().await;
        let used = h.used();
        h.journal.fail_next(JournalOp::Put);
        h.dp.fail_at(Step::DelPod);
        let err = h.add("p").await.unwrap_err();
        assert_eq!(err.code, code::INTERNAL, "{err:?}");
        let addr = h.holds("p").expect("still held");
        assert_eq!(h.used(), used + 1);
        assert!(h.recorded("p").await, "recorded again");
        assert_eq!(h.leftovers("p", addr).routes.len(), 1);
        h.del("p").await.unwrap();
        assert_eq!(h.used(), used);
        eventually("nothing left", || h.leftovers("p", addr).is_empty()).await;
        assert!(!h.recorded("p").await);
        assert_adds_again(&h, "p").await;
    }

    /// Not durable, unrouted, but the veth will not go: the ADD is undone
    /// all the same and the veth left to the reaper. (Kept, a repeated ADD
    /// would have answered with a pod that has no host route.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn add_not_durable_whose_veth_will_not_go_is_undone_and_reaped_later() {
        let h = Harness::new().await;
        let used = h.used();
        h.journal.fail_next(JournalOp::Put);
        h.dp.fail_at(Step::ReapLink);
        let err = h.add("p").await.unwrap_err();
        assert_eq!(err.code, code::INTERNAL, "{err:?}");
        let addr = h.wired_addr("p").unwrap();
        let left = h.leftovers("p", addr);
        assert!(left.routes.is_empty() && left.rules.is_empty(), "{left:?}");
        assert_eq!(left.veths.len(), 1, "the first reap failed");
        eventually("the reaper deleted the veth", || h.dp.is_empty()).await;
        assert_add_undone(&h, "p", used).await;
        assert_adds_again(&h, "p").await;
    }

    /// DEL whose unwiring fails: the pod stays (its address is not handed
    /// out while its route may still point at it), recorded again; a retry
    /// finishes the job.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn del_whose_unwiring_fails_keeps_the_pod_and_a_retry_cleans_up() {
        let h = Harness::builder().secondary_eni().build().await;
        let used = h.used();
        h.add("p").await.unwrap();
        let addr = h.holds("p").unwrap();
        h.dp.fail_at(Step::DelPod);
        let err = h.del("p").await.unwrap_err();
        assert_eq!(err.code, code::DATAPLANE, "{err:?}");
        assert!(h.knows("p"));
        assert_eq!(h.holds("p"), Some(addr));
        assert_eq!(h.used(), used + 1);
        assert!(h.recorded("p").await, "the journaled release was undone");
        assert_eq!(h.leftovers("p", addr).routes.len(), 1, "half-unwired");
        h.del("p").await.expect("the retry");
        assert_eq!(h.holds("p"), None);
        assert_eq!(h.used(), used);
        assert!(!h.recorded("p").await);
        eventually("nothing left", || h.dp.is_empty()).await;
        assert_adds_again(&h, "p").await;
    }

    /// DEL unwired the pod but the release is not durable: DEL fails, yet
    /// the pod is gone (a retry has nothing to do) and its veth is reaped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn del_whose_release_is_not_durable_still_unwires_and_reaps() {
        let h = Harness::new().await;
        let used = h.used();
        h.add("p").await.unwrap();
        let addr = h.holds("p").unwrap();
        h.journal.fail_next(JournalOp::Del);
        let err = h.del("p").await.unwrap_err();
        assert_eq!(err.code, code::INTERNAL, "{err:?}");
        assert!(!h.knows("p"));
        assert_eq!(h.used(), used);
        let left = h.leftovers("p", addr);
        assert!(left.routes.is_empty() && left.rules.is_empty(), "{left:?}");
        eventually("the reaper deleted the veth", || h.dp.is_empty()).await;
        let calls = h.dp.calls().len();
        h.del("p").await.expect("a retried DEL");
        assert_eq!(h.dp.calls().len(), calls, "nothing to do");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn del_of_an_unknown_pod_succeeds_and_touches_nothing() {
        let h = Harness::new().await;
        h.del("nobody").await.unwrap();
        assert!(h.dp.calls().is_empty());
    }

    /// The runtime destroys the namespace after DEL: the reaper then finds
    /// nothing to delete, and deletes nothing else.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn del_then_namespace_teardown_leaves_the_reaper_nothing() {
        let h = Harness::new().await;
        h.add("p").await.unwrap();
        h.add("q").await.unwrap();
        h.del("p").await.unwrap();
        h.dp.destroy_netns(&super::super::testkit::netns("p"));
        tokio::time::sleep(REAP_DELAY * 5).await;
        eventually("the reaper ran", || {
            h.dp.calls()
                .iter()
                .any(|c| matches!(c, Call::ReapLink { .. }))
        })
        .await;
        assert_eq!(h.dp.veths().len(), 1, "q's veth is untouched");
        h.check("q").await.unwrap();
    }

    /// GC whose unwiring fails at either step keeps the attachment (and
    /// reports it); the next GC releases it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gc_whose_unwiring_fails_keeps_the_pod_and_the_next_gc_releases_it() {
        for step in [Step::DelPod, Step::ReapLink] {
            let h = Harness::new().await;
            let used = h.used();
            h.add("stale").await.unwrap();
            h.add("live").await.unwrap();
            let addr = h.holds("stale").unwrap();
            h.dp.fail_at(step);
            let err = h.gc(&["live"]).await.unwrap_err();
            assert_eq!(err.code, code::DATAPLANE, "{step:?}: {err:?}");
            assert_eq!(h.holds("stale"), Some(addr), "{step:?}");
            assert!(h.recorded("stale").await, "{step:?}");
            h.gc(&["live"]).await.expect("the next GC");
            assert_eq!(h.holds("stale"), None);
            assert_eq!(h.used(), used + 1, "live keeps its address");
            assert!(h.leftovers("stale", addr).is_empty(), "{step:?}");
            assert!(!h.recorded("stale").await);
            h.check("live").await.unwrap();
        }
    }

    /// GC unwired the attachment but its release is not durable: reported,
    /// and the attachment is gone all the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gc_whose_release_is_not_durable_reports_it() {
        let h = Harness::new().await;
        let used = h.used();
        h.add("stale").await.unwrap();
        let addr = h.holds("stale").unwrap();
        h.journal.fail_next(JournalOp::Del);
        let err = h.gc(&[]).await.unwrap_err();
        assert_eq!(err.code, code::DATAPLANE, "{err:?}");
        assert!(!h.knows("stale"));
        assert_eq!(h.used(), used);
        assert!(h.leftovers("stale", addr).is_empty());
    }
}
