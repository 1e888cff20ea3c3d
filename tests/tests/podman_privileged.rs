//! podman 4.3 with its CNI backend running our plugin: two busybox
//! containers on a `vpc-cni` network, podman's host side under
//! `nsenter --net=<node ns>` (not `ip netns exec`, whose /sys remount breaks
//! runc). Storage, run state, configuration and the network's conflist all
//! live in the test's temporary directory, so nothing reaches the
//! machine's own podman state.
//!
//! What podman sends differs from CRI (see shared/notes/MACHINE-FACTS.md):
//! VERSION before ADD and DEL, only `K8S_POD_NAME` in CNI_ARGS, netns paths
//! `/run/netns/netns-<uuid>`.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use vpc_cni_e2e::runtimes;
use vpc_cni_e2e::runtimes::{
    clean_up_runtime_dir, cni_bin_dir, image_archive, logged_calls, require_programs,
    stale_runtime_dirs, vpc_conflist, write_json, BUSYBOX_IMAGE, PLUGIN_LOG,
};
use vpc_cni_e2e::{ping, status_json, status_pods, used, wait_until, Node, TempDir};

/// The CNI network the containers join (the conflist's `name`).
const NETWORK: &str = "vpc-cni";

/// podman's configuration file in the test's directory (also how a stale
/// run's directory is recognised).
const CONTAINERS_CONF: &str = "containers.conf";

/// Where podman 4.3 keeps runc's state, whatever its run root.
const PODMAN_RUNC_ROOT: &str = "/run/runc";

/// How long one podman command may take.
const PODMAN_TIMEOUT_SECS: u32 = 60;

/// The port the server container listens on.
const PORT: u16 = 7777;

/// podman pointed at a store, run directory and configuration of its own
/// under one temporary directory, its host side in the node's network
/// namespace. Dropping it removes every container (so the plugin's DELs
/// run), kills what podman left running, unmounts its storage, removes the
/// namespaces and cgroups it made, and then the directory.
struct Podman {
    node_netns: PathBuf,
    containers_conf: PathBuf,
    storage_conf: PathBuf,
    plugin_log: PathBuf,
    dir: TempDir,
}

impl Podman {
    fn start(node: &Node) -> Self {
        require_programs(&["podman", "conmon", "runc", "nsenter"]);
        let busybox = image_archive("busybox.tar");
        sweep_stale_runs();
        let dir = TempDir::new();
        let d = dir.path();
        let plugin_log = d.join(PLUGIN_LOG);
        let conf_dir = d.join("net.d");
        std::fs::create_dir_all(&conf_dir).expect("create the CNI conf dir");
        write_json(
            &conf_dir.join("10-vpc-cni.conflist"),
            &vpc_conflist(node, NETWORK, &plugin_log),
        );
        let bin_dir = cni_bin_dir(d);

        let containers_conf = d.join(CONTAINERS_CONF);
        std::fs::write(
            &containers_conf,
            containers_conf_text(d, &bin_dir, &conf_dir),
        )
        .expect("write containers.conf");
        let storage_conf = d.join("storage.conf");
        std::fs::write(
            &storage_conf,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/runroot\"\n",
                d.display()
            ),
        )
        .expect("write storage.conf");

        let pm = Podman {
            node_netns: node.netns().path().to_path_buf(),
            containers_conf,
            storage_conf,
            plugin_log,
            dir,
        };
        pm.checked(&[
            "load",
            "--quiet",
            "--input",
            busybox.to_str().expect("ASCII"),
        ]);
        pm
    }

    /// `nsenter --net=<node> podman <args>` with our configuration.
    fn run(&self, args: &[&str]) -> Output {
        // Bounded: a podman that hangs fails the test with exit status 124
        // instead of stalling the suite.
        Command::new("timeout")
            .args(["--kill-after=5", &PODMAN_TIMEOUT_SECS.to_string()])
            .arg("nsenter")
            .arg(format!("--net={}", self.node_netns.display()))
            .arg("--")
            .arg("podman")
            .arg("--tmpdir")
            .arg(self.dir.path().join("libpod-tmp"))
            .args(args)
            .env("CONTAINERS_CONF", &self.containers_conf)
            .env("CONTAINERS_STORAGE_CONF", &self.storage_conf)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run podman {args:?}: {e}"))
    }

    /// Like [`Podman::run`] but the command must succeed; returns stdout.
    #[track_caller]
    fn checked(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({}): {}{}\nplugin log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            runtimes::plugin_log_text(&self.plugin_log)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a detached busybox container on our network; returns its id.
    #[track_caller]
    fn run_container(&self, name: &str, command: &[&str]) -> String {
        let parent = format!("/{}", runtimes::cgroup_parent_of(self.dir.path()));
        let mut args = vec![
            "run",
            "--detach",
            "--name",
            name,
            "--network",
            NETWORK,
            "--cgroup-parent",
            &parent,
            BUSYBOX_IMAGE,
        ];
        args.extend_from_slice(command);
        self.checked(&args).trim().to_string()
    }

    /// The address podman reports for container `name` on our network.
    #[track_caller]
    fn ip(&self, name: &str) -> Ipv4Addr {
        let text = self.checked(&[
            "inspect",
            "--format",
            "{{json .NetworkSettings.Networks}}",
            name,
        ]);
        let nets: Value = serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("inspect {name} printed {text:?}: {e}"));
        let ip = nets[NETWORK]["IPAddress"].as_str().unwrap_or("");
        ip.parse()
            .unwrap_or_else(|e| panic!("{name} has no address on {NETWORK} ({nets}): {e}"))
    }

    /// `podman exec <name> sh -c <script>`.
    fn exec(&self, name: &str, script: &str) -> Output {
        self.run(&["exec", name, "sh", "-c", script])
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let out = self.run(&["rm", "--all", "--force", "--time", "0"]);
        if !out.status.success() {
            eprintln!(
                "teardown: podman rm --all failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for line in clean_up_runtime_dir(self.dir.path(), Path::new(PODMAN_RUNC_ROOT)) {
            eprintln!("teardown: {line}");
        }
    }
}

/// Cleans up after podman test processes that died without running their
/// destructors (killed by a timeout).
fn sweep_stale_runs() {
    for dir in stale_runtime_dirs(CONTAINERS_CONF) {
        for line in clean_up_runtime_dir(&dir, Path::new(PODMAN_RUNC_ROOT)) {
            eprintln!("stale run {}: {line}", dir.display());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// containers.conf for this test: explicit ulimits (this machine's root
/// lacks CAP_SYS_RESOURCE, and podman would copy its own hard limits), runc
/// (crun rejects the hybrid cgroups), cgroupfs (no systemd), events to a
/// file, the CNI backend on our plugin and conflist directories.
fn containers_conf_text(dir: &Path, bin_dir: &Path, conf_dir: &Path) -> String {
    format!(
        r#"[containers]
default_ulimits = ["nofile=1024:20000", "nproc=4096:8192"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
volume_path = "{d}/volumes"

[network]
network_backend = "cni"
cni_plugin_dirs = ["{bin}"]
network_config_dir = "{conf}"
"#,
        d = dir.display(),
        bin = bin_dir.display(),
        conf = conf_dir.display(),
    )
}

/// ipamd's record for container `id` (podman's full container id).
fn record(node: &Node, id: &str) -> Option<Value> {
    status_pods(node)
        .into_iter()
        .find(|p| p["containerId"] == id)
}

/// The secondary addresses ipamd holds on its ENIs.
fn vpc_addresses(node: &Node) -> Vec<Ipv4Addr> {
    status_json(node)["enis"]
        .as_array()
        .expect("status lists ENIs")
        .iter()
        .flat_map(|e| e["secondaryIps"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().and_then(|s| s.parse().ok()))
        .collect()
}

#[test]
#[ignore = "privileged: needs root, podman and runc (scripts/setup-runtimes.sh)"]
fn podman_containers_get_vpc_addresses_reach_each_other_and_release_them() {
    let node = Node::start();
    let pm = Podman::start(&node);

    let networks = pm.checked(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(
        networks.lines().any(|l| l == format!("{NETWORK} vpc-cni")),
        "podman does not see our conflist: {networks}"
    );

    // A server answering "pong" on PORT, and a client that just waits.
    let server_name = "vpccni-server";
    let client_name = "vpccni-client";
    let server = pm.run_container(
        server_name,
        &[
            "sh",
            "-c",
            &format!("while true; do echo pong | nc -l -p {PORT}; done"),
        ],
    );
    let client = pm.run_container(client_name, &["sleep", "600"]);
    let server_ip = pm.ip(server_name);
    let client_ip = pm.ip(client_name);
    assert_ne!(server_ip, client_ip);

    // Both addresses are the node's VPC addresses, held by ipamd under the
    // container ids podman passed, with the container name as pod name.
    let vpc = vpc_addresses(&node);
    for (name, id, ip) in [
        (server_name, &server, server_ip),
        (client_name, &client, client_ip),
    ] {
        assert!(
            vpc.contains(&ip),
            "{name} got {ip}, not a secondary address of the node's ENIs {vpc:?}"
        );
        let rec = record(&node, id)
            .unwrap_or_else(|| panic!("ipamd lists no {id}: {}", status_json(&node)));
        assert_eq!(rec["addr"], ip.to_string(), "{rec}");
        assert_eq!(rec["name"], name, "{rec}");
        let inside = pm.exec(name, "ip -4 -o addr show dev eth0");
        let inside = String::from_utf8_lossy(&inside.stdout);
        assert!(
            inside.contains(&format!("{ip}/32")),
            "{name}'s eth0: {inside}"
        );
    }
    assert_eq!(used(&node), 2);

    // They reach each other: ICMP both ways, and TCP from client to server
    // (the server may need a moment to start listening).
    for (from, to) in [(client_name, server_ip), (server_name, client_ip)] {
        let out = pm.exec(from, &format!("ping -c1 -W2 {to}"));
        assert!(
            out.status.success(),
            "{from} cannot ping {to}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut answer = String::new();
    let answered = wait_until(Duration::from_secs(10), || {
        let out = pm.exec(
            client_name,
            &format!("echo ping | nc -w 2 {server_ip} {PORT}"),
        );
        answer = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        answer.contains("pong")
    });
    assert!(
        answered,
        "the client got no pong from {server_ip}:{PORT}: {answer}"
    );
    assert!(
        ping(node.netns().name(), server_ip),
        "the node cannot reach {server_ip}"
    );

    // Removing a container releases its address and nothing else.
    pm.checked(&["rm", "--force", "--time", "0", server_name]);
    assert!(
        record(&node, &server).is_none(),
        "the removed server's address is still held: {}",
        status_json(&node)
    );
    assert!(
        record(&node, &client).is_some(),
        "the client lost its address"
    );
    assert_eq!(used(&node), 1);
    pm.checked(&["rm", "--force", "--time", "0", client_name]);
    assert_eq!(used(&node), 0, "{}", status_json(&node));
    assert_eq!(status_pods(&node), Vec::<Value>::new());

    // What the plugin saw: one ADD and at least one DEL per container,
    // every call answered without error, podman's own netns paths.
    let calls = logged_calls(&pm.plugin_log);
    let mut by_container: HashMap<&str, Vec<&str>> = HashMap::new();
    for c in &calls {
        assert!(
            c.line.contains(" result=ok"),
            "a call failed:\n{}",
            runtimes::plugin_log_text(&pm.plugin_log)
        );
        by_container
            .entry(c.container.as_str())
            .or_default()
            .push(c.cmd.as_str());
    }
    for id in [&server, &client] {
        let cmds = by_container.get(id.as_str()).cloned().unwrap_or_default();
        let adds = cmds.iter().filter(|c| **c == "ADD").count();
        let dels = cmds.iter().filter(|c| **c == "DEL").count();
        assert!(
            adds == 1 && dels >= 1,
            "calls for {id}: {cmds:?}\n{}",
            runtimes::plugin_log_text(&pm.plugin_log)
        );
        let add = calls
            .iter()
            .find(|c| c.container == *id && c.cmd == "ADD")
            .expect("an ADD");
        assert!(
            add.netns.starts_with("/run/netns/netns-"),
            "podman's netns path: {}",
            add.line
        );
        // podman removed the namespace it made.
        assert!(
            wait_until(Duration::from_secs(5), || !Path::new(&add.netns).exists()),
            "{} is still there after podman rm",
            add.netns
        );
    }
}
