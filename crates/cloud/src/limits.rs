//! Instance type limits online: EC2's `DescribeInstanceTypes` first, the
//! core's embedded table ([`vpc_cni_core::limits`]) when EC2 is not asked or
//! does not answer.

use async_trait::async_trait;

pub use vpc_cni_core::limits::{known_types, lookup, pd_pod_cap, InstanceLimits};

/// Instance type limits from EC2 (`DescribeInstanceTypes`), implemented by
/// the `ec2` provider.
#[async_trait]
pub trait InstanceTypes: Send + Sync {
    /// The limits of `instance_type`, or `None` if EC2 does not know it.
    async fn instance_limits(&self, instance_type: &str) -> super::Result<Option<InstanceLimits>>;
}

/// Where [`resolve`] found an instance type's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `DescribeInstanceTypes`.
    Ec2,
    /// The embedded table (offline, or EC2 failed with the given error).
    Table(Option<String>),
}

/// Why [`resolve`] found no limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown instance type {name:?}{}; the offline table knows: {known}", online.as_ref().map(|e| format!(" (EC2 lookup failed: {e})")).unwrap_or_default())]
pub struct UnknownType {
    /// The name asked for.
    pub name: String,
    /// Why EC2 did not answer, if it was asked.
    pub online: Option<String>,
    /// The table's types, comma-separated.
    pub known: String,
}

/// The limits of `instance_type`: from EC2 when `online` is given and
/// answers, otherwise from the embedded table.
pub async fn resolve(
    instance_type: &str,
    online: Option<&dyn InstanceTypes>,
) -> Result<(InstanceLimits, Source), UnknownType> {
    let mut failure = None;
    if let Some(ec2) = online {
        match ec2.instance_limits(instance_type).await {
            Ok(Some(l)) => return Ok((l, Source::Ec2)),
            Ok(None) => {}
            Err(e) => failure = Some(e.to_string()),
        }
    }
    match lookup(instance_type) {
        Some(l) => Ok((l, Source::Table(failure))),
        None => Err(UnknownType {
            name: instance_type.to_string(),
            online: failure,
            known: known_types().collect::<Vec<_>>().join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeEc2(super::super::Result<Option<InstanceLimits>>);

    #[async_trait]
    impl InstanceTypes for FakeEc2 {
        async fn instance_limits(&self, _: &str) -> super::super::Result<Option<InstanceLimits>> {
            self.0.clone()
        }
    }

    #[tokio::test]
    async fn resolve_prefers_ec2_and_falls_back_to_the_table() {
        let online = InstanceLimits {
            name: "m7i.large".into(),
            max_enis: 3,
            ipv4_per_eni: 10,
            vcpus: 2,
        };
        let ec2 = FakeEc2(Ok(Some(online.clone())));
        assert_eq!(
            resolve("m7i.large", Some(&ec2)).await,
            Ok((online, Source::Ec2))
        );
        let down = FakeEc2(Err(crate::CloudError::Timeout {
            operation: "DescribeInstanceTypes",
        }));
        let (l, src) = resolve("m5.large", Some(&down)).await.unwrap();
        assert_eq!(l.max_pods(), 29);
        assert!(matches!(src, Source::Table(Some(e)) if e.contains("timed out")));
        let err = resolve("m7i.large", Some(&down)).await.unwrap_err();
        assert!(
            err.to_string().contains("m7i.large") && err.to_string().contains("timed out"),
            "{err}"
        );
        assert_eq!(
            resolve("m5.large", None).await.unwrap().1,
            Source::Table(None)
        );
    }
}
