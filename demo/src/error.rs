//! Why a step of the demo could not go on.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use cni_plugin::CniError;

/// Why a step of the demo could not go on.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The demo was not started as root.
    #[error("ipamd demo must run as root: it creates network namespaces")]
    NotRoot,
    /// A program the demo needs is not installed.
    #[error("{0} not found")]
    MissingTool(&'static str),
    /// The plugin binary is in none of the usual places.
    #[error("vpc-cni plugin not found (tried {}); build it with `cargo build --workspace --bins`",
        .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NoPlugin {
        /// The paths looked at.
        tried: Vec<PathBuf>,
    },
    /// The daemon binary is not beside the demo's.
    #[error("ipamd not found at {}; build it with `cargo build --workspace --bins`", .tried.display())]
    NoIpamd {
        /// The path looked at.
        tried: PathBuf,
    },
    /// Signal handling could not be set up.
    #[error("cannot set up Ctrl-C handling: {0}")]
    Signals(#[source] io::Error),
    /// A file or directory operation failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A program could not be started.
    #[error("cannot run {what}: {source}")]
    Spawn {
        /// The command line.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A program failed.
    #[error("{what} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        what: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The daemon exited on its own.
    #[error("ipamd exited early ({0})")]
    DaemonExited(ExitStatus),
    /// The daemon did not answer STATUS in time.
    #[error("ipamd was not ready after {after:?}: {last}")]
    NotReady {
        /// How long the demo waited.
        after: Duration,
        /// The last STATUS answer.
        last: CniError,
    },
    /// The daemon did not answer INTROSPECT.
    #[error("ipamd status: {0}")]
    Introspect(CniError),
    /// Cleanup has begun (Ctrl-C): nothing more may be created.
    #[error("interrupted")]
    Interrupted,
}
