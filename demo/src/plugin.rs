//! Running the real `vpc-cni` binary exactly as kubelet (through the
//! container runtime) does: a cleared environment with only the `CNI_*`
//! variables, the network config on stdin, the result on stdout.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cni_plugin::CniError;
use serde_json::{json, Value};

use super::node::Netns;

/// The interface name kubelet asks for.
const IFNAME: &str = "eth0";

/// A pod as the runtime knows it when it calls the plugin.
pub struct Sandbox {
    /// Kubernetes namespace.
    pub namespace: &'static str,
    /// Pod name.
    pub name: &'static str,
    /// The sandbox (pause) container id: 64 hex characters.
    pub container_id: String,
    /// The pod UID.
    pub uid: String,
    /// Its network namespace.
    pub netns: Netns,
}

impl Sandbox {
    /// A sandbox with fresh random ids.
    pub fn new(namespace: &'static str, name: &'static str, netns: Netns) -> Self {
        let id: [u8; 32] = rand::random();
        let uid: [u8; 16] = rand::random();
        let uid = hex(&uid);
        Sandbox {
            namespace,
            name,
            container_id: hex(&id),
            uid: format!(
                "{}-{}-{}-{}-{}",
                &uid[..8],
                &uid[8..12],
                &uid[12..16],
                &uid[16..20],
                &uid[20..]
            ),
            netns,
        }
    }

    /// `namespace/name`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// `CNI_ARGS` as kubelet's dockershim/CRI path sends it.
    fn cni_args(&self) -> String {
        format!(
            "K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={};IgnoreUnknown=1",
            self.namespace, self.name, self.container_id, self.uid
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What ADD returned that the demo shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// `ips[0].address` without its prefix length.
    pub ip: Ipv4Addr,
    /// `interfaces[0].name`: the host end of the veth.
    pub host_veth: String,
}

/// The plugin binary and the network config it is called with.
pub struct Plugin {
    path: PathBuf,
    conf: String,
}

impl Plugin {
    /// The plugin at `path`, configured to reach ipamd at `socket`.
    pub fn new(path: PathBuf, socket: &Path) -> Self {
        let conf = json!({
            "cniVersion": "1.1.0",
            "name": "vpc",
            "type": "vpc-cni",
            "ipamdSocket": socket,
        });
        Plugin {
            path,
            conf: conf.to_string(),
        }
    }

    /// CNI STATUS: whether ipamd is ready for ADD.
    pub fn status(&self) -> Result<(), CniError> {
        self.exec(&[("CNI_COMMAND", "STATUS".to_string())])
            .map(drop)
    }

    /// CNI ADD for `pod`, and how long the exec took.
    pub fn add(&self, pod: &Sandbox) -> Result<(Added, Duration), CniError> {
        let (stdout, took) = self.exec(&pod_env("ADD", pod))?;
        Ok((parse_add_result(&stdout)?, took))
    }

    /// CNI DEL for `pod`, and how long the exec took.
    pub fn del(&self, pod: &Sandbox) -> Result<Duration, CniError> {
        self.exec(&pod_env("DEL", pod)).map(|(_, took)| took)
    }

    fn exec(&self, env: &[(&str, String)]) -> Result<(Vec<u8>, Duration), CniError> {
        let cni_path = self.path.parent().unwrap_or(Path::new("/opt/cni/bin"));
        let started = Instant::now();
        let mut child = Command::new(&self.path)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("CNI_PATH", cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| demo_error(format!("cannot run {}: {e}", self.path.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(self.conf.as_bytes())
                .map_err(|e| demo_error(format!("cannot write the network config: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| demo_error(format!("cannot wait for the plugin: {e}")))?;
        let took = started.elapsed();
        if out.status.success() {
            Ok((out.stdout, took))
        } else {
            Err(plugin_error(&out))
        }
    }
}

fn pod_env(command: &str, pod: &Sandbox) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", pod.container_id.clone()),
        ("CNI_NETNS", pod.netns.path().display().to_string()),
        ("CNI_IFNAME", IFNAME.to_string()),
        ("CNI_ARGS", pod.cni_args()),
    ]
}

/// An error of the demo itself, in the plugin's error shape (code 999 is
/// not one the plugin uses).
fn demo_error(msg: String) -> CniError {
    CniError::new(999, msg)
}

/// The spec's error JSON from stdout, or what the plugin said otherwise.
fn plugin_error(out: &Output) -> CniError {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        demo_error(format!(
            "plugin exited with {} and no CNI error: {}",
            out.status,
            stderr.trim()
        ))
    })
}

fn parse_add_result(stdout: &[u8]) -> Result<Added, CniError> {
    let bad = |what: &str| demo_error(format!("ADD result has no {what}"));
    let result: Value = serde_json::from_slice(stdout)
        .map_err(|e| demo_error(format!("ADD result is not JSON: {e}")))?;
    let ip = result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| bad("ips[0].address"))?;
    let host_veth = result["interfaces"][0]["name"]
        .as_str()
        .ok_or_else(|| bad("interfaces[0].name"))?
        .to_string();
    Ok(Added { ip, host_veth })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ip_and_host_veth_from_the_add_result() {
        let out = br#"{"cniVersion":"1.1.0","interfaces":[{"name":"eni0b8fc250807","mac":"0e:03:cf:8f:72:ec"},
            {"name":"eth0","sandbox":"/var/run/netns/x"}],"ips":[{"address":"10.0.0.5/32","interface":1}]}"#;
        assert_eq!(
            parse_add_result(out).unwrap(),
            Added {
                ip: Ipv4Addr::new(10, 0, 0, 5),
                host_veth: "eni0b8fc250807".into()
            }
        );
        assert!(parse_add_result(b"{}").is_err());
    }

    #[test]
    fn cni_args_carry_the_kubernetes_keys() {
        let pod = Sandbox::new(
            "shop",
            "cart-0",
            Netns::for_tests("vpccni-demo-1-shop-cart-0"),
        );
        assert_eq!(pod.container_id.len(), 64);
        assert_eq!(pod.uid.len(), 36);
        let args = pod.cni_args();
        assert!(args.starts_with("K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-0;"));
        assert!(args.ends_with(";IgnoreUnknown=1"));
        let env = pod_env("ADD", &pod);
        assert!(env.contains(&(
            "CNI_NETNS",
            "/var/run/netns/vpccni-demo-1-shop-cart-0".to_string()
        )));
    }
}
