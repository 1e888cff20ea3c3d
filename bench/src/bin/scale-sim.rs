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

use clap::{ArgAction, Parser};
use plotters::style::RGBColor;
use vpc_cni_bench::scale::node::Policy;
use vpc_cni_bench::scale::report::{LongRun, Report, ScaleRun};
use vpc_cni_bench::scale::{self, bucket_bound, lone, virtual_time, Fleet};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "scale-sim",
    about = "Warm pools of whole fleets against one simulated EC2 account, in virtual time",
    long_about = "1000 and 10 000 nodes against one simulated EC2 account in virtual time,
aws-node-like vs vpc-cni fixed vs adaptive. Writes its section of
bench/RESULTS.md and bench/results/scale-sim.svg (no root needed).",
    // As before clap: a flag given twice takes its last value.
    args_override_self = true
)]
struct Options {
    /// Fleet sizes to simulate, comma-separated (each 1 to 50000)
    #[arg(
        long,
        value_name = "N,N...",
        value_delimiter = ',',
        action = ArgAction::Set,
        num_args = 1,
        value_parser = node_count,
        default_value = "1000,10000"
    )]
    nodes: Vec<usize>,
    /// The fleet size that also runs the long phase (churn, burst after idle)
    #[arg(long, value_name = "N", default_value_t = 1000)]
    long_nodes: usize,
    /// The file whose scale-sim section is rewritten
    #[arg(long, value_name = "FILE", default_value = "bench/RESULTS.md")]
    results: PathBuf,
    /// Where the SVG goes
    #[arg(
        long,
        value_name = "FILE",
        default_value = "bench/results/scale-sim.svg"
    )]
    svg: PathBuf,
}

/// One `--nodes` count.
fn node_count(n: &str) -> Result<usize, String> {
    match n.trim().parse::<usize>() {
        Ok(n) if (1..=50_000).contains(&n) => Ok(n),
        Ok(_) => Err("each count must be between 1 and 50000".into()),
        Err(e) => Err(e.to_string()),
    }
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
    // `--help` prints and exits 0; a mistake prints the usage and exits 2.
    let o = Options::parse();
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Options::try_parse_from(std::iter::once("scale-sim").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line() {
        Options::command().debug_assert();
        let o = parse(&[]).unwrap();
        assert_eq!(o.nodes, [1000, 10_000]);
        assert_eq!(o.long_nodes, 1000);
        assert_eq!(o.results, PathBuf::from("bench/RESULTS.md"));
        assert_eq!(o.svg, PathBuf::from("bench/results/scale-sim.svg"));
        let o = parse(&["--nodes", "10, 20", "--long-nodes=20", "--svg", "/t/s.svg"]).unwrap();
        assert_eq!((o.nodes, o.long_nodes), (vec![10, 20], 20));
        assert_eq!(o.svg, PathBuf::from("/t/s.svg"));
        assert_eq!(parse(&["--nodes=5", "--nodes", "7"]).unwrap().nodes, [7]);
        for bad in [
            &["--nodes", "0"][..],
            &["--nodes", "50001"],
            &["--nodes", "1,x"],
            &["--nodes"],
            &["--long-nodes", "-1"],
            &["--frobnicate"],
        ] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
        assert_eq!(parse(&["--help"]).unwrap_err().exit_code(), 0);
    }
}
