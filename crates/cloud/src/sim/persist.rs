//! The simulated node outlives its ipamd process, as an EC2 instance does.
//!
//! [`PersistentSim`] wraps a [`SimCloud`] and writes its state (VPC
//! identity, instance id, ENIs and their addresses) to a file in the state
//! directory after every change; [`PersistentSim::open`] resumes from it.
//! Without this a restarted ipamd would face a brand-new instance whose
//! ENIs carry other MACs than the links already on the node, and reconcile
//! could not compare allocations with the cloud. A crash between a change
//! and its save loses that change from the books only: the next attach
//! reuses the same ENI number (hence MAC, so the link is taken over) and an
//! address the books forgot is still held by its pod in the allocator.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::addresses::SubnetAddresses;
use super::{lookup_limits, Behaviour, Fabric, SimCloud, SimConfig, SimError, SimVpc, VpcState};
use crate::{Cloud, DetachedEni, Eni, EniId, MacAddr, NodeInfo, Result, Subnet};
use ipnetwork::Ipv4Network;

/// File name in the state directory.
pub const SIM_STATE_FILE: &str = "sim-cloud.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedEni {
    id: String,
    mac: [u8; 6],
    device_index: u32,
    primary_ip: Ipv4Addr,
    secondary_ips: Vec<Ipv4Addr>,
    /// Delegated /28s; absent in files written before prefix delegation.
    /// (network, length) pairs: ipnetwork has no serde here.
    #[serde(default)]
    prefixes: Vec<(Ipv4Addr, u8)>,
}

/// What is saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedNode {
    instance_id: String,
    instance_type: String,
    vpc_id: String,
    vpc_cidr: String,
    subnet_id: String,
    subnet_cidr: String,
    #[serde(default)]
    security_group: Option<String>,
    tag: u64,
    enis_created: u32,
    enis: Vec<SavedEni>,
}

impl SimCloud {
    fn save_state(&self) -> SavedNode {
        let enis = self
            .lock()
            .values()
            .map(|e| SavedEni {
                id: e.id.0.clone(),
                mac: e.mac.0,
                device_index: e.device_index,
                primary_ip: e.primary_ip,
                secondary_ips: e.secondary_ips.clone(),
                prefixes: e
                    .prefixes
                    .iter()
                    .map(|p| (p.network(), p.prefix()))
                    .collect(),
            })
            .collect();
        SavedNode {
            instance_id: self.instance_id.clone(),
            instance_type: self.limits.name.clone(),
            vpc_id: self.vpc.id.clone(),
            vpc_cidr: self.vpc.cidr.to_string(),
            subnet_id: self.vpc.subnet.id.clone(),
            subnet_cidr: self.vpc.subnet.cidr.to_string(),
            security_group: Some(self.vpc.security_group.clone()),
            tag: self.vpc.tag,
            enis_created: self.vpc.lock().enis_created,
            enis,
        }
    }

    /// The node of `saved`, if it matches `config`; its ENIs are
    /// materialised again (a no-op for links already there).
    async fn resume(
        config: &SimConfig,
        saved: SavedNode,
        fabric: Arc<dyn Fabric>,
    ) -> std::result::Result<Option<SimCloud>, SimError> {
        let limits = lookup_limits(&config.instance_type)?;
        if saved.instance_type != config.instance_type
            || saved.vpc_cidr != config.vpc_cidr.to_string()
            || saved.subnet_cidr != config.subnet_cidr.to_string()
        {
            return Ok(None);
        }
        // Validates the CIDRs as a new VPC would.
        let fresh = SimVpc::with_behaviour(
            config.vpc_cidr,
            config.subnet_cidr,
            Behaviour {
                latencies: config.api_latency.latencies(),
                ..Behaviour::default()
            },
        )?;
        let subnet = Subnet {
            id: saved.subnet_id,
            cidr: fresh.subnet.cidr,
        };
        let mut addresses = SubnetAddresses::new(subnet.cidr);
        let mut enis = BTreeMap::new();
        for e in saved.enis {
            let ips: Vec<Ipv4Addr> = std::iter::once(e.primary_ip)
                .chain(e.secondary_ips.iter().copied())
                .collect();
            for ip in ips {
                addresses.mark_used(ip);
            }
            let prefixes: Vec<Ipv4Network> = e
                .prefixes
                .iter()
                .filter_map(|&(net, len)| Ipv4Network::new(net, len).ok())
                .collect();
            for prefix in &prefixes {
                for ip in prefix.iter() {
                    addresses.mark_used(ip);
                }
            }
            enis.insert(
                e.device_index,
                Eni {
                    id: EniId(e.id),
                    mac: MacAddr(e.mac),
                    device_index: e.device_index,
                    subnet: subnet.clone(),
                    primary_ip: e.primary_ip,
                    secondary_ips: e.secondary_ips,
                    prefixes,
                },
            );
        }
        let vpc = Arc::new(SimVpc {
            id: saved.vpc_id,
            cidr: fresh.cidr,
            subnet,
            security_group: saved.security_group.unwrap_or(fresh.security_group),
            tag: saved.tag,
            state: Mutex::new(VpcState {
                addresses,
                enis_created: saved.enis_created,
                detached: BTreeMap::new(),
            }),
            gate: fresh.gate,
        });
        let cloud = SimCloud {
            instance_id: saved.instance_id,
            limits,
            vpc,
            enis: Mutex::new(enis),
            lagging: Mutex::new(Vec::new()),
            fabric,
        };
        let all: Vec<Eni> = cloud.lock().values().cloned().collect();
        for eni in all {
            if let Err(source) = cloud.fabric.materialize(&eni, eni.is_primary()).await {
                return Err(SimError::Fabric {
                    eni: eni.id,
                    source,
                });
            }
        }
        tracing::info!(instance = %cloud.instance_id, enis = cloud.lock().len(), "simulated instance resumed");
        Ok(Some(cloud))
    }
}

/// A [`SimCloud`] whose state is saved to a file after every change.
pub struct PersistentSim {
    inner: SimCloud,
    path: PathBuf,
}

impl PersistentSim {
    /// Resumes the node saved in `dir` if it matches `config`, otherwise
    /// starts a new one (and saves it).
    pub async fn open(
        dir: &Path,
        config: SimConfig,
        fabric: Arc<dyn Fabric>,
    ) -> std::result::Result<Self, SimError> {
        let path = dir.join(SIM_STATE_FILE);
        let saved: Option<SavedNode> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let inner = match saved {
            Some(s) => match SimCloud::resume(&config, s, fabric.clone()).await? {
                Some(c) => c,
                None => SimCloud::new(config, fabric).await?,
            },
            None => SimCloud::new(config, fabric).await?,
        };
        let this = PersistentSim { inner, path };
        this.save();
        Ok(this)
    }

    fn save(&self) {
        let state = self.inner.save_state();
        let Some(dir) = self.path.parent() else {
            return;
        };
        let written = serde_json::to_vec(&state)
            .map_err(std::io::Error::from)
            .and_then(|b| vpc_cni_durable_file::write_atomically(dir, SIM_STATE_FILE, &b));
        if let Err(e) = written {
            tracing::warn!(error = %e, "could not save the simulated node's state");
        }
    }
}

#[async_trait]
impl Cloud for PersistentSim {
    async fn node(&self) -> Result<NodeInfo> {
        self.inner.node().await
    }

    async fn enis(&self) -> Result<Vec<Eni>> {
        self.inner.enis().await
    }

    async fn attach_eni(&self, device_index: u32) -> Result<Eni> {
        let out = self.inner.attach_eni(device_index).await;
        self.save();
        out
    }

    async fn assign_ips(&self, eni: &EniId, count: u32) -> Result<Vec<Ipv4Addr>> {
        let out = self.inner.assign_ips(eni, count).await;
        self.save();
        out
    }

    async fn unassign_ips(&self, eni: &EniId, ips: &[Ipv4Addr]) -> Result<()> {
        let out = self.inner.unassign_ips(eni, ips).await;
        self.save();
        out
    }

    async fn assign_prefixes(&self, eni: &EniId, count: u32) -> Result<Vec<Ipv4Network>> {
        let out = self.inner.assign_prefixes(eni, count).await;
        self.save();
        out
    }

    async fn unassign_prefixes(&self, eni: &EniId, prefixes: &[Ipv4Network]) -> Result<()> {
        let out = self.inner.unassign_prefixes(eni, prefixes).await;
        self.save();
        out
    }

    async fn detach_and_delete_eni(&self, eni: &EniId) -> Result<()> {
        let out = self.inner.detach_and_delete_eni(eni).await;
        self.save();
        out
    }

    async fn detached_enis(&self) -> Result<Vec<DetachedEni>> {
        self.inner.detached_enis().await
    }

    async fn delete_eni(&self, eni: &EniId) -> Result<()> {
        let out = self.inner.delete_eni(eni).await;
        self.save();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::NoFabric;

    #[tokio::test]
    async fn a_restarted_node_finds_its_enis_and_addresses() {
        let dir = std::env::temp_dir().join(format!("vpc-cni-simstate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fabric: Arc<dyn Fabric> = Arc::new(NoFabric);
        let first = PersistentSim::open(&dir, SimConfig::default(), fabric.clone())
            .await
            .unwrap();
        let primary = first.enis().await.unwrap()[0].clone();
        let ips = first.assign_ips(&primary.id, 3).await.unwrap();
        let second_eni = first.attach_eni(1).await.unwrap();
        let before = first.enis().await.unwrap();
        let id = first.node().await.unwrap().instance_id;
        drop(first);
        let again = PersistentSim::open(&dir, SimConfig::default(), fabric)
            .await
            .unwrap();
        assert_eq!(again.node().await.unwrap().instance_id, id);
        assert_eq!(again.enis().await.unwrap(), before);
        // Taken addresses stay taken; ENI numbers (MACs) continue.
        let more = again.assign_ips(&primary.id, 2).await.unwrap();
        assert!(more
            .iter()
            .all(|ip| !ips.contains(ip) && *ip != second_eni.primary_ip));
        let third = again.attach_eni(2).await.unwrap();
        assert_ne!(third.mac, second_eni.mac);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
