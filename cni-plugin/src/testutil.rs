//! Test helpers: private temp dirs and a fake ipamd on a Unix socket.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::wire::{Request, Response};

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Short on purpose: a socket path must fit in sun_path (108 bytes).
        let dir = std::env::temp_dir().join(format!(
            "vpccni-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.0.join("ipamd.sock")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fake ipamd serving exactly one connection on a thread.
pub(crate) struct FakeDaemon {
    pub(crate) socket: PathBuf,
    handle: JoinHandle<Option<Vec<u8>>>,
    _dir: TempDir,
}

impl FakeDaemon {
    /// Accepts one connection, reads the request to EOF and hands it and
    /// the stream to `handler`, which answers (or not) as the test needs.
    pub(crate) fn serve_once<F>(handler: F) -> Self
    where
        F: FnOnce(&[u8], UnixStream) + Send + 'static,
    {
        let dir = TempDir::new();
        let socket = dir.socket();
        let listener = UnixListener::bind(&socket).unwrap();
        // Polled, so a test that never connects does not hang at join.
        listener.set_nonblocking(true).unwrap();
        let handle = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(2)),
                    Err(_) => return None,
                }
            };
            stream.set_nonblocking(false).unwrap();
            let mut request = Vec::new();
            stream.read_to_end(&mut request).unwrap();
            handler(&request, stream);
            Some(request)
        });
        FakeDaemon {
            socket,
            handle,
            _dir: dir,
        }
    }

    /// Answers every request with `response`, after `check` has looked at
    /// the decoded request.
    pub(crate) fn answering<C>(response: Response, check: C) -> Self
    where
        C: FnOnce(Request) + Send + 'static,
    {
        Self::serve_once(move |raw, stream| {
            let request: Request = serde_json::from_slice(raw).expect("request is a valid frame");
            check(request);
            reply(stream, &serde_json::to_vec(&response).unwrap());
        })
    }

    /// Waits for the daemon thread; returns the raw request it read, or
    /// `None` if nobody connected. Re-raises the thread's panic, so
    /// assertions in handlers fail the test.
    pub(crate) fn join(self) -> Option<Vec<u8>> {
        match self.handle.join() {
            Ok(request) => request,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Writes `bytes` and closes; a client that already gave up is fine.
pub(crate) fn reply(mut stream: UnixStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
}
