//! The durability section of `bench/RESULTS.md`: two pod-churn runs that
//! differ only in ipamd's `VPC_CNI_DURABILITY`, read back from the JSON each
//! wrote (`results/durability-{sync,async}/pod-churn.json`).

use std::path::Path;

use serde_json::Value;

use super::Result;

/// Our section of `bench/RESULTS.md`.
pub const SECTION: &str = "durability";
/// What writes it.
pub const TOOL: &str =
    "target/release/pod-churn --durability sync|async (bench/src/bin/pod-churn.rs), \
     from both runs' pod-churn.json";

/// The section, if both runs are there.
pub fn section(results: &Path) -> Result<Option<String>> {
    let read = |mode: &str| super::report::load(&results.join(format!("durability-{mode}")));
    let (Some(sync), Some(asynchronous)) = (read("sync")?, read("async")?) else {
        return Ok(None);
    };
    Ok(Some(render(&sync, &asynchronous)))
}

fn render(sync: &Value, asynchronous: &Value) -> String {
    let run = |v: &Value| {
        let m = &v["machine"];
        format!(
            "commit `{}`, {} (load average at start {})",
            m["commit"].as_str().unwrap_or("unknown"),
            m["date_utc"].as_str().unwrap_or("?"),
            m["load_at_start"]
                .as_array()
                .map(|l| l
                    .iter()
                    .map(|x| format!("{:.2}", x.as_f64().unwrap_or(0.0)))
                    .collect::<Vec<_>>()
                    .join(" "))
                .unwrap_or_default()
        )
    };
    let mut md = format!(
        "## Durability: ADD and DEL with the checkpoint made durable first vs not\n\n\
         Two pod-churn runs, identical but for ipamd's `VPC_CNI_DURABILITY`: `sync` (the default: \
         ADD and DEL answer once their journal line is fsynced, concurrent calls sharing one \
         fsync, ADD's fsync running while the kernel wires the pod) on {}; `async` (answer at \
         once, journal written moments later) on {}. Each run measures ptp + host-local in the \
         same run, so each row also gives the ratio against the reference under the same load.\n\n\
         | metric | vpc-cni sync | vpc-cni async | sync ÷ async | ratio vs ptp, sync | ratio vs ptp, async |\n\
         |---|---:|---:|---:|---:|---:|\n",
        run(sync),
        run(asynchronous)
    );
    let rows: [(&str, &[&str], bool); 6] = [
        (
            "ADD p50 (sequential)",
            &["sequential", "*", "add", "p50_us"],
            false,
        ),
        (
            "ADD p99 (sequential)",
            &["sequential", "*", "add", "p99_us"],
            false,
        ),
        (
            "DEL p50 (sequential)",
            &["sequential", "*", "del", "p50_us"],
            false,
        ),
        (
            "ADD p50 under churn",
            &["churn", "*", "latency", "add", "p50_us"],
            false,
        ),
        (
            "ADD p99 under churn",
            &["churn", "*", "latency", "add", "p99_us"],
            false,
        ),
        ("churn throughput", &["churn", "*", "pods_per_sec"], true),
    ];
    let at = |v: &Value, path: &[&str], who: &str| -> Option<f64> {
        path.iter()
            .try_fold(v, |v, k| v.get(if *k == "*" { who } else { k }))?
            .as_f64()
    };
    for (name, path, throughput) in rows {
        let (Some(s), Some(a), Some(sr), Some(ar)) = (
            at(sync, path, "ours"),
            at(asynchronous, path, "ours"),
            at(sync, path, "reference"),
            at(asynchronous, path, "reference"),
        ) else {
            continue;
        };
        let show = |x: f64| {
            if throughput {
                format!("{x:.0} pods/s")
            } else {
                format!("{:.2} ms", x / 1000.0)
            }
        };
        let ratio = |ours: f64, reference: f64| {
            if throughput {
                ours / reference
            } else {
                reference / ours
            }
        };
        md.push_str(&format!(
            "| {name} | {} | {} | {:.2}× | {:.1}× | {:.1}× |\n",
            show(s),
            show(a),
            s / a,
            ratio(s, sr),
            ratio(a, ar),
        ));
    }
    let inside = |v: &Value, verb: &str| {
        v["breakdown"][verb]["phases_us"]
            .as_array()
            .map(|p| p.iter().filter_map(|x| x[1].as_f64()).sum::<f64>())
    };
    if let (Some(sa), Some(aa), Some(sd), Some(ad)) = (
        inside(sync, "add"),
        inside(asynchronous, "add"),
        inside(sync, "del"),
        inside(asynchronous, "del"),
    ) {
        md.push_str(&format!(
            "\nipamd's own time per call (its phase timers, sequential workload): ADD {sa:.0} µs \
             with `sync` vs {aa:.0} µs with `async`; DEL {sd:.0} µs vs {ad:.0} µs. The \
             difference is the wait for the fsync beyond the work it overlaps (ADD's netlink \
             work; DEL has little to overlap).\n"
        ));
    }
    md.push_str(
        "\nHow: `target/release/pod-churn --durability sync`, then `--durability async`; the \
         second run rewrites this section from both runs' JSON.\n",
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(add: f64, reference: f64) -> Value {
        json!({
            "machine": {"commit": "abc", "date_utc": "2026-12-07 10:00:00 UTC", "load_at_start": [0.5, 0.4, 0.3]},
            "sequential": {"ours": {"add": {"p50_us": add}}, "reference": {"add": {"p50_us": reference}}},
        })
    }

    #[test]
    fn rows_compare_the_two_runs_and_each_with_its_reference() {
        let md = render(&run(2000.0, 10_000.0), &run(1000.0, 9000.0));
        assert!(
            md.contains("| ADD p50 (sequential) | 2.00 ms | 1.00 ms | 2.00× | 5.0× | 9.0× |"),
            "{md}"
        );
        assert!(md.contains("commit `abc`"));
        assert!(!md.contains("DEL p50"), "rows without data are left out");
    }
}
