//! Operating a node: Prometheus metrics scraped and parsed over loopback in
//! the node's namespace and checked against real pods and `ipamd status`,
//! the health endpoints, live tuning of the warm pool (file + SIGHUP, file
//! polling, a bad value refused), JSON logs carrying the CNI call's span,
//! and the plugin's own log file.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use vpc_cni_e2e::observe::{http_get, request, Exposition, METRICS_PORT};
use vpc_cni_e2e::{status_json, wait_until, Node, PodSpec, TempDir};

const WAIT: Duration = Duration::from_secs(10);

#[track_caller]
fn scrape(node: &Node) -> Exposition {
    let answer = http_get(node, METRICS_PORT, "/metrics")
        .unwrap_or_else(|e| panic!("scrape failed: {e}\nlog:\n{}", node.log()));
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        answer
            .content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{answer:?}"
    );
    Exposition::parse(&answer.body)
        .unwrap_or_else(|e| panic!("unparsable exposition ({e}):\n{}", answer.body))
}

fn n(v: &Value) -> f64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count")) as f64
}

fn cni_count(m: &Exposition, command: &str, result: &str, code: &str) -> f64 {
    m.value(
        "vpc_cni_cni_requests_total",
        &[("command", command), ("result", result), ("code", code)],
    )
    .unwrap_or(0.0)
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn metrics_count_real_pods_and_agree_with_status() {
    let node = Node::start();
    let pods: Vec<PodSpec> = (0..4).map(|i| PodSpec::new(&format!("m-{i}"))).collect();
    for p in &pods {
        node.add_call(p).run().ok();
    }
    // A repeated ADD answers from the table: it counts as one more ADD.
    node.add_call(&pods[0]).run().ok();
    node.del_pod(&pods[3]);
    node.plugin("CHECK")
        .container_id(&pods[0].container_id)
        .netns(pods[0].netns.path_str())
        .run()
        .ok();
    // An ADD whose namespace does not exist fails with code 4.
    let gone = node
        .plugin("ADD")
        .container_id("cid-gone")
        .netns("/run/netns/vpccni-e2e-does-not-exist")
        .args("K8S_POD_NAMESPACE=default;K8S_POD_NAME=gone")
        .run();
    let code = gone.err()["code"].as_u64().expect("code").to_string();

    // The checkpoint is written in the background (coalesced).
    assert!(
        wait_until(WAIT, || scrape(&node)
            .sum("vpc_cni_checkpoint_writes_total", &[("result", "ok")])
            >= 1.0),
        "no checkpoint write counted:\n{}",
        node.log()
    );
    let m = scrape(&node);
    let status = status_json(&node);

    assert_eq!(cni_count(&m, "ADD", "ok", "0"), 5.0);
    assert_eq!(cni_count(&m, "ADD", "error", &code), 1.0);
    assert_eq!(cni_count(&m, "DEL", "ok", "0"), 1.0);
    assert_eq!(cni_count(&m, "CHECK", "ok", "0"), 1.0);
    assert_eq!(
        m.get(
            "vpc_cni_cni_request_duration_seconds_count",
            &[("command", "ADD"), ("result", "ok")]
        ),
        5.0
    );
    assert_eq!(
        m.get(
            "vpc_cni_cni_request_duration_seconds_bucket",
            &[("command", "ADD"), ("result", "ok"), ("le", "+Inf")]
        ),
        5.0
    );
    assert_eq!(
        m.types
            .get("vpc_cni_cni_request_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    // STATUS calls from the plugin (the testkit's readiness wait) count too.
    assert!(cni_count(&m, "STATUS", "ok", "0") >= 1.0);

    // Address gauges are the daemon's own view.
    let pool = &status["pool"];
    assert_eq!(m.get("vpc_cni_ip_addresses", &[]), n(&pool["total"]));
    assert_eq!(m.get("vpc_cni_ip_addresses_assigned", &[]), 3.0);
    assert_eq!(n(&pool["used"]), 3.0);
    assert_eq!(
        m.get("vpc_cni_ip_addresses_warm", &[]) + m.get("vpc_cni_ip_addresses_cooling", &[]),
        n(&pool["free"])
    );
    // Released addresses rest for IP_COOLDOWN_PERIOD (30 s): the DELeted
    // pod's, and the one the failed ADD took and gave back.
    assert_eq!(m.get("vpc_cni_ip_addresses_cooling", &[]), 2.0);
    assert_eq!(n(&pool["cooling"]), 2.0);
    assert_eq!(
        m.get("vpc_cni_ip_addresses_target", &[]),
        n(&pool["target"])
    );
    assert_eq!(m.get("vpc_cni_ip_addresses_max", &[]), n(&pool["capacity"]));
    assert_eq!(
        m.get("vpc_cni_ip_addresses_max", &[]),
        27.0,
        "m5.large: 3 ENIs x 9"
    );
    assert_eq!(
        m.get("vpc_cni_enis", &[]),
        status["enis"].as_array().expect("enis").len() as f64
    );
    assert_eq!(m.get("vpc_cni_pool_ready", &[]), 1.0);
    assert_eq!(m.get("vpc_cni_pool_blocked", &[]), 0.0);
    assert_eq!(status["pods"].as_array().expect("pods").len(), 3);

    // The pool was filled through the (simulated) cloud: counted per call.
    let assigned = m.get(
        "vpc_cni_ec2_requests_total",
        &[("operation", "assign_ips"), ("result", "ok")],
    );
    assert!(assigned >= 1.0, "assign_ips calls: {assigned}");
    assert_eq!(
        m.get(
            "vpc_cni_ec2_request_duration_seconds_count",
            &[("operation", "assign_ips")]
        ),
        assigned
    );
    assert_eq!(
        m.get("vpc_cni_ec2_requests_total", &[("operation", "node")]),
        1.0
    );
    assert_eq!(status["ec2"]["lastErrors"], serde_json::json!([]));
    assert!(m.get("vpc_cni_checkpoint_write_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(m.get("vpc_cni_config_generation", &[]), 0.0);
    // Start-up reconciled once (an empty node: nothing kept or repaired).
    assert_eq!(
        m.get("vpc_cni_reconcile_runs_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(m.sum("vpc_cni_reconcile_events_total", &[]), 0.0);
    assert_eq!(m.get("vpc_cni_build_info", &[]), 1.0);

    // The text view shows the same numbers to a human.
    let text = std::process::Command::new(vpc_cni_e2e::bin_path("ipamd"))
        .arg("status")
        .env_clear()
        .env("VPC_CNI_SOCKET", node.socket())
        .output()
        .expect("ipamd status");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("2 cooling; target {} in pool", pool["target"])),
        "{text}"
    );
    assert!(
        text.contains("config generation 0, environment only"),
        "{text}"
    );
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn health_endpoints_follow_start_up() {
    // A slow cloud keeps the first fill going for a few seconds.
    let mut node = Node::spawn_with(&[("VPC_CNI_SIM_API_LATENCY_MS", "1000")]);
    assert!(
        wait_until(WAIT, || http_get(&node, METRICS_PORT, "/healthz")
            .is_ok_and(|a| a.status == 200)),
        "/healthz never answered:\n{}",
        node.log()
    );
    let early = http_get(&node, METRICS_PORT, "/readyz").expect("readyz");
    let status_then = node.plugin("STATUS").run();
    // Readiness never runs ahead of the daemon's own STATUS.
    if early.status == 200 {
        status_then.ok();
    } else {
        assert_eq!(early.status, 503, "{early:?}");
        assert!(early.body.contains("starting"), "{early:?}");
    }
    node.wait_ready();
    let ready = http_get(&node, METRICS_PORT, "/readyz").expect("readyz");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    assert_eq!(
        http_get(&node, METRICS_PORT, "/healthz").unwrap().status,
        200
    );
    assert_eq!(http_get(&node, METRICS_PORT, "/nope").unwrap().status, 404);
    assert_eq!(
        request(&node, METRICS_PORT, "POST", "/metrics")
            .unwrap()
            .status,
        405
    );
    // Probes are not CNI requests: /readyz's socket round trip is not counted.
    let before = scrape(&node).sum("vpc_cni_cni_requests_total", &[]);
    for _ in 0..3 {
        assert_eq!(
            http_get(&node, METRICS_PORT, "/readyz").unwrap().status,
            200
        );
    }
    assert_eq!(scrape(&node).sum("vpc_cni_cni_requests_total", &[]), before);

    let off = Node::start_with(&[("VPC_CNI_METRICS_ADDR", "off")]);
    assert!(http_get(&off, METRICS_PORT, "/healthz").is_err());
    let other = Node::start_with(&[("VPC_CNI_METRICS_ADDR", "127.0.0.1:9100")]);
    assert_eq!(http_get(&other, 9100, "/healthz").unwrap().status, 200);
}

/// Replaces `dir/key` the way kubelet updates a ConfigMap volume: the new
/// content appears at once (rename), never half-written.
fn set_key(dir: &Path, key: &str, value: &str) {
    let tmp = dir.join(format!(".{key}.tmp"));
    std::fs::write(&tmp, value).expect("write key");
    std::fs::rename(&tmp, dir.join(key)).expect("rename key");
}

fn sighup(node: &Node) {
    kill(Pid::from_raw(node.pid() as i32), Signal::SIGHUP).expect("SIGHUP");
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn warm_pool_settings_change_live() {
    let conf = TempDir::new();
    set_key(conf.path(), "WARM_IP_TARGET", "2");
    let path = conf.path().to_str().expect("ascii path").to_string();
    // The file wins over the environment for live keys.
    let node = Node::start_with(&[("VPC_CNI_CONFIG_PATH", &path), ("WARM_IP_TARGET", "1")]);
    let status = status_json(&node);
    assert_eq!(status["config"]["pool"]["warmIpTarget"], 2, "{status}");
    assert_eq!(status["config"]["generation"], 0);
    assert_eq!(status["pool"]["total"], 2, "{status}");
    let m = scrape(&node);
    assert_eq!(
        m.get("vpc_cni_pool_setting", &[("setting", "warm_ip_target")]),
        2.0
    );
    assert_eq!(m.get("vpc_cni_ip_addresses_target", &[]), 2.0);
    let pid_before = node.pid();

    // SIGHUP: applied at once, and the pool grows to the new target.
    set_key(conf.path(), "WARM_IP_TARGET", "6");
    sighup(&node);
    assert!(
        wait_until(WAIT, || {
            let s = status_json(&node);
            s["config"]["generation"] == 1 && s["pool"]["total"] == 6
        }),
        "WARM_IP_TARGET=6 not applied: {}\n{}",
        status_json(&node),
        node.log()
    );
    let m = scrape(&node);
    assert_eq!(m.get("vpc_cni_config_generation", &[]), 1.0);
    assert_eq!(
        m.get("vpc_cni_config_reloads_total", &[("result", "applied")]),
        1.0
    );
    assert_eq!(
        m.get("vpc_cni_pool_setting", &[("setting", "warm_ip_target")]),
        6.0
    );
    assert_eq!(m.get("vpc_cni_ip_addresses_target", &[]), 6.0);
    assert_eq!(m.get("vpc_cni_ip_addresses", &[]), 6.0);
    assert_eq!(m.get("vpc_cni_config_last_reload_success", &[]), 1.0);

    // A bad value: refused, logged, the old value kept.
    set_key(conf.path(), "WARM_IP_TARGET", "lots");
    sighup(&node);
    assert!(
        wait_until(WAIT, || status_json(&node)["config"]["lastReload"]
            ["result"]
            == "rejected"),
        "bad value not refused: {}",
        status_json(&node)
    );
    let s = status_json(&node);
    assert_eq!(s["config"]["pool"]["warmIpTarget"], 6, "{s}");
    assert_eq!(s["config"]["generation"], 1);
    let error = s["config"]["lastReload"]["error"].as_str().unwrap_or("");
    assert!(
        error.contains("WARM_IP_TARGET") && error.contains("lots"),
        "{s}"
    );
    let m = scrape(&node);
    assert_eq!(
        m.get("vpc_cni_config_reloads_total", &[("result", "rejected")]),
        1.0
    );
    assert_eq!(m.get("vpc_cni_config_last_reload_success", &[]), 0.0);
    assert_eq!(
        m.get("vpc_cni_pool_setting", &[("setting", "warm_ip_target")]),
        6.0
    );
    assert!(
        node.log().lines().any(|l| l.contains("WARN")
            && l.contains("reload refused")
            && l.contains("WARM_IP_TARGET")),
        "no warning logged:\n{}",
        node.log()
    );
    // The daemon still serves pods.
    node.add_pod("after-bad");

    // No signal: the change of the file alone is picked up.
    set_key(conf.path(), "WARM_IP_TARGET", "9");
    set_key(conf.path(), "MAX_ENI", "1");
    assert!(
        wait_until(WAIT, || status_json(&node)["config"]["generation"] == 2),
        "file change not picked up: {}",
        status_json(&node)
    );
    let s = status_json(&node);
    assert_eq!(s["config"]["pool"]["warmIpTarget"], 9, "{s}");
    assert_eq!(
        s["config"]["lastReload"]["restartRequired"],
        serde_json::json!(["MAX_ENI"])
    );
    assert_eq!(
        s["config"]["pool"]["maxEni"],
        Value::Null,
        "MAX_ENI is not live"
    );
    assert!(
        wait_until(WAIT, || status_json(&node)["pool"]["total"] == 10),
        "pool did not grow to 1 used + 9 warm: {}",
        status_json(&node)
    );
    assert_eq!(node.pid(), pid_before, "no restart happened");
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn a_bad_config_file_stops_start_up_with_its_name() {
    let conf = TempDir::new();
    set_key(conf.path(), "MINIMUM_IP_TARGET", "ten");
    let path = conf.path().to_str().expect("ascii path").to_string();
    let node = Node::spawn_with(&[("VPC_CNI_CONFIG_PATH", &path)]);
    assert!(
        wait_until(WAIT, || node.log().contains("MINIMUM_IP_TARGET")),
        "no error about the file:\n{}",
        node.log()
    );
    let log = node.log();
    assert!(log.contains("\"ten\"") && log.contains(&path), "{log}");
    assert!(!node.plugin("STATUS").run().success());
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn json_logs_carry_the_cni_call_span() {
    let node = Node::start_with(&[("VPC_CNI_LOG_FORMAT", "json")]);
    let pod = node.add_pod("logged");
    node.del_pod(&pod.spec);
    assert!(
        wait_until(WAIT, || node.log().contains("pod deleted")),
        "{}",
        node.log()
    );
    let lines: Vec<Value> = node
        .log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let find = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line in {lines:?}"))
    };
    let added = find("pod added");
    assert_eq!(added["level"], "INFO");
    assert_eq!(added["ip"], pod.ip.to_string());
    let span = &added["span"];
    assert_eq!(span["name"], "cni");
    assert_eq!(span["command"], "ADD");
    assert_eq!(span["namespace"], "default");
    assert_eq!(span["pod"], "logged");
    assert_eq!(span["container_id"], "cid-logged");
    let deleted = find("pod deleted");
    assert_eq!(deleted["span"]["command"], "DEL");
    assert_eq!(deleted["span"]["pod"], "logged");
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn plugin_logs_to_its_file_and_never_to_stdout() {
    let node = Node::start();
    let logs = TempDir::new();
    let file = logs.path().join("vpc-cni.log");
    let mut conf = node.conf("1.1.0");
    conf["logFile"] = Value::from(file.to_str().expect("ascii"));
    conf["logLevel"] = Value::from("debug");
    let spec = PodSpec::new("plugin-log");
    let out = node.add_call(&spec).config(&conf).run();
    // stdout is exactly the result (Plugin::run panics on anything else).
    assert!(out.ok()["ips"][0]["address"].is_string(), "{out}");
    let text = std::fs::read_to_string(&file).expect("log file written");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("cmd=\"ADD\"")
            && text.contains("pod=\"default/plugin-log\"")
            && text.contains("result=ok"),
        "{text}"
    );
    assert!(!out.stdout.contains("cmd="), "log line on stdout: {out}");
    node.del_call(&spec).config(&conf).run().ok();
    let text = std::fs::read_to_string(&file).expect("log file");
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.contains("cmd=\"DEL\"")),
        "{text}"
    );
}

#[test]
#[ignore = "privileged: needs root and CAP_NET_ADMIN"]
fn reconcile_after_a_crash_is_counted() {
    let mut node = Node::start();
    // Kept alive: a pod whose namespace is gone would be released instead.
    let _pods: Vec<_> = (0..3).map(|i| node.add_pod(&format!("r-{i}"))).collect();
    node.crash_and_restart();
    let m = scrape(&node);
    assert_eq!(
        m.get("vpc_cni_reconcile_runs_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        m.get("vpc_cni_reconcile_events_total", &[("kind", "kept")]),
        3.0
    );
}
