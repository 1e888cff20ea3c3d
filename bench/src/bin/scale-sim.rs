//! `scale-sim`: 1000 and 10 000 nodes against one simulated EC2 account in
//! virtual time, aws-node-like vs vpc-cni fixed vs adaptive. Writes its
//! section of bench/RESULTS.md and bench/results/scale-sim.svg.
//!
//! `target/release/scale-sim [--nodes 1000,10000] [--long-nodes 1000]
//! [--results bench/RESULTS.md] [--svg bench/results/scale-sim.svg]`

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use plotters::style::RGBColor;
use vpc_cni_bench::scale::node::Policy;
use vpc_cni_bench::scale::report::{LongRun, Report, ScaleRun};
use vpc_cni_bench::scale::{self, bucket_bound, lone, virtual_time, Fleet};

struct Options {
    nodes: Vec<usize>,
    long_nodes: usize,
    results: PathBuf,
    svg: PathBuf,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        nodes: vec![1000, 10_000],
        long_nodes: 1000,
        results: PathBuf::from("bench/RESULTS.md"),
        svg: PathBuf::from("bench/results/scale-sim.svg"),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--nodes" => {
                o.nodes = val()?
                    .split(',')
                    .map(|n| {
                        n.trim()
                            .parse::<usize>()
                            .map_err(|e| format!("--nodes {n:?}: {e}"))
                    })
                    .collect::<Result<_, _>>()?;
                if o.nodes.iter().any(|&n| n == 0 || n > 50_000) {
                    return Err("--nodes: each count must be between 1 and 50000".into());
                }
            }
            "--long-nodes" => {
                o.long_nodes = val()?.parse().map_err(|e| format!("--long-nodes: {e}"))?;
            }
            "--results" => o.results = PathBuf::from(val()?),
            "--svg" => o.svg = PathBuf::from(val()?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(o)
}

fn machine() -> String {
    format!(
        "Measured on {}; one process, one thread, virtual time.",
        vpc_cni_bench::provenance::Machine::detect().headline()
    )
}

fn run(o: &Options) -> Result<(), String> {
    let started = std::time::Instant::now();
    let mut report = Report {
        header: machine(),
        lone: Vec::new(),
        scale: Vec::new(),
        long: Vec::new(),
        svg_href: "results/scale-sim.svg".into(),
    };
    for policy in [Policy::AwsNodeLike, Policy::Fixed] {
        for preheld in [true, false] {
            report.lone.push(lone(policy, preheld)?);
        }
    }
    eprintln!("scale-sim: lone node done");
    for &n in &o.nodes {
        for policy in Policy::ALL {
            let wall = std::time::Instant::now();
            let long = n == o.long_nodes;
            let (phase, extra) = virtual_time(async move {
                let fleet = Arc::new(Fleet::launch(policy, n, 1).await?);
                let phase = fleet.scale_out(scale::PODS).await;
                let extra = if long {
                    // Let the pools settle after the scale-out (top-ups,
                    // throttled retries) before churn is measured.
                    tokio::time::sleep(Duration::from_secs(300)).await;
                    let churn = fleet
                        .churn(Duration::from_secs(600), Duration::from_secs(20))
                        .await;
                    let (idle_held, burst) = fleet
                        .burst_after_idle(Duration::from_secs(3600), scale::PODS)
                        .await;
                    Some((churn, idle_held, burst))
                } else {
                    None
                };
                Ok::<_, String>((phase, extra))
            })?;
            eprintln!(
                "scale-sim: {n} nodes, {}: done in {:.0?}",
                policy.name(),
                wall.elapsed()
            );
            if let Some((churn, idle_held, burst)) = extra {
                report.long.push(LongRun {
                    nodes: n,
                    policy,
                    churn,
                    idle_held,
                    burst,
                });
            }
            report.scale.push(ScaleRun {
                nodes: n,
                policy,
                phase,
                bound: bucket_bound(n as u64, 100.0, 5.0, Duration::from_millis(500)),
                wall: wall.elapsed(),
            });
        }
    }
    let colors = [
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
    ];
    let biggest = o.nodes.iter().max().copied().unwrap_or(0);
    let curves: Vec<scale::plot::Curve> = report
        .scale
        .iter()
        .map(|r| scale::plot::Curve {
            label: format!("{} nodes, {}", r.nodes, r.policy.name()),
            color: colors[Policy::ALL.iter().position(|p| *p == r.policy).unwrap_or(0)],
            dashed: r.nodes == biggest && o.nodes.len() > 1,
            times: r.phase.all.clone(),
        })
        .collect();
    if let Some(dir) = o.svg.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    scale::plot::draw(
        &o.svg,
        "Scale-out: every node asks for 30 pods at once",
        &curves,
    )
    .map_err(|e| format!("drawing {}: {e}", o.svg.display()))?;
    report.header = format!(
        "{} The whole run took {:.0} s of wall-clock time.",
        report.header,
        started.elapsed().as_secs_f64()
    );
    let section = report.markdown();
    vpc_cni_bench::results::write_section(
        &o.results,
        "scale-sim",
        "target/release/scale-sim (bench/src/bin/scale-sim.rs)",
        &section,
    )
    .map_err(|e| format!("{}: {e}", o.results.display()))?;
    println!("{section}");
    Ok(())
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("scale-sim: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
