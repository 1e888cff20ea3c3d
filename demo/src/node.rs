//! The throwaway node: its network namespace, its temp dir, `ipamd serve`
//! running inside, and the `ip` commands that make namespaces.
//!
//! Everything made here is recorded in the cleanup [`Registry`] as it is
//! made.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex, PoisonError};

use super::cleanup::{Registry, Undo};
use super::ip;
use super::DemoError;

/// Where `ip netns add` mounts namespaces, as the runtime names them in
/// `CNI_NETNS` (containerd uses `/var/run/netns/cni-<uuid>`).
const NETNS_DIR: &str = "/var/run/netns";

/// A named network namespace made with `ip netns add`.
#[derive(Debug, Clone)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// `ip netns add <name>`, recorded for deletion.
    pub fn create(registry: &Registry, name: String) -> Result<Self, DemoError> {
        registry.track(|| {
            ip::run(&["netns", "add", &name])?;
            Ok((Netns { name: name.clone() }, Undo::DeleteNetns(name)))
        })
    }

    /// The name `ip netns` knows it by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its bind mount, for `CNI_NETNS` and `setns`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }
}

/// Names of the namespaces under [`NETNS_DIR`] that start with `prefix`:
/// what `ip netns list` would show, read directly, since `ip` also asks the
/// kernel for each one's id and fails when a namespace vanishes meanwhile
/// (another tool cleaning up its own).
pub fn netns_named(prefix: &str) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(NETNS_DIR)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) {
            names.push(name);
        }
    }
    Ok(names)
}

/// Creates a fresh directory (0700) under the system temp dir, recorded for
/// removal. Fails if it exists: it is never someone else's to delete.
pub fn temp_dir(registry: &Registry, name: &str) -> Result<PathBuf, DemoError> {
    let dir = std::env::temp_dir().join(name);
    registry.track(|| {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|source| DemoError::Io {
                what: format!("create {}", dir.display()),
                source,
            })?;
        Ok((dir.clone(), Undo::RemoveDir(dir.clone())))
    })
}

/// `ipamd serve` on the simulated cloud, inside the node namespace.
pub struct Daemon {
    child: Arc<Mutex<Child>>,
    pid: u32,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts `ip netns exec <node> <ipamd> serve` with its socket, state
    /// and log in `dir`, recorded for SIGTERM.
    ///
    /// Like every `ip` command it gets its own process group (see
    /// [`ip::command`]): the demo stops it itself, in order.
    pub fn start(
        registry: &Registry,
        ipamd: &Path,
        node: &Netns,
        dir: &Path,
        policy_dir: &Path,
    ) -> Result<Self, DemoError> {
        let socket = dir.join("ipamd.sock");
        let log = dir.join("ipamd.log");
        let io_err = |what: String| move |source| DemoError::Io { what, source };
        let log_file = File::create(&log).map_err(io_err(format!("create {}", log.display())))?;
        let log_out = log_file
            .try_clone()
            .map_err(io_err(format!("open {}", log.display())))?;
        registry.track(|| {
            let child = ip::command(&["netns", "exec", node.name()])
                .arg(ipamd)
                .arg("serve")
                .env("VPC_CNI_CLOUD", "sim")
                .env("VPC_CNI_SOCKET", &socket)
                .env("VPC_CNI_STATE_DIR", dir.join("state"))
                .env(
                    "VPC_CNI_POLICY_SOURCE",
                    format!("dir:{}", policy_dir.display()),
                )
                .env("RUST_LOG", "warn")
                // Plain text: the log is a file, shown only if a step fails.
                .env("NO_COLOR", "1")
                .stdout(log_out)
                .stderr(log_file)
                .spawn()
                .map_err(|source| DemoError::Spawn {
                    what: format!("ip netns exec {} {} serve", node.name(), ipamd.display()),
                    source,
                })?;
            let pid = child.id();
            let child = Arc::new(Mutex::new(child));
            let undo = Undo::StopProcess("ipamd", Arc::clone(&child));
            Ok((
                Daemon {
                    child,
                    pid,
                    socket: socket.clone(),
                    log: log.clone(),
                },
                undo,
            ))
        })
    }

    /// Its process id (`ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// How it exited, if it has.
    pub fn exited(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        child.try_wait().ok().flatten()
    }
}

/// The last `lines` lines of the file at `path`.
pub fn tail(path: &Path, lines: usize) -> io::Result<String> {
    let text = fs::read_to_string(path)?;
    let all: Vec<&str> = text.lines().collect();
    Ok(all[all.len().saturating_sub(lines)..].join("\n"))
}

#[cfg(test)]
impl Netns {
    /// A handle on a namespace that is never created (pure tests).
    pub fn for_tests(name: &str) -> Self {
        Netns { name: name.into() }
    }
}
