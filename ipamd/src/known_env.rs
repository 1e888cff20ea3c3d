//! The names of every environment variable ipamd reads, in one list.
//!
//! The manifests, the Helm chart and the operator's guide are checked
//! against it (`tests/tests/manifests.rs`), so a setting misspelt in a
//! ConfigMap, or one the guide forgot, fails a test instead of being
//! silently ignored on a node. The unit test below keeps the list honest:
//! it scans ipamd's sources for the names they read.

/// Every variable ipamd (`serve` and `install-cni`) reads.
pub const KNOWN_ENV: &[&str] = &[
    // aws-node's names, same meaning.
    "WARM_ENI_TARGET",
    "WARM_IP_TARGET",
    "MINIMUM_IP_TARGET",
    "MAX_ENI",
    "IP_COOLDOWN_PERIOD",
    "AWS_VPC_ENI_MTU",
    "WARM_PREFIX_TARGET",
    "ENABLE_PREFIX_DELEGATION",
    "AWS_VPC_K8S_CNI_EXTERNALSNAT",
    "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS",
    "CLUSTER_NAME",
    // The AWS SDK's own region settings (the `ec2` provider falls back to
    // IMDS's region when neither is set).
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    // Ours.
    "VPC_CNI_CLOUD",
    "VPC_CNI_SOCKET",
    "VPC_CNI_STATE_DIR",
    "VPC_CNI_LOG_LEVEL",
    "RUST_LOG",
    "VPC_CNI_VETH_REAP_DELAY_MS",
    "VPC_CNI_SIM_INSTANCE_TYPE",
    "VPC_CNI_SIM_VPC_CIDR",
    "VPC_CNI_SIM_SUBNET_CIDR",
    "VPC_CNI_SIM_API_LATENCY_MS",
    "VPC_CNI_DURABILITY",
    "VPC_CNI_AWS_NODE_CHECKPOINT",
    "VPC_CNI_ENI_LINK_TIMEOUT_MS",
    "VPC_CNI_EC2_TIMEOUT_MS",
    "VPC_CNI_LOG_FORMAT",
    "VPC_CNI_METRICS_ADDR",
    "VPC_CNI_CONFIG_PATH",
    // NetworkPolicy.
    "VPC_CNI_POLICY_SOURCE",
    "VPC_CNI_POLICY_MODE",
    // Warm pool and EC2 budget.
    "VPC_CNI_WARM_POLICY",
    "VPC_CNI_RELEASE_DELAY_S",
    "VPC_CNI_RECONCILE_INTERVAL_S",
    "VPC_CNI_LEAK_GRACE_S",
    "VPC_CNI_EC2_MAX_ATTEMPTS",
    "VPC_CNI_EC2_BACKOFF_BASE_MS",
    "VPC_CNI_EC2_BACKOFF_MAX_MS",
    "VPC_CNI_EC2_MUTATING_BURST",
    "VPC_CNI_EC2_MUTATING_RATE",
    "VPC_CNI_EC2_ATTACH_BURST",
    "VPC_CNI_EC2_ATTACH_RATE",
    "VPC_CNI_EC2_DESCRIBE_BURST",
    "VPC_CNI_EC2_DESCRIBE_RATE",
    "VPC_CNI_EC2_TAGS_BURST",
    "VPC_CNI_EC2_TAGS_RATE",
    // `ipamd install-cni`: written into the conflist for the plugin.
    "VPC_CNI_PLUGIN_LOG_LEVEL",
    "VPC_CNI_PLUGIN_LOG_FILE",
];

/// Names the manifests and the chart already use whose reading is being
/// added on other branches (the ENI tag `CLUSTER_NAME`, the
/// NetworkPolicy source and mode, the warm pool's policy and release
/// delay). When such a branch is merged the unit test below fails until the
/// name is moved to [`KNOWN_ENV`].
pub const PENDING_ENV: &[&str] = &[];

/// Whether `name` is a variable ipamd reads (or will, see [`PENDING_ENV`]).
pub fn is_known(name: &str) -> bool {
    KNOWN_ENV.contains(&name) || PENDING_ENV.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    /// Literals of variable shape in the sources that are not settings: the
    /// CNI protocol's own variables (`CNI_*`, set by the runtime for the
    /// plugin), cargo's build-time `env!` names, and what `ipamd demo` sets
    /// for the daemon it starts.
    fn not_a_setting(name: &str) -> bool {
        name.starts_with("CNI_") || name.starts_with("CARGO_") || name == "NO_COLOR"
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("ipamd/src is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// String literals shaped like an environment variable (`ABC_DEF`), in
    /// the non-test part of a source file (unit tests sit at the bottom,
    /// after `#[cfg(test)]`).
    fn env_literals(source: &str) -> BTreeSet<String> {
        let code = source.split("#[cfg(test)]").next().unwrap_or("");
        let mut found = BTreeSet::new();
        for (i, part) in code.split('"').enumerate() {
            let shaped = part.len() > 3
                && part.contains('_')
                && part.starts_with(|c: char| c.is_ascii_uppercase())
                && part
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            // Odd pieces are inside quotes (near enough for our sources,
            // which have no escaped quotes next to such names).
            if i % 2 == 1 && shaped {
                found.insert(part.to_string());
            }
        }
        found
    }

    fn sources() -> Vec<(PathBuf, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&root, &mut files);
        files
            .into_iter()
            .filter(|p| !p.ends_with("known_env.rs") && !p.ends_with("tests.rs"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).expect("source is readable");
                (p, text)
            })
            .collect()
    }

    #[test]
    fn every_name_the_sources_read_is_listed() {
        let mut unlisted = BTreeSet::new();
        let mut now_read = BTreeSet::new();
        for (path, text) in sources() {
            for name in env_literals(&text) {
                if PENDING_ENV.contains(&name.as_str()) {
                    now_read.insert(name);
                } else if !KNOWN_ENV.contains(&name.as_str()) && !not_a_setting(&name) {
                    unlisted.insert(format!("{name} ({})", path.display()));
                }
            }
        }
        assert!(
            unlisted.is_empty(),
            "read by ipamd but missing from KNOWN_ENV (add them, and to the operator's guide): {unlisted:?}"
        );
        assert!(
            now_read.is_empty(),
            "read by ipamd now: move from PENDING_ENV to KNOWN_ENV: {now_read:?}"
        );
    }

    #[test]
    fn every_listed_name_is_read_somewhere() {
        let all: BTreeSet<String> = sources()
            .iter()
            .flat_map(|(_, text)| env_literals(text))
            .collect();
        let templates: Vec<(String, String)> = sources()
            .iter()
            .flat_map(|(_, text)| env_templates(text))
            .collect();
        let stale: Vec<_> = KNOWN_ENV
            .iter()
            .filter(|n| !all.contains(**n) && !templates.iter().any(|t| matches_template(n, t)))
            .collect();
        assert!(stale.is_empty(), "in KNOWN_ENV but read nowhere: {stale:?}");
    }

    /// Names built with `format!` (`"VPC_CNI_EC2_{upper}_BURST"`): the
    /// literal's text before and after its one placeholder.
    fn env_templates(source: &str) -> Vec<(String, String)> {
        let code = source.split("#[cfg(test)]").next().unwrap_or("");
        let env_chars = |t: &str| {
            t.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        };
        code.split('"')
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .filter_map(|(_, part)| {
                let (prefix, rest) = part.split_once('{')?;
                let (_, suffix) = rest.split_once('}')?;
                (prefix.len() > 3 && prefix.contains('_') && env_chars(prefix) && env_chars(suffix))
                    .then(|| (prefix.to_string(), suffix.to_string()))
            })
            .collect()
    }

    fn matches_template(name: &str, (prefix, suffix): &(String, String)) -> bool {
        name.len() > prefix.len() + suffix.len()
            && name.starts_with(prefix.as_str())
            && name.ends_with(suffix.as_str())
    }

    #[test]
    fn formatted_names_count_as_read() {
        let src =
            r#"let v = num(env, &format!("VPC_CNI_EC2_{upper}_BURST"))?; let m = "no {x} here";"#;
        let t = env_templates(src);
        assert_eq!(t, [("VPC_CNI_EC2_".to_string(), "_BURST".to_string())]);
        assert!(matches_template("VPC_CNI_EC2_ATTACH_BURST", &t[0]));
        assert!(!matches_template("VPC_CNI_EC2_ATTACH_RATE", &t[0]));
    }

    #[test]
    fn no_duplicates_and_no_overlap() {
        let known: BTreeSet<_> = KNOWN_ENV.iter().collect();
        assert_eq!(known.len(), KNOWN_ENV.len(), "duplicate in KNOWN_ENV");
        assert!(PENDING_ENV.iter().all(|n| !known.contains(n)));
        assert!(is_known("WARM_IP_TARGET") && !is_known("WARM_IP_TARGETS"));
    }

    #[test]
    fn literal_scan_finds_names_and_skips_tests() {
        let src = r#"let a = get("WARM_IP_TARGET"); let b = "not this"; let c = "AB";
#[cfg(test)] mod tests { const X: &str = "ONLY_IN_TESTS"; }"#;
        let found = env_literals(src);
        assert_eq!(found.into_iter().collect::<Vec<_>>(), ["WARM_IP_TARGET"]);
    }
}
