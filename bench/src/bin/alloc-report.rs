//! Turns the allocator's criterion results (target/criterion) into
//! bench/results/alloc.{json,md} and the allocator section of
//! bench/RESULTS.md, with the machine and the date.
//!
//! Run after `cargo bench -p vpc-cni-bench --bench alloc` (scripts/bench.sh
//! does both).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use serde_json::{json, Value};

const POOLS: [usize; 3] = [64, 750, 16_384];
const THREADS: [usize; 4] = [1, 2, 4, 8];

/// It takes no arguments; clap gives it `--help` (which must not rewrite
/// the results) and refuses anything else.
#[derive(Debug, Parser)]
#[command(
    name = "alloc-report",
    about = "Turns the allocator's criterion results (target/criterion) into bench/results/alloc.{json,md} \
             and the allocator section of bench/RESULTS.md",
    after_help = "Run after `cargo bench -p vpc-cni-bench --bench alloc` (scripts/bench.sh does both)."
)]
struct Cli {}

fn main() -> ExitCode {
    Cli::parse();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let criterion = root.join("target/criterion");
    match report(&criterion, &root.join("bench")) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alloc-report: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Mean ns per alloc+free pair of one benchmark, if it ran.
fn mean_ns(criterion: &Path, group: &str, function: &str, threads: usize) -> Option<f64> {
    let path = criterion
        .join(group)
        .join(function)
        .join(threads.to_string())
        .join("new/estimates.json");
    let v: Value = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

struct Row {
    pool: usize,
    threads: usize,
    ours: f64,
    baseline: f64,
}

fn rows(criterion: &Path, kind: &str, baseline: &str) -> Vec<Row> {
    let mut out = Vec::new();
    for pool in POOLS {
        let group = format!("{kind}_{pool}");
        for threads in THREADS {
            if let (Some(ours), Some(base)) = (
                mean_ns(criterion, &group, "vpc-cni", threads),
                mean_ns(criterion, &group, baseline, threads),
            ) {
                out.push(Row {
                    pool,
                    threads,
                    ours,
                    baseline: base,
                });
            }
        }
    }
    out
}

fn table(title: &str, per: &str, baseline: &str, rows: &[Row]) -> String {
    let mut t = format!(
        "**{title}** (ns per {per} for the whole machine; lower is better)\n\n\
         | pool | threads | vpc-cni | {baseline} | speed-up |\n|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {:.1} | {:.1} | {:.1}× |",
            r.pool,
            r.threads,
            r.ours,
            r.baseline,
            r.baseline / r.ours
        );
    }
    t
}

fn report(criterion: &Path, bench: &Path) -> Result<(), String> {
    let slot = rows(criterion, "slot", "Mutex_Vec_");
    let keyed = rows(criterion, "keyed", "Mutex_HashMap_");
    if slot.is_empty() {
        return Err(format!(
            "no results under {}; run `cargo bench -p vpc-cni-bench --bench alloc` first",
            criterion.display()
        ));
    }
    let cooldown: Vec<(usize, f64)> = [1, 2]
        .into_iter()
        .filter_map(|t| mean_ns(criterion, "cooldown_750", "vpc-cni", t).map(|m| (t, m)))
        .collect();
    let lookup: Vec<Row> = THREADS
        .iter()
        .filter_map(|&threads| {
            Some(Row {
                pool: 750,
                threads,
                ours: mean_ns(criterion, "lookup_750", "vpc-cni", threads)?,
                baseline: mean_ns(criterion, "lookup_750", "Mutex_HashMap_", threads)?,
            })
        })
        .collect();
    let machine = vpc_cni_bench::provenance::Machine::detect();
    let mut md = format!(
        "Measured on {}. Criterion, `cargo bench -p vpc-cni-bench --bench alloc`; every row ran in \
         the same process as its baseline.\n\n",
        machine.headline()
    );
    let at = |rows: &[Row], threads: usize| {
        rows.iter()
            .find(|r| r.pool == 750 && r.threads == threads)
            .map(|r| (r.ours, r.baseline))
    };
    let mut targets = String::from(
        "| target (pool 750) | vpc-cni | baseline | speed-up | |\n|---|---:|---:|---:|---|\n",
    );
    for (what, rows, threads, min) in [
        (
            "alloc+free (slot path), 2 threads: ≥ 6× `Mutex<Vec>`",
            &slot,
            2,
            6.0,
        ),
        (
            "allocate+release by key, 2 threads: ≥ 2× `Mutex<HashMap>`",
            &keyed,
            2,
            2.0,
        ),
        (
            "allocate+release by key, 1 thread: no slower than `Mutex<HashMap>`",
            &keyed,
            1,
            1.0,
        ),
        (
            "lookup by key, 2 threads: ≥ 2× `Mutex<HashMap>`",
            &lookup,
            2,
            2.0,
        ),
        (
            "lookup by key, 1 thread: no slower than `Mutex<HashMap>`",
            &lookup,
            1,
            1.0,
        ),
    ] {
        if let Some((ours, base)) = at(rows, threads) {
            let speedup = base / ours;
            let _ = writeln!(
                targets,
                "| {what} | {ours:.1} ns | {base:.1} ns | {speedup:.1}× | {} |",
                mark(speedup >= min)
            );
        }
    }
    md.push_str(&targets);
    md.push('\n');
    md.push_str(&table(
        "Slot path: `alloc_slot` + `free_slot`",
        "alloc+free pair",
        "Mutex<Vec>",
        &slot,
    ));
    md.push('\n');
    md.push_str(&table(
        "Keyed path (what the pod service calls): `allocate(key)` + `release(key)`",
        "alloc+free pair",
        "Mutex<HashMap>",
        &keyed,
    ));
    md.push('\n');
    md.push_str(&table(
        "Lookup by key (a repeated ADD, every DEL): `lookup(key)`",
        "lookup",
        "Mutex<HashMap>",
        &lookup,
    ));
    if !cooldown.is_empty() {
        md.push_str("\n**With a 30 s cooldown** (every free address still resting; each alloc takes the longest-rested one): ");
        let parts: Vec<String> = cooldown
            .iter()
            .map(|(t, m)| format!("{t} thread(s) {m:.1} ns"))
            .collect();
        md.push_str(&parts.join(", "));
        md.push_str(".\n");
    }

    let results = bench.join("results");
    fs::create_dir_all(&results).map_err(|e| e.to_string())?;
    let as_json = |rs: &[Row]| -> Vec<Value> {
        rs.iter()
            .map(|r| json!({"pool": r.pool, "threads": r.threads, "vpcCniNs": r.ours, "baselineNs": r.baseline}))
            .collect()
    };
    let doc = json!({
        "machine": machine,
        "slot": as_json(&slot), "keyed": as_json(&keyed), "lookup": as_json(&lookup),
        "cooldown750": cooldown.iter().map(|(t, m)| json!({"threads": t, "vpcCniNs": m})).collect::<Vec<_>>(),
    });
    fs::write(
        results.join("alloc.json"),
        serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    fs::write(results.join("alloc.md"), &md).map_err(|e| e.to_string())?;
    vpc_cni_bench::results::write_section(
        &bench.join("RESULTS.md"),
        "alloc",
        "target/release/alloc-report (bench/src/bin/alloc-report.rs) from criterion's results",
        &format!("## Address allocator\n\n{md}"),
    )
    .map_err(|e| e.to_string())?;
    println!("{md}");
    Ok(())
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "✓"
    } else {
        "✗"
    }
}
