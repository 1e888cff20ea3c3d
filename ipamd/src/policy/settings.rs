//! `VPC_CNI_POLICY_SOURCE` and `VPC_CNI_POLICY_MODE`, validated at start.
//!
//! Unset, the source is `off`: a bare `ipamd serve` (tests, the demo, a
//! node without API access) must not wait for an API server, and a cluster
//! turns enforcement on explicitly in the DaemonSet (`kube`). The mode
//! defaults to `standard`, aws-node's default.

use std::path::PathBuf;

use super::engine::Mode;
use crate::config::ConfigError;

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

impl PolicySettings {
    /// Parses the two variables (`None` when unset or empty).
    pub fn parse(source: Option<&str>, mode: Option<&str>) -> Result<Self, ConfigError> {
        let bad = |var: &str, value: &str, reason: &str| ConfigError {
            var: var.into(),
            value: value.into(),
            reason: reason.into(),
        };
        let source = match source {
            None | Some("off") => SourceSetting::Off,
            Some("kube") => SourceSetting::Kube,
            Some(s) => match s.strip_prefix("dir:") {
                Some(path) if PathBuf::from(path).is_absolute() => SourceSetting::Dir(path.into()),
                Some(_) => {
                    return Err(bad(
                        "VPC_CNI_POLICY_SOURCE",
                        s,
                        "dir: needs an absolute path, e.g. dir:/etc/vpc-cni/policy",
                    ))
                }
                None => {
                    return Err(bad(
                        "VPC_CNI_POLICY_SOURCE",
                        s,
                        "expected `kube`, `dir:<absolute path>` or `off`",
                    ))
                }
            },
        };
        let mode = match mode {
            None => Mode::Standard,
            Some(m) => m
                .parse()
                .map_err(|reason: String| bad("VPC_CNI_POLICY_MODE", m, &reason))?,
        };
        Ok(Self { source, mode })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_is_off_and_standard() {
        assert_eq!(
            PolicySettings::parse(None, None).unwrap(),
            PolicySettings::default()
        );
    }

    #[test]
    fn values_are_read() {
        let p = PolicySettings::parse(Some("dir:/srv/policy"), Some("strict")).unwrap();
        assert_eq!(p.source, SourceSetting::Dir("/srv/policy".into()));
        assert_eq!(p.mode, Mode::Strict);
        assert_eq!(p.source.as_setting(), "dir:/srv/policy");
        assert_eq!(
            PolicySettings::parse(Some("kube"), Some("standard"))
                .unwrap()
                .source,
            SourceSetting::Kube
        );
    }

    #[test]
    fn bad_values_name_variable_and_value() {
        for (src, mode, var, value) in [
            (Some("etcd"), None, "VPC_CNI_POLICY_SOURCE", "etcd"),
            (
                Some("dir:relative"),
                None,
                "VPC_CNI_POLICY_SOURCE",
                "dir:relative",
            ),
            (None, Some("paranoid"), "VPC_CNI_POLICY_MODE", "paranoid"),
        ] {
            let e = PolicySettings::parse(src, mode).unwrap_err();
            assert_eq!(e.var, var);
            assert!(e.to_string().contains(value), "{e}");
        }
    }
}
