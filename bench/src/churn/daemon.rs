//! `ipamd serve` on the simulated cloud, started in the node namespace
//! (inherited from this process) and filled before anything is measured.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cni_plugin::client::call;
use cni_plugin::wire::{Command as Verb, Request};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::{interrupted, Result};

/// The simulated instance: 15 ENIs × 49 secondary IPs.
pub const INSTANCE_TYPE: &str = "m5.24xlarge";
/// The cold node of workload (f): the scale simulation's node.
pub const COLD_INSTANCE_TYPE: &str = "m5.large";
/// Its subnet, large enough for every address the instance can hold.
pub const SUBNET: &str = "10.0.0.0/16";
/// Addresses kept in the pool beyond the pods of the largest workload.
pub const POOL_HEADROOM: usize = 50;
/// Host veths are removed with the pod namespace, as in a cluster; ipamd's
/// own reaping stays out of the measurement.
const VETH_REAP_DELAY_MS: &str = "600000";
/// How long the pool may take to fill.
const FILL_TIMEOUT: Duration = Duration::from_secs(180);

/// A running daemon; stopped on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

/// A request for ipamd without pod fields (STATUS, INTROSPECT).
pub fn node_request(command: Verb) -> Request {
    Request::for_daemon(
        command,
        serde_json::json!({"cniVersion": "1.1.0", "name": "vpc"}),
    )
}

/// The daemon's own view (what `ipamd status --json` prints): pool, ENIs,
/// pods, per-command metrics.
pub fn introspect_at(socket: &Path) -> Result<Value> {
    call(
        socket,
        &node_request(Verb::Introspect),
        Duration::from_secs(5),
    )
    .map_err(|e| format!("ipamd status: {e}").into())
}

impl Daemon {
    /// Starts `<bin_dir>/ipamd serve` with its socket, state and log in
    /// `dir`, sized to keep `pods` + headroom addresses. The daemon gets a
    /// process group of its own so a terminal's Ctrl-C reaches only the
    /// harness, which then stops it in order.
    pub fn start(
        bin_dir: &Path,
        dir: &Path,
        pods: usize,
        durability: Option<&str>,
    ) -> Result<Self> {
        Self::spawn(
            bin_dir,
            dir,
            &[
                ("VPC_CNI_SIM_INSTANCE_TYPE", INSTANCE_TYPE.to_string()),
                ("VPC_CNI_SIM_SUBNET_CIDR", SUBNET.to_string()),
                ("MINIMUM_IP_TARGET", (pods + POOL_HEADROOM).to_string()),
                ("VPC_CNI_VETH_REAP_DELAY_MS", VETH_REAP_DELAY_MS.to_string()),
                (
                    "VPC_CNI_DURABILITY",
                    durability.unwrap_or("sync").to_string(),
                ),
            ],
        )
    }

    /// Starts ipamd as a fresh node runs it: nothing in `dir`, the shipped
    /// defaults, prefix delegation on (as in the scale simulation's model),
    /// an m5.large, the sim's API latencies set to `latency`
    /// (`VPC_CNI_SIM_API_LATENCY_MS`). Spawned from the calling thread, so
    /// in its network namespace.
    pub fn start_cold(bin_dir: &Path, dir: &Path, latency: &str) -> Result<Self> {
        Self::spawn(
            bin_dir,
            dir,
            &[
                ("VPC_CNI_SIM_INSTANCE_TYPE", COLD_INSTANCE_TYPE.to_string()),
                ("ENABLE_PREFIX_DELEGATION", "true".to_string()),
                ("VPC_CNI_SIM_API_LATENCY_MS", latency.to_string()),
            ],
        )
    }

    fn spawn(bin_dir: &Path, dir: &Path, settings: &[(&str, String)]) -> Result<Self> {
        let socket = dir.join("ipamd.sock");
        let log = dir.join("ipamd.log");
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let child = Command::new(bin_dir.join("ipamd"))
            .arg("serve")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "warn")
            .env("VPC_CNI_CLOUD", "sim")
            .env("VPC_CNI_SOCKET", &socket)
            .env("VPC_CNI_STATE_DIR", dir.join("state"))
            .env(
                "VPC_CNI_AWS_NODE_CHECKPOINT",
                dir.join("aws-node-ipam.json"),
            )
            .envs(settings.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}/ipamd: {e}", bin_dir.display()))?;
        Ok(Daemon {
            child: Some(child),
            socket,
            log,
        })
    }

    /// The socket the plugin talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Waits until the pool holds `min(pods + headroom, capacity)`
    /// addresses (what `ipamd status --json` shows as `.pool.total`).
    pub fn wait_for_pool(&mut self, pods: usize) -> Result<Value> {
        let want = pods + POOL_HEADROOM;
        let started = Instant::now();
        loop {
            self.check_alive()?;
            if interrupted() {
                return Err("interrupted".into());
            }
            if let Ok(view) = self.introspect() {
                let total = view["pool"]["total"].as_u64().unwrap_or(0) as usize;
                let capacity = view["pool"]["capacity"].as_u64().unwrap_or(u64::MAX) as usize;
                if total >= want.min(capacity) {
                    return Ok(view);
                }
                if started.elapsed() > FILL_TIMEOUT {
                    return Err(format!(
                        "ipamd's pool holds {total} addresses after {FILL_TIMEOUT:?}, \
                         wanted {want}: {}",
                        view["pool"]
                    )
                    .into());
                }
            } else if started.elapsed() > FILL_TIMEOUT {
                return Err(format!("ipamd did not answer within {FILL_TIMEOUT:?}").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls CNI STATUS until ipamd says it is ready, as containerd does
    /// before it lets kubelet create sandboxes (every 5 ms here, where
    /// containerd waits seconds between checks).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            self.check_alive()?;
            if interrupted() {
                return Err("interrupted".into());
            }
            match call(
                &self.socket,
                &node_request(Verb::Status),
                Duration::from_secs(5),
            ) {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() > timeout => {
                    return Err(format!("ipamd not ready after {timeout:?}: {e}").into())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    fn introspect(&self) -> Result<Value> {
        introspect_at(&self.socket)
    }

    fn check_alive(&mut self) -> Result<()> {
        let child = self.child.as_mut().ok_or("ipamd was stopped")?;
        match child.try_wait()? {
            None => Ok(()),
            Some(status) => {
                Err(format!("ipamd exited ({status}); its log:\n{}", self.log_tail()).into())
            }
        }
    }

    /// How the daemon ended, if it has (a failed call often means it died).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// The last lines of the daemon's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
