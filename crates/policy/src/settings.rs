//! `VPC_CNI_POLICY_SOURCE` and `VPC_CNI_POLICY_MODE`: the types; the
//! daemon's configuration reads and validates them at start.
//!
//! Unset, the source is `off`: a bare `ipamd serve` (tests, the demo, a
//! node without API access) must not wait for an API server, and a cluster
//! turns enforcement on explicitly in the DaemonSet (`kube`). The mode
//! defaults to `standard`, aws-node's default.

use std::path::PathBuf;

use super::engine::Mode;

/// Where policy objects come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSetting {
    /// No enforcement.
    Off,
    /// Namespaces, Pods and NetworkPolicies watched through the API server.
    Kube,
    /// The same objects as YAML files in a directory.
    Dir(PathBuf),
}

impl SourceSetting {
    /// The setting as written (`off`, `kube`, `dir:/path`), for the source factory.
    pub fn as_setting(&self) -> String {
        match self {
            SourceSetting::Off => "off".into(),
            SourceSetting::Kube => "kube".into(),
            SourceSetting::Dir(p) => format!("dir:{}", p.display()),
        }
    }
}

/// The policy part of the daemon's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySettings {
    /// `VPC_CNI_POLICY_SOURCE` (default `off`).
    pub source: SourceSetting,
    /// `VPC_CNI_POLICY_MODE` (default `standard`).
    pub mode: Mode,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            source: SourceSetting::Off,
            mode: Mode::Standard,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_is_off_and_standard_and_a_source_prints_as_written() {
        let d = PolicySettings::default();
        assert_eq!((d.source, d.mode), (SourceSetting::Off, Mode::Standard));
        assert_eq!(SourceSetting::Kube.as_setting(), "kube");
        assert_eq!(
            SourceSetting::Dir("/srv/policy".into()).as_setting(),
            "dir:/srv/policy"
        );
    }
}
