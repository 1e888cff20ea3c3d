//! What the demo needs before it touches anything: root, `ip`, the plugin
//! binary, and (optionally) `ping`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::DemoError;

/// Where the DaemonSet installs the plugin.
const INSTALLED_PLUGIN: &str = "/opt/cni/bin/vpc-cni";

/// Programs and paths the demo runs.
#[derive(Debug)]
pub struct Tools {
    /// This `ipamd` binary, started again as `ipamd serve`.
    pub ipamd: PathBuf,
    /// The `vpc-cni` plugin binary.
    pub plugin: PathBuf,
    /// Whether `ping` can be run (ICMP checks are skipped otherwise).
    pub ping: bool,
}

/// Checks root and finds the programs.
pub fn check() -> Result<Tools, DemoError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(DemoError::NotRoot);
    }
    if !runs("ip", "-V") {
        return Err(DemoError::MissingTool("ip (iproute2)"));
    }
    let me = std::env::current_exe().map_err(|source| DemoError::Io {
        what: "find the demo's own binary".into(),
        source,
    })?;
    let ipamd = find_ipamd(&me)?;
    let plugin = find_plugin(&ipamd)?;
    Ok(Tools {
        ipamd,
        plugin,
        ping: runs("ping", "-V"),
    })
}

/// Whether `program` can be started at all (its exit status does not
/// matter: only a missing program fails to spawn).
fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The daemon next to this binary: a cargo build puts both in one
/// directory, and `ipamd demo` runs the demo from beside itself.
fn find_ipamd(me: &Path) -> Result<PathBuf, DemoError> {
    let ipamd = me.with_file_name("ipamd");
    if ipamd.is_file() {
        Ok(ipamd)
    } else {
        Err(DemoError::NoIpamd { tried: ipamd })
    }
}

/// The plugin next to the daemon (a cargo build), else the installed one.
fn find_plugin(ipamd: &Path) -> Result<PathBuf, DemoError> {
    let candidates: Vec<PathBuf> = ipamd
        .parent()
        .map(|dir| dir.join("vpc-cni"))
        .into_iter()
        .chain([PathBuf::from(INSTALLED_PLUGIN)])
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(DemoError::NoPlugin { tried: candidates })
}
