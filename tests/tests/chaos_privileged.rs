//! Chaos: concurrent ADD/DEL churn through the real plugin while ipamd is
//! killed with SIGKILL at random moments and restarted.
//!
//! Workers churn pods (ADD into a fresh namespace, DEL, namespace removed)
//! and, like kubelet, retry every failed call until it succeeds. A killer
//! thread kills ipamd, leaves it down for a moment (calls then must fail
//! with code 11), restarts it, pauses the workers and checks:
//! * at the crash instant, the checkpoint on disk holds exactly the pods
//!   whose ADD answered and whose DEL did not (calls in flight aside);
//! * after the restart, every live pod's address is unique and still its
//!   own; ipamd's pods, its allocator count, its checkpoint and the kernel
//!   (host veths, /32 host routes, pod rules) all agree with the pods the
//!   runtime believes in; nothing else is allocated or wired.
//!
//! At the end every pod is deleted and nothing may be left. The counts are
//! printed. `VPC_CNI_CHAOS_KILLS` (default 50) sets the number of kills for
//! a longer run; `VPC_CNI_CHAOS_SEED` replays a run (the seed is printed).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use vpc_cni_e2e::{
    checkpoint_allocations, node_pod_links, node_pod_routes, node_pod_rules, result_ip,
    status_json, wait_until, Node, Plugin, PodSpec,
};

const WORKERS: usize = 4;
const SLOTS_PER_WORKER: usize = 3;

/// A tiny xorshift: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the runtime believes: pods whose ADD answered and whose DEL has
/// not, and calls in flight (their outcome is not known yet).
#[derive(Default)]
struct Model {
    live: BTreeMap<String, (String, String)>,
    in_flight: HashSet<String>,
    /// Lost without a DEL, not yet confirmed freed: the checkpoint may
    /// still hold them (ipamd cannot know before GC or reconcile).
    forgotten: HashSet<String>,
}

/// The daemon's phase, for judging failures: `epoch % 3` is 0 up, 1 being
/// killed, 2 down (killed, or restarted but not ready yet).
struct Phase(AtomicU64);

impl Phase {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    fn advance(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Counts {
    ops: AtomicU64,
    calls: AtomicU64,
    down_failures: AtomicU64,
    interrupted: AtomicU64,
    busy_retries: AtomicU64,
    forgotten: AtomicU64,
    gc_released: AtomicU64,
    checks: AtomicU64,
}

struct Shared {
    model: Mutex<Model>,
    phase: Phase,
    counts: Counts,
    pause: AtomicBool,
    idle: AtomicUsize,
    stop: AtomicBool,
    conf: Value,
}

/// Runs `call` until it succeeds, as kubelet retries; checks every failure
/// against the daemon's phase.
fn until_success(shared: &Shared, call: &Plugin, what: &str) -> Value {
    let mut tries = 0;
    loop {
        let before = shared.phase.now();
        let out = call.run();
        let after = shared.phase.now();
        shared.counts.calls.fetch_add(1, Ordering::Relaxed);
        if out.success() {
            return out.json;
        }
        let code = out.json["code"].as_u64();
        if before == after && before % 3 == 2 {
            // Entirely while ipamd was down or starting.
            assert_eq!(
                code,
                Some(11),
                "{what} while ipamd was down must be code 11: {out}"
            );
            shared.counts.down_failures.fetch_add(1, Ordering::Relaxed);
        } else if before != after || before % 3 == 1 {
            // Cut by the kill: the connection dropped (11) or the answer
            // was lost (106); a retry settles it either way.
            assert!(
                matches!(code, Some(11) | Some(106)),
                "{what} cut by a kill must fail with 11 or 106: {out}"
            );
            shared.counts.interrupted.fetch_add(1, Ordering::Relaxed);
        } else {
            // ipamd up all along: only "try again" (pool growing) is fine.
            assert_eq!(code, Some(11), "{what} failed while ipamd was up: {out}");
            shared.counts.busy_retries.fetch_add(1, Ordering::Relaxed);
        }
        tries += 1;
        assert!(tries < 2000, "{what} never succeeded: {out}");
        thread::sleep(Duration::from_millis(5));
    }
}

fn plugin(shared: &Shared, command: &str, pod: &PodSpec) -> Plugin {
    Plugin::new(command)
        .ifname("eth0")
        .config(&shared.conf)
        .container_id(&pod.container_id)
        .netns(pod.netns.path_str())
        .args(&pod.cni_args())
}

fn worker(id: usize, shared: Arc<Shared>, seed: u64) {
    let mut rng = Rng(seed | 1);
    let mut slots: Vec<Option<PodSpec>> = (0..SLOTS_PER_WORKER).map(|_| None).collect();
    let mut n = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        if shared.pause.load(Ordering::SeqCst) {
            shared.idle.fetch_add(1, Ordering::SeqCst);
            while shared.pause.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(2));
            }
            shared.idle.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let slot = rng.below(SLOTS_PER_WORKER as u64) as usize;
        match slots[slot].take() {
            None => {
                n += 1;
                let pod = PodSpec::new(&format!("c{id}-{n}"));
                let cid = pod.container_id.clone();
                shared.model.lock().unwrap().in_flight.insert(cid.clone());
                let result = until_success(&shared, &plugin(&shared, "ADD", &pod), "ADD");
                let ip = result_ip(&result).to_string();
                let veth = result["interfaces"][0]["name"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let mut m = shared.model.lock().unwrap();
                m.live.insert(cid.clone(), (ip, veth));
                m.in_flight.remove(&cid);
                drop(m);
                slots[slot] = Some(pod);
            }
            Some(pod) if rng.below(8) == 0 => {
                // The runtime loses the pod without a DEL (its sandbox
                // vanished): only CNI GC or reconcile can free it.
                let mut m = shared.model.lock().unwrap();
                m.live.remove(&pod.container_id);
                m.forgotten.insert(pod.container_id.clone());
                drop(m);
                drop(pod);
                shared.counts.forgotten.fetch_add(1, Ordering::Relaxed);
            }
            Some(pod) => {
                let cid = pod.container_id.clone();
                shared.model.lock().unwrap().in_flight.insert(cid.clone());
                until_success(&shared, &plugin(&shared, "DEL", &pod), "DEL");
                let mut m = shared.model.lock().unwrap();
                m.live.remove(&cid);
                m.in_flight.remove(&cid);
                drop(m);
                // The runtime destroys the namespace after DEL.
                drop(pod);
            }
        }
        shared.counts.ops.fetch_add(1, Ordering::Relaxed);
    }
    // Leave nothing: DEL what is left (ipamd is up when the test stops us).
    for pod in slots.into_iter().flatten() {
        until_success(&shared, &plugin(&shared, "DEL", &pod), "final DEL");
        let mut m = shared.model.lock().unwrap();
        m.live.remove(&pod.container_id);
        shared.counts.ops.fetch_add(1, Ordering::Relaxed);
    }
}

/// CNI GC with the runtime's attachments, as the runtime sends it; counts
/// the allocations it released (pods the runtime lost without a DEL).
fn gc(node: &Node, shared: &Shared) {
    let live = shared.model.lock().unwrap().live.clone();
    let before = status_json(node)["pool"]["used"].as_u64().unwrap();
    let mut conf = shared.conf.clone();
    conf["cni.dev/valid-attachments"] = live
        .keys()
        .map(|cid| serde_json::json!({"containerID": cid, "ifname": "eth0"}))
        .collect();
    until_success(shared, &Plugin::new("GC").config(&conf), "GC");
    let after = status_json(node)["pool"]["used"].as_u64().unwrap();
    shared
        .counts
        .gc_released
        .fetch_add(before.saturating_sub(after), Ordering::Relaxed);
}

/// At the crash instant: the disk holds exactly what the runtime was told,
/// calls in flight aside.
fn check_disk_at_crash(node: &Node, shared: &Shared) {
    let (live, in_flight, forgotten) = {
        let m = shared.model.lock().unwrap();
        (m.live.clone(), m.in_flight.clone(), m.forgotten.clone())
    };
    let disk = checkpoint_allocations(node);
    for (cid, (ip, _)) in &live {
        if in_flight.contains(cid) {
            continue;
        }
        assert_eq!(
            disk.get(cid),
            Some(ip),
            "ADD of {cid} answered {ip} but the checkpoint at the crash says {:?}",
            disk.get(cid)
        );
    }
    for cid in disk.keys() {
        assert!(
            live.contains_key(cid) || in_flight.contains(cid) || forgotten.contains(cid),
            "{cid} is in the checkpoint at the crash but its DEL had answered (or it never existed)"
        );
    }
    shared.counts.checks.fetch_add(1, Ordering::Relaxed);
}

/// With the workers paused: daemon, allocator, checkpoint and kernel agree
/// with the runtime's pods; addresses unique; nothing else wired.
fn check_agreement(node: &Node, shared: &Shared, context: &str) {
    let live = shared.model.lock().unwrap().live.clone();
    let checks = &shared.counts.checks;
    let ips: HashSet<&String> = live.values().map(|(ip, _)| ip).collect();
    assert_eq!(
        ips.len(),
        live.len(),
        "{context}: two live pods share an address: {live:?}"
    );
    checks.fetch_add(1, Ordering::Relaxed);

    let status = status_json(node);
    let pods: BTreeMap<String, String> = status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["containerId"].as_str().unwrap().to_string(),
                p["addr"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeMap<String, String> = live
        .iter()
        .map(|(k, (ip, _))| (k.clone(), ip.clone()))
        .collect();
    assert_eq!(
        pods, want,
        "{context}: ipamd's pods differ from the runtime's"
    );
    checks.fetch_add(1, Ordering::Relaxed);
    assert_eq!(
        status["pool"]["used"].as_u64(),
        Some(live.len() as u64),
        "{context}: allocator count: {status}"
    );
    checks.fetch_add(1, Ordering::Relaxed);
    assert_eq!(checkpoint_allocations(node), want, "{context}: checkpoint");
    checks.fetch_add(1, Ordering::Relaxed);

    // The kernel removes veths of deleted namespaces asynchronously.
    let want_links: BTreeSet<String> = live.values().map(|(_, v)| v.clone()).collect();
    let want_routes: BTreeSet<(String, String)> = live.values().cloned().collect();
    let mut last = String::new();
    let agreed = wait_until(Duration::from_secs(10), || {
        let links: BTreeSet<String> = node_pod_links(node).into_iter().collect();
        let routes: BTreeSet<(String, String)> = node_pod_routes(node).into_iter().collect();
        let to_rules: BTreeSet<String> = node_pod_rules(node)
            .iter()
            .filter_map(|r| r["dst"].as_str().map(str::to_string))
            .collect();
        let want_rules: BTreeSet<String> = want.values().cloned().collect();
        last = format!("links {links:?}\nroutes {routes:?}\nto-rules {to_rules:?}");
        links == want_links && routes == want_routes && to_rules == want_rules
    });
    assert!(
        agreed,
        "{context}: the kernel differs from the runtime's pods\nwant links {want_links:?}\nwant routes {want_routes:?}\ngot {last}"
    );
    checks.fetch_add(3, Ordering::Relaxed);
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn sigkill_during_churn_loses_nothing_and_duplicates_nothing() {
    let kills: u64 = std::env::var("VPC_CNI_CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("VPC_CNI_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("chaos: seed {seed} (VPC_CNI_CHAOS_SEED={seed} replays), {kills} kills");
    let mut rng = Rng(seed | 1);
    // Reap veths the runtime leaves quickly, so the kernel converges fast.
    let mut node = Node::start_with(&[("VPC_CNI_VETH_REAP_DELAY_MS", "200")]);
    let shared = Arc::new(Shared {
        model: Mutex::new(Model::default()),
        phase: Phase(AtomicU64::new(0)),
        counts: Counts::default(),
        pause: AtomicBool::new(false),
        idle: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        conf: node.conf("1.1.0"),
    });
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            let s = shared.clone();
            let seed = rng.next();
            thread::spawn(move || worker(i, s, seed))
        })
        .collect();
    let started = Instant::now();
    for k in 0..kills {
        thread::sleep(Duration::from_millis(20 + rng.below(150)));
        shared.phase.advance(); // being killed
        node.crash();
        shared.phase.advance(); // down
        check_disk_at_crash(&node, &shared);
        thread::sleep(Duration::from_millis(rng.below(40)));
        node.restart();
        shared.phase.advance(); // up
                                // Pause the churn and compare every view.
        shared.pause.store(true, Ordering::SeqCst);
        while shared.idle.load(Ordering::SeqCst) < WORKERS {
            thread::sleep(Duration::from_millis(2));
        }
        gc(&node, &shared);
        check_agreement(&node, &shared, &format!("after kill {}", k + 1));
        // ipamd holds nothing but the live pods: the lost ones are freed.
        shared.model.lock().unwrap().forgotten.clear();
        shared.pause.store(false, Ordering::SeqCst);
    }
    shared.stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("worker panicked");
    }
    check_agreement(&node, &shared, "at the end");
    assert!(shared.model.lock().unwrap().live.is_empty());
    vpc_cni_e2e::assert_nothing_allocated(&node);
    let c = &shared.counts;
    eprintln!(
        "chaos: reconcile at the restarts: {}",
        reconcile_totals(&node.log())
    );
    eprintln!(
        "chaos: {kills} kills, {} operations ({} plugin calls), {} failed while ipamd was down (all code 11, all retried to success), {} cut by a kill, {} busy retries, {} pods lost by the runtime without DEL ({} freed by CNI GC, the rest by reconcile), {} invariant checks, {:.1} s",
        c.ops.load(Ordering::Relaxed),
        c.calls.load(Ordering::Relaxed),
        c.down_failures.load(Ordering::Relaxed),
        c.interrupted.load(Ordering::Relaxed),
        c.busy_retries.load(Ordering::Relaxed),
        c.forgotten.load(Ordering::Relaxed),
        c.gc_released.load(Ordering::Relaxed),
        c.checks.load(Ordering::Relaxed) + 1,
        started.elapsed().as_secs_f64()
    );
    assert!(
        c.down_failures.load(Ordering::Relaxed) > 0,
        "no call ever met a down ipamd: the test did not exercise downtime"
    );
}

/// Sums the counters of ipamd's "reconciled allocations" log lines (which
/// paths of reconcile the kills exercised).
fn reconcile_totals(log: &str) -> String {
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("reconciled allocations")) {
        for field in line.split_whitespace() {
            if let Some((k, v)) = field.split_once('=') {
                if let Ok(n) = v.parse::<u64>() {
                    *totals.entry(k.to_string()).or_default() += n;
                }
            }
        }
    }
    totals
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
