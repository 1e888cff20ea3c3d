//! Runs the real `vpc-cni` binary the way a runtime does: a clean
//! environment, the config on stdin, the answer on stdout.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn exec(env: &[(&str, &std::ffi::OsStr)], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vpc-cni"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the plugin binary starts");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

fn stdout_json(out: &Output) -> Value {
    let text = std::str::from_utf8(&out.stdout).expect("stdout is UTF-8");
    assert_eq!(text.lines().count(), 1, "one JSON document: {text:?}");
    serde_json::from_str(text).expect("stdout is JSON")
}

#[test]
fn error_output_is_the_spec_error_object() {
    let out = exec(
        &[("CNI_CONTAINERID", os("abc"))],
        br#"{"cniVersion":"0.4.0","name":"vpc"}"#,
    );
    assert_eq!(out.status.code(), Some(1));
    let v = stdout_json(&out);
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(v["code"], 4);
    assert_eq!(
        v["msg"],
        "missing required environment variable CNI_COMMAND"
    );
    assert_eq!(v["details"], "");
}

#[test]
fn daemon_down_error_from_the_binary() {
    let dir = std::env::temp_dir().join(format!("vpccni-bin-{}", std::process::id()));
    let socket = dir.join("ipamd.sock");
    let conf = serde_json::json!({"cniVersion": "1.1.0", "name": "vpc", "ipamdSocket": socket});
    let out = exec(
        &[
            ("CNI_COMMAND", os("ADD")),
            ("CNI_CONTAINERID", os("abc")),
            ("CNI_NETNS", os("/proc/1/ns/net")),
            ("CNI_IFNAME", os("eth0")),
        ],
        conf.to_string().as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1));
    let v = stdout_json(&out);
    assert_eq!(v["code"], 11);
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .contains(&socket.display().to_string()),
        "{v}"
    );
}

#[test]
fn version_with_empty_stdin() {
    let out = exec(&[("CNI_COMMAND", os("VERSION"))], b"");
    assert_eq!(out.status.code(), Some(0));
    let v = stdout_json(&out);
    assert_eq!(v["cniVersion"], "1.1.0");
    assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 5);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn non_utf8_environment_does_not_panic() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"\xff\xfe");
    let out = exec(
        &[
            ("CNI_COMMAND", os("VERSION")),
            ("SOME_VAR", bad),
            ("CNI_PATH", bad),
        ],
        br#"{"cniVersion":"0.3.1"}"#,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_json(&out)["cniVersion"], "0.3.1");

    // A non-UTF-8 command is just an unknown command.
    let out = exec(&[("CNI_COMMAND", bad)], b"{}");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout_json(&out)["code"], 4);
}
