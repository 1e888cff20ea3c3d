//! The pool against the real netlink dataplane, in a network namespace the
//! test makes for one thread (gone when the thread ends).

use std::sync::Arc;
use std::time::Duration;

use ipamd::cloud::sim::{NoFabric, SimCloud, SimConfig};
use ipamd::cloud::Cloud;
use ipamd::config::PoolSettings;
use ipamd::dataplane::NetlinkDataplane;
use ipamd::pool::Pool;

/// Runs `f` on a thread of its own inside a fresh network namespace.
fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare a network namespace");
        f()
    })
    .join()
    .expect("test thread")
}

/// A secondary ENI whose link is not there when it is attached (on EC2 the
/// NIC can show up late) is kept, not attached again, and its addresses
/// join the pool once its link appears.
#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn an_eni_whose_link_comes_late_joins_the_pool_when_it_appears() {
    in_fresh_netns(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // No fabric: attached ENIs get no link until the test makes one.
            let config = SimConfig {
                instance_type: "t3.medium".into(),
                ..SimConfig::default()
            };
            let cloud: Arc<dyn Cloud> =
                Arc::new(SimCloud::new(config, Arc::new(NoFabric)).await.unwrap());
            let settings = PoolSettings {
                warm_eni_target: 1,
                warm_ip_target: None,
                minimum_ip_target: Some(8),
                max_eni: None,
                cooldown: Duration::from_secs(30),
                ..PoolSettings::default()
            };
            let dp = Arc::new(NetlinkDataplane::new().unwrap());
            let pool = Pool::start(cloud.clone(), dp, settings, 9001, &[])
                .await
                .unwrap();
            pool.fill().await;
            // The primary ENI (5 addresses) filled; the second ENI was
            // attached but has no link: recorded, blocked, no addresses.
            assert_eq!(pool.enis().len(), 2, "{:?}", pool.enis());
            assert_eq!(pool.alloc().usage().total, 5);
            let reason = pool.blocked_reason().expect("blocked on the missing link");
            assert!(reason.contains("not found"), "{reason}");
            // Filling again does not attach another ENI in its place.
            pool.fill().await;
            assert_eq!(pool.enis().len(), 2);

            // The link shows up (as a veth carrying the ENI's MAC).
            let eni = pool
                .enis()
                .into_iter()
                .find(|e| e.device_index == 1)
                .unwrap();
            let status = std::process::Command::new("ip")
                .args([
                    "link",
                    "add",
                    "eth1",
                    "address",
                    &eni.mac.to_string(),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "vpc1",
                ])
                .status()
                .unwrap();
            assert!(status.success());
            pool.fill().await;
            assert_eq!(pool.blocked_reason(), None);
            assert!(
                pool.alloc().usage().total >= 8,
                "{:?}",
                pool.alloc().usage()
            );
            assert_eq!(pool.enis().len(), 2);
        });
    });
}
