//! The guard around a run: the node namespace this process lives in, the
//! temporary directory, ipamd, and every pod namespace. Dropping it (after
//! success, an error, a panic, or SIGINT/SIGTERM noticed by the workloads)
//! stops ipamd and deletes all of them.

use std::path::{Path, PathBuf};

use super::daemon::Daemon;
use super::netns::{self, Namespaces};
use super::Result;

/// What a run owns.
#[derive(Debug)]
pub struct Harness {
    namespaces: Namespaces,
    dir: PathBuf,
    daemon: Option<Daemon>,
}

impl Harness {
    /// Creates the temporary directory and the node namespace
    /// `vpccni-bench-<pid>`, and moves the calling thread into it. Call it
    /// before any thread is spawned: threads and children started later
    /// inherit the namespace, so both plugins and ipamd run in it.
    pub fn enter_node() -> Result<Self> {
        let dir = std::env::temp_dir().join(netns::node_name());
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let harness = Harness {
            namespaces: Namespaces::default(),
            dir,
            daemon: None,
        };
        let node = netns::node_name();
        harness.namespaces.create(&node)?;
        netns::enter(&node)?;
        Ok(harness)
    }

    /// The temporary directory (socket, state, ipamd's log, host-local's leases).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The namespace registry.
    pub fn namespaces(&self) -> &Namespaces {
        &self.namespaces
    }

    /// Starts ipamd (stopped when the harness drops).
    pub fn start_daemon(
        &mut self,
        bin_dir: &Path,
        pods: usize,
        durability: Option<&str>,
    ) -> Result<&mut Daemon> {
        let daemon = Daemon::start(bin_dir, &self.dir, pods, durability)?;
        Ok(self.daemon.insert(daemon))
    }

    /// What to add to an error: whether ipamd is still running, and the
    /// end of its log.
    pub fn daemon_report(&mut self) -> Option<String> {
        let daemon = self.daemon.as_mut()?;
        let mut out = match daemon.exit_status() {
            Some(status) => format!("ipamd is no longer running ({status})"),
            None => "ipamd is still running".to_string(),
        };
        let log = daemon.log_tail();
        if !log.trim().is_empty() {
            out.push_str(&format!("; its log ends with:\n{log}"));
        }
        Some(out)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.stop();
        }
        let left = self.namespaces.delete_all();
        if !left.is_empty() {
            eprintln!(
                "pod-churn: could not delete namespaces {left:?}; `ip netns del` them by hand"
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
