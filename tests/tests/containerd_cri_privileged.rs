//! containerd's CRI plugin (the path kubelet drives) running our plugin:
//! containerd 1.6 from Debian started under `nsenter --net=<node ns>` with
//! its own root, state and socket in a temporary directory, its CRI plugin
//! pointed at a conflist of ours and a plugin directory holding the built
//! `vpc-cni`. The test speaks CRI (`runtime.v1`) over containerd's socket
//! like kubelet: RunPodSandbox, PodSandboxStatus, CreateContainer,
//! StartContainer, ExecSync, StopPodSandbox, RemovePodSandbox for pods in
//! two Kubernetes namespaces, and checks what ipamd and the kernel saw.
//!
//! Offline: the sandbox image is podman's pause image (catatonit) and the
//! app image busybox-static, both built and saved by
//! scripts/setup-runtimes.sh and imported here with `ctr`.
//! `restrict_oom_score_adj` is on because this machine's root lacks
//! CAP_SYS_RESOURCE (runc would fail to set the sandbox's -998).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ExecSyncRequest, ImageSpec,
    LinuxPodSandboxConfig, ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata,
    PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest, VersionRequest,
};
use serde_json::Value;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use vpc_cni_e2e::runtimes;
use vpc_cni_e2e::runtimes::{
    clean_up_runtime_dir, cni_bin_dir, image_archive, logged_calls, require_programs,
    stale_runtime_dirs, vpc_conflist, write_json, NsDaemon, BUSYBOX_IMAGE, PAUSE_IMAGE, PLUGIN_LOG,
};
use vpc_cni_e2e::{status_json, status_pods, tcp_reachable, used, wait_until, Node, TempDir};

/// How long one CRI call may take before the test gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// containerd's configuration file in the test's directory (also how a
/// stale run's directory is recognised).
const CONFIG: &str = "config.toml";

/// containerd's socket in the test's directory.
const SOCKET: &str = "containerd.sock";

/// The CNI network name in our conflist.
const NETWORK: &str = "vpc";

/// containerd with its CRI plugin, all of its files under one directory,
/// plus a CRI client. Dropping it removes every sandbox still there
/// through CRI (so the plugin's DELs run), stops containerd, kills what it
/// left running, unmounts what it mounted, and removes the directory.
struct Containerd {
    // Drop order: the daemon stops in `Drop::drop`; the directory goes last.
    daemon: Option<NsDaemon>,
    rt: tokio::runtime::Runtime,
    cri: RuntimeServiceClient<Channel>,
    socket: PathBuf,
    plugin_log: PathBuf,
    dir: TempDir,
}

impl Containerd {
    fn start(node: &Node) -> Self {
        require_programs(&[
            "containerd",
            "ctr",
            "runc",
            "containerd-shim-runc-v2",
            "nsenter",
        ]);
        let pause = image_archive("pause.tar");
        // containerd's streaming server binds 127.0.0.1 of the namespace it
        // runs in.
        node.netns().ip(&["link", "set", "lo", "up"]);

        sweep_stale_runs();
        let dir = TempDir::new();
        let d = dir.path();
        let socket = d.join(SOCKET);
        let plugin_log = d.join(PLUGIN_LOG);
        let conf_dir = d.join("net.d");
        std::fs::create_dir_all(&conf_dir).expect("create the CNI conf dir");
        write_json(
            &conf_dir.join("10-vpc-cni.conflist"),
            &vpc_conflist(node, NETWORK, &plugin_log),
        );
        let bin_dir = cni_bin_dir(d);
        let config = d.join(CONFIG);
        std::fs::write(&config, config_toml(d, &socket, &bin_dir, &conf_dir))
            .expect("write containerd's config");

        let mut daemon = NsDaemon::spawn(
            "containerd",
            node.netns(),
            "containerd",
            &["--config", config.to_str().expect("ASCII path")],
            &d.join("containerd.log"),
        );
        let probe = socket.clone();
        daemon.wait_ready(Duration::from_secs(20), || probe.exists());

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let cri = RuntimeServiceClient::new(
            rt.block_on(connect(&socket))
                .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display())),
        );
        let mut ctd = Containerd {
            daemon: Some(daemon),
            rt,
            cri,
            socket,
            plugin_log,
            dir,
        };
        ctd.import(&pause);
        ctd.wait_cri_ready();
        ctd
    }

    /// `ctr images import` into the `k8s.io` namespace CRI uses.
    fn import(&self, archive: &Path) {
        let out = Command::new("timeout")
            .args(["--kill-after=5", "60", "ctr", "--address"])
            .arg(&self.socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(archive)
            .output()
            .expect("run ctr");
        assert!(
            out.status.success(),
            "ctr images import {} failed: {}{}",
            archive.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until the CRI service answers Version (it registers after
    /// containerd opens its socket, and loads the CNI config on its own).
    fn wait_cri_ready(&mut self) {
        let mut last = String::new();
        let ready = wait_until(Duration::from_secs(20), || {
            match self.call(|mut c| async move { c.version(VersionRequest::default()).await }) {
                Ok(_) => true,
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
        assert!(ready, "containerd's CRI never answered Version: {last}");
    }

    /// Runs one CRI call with a timeout; the error is printable.
    fn call<T, F, Fut>(&mut self, f: F) -> Result<T, String>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self.cri.clone();
        self.rt.block_on(async move {
            match tokio::time::timeout(CALL_TIMEOUT, f(client)).await {
                Ok(Ok(resp)) => Ok(resp.into_inner()),
                Ok(Err(status)) => Err(format!("{}: {}", status.code(), status.message())),
                Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
            }
        })
    }

    /// The RunPodSandbox request kubelet would send for `namespace/name`.
    fn sandbox_request(&self, namespace: &str, name: &str) -> RunPodSandboxRequest {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_string(),
                uid: format!("uid-{namespace}-{name}"),
                namespace: namespace.to_string(),
                attempt: 0,
            }),
            hostname: name.to_string(),
            linux: Some(LinuxPodSandboxConfig {
                // As kubelet's kubepods: a parent of the test's own, removed
                // at teardown (runc removes only the sandbox's cgroup).
                cgroup_parent: format!("/{}", runtimes::cgroup_parent_of(self.dir.path())),
                ..Default::default()
            }),
            ..Default::default()
        };
        RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        }
    }

    /// Runs the sandboxes of `pods` (namespace, name) all at once, as
    /// kubelet starts the pods scheduled to a node, and returns their ids
    /// in the same order.
    #[track_caller]
    fn run_sandboxes(&mut self, pods: &[(&str, &str)]) -> Vec<String> {
        let calls: Vec<_> = pods
            .iter()
            .map(|(ns, name)| {
                let mut client = self.cri.clone();
                let req = self.sandbox_request(ns, name);
                async move { tokio::time::timeout(CALL_TIMEOUT, client.run_pod_sandbox(req)).await }
            })
            .collect();
        let results = self.rt.block_on(futures::future::join_all(calls));
        results
            .into_iter()
            .zip(pods)
            .map(|(result, (ns, name))| match result {
                Ok(Ok(resp)) => resp.into_inner().pod_sandbox_id,
                Ok(Err(status)) => panic!(
                    "RunPodSandbox {ns}/{name}: {}: {}\nplugin log:\n{}",
                    status.code(),
                    status.message(),
                    runtimes::plugin_log_text(&self.plugin_log)
                ),
                Err(_) => panic!("RunPodSandbox {ns}/{name}: no answer within {CALL_TIMEOUT:?}"),
            })
            .collect()
    }

    /// Creates and starts an app container running `command` in sandbox
    /// `sandbox_id` of pod `namespace/name`, as kubelet does after the
    /// sandbox is up; returns the container's id.
    #[track_caller]
    fn start_container(
        &mut self,
        sandbox_id: &str,
        (namespace, name): (&str, &str),
        command: &[&str],
    ) -> String {
        let req = CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "app".to_string(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: BUSYBOX_IMAGE.to_string(),
                    ..Default::default()
                }),
                command: command.iter().map(|c| c.to_string()).collect(),
                ..Default::default()
            }),
            sandbox_config: self.sandbox_request(namespace, name).config,
        };
        let id = self
            .call(|mut c| async move { c.create_container(req).await })
            .unwrap_or_else(|e| panic!("CreateContainer in {namespace}/{name}: {e}"))
            .container_id;
        let req = StartContainerRequest {
            container_id: id.clone(),
        };
        self.call(|mut c| async move { c.start_container(req).await })
            .unwrap_or_else(|e| panic!("StartContainer {id}: {e}"));
        id
    }

    /// Runs `cmd` in a container (ExecSync) and returns its exit code and
    /// output.
    #[track_caller]
    fn exec(&mut self, container_id: &str, cmd: &[&str]) -> (i32, String) {
        let req = ExecSyncRequest {
            container_id: container_id.to_string(),
            cmd: cmd.iter().map(|c| c.to_string()).collect(),
            timeout: 10,
        };
        let resp = self
            .call(|mut c| async move { c.exec_sync(req).await })
            .unwrap_or_else(|e| panic!("ExecSync {cmd:?} in {container_id}: {e}"));
        (
            resp.exit_code,
            format!(
                "{}{}",
                String::from_utf8_lossy(&resp.stdout),
                String::from_utf8_lossy(&resp.stderr)
            ),
        )
    }

    /// What PodSandboxStatus (verbose) tells of a sandbox.
    #[track_caller]
    fn sandbox(&mut self, id: &str) -> Sandbox {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        };
        let resp = self
            .call(|mut c| async move { c.pod_sandbox_status(req).await })
            .unwrap_or_else(|e| panic!("PodSandboxStatus {id}: {e}"));
        let status = resp.status.expect("PodSandboxStatus carries a status");
        let ip = status
            .network
            .as_ref()
            .map(|n| n.ip.clone())
            .unwrap_or_default();
        let info: Value = resp
            .info
            .get("info")
            .map(|s| serde_json::from_str(s).expect("the verbose info is JSON"))
            .unwrap_or(Value::Null);
        // The sandbox's network namespace: containerd made it and hands
        // its path to the plugin as CNI_NETNS.
        let netns = info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .and_then(|nss| nss.iter().find(|n| n["type"] == "network"))
            .and_then(|n| n["path"].as_str())
            .unwrap_or_else(|| panic!("no network namespace path in the sandbox info: {info}"))
            .to_string();
        let meta = status.metadata.expect("status carries metadata");
        Sandbox {
            id: id.to_string(),
            namespace: meta.namespace,
            name: meta.name,
            ip: ip
                .parse()
                .unwrap_or_else(|e| panic!("sandbox {id} has no IPv4 address ({ip:?}): {e}")),
            netns: PathBuf::from(netns),
        }
    }

    fn stop_sandbox(&mut self, id: &str) -> Result<(), String> {
        let req = StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.call(|mut c| async move { c.stop_pod_sandbox(req).await })
            .map(drop)
    }

    fn remove_sandbox(&mut self, id: &str) -> Result<(), String> {
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.call(|mut c| async move { c.remove_pod_sandbox(req).await })
            .map(drop)
    }

    /// Ids of every sandbox containerd knows.
    fn list_sandboxes(&mut self) -> Result<Vec<String>, String> {
        self.call(|mut c| async move { c.list_pod_sandbox(ListPodSandboxRequest::default()).await })
            .map(|r| r.items.into_iter().map(|s| s.id).collect())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Through CRI first, so the plugin's DELs release the addresses
        // and containerd unmounts and deletes what it made.
        if let Ok(ids) = self.list_sandboxes() {
            for id in ids {
                let _ = self.stop_sandbox(&id);
                if let Err(e) = self.remove_sandbox(&id) {
                    eprintln!("teardown: RemovePodSandbox {id}: {e}");
                }
            }
        }
        if let Some(mut daemon) = self.daemon.take() {
            daemon.stop();
        }
        for line in clean_up(self.dir.path()) {
            eprintln!("teardown: {line}");
        }
    }
}

/// Removes what a containerd whose files are all under `dir` left behind
/// (see [`clean_up_runtime_dir`]), and the sockets of shims killed there.
fn clean_up(dir: &Path) -> Vec<String> {
    let runc_root = dir.join("runc").join("k8s.io");
    let ids: BTreeSet<String> = logged_calls(&dir.join(PLUGIN_LOG))
        .into_iter()
        .map(|c| c.container)
        .chain(
            std::fs::read_dir(&runc_root)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned()),
        )
        .collect();
    let report = clean_up_runtime_dir(dir, &runc_root);
    for id in ids {
        remove_shim_socket(&dir.join(SOCKET), &id);
    }
    report
}

/// Cleans up after containerd test processes that died without running
/// their destructors (killed by a timeout).
fn sweep_stale_runs() {
    for dir in stale_runtime_dirs(CONFIG) {
        for line in clean_up(&dir) {
            eprintln!("stale run {}: {line}", dir.display());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Removes the socket a killed shim left: containerd 1.6 puts it at
/// `/run/containerd/s/<sha256 of "<containerd address>/<namespace>/<id>">`
/// (runtime/v2/shim/util_unix.go, `SocketAddress`), whatever the
/// configured state directory.
fn remove_shim_socket(containerd_socket: &Path, sandbox_id: &str) {
    let key = format!("{}/k8s.io/{sandbox_id}", containerd_socket.display());
    let Ok(mut child) = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    else {
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(key.as_bytes());
    }
    let Ok(out) = child.wait_with_output() else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(hex) = text.split_whitespace().next() {
        let _ = std::fs::remove_file(Path::new("/run/containerd/s").join(hex));
    }
}

/// containerd's configuration: everything under `dir`, the CRI plugin on
/// our CNI directories, a local sandbox image, runc.
fn config_toml(dir: &Path, socket: &Path, bin_dir: &Path, conf_dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
# Snapshotters and tracing this test does not use (and that would probe the
# machine's filesystems).
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This machine's root lacks CAP_SYS_RESOURCE: runc could not set the
  # sandbox's oom_score_adj of -998 below its own.
  restrict_oom_score_adj = true
  # Sandbox namespaces stay in /var/run/netns (the default), as on a real
  # node: ipamd runs in a mount namespace of its own (`ip netns exec`
  # here, a container in a cluster) and sees only mounts that propagate to
  # it, which `ip netns add` arranges for /run/netns and nothing arranges
  # for a directory of ours. The teardown removes the ones this test made.
  netns_mounts_under_state_dir = false
  disable_tcp_service = true

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # runc's state under our directory rather than /run/containerd/runc.
        Root = "{d}/runc"
"#,
        socket = socket.display(),
        bin = bin_dir.display(),
        conf = conf_dir.display(),
    )
}

/// A gRPC channel over containerd's Unix socket (the URI is a placeholder:
/// the connector ignores it).
async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::1]:50051")
        .expect("a valid placeholder URI")
        .connect_timeout(CALL_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
}

/// A running sandbox as CRI reports it.
#[derive(Debug, Clone)]
struct Sandbox {
    id: String,
    namespace: String,
    name: String,
    ip: Ipv4Addr,
    netns: PathBuf,
}

/// The address ipamd's status lists for container `id`, if any.
fn ipamd_addr(node: &Node, id: &str) -> Option<(Value, Ipv4Addr)> {
    status_pods(node)
        .into_iter()
        .find(|p| p["containerId"] == id)
        .map(|p| {
            let addr = p["addr"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("status record without addr: {p}"));
            (p, addr)
        })
}

/// The secondary addresses ipamd holds on its ENIs.
fn vpc_addresses(node: &Node) -> Vec<Ipv4Addr> {
    let status = status_json(node);
    status["enis"]
        .as_array()
        .expect("status lists ENIs")
        .iter()
        .flat_map(|e| e["secondaryIps"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().and_then(|s| s.parse().ok()))
        .collect()
}

#[test]
#[ignore = "privileged: needs root, containerd and runc (scripts/setup-runtimes.sh)"]
fn cri_sandboxes_get_vpc_addresses_reach_each_other_and_release_them() {
    let node = Node::start();
    let mut ctd = Containerd::start(&node);

    let version = ctd
        .call(|mut c| async move { c.version(VersionRequest::default()).await })
        .expect("Version");
    assert_eq!(version.runtime_name, "containerd", "{version:?}");
    assert_eq!(
        version.runtime_api_version, "v1",
        "containerd must serve CRI runtime.v1: {version:?}"
    );

    // Six pods in two namespaces, started at once as kubelet does: six
    // concurrent ADDs through containerd.
    let pods = [
        ("team-a", "web-0"),
        ("team-a", "web-1"),
        ("team-a", "web-2"),
        ("team-b", "db-0"),
        ("team-b", "db-1"),
        ("team-b", "db-2"),
    ];
    let ids = ctd.run_sandboxes(&pods);
    let sandboxes: Vec<Sandbox> = ids.iter().map(|id| ctd.sandbox(id)).collect();

    // Every sandbox got a distinct VPC address from ipamd, which knows it
    // under the sandbox id, namespace and name kubelet would have sent.
    let vpc = vpc_addresses(&node);
    let mut seen = BTreeMap::new();
    for (sb, (ns, name)) in sandboxes.iter().zip(pods) {
        assert_eq!((sb.namespace.as_str(), sb.name.as_str()), (ns, name));
        assert!(
            vpc.contains(&sb.ip),
            "{ns}/{name} got {} which is not a secondary address of the node's ENIs {vpc:?}",
            sb.ip
        );
        let (record, addr) = ipamd_addr(&node, &sb.id)
            .unwrap_or_else(|| panic!("ipamd lists no {}: {}", sb.id, status_json(&node)));
        assert_eq!(addr, sb.ip, "CRI and ipamd disagree: {record}");
        assert_eq!(record["namespace"], ns, "{record}");
        assert_eq!(record["name"], name, "{record}");
        assert_eq!(record["netns"], sb.netns.to_str().unwrap(), "{record}");
        if let Some(other) = seen.insert(sb.ip, sb.id.clone()) {
            panic!("{} and {other} share {}", sb.id, sb.ip);
        }
    }
    assert_eq!(used(&node), pods.len() as u64);

    // They reach each other (across the two namespaces too), and the node
    // reaches them: a TCP echo from inside one sandbox's namespace to a
    // listener inside another's.
    for (i, from) in sandboxes.iter().enumerate() {
        let to = &sandboxes[(i + 1) % sandboxes.len()];
        tcp_reachable(&from.netns, &to.netns, to.ip).unwrap_or_else(|e| {
            panic!(
                "{}/{} cannot reach {}/{} at {}: {e}",
                from.namespace, from.name, to.namespace, to.name, to.ip
            )
        });
    }
    tcp_reachable(node.netns().path(), &sandboxes[0].netns, sandboxes[0].ip)
        .unwrap_or_else(|e| panic!("the node cannot reach {}: {e}", sandboxes[0].ip));

    // An app container in the first sandbox, as kubelet starts one: it
    // joins the sandbox's namespace, so it has the pod's address on eth0
    // and reaches the other pods from inside the container.
    ctd.import(&image_archive("busybox.tar"));
    let app = ctd.start_container(&ids[0], pods[0], &["sleep", "600"]);
    let (code, out) = ctd.exec(&app, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(
        code == 0 && out.contains(&format!("{}/32", sandboxes[0].ip)),
        "the app container's eth0 ({code}): {out}"
    );
    for other in &sandboxes[1..] {
        let target = other.ip.to_string();
        let (code, out) = ctd.exec(&app, &["ping", "-c1", "-W2", &target]);
        assert_eq!(
            code, 0,
            "the app container cannot ping {}/{} at {target}: {out}",
            other.namespace, other.name
        );
    }

    // Stop releases the address (DEL with the namespace); Remove sends DEL
    // again with CNI_NETNS empty, which must succeed on a pod already gone.
    let (first, rest) = sandboxes.split_first().expect("six sandboxes");
    ctd.stop_sandbox(&first.id)
        .unwrap_or_else(|e| panic!("StopPodSandbox {}: {e}", first.id));
    assert!(
        ipamd_addr(&node, &first.id).is_none(),
        "the address of a stopped sandbox is still held: {}",
        status_json(&node)
    );
    assert_eq!(used(&node), rest.len() as u64);
    for sb in rest {
        assert!(
            ipamd_addr(&node, &sb.id).is_some(),
            "{} lost its address",
            sb.id
        );
    }
    ctd.remove_sandbox(&first.id)
        .unwrap_or_else(|e| panic!("RemovePodSandbox {}: {e}", first.id));
    for sb in rest {
        ctd.stop_sandbox(&sb.id)
            .unwrap_or_else(|e| panic!("StopPodSandbox {}: {e}", sb.id));
        ctd.remove_sandbox(&sb.id)
            .unwrap_or_else(|e| panic!("RemovePodSandbox {}: {e}", sb.id));
    }
    assert_eq!(
        ctd.list_sandboxes().expect("ListPodSandbox"),
        Vec::<String>::new()
    );
    assert_eq!(used(&node), 0, "{}", status_json(&node));
    assert_eq!(status_pods(&node), Vec::<Value>::new());

    // What the plugin saw: one ADD per sandbox with containerd's namespace
    // path, then DEL on stop with that path and DEL on remove without one.
    let calls = logged_calls(&ctd.plugin_log);
    let mut by_container: HashMap<&str, Vec<_>> = HashMap::new();
    for c in &calls {
        by_container
            .entry(c.container.as_str())
            .or_default()
            .push(c);
    }
    for sb in &sandboxes {
        let seq: Vec<(&str, bool)> = by_container
            .get(sb.id.as_str())
            .map(|cs| {
                cs.iter()
                    .filter(|c| c.cmd != "VERSION")
                    .map(|c| (c.cmd.as_str(), c.netns.is_empty()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            seq,
            [("ADD", false), ("DEL", false), ("DEL", true)],
            "calls for {}:\n{}",
            sb.id,
            runtimes::plugin_log_text(&ctd.plugin_log)
        );
        let add = calls
            .iter()
            .find(|c| c.container == sb.id && c.cmd == "ADD")
            .expect("an ADD");
        assert_eq!(Path::new(&add.netns), sb.netns, "{}", add.line);
    }

    // containerd removed each sandbox's namespace.
    for sb in &sandboxes {
        assert!(
            wait_until(Duration::from_secs(5), || !sb.netns.exists()),
            "{} is still there after RemovePodSandbox",
            sb.netns.display()
        );
    }
}
