//! Running `ip` (iproute2), which makes and removes the namespaces.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};

use super::DemoError;

/// `ip <args>` in a process group of its own.
///
/// A Ctrl-C in the terminal goes to the whole foreground process group, and
/// so does `timeout -s INT` (it signals its group too). Killed halfway, an
/// `ip netns add` or `ip netns del` can leave a namespace behind; the demo
/// takes the signal alone and undoes everything in order instead.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(args).stdin(Stdio::null()).process_group(0);
    cmd
}

/// Runs `ip <args>` and returns its stdout; fails with its stderr.
pub fn run(args: &[&str]) -> Result<String, DemoError> {
    let what = format!("ip {}", args.join(" "));
    let out = command(args).output().map_err(|source| DemoError::Spawn {
        what: what.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(DemoError::Failed {
            what,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// `ip netns del <name>`; a namespace already gone is not an error.
///
/// Tried again if a signal killed it: a group-wide Ctrl-C can still hit a
/// child spawned at that very moment, before it moved to its own group.
pub fn delete_netns(name: &str) -> Result<String, String> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match run(&["netns", "del", name]) {
            Ok(_) => return Ok(format!("namespace {name} deleted")),
            Err(DemoError::Failed { stderr, .. }) if stderr.contains("No such file") => {
                return Ok(format!("namespace {name} was already gone"))
            }
            Err(DemoError::Failed { status, .. }) if status.signal().is_some() && attempts < 3 => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}
