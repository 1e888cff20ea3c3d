//! The Unix socket the plugin talks to: one JSON request per connection.
//!
//! The socket is bound before the pool is ready so that the plugin gets a
//! clear "starting" answer (code 11, kubelet retries) rather than a refused
//! connection. Only root may talk to it: the socket is 0600 in a 0700
//! directory, and the peer's uid is checked with SO_PEERCRED as well, so a
//! misconfigured mount cannot open it up.

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cni_plugin::error as code;
use cni_plugin::wire::{Request, Response, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use cni_plugin::CniError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::pod::PodService;

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

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
pub async fn bind(path: &Path) -> Result<UnixListener, ServerError> {
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
        if UnixStream::connect(path).await.is_ok() {
            return Err(ServerError::InUse(shown));
        }
        std::fs::remove_file(path).map_err(io_err)?;
    }
    let listener = UnixListener::bind(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    Ok(listener)
}

/// Serves connections until `shutdown` completes. Each connection runs in
/// its own task, so many calls are in flight at once.
pub async fn run(listener: UnixListener, service: ServiceSlot, shutdown: impl Future<Output = ()>) {
    // Named in "starting" answers, so kubelet's events say which daemon.
    let socket: Arc<str> = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
        .unwrap_or_default()
        .into();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (service, socket) = (service.clone(), socket.clone());
                    tokio::spawn(async move {
                        if let Err(e) = serve_one(stream, service, &socket).await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn serve_one(mut stream: UnixStream, service: ServiceSlot, socket: &str) -> io::Result<()> {
    let response = match stream.peer_cred() {
        Ok(cred) if cred.uid() == 0 => match read_request(&mut stream).await {
            Ok(req) => dispatch(req, &service, socket).await,
            Err(e) => Response::Error(e),
        },
        Ok(cred) => {
            // Read (and drop) the request first: closing a socket with unread
            // data resets it, and the client would never see why.
            let _ = read_request(&mut stream).await;
            tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), "refused a client that is not root");
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
    stream.write_all(&bytes).await?;
    stream.shutdown().await
}

async fn read_request(stream: &mut UnixStream) -> Result<Request, CniError> {
    let mut buf = Vec::with_capacity(4096);
    let read = tokio::time::timeout(
        READ_TIMEOUT,
        (&mut *stream)
            .take(MAX_FRAME_BYTES as u64 + 1)
            .read_to_end(&mut buf),
    )
    .await;
    match read {
        Err(_) => {
            return Err(CniError::new(
                code::IO_FAILURE,
                "request not received in time",
            ))
        }
        Ok(Err(e)) => {
            return Err(CniError::new(
                code::IO_FAILURE,
                format!("reading request: {e}"),
            ))
        }
        Ok(Ok(_)) => {}
    }
    decode_request(&buf)
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

async fn dispatch(req: Request, service: &ServiceSlot, socket: &str) -> Response {
    let Some(service) = service.get() else {
        let code = if req.command == cni_plugin::wire::Command::Status {
            code::PLUGIN_NOT_AVAILABLE
        } else {
            code::TRY_AGAIN_LATER
        };
        return Response::Error(CniError::new(
            code,
            format!("ipamd at {socket} is starting (filling its address pool); try again shortly"),
        ));
    };
    match service.handle(req).await {
        Ok(result) => Response::Ok { result },
        Err(e) => Response::Error(e),
    }
}
