//! The pod-churn harness: set up a node, run the workloads against both
//! implementations, write the results.
//!
//! - `cli`: options.
//! - `harness`: the guard owning the node namespace, ipamd and every pod namespace.
//! - `netns`, `daemon`, `plugin`: namespaces, ipamd, one plugin exec.
//! - `workloads`: (a) sequential, (b) concurrent churn, (c) start and round
//!   trip, (d) in-process calls, (e) bursts on a warm node.
//! - `cold`: (f) a burst on a cold node, and the scale model's figures for it.
//! - `stats`, `report`, `plot`, `machine`: percentiles, tables, the SVG, the machine.

mod before;
mod breakdown;
pub mod cli;
mod cold;
mod daemon;
mod durability;
mod harness;
mod machine;
mod netns;
mod plot;
mod plugin;
mod report;
mod stats;
mod workloads;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use cli::Options;
use harness::Harness;
use machine::{Machine, OtherCpu, OtherLoad};
use plugin::{Plugin, REFERENCE_DIR};
use report::{Measured, Reference, Report, Sizes};
use workloads::{Bench, Pair};

/// Any failure, with a message fit for the operator.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result of this harness.
pub type Result<T> = std::result::Result<T, Error>;

static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Whether SIGINT or SIGTERM arrived; the workloads stop at the next call
/// and the harness cleans up.
pub fn interrupted() -> bool {
    INTERRUPTED.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

fn catch_signals() -> Result<()> {
    let flag = INTERRUPTED.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(flag))?;
    }
    Ok(())
}

/// Runs the whole benchmark.
pub fn run(o: &Options) -> Result<()> {
    preflight(o)?;
    // Neither of these starts a thread: the node namespace is entered
    // (in `Harness::enter_node`) while this thread is still the only one.
    catch_signals()?;
    netns::sweep_stale();
    let machine = Machine::detect();
    let others = OtherLoad::start();
    let mut harness = Harness::enter_node()?;
    let measured = measure(&mut harness, o).map_err(|e| match harness.daemon_report() {
        Some(report) => format!("{e}\n{report}").into(),
        None => e,
    })?;
    drop(harness);
    let other_cpu = others.since();
    if other_cpu.cpus() > 0.1 {
        eprintln!(
            "pod-churn: warning: other processes kept {:.2} of {} CPUs busy during the run; \
             rerun on a quiet machine for numbers to publish",
            other_cpu.cpus(),
            machine.nproc
        );
    }
    publish(o, machine, other_cpu, &measured)
}

fn preflight(o: &Options) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err("run as root: the benchmark creates network namespaces".into());
    }
    let needed = [
        o.bin_dir.join("vpc-cni"),
        o.bin_dir.join("ipamd"),
        Path::new(REFERENCE_DIR).join("ptp"),
        Path::new(REFERENCE_DIR).join("host-local"),
    ];
    for path in needed {
        if !path.exists() {
            return Err(format!(
                "{} is missing: run `cargo build --release --workspace --bins` and \
                 `apt-get install containernetworking-plugins` (scripts/bench.sh does both)",
                path.display()
            )
            .into());
        }
    }
    Ok(())
}

fn measure(harness: &mut Harness, o: &Options) -> Result<Measured> {
    let pool = o.peak_pods();
    eprintln!(
        "pod-churn: node namespace {}; filling ipamd's pool to {} addresses",
        netns::node_name(),
        pool + daemon::POOL_HEADROOM
    );
    let started = Instant::now();
    let daemon = harness.start_daemon(&o.bin_dir, pool, o.durability.as_deref())?;
    daemon.wait_for_pool(pool)?;
    let socket = daemon.socket().to_path_buf();
    eprintln!(
        "pod-churn: pool ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // `--versus`: the earlier build's ipamd gets a node namespace of its
    // own (two daemons in one would fight over per-ENI tables and rules);
    // it is stopped when this function returns, before the namespaces go.
    let versus = match &o.versus {
        Some((_, dir)) => Some(start_versus(harness, dir, pool, o.durability.as_deref())?),
        None => None,
    };
    let host_local = harness.dir().join("host-local");
    let reference = match (&o.versus, &versus) {
        (Some((_, dir)), Some(d)) => Plugin::ours(dir, d.socket()),
        _ => Plugin::reference(&host_local),
    };
    let bench = Bench {
        plugins: Pair {
            ours: Plugin::ours(&o.bin_dir, &socket),
            reference,
        },
        floor: Plugin::floor(),
        namespaces: harness.namespaces(),
    };
    bench.warm_up()?;
    let before_sequential = daemon::introspect_at(&socket)?;
    let sequential = phase(&format!("(a) sequential, {} pods", o.pods), || {
        bench.sequential(o.pods)
    })?;
    // Only the warm-up and (a) have reached ipamd so far.
    let introspect = daemon::introspect_at(&socket)?;
    let in_process = phase(
        &format!("(d) in-process ADD and DEL, {} pods", o.in_process_pods()),
        || workloads::in_process(&bench, &socket, o.in_process_pods()),
    )?;
    let after_in_process = daemon::introspect_at(&socket)?;
    let churn = phase(
        &format!("(b) {}-way churn, {} pods", o.workers, o.churn_pods),
        || bench.churn(o.churn_pods, o.workers, o.churn_rounds),
    )?;
    let bursts = phase(
        &format!("(e) {} bursts of {} concurrent ADDs", o.bursts, o.burst),
        || {
            (0..o.bursts)
                .map(|r| bench.burst(o.burst, r))
                .collect::<Result<Vec<_>>>()
        },
    )?;
    let floor_churn = phase("(b) floor: the same churn with a no-op exec", || {
        bench.floor_churn(o.churn_pods, o.workers)
    })?;
    let (starts, floor_starts) = phase(&format!("(c) plugin start, {} execs", o.starts), || {
        bench.plugin_start(o.starts)
    })?;
    let round_trips = phase(&format!("(c) round trip, {} calls", o.round_trips), || {
        workloads::round_trip(&socket, o.round_trips)
    })?;
    // An earlier build may not know the settings the cold node needs.
    let (cold, cold_model) = if o.before.is_some() || o.versus.is_some() {
        (Vec::new(), Vec::new())
    } else {
        (
            phase("(f) a burst on a cold node", || {
                cold::measure(harness.namespaces(), &o.bin_dir, harness.dir())
            })?,
            phase("(f) the same burst in the scale model", cold::modelled)?,
        )
    };
    Ok(Measured {
        sequential,
        churn,
        starts,
        floor_starts,
        floor_churn,
        round_trips,
        ipamd_metrics: introspect["metrics"].clone(),
        in_process,
        bursts,
        cold,
        cold_model,
        timings: [before_sequential, introspect, after_in_process].map(|v| v["timings"].clone()),
    })
}

/// Starts the `--versus` build's ipamd in the node namespace `<node>-vs`,
/// from a thread that entered it, and waits for its pool.
fn start_versus(
    harness: &Harness,
    bin_dir: &Path,
    pods: usize,
    durability: Option<&str>,
) -> Result<daemon::Daemon> {
    let name = netns::pod_name("vs");
    harness.namespaces().create(&name)?;
    let dir = harness.dir().join("versus");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut d = std::thread::scope(|s| {
        s.spawn(|| {
            netns::enter(&name)?;
            daemon::Daemon::start(bin_dir, &dir, pods, durability)
        })
        .join()
        .unwrap_or_else(|_| Err("the thread starting the earlier ipamd panicked".into()))
    })?;
    d.wait_for_pool(pods)?;
    Ok(d)
}

fn phase<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    eprintln!("pod-churn: {name} …");
    let started = Instant::now();
    let out = f()?;
    eprintln!(
        "pod-churn: {name}: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}

fn publish(o: &Options, mut machine: Machine, other_cpu: OtherCpu, m: &Measured) -> Result<()> {
    if let Some(commit) = &o.before {
        machine.commit = format!("{commit} (binaries from {})", o.bin_dir.display());
    }
    let sizes = Sizes {
        pods: o.pods,
        churn_pods: o.churn_pods,
        workers: o.workers,
        starts: o.starts,
        round_trips: o.round_trips,
        burst: o.burst,
        quick: o.quick,
    };
    let reference = match &o.versus {
        Some((commit, _)) => Reference::Earlier(commit.clone()),
        None => Reference::Ptp,
    };
    let mut report = Report::new(machine, reference, other_cpu, sizes, m);
    if o.before.is_none() && o.versus.is_none() {
        report.before = report::load(&cli::before_dir())?;
        report.versus = report::load(&cli::bench_dir().join("results").join("versus"))?;
    }
    report.write_files(&o.out_dir)?;
    let svg = o.out_dir.join(report::SVG_NAME);
    plot::latency_cdf(
        &svg,
        &report.raw_sequential,
        &report.reference.name(),
        o.pods,
    )?;
    println!(
        "{}",
        report::table(&report.rows(), &report.reference.name())
    );
    let met = report.targets.iter().filter(|t| t.met).count();
    println!("targets met: {met} of {}", report.targets.len());
    println!(
        "wrote {}/pod-churn.{{json,md}} and {}",
        o.out_dir.display(),
        svg.display()
    );
    let path = vpc_cni_bench::results::results_md();
    if o.update_results_md {
        report::update_results_md(&path, &report.markdown("results/pod-churn-latency.svg"))?;
        println!("updated {}", path.display());
    }
    if o.durability.is_some() {
        if let Some(section) = durability::section(&cli::bench_dir().join("results"))? {
            vpc_cni_bench::results::write_section(
                &path,
                durability::SECTION,
                durability::TOOL,
                &section,
            )?;
            println!("updated the durability section of {}", path.display());
        }
    }
    Ok(())
}
