//! What the daemon did and holds, as Prometheus metrics (`vpc_cni_` prefix),
//! passed around as a handle (no globals).
//!
//! [`Metrics`] owns one registry with every family registered at start, so a
//! scrape always shows the full set (a family nobody has touched yet shows
//! no samples or zeros). Each subsystem takes a small typed handle —
//! [`Metrics::cni`], [`Metrics::ec2`], [`Metrics::checkpoint`],
//! [`Metrics::reconcile`], [`Metrics::leaks`], [`Metrics::policy`],
//! [`Metrics::pool`], [`Metrics::config`] — and records through verbs, never
//! through label strings of its own, so labels stay bounded (no pod names).
//! Handles are cheap clones (the families are shared).
//!
//! Gauges that describe state owned elsewhere (addresses, ENIs) are filled
//! by samplers ([`Metrics::add_sampler`]) that run just before each scrape:
//! nothing on the ADD path keeps them up to date.
//!
//! Who records what:
//!
//! | handle | recorded by | call |
//! |---|---|---|
//! | [`Metrics::cni`] | `pod::PodService::handle`, every request | `observe(command, took, error_code)` |
//! | [`Metrics::ec2`] | [`crate::metered_cloud::MeteredCloud`], wrapping the provider inside any budget/retry layer | `observe_result(op, &result, took)` |
//! | [`Metrics::checkpoint`] | `store::Store::run`, each write | `observe_write(ok, took)` |
//! | [`Metrics::pool`] | the daemon's sampler (allocator + pool) | `record(&PoolSample)` |
//! | [`Metrics::config`] | [`crate::tuning::Tuner`] | `reload(result, generation)`, `set_settings` |
//! | [`Metrics::reconcile`] | reconciliation at start and on resync | `run(ok)`, `event("orphan_released", n)` ... |
//! | [`Metrics::leaks`] | the pool's leak collection | `run(ok)`, `event("eni_deleted", n)` ... |
//! | [`Metrics::policy`] | the NetworkPolicy engine, after each transaction | `set_size(rules, sets, elements)`, `observe_update(trigger, ok, took)` |
//!
//! The last three families are registered (and documented in the README)
//! for the subsystems that record them.
//!
//! ```
//! use std::time::Duration;
//! use ipamd::metrics::{CallOutcome, Metrics};
//!
//! let m = Metrics::new();
//! m.ec2().observe_call("assign_ips", CallOutcome::Ok, Duration::from_millis(40));
//! assert!(m.encode().contains("vpc_cni_ec2_requests_total{operation=\"assign_ips\",result=\"ok\"} 1"));
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cni_plugin::wire::Command;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;
use serde_json::{json, Value};

use crate::cloud::CloudError;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How many recent cloud errors `ipamd status` shows.
const LAST_ERRORS: usize = 10;

/// The pod path: from a fraction of a millisecond (a repeated ADD) to the
/// seconds an ADD may wait for the pool to grow.
const CNI_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Cloud calls: milliseconds (simulator, moto) to tens of seconds (an ENI
/// attachment under throttling).
const CLOUD_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Local work: fsync of a checkpoint, an nftables transaction.
const LOCAL_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn new_histograms<L>(buckets: fn() -> Histogram) -> HistogramFamily<L>
where
    L: Clone + std::hash::Hash + Eq,
{
    Family::new_with_constructor(buckets)
}

fn cni_histogram() -> Histogram {
    Histogram::new(CNI_BUCKETS)
}
fn cloud_histogram() -> Histogram {
    Histogram::new(CLOUD_BUCKETS)
}
fn local_histogram() -> Histogram {
    Histogram::new(LOCAL_BUCKETS)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------
// CNI requests
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CniCodeLabels {
    command: &'static str,
    result: &'static str,
    /// The CNI error code; 0 for success.
    code: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CniLabels {
    command: &'static str,
    result: &'static str,
}

#[derive(Default)]
struct PerCommand {
    calls: AtomicU64,
    errors: AtomicU64,
    total_us: AtomicU64,
}

/// CNI requests over the socket: counts by result and error code, latency.
#[derive(Clone)]
pub struct CniMetrics {
    requests: Family<CniCodeLabels, Counter>,
    duration: HistogramFamily<CniLabels>,
    /// Per-command totals for `ipamd status` (Prometheus families cannot be
    /// read back by label).
    per: Arc<[PerCommand; 6]>,
    /// The success series of each command, resolved once: the common case
    /// then skips the families' label hashing and locks.
    ok: Arc<[(Counter, Histogram); 6]>,
}

const COMMANDS: [Command; 6] = [
    Command::Add,
    Command::Del,
    Command::Check,
    Command::Status,
    Command::Gc,
    Command::Introspect,
];

fn slot(command: Command) -> usize {
    match command {
        Command::Add => 0,
        Command::Del => 1,
        Command::Check => 2,
        Command::Status => 3,
        Command::Gc => 4,
        Command::Introspect => 5,
    }
}

impl CniMetrics {
    /// Records one handled request; `error_code` is the CNI code of a failure.
    pub fn observe(&self, command: Command, took: Duration, error_code: Option<u32>) {
        match error_code {
            None => {
                let (count, duration) = &self.ok[slot(command)];
                count.inc();
                duration.observe(secs(took));
            }
            Some(code) => {
                let name = command.as_str();
                self.requests
                    .get_or_create(&CniCodeLabels {
                        command: name,
                        result: "error",
                        code,
                    })
                    .inc();
                self.duration
                    .get_or_create(&CniLabels {
                        command: name,
                        result: "error",
                    })
                    .observe(secs(took));
            }
        }
        let p = &self.per[slot(command)];
        p.calls.fetch_add(1, Ordering::Relaxed);
        p.total_us.fetch_add(
            took.as_micros().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
        if error_code.is_some() {
            p.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Calls and errors of one command so far.
    pub fn calls(&self, command: Command) -> (u64, u64) {
        let p = &self.per[slot(command)];
        (
            p.calls.load(Ordering::Relaxed),
            p.errors.load(Ordering::Relaxed),
        )
    }

    fn snapshot(&self) -> Value {
        let mut out = serde_json::Map::new();
        for c in COMMANDS {
            let p = &self.per[slot(c)];
            let calls = p.calls.load(Ordering::Relaxed);
            if calls == 0 {
                continue;
            }
            out.insert(
                c.as_str().to_string(),
                json!({
                    "calls": calls,
                    "errors": p.errors.load(Ordering::Relaxed),
                    "meanUs": p.total_us.load(Ordering::Relaxed) / calls,
                }),
            );
        }
        Value::Object(out)
    }
}

// ---------------------------------------------------------------------------
// Cloud (EC2) calls
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpResultLabels {
    operation: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpErrorLabels {
    operation: String,
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    operation: String,
}

/// How one cloud call ended.
#[derive(Debug, Clone, Copy)]
pub enum CallOutcome<'a> {
    /// It succeeded.
    Ok,
    /// The cloud throttled it (EC2 `RequestLimitExceeded`).
    Throttled,
    /// It failed otherwise. `code` is bounded (an EC2 error code or our
    /// error kind), `message` is for `ipamd status` only.
    Error {
        /// e.g. `InsufficientFreeAddressesInSubnet`.
        code: &'a str,
        /// What the cloud said.
        message: &'a str,
    },
}

/// One recent cloud error, for `ipamd status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudErrorRecord {
    /// When (seconds since the epoch).
    pub at_unix: u64,
    /// The operation.
    pub operation: String,
    /// The error code.
    pub code: String,
    /// The message.
    pub message: String,
}

/// Calls to the cloud API by operation: counts by result, errors by code,
/// throttles, latency, and the last few errors.
#[derive(Clone)]
pub struct Ec2Metrics {
    requests: Family<OpResultLabels, Counter>,
    errors: Family<OpErrorLabels, Counter>,
    throttles: Family<OpLabels, Counter>,
    duration: HistogramFamily<OpLabels>,
    last_errors: Arc<Mutex<VecDeque<CloudErrorRecord>>>,
}

impl Ec2Metrics {
    /// Records one call of `operation` (an EC2 action such as
    /// `AssignPrivateIpAddresses`, or a [`crate::cloud::Cloud`] method).
    pub fn observe_call(&self, operation: &str, outcome: CallOutcome<'_>, took: Duration) {
        let result = match outcome {
            CallOutcome::Ok => "ok",
            CallOutcome::Throttled => "throttled",
            CallOutcome::Error { .. } => "error",
        };
        let operation = operation.to_string();
        self.requests
            .get_or_create(&OpResultLabels {
                operation: operation.clone(),
                result,
            })
            .inc();
        self.duration
            .get_or_create(&OpLabels {
                operation: operation.clone(),
            })
            .observe(secs(took));
        let (code, message) = match outcome {
            CallOutcome::Ok => return,
            CallOutcome::Throttled => {
                self.throttles
                    .get_or_create(&OpLabels {
                        operation: operation.clone(),
                    })
                    .inc();
                ("RequestLimitExceeded", "throttled")
            }
            CallOutcome::Error { code, message } => (code, message),
        };
        self.errors
            .get_or_create(&OpErrorLabels {
                operation: operation.clone(),
                error: code.to_string(),
            })
            .inc();
        let mut last = self.last_errors.lock().expect("metrics mutex poisoned");
        if last.len() == LAST_ERRORS {
            last.pop_front();
        }
        last.push_back(CloudErrorRecord {
            at_unix: unix_now(),
            operation,
            code: code.to_string(),
            message: message.to_string(),
        });
    }

    /// Records the result of a [`crate::cloud::Cloud`] call.
    pub fn observe_result<T>(
        &self,
        operation: &str,
        result: &Result<T, CloudError>,
        took: Duration,
    ) {
        match result {
            Ok(_) => self.observe_call(operation, CallOutcome::Ok, took),
            Err(CloudError::Throttled { .. }) => {
                self.observe_call(operation, CallOutcome::Throttled, took)
            }
            Err(e) => {
                let code = error_kind(e);
                let message = e.to_string();
                self.observe_call(
                    operation,
                    CallOutcome::Error {
                        code: &code,
                        message: &message,
                    },
                    took,
                )
            }
        }
    }

    /// The most recent errors, oldest first.
    pub fn last_errors(&self) -> Vec<CloudErrorRecord> {
        self.last_errors
            .lock()
            .expect("metrics mutex poisoned")
            .iter()
            .cloned()
            .collect()
    }
}

/// The variant name of a cloud error (`SubnetFull`, `Throttled`, ...): a
/// bounded label that stays right when variants are added.
pub fn error_kind(e: &CloudError) -> String {
    let debug = format!("{e:?}");
    debug
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or("Unknown")
        .to_string()
}

// ---------------------------------------------------------------------------
// Checkpoint, reconcile, leak collection, policy
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

fn result_label(ok: bool) -> ResultLabels {
    ResultLabels {
        result: if ok { "ok" } else { "error" },
    }
}

/// Checkpoint writes: latency and failures.
#[derive(Clone)]
pub struct CheckpointMetrics {
    writes: Family<ResultLabels, Counter>,
    duration: Histogram,
}

impl CheckpointMetrics {
    /// Records one checkpoint write (serialise + write + fsync + rename).
    pub fn observe_write(&self, ok: bool, took: Duration) {
        self.writes.get_or_create(&result_label(ok)).inc();
        self.duration.observe(secs(took));
    }
}

/// Events of one kind-labelled counter (reconcile, leak collection).
#[derive(Clone)]
pub struct EventMetrics {
    events: Family<KindLabels, Counter>,
    runs: Family<ResultLabels, Counter>,
}

impl EventMetrics {
    /// Counts `n` events of `kind` (a fixed name, e.g. `orphan_released`).
    pub fn event(&self, kind: &'static str, n: u64) {
        self.events.get_or_create(&KindLabels { kind }).inc_by(n);
    }

    /// Counts one pass (a reconcile at start, a leak-collection sweep).
    pub fn run(&self, ok: bool) {
        self.runs.get_or_create(&result_label(ok)).inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    trigger: &'static str,
    result: &'static str,
}

/// NetworkPolicy enforcement: programmed size and update latency.
#[derive(Clone)]
pub struct PolicyMetrics {
    rules: Gauge,
    sets: Gauge,
    set_elements: Gauge,
    updates: Family<TriggerLabels, Counter>,
    duration: HistogramFamily<KindLabels>,
}

impl PolicyMetrics {
    /// What is programmed now (after an update).
    pub fn set_size(&self, rules: u64, sets: u64, set_elements: u64) {
        self.rules.set(rules as i64);
        self.sets.set(sets as i64);
        self.set_elements.set(set_elements as i64);
    }

    /// Records one ruleset update; `trigger` is a fixed name (`pod_add`,
    /// `pod_del`, `source_change`, `resync`).
    pub fn observe_update(&self, trigger: &'static str, ok: bool, took: Duration) {
        self.updates
            .get_or_create(&TriggerLabels {
                trigger,
                result: result_label(ok).result,
            })
            .inc();
        self.duration
            .get_or_create(&KindLabels { kind: trigger })
            .observe(secs(took));
    }
}

// ---------------------------------------------------------------------------
// The pool (sampled) and live configuration
// ---------------------------------------------------------------------------

/// The pool's state at one moment, as the sampler reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolSample {
    /// Addresses in the pool.
    pub total: u64,
    /// Held by pods.
    pub assigned: u64,
    /// Free but resting after a release (cooldown).
    pub cooling: u64,
    /// How many addresses the pool aims to hold now.
    pub target: u64,
    /// The most this node may hold.
    pub max: u64,
    /// Attached ENIs.
    pub enis: u64,
    /// The most ENIs this node may have.
    pub max_enis: u64,
    /// Delegated /28 prefixes.
    pub prefixes: u64,
    /// First fill done.
    pub ready: bool,
    /// The last attempt to grow failed.
    pub blocked: bool,
    /// Allocations so far that took a still-cooling address because
    /// nothing else was free (monotonic).
    pub cooldown_starvation_takes: u64,
}

/// The pool's gauges.
#[derive(Clone)]
pub struct PoolMetrics {
    total: Gauge,
    assigned: Gauge,
    warm: Gauge,
    cooling: Gauge,
    target: Gauge,
    max: Gauge,
    enis: Gauge,
    max_enis: Gauge,
    prefixes: Gauge,
    ready: Gauge,
    blocked: Gauge,
    starvation: Counter,
    starvation_seen: Arc<AtomicU64>,
}

impl PoolMetrics {
    /// Sets every pool gauge from one sample.
    pub fn record(&self, s: &PoolSample) {
        self.total.set(s.total as i64);
        self.assigned.set(s.assigned as i64);
        let free = s.total.saturating_sub(s.assigned);
        let cooling = s.cooling.min(free);
        self.warm.set((free - cooling) as i64);
        self.cooling.set(cooling as i64);
        self.target.set(s.target as i64);
        self.max.set(s.max as i64);
        self.enis.set(s.enis as i64);
        self.max_enis.set(s.max_enis as i64);
        self.prefixes.set(s.prefixes as i64);
        self.ready.set(i64::from(s.ready));
        self.blocked.set(i64::from(s.blocked));
        let before = self
            .starvation_seen
            .fetch_max(s.cooldown_starvation_takes, Ordering::Relaxed);
        if s.cooldown_starvation_takes > before {
            self.starvation.inc_by(s.cooldown_starvation_takes - before);
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SettingLabels {
    setting: &'static str,
}

/// Live configuration: reloads and the warm-pool settings in force.
#[derive(Clone)]
pub struct ConfigMetrics {
    generation: Gauge,
    reloads: Family<ResultLabels, Counter>,
    last_success: Gauge,
    last_reload: Gauge,
    settings: Family<SettingLabels, Gauge>,
}

impl ConfigMetrics {
    /// Records one reload: `result` is `applied`, `unchanged` or `rejected`.
    pub fn reload(&self, result: &'static str, generation: u64) {
        self.reloads.get_or_create(&ResultLabels { result }).inc();
        self.generation.set(generation as i64);
        self.last_success.set(i64::from(result != "rejected"));
        self.last_reload.set(unix_now() as i64);
    }

    /// The settings in force (`None`: not set, the series disappears).
    pub fn set_settings(&self, settings: &[(&'static str, Option<u64>)]) {
        for (setting, value) in settings {
            let labels = SettingLabels { setting };
            match value {
                Some(v) => {
                    self.settings.get_or_create(&labels).set(*v as i64);
                }
                None => {
                    self.settings.remove(&labels);
                }
            }
        }
    }

    /// The generation in force (0 = settings from start-up).
    pub fn set_generation(&self, generation: u64) {
        self.generation.set(generation as i64);
        self.last_success.set(1);
    }
}

// ---------------------------------------------------------------------------
// The registry
// ---------------------------------------------------------------------------

type Sampler = Box<dyn Fn(&Metrics) + Send + Sync>;

/// Every metric of the daemon.
pub struct Metrics {
    registry: Registry,
    cni: CniMetrics,
    ec2: Ec2Metrics,
    checkpoint: CheckpointMetrics,
    reconcile: EventMetrics,
    leaks: EventMetrics,
    policy: PolicyMetrics,
    pool: PoolMetrics,
    config: ConfigMetrics,
    samplers: Mutex<Vec<Sampler>>,
    timings: crate::timing::CallTimings,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("vpc_cni");
        r.register(
            "build",
            "Version of this ipamd",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );

        let requests: Family<CniCodeLabels, Counter> = Family::default();
        let duration = new_histograms(cni_histogram);
        let ok = COMMANDS.map(|c| {
            (
                requests.get_or_create_owned(&CniCodeLabels {
                    command: c.as_str(),
                    result: "ok",
                    code: 0,
                }),
                duration.get_or_create_owned(&CniLabels {
                    command: c.as_str(),
                    result: "ok",
                }),
            )
        });
        let cni = CniMetrics {
            requests,
            duration,
            per: Arc::new(Default::default()),
            ok: Arc::new(ok),
        };
        r.register(
            "cni_requests",
            "CNI requests handled, by command, result and CNI error code (0 = success)",
            cni.requests.clone(),
        );
        r.register_with_unit(
            "cni_request_duration",
            "Time to handle a CNI request inside ipamd, by command and result",
            Unit::Seconds,
            cni.duration.clone(),
        );

        let ec2 = Ec2Metrics {
            requests: Family::default(),
            errors: Family::default(),
            throttles: Family::default(),
            duration: new_histograms(cloud_histogram),
            last_errors: Arc::new(Mutex::new(VecDeque::new())),
        };
        r.register(
            "ec2_requests",
            "Cloud API calls by operation and result (ok, error, throttled)",
            ec2.requests.clone(),
        );
        r.register(
            "ec2_errors",
            "Failed cloud API calls by operation and error code",
            ec2.errors.clone(),
        );
        r.register(
            "ec2_throttles",
            "Cloud API calls refused by throttling (RequestLimitExceeded), by operation",
            ec2.throttles.clone(),
        );
        r.register_with_unit(
            "ec2_request_duration",
            "Latency of cloud API calls by operation",
            Unit::Seconds,
            ec2.duration.clone(),
        );

        let checkpoint = CheckpointMetrics {
            writes: Family::default(),
            duration: local_histogram(),
        };
        r.register(
            "checkpoint_writes",
            "Checkpoint writes by result",
            checkpoint.writes.clone(),
        );
        r.register_with_unit(
            "checkpoint_write_duration",
            "Time to write and fsync one checkpoint",
            Unit::Seconds,
            checkpoint.duration.clone(),
        );

        let reconcile = EventMetrics {
            events: Family::default(),
            runs: Family::default(),
        };
        r.register(
            "reconcile_events",
            "Differences found and repaired by reconciliation (checkpoint vs kernel vs runtime), by kind",
            reconcile.events.clone(),
        );
        r.register(
            "reconcile_runs",
            "Reconciliation passes by result",
            reconcile.runs.clone(),
        );
        let leaks = EventMetrics {
            events: Family::default(),
            runs: Family::default(),
        };
        r.register(
            "leak_collection_events",
            "Leaked cloud resources found and collected (ENIs, addresses), by kind",
            leaks.events.clone(),
        );
        r.register(
            "leak_collection_runs",
            "Leak-collection sweeps by result",
            leaks.runs.clone(),
        );

        let policy = PolicyMetrics {
            rules: Gauge::default(),
            sets: Gauge::default(),
            set_elements: Gauge::default(),
            updates: Family::default(),
            duration: new_histograms(local_histogram),
        };
        r.register(
            "policy_rules",
            "NetworkPolicy rules programmed in nftables",
            policy.rules.clone(),
        );
        r.register(
            "policy_sets",
            "nftables sets programmed for NetworkPolicy peers",
            policy.sets.clone(),
        );
        r.register(
            "policy_set_elements",
            "Elements in the NetworkPolicy peer sets",
            policy.set_elements.clone(),
        );
        r.register(
            "policy_updates",
            "NetworkPolicy ruleset updates by trigger and result",
            policy.updates.clone(),
        );
        r.register_with_unit(
            "policy_update_duration",
            "Time to compute and program one NetworkPolicy update, by trigger",
            Unit::Seconds,
            policy.duration.clone(),
        );

        let pool = PoolMetrics {
            total: Gauge::default(),
            assigned: Gauge::default(),
            warm: Gauge::default(),
            cooling: Gauge::default(),
            target: Gauge::default(),
            max: Gauge::default(),
            enis: Gauge::default(),
            max_enis: Gauge::default(),
            prefixes: Gauge::default(),
            ready: Gauge::default(),
            blocked: Gauge::default(),
            starvation: Counter::default(),
            starvation_seen: Arc::new(AtomicU64::new(0)),
        };
        for (name, help, g) in [
            (
                "ip_addresses",
                "Pod addresses in the pool (assigned + warm + cooling)",
                &pool.total,
            ),
            (
                "ip_addresses_assigned",
                "Pod addresses held by pods",
                &pool.assigned,
            ),
            (
                "ip_addresses_warm",
                "Free pod addresses ready to hand out",
                &pool.warm,
            ),
            (
                "ip_addresses_cooling",
                "Free pod addresses resting after release (IP_COOLDOWN_PERIOD)",
                &pool.cooling,
            ),
            (
                "ip_addresses_target",
                "Addresses the warm pool aims to hold now (from the warm targets)",
                &pool.target,
            ),
            (
                "ip_addresses_max",
                "Most pod addresses this node may hold (instance type, MAX_ENI)",
                &pool.max,
            ),
            ("enis", "ENIs attached to this node", &pool.enis),
            (
                "enis_max",
                "Most ENIs this node may have (instance type, MAX_ENI)",
                &pool.max_enis,
            ),
            (
                "prefixes",
                "/28 prefixes delegated to this node's ENIs",
                &pool.prefixes,
            ),
            (
                "pool_ready",
                "1 once the pool's first fill is done",
                &pool.ready,
            ),
            (
                "pool_blocked",
                "1 while the pool's last attempt to grow failed",
                &pool.blocked,
            ),
        ] {
            r.register(name, help, g.clone());
        }
        r.register(
            "cooldown_starvation_takes",
            "Allocations that took a still-cooling address because no rested one was free",
            pool.starvation.clone(),
        );

        let config = ConfigMetrics {
            generation: Gauge::default(),
            reloads: Family::default(),
            last_success: Gauge::default(),
            last_reload: Gauge::default(),
            settings: Family::default(),
        };
        config.last_success.set(1);
        r.register(
            "config_generation",
            "Generation of the live settings in force (0 = as started, +1 per applied reload)",
            config.generation.clone(),
        );
        r.register(
            "config_reloads",
            "Reloads of the live configuration by result (applied, unchanged, rejected)",
            config.reloads.clone(),
        );
        r.register(
            "config_last_reload_success",
            "1 if the last reload was applied or unchanged, 0 if it was rejected",
            config.last_success.clone(),
        );
        r.register_with_unit(
            "config_last_reload_timestamp",
            "When the configuration was last re-read (Unix time)",
            Unit::Seconds,
            config.last_reload.clone(),
        );
        r.register(
            "pool_setting",
            "Warm-pool settings in force, by setting (absent when unset)",
            config.settings.clone(),
        );

        // Series alerts divide by exist from the start at 0, rather than
        // appearing with the first event (an absent series breaks `rate()`).
        for command in [Command::Add, Command::Del, Command::Check] {
            let _ = cni.requests.get_or_create(&CniCodeLabels {
                command: command.as_str(),
                result: "error",
                code: cni_plugin::error::INTERNAL,
            });
        }
        for ok in [true, false] {
            let _ = checkpoint.writes.get_or_create(&result_label(ok));
            let _ = reconcile.runs.get_or_create(&result_label(ok));
            let _ = leaks.runs.get_or_create(&result_label(ok));
        }
        for result in ["applied", "unchanged", "rejected"] {
            let _ = config.reloads.get_or_create(&ResultLabels { result });
        }

        Self {
            registry: r,
            cni,
            ec2,
            checkpoint,
            reconcile,
            leaks,
            policy,
            pool,
            config,
            samplers: Mutex::new(Vec::new()),
            timings: Default::default(),
        }
    }

    /// CNI requests.
    pub fn cni(&self) -> &CniMetrics {
        &self.cni
    }
    /// Cloud API calls.
    pub fn ec2(&self) -> &Ec2Metrics {
        &self.ec2
    }
    /// Where the time of CNI calls goes inside ipamd, per phase.
    pub fn timings(&self) -> &crate::timing::CallTimings {
        &self.timings
    }
    /// Checkpoint writes.
    pub fn checkpoint(&self) -> &CheckpointMetrics {
        &self.checkpoint
    }
    /// Reconciliation at start.
    pub fn reconcile(&self) -> &EventMetrics {
        &self.reconcile
    }
    /// Leak collection.
    pub fn leaks(&self) -> &EventMetrics {
        &self.leaks
    }
    /// NetworkPolicy.
    pub fn policy(&self) -> &PolicyMetrics {
        &self.policy
    }
    /// Pool gauges (normally set by a sampler).
    pub fn pool(&self) -> &PoolMetrics {
        &self.pool
    }
    /// Live configuration.
    pub fn config(&self) -> &ConfigMetrics {
        &self.config
    }

    /// Runs `f` before every scrape (to copy state owned elsewhere into gauges).
    pub fn add_sampler(&self, f: impl Fn(&Metrics) + Send + Sync + 'static) {
        self.samplers
            .lock()
            .expect("metrics mutex poisoned")
            .push(Box::new(f));
    }

    /// Samples, then renders every family in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        for s in self.samplers.lock().expect("metrics mutex poisoned").iter() {
            s(self);
        }
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Records one handled request (shorthand for `cni().observe`).
    pub fn observe(&self, command: Command, took: Duration, error_code: Option<u32>) {
        self.cni.observe(command, took, error_code);
    }

    /// Calls and errors of one command.
    pub fn calls(&self, command: Command) -> (u64, u64) {
        self.cni.calls(command)
    }

    /// A JSON view for `ipamd status`: per-command totals and the last
    /// cloud errors.
    pub fn snapshot(&self) -> Value {
        self.cni.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn counts_calls_and_errors() {
        let m = Metrics::default();
        m.observe(Command::Add, Duration::from_micros(300), None);
        m.observe(Command::Add, Duration::from_micros(900), Some(11));
        assert_eq!(m.calls(Command::Add), (2, 1));
        assert_eq!(m.snapshot()["ADD"]["meanUs"], 600);
        assert!(m.snapshot().get("DEL").is_none());
        let text = m.encode();
        assert_eq!(
            line(
                &text,
                "vpc_cni_cni_requests_total{command=\"ADD\",result=\"ok\",code=\"0\"}"
            ),
            Some("vpc_cni_cni_requests_total{command=\"ADD\",result=\"ok\",code=\"0\"} 1")
        );
        assert!(text.contains(
            "vpc_cni_cni_requests_total{command=\"ADD\",result=\"error\",code=\"11\"} 1"
        ));
        assert!(text.contains(
            "vpc_cni_cni_request_duration_seconds_count{command=\"ADD\",result=\"ok\"} 1"
        ));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn unlabelled_families_and_alerted_series_exist_before_any_event() {
        // Families with labels appear with their first sample (the
        // encoder skips empty ones); these are there from the start.
        let text = Metrics::new().encode();
        assert!(text.contains(
            "vpc_cni_cni_requests_total{command=\"DEL\",result=\"error\",code=\"100\"} 0"
        ));
        assert!(text.contains("vpc_cni_checkpoint_writes_total{result=\"error\"} 0"));
        for family in [
            "vpc_cni_cni_requests",
            "vpc_cni_checkpoint_writes",
            "vpc_cni_checkpoint_write_duration_seconds",
            "vpc_cni_reconcile_runs",
            "vpc_cni_leak_collection_runs",
            "vpc_cni_policy_rules",
            "vpc_cni_policy_sets",
            "vpc_cni_ip_addresses",
            "vpc_cni_ip_addresses_cooling",
            "vpc_cni_enis",
            "vpc_cni_prefixes",
            "vpc_cni_cooldown_starvation_takes",
            "vpc_cni_config_generation",
            "vpc_cni_config_reloads",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} missing:\n{text}"
            );
        }
    }

    #[test]
    fn cloud_errors_are_counted_by_code_and_kept_for_status() {
        let m = Metrics::new();
        let e: Result<(), _> = Err(CloudError::SubnetFull {
            subnet: "subnet-1".into(),
        });
        m.ec2()
            .observe_result("assign_ips", &e, Duration::from_millis(3));
        let t: Result<(), _> = Err(CloudError::Throttled {
            operation: "AttachNetworkInterface",
        });
        m.ec2()
            .observe_result("attach_eni", &t, Duration::from_millis(3));
        let text = m.encode();
        assert!(text
            .contains("vpc_cni_ec2_errors_total{operation=\"assign_ips\",error=\"SubnetFull\"} 1"));
        assert!(text.contains("vpc_cni_ec2_throttles_total{operation=\"attach_eni\"} 1"));
        assert!(text.contains(
            "vpc_cni_ec2_requests_total{operation=\"attach_eni\",result=\"throttled\"} 1"
        ));
        let last = m.ec2().last_errors();
        assert_eq!(last.len(), 2);
        assert_eq!(last[0].code, "SubnetFull");
        assert!(last[0].message.contains("subnet-1"));
        for i in 0..20 {
            m.ec2().observe_call(
                "x",
                CallOutcome::Error {
                    code: "E",
                    message: &i.to_string(),
                },
                Duration::ZERO,
            );
        }
        let last = m.ec2().last_errors();
        assert_eq!(last.len(), LAST_ERRORS);
        assert_eq!(last[LAST_ERRORS - 1].message, "19");
    }

    #[test]
    fn pool_sample_splits_free_into_warm_and_cooling() {
        let m = Metrics::new();
        let mut s = PoolSample {
            total: 18,
            assigned: 5,
            cooling: 3,
            cooldown_starvation_takes: 2,
            ..PoolSample::default()
        };
        m.pool().record(&s);
        let text = m.encode();
        assert!(text.contains("vpc_cni_ip_addresses 18\n"));
        assert!(text.contains("vpc_cni_ip_addresses_warm 10\n"));
        assert!(text.contains("vpc_cni_ip_addresses_cooling 3\n"));
        assert!(text.contains("vpc_cni_cooldown_starvation_takes_total 2\n"));
        // The counter follows the allocator's monotonic count, never twice.
        m.pool().record(&s);
        s.cooldown_starvation_takes = 5;
        m.pool().record(&s);
        assert!(m
            .encode()
            .contains("vpc_cni_cooldown_starvation_takes_total 5\n"));
    }

    /// Every `vpc_cni_*` name in the alert rules and the README's table is
    /// one the registry exposes (a sample or a family), so a renamed metric
    /// cannot leave a dead alert behind.
    #[test]
    fn alert_rules_and_readme_name_real_metrics() {
        let m = Metrics::new();
        let t = Duration::from_millis(1);
        m.observe(Command::Add, t, None);
        m.ec2().observe_call("op", CallOutcome::Throttled, t);
        m.ec2().observe_call(
            "op",
            CallOutcome::Error {
                code: "E",
                message: "",
            },
            t,
        );
        m.reconcile().event("k", 1);
        m.leaks().event("k", 1);
        m.policy().observe_update("pod_add", true, t);
        m.config().reload("applied", 1);
        m.config().set_settings(&[("warm_ip_target", Some(1))]);
        let text = m.encode();
        let mut known = std::collections::HashSet::new();
        for line in text.lines() {
            let name = match line.strip_prefix("# TYPE ") {
                Some(rest) => rest.split(' ').next(),
                None if !line.starts_with('#') => line.split(['{', ' ']).next(),
                None => None,
            };
            known.extend(name.map(str::to_string));
        }
        const NFT_TABLES: &[&str] = &["vpc_cni_nat"];
        for (file, doc) in [
            (
                "manifests/monitoring/prometheus-rules.yaml",
                include_str!("../../manifests/monitoring/prometheus-rules.yaml"),
            ),
            ("README.md", include_str!("../../README.md")),
        ] {
            let mut rest = doc;
            let mut seen = 0;
            while let Some(i) = rest.find("vpc_cni_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                // The prefix itself in prose, and nftables table names.
                if name.ends_with('_') || NFT_TABLES.contains(&name.as_str()) {
                    continue;
                }
                seen += 1;
                assert!(
                    known.contains(&name),
                    "{file} names {name}, which is not exposed"
                );
            }
            assert!(seen > 10, "{file}: only {seen} metric names found");
        }
    }

    #[test]
    fn error_kind_is_the_variant_name() {
        assert_eq!(
            error_kind(&CloudError::NotFound { what: "x y".into() }),
            "NotFound"
        );
    }
}
