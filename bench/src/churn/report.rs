//! The results: JSON, the Markdown table with ratios and targets, and the
//! pod-churn section of `bench/RESULTS.md`.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::breakdown::{Breakdown, Column, Inputs, Totals};
use super::cold::{ColdBurst, Modelled};
use super::machine::{Machine, OtherCpu};
use super::stats::{in_us, Summary};
use super::workloads::{Burst, Churn, Latencies, Pair, RoundTrips};
use super::Result;

/// Our section of `bench/RESULTS.md`.
pub const SECTION: &str = "pod-churn";
/// What writes it.
const TOOL: &str = "target/release/pod-churn (bench/src/bin/pod-churn.rs)";
/// The plot's file name, next to the other result files.
pub const SVG_NAME: &str = "pod-churn-latency.svg";

/// The reference implementation of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Reference {
    /// ptp + host-local (containernetworking-plugins).
    Ptp,
    /// vpc-cni built from this commit.
    Earlier(String),
}

impl Reference {
    /// Its name in tables and plots.
    pub fn name(&self) -> String {
        match self {
            Reference::Ptp => "ptp+host-local".to_string(),
            Reference::Earlier(commit) => format!("vpc-cni {commit}"),
        }
    }
}

/// Workload sizes of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    /// Sequential pods per implementation.
    pub pods: usize,
    /// Churn pods per implementation.
    pub churn_pods: usize,
    /// Churn workers.
    pub workers: usize,
    /// VERSION execs per implementation.
    pub starts: usize,
    /// STATUS round trips.
    pub round_trips: usize,
    /// Concurrent ADDs per burst.
    pub burst: usize,
    /// A `--quick` smoke run.
    pub quick: bool,
}

/// ADD and DEL percentiles.
#[derive(Debug, Clone, Serialize)]
pub struct AddDel {
    /// ADD.
    pub add: Summary,
    /// DEL.
    pub del: Summary,
}

impl AddDel {
    fn of(l: &Latencies) -> Self {
        AddDel {
            add: Summary::of(&l.add),
            del: Summary::of(&l.del),
        }
    }
}

/// The churn of one implementation.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnSummary {
    /// ADD+DEL pairs.
    pub pods: usize,
    /// Wall time in seconds.
    pub elapsed_s: f64,
    /// Pairs per second.
    pub pods_per_sec: f64,
    /// Latencies under load.
    pub latency: AddDel,
}

/// Raw sequential latencies in µs, in the order of the calls.
#[derive(Debug, Clone, Serialize)]
pub struct Raw {
    /// ADD.
    pub add_us: Vec<f64>,
    /// DEL.
    pub del_us: Vec<f64>,
}

/// Everything a run measured: written as `pod-churn.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where and when.
    pub machine: Machine,
    /// What vpc-cni is measured against: ptp + host-local, or an earlier
    /// vpc-cni build (`--versus`, whose rows carry no targets).
    pub reference: Reference,
    /// CPU time other processes on the machine used during the run.
    pub other_processes: OtherCpu,
    /// How much.
    pub sizes: Sizes,
    /// (a) sequential ADD then DEL.
    pub sequential: Pair<AddDel>,
    /// (b) concurrent churn.
    pub churn: Pair<ChurnSummary>,
    /// (c) VERSION exec.
    pub plugin_start: Pair<Summary>,
    /// (c) STATUS round trip through the plugin's client, and over a bare socket.
    pub round_trip: RoundTripSummary,
    /// What a no-op exec'd program (`/bin/echo`) reaches here: the floor
    /// under any exec'd plugin.
    pub floor: Floor,
    /// ipamd's own counters after the sequential workload (its handling
    /// time per command, without the plugin and the socket).
    pub ipamd_metrics_after_sequential: Value,
    /// (d) in-process ADD and DEL through the plugin's client.
    pub in_process: AddDel,
    /// (e) bursts: from the common start to the last answer, each burst.
    pub burst_last: Pair<Summary>,
    /// (e) every ADD of every burst.
    pub burst_adds: Pair<Summary>,
    /// Where one ADD and one DEL spend their time (`None` for an ipamd
    /// without phase timings).
    pub breakdown: Option<Breakdown>,
    /// (f) a burst on a cold node, per sim latency.
    pub cold: Vec<ColdBurst>,
    /// (f) the same burst in the scale simulation's model.
    pub cold_model: Vec<Modelled>,
    /// The targets.
    pub targets: Vec<TargetCheck>,
    /// A `--before` run's `pod-churn.json`, shown beside this run.
    #[serde(skip)]
    pub before: Option<Value>,
    /// A `--versus` run's `pod-churn.json`, shown after it.
    #[serde(skip)]
    pub versus: Option<Value>,
    /// Raw sequential latencies.
    pub raw_sequential: Pair<Raw>,
}

/// The no-op floor.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    /// Exec to exit.
    pub exec: Summary,
    /// The churn workload with the no-op in place of a plugin.
    pub churn: ChurnSummary,
}

/// Round-trip percentiles.
#[derive(Debug, Clone, Serialize)]
pub struct RoundTripSummary {
    /// `cni_plugin::client::call`.
    pub client: Summary,
    /// Plain blocking `UnixStream`.
    pub bare_socket: Summary,
}

/// All that was measured, before summarising.
pub struct Measured {
    /// (a).
    pub sequential: Pair<Latencies>,
    /// (b).
    pub churn: Pair<Churn>,
    /// (c) VERSION execs.
    pub starts: Pair<Vec<std::time::Duration>>,
    /// (c) execs of the no-op floor.
    pub floor_starts: Vec<std::time::Duration>,
    /// (b) with the no-op floor.
    pub floor_churn: Churn,
    /// (c) STATUS calls.
    pub round_trips: RoundTrips,
    /// ipamd's metrics after (a).
    pub ipamd_metrics: Value,
    /// (d) in-process ADD and DEL.
    pub in_process: Latencies,
    /// ipamd's phase timings before (a), after (a), and after (d).
    pub timings: [Value; 3],
    /// (e) bursts of concurrent ADDs.
    pub bursts: Vec<Pair<Burst>>,
    /// (f) cold-node bursts.
    pub cold: Vec<ColdBurst>,
    /// (f) the scale model's cold node.
    pub cold_model: Vec<Modelled>,
}

impl Report {
    /// Summarises a run.
    pub fn new(
        machine: Machine,
        reference: Reference,
        other_processes: OtherCpu,
        sizes: Sizes,
        m: &Measured,
    ) -> Self {
        let churn = |c: &Churn| ChurnSummary {
            pods: c.pods,
            elapsed_s: c.elapsed.as_secs_f64(),
            pods_per_sec: c.pods_per_sec(),
            latency: AddDel::of(&c.latencies),
        };
        let raw = |l: &Latencies| Raw {
            add_us: in_us(&l.add),
            del_us: in_us(&l.del),
        };
        let mut report = Report {
            machine,
            reference,
            other_processes,
            sizes,
            sequential: Pair {
                ours: AddDel::of(&m.sequential.ours),
                reference: AddDel::of(&m.sequential.reference),
            },
            churn: Pair {
                ours: churn(&m.churn.ours),
                reference: churn(&m.churn.reference),
            },
            plugin_start: Pair {
                ours: Summary::of(&m.starts.ours),
                reference: Summary::of(&m.starts.reference),
            },
            round_trip: RoundTripSummary {
                client: Summary::of(&m.round_trips.client),
                bare_socket: Summary::of(&m.round_trips.bare),
            },
            floor: Floor {
                exec: Summary::of(&m.floor_starts),
                churn: churn(&m.floor_churn),
            },
            ipamd_metrics_after_sequential: m.ipamd_metrics.clone(),
            in_process: AddDel::of(&m.in_process),
            burst_last: Pair::build(|k| {
                let lasts: Vec<_> = m.bursts.iter().map(|b| b.get(k).last).collect();
                Summary::of(&lasts)
            }),
            burst_adds: Pair::build(|k| {
                let adds: Vec<_> = m
                    .bursts
                    .iter()
                    .flat_map(|b| b.get(k).adds.clone())
                    .collect();
                Summary::of(&adds)
            }),
            breakdown: breakdown_of(m),
            cold: m.cold.clone(),
            cold_model: m.cold_model.clone(),
            targets: Vec::new(),
            before: None,
            versus: None,
            raw_sequential: Pair {
                ours: raw(&m.sequential.ours),
                reference: raw(&m.sequential.reference),
            },
        };
        report.targets = report
            .rows()
            .iter()
            .filter_map(|r| r.check().map(|c| (r, c)))
            .map(|(r, (text, met))| TargetCheck {
                metric: r.metric.clone(),
                target: text,
                met,
            })
            .collect();
        report
    }

    /// The table's rows.
    pub fn rows(&self) -> Vec<Row> {
        let (seq, ch, st) = (&self.sequential, &self.churn, &self.plugin_start);
        let n = self.sizes.pods;
        let (cn, w) = (self.sizes.churn_pods, self.sizes.workers);
        let lat = |metric: String, ours: f64, reference: f64, goal: Goal| Row {
            metric,
            unit: Unit::Ms,
            ours,
            reference: Some(reference),
            goal,
        };
        let mut rows = Vec::new();
        for (verb, o, r) in [
            ("ADD", &seq.ours.add, &seq.reference.add),
            ("DEL", &seq.ours.del, &seq.reference.del),
        ] {
            for (p, ov, rv) in [
                ("p50", o.p50_us, r.p50_us),
                ("p90", o.p90_us, r.p90_us),
                ("p99", o.p99_us, r.p99_us),
                ("max", o.max_us, r.max_us),
            ] {
                let metric = format!("{verb} {p} (sequential, {n} pods)");
                rows.push(lat(metric, ov, rv, Goal::sequential(verb, p)));
            }
        }
        rows.push(Row {
            metric: format!("churn throughput ({w}-way, {cn} pods)"),
            unit: Unit::PodsPerSec,
            ours: ch.ours.pods_per_sec,
            reference: Some(ch.reference.pods_per_sec),
            goal: Goal::new(Some(1500.0), Some(10.0)),
        });
        for (verb, o, r) in [
            ("ADD", &ch.ours.latency.add, &ch.reference.latency.add),
            ("DEL", &ch.ours.latency.del, &ch.reference.latency.del),
        ] {
            for (p, ov, rv) in [("p50", o.p50_us, r.p50_us), ("p99", o.p99_us, r.p99_us)] {
                let metric = format!("{verb} {p} under {w}-way churn");
                rows.push(lat(metric, ov, rv, Goal::churn(verb, p)));
            }
        }
        let (bl, ba, bn) = (&self.burst_last, &self.burst_adds, self.sizes.burst);
        rows.push(lat(
            format!(
                "burst of {bn} concurrent ADDs: last answered (worst of {})",
                bl.ours.n
            ),
            bl.ours.max_us,
            bl.reference.max_us,
            Goal::new(Some(60_000.0), None),
        ));
        rows.push(lat(
            format!("burst of {bn} concurrent ADDs: each ADD p50"),
            ba.ours.p50_us,
            ba.reference.p50_us,
            Goal::none(),
        ));
        rows.push(lat(
            "plugin start p50 (VERSION exec)".into(),
            st.ours.p50_us,
            st.reference.p50_us,
            Goal::none(),
        ));
        rows.push(lat(
            "plugin start p99 (VERSION exec)".into(),
            st.ours.p99_us,
            st.reference.p99_us,
            Goal::none(),
        ));
        for (p, v, goal) in [
            ("p50", self.round_trip.client.p50_us, Goal::none()),
            ("p99", self.round_trip.client.p99_us, Goal::none()),
        ] {
            rows.push(Row {
                metric: format!("plugin→ipamd STATUS round trip {p}"),
                unit: Unit::Us,
                ours: v,
                reference: None,
                goal,
            });
        }
        // The targets are against ptp; against an earlier build only the
        // ratio means something.
        if self.reference != Reference::Ptp {
            for r in &mut rows {
                r.goal = Goal::none();
            }
        }
        rows
    }

    /// The Markdown section (without markers). `svg_href` is the plot's
    /// path relative to the file the section goes into.
    pub fn markdown(&self, svg_href: &str) -> String {
        let mut md = String::new();
        md.push_str(&format!(
            "## Pod churn: vpc-cni vs {}\n\n",
            self.reference.name()
        ));
        md.push_str(&format!(
            "Measured on {}{}; reference: {}. \
             Other processes used at least {:.0} CPU-seconds during the {:.0} s run \
             ({:.2} of {} CPUs{}).\n\n",
            self.machine.headline(),
            if self.sizes.quick {
                " (`--quick` smoke run, small counts)"
            } else {
                ""
            },
            match &self.reference {
                Reference::Ptp => format!(
                    "containernetworking-plugins {} (Debian)",
                    self.machine.reference_version
                ),
                Reference::Earlier(commit) => format!(
                    "vpc-cni built from {commit}, its own ipamd in a second node namespace, \
                     interleaved call by call with this build"
                ),
            },
            self.other_processes.cpu_s,
            self.other_processes.wall_s,
            self.other_processes.cpus(),
            self.machine.nproc,
            if self.other_processes.cpus() > 0.1 {
                ": a noisy run, latencies are inflated"
            } else {
                ""
            },
        ));
        md.push_str(&table(&self.rows(), &self.reference.name()));
        md.push_str(
            "\nratio: how many times better vpc-cni is (reference ÷ vpc-cni for \
             latencies, vpc-cni ÷ reference for throughput).\n\n",
        );
        md.push_str(&self.summary_lines());
        md.push_str(&self.breakdown());
        if let Some(before) = &self.before {
            let now = serde_json::to_value(self).unwrap_or(Value::Null);
            md.push_str(&super::before::section(before, &now));
        }
        if let Some(versus) = &self.versus {
            md.push_str(&super::before::interleaved(versus));
        }
        md.push_str(&self.cold_section());
        md.push_str(&format!(
            "\nLatency distribution (CDF of every ADD and DEL of the sequential workload, \
             log scale): [{svg_href}]({svg_href})\n\n![ADD/DEL latency CDF]({svg_href})\n\n"
        ));
        md.push_str(&self.method());
        md
    }

    fn summary_lines(&self) -> String {
        let met = self.targets.iter().filter(|t| t.met).count();
        let ratio = |o: f64, r: f64| r / o.max(f64::MIN_POSITIVE);
        let (s, c) = (&self.sequential, &self.churn);
        format!(
            "**Targets met: {met} of {}.** Ratios vs the reference: ADD p50 {:.1}×, \
             ADD p99 {:.1}×, DEL p50 {:.1}×, DEL p99 {:.1}×, churn throughput {:.1}×, \
             plugin start {:.1}×.\n",
            self.targets.len(),
            ratio(s.ours.add.p50_us, s.reference.add.p50_us),
            ratio(s.ours.add.p99_us, s.reference.add.p99_us),
            ratio(s.ours.del.p50_us, s.reference.del.p50_us),
            ratio(s.ours.del.p99_us, s.reference.del.p99_us),
            ratio(c.reference.pods_per_sec, c.ours.pods_per_sec),
            ratio(
                self.plugin_start.ours.p50_us,
                self.plugin_start.reference.p50_us
            ),
        )
    }

    /// Where our ADD and DEL time goes, from what this run measured.
    fn breakdown(&self) -> String {
        let mut out = String::new();
        if let Some(b) = &self.breakdown {
            out.push_str(&format!(
                "\n### Where one call's time goes\n\nMeans over the sequential workload \
                 ({} pods). ipamd's steps come from its own phase timers (`ipamd status --json` \
                 → `timings`, read before and after); the socket row is the in-process call \
                 through the plugin's client ({} pods, {:.0} µs ADD, {:.0} µs DEL) minus ipamd's \
                 accept-to-answer time for those calls; the plugin process row is what is left \
                 of the exec'd call.\n\n",
                self.sizes.pods,
                self.in_process.add.n,
                self.in_process.add.mean_us,
                self.in_process.del.mean_us,
            ));
            out.push_str(&b.table());
        }
        out.push_str(&self.scale_lines());
        out
    }

    /// The floor and the pieces measured apart, for scale.
    fn scale_lines(&self) -> String {
        let m = &self.ipamd_metrics_after_sequential;
        let mean = |verb: &str| m[verb]["meanUs"].as_f64();
        let (Some(add), Some(del)) = (mean("ADD"), mean("DEL")) else {
            return String::new();
        };
        let s = &self.sequential.ours;
        let start = self.plugin_start.ours.p50_us;
        let rt = self.round_trip.client.p50_us;
        format!(
            "\nWhere vpc-cni's time goes (sequential means; ipamd's handling time from its own \
             counters): ADD {:.0} µs = ipamd {add:.0} µs + plugin exec and socket {:.0} µs; \
             DEL {:.0} µs = ipamd {del:.0} µs + plugin exec and socket {:.0} µs. For scale: \
             a VERSION exec (process start, no socket) takes {start:.0} µs (p50) and a STATUS \
             round trip through the plugin's client {rt:.0} µs (p50; {:.0} µs over a bare \
             socket). The floor under any exec'd plugin on this machine, a no-op program \
             (`/bin/echo`) exec'd the same way: {:.0} µs per exec (p50), and {:.0} pods/s in \
             the churn workload (two execs and a namespace delete per pod).\n",
            s.add.mean_us,
            s.add.mean_us - add,
            s.del.mean_us,
            s.del.mean_us - del,
            self.round_trip.bare_socket.p50_us,
            self.floor.exec.p50_us,
            self.floor.churn.pods_per_sec,
        )
    }

    /// (f): measured cold bursts, then the model's.
    fn cold_section(&self) -> String {
        if self.cold.is_empty() {
            return String::new();
        }
        let mut out = format!(
            "\n### A burst of {} pods on a cold node\n\nipamd started with nothing (fresh \
             state, empty pool; m5.large, prefix delegation, shipped defaults) in a node \
             namespace of its own; the {} pods ADD at once, through the exec'd plugin, as soon \
             as CNI STATUS succeeds (what containerd waits for before it creates sandboxes), \
             retrying after {} ms when answered with code 11. Times from the daemon's spawn. \
             The model rows are the scale simulation's lone node (`scale-sim`, virtual time, \
             EC2's latencies and buckets, no prefix held from launch): its pods ask at the \
             node's start and get an address, without wiring. Its aws-node-like loop starts \
             at a random phase, so the model runs {} times (the scale section's lone-node row \
             is a single run).\n\n\
             | node | sim API latency | ready (STATUS ok) | first pod | last pod | retries |\n\
             |---|---|---:|---:|---:|---:|\n",
            vpc_cni_bench::scale::PODS,
            vpc_cni_bench::scale::PODS,
            super::cold::RETRY_PAUSE.as_millis(),
            super::cold::MODEL_RUNS,
        );
        for c in &self.cold {
            let latency = match c.sim_latency.as_str() {
                "ec2" => "EC2's (Assign 0.5 s, …)".to_string(),
                "0" => "none (the sim's default)".to_string(),
                ms => format!("{ms} ms per call"),
            };
            out.push_str(&format!(
                "| vpc-cni, measured | {latency} | {:.0} ms | {:.0} ms | {:.0} ms | {} |\n",
                c.ready_ms, c.first_ms, c.last_ms, c.retries
            ));
        }
        for m in &self.cold_model {
            out.push_str(&format!(
                "| {} (model, median of {} runs) | EC2's | – | {:.0} ms | {:.0} ms ({:.0}–{:.0}) | – |\n",
                m.policy,
                super::cold::MODEL_RUNS,
                m.first_ms,
                m.last_ms,
                m.last_range_ms.0,
                m.last_range_ms.1
            ));
        }
        out
    }

    fn method(&self) -> String {
        let z = &self.sizes;
        format!(
            "How: one node network namespace holds ipamd (simulated m5.24xlarge, pool filled \
             before measuring) and every plugin exec; both plugins are exec'd by the same code \
             (cleared environment, `CNI_*` variables, config on stdin), timed from spawn to exit. \
             Pod namespaces are made beforehand and deleted after each DEL as a runtime does \
             (unmeasured in (a), inside the loop in (b)). (a) {} pods ADDed one after another, \
             then DELeted, the two plugins alternating call by call; (b) {} workers each ADD, \
             DEL and delete the namespace of their own pods, {} pods per plugin, plugins \
             alternating in rounds, pods/s over the wall time of a plugin's rounds; (c) {} \
             VERSION execs per plugin and {} in-process STATUS calls; (d) {} pods ADDed and \
             DELeted in-process through the plugin's client (vpc-cni only); (e) {} bursts of \
             {} ADDs released at once from as many threads, per plugin, on the warm node; (f) \
             the cold-node burst above. `scripts/bench.sh` reruns it.\n",
            z.pods,
            z.workers,
            z.churn_pods,
            z.starts,
            z.round_trips,
            self.in_process.add.n,
            self.burst_last.ours.n,
            z.burst,
        )
    }

    /// Writes `pod-churn.json`, `pod-churn.md` into `dir`.
    pub fn write_files(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(dir.join("pod-churn.json"), json + "\n")?;
        let md = format!("# pod-churn results\n\n{}", self.markdown(SVG_NAME));
        std::fs::write(dir.join("pod-churn.md"), md)?;
        Ok(())
    }
}

/// The `pod-churn.json` an earlier run left in `dir`, if there is one.
pub fn load(dir: &Path) -> Result<Option<Value>> {
    let path = dir.join("pod-churn.json");
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display()).into()),
    }
}

/// The breakdown of a run whose ipamd reports phase timings.
fn breakdown_of(m: &Measured) -> Option<Breakdown> {
    let column = |verb: &str, exec: &[std::time::Duration], inproc: &[std::time::Duration]| {
        let wrap = |v: &Value| serde_json::json!({ "timings": v });
        let [before, after_seq, after_inproc] = &m.timings;
        let at = |v: &Value| Totals::read(&wrap(v), verb);
        Some(Column::of(&Inputs {
            exec_mean_us: Summary::of(exec).mean_us,
            sequential: at(after_seq)?.since(&at(before)?),
            in_process_mean_us: Summary::of(inproc).mean_us,
            in_process: at(after_inproc)?.since(&at(after_seq)?),
        }))
    };
    Some(Breakdown {
        add: column("ADD", &m.sequential.ours.add, &m.in_process.add)?,
        del: column("DEL", &m.sequential.ours.del, &m.in_process.del)?,
    })
}

/// One target, checked.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    /// The row.
    pub metric: String,
    /// The target as written in the table.
    pub target: String,
    /// Whether all of it was met.
    pub met: bool,
}

/// How a row's value is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A latency in µs, shown in ms; lower is better.
    Ms,
    /// A latency in µs, shown in µs; lower is better.
    Us,
    /// A throughput; higher is better.
    PodsPerSec,
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::Ms if v >= 100_000.0 => format!("{:.0} ms", v / 1000.0),
            Unit::Ms => format!("{:.2} ms", v / 1000.0),
            Unit::Us => format!("{v:.0} µs"),
            Unit::PodsPerSec => format!("{v:.0} pods/s"),
        }
    }

    fn higher_is_better(self) -> bool {
        self == Unit::PodsPerSec
    }
}

/// A target: an absolute bound on our value and/or a minimum ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Goal {
    /// Upper bound (lower-is-better units) or lower bound (throughput), in
    /// the row's raw unit.
    pub bound: Option<f64>,
    /// Minimum ratio vs the reference.
    pub min_ratio: Option<f64>,
}

impl Goal {
    fn new(bound: Option<f64>, min_ratio: Option<f64>) -> Self {
        Goal { bound, min_ratio }
    }

    fn none() -> Self {
        Goal::new(None, None)
    }

    /// The targets for the sequential rows (issue 14: durability on,
    /// policy off, as shipped).
    fn sequential(verb: &str, percentile: &str) -> Self {
        match (verb, percentile) {
            ("ADD", "p50") => Goal::new(Some(1200.0), Some(8.0)),
            ("ADD", "p99") => Goal::new(Some(2500.0), None),
            ("DEL", "p50") => Goal::new(Some(1200.0), Some(20.0)),
            _ => Goal::none(),
        }
    }

    /// The targets for the rows under churn.
    fn churn(verb: &str, percentile: &str) -> Self {
        match (verb, percentile) {
            ("ADD", "p99") => Goal::new(Some(10_000.0), None),
            _ => Goal::none(),
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// What.
    pub metric: String,
    /// Unit of `ours` and `reference`.
    pub unit: Unit,
    /// vpc-cni.
    pub ours: f64,
    /// The reference, if it has this.
    pub reference: Option<f64>,
    /// The target, if any.
    pub goal: Goal,
}

impl Row {
    /// How many times better ours is.
    pub fn ratio(&self) -> Option<f64> {
        let r = self.reference?;
        let (num, den) = if self.unit.higher_is_better() {
            (self.ours, r)
        } else {
            (r, self.ours)
        };
        (den > 0.0).then(|| num / den)
    }

    /// The target's text with ✓/✗ per part, and whether all of it is met.
    pub fn check(&self) -> Option<(String, bool)> {
        let mut parts = Vec::new();
        let mut met = true;
        if let Some(b) = self.goal.bound {
            let ok = if self.unit.higher_is_better() {
                self.ours >= b
            } else {
                self.ours <= b
            };
            let op = if self.unit.higher_is_better() {
                "≥"
            } else {
                "≤"
            };
            parts.push(format!("{op} {} {}", self.unit.show(b), mark(ok)));
            met &= ok;
        }
        if let Some(min) = self.goal.min_ratio {
            let ok = self.ratio().is_some_and(|r| r >= min);
            parts.push(format!("≥ {min}× {}", mark(ok)));
            met &= ok;
        }
        (!parts.is_empty()).then(|| (parts.join(", "), met))
    }
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "✓"
    } else {
        "✗"
    }
}

/// The Markdown table, `reference` naming the second column.
pub fn table(rows: &[Row], reference: &str) -> String {
    let mut t =
        format!("| metric | vpc-cni | {reference} | ratio | target |\n|---|---:|---:|---:|---|\n");
    for r in rows {
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.metric,
            r.unit.show(r.ours),
            r.reference.map_or("—".into(), |v| r.unit.show(v)),
            r.ratio().map_or("—".into(), |x| format!("{x:.1}×")),
            r.check().map_or(String::new(), |(text, _)| text),
        ));
    }
    t
}

/// Rewrites the pod-churn section of `RESULTS.md` at `path`.
pub fn update_results_md(path: &Path, section: &str) -> Result<()> {
    vpc_cni_bench::results::write_section(path, SECTION, TOOL, section)
        .map_err(|e| format!("writing {}: {e}", path.display()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(unit: Unit, ours: f64, reference: f64, goal: Goal) -> Row {
        Row {
            metric: "m".into(),
            unit,
            ours,
            reference: Some(reference),
            goal,
        }
    }

    #[test]
    fn ratios_favour_the_better_side() {
        assert_eq!(
            row(Unit::Ms, 1000.0, 8000.0, Goal::none()).ratio(),
            Some(8.0)
        );
        assert_eq!(
            row(Unit::PodsPerSec, 900.0, 100.0, Goal::none()).ratio(),
            Some(9.0)
        );
    }

    #[test]
    fn targets_mark_each_part() {
        let add = row(Unit::Ms, 1100.0, 9000.0, Goal::sequential("ADD", "p50"));
        assert_eq!(add.check(), Some(("≤ 1.20 ms ✓, ≥ 8× ✓".into(), true)));
        let slow = row(Unit::Ms, 2000.0, 8000.0, Goal::sequential("ADD", "p50"));
        assert_eq!(slow.check(), Some(("≤ 1.20 ms ✗, ≥ 8× ✗".into(), false)));
        let churn = row(
            Unit::PodsPerSec,
            1200.0,
            100.0,
            Goal::new(Some(1000.0), Some(5.0)),
        );
        assert_eq!(
            churn.check(),
            Some(("≥ 1000 pods/s ✓, ≥ 5× ✓".into(), true))
        );
        assert_eq!(row(Unit::Ms, 1.0, 2.0, Goal::none()).check(), None);
    }

    #[test]
    fn table_has_a_line_per_row() {
        let t = table(
            &[row(Unit::Ms, 1500.0, 9000.0, Goal::none())],
            "ptp+host-local",
        );
        assert!(t.starts_with("| metric | vpc-cni | ptp+host-local | ratio | target |"));
        assert!(t.contains("| m | 1.50 ms | 9.00 ms | 6.0× |  |"), "{t}");
    }
}
