//! `ipamd`'s command line, exec'd as operators, manifests and scripts run it:
//! help and version exit 0 without doing anything, mistakes exit 2 with a
//! usage message, and both `--flag value` and `--flag=value` work.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// `ipamd ARGS` with only the environment given (no `VPC_CNI_CLOUD=ec2` from
/// the caller's shell, so `max-pods` answers from the embedded table).
fn ipamd(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ipamd"))
        .args(args)
        .env_clear()
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("ipamd runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A directory of this test's own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("ipamd-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn entries(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn version_prints_the_crate_version() {
    let out = ipamd(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("ipamd {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn serve_help_prints_help_and_starts_nothing() {
    let scratch = Scratch::new("serve-help");
    let socket = scratch.0.join("ipamd.sock");
    let state = scratch.0.join("state");
    // The MTU is invalid, so a `serve` that ignored `--help` would stop at
    // once with exit code 2 instead of running; the socket and state
    // directory point into the scratch directory, which must stay empty.
    let out = ipamd(
        &["serve", "--help"],
        &[
            ("VPC_CNI_CLOUD", "sim"),
            ("VPC_CNI_SOCKET", socket.to_str().unwrap()),
            ("VPC_CNI_STATE_DIR", state.to_str().unwrap()),
            ("VPC_CNI_METRICS_ADDR", "off"),
            ("AWS_VPC_ENI_MTU", "nine thousand"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let help = stdout(&out);
    assert!(help.contains("Usage: ipamd serve"), "{help}");
    assert!(stderr(&out).is_empty(), "nothing logged: {}", stderr(&out));
    assert_eq!(scratch.entries(), Vec::<PathBuf>::new(), "nothing created");
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["serve", "status", "max-pods", "demo", "install-cni"] {
        let out = ipamd(&[sub, "--help"], &[]);
        assert_eq!(out.status.code(), Some(0), "{sub}: {}", stderr(&out));
        let help = stdout(&out);
        assert!(
            help.contains(&format!("Usage: ipamd {sub}")),
            "{sub}: {help}"
        );
    }
    let help = stdout(&ipamd(&["install-cni", "--help"], &[]));
    for flag in ["--bin-dir", "--conf-dir", "--plugin", "--proc-sys"] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
    let help = stdout(&ipamd(&["max-pods", "--help"], &[]));
    assert!(help.contains("--prefix-delegation"), "{help}");
}

#[test]
fn install_cni_help_installs_nothing() {
    let scratch = Scratch::new("install-help");
    let dir = scratch.0.to_str().unwrap();
    let out = ipamd(
        &[
            "install-cni",
            "--bin-dir",
            dir,
            "--conf-dir",
            dir,
            "--proc-sys",
            dir,
            "--help",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("Usage: ipamd install-cni"));
    assert_eq!(
        scratch.entries(),
        Vec::<PathBuf>::new(),
        "nothing installed"
    );
}

#[test]
fn unknown_arguments_exit_2_with_usage() {
    for args in [
        &["status", "--bogus"][..],
        &["serve", "--bogus"],
        &["demo", "extra"],
        &["install-cni", "--frobnicate"],
        &["max-pods", "--instance-type", "m5.large", "--bogus"],
        &["frobnicate"],
    ] {
        let out = ipamd(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
        let msg = stderr(&out);
        assert!(msg.contains("Usage: ipamd"), "{args:?}: {msg}");
    }
}

#[test]
fn no_command_prints_usage_and_exits_2() {
    let out = ipamd(&[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("Usage: ipamd <COMMAND>"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn max_pods_takes_the_flag_either_way() {
    let spaced = ipamd(&["max-pods", "--instance-type", "m5.large"], &[]);
    let joined = ipamd(&["max-pods", "--instance-type=m5.large"], &[]);
    for out in [&spaced, &joined] {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    }
    assert_eq!(stdout(&spaced), stdout(&joined));
    assert_eq!(stdout(&spaced), "29\n", "3 ENIs x (10 - 1) + 2");

    let pd = ipamd(
        &[
            "max-pods",
            "--prefix-delegation",
            "--instance-type=m5.large",
        ],
        &[],
    );
    assert_eq!(pd.status.code(), Some(0), "{}", stderr(&pd));
    assert_eq!(stdout(&pd), "110\n");
}

#[test]
fn max_pods_mistakes_exit_2() {
    for args in [
        &["max-pods"][..],
        &["max-pods", "--instance-type"],
        &["max-pods", "--instance-type="],
        &["max-pods", "--instance-type", "m9.nonesuch"],
    ] {
        let out = ipamd(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
}

#[test]
fn install_cni_reads_its_flags_either_way_and_the_last_wins() {
    let scratch = Scratch::new("install");
    let (bin, net, sys, src) = (
        scratch.0.join("bin"),
        scratch.0.join("net.d"),
        scratch.0.join("sys"),
        scratch.0.join("vpc-cni.new"),
    );
    for d in [&bin, &net, &sys.join("net/ipv4")] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(sys.join("net/ipv4/ip_forward"), "0\n").unwrap();
    std::fs::write(&src, "#!/bin/sh\n").unwrap();
    let socket = scratch.0.join("ipamd.sock");
    let out = ipamd(
        &[
            "install-cni",
            "--bin-dir=/nonexistent",
            "--bin-dir",
            bin.to_str().unwrap(),
            &format!("--conf-dir={}", net.display()),
            "--plugin",
            src.to_str().unwrap(),
            &format!("--proc-sys={}", sys.display()),
        ],
        &[("VPC_CNI_SOCKET", socket.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(bin.join("vpc-cni")).unwrap(),
        "#!/bin/sh\n"
    );
    let conflist = std::fs::read_to_string(net.join("10-vpc-cni.conflist")).unwrap();
    assert!(conflist.contains(socket.to_str().unwrap()), "{conflist}");
    assert_eq!(
        std::fs::read_to_string(sys.join("net/ipv4/ip_forward"))
            .unwrap()
            .trim(),
        "1"
    );
}
