//! The `ec2` provider: [`Cloud`] on real EC2, through aws-sdk-ec2 and IMDSv2.
//!
//! This module is the only place the AWS SDK appears. Endpoints, region and
//! credentials come from the SDK's standard settings (`AWS_ENDPOINT_URL_EC2`,
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT`, `AWS_REGION`, the default credential
//! chain: environment, profile, IRSA web identity, container and instance
//! profile), so tests point it at a local moto server and a loopback IMDS.
//!
//! The SDK makes one attempt per call: retries, backoff and the EC2 budget
//! belong to the layer above ([`Cloud`] callers), which sees typed
//! [`CloudError`]s ([`errors`]) for the EC2 codes it must react to.

mod errors;
pub mod imds;
mod link;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_ec2::primitives::{DateTime, DateTimeFormat};
use aws_sdk_ec2::types::{
    Filter, InstanceType, NetworkInterface, NetworkInterfaceAttachmentChanges,
    NetworkInterfaceStatus, ResourceType, Tag, TagSpecification,
};
use aws_sdk_ec2::Client;
use ipnetwork::Ipv4Network;
use tokio::sync::OnceCell;

use self::errors::Context;
use self::imds::Identity;
use super::limits::{self, InstanceLimits};
use super::{Cloud, CloudError, DetachedEni, Eni, EniId, NodeInfo, Result, Subnet};

/// Tag naming the cluster an ENI belongs to (aws-node's).
pub const TAG_CLUSTER: &str = "cluster.k8s.amazonaws.com/name";
/// Tag naming the instance that created an ENI (aws-node's).
pub const TAG_INSTANCE: &str = "node.k8s.amazonaws.com/instance_id";
/// Tag with the ENI's creation time, RFC 3339 (aws-node's).
pub const TAG_CREATED_AT: &str = "node.k8s.amazonaws.com/createdAt";

/// How long a detach may take before [`Cloud::detach_and_delete_eni`] gives up.
const DETACH_WAIT: Duration = Duration::from_secs(30);
const DETACH_POLL: Duration = Duration::from_millis(250);

/// Settings of the `ec2` provider (read by the daemon's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Settings {
    /// `CLUSTER_NAME`: value of the cluster tag on ENIs we create; without
    /// it the tag is left off (as aws-node does) and leak collection
    /// matches on the instance tag alone.
    pub cluster_name: Option<String>,
    /// `VPC_CNI_ENI_LINK_TIMEOUT_MS` (default 30 000): how long an attach
    /// waits for the ENI's link to appear on the node (EC2 says "up to 10 s";
    /// aws-node waits 5 × 3 s).
    pub link_timeout: Duration,
    /// `VPC_CNI_EC2_TIMEOUT_MS` (default 20 000): one EC2 call's deadline.
    pub call_timeout: Duration,
}

impl Default for Ec2Settings {
    fn default() -> Self {
        Self {
            cluster_name: None,
            link_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(20),
        }
    }
}

/// Why the provider could not start.
#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    /// IMDS did not answer with a usable identity.
    #[error("instance metadata: {0}")]
    Identity(#[source] CloudError),
    /// The node's netlink socket.
    #[error("netlink: {0}")]
    Netlink(#[source] vpc_cni_netlink::Error),
}

/// The `ec2` provider for one node.
pub struct Ec2Cloud {
    client: Client,
    identity: Identity,
    settings: Ec2Settings,
    links: link::LinkWatch,
    limits: OnceCell<InstanceLimits>,
    /// Subnet id → CIDR, seeded with the primary subnet from IMDS.
    subnets: Mutex<HashMap<String, Ipv4Network>>,
    /// Addresses each ENI is known to hold, its primary included. EC2
    /// answers an Assign with the new addresses only, moto with all of them
    /// (the ENI's primary too): the difference against this set is what is
    /// new either way.
    known: Mutex<HashMap<EniId, HashSet<Ipv4Addr>>>,
}

impl Ec2Cloud {
    /// Loads the SDK's configuration, reads the node's identity from IMDS,
    /// and opens a netlink socket in the calling thread's namespace (the
    /// node's) to watch for attached ENIs' links.
    pub async fn new(settings: Ec2Settings) -> std::result::Result<Self, Ec2Error> {
        let imds = aws_config::imds::Client::builder().build();
        let identity = imds::identity(&imds).await.map_err(Ec2Error::Identity)?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(settings.call_timeout)
                    .connect_timeout(Duration::from_secs(3))
                    .build(),
            );
        // The region of the instance, unless the environment names one.
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
            && !identity.region.is_empty()
        {
            loader = loader.region(aws_config::Region::new(identity.region.clone()));
        }
        let sdk = loader.load().await;
        let client = Client::new(&sdk);
        let links = link::LinkWatch::new().map_err(Ec2Error::Netlink)?;
        let subnets = HashMap::from([(identity.subnet.id.clone(), identity.subnet.cidr)]);
        tracing::info!(
            instance_id = %identity.instance_id,
            instance_type = %identity.instance_type,
            subnet = %identity.subnet.id,
            "ec2 provider ready"
        );
        Ok(Self {
            client,
            identity,
            settings,
            links,
            limits: OnceCell::new(),
            subnets: Mutex::new(subnets),
            known: Mutex::new(HashMap::new()),
        })
    }

    /// The identity read from IMDS at start.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    fn ctx_eni<'a>(&'a self, eni: &'a EniId) -> Context<'a> {
        Context {
            eni: Some(eni),
            subnet: Some(&self.identity.subnet.id),
            instance_type: self.limits.get().map(|l| (l.name.as_str(), l.max_enis)),
            ip_limit: self.limits.get().map(|l| l.ipv4_per_eni),
        }
    }

    /// DescribeInstanceTypes once; the embedded table if EC2 will not say.
    async fn instance_limits(&self) -> Result<InstanceLimits> {
        self.limits
            .get_or_try_init(|| async {
                let name = &self.identity.instance_type;
                match describe_instance_type(&self.client, name).await {
                    Ok(l) => Ok(l),
                    Err(e) => match limits::lookup(name) {
                        Some(l) => {
                            tracing::warn!(instance_type = %name, error = %e, "DescribeInstanceTypes failed; using the embedded table");
                            Ok(l)
                        }
                        None => Err(e),
                    },
                }
            })
            .await
            .cloned()
    }

    async fn subnet(&self, id: &str) -> Result<Subnet> {
        if let Some(cidr) = self.subnets.lock().expect("subnet cache poisoned").get(id) {
            return Ok(Subnet {
                id: id.to_string(),
                cidr: *cidr,
            });
        }
        const OP: &str = "DescribeSubnets";
        let out = self
            .client
            .describe_subnets()
            .subnet_ids(id)
            .send()
            .await
            .map_err(|e| errors::map(OP, e, &Context::default()))?;
        let cidr: Ipv4Network = out
            .subnets()
            .first()
            .and_then(|s| s.cidr_block())
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| CloudError::NotFound {
                what: format!("subnet {id}"),
            })?;
        self.subnets
            .lock()
            .expect("subnet cache poisoned")
            .insert(id.to_string(), cidr);
        Ok(Subnet {
            id: id.to_string(),
            cidr,
        })
    }

    /// An SDK ENI as ours. `None` for one without the fields every ENI has.
    async fn convert(&self, ni: &NetworkInterface) -> Result<Option<Eni>> {
        let (Some(id), Some(mac), Some(subnet_id), Some(primary)) = (
            ni.network_interface_id(),
            ni.mac_address().and_then(imds::parse_mac),
            ni.subnet_id(),
            ni.private_ip_address().and_then(|a| a.parse().ok()),
        ) else {
            return Ok(None);
        };
        let device_index = ni
            .attachment()
            .and_then(|a| a.device_index())
            .and_then(|d| u32::try_from(d).ok())
            .unwrap_or(0);
        let secondary_ips: Vec<Ipv4Addr> = ni
            .private_ip_addresses()
            .iter()
            .filter(|p| p.primary() != Some(true))
            .filter_map(|p| p.private_ip_address()?.parse().ok())
            .filter(|ip| *ip != primary)
            .collect();
        let prefixes = ni
            .ipv4_prefixes()
            .iter()
            .filter_map(|p| p.ipv4_prefix()?.parse().ok())
            .collect();
        Ok(Some(Eni {
            id: EniId(id.to_string()),
            mac,
            device_index,
            subnet: self.subnet(subnet_id).await?,
            primary_ip: primary,
            secondary_ips,
            prefixes,
        }))
    }

    fn tags(&self) -> Vec<Tag> {
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        let now = DateTime::from(SystemTime::now())
            .fmt(DateTimeFormat::DateTime)
            .unwrap_or_default();
        let mut tags = vec![
            tag(TAG_INSTANCE, &self.identity.instance_id),
            tag(TAG_CREATED_AT, &now),
        ];
        if let Some(cluster) = &self.settings.cluster_name {
            tags.push(tag(TAG_CLUSTER, cluster));
        }
        tags
    }

    async fn describe_one(&self, eni: &EniId) -> Result<NetworkInterface> {
        const OP: &str = "DescribeNetworkInterfaces";
        let out = self
            .client
            .describe_network_interfaces()
            .network_interface_ids(&eni.0)
            .send()
            .await
            .map_err(|e| errors::map(OP, e, &self.ctx_eni(eni)))?;
        out.network_interfaces()
            .first()
            .cloned()
            .ok_or_else(|| CloudError::NotFound {
                what: format!("ENI {eni}"),
            })
    }

    async fn delete(&self, eni: &EniId) -> Result<()> {
        const OP: &str = "DeleteNetworkInterface";
        self.client
            .delete_network_interface()
            .network_interface_id(&eni.0)
            .send()
            .await
            .map_err(|e| errors::map(OP, e, &self.ctx_eni(eni)))?;
        self.known.lock().expect("known poisoned").remove(eni);
        tracing::info!(eni = %eni, "ENI deleted");
        Ok(())
    }
}

/// The limits of `name` from `DescribeInstanceTypes`.
async fn describe_instance_type(client: &Client, name: &str) -> Result<InstanceLimits> {
    const OP: &str = "DescribeInstanceTypes";
    let out = client
        .describe_instance_types()
        .instance_types(InstanceType::from(name))
        .send()
        .await
        .map_err(|e| errors::map(OP, e, &Context::default()))?;
    let info = out
        .instance_types()
        .first()
        .ok_or_else(|| CloudError::NotFound {
            what: format!("instance type {name}"),
        })?;
    let net = info.network_info();
    let field = |v: Option<i32>, what: &str| {
        v.and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v > 0)
            .ok_or_else(|| CloudError::Api {
                operation: OP,
                message: format!("{name}: no {what}"),
            })
    };
    Ok(InstanceLimits {
        name: name.to_string(),
        max_enis: field(
            net.and_then(|n| n.maximum_network_interfaces()),
            "ENI limit",
        )?,
        ipv4_per_eni: field(
            net.and_then(|n| n.ipv4_addresses_per_interface()),
            "IPv4 limit",
        )?,
        vcpus: field(
            info.v_cpu_info().and_then(|v| v.default_v_cpus()),
            "vCPU count",
        )?,
    })
}

/// `DescribeInstanceTypes` alone, for `ipamd max-pods` (no IMDS, no node):
/// region and credentials from the SDK's standard settings, one attempt
/// with a short deadline so an offline machine falls back to the table fast.
#[derive(Debug, Default)]
pub struct OnlineInstanceTypes;

#[async_trait]
impl limits::InstanceTypes for OnlineInstanceTypes {
    async fn instance_limits(&self, instance_type: &str) -> Result<Option<InstanceLimits>> {
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(Duration::from_secs(5))
                    .connect_timeout(Duration::from_secs(2))
                    .build(),
            )
            .load()
            .await;
        match describe_instance_type(&Client::new(&sdk), instance_type).await {
            Ok(l) => Ok(Some(l)),
            Err(CloudError::NotFound { .. }) => Ok(None),
            Err(CloudError::Rejected { message, .. })
                if message.contains("InvalidInstanceType") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

fn held_by(eni: &Eni) -> HashSet<Ipv4Addr> {
    std::iter::once(eni.primary_ip)
        .chain(eni.secondary_ips.iter().copied())
        .collect()
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

#[async_trait]
impl Cloud for Ec2Cloud {
    async fn node(&self) -> Result<NodeInfo> {
        let id = &self.identity;
        Ok(NodeInfo {
            instance_id: id.instance_id.clone(),
            limits: self.instance_limits().await?,
            vpc_cidrs: id.vpc_cidrs.clone(),
            primary_ip: id.primary_ip,
            primary_mac: id.primary_mac,
            subnet: id.subnet.clone(),
            security_groups: id.security_groups.clone(),
        })
    }

    async fn enis(&self) -> Result<Vec<Eni>> {
        const OP: &str = "DescribeNetworkInterfaces";
        let out = self
            .client
            .describe_network_interfaces()
            .filters(filter("attachment.instance-id", &self.identity.instance_id))
            .send()
            .await
            .map_err(|e| errors::map(OP, e, &Context::default()))?;
        let mut enis = Vec::new();
        for ni in out.network_interfaces() {
            if let Some(eni) = self.convert(ni).await? {
                enis.push(eni);
            }
        }
        enis.sort_by_key(|e| e.device_index);
        let mut known = self.known.lock().expect("known poisoned");
        known.clear();
        for e in &enis {
            known.insert(e.id.clone(), held_by(e));
        }
        Ok(enis)
    }

    async fn attach_eni(&self, device_index: u32) -> Result<Eni> {
        let limits = self.instance_limits().await?;
        let id = &self.identity;
        let ctx = Context {
            subnet: Some(&id.subnet.id),
            instance_type: Some((&limits.name, limits.max_enis)),
            ..Context::default()
        };
        let out = self
            .client
            .create_network_interface()
            .subnet_id(&id.subnet.id)
            .set_groups(Some(id.security_groups.clone()))
            .description(format!("aws-K8S-{}", id.instance_id))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::NetworkInterface)
                    .set_tags(Some(self.tags()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| errors::map("CreateNetworkInterface", e, &ctx))?;
        let created = out.network_interface().ok_or_else(|| CloudError::Api {
            operation: "CreateNetworkInterface",
            message: "no network interface in the answer".into(),
        })?;
        let mut eni = self
            .convert(created)
            .await?
            .ok_or_else(|| CloudError::Api {
                operation: "CreateNetworkInterface",
                message: "the new ENI lacks an id, MAC, subnet or address".into(),
            })?;
        eni.device_index = device_index;
        tracing::info!(eni = %eni.id, mac = %eni.mac, "ENI created");

        let attached = self
            .client
            .attach_network_interface()
            .network_interface_id(&eni.id.0)
            .instance_id(&id.instance_id)
            .device_index(device_index as i32)
            .send()
            .await
            .map_err(|e| errors::map("AttachNetworkInterface", e, &ctx));
        let attachment = match attached {
            Ok(out) => out.attachment_id().unwrap_or_default().to_string(),
            Err(e) => {
                // A created but unattached ENI would leak: take it back now
                // (leak collection catches it if this fails too).
                if let Err(del) = self.delete(&eni.id).await {
                    tracing::warn!(eni = %eni.id, error = %del, "could not delete the ENI whose attach failed");
                }
                return Err(e);
            }
        };
        if let Err(e) = self
            .client
            .modify_network_interface_attribute()
            .network_interface_id(&eni.id.0)
            .attachment(
                NetworkInterfaceAttachmentChanges::builder()
                    .attachment_id(&attachment)
                    .delete_on_termination(true)
                    .build(),
            )
            .send()
            .await
        {
            // Not fatal: the ENI works; leak collection covers a terminated
            // instance's leftovers.
            let e = errors::map("ModifyNetworkInterfaceAttribute", e, &ctx);
            tracing::warn!(eni = %eni.id, error = %e, "could not set DeleteOnTermination");
        }
        self.known
            .lock()
            .expect("known poisoned")
            .insert(eni.id.clone(), held_by(&eni));
        // The pool sets the link up; a link that is late is retried there,
        // so a timeout here is reported, not fatal.
        match self
            .links
            .wait_for(eni.mac, self.settings.link_timeout)
            .await
        {
            Ok(name) => {
                tracing::info!(eni = %eni.id, device_index, link = %name, "ENI attached");
            }
            Err(e) => {
                tracing::warn!(eni = %eni.id, device_index, error = %e, "ENI attached but its link has not appeared yet");
            }
        }
        Ok(eni)
    }

    async fn assign_ips(&self, eni: &EniId, count: u32) -> Result<Vec<Ipv4Addr>> {
        const OP: &str = "AssignPrivateIpAddresses";
        let out = self
            .client
            .assign_private_ip_addresses()
            .network_interface_id(&eni.0)
            .secondary_private_ip_address_count(count as i32)
            .send()
            .await
            .map_err(|e| errors::map(OP, e, &self.ctx_eni(eni)))?;
        let answered: Vec<Ipv4Addr> = out
            .assigned_private_ip_addresses()
            .iter()
            .filter_map(|a| a.private_ip_address()?.parse().ok())
            .collect();
        let mut known = self.known.lock().expect("known poisoned");
        let held = known.entry(eni.clone()).or_default();
        let new: Vec<Ipv4Addr> = answered.into_iter().filter(|ip| held.insert(*ip)).collect();
        tracing::debug!(eni = %eni, count, assigned = new.len(), "addresses assigned");
        Ok(new)
    }

    async fn unassign_ips(&self, eni: &EniId, ips: &[Ipv4Addr]) -> Result<()> {
        const OP: &str = "UnassignPrivateIpAddresses";
        if ips.is_empty() {
            return Ok(());
        }
        self.client
            .unassign_private_ip_addresses()
            .network_interface_id(&eni.0)
            .set_private_ip_addresses(Some(ips.iter().map(|ip| ip.to_string()).collect()))
            .send()
            .await
            .map_err(|e| errors::map(OP, e, &self.ctx_eni(eni)))?;
        if let Some(held) = self.known.lock().expect("known poisoned").get_mut(eni) {
            for ip in ips {
                held.remove(ip);
            }
        }
        Ok(())
    }

    async fn assign_prefixes(&self, eni: &EniId, count: u32) -> Result<Vec<Ipv4Network>> {
        const OP: &str = "AssignPrivateIpAddresses";
        let out = self
            .client
            .assign_private_ip_addresses()
            .network_interface_id(&eni.0)
            .ipv4_prefix_count(count as i32)
            .send()
            .await
            .map_err(|e| errors::map(OP, e, &self.ctx_eni(eni)))?;
        Ok(out
            .assigned_ipv4_prefixes()
            .iter()
            .filter_map(|p| p.ipv4_prefix()?.parse().ok())
            .collect())
    }

    async fn unassign_prefixes(&self, eni: &EniId, prefixes: &[Ipv4Network]) -> Result<()> {
        const OP: &str = "UnassignPrivateIpAddresses";
        if prefixes.is_empty() {
            return Ok(());
        }
        self.client
            .unassign_private_ip_addresses()
            .network_interface_id(&eni.0)
            .set_ipv4_prefixes(Some(prefixes.iter().map(|p| p.to_string()).collect()))
            .send()
            .await
            .map_err(|e| errors::map(OP, e, &self.ctx_eni(eni)))?;
        Ok(())
    }

    async fn detach_and_delete_eni(&self, eni: &EniId) -> Result<()> {
        let ni = self.describe_one(eni).await?;
        if let Some(attachment) = ni.attachment().and_then(|a| a.attachment_id()) {
            self.client
                .detach_network_interface()
                .attachment_id(attachment)
                .send()
                .await
                .map_err(|e| errors::map("DetachNetworkInterface", e, &self.ctx_eni(eni)))?;
            let deadline = tokio::time::Instant::now() + DETACH_WAIT;
            loop {
                let ni = self.describe_one(eni).await?;
                if ni.status() == Some(&NetworkInterfaceStatus::Available) {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(CloudError::Timeout {
                        operation: "DetachNetworkInterface",
                    });
                }
                tokio::time::sleep(DETACH_POLL).await;
            }
            tracing::info!(eni = %eni, "ENI detached");
        }
        self.delete(eni).await
    }

    async fn detached_enis(&self) -> Result<Vec<DetachedEni>> {
        const OP: &str = "DescribeNetworkInterfaces";
        let mut req = self
            .client
            .describe_network_interfaces()
            .filters(filter(
                &format!("tag:{TAG_INSTANCE}"),
                &self.identity.instance_id,
            ))
            .filters(filter("status", "available"));
        if let Some(cluster) = &self.settings.cluster_name {
            req = req.filters(filter(&format!("tag:{TAG_CLUSTER}"), cluster));
        }
        let out = req
            .send()
            .await
            .map_err(|e| errors::map(OP, e, &Context::default()))?;
        Ok(out
            .network_interfaces()
            .iter()
            .filter(|ni| ni.status() == Some(&NetworkInterfaceStatus::Available))
            .filter_map(|ni| {
                let id = EniId(ni.network_interface_id()?.to_string());
                let created_at = ni
                    .tag_set()
                    .iter()
                    .find(|t| t.key() == Some(TAG_CREATED_AT))
                    .and_then(|t| t.value())
                    .and_then(|v| DateTime::from_str(v, DateTimeFormat::DateTime).ok())
                    .and_then(|d| SystemTime::try_from(d).ok());
                Some(DetachedEni { id, created_at })
            })
            .collect())
    }

    async fn delete_eni(&self, eni: &EniId) -> Result<()> {
        self.delete(eni).await
    }
}
