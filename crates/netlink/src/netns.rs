//! Entering a pod's network namespace just long enough to open a socket.
//!
//! `setns` changes the calling thread only, so this runs on a thread that
//! runs no other task meanwhile (a blocking-pool thread, or a worker inside
//! `block_in_place`). A netlink socket stays bound to the
//! namespace it was created in, so we enter, open, and leave at once; all the
//! pod-side work then goes through that socket from the daemon's namespace.

use std::fs::File;
use std::io;
use std::path::Path;

use nix::sched::{setns, CloneFlags};

use crate::route::RouteSocket;

/// Why a namespace could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The netns path does not exist (the runtime already removed it).
    #[error("network namespace {path} does not exist")]
    Gone {
        /// The path.
        path: String,
    },
    /// Opening or entering failed otherwise.
    #[error("network namespace {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Opens a namespace file (`/var/run/netns/x`, `/proc/<pid>/ns/net`).
pub fn open(path: &str) -> Result<File, NetnsError> {
    File::open(Path::new(path)).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound || source.raw_os_error() == Some(libc::ESRCH) {
            NetnsError::Gone {
                path: path.to_string(),
            }
        } else {
            NetnsError::Io {
                path: path.to_string(),
                source,
            }
        }
    })
}

/// Opens a netlink socket inside the namespace behind `target`, returning the
/// calling thread to the namespace it was in (`home`).
///
/// If the thread cannot return home it must not run anything else: a
/// blocking-pool thread left in a pod's namespace would wire the next pod
/// into the wrong place, so we abort rather than continue.
pub fn socket_in(target: &File, home: &File, path: &str) -> Result<RouteSocket, NetnsError> {
    setns(target, CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Io {
        path: path.to_string(),
        source: io::Error::from(e),
    })?;
    let sock = RouteSocket::open();
    if let Err(e) = setns(home, CloneFlags::CLONE_NEWNET) {
        tracing::error!(error = %e, "cannot return to the node namespace; aborting");
        std::process::abort();
    }
    sock.map_err(|e| NetnsError::Io {
        path: path.to_string(),
        source: match e {
            crate::Error::Io(io) => io,
            other => io::Error::other(other),
        },
    })
}

/// The namespace of the calling thread, to come back to.
pub fn current() -> io::Result<File> {
    File::open("/proc/thread-self/ns/net")
}
