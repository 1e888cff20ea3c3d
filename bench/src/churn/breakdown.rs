//! Where one ADD (and one DEL) of vpc-cni spends its time, from what a run
//! measured: ipamd's own phase timings (`ipamd status --json` → `timings`,
//! read before and after a workload), the same calls made in-process
//! through the plugin's client (no exec), and the exec'd calls.
//!
//! The rows add up to the mean exec'd call: the plugin process (exec'd
//! mean − in-process mean), the socket and wake-ups (in-process mean −
//! ipamd's accept-to-answer time in the in-process workload), then ipamd's
//! phases in the sequential workload.

use ipamd::timing::Phase;
use serde::Serialize;
use serde_json::Value;

/// ipamd's phase totals for one verb at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Calls answered.
    pub calls: u64,
    /// Nanoseconds per phase, in ipamd's order.
    pub ns: Vec<(String, u64)>,
}

impl Totals {
    /// Reads `view["timings"][verb]` of an `ipamd status --json` view;
    /// `None` for an ipamd without phase timings.
    pub fn read(view: &Value, verb: &str) -> Option<Self> {
        let t = view.get("timings")?.get(verb)?;
        let calls = t.get("calls")?.as_u64()?;
        let by_name = t.get("totalNs")?.as_object()?;
        // In the order a call meets them (a JSON object has none).
        let ns = Phase::ALL
            .iter()
            .filter_map(|p| {
                let v = by_name.get(p.as_str())?.as_u64()?;
                Some((p.as_str().to_string(), v))
            })
            .collect();
        Some(Totals { calls, ns })
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Totals) -> Totals {
        let before = |k: &str| {
            earlier
                .ns
                .iter()
                .find(|(n, _)| n == k)
                .map_or(0, |(_, v)| *v)
        };
        Totals {
            calls: self.calls.saturating_sub(earlier.calls),
            ns: self
                .ns
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(before(k))))
                .collect(),
        }
    }

    /// Mean µs per call of each phase.
    pub fn mean_us(&self) -> Vec<(String, f64)> {
        let n = self.calls.max(1) as f64;
        self.ns
            .iter()
            .map(|(k, v)| (k.clone(), *v as f64 / 1000.0 / n))
            .collect()
    }

    /// Mean µs per call from accept to the answer written.
    pub fn inside_us(&self) -> f64 {
        self.mean_us().iter().map(|(_, v)| v).sum()
    }
}

/// One verb's breakdown.
#[derive(Debug, Clone, Serialize)]
pub struct Column {
    /// Mean exec'd call in the sequential workload, µs.
    pub exec_mean_us: f64,
    /// The plugin process: exec, start, parsing, printing, exit.
    pub plugin_process_us: f64,
    /// The socket and the wake-ups on both sides.
    pub socket_us: f64,
    /// ipamd's phases (sequential workload), µs per call.
    pub phases_us: Vec<(String, f64)>,
}

/// ADD and DEL.
#[derive(Debug, Clone, Serialize)]
pub struct Breakdown {
    /// ADD.
    pub add: Column,
    /// DEL.
    pub del: Column,
}

/// What the workloads gave for one verb.
pub struct Inputs {
    /// Mean exec'd call (sequential), µs.
    pub exec_mean_us: f64,
    /// ipamd's totals over the sequential workload.
    pub sequential: Totals,
    /// Mean in-process call, µs.
    pub in_process_mean_us: f64,
    /// ipamd's totals over the in-process workload.
    pub in_process: Totals,
}

impl Column {
    /// Splits the mean exec'd call.
    pub fn of(i: &Inputs) -> Self {
        let inside = i.sequential.inside_us();
        let socket = (i.in_process_mean_us - i.in_process.inside_us()).max(0.0);
        Column {
            exec_mean_us: i.exec_mean_us,
            plugin_process_us: i.exec_mean_us - inside - socket,
            socket_us: socket,
            phases_us: i.sequential.mean_us(),
        }
    }
}

/// What each phase of ipamd is, for the table.
pub(super) fn label(phase: &str, verb: &str) -> &'static str {
    match (phase, verb) {
        ("accept", _) => "ipamd: `accept` returned → connection task running",
        ("read", _) => "ipamd: peer check, read the request",
        ("decode", _) => "ipamd: decode the request",
        ("begin", _) => {
            "ipamd: claim the attachment in the pod table (DEL: and queue the release to the journal's writer)"
        }
        ("alloc", _) => "ipamd: allocator (address for the pod)",
        ("record", _) => {
            "ipamd: record and result built, record queued to the journal's writer (its wake-up)"
        }
        ("policy", _) => "ipamd: NetworkPolicy hook",
        ("veth", "DEL") => "ipamd: netlink, host route and rules removed",
        ("veth", _) => "ipamd: netlink, veth pair created (peer in the pod's namespace)",
        ("podSide", _) => {
            "ipamd: netlink, pod side (enter namespace, eth0 up, address, routes, neighbour)"
        }
        ("hostSide", _) => "ipamd: netlink, host side (veth up, alias, /32 route, rules)",
        ("journal", _) => "ipamd: waiting for the journal's fsync after the work was done",
        ("finish", _) => "ipamd: pod table, metrics, log",
        ("respond", _) => "ipamd: encode and write the answer",
        _ => "ipamd: other",
    }
}

impl Breakdown {
    /// The Markdown table: one row per step, ADD and DEL side by side.
    pub fn table(&self) -> String {
        let mut t = String::from("| step | ADD µs | DEL µs |\n|---|---:|---:|\n");
        let row = |t: &mut String, name: &str, a: f64, d: f64| {
            let show = |v: f64| {
                if v.abs() < 0.5 {
                    "–".to_string()
                } else {
                    format!("{v:.0}")
                }
            };
            t.push_str(&format!("| {name} | {} | {} |\n", show(a), show(d)));
        };
        row(
            &mut t,
            "plugin process: exec, start, stdin and env parsing, result printing, exit",
            self.add.plugin_process_us,
            self.del.plugin_process_us,
        );
        row(
            &mut t,
            "socket and wake-ups: connect, send, ipamd's `accept` wake-up, answer back to the plugin",
            self.add.socket_us,
            self.del.socket_us,
        );
        for (phase, add) in &self.add.phases_us {
            let del = self
                .del
                .phases_us
                .iter()
                .find(|(p, _)| p == phase)
                .map_or(0.0, |(_, v)| *v);
            if add.abs() < 0.5 && del.abs() < 0.5 {
                continue;
            }
            // One label for both columns; DEL's netlink step differs.
            let name = if phase == "veth" {
                format!(
                    "{} / DEL: {}",
                    label(phase, "ADD"),
                    &label(phase, "DEL")[7..]
                )
            } else {
                label(phase, "ADD").to_string()
            };
            row(&mut t, &name, *add, del);
        }
        t.push_str(&format!(
            "| **total: the mean exec'd call** | **{:.0}** | **{:.0}** |\n",
            self.add.exec_mean_us, self.del.exec_mean_us
        ));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(calls: u64, alloc: u64, veth: u64) -> Value {
        // Out of order on purpose: rows follow ipamd's phase order.
        json!({"timings": {"ADD": {"calls": calls, "totalNs": {"veth": veth, "alloc": alloc}}}})
    }

    #[test]
    fn totals_are_read_and_diffed() {
        let a = Totals::read(&view(2, 1000, 4000), "ADD").unwrap();
        let b = Totals::read(&view(6, 5000, 404_000), "ADD").unwrap();
        let d = b.since(&a);
        assert_eq!(d.calls, 4);
        assert_eq!(
            d.mean_us(),
            vec![("alloc".into(), 1.0), ("veth".into(), 100.0)]
        );
        assert!((d.inside_us() - 101.0).abs() < 1e-9);
        assert!(Totals::read(&json!({"metrics": {}}), "ADD").is_none());
    }

    #[test]
    fn the_rows_add_up_to_the_exec_mean() {
        let seq = Totals {
            calls: 10,
            ns: vec![("alloc".into(), 10_000), ("veth".into(), 3_000_000)],
        };
        let inproc = Totals {
            calls: 5,
            ns: vec![("veth".into(), 1_600_000)],
        };
        let c = Column::of(&Inputs {
            exec_mean_us: 1000.0,
            sequential: seq,
            in_process_mean_us: 380.0,
            in_process: inproc,
        });
        assert!((c.socket_us - 60.0).abs() < 1e-9);
        let sum: f64 =
            c.plugin_process_us + c.socket_us + c.phases_us.iter().map(|p| p.1).sum::<f64>();
        assert!((sum - 1000.0).abs() < 1e-9);
    }
}
