//! The pod service's unit-test harness: a [`PodService`] over a warm pool of
//! the simulated cloud, a real checkpoint in a temp dir, the in-memory
//! [`FakeDataplane`], and fakes for the journal's durability
//! ([`FakeJournal`]) and the NetworkPolicy hook ([`FakePolicy`]). No root,
//! no network.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cni_plugin::wire::{Command, PodArgs, Request, PROTOCOL_VERSION};
use cni_plugin::CniError;
use serde_json::{json, Value};

use super::{Journal, PodPolicy, PodRecord, PodService};
use crate::alloc::{Allocator, AttachmentKey};
use crate::cloud::sim::{NoFabric, SimCloud, SimConfig};
use crate::config::PoolSettings;
use crate::dataplane::fake::{FakeDataplane, Leftovers};
use crate::dataplane::naming;
use crate::metrics::Metrics;
use crate::policy::engine::{EngineError, Mode as PolicyMode};
use crate::policy::ir::PodKey;
use crate::pool::{NoLinks, Pool};
use crate::store::{Commit, Durability, RecordKey, Store};
use crate::timing::Laps;

/// A directory removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "vpc-cni-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A journal operation whose durability can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JournalOp {
    /// [`Journal::put`].
    Put,
    /// [`Journal::del`].
    Del,
}

/// The real checkpoint, except that the commit of chosen operations
/// reports failure, as it does when the writer's append or fsync failed.
/// The operation itself still reaches the store (the writer had it in
/// memory; what failed is the promise that it is on disk).
pub(crate) struct FakeJournal {
    store: Arc<Store<PodRecord>>,
    /// Where the stores that hand out failed commits are opened.
    dead_dir: PathBuf,
    failing: Mutex<Vec<JournalOp>>,
}

impl FakeJournal {
    /// The next `op` queued reports that it is not durable.
    pub(crate) fn fail_next(&self, op: JournalOp) {
        self.failing.lock().unwrap().push(op);
    }

    fn take(&self, op: JournalOp) -> bool {
        let mut f = self.failing.lock().unwrap();
        match f.iter().position(|o| *o == op) {
            Some(i) => {
                f.remove(i);
                true
            }
            None => false,
        }
    }

    /// A commit whose writer is gone: a store that never started its
    /// writer, dropped with the change still queued, so
    /// [`Commit::durable`] fails ("the checkpoint writer stopped").
    fn failed_commit(&self) -> Commit {
        let dead = Store::<PodRecord>::open(&self.dead_dir, Durability::Sync).unwrap();
        let commit = dead.del(RecordKey {
            container_id: "never-written".into(),
            ifname: "eth0".into(),
        });
        drop(dead);
        commit
    }
}

impl Journal for FakeJournal {
    fn put(&self, record: PodRecord) -> Commit {
        let real = self.store.put(record);
        if self.take(JournalOp::Put) {
            drop(real);
            return self.failed_commit();
        }
        real
    }

    fn put_lazy(&self, record: PodRecord) {
        self.store.put_lazy(record);
    }

    fn del(&self, key: RecordKey) -> Commit {
        let real = self.store.del(key);
        if self.take(JournalOp::Del) {
            drop(real);
            return self.failed_commit();
        }
        real
    }
}

#[derive(Default)]
struct PolicyState {
    /// Pods the hook knows (by host veth), as the engine's table would.
    pods: BTreeSet<String>,
    fail_next: bool,
}

/// The NetworkPolicy hook as the engine behaves towards the pod service:
/// `pod_added` records the pod even when it then fails.
pub(crate) struct FakePolicy {
    mode: PolicyMode,
    state: Mutex<PolicyState>,
}

impl FakePolicy {
    pub(crate) fn new(mode: PolicyMode) -> Self {
        Self {
            mode,
            state: Mutex::new(PolicyState::default()),
        }
    }

    /// The next `pod_added` fails.
    pub(crate) fn fail_next(&self) {
        self.state.lock().unwrap().fail_next = true;
    }

    /// Host veths of the pods it enforces.
    pub(crate) fn pods(&self) -> BTreeSet<String> {
        self.state.lock().unwrap().pods.clone()
    }
}

impl PodPolicy for FakePolicy {
    fn mode(&self) -> PolicyMode {
        self.mode
    }

    fn pod_added(&self, _key: Option<PodKey>, veth: &str) -> Result<(), EngineError> {
        let mut st = self.state.lock().unwrap();
        st.pods.insert(veth.to_string());
        if std::mem::take(&mut st.fail_next) {
            // The engine's error wraps its netlink error, which takes an
            // I/O error: a failed transaction as the socket reports it.
            return Err(EngineError::Nft(
                std::io::Error::other("injected policy failure").into(),
            ));
        }
        Ok(())
    }

    fn pod_deleted(&self, veth: &str) {
        self.state.lock().unwrap().pods.remove(veth);
    }
}

/// How to build a [`Harness`].
pub(crate) struct Builder {
    policy: Option<PolicyMode>,
    secondary_eni: bool,
    reap_delay: Duration,
}

impl Builder {
    /// With the NetworkPolicy hook on, in `mode`.
    pub(crate) fn policy(mut self, mode: PolicyMode) -> Self {
        self.policy = Some(mode);
        self
    }

    /// ADDs get addresses of the secondary ENI (device index 1), so their
    /// wiring includes the rule from the pod to the ENI's table.
    pub(crate) fn secondary_eni(mut self) -> Self {
        self.secondary_eni = true;
        self
    }

    pub(crate) async fn build(self) -> Harness {
        let dir = TempDir::new("pod");
        // An m5.large held to two ENIs and filled to its 18 addresses: the
        // pool cannot grow, so an ADD that finds no address fails at once.
        let cloud = Arc::new(
            SimCloud::new(SimConfig::default(), Arc::new(NoFabric))
                .await
                .unwrap(),
        );
        let settings = PoolSettings {
            max_eni: Some(2),
            minimum_ip_target: Some(18),
            cooldown: Duration::ZERO,
            ..PoolSettings::default()
        };
        let pool = Pool::start(cloud.clone(), Arc::new(NoLinks), settings, 9001, &[])
            .await
            .unwrap();
        pool.fill().await;
        let alloc = pool.alloc().clone();
        assert_eq!(alloc.usage().total, 18, "the pool is full");
        assert!(!pool.can_grow());
        if self.secondary_eni {
            // Hold every address, then let go of the secondary ENI's.
            let mut held = Vec::new();
            while let Ok(lease) = alloc.allocate(&key(&format!("primary-{}", held.len()))) {
                held.push(lease);
            }
            for (i, lease) in held.iter().enumerate() {
                if lease.eni_index != 0 {
                    alloc.release(&key(&format!("primary-{i}")));
                }
            }
            assert_eq!(
                alloc.free_by_eni().keys().copied().collect::<Vec<_>>(),
                vec![1]
            );
        }
        let store = Store::<PodRecord>::open(&dir.path().join("state"), Durability::Sync).unwrap();
        store.start(Vec::new()).unwrap();
        let journal = Arc::new(FakeJournal {
            store: store.clone(),
            dead_dir: dir.path().join("dead"),
            failing: Mutex::new(Vec::new()),
        });
        let dp = Arc::new(FakeDataplane::new());
        let svc = PodService::new(
            alloc.clone(),
            pool,
            dp.clone(),
            journal.clone(),
            Arc::new(Metrics::new()),
            9001,
            self.reap_delay,
        );
        let policy = self.policy.map(|m| Arc::new(FakePolicy::new(m)));
        let svc = match &policy {
            Some(p) => svc.with_policy(p.clone()),
            None => svc,
        };
        Harness {
            svc,
            dp,
            journal,
            policy,
            alloc,
            store,
            _dir: dir,
        }
    }
}

/// A pod service over fakes, and what it was built from.
pub(crate) struct Harness {
    pub svc: PodService,
    pub dp: Arc<FakeDataplane>,
    pub journal: Arc<FakeJournal>,
    pub policy: Option<Arc<FakePolicy>>,
    pub alloc: Arc<Allocator>,
    pub store: Arc<Store<PodRecord>>,
    /// Holds the checkpoint; removed with the harness.
    _dir: TempDir,
}

/// How long the reaper waits after a DEL in these tests.
pub(crate) const REAP_DELAY: Duration = Duration::from_millis(20);

impl Harness {
    pub(crate) fn builder() -> Builder {
        Builder {
            policy: None,
            secondary_eni: false,
            reap_delay: REAP_DELAY,
        }
    }

    pub(crate) async fn new() -> Self {
        Self::builder().build().await
    }

    /// The CNI request `command` for pod `id` (container id, pod name and
    /// namespace path all derive from it; interface `eth0`).
    pub(crate) fn req(&self, command: Command, id: &str) -> Request {
        Request {
            v: PROTOCOL_VERSION,
            command,
            container_id: id.to_string(),
            netns: netns(id),
            ifname: "eth0".into(),
            args: PodArgs {
                namespace: Some("default".into()),
                name: Some(id.to_string()),
                ..PodArgs::default()
            },
            config: json!({}),
        }
    }

    pub(crate) async fn add(&self, id: &str) -> Result<Value, CniError> {
        self.svc
            .add(self.req(Command::Add, id), &mut Laps::default())
            .await
    }

    pub(crate) async fn del(&self, id: &str) -> Result<(), CniError> {
        self.svc
            .del(self.req(Command::Del, id), &mut Laps::default())
            .await
    }

    pub(crate) async fn check(&self, id: &str) -> Result<(), CniError> {
        self.svc.check(self.req(Command::Check, id)).await
    }

    /// CNI GC keeping only the attachments of `valid`.
    pub(crate) async fn gc(&self, valid: &[&str]) -> Result<(), CniError> {
        let list: Vec<Value> = valid
            .iter()
            .map(|id| json!({"containerID": id, "ifname": "eth0"}))
            .collect();
        self.svc
            .gc(Request::for_daemon(
                Command::Gc,
                json!({ "cni.dev/valid-attachments": list }),
            ))
            .await
    }

    /// Addresses in use.
    pub(crate) fn used(&self) -> usize {
        self.alloc.usage().used
    }

    /// The address pod `id` holds in the allocator.
    pub(crate) fn holds(&self, id: &str) -> Option<Ipv4Addr> {
        self.alloc.lookup(&key(id)).map(|l| l.addr)
    }

    /// Whether the service has pod `id` in its table (in any state).
    pub(crate) fn knows(&self, id: &str) -> bool {
        self.svc.entries().contains_key(&key(id))
    }

    /// The address the last `add_pod` call for pod `id` asked for.
    pub(crate) fn wired_addr(&self, id: &str) -> Option<Ipv4Addr> {
        let host = host_veth(id);
        self.dp.calls().iter().rev().find_map(|c| match c {
            crate::dataplane::fake::Call::AddPod(p) if p.host_ifname == host => Some(p.addr),
            _ => None,
        })
    }

    /// What the fake kernel still holds for pod `id` at `addr`.
    pub(crate) fn leftovers(&self, id: &str, addr: Ipv4Addr) -> Leftovers {
        self.dp.leftovers(addr, &host_veth(id))
    }

    /// The checkpoint as a restart would read it, once every change queued
    /// so far is on disk.
    pub(crate) async fn checkpoint(&self) -> Vec<PodRecord> {
        // The writer takes changes in order: once this one is durable, so
        // is everything before it.
        self.store
            .del(RecordKey {
                container_id: "flush".into(),
                ifname: "eth0".into(),
            })
            .durable()
            .await
            .unwrap();
        // A checkpoint that cannot be read would make every "not recorded"
        // assertion pass: it must load whole.
        let loaded = Store::<PodRecord>::open(self.store.dir(), Durability::Sync)
            .unwrap()
            .load();
        assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
        loaded.records.expect("the harness's checkpoint exists")
    }

    /// Whether the checkpoint holds a record of pod `id`.
    pub(crate) async fn recorded(&self, id: &str) -> bool {
        self.checkpoint().await.iter().any(|r| r.container_id == id)
    }
}

pub(crate) fn key(id: &str) -> AttachmentKey {
    AttachmentKey::new(id, "eth0")
}

pub(crate) fn netns(id: &str) -> String {
    format!("/run/netns/{id}")
}

pub(crate) fn host_veth(id: &str) -> String {
    naming::host_veth_name(Some("default"), Some(id), id, "eth0")
}

/// Waits (up to a second) until `cond` holds.
pub(crate) async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}
