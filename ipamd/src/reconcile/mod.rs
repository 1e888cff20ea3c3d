//! Reconcile on start: what the checkpoint says, against what the kernel,
//! the cloud and (later, through CNI GC and CHECK) the runtime say.
//!
//! * A pod whose host veth or network namespace is still there is alive: it
//!   keeps its address, whatever else is missing.
//! * A pod with neither is gone: its host route and rules are removed and its
//!   address released — into the allocator's cooldown, so it rests for
//!   `IP_COOLDOWN_PERIOD` before anyone else gets it.
//! * A host veth with a /32 route through it but no allocation (an ADD that
//!   crashed before answering, or a lost checkpoint) is rebuilt from the
//!   owner its alias names ([`Owner`]); without an alias (a node
//!   coming from aws-node) its address is held under a placeholder key
//!   ([`UNKNOWN_OWNER_PREFIX`]) so it is never handed out.
//! * A host veth without a route is a half-done ADD that never answered: it
//!   is deleted, so the runtime's retry starts clean.
//! * Two allocations of one address: the one the kernel routes wins.
//! * The cloud says which ENI holds each address; a record is corrected to
//!   it, and an address no ENI holds is reported (kept while its pod lives).
//!
//! [`plan`] is pure (injected probes for namespaces and MACs) and unit
//! tested; [`apply`] carries a plan out. The runtime's view arrives after
//! start: CNI GC releases attachments the runtime no longer lists, CHECK
//! compares one pod with the kernel (both in the pod service).

pub mod kernel;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use crate::alloc::{Allocator, AttachmentKey};
use crate::cloud::{Eni, MacAddr};
use crate::dataplane::{naming, Dataplane, PodNet, VethMacs};
use crate::identity::{
    add_result, eni_table, Owner, PodRecord, UNKNOWN_OWNER_PREFIX, WIRING_PENDING,
};
use crate::store::awsnode::AwsNodeAllocation;
use crate::store::{Record, RecordKey};

use self::kernel::{HostLink, KernelView};

/// What reconcile starts from.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Our checkpoint's allocations.
    pub checkpoint: Vec<PodRecord>,
    /// aws-node's allocations (only when our checkpoint is absent).
    pub migrated: Vec<AwsNodeAllocation>,
    /// Host veths and routes.
    pub kernel: KernelView,
    /// The node's ENIs as the cloud reports them.
    pub enis: Vec<Eni>,
    /// MTU for allocations that do not say (migrated ones).
    pub default_mtu: u32,
}

/// An allocation to give back.
#[derive(Debug, Clone)]
pub struct Release {
    /// The allocation.
    pub record: PodRecord,
    /// Why.
    pub reason: &'static str,
    /// Remove its host route and rules (not when another allocation of the
    /// same address is kept: they are that one's too).
    pub unwire: bool,
}

/// Counts, for the log and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Allocations kept from the checkpoint.
    pub kept: usize,
    /// Allocations taken over from aws-node's checkpoint.
    pub migrated: usize,
    /// Allocations rebuilt from host veth aliases.
    pub rebuilt: usize,
    /// Addresses held for host veths with a route but no known owner.
    pub held_unknown: usize,
    /// Allocations released (pod gone, or duplicate).
    pub released: usize,
    /// Host veths deleted (half-done ADDs).
    pub reaped: usize,
    /// Kept allocations whose address no ENI holds in the cloud's view.
    pub not_in_cloud: usize,
    /// Allocations dropped because another one holds the same address.
    pub duplicates: usize,
}

/// What to do.
#[derive(Debug, Default)]
pub struct Plan {
    /// Allocations that stay (the new checkpoint and the pod table).
    pub keep: Vec<PodRecord>,
    /// Allocations to give back after cooldown.
    pub release: Vec<Release>,
    /// Host veths to delete.
    pub reap: Vec<HostLink>,
    /// Counts.
    pub report: Report,
}

impl Plan {
    /// Every address to reserve before the pool fills: kept ones, and
    /// released ones too (they are released into the cooldown afterwards).
    pub fn held(&self) -> Vec<(AttachmentKey, Ipv4Addr)> {
        self.keep
            .iter()
            .chain(self.release.iter().map(|r| &r.record))
            .map(|r| (AttachmentKey::new(&r.container_id, &r.ifname), r.addr))
            .collect()
    }
}

struct Candidate {
    record: PodRecord,
    link: Option<HostLink>,
    live: bool,
    routed: bool,
    migrated: bool,
}

/// Decides, from `inputs`, what stays, what goes, and what is rebuilt.
/// `netns_exists` tells whether a pod's namespace path is still there;
/// `pod_mac` reads a pod interface's MAC (for a rebuilt ADD result).
pub fn plan(
    inputs: Inputs,
    netns_exists: impl Fn(&str) -> bool,
    pod_mac: impl Fn(&str, &str) -> Option<MacAddr>,
) -> Plan {
    let cloud: HashMap<Ipv4Addr, u32> = inputs
        .enis
        .iter()
        .flat_map(|e| {
            // Pod addresses: secondary IPs, and every address of a
            // delegated /28 prefix.
            let from_prefixes = e.prefixes.iter().flat_map(|p| p.iter());
            e.secondary_ips
                .iter()
                .copied()
                .chain(from_prefixes)
                .map(move |ip| (ip, e.device_index))
        })
        .collect();
    let kernel = &inputs.kernel;
    let mut seen: HashSet<RecordKey> = HashSet::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    let migrated = inputs
        .migrated
        .iter()
        .map(|a| (migrated_record(a, kernel, &cloud, inputs.default_mtu), true));
    let ours = inputs.checkpoint.into_iter().map(|r| (r, false));
    for (record, migrated) in ours.chain(migrated) {
        if !seen.insert(record.key()) {
            continue;
        }
        let link = kernel
            .links
            .get(&record.host_ifindex)
            .filter(|l| l.name == record.host_ifname)
            .or_else(|| kernel.link_named(&record.host_ifname))
            .cloned();
        let routed = link
            .as_ref()
            .is_some_and(|l| kernel.routes.get(&record.addr) == Some(&l.index));
        // A record whose wiring was never confirmed (a crash cut its ADD
        // short) is live only if the wiring is complete: the host route, the
        // last thing ADD adds, goes through its veth. Otherwise the runtime
        // never got an answer, and keeping the record would answer a retried
        // ADD with a pod that has no route.
        let live = if record.host_ifindex == WIRING_PENDING {
            routed
        } else {
            link.is_some() || (!record.netns.is_empty() && netns_exists(&record.netns))
        };
        candidates.push(Candidate {
            record,
            link,
            live,
            routed,
            migrated,
        });
    }

    // One address, one holder: the routed one, else the first live one.
    let mut winner: HashMap<Ipv4Addr, usize> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        match winner.get(&c.record.addr) {
            None => {
                winner.insert(c.record.addr, i);
            }
            Some(&w) => {
                let cur = &candidates[w];
                if (c.routed && !cur.routed) || (c.live && !cur.live) {
                    winner.insert(c.record.addr, i);
                }
            }
        }
    }

    let mut out = Plan::default();
    let mut claimed: HashSet<u32> = HashSet::new();
    let mut kept_addrs: HashSet<Ipv4Addr> = HashSet::new();
    for (i, c) in candidates.into_iter().enumerate() {
        let Candidate {
            mut record,
            link,
            live,
            migrated,
            ..
        } = c;
        if winner.get(&record.addr) != Some(&i) {
            out.report.duplicates += 1;
            out.report.released += 1;
            // Its host veth (if any) is left to the runtime: the pod may
            // still run, and its DEL (or namespace teardown) removes it.
            if let Some(l) = link {
                claimed.insert(l.index);
            }
            out.release.push(Release {
                record,
                reason: "another allocation holds the same address",
                unwire: false,
            });
            continue;
        }
        if !live {
            // Its veth, if any, is half-made (unrouted): left unclaimed, so
            // it is reaped below.
            out.report.released += 1;
            out.release.push(Release {
                record,
                reason: "pod gone: no host veth and no network namespace",
                unwire: true,
            });
            continue;
        }
        if let Some(l) = &link {
            claimed.insert(l.index);
            record.host_ifindex = l.index;
        }
        match cloud.get(&record.addr) {
            Some(&eni) => record.eni_index = eni,
            None => out.report.not_in_cloud += 1,
        }
        if migrated {
            out.report.migrated += 1;
        } else {
            out.report.kept += 1;
        }
        kept_addrs.insert(record.addr);
        out.keep.push(record);
    }

    let kept_keys: HashSet<RecordKey> = out.keep.iter().map(Record::key).collect();
    let mut links: Vec<&HostLink> = kernel.links.values().collect();
    links.sort_by_key(|l| l.index);
    for link in links {
        if claimed.contains(&link.index) {
            continue;
        }
        let Some(addr) = kernel.routed_through(link.index) else {
            out.report.reaped += 1;
            out.reap.push(link.clone());
            continue;
        };
        if kept_addrs.contains(&addr) {
            // Routed, but its address is someone else's: leave the kernel
            // alone and hand the address to nobody new.
            continue;
        }
        let owner = link.alias.as_deref().and_then(Owner::from_alias);
        let record = match owner {
            Some(o)
                if !kept_keys.contains(&RecordKey {
                    container_id: o.container_id.clone(),
                    ifname: o.ifname.clone(),
                }) =>
            {
                out.report.rebuilt += 1;
                let mac = (!o.netns.is_empty())
                    .then(|| pod_mac(&o.netns, &o.ifname))
                    .flatten();
                rebuilt_record(
                    &o.container_id,
                    &o.ifname,
                    &o.netns,
                    cloud.get(&addr).copied().unwrap_or(o.eni_index),
                    o.mtu,
                    addr,
                    link,
                    mac,
                )
            }
            _ => {
                out.report.held_unknown += 1;
                rebuilt_record(
                    &format!("{UNKNOWN_OWNER_PREFIX}{}", link.name),
                    "eth0",
                    "",
                    cloud.get(&addr).copied().unwrap_or(0),
                    inputs.default_mtu,
                    addr,
                    link,
                    None,
                )
            }
        };
        kept_addrs.insert(addr);
        out.keep.push(record);
    }
    out
}

fn migrated_record(
    a: &AwsNodeAllocation,
    kernel: &KernelView,
    cloud: &HashMap<Ipv4Addr, u32>,
    mtu: u32,
) -> PodRecord {
    let host_ifname = naming::host_veth_name(
        a.namespace.as_deref(),
        a.name.as_deref(),
        &a.container_id,
        &a.ifname,
    );
    let placeholder = HostLink {
        index: 0,
        name: host_ifname.clone(),
        mac: None,
        alias: None,
    };
    let link = kernel.link_named(&host_ifname).unwrap_or(&placeholder);
    let mut r = rebuilt_record(
        &a.container_id,
        &a.ifname,
        "",
        cloud.get(&a.addr).copied().unwrap_or(0),
        mtu,
        a.addr,
        link,
        None,
    );
    r.namespace = a.namespace.clone();
    r.name = a.name.clone();
    r.created_unix = a.created_unix;
    r
}

#[allow(clippy::too_many_arguments)]
fn rebuilt_record(
    container_id: &str,
    ifname: &str,
    netns: &str,
    eni_index: u32,
    mtu: u32,
    addr: Ipv4Addr,
    link: &HostLink,
    pod_mac: Option<MacAddr>,
) -> PodRecord {
    let pod = PodNet {
        netns: netns.to_string(),
        ifname: ifname.to_string(),
        host_ifname: link.name.clone(),
        addr,
        mtu,
        eni_table: eni_table(eni_index),
        alias: None,
    };
    let macs = VethMacs {
        host: link.mac.unwrap_or(MacAddr([0; 6])),
        pod: pod_mac.unwrap_or(MacAddr([0; 6])),
    };
    PodRecord {
        container_id: container_id.to_string(),
        ifname: ifname.to_string(),
        netns: netns.to_string(),
        namespace: None,
        name: None,
        addr,
        eni_index,
        host_ifname: link.name.clone(),
        host_ifindex: link.index,
        mtu,
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        result: Arc::new(add_result(&pod, macs)),
    }
}

/// Carries out the kernel and allocator side of `plan`, after the pool has
/// been filled (so released addresses that joined it go into its cooldown):
/// unwires and releases gone pods, deletes half-made host veths. Errors are
/// logged and counted, never fatal: a leftover route is better than a node
/// that does not start. Returns how many steps failed.
pub fn apply<D: Dataplane + ?Sized>(
    plan: &Plan,
    dataplane: &Arc<D>,
    alloc: &Arc<Allocator>,
    cooldown: Duration,
) -> usize {
    let mut failed = 0;
    let kept: HashSet<Ipv4Addr> = plan.keep.iter().map(|r| r.addr).collect();
    for rel in &plan.release {
        let r = &rel.record;
        // A record whose wiring was never confirmed has no index: its rules
        // (not tied to a link, so they outlive a destroyed veth) are removed
        // by address alone.
        if rel.unwire && !kept.contains(&r.addr) {
            if let Err(e) = dataplane.del_pod(r.addr, eni_table(r.eni_index), r.host_ifindex) {
                failed += 1;
                tracing::warn!(container_id = %r.container_id, ip = %r.addr, error = %e, "could not remove a gone pod's host route and rules");
            }
        }
        let key = AttachmentKey::new(&r.container_id, &r.ifname);
        if alloc.lookup(&key).is_some() {
            // In the pool: the allocator rests it for the cooldown.
            alloc.release(&key);
        } else {
            // Not in the pool (yet): the reservation itself rests, and is
            // then dropped only if the key has not been given another
            // address since (a retried ADD of the same attachment).
            let (alloc, addr) = (alloc.clone(), r.addr);
            tokio::spawn(async move {
                tokio::time::sleep(cooldown).await;
                alloc.release_held(&key, addr);
            });
        }
        tracing::info!(container_id = %r.container_id, ip = %r.addr, reason = rel.reason, "allocation released after reconcile");
    }
    for link in &plan.reap {
        match dataplane.reap_link(link.index, &link.name) {
            Ok(_) => {
                tracing::info!(host_veth = %link.name, "deleted a host veth no allocation owns (an ADD that never answered)")
            }
            Err(e) => {
                failed += 1;
                tracing::warn!(host_veth = %link.name, error = %e, "could not delete a host veth no allocation owns");
            }
        }
    }
    failed
}

/// Why reconcile could not look at the node.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The kernel could not be read.
    #[error("reading host veths and routes: {0}")]
    Kernel(#[from] crate::dataplane::DataplaneError),
    /// The cloud could not be asked.
    #[error("listing the node's ENIs: {0}")]
    Cloud(#[from] crate::cloud::CloudError),
    /// The planning thread failed.
    #[error("reconcile task failed: {0}")]
    Task(String),
}

/// Reads what reconcile compares (our checkpoint, or aws-node's when ours
/// is absent; the kernel) and plans against `enis`, the cloud's view, which
/// the caller read once for both this and the pool. Logs what it found.
pub async fn prepare<D: Dataplane + ?Sized + 'static>(
    store: &crate::store::Store<PodRecord>,
    dataplane: &Arc<D>,
    enis: Vec<Eni>,
    aws_node_checkpoint: &std::path::Path,
    default_mtu: u32,
) -> Result<Plan, ReconcileError> {
    let loaded = store.load();
    for p in &loaded.problems {
        tracing::error!(problem = %p, "checkpoint damaged; rebuilding from the kernel and the cloud");
    }
    let mut inputs = Inputs {
        default_mtu,
        ..Inputs::default()
    };
    match loaded.records {
        Some(records) => {
            tracing::info!(
                allocations = records.len(),
                version = ?loaded.version,
                journal_entries = loaded.journal_ops,
                "checkpoint read"
            );
            inputs.checkpoint = records;
        }
        None => match crate::store::awsnode::read(aws_node_checkpoint) {
            Ok(None) => tracing::info!("no checkpoint: a first start"),
            Ok(Some(c)) => {
                tracing::info!(path = %aws_node_checkpoint.display(), allocations = c.allocations.len(), "no checkpoint of ours; taking over aws-node's");
                for s in &c.skipped {
                    tracing::warn!(entry = %s, "aws-node allocation not taken");
                }
                inputs.migrated = c.allocations;
            }
            Err(e) => {
                tracing::error!(error = %e, "aws-node's checkpoint unreadable; rebuilding from the kernel")
            }
        },
    }
    let dp = dataplane.clone();
    inputs.kernel = tokio::task::spawn_blocking(move || KernelView::read(&*dp))
        .await
        .map_err(|e| ReconcileError::Task(e.to_string()))??;
    inputs.enis = enis;
    let dp = dataplane.clone();
    // Reading a pod's MAC enters its namespace: not on an async worker.
    let plan = tokio::task::spawn_blocking(move || {
        plan(
            inputs,
            |netns| std::path::Path::new(netns).exists(),
            |netns, ifname| dp.pod_link_mac(netns, ifname).ok().flatten(),
        )
    })
    .await
    .map_err(|e| ReconcileError::Task(e.to_string()))?;
    let r = &plan.report;
    tracing::info!(
        kept = r.kept,
        migrated = r.migrated,
        rebuilt = r.rebuilt,
        held_unknown = r.held_unknown,
        released = r.released,
        reaped = r.reaped,
        not_in_cloud = r.not_in_cloud,
        duplicates = r.duplicates,
        "reconciled allocations with the kernel and the cloud"
    );
    Ok(plan)
}

#[cfg(test)]
mod tests;
