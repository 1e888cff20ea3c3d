//! manifests/monitoring/prometheus-rules.yaml is a valid rule file (promtool check
//! rules) and its alerts fire when they should and only then (promtool's
//! rule unit tests on synthetic series). The metric names it uses are
//! checked against ipamd's registry by ipamd's own unit tests
//! (`metrics::tests::alert_rules_and_readme_name_real_metrics`).
//!
//! promtool comes from scripts/setup-promtool.sh.

use std::path::{Path, PathBuf};
use std::process::Command;

use vpc_cni_e2e::TempDir;

fn manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/monitoring/prometheus-rules.yaml")
}

/// The PrometheusRule's `spec` (`groups:` ...) as a plain rule file.
fn rule_file(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(manifest()).expect("read prometheus-rules.yaml");
    let (_, spec) = text
        .split_once("\nspec:\n")
        .expect("the PrometheusRule has a spec");
    let body: String = spec
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(body.starts_with("groups:"), "{body}");
    let path = dir.join("rules.yaml");
    std::fs::write(&path, body).expect("write rules");
    path
}

#[track_caller]
fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("promtool not runnable ({e}); run scripts/setup.sh"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_rule_file_is_valid() {
    let dir = TempDir::new();
    let rules = rule_file(dir.path());
    let out = promtool(
        &["check", "rules", rules.to_str().expect("ascii")],
        dir.path(),
    );
    assert!(out.contains("SUCCESS: 13 rules found"), "{out}");
}

const UNIT_TESTS: &str = r#"
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  # One node fails 1 ADD in 11, another none: only the first alerts, and
  # only after the 10 minutes of `for`.
  - interval: 1m
    input_series:
      - series: 'vpc_cni_cni_requests_total{command="ADD",result="ok",code="0",instance="n1"}'
        values: '0+10x40'
      - series: 'vpc_cni_cni_requests_total{command="ADD",result="error",code="100",instance="n1"}'
        values: '0+1x40'
      - series: 'vpc_cni_cni_requests_total{command="ADD",result="ok",code="0",instance="n2"}'
        values: '0+10x40'
      - series: 'vpc_cni_cni_requests_total{command="ADD",result="error",code="100",instance="n2"}'
        values: '0+0x40'
    alert_rule_test:
      - eval_time: 8m
        alertname: VpcCniAddFailing
        exp_alerts: []
      - eval_time: 20m
        alertname: VpcCniAddFailing
        exp_alerts:
          - exp_labels:
              severity: warning
              instance: n1
            exp_annotations:
              summary: "More than 5% of pod network set-ups fail on n1"
              description: "See the error codes in vpc_cni_cni_requests_total{command=\"ADD\",result=\"error\"} and `ipamd status` on the node."
  # A refused reload alerts after 5 minutes; an applied one clears it.
  - interval: 1m
    input_series:
      - series: 'vpc_cni_config_last_reload_success{instance="n1"}'
        values: '1 1 0 0 0 0 0 0 0 0 1 1 1'
    alert_rule_test:
      - eval_time: 4m
        alertname: VpcCniConfigReloadRejected
        exp_alerts: []
      - eval_time: 9m
        alertname: VpcCniConfigReloadRejected
        exp_alerts:
          - exp_labels:
              severity: warning
              instance: n1
            exp_annotations:
              summary: "A warm-pool setting change was refused on n1"
              description: "`ipamd status` names the key and value; the previous settings stay in force."
      - eval_time: 12m
        alertname: VpcCniConfigReloadRejected
        exp_alerts: []
  # A blocked pool below its target alerts; one at its target does not.
  - interval: 1m
    input_series:
      - series: 'vpc_cni_pool_blocked{instance="n1"}'
        values: '1x20'
      - series: 'vpc_cni_ip_addresses{instance="n1"}'
        values: '9x20'
      - series: 'vpc_cni_ip_addresses_target{instance="n1"}'
        values: '12x20'
      - series: 'vpc_cni_pool_blocked{instance="n2"}'
        values: '1x20'
      - series: 'vpc_cni_ip_addresses{instance="n2"}'
        values: '12x20'
      - series: 'vpc_cni_ip_addresses_target{instance="n2"}'
        values: '12x20'
    alert_rule_test:
      - eval_time: 15m
        alertname: VpcCniPoolBlocked
        exp_alerts:
          - exp_labels:
              severity: warning
              instance: n1
            exp_annotations:
              summary: "Warm pool on n1 cannot grow"
              description: "`ipamd status` shows the reason and the last EC2 errors."
  # Throttling is not an "error" alert of its own.
  - interval: 1m
    input_series:
      - series: 'vpc_cni_ec2_errors_total{instance="n1",operation="assign_ips",error="RequestLimitExceeded"}'
        values: '0+2x20'
      - series: 'vpc_cni_ec2_errors_total{instance="n1",operation="attach_eni",error="SubnetFull"}'
        values: '0+1x20'
    alert_rule_test:
      - eval_time: 16m
        alertname: VpcCniEc2Errors
        exp_alerts:
          - exp_labels:
              severity: warning
              instance: n1
              operation: attach_eni
              error: SubnetFull
            exp_annotations:
              summary: "EC2 attach_eni fails with SubnetFull on n1"
"#;

#[test]
fn alerts_fire_when_they_should() {
    let dir = TempDir::new();
    rule_file(dir.path());
    std::fs::write(dir.path().join("tests.yaml"), UNIT_TESTS).expect("write tests");
    let out = promtool(&["test", "rules", "tests.yaml"], dir.path());
    assert!(out.contains("SUCCESS"), "{out}");
}
