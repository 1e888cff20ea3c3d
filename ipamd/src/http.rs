//! The daemon's HTTP listener: `/metrics` (Prometheus), `/healthz`
//! (liveness) and `/readyz` (readiness), on `VPC_CNI_METRICS_ADDR`.
//!
//! hyper 1 serves it (HTTP/1.1 only): the EC2 SDK and the Kubernetes client
//! already bring hyper into the daemon, so a correct, well-kept HTTP parser
//! costs nothing extra, where a hand-written responder would have to get
//! keep-alive, pipelining and slow clients right on its own. Connections are
//! capped and must send their headers in time, so a scraper gone wrong
//! cannot pile up tasks.
//!
//! The contract the DaemonSet's probes rely on is written out in the
//! README's "Metrics and health" section. The address is read with the rest
//! of the configuration ([`crate::config::parse_listen_addr`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::Semaphore;

use crate::metrics::{Metrics, CONTENT_TYPE};
use crate::server::ServiceSlot;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `/readyz` waits for its round trip over the CNI socket.
const SOCKET_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the health endpoints look at.
#[derive(Clone)]
pub struct Health {
    /// Set once the pod service is ready (the pool's first fill is done).
    pub service: ServiceSlot,
    /// The CNI socket, probed by `/readyz`.
    pub socket: PathBuf,
    /// Cleared if the socket's accept loop ever ends.
    pub socket_serving: Arc<AtomicBool>,
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("VPC_CNI_METRICS_ADDR {addr}: {source}")]
pub struct BindError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// Binds the listener (at start, so a port in use stops start-up).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

/// Serves until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let (metrics, health) = (metrics.clone(), health.clone());
                async move { Ok::<_, Infallible>(route(req, &metrics, &health).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

async fn route<B>(req: Request<B>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            // Encoding runs the samplers, which scan the allocator: a few
            // microseconds per thousand addresses, fine on a worker thread.
            let body = metrics.encode();
            Response::builder()
                .header("content-type", CONTENT_TYPE)
                .body(Full::new(Bytes::from(body)))
                .expect("static headers are valid")
        }
        "/healthz" => {
            if health.socket_serving.load(Ordering::Acquire) {
                text(StatusCode::OK, "ok\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the CNI socket is no longer served\n",
                )
            }
        }
        "/readyz" => match readiness(health).await {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{why}\n")),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /healthz, /readyz\n",
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static headers are valid")
}

/// Ready when the pool has started and the CNI socket answers.
async fn readiness(health: &Health) -> Result<(), String> {
    if !health.socket_serving.load(Ordering::Acquire) {
        return Err("the CNI socket is no longer served".into());
    }
    if health.service.get().is_none() {
        return Err("starting: filling the address pool".into());
    }
    tokio::time::timeout(SOCKET_PROBE_TIMEOUT, socket_round_trip(health))
        .await
        .map_err(|_| format!("{} did not answer in time", health.socket.display()))?
}

/// One connection to the CNI socket with an empty request: the server
/// answers it with a decode error without touching the pod service, which
/// proves its accept loop and connection tasks work, and is not counted as
/// a CNI request.
async fn socket_round_trip(health: &Health) -> Result<(), String> {
    let shown = health.socket.display();
    let mut stream = UnixStream::connect(&health.socket)
        .await
        .map_err(|e| format!("cannot connect to {shown}: {e}"))?;
    stream
        .shutdown()
        .await
        .map_err(|e| format!("{shown}: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("{shown}: {e}"))?;
    serde_json::from_slice::<cni_plugin::wire::Response>(&answer)
        .map(|_| ())
        .map_err(|e| format!("{shown} answered something unreadable: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_in_use_is_an_error_naming_the_variable() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = bind(addr).await.unwrap_err().to_string();
        assert!(
            e.contains("VPC_CNI_METRICS_ADDR") && e.contains(&addr.to_string()),
            "{e}"
        );
    }
}
