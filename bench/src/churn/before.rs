//! Before and after: a `--before` run (binaries built from an earlier
//! commit, `bench/results/before/pod-churn.json`) beside this run, headline
//! and breakdown. Both sides are read from their JSON, by the same code.

use ipamd::timing::Phase;
use serde_json::Value;

use super::breakdown::label;

/// One headline figure: where it is in the JSON, the reference's figure
/// beside it (if any), and whether more is better.
struct Figure {
    name: &'static str,
    ours: &'static str,
    reference: Option<&'static str>,
    unit: &'static str,
    more_is_better: bool,
}

impl Figure {
    /// `v` in this figure's unit (µs in the JSON).
    fn show(&self, v: f64) -> String {
        match self.unit {
            "ms" => format!("{:.2} ms", v / 1000.0),
            unit => format!("{v:.0} {unit}"),
        }
    }

    /// How many times better `ours` is than `other`.
    fn times_better(&self, ours: f64, other: f64) -> f64 {
        if self.more_is_better {
            ours / other
        } else {
            other / ours
        }
    }
}

/// The string at `pointer` in a run's JSON, or "?".
fn text<'a>(run: &'a Value, pointer: &str) -> &'a str {
    run.pointer(pointer).and_then(Value::as_str).unwrap_or("?")
}

const FIGURES: [Figure; 8] = [
    Figure {
        name: "ADD p50 (sequential)",
        ours: "/sequential/ours/add/p50_us",
        reference: Some("/sequential/reference/add/p50_us"),
        unit: "ms",
        more_is_better: false,
    },
    Figure {
        name: "ADD p99 (sequential)",
        ours: "/sequential/ours/add/p99_us",
        reference: Some("/sequential/reference/add/p99_us"),
        unit: "ms",
        more_is_better: false,
    },
    Figure {
        name: "DEL p50 (sequential)",
        ours: "/sequential/ours/del/p50_us",
        reference: Some("/sequential/reference/del/p50_us"),
        unit: "ms",
        more_is_better: false,
    },
    Figure {
        name: "churn throughput",
        ours: "/churn/ours/pods_per_sec",
        reference: Some("/churn/reference/pods_per_sec"),
        unit: "pods/s",
        more_is_better: true,
    },
    Figure {
        name: "ADD p99 under churn",
        ours: "/churn/ours/latency/add/p99_us",
        reference: Some("/churn/reference/latency/add/p99_us"),
        unit: "ms",
        more_is_better: false,
    },
    Figure {
        name: "burst of concurrent ADDs: last answered (worst burst)",
        ours: "/burst_last/ours/max_us",
        reference: Some("/burst_last/reference/max_us"),
        unit: "ms",
        more_is_better: false,
    },
    Figure {
        name: "plugin start p50 (VERSION exec)",
        ours: "/plugin_start/ours/p50_us",
        reference: Some("/plugin_start/reference/p50_us"),
        unit: "ms",
        more_is_better: false,
    },
    Figure {
        name: "plugin→ipamd STATUS round trip p50",
        ours: "/round_trip/client/p50_us",
        reference: None,
        unit: "µs",
        more_is_better: false,
    },
];

/// The Markdown subsection.
pub fn section(before: &Value, now: &Value) -> String {
    let mut out = format!(
        "\n### Before and after\n\nBefore: commit {} measured {} by this tool (`pod-churn \
         --before`, binaries of that commit with ipamd's phase timers added). Now: this run. \
         Each side's ratio is against ptp + host-local measured in the same run.\n\n\
         | metric | before | ratio | now | ratio |\n|---|---:|---:|---:|---:|\n",
        text(before, "/machine/commit"),
        text(before, "/machine/date_utc"),
    );
    for f in &FIGURES {
        let side = |v: &Value| -> (String, String) {
            let Some(ours) = v.pointer(f.ours).and_then(Value::as_f64) else {
                return ("–".into(), "–".into());
            };
            let ratio = f
                .reference
                .and_then(|r| v.pointer(r).and_then(Value::as_f64))
                .map_or("–".to_string(), |r| {
                    format!("{:.1}×", f.times_better(ours, r))
                });
            (f.show(ours), ratio)
        };
        let (b, br) = side(before);
        let (n, nr) = side(now);
        out.push_str(&format!("| {} | {b} | {br} | {n} | {nr} |\n", f.name));
    }
    out.push_str(&breakdown(before, now));
    out
}

/// The `--versus` run: the earlier build as the reference of one run, so
/// both builds met the same load call by call.
pub fn interleaved(versus: &Value) -> String {
    let commit = text(versus, "/reference/Earlier");
    let mut out = format!(
        "\n### Before and after, interleaved\n\n`pod-churn --versus {commit} DIR` on commit {}, {}: \
         the earlier build is the reference of the run (its own ipamd in a second node \
         namespace), the two builds alternating call by call as vpc-cni and ptp do above, so \
         the host's drift hits both alike. speed-up: how many times better this build is.\n\n\
         | metric | vpc-cni {commit} | vpc-cni now | speed-up |\n|---|---:|---:|---:|\n",
        text(versus, "/machine/commit"),
        text(versus, "/machine/date_utc"),
    );
    for f in &FIGURES {
        let Some(reference) = f.reference else {
            continue;
        };
        let (Some(now), Some(then)) = (
            versus.pointer(f.ours).and_then(Value::as_f64),
            versus.pointer(reference).and_then(Value::as_f64),
        ) else {
            continue;
        };
        out.push_str(&format!(
            "| {} | {} | {} | {:.1}× |\n",
            f.name,
            f.show(then),
            f.show(now),
            f.times_better(now, then)
        ));
    }
    out
}

/// Step by step, µs per mean exec'd call.
fn breakdown(before: &Value, now: &Value) -> String {
    let (Some(b), Some(n)) = (before.get("breakdown"), now.get("breakdown")) else {
        return String::new();
    };
    let mut out = String::from(
        "\nWhere the time went, before and now (µs, means over the sequential workload; \
         rows as in the breakdown above):\n\n\
         | step | ADD before | ADD now | DEL before | DEL now |\n|---|---:|---:|---:|---:|\n",
    );
    let get = |side: &Value, verb: &str, key: &str| {
        side.pointer(&format!("/{verb}/{key}"))
            .and_then(Value::as_f64)
    };
    let phase = |side: &Value, verb: &str, name: &str| {
        side.pointer(&format!("/{verb}/phases_us"))
            .and_then(Value::as_array)
            .and_then(|rows| {
                rows.iter()
                    .find(|r| r.get(0).and_then(Value::as_str) == Some(name))
                    .and_then(|r| r.get(1).and_then(Value::as_f64))
            })
    };
    let show = |v: Option<f64>| match v {
        Some(v) if v.abs() >= 0.5 => format!("{v:.0}"),
        _ => "–".into(),
    };
    for (name, key) in [
        ("plugin process", "plugin_process_us"),
        ("socket and wake-ups", "socket_us"),
    ] {
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} |\n",
            show(get(b, "add", key)),
            show(get(n, "add", key)),
            show(get(b, "del", key)),
            show(get(n, "del", key)),
        ));
    }
    for p in Phase::ALL {
        let name = p.as_str();
        let cells = [
            phase(b, "add", name),
            phase(n, "add", name),
            phase(b, "del", name),
            phase(n, "del", name),
        ];
        if cells.iter().all(|c| c.is_none_or(|v| v.abs() < 0.5)) {
            continue;
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            label(name, "ADD"),
            show(cells[0]),
            show(cells[1]),
            show(cells[2]),
            show(cells[3]),
        ));
    }
    out.push_str(&format!(
        "| **total: the mean exec'd call** | **{}** | **{}** | **{}** | **{}** |\n",
        show(get(b, "add", "exec_mean_us")),
        show(get(n, "add", "exec_mean_us")),
        show(get(b, "del", "exec_mean_us")),
        show(get(n, "del", "exec_mean_us")),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(add_p50: f64, ptp_p50: f64, journal: f64) -> Value {
        json!({
            "machine": {"commit": "abc", "date_utc": "2026-12-07"},
            "sequential": {"ours": {"add": {"p50_us": add_p50}},
                           "reference": {"add": {"p50_us": ptp_p50}}},
            "breakdown": {"add": {"exec_mean_us": add_p50, "phases_us": [["journal", journal]]},
                          "del": {"exec_mean_us": 1.0, "phases_us": []}}
        })
    }

    #[test]
    fn an_interleaved_run_compares_its_two_columns() {
        let v = json!({
            "reference": {"Earlier": "abc"},
            "machine": {"commit": "def", "date_utc": "2026-12-08"},
            "sequential": {"ours": {"add": {"p50_us": 2000.0}},
                           "reference": {"add": {"p50_us": 3000.0}}},
            "churn": {"ours": {"pods_per_sec": 300.0}, "reference": {"pods_per_sec": 200.0}}
        });
        let md = interleaved(&v);
        assert!(
            md.contains("| ADD p50 (sequential) | 3.00 ms | 2.00 ms | 1.5× |"),
            "{md}"
        );
        assert!(
            md.contains("| churn throughput | 200 pods/s | 300 pods/s | 1.5× |"),
            "{md}"
        );
        assert!(!md.contains("round trip"), "no reference, no row: {md}");
    }

    #[test]
    fn both_sides_and_their_own_ratios() {
        let md = section(&run(3000.0, 9000.0, 700.0), &run(2000.0, 10000.0, 150.0));
        assert!(
            md.contains("| ADD p50 (sequential) | 3.00 ms | 3.0× | 2.00 ms | 5.0× |"),
            "{md}"
        );
        assert!(md.contains("| 700 | 150 |"), "{md}");
        // A figure neither side has is shown as missing, not as zero.
        assert!(md.contains("| churn throughput | – | – | – | – |"), "{md}");
    }
}
