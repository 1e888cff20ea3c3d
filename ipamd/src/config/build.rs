//! Variables → each part's settings struct, through [`Vars`].
//!
//! The parts own their settings types (and `Default` impls, which the tests
//! below hold equal to the declared defaults); reading the variables is
//! done here only. Checks that involve two settings (a subnet inside its
//! VPC, a backoff ceiling above its base) are here too, after both are read.

use ipnetwork::Ipv4Network;
use vpc_cni_cloud::budget::{BudgetSettings, CallClass};
use vpc_cni_cloud::ec2::Ec2Settings;
use vpc_cni_cloud::sim::ApiLatency;
use vpc_cni_core::plan::{PoolSettings, WarmPolicy};
use vpc_cni_core::settings::SettingError;
use vpc_cni_policy::engine::Mode;
use vpc_cni_policy::settings::{PolicySettings, SourceSetting};

use super::parse::Vars;
use super::{SimSettings, SnatSettings};

/// The warm pool's settings.
pub(super) fn pool(v: &Vars) -> Result<PoolSettings, SettingError> {
    let fixed = PoolSettings {
        max_eni: v.opt("MAX_ENI")?,
        cooldown: v.get("IP_COOLDOWN_PERIOD")?,
        prefix_delegation: v.get("ENABLE_PREFIX_DELEGATION")?,
        policy: v.choice(
            "VPC_CNI_WARM_POLICY",
            &[
                ("fixed", WarmPolicy::Fixed),
                ("adaptive", WarmPolicy::Adaptive),
            ],
        )?,
        release_delay: v.get("VPC_CNI_RELEASE_DELAY_S")?,
        reconcile_interval: v.get("VPC_CNI_RECONCILE_INTERVAL_S")?,
        leak_grace: v.get("VPC_CNI_LEAK_GRACE_S")?,
        ..PoolSettings::default()
    };
    live_pool(v, fixed)
}

/// `base` with the live settings read from `v`: everything live tuning
/// changes, and nothing else (a `Vars::live_only` view refuses the rest).
pub(super) fn live_pool(v: &Vars, base: PoolSettings) -> Result<PoolSettings, SettingError> {
    Ok(PoolSettings {
        warm_eni_target: v.get("WARM_ENI_TARGET")?,
        warm_ip_target: v.opt("WARM_IP_TARGET")?,
        minimum_ip_target: v.opt("MINIMUM_IP_TARGET")?,
        warm_prefix_target: v.opt("WARM_PREFIX_TARGET")?,
        ..base
    })
}

/// The node's EC2 budget (`VPC_CNI_EC2_*`).
pub(super) fn budget(v: &Vars) -> Result<BudgetSettings, SettingError> {
    let mut s = BudgetSettings::default();
    for (spec, class) in s.buckets.iter_mut().zip(CallClass::ALL) {
        let upper = class.name().to_ascii_uppercase();
        spec.capacity = v.get(&format!("VPC_CNI_EC2_{upper}_BURST"))?;
        spec.rate = v.get(&format!("VPC_CNI_EC2_{upper}_RATE"))?;
    }
    s.backoff_base = v.get("VPC_CNI_EC2_BACKOFF_BASE_MS")?;
    s.backoff_max = v.get("VPC_CNI_EC2_BACKOFF_MAX_MS")?;
    if s.backoff_max < s.backoff_base {
        return Err(SettingError::new(
            "VPC_CNI_EC2_BACKOFF_MAX_MS",
            s.backoff_max.as_millis(),
            "must not be below VPC_CNI_EC2_BACKOFF_BASE_MS",
        ));
    }
    s.max_attempts = v.get("VPC_CNI_EC2_MAX_ATTEMPTS")?;
    Ok(s)
}

/// The `ec2` provider's settings.
pub(super) fn ec2(v: &Vars) -> Result<Ec2Settings, SettingError> {
    Ok(Ec2Settings {
        cluster_name: v.opt("CLUSTER_NAME")?,
        link_timeout: v.get("VPC_CNI_ENI_LINK_TIMEOUT_MS")?,
        call_timeout: v.get("VPC_CNI_EC2_TIMEOUT_MS")?,
    })
}

/// SNAT of traffic leaving the VPC.
pub(super) fn snat(v: &Vars) -> Result<SnatSettings, SettingError> {
    let exclude: Vec<Ipv4Network> = v
        .opt("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS")?
        .unwrap_or_default();
    Ok(SnatSettings {
        external: v.get("AWS_VPC_K8S_CNI_EXTERNALSNAT")?,
        // Normalised, so 10.1.2.3/16 means 10.1.0.0/16 to nft too.
        exclude: exclude
            .into_iter()
            .map(|c| Ipv4Network::new(c.network(), c.prefix()).expect("same prefix"))
            .collect(),
    })
}

/// NetworkPolicy's source and mode.
pub(super) fn policy(v: &Vars) -> Result<PolicySettings, SettingError> {
    Ok(PolicySettings {
        source: v.parsed("VPC_CNI_POLICY_SOURCE", policy_source)?,
        mode: v.choice(
            "VPC_CNI_POLICY_MODE",
            &[("standard", Mode::Standard), ("strict", Mode::Strict)],
        )?,
    })
}

fn policy_source(value: &str) -> Result<SourceSetting, String> {
    match value {
        "off" => Ok(SourceSetting::Off),
        "kube" => Ok(SourceSetting::Kube),
        s => match s.strip_prefix("dir:") {
            Some(path) if std::path::Path::new(path).is_absolute() => {
                Ok(SourceSetting::Dir(path.into()))
            }
            Some(_) => Err("dir: needs an absolute path, e.g. dir:/etc/vpc-cni/policy".into()),
            None => Err("expected `kube`, `dir:<absolute path>` or `off`".into()),
        },
    }
}

/// The embedded simulated cloud.
pub(super) fn sim(v: &Vars) -> Result<SimSettings, SettingError> {
    let sim = SimSettings {
        instance_type: v.get("VPC_CNI_SIM_INSTANCE_TYPE")?,
        vpc_cidr: v.get("VPC_CNI_SIM_VPC_CIDR")?,
        subnet_cidr: v.get("VPC_CNI_SIM_SUBNET_CIDR")?,
        api_latency: v.parsed("VPC_CNI_SIM_API_LATENCY_MS", |s| s.parse::<ApiLatency>())?,
    };
    if !sim.vpc_cidr.contains(sim.subnet_cidr.network())
        || sim.subnet_cidr.prefix() < sim.vpc_cidr.prefix()
    {
        return Err(SettingError::new(
            "VPC_CNI_SIM_SUBNET_CIDR",
            sim.subnet_cidr,
            format!("must lie inside VPC_CNI_SIM_VPC_CIDR {}", sim.vpc_cidr),
        ));
    }
    Ok(sim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn unset_is_each_parts_default() {
        let v = vars(&[]);
        assert_eq!(pool(&v).unwrap(), PoolSettings::default());
        assert_eq!(budget(&v).unwrap(), BudgetSettings::default());
        assert_eq!(ec2(&v).unwrap(), Ec2Settings::default());
        assert_eq!(snat(&v).unwrap(), SnatSettings::default());
        assert_eq!(policy(&v).unwrap(), PolicySettings::default());
    }

    #[test]
    fn budget_settings_parse_and_name_bad_values() {
        use vpc_cni_cloud::bucket::BucketSpec;
        let s = budget(&vars(&[
            ("VPC_CNI_EC2_MUTATING_BURST", "5"),
            ("VPC_CNI_EC2_MUTATING_RATE", "0.25"),
            ("VPC_CNI_EC2_MAX_ATTEMPTS", "3"),
        ]))
        .unwrap();
        assert_eq!(s.buckets[0], BucketSpec::new(5.0, 0.25));
        assert_eq!(s.max_attempts, 3);
        assert_eq!(s.buckets[2], BudgetSettings::default().buckets[2]);
        for (var, value) in [
            ("VPC_CNI_EC2_MUTATING_RATE", "0"),
            ("VPC_CNI_EC2_ATTACH_BURST", "lots"),
            ("VPC_CNI_EC2_DESCRIBE_RATE", "-1"),
            ("VPC_CNI_EC2_MAX_ATTEMPTS", "0"),
            ("VPC_CNI_EC2_BACKOFF_BASE_MS", "0"),
            ("VPC_CNI_EC2_BACKOFF_MAX_MS", "10"),
        ] {
            let e = budget(&vars(&[(var, value)])).unwrap_err();
            assert_eq!(e.var, var, "{e}");
        }
    }

    #[test]
    fn ec2_settings_parse_and_name_bad_values() {
        let s = ec2(&vars(&[
            ("CLUSTER_NAME", " prod "),
            ("VPC_CNI_ENI_LINK_TIMEOUT_MS", "5000"),
        ]))
        .unwrap();
        assert_eq!(s.cluster_name.as_deref(), Some("prod"));
        assert_eq!(s.link_timeout, Duration::from_secs(5));
        assert_eq!(s.call_timeout, Duration::from_secs(20));
        for (var, value) in [
            ("VPC_CNI_ENI_LINK_TIMEOUT_MS", "0"),
            ("VPC_CNI_EC2_TIMEOUT_MS", "600001"),
            ("VPC_CNI_EC2_TIMEOUT_MS", "soon"),
        ] {
            let e = ec2(&vars(&[(var, value)])).unwrap_err();
            assert_eq!(e.var, var, "{e}");
            assert!(e.to_string().contains(value), "{e}");
        }
    }

    #[test]
    fn snat_settings_parse_and_name_bad_values() {
        let s = snat(&vars(&[
            ("AWS_VPC_K8S_CNI_EXTERNALSNAT", "false"),
            (
                "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS",
                "192.168.0.0/16, 172.16.5.1/12",
            ),
        ]))
        .unwrap();
        assert!(!s.external);
        assert_eq!(
            s.exclude,
            vec![
                "192.168.0.0/16".parse().unwrap(),
                "172.16.0.0/12".parse().unwrap()
            ]
        );
        assert!(
            snat(&vars(&[("AWS_VPC_K8S_CNI_EXTERNALSNAT", "TRUE")]))
                .unwrap()
                .external
        );
        let e = snat(&vars(&[("AWS_VPC_K8S_CNI_EXTERNALSNAT", "yes")])).unwrap_err();
        assert_eq!(e.var, "AWS_VPC_K8S_CNI_EXTERNALSNAT");
        let e = snat(&vars(&[(
            "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS",
            "10.0.0.0/8,fd00::/8",
        )]))
        .unwrap_err();
        assert_eq!(e.var, "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS");
        assert!(e.reason.contains("fd00::/8"));
    }

    #[test]
    fn policy_settings_are_read() {
        let p = policy(&vars(&[
            ("VPC_CNI_POLICY_SOURCE", "dir:/srv/policy"),
            ("VPC_CNI_POLICY_MODE", "strict"),
        ]))
        .unwrap();
        assert_eq!(p.source, SourceSetting::Dir("/srv/policy".into()));
        assert_eq!(p.mode, Mode::Strict);
        assert_eq!(p.source.as_setting(), "dir:/srv/policy");
        let kube = policy(&vars(&[
            ("VPC_CNI_POLICY_SOURCE", "kube"),
            ("VPC_CNI_POLICY_MODE", "standard"),
        ]))
        .unwrap();
        assert_eq!(kube.source, SourceSetting::Kube);
    }

    #[test]
    fn policy_bad_values_name_variable_and_value() {
        for (var, value) in [
            ("VPC_CNI_POLICY_SOURCE", "etcd"),
            ("VPC_CNI_POLICY_SOURCE", "dir:relative"),
            ("VPC_CNI_POLICY_MODE", "paranoid"),
        ] {
            let e = policy(&vars(&[(var, value)])).unwrap_err();
            assert_eq!(e.var, var);
            assert!(e.to_string().contains(value), "{e}");
        }
    }

    #[test]
    /// Unset reads the declared default's text, so this holds by construction
    /// once the text parses: what it checks is that every declared default
    /// is a value its own parser accepts (a default the parser refused would
    /// stop every node that leaves the setting alone).
    fn every_declared_default_is_accepted_by_its_parser() {
        use super::super::declare::{DefaultValue, SETTINGS};
        let unset = super::super::Config::from_vars(Vec::new()).unwrap();
        let install = super::super::InstallSettings::from_vars(Vec::new()).unwrap();
        for s in SETTINGS {
            let DefaultValue::Is(value) = s.default else {
                continue;
            };
            let set = vec![(s.name.to_string(), value.to_string())];
            if s.reader.serve() {
                assert_eq!(
                    super::super::Config::from_vars(set.clone()).as_ref(),
                    Ok(&unset),
                    "{}={value}",
                    s.name
                );
            }
            if s.reader.install_cni() {
                assert_eq!(
                    super::super::InstallSettings::from_vars(set).as_ref(),
                    Ok(&install),
                    "{}={value}",
                    s.name
                );
            }
        }
    }
}
