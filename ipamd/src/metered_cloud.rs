//! A [`Cloud`] that records every call in [`Ec2Metrics`]: count by result,
//! errors by kind, throttles, latency, and the last errors for `ipamd
//! status`. It wraps the provider itself (inside any retry or budget layer),
//! so each call the provider makes is counted once; the operation label is
//! the trait method (one may be several EC2 actions, e.g. `attach_eni` is
//! CreateNetworkInterface + AttachNetworkInterface).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use ipnetwork::Ipv4Network;

use crate::cloud::{Cloud, DetachedEni, Eni, EniId, NodeInfo, Result};
use crate::metrics::Ec2Metrics;

/// The wrapper.
pub struct MeteredCloud {
    inner: Arc<dyn Cloud>,
    metrics: Ec2Metrics,
}

impl MeteredCloud {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Cloud>, metrics: Ec2Metrics) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let out = call.await;
        self.metrics
            .observe_result(operation, &out, started.elapsed());
        out
    }
}

#[async_trait]
impl Cloud for MeteredCloud {
    async fn node(&self) -> Result<NodeInfo> {
        self.timed("node", self.inner.node()).await
    }

    async fn enis(&self) -> Result<Vec<Eni>> {
        self.timed("enis", self.inner.enis()).await
    }

    async fn attach_eni(&self, device_index: u32) -> Result<Eni> {
        self.timed("attach_eni", self.inner.attach_eni(device_index))
            .await
    }

    async fn assign_ips(&self, eni: &EniId, count: u32) -> Result<Vec<Ipv4Addr>> {
        self.timed("assign_ips", self.inner.assign_ips(eni, count))
            .await
    }

    async fn unassign_ips(&self, eni: &EniId, ips: &[Ipv4Addr]) -> Result<()> {
        self.timed("unassign_ips", self.inner.unassign_ips(eni, ips))
            .await
    }

    async fn assign_prefixes(&self, eni: &EniId, count: u32) -> Result<Vec<Ipv4Network>> {
        self.timed("assign_prefixes", self.inner.assign_prefixes(eni, count))
            .await
    }

    async fn unassign_prefixes(&self, eni: &EniId, prefixes: &[Ipv4Network]) -> Result<()> {
        self.timed(
            "unassign_prefixes",
            self.inner.unassign_prefixes(eni, prefixes),
        )
        .await
    }

    async fn detach_and_delete_eni(&self, eni: &EniId) -> Result<()> {
        self.timed(
            "detach_and_delete_eni",
            self.inner.detach_and_delete_eni(eni),
        )
        .await
    }

    async fn detached_enis(&self) -> Result<Vec<DetachedEni>> {
        self.timed("detached_enis", self.inner.detached_enis())
            .await
    }

    async fn delete_eni(&self, eni: &EniId) -> Result<()> {
        self.timed("delete_eni", self.inner.delete_eni(eni)).await
    }
}
