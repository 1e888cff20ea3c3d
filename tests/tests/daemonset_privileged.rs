//! The DaemonSet's security claims, run for real: ipamd serves pods with
//! exactly the capabilities `manifests/10-daemonset.yaml` grants it, after
//! `ipamd install-cni` has prepared the node, in an environment shaped like
//! its container's (a read-only `/proc/sys`, the node's network namespace).
//! And the capability the manifest justifies by `setns` is in fact needed.
//!
//! The "node" is a network namespace this test makes; ipamd runs in it under
//! `unshare --mount --propagation slave` (its own mount namespace, with the
//! root filesystem and `/proc/sys` read-only as in the container, which
//! still sees the pod namespaces mounted later, as the manifest's
//! `mountPropagation: HostToContainer` does) and `setpriv` (bounding set =
//! the manifest's capabilities). The plugin is exec'd as
//! kubelet would, with the conflist install-cni wrote.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use vpc_cni_e2e::{bin_path, result_ip, Netns, Plugin, PodSpec, TempDir};

/// Capability numbers (linux/capability.h) of the names a manifest may add.
const CAPS: &[(&str, u32)] = &[
    ("NET_ADMIN", 12),
    ("NET_RAW", 13),
    ("SYS_ADMIN", 21),
    ("SYS_PTRACE", 19),
];

/// The `add` capabilities of the ipamd container in manifests/10-daemonset.yaml
/// (read with the same tool as tests/manifests.rs, from the virtualenv
/// scripts/setup.sh makes).
fn manifest_capabilities() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let venv = std::env::var_os("VPC_CNI_TEST_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/opt/vpc-cni-test/venv".into());
    let out = Command::new(venv.join("bin/python"))
        .arg(root.join("tests/tools/k8s_check.py"))
        .arg("load")
        .arg(root.join("manifests/10-daemonset.yaml"))
        .output()
        .expect("the virtualenv of scripts/setup.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ipamd = docs[0]["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ipamd")
        .expect("the ipamd container")
        .clone();
    ipamd["securityContext"]["capabilities"]["add"]
        .as_array()
        .expect("capabilities.add")
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

fn mask(caps: &[String]) -> u64 {
    caps.iter()
        .map(|c| {
            let (_, bit) = CAPS
                .iter()
                .find(|(n, _)| n == c)
                .unwrap_or_else(|| panic!("unknown capability {c}"));
            1u64 << bit
        })
        .fold(0, |a, b| a | b)
}

/// Shapes the mount namespace like the ipamd container's, then execs ipamd
/// (`$0`) with the bounding set `$1`: the root filesystem read-only
/// (`readOnlyRootFilesystem`; `/run`, and the filesystem holding the
/// binary, included where they are mounts of their own) except the
/// directory `$2` (standing for the hostPath mounts of the socket and state
/// directories), and `/proc/sys` read-only (an unprivileged container's).
/// Any failing step stops before the exec.
const CONTAINER_SHAPE: &str = "mount --rbind / / && mount -o remount,bind,ro / \
    && { ! mountpoint -q /run || mount -o remount,bind,ro /run; } \
    && mount -o remount,bind,ro \"$(findmnt -n -f -o TARGET -T \"$0\")\" \
    && mount --bind \"$2\" \"$2\" && mount -o remount,bind,rw \"$2\" \
    && mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys \
    && exec setpriv --bounding-set=\"$1\" --inh-caps=-all -- \"$0\" serve";

/// ipamd as the DaemonSet runs it; stopped (SIGTERM, then SIGKILL) on drop.
struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    /// `propagation`: `slave` is what `mountPropagation: HostToContainer`
    /// gives the container's mount of the netns directory.
    fn start(node: &Netns, dir: &Path, caps: &[String], propagation: &str) -> Daemon {
        let bounding: String = std::iter::once("-all".to_string())
            .chain(caps.iter().map(|c| format!("+{}", c.to_lowercase())))
            .collect::<Vec<_>>()
            .join(",");
        let log = dir.join("ipamd.log");
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", node.name()])
            .args(["unshare", "--mount", "--propagation", propagation, "--"])
            .args(["sh", "-c", CONTAINER_SHAPE])
            .arg(bin_path("ipamd"))
            .arg(&bounding)
            .arg(dir)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NO_COLOR", "1")
            .env("VPC_CNI_CLOUD", "sim")
            .env("VPC_CNI_SOCKET", dir.join("ipamd.sock"))
            .env("VPC_CNI_STATE_DIR", dir.join("state"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn ipamd");
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The effective capabilities of the process (after all the execs, the
    /// child's pid is ipamd's).
    fn effective_caps(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .expect("CapEff")
            .trim();
        u64::from_str_radix(hex, 16).unwrap()
    }

    /// Whether the daemon can create a file in `dir`, tried through its own
    /// root (`/proc/<pid>/root`), i.e. its mount namespace.
    fn can_write_in(&self, dir: &Path) -> bool {
        let probe = Path::new(&format!("/proc/{}/root", self.child.id()))
            .join(dir.strip_prefix("/").unwrap())
            .join(".vpccni-e2e-write-probe");
        match std::fs::write(&probe, b"x") {
            Ok(()) => {
                let _ = std::fs::remove_file(&probe);
                true
            }
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => false,
            Err(e) => panic!("{}: {e}", probe.display()),
        }
    }

    fn wait_ready(&mut self, conf: &Value) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ipamd exited ({status}); its log:\n{}", self.log());
            }
            if Plugin::new("STATUS").config(conf).run().success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ipamd not ready; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- ipamd log -----\n{}", self.log());
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node prepared by `ipamd install-cni` (run in the node namespace, as the
/// privileged init container runs on the host); returns the conflist's
/// plugin entry as the runtime hands it to the plugin.
fn install(node: &Netns, dir: &Path) -> Value {
    let (bin, net) = (dir.join("bin"), dir.join("net.d"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&net).unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", node.name()])
        .arg(bin_path("ipamd"))
        .arg("install-cni")
        .arg(format!("--bin-dir={}", bin.display()))
        .arg(format!("--conf-dir={}", net.display()))
        .env_clear()
        .env("VPC_CNI_SOCKET", dir.join("ipamd.sock"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        node.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout,
        b"1\n"
    );
    let doc: Value =
        serde_json::from_slice(&std::fs::read(net.join("10-vpc-cni.conflist")).unwrap()).unwrap();
    let mut entry = doc["plugins"][0].clone();
    entry["cniVersion"] = doc["cniVersion"].clone();
    entry["name"] = doc["name"].clone();
    entry
}

fn add(conf: &Value, pod: &PodSpec) -> vpc_cni_e2e::CniOutput {
    Plugin::new("ADD")
        .config(conf)
        .ifname("eth0")
        .container_id(&pod.container_id)
        .netns(pod.netns.path_str())
        .args(&pod.cni_args())
        .run()
}

#[test]
#[ignore = "privileged: needs CAP_NET_ADMIN (network namespaces)"]
fn ipamd_serves_pods_with_only_the_manifests_capabilities_and_read_only_root_and_proc_sys() {
    let caps = manifest_capabilities();
    assert_eq!(caps, ["NET_ADMIN", "SYS_ADMIN"]);
    let node = Netns::new();
    let dir = TempDir::new();
    let conf = install(&node, dir.path());
    let mut daemon = Daemon::start(&node, dir.path(), &caps, "slave");
    daemon.wait_ready(&conf);
    assert_eq!(
        daemon.effective_caps(),
        mask(&caps),
        "ipamd runs with exactly these"
    );
    // As in the container: only the host paths are writable.
    assert!(!daemon.can_write_in(bin_path("ipamd").parent().unwrap()));
    assert!(daemon.can_write_in(dir.path()));

    let pods: Vec<PodSpec> = (0..3).map(|i| PodSpec::new(&format!("caps-{i}"))).collect();
    for pod in &pods {
        let out = add(&conf, pod);
        let ip = result_ip(out.ok());
        let addrs = pod.netns.ip(&["-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(addrs.contains(&format!("{ip}/32")), "{addrs}");
    }
    for pod in &pods {
        Plugin::new("DEL")
            .config(&conf)
            .ifname("eth0")
            .container_id(&pod.container_id)
            .netns(pod.netns.path_str())
            .args(&pod.cni_args())
            .run()
            .ok();
    }
}

#[test]
#[ignore = "privileged: needs CAP_NET_ADMIN (network namespaces)"]
fn without_sys_admin_a_pod_cannot_be_wired() {
    // The manifest's justification for SYS_ADMIN: setns into the pod's
    // namespace. Without it ipamd still starts (netlink in its own namespace
    // needs NET_ADMIN only) but cannot create a pod's eth0.
    let caps = vec!["NET_ADMIN".to_string()];
    let node = Netns::new();
    let dir = TempDir::new();
    let conf = install(&node, dir.path());
    let mut daemon = Daemon::start(&node, dir.path(), &caps, "slave");
    daemon.wait_ready(&conf);
    assert_eq!(daemon.effective_caps(), mask(&caps));
    let pod = PodSpec::new("nosysadmin");
    let out = add(&conf, &pod);
    assert!(!out.success(), "ADD without SYS_ADMIN: {out}");
    assert!(
        out.stdout.contains("Operation not permitted"),
        "setns refused: {out}"
    );
    let links = pod.netns.ip(&["-o", "link"]);
    assert!(!links.contains("eth0"), "{links}");
}

#[test]
#[ignore = "privileged: needs CAP_NET_ADMIN (network namespaces)"]
fn without_mount_propagation_new_pod_namespaces_are_invisible() {
    // The manifest's justification for `mountPropagation: HostToContainer` on
    // /var/run/netns: a pod's namespace is bind-mounted there after ipamd
    // started; a private mount namespace keeps seeing the empty file below.
    let caps = manifest_capabilities();
    let node = Netns::new();
    let dir = TempDir::new();
    let conf = install(&node, dir.path());
    let mut daemon = Daemon::start(&node, dir.path(), &caps, "private");
    daemon.wait_ready(&conf);
    let pod = PodSpec::new("private-mnt");
    let out = add(&conf, &pod);
    assert!(
        !out.success(),
        "ADD through a private mount namespace: {out}"
    );
    assert!(out.stdout.contains(pod.netns.path_str()), "{out}");
}
