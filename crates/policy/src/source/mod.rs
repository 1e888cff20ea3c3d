//! Where the cluster's namespaces, pods and policies come from: the API
//! server (`kube`) or a directory of YAML files (`dir:PATH`). Each source
//! publishes complete [`ClusterState`] snapshots on a watch channel, so the
//! engine always sees a consistent whole and skips intermediate states it
//! was too busy to look at.

mod dir;
mod kube;

use std::path::PathBuf;
use std::sync::Arc;

pub use dir::DirSource;
pub use kube::KubeSource;

use crate::model::ClusterState;

/// Why a source could not be set up or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// `VPC_CNI_POLICY_SOURCE` holds something we do not understand.
    #[error("VPC_CNI_POLICY_SOURCE={value:?}: {reason}")]
    Setting {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The policy directory cannot be read.
    #[error("policy directory {}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No Kubernetes client could be built (no in-cluster service account
    /// and no kubeconfig).
    #[error("kube source: cannot build a client: {0}")]
    Kube(#[source] ::kube::Error),
}

/// A producer of cluster snapshots.
#[async_trait::async_trait]
pub trait PolicySource: Send + 'static {
    /// Publishes a complete new snapshot on every change (and once at start
    /// when synced). Returns when every receiver is gone.
    async fn run(
        self: Box<Self>,
        tx: tokio::sync::watch::Sender<Arc<ClusterState>>,
    ) -> Result<(), SourceError>;
}

/// The source named by a `VPC_CNI_POLICY_SOURCE` value: `off` (no policy
/// enforcement: `None`), `kube`, or `dir:PATH` (PATH must be a directory
/// now, so a typo stops start-up instead of silently enforcing nothing).
pub fn from_setting(s: &str) -> Result<Option<Box<dyn PolicySource>>, SourceError> {
    let bad = |reason: &str| SourceError::Setting {
        value: s.to_string(),
        reason: reason.to_string(),
    };
    match s {
        "off" => Ok(None),
        "kube" => Ok(Some(Box::new(KubeSource::from_env()))),
        _ => match s.strip_prefix("dir:") {
            Some("") => Err(bad("dir: needs a path, as in dir:/etc/vpc-cni/policy")),
            Some(path) => {
                let path = PathBuf::from(path);
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_dir() => Ok(Some(Box::new(DirSource::new(path)))),
                    Ok(_) => Err(bad("not a directory")),
                    Err(e) => Err(bad(&format!("cannot read the directory: {e}"))),
                }
            }
            None => Err(bad("expected kube, dir:PATH or off")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings() {
        assert!(from_setting("off").unwrap().is_none());
        assert!(from_setting("kube").unwrap().is_some());
        let dir = std::env::temp_dir();
        assert!(from_setting(&format!("dir:{}", dir.display()))
            .unwrap()
            .is_some());
        for (value, needle) in [
            ("", "expected kube, dir:PATH or off"),
            ("Kube", "expected kube, dir:PATH or off"),
            ("dir", "expected kube, dir:PATH or off"),
            ("dir:", "needs a path"),
            (
                "dir:/nonexistent/vpc-cni-policy",
                "cannot read the directory",
            ),
            ("dir:/etc/hostname", "not a directory"),
        ] {
            let err = from_setting(value).err().expect(value).to_string();
            assert!(
                err.contains(needle) && err.contains("VPC_CNI_POLICY_SOURCE"),
                "{value}: {err}"
            );
        }
    }
}
