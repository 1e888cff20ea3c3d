//! Live tuning: warm-pool settings changed without restarting ipamd.
//!
//! The source is `VPC_CNI_CONFIG_PATH`: a directory with one file per key
//! (how Kubernetes mounts a ConfigMap: it swaps a `..data` symlink when the
//! ConfigMap changes) or a single `KEY=VALUE` file. It is re-read every
//! [`POLL_EVERY`] and at once on SIGHUP. Polling a handful of small files is
//! cheaper to get right than inotify across symlink swaps, and kubelet takes
//! up to a minute to propagate a ConfigMap change anyway.
//!
//! A reload lays the file over the process environment and validates the
//! result with the same parser as start-up ([`Config::from_vars`]), so a bad
//! value gets the same message; then only the live keys are applied
//! ([`LIVE_KEYS`]: the settings the declaration in [`crate::config::declare`]
//! marks live, read by the same parser in [`crate::config::live_pool`]).
//! For those the file alone counts (a key absent from it is unset), since a
//! pod's environment is a snapshot taken at its start. Everything else that
//! differs from the running value is reported as needing a restart. A
//! rejected reload changes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};

use crate::config::{Config, ConfigError, PoolSettings};
use crate::metrics::ConfigMetrics;

/// How often the source is re-read.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// Keys applied without a restart: the live settings of the declaration.
pub use crate::config::LIVE_KEYS;

/// Files larger than this in the config directory are not settings.
const MAX_VALUE_BYTES: u64 = 4096;

/// Why the source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading failed.
    #[error("reading {path}: {source}")]
    Io {
        /// What was read.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a `KEY=VALUE` file is neither that, blank nor a comment.
    #[error("{path} line {line}: expected KEY=VALUE")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
}

/// Reads `path`: a directory (one file per key; names starting with `.`,
/// as Kubernetes' `..data`, are skipped) or a `KEY=VALUE` file (`#`
/// comments, blank lines allowed). Values are trimmed.
pub fn read_source(path: &Path) -> Result<BTreeMap<String, String>, SourceError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| SourceError::Io { path: p, source }
    };
    let meta = std::fs::metadata(path).map_err(io(path))?;
    let mut out = BTreeMap::new();
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io(path))? {
            let entry = entry.map_err(io(path))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let file = entry.path();
            // Follows symlinks: a ConfigMap's keys are links into `..data`.
            let m = std::fs::metadata(&file).map_err(io(&file))?;
            if !m.is_file() || m.len() > MAX_VALUE_BYTES {
                continue;
            }
            let value = std::fs::read_to_string(&file).map_err(io(&file))?;
            out.insert(name, value.trim().to_string());
        }
    } else {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(SourceError::Syntax {
                    path: path.to_path_buf(),
                    line: i + 1,
                });
            };
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            out.insert(k.trim().to_string(), v.to_string());
        }
    }
    Ok(out)
}

/// What a reload decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// New live settings to apply.
    Apply(PoolSettings),
    /// The live settings stay as they are.
    Unchanged,
    /// A value is invalid; nothing changes.
    Reject(ConfigError),
}

/// The result of [`evaluate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// What to do.
    pub decision: Decision,
    /// Keys whose file value differs from the running one but that only a
    /// restart applies.
    pub restart_required: Vec<String>,
}

/// Decides a reload (pure): `env` is the process environment, `file` the
/// source's keys, `running` the live settings in force, `started` the
/// settings the daemon started with (their non-live fields never change).
pub fn evaluate(
    env: &[(String, String)],
    file: &BTreeMap<String, String>,
    running: &PoolSettings,
    started: &PoolSettings,
) -> Evaluation {
    // The file alone decides the live keys: the environment of a pod that
    // takes the same ConfigMap through `envFrom` is a snapshot from its
    // start, so a key removed from the ConfigMap must not live on from it.
    let mut merged: BTreeMap<String, String> = env
        .iter()
        .filter(|(k, _)| !LIVE_KEYS.contains(&k.as_str()))
        .cloned()
        .collect();
    let mut restart_required = Vec::new();
    for (k, v) in file {
        if !LIVE_KEYS.contains(&k.as_str()) && merged.get(k).map(|e| e.trim()) != Some(v.as_str()) {
            restart_required.push(k.clone());
        }
        merged.insert(k.clone(), v.clone());
    }
    // Everything is validated (a bad value of any key rejects the reload);
    // only the live keys are taken, over the settings the daemon started with.
    let next =
        Config::from_vars(merged.clone()).and_then(|_| crate::config::live_pool(merged, *started));
    let decision = match next {
        Err(e) => Decision::Reject(e),
        Ok(next) if next == *running => Decision::Unchanged,
        Ok(next) => Decision::Apply(next),
    };
    Evaluation {
        decision,
        restart_required,
    }
}

/// The settings a daemon starts with: the environment with the source laid
/// over it. An invalid source stops start-up, like an invalid variable.
pub fn startup_settings(config: &Config, env: &[(String, String)]) -> Result<Startup, String> {
    let Some(path) = &config.config_path else {
        return Ok(Startup {
            settings: config.pool,
            source: None,
        });
    };
    let file = read_source(path).map_err(|e| e.to_string())?;
    let settings = match evaluate(env, &file, &config.pool, &config.pool).decision {
        Decision::Apply(s) => s,
        Decision::Unchanged => config.pool,
        Decision::Reject(e) => return Err(format!("{} (from {})", e, path.display())),
    };
    Ok(Startup {
        settings,
        source: Some(file),
    })
}

/// What [`startup_settings`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Startup {
    /// The warm-pool settings to start with.
    pub settings: PoolSettings,
    /// The source as read (the baseline later reads are compared with).
    pub source: Option<BTreeMap<String, String>>,
}

/// The outcome of the last reload, for `ipamd status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadReport {
    /// When (seconds since the epoch).
    pub at_unix: u64,
    /// `applied`, `unchanged` or `rejected`.
    pub result: &'static str,
    /// Why it was rejected.
    pub error: Option<String>,
    /// Keys that need a restart to take effect.
    pub restart_required: Vec<String>,
}

struct State {
    generation: u64,
    last: Option<ReloadReport>,
    /// The source as last read, to act only on changes when polling.
    seen: Option<BTreeMap<String, String>>,
}

/// Re-reads the source and applies live settings through `apply`.
pub struct Tuner {
    path: Option<PathBuf>,
    env: Vec<(String, String)>,
    started: PoolSettings,
    current: Mutex<PoolSettings>,
    apply: Box<dyn Fn(PoolSettings) + Send + Sync>,
    metrics: ConfigMetrics,
    state: Mutex<State>,
}

impl Tuner {
    /// A tuner for `config` whose live settings start as `initial` (see
    /// [`startup_settings`]).
    pub fn new(
        config: &Config,
        env: Vec<(String, String)>,
        startup: Startup,
        apply: impl Fn(PoolSettings) + Send + Sync + 'static,
        metrics: ConfigMetrics,
    ) -> Arc<Self> {
        let initial = startup.settings;
        let tuner = Arc::new(Self {
            path: config.config_path.clone(),
            env,
            started: initial,
            current: Mutex::new(initial),
            apply: Box::new(apply),
            metrics,
            state: Mutex::new(State {
                generation: 0,
                last: None,
                seen: startup.source,
            }),
        });
        tuner.metrics.set_generation(0);
        tuner.publish(&initial);
        tuner
    }

    /// The live settings in force.
    pub fn current(&self) -> PoolSettings {
        *self.current.lock().expect("tuner mutex poisoned")
    }

    /// Re-reads the source. `forced` (SIGHUP) evaluates it even if it did
    /// not change since the last read, and reports the outcome either way.
    pub fn reload(&self, forced: bool) {
        let Some(path) = &self.path else {
            if forced {
                tracing::info!("SIGHUP: VPC_CNI_CONFIG_PATH is not set; nothing to re-read");
            }
            return;
        };
        let file = match read_source(path) {
            Ok(f) => f,
            Err(e) => {
                // A ConfigMap being swapped can be briefly unreadable; a
                // poll just tries again, a SIGHUP reports it.
                if forced {
                    self.finish("rejected", Some(e.to_string()), Vec::new());
                    tracing::warn!(error = %e, "configuration reload refused; the settings in force are kept");
                }
                return;
            }
        };
        {
            let mut st = self.state.lock().expect("tuner mutex poisoned");
            if !forced && st.seen.as_ref() == Some(&file) {
                return;
            }
            st.seen = Some(file.clone());
        }
        let current = self.current();
        let eval = evaluate(&self.env, &file, &current, &self.started);
        if !eval.restart_required.is_empty() {
            tracing::warn!(keys = ?eval.restart_required, path = %path.display(),
                "configuration keys changed that only a restart applies; not applied");
        }
        match eval.decision {
            Decision::Reject(e) => {
                tracing::warn!(error = %e, path = %path.display(),
                    "configuration reload refused; the settings in force are kept");
                self.finish("rejected", Some(e.to_string()), eval.restart_required);
            }
            Decision::Unchanged => {
                tracing::info!(path = %path.display(), "configuration re-read; warm-pool settings unchanged");
                self.finish("unchanged", None, eval.restart_required);
            }
            Decision::Apply(next) => {
                *self.current.lock().expect("tuner mutex poisoned") = next;
                (self.apply)(next);
                self.publish(&next);
                let generation = self.finish("applied", None, eval.restart_required);
                tracing::info!(generation, from = ?current, to = ?next, "warm-pool settings changed");
            }
        }
    }

    fn finish(
        &self,
        result: &'static str,
        error: Option<String>,
        restart_required: Vec<String>,
    ) -> u64 {
        let mut st = self.state.lock().expect("tuner mutex poisoned");
        if result == "applied" {
            st.generation += 1;
        }
        st.last = Some(ReloadReport {
            at_unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            result,
            error,
            restart_required,
        });
        self.metrics.reload(result, st.generation);
        st.generation
    }

    fn publish(&self, s: &PoolSettings) {
        self.metrics.set_settings(&[
            ("warm_ip_target", s.warm_ip_target.map(u64::from)),
            ("minimum_ip_target", s.minimum_ip_target.map(u64::from)),
            ("warm_eni_target", Some(u64::from(s.warm_eni_target))),
            ("warm_prefix_target", s.warm_prefix_target.map(u64::from)),
            ("max_eni", s.max_eni.map(u64::from)),
            ("ip_cooldown_period_seconds", Some(s.cooldown.as_secs())),
        ]);
    }

    /// The `config` section of `ipamd status`.
    pub fn status(&self) -> Value {
        let s = self.current();
        let st = self.state.lock().expect("tuner mutex poisoned");
        json!({
            "source": self.path.as_ref().map(|p| p.display().to_string()),
            "generation": st.generation,
            "lastReload": st.last,
            "liveKeys": LIVE_KEYS,
            "pool": {
                "warmIpTarget": s.warm_ip_target,
                "minimumIpTarget": s.minimum_ip_target,
                "warmEniTarget": s.warm_eni_target,
                "warmPrefixTarget": s.warm_prefix_target,
                "prefixDelegation": s.prefix_delegation,
                "maxEni": s.max_eni,
                "ipCooldownSeconds": s.cooldown.as_secs(),
            },
        })
    }

    /// Re-reads on every SIGHUP and every [`POLL_EVERY`], forever.
    /// `hangups` yields once per SIGHUP.
    pub async fn run(self: Arc<Self>, mut hangups: impl futures::Stream<Item = ()> + Unpin) {
        use futures::StreamExt;
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                h = hangups.next() => match h {
                    Some(()) => true,
                    None => return,
                },
            };
            if forced {
                tracing::info!("SIGHUP: re-reading the configuration");
            }
            let me = self.clone();
            // File reads: keep them off the async workers.
            let _ = tokio::task::spawn_blocking(move || me.reload(forced)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn start(vars: &[(&str, &str)]) -> PoolSettings {
        Config::from_vars(env(vars)).unwrap().pool
    }

    #[test]
    fn file_overrides_the_environment_for_live_keys() {
        let e = env(&[("WARM_IP_TARGET", "3"), ("MAX_ENI", "2")]);
        let s = start(&[("WARM_IP_TARGET", "3"), ("MAX_ENI", "2")]);
        let ev = evaluate(&e, &file(&[("WARM_IP_TARGET", "7")]), &s, &s);
        let Decision::Apply(next) = ev.decision else {
            panic!("{ev:?}")
        };
        assert_eq!(next.warm_ip_target, Some(7));
        assert_eq!(next.max_eni, Some(2), "non-live fields are kept");
        assert!(ev.restart_required.is_empty());
    }

    #[test]
    fn same_values_are_unchanged() {
        let e = env(&[("WARM_IP_TARGET", "3")]);
        let s = start(&[("WARM_IP_TARGET", "3")]);
        let ev = evaluate(&e, &file(&[("WARM_IP_TARGET", " 3")]), &s, &s);
        assert_eq!(ev.decision, Decision::Unchanged);
    }

    #[test]
    fn a_removed_key_is_unset_whatever_the_stale_environment_says() {
        // The pod started with WARM_IP_TARGET=9 from the ConfigMap (envFrom);
        // the key has since been removed from it.
        let e = env(&[("WARM_IP_TARGET", "9"), ("MAX_ENI", "2")]);
        let s = start(&[("WARM_IP_TARGET", "9"), ("MAX_ENI", "2")]);
        let ev = evaluate(&e, &file(&[("MAX_ENI", "2")]), &s, &s);
        let Decision::Apply(next) = ev.decision else {
            panic!("{ev:?}")
        };
        assert_eq!(next.warm_ip_target, None);
        assert_eq!(next.warm_eni_target, 1, "its default");
        assert_eq!(next.max_eni, Some(2));
        assert!(ev.restart_required.is_empty());
    }

    #[test]
    fn bad_values_are_rejected_with_the_variable_named() {
        let e = env(&[]);
        let s = start(&[]);
        for (k, v) in [
            ("WARM_IP_TARGET", "lots"),
            ("MINIMUM_IP_TARGET", "-1"),
            ("WARM_ENI_TARGET", "1.5"),
            ("MAX_ENI", "0"),
            ("AWS_VPC_ENI_MTU", "10"),
        ] {
            let ev = evaluate(&e, &file(&[("WARM_IP_TARGET", "4"), (k, v)]), &s, &s);
            let Decision::Reject(err) = ev.decision else {
                panic!("{k}={v} accepted: {ev:?}")
            };
            assert_eq!(err.var, k);
            assert!(err.to_string().contains(v), "{err}");
        }
    }

    #[test]
    fn non_live_changes_need_a_restart_and_are_not_applied() {
        let e = env(&[("MAX_ENI", "2")]);
        let s = start(&[("MAX_ENI", "2")]);
        let ev = evaluate(
            &e,
            &file(&[("MAX_ENI", "3"), ("IP_COOLDOWN_PERIOD", "5"), ("FOO", "x")]),
            &s,
            &s,
        );
        assert_eq!(ev.decision, Decision::Unchanged);
        assert_eq!(
            ev.restart_required,
            vec!["FOO", "IP_COOLDOWN_PERIOD", "MAX_ENI"]
        );
    }

    #[test]
    fn reads_a_configmap_directory_and_a_key_value_file() {
        let dir = std::env::temp_dir().join(format!("vpc-cni-tuning-{}", std::process::id()));
        let data = dir.join("..2026_11_25_00_00_00.1");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("WARM_IP_TARGET"), "5\n").unwrap();
        std::os::unix::fs::symlink("..2026_11_25_00_00_00.1", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/WARM_IP_TARGET", dir.join("WARM_IP_TARGET")).unwrap();
        let got = read_source(&dir).unwrap();
        assert_eq!(got, file(&[("WARM_IP_TARGET", "5")]));

        let f = dir.join("..env");
        std::fs::write(
            &f,
            "# warm pool\nWARM_IP_TARGET=6\n\nMINIMUM_IP_TARGET = \"10\"\n",
        )
        .unwrap();
        assert_eq!(
            read_source(&f).unwrap(),
            file(&[("MINIMUM_IP_TARGET", "10"), ("WARM_IP_TARGET", "6")])
        );
        std::fs::write(&f, "WARM_IP_TARGET 6\n").unwrap();
        assert!(matches!(
            read_source(&f),
            Err(SourceError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            read_source(&dir.join("missing")),
            Err(SourceError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tuner_applies_counts_and_keeps_the_old_value_on_a_bad_one() {
        let dir = std::env::temp_dir().join(format!("vpc-cni-tuner-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("WARM_IP_TARGET");
        std::fs::write(&path, "2").unwrap();
        let mut config = Config::from_vars(env(&[])).unwrap();
        config.config_path = Some(dir.clone());
        let initial = startup_settings(&config, &[]).unwrap();
        assert_eq!(initial.settings.warm_ip_target, Some(2));
        let applied = Arc::new(Mutex::new(Vec::new()));
        let sink = applied.clone();
        let metrics = crate::metrics::Metrics::new();
        let tuner = Tuner::new(
            &config,
            Vec::new(),
            initial,
            move |s| sink.lock().unwrap().push(s.warm_ip_target),
            metrics.config().clone(),
        );
        tuner.reload(false);
        assert!(applied.lock().unwrap().is_empty(), "nothing changed yet");
        std::fs::write(&path, "8").unwrap();
        tuner.reload(false);
        assert_eq!(*applied.lock().unwrap(), vec![Some(8)]);
        std::fs::write(&path, "eight").unwrap();
        tuner.reload(false);
        assert_eq!(tuner.current().warm_ip_target, Some(8), "old value kept");
        let st = tuner.status();
        assert_eq!(st["generation"], 1);
        assert_eq!(st["lastReload"]["result"], "rejected");
        assert!(st["lastReload"]["error"]
            .as_str()
            .unwrap()
            .contains("WARM_IP_TARGET=\"eight\""));
        let text = metrics.encode();
        assert!(text.contains("vpc_cni_config_generation 1\n"), "{text}");
        assert!(text.contains("vpc_cni_config_reloads_total{result=\"rejected\"} 1\n"));
        assert!(text.contains("vpc_cni_config_last_reload_success 0\n"));
        assert!(text.contains("vpc_cni_pool_setting{setting=\"warm_ip_target\"} 8\n"));
        std::fs::write(&path, "bad").unwrap();
        assert!(startup_settings(&config, &[]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
