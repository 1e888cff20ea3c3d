//! The checkpoint of allocations under the state directory.
//!
//! A snapshot written in the background after changes (coalesced, write +
//! fsync + rename + directory fsync), kept off the ADD path; at start ipamd
//! reads it back so running pods keep their addresses. An ADD that returned
//! within the coalescing window (100 ms) before a crash is not in it yet:
//! making ADD wait for durability (group commit or a journal) and
//! reconciling with the kernel and the runtime is the crash-safety work that
//! builds on this.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::metrics::CheckpointMetrics;

/// Format version of the checkpoint file.
pub const CHECKPOINT_VERSION: u32 = 1;

/// File name inside the state directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be prepared or written.
    #[error("state directory {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The checkpoint writer.
pub struct Store {
    dir: PathBuf,
    dirty: Notify,
    metrics: OnceLock<CheckpointMetrics>,
}

#[derive(Serialize, Deserialize)]
struct Checkpoint<T> {
    version: u32,
    allocations: T,
}

impl Store {
    /// Prepares the state directory (mode 0700).
    pub fn open(dir: &Path) -> Result<Arc<Self>, StoreError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
        Ok(Arc::new(Self {
            dir: dir.to_path_buf(),
            dirty: Notify::new(),
            metrics: OnceLock::new(),
        }))
    }

    /// The allocations of the last checkpoint, if there is a readable one.
    /// A missing file is a first start; an unreadable one is reported and
    /// set aside (renamed `*.unreadable`) so that it is kept for a human and
    /// the next checkpoint does not overwrite the evidence.
    pub fn load<T: DeserializeOwned>(&self) -> Option<T> {
        let path = self.dir.join(CHECKPOINT_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read the checkpoint");
                return None;
            }
        };
        match serde_json::from_slice::<Checkpoint<T>>(&bytes) {
            Ok(c) if c.version == CHECKPOINT_VERSION => Some(c.allocations),
            Ok(c) => {
                tracing::error!(path = %path.display(), version = c.version, "checkpoint of an unknown version; not restored");
                None
            }
            Err(e) => {
                let aside = path.with_extension("json.unreadable");
                let _ = std::fs::rename(&path, &aside);
                tracing::error!(path = %path.display(), moved_to = %aside.display(), error = %e, "checkpoint unreadable; starting without it");
                None
            }
        }
    }

    /// Records every write's latency and result in `metrics`.
    pub fn observe_with(&self, metrics: CheckpointMetrics) {
        let _ = self.metrics.set(metrics);
    }

    /// Marks the allocations as changed; the writer picks it up.
    pub fn changed(&self) {
        self.dirty.notify_one();
    }

    /// Writes `snapshot()` whenever something changed, at most every `every`.
    pub async fn run<T, F>(self: Arc<Self>, every: Duration, snapshot: F)
    where
        T: Serialize + Send + 'static,
        F: Fn() -> T + Send + Sync + 'static,
    {
        loop {
            self.dirty.notified().await;
            tokio::time::sleep(every).await;
            let started = std::time::Instant::now();
            let body = Checkpoint {
                version: CHECKPOINT_VERSION,
                allocations: snapshot(),
            };
            let bytes = match serde_json::to_vec_pretty(&body) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot serialise checkpoint");
                    continue;
                }
            };
            let dir = self.dir.clone();
            match tokio::task::spawn_blocking(move || {
                write_atomically(&dir, CHECKPOINT_FILE, &bytes)
            })
            .await
            {
                Ok(Ok(())) => self.observe(true, started),
                Ok(Err(e)) => {
                    self.observe(false, started);
                    tracing::error!(error = %e, "cannot write checkpoint")
                }
                Err(e) => {
                    self.observe(false, started);
                    tracing::error!(error = %e, "checkpoint task failed")
                }
            }
        }
    }
}

impl Store {
    fn observe(&self, ok: bool, started: std::time::Instant) {
        if let Some(m) = self.metrics.get() {
            m.observe_write(ok, started.elapsed());
        }
    }
}

/// write + fsync + rename + directory fsync: a crash leaves either the old
/// or the new file, never a torn one.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let io = |source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, dir.join(name)).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_checkpoint_is_set_aside() {
        let dir = std::env::temp_dir().join(format!("vpc-cni-store-bad-{}", std::process::id()));
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.load::<Vec<u32>>(), None, "no file: first start");
        fs::write(
            dir.join(CHECKPOINT_FILE),
            b"{\"version\": 1, \"allocations\": [1, 2",
        )
        .unwrap();
        assert_eq!(store.load::<Vec<u32>>(), None);
        assert!(dir.join("checkpoint.json.unreadable").exists());
        write_atomically(
            &dir,
            CHECKPOINT_FILE,
            b"{\"version\": 1, \"allocations\": [1, 2]}",
        )
        .unwrap();
        assert_eq!(store.load::<Vec<u32>>(), Some(vec![1, 2]));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = std::env::temp_dir().join(format!("vpc-cni-store-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        write_atomically(&dir, "c.json", b"one").unwrap();
        write_atomically(&dir, "c.json", b"two").unwrap();
        assert_eq!(fs::read(dir.join("c.json")).unwrap(), b"two");
        assert!(!dir.join(".c.json.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
