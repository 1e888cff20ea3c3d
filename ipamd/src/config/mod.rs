//! ipamd's configuration: every setting declared once ([`declare`]), read
//! by one parser ([`parse::Vars`]) into each part's settings ([`build`]).
//!
//! Names follow aws-node where the meaning is the same (`WARM_IP_TARGET`,
//! `MAX_ENI`, `AWS_VPC_ENI_MTU`, ...); ours start with `VPC_CNI_`. Nothing
//! else in the daemon reads the environment for settings: `ipamd serve`
//! gets a [`Config`], `ipamd install-cni` an [`InstallSettings`], live
//! tuning re-reads the live settings through the same reader. An invalid
//! value stops start-up with a message naming the variable and the value.
//!
//! This module imports the settings *types* of the parts it fills (from the
//! crates, [`crate::dataplane::snat`] and [`crate::store`]) and nothing else
//! of the daemon, so `install-cni` and the tests can use it without
//! pulling in the server.

mod build;
pub mod declare;
pub mod parse;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cni_plugin::config::LogLevel;
use ipnetwork::Ipv4Network;
use vpc_cni_cloud::sim::ApiLatency;

pub use self::declare::{Setting, DEFAULT_ADDR, KNOWN_ENV, LIVE_KEYS, SETTINGS};
pub use self::parse::{parse_listen_addr, Vars};
pub use crate::dataplane::snat::SnatSettings;
pub use crate::store::Durability;
pub use vpc_cni_cloud::budget::BudgetSettings;
pub use vpc_cni_cloud::ec2::Ec2Settings;
pub use vpc_cni_core::plan::{PoolSettings, WarmPolicy};
pub use vpc_cni_policy::settings::PolicySettings;

/// An invalid setting (the same error whichever part's setting it is).
pub use vpc_cni_core::settings::SettingError as ConfigError;

/// Which cloud provider backs the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudKind {
    /// The embedded simulated VPC.
    Sim,
    /// Real EC2 (aws-sdk-ec2 + IMDS).
    Ec2,
}

/// Settings of the embedded simulated cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimSettings {
    /// `VPC_CNI_SIM_INSTANCE_TYPE` (default `m5.large`).
    pub instance_type: String,
    /// `VPC_CNI_SIM_VPC_CIDR` (default `10.0.0.0/16`).
    pub vpc_cidr: Ipv4Network,
    /// `VPC_CNI_SIM_SUBNET_CIDR` (default `10.0.0.0/20`).
    pub subnet_cidr: Ipv4Network,
    /// `VPC_CNI_SIM_API_LATENCY_MS`: milliseconds every call takes (default
    /// 0), or `ec2` for EC2's measured latencies.
    pub api_latency: ApiLatency,
}

/// The daemon's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `VPC_CNI_SOCKET` (default `/run/vpc-cni/ipamd.sock`).
    pub socket: PathBuf,
    /// `VPC_CNI_STATE_DIR` (default `/var/lib/vpc-cni`).
    pub state_dir: PathBuf,
    /// `VPC_CNI_CLOUD` (default `ec2`; `sim` for the embedded cloud).
    pub cloud: CloudKind,
    /// `AWS_VPC_ENI_MTU` (default 9001).
    pub mtu: u32,
    /// Warm-pool targets.
    pub pool: PoolSettings,
    /// The node's EC2 budget (`VPC_CNI_EC2_*`).
    pub budget: BudgetSettings,
    /// Simulator settings (used when `cloud` is `Sim`).
    pub sim: SimSettings,
    /// `VPC_CNI_VETH_REAP_DELAY_MS` (default 5000): how long after DEL a host
    /// veth the runtime did not remove (with its netns) is deleted by us.
    pub veth_reap_delay: Duration,
    /// Settings of the `ec2` provider (`CLUSTER_NAME`, ...).
    pub ec2: Ec2Settings,
    /// SNAT of traffic leaving the VPC (`AWS_VPC_K8S_CNI_EXTERNALSNAT`, ...).
    pub snat: SnatSettings,
    /// `VPC_CNI_LOG_LEVEL` (default `info`), or `RUST_LOG` for a full filter.
    pub log_filter: String,
    /// `VPC_CNI_LOG_FORMAT` (`text`, default, or `json`).
    pub log_format: LogFormat,
    /// `VPC_CNI_METRICS_ADDR` (default `:61678`; `off`: no HTTP listener):
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics_addr: Option<SocketAddr>,
    /// `VPC_CNI_CONFIG_PATH`: a directory of one file per key (a mounted
    /// ConfigMap) or a `KEY=VALUE` file, re-read for live tuning.
    pub config_path: Option<PathBuf>,
    /// `VPC_CNI_DURABILITY` (`sync`, the default: ADD answers once its
    /// allocation is on disk; `async`: at once).
    pub durability: Durability,
    /// `VPC_CNI_AWS_NODE_CHECKPOINT` (default `/var/run/aws-node/ipam.json`):
    /// aws-node's checkpoint, read when ours is absent.
    pub aws_node_checkpoint: PathBuf,
    /// `VPC_CNI_POLICY_SOURCE` and `VPC_CNI_POLICY_MODE`.
    pub policy: PolicySettings,
}

/// How the daemon writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the CNI call's span fields.
    Json,
}

/// The process environment, for [`crate::tuning`] to lay a config file over.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars().collect()
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads settings from explicit variables (tests).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::read(&Vars::new(vars))
    }

    /// Reads every setting `ipamd serve` takes from `v`.
    fn read(v: &Vars) -> Result<Self, ConfigError> {
        let cloud = v.choice(
            "VPC_CNI_CLOUD",
            &[("ec2", CloudKind::Ec2), ("sim", CloudKind::Sim)],
        )?;
        let socket = v.get("VPC_CNI_SOCKET")?;
        let state_dir = v.get("VPC_CNI_STATE_DIR")?;
        let mtu = v.get("AWS_VPC_ENI_MTU")?;
        let pool = build::pool(v)?;
        // Accepted, checked, not acted on yet (see [`Config::ignored`]).
        for s in SETTINGS
            .iter()
            .filter(|s| s.reader == declare::Reader::NotYet)
        {
            if let Some(value) = v.raw(s.name) {
                parse::validate(s, value).map_err(|why| ConfigError::new(s.name, value, why))?;
            }
        }
        let sim = build::sim(v)?;
        let veth_reap_delay = v.get("VPC_CNI_VETH_REAP_DELAY_MS")?;
        // A full filter wins; the level is then not even looked at.
        let log_filter = match v.opt::<String>("RUST_LOG")? {
            Some(filter) => filter,
            None => v
                .choice(
                    "VPC_CNI_LOG_LEVEL",
                    &[
                        ("error", "error"),
                        ("warn", "warn"),
                        ("info", "info"),
                        ("debug", "debug"),
                        ("trace", "trace"),
                    ],
                )?
                .to_string(),
        };
        let ec2 = build::ec2(v)?;
        let snat = build::snat(v)?;
        let log_format = v.choice(
            "VPC_CNI_LOG_FORMAT",
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        )?;
        let metrics_addr = v.parsed("VPC_CNI_METRICS_ADDR", parse_listen_addr)?;
        let config_path = v.opt("VPC_CNI_CONFIG_PATH")?;
        let durability = v.choice(
            "VPC_CNI_DURABILITY",
            &[("sync", Durability::Sync), ("async", Durability::Async)],
        )?;
        let aws_node_checkpoint = v.get("VPC_CNI_AWS_NODE_CHECKPOINT")?;
        let policy = build::policy(v)?;
        Ok(Config {
            policy,
            socket,
            state_dir,
            cloud,
            mtu,
            pool,
            budget: build::budget(v)?,
            sim,
            ec2,
            snat,
            veth_reap_delay,
            log_filter,
            log_format,
            metrics_addr,
            config_path,
            durability,
            aws_node_checkpoint,
        })
    }

    /// Settings this build accepts but does not act on yet, for a start-up warning.
    pub fn ignored(vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
        let v = Vars::new(vars);
        SETTINGS
            .iter()
            .filter(|s| s.reader == declare::Reader::NotYet && v.raw(s.name).is_some())
            .map(|s| s.name.to_string())
            .collect()
    }
}

/// The warm pool's live settings read from `vars` (the tuning source laid
/// over the environment), over `base`: live tuning's whole effect. Reads
/// only what the declaration marks live.
pub fn live_pool(
    vars: impl IntoIterator<Item = (String, String)>,
    base: PoolSettings,
) -> Result<PoolSettings, ConfigError> {
    build::live_pool(&Vars::live_only(vars), base)
}

/// What `ipamd install-cni` reads: the settings the conflist carries to the
/// plugin. The socket and MTU are read exactly as `ipamd serve` reads them
/// (same declaration, same reader), so the two cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallSettings {
    /// `VPC_CNI_SOCKET`.
    pub socket: PathBuf,
    /// `AWS_VPC_ENI_MTU`.
    pub mtu: u32,
    /// `VPC_CNI_PLUGIN_LOG_LEVEL` (unset: the plugin's default).
    pub plugin_log_level: Option<LogLevel>,
    /// `VPC_CNI_PLUGIN_LOG_FILE` (unset: the plugin logs to stderr).
    pub plugin_log_file: Option<PathBuf>,
}

impl InstallSettings {
    /// Reads them from `vars`.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        Self::read(&Vars::new(vars))
    }

    fn read(v: &Vars) -> Result<Self, ConfigError> {
        Ok(InstallSettings {
            socket: v.get("VPC_CNI_SOCKET")?,
            mtu: v.get("AWS_VPC_ENI_MTU")?,
            plugin_log_level: v.opt_choice(
                "VPC_CNI_PLUGIN_LOG_LEVEL",
                &[
                    ("error", LogLevel::Error),
                    ("warn", LogLevel::Warn),
                    ("info", LogLevel::Info),
                    ("debug", LogLevel::Debug),
                ],
            )?,
            plugin_log_file: v.opt("VPC_CNI_PLUGIN_LOG_FILE")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let c = Config::from_vars(vars(&[("VPC_CNI_CLOUD", "sim")])).unwrap();
        assert_eq!(c.socket, PathBuf::from("/run/vpc-cni/ipamd.sock"));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/vpc-cni"));
        assert_eq!(c.cloud, CloudKind::Sim);
        assert_eq!(c.mtu, 9001);
        assert_eq!(c.pool.warm_eni_target, 1);
        assert_eq!(c.pool.cooldown, Duration::from_secs(30));
        assert_eq!(c.sim.instance_type, "m5.large");
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.metrics_addr, Some("0.0.0.0:61678".parse().unwrap()));
        assert_eq!(c.config_path, None);
    }

    #[test]
    fn observability_settings() {
        let c = Config::from_vars(vars(&[
            ("VPC_CNI_LOG_FORMAT", "json"),
            ("VPC_CNI_METRICS_ADDR", "off"),
            ("VPC_CNI_CONFIG_PATH", "/etc/vpc-cni/config"),
        ]))
        .unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.metrics_addr, None);
        assert_eq!(c.config_path, Some(PathBuf::from("/etc/vpc-cni/config")));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("WARM_IP_TARGET", "lots"),
            ("AWS_VPC_ENI_MTU", "70000"),
            ("VPC_CNI_CLOUD", "gcp"),
            ("VPC_CNI_SOCKET", "relative.sock"),
            ("MAX_ENI", "0"),
            ("IP_COOLDOWN_PERIOD", "-1"),
            ("IP_COOLDOWN_PERIOD", "99999999999"),
            ("ENABLE_PREFIX_DELEGATION", "yes please"),
            ("ENABLE_PREFIX_DELEGATION", "1"),
            ("WARM_PREFIX_TARGET", "-2"),
            ("VPC_CNI_WARM_POLICY", "smart"),
            ("VPC_CNI_RELEASE_DELAY_S", "100000"),
            ("VPC_CNI_RECONCILE_INTERVAL_S", "5"),
            ("VPC_CNI_LEAK_GRACE_S", "soon"),
            ("VPC_CNI_SIM_SUBNET_CIDR", "192.168.0.0/24"),
            ("VPC_CNI_SIM_API_LATENCY_MS", "slow"),
            ("VPC_CNI_LOG_LEVEL", "loud"),
            ("VPC_CNI_LOG_FORMAT", "xml"),
            ("VPC_CNI_METRICS_ADDR", "61678"),
            ("VPC_CNI_METRICS_ADDR", ":http"),
            ("VPC_CNI_CONFIG_PATH", "etc/vpc-cni"),
            ("VPC_CNI_DURABILITY", "maybe"),
            ("VPC_CNI_AWS_NODE_CHECKPOINT", "ipam.json"),
            ("VPC_CNI_POLICY_SOURCE", "etcd"),
            ("VPC_CNI_POLICY_MODE", "lax"),
        ] {
            let e = Config::from_vars(vars(&[(var, value)])).unwrap_err();
            assert_eq!(e.var, var);
            assert!(
                e.to_string().contains(var) && e.to_string().contains(value),
                "{e}"
            );
        }
    }

    #[test]
    fn sim_latency_is_milliseconds_or_ec2() {
        let ms = Config::from_vars(vars(&[("VPC_CNI_SIM_API_LATENCY_MS", "40")])).unwrap();
        assert_eq!(
            ms.sim.api_latency,
            ApiLatency::Uniform(Duration::from_millis(40))
        );
        let ec2 = Config::from_vars(vars(&[("VPC_CNI_SIM_API_LATENCY_MS", "ec2")])).unwrap();
        assert_eq!(ec2.sim.api_latency, ApiLatency::Ec2);
        let unset = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(unset.sim.api_latency, ApiLatency::Uniform(Duration::ZERO));
    }

    #[test]
    fn aws_node_names_are_read() {
        let c = Config::from_vars(vars(&[
            ("WARM_IP_TARGET", "5"),
            ("MINIMUM_IP_TARGET", "10"),
            ("MAX_ENI", "2"),
            ("AWS_VPC_ENI_MTU", "1500"),
        ]))
        .unwrap();
        assert_eq!(c.pool.warm_ip_target, Some(5));
        assert_eq!(c.pool.minimum_ip_target, Some(10));
        assert_eq!(c.pool.max_eni, Some(2));
        assert_eq!(c.mtu, 1500);
    }

    #[test]
    fn prefix_and_policy_settings_are_read() {
        let c = Config::from_vars(vars(&[
            ("ENABLE_PREFIX_DELEGATION", "true"),
            ("WARM_PREFIX_TARGET", "2"),
            ("VPC_CNI_WARM_POLICY", "adaptive"),
            ("VPC_CNI_RELEASE_DELAY_S", "60"),
        ]))
        .unwrap();
        assert!(c.pool.prefix_delegation);
        assert_eq!(c.pool.warm_prefix_target, Some(2));
        assert_eq!(c.pool.policy, WarmPolicy::Adaptive);
        assert_eq!(c.pool.release_delay, Duration::from_secs(60));
        let d = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(d.pool, PoolSettings::default());
    }

    #[test]
    fn rust_log_wins_over_the_level_which_is_then_not_checked() {
        let c = Config::from_vars(vars(&[
            ("RUST_LOG", "info,ipamd::pool=debug"),
            ("VPC_CNI_LOG_LEVEL", "loud"),
        ]))
        .unwrap();
        assert_eq!(c.log_filter, "info,ipamd::pool=debug");
        let c = Config::from_vars(vars(&[("VPC_CNI_LOG_LEVEL", "debug")])).unwrap();
        assert_eq!(c.log_filter, "debug");
    }

    /// Every declared setting is read, by the readers its declaration
    /// names, and nothing else is: the declaration cannot drift from the
    /// code (a name read but not declared fails in `Vars` itself).
    #[test]
    fn each_reader_reads_exactly_its_declared_settings() {
        let declared = |f: fn(declare::Reader) -> bool| -> BTreeSet<&'static str> {
            SETTINGS
                .iter()
                .filter(|s| f(s.reader))
                .map(|s| s.name)
                .collect()
        };
        let v = Vars::new(Vec::new());
        Config::read(&v).unwrap();
        assert_eq!(v.read(), declared(declare::Reader::serve), "ipamd serve");
        let v = Vars::new(Vec::new());
        InstallSettings::read(&v).unwrap();
        assert_eq!(
            v.read(),
            declared(declare::Reader::install_cni),
            "ipamd install-cni"
        );
        let v = Vars::live_only(Vec::new());
        build::live_pool(&v, PoolSettings::default()).unwrap();
        assert_eq!(
            v.read(),
            LIVE_KEYS.iter().copied().collect::<BTreeSet<_>>(),
            "live tuning"
        );
    }

    #[test]
    fn install_cni_reads_socket_and_mtu_as_serve_does() {
        let pairs = vars(&[
            ("VPC_CNI_SOCKET", " /run/other/ipamd.sock"),
            ("AWS_VPC_ENI_MTU", "1500 "),
            ("VPC_CNI_PLUGIN_LOG_LEVEL", "Debug"),
        ]);
        let serve = Config::from_vars(pairs.clone()).unwrap();
        let install = InstallSettings::from_vars(pairs).unwrap();
        assert_eq!((install.socket, install.mtu), (serve.socket, serve.mtu));
        assert_eq!(install.plugin_log_level, Some(LogLevel::Debug));
        // The plugin itself accepts every level install-cni writes.
        let Some(declare::Kind::Enum { values, .. }) =
            declare::setting("VPC_CNI_PLUGIN_LOG_LEVEL").map(|s| s.kind)
        else {
            panic!("VPC_CNI_PLUGIN_LOG_LEVEL is declared as words");
        };
        for level in values {
            assert!(LogLevel::parse(level).is_some(), "{level}");
        }
    }

    #[test]
    fn live_pool_changes_only_the_live_fields() {
        let base = Config::from_vars(vars(&[("MAX_ENI", "2"), ("WARM_IP_TARGET", "9")]))
            .unwrap()
            .pool;
        let next = live_pool(vars(&[("WARM_IP_TARGET", "3")]), base).unwrap();
        assert_eq!(next.warm_ip_target, Some(3));
        assert_eq!(next.max_eni, Some(2));
        let e = live_pool(vars(&[("WARM_ENI_TARGET", "x")]), base).unwrap_err();
        assert_eq!(e.var, "WARM_ENI_TARGET");
    }
}
