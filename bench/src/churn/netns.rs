//! Network namespaces: the node namespace the whole harness runs in, and
//! the pod namespaces a runtime would make.
//!
//! Every namespace is created with `ip netns add` (not measured) and
//! registered, so the guard can delete whatever is left, also on error.
//! A pod namespace is deleted after its DEL the way containerd does it,
//! in-process (unmount the bind mount, remove the file), which is also what
//! `ip netns del` does; the kernel tears the namespace down asynchronously.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use nix::sched::{setns, CloneFlags};

use super::Result;

/// Prefix of every namespace (and the temporary directory) of this harness:
/// `vpccni-bench-<pid>` for the node, `vpccni-bench-<pid>-<tag>` for pods.
pub const PREFIX: &str = "vpccni-bench";

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// The namespaces this process created and has not deleted yet.
#[derive(Debug, Default)]
pub struct Namespaces {
    live: Mutex<BTreeSet<String>>,
}

/// The name of this process's node namespace.
pub fn node_name() -> String {
    format!("{PREFIX}-{}", std::process::id())
}

/// The name of a pod namespace of this process.
pub fn pod_name(tag: &str) -> String {
    format!("{}-{tag}", node_name())
}

/// `/run/netns/<name>`.
pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

impl Namespaces {
    /// `ip netns add <name>`; returns its path.
    pub fn create(&self, name: &str) -> Result<PathBuf> {
        let out = Command::new("ip").args(["netns", "add", name]).output()?;
        if !out.status.success() {
            return Err(format!(
                "ip netns add {name} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        self.lock().insert(name.to_string());
        Ok(path_of(name))
    }

    /// Deletes a namespace as a runtime does after DEL.
    pub fn delete(&self, name: &str) -> Result<()> {
        let path = path_of(name);
        umount2(&path, MntFlags::MNT_DETACH)
            .map_err(|e| format!("unmounting {}: {e}", path.display()))?;
        std::fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
        self.lock().remove(name);
        Ok(())
    }

    /// Deletes every namespace still registered; returns the names that
    /// could not be deleted.
    pub fn delete_all(&self) -> Vec<String> {
        let names: Vec<String> = self.lock().iter().cloned().collect();
        names
            .into_iter()
            .filter(|name| self.delete(name).is_err() && !ip_netns_del(name))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // A worker that panicked mid-insert leaves a usable set behind.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Moves the calling thread into the namespace `name`. Threads and children
/// started afterwards from this thread inherit it.
pub fn enter(name: &str) -> Result<()> {
    let path = path_of(name);
    let file = File::open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    setns(&file, CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("entering network namespace {name}: {e}"))?;
    Ok(())
}

/// Links in the calling thread's namespace.
pub fn link_count() -> Result<usize> {
    let out = Command::new("ip").args(["-o", "link", "show"]).output()?;
    if !out.status.success() {
        return Err("ip -o link show failed".into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().count())
}

/// Waits up to `timeout` until the kernel has torn down the links of
/// deleted pod namespaces (at most `baseline` links left), so that one
/// plugin's round does not pay for the other's teardown.
pub fn wait_for_links(baseline: usize, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while link_count()? > baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn ip_netns_del(name: &str) -> bool {
    Command::new("ip")
        .args(["netns", "del", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Deletes namespaces of this harness left by runs that no longer exist
/// (a run killed by SIGKILL cannot clean up).
pub fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = owner_pid(&name) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("pod-churn: deleting namespace {name} left by an earlier run");
                ip_netns_del(&name);
            }
        }
    }
}

/// The pid in `vpccni-bench-<pid>[-...]`.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?.strip_prefix('-')?;
    rest.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_only_our_names() {
        assert_eq!(owner_pid("vpccni-bench-42"), Some(42));
        assert_eq!(owner_pid("vpccni-bench-42-ours-7"), Some(42));
        assert_eq!(owner_pid("vpccni-e2e-42-ns1"), None);
        assert_eq!(owner_pid("vpccni-benchmark"), None);
        assert_eq!(owner_pid("cni-1234"), None);
    }

    #[test]
    fn names_carry_the_pid() {
        assert_eq!(owner_pid(&pod_name("ref-3")), Some(std::process::id()));
    }
}
