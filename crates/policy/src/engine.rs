//! The enforcement engine: keeps the nftables table in step with the local
//! pods and the latest cluster snapshot, changing only what differs.
//!
//! - **ADD** ([`Engine::pod_added`]): the pod's map elements (and, for an
//!   allow list no other local pod has, its chain and sets) go in as one
//!   transaction that only adds. In strict mode ADD waits for it and fails if
//!   it fails; a pod whose labels are not known yet jumps to `deny`.
//! - **DEL** ([`Engine::pod_deleted`]): nothing is sent; the pod's elements
//!   are queued. Anything that deletes makes the kernel wait for an RCU
//!   grace period (≈ 16 ms here), so removals are batched by the
//!   [`Engine::run_reaper`] task, off the pod path and on a socket of its own.
//! - **Snapshot** ([`Engine::apply_snapshot`]): every local pod's rules are
//!   recomputed; pods whose rules changed get their elements swapped to a
//!   chain built for the new allow list (built first, in the same
//!   transaction), so no set is ever flushed and refilled. Chains nobody
//!   jumps to any more are deleted later by the reaper.
//! - **Restart**: the table is kept across restarts, so pods stay enforced
//!   while ipamd is down; at the first snapshot after start the whole table
//!   is replaced in one transaction by one rebuilt from the snapshot. A
//!   failed transaction also falls back to such a rebuild.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::compile::{self, ChainObjects, Direction, DENY_CHAIN, TABLE};
use super::ir::{Allow, Isolation, PodKey, PodRules};
use super::nft::{Batch, NftError, NftSocket};

/// `VPC_CNI_POLICY_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Pods no policy selects are open; rules are installed in ADD when
    /// known, but ADD does not fail if they cannot be.
    Standard,
    /// ADD returns only once the pod's rules are in force; a pod whose
    /// labels are not known yet is denied until they are.
    Strict,
}

/// What the engine needs from a cluster snapshot: a pod's rules, or `None`
/// if the pod (its labels) is not known.
pub trait RuleSource: Send + Sync {
    /// The rules of `pod`.
    fn rules_for(&self, pod: &PodKey) -> Option<PodRules>;

    /// A key equal for pods whose rules are necessarily equal (same
    /// namespace, labels and named ports: a Deployment's replicas), so the
    /// engine evaluates each class once per snapshot. `None`: no sharing.
    fn class_of(&self, _pod: &PodKey) -> Option<String> {
        None
    }
}

/// Why the engine could not program the kernel.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// An nftables transaction failed (and so did the rebuild after it).
    #[error(transparent)]
    Nft(#[from] NftError),
}

/// Where one direction of a pod's traffic goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// No element: everything passes.
    Open,
    /// `jump deny`.
    Deny,
    /// `jump <chain>`.
    Chain(String),
}

impl Target {
    fn chain(&self) -> Option<&str> {
        match self {
            Target::Open => None,
            Target::Deny => Some(DENY_CHAIN),
            Target::Chain(c) => Some(c),
        }
    }
}

/// What one direction should be.
enum Want<'a> {
    Open,
    Deny,
    Allow(&'a [Allow]),
}

#[derive(Debug, Clone)]
struct PodState {
    key: Option<PodKey>,
    /// Ingress, egress.
    targets: [Target; 2],
}

struct ChainEntry {
    objs: ChainObjects,
    refs: usize,
}

struct State {
    sock: NftSocket,
    snapshot: Option<Arc<dyn RuleSource>>,
    /// Rules by [`RuleSource::class_of`], for the current snapshot.
    by_class: HashMap<String, Option<PodRules>>,
    pods: HashMap<String, PodState>,
    /// Deleted pods whose elements are still in the kernel.
    removed: HashMap<String, PodState>,
    /// Live chains by (direction, allow list); the name is in `objs`.
    chains: HashMap<(Direction, Vec<Allow>), ChainEntry>,
    /// Chains no element jumps to, to delete in the background.
    garbage: Vec<ChainObjects>,
    next_chain: u64,
    /// The kernel may not match this state (a table kept from before a
    /// restart, or a failed transaction): the next apply rebuilds.
    stale: bool,
}

/// The engine. Cheap to share behind an `Arc`.
pub struct Engine {
    mode: Mode,
    state: Mutex<State>,
    reaper_sock: Mutex<NftSocket>,
    wake: tokio::sync::Notify,
}

const DIRS: [Direction; 2] = [Direction::Ingress, Direction::Egress];

impl Engine {
    /// Opens the engine in the calling thread's network namespace (the
    /// node's) and makes sure the table exists. A table left by a previous
    /// run is kept as it is — it goes on enforcing — until the first
    /// snapshot replaces it.
    pub fn start(mode: Mode) -> Result<Self, EngineError> {
        let mut sock = NftSocket::open()?;
        let reaper_sock = NftSocket::open()?;
        let mut b = Batch::new();
        compile::skeleton(&mut b, true);
        let stale = match sock.apply(&b) {
            Ok(()) => false,
            Err(e) if e.is_exists() => {
                tracing::info!(
                    table = TABLE,
                    "kept the policy table of the previous run until the first snapshot"
                );
                true
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Self {
            mode,
            state: Mutex::new(State {
                sock,
                snapshot: None,
                by_class: HashMap::new(),
                pods: HashMap::new(),
                removed: HashMap::new(),
                chains: HashMap::new(),
                garbage: Vec::new(),
                next_chain: 1,
                stale,
            }),
            reaper_sock: Mutex::new(reaper_sock),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("policy engine state poisoned")
    }

    /// Pods that were running before a restart (from the checkpoint): they
    /// are enforced again from the first snapshot on.
    pub fn restore(&self, pods: impl IntoIterator<Item = (Option<PodKey>, String)>) {
        let mut st = self.state();
        for (key, veth) in pods {
            st.pods.insert(
                veth,
                PodState {
                    key,
                    targets: [Target::Open, Target::Open],
                },
            );
        }
        // Their elements, if any, are in the kept table, not in our state.
        st.stale = true;
    }

    /// A pod was added with host veth `veth`: installs its rules. Blocking
    /// (one small netlink transaction); call it off the async reactor.
    pub fn pod_added(&self, key: Option<PodKey>, veth: &str) -> Result<(), EngineError> {
        let mut st = self.state();
        let previous = st.removed.remove(veth).or_else(|| st.pods.remove(veth));
        let pod = PodState {
            key,
            targets: previous
                .map(|p| p.targets)
                .unwrap_or([Target::Open, Target::Open]),
        };
        st.pods.insert(veth.to_string(), pod);
        if st.stale && st.snapshot.is_some() {
            return st.rebuild(self.mode);
        }
        let started = std::time::Instant::now();
        let mut b = Batch::new();
        st.plan_pod(self.mode, veth, &mut b);
        let planned = started.elapsed();
        let applied = st.sock.apply(&b);
        tracing::debug!(
            host_veth = veth,
            plan_us = planned.as_micros() as u64,
            apply_us = (started.elapsed() - planned).as_micros() as u64,
            messages = b.len(),
            "pod policy installed"
        );
        match applied {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(host_veth = veth, error = %e, "policy transaction failed; rebuilding the table");
                st.stale = true;
                if st.snapshot.is_some() {
                    st.rebuild(self.mode)
                } else {
                    st.retry_add_in_kept_table(self.mode, veth, e)
                }
            }
        }
    }

    /// A pod was deleted: its elements are removed in the background.
    pub fn pod_deleted(&self, veth: &str) {
        let mut st = self.state();
        if let Some(p) = st.pods.remove(veth) {
            st.removed.insert(veth.to_string(), p);
            drop(st);
            self.wake.notify_one();
        }
    }

    /// A new cluster snapshot: recomputes every local pod and applies the
    /// difference in one transaction. Blocking.
    pub fn apply_snapshot(&self, snapshot: Arc<dyn RuleSource>) -> Result<(), EngineError> {
        // The rules are evaluated before the lock is taken, so an ADD is
        // not queued behind the evaluation of every local pod; a pod added
        // meanwhile is evaluated under the lock as it is planned.
        let keys: Vec<PodKey> = self
            .state()
            .pods
            .values()
            .filter_map(|p| p.key.clone())
            .collect();
        let mut by_class: HashMap<String, Option<PodRules>> = HashMap::new();
        for key in &keys {
            if let Some(class) = snapshot.class_of(key) {
                by_class
                    .entry(class)
                    .or_insert_with(|| snapshot.rules_for(key));
            }
        }
        let mut st = self.state();
        st.snapshot = Some(snapshot);
        st.by_class = by_class;
        if st.stale {
            return st.rebuild(self.mode);
        }
        let mut b = Batch::new();
        let veths: Vec<String> = st.pods.keys().cloned().collect();
        for veth in &veths {
            st.plan_pod(self.mode, veth, &mut b);
        }
        let result = st.sock.apply(&b);
        let garbage = !st.garbage.is_empty();
        let out = match result {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "policy update failed; rebuilding the table");
                st.rebuild(self.mode)
            }
        };
        drop(st);
        if garbage {
            self.wake.notify_one();
        }
        out
    }

    /// Number of chains in use and awaiting deletion (for tests and status).
    pub fn chain_counts(&self) -> (usize, usize) {
        let st = self.state();
        (st.chains.len(), st.garbage.len())
    }

    /// Deletes what deleted pods and replaced allow lists left behind, in
    /// one transaction, on the reaper's own socket and without holding the
    /// engine's lock while the kernel works, so ADDs are never queued
    /// behind it. Returns how many objects were removed.
    pub fn reap(&self) -> usize {
        let (batch, count) = {
            let mut st = self.state();
            if st.stale {
                return 0;
            }
            let mut b = Batch::new();
            let mut count = 0;
            let removed: Vec<(String, PodState)> = st.removed.drain().collect();
            for (veth, pod) in removed {
                for (i, dir) in DIRS.into_iter().enumerate() {
                    if pod.targets[i] != Target::Open {
                        b.del_elements(TABLE, dir.map(), &[compile::pod_key(&veth)]);
                        count += 1;
                    }
                    st.release(dir, &pod.targets[i]);
                }
            }
            for objs in std::mem::take(&mut st.garbage) {
                compile::del_policy_chain(&mut b, &objs);
                count += 1;
            }
            (b, count)
        };
        if batch.is_empty() {
            return 0;
        }
        let result = self
            .reaper_sock
            .lock()
            .expect("reaper socket poisoned")
            .apply(&batch);
        match result {
            Ok(()) => count,
            Err(e) => {
                // Something re-added meanwhile (a pod coming back under the
                // same name) or drifted: a rebuild settles it.
                tracing::warn!(error = %e, "policy cleanup failed; rebuilding the table");
                let mut st = self.state();
                st.stale = true;
                if st.snapshot.is_some() {
                    if let Err(e) = st.rebuild(self.mode) {
                        tracing::error!(error = %e, "policy table rebuild failed");
                    }
                }
                0
            }
        }
    }

    /// Runs [`Engine::reap`] whenever there is something to remove, at most
    /// once per `every` so removals are batched.
    pub async fn run_reaper(self: Arc<Self>, every: Duration) {
        loop {
            self.wake.notified().await;
            tokio::time::sleep(every).await;
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.reap()).await;
        }
    }
}

impl State {
    fn want<'a>(&self, mode: Mode, rules: Option<&'a PodRules>, dir: Direction) -> Want<'a> {
        match rules {
            None => match mode {
                Mode::Strict => Want::Deny,
                Mode::Standard => Want::Open,
            },
            Some(r) => {
                let iso = match dir {
                    Direction::Ingress => &r.ingress,
                    Direction::Egress => &r.egress,
                };
                match iso {
                    Isolation::Open => Want::Open,
                    Isolation::Isolated(allows) => Want::Allow(allows),
                }
            }
        }
    }

    fn rules(&mut self, key: Option<&PodKey>) -> Option<PodRules> {
        let (Some(s), Some(k)) = (&self.snapshot, key) else {
            return None;
        };
        let Some(class) = s.class_of(k) else {
            return s.rules_for(k);
        };
        if let Some(r) = self.by_class.get(&class) {
            return r.clone();
        }
        let r = s.rules_for(k);
        self.by_class.insert(class, r.clone());
        r
    }

    /// Adds to `b` what brings `veth` from its current targets to the
    /// wanted ones, and records the new targets.
    fn plan_pod(&mut self, mode: Mode, veth: &str, b: &mut Batch) {
        let Some(pod) = self.pods.get(veth) else {
            return;
        };
        let key = pod.key.clone();
        let current = pod.targets.clone();
        let rules = self.rules(key.as_ref());
        let mut next = current.clone();
        for (i, dir) in DIRS.into_iter().enumerate() {
            let target = match self.want(mode, rules.as_ref(), dir) {
                Want::Open => Target::Open,
                Want::Deny => Target::Deny,
                Want::Allow(allows) => self.acquire(dir, allows, &current[i], b),
            };
            if target == current[i] {
                continue;
            }
            if current[i] != Target::Open {
                b.del_elements(TABLE, dir.map(), &[compile::pod_key(veth)]);
            }
            if let Some(chain) = target.chain() {
                b.add_elements(TABLE, dir.map(), &[compile::pod_element(veth, chain)]);
            }
            self.release(dir, &current[i]);
            next[i] = target;
        }
        if let Some(pod) = self.pods.get_mut(veth) {
            pod.targets = next;
        }
    }

    /// The chain for `allows`, created in `b` if no pod uses one yet; takes
    /// a reference unless `current` already is that chain.
    fn acquire(
        &mut self,
        dir: Direction,
        allows: &[Allow],
        current: &Target,
        b: &mut Batch,
    ) -> Target {
        let key = (dir, allows.to_vec());
        if let Some(entry) = self.chains.get_mut(&key) {
            let name = entry.objs.chain.clone();
            if *current != Target::Chain(name.clone()) {
                entry.refs += 1;
            }
            return Target::Chain(name);
        }
        let prefix = match dir {
            Direction::Ingress => "in",
            Direction::Egress => "out",
        };
        let name = format!("{prefix}{}", self.next_chain);
        self.next_chain += 1;
        let objs = compile::policy_chain(b, dir, &name, allows);
        self.chains.insert(key, ChainEntry { objs, refs: 1 });
        Target::Chain(name)
    }

    /// Drops one reference to the chain of `target`; an unused chain goes
    /// to the garbage list.
    fn release(&mut self, dir: Direction, target: &Target) {
        let Target::Chain(name) = target else { return };
        let Some(key) = self
            .chains
            .iter()
            .find(|((d, _), e)| *d == dir && e.objs.chain == *name)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        let entry = self.chains.get_mut(&key).expect("found above");
        entry.refs -= 1;
        if entry.refs == 0 {
            let entry = self.chains.remove(&key).expect("found above");
            self.garbage.push(entry.objs);
        }
    }

    /// Replaces the whole table, atomically, by one built from the current
    /// pods and snapshot.
    fn rebuild(&mut self, mode: Mode) -> Result<(), EngineError> {
        self.chains.clear();
        self.garbage.clear();
        self.removed.clear();
        for pod in self.pods.values_mut() {
            pod.targets = [Target::Open, Target::Open];
        }
        let mut b = Batch::new();
        b.add_table(TABLE, false);
        b.del_table(TABLE);
        compile::skeleton(&mut b, false);
        let veths: Vec<String> = self.pods.keys().cloned().collect();
        for veth in &veths {
            self.plan_pod(mode, veth, &mut b);
        }
        self.sock.apply(&b)?;
        self.stale = false;
        tracing::info!(
            pods = veths.len(),
            chains = self.chains.len(),
            "policy table rebuilt"
        );
        Ok(())
    }

    /// Before the first snapshot after a restart the kept table may still
    /// hold an element for this veth (a pod that came back under the same
    /// name): remove it, direction by direction (either may be absent),
    /// then add the pod's. Rare, and the veth does not exist yet, so the
    /// moment without an element lets no packet through.
    fn retry_add_in_kept_table(
        &mut self,
        mode: Mode,
        veth: &str,
        first: NftError,
    ) -> Result<(), EngineError> {
        if !(first.is_exists() || first.errno() == Some(libc::EBUSY)) {
            return Err(first.into());
        }
        for dir in DIRS {
            let mut b = Batch::new();
            b.del_elements(TABLE, dir.map(), &[compile::pod_key(veth)]);
            match self.sock.apply(&b) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(pod) = self.pods.get_mut(veth) {
            for t in pod.targets.iter_mut() {
                *t = Target::Open;
            }
        }
        let mut b = Batch::new();
        self.plan_pod(mode, veth, &mut b);
        self.sock.apply(&b).map_err(EngineError::from)
    }
}
