//! The workloads. Each runs both implementations in the same run,
//! alternating call by call (or round by round for the concurrent churn),
//! so that machine noise hits both alike.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use cni_plugin::client::call;
use cni_plugin::wire::Command as Verb;
use serde::Serialize;

use super::daemon::node_request;
use super::machine::wait_until_idle;
use super::netns::{link_count, pod_name, wait_for_links, Namespaces};
use super::plugin::{Impl, Plugin, Pod};
use super::Result;

/// Lets the kernel finish what earlier steps left it (namespace creation
/// and teardown) before measuring: at most `links` links left in the node
/// namespace, and the CPUs idle.
fn settle(links: Option<usize>) -> Result<()> {
    if let Some(links) = links {
        wait_for_links(links, Duration::from_secs(5))?;
    }
    wait_until_idle(0.1, Duration::from_secs(10));
    Ok(())
}

/// One value per implementation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Pair<T> {
    /// vpc-cni.
    pub ours: T,
    /// ptp + host-local.
    pub reference: T,
}

impl<T> Pair<T> {
    /// The value of `kind`.
    pub fn get(&self, kind: Impl) -> &T {
        match kind {
            Impl::Ours => &self.ours,
            Impl::Reference => &self.reference,
        }
    }

    /// The value of `kind`, mutably.
    pub fn get_mut(&mut self, kind: Impl) -> &mut T {
        match kind {
            Impl::Ours => &mut self.ours,
            Impl::Reference => &mut self.reference,
        }
    }

    /// Builds a pair by calling `f` for each implementation.
    pub fn build(mut f: impl FnMut(Impl) -> T) -> Self {
        Pair {
            ours: f(Impl::Ours),
            reference: f(Impl::Reference),
        }
    }

    /// Builds a pair by calling `f` for each implementation; the first
    /// error wins.
    pub fn try_build(mut f: impl FnMut(Impl) -> Result<T>) -> Result<Self> {
        Ok(Pair {
            ours: f(Impl::Ours)?,
            reference: f(Impl::Reference)?,
        })
    }
}

/// Who goes first in step `i`: alternates, so neither always runs right
/// after the other.
fn order(i: usize) -> [Impl; 2] {
    if i.is_multiple_of(2) {
        [Impl::Ours, Impl::Reference]
    } else {
        [Impl::Reference, Impl::Ours]
    }
}

/// The two plugins, the no-op floor, and the namespace registry.
pub struct Bench<'a> {
    /// The plugins.
    pub plugins: Pair<Plugin>,
    /// A no-op "plugin" ([`Plugin::floor`]): what exec alone costs.
    pub floor: Plugin,
    /// Pod namespaces are created and deleted through this.
    pub namespaces: &'a Namespaces,
}

/// ADD and DEL latencies of one implementation.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    /// ADD execs.
    pub add: Vec<Duration>,
    /// DEL execs.
    pub del: Vec<Duration>,
}

impl Latencies {
    fn extend(&mut self, other: Latencies) {
        self.add.extend(other.add);
        self.del.extend(other.del);
    }
}

/// The concurrent churn of one implementation.
#[derive(Debug, Clone, Default)]
pub struct Churn {
    /// ADD+DEL pairs completed.
    pub pods: usize,
    /// Wall time of all its rounds.
    pub elapsed: Duration,
    /// Per-call latencies.
    pub latencies: Latencies,
}

impl Churn {
    /// ADD+DEL pairs per second of wall time.
    pub fn pods_per_sec(&self) -> f64 {
        self.pods as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// A burst of concurrent ADDs on a warm node.
#[derive(Debug, Clone, Default)]
pub struct Burst {
    /// Each ADD's latency, spawn to exit.
    pub adds: Vec<Duration>,
    /// From the common start to the last answer.
    pub last: Duration,
}

impl Bench<'_> {
    /// (e) `n` ADDs started at the same instant from `n` threads, per
    /// implementation (one implementation's burst after the other's, the
    /// order alternating by `round`); then their DELs, unmeasured.
    pub fn burst(&self, n: usize, round: usize) -> Result<Pair<Burst>> {
        let pods = Pair::try_build(|k| self.make_pods(k.tag(), &format!("burst{round}"), n))?;
        let links = link_count()?;
        let mut out = Pair::<Burst>::default();
        for kind in order(round) {
            settle(Some(links))?;
            let plugin = self.plugins.get(kind);
            let start = std::sync::Barrier::new(n + 1);
            let results: Vec<Result<(Duration, Instant)>> = thread::scope(|s| {
                let handles: Vec<_> = pods
                    .get(kind)
                    .iter()
                    .map(|pod| {
                        let start = &start;
                        s.spawn(move || {
                            start.wait();
                            let took = plugin.add(pod)?;
                            Ok((took, Instant::now()))
                        })
                    })
                    .collect();
                start.wait();
                let t0 = Instant::now();
                let mut all: Vec<Result<(Duration, Instant)>> = handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err("a burst thread panicked".into()))
                    })
                    .collect();
                all.push(Ok((Duration::ZERO, t0)));
                all
            });
            let mut results = results.into_iter().collect::<Result<Vec<_>>>()?;
            let (_, t0) = results.pop().expect("the start time is pushed last");
            let b = out.get_mut(kind);
            b.last = results
                .iter()
                .map(|(_, done)| done.saturating_duration_since(t0))
                .max()
                .unwrap_or_default();
            b.adds = results.into_iter().map(|(took, _)| took).collect();
            for pod in pods.get(kind) {
                plugin.del(pod)?;
                self.namespaces.delete(&pod.netns_name)?;
            }
        }
        Ok(out)
    }
}

/// (d) `n` pods ADDed one after another and then DELeted through the
/// plugin's client from this process (no exec), each pod's namespace
/// deleted after its DEL: the socket and ipamd without the plugin process.
pub fn in_process(bench: &Bench<'_>, socket: &Path, n: usize) -> Result<Latencies> {
    let pods = bench.make_pods("inproc", "seq", n)?;
    settle(None)?;
    let config: serde_json::Value = serde_json::from_slice(bench.plugins.ours.config())?;
    let call_one = |command: Verb, pod: &Pod| -> Result<Duration> {
        let request = cni_plugin::wire::Request {
            v: cni_plugin::wire::PROTOCOL_VERSION,
            command,
            container_id: pod.container_id.clone(),
            netns: pod.netns.display().to_string(),
            ifname: "eth0".into(),
            args: pod.args(),
            config: config.clone(),
        };
        let started = Instant::now();
        call(socket, &request, Duration::from_secs(10))
            .map_err(|e| format!("in-process {command:?} for {}: {e}", pod.name))?;
        Ok(started.elapsed())
    };
    let mut out = Latencies::default();
    for pod in &pods {
        out.add.push(call_one(Verb::Add, pod)?);
    }
    for pod in &pods {
        out.del.push(call_one(Verb::Del, pod)?);
        bench.namespaces.delete(&pod.netns_name)?;
    }
    Ok(out)
}

/// STATUS round trips from this process to ipamd.
#[derive(Debug, Clone, Default)]
pub struct RoundTrips {
    /// Through `cni_plugin::client::call`, exactly what the plugin does.
    pub client: Vec<Duration>,
    /// The same frame over a plain blocking `UnixStream` (no connect thread,
    /// no timeouts): the floor the socket itself sets.
    pub bare: Vec<Duration>,
}

impl Bench<'_> {
    /// Creates `count` pod namespaces for the plugin tagged `tag` (not measured).
    fn make_pods(&self, tag: &str, workload: &str, count: usize) -> Result<Vec<Pod>> {
        (0..count)
            .map(|i| {
                let name = format!("{tag}-{workload}-{i}");
                let ns = pod_name(&name);
                let path = self.namespaces.create(&ns)?;
                Ok(Pod::new(name, ns, path))
            })
            .collect()
    }

    /// ADD then DEL of a few pods and VERSION calls per plugin, unmeasured:
    /// page cache, ipamd's first-call paths, host-local's data dir.
    pub fn warm_up(&self) -> Result<()> {
        let pods = Pair::try_build(|k| self.make_pods(k.tag(), "warm", 3))?;
        for kind in order(0) {
            let plugin = self.plugins.get(kind);
            for _ in 0..5 {
                plugin.version()?;
            }
            for pod in pods.get(kind) {
                plugin.add(pod)?;
                plugin.del(pod)?;
                self.namespaces.delete(&pod.netns_name)?;
            }
        }
        Ok(())
    }

    /// (a) ADD `n` pods one after another, then DEL them all, each pod's
    /// namespace deleted right after its DEL (not measured).
    pub fn sequential(&self, n: usize) -> Result<Pair<Latencies>> {
        let pods = Pair::try_build(|k| self.make_pods(k.tag(), "seq", n))?;
        settle(None)?;
        let mut out = Pair::<Latencies>::default();
        for i in 0..n {
            for kind in order(i) {
                let took = self.plugins.get(kind).add(&pods.get(kind)[i])?;
                out.get_mut(kind).add.push(took);
            }
        }
        for i in 0..n {
            for kind in order(i) {
                let pod = &pods.get(kind)[i];
                let took = self.plugins.get(kind).del(pod)?;
                out.get_mut(kind).del.push(took);
                self.namespaces.delete(&pod.netns_name)?;
            }
        }
        Ok(out)
    }

    /// (b) `workers` threads each ADD, DEL and delete the namespace of its
    /// own pods, `total` pods per implementation. The pods are split into
    /// rounds and the implementations alternate round by round; pods/s is
    /// taken over the wall time of an implementation's rounds.
    pub fn churn(&self, total: usize, workers: usize, rounds: usize) -> Result<Pair<Churn>> {
        let pods = Pair::try_build(|k| self.make_pods(k.tag(), "churn", total))?;
        let rounds = rounds.min(total / workers).max(1);
        let per_round = total.div_ceil(rounds);
        let links = link_count()?;
        let mut out = Pair::<Churn>::default();
        for (r, start) in (0..total).step_by(per_round).enumerate() {
            let end = (start + per_round).min(total);
            for kind in order(r) {
                settle(Some(links))?;
                let batch = &pods.get(kind)[start..end];
                let plugin = self.plugins.get(kind);
                let (elapsed, latencies) = self.churn_round(plugin, batch, workers)?;
                let acc = out.get_mut(kind);
                acc.pods += batch.len();
                acc.elapsed += elapsed;
                acc.latencies.extend(latencies);
            }
        }
        Ok(out)
    }

    /// The same churn with the no-op floor plugin, in one round: the most
    /// pods/s any exec'd plugin could reach on this machine.
    pub fn floor_churn(&self, total: usize, workers: usize) -> Result<Churn> {
        let links = link_count()?;
        let pods = self.make_pods("floor", "churn", total)?;
        settle(Some(links))?;
        let (elapsed, latencies) = self.churn_round(&self.floor, &pods, workers)?;
        Ok(Churn {
            pods: total,
            elapsed,
            latencies,
        })
    }

    fn churn_round(
        &self,
        plugin: &Plugin,
        pods: &[Pod],
        workers: usize,
    ) -> Result<(Duration, Latencies)> {
        let failed = AtomicBool::new(false);
        let started = Instant::now();
        let results: Vec<Result<Latencies>> = thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    let mine = pods.iter().skip(w).step_by(workers);
                    let failed = &failed;
                    s.spawn(move || self.churn_worker(plugin, mine, failed))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a churn worker panicked".into()))
                })
                .collect()
        });
        let elapsed = started.elapsed();
        let mut all = Latencies::default();
        for r in results {
            all.extend(r?);
        }
        Ok((elapsed, all))
    }

    fn churn_worker<'p>(
        &self,
        plugin: &Plugin,
        pods: impl Iterator<Item = &'p Pod>,
        failed: &AtomicBool,
    ) -> Result<Latencies> {
        let mut lat = Latencies::default();
        for pod in pods {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let step = || -> Result<(Duration, Duration)> {
                let add = plugin.add(pod)?;
                let del = plugin.del(pod)?;
                self.namespaces.delete(&pod.netns_name)?;
                Ok((add, del))
            };
            match step() {
                Ok((add, del)) => {
                    lat.add.push(add);
                    lat.del.push(del);
                }
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Ok(lat)
    }

    /// (c) `count` VERSION execs per plugin: the cost of starting it; and
    /// as many execs of the no-op floor.
    pub fn plugin_start(&self, count: usize) -> Result<(Pair<Vec<Duration>>, Vec<Duration>)> {
        let mut out = Pair::<Vec<Duration>>::default();
        let mut floor = Vec::with_capacity(count);
        settle(None)?;
        for i in 0..count {
            for kind in order(i) {
                out.get_mut(kind).push(self.plugins.get(kind).version()?);
            }
            floor.push(self.floor.version()?);
        }
        Ok((out, floor))
    }
}

/// (c) `count` STATUS calls to ipamd from this process, through the
/// plugin's client and over a bare socket, alternating.
pub fn round_trip(socket: &Path, count: usize) -> Result<RoundTrips> {
    let request = node_request(Verb::Status);
    let frame = serde_json::to_vec(&request)?;
    let mut out = RoundTrips::default();
    wait_until_idle(0.1, Duration::from_secs(10));
    for _ in 0..count.min(50) {
        status_via_client(socket, &request)?;
    }
    for _ in 0..count {
        if super::interrupted() {
            return Err("interrupted".into());
        }
        out.client.push(status_via_client(socket, &request)?);
        out.bare.push(status_via_bare_socket(socket, &frame)?);
    }
    Ok(out)
}

fn status_via_client(socket: &Path, request: &cni_plugin::wire::Request) -> Result<Duration> {
    let started = Instant::now();
    call(socket, request, Duration::from_secs(5)).map_err(|e| format!("STATUS: {e}"))?;
    Ok(started.elapsed())
}

fn status_via_bare_socket(socket: &Path, frame: &[u8]) -> Result<Duration> {
    let started = Instant::now();
    let mut stream = UnixStream::connect(socket)?;
    stream.write_all(frame)?;
    stream.shutdown(Shutdown::Write)?;
    let mut answer = Vec::with_capacity(256);
    stream.read_to_end(&mut answer)?;
    let took = started.elapsed();
    match cni_plugin::client::decode_response(&answer) {
        Ok(cni_plugin::wire::Response::Ok { .. }) => Ok(took),
        other => Err(format!("STATUS over a bare socket: {other:?}").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_alternates() {
        assert_eq!(order(0), [Impl::Ours, Impl::Reference]);
        assert_eq!(order(1), [Impl::Reference, Impl::Ours]);
    }

    #[test]
    fn pods_per_sec() {
        let c = Churn {
            pods: 100,
            elapsed: Duration::from_millis(250),
            latencies: Latencies::default(),
        };
        assert!((c.pods_per_sec() - 400.0).abs() < 1e-9);
    }
}
