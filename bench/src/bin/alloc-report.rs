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

use serde_json::{json, Value};

const POOLS: [usize; 3] = [64, 750, 16_384];
const THREADS: [usize; 4] = [1, 2, 4, 8];
const BEGIN: &str = "<!-- alloc:begin -->";
const END: &str = "<!-- alloc:end -->";

fn main() -> ExitCode {
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

fn table(title: &str, baseline: &str, rows: &[Row]) -> String {
    let mut t = format!(
        "**{title}** (ns per alloc+free pair for the whole machine; lower is better)\n\n\
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

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {cpu}, kernel {}", kernel.trim())
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
    let date = String::from_utf8(
        std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map_err(|e| e.to_string())?
            .stdout,
    )
    .unwrap_or_default();

    let two = slot.iter().find(|r| r.pool == 750 && r.threads == 2);
    let one = slot.iter().find(|r| r.pool == 750 && r.threads == 1);
    let mut md = format!(
        "Measured {} on {}. Criterion, `cargo bench -p vpc-cni-bench --bench alloc`; every row ran in the same process as its baseline.\n\n",
        date.trim(),
        machine()
    );
    if let (Some(two), Some(one)) = (two, one) {
        let speedup = two.baseline / two.ours;
        let _ = writeln!(
            md,
            "| target (pool 750) | measured | |\n|---|---|---|\n\
             | 2 threads contended ≤ 60 ns | {:.1} ns | {} |\n\
             | ≥ 6× the Mutex<Vec> baseline | {:.1}× ({:.1} ns) | {} |\n\
             | throughput grows with threads (1 → 2) | {:.1} → {:.1} ns per pair | {} |\n",
            two.ours,
            mark(two.ours <= 60.0),
            speedup,
            two.baseline,
            mark(speedup >= 6.0),
            one.ours,
            two.ours,
            mark(two.ours < one.ours),
        );
    }
    md.push_str(&table(
        "Slot path: `alloc_slot` + `free_slot`",
        "Mutex<Vec>",
        &slot,
    ));
    md.push('\n');
    md.push_str(&table(
        "Keyed path (what the pod service calls): `allocate(key)` + `release(key)`",
        "Mutex<HashMap>",
        &keyed,
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
        "date": date.trim(), "machine": machine(),
        "slot": as_json(&slot), "keyed": as_json(&keyed),
        "cooldown750": cooldown.iter().map(|(t, m)| json!({"threads": t, "vpcCniNs": m})).collect::<Vec<_>>(),
    });
    fs::write(
        results.join("alloc.json"),
        serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    fs::write(results.join("alloc.md"), &md).map_err(|e| e.to_string())?;
    splice(&bench.join("RESULTS.md"), &md)?;
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

/// Replaces the allocator section of RESULTS.md (or appends it).
fn splice(path: &Path, section: &str) -> Result<(), String> {
    let current = fs::read_to_string(path).unwrap_or_else(|_| "# Benchmark results\n".into());
    let block = format!("{BEGIN}\n## Address allocator\n\n{section}{END}");
    let updated = match (current.find(BEGIN), current.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{}{}", &current[..b], block, &current[e + END.len()..])
        }
        _ => format!("{}\n{}\n", current.trim_end(), block),
    };
    fs::write(path, updated).map_err(|e| format!("{}: {e}", path.display()))
}
