//! The policy engine against the real kernel, fed by a fake rule source:
//! chain sharing, swaps on a policy change, background removal, the modes,
//! and a table kept across a restart. The kernel's view is read with `nft -j`.

use std::collections::HashMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;

use ipamd::policy::engine::{Engine, Mode, RuleSource};
use ipamd::policy::ir::{Allow, Isolation, Peers, PodKey, PodRules, PortRange, Ports, Proto};
use nix::sched::{setns, CloneFlags};
use serde_json::Value;
use vpc_cni_e2e::Netns;

#[derive(Default)]
struct Fake(HashMap<PodKey, PodRules>);

impl RuleSource for Fake {
    fn rules_for(&self, pod: &PodKey) -> Option<PodRules> {
        self.0.get(pod).cloned()
    }
}

fn key(name: &str) -> PodKey {
    PodKey {
        namespace: "x".into(),
        name: name.into(),
    }
}

fn from_peer(last_octet: u8, port: u16) -> PodRules {
    let ip = Ipv4Addr::new(10, 9, 0, last_octet);
    PodRules {
        ingress: Isolation::Isolated(vec![Allow {
            peers: Peers::Ranges(vec![(ip, ip)]),
            ports: Ports::Ranges(vec![PortRange {
                proto: Proto::Tcp,
                first: port,
                last: port,
            }]),
        }]),
        egress: Isolation::Open,
    }
}

fn deny_egress() -> PodRules {
    PodRules {
        ingress: Isolation::Open,
        egress: Isolation::Isolated(vec![]),
    }
}

/// Starts an engine inside `ns` (its sockets stay there).
fn engine_in(ns: &Netns, mode: Mode) -> Engine {
    let path = ns.path().to_path_buf();
    std::thread::spawn(move || {
        let f = File::open(&path).expect("open netns");
        setns(&f, CloneFlags::CLONE_NEWNET).expect("setns");
        Engine::start(mode).expect("engine starts")
    })
    .join()
    .expect("engine thread")
}

fn nft_json(ns: &Netns, args: &[&str]) -> Value {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "nft", "-j"])
        .args(args)
        .output()
        .expect("nft runs");
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("nft -j prints JSON")
}

/// `veth → chain` of one of the verdict maps.
fn map(ns: &Netns, name: &str) -> HashMap<String, String> {
    let v = nft_json(ns, &["list", "map", "inet", "vpc_cni", name]);
    let mut out = HashMap::new();
    for item in v["nftables"].as_array().expect("list") {
        let Some(elems) = item["map"]["elem"].as_array() else {
            continue;
        };
        for e in elems {
            let veth = e[0].as_str().expect("ifname key").to_string();
            let chain = e[1]["jump"]["target"].as_str().expect("jump").to_string();
            out.insert(veth, chain);
        }
    }
    out
}

fn chains(ns: &Netns) -> Vec<String> {
    let v = nft_json(ns, &["list", "table", "inet", "vpc_cni"]);
    v["nftables"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|i| i["chain"]["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
#[ignore = "privileged: needs CAP_NET_ADMIN"]
fn shared_chains_swap_on_change_and_removals_wait_for_the_reaper() {
    let ns = Netns::new();
    let engine = engine_in(&ns, Mode::Strict);
    let mut fake = Fake::default();
    fake.0.insert(key("a"), from_peer(1, 80));
    fake.0.insert(key("b"), from_peer(1, 80));
    fake.0.insert(key("c"), deny_egress());
    engine.apply_snapshot(Arc::new(fake)).unwrap();
    for (k, veth) in [
        (Some(key("a")), "vetha"),
        (Some(key("b")), "vethb"),
        (Some(key("c")), "vethc"),
        (None, "vethd"),
        (Some(key("ghost")), "vethe"),
    ] {
        engine.pod_added(k, veth).unwrap();
    }
    let ingress = map(&ns, "ingress");
    let egress = map(&ns, "egress");
    assert_eq!(
        ingress["vetha"], ingress["vethb"],
        "same allow list, same chain"
    );
    assert!(!ingress.contains_key("vethc"), "c's ingress is open");
    assert_ne!(
        egress["vethc"], "deny",
        "c has its own (empty) allow list chain"
    );
    assert_eq!(ingress["vethd"], "deny", "strict: no identity, denied");
    assert_eq!(
        ingress["vethe"], "deny",
        "strict: unknown to the source, denied"
    );
    assert_eq!(egress["vethe"], "deny");
    assert_eq!(engine.chain_counts(), (2, 0));
    let old = ingress["vetha"].clone();

    // a changes: a new chain for a, b keeps the old one; nothing to reap yet.
    let mut fake = Fake::default();
    fake.0.insert(key("a"), from_peer(2, 443));
    fake.0.insert(key("b"), from_peer(1, 80));
    fake.0.insert(key("c"), deny_egress());
    engine.apply_snapshot(Arc::new(fake)).unwrap();
    let ingress = map(&ns, "ingress");
    assert_ne!(ingress["vetha"], old);
    assert_eq!(ingress["vethb"], old);
    assert_eq!(engine.chain_counts(), (3, 0));

    // b changes to a's list: shares a's chain; the old chain is garbage,
    // still in the kernel until the reaper runs.
    let mut fake = Fake::default();
    fake.0.insert(key("a"), from_peer(2, 443));
    fake.0.insert(key("b"), from_peer(2, 443));
    fake.0.insert(key("c"), deny_egress());
    fake.0.insert(key("ghost"), deny_egress());
    engine.apply_snapshot(Arc::new(fake)).unwrap();
    let ingress = map(&ns, "ingress");
    assert_eq!(ingress["vetha"], ingress["vethb"]);
    assert!(
        !ingress.contains_key("vethe"),
        "ghost became known: ingress open"
    );
    assert_eq!(map(&ns, "egress")["vethe"], map(&ns, "egress")["vethc"]);
    assert_eq!(engine.chain_counts(), (2, 1));
    assert!(chains(&ns).contains(&old));
    assert!(engine.reap() > 0);
    assert!(!chains(&ns).contains(&old), "the unused chain was reaped");
    assert_eq!(engine.chain_counts(), (2, 0));

    // DEL leaves the element for the reaper.
    engine.pod_deleted("vetha");
    assert!(map(&ns, "ingress").contains_key("vetha"));
    engine.reap();
    assert!(!map(&ns, "ingress").contains_key("vetha"));
    assert!(map(&ns, "ingress").contains_key("vethb"));

    // The same pod again before the reaper ran: its elements come back.
    engine.pod_deleted("vethb");
    engine.pod_added(Some(key("b")), "vethb").unwrap();
    engine.reap();
    assert!(
        map(&ns, "ingress").contains_key("vethb"),
        "re-added pod keeps its rules"
    );
}

#[test]
#[ignore = "privileged: needs CAP_NET_ADMIN"]
fn standard_mode_leaves_unknown_pods_open() {
    let ns = Netns::new();
    let engine = engine_in(&ns, Mode::Standard);
    let mut fake = Fake::default();
    fake.0.insert(key("a"), from_peer(1, 80));
    engine.apply_snapshot(Arc::new(fake)).unwrap();
    engine.pod_added(Some(key("a")), "vetha").unwrap();
    engine.pod_added(Some(key("unknown")), "vethu").unwrap();
    engine.pod_added(None, "vethn").unwrap();
    let ingress = map(&ns, "ingress");
    assert!(ingress.contains_key("vetha"));
    assert_eq!(ingress.len(), 1, "{ingress:?}");
    assert!(map(&ns, "egress").is_empty());
}

#[test]
#[ignore = "privileged: needs CAP_NET_ADMIN"]
fn the_table_survives_a_restart_and_is_rebuilt_at_the_first_snapshot() {
    let ns = Netns::new();
    let mut before = Fake::default();
    before.0.insert(key("a"), from_peer(1, 80));
    before.0.insert(key("gone"), from_peer(3, 80));
    let mut fake = Fake::default();
    fake.0.insert(key("a"), from_peer(1, 80));
    let fake = Arc::new(fake);
    {
        let engine = engine_in(&ns, Mode::Strict);
        engine.apply_snapshot(Arc::new(before)).unwrap();
        engine.pod_added(Some(key("a")), "vetha").unwrap();
        engine.pod_added(Some(key("gone")), "vethg").unwrap();
    }
    // Restarted: the old table goes on enforcing until a snapshot comes.
    let engine = engine_in(&ns, Mode::Strict);
    let kept = map(&ns, "ingress");
    assert!(
        kept.contains_key("vetha") && kept.contains_key("vethg"),
        "{kept:?}"
    );
    engine.restore([(Some(key("a")), "vetha".to_string())]);
    // A pod coming back under a name the kept table still has (with
    // another verdict): before any snapshot, strict mode denies it.
    engine.pod_added(Some(key("gone")), "vethg").unwrap();
    assert_eq!(map(&ns, "ingress")["vethg"], "deny");
    engine.apply_snapshot(fake).unwrap();
    let rebuilt = map(&ns, "ingress");
    assert!(rebuilt.contains_key("vetha"));
    assert_ne!(rebuilt["vetha"], "deny");
    assert_eq!(rebuilt["vethg"], "deny", "still unknown to the source");
    assert_eq!(rebuilt.len(), 2);
}
