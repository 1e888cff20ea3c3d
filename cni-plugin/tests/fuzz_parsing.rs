//! Property tests: whatever environment and stdin a runtime (or an
//! attacker) hands the plugin, [`run`] never panics and answers either
//! VERSION's result or the spec's error object with a documented code.
//!
//! CI runs a modest number of cases; `VPC_CNI_FUZZ_CASES=1000000` runs the
//! long mode (README, "Fuzzing").

use std::collections::BTreeMap;

use cni_plugin::env::parse_cni_args;
use cni_plugin::plugin::{run, EXIT_ERROR, EXIT_OK};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Value};

/// Every code the plugin may answer (README's table).
const CODES: &[u64] = &[
    1, 2, 3, 4, 5, 6, 7, 11, 50, 100, 101, 102, 103, 104, 105, 106,
];

/// A socket nobody listens on: a call that gets that far is code 11 (or 50
/// for STATUS), at once.
const NO_DAEMON: &str = "/nonexistent/vpc-cni-fuzz/ipamd.sock";

fn config() -> Config {
    let cases = std::env::var("VPC_CNI_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Strings a runtime might plausibly send, and some it should not.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("eth0".to_string()),
        Just("/var/run/netns/cni-1".to_string()),
        Just("/proc/1/ns/net".to_string()),
        Just("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0".to_string()),
        "[a-zA-Z0-9_.\\-]{0,80}",
        "[ -~]{0,64}",
        any::<String>(),
        proptest::collection::vec(any::<char>(), 0..300).prop_map(|c| c.into_iter().collect()),
    ]
}

fn command() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("ADD".to_string()),
        Just("DEL".to_string()),
        Just("CHECK".to_string()),
        Just("VERSION".to_string()),
        Just("STATUS".to_string()),
        Just("GC".to_string()),
        text(),
    ]
}

/// Mostly what a runtime sends (so cases get past the environment checks
/// to stdin and the daemon), with one variable dropped or replaced at times;
/// sometimes anything at all.
fn env() -> impl Strategy<Value = Vec<(String, String)>> {
    prop_oneof![3 => runtime_env(), 1 => random_env()]
}

fn runtime_env() -> impl Strategy<Value = Vec<(String, String)>> {
    let cmd = prop_oneof![
        Just("ADD"),
        Just("DEL"),
        Just("CHECK"),
        Just("VERSION"),
        Just("STATUS"),
        Just("GC")
    ];
    let var = prop_oneof![
        Just("CNI_CONTAINERID"),
        Just("CNI_NETNS"),
        Just("CNI_IFNAME"),
        Just("CNI_ARGS"),
    ];
    (
        cmd,
        "[a-f0-9]{1,64}",
        proptest::option::of((var, proptest::option::of(text()))),
    )
        .prop_map(|(cmd, id, change)| {
            let mut env: BTreeMap<String, String> = [
                ("CNI_COMMAND", cmd.to_string()),
                ("CNI_CONTAINERID", id),
                // Exists, so the netns check passes.
                ("CNI_NETNS", "/proc/self/ns/net".to_string()),
                ("CNI_IFNAME", "eth0".to_string()),
                (
                    "CNI_ARGS",
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0".to_string(),
                ),
                ("CNI_PATH", "/opt/cni/bin".to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            match change {
                Some((k, None)) => {
                    env.remove(k);
                }
                Some((k, Some(v))) => {
                    env.insert(k.to_string(), v);
                }
                None => {}
            }
            env.into_iter().collect()
        })
}

fn random_env() -> impl Strategy<Value = Vec<(String, String)>> {
    let key = prop_oneof![
        Just("CNI_CONTAINERID"),
        Just("CNI_NETNS"),
        Just("CNI_IFNAME"),
        Just("CNI_ARGS"),
        Just("CNI_PATH"),
        Just("CNI_COMMAND"),
        Just("PATH"),
    ];
    (
        command(),
        proptest::collection::vec((key, text()), 0..8),
        proptest::collection::vec(("[A-Z_]{1,12}", text()), 0..3),
    )
        .prop_map(|(cmd, known, other)| {
            let mut v = vec![("CNI_COMMAND".to_string(), cmd)];
            v.extend(known.into_iter().map(|(k, val)| (k.to_string(), val)));
            v.extend(other);
            v
        })
}

/// JSON values of any shape, small.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z]{0,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Network configurations: mostly valid-looking ones with some keys of the
/// wrong type or value, never writing a log file.
fn netconf() -> impl Strategy<Value = Vec<u8>> {
    let version = prop_oneof![
        Just(json!("1.1.0")),
        Just(json!("1.0.0")),
        Just(json!("0.4.0")),
        Just(json!("0.3.1")),
        Just(json!("0.2.0")),
        Just(json!("9.9.9")),
        json_value(),
    ];
    let key = prop_oneof![
        Just("name"),
        Just("type"),
        Just("mtu"),
        Just("timeoutMs"),
        Just("prevResult"),
        Just("runtimeConfig"),
        Just("cni.dev/valid-attachments"),
        Just("plugins"),
    ];
    (
        version,
        proptest::collection::btree_map(key, json_value(), 0..6),
        any::<bool>(),
    )
        .prop_map(|(v, extra, drop_name)| {
            let mut m: BTreeMap<String, Value> = BTreeMap::new();
            m.insert("cniVersion".into(), v);
            if !drop_name {
                m.insert("name".into(), json!("vpc"));
                m.insert("type".into(), json!("vpc-cni"));
            }
            for (k, val) in extra {
                m.insert(k.to_string(), val);
            }
            m.insert("ipamdSocket".into(), json!(NO_DAEMON));
            serde_json::to_vec(&m).expect("a map serialises")
        })
}

fn stdin() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => netconf(),
        1 => proptest::collection::vec(any::<u8>(), 0..512),
        1 => json_value().prop_map(|v| serde_json::to_vec(&v).expect("serialises")),
    ]
}

/// What every answer must look like.
fn check_answer(
    env: &[(String, String)],
    out: &cni_plugin::plugin::Outcome,
) -> Result<(), TestCaseError> {
    let command = env
        .iter()
        .rev()
        .find(|(k, _)| k == "CNI_COMMAND")
        .map(|(_, v)| v.as_str());
    if out.exit_code == EXIT_OK {
        // Only VERSION can succeed: every other command needs the daemon.
        prop_assert_eq!(command, Some("VERSION"));
        let v: Value = serde_json::from_str(out.stdout.as_deref().unwrap_or(""))
            .map_err(|e| TestCaseError::fail(format!("VERSION answer not JSON: {e}")))?;
        prop_assert!(v["supportedVersions"].is_array());
        return Ok(());
    }
    prop_assert_eq!(out.exit_code, EXIT_ERROR);
    let text = out.stdout.as_deref().unwrap_or("");
    let v: Value = serde_json::from_str(text)
        .map_err(|e| TestCaseError::fail(format!("error answer not JSON ({e}): {text:?}")))?;
    prop_assert!(v["cniVersion"].is_string(), "{}", text);
    prop_assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{}", text);
    let code = v["code"].as_u64();
    prop_assert!(
        code.is_some_and(|c| CODES.contains(&c)),
        "undocumented code: {}",
        text
    );
    Ok(())
}

/// Any environment and stdin: an answer, never a panic. Prints how the
/// cases were answered, and requires that some got past every check to the
/// (absent) daemon, so the generators reach the whole parsing path.
#[test]
fn any_env_and_stdin_get_a_spec_answer() {
    use std::sync::Mutex;
    let codes: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
    let mut runner = proptest::test_runner::TestRunner::new(config());
    let cases = runner.config().cases;
    runner
        .run(&(env(), stdin()), |(env, stdin)| {
            let out = run(env.clone(), &stdin);
            check_answer(&env, &out)?;
            let code = out
                .stdout
                .as_deref()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
                .and_then(|v| v["code"].as_u64())
                .map_or("ok".to_string(), |c| c.to_string());
            *codes.lock().unwrap().entry(code).or_default() += 1;
            Ok(())
        })
        .unwrap();
    let codes = codes.into_inner().unwrap();
    eprintln!("fuzz: {cases} cases of env+stdin, answers by code: {codes:?}");
    let reached_daemon =
        codes.get("11").copied().unwrap_or(0) + codes.get("50").copied().unwrap_or(0);
    assert!(reached_daemon > 0, "no case got past parsing: {codes:?}");
}

proptest! {
    #![proptest_config(config())]

    /// CNI_ARGS of any shape parses or is refused with code 4.
    #[test]
    fn any_cni_args_parse_or_are_code_4(args in text()) {
        if let Err(e) = parse_cni_args(&args) {
            prop_assert_eq!(e.code, 4);
        }
    }
}
