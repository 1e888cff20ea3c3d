//! The crash-safe checkpoint of allocations under the state directory.
//!
//! A snapshot (`checkpoint.json`, written whole: write + fsync + rename +
//! directory fsync) plus an append-only journal of changes since
//! (`journal-<generation>.log`). Every change is one journal line; a single
//! writer thread appends whatever changes are waiting and fsyncs once for
//! all of them (group commit), so concurrent ADDs share one fsync instead of
//! queueing behind a whole-file rewrite each. ADD answers only once its line
//! is durable ([`Commit::durable`]). When the journal has grown past twice
//! the live records (and at least [`COMPACT_MIN_OPS`] lines) the writer
//! writes a new snapshot of the next generation and starts a new journal.
//!
//! A crash at any instant leaves a readable state: a torn last journal line
//! (the only line a crash can tear) is dropped, since the call it belonged
//! to never answered. Anything else that does not read back is reported in
//! [`Loaded::problems`], the unreadable file is kept aside (`*.unreadable`),
//! and the caller rebuilds from the kernel and the cloud (see
//! `crate::reconcile`). Formats: [`format`]; aws-node's checkpoint:
//! [`awsnode`].

pub mod awsnode;
pub mod format;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use self::format::{journal_generation, journal_name, parse_snapshot, SnapshotOut};
pub use self::format::{JournalEntry, RecordKey, CURRENT_VERSION};

/// File name of the snapshot inside the state directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";

/// The journal is compacted into a new snapshot only past this many lines
/// (and twice the live records), so a busy node rewrites the snapshot
/// rarely: its cost is spread over at least this many changes.
pub const COMPACT_MIN_OPS: usize = 1024;

/// Journal space written (as zeros) ahead of use. Appends then overwrite
/// blocks the file already has, so an fdatasync flushes only data: no
/// file-system journal commit, which on ext4 would also wait for every other
/// process's dirty data (measured: 0.1 ms vs several ms on a busy node).
pub const JOURNAL_CHUNK: u64 = 2 << 20;

/// How long a lazy change ([`Store::put_lazy`]) waits (at most twice this)
/// for a durable one to ride with before it is written and fsynced on its
/// own.
pub const LAZY_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether an ADD waits for its allocation to be on disk
/// (`VPC_CNI_DURABILITY`, read by [`crate::config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// ADD answers after the fsync that made its allocation durable (the
    /// default).
    Sync,
    /// ADD answers at once; the journal is still written, moments later. A
    /// crash may lose the last allocations (reconcile then finds them in the
    /// kernel). For benchmarks and for comparison.
    Async,
}

/// A record the store keeps.
pub trait Record: Serialize + DeserializeOwned + Clone + Send + 'static {
    /// Whose allocation it is.
    fn key(&self) -> RecordKey;
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or the state directory could not be read or written.
    #[error("state directory {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The writer could not make a change durable.
    #[error("checkpoint not written: {0}")]
    NotDurable(#[from] CommitError),
}

/// Why a change handed to the writer is not known to be on disk. Every
/// change of a failed batch gets the same error, hence `Clone` (and the
/// I/O error behind an `Arc`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// Appending the batch to the journal (or its fsync) failed.
    #[error("{}: {source}", .path.display())]
    Append {
        /// The journal file.
        path: PathBuf,
        /// The error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The writer thread is gone, so nothing will be written.
    #[error("the checkpoint writer stopped")]
    WriterStopped,
}

/// What [`Store::load`] found.
#[derive(Debug)]
pub struct Loaded<R> {
    /// The allocations read back (`None`: no checkpoint at all, a first
    /// start or a node coming from another CNI).
    pub records: Option<Vec<R>>,
    /// The snapshot's format version, when there was one.
    pub version: Option<u32>,
    /// Journal lines applied on top of the snapshot.
    pub journal_ops: usize,
    /// What could not be read. Non-empty means the records are incomplete:
    /// the caller must rebuild what is missing from the kernel and cloud.
    pub problems: Vec<String>,
}

enum Op<R> {
    Put(R),
    Del(RecordKey),
}

struct Pending<R> {
    op: Op<R>,
    done: Option<oneshot::Sender<Result<(), CommitError>>>,
    /// Written with the next batch, but no reason for an fsync of its own:
    /// the next durable change (or compaction) carries it to disk.
    lazy: bool,
}

struct Queue<R> {
    pending: Vec<Pending<R>>,
}

struct Shared<R> {
    queue: Mutex<Queue<R>>,
    wake: Condvar,
}

/// The checkpoint.
pub struct Store<R> {
    dir: PathBuf,
    durability: Durability,
    shared: Arc<Shared<R>>,
    /// The generation [`Store::load`] found; [`Store::start`] writes the next.
    loaded_generation: Mutex<u64>,
    /// Where the writer records each journal append (set before `start`).
    metrics: std::sync::OnceLock<crate::metrics::CheckpointMetrics>,
}

/// A change handed to the writer. [`Commit::durable`] waits until it is on
/// disk (at once under [`Durability::Async`]).
#[must_use = "a commit must be awaited for the change to be known durable"]
pub struct Commit(Option<oneshot::Receiver<Result<(), CommitError>>>);

impl Commit {
    /// Waits until the change is on disk.
    pub async fn durable(self) -> Result<(), StoreError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.into()),
                Err(_) => Err(CommitError::WriterStopped.into()),
            },
        }
    }
}

impl<R: Record> Store<R> {
    /// Prepares the state directory (mode 0700). Nothing is written until
    /// [`Store::start`].
    pub fn open(dir: &Path, durability: Durability) -> Result<Arc<Self>, StoreError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
        Ok(Arc::new(Self {
            dir: dir.to_path_buf(),
            durability,
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    pending: Vec::new(),
                }),
                wake: Condvar::new(),
            }),
            loaded_generation: Mutex::new(0),
            metrics: std::sync::OnceLock::new(),
        }))
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the snapshot and replays its journal. Unreadable files are
    /// renamed `*.unreadable` (kept for a human; the next snapshot must not
    /// overwrite the evidence) and described in [`Loaded::problems`].
    pub fn load(&self) -> Loaded<R> {
        let mut out = Loaded {
            records: None,
            version: None,
            journal_ops: 0,
            problems: Vec::new(),
        };
        let mut map: BTreeMap<RecordKey, R> = BTreeMap::new();
        let path = self.dir.join(CHECKPOINT_FILE);
        let mut generation = None;
        match fs::read(&path) {
            Ok(bytes) => match parse_snapshot(&bytes) {
                Ok(snap) => {
                    out.version = Some(snap.version);
                    generation = Some(snap.generation);
                    for (i, value) in snap.allocations.into_iter().enumerate() {
                        match serde_json::from_value::<R>(value) {
                            Ok(r) => {
                                map.insert(r.key(), r);
                            }
                            Err(e) => out.problems.push(format!(
                                "{}: allocation #{i} unreadable: {e}",
                                path.display()
                            )),
                        }
                    }
                }
                Err(e) => {
                    out.problems
                        .push(format!("{}: {e} ({} bytes)", path.display(), bytes.len()));
                    set_aside(&path);
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => out.problems.push(format!("{}: {e}", path.display())),
        }
        let journals = self.journal_files();
        // Without a readable snapshot the newest journal still holds whole
        // records of recent ADDs: take what it has.
        let replay = match generation {
            Some(g) => Some(g),
            None => journals.last().copied(),
        };
        if let Some(g) = replay {
            if generation.is_none() && !journals.is_empty() {
                out.problems.push(format!(
                    "journal {} found without its snapshot",
                    journal_name(g)
                ));
            }
            out.journal_ops = self.replay(g, &mut map, &mut out.problems);
            *self.loaded_generation.lock().expect("store mutex poisoned") = g;
        }
        if generation.is_some() || !map.is_empty() || !out.problems.is_empty() {
            out.records = Some(map.into_values().collect());
        }
        out
    }

    fn journal_files(&self) -> Vec<u64> {
        let mut gens: Vec<u64> = fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| journal_generation(&e.file_name().to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default();
        gens.sort_unstable();
        gens
    }

    /// Applies `journal-<g>.log` to `map`; returns the lines applied. A
    /// crash can tear only the end of the file (a partial line, or zeros the
    /// file system allocated but never wrote): that tail is dropped quietly.
    /// A bad line followed by good ones is damage, reported.
    fn replay(
        &self,
        g: u64,
        map: &mut BTreeMap<RecordKey, R>,
        problems: &mut Vec<String>,
    ) -> usize {
        let path = self.dir.join(journal_name(g));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
            Err(e) => {
                problems.push(format!("{}: {e}", path.display()));
                return 0;
            }
        };
        let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        let mut applied = 0;
        let mut bad: Option<(usize, String)> = None;
        for (i, line) in lines.iter().enumerate() {
            let last = i + 1 == lines.len();
            if line.iter().all(|&b| b == 0 || b.is_ascii_whitespace()) {
                continue;
            }
            match serde_json::from_slice::<JournalEntry<R>>(line) {
                Ok(entry) if bad.is_none() => {
                    match entry {
                        JournalEntry::Put { record } => {
                            map.insert(record.key(), record);
                        }
                        JournalEntry::Del { key } => {
                            map.remove(&key);
                        }
                    }
                    applied += 1;
                }
                Ok(_) => {
                    // Good lines after a bad one: the file is damaged in
                    // the middle, not torn at the end.
                    let (n, e) = bad.take().expect("checked");
                    problems.push(format!(
                        "{}: line {} unreadable ({e}); later lines ignored",
                        path.display(),
                        n + 1
                    ));
                    set_aside(&path);
                    return applied;
                }
                Err(e) => {
                    if bad.is_none() {
                        bad = Some((i, e.to_string()));
                    }
                    if last {
                        break;
                    }
                }
            }
        }
        if let Some((n, e)) = bad {
            tracing::warn!(journal = %path.display(), line = n + 1, error = %e, "dropped a torn last journal entry (its call never answered)");
        }
        applied
    }

    /// Records the latency and result of every journal append (write +
    /// fsync) in `metrics`. Call before [`Self::start`].
    pub fn observe_with(&self, metrics: crate::metrics::CheckpointMetrics) {
        let _ = self.metrics.set(metrics);
    }

    /// Writes a fresh snapshot of `records` (the next generation), removes
    /// older journals, and starts the writer thread. Call once, after
    /// reconcile decided what is true; changes queued before are written
    /// after the snapshot.
    pub fn start(self: &Arc<Self>, records: Vec<R>) -> Result<(), StoreError> {
        let generation = *self.loaded_generation.lock().expect("store mutex poisoned") + 1;
        let map: BTreeMap<RecordKey, R> = records.into_iter().map(|r| (r.key(), r)).collect();
        let journal = compact(&self.dir, generation, &map)?;
        let writer = Writer {
            dir: self.dir.clone(),
            generation,
            journal,
            offset: 0,
            allocated: JOURNAL_CHUNK,
            map,
            ops_since_snapshot: 0,
            metrics: self.metrics.get().cloned(),
        };
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || writer.run(&shared))
            .map_err(|source| StoreError::Io {
                path: self.dir.clone(),
                source,
            })?;
        tracing::info!(generation, dir = %self.dir.display(), "checkpoint written; journal started");
        Ok(())
    }

    /// Records that `record` now holds its address.
    pub fn put(&self, record: R) -> Commit {
        self.submit(Op::Put(record), false)
    }

    /// Records a detail of `record` that can be lost in a crash without
    /// harm (it can be read back from the kernel): queued after every change
    /// before it, written with the next batch, but made durable only by the
    /// next change that asks for it (or the next compaction).
    pub fn put_lazy(&self, record: R) {
        let _ = self.submit(Op::Put(record), true);
    }

    /// Records that `key` holds nothing any more.
    pub fn del(&self, key: RecordKey) -> Commit {
        self.submit(Op::Del(key), false)
    }

    fn submit(&self, op: Op<R>, lazy: bool) -> Commit {
        let (tx, rx) = match self.durability {
            Durability::Sync if !lazy => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            _ => (None, None),
        };
        self.shared
            .queue
            .lock()
            .expect("store queue poisoned")
            .pending
            .push(Pending { op, done: tx, lazy });
        // A lazy change waits for the next durable one: no wake-up, so the
        // caller pays for none and the writer does not fsync for it alone.
        if !lazy {
            self.shared.wake.notify_one();
        }
        Commit(rx)
    }
}

struct Writer<R> {
    dir: PathBuf,
    generation: u64,
    journal: File,
    /// Where the next line goes.
    offset: u64,
    /// How much of the file is written (zeros past `offset`).
    allocated: u64,
    /// What the snapshot plus the journal say: the next snapshot's content.
    map: BTreeMap<RecordKey, R>,
    ops_since_snapshot: usize,
    metrics: Option<crate::metrics::CheckpointMetrics>,
}

impl<R: Record> Writer<R> {
    /// Takes every waiting change, appends them in one write, fsyncs once,
    /// answers them all; repeats. Blocking I/O on a thread of its own keeps
    /// it off the async workers.
    fn run(mut self, shared: &Shared<R>) {
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            let batch: Vec<Pending<R>> = {
                let mut q = shared.queue.lock().expect("store queue poisoned");
                // Durable changes wake us; lazy ones do not (that would cost
                // the caller a wake-up), so the wait is timed: a lazy change
                // rides with the next durable one, or goes on its own once it
                // has waited a whole LAZY_FLUSH.
                while q.pending.iter().all(|p| p.lazy) {
                    let had_lazy = !q.pending.is_empty();
                    let (guard, waited) = shared
                        .wake
                        .wait_timeout(q, LAZY_FLUSH)
                        .expect("store queue poisoned");
                    q = guard;
                    if waited.timed_out() && had_lazy {
                        break;
                    }
                }
                std::mem::take(&mut q.pending)
            };
            buf.clear();
            for p in &batch {
                let line = match &p.op {
                    Op::Put(r) => {
                        serde_json::to_writer(&mut buf, &JournalEntry::Put { record: r.clone() })
                    }
                    Op::Del(k) => {
                        serde_json::to_writer(&mut buf, &JournalEntry::<R>::Del { key: k.clone() })
                    }
                };
                if let Err(e) = line {
                    tracing::error!(error = %e, "cannot serialise a journal entry");
                }
                buf.push(b'\n');
            }
            let started = std::time::Instant::now();
            let written = self.append(&buf).map_err(|e| CommitError::Append {
                path: self.dir.join(journal_name(self.generation)),
                source: Arc::new(e),
            });
            if let Some(m) = &self.metrics {
                m.observe_write(written.is_ok(), started.elapsed());
            }
            if let Err(e) = &written {
                tracing::error!(error = %e, "journal append failed");
            }
            let n = batch.len();
            for p in batch {
                match p.op {
                    Op::Put(r) => {
                        self.map.insert(r.key(), r);
                    }
                    Op::Del(k) => {
                        self.map.remove(&k);
                    }
                }
                if let Some(done) = p.done {
                    let _ = done.send(written.clone());
                }
            }
            self.ops_since_snapshot += n;
            if written.is_ok() && self.ops_since_snapshot >= COMPACT_MIN_OPS.max(2 * self.map.len())
            {
                match compact(&self.dir, self.generation + 1, &self.map) {
                    Ok(journal) => {
                        self.generation += 1;
                        self.journal = journal;
                        self.offset = 0;
                        self.allocated = JOURNAL_CHUNK;
                        self.ops_since_snapshot = 0;
                        tracing::debug!(generation = self.generation, "journal compacted");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "journal compaction failed; journal kept")
                    }
                }
            }
        }
    }
}

impl<R> Writer<R> {
    /// Writes `buf` at the end of the journal's lines and makes it durable.
    /// Past the zeroed space, another chunk is zeroed first (once per
    /// [`JOURNAL_CHUNK`]: its fsync carries the size change).
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let end = self.offset + buf.len() as u64;
        if end > self.allocated {
            let grow = (end - self.allocated).div_ceil(JOURNAL_CHUNK) * JOURNAL_CHUNK;
            zero_fill(&self.journal, self.allocated, grow)?;
            self.allocated += grow;
            self.journal.sync_all()?;
        }
        self.journal.write_all_at(buf, self.offset)?;
        self.journal.sync_data()?;
        self.offset = end;
        Ok(())
    }
}

/// Writes `len` zero bytes at `at`.
fn zero_fill(file: &File, at: u64, len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let zeros = vec![0u8; 64 * 1024];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at + done)?;
        done += n as u64;
    }
    Ok(())
}

/// Writes the snapshot of `generation` atomically, creates its (empty)
/// journal, makes both durable, then removes older journals. A crash at any
/// point leaves either the old snapshot with its journal or the new one.
fn compact<R: Record>(
    dir: &Path,
    generation: u64,
    map: &BTreeMap<RecordKey, R>,
) -> Result<File, StoreError> {
    let io = |source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let records: Vec<R> = map.values().cloned().collect();
    let bytes = serde_json::to_vec_pretty(&SnapshotOut {
        version: CURRENT_VERSION,
        generation,
        allocations: &records,
    })
    .map_err(|e| io(std::io::Error::other(e)))?;
    // The new journal exists (empty: zeros) before the snapshot naming it
    // does; the directory fsync after the rename makes both durable.
    let journal = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(dir.join(journal_name(generation)))
        .map_err(io)?;
    zero_fill(&journal, 0, JOURNAL_CHUNK).map_err(io)?;
    journal.sync_all().map_err(io)?;
    write_atomically(dir, CHECKPOINT_FILE, &bytes)?;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.filter_map(|e| e.ok()) {
            if journal_generation(&e.file_name().to_string_lossy()).is_some_and(|g| g < generation)
            {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Ok(journal)
}

fn set_aside(path: &Path) {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".unreadable");
    let _ = fs::rename(path, &aside);
}

/// write + fsync + rename + directory fsync: a crash leaves either the old
/// or the new file, never a torn one.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    vpc_cni_durable_file::write_atomically(dir, name, bytes).map_err(|source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests;
