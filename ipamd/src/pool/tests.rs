//! The pool end to end against the simulator (no kernel dataplane): prefix
//! mode, fallback, hysteresis, leak collection, and the EC2 calls it makes.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::alloc::AttachmentKey;
use crate::cloud::sim::NoFabric;
use crate::cloud::sim::{Action, SimCloud, SimConfig, SimVpc};

async fn node(instance_type: &str, subnet: &str) -> Arc<SimCloud> {
    let config = SimConfig {
        instance_type: instance_type.into(),
        subnet_cidr: subnet.parse().unwrap(),
        ..SimConfig::default()
    };
    Arc::new(SimCloud::new(config, Arc::new(NoFabric)).await.unwrap())
}

async fn pool(cloud: &Arc<SimCloud>, settings: PoolSettings) -> Arc<Pool> {
    Pool::start(cloud.clone(), Arc::new(NoLinks), settings, 9001, &[])
        .await
        .unwrap()
}

fn pd() -> PoolSettings {
    PoolSettings {
        prefix_delegation: true,
        cooldown: Duration::ZERO,
        release_delay: Duration::from_secs(60),
        ..PoolSettings::default()
    }
}

fn mutating_calls(vpc: &SimVpc) -> u64 {
    let s = vpc.stats();
    [
        Action::Assign,
        Action::Unassign,
        Action::Create,
        Action::Attach,
        Action::Detach,
        Action::Delete,
    ]
    .iter()
    .map(|a| s.of(*a).calls)
    .sum()
}

/// `n` ADDs, each growing the pool first if it is empty (as pod.rs does).
async fn add(pool: &Pool, n: usize, tag: &str) -> Vec<AttachmentKey> {
    let mut keys = Vec::new();
    for i in 0..n {
        let key = AttachmentKey::new(format!("{tag}{i}"), "eth0");
        if pool.alloc().allocate(&key).is_err() {
            pool.fill().await;
            pool.alloc().allocate(&key).expect("the pool grew");
        }
        pool.nudge();
        keys.push(key);
    }
    keys
}

#[tokio::test(start_paused = true)]
async fn prefix_mode_cold_start_is_one_assign() {
    let cloud = node("m5.large", "10.0.0.0/20").await;
    let pool = pool(&cloud, pd()).await;
    pool.fill().await;
    let enis = pool.enis();
    assert_eq!(enis[0].prefixes.len(), 1);
    assert!(enis[0].secondary_ips.is_empty());
    assert_eq!(pool.alloc().usage().total, 16);
    let s = cloud.vpc().stats();
    assert_eq!(s.of(Action::Assign).calls, 1);
    assert_eq!(mutating_calls(cloud.vpc()), 1);
}

#[tokio::test(start_paused = true)]
async fn waiting_adds_are_served_by_one_right_sized_call() {
    let cloud = node("m5.large", "10.0.0.0/20").await;
    let pool = pool(&cloud, pd()).await;
    pool.fill().await;
    add(&pool, 16, "a").await;
    // 14 more ADDs find the pool empty and wait.
    let waiters: Vec<_> = (0..14)
        .map(|_| {
            let p = pool.clone();
            tokio::spawn(async move { p.wait_for_growth(Duration::from_secs(10)).await })
        })
        .collect();
    tokio::task::yield_now().await;
    pool.fill().await;
    for w in waiters {
        w.await.unwrap();
    }
    // 16 used + 14 waiting + 16 warm = 46 → two prefixes more, in one call.
    assert_eq!(pool.enis()[0].prefixes.len(), 3);
    assert_eq!(cloud.vpc().stats().of(Action::Assign).calls, 2);
}

#[tokio::test(start_paused = true)]
async fn fragmented_subnet_falls_back_to_ips_then_returns_to_prefixes() {
    let cloud = node("m5.large", "10.0.0.0/24").await;
    let vpc = cloud.vpc().clone();
    vpc.fragment();
    let pool = pool(&cloud, pd()).await;
    pool.fill().await;
    assert!(pool.in_prefix_fallback());
    assert_eq!(pool.blocked_reason(), None, "fallback is not a failure");
    let enis = pool.enis();
    assert!(enis.iter().all(|e| e.prefixes.is_empty()));
    assert_eq!(pool.alloc().usage().total, 16, "the same target, in /32s");
    let s = vpc.stats().of(Action::Assign);
    assert_eq!(s.calls, 3, "one refused prefix call, two /32 calls");

    // Blocks free up; after the retry period growth uses prefixes again.
    for o in (0u8..=240).step_by(16) {
        vpc.vacate(std::net::Ipv4Addr::new(10, 0, 0, o + 7));
    }
    tokio::time::advance(PREFIX_RETRY).await;
    assert!(!pool.in_prefix_fallback());
    add(&pool, 9, "p").await;
    pool.fill().await;
    let has_prefix = pool.enis().iter().any(|e| !e.prefixes.is_empty());
    assert!(has_prefix, "{:?}", pool.enis());
}

#[tokio::test(start_paused = true)]
async fn churn_inside_the_warm_pool_costs_no_ec2_call() {
    let cloud = node("m5.large", "10.0.0.0/20").await;
    let pool = pool(&cloud, pd()).await;
    pool.fill().await;
    // The first round sizes the pool for ten pods plus the warm prefix.
    let keys = add(&pool, 10, "warmup").await;
    pool.fill().await;
    for k in keys {
        pool.alloc().release(&k);
    }
    let before = cloud.vpc().stats();
    for round in 0..50 {
        let keys = add(&pool, 10, &format!("r{round}-")).await;
        pool.fill().await;
        for k in keys {
            pool.alloc().release(&k);
        }
        tokio::time::advance(Duration::from_secs(20)).await;
        pool.shrink().await;
    }
    let after = cloud.vpc().stats();
    assert_eq!(after.calls(), before.calls(), "{after:?}");
}

#[tokio::test(start_paused = true)]
async fn sawtooth_does_not_thrash_and_lasting_surplus_is_returned() {
    let cloud = node("m5.large", "10.0.0.0/20").await;
    let pool = pool(&cloud, pd()).await;
    pool.fill().await;
    // Up to 60 pods: 60 + 16 warm → 5 prefixes.
    let keys = add(&pool, 60, "s").await;
    pool.fill().await;
    assert_eq!(pool.enis()[0].prefixes.len(), 5);
    let calls = mutating_calls(cloud.vpc());
    // A sawtooth with a 40 s period: down to 0, back up to 60.
    for cycle in 0..10 {
        for k in &keys {
            pool.alloc().release(k);
        }
        for _ in 0..2 {
            tokio::time::advance(Duration::from_secs(10)).await;
            assert!(!pool.shrink().await, "cycle {cycle}");
        }
        for k in &keys {
            pool.alloc().allocate(k).unwrap();
        }
        tokio::time::advance(Duration::from_secs(20)).await;
        pool.shrink().await;
        pool.fill().await;
    }
    assert_eq!(
        mutating_calls(cloud.vpc()),
        calls,
        "no EC2 call for a sawtooth"
    );
    // The pods go for good: after the release delay the surplus goes back,
    // down to the target plus one prefix of slack.
    for k in &keys {
        pool.alloc().release(k);
    }
    let mut returned = 0;
    for _ in 0..20 {
        tokio::time::advance(Duration::from_secs(30)).await;
        while pool.shrink().await {
            returned += 1;
        }
    }
    assert_eq!(returned, 3);
    assert_eq!(pool.enis()[0].prefixes.len(), 2);
    assert_eq!(cloud.vpc().stats().of(Action::Unassign).calls, 3);
    // An hour without a pod: the node is quiet, the slack prefix goes too.
    for _ in 0..120 {
        tokio::time::advance(Duration::from_secs(30)).await;
        pool.shrink().await;
    }
    assert_eq!(pool.enis()[0].prefixes.len(), 1, "WARM_PREFIX_TARGET=1");
}

#[tokio::test(start_paused = true)]
async fn eni_mode_returns_a_whole_free_eni_in_one_call() {
    let cloud = node("t3.medium", "10.0.0.0/20").await;
    let settings = PoolSettings {
        cooldown: Duration::ZERO,
        release_delay: Duration::from_secs(60),
        ..PoolSettings::default()
    };
    let pool = pool(&cloud, settings).await;
    pool.fill().await;
    let keys = add(&pool, 9, "e").await;
    pool.fill().await;
    assert_eq!(pool.enis().len(), 3);
    for k in keys {
        pool.alloc().release(&k);
    }
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(30)).await;
        while pool.shrink().await {}
    }
    // WARM_ENI_TARGET=1 (5 addresses) + 5 slack: the third ENI goes.
    assert_eq!(pool.enis().len(), 2, "{:?}", pool.enis());
    assert_eq!(cloud.vpc().stats().of(Action::Delete).calls, 1);
    assert_eq!(cloud.vpc().stats().of(Action::Unassign).calls, 0);
}

#[tokio::test(start_paused = true)]
async fn leaked_enis_and_unknown_addresses_are_collected() {
    let cloud = node("m5.large", "10.0.0.0/20").await;
    let settings = PoolSettings {
        cooldown: Duration::from_secs(30),
        leak_grace: Duration::from_secs(600),
        ..PoolSettings::default()
    };
    let pool = pool(&cloud, settings).await;
    pool.fill().await;
    let leaked = cloud.leak_eni().unwrap();
    let primary = pool.enis()[0].id.clone();
    let stranger = cloud.assign_behind_the_back(&primary, 1).unwrap();
    pool.reconcile().await;
    assert_eq!(cloud.detached_enis().await.unwrap().len(), 1, "young: kept");
    tokio::time::advance(Duration::from_secs(601)).await;
    pool.reconcile().await;
    assert!(cloud.detached_enis().await.unwrap().is_empty());
    assert!(cloud.vpc().stats().of(Action::Delete).calls >= 1);
    let listed = cloud.enis().await.unwrap();
    assert!(!listed[0].secondary_ips.contains(&stranger[0]));
    assert!(!cloud.vpc().is_used(stranger[0]));
    let _ = leaked;
}

#[tokio::test(start_paused = true)]
async fn adaptive_idle_node_holds_little_and_a_busy_one_more() {
    let cloud = node("m5.large", "10.0.0.0/20").await;
    cloud
        .vpc()
        .set_latencies(crate::cloud::sim::Latencies::uniform(Duration::from_secs(
            1,
        )));
    let settings = PoolSettings {
        policy: WarmPolicy::Adaptive,
        cooldown: Duration::ZERO,
        ..PoolSettings::default()
    };
    let pool = pool(&cloud, settings).await;
    pool.fill().await;
    assert_eq!(pool.alloc().usage().total, 1, "idle: one address");
    // One pod a second for twenty seconds.
    for i in 0..20 {
        add(&pool, 1, &format!("b{i}-")).await;
        pool.fill().await;
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let u = pool.alloc().usage();
    assert!(u.free() >= 2, "a busy node keeps some warm: {u:?}");
}

#[tokio::test(start_paused = true)]
async fn adaptive_defers_its_margin_while_the_account_throttles() {
    let cloud = node("m5.xlarge", "10.0.0.0/20").await;
    cloud
        .vpc()
        .set_latencies(crate::cloud::sim::Latencies::uniform(Duration::from_secs(
            1,
        )));
    let budget: Arc<dyn crate::cloud::Cloud> = Arc::new(crate::cloud::budget::Budget::new(
        cloud.clone(),
        crate::cloud::budget::BudgetSettings::default(),
    ));
    let settings = PoolSettings {
        policy: WarmPolicy::Adaptive,
        cooldown: Duration::ZERO,
        ..PoolSettings::default()
    };
    let pool = Pool::start(budget, Arc::new(NoLinks), settings, 9001, &[])
        .await
        .unwrap();
    pool.fill().await;
    add(&pool, 20, "a").await;
    let used = pool.alloc().usage().used as u32;
    assert!(pool.target().total > used + 1, "a busy node keeps a margin");
    // The next growth is throttled once (the budget retries it).
    cloud
        .vpc()
        .inject(Action::Assign, crate::cloud::sim::Fault::Throttle);
    let free = pool.alloc().usage().free();
    add(&pool, free + 1, "b").await;
    let used = pool.alloc().usage().used as u32;
    assert_eq!(
        pool.target().total,
        used + 1,
        "margin deferred: {:?}",
        pool.target()
    );
    tokio::time::advance(CONGESTION_HOLD).await;
    add(&pool, 10, "c").await;
    let used = pool.alloc().usage().used as u32;
    assert!(pool.target().total > used + 1, "margin back after the hold");
}
