//! One plugin call from start to answer: [`run`] takes the environment and
//! stdin and returns what to print and the exit code, so the binary is a
//! thin shell and every path is tested in-process.
//!
//! VERSION is answered here; ADD, DEL, CHECK, STATUS and GC are forwarded to
//! ipamd as one [`Request`]. Validation runs in the order a runtime author
//! expects: the environment (code 4), then stdin (6, then 1, then 7).

use std::time::Instant;

use serde_json::{json, Value};

use crate::client;
use crate::config::{self, NetConf, FALLBACK_VERSION};
use crate::env::{parse_env, CniCommand, Invocation};
use crate::error::{
    CniError, BAD_DAEMON_ANSWER, INCOMPATIBLE_VERSION, PLUGIN_NOT_AVAILABLE, TRY_AGAIN_LATER,
};
use crate::log::{CallRecord, Logger};
use crate::result::{convert_result, SUPPORTED_VERSIONS};
use crate::wire::{PodArgs, Request, PROTOCOL_VERSION};

/// Exit code of a successful call.
pub const EXIT_OK: i32 = 0;
/// Exit code of a failed call; the spec asks for any non-zero code, with
/// the details in the error object on stdout.
pub const EXIT_ERROR: i32 = 1;

/// What the binary prints on stdout and the code it exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The result or error JSON; `None` when the command prints nothing
    /// (DEL, CHECK, STATUS and GC on success).
    pub stdout: Option<String>,
    /// [`EXIT_OK`] or [`EXIT_ERROR`].
    pub exit_code: i32,
}

impl Outcome {
    /// A success printing `stdout`, if any.
    pub fn success(stdout: Option<String>) -> Self {
        Outcome {
            stdout,
            exit_code: EXIT_OK,
        }
    }

    /// A failure printing the spec's error object in `cni_version`.
    pub fn failure(cni_version: &str, err: &CniError) -> Self {
        Outcome {
            stdout: Some(to_json(&error_json(cni_version, err))),
            exit_code: EXIT_ERROR,
        }
    }
}

/// Runs one call. `env` is the process environment (only `CNI_*` is read);
/// `stdin` is everything read from stdin. Never panics on any input.
///
/// ```
/// use cni_plugin::plugin::run;
///
/// let env = [("CNI_COMMAND".to_string(), "VERSION".to_string())];
/// let out = run(env, br#"{"cniVersion":"1.0.0"}"#);
/// assert_eq!(out.exit_code, 0);
/// assert!(out.stdout.unwrap().contains("supportedVersions"));
/// ```
pub fn run(env: impl IntoIterator<Item = (String, String)>, stdin: &[u8]) -> Outcome {
    let started = Instant::now();
    let env: Vec<(String, String)> = env.into_iter().collect();
    let lookup = |key: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    };

    // Decoded up front, but its error is reported only after the
    // environment's: the log settings and the version of an error object
    // are wanted even when the environment is wrong.
    let doc = config::decode(stdin);
    let (level, file) = config::sniff_log_settings(doc.as_ref().ok());
    let logger = Logger { level, file };
    let error_version = doc
        .as_ref()
        .ok()
        .and_then(config::sniff_version)
        .filter(|v| config::is_supported(v))
        .unwrap_or(FALLBACK_VERSION)
        .to_string();

    let invocation = parse_env(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let answer = match &invocation {
        Ok(inv) => dispatch(inv, doc),
        Err(e) => Err(e.clone()),
    };

    let no_pod = PodArgs::default();
    logger.record(&CallRecord {
        command: lookup("CNI_COMMAND"),
        container_id: lookup("CNI_CONTAINERID"),
        netns: lookup("CNI_NETNS"),
        ifname: lookup("CNI_IFNAME"),
        pod: invocation.as_ref().map_or(&no_pod, |inv| &inv.args),
        duration: started.elapsed(),
        outcome: answer.as_ref().map(|_| ()),
    });

    match answer {
        Ok(stdout) => Outcome::success(stdout),
        Err(e) => Outcome::failure(&error_version, &e),
    }
}

fn dispatch(inv: &Invocation, doc: Result<Value, CniError>) -> Result<Option<String>, CniError> {
    let Some(command) = inv.command.to_wire() else {
        // VERSION must answer whatever stdin holds (podman probes with it
        // before every ADD and DEL), so a missing or unreadable cniVersion
        // falls back to the current version instead of failing.
        let asked = doc
            .as_ref()
            .ok()
            .and_then(config::sniff_version)
            .unwrap_or(FALLBACK_VERSION);
        return Ok(Some(to_json(&version_answer(asked))));
    };

    let mut conf = NetConf::from_value(doc?)?;
    check_command_allowed(inv.command, &conf.cni_version)?;
    let request = Request {
        v: PROTOCOL_VERSION,
        command,
        container_id: inv.container_id.clone(),
        netns: inv.netns.clone(),
        ifname: inv.ifname.clone(),
        args: inv.args.clone(),
        config: std::mem::take(&mut conf.raw),
    };
    let result = client::call(&conf.ipamd_socket, &request, conf.timeout()).map_err(|mut e| {
        // STATUS has its own code for "cannot serve ADD now" (spec: 50);
        // an unreachable or silent ipamd is exactly that.
        if inv.command == CniCommand::Status && e.code == TRY_AGAIN_LATER {
            e.code = PLUGIN_NOT_AVAILABLE;
        }
        e
    })?;
    if inv.command != CniCommand::Add {
        return Ok(None);
    }
    if !result.is_object() {
        return Err(CniError::new(
            BAD_DAEMON_ANSWER,
            "ipamd answered ADD without a result object",
        )
        .with_details(format!("got {}", truncate(&result.to_string(), 200))));
    }
    Ok(Some(to_json(&convert_result(result, &conf.cni_version))))
}

/// CHECK arrived in CNI 0.4.0, STATUS and GC in 1.1.0; a configuration
/// written for an older version must not use them (the reference `skel`
/// refuses them the same way, with code 1).
fn check_command_allowed(command: CniCommand, version: &str) -> Result<(), CniError> {
    let min = match command {
        CniCommand::Check => "0.4.0",
        CniCommand::Status | CniCommand::Gc => "1.1.0",
        CniCommand::Add | CniCommand::Del | CniCommand::Version => return Ok(()),
    };
    if config::version_at_least(version, min) {
        Ok(())
    } else {
        Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!("cniVersion {version} does not allow {command}; it needs {min} or later"),
        ))
    }
}

/// The VERSION answer: the version the caller asked in and every version
/// this plugin speaks.
pub fn version_answer(cni_version: &str) -> Value {
    json!({
        "cniVersion": cni_version,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

/// The spec's error object. `details` is always present, possibly empty,
/// so callers can read all four keys without checking.
pub fn error_json(cni_version: &str, err: &CniError) -> Value {
    json!({
        "cniVersion": cni_version,
        "code": err.code,
        "msg": err.msg,
        "details": err.details,
    })
}

fn to_json(value: &Value) -> String {
    // Serialising a `Value` cannot fail: its keys are strings already.
    serde_json::to_string(value).unwrap_or_else(|_| String::from("{}"))
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{DECODE_FAILURE, INVALID_ENV, INVALID_NETWORK_CONFIG, TRY_AGAIN_LATER};
    use crate::testutil::{reply, FakeDaemon, TempDir};
    use crate::wire::{Command, Response};
    use serde_json::json;
    use std::path::Path;

    const CID: &str = "9b1c0f7e2a";
    const NETNS: &str = "/var/run/netns/cni-5a6b7c8d-0000-4000-8000-123456789abc";

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn add_env() -> Vec<(String, String)> {
        cmd_env("ADD")
    }

    fn cmd_env(cmd: &str) -> Vec<(String, String)> {
        env(&[
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", CID),
            ("CNI_NETNS", NETNS),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
            (
                "CNI_ARGS",
                "K8S_POD_UID=uid-1;K8S_POD_NAME=web-0;IgnoreUnknown=1;K8S_POD_INFRA_CONTAINER_ID=9b1c0f7e2a;K8S_POD_NAMESPACE=shop",
            ),
        ])
    }

    fn set(mut env: Vec<(String, String)>, key: &str, value: &str) -> Vec<(String, String)> {
        env.retain(|(k, _)| k != key);
        env.push((key.into(), value.into()));
        env
    }

    fn unset(mut env: Vec<(String, String)>, key: &str) -> Vec<(String, String)> {
        env.retain(|(k, _)| k != key);
        env
    }

    fn conf(version: &str, socket: &Path) -> Value {
        json!({
            "cniVersion": version,
            "name": "vpc",
            "type": "vpc-cni",
            "ipamdSocket": socket,
            "timeoutMs": 5000,
        })
    }

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    /// Parses a failure's stdout, checks the error object's shape and
    /// returns it.
    fn failed(out: &Outcome) -> Value {
        assert_eq!(out.exit_code, EXIT_ERROR, "{out:?}");
        let text = out.stdout.as_deref().expect("an error prints JSON");
        let v: Value = serde_json::from_str(text).expect("the error is valid JSON");
        assert!(v["cniVersion"].is_string(), "{v}");
        assert!(v["code"].is_u64(), "{v}");
        assert!(v["msg"].is_string(), "{v}");
        assert!(v["details"].is_string(), "{v}");
        assert_eq!(v.as_object().unwrap().len(), 4, "{v}");
        v
    }

    fn code(out: &Outcome) -> u64 {
        failed(out)["code"].as_u64().unwrap()
    }

    /// A socket path where nothing listens; calls reaching it fail with 11.
    fn nowhere() -> (TempDir, std::path::PathBuf) {
        let dir = TempDir::new();
        let socket = dir.socket();
        (dir, socket)
    }

    fn sample_result() -> Value {
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "eni0a1b2c3d4e5", "mac": "0a:58:0a:00:00:01", "mtu": 9001},
                {"name": "eth0", "mac": "0a:58:0a:00:00:02", "mtu": 9001, "sandbox": NETNS}
            ],
            "ips": [{"address": "10.0.3.17/32", "gateway": "169.254.1.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
            "dns": {}
        })
    }

    // ---- environment errors (code 4) ----

    #[test]
    fn missing_command_is_code_4() {
        let (_d, s) = nowhere();
        let out = run(unset(add_env(), "CNI_COMMAND"), &bytes(&conf("1.1.0", &s)));
        let v = failed(&out);
        assert_eq!(v["code"], INVALID_ENV);
        assert_eq!(
            v["msg"],
            "missing required environment variable CNI_COMMAND"
        );
        // The conf's version is known, so the error speaks it.
        assert_eq!(v["cniVersion"], "1.1.0");
    }

    #[test]
    fn missing_containerid_and_netns_are_code_4() {
        let (_d, s) = nowhere();
        let stdin = bytes(&conf("0.4.0", &s));
        for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            let v = failed(&run(unset(add_env(), var), &stdin));
            assert_eq!(v["code"], INVALID_ENV, "{var}");
            assert_eq!(
                v["msg"],
                format!("missing required environment variable {var}")
            );
            assert_eq!(v["cniVersion"], "0.4.0");
        }
    }

    #[test]
    fn unknown_command_is_code_4() {
        let (_d, s) = nowhere();
        let v = failed(&run(
            set(add_env(), "CNI_COMMAND", "UPGRADE"),
            &bytes(&conf("1.1.0", &s)),
        ));
        assert_eq!(v["code"], INVALID_ENV);
        assert!(v["msg"].as_str().unwrap().contains("UPGRADE"));
    }

    #[test]
    fn env_is_checked_before_stdin() {
        let out = run(unset(add_env(), "CNI_NETNS"), b"this is not json");
        let v = failed(&out);
        assert_eq!(v["code"], INVALID_ENV);
        assert_eq!(v["cniVersion"], FALLBACK_VERSION);
    }

    #[test]
    fn malformed_cni_args_is_code_4() {
        let (_d, s) = nowhere();
        let out = run(
            set(add_env(), "CNI_ARGS", "K8S_POD_NAME"),
            &bytes(&conf("1.1.0", &s)),
        );
        assert_eq!(code(&out), u64::from(INVALID_ENV));
    }

    // ---- stdin errors (6, 1, 7) ----

    #[test]
    fn garbage_stdin_is_code_6() {
        for stdin in [&b""[..], b"garbage", b"[]", b"{\"cniVersion\":", b"\xff"] {
            let v = failed(&run(add_env(), stdin));
            assert_eq!(v["code"], DECODE_FAILURE, "{stdin:?}");
            assert_eq!(v["cniVersion"], FALLBACK_VERSION);
        }
    }

    #[test]
    fn unsupported_versions_are_code_1() {
        let (_d, s) = nowhere();
        for version in ["0.2.0", "9.9.9"] {
            let v = failed(&run(add_env(), &bytes(&conf(version, &s))));
            assert_eq!(v["code"], INCOMPATIBLE_VERSION, "{version}");
            let msg = v["msg"].as_str().unwrap();
            assert!(msg.contains(version) && msg.contains("1.1.0"), "{msg}");
            // An error object in a version we do not speak would help nobody.
            assert_eq!(v["cniVersion"], FALLBACK_VERSION);
        }
    }

    #[test]
    fn invalid_config_is_code_7() {
        let (_d, s) = nowhere();
        let base = conf("1.0.0", &s);
        let cases = [
            ("name", Value::Null, "name"),
            ("mtu", json!("abc"), "mtu"),
            ("mtu", json!(100), "mtu"),
            ("ipamdSocket", json!("run/ipamd.sock"), "ipamdSocket"),
            ("timeoutMs", json!(0), "timeoutMs"),
            ("logLevel", json!("chatty"), "logLevel"),
        ];
        for (key, value, named) in cases {
            let mut c = base.clone();
            if value.is_null() {
                c.as_object_mut().unwrap().remove(key);
            } else {
                c[key] = value;
            }
            let v = failed(&run(add_env(), &bytes(&c)));
            assert_eq!(v["code"], INVALID_NETWORK_CONFIG, "{key}");
            assert!(v["msg"].as_str().unwrap().contains(named), "{v}");
            assert_eq!(v["cniVersion"], "1.0.0");
        }
    }

    #[test]
    fn commands_newer_than_the_config_version_are_code_1() {
        let (_d, s) = nowhere();
        let v = failed(&run(cmd_env("CHECK"), &bytes(&conf("0.3.1", &s))));
        assert_eq!(v["code"], INCOMPATIBLE_VERSION);
        assert!(v["msg"].as_str().unwrap().contains("CHECK"));
        for cmd in ["STATUS", "GC"] {
            let v = failed(&run(
                env(&[("CNI_COMMAND", cmd)]),
                &bytes(&conf("1.0.0", &s)),
            ));
            assert_eq!(v["code"], INCOMPATIBLE_VERSION, "{cmd}");
        }
    }

    // ---- daemon unreachable (11) ----

    #[test]
    fn daemon_down_is_code_11_naming_the_socket() {
        let (_d, s) = nowhere();
        for cmd in ["ADD", "DEL", "CHECK"] {
            let v = failed(&run(cmd_env(cmd), &bytes(&conf("1.1.0", &s))));
            assert_eq!(v["code"], TRY_AGAIN_LATER, "{cmd}");
            let msg = v["msg"].as_str().unwrap();
            assert!(msg.contains(&s.display().to_string()), "{msg}");
        }
        // STATUS says "not available" (spec code 50), still naming the socket.
        let v = failed(&run(
            env(&[("CNI_COMMAND", "STATUS")]),
            &bytes(&conf("1.1.0", &s)),
        ));
        assert_eq!(v["code"], PLUGIN_NOT_AVAILABLE);
        assert!(v["msg"]
            .as_str()
            .unwrap()
            .contains(&s.display().to_string()));
    }

    #[test]
    fn del_with_empty_netns_is_forwarded() {
        let daemon = FakeDaemon::answering(Response::Ok { result: json!({}) }, |req| {
            assert_eq!(req.command, Command::Del);
            assert_eq!(req.netns, "");
            assert_eq!(req.container_id, CID);
        });
        let out = run(
            set(cmd_env("DEL"), "CNI_NETNS", ""),
            &bytes(&conf("1.1.0", &daemon.socket)),
        );
        assert_eq!(out, Outcome::success(None));
        daemon.join().unwrap();
    }

    #[test]
    fn del_without_netns_variable_is_forwarded() {
        let daemon = FakeDaemon::answering(Response::Ok { result: json!({}) }, |req| {
            assert_eq!(req.netns, "");
        });
        let out = run(
            unset(cmd_env("DEL"), "CNI_NETNS"),
            &bytes(&conf("0.3.0", &daemon.socket)),
        );
        assert_eq!(out, Outcome::success(None));
        daemon.join().unwrap();
    }

    // ---- VERSION ----

    #[test]
    fn version_with_empty_stdin_answers_current() {
        let out = run(env(&[("CNI_COMMAND", "VERSION")]), b"");
        assert_eq!(out.exit_code, EXIT_OK);
        let v: Value = serde_json::from_str(out.stdout.as_deref().unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
    }

    #[test]
    fn version_echoes_the_asked_version_even_if_old() {
        for asked in ["0.2.0", "0.3.1", "1.0.0"] {
            let out = run(
                env(&[("CNI_COMMAND", "VERSION")]),
                format!(r#"{{"cniVersion":"{asked}"}}"#).as_bytes(),
            );
            assert_eq!(out.exit_code, EXIT_OK);
            let v: Value = serde_json::from_str(out.stdout.as_deref().unwrap()).unwrap();
            assert_eq!(v["cniVersion"], asked);
            assert_eq!(
                v["supportedVersions"].as_array().unwrap().len(),
                SUPPORTED_VERSIONS.len()
            );
        }
    }

    #[test]
    fn version_never_touches_the_socket_and_tolerates_junk() {
        let (_d, s) = nowhere();
        // A full config with an unreachable socket: VERSION must not care.
        let out = run(
            env(&[("CNI_COMMAND", "VERSION")]),
            &bytes(&conf("1.0.0", &s)),
        );
        assert_eq!(out.exit_code, EXIT_OK);
        assert!(out.stdout.unwrap().contains("\"cniVersion\":\"1.0.0\""));
        for junk in [&b"not json"[..], b"{\"cniVersion\": 3}", b"[]"] {
            let out = run(env(&[("CNI_COMMAND", "VERSION")]), junk);
            assert_eq!(out.exit_code, EXIT_OK);
            assert!(out.stdout.unwrap().contains("\"cniVersion\":\"1.1.0\""));
        }
    }

    // ---- talking to a (fake) daemon ----

    fn add_via_fake_daemon(version: &str) -> Value {
        let daemon_seen_version = version.to_string();
        let daemon = FakeDaemon::serve_once(move |raw, stream| {
            let req: Request = serde_json::from_slice(raw).unwrap();
            let ok = req.v == PROTOCOL_VERSION
                && req.command == Command::Add
                && req.container_id == CID
                && req.netns == NETNS
                && req.ifname == "eth0"
                && req.args
                    == PodArgs {
                        namespace: Some("shop".into()),
                        name: Some("web-0".into()),
                        infra_container_id: Some(CID.into()),
                        uid: Some("uid-1".into()),
                    }
                && req.config["cniVersion"] == daemon_seen_version
                && req.config["runtimeConfig"]["portMappings"][0]["hostPort"] == 8080;
            let resp = if ok {
                Response::Ok {
                    result: sample_result(),
                }
            } else {
                Response::Error(CniError::new(100, format!("unexpected request {req:?}")))
            };
            reply(stream, &serde_json::to_vec(&resp).unwrap());
        });
        let mut c = conf(version, &daemon.socket);
        c["runtimeConfig"] =
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
        let out = run(add_env(), &bytes(&c));
        let raw = daemon.join().expect("the plugin connected");
        // The forwarded config is the stdin object, key for key.
        let sent: Request = serde_json::from_slice(&raw).unwrap();
        assert_eq!(sent.config, c);
        assert_eq!(out.exit_code, EXIT_OK, "{out:?}");
        serde_json::from_str(out.stdout.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn add_result_is_kept_for_1_1_0() {
        let v = add_via_fake_daemon("1.1.0");
        assert_eq!(v, sample_result());
    }

    #[test]
    fn add_result_is_converted_for_0_4_0() {
        let v = add_via_fake_daemon("0.4.0");
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][0]["address"], "10.0.3.17/32");
        assert!(v["interfaces"][0].get("mtu").is_none());
    }

    #[test]
    fn check_status_gc_print_nothing_on_success() {
        for (cmd, want) in [
            ("CHECK", Command::Check),
            ("STATUS", Command::Status),
            ("GC", Command::Gc),
        ] {
            let daemon = FakeDaemon::answering(Response::Ok { result: json!({}) }, move |req| {
                assert_eq!(req.command, want);
                if want != Command::Check {
                    assert_eq!(req.container_id, "");
                    assert_eq!(req.ifname, "");
                }
            });
            let mut c = conf("1.1.0", &daemon.socket);
            c["cni.dev/valid-attachments"] = json!([{"containerID": CID, "ifname": "eth0"}]);
            let out = run(cmd_env(cmd), &bytes(&c));
            assert_eq!(out, Outcome::success(None), "{cmd}");
            daemon.join().unwrap();
        }
    }

    #[test]
    fn daemon_error_is_printed_with_its_code() {
        let daemon = FakeDaemon::answering(
            Response::Error(
                CniError::new(TRY_AGAIN_LATER, "ipamd is starting")
                    .with_details("warming the pool"),
            ),
            |_| {},
        );
        let v = failed(&run(add_env(), &bytes(&conf("0.4.0", &daemon.socket))));
        assert_eq!(
            v,
            json!({"cniVersion": "0.4.0", "code": 11, "msg": "ipamd is starting", "details": "warming the pool"})
        );
        daemon.join().unwrap();
    }

    #[test]
    fn daemon_closing_without_answer_is_106() {
        let daemon = FakeDaemon::serve_once(|_, stream| drop(stream));
        let out = run(add_env(), &bytes(&conf("1.1.0", &daemon.socket)));
        assert_eq!(code(&out), u64::from(BAD_DAEMON_ANSWER));
        daemon.join().unwrap();
    }

    #[test]
    fn daemon_garbage_is_106() {
        let daemon = FakeDaemon::serve_once(|_, stream| reply(stream, b"\x00\x01garbage"));
        let out = run(add_env(), &bytes(&conf("1.1.0", &daemon.socket)));
        assert_eq!(code(&out), u64::from(BAD_DAEMON_ANSWER));
        daemon.join().unwrap();
    }

    #[test]
    fn add_answered_without_an_object_is_106() {
        let daemon = FakeDaemon::answering(
            Response::Ok {
                result: Value::Null,
            },
            |_| {},
        );
        let out = run(add_env(), &bytes(&conf("1.1.0", &daemon.socket)));
        assert_eq!(code(&out), u64::from(BAD_DAEMON_ANSWER));
        daemon.join().unwrap();
    }

    #[test]
    fn slow_daemon_is_11_within_timeout_ms() {
        let daemon = FakeDaemon::serve_once(|_, stream| {
            std::thread::sleep(std::time::Duration::from_millis(500));
            drop(stream);
        });
        let mut c = conf("1.1.0", &daemon.socket);
        c["timeoutMs"] = json!(100);
        let v = failed(&run(add_env(), &bytes(&c)));
        assert_eq!(v["code"], TRY_AGAIN_LATER);
        assert!(v["msg"].as_str().unwrap().contains("within 100 ms"), "{v}");
        daemon.join().unwrap();
    }

    #[test]
    fn podman_style_args_are_forwarded() {
        let daemon = FakeDaemon::answering(
            Response::Ok {
                result: sample_result(),
            },
            |req| {
                assert_eq!(
                    req.args,
                    PodArgs {
                        name: Some("happy_turing".into()),
                        ..PodArgs::default()
                    }
                );
                assert_eq!(req.netns, "/run/netns/netns-1f2e");
            },
        );
        let e = set(
            set(
                add_env(),
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAME=happy_turing",
            ),
            "CNI_NETNS",
            "/run/netns/netns-1f2e",
        );
        let out = run(e, &bytes(&conf("1.0.0", &daemon.socket)));
        assert_eq!(out.exit_code, EXIT_OK, "{out:?}");
        daemon.join().unwrap();
    }

    // ---- logging ----

    #[test]
    fn every_call_is_logged_to_the_log_file() {
        let dir = TempDir::new();
        let log = dir.path().join("vpc-cni.log");
        let mut c = conf("1.1.0", &dir.socket());
        c["logFile"] = json!(log);
        run(add_env(), &bytes(&c));
        // A config that fails validation still logs where it asked to.
        c["mtu"] = json!("abc");
        run(add_env(), &bytes(&c));
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains("cmd=\"ADD\"") && lines[0].contains("code=11"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("pod=\"shop/web-0\""), "{}", lines[0]);
        assert!(lines[1].contains("code=7"), "{}", lines[1]);
    }

    #[test]
    fn error_json_shape() {
        let v = error_json("0.3.1", &CniError::new(7, "bad"));
        assert_eq!(
            v,
            json!({"cniVersion": "0.3.1", "code": 7, "msg": "bad", "details": ""})
        );
        let out = Outcome::failure("1.1.0", &CniError::new(5, "io"));
        assert_eq!(out.exit_code, EXIT_ERROR);
        assert_eq!(failed(&out)["code"], 5);
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
