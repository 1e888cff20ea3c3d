//! The pod service: CNI ADD, DEL, CHECK, STATUS and GC as transactions over
//! the allocator, the dataplane and the checkpoint.
//!
//! ADD either completes or leaves nothing behind: a `Rollback` guard gives
//! the address back and forgets the attachment unless ADD reaches its end.
//! DEL is idempotent and answers without waiting for the kernel to destroy
//! the veth (see [`PodService::del`]).
//!
//! The service reaches the kernel, the checkpoint and NetworkPolicy through
//! three traits — [`Dataplane`], [`Journal`] and [`PodPolicy`] — so every
//! rollback path is unit tested without root against fakes (`tests.rs`,
//! with the harness in `testkit.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cni_plugin::error as code;
use cni_plugin::wire::Request;
use cni_plugin::CniError;
use serde_json::{json, Value};

use crate::alloc::{Allocator, AttachmentKey, Lease};
use crate::dataplane::netns::NetnsError;
use crate::dataplane::{naming, Dataplane, DataplaneError, PodNet, VethMacs};
use crate::identity::{
    add_result, alias_for, eni_table, PodRecord, UNKNOWN_OWNER_PREFIX, WIRING_PENDING,
};
use crate::metrics::Metrics;
use crate::policy::engine::{Engine as PolicyEngine, EngineError, Mode as PolicyMode};
use crate::policy::ir::PodKey;
use crate::pool::Pool;
use crate::reaper::Reaper;
use crate::store::{Commit, Record, RecordKey, Store};
use crate::timing::{Laps, Phase};

/// How long an ADD that found the pool empty waits for it to grow.
const GROWTH_WAIT: Duration = Duration::from_secs(5);

/// Where the pod service records allocations: the checkpoint ([`Store`]).
/// A trait only so tests can make a write fail ([`Commit::durable`]
/// returning an error); the daemon passes its `Store`.
pub trait Journal: Send + Sync {
    /// Queues `record` (it now holds its address); the commit says when it
    /// is durable. Undo: [`Self::del`] of its key.
    fn put(&self, record: PodRecord) -> Commit;
    /// Queues `record` without asking for an fsync of its own (a detail a
    /// crash may lose: it can be read back from the kernel).
    fn put_lazy(&self, record: PodRecord);
    /// Queues the removal of `key`'s record. Undo: [`Self::put`] it again.
    fn del(&self, key: RecordKey) -> Commit;
}

impl Journal for Store<PodRecord> {
    fn put(&self, record: PodRecord) -> Commit {
        Store::put(self, record)
    }

    fn put_lazy(&self, record: PodRecord) {
        Store::put_lazy(self, record);
    }

    fn del(&self, key: RecordKey) -> Commit {
        Store::del(self, key)
    }
}

/// The NetworkPolicy hook of ADD and DEL: the policy [`PolicyEngine`] in
/// the daemon. A trait so tests can watch it and make it fail.
pub trait PodPolicy: Send + Sync {
    /// Whether a failure to install a pod's rules fails its ADD
    /// ([`PolicyMode::Strict`]) or is only logged.
    fn mode(&self) -> PolicyMode;
    /// Installs the rules of the pod with host veth `veth` (blocking: one
    /// small netlink transaction). It may have recorded the pod even when it
    /// fails. Undo: [`Self::pod_deleted`].
    fn pod_added(&self, key: Option<PodKey>, veth: &str) -> Result<(), EngineError>;
    /// Forgets the pod with host veth `veth` and queues the removal of its
    /// rules; nothing if it has none.
    fn pod_deleted(&self, veth: &str);
}

impl PodPolicy for PolicyEngine {
    fn mode(&self) -> PolicyMode {
        PolicyEngine::mode(self)
    }

    fn pod_added(&self, key: Option<PodKey>, veth: &str) -> Result<(), EngineError> {
        PolicyEngine::pod_added(self, key, veth)
    }

    fn pod_deleted(&self, veth: &str) {
        PolicyEngine::pod_deleted(self, veth);
    }
}

enum Entry {
    /// An ADD is wiring this attachment right now.
    Adding,
    /// Wired.
    Ready(PodRecord),
    /// A DEL or GC is unwiring it right now; nobody else may.
    Deleting,
}

/// The service.
pub struct PodService {
    alloc: Arc<Allocator>,
    pool: Arc<Pool>,
    dataplane: Arc<dyn Dataplane>,
    store: Arc<dyn Journal>,
    metrics: Arc<Metrics>,
    mtu: u32,
    reaper: Reaper,
    entries: Mutex<HashMap<AttachmentKey, Entry>>,
    /// Sections other subsystems add to `ipamd status` (config, policy, ...).
    sections: Mutex<Vec<(&'static str, StatusSection)>>,
    policy: Option<Arc<dyn PodPolicy>>,
}

/// A function that renders one section of `ipamd status`.
pub type StatusSection = Box<dyn Fn() -> Value + Send + Sync>;

/// Undoes a half-done ADD when dropped, unless disarmed.
struct Rollback<'a> {
    service: &'a PodService,
    key: &'a AttachmentKey,
    armed: bool,
    /// Host veth whose policy elements ADD installed.
    policy_veth: Option<String>,
    /// Whether ADD queued its record to the journal.
    journaled: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let (Some(engine), Some(veth)) = (&self.service.policy, &self.policy_veth) {
                engine.pod_deleted(veth);
            }
            if self.journaled {
                // Queued before the address goes back, so a later ADD's
                // record of it follows this one. Nobody waits for it: a crash
                // before it is durable leaves a record whose wiring was never
                // confirmed, which reconcile releases.
                let _ = self.service.store.del(RecordKey {
                    container_id: self.key.container_id.clone(),
                    ifname: self.key.ifname.clone(),
                });
            }
            self.service.alloc.release(self.key);
            self.service.entries().remove(self.key);
        }
    }
}

impl PodService {
    /// Builds the service. The daemon passes its `NetlinkDataplane` and
    /// `Store`; unit tests pass fakes.
    pub fn new(
        alloc: Arc<Allocator>,
        pool: Arc<Pool>,
        dataplane: Arc<dyn Dataplane>,
        store: Arc<dyn Journal>,
        metrics: Arc<Metrics>,
        mtu: u32,
        reap_delay: Duration,
    ) -> Self {
        Self {
            alloc,
            pool,
            reaper: Reaper::start(dataplane.clone(), reap_delay),
            dataplane,
            store,
            metrics,
            mtu,
            entries: Mutex::new(HashMap::new()),
            sections: Mutex::new(Vec::new()),
            policy: None,
        }
    }

    /// Enforces NetworkPolicy on the pods of this service.
    pub fn with_policy(mut self, engine: Arc<dyn PodPolicy>) -> Self {
        self.policy = Some(engine);
        self
    }

    /// Installs the pod's policy before its veth exists, so its first
    /// packet already meets it. Strict mode fails ADD if that fails.
    fn add_policy(&self, req: &Request, veth: &str) -> Result<(), CniError> {
        let Some(engine) = &self.policy else {
            return Ok(());
        };
        let key = match (&req.args.namespace, &req.args.name) {
            (Some(namespace), Some(name)) => Some(PodKey {
                namespace: namespace.clone(),
                name: name.clone(),
            }),
            _ => None,
        };
        match blocking(|| engine.pod_added(key, veth)) {
            Ok(()) => Ok(()),
            Err(e) if engine.mode() == PolicyMode::Standard => {
                tracing::warn!(error = %e, "policy not installed; the pod stays open until the next update");
                Ok(())
            }
            Err(e) => Err(CniError::new(code::DATAPLANE, format!("ADD: policy: {e}"))),
        }
    }

    /// Adds a top-level section `name` to `ipamd status`, rendered on
    /// every call.
    pub fn add_status_section(&self, name: &'static str, render: StatusSection) {
        self.sections
            .lock()
            .expect("status sections poisoned")
            .push((name, render));
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<AttachmentKey, Entry>> {
        self.entries.lock().expect("pod table poisoned")
    }

    /// What follows a call once its answer is written: its phases go to
    /// the `timings` of `ipamd status`, and after an ADD the warm pool
    /// re-checks its target. Waking the pool's task earlier would let it
    /// take the CPU from the call (it does on a busy 2-CPU node).
    pub fn after_answer(&self, command: cni_plugin::wire::Command, laps: &Laps) {
        self.metrics.timings().record(command, laps);
        if command == cni_plugin::wire::Command::Add {
            self.pool.nudge();
        }
    }

    /// Dispatches one CNI request; `laps` times its phases.
    pub async fn handle(&self, req: Request, laps: &mut Laps) -> Result<Value, CniError> {
        use cni_plugin::wire::Command;
        use tracing::Instrument;
        let started = Instant::now();
        let command = req.command;
        // One span per CNI call: every line logged while handling it
        // carries the pod's identity (and JSON logs carry it as fields).
        let span = tracing::info_span!(
            "cni",
            command = command.as_str(),
            container_id = %req.container_id,
            namespace = req.args.namespace.as_deref().unwrap_or(""),
            pod = req.args.name.as_deref().unwrap_or(""),
            ifname = %req.ifname,
        );
        let out = async {
            match command {
                Command::Add => self.add(req, laps).await,
                Command::Del => self.del(req, laps).await.map(|()| json!({})),
                Command::Check => self.check(req).await.map(|()| json!({})),
                Command::Status => self.status().map(|()| json!({})),
                Command::Gc => self.gc(req).await.map(|()| json!({})),
                Command::Introspect => Ok(self.introspect()),
            }
        }
        .instrument(span)
        .await;
        self.metrics.observe(
            command,
            started.elapsed(),
            out.as_ref().err().map(|e| e.code),
        );
        laps.lap(Phase::Finish);
        out
    }

    /// CNI ADD.
    pub async fn add(&self, req: Request, laps: &mut Laps) -> Result<Value, CniError> {
        require(&req.container_id, "CNI_CONTAINERID")?;
        require(&req.ifname, "CNI_IFNAME")?;
        require(&req.netns, "CNI_NETNS")?;
        let mtu = conf_mtu(&req.config)?.unwrap_or(self.mtu);
        let key = AttachmentKey::new(&req.container_id, &req.ifname);
        {
            let mut entries = self.entries();
            match entries.get(&key) {
                Some(Entry::Ready(rec)) => {
                    tracing::debug!(ip = %rec.addr, "repeated ADD: returning the existing result");
                    return Ok(Value::clone(&rec.result));
                }
                Some(Entry::Adding) => {
                    return Err(CniError::new(
                        code::TRY_AGAIN_LATER,
                        format!(
                            "an ADD for container {} ({}) is already in progress",
                            key.container_id, key.ifname
                        ),
                    ))
                }
                Some(Entry::Deleting) => {
                    return Err(CniError::new(
                        code::TRY_AGAIN_LATER,
                        format!(
                            "container {} ({}) is being deleted",
                            key.container_id, key.ifname
                        ),
                    ))
                }
                None => {
                    entries.insert(key.clone(), Entry::Adding);
                }
            }
        }
        let mut rollback = Rollback {
            service: self,
            key: &key,
            armed: true,
            policy_veth: None,
            journaled: false,
        };
        laps.lap(Phase::Begin);
        let lease = self.allocate(&key).await?;
        laps.lap(Phase::Alloc);
        let pod = PodNet {
            netns: req.netns.clone(),
            ifname: req.ifname.clone(),
            host_ifname: naming::host_veth_name(
                req.args.namespace.as_deref(),
                req.args.name.as_deref(),
                &req.container_id,
                &req.ifname,
            ),
            addr: lease.addr,
            mtu,
            eni_table: eni_table(lease.eni_index),
            alias: alias_for(
                &req.container_id,
                &req.ifname,
                &req.netns,
                lease.eni_index,
                mtu,
            ),
        };
        let macs = VethMacs::random();
        let result = add_result(&pod, macs);
        let mut record = PodRecord {
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            netns: req.netns.clone(),
            namespace: req.args.namespace.clone(),
            name: req.args.name.clone(),
            addr: lease.addr,
            eni_index: lease.eni_index,
            host_ifname: pod.host_ifname.clone(),
            host_ifindex: WIRING_PENDING,
            mtu,
            created_unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            result: Arc::new(result.clone()),
        };
        // Journaled before the wiring, so its fsync runs while the kernel
        // works: ADD then waits for whichever of the two takes longer, not
        // for both. Until the wiring is confirmed the record names no host
        // veth index (see `identity::WIRING_PENDING`). Queued after the
        // address was taken, so the journal orders it after any DEL that
        // freed this address.
        let commit = self.store.put(record.clone());
        rollback.journaled = true;
        laps.lap(Phase::Record);
        // Armed before the hook runs: a hook that fails may still have
        // recorded the pod, and a rollback must make it forget it.
        rollback.policy_veth = Some(pod.host_ifname.clone());
        self.add_policy(&req, &pod.host_ifname)?;
        laps.lap(Phase::Policy);
        let wired = blocking(|| self.dataplane.add_pod(&pod, macs, laps))
            .map_err(|e| dataplane_error(e, "ADD"))?;
        record.host_ifindex = wired.host_ifindex;
        // The index can be read back from the kernel after a crash: no
        // fsync of its own.
        self.store.put_lazy(record.clone());
        self.entries().insert(key.clone(), Entry::Ready(record));
        rollback.armed = false;
        // ADD answers only once its allocation is durable (group commit:
        // concurrent ADDs share the fsync).
        laps.lap(Phase::Finish);
        let durable = commit.durable().await;
        laps.lap(Phase::Journal);
        if let Err(e) = durable {
            tracing::error!(error = %e, "allocation not durable; undoing the ADD");
            self.undo_add(&key);
            return Err(CniError::new(
                code::INTERNAL,
                format!("ADD not recorded: {e}"),
            ));
        }
        tracing::info!(ip = %lease.addr, host_veth = %pod.host_ifname, eni_index = lease.eni_index, "pod added");
        Ok(result)
    }

    /// Unwires and forgets an ADD whose allocation could not be made
    /// durable: answering success for it would break the promise that a
    /// successful ADD survives a crash.
    fn undo_add(&self, key: &AttachmentKey) {
        let Ok(Some((rec, _commit))) = self.begin_delete(key) else {
            return;
        };
        let (addr, table, index) = (rec.addr, eni_table(rec.eni_index), rec.host_ifindex);
        let name = rec.host_ifname.clone();
        let unwired = blocking(|| {
            self.dataplane.del_pod(addr, table, index)?;
            // Unrouted, the veth is no longer the pod's way in: as after a
            // DEL, one that will not go now is the reaper's. Keeping the
            // attachment for it would answer a repeated ADD with a pod
            // that has no route.
            if let Err(e) = self.dataplane.reap_link(index, &name) {
                tracing::warn!(host_veth = %name, error = %e, "could not delete the veth of an undone ADD; reaping it later");
                self.reaper.schedule(index, name.clone());
            }
            Ok::<_, DataplaneError>(())
        });
        self.finish_delete(key, rec, unwired.is_ok());
    }

    /// An address for `key`. When the pool is empty but can still grow, waits
    /// for it (up to [`GROWTH_WAIT`]), retrying after every step the pool
    /// takes: a burst of ADDs larger than the warm pool then completes
    /// instead of failing, even if other ADDs win the first new addresses or
    /// the first step only attached an ENI.
    async fn allocate(&self, key: &AttachmentKey) -> Result<Lease, CniError> {
        let deadline = tokio::time::Instant::now() + GROWTH_WAIT;
        let mut waited = false;
        loop {
            if let Ok(lease) = self.alloc.allocate(key) {
                return Ok(lease);
            }
            let now = tokio::time::Instant::now();
            if !self.pool.can_grow() || now >= deadline {
                break;
            }
            if !waited {
                tracing::info!("pool empty; waiting for it to grow");
                waited = true;
            }
            self.pool.wait_for_growth(deadline - now).await;
        }
        let usage = self.alloc.usage();
        let msg = self.pool.exhausted_message(usage);
        tracing::warn!(%msg, "ADD refused");
        Err(if self.pool.can_grow() {
            CniError::new(
                code::TRY_AGAIN_LATER,
                format!("the address pool is still growing; {msg}"),
            )
        } else {
            CniError::new(code::POOL_EXHAUSTED, msg)
        })
    }

    /// CNI DEL. Removes the host route (and rules) and frees the address.
    /// The veth goes away with the pod's namespace, which the runtime
    /// destroys after DEL; if it is still there after the reap delay we
    /// delete it then. Deleting it here would make every DEL wait ≈ 20 ms for
    /// the kernel's RCU grace period under the RTNL lock — the reason the
    /// reference `ptp` plugin's DEL is slow.
    pub async fn del(&self, req: Request, laps: &mut Laps) -> Result<(), CniError> {
        require(&req.container_id, "CNI_CONTAINERID")?;
        let ifname = if req.ifname.is_empty() {
            "eth0"
        } else {
            &req.ifname
        };
        let key = AttachmentKey::new(&req.container_id, ifname);
        let Some((record, commit)) = self.begin_delete(&key)? else {
            tracing::debug!("DEL for an unknown attachment: nothing to do");
            return Ok(());
        };
        let (addr, table, index) = (
            record.addr,
            eni_table(record.eni_index),
            record.host_ifindex,
        );
        laps.lap(Phase::Begin);
        let unwired = blocking(|| self.dataplane.del_pod(addr, table, index));
        laps.lap(Phase::Veth);
        let ok = unwired.is_ok();
        self.finish_delete(&key, record.clone(), ok);
        unwired.map_err(|e| dataplane_error(e, "DEL"))?;
        laps.lap(Phase::Finish);
        // DEL answers once the release is durable: a crash after it must
        // not bring back an allocation the runtime was told is gone.
        let durable = commit.durable().await;
        laps.lap(Phase::Journal);
        // Unwired and forgotten whether or not the release is durable: a
        // retried DEL finds nothing to do, so the veth is queued now.
        self.reaper
            .schedule(record.host_ifindex, record.host_ifname.clone());
        durable.map_err(|e| CniError::new(code::INTERNAL, format!("DEL not recorded: {e}")))?;
        tracing::info!(ip = %addr, "pod deleted");
        Ok(())
    }

    /// Claims an attachment for removal (Ready → Deleting), so a concurrent
    /// DEL or GC of the same attachment cannot unwire it twice — the second
    /// could remove what a new pod got since — and queues its release to the
    /// journal at once, so the fsync runs while the kernel unwires it.
    /// `None` if it is unknown.
    fn begin_delete(
        &self,
        key: &AttachmentKey,
    ) -> Result<Option<(PodRecord, crate::store::Commit)>, CniError> {
        let mut entries = self.entries();
        match entries.get(key) {
            None => Ok(None),
            Some(Entry::Adding) => Err(CniError::new(
                code::TRY_AGAIN_LATER,
                format!("an ADD for container {} is in progress", key.container_id),
            )),
            Some(Entry::Deleting) => Err(CniError::new(
                code::TRY_AGAIN_LATER,
                format!("a DEL for container {} is in progress", key.container_id),
            )),
            Some(Entry::Ready(_)) => match entries.insert(key.clone(), Entry::Deleting) {
                Some(Entry::Ready(rec)) => {
                    let commit = self.store.del(rec.key());
                    Ok(Some((rec, commit)))
                }
                _ => unreachable!("checked Ready under the same lock"),
            },
        }
    }

    /// Ends what [`Self::begin_delete`] started: forgets the attachment and
    /// frees its address under the same lock (so no ADD of the same key sees
    /// one without the other), or, if unwiring failed, records it again and
    /// puts it back. The release was journaled before the address goes back
    /// to the allocator, so an ADD that gets the address next is journaled
    /// after it.
    fn finish_delete(&self, key: &AttachmentKey, record: PodRecord, unwired: bool) {
        let mut entries = self.entries();
        if unwired {
            entries.remove(key);
            self.alloc.release(key);
            if let Some(engine) = &self.policy {
                engine.pod_deleted(&record.host_ifname);
            }
        } else {
            // Still wired (maybe in part: a batch can fail half-way):
            // undo the journaled release, durably and without waiting for
            // it. Rare, and the kernel's leftovers are no record to trust.
            drop(self.store.put(record.clone()));
            entries.insert(key.clone(), Entry::Ready(record));
        }
    }

    /// CNI CHECK: the attachment exists and the kernel matches it.
    pub async fn check(&self, req: Request) -> Result<(), CniError> {
        require(&req.container_id, "CNI_CONTAINERID")?;
        require(&req.ifname, "CNI_IFNAME")?;
        require(&req.netns, "CNI_NETNS")?;
        let key = AttachmentKey::new(&req.container_id, &req.ifname);
        let record = match self.entries().get(&key) {
            Some(Entry::Ready(rec)) => rec.clone(),
            _ => {
                return Err(CniError::new(
                    code::UNKNOWN_CONTAINER,
                    format!(
                        "no attachment for container {} ({})",
                        key.container_id, key.ifname
                    ),
                ))
            }
        };
        if let Some(prev) = prev_result_ip(&req.config) {
            if prev != format!("{}/32", record.addr) {
                return Err(CniError::new(
                    code::CHECK_FAILED,
                    format!("prevResult has {prev} but the pod holds {}/32", record.addr),
                ));
            }
        }
        let mut pod = record.pod_net();
        pod.netns = req.netns.clone();
        blocking(|| self.dataplane.check_pod(&pod)).map_err(|e| dataplane_error(e, "CHECK"))
    }

    /// CNI STATUS: ready when an ADD could get an address now or soon.
    pub fn status(&self) -> Result<(), CniError> {
        let usage = self.alloc.usage();
        if !self.pool.is_ready() {
            return Err(CniError::new(
                code::PLUGIN_NOT_AVAILABLE,
                "ipamd is filling its address pool",
            ));
        }
        if usage.free() == 0 && !self.pool.can_grow() {
            return Err(CniError::new(
                code::PLUGIN_NOT_AVAILABLE,
                self.pool.exhausted_message(usage),
            ));
        }
        Ok(())
    }

    /// CNI GC: releases every attachment not listed in
    /// `cni.dev/valid-attachments`.
    pub async fn gc(&self, req: Request) -> Result<(), CniError> {
        let valid = valid_attachments(&req.config)?;
        let stale: Vec<AttachmentKey> = self
            .entries()
            .iter()
            .filter(|(k, e)| {
                matches!(e, Entry::Ready(_))
                    && !valid.contains(*k)
                    && !k.container_id.starts_with(UNKNOWN_OWNER_PREFIX)
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut failures = Vec::new();
        for key in &stale {
            // Skipped if a DEL got there first, or it is no longer Ready.
            let Ok(Some((rec, commit))) = self.begin_delete(key) else {
                continue;
            };
            let (addr, table, index) = (rec.addr, eni_table(rec.eni_index), rec.host_ifindex);
            let name = rec.host_ifname.clone();
            let unwired = blocking(|| {
                self.dataplane.del_pod(addr, table, index)?;
                // The runtime says this attachment is gone: no namespace
                // teardown will take the veth with it.
                self.dataplane.reap_link(index, &name)
            });
            let ok = unwired.is_ok();
            self.finish_delete(key, rec, ok);
            if ok {
                if let Err(e) = commit.durable().await {
                    failures.push(format!("{}: {e}", key.container_id));
                }
            }
            match unwired {
                Ok(_) => {
                    tracing::info!(container_id = %key.container_id, ip = %addr, "GC released stale attachment")
                }
                Err(e) => failures.push(format!("{}: {e}", key.container_id)),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                code::DATAPLANE,
                format!("GC could not release {} attachments", failures.len()),
            )
            .with_details(failures.join("; ")))
        }
    }

    /// Takes back the attachments reconcile kept after a restart (see
    /// `crate::reconcile`): their addresses were reserved in the allocator
    /// before the pool was filled, so they are never handed to another pod,
    /// and DEL, CHECK and a repeated ADD of those pods work as before.
    pub fn restore(&self, records: Vec<PodRecord>) {
        let mut entries = self.entries();
        for rec in records {
            let key = AttachmentKey::new(&rec.container_id, &rec.ifname);
            if self.alloc.lookup(&key).is_none_or(|l| l.addr != rec.addr) {
                tracing::warn!(
                    container_id = %rec.container_id, ip = %rec.addr,
                    "restored pod's address is not in the pool yet; it stays reserved for it"
                );
            }
            entries.insert(key, Entry::Ready(rec));
        }
        tracing::info!(pods = entries.len(), "pods restored");
    }

    /// Every wired attachment.
    pub fn records(&self) -> Vec<PodRecord> {
        let mut out: Vec<PodRecord> = self
            .entries()
            .values()
            .filter_map(|e| match e {
                Entry::Ready(r) => Some(r.clone()),
                Entry::Adding | Entry::Deleting => None,
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.namespace, &a.name, &a.container_id).cmp(&(&b.namespace, &b.name, &b.container_id))
        });
        out
    }

    /// The pool and pod view for `ipamd status`.
    pub fn introspect(&self) -> Value {
        let usage = self.alloc.usage();
        let node = self.pool.node();
        let enis: Vec<Value> = self
            .pool
            .enis()
            .iter()
            .map(|e| {
                json!({
                    "id": e.id.0, "deviceIndex": e.device_index, "mac": e.mac.to_string(),
                    "subnet": e.subnet.cidr.to_string(), "primaryIp": e.primary_ip.to_string(),
                    "secondaryIps": e.secondary_ips.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "prefixes": e.prefixes.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let cooling = self.alloc.cooling().min(usage.free());
        let mut view = json!({
            "node": { "instanceId": node.instance_id, "instanceType": node.limits.name },
            "pool": {
                "total": usage.total, "used": usage.used, "free": usage.free(),
                "warm": usage.free() - cooling, "cooling": cooling,
                "target": self.pool.desired_total(),
                "capacity": self.pool.limits().capacity(), "ready": self.pool.is_ready(),
                "maxEnis": self.pool.limits().max_enis,
                "cooldownSeconds": self.alloc.cooldown().as_secs(),
                "cooldownBypassed": self.alloc.cooldown_bypassed(),
                "blocked": self.pool.blocked_reason(),
                "prefixFallback": self.pool.in_prefix_fallback(),
            },
            "enis": enis,
            "pods": self.records(),
            "metrics": self.metrics.snapshot(),
            "timings": self.metrics.timings().snapshot(),
            "ec2": { "lastErrors": self.metrics.ec2().last_errors() },
        });
        for (name, render) in self
            .sections
            .lock()
            .expect("status sections poisoned")
            .iter()
        {
            view[*name] = render();
        }
        view
    }
}

/// Runs a short blocking dataplane call (a few netlink round trips) on the
/// current thread. `block_in_place` hands this worker's other tasks to
/// another thread first, so nothing waits behind us, and — unlike
/// `spawn_blocking` — costs no hop to another thread and back on the pod
/// path. The call may enter a pod's namespace; it always returns to the
/// node's before it ends (or aborts the process), so the thread is never
/// left in the wrong place.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn require(value: &str, var: &str) -> Result<(), CniError> {
    if value.is_empty() {
        Err(CniError::new(
            code::INVALID_ENV,
            format!("missing required environment variable {var}"),
        ))
    } else {
        Ok(())
    }
}

fn conf_mtu(config: &Value) -> Result<Option<u32>, CniError> {
    match config.get("mtu") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(m) if (576..=9001).contains(&m) => Ok(Some(m as u32)),
            _ => Err(CniError::new(
                code::INVALID_NETWORK_CONFIG,
                format!("network config key mtu must be an integer from 576 to 9001, got {v}"),
            )),
        },
    }
}

fn prev_result_ip(config: &Value) -> Option<String> {
    config
        .get("prevResult")?
        .get("ips")?
        .get(0)?
        .get("address")?
        .as_str()
        .map(str::to_string)
}

fn valid_attachments(config: &Value) -> Result<HashSet<AttachmentKey>, CniError> {
    // The spec's drafts called it `cni.dev/attachments`. Without either,
    // GC must not guess: an empty list would tear down every pod.
    let list = match config
        .get("cni.dev/valid-attachments")
        .or_else(|| config.get("cni.dev/attachments"))
    {
        None => {
            return Err(CniError::new(
                code::INVALID_NETWORK_CONFIG,
                "GC needs cni.dev/valid-attachments in the network config",
            ))
        }
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(CniError::new(
                code::INVALID_NETWORK_CONFIG,
                "cni.dev/valid-attachments must be a list of {containerID, ifname}",
            ))
        }
    };
    list.iter()
        .map(|item| {
            let id = item.get("containerID").and_then(Value::as_str);
            let ifname = item.get("ifname").and_then(Value::as_str);
            match (id, ifname) {
                (Some(id), Some(ifname)) => Ok(AttachmentKey::new(id, ifname)),
                _ => Err(CniError::new(
                    code::INVALID_NETWORK_CONFIG,
                    format!("cni.dev/valid-attachments entry {item} lacks containerID or ifname"),
                )),
            }
        })
        .collect()
}

fn dataplane_error(e: DataplaneError, what: &str) -> CniError {
    match e {
        DataplaneError::Netns(NetnsError::Gone { path }) => CniError::new(
            code::INVALID_ENV,
            format!("{what}: CNI_NETNS {path} does not exist"),
        ),
        DataplaneError::Mismatch(m) => CniError::new(code::CHECK_FAILED, m),
        other => CniError::new(code::DATAPLANE, format!("{what}: {other}")),
    }
}

#[cfg(test)]
pub(crate) mod testkit;

#[cfg(test)]
mod tests;
