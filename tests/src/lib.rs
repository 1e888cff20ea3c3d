//! `vpc-cni-e2e`: the end-to-end testkit. The tests in `tests/` drive the
//! real `vpc-cni` plugin binary, exactly as kubelet/containerd exec it,
//! against a real `ipamd serve` running in a network namespace of their own.
//!
//! Start at [`Node`]: it creates a node namespace ([`Netns`]), a temporary
//! directory ([`TempDir`]) and the daemon (simulated m5.large unless told
//! otherwise), and waits until the plugin's STATUS call succeeds. A test then
//! makes pods with [`Node::add_pod`] (or builds any call by hand with
//! [`Node::plugin`] / [`Plugin`]) and looks at the result from the outside:
//! [`status_json`] (the daemon's own view through `ipamd status --json`),
//! [`node_links`], [`node_routes`], [`node_rules`] (the kernel's view through
//! `ip`), [`ping`] and [`tcp_reachable`] (packets).
//!
//! Every guard cleans up on drop, also when the test panics: the daemon is
//! stopped, the namespaces deleted, the directory removed. Nothing here
//! touches the machine's own network namespace: links, routes and packets
//! all live in namespaces a guard created, and the test thread itself never
//! changes namespace ([`tcp_reachable`] moves throwaway threads instead).
//!
//! Binaries are looked up by [`bin_path`]; the test command builds them first
//! (`cargo build --workspace --bins`).
//!
//! ```no_run
//! use vpc_cni_e2e::{Node, ping};
//!
//! let node = Node::start();
//! let pod = node.add_pod("web-0");
//! assert!(ping(node.netns().name(), pod.ip));
//! ```

pub mod runtimes;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Once};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};

pub mod observe;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

pub mod ec2node;
pub mod imds;
pub mod moto;

/// Prefix of every namespace and temporary directory this kit creates, so
/// leftovers of a killed run can be recognised (and swept, see [`Netns::new`]).
pub const PREFIX: &str = "vpccni-e2e";

/// How long [`Node::start`] waits for the daemon to answer STATUS.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The `CNI_PATH` every call carries, as kubelet's default.
pub const CNI_PATH: &str = "/opt/cni/bin";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique on this machine for as long as this process lives.
fn unique(kind: &str) -> String {
    format!(
        "{PREFIX}-{}-{kind}{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The path of one of the workspace's binaries (`vpc-cni`, `ipamd`).
///
/// `VPC_CNI_BIN_DIR` wins if set; otherwise the directory two levels above
/// the running test executable (`target/debug/deps/x` → `target/debug`),
/// where `cargo build --workspace --bins` puts them.
pub fn bin_path(name: &str) -> PathBuf {
    let dir = match std::env::var_os("VPC_CNI_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("the test knows its own executable");
            exe.parent()
                .and_then(Path::parent)
                .expect("the test executable lives in target/<profile>/deps")
                .to_path_buf()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (or set VPC_CNI_BIN_DIR)",
        path.display()
    );
    path
}

/// Runs a command to completion, panicking with its output if it cannot be
/// started. The exit status is the caller's to judge.
fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed and returns its stdout.
fn checked(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------
// Temporary directory
// ---------------------------------------------------------------------------

/// A directory under the system temp dir, removed with everything in it on
/// drop. (A few lines instead of a dependency.)
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/vpccni-e2e-<pid>-dir<n>`.
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(unique("dir"));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------

/// A named network namespace (`ip netns add`), deleted on drop — also when
/// the test panics. The kernel finishes tearing it down (and with it the
/// veths inside) asynchronously after the delete.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    /// Creates `vpccni-e2e-<pid>-ns<n>`. The first call in a process also
    /// deletes namespaces of this kit left by test processes that no longer
    /// exist (a run killed by a timeout cannot run its destructors).
    pub fn new() -> Self {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_stale_namespaces);
        let name = unique("ns");
        checked(Command::new("ip").args(["netns", "add", &name]));
        let path = PathBuf::from("/run/netns").join(&name);
        Netns { name, path }
    }

    /// The name `ip -n` takes.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, what a runtime passes as `CNI_NETNS`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as a `&str` (for `CNI_NETNS`).
    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("namespace paths are ASCII")
    }

    /// `ip netns exec <name> <args...>`, run to completion.
    pub fn exec(&self, args: &[&str]) -> Output {
        output(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(args),
        )
    }

    /// `ip -n <name> <args...>`, which must succeed; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        checked(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// `ip -n <name> -j <args...>` parsed (an empty answer is `[]`).
    pub fn ip_json(&self, args: &[&str]) -> Vec<Value> {
        let text = checked(Command::new("ip").args(["-n", &self.name, "-j"]).args(args));
        if text.trim().is_empty() {
            return Vec::new();
        }
        match serde_json::from_str(&text) {
            Ok(Value::Array(items)) => items,
            other => panic!(
                "ip -n {} -j {args:?} printed {text:?}: {other:?}",
                self.name
            ),
        }
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Deletes `vpccni-e2e-<pid>-*` namespaces whose process is gone.
fn sweep_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

// ---------------------------------------------------------------------------
// The plugin, as a runtime execs it
// ---------------------------------------------------------------------------

/// One exec of the real `vpc-cni` binary, built like kubelet/containerd
/// build it: a cleared environment holding only the `CNI_*` variables, and
/// the network configuration on stdin. Every variable can be overridden or
/// removed, and stdin replaced by arbitrary bytes.
///
/// ```no_run
/// use vpc_cni_e2e::Plugin;
///
/// let out = Plugin::new("VERSION").stdin(b"{}".to_vec()).run();
/// assert!(out.status.success());
/// ```
#[derive(Debug, Clone)]
pub struct Plugin {
    env: BTreeMap<String, String>,
    stdin: Vec<u8>,
    run_as: Option<u32>,
}

impl Plugin {
    /// A call of `command` with `CNI_PATH` set and nothing else.
    pub fn new(command: &str) -> Self {
        let mut env = BTreeMap::new();
        env.insert("CNI_COMMAND".to_string(), command.to_string());
        env.insert("CNI_PATH".to_string(), CNI_PATH.to_string());
        Plugin {
            env,
            stdin: Vec::new(),
            run_as: None,
        }
    }

    /// Sets (or replaces) an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_string(), value.to_string());
        self
    }

    /// Removes an environment variable.
    pub fn unset(mut self, key: &str) -> Self {
        self.env.remove(key);
        self
    }

    /// `CNI_CONTAINERID`.
    pub fn container_id(self, id: &str) -> Self {
        self.env("CNI_CONTAINERID", id)
    }

    /// `CNI_NETNS`.
    pub fn netns(self, path: &str) -> Self {
        self.env("CNI_NETNS", path)
    }

    /// `CNI_IFNAME`.
    pub fn ifname(self, name: &str) -> Self {
        self.env("CNI_IFNAME", name)
    }

    /// `CNI_ARGS`, verbatim.
    pub fn args(self, args: &str) -> Self {
        self.env("CNI_ARGS", args)
    }

    /// The network configuration, serialised to stdin.
    pub fn config(mut self, config: &Value) -> Self {
        self.stdin = serde_json::to_vec(config).expect("a Value serialises");
        self
    }

    /// Raw stdin bytes.
    pub fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = bytes;
        self
    }

    /// Runs the plugin as this uid (and gid, with no supplementary groups)
    /// through `setpriv`, as an unprivileged caller would.
    pub fn run_as_uid(mut self, uid: u32) -> Self {
        self.run_as = Some(uid);
        self
    }

    /// Execs the plugin and collects its answer.
    pub fn run(&self) -> CniOutput {
        let bin = bin_path("vpc-cni");
        let mut cmd = match self.run_as {
            None => Command::new(&bin),
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg(&bin);
                c
            }
        };
        cmd.env_clear()
            .envs(&self.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot exec {}: {e}", bin.display()));
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let bytes = self.stdin.clone();
        // A writer thread: the plugin may answer (and exit) before reading
        // everything, and a full pipe must not deadlock the test.
        let writer = thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", bin.display()));
        let _ = writer.join();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let json = if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout).unwrap_or_else(|e| {
                panic!(
                    "the plugin printed something that is not JSON on stdout ({e}): {stdout:?}\nenv: {:?}",
                    self.env
                )
            })
        };
        CniOutput {
            status: out.status,
            stdout,
            json,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            env: self.env.clone(),
        }
    }
}

/// What one plugin exec produced.
#[derive(Debug, Clone)]
pub struct CniOutput {
    /// The exit status.
    pub status: ExitStatus,
    /// stdout as printed.
    pub stdout: String,
    /// stdout parsed as JSON (`Null` when empty, as on a successful DEL).
    pub json: Value,
    /// stderr (the plugin's log lines).
    pub stderr: String,
    /// The environment the plugin ran with, for failure messages.
    pub env: BTreeMap<String, String>,
}

impl CniOutput {
    /// Whether the plugin exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Asserts success and returns the result JSON (`Null` for commands
    /// that print nothing).
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert!(self.success(), "the plugin failed: {self}");
        &self.json
    }

    /// Asserts a failure with the spec's error object and returns it.
    #[track_caller]
    pub fn err(&self) -> &Value {
        assert!(
            !self.success(),
            "the plugin succeeded but should not: {self}"
        );
        let obj = self
            .json
            .as_object()
            .unwrap_or_else(|| panic!("a failure must print the error object: {self}"));
        for key in ["cniVersion", "code", "msg"] {
            assert!(obj.contains_key(key), "error object lacks {key}: {self}");
        }
        &self.json
    }

    /// Asserts a failure with exactly `code` and returns the error object.
    #[track_caller]
    pub fn err_code(&self, code: u64) -> &Value {
        let e = self.err();
        assert_eq!(e["code"].as_u64(), Some(code), "wrong error code: {self}");
        e
    }

    /// The error message (`""` if none).
    pub fn msg(&self) -> &str {
        self.json["msg"].as_str().unwrap_or("")
    }
}

impl std::fmt::Display for CniOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; stdout: {}; stderr: {}; env: {:?}",
            self.status,
            self.stdout.trim(),
            self.stderr.trim(),
            self.env
        )
    }
}

// ---------------------------------------------------------------------------
// A node: namespace + ipamd
// ---------------------------------------------------------------------------

/// A node: its own network namespace, a temporary directory holding the
/// socket, state and daemon log, and `ipamd serve` running inside the
/// namespace on the simulated cloud. Dropping it stops the daemon (SIGTERM,
/// then SIGKILL), deletes the namespace and the directory; if the test is
/// panicking, the daemon's log is printed first.
#[derive(Debug)]
pub struct Node {
    // Field order is drop order after `Drop::drop`: the daemon is already
    // stopped there, then the namespace goes, then the directory.
    netns: Netns,
    dir: TempDir,
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
    /// Extra environment of the daemon, kept for restarts.
    env: Vec<(String, String)>,
}

impl Node {
    /// Starts a node with the default simulated instance (m5.large).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a node with extra environment for the daemon, e.g.
    /// `[("VPC_CNI_SIM_INSTANCE_TYPE", "t3.medium"), ("MAX_ENI", "1")]`.
    /// Waits (at most [`READY_TIMEOUT`]) until the plugin's STATUS succeeds.
    pub fn start_with(extra_env: &[(&str, &str)]) -> Self {
        let mut node = Self::spawn_with(extra_env);
        node.wait_ready();
        node
    }

    /// Starts the daemon without waiting for it to be ready (to see how it
    /// answers while it starts); [`Node::wait_ready`] waits later.
    pub fn spawn_with(extra_env: &[(&str, &str)]) -> Self {
        Self::spawn_in(Netns::new(), extra_env)
    }

    /// [`Node::spawn_with`] in a namespace the caller prepared (e.g. with
    /// the ENI links of a cloud fixture); the node owns it from now on.
    pub fn spawn_in(netns: Netns, extra_env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new();
        let socket = dir.path().join("ipamd.sock");
        let log = dir.path().join("ipamd.log");
        let mut node = Node {
            netns,
            dir,
            child: None,
            socket,
            log,
            env: extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        node.child = Some(node.spawn_daemon());
        node
    }

    /// `ip netns exec <node> ipamd serve`, its output appended to the log.
    fn spawn_daemon(&self) -> Child {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the daemon log");
        let log_err = log_file.try_clone().expect("dup the daemon log");
        Command::new("ip")
            .args(["netns", "exec", self.netns.name()])
            .arg(bin_path("ipamd"))
            .arg("serve")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NO_COLOR", "1")
            .env("VPC_CNI_CLOUD", "sim")
            .env("VPC_CNI_SOCKET", &self.socket)
            .env("VPC_CNI_STATE_DIR", self.dir.path().join("state"))
            // Never the machine's own aws-node checkpoint.
            .env(
                "VPC_CNI_AWS_NODE_CHECKPOINT",
                self.dir.path().join("aws-node-ipam.json"),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .expect("spawn ip netns exec ipamd serve")
    }

    /// Kills the daemon with SIGKILL (a crash: no clean-up of its own),
    /// starts it again with the same settings and state, and waits until it
    /// is ready.
    pub fn crash_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.child = Some(self.spawn_daemon());
        self.wait_ready();
    }

    /// Kills the daemon with SIGKILL and reaps it, leaving it down.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again (after [`Node::crash`]) with the same
    /// settings and state, and waits until it is ready.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart after crash only");
        self.child = Some(self.spawn_daemon());
        self.wait_ready();
    }

    /// Waits (at most [`READY_TIMEOUT`]) until the plugin's STATUS succeeds.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "ipamd exited during start-up ({status}); its log:\n{}",
                        self.log()
                    );
                }
            }
            let out = self.plugin("STATUS").run();
            if out.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "ipamd did not become ready within {READY_TIMEOUT:?}; last STATUS: {out}\nits log:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The node's network namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The node's temporary directory (socket, state, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Everything the daemon has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The conflist `plugins[]` entry for this node, in `cni_version`.
    pub fn conf(&self, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "name": "vpc",
            "type": "vpc-cni",
            "ipamdSocket": self.socket,
        })
    }

    /// A plugin call for this node: the 1.1.0 config on stdin and
    /// `CNI_IFNAME=eth0`; the caller adds what the command needs.
    pub fn plugin(&self, command: &str) -> Plugin {
        Plugin::new(command)
            .ifname("eth0")
            .config(&self.conf("1.1.0"))
    }

    /// The ADD a runtime would send for `pod` (kubelet-style CNI_ARGS).
    pub fn add_call(&self, pod: &PodSpec) -> Plugin {
        self.plugin("ADD")
            .container_id(&pod.container_id)
            .netns(pod.netns.path_str())
            .args(&pod.cni_args())
    }

    /// The DEL a runtime would send for `pod` on stop (with its netns path).
    pub fn del_call(&self, pod: &PodSpec) -> Plugin {
        self.plugin("DEL")
            .container_id(&pod.container_id)
            .netns(pod.netns.path_str())
            .args(&pod.cni_args())
    }

    /// Creates a pod namespace and ADDs it (namespace `default`, container id
    /// `cid-<name>`); panics unless ADD succeeds with an address.
    pub fn add_pod(&self, name: &str) -> Pod {
        let spec = PodSpec::new(name);
        let out = self.add_call(&spec).run();
        let result = out.ok().clone();
        let ip = result_ip(&result);
        Pod { spec, ip, result }
    }

    /// DELs a pod (with its netns path); panics unless DEL succeeds.
    pub fn del_pod(&self, pod: &PodSpec) {
        self.del_call(pod).run().ok();
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "----- ipamd log ({}) -----\n{}----- end of ipamd log -----",
                self.log.display(),
                self.log()
            );
        }
        self.stop();
    }
}

/// A pod that has no network yet: its namespace, container id and
/// Kubernetes identity.
#[derive(Debug)]
pub struct PodSpec {
    /// The pod's network namespace (dropped = the runtime destroyed it).
    pub netns: Netns,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `K8S_POD_NAMESPACE`.
    pub namespace: String,
    /// `K8S_POD_NAME`. Pods on one node need distinct names: the host veth
    /// is named after namespace and name.
    pub name: String,
}

impl PodSpec {
    /// A new namespace for pod `default/<name>` with container id `cid-<name>`.
    pub fn new(name: &str) -> Self {
        PodSpec {
            netns: Netns::new(),
            container_id: format!("cid-{name}"),
            namespace: "default".to_string(),
            name: name.to_string(),
        }
    }

    /// `CNI_ARGS` as containerd's CRI plugin sends them.
    pub fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID=uid-{}",
            self.namespace, self.name, self.container_id, self.name
        )
    }
}

/// A pod ADD has wired.
#[derive(Debug)]
pub struct Pod {
    /// Namespace and identity.
    pub spec: PodSpec,
    /// Its address (from the ADD result).
    pub ip: Ipv4Addr,
    /// The ADD result as printed.
    pub result: Value,
}

impl Pod {
    /// The pod's network namespace.
    pub fn netns(&self) -> &Netns {
        &self.spec.netns
    }

    /// The host veth name from the ADD result (`interfaces[0].name`).
    pub fn host_ifname(&self) -> &str {
        self.result["interfaces"][0]["name"]
            .as_str()
            .expect("ADD result names the host veth")
    }
}

/// The address of `ips[0]` of an ADD result (`10.0.0.x/32` → `10.0.0.x`).
#[track_caller]
pub fn result_ip(result: &Value) -> Ipv4Addr {
    let addr = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("ADD result without ips[0].address: {result}"));
    let (ip, prefix) = addr
        .split_once('/')
        .unwrap_or_else(|| panic!("address {addr} has no prefix length"));
    assert_eq!(prefix, "32", "pod addresses are /32: {result}");
    ip.parse()
        .unwrap_or_else(|e| panic!("address {addr} is not IPv4: {e}"))
}

// ---------------------------------------------------------------------------
// Looking from the outside
// ---------------------------------------------------------------------------

/// The daemon's view: `ipamd status --json` (`.pool`, `.pods`, `.enis`).
#[track_caller]
pub fn status_json(node: &Node) -> Value {
    let text = checked(
        Command::new(bin_path("ipamd"))
            .args(["status", "--json"])
            .env_clear()
            .env("VPC_CNI_SOCKET", node.socket()),
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("status is not JSON ({e}): {text}"))
}

/// `.pool.used` of [`status_json`].
#[track_caller]
pub fn used(node: &Node) -> u64 {
    status_json(node)["pool"]["used"]
        .as_u64()
        .expect("status has pool.used")
}

/// `.pods` of [`status_json`].
#[track_caller]
pub fn status_pods(node: &Node) -> Vec<Value> {
    status_json(node)["pods"]
        .as_array()
        .expect("status has pods")
        .clone()
}

/// Names of the links in the node namespace (`ip -n <node> -j link`).
pub fn node_links(node: &Node) -> Vec<String> {
    node.netns()
        .ip_json(&["link"])
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}

/// The node's host veths: links named `eni…`.
pub fn node_pod_links(node: &Node) -> Vec<String> {
    node_links(node)
        .into_iter()
        .filter(|n| n.starts_with("eni"))
        .collect()
}

/// The node's main routing table (`ip -n <node> -j route`).
pub fn node_routes(node: &Node) -> Vec<Value> {
    node.netns().ip_json(&["route"])
}

/// Host routes to pods: /32 routes through an `eni…` link, as `(dst, dev)`.
pub fn node_pod_routes(node: &Node) -> Vec<(String, String)> {
    node_routes(node)
        .iter()
        .filter_map(|r| {
            let dst = r["dst"].as_str()?;
            let dev = r["dev"].as_str().unwrap_or("");
            let host = !dst.contains('/') || dst.ends_with("/32");
            (host && dev.starts_with("eni")).then(|| (dst.to_string(), dev.to_string()))
        })
        .collect()
}

/// The node's policy-routing rules (`ip -n <node> -j rule`).
pub fn node_rules(node: &Node) -> Vec<Value> {
    node.netns().ip_json(&["rule"])
}

/// Rules that name a pod address: `from <ip>` or `to <ip>` (the kernel's
/// own rules match everything and name no address).
pub fn node_pod_rules(node: &Node) -> Vec<Value> {
    node_rules(node)
        .into_iter()
        .filter(|r| {
            let named = |k: &str| r[k].as_str().is_some_and(|v| v != "all");
            named("src") || named("dst")
        })
        .collect()
}

/// Whether `ip` answers one ICMP echo from inside namespace `from`
/// (`ip netns exec <from> ping -c1 -W2 <ip>`).
pub fn ping(from: &str, ip: Ipv4Addr) -> bool {
    output(
        Command::new("ip")
            .args(["netns", "exec", from, "ping", "-c1", "-W2", "-n", "-q"])
            .arg(ip.to_string()),
    )
    .status
    .success()
}

/// Opens a TCP connection from namespace `from` to `ip` in namespace `to`,
/// sends a few bytes and reads the echo. A listener thread enters `to` and
/// binds `ip:0`, a client thread enters `from` and connects; both threads end
/// before this returns, so the caller's thread never changes namespace and no
/// thread keeps a namespace alive. For the node itself pass its namespace
/// path (`node.netns().path()`).
pub fn tcp_reachable(from: &Path, to: &Path, ip: Ipv4Addr) -> Result<(), String> {
    const TIMEOUT: Duration = Duration::from_secs(3);
    let to = to.to_path_buf();
    let from = from.to_path_buf();
    let (port_tx, port_rx) = mpsc::channel::<Result<u16, String>>();
    let server = thread::spawn(move || -> Result<(), String> {
        let setup = || -> Result<TcpListener, String> {
            let ns = File::open(&to).map_err(|e| format!("open {}: {e}", to.display()))?;
            setns(&ns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns {}: {e}", to.display()))?;
            let l = TcpListener::bind(SocketAddr::from((ip, 0)))
                .map_err(|e| format!("bind {ip}:0 in {}: {e}", to.display()))?;
            l.set_nonblocking(true)
                .map_err(|e| format!("nonblocking: {e}"))?;
            Ok(l)
        };
        let listener = match setup() {
            Ok(l) => l,
            Err(e) => {
                let _ = port_tx.send(Err(e.clone()));
                return Err(e);
            }
        };
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let _ = port_tx.send(Ok(port));
        // Polling accept with a deadline: a blocking accept could outlive a
        // failed client and keep the namespace alive.
        let deadline = Instant::now() + TIMEOUT + Duration::from_secs(1);
        let mut stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err("no connection arrived".into());
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        stream.set_nonblocking(false).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        stream
            .read_exact(&mut buf)
            .map_err(|e| format!("server read: {e}"))?;
        stream
            .write_all(&buf)
            .map_err(|e| format!("server write: {e}"))?;
        Ok(())
    });
    let port = match port_rx.recv_timeout(TIMEOUT) {
        Ok(Ok(port)) => port,
        Ok(Err(e)) => {
            let _ = server.join();
            return Err(e);
        }
        Err(e) => return Err(format!("listener did not start: {e}")),
    };
    let client = thread::spawn(move || -> Result<(), String> {
        let ns = File::open(&from).map_err(|e| format!("open {}: {e}", from.display()))?;
        setns(&ns, CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns {}: {e}", from.display()))?;
        let addr = SocketAddr::from((ip, port));
        let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
            .map_err(|e| format!("connect {addr} from {}: {e}", from.display()))?;
        s.set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        s.write_all(b"ping")
            .map_err(|e| format!("client write: {e}"))?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)
            .map_err(|e| format!("client read: {e}"))?;
        if &buf != b"ping" {
            return Err(format!("echo garbled: {buf:?}"));
        }
        Ok(())
    });
    let client_res = client
        .join()
        .unwrap_or_else(|_| Err("client thread panicked".into()));
    let server_res = server
        .join()
        .unwrap_or_else(|_| Err("server thread panicked".into()));
    client_res.and(server_res)
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns
/// whether it held. For effects the kernel completes asynchronously (netns
/// teardown), never to measure time.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts that the node holds no pod: status `used == 0` and no pods
/// listed, no host veth, no host route to a pod, no pod rule.
#[track_caller]
pub fn assert_nothing_allocated(node: &Node) {
    let status = status_json(node);
    assert_eq!(
        status["pool"]["used"], 0,
        "nothing may be allocated: {status}"
    );
    assert_eq!(status["pods"], json!([]), "no pod may be listed: {status}");
    assert_eq!(
        node_pod_links(node),
        Vec::<String>::new(),
        "no host veth may exist"
    );
    assert_eq!(node_pod_routes(node), Vec::new(), "no host route may exist");
    assert_eq!(
        node_pod_rules(node),
        Vec::<Value>::new(),
        "no pod rule may exist"
    );
}

/// Everything in the node's state directory (snapshot and journal), as
/// text: what a crash right now would leave.
pub fn state_text(node: &Node) -> String {
    let mut out = String::new();
    if let Ok(rd) = std::fs::read_dir(node.dir().join("state")) {
        let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            out.push('\n');
        }
    }
    out
}

/// The allocations the node's checkpoint holds right now (snapshot plus
/// journal, a torn last line ignored), as container id → address: what a
/// restart would read back.
pub fn checkpoint_allocations(node: &Node) -> BTreeMap<String, String> {
    let dir = node.dir().join("state");
    let mut out = BTreeMap::new();
    let snapshot: Value = std::fs::read(dir.join("checkpoint.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let record = |r: &Value| {
        (
            r["containerId"].as_str().unwrap_or("").to_string(),
            r["addr"].as_str().unwrap_or("").to_string(),
        )
    };
    for r in snapshot["allocations"].as_array().into_iter().flatten() {
        let (k, v) = record(r);
        out.insert(k, v);
    }
    let generation = snapshot["generation"].as_u64().unwrap_or(0);
    let journal = std::fs::read(dir.join(format!("journal-{generation}.log"))).unwrap_or_default();
    for line in journal.split(|&b| b == b'\n') {
        let Ok(entry) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        match entry["op"].as_str() {
            Some("put") => {
                let (k, v) = record(&entry["record"]);
                out.insert(k, v);
            }
            Some("del") => {
                out.remove(entry["key"]["containerId"].as_str().unwrap_or(""));
            }
            _ => {}
        }
    }
    out
}
