//! The names of every environment variable ipamd reads, in one list.
//!
//! The manifests, the Helm chart and the operator's guide are checked
//! against it (`tests/tests/manifests.rs`), so a setting misspelt in a
//! ConfigMap, or one the guide forgot, fails a test instead of being
//! silently ignored on a node. The list is the names of the settings
//! declared in [`crate::config::declare`]; the unit tests below keep that
//! declaration honest from the outside: they scan the sources for names
//! read without being declared, and for environment reads outside the
//! configuration module.

/// Every variable ipamd (`serve` and `install-cni`) reads, and the AWS
/// SDK's region settings (the `ec2` provider falls back to IMDS's region
/// when neither is set): the names of [`crate::config::SETTINGS`].
pub use crate::config::KNOWN_ENV;

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

    /// Settings of ipamd are checked to be read by the configuration
    /// module's own test (`each_reader_reads_exactly_its_declared_settings`,
    /// which records what the builders read); the SDK's are read by the
    /// SDK, and named by the `ec2` provider that relies on them.
    #[test]
    fn every_listed_name_is_read_somewhere() {
        use crate::config::declare::{Reader, SETTINGS};
        let cloud: BTreeSet<String> = crate_sources("crates/cloud/src")
            .iter()
            .flat_map(|(_, text)| env_literals(text))
            .collect();
        let unread: Vec<_> = SETTINGS
            .iter()
            .filter(|s| s.reader == Reader::AwsSdk && !cloud.contains(s.name))
            .map(|s| s.name)
            .collect();
        assert!(
            unread.is_empty(),
            "declared as the AWS SDK's but named nowhere in the cloud crate: {unread:?}"
        );
    }

    /// Sources of a workspace crate, non-test files.
    fn crate_sources(dir: &str) -> Vec<(PathBuf, String)> {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("ipamd/ sits in the workspace");
        let mut files = Vec::new();
        rust_files(&workspace.join(dir), &mut files);
        files
            .into_iter()
            .filter(|p| !p.ends_with("tests.rs"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).expect("source is readable");
                let shown = p.strip_prefix(workspace).unwrap_or(&p).to_path_buf();
                (shown, text)
            })
            .collect()
    }

    /// Nothing reads the environment for settings but the configuration
    /// module. The exceptions, each for a reason: `main.rs` hands the
    /// environment to the configuration (and `install-cni`), and checks
    /// `VPC_CNI_CLOUD` for `max-pods`' online lookup; the `ec2` provider
    /// asks whether the SDK will find a region in its environment.
    #[test]
    fn only_the_configuration_reads_the_environment() {
        const ALLOWED: &[&str] = &[
            "ipamd/src/config/mod.rs",
            "ipamd/src/main.rs",
            "crates/cloud/src/ec2/mod.rs",
        ];
        let mut readers = BTreeSet::new();
        for dir in [
            "ipamd/src",
            "crates/core/src",
            "crates/cloud/src",
            "crates/policy/src",
        ] {
            for (path, text) in crate_sources(dir) {
                let code = text.split("#[cfg(test)]").next().unwrap_or("");
                let reads = ["env::var(", "env::vars(", "env::var_os(", "env::vars_os("]
                    .iter()
                    .any(|call| code.contains(call));
                if reads && !ALLOWED.iter().any(|a| path == Path::new(a)) {
                    readers.insert(path.display().to_string());
                }
            }
        }
        assert!(
            readers.is_empty(),
            "read the environment outside ipamd's configuration module: {readers:?}"
        );
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
