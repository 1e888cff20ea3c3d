//! ipamd's configuration, read once at start from the environment.
//!
//! Names follow aws-node where the meaning is the same (`WARM_IP_TARGET`,
//! `MAX_ENI`, `AWS_VPC_ENI_MTU`, ...); ours start with `VPC_CNI_`. Nothing
//! else in the daemon reads the environment. An invalid value stops start-up
//! with a message naming the variable and the value.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnetwork::Ipv4Network;

use crate::cloud::sim::ApiLatency;

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

/// Warm-pool targets (aws-node's meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// `WARM_ENI_TARGET` (default 1): keep this many ENIs' worth of free addresses.
    pub warm_eni_target: u32,
    /// `WARM_IP_TARGET`: keep exactly this many free addresses (overrides ENI target).
    pub warm_ip_target: Option<u32>,
    /// `MINIMUM_IP_TARGET`: keep at least this many addresses in the pool.
    pub minimum_ip_target: Option<u32>,
    /// `MAX_ENI`: never attach more ENIs than this (capped by the instance type).
    pub max_eni: Option<u32>,
    /// `IP_COOLDOWN_PERIOD` (seconds, default 30): how long a released
    /// address rests before it is handed out again (unless nothing else is left).
    pub cooldown: Duration,
    /// `ENABLE_PREFIX_DELEGATION` (default false): grow by /28 prefixes.
    pub prefix_delegation: bool,
    /// `WARM_PREFIX_TARGET` (prefix mode; default 1 when neither
    /// `WARM_IP_TARGET` nor `MINIMUM_IP_TARGET` is set).
    pub warm_prefix_target: Option<u32>,
    /// `VPC_CNI_WARM_POLICY` (`fixed`, default, or `adaptive`).
    pub policy: WarmPolicy,
    /// `VPC_CNI_RELEASE_DELAY_S` (default 300): how long a surplus must last
    /// before it is returned to EC2 (the hysteresis in time).
    pub release_delay: Duration,
    /// `VPC_CNI_RECONCILE_INTERVAL_S` (default 3600): mean interval of the
    /// jittered inventory check (DescribeNetworkInterfaces, leak collection).
    pub reconcile_interval: Duration,
    /// `VPC_CNI_LEAK_GRACE_S` (default 600): age beyond which a detached
    /// ENI tagged for this node is deleted.
    pub leak_grace: Duration,
}

/// How the warm pool is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WarmPolicy {
    /// aws-node's static targets.
    #[default]
    Fixed,
    /// Sized from the observed pod arrival rate and EC2 latency (README).
    Adaptive,
}

impl Default for PoolSettings {
    /// aws-node's defaults: one warm ENI, secondary IPs, fixed policy.
    fn default() -> Self {
        PoolSettings {
            warm_eni_target: 1,
            warm_ip_target: None,
            minimum_ip_target: None,
            max_eni: None,
            cooldown: Duration::from_secs(30),
            prefix_delegation: false,
            warm_prefix_target: None,
            policy: WarmPolicy::Fixed,
            release_delay: Duration::from_secs(300),
            reconcile_interval: Duration::from_secs(3600),
            leak_grace: Duration::from_secs(600),
        }
    }
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
    pub budget: crate::cloud::budget::BudgetSettings,
    /// Simulator settings (used when `cloud` is `Sim`).
    pub sim: SimSettings,
    /// `VPC_CNI_VETH_REAP_DELAY_MS` (default 5000): how long after DEL a host
    /// veth the runtime did not remove (with its netns) is deleted by us.
    pub veth_reap_delay: Duration,
    /// Settings of the `ec2` provider (`CLUSTER_NAME`, ...).
    pub ec2: crate::cloud::ec2::Ec2Settings,
    /// SNAT of traffic leaving the VPC (`AWS_VPC_K8S_CNI_EXTERNALSNAT`, ...).
    pub snat: crate::dataplane::snat::SnatSettings,
    /// `VPC_CNI_LOG_LEVEL` (default `info`), or `RUST_LOG` for a full filter.
    pub log_filter: String,
    /// `VPC_CNI_LOG_FORMAT` (`text`, default, or `json`).
    pub log_format: LogFormat,
    /// `VPC_CNI_METRICS_ADDR` (default `:61678`; `off`: no HTTP listener):
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `VPC_CNI_CONFIG_PATH`: a directory of one file per key (a mounted
    /// ConfigMap) or a `KEY=VALUE` file, re-read for live tuning.
    pub config_path: Option<PathBuf>,
    /// `VPC_CNI_DURABILITY` (`sync`, the default: ADD answers once its
    /// allocation is on disk; `async`: at once).
    pub durability: crate::store::Durability,
    /// `VPC_CNI_AWS_NODE_CHECKPOINT` (default `/var/run/aws-node/ipam.json`):
    /// aws-node's checkpoint, read when ours is absent.
    pub aws_node_checkpoint: PathBuf,
    /// `VPC_CNI_POLICY_SOURCE` and `VPC_CNI_POLICY_MODE`.
    pub policy: crate::policy::settings::PolicySettings,
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

/// An invalid setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct ConfigError {
    /// The variable.
    pub var: String,
    /// Its value.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

/// The longest cooldown accepted (a day): far beyond any conntrack timeout.
const MAX_COOLDOWN_SECS: u64 = 86_400;

/// aws-node settings whose feature is not in this build yet: accepted and
/// validated so an aws-node configuration still starts, and reported.
const NOT_YET: &[&str] = &[];

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads settings from explicit variables (tests).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = vars.into_iter().collect();
        let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let cloud = match get("VPC_CNI_CLOUD") {
            None | Some("ec2") => CloudKind::Ec2,
            Some("sim") => CloudKind::Sim,
            Some(other) => return Err(err("VPC_CNI_CLOUD", other, "expected `ec2` or `sim`")),
        };
        let socket = abs_path(&env, "VPC_CNI_SOCKET", "/run/vpc-cni/ipamd.sock")?;
        let state_dir = abs_path(&env, "VPC_CNI_STATE_DIR", "/var/lib/vpc-cni")?;
        let mtu = parse(&env, "AWS_VPC_ENI_MTU")?.unwrap_or(9001u32);
        if !(576..=9001).contains(&mtu) {
            return Err(err(
                "AWS_VPC_ENI_MTU",
                &mtu.to_string(),
                "must be between 576 and 9001",
            ));
        }
        let pool = PoolSettings {
            warm_eni_target: parse(&env, "WARM_ENI_TARGET")?.unwrap_or(1),
            warm_ip_target: parse(&env, "WARM_IP_TARGET")?,
            minimum_ip_target: parse(&env, "MINIMUM_IP_TARGET")?,
            max_eni: parse(&env, "MAX_ENI")?,
            cooldown: Duration::from_secs(parse(&env, "IP_COOLDOWN_PERIOD")?.unwrap_or(30)),
            ..pool_extras(&env)?
        };
        if pool.cooldown > Duration::from_secs(MAX_COOLDOWN_SECS) {
            return Err(err(
                "IP_COOLDOWN_PERIOD",
                &pool.cooldown.as_secs().to_string(),
                &format!("must be at most {MAX_COOLDOWN_SECS} seconds"),
            ));
        }
        if pool.max_eni == Some(0) {
            return Err(err("MAX_ENI", "0", "must be at least 1 (the primary ENI)"));
        }
        for var in NOT_YET {
            if let Some(v) = get(var) {
                parse_bool_or_num(var, v)?;
            }
        }
        let sim = SimSettings {
            instance_type: get("VPC_CNI_SIM_INSTANCE_TYPE")
                .unwrap_or("m5.large")
                .to_string(),
            vpc_cidr: parse(&env, "VPC_CNI_SIM_VPC_CIDR")?
                .unwrap_or_else(|| "10.0.0.0/16".parse().expect("literal")),
            subnet_cidr: parse(&env, "VPC_CNI_SIM_SUBNET_CIDR")?
                .unwrap_or_else(|| "10.0.0.0/20".parse().expect("literal")),
            api_latency: parse(&env, "VPC_CNI_SIM_API_LATENCY_MS")?
                .unwrap_or(ApiLatency::Uniform(Duration::ZERO)),
        };
        if !sim.vpc_cidr.contains(sim.subnet_cidr.network())
            || sim.subnet_cidr.prefix() < sim.vpc_cidr.prefix()
        {
            return Err(err(
                "VPC_CNI_SIM_SUBNET_CIDR",
                &sim.subnet_cidr.to_string(),
                &format!("must lie inside VPC_CNI_SIM_VPC_CIDR {}", sim.vpc_cidr),
            ));
        }
        let veth_reap_delay =
            Duration::from_millis(parse(&env, "VPC_CNI_VETH_REAP_DELAY_MS")?.unwrap_or(5000));
        let log_filter = match (get("RUST_LOG"), get("VPC_CNI_LOG_LEVEL")) {
            (Some(f), _) => f.to_string(),
            (None, Some(level)) => match level {
                "error" | "warn" | "info" | "debug" | "trace" => level.to_string(),
                other => {
                    return Err(err(
                        "VPC_CNI_LOG_LEVEL",
                        other,
                        "expected error, warn, info, debug or trace",
                    ))
                }
            },
            (None, None) => "info".to_string(),
        };
        let ec2 = crate::cloud::ec2::Ec2Settings::from_vars(get)
            .map_err(|(var, value, reason)| err(&var, &value, &reason))?;
        let snat = crate::dataplane::snat::SnatSettings::from_vars(get)
            .map_err(|(var, value, reason)| err(&var, &value, &reason))?;
        let log_format = match get("VPC_CNI_LOG_FORMAT") {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(err(
                    "VPC_CNI_LOG_FORMAT",
                    other,
                    "expected `text` or `json`",
                ))
            }
        };
        let metrics_addr = crate::http::parse_listen_addr(
            get("VPC_CNI_METRICS_ADDR").unwrap_or(crate::http::DEFAULT_ADDR),
        )
        .map_err(|reason| {
            err(
                "VPC_CNI_METRICS_ADDR",
                get("VPC_CNI_METRICS_ADDR").unwrap_or_default(),
                &reason,
            )
        })?;
        let config_path = match get("VPC_CNI_CONFIG_PATH") {
            None => None,
            Some(_) => Some(abs_path(&env, "VPC_CNI_CONFIG_PATH", "")?),
        };
        let durability = match get("VPC_CNI_DURABILITY") {
            None => crate::store::Durability::Sync,
            Some(v) => crate::store::Durability::parse(v)
                .ok_or_else(|| err("VPC_CNI_DURABILITY", v, "expected `sync` or `async`"))?,
        };
        let aws_node_checkpoint = abs_path(
            &env,
            "VPC_CNI_AWS_NODE_CHECKPOINT",
            "/var/run/aws-node/ipam.json",
        )?;
        let policy = crate::policy::settings::PolicySettings::parse(
            get("VPC_CNI_POLICY_SOURCE"),
            get("VPC_CNI_POLICY_MODE"),
        )?;
        Ok(Config {
            policy,
            socket,
            state_dir,
            cloud,
            mtu,
            pool,
            budget: crate::cloud::budget::BudgetSettings::from_vars(&env)?,
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
        vars.into_iter()
            .filter(|(k, v)| NOT_YET.contains(&k.as_str()) && !v.trim().is_empty())
            .map(|(k, _)| k)
            .collect()
    }
}

/// The issue-5 pool settings (prefix delegation, policy, release, reconcile).
fn pool_extras(env: &HashMap<String, String>) -> Result<PoolSettings, ConfigError> {
    let d = PoolSettings::default();
    let prefix_delegation = match env.get("ENABLE_PREFIX_DELEGATION").map(|v| v.trim()) {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(err(
                "ENABLE_PREFIX_DELEGATION",
                other,
                "expected true or false",
            ))
        }
    };
    let policy = match env.get("VPC_CNI_WARM_POLICY").map(|v| v.trim()) {
        None | Some("") | Some("fixed") => WarmPolicy::Fixed,
        Some("adaptive") => WarmPolicy::Adaptive,
        Some(other) => {
            return Err(err(
                "VPC_CNI_WARM_POLICY",
                other,
                "expected `fixed` or `adaptive`",
            ))
        }
    };
    let secs =
        |var: &str, default: Duration, min: u64, max: u64| -> Result<Duration, ConfigError> {
            match parse::<u64>(env, var)? {
                None => Ok(default),
                Some(v) if (min..=max).contains(&v) => Ok(Duration::from_secs(v)),
                Some(v) => Err(err(
                    var,
                    &v.to_string(),
                    &format!("must be between {min} and {max} seconds"),
                )),
            }
        };
    Ok(PoolSettings {
        prefix_delegation,
        warm_prefix_target: parse(env, "WARM_PREFIX_TARGET")?,
        policy,
        release_delay: secs("VPC_CNI_RELEASE_DELAY_S", d.release_delay, 0, 86_400)?,
        reconcile_interval: secs(
            "VPC_CNI_RECONCILE_INTERVAL_S",
            d.reconcile_interval,
            60,
            86_400,
        )?,
        leak_grace: secs("VPC_CNI_LEAK_GRACE_S", d.leak_grace, 60, 7 * 86_400)?,
        ..d
    })
}

fn err(var: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError {
        var: var.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn parse<T: FromStr>(env: &HashMap<String, String>, var: &str) -> Result<Option<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match env.get(var).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|e: T::Err| err(var, v, &e.to_string())),
    }
}

fn abs_path(
    env: &HashMap<String, String>,
    var: &str,
    default: &str,
) -> Result<PathBuf, ConfigError> {
    let value = env
        .get(var)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .unwrap_or(default);
    let path = PathBuf::from(value);
    if !path.is_absolute() {
        return Err(err(var, value, "must be an absolute path"));
    }
    Ok(path)
}

fn parse_bool_or_num(var: &str, v: &str) -> Result<(), ConfigError> {
    if matches!(v, "true" | "false") || v.parse::<u32>().is_ok() {
        Ok(())
    } else {
        Err(err(var, v, "expected true, false or a number"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
