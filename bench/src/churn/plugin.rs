//! One CNI plugin as a runtime execs it: a cleared environment with the
//! `CNI_*` variables, the network configuration on stdin, the result on
//! stdout. Both plugins are exec'd by exactly this code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{interrupted, Result};

/// Where Debian's containernetworking-plugins live.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// Which implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// vpc-cni + ipamd.
    Ours,
    /// ptp + host-local.
    Reference,
}

impl Impl {
    /// Short tag used in namespace and pod names.
    pub fn tag(self) -> &'static str {
        match self {
            Impl::Ours => "ours",
            Impl::Reference => "ref",
        }
    }
}

/// A pod as the runtime knows it.
#[derive(Debug, Clone)]
pub struct Pod {
    /// `K8S_POD_NAME`.
    pub name: String,
    /// `CNI_CONTAINERID` (64 hex digits, like containerd's).
    pub container_id: String,
    /// The pod's network namespace name.
    pub netns_name: String,
    /// `CNI_NETNS`.
    pub netns: PathBuf,
}

impl Pod {
    /// A pod named `<impl>-<workload>-<index>` in namespace `netns_name`.
    pub fn new(name: String, netns_name: String, netns: PathBuf) -> Self {
        let container_id = container_id(&name);
        Pod {
            name,
            container_id,
            netns_name,
            netns,
        }
    }
}

/// `K8S_POD_NAMESPACE` of every pod.
const POD_NAMESPACE: &str = "bench";

impl Pod {
    fn uid(&self) -> &str {
        &self.container_id[..32]
    }

    /// What the plugin makes of this pod's `CNI_ARGS`.
    pub fn args(&self) -> cni_plugin::wire::PodArgs {
        cni_plugin::wire::PodArgs {
            namespace: Some(POD_NAMESPACE.into()),
            name: Some(self.name.clone()),
            infra_container_id: Some(self.container_id.clone()),
            uid: Some(self.uid().into()),
        }
    }
}

/// A deterministic 64-hex-digit id derived from the pod name and this pid.
fn container_id(name: &str) -> String {
    // FNV-1a, four lanes: unique enough for one run, no dependency.
    (0u64..4)
        .map(|lane| {
            let mut h = 0xcbf2_9ce4_8422_2325u64 ^ lane ^ (u64::from(std::process::id()) << 8);
            for b in name.bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            format!("{h:016x}")
        })
        .collect()
}

/// What the no-op floor prints: enough for an ADD and a VERSION check.
const FLOOR_ANSWER: &str =
    r#"{"cniVersion":"1.0.0","supportedVersions":["1.0.0"],"ips":[{"address":"10.255.0.1/32"}]}"#;

/// A plugin binary with its network configuration.
#[derive(Debug, Clone)]
pub struct Plugin {
    binary: PathBuf,
    args: Vec<String>,
    cni_path: String,
    config: Vec<u8>,
    version_stdin: Vec<u8>,
}

impl Plugin {
    /// `vpc-cni` from `bin_dir`, talking to ipamd at `socket`.
    pub fn ours(bin_dir: &Path, socket: &Path) -> Self {
        let config = json!({
            "cniVersion": "1.1.0", "name": "vpc", "type": "vpc-cni",
            "ipamdSocket": socket,
        });
        Plugin {
            binary: bin_dir.join("vpc-cni"),
            args: Vec::new(),
            cni_path: bin_dir.display().to_string(),
            config: config.to_string().into_bytes(),
            version_stdin: br#"{"cniVersion":"1.1.0"}"#.to_vec(),
        }
    }

    /// `ptp` + `host-local` from [`REFERENCE_DIR`], leases in `data_dir`.
    pub fn reference(data_dir: &Path) -> Self {
        let config = json!({
            "cniVersion": "1.0.0", "name": "ref", "type": "ptp", "ipMasq": false, "mtu": 9001,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.1.0.0/16"}]],
                "dataDir": data_dir,
            },
        });
        Plugin {
            binary: Path::new(REFERENCE_DIR).join("ptp"),
            args: Vec::new(),
            cni_path: REFERENCE_DIR.to_string(),
            config: config.to_string().into_bytes(),
            version_stdin: br#"{"cniVersion":"1.0.0"}"#.to_vec(),
        }
    }

    /// The floor: `/bin/echo` printing a canned answer, exec'd exactly like
    /// a plugin. A small dynamically linked C program that does nothing:
    /// what process start alone costs here.
    pub fn floor() -> Self {
        Plugin {
            binary: PathBuf::from("/bin/echo"),
            args: vec![FLOOR_ANSWER.to_string()],
            cni_path: REFERENCE_DIR.to_string(),
            config: Vec::new(),
            version_stdin: Vec::new(),
        }
    }

    /// CNI ADD; fails unless the plugin exits 0 with addresses in its result.
    pub fn add(&self, pod: &Pod) -> Result<Duration> {
        let (took, out) = self.exec("ADD", Some(pod), &self.config)?;
        self.check_ips(pod, &out)?;
        Ok(took)
    }

    /// ADD as a runtime retries it: `None` when the plugin answered code 11
    /// (try again later), the time from spawn to exit when it succeeded.
    pub fn try_add(&self, pod: &Pod) -> Result<Option<Duration>> {
        let (took, out) = self.spawn_and_wait("ADD", Some(pod), &self.config)?;
        if !out.status.success() {
            let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            if answer["code"].as_u64() == Some(u64::from(cni_plugin::error::TRY_AGAIN_LATER)) {
                return Ok(None);
            }
            return Err(self.failure("ADD", Some(pod), &out, "it failed"));
        }
        self.check_ips(pod, &out)?;
        Ok(Some(took))
    }

    fn check_ips(&self, pod: &Pod, out: &Output) -> Result<()> {
        let result: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        match result["ips"].as_array() {
            Some(ips) if !ips.is_empty() => Ok(()),
            _ => Err(self.failure("ADD", Some(pod), out, "its result has no ips")),
        }
    }

    /// CNI DEL.
    pub fn del(&self, pod: &Pod) -> Result<Duration> {
        let (took, _) = self.exec("DEL", Some(pod), &self.config)?;
        Ok(took)
    }

    /// CNI VERSION: nothing but process start, argument parsing and exit.
    pub fn version(&self) -> Result<Duration> {
        let (took, out) = self.exec("VERSION", None, &self.version_stdin)?;
        let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if answer["supportedVersions"].is_array() {
            Ok(took)
        } else {
            Err(self.failure("VERSION", None, &out, "no supportedVersions in its answer"))
        }
    }

    /// The network configuration it reads on stdin.
    pub fn config(&self) -> &[u8] {
        &self.config
    }

    fn pod_env(pod: &Pod) -> Vec<(&'static str, String)> {
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={POD_NAMESPACE};K8S_POD_NAME={};\
             K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            pod.name,
            pod.container_id,
            pod.uid()
        );
        vec![
            ("CNI_CONTAINERID", pod.container_id.clone()),
            ("CNI_NETNS", pod.netns.display().to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_ARGS", args),
        ]
    }

    /// Execs the plugin and times it from spawn to exit (stdout and stderr
    /// collected). A non-zero exit is an error carrying the plugin's output.
    fn exec(&self, command: &str, pod: Option<&Pod>, stdin: &[u8]) -> Result<(Duration, Output)> {
        let (took, out) = self.spawn_and_wait(command, pod, stdin)?;
        if !out.status.success() {
            return Err(self.failure(command, pod, &out, "it failed"));
        }
        Ok((took, out))
    }

    /// Execs the plugin and times it from spawn to exit, whatever its exit.
    fn spawn_and_wait(
        &self,
        command: &str,
        pod: Option<&Pod>,
        stdin: &[u8],
    ) -> Result<(Duration, Output)> {
        if interrupted() {
            return Err("interrupted".into());
        }
        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", &self.cni_path)
            .envs(pod.map(Self::pod_env).unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot exec {}: {e}", self.binary.display()))?;
        // A config is far below the pipe's capacity: writing it whole and
        // closing stdin cannot block on a plugin that has not read yet.
        let mut pipe = child.stdin.take().ok_or("stdin is piped")?;
        let written = pipe.write_all(stdin);
        drop(pipe);
        let out = child.wait_with_output()?;
        let took = started.elapsed();
        if interrupted() {
            return Err("interrupted".into());
        }
        // A plugin may answer without reading stdin (ptp's VERSION does);
        // on a loaded machine it can exit before we write: not a failure.
        match written {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(format!("writing {}'s stdin: {e}", self.binary.display()).into())
            }
            _ => {}
        }
        Ok((took, out))
    }

    fn failure(&self, command: &str, pod: Option<&Pod>, out: &Output, what: &str) -> super::Error {
        let pod = pod.map_or(String::new(), |p| format!(" for pod {}", p.name));
        format!(
            "{} {command}{pod}: {what} ({})\n  stdout: {}\n  stderr: {}",
            self.binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim(),
        )
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_64_hex_and_distinct() {
        let a = container_id("ours-seq-1");
        let b = container_id("ours-seq-2");
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn configs_name_their_plugin() {
        let ours = Plugin::ours(Path::new("/b"), Path::new("/s/ipamd.sock"));
        let conf: Value = serde_json::from_slice(&ours.config).unwrap();
        assert_eq!(conf["type"], "vpc-cni");
        assert_eq!(conf["ipamdSocket"], "/s/ipamd.sock");
        let reference = Plugin::reference(Path::new("/d"));
        let conf: Value = serde_json::from_slice(&reference.config).unwrap();
        assert_eq!(conf["ipam"]["dataDir"], "/d");
        assert_eq!(reference.binary, Path::new("/usr/lib/cni/ptp"));
    }

    #[test]
    fn floor_answer_passes_the_add_and_version_checks() {
        let v: Value = serde_json::from_str(FLOOR_ANSWER).unwrap();
        assert!(v["supportedVersions"].is_array());
        assert!(!v["ips"].as_array().unwrap().is_empty());
    }
}
