//! Real container runtimes (containerd's CRI plugin, podman) for the tests
//! that run them end to end: where `scripts/setup-runtimes.sh` left the
//! offline images, the CNI directories a runtime is pointed at, a guard for
//! a runtime daemon started inside a node namespace, and the clean-up a
//! runtime needs beyond killing it (mounts, leftover shims/conmons).
//!
//! A runtime's host side runs under `nsenter --net=<node ns>`, not
//! `ip netns exec`: the latter also remounts `/sys` in a new mount
//! namespace, which breaks runc's cgroup setup (see
//! shared/notes/MACHINE-FACTS.md). Everything a runtime writes (its root,
//! state, sockets, runc state) goes under one [`TempDir`] of the test.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::{bin_path, wait_until, Netns, Node};

/// Overrides where the offline image archives are looked up.
pub const IMAGES_ENV: &str = "VPC_CNI_E2E_IMAGES";

/// Where `scripts/setup-runtimes.sh` writes the offline image archives.
pub const DEFAULT_IMAGES_DIR: &str = "/var/lib/vpc-cni-e2e/images";

/// The sandbox ("pause") image: podman builds it offline around catatonit.
pub const PAUSE_IMAGE: &str = "localhost/podman-pause:4.3.1-0";

/// A busybox-static image with every applet linked (sh, nc, ping, ip).
pub const BUSYBOX_IMAGE: &str = "localhost/vpccni-busybox:1";

/// The packaged reference plugins (for `loopback`).
pub const DEBIAN_CNI_DIR: &str = "/usr/lib/cni";

/// Where the image archives are (`$VPC_CNI_E2E_IMAGES` or the default).
pub fn images_dir() -> PathBuf {
    std::env::var_os(IMAGES_ENV).map_or_else(|| PathBuf::from(DEFAULT_IMAGES_DIR), PathBuf::from)
}

/// The path of an image archive (`pause.tar`, `busybox.tar`); panics with
/// the command that makes it when it is missing.
#[track_caller]
pub fn image_archive(file: &str) -> PathBuf {
    let path = images_dir().join(file);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup-runtimes.sh (as root) first",
        path.display()
    );
    path
}

/// Panics, naming the setup script, unless every program is on `PATH`.
/// The test command installs them; a missing one is a broken set-up, not a
/// reason to skip.
#[track_caller]
pub fn require_programs(programs: &[&str]) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for p in programs {
        let found = std::env::split_paths(&path).any(|d| d.join(p).is_file());
        assert!(
            found,
            "`{p}` is not installed: run scripts/setup-runtimes.sh (as root) first"
        );
    }
}

/// Makes `<dir>/cni-bin` holding exactly what a conflist of ours needs:
/// `vpc-cni` (the workspace's build) and `loopback` (which containerd runs
/// for every sandbox's `lo`). Runtimes take one plugin directory, and the
/// build directory holds far more than plugins.
pub fn cni_bin_dir(dir: &Path) -> PathBuf {
    let bin = dir.join("cni-bin");
    std::fs::create_dir_all(&bin).expect("create the CNI bin dir");
    let links = [
        ("vpc-cni", bin_path("vpc-cni")),
        ("loopback", Path::new(DEBIAN_CNI_DIR).join("loopback")),
    ];
    for (name, target) in links {
        assert!(
            target.exists(),
            "{} is missing: run scripts/setup.sh",
            target.display()
        );
        std::os::unix::fs::symlink(&target, bin.join(name))
            .unwrap_or_else(|e| panic!("link {name} in {}: {e}", bin.display()));
    }
    bin
}

/// A conflist named `name` with one `vpc-cni` plugin talking to `node`'s
/// daemon and logging every call (at debug) to `plugin_log`.
pub fn vpc_conflist(node: &Node, name: &str, plugin_log: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [{
            "type": "vpc-cni",
            "ipamdSocket": node.socket(),
            "logFile": plugin_log,
            "logLevel": "debug",
        }],
    })
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json(path: &Path, value: &Value) {
    let text = serde_json::to_string_pretty(value).expect("a Value serialises");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// One call the plugin logged: `cmd`, `container`, `netns` of a line of
/// its log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedCall {
    /// `ADD`, `DEL`, ...
    pub cmd: String,
    /// `CNI_CONTAINERID`.
    pub container: String,
    /// `CNI_NETNS` (empty when the runtime sent none).
    pub netns: String,
    /// The whole line, for failure messages.
    pub line: String,
}

/// The calls in the plugin's log file (lines without `cmd=` are skipped).
pub fn logged_calls(plugin_log: &Path) -> Vec<LoggedCall> {
    let text = plugin_log_text(plugin_log);
    text.lines()
        .filter_map(|line| {
            Some(LoggedCall {
                cmd: quoted_field(line, "cmd")?,
                container: quoted_field(line, "container").unwrap_or_default(),
                netns: quoted_field(line, "netns").unwrap_or_default(),
                line: line.to_string(),
            })
        })
        .collect()
}

/// The value of `key="…"` in a logfmt line.
fn quoted_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!(" {key}=\""))? + key.len() + 3;
    let rest = &line[start..];
    Some(rest[..rest.find('"')?].to_string())
}

// ---------------------------------------------------------------------------
// A runtime daemon inside a node namespace
// ---------------------------------------------------------------------------

/// A long-running process started with `nsenter --net=<node ns>`, its
/// output in a log file. Dropping it sends SIGTERM, then SIGKILL after a
/// grace period; if the test is panicking, the log's tail is printed.
#[derive(Debug)]
pub struct NsDaemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl NsDaemon {
    /// Starts `program args…` in `netns`'s network namespace (every other
    /// namespace stays the machine's), stdout and stderr to `log`.
    pub fn spawn(name: &str, netns: &Netns, program: &str, args: &[&str], log: &Path) -> Self {
        let out =
            std::fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("dup the log file");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.path_str()))
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn nsenter {program}: {e}"));
        NsDaemon {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (at most `timeout`) until `ready` holds, polling every 50 ms;
    /// panics with the log if the process exits or time runs out.
    #[track_caller]
    pub fn wait_ready(&mut self, timeout: Duration, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited during start-up ({status}); its log:\n{}",
                    self.name,
                    self.log()
                );
            }
            if ready() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} was not ready within {timeout:?}; its log:\n{}",
                    self.name,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, up to 10 s for a clean exit, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} ignored SIGTERM for 10 s; killing it", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for NsDaemon {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "----- {} log ({}), last 8 KiB -----\n{}\n----- end of {} log -----",
                self.name,
                self.log.display(),
                tail(&self.log, 8192),
                self.name
            );
        }
        self.stop();
    }
}

/// The last `bytes` of a file.
fn tail(path: &Path, bytes: u64) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

// ---------------------------------------------------------------------------
// Clean-up after a runtime
// ---------------------------------------------------------------------------

/// Everything a runtime whose files are all under `dir` may leave behind,
/// removed after its daemon was stopped (or its test process died):
/// processes still pointing into `dir` (shims, conmons) are killed and
/// their containers deleted with runc (state under `runc_root`), then the
/// pods' network namespaces, libcni's cached results, the mounts under
/// `dir` and the cgroup parent named after `dir` are removed. The
/// directory itself is left to its owner. Returns what it had to do, one
/// line per kind, for the test's output.
pub fn clean_up_runtime_dir(dir: &Path, runc_root: &Path) -> Vec<String> {
    let mut report = Vec::new();
    let plugin_log = dir.join(PLUGIN_LOG);
    let killed = kill_processes_under(dir);
    if !killed.is_empty() {
        report.push(format!("killed processes left behind: {killed:?}"));
        // A killed shim or conmon leaves its container running.
        let mut ids: Vec<String> = logged_calls(&plugin_log)
            .into_iter()
            .map(|c| c.container)
            .collect();
        if runc_root.starts_with(dir) {
            if let Ok(entries) = std::fs::read_dir(runc_root) {
                ids.extend(
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned()),
                );
            }
        }
        ids.sort();
        ids.dedup();
        for id in ids.iter().filter(|id| !id.is_empty()) {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(runc_root)
                .args(["delete", "--force", id])
                .stderr(Stdio::null())
                .status();
        }
    }
    let netns = remove_logged_netns(&plugin_log);
    if !netns.is_empty() {
        report.push(format!("removed pod namespaces left behind: {netns:?}"));
    }
    let cached = remove_cached_results(&plugin_log);
    if !cached.is_empty() {
        report.push(format!("removed cached CNI results: {cached:?}"));
    }
    let stuck = unmount_all_under(dir);
    if !stuck.is_empty() {
        report.push(format!("could not unmount {stuck:?}"));
    }
    if let Some(name) = dir.file_name().and_then(|n| n.to_str()) {
        remove_cgroup_parent(name);
    }
    report
}

/// The file name, in a runtime test's directory, of the plugin's log (what
/// the clean-up reads to know the test's containers and namespaces).
pub const PLUGIN_LOG: &str = "plugin.log";

/// Directories of this kit (`<tmp>/vpccni-e2e-<pid>-dir<n>`) holding
/// `marker` whose test process is gone: a run killed by a timeout cannot
/// run its destructors, and a runtime's leftovers (running containers,
/// mounts) outlive it. The caller cleans them up with
/// [`clean_up_runtime_dir`] and removes them.
pub fn stale_runtime_dirs(marker: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let pid = name
                .strip_prefix(&format!("{}-", crate::PREFIX))?
                .split('-')
                .next()?
                .parse::<u32>()
                .ok()?;
            let dead = !Path::new(&format!("/proc/{pid}")).exists();
            (dead && e.path().join(marker).exists()).then(|| e.path())
        })
        .collect()
}

/// Pids of the processes whose command line names a path under `dir`
/// (containerd shims, conmons: they name the runtime's directories).
pub fn processes_under(dir: &Path) -> Vec<i32> {
    let needle = format!("{}/", dir.display());
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
            if u32::try_from(pid) == Ok(me) {
                return None;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(&needle)
                .then_some(pid)
        })
        .collect()
}

/// Gives the processes a runtime left under `dir` two seconds to exit on
/// their own (a conmon or shim outlives its container briefly), then
/// SIGKILLs those still there and returns their pids. Only processes that
/// point into the test's own temporary directory are touched.
pub fn kill_processes_under(dir: &Path) -> Vec<i32> {
    if wait_until(Duration::from_secs(2), || processes_under(dir).is_empty()) {
        return Vec::new();
    }
    processes_under(dir)
        .into_iter()
        .filter(|&pid| kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok())
        .collect()
}

/// Removes the network namespaces a runtime made for the pods of a test and
/// left behind (it was killed, or failed half-way): every `CNI_NETNS` the
/// plugin logged under `/run/netns` or `/var/run/netns` that still exists
/// is unmounted and deleted. Returns the ones removed.
pub fn remove_logged_netns(plugin_log: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for call in logged_calls(plugin_log) {
        let path = PathBuf::from(&call.netns);
        let ours = path.starts_with("/run/netns") || path.starts_with("/var/run/netns");
        if !ours || !path.exists() || removed.contains(&path) {
            continue;
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&path)
            .stderr(Stdio::null())
            .status();
        if std::fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Where libcni (inside containerd and podman) caches each attachment's
/// result, as `<network>-<container id>-<ifname>`.
pub const CNI_CACHE_RESULTS: &str = "/var/lib/cni/results";

/// Removes the cached results of the containers the plugin logged. A
/// runtime deletes them itself on a successful DEL; this is for a runtime
/// that was killed before it could. Container ids are 64 random hex
/// digits, so a name holding one is ours.
pub fn remove_cached_results(plugin_log: &Path) -> Vec<PathBuf> {
    let ids: Vec<String> = logged_calls(plugin_log)
        .into_iter()
        .map(|c| c.container)
        .filter(|id| id.len() >= 32)
        .collect();
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(CNI_CACHE_RESULTS) else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if ids.iter().any(|id| name.contains(&format!("-{id}-")))
            && std::fs::remove_file(e.path()).is_ok()
        {
            removed.push(e.path());
        }
    }
    removed
}

/// The plugin's log so far (empty before the first call), for failure
/// messages and [`logged_calls`].
pub fn plugin_log_text(plugin_log: &Path) -> String {
    std::fs::read_to_string(plugin_log).unwrap_or_default()
}

/// The cgroup parent a test's runtime puts its containers under: named
/// after the test's runtime directory, which is how
/// [`clean_up_runtime_dir`] finds it again.
pub fn cgroup_parent_of(dir: &Path) -> String {
    dir.file_name()
        .and_then(|n| n.to_str())
        .expect("the temp dir has an ASCII name")
        .to_string()
}

/// Removes cgroup `/<name>` (and anything left below it) from every
/// hierarchy under /sys/fs/cgroup: runc deletes a container's own cgroup but
/// not the parent a runtime was told to put it in.
pub fn remove_cgroup_parent(name: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        remove_cgroup_tree(&h.path().join(name));
    }
}

/// rmdir children first: a cgroup directory goes only when it has none.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(children) = std::fs::read_dir(dir) {
        for c in children.flatten() {
            if c.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&c.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Mount points at or under `dir`, deepest first (so each can be
/// unmounted before its parent).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// Unmounts (lazily, so a busy mount still goes) everything at or under
/// `dir`; returns what could not be unmounted.
pub fn unmount_all_under(dir: &Path) -> Vec<PathBuf> {
    // A mount can be stacked several times on one point: repeat until
    // nothing is left or a round makes no progress.
    for _ in 0..8 {
        let points = mounts_under(dir);
        if points.is_empty() {
            return points;
        }
        let mut progress = false;
        for p in &points {
            let ok = Command::new("umount")
                .arg("-l")
                .arg(p)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            progress |= ok;
        }
        if !progress {
            break;
        }
    }
    mounts_under(dir)
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash as
/// octal.
fn unescape_mount_path(field: &str) -> PathBuf {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            if let Ok(n) = u8::from_str_radix(&code, 8) {
                out.push(char::from(n));
                continue;
            }
            out.push('\\');
            out.push_str(&code);
        } else {
            out.push(c);
        }
    }
    PathBuf::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_fields_are_read() {
        let line = r#"ts=1.0 level=info plugin=vpc-cni cmd="DEL" container="abc" pod="ns/p" netns="" ifname="eth0" dur_ms=0 result=ok"#;
        assert_eq!(quoted_field(line, "cmd").as_deref(), Some("DEL"));
        assert_eq!(quoted_field(line, "container").as_deref(), Some("abc"));
        assert_eq!(quoted_field(line, "netns").as_deref(), Some(""));
        assert_eq!(quoted_field(line, "missing"), None);
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(
            unescape_mount_path(r"/tmp/a\040b/c"),
            PathBuf::from("/tmp/a b/c")
        );
        assert_eq!(unescape_mount_path("/plain"), PathBuf::from("/plain"));
    }
}
