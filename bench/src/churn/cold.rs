//! (f) A burst of pods on a cold node: ipamd started with nothing (fresh
//! state, empty pool) in a node namespace of its own, asked for
//! [`scale::PODS`] pods at once as soon as CNI STATUS says it is ready, and
//! the same burst in the scale simulation's model of an aws-node-like
//! daemon and of our pool (virtual time, EC2's latencies and buckets).

use std::path::Path;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;
use vpc_cni_bench::scale::{self, node::Policy};

use super::daemon::Daemon;
use super::netns::{self, Namespaces};
use super::plugin::{Plugin, Pod};
use super::{interrupted, Result};

/// How long the cold daemon may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a pod may retry its ADD.
const ADD_TIMEOUT: Duration = Duration::from_secs(120);
/// A runtime's pause before retrying an ADD answered with code 11
/// (kubelet's own back-off is longer: this favours no one).
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The sim latencies of the measured runs: `0` (the sim's default: every
/// call answered at once) and `ec2` (the scale model's latencies).
pub const LATENCIES: [&str; 2] = ["0", "ec2"];

/// One cold burst, every time measured from the daemon's spawn.
#[derive(Debug, Clone, Serialize)]
pub struct ColdBurst {
    /// `VPC_CNI_SIM_API_LATENCY_MS` of the run.
    pub sim_latency: String,
    /// Until CNI STATUS first succeeded (the runtime's gate for sandboxes).
    pub ready_ms: f64,
    /// Until the first pod's ADD returned its address.
    pub first_ms: f64,
    /// Until the last pod's ADD returned.
    pub last_ms: f64,
    /// ADDs answered with code 11 and retried.
    pub retries: usize,
}

/// The same burst in the scale simulation's model.
#[derive(Debug, Clone, Serialize)]
pub struct Modelled {
    /// The policy's name in the scale section.
    pub policy: String,
    /// Until the first pod had an address.
    pub first_ms: f64,
    /// Until the last pod had one.
    pub last_ms: f64,
    /// The fastest and slowest runs' last pod.
    pub last_range_ms: (f64, f64),
}

/// Runs the cold burst once per entry of [`LATENCIES`].
pub fn measure(namespaces: &Namespaces, bin_dir: &Path, dir: &Path) -> Result<Vec<ColdBurst>> {
    LATENCIES
        .iter()
        .map(|latency| burst(namespaces, bin_dir, dir, latency))
        .collect()
}

/// Runs of the model per policy: its aws-node-like loop starts at a
/// random phase, so one run is one draw.
pub const MODEL_RUNS: usize = 21;

/// The model's cold node (no prefix held from launch), for aws-node-like
/// and for our fixed pool: medians of [`MODEL_RUNS`] runs.
pub fn modelled() -> Result<Vec<Modelled>> {
    [Policy::AwsNodeLike, Policy::Fixed]
        .into_iter()
        .map(|policy| {
            let mut first = Vec::with_capacity(MODEL_RUNS);
            let mut last = Vec::with_capacity(MODEL_RUNS);
            for _ in 0..MODEL_RUNS {
                let lone = scale::lone(policy, false)?;
                first.extend(lone.phase.first.first().copied());
                last.extend(lone.phase.all.first().copied());
            }
            Ok(Modelled {
                policy: policy.name().to_string(),
                first_ms: median_ms(&mut first),
                last_ms: median_ms(&mut last),
                last_range_ms: (
                    last.first().map_or(f64::NAN, ms),
                    last.last().map_or(f64::NAN, ms),
                ),
            })
        })
        .collect()
}

fn ms(d: &Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Sorts `v` and returns its median in ms.
fn median_ms(v: &mut [Duration]) -> f64 {
    v.sort();
    v.get(v.len() / 2).map_or(f64::NAN, ms)
}

fn burst(namespaces: &Namespaces, bin_dir: &Path, dir: &Path, latency: &str) -> Result<ColdBurst> {
    let tag = format!("cold{latency}");
    let node = netns::pod_name(&tag);
    namespaces.create(&node)?;
    let dir = dir.join(&tag);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let pods = (0..scale::PODS)
        .map(|i| {
            let name = format!("ours-{tag}-{i}");
            let ns = netns::pod_name(&name);
            let path = namespaces.create(&ns)?;
            Ok(Pod::new(name, ns, path))
        })
        .collect::<Result<Vec<_>>>()?;
    // The spawning thread enters the cold namespace; ipamd inherits it,
    // this process's other threads stay in the warm node.
    let (mut daemon, t0) = thread::scope(|s| {
        s.spawn(|| -> Result<(Daemon, Instant)> {
            netns::enter(&node)?;
            let t0 = Instant::now();
            Ok((Daemon::start_cold(bin_dir, &dir, latency)?, t0))
        })
        .join()
        .unwrap_or_else(|_| Err("the thread starting the cold ipamd panicked".into()))
    })?;
    daemon.wait_ready(READY_TIMEOUT)?;
    let ready = t0.elapsed();
    let plugin = Plugin::ours(bin_dir, daemon.socket());
    let start = Barrier::new(pods.len());
    let answered: Vec<Result<(Instant, usize)>> = thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|pod| {
                let (start, plugin) = (&start, &plugin);
                s.spawn(move || {
                    start.wait();
                    add_with_retries(plugin, pod)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a cold-burst thread panicked".into()))
            })
            .collect()
    });
    let answered = answered.into_iter().collect::<Result<Vec<_>>>()?;
    let since = |at: &Instant| at.saturating_duration_since(t0).as_secs_f64() * 1e3;
    let out = ColdBurst {
        sim_latency: latency.to_string(),
        ready_ms: ready.as_secs_f64() * 1e3,
        first_ms: answered
            .iter()
            .map(|(at, _)| since(at))
            .fold(f64::MAX, f64::min),
        last_ms: answered.iter().map(|(at, _)| since(at)).fold(0.0, f64::max),
        retries: answered.iter().map(|(_, r)| r).sum(),
    };
    for pod in &pods {
        plugin.del(pod)?;
        namespaces.delete(&pod.netns_name)?;
    }
    daemon.stop();
    namespaces.delete(&node)?;
    Ok(out)
}

/// ADD until the address comes, pausing [`RETRY_PAUSE`] after each code 11;
/// returns when it came and how many retries it took.
fn add_with_retries(plugin: &Plugin, pod: &Pod) -> Result<(Instant, usize)> {
    let deadline = Instant::now() + ADD_TIMEOUT;
    let mut retries = 0;
    loop {
        if plugin.try_add(pod)?.is_some() {
            return Ok((Instant::now(), retries));
        }
        if interrupted() || Instant::now() > deadline {
            return Err(format!(
                "pod {} had no address after {retries} retries over {ADD_TIMEOUT:?}",
                pod.name
            )
            .into());
        }
        retries += 1;
        thread::sleep(RETRY_PAUSE);
    }
}
