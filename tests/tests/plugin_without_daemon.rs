//! The plugin binary on its own, as a runtime execs it, with no daemon and
//! no root: VERSION is answered locally, everything else says "try again
//! later" (11) and names the socket it could not reach.

use serde_json::json;
use vpc_cni_e2e::{Plugin, TempDir};

const ALL_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

fn conf(version: &str, socket: &std::path::Path) -> serde_json::Value {
    json!({"cniVersion": version, "name": "vpc", "type": "vpc-cni", "ipamdSocket": socket})
}

#[test]
fn version_answers_supported_versions_without_a_daemon() {
    let dir = TempDir::new();
    let socket = dir.path().join("nobody-listens.sock");
    for asked in ALL_VERSIONS {
        let out = Plugin::new("VERSION").config(&conf(asked, &socket)).run();
        let v = out.ok();
        assert_eq!(v["cniVersion"], asked, "{out}");
        assert_eq!(v["supportedVersions"], json!(ALL_VERSIONS), "{out}");
    }
    // podman probes with whatever it has; an empty stdin still gets an answer.
    let out = Plugin::new("VERSION").run();
    assert_eq!(out.ok()["supportedVersions"], json!(ALL_VERSIONS), "{out}");
    assert!(
        !socket.exists(),
        "VERSION must not create or touch the socket"
    );
}

#[test]
fn daemon_down_is_code_11_or_50_for_status_naming_the_socket() {
    let dir = TempDir::new();
    let socket = dir.path().join("ipamd.sock");
    let shown = socket.display().to_string();
    let netns = "/run/netns/vpccni-e2e-no-daemon";
    // STATUS has its own spec code for "cannot serve ADD now" (50); every
    // other command says "try again later" (11). All name the socket.
    let calls = [
        (
            Plugin::new("ADD")
                .container_id("c1")
                .netns(netns)
                .ifname("eth0"),
            11,
        ),
        (
            Plugin::new("DEL")
                .container_id("c1")
                .netns(netns)
                .ifname("eth0"),
            11,
        ),
        (
            Plugin::new("CHECK")
                .container_id("c1")
                .netns(netns)
                .ifname("eth0"),
            11,
        ),
        (Plugin::new("STATUS"), 50),
        (Plugin::new("GC"), 11),
    ];
    for (call, code) in calls {
        let out = call.config(&conf("1.1.0", &socket)).run();
        let e = out.err_code(code);
        assert_eq!(e["cniVersion"], "1.1.0", "{out}");
        assert!(
            out.msg().contains(&shown),
            "the message names {shown}: {out}"
        );
    }
    // A socket file with nothing listening behind it (a daemon that died).
    let stale = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    drop(stale);
    let out = Plugin::new("ADD")
        .container_id("c1")
        .netns(netns)
        .ifname("eth0")
        .config(&conf("0.4.0", &socket))
        .run();
    out.err_code(11);
    assert!(out.msg().contains(&shown), "{out}");
    assert_eq!(out.json["cniVersion"], "0.4.0", "{out}");
}

#[test]
fn bad_input_is_refused_before_any_daemon_is_asked() {
    let dir = TempDir::new();
    let socket = dir.path().join("ipamd.sock");
    let add = || {
        Plugin::new("ADD")
            .container_id("c1")
            .netns("/run/netns/x")
            .ifname("eth0")
    };
    add().stdin(b"garbage".to_vec()).run().err_code(6);
    add()
        .unset("CNI_CONTAINERID")
        .config(&conf("1.1.0", &socket))
        .run()
        .err_code(4);
    add().config(&conf("0.2.0", &socket)).run().err_code(1);
    let mut bad = conf("1.1.0", &socket);
    bad["mtu"] = json!("big");
    add().config(&bad).run().err_code(7);
    // Nothing on stdout but the error object, nothing that looks like a panic.
    let out = add().stdin(b"\xff".to_vec()).run();
    out.err_code(6);
    assert!(!out.stderr.contains("panicked"), "{out}");
}
