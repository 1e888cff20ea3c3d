//! The Unix socket the plugin talks to: one JSON request per connection.
//!
//! The socket is bound before the pool is ready so that the plugin gets a
//! clear "starting" answer (code 11, kubelet retries) rather than a refused
//! connection. Only root may talk to it: the socket is 0600 in a 0700
//! directory, and the peer's uid is checked with SO_PEERCRED as well, so a
//! misconfigured mount cannot open it up.
//!
//! Each connection is served from `accept` to its answer on one thread of a
//! small pool of our own, blocked in `accept` on the shared socket (the
//! kernel wakes one thread per connection), not on the async runtime: a pod
//! call enters the pod's network namespace and makes blocking netlink
//! calls, and on the runtime every call would pay for handing a worker's
//! queue to another thread and back (`block_in_place`) and for the wake-ups
//! between tasks — measured, that was a fifth of ipamd's time per ADD. The
//! calls still run the pod service's async code, with
//! [`tokio::runtime::Handle::block_on`] on the calling thread. The pool grows
//! when every thread is busy (a call may wait seconds for the warm pool to
//! grow) and shrinks back after a minute idle.

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cni_plugin::error as code;
use cni_plugin::wire::{Request, Response, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use cni_plugin::CniError;
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::pod::PodService;
use crate::timing::{Laps, Phase};

/// How long a client may take to send its request, and to take its answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Threads always waiting in `accept`.
const MIN_THREADS: usize = 8;
/// At most this many calls are served at once; more wait in the backlog.
const MAX_THREADS: usize = 256;
/// A thread beyond [`MIN_THREADS`] that saw no connection for this long ends.
const IDLE_EXIT: Duration = Duration::from_secs(60);
/// How long shutdown waits for calls in progress to answer.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where requests go once the daemon is ready; empty while it starts.
pub type ServiceSlot = Arc<OnceLock<Arc<PodService>>>;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another daemon already serves this socket.
    #[error("another ipamd is already serving {0}")]
    InUse(String),
    /// Creating the directory or binding failed.
    #[error("socket {path}: {source}")]
    Io {
        /// The socket path.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Binds the socket at `path`: directory 0700, socket 0600. A stale socket
/// file (left by a crash) is replaced; a live one is an error.
pub fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let shown = path.display().to_string();
    let io_err = |source| ServerError::Io {
        path: shown.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ServerError::InUse(shown));
        }
        std::fs::remove_file(path).map_err(io_err)?;
    }
    let listener = UnixListener::bind(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    // Lets an idle thread beyond the minimum notice that it can end.
    setsockopt(
        &listener,
        sockopt::ReceiveTimeout,
        &TimeVal::new(IDLE_EXIT.as_secs() as i64, 0),
    )
    .map_err(|e| io_err(io::Error::from(e)))?;
    Ok(listener)
}

/// What the serving threads share.
struct Pool {
    listener: UnixListener,
    service: ServiceSlot,
    /// Named in "starting" answers, so kubelet's events say which daemon.
    socket: String,
    runtime: tokio::runtime::Handle,
    stopping: AtomicBool,
    threads: AtomicUsize,
    idle: AtomicUsize,
    /// Held by every thread; shutdown waits until all are dropped.
    alive: Mutex<Option<std::sync::mpsc::Sender<()>>>,
}

/// Serves connections until `shutdown` completes, then waits (a few
/// seconds at most) for calls in progress to answer. Call it on the
/// multi-threaded runtime: the serving threads run the pod service's async
/// code on it.
pub async fn run(listener: UnixListener, service: ServiceSlot, shutdown: impl Future<Output = ()>) {
    let socket = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
        .unwrap_or_default();
    let (alive, gone) = std::sync::mpsc::channel::<()>();
    let pool = Arc::new(Pool {
        listener,
        service,
        socket,
        runtime: tokio::runtime::Handle::current(),
        stopping: AtomicBool::new(false),
        threads: AtomicUsize::new(0),
        idle: AtomicUsize::new(0),
        alive: Mutex::new(Some(alive)),
    });
    for _ in 0..MIN_THREADS {
        if let Err(e) = spawn_thread(&pool) {
            tracing::error!(error = %e, "cannot start a thread for the CNI socket");
        }
    }
    shutdown.await;
    pool.stopping.store(true, Ordering::Release);
    drop(pool.alive.lock().expect("server mutex poisoned").take());
    // Wakes every thread blocked in `accept` (it fails with EINVAL).
    let _ = nix::sys::socket::shutdown(
        std::os::fd::AsRawFd::as_raw_fd(&pool.listener),
        nix::sys::socket::Shutdown::Both,
    );
    let drained = tokio::task::spawn_blocking(move || gone.recv_timeout(DRAIN_TIMEOUT)).await;
    if !matches!(
        drained,
        Ok(Err(std::sync::mpsc::RecvTimeoutError::Disconnected))
    ) {
        tracing::warn!("calls still in progress at shutdown were cut");
    }
}

fn spawn_thread(pool: &Arc<Pool>) -> io::Result<()> {
    let Some(alive) = pool.alive.lock().expect("server mutex poisoned").clone() else {
        return Ok(());
    };
    pool.threads.fetch_add(1, Ordering::AcqRel);
    pool.idle.fetch_add(1, Ordering::AcqRel);
    let for_thread = pool.clone();
    let spawned = std::thread::Builder::new()
        .name("cni".into())
        .spawn(move || {
            serve_connections(&for_thread);
            drop(alive);
        });
    if let Err(e) = spawned {
        pool.threads.fetch_sub(1, Ordering::AcqRel);
        pool.idle.fetch_sub(1, Ordering::AcqRel);
        return Err(e);
    }
    Ok(())
}

/// One thread's life: accept, serve, repeat. Counts itself idle while it
/// waits in `accept`; the last idle thread to take a connection starts
/// another, so a slow call never holds up the next one.
fn serve_connections(pool: &Arc<Pool>) {
    loop {
        let accepted = pool.listener.accept();
        let stopping = pool.stopping.load(Ordering::Acquire);
        match accepted {
            Ok((stream, _)) => {
                let laps = Laps::default();
                let was_idle = pool.idle.fetch_sub(1, Ordering::AcqRel);
                if stopping {
                    pool.idle.fetch_add(1, Ordering::AcqRel);
                    break;
                }
                if was_idle == 1 && pool.threads.load(Ordering::Acquire) < MAX_THREADS {
                    if let Err(e) = spawn_thread(pool) {
                        tracing::warn!(error = %e, "cannot start another thread for the CNI socket");
                    }
                }
                contained(|| serve_one(stream, pool, laps));
                pool.idle.fetch_add(1, Ordering::AcqRel);
            }
            Err(_) if stopping => break,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // Idle for IDLE_EXIT: end if the pool can spare us, and
                // never as the last thread waiting in `accept` (a thread
                // that just took a connection counted on us being there).
                let leave_idle = pool
                    .idle
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n > 1).then(|| n - 1)
                    })
                    .is_ok();
                if leave_idle {
                    let spare = pool
                        .threads
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                            (n > MIN_THREADS).then(|| n - 1)
                        })
                        .is_ok();
                    if spare {
                        return;
                    }
                    pool.idle.fetch_add(1, Ordering::AcqRel);
                }
            }
            // A signal (SIGHUP reloads the configuration) cut the wait.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    pool.threads.fetch_sub(1, Ordering::AcqRel);
    pool.idle.fetch_sub(1, Ordering::AcqRel);
}

/// Runs one connection's call. A panicking call loses its connection (the
/// plugin reports it, the runtime retries), not the thread: a pool whose
/// threads died one panic at a time would stop accepting.
fn contained(call: impl FnOnce() -> io::Result<()>) {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "connection ended with an error"),
        Err(_) => tracing::error!("a CNI call panicked; its connection was dropped"),
    }
}

fn serve_one(mut stream: UnixStream, pool: &Pool, mut laps: Laps) -> io::Result<()> {
    laps.lap(Phase::Accept);
    let mut command = None;
    let response = match getsockopt(&stream, sockopt::PeerCredentials) {
        Ok(cred) if cred.uid() == 0 => match read_request(&mut stream, &mut laps) {
            Ok(req) => {
                command = Some(req.command);
                dispatch(req, pool, &mut laps)
            }
            Err(e) => Response::Error(e),
        },
        Ok(cred) => {
            // Read (and drop) the request first: closing a socket with unread
            // data resets it, and the client would never see why.
            let _ = read_request(&mut stream, &mut laps);
            tracing::warn!(
                uid = cred.uid(),
                pid = cred.pid(),
                "refused a client that is not root"
            );
            Response::Error(CniError::new(
                code::INTERNAL,
                format!(
                    "permission denied: ipamd serves only root, the caller runs as uid {}",
                    cred.uid()
                ),
            ))
        }
        Err(e) => Response::Error(CniError::new(
            code::INTERNAL,
            format!("cannot read peer credentials: {e}"),
        )),
    };
    let bytes = serde_json::to_vec(&response).map_err(io::Error::other)?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(&bytes)?;
    let done = stream.shutdown(Shutdown::Write);
    laps.lap(Phase::Respond);
    if let (Some(command), Some(service)) = (command, pool.service.get()) {
        service.after_answer(command, &laps);
    }
    done
}

fn read_request(stream: &mut UnixStream, laps: &mut Laps) -> Result<Request, CniError> {
    let mut buf = Vec::with_capacity(4096);
    let read = stream.set_read_timeout(Some(IO_TIMEOUT)).and_then(|()| {
        (&mut *stream)
            .take(MAX_FRAME_BYTES as u64 + 1)
            .read_to_end(&mut buf)
    });
    match read {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(CniError::new(
                code::IO_FAILURE,
                "request not received in time",
            ))
        }
        Err(e) => {
            return Err(CniError::new(
                code::IO_FAILURE,
                format!("reading request: {e}"),
            ))
        }
        Ok(_) => {}
    }
    laps.lap(Phase::Read);
    let decoded = decode_request(&buf);
    laps.lap(Phase::Decode);
    decoded
}

/// Decodes one request frame: the protocol version first (so an
/// incompatible plugin gets a version error, code 105, rather than a
/// confusing decode error), then the shape (code 6). Never panics, whatever
/// the bytes.
pub fn decode_request(buf: &[u8]) -> Result<Request, CniError> {
    if buf.len() > MAX_FRAME_BYTES {
        return Err(CniError::new(
            code::DECODE_FAILURE,
            format!("request larger than {MAX_FRAME_BYTES} bytes"),
        ));
    }
    // One pass for a well-formed frame of our version; anything else takes
    // the careful path below, which says what is wrong with it.
    if let Ok(req) = serde_json::from_slice::<Request>(buf) {
        if req.v == PROTOCOL_VERSION {
            return Ok(req);
        }
    }
    let value: serde_json::Value = serde_json::from_slice(buf)
        .map_err(|e| CniError::new(code::DECODE_FAILURE, format!("malformed request: {e}")))?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if v == PROTOCOL_VERSION as u64 => {}
        other => {
            return Err(CniError::new(
                code::PROTOCOL_MISMATCH,
                format!(
                    "plugin speaks wire protocol {}, ipamd speaks {PROTOCOL_VERSION}; install matching versions",
                    other.map_or("unknown".to_string(), |v| v.to_string())
                ),
            ))
        }
    }
    serde_json::from_value(value)
        .map_err(|e| CniError::new(code::DECODE_FAILURE, format!("malformed request: {e}")))
}

fn dispatch(req: Request, pool: &Pool, laps: &mut Laps) -> Response {
    let Some(service) = pool.service.get() else {
        let code = if req.command == cni_plugin::wire::Command::Status {
            code::PLUGIN_NOT_AVAILABLE
        } else {
            code::TRY_AGAIN_LATER
        };
        return Response::Error(CniError::new(
            code,
            format!(
                "ipamd at {} is starting (filling its address pool); try again shortly",
                pool.socket
            ),
        ));
    };
    match pool.runtime.block_on(service.handle(req, laps)) {
        Ok(result) => Response::Ok { result },
        Err(e) => Response::Error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_call_does_not_end_its_thread() {
        contained(|| panic!("a bug in one call"));
        contained(|| Err(io::Error::other("peer went away")));
        // Still here: the thread goes back to `accept`.
    }
}
