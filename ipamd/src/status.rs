//! `ipamd status` as text: the operator view of the INTROSPECT answer
//! (without `--json`), and the aligned tables it is made of (the demo
//! prints the same view and tables).
//!
//! The view is read field by field with fallbacks rather than deserialised
//! into a struct, so a daemon of another version (a field more or less)
//! still renders instead of failing the whole command.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde_json::Value;

/// Shown where the view has no value.
const NONE: &str = "-";

/// A table whose columns are padded to their widest cell.
pub struct Table {
    indent: usize,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles, each line indented by `indent` spaces.
    pub fn new(indent: usize, header: &[&str]) -> Self {
        Table {
            indent,
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (missing cells render empty, extra cells are kept).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table, one line per row, header first, no trailing spaces.
    pub fn render(&self) -> String {
        let columns = std::iter::once(&self.header)
            .chain(&self.rows)
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; columns];
        for line in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.header).chain(&self.rows) {
            let mut text = " ".repeat(self.indent);
            for (i, width) in widths.iter().enumerate() {
                let cell = line.get(i).map_or("", String::as_str);
                let pad = width - cell.chars().count();
                text.push_str(cell);
                text.push_str(&" ".repeat(pad + 2));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Formats a duration as milliseconds with one decimal, e.g. `2.3 ms`.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Renders the INTROSPECT view as text for `ipamd status`.
///
/// ```
/// let view = serde_json::json!({
///     "node": {"instanceId": "i-0123", "instanceType": "m5.large"},
///     "pool": {"total": 9, "used": 0, "free": 9, "capacity": 27, "ready": true, "blocked": null},
///     "enis": [], "pods": [], "metrics": {},
/// });
/// let text = ipamd::status::render_status(&view);
/// assert!(text.contains("m5.large"));
/// ```
pub fn render_status(view: &Value) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    render_status_at(view, now)
}

/// [`render_status`] with the clock given (pod ages are relative to `now`).
fn render_status_at(view: &Value, now_unix: u64) -> String {
    let mut out = String::new();
    out.push_str(&node_line(&view["node"]));
    out.push_str(&pool_lines(&view["pool"]));
    out.push_str(&target_line(&view["pool"], &view["config"]));
    out.push_str(&eni_lines(view));
    out.push_str(&pod_lines(view, now_unix));
    out.push_str(&metric_line(&view["metrics"]));
    out.push_str(&daemon_line(&view["daemon"]));
    out.push_str(&config_lines(&view["config"], now_unix));
    out.push_str(&ec2_lines(&view["ec2"], now_unix));
    out
}

/// Free split into warm and cooling, against the target and the settings
/// that make it (absent from an older daemon's view: nothing printed).
fn target_line(pool: &Value, config: &Value) -> String {
    let Some(target) = pool["target"].as_u64() else {
        return String::new();
    };
    let settings = &config["pool"];
    let mut set: Vec<String> = Vec::new();
    for (key, name) in [
        ("warmIpTarget", "WARM_IP_TARGET"),
        ("minimumIpTarget", "MINIMUM_IP_TARGET"),
        ("warmEniTarget", "WARM_ENI_TARGET"),
        ("maxEni", "MAX_ENI"),
    ] {
        if let Some(v) = settings[key].as_u64() {
            set.push(format!("{name}={v}"));
        }
    }
    let mut out = format!(
        "       free: {} warm + {} cooling; target {target} in pool",
        number(&pool["warm"]),
        number(&pool["cooling"]),
    );
    if !set.is_empty() {
        let _ = write!(out, " ({})", set.join(", "));
    }
    out.push('\n');
    out
}

/// The settings fixed at start.
fn daemon_line(daemon: &Value) -> String {
    if !daemon.is_object() {
        return String::new();
    }
    format!(
        "daemon cloud {}, mtu {}, socket {}, state {}, metrics {}, log {} ({})\n",
        text(&daemon["cloud"]),
        number(&daemon["mtu"]),
        text(&daemon["socket"]),
        text(&daemon["stateDir"]),
        daemon["metricsAddr"].as_str().unwrap_or("off"),
        text(&daemon["logFilter"]),
        text(&daemon["logFormat"]),
    )
}

fn config_lines(config: &Value, now_unix: u64) -> String {
    let Some(generation) = config["generation"].as_u64() else {
        return String::new();
    };
    let source = config["source"]
        .as_str()
        .map_or_else(|| "environment only".to_string(), |p| format!("from {p}"));
    let mut out = format!("config generation {generation}, {source}\n");
    let last = &config["lastReload"];
    if let Some(result) = last["result"].as_str() {
        let when = last["atUnix"]
            .as_u64()
            .map_or_else(|| NONE.to_string(), |t| age(now_unix.saturating_sub(t)));
        let _ = write!(out, "       last reload {when} ago: {result}");
        if let Some(e) = last["error"].as_str() {
            let _ = write!(out, ": {e}");
        }
        out.push('\n');
    }
    let restart: Vec<&str> = list(&last["restartRequired"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if !restart.is_empty() {
        let _ = writeln!(
            out,
            "       changed but applied only at restart: {}",
            restart.join(", ")
        );
    }
    out
}

fn ec2_lines(ec2: &Value, now_unix: u64) -> String {
    let errors = list(&ec2["lastErrors"]);
    if errors.is_empty() {
        return String::new();
    }
    let mut out = format!("cloud  last {} errors\n", errors.len());
    let mut table = Table::new(7, &["AGO", "OPERATION", "CODE", "MESSAGE"]);
    for e in errors.iter().rev() {
        table.row(vec![
            e["atUnix"]
                .as_u64()
                .map_or_else(|| NONE.to_string(), |t| age(now_unix.saturating_sub(t))),
            text(&e["operation"]).to_string(),
            text(&e["code"]).to_string(),
            text(&e["message"]).to_string(),
        ]);
    }
    out.push_str(&table.render());
    out
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or(NONE)
}

fn number(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| NONE.to_string(), |n| n.to_string())
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn node_line(node: &Value) -> String {
    format!(
        "node   {} ({})\n",
        text(&node["instanceId"]),
        text(&node["instanceType"])
    )
}

fn pool_lines(pool: &Value) -> String {
    let state = match pool["ready"].as_bool() {
        Some(true) => "ready",
        Some(false) => "filling",
        None => "state unknown",
    };
    let mut out = format!(
        "pool   {} used, {} free, {} in pool of {} max  ({state})\n",
        number(&pool["used"]),
        number(&pool["free"]),
        number(&pool["total"]),
        number(&pool["capacity"]),
    );
    if let Some(reason) = pool["blocked"].as_str() {
        let _ = writeln!(out, "       blocked: {reason}");
    }
    out
}

/// Device index → ENI id, to name the ENI of each pod.
fn eni_ids(view: &Value) -> HashMap<u64, &str> {
    list(&view["enis"])
        .iter()
        .filter_map(|e| Some((e["deviceIndex"].as_u64()?, e["id"].as_str()?)))
        .collect()
}

fn eni_lines(view: &Value) -> String {
    let enis = list(&view["enis"]);
    let pods = list(&view["pods"]);
    let mut out = format!("enis   {} attached\n", enis.len());
    let mut table = Table::new(7, &["#", "ENI", "PRIMARY IP", "SUBNET", "MAC", "ADDRESSES"]);
    for eni in enis {
        let index = eni["deviceIndex"].as_u64();
        let secondary = list(&eni["secondaryIps"]).len();
        let used = pods
            .iter()
            .filter(|p| index.is_some() && p["eniIndex"].as_u64() == index)
            .count();
        table.row(vec![
            index.map_or_else(|| NONE.to_string(), |i| i.to_string()),
            text(&eni["id"]).to_string(),
            text(&eni["primaryIp"]).to_string(),
            text(&eni["subnet"]).to_string(),
            text(&eni["mac"]).to_string(),
            format!("{used}/{secondary} in use"),
        ]);
    }
    if !enis.is_empty() {
        out.push_str(&table.render());
    }
    out
}

fn pod_lines(view: &Value, now_unix: u64) -> String {
    let pods = list(&view["pods"]);
    let enis = eni_ids(view);
    let mut out = format!("pods   {}\n", pods.len());
    let mut table = Table::new(7, &["POD", "IP", "ENI", "HOST VETH", "CONTAINER", "AGE"]);
    for pod in pods {
        let eni = pod["eniIndex"]
            .as_u64()
            .map_or(NONE, |i| enis.get(&i).copied().unwrap_or(NONE));
        let age = pod["createdUnix"]
            .as_u64()
            .map_or_else(|| NONE.to_string(), |t| age(now_unix.saturating_sub(t)));
        table.row(vec![
            pod_label(pod),
            text(&pod["addr"]).to_string(),
            eni.to_string(),
            text(&pod["hostIfname"]).to_string(),
            text(&pod["containerId"]).chars().take(12).collect(),
            age,
        ]);
    }
    if !pods.is_empty() {
        out.push_str(&table.render());
    }
    out
}

/// `namespace/name`, or whatever part of the identity the runtime sent.
fn pod_label(pod: &Value) -> String {
    match (pod["namespace"].as_str(), pod["name"].as_str()) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        (None, Some(name)) => name.to_string(),
        _ => format!(
            "container {}",
            text(&pod["containerId"])
                .chars()
                .take(12)
                .collect::<String>()
        ),
    }
}

fn age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

fn metric_line(metrics: &Value) -> String {
    let Some(per) = metrics.as_object().filter(|m| !m.is_empty()) else {
        return String::new();
    };
    let parts: Vec<String> = per
        .iter()
        .map(|(command, m)| {
            let mean = m["meanUs"]
                .as_u64()
                .map_or_else(|| NONE.to_string(), |us| ms(Duration::from_micros(us)));
            let errors = m["errors"].as_u64().unwrap_or(0);
            let errors = if errors == 0 {
                String::new()
            } else {
                format!(", {errors} failed")
            };
            format!("{command} {} (mean {mean}{errors})", number(&m["calls"]))
        })
        .collect();
    format!("calls  {}\n", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_100;

    fn view() -> Value {
        json!({
            "node": {"instanceId": "i-0abc", "instanceType": "m5.large"},
            "pool": {"total": 18, "used": 2, "free": 16, "capacity": 27, "ready": true, "blocked": null},
            "enis": [
                {"id": "eni-0001", "deviceIndex": 0, "mac": "02:d4:00:00:00:01", "subnet": "10.0.0.0/20",
                 "primaryIp": "10.0.0.4", "secondaryIps": ["10.0.0.5", "10.0.0.6", "10.0.0.7"]},
                {"id": "eni-0002", "deviceIndex": 1, "mac": "02:d4:00:00:00:02", "subnet": "10.0.0.0/20",
                 "primaryIp": "10.0.0.14", "secondaryIps": ["10.0.0.15"]},
            ],
            "pods": [
                {"containerId": "0123456789abcdef0123", "ifname": "eth0", "netns": "/var/run/netns/a",
                 "namespace": "billing", "name": "api-0", "addr": "10.0.0.5", "eniIndex": 0,
                 "hostIfname": "eni0b8fc250807", "hostIfindex": 4, "mtu": 9001, "createdUnix": NOW - 5},
                {"containerId": "fedcba9876543210", "ifname": "eth0", "netns": "/var/run/netns/b",
                 "namespace": null, "name": "web", "addr": "10.0.0.15", "eniIndex": 1,
                 "hostIfname": "eni1111111111a", "hostIfindex": 5, "mtu": 9001, "createdUnix": NOW - 7200},
            ],
            "metrics": {"ADD": {"calls": 2, "errors": 1, "meanUs": 1940}},
        })
    }

    #[test]
    fn shows_target_config_and_cloud_errors() {
        let mut v = view();
        v["pool"]["warm"] = json!(13);
        v["pool"]["cooling"] = json!(3);
        v["pool"]["target"] = json!(7);
        v["config"] = json!({
            "source": "/etc/vpc-cni/config", "generation": 2,
            "pool": {"warmIpTarget": 5, "minimumIpTarget": null, "warmEniTarget": 1},
            "lastReload": {"atUnix": NOW - 30, "result": "rejected",
                           "error": "invalid WARM_IP_TARGET=\"x\": invalid digit",
                           "restartRequired": ["MAX_ENI"]},
        });
        v["daemon"] = json!({"cloud": "sim", "mtu": 9001, "socket": "/run/vpc-cni/ipamd.sock",
            "stateDir": "/var/lib/vpc-cni", "metricsAddr": null, "logFilter": "info", "logFormat": "json"});
        v["ec2"] = json!({"lastErrors": [
            {"atUnix": NOW - 120, "operation": "assign_ips", "code": "SubnetFull",
             "message": "subnet subnet-1 has no free addresses left"},
        ]});
        let text = render_status_at(&v, NOW);
        assert!(
            text.contains(
                "       free: 13 warm + 3 cooling; target 7 in pool (WARM_IP_TARGET=5, WARM_ENI_TARGET=1)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("config generation 2, from /etc/vpc-cni/config\n"),
            "{text}"
        );
        assert!(
            text.contains("daemon cloud sim, mtu 9001, socket /run/vpc-cni/ipamd.sock, state /var/lib/vpc-cni, metrics off, log info (json)\n"),
            "{text}"
        );
        assert!(
            text.contains("last reload 30s ago: rejected: invalid WARM_IP_TARGET=\"x\""),
            "{text}"
        );
        assert!(text.contains("applied only at restart: MAX_ENI"), "{text}");
        assert!(text.contains("cloud  last 1 errors"), "{text}");
        assert!(text.contains("2m") && text.contains("SubnetFull"), "{text}");
    }

    #[test]
    fn shows_node_and_pool_numbers() {
        let text = render_status_at(&view(), NOW);
        assert!(text.starts_with("node   i-0abc (m5.large)\n"), "{text}");
        assert!(
            text.contains("pool   2 used, 16 free, 18 in pool of 27 max  (ready)"),
            "{text}"
        );
        assert!(!text.contains("blocked"), "{text}");
    }

    #[test]
    fn one_line_per_eni_with_address_counts() {
        let text = render_status_at(&view(), NOW);
        assert!(text.contains("enis   2 attached"), "{text}");
        let eni0 = text.lines().find(|l| l.contains("eni-0001")).unwrap();
        assert!(
            eni0.contains("10.0.0.4") && eni0.ends_with("1/3 in use"),
            "{eni0}"
        );
        let eni1 = text.lines().find(|l| l.contains("eni-0002 ")).unwrap();
        assert!(eni1.ends_with("1/1 in use"), "{eni1}");
    }

    #[test]
    fn pod_table_names_the_eni_by_index_and_is_aligned() {
        let text = render_status_at(&view(), NOW);
        let header = text.lines().find(|l| l.contains("HOST VETH")).unwrap();
        let api = text.lines().find(|l| l.contains("billing/api-0")).unwrap();
        let web = text
            .lines()
            .find(|l| l.trim_start().starts_with("web"))
            .unwrap();
        assert!(
            api.contains("eni-0001") && api.contains("0123456789ab "),
            "{api}"
        );
        assert!(
            !api.contains("0123456789abc"),
            "container id is shortened: {api}"
        );
        assert!(web.contains("eni-0002") && web.ends_with("2h"), "{web}");
        assert!(api.ends_with("5s"), "{api}");
        for (column, cell) in [
            ("IP", "10.0.0.5"),
            ("ENI", "eni-0001"),
            ("HOST VETH", "eni0b8"),
        ] {
            assert_eq!(
                header.find(column),
                api.find(cell),
                "{column}:\n{header}\n{api}"
            );
        }
    }

    #[test]
    fn metrics_and_blocked_reason() {
        let mut v = view();
        v["pool"]["blocked"] = json!("subnet 10.0.0.0/20 has no free addresses");
        v["pool"]["ready"] = json!(false);
        let text = render_status_at(&v, NOW);
        assert!(text.contains("(filling)"), "{text}");
        assert!(
            text.contains("blocked: subnet 10.0.0.0/20 has no free addresses"),
            "{text}"
        );
        assert!(
            text.contains("calls  ADD 2 (mean 1.9 ms, 1 failed)"),
            "{text}"
        );
    }

    #[test]
    fn empty_or_foreign_view_still_renders() {
        let text = render_status_at(&json!({}), NOW);
        assert!(text.contains("node   - (-)"), "{text}");
        assert!(text.contains("enis   0 attached"), "{text}");
        assert!(text.contains("pods   0"), "{text}");
        assert!(!text.contains("POD"), "no empty table header: {text}");
    }

    #[test]
    fn table_pads_to_widest_cell_without_trailing_spaces() {
        let mut t = Table::new(2, &["A", "BB"]);
        t.row(vec!["long cell".into(), "x".into()]);
        t.row(vec!["é".into()]);
        assert_eq!(t.render(), "  A          BB\n  long cell  x\n  é\n");
    }

    #[test]
    fn ages() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(61), "1m");
        assert_eq!(age(7200), "2h");
        assert_eq!(age(200_000), "2d");
    }
}
