//! Undoing everything the demo made: on success, on error, on panic and on
//! SIGINT/SIGTERM/SIGHUP.
//!
//! Each resource is recorded in the [`Registry`] with the registry locked
//! for the whole of its creation, so the signal path (which drains the
//! registry from its own thread) sees either nothing or the finished
//! resource, never a namespace created but not yet recorded. [`Guard`]
//! drains the registry when dropped; [`on_signals`] drains it when a signal
//! arrives, then exits. Draining closes the registry: nothing can be created
//! after it.

use std::io::{self, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::ip;
use super::render::ms;
use super::DemoError;

/// How long the daemon gets to exit on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// How to undo one thing the demo made.
pub enum Undo {
    /// `ip netns del <name>`.
    DeleteNetns(String),
    /// SIGTERM the process, SIGKILL it after [`STOP_GRACE`].
    StopProcess(&'static str, Arc<Mutex<Child>>),
    /// `rm -r <dir>`.
    RemoveDir(PathBuf),
}

/// What one undo did (`Ok`) or why it failed (`Err`).
pub type Outcome = Result<String, String>;

impl Undo {
    fn run(self) -> Outcome {
        match self {
            Undo::DeleteNetns(name) => ip::delete_netns(&name),
            Undo::StopProcess(what, child) => stop(what, &child),
            Undo::RemoveDir(dir) => remove_dir(&dir),
        }
    }
}

#[derive(Default)]
struct State {
    undo: Vec<Undo>,
    closed: bool,
}

/// What is left to undo. Cloning shares it.
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<State>>);

impl Registry {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must never stop the cleanup.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `create` with the registry locked and records the undo it
    /// returns. Fails with [`DemoError::Interrupted`] once cleanup has begun.
    pub fn track<T>(
        &self,
        create: impl FnOnce() -> Result<(T, Undo), DemoError>,
    ) -> Result<T, DemoError> {
        let mut state = self.lock();
        if state.closed {
            return Err(DemoError::Interrupted);
        }
        let (value, undo) = create()?;
        state.undo.push(undo);
        Ok(value)
    }

    /// Undoes everything, newest first, and closes the registry. Every undo
    /// runs even when an earlier one failed.
    pub fn drain(&self) -> Vec<Outcome> {
        undo_all(&mut self.lock())
    }

    /// [`Registry::drain`], unless a drain already began: then waits for
    /// that one to end and returns `None`.
    fn drain_unless_closed(&self) -> Option<Vec<Outcome>> {
        let mut state = self.lock();
        (!state.closed).then(|| undo_all(&mut state))
    }
}

fn undo_all(state: &mut State) -> Vec<Outcome> {
    state.closed = true;
    let undo = std::mem::take(&mut state.undo);
    undo.into_iter().rev().map(Undo::run).collect()
}

/// Drains the registry when dropped, unless [`Guard::finish`] already did.
pub struct Guard(Registry);

impl Guard {
    /// Guards `registry`.
    pub fn new(registry: Registry) -> Self {
        Guard(registry)
    }

    /// Drains the registry now and returns what each undo did.
    pub fn finish(self) -> Vec<Outcome> {
        self.0.drain()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let outcomes = self.0.drain();
        if !outcomes.is_empty() {
            report(&mut io::stderr().lock(), &outcomes);
        }
    }
}

/// Writes one line per outcome.
pub fn report(out: &mut impl Write, outcomes: &[Outcome]) {
    for outcome in outcomes {
        let _ = match outcome {
            Ok(done) => writeln!(out, "  ✓ {done}"),
            Err(failed) => writeln!(out, "  ✗ {failed}"),
        };
    }
}

/// Starts a thread that, on SIGINT, SIGTERM or SIGHUP, drains `registry`
/// and exits (128 + signal). If the teardown is already running on the main
/// thread, it lets that finish and report instead.
///
/// The signals are caught by signal-hook's handler (which only writes to a
/// pipe the thread reads), not blocked: a blocked mask would be inherited by
/// every child, and the daemon would never see our SIGTERM. Caught signals
/// revert to their default action in a child at exec.
pub fn on_signals(registry: Registry) -> Result<(), DemoError> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(DemoError::Signals)?;
    thread::Builder::new()
        .name("demo-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let name = signal_hook::low_level::signal_name(sig).unwrap_or("signal");
                // Hold both streams so the main thread prints nothing meanwhile.
                let _stdout = io::stdout().lock();
                let mut err = io::stderr().lock();
                let _ = writeln!(err, "\n{name}: stopping the demo");
                match registry.drain_unless_closed() {
                    Some(outcomes) => {
                        report(&mut err, &outcomes);
                        std::process::exit(128 + sig);
                    }
                    None => {
                        let _ = writeln!(err, "  teardown is under way; letting it finish");
                    }
                }
            }
        })
        .map(drop)
        .map_err(DemoError::Signals)
}

fn stop(what: &str, child: &Mutex<Child>) -> Outcome {
    let mut child = child.lock().unwrap_or_else(PoisonError::into_inner);
    if let Ok(Some(status)) = child.try_wait() {
        return exited_early(what, status);
    }
    let pid = i32::try_from(child.id()).map_err(|e| format!("{what}: pid: {e}"))?;
    let started = Instant::now();
    signal::kill(Pid::from_raw(pid), Signal::SIGTERM)
        .map_err(|e| format!("cannot signal {what} (pid {pid}): {e}"))?;
    while started.elapsed() < STOP_GRACE {
        match child.try_wait() {
            // Killed by the signal itself: it had not set up its handler yet.
            Ok(Some(status)) if status.success() || status.signal() == Some(SIGTERM) => {
                return Ok(format!(
                    "{what} (pid {pid}) stopped on SIGTERM in {}",
                    ms(started.elapsed())
                ))
            }
            Ok(Some(status)) => {
                return Err(format!(
                    "{what} (pid {pid}) exited with {status} on SIGTERM"
                ))
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("cannot wait for {what} (pid {pid}): {e}")),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!(
        "{what} (pid {pid}) ignored SIGTERM for {STOP_GRACE:?}: killed"
    ))
}

/// Not a teardown failure: nothing is left running. A daemon that died
/// early fails the step that needed it, which reports it.
fn exited_early(what: &str, status: ExitStatus) -> Outcome {
    Ok(format!("{what} had already exited ({status})"))
}

fn remove_dir(dir: &Path) -> Outcome {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(format!("{} removed", dir.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Ok(format!("{} was already gone", dir.display()))
        }
        Err(e) => Err(format!("cannot remove {}: {e}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_newest_first_and_closes() {
        let base = std::env::temp_dir().join(format!("vpccni-demo-test-{}", std::process::id()));
        let registry = Registry::default();
        for name in ["a", "b"] {
            let dir = base.join(name);
            registry
                .track(|| {
                    std::fs::create_dir_all(&dir).map_err(|source| DemoError::Io {
                        what: "create a test dir".into(),
                        source,
                    })?;
                    Ok(((), Undo::RemoveDir(dir.clone())))
                })
                .unwrap();
        }
        let outcomes = Guard::new(registry.clone()).finish();
        let b = base.join("b").display().to_string();
        assert_eq!(outcomes[0], Ok(format!("{b} removed")));
        assert_eq!(outcomes.len(), 2);
        assert!(!base.join("a").exists());
        let after = registry.track(|| Ok(((), Undo::RemoveDir(base.clone()))));
        assert!(matches!(after, Err(DemoError::Interrupted)));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
