//! Waiting for an attached ENI to appear on the node as a link with its MAC.
//!
//! A blocking rtnetlink socket of the workspace's netlink layer, opened in
//! the node's namespace; each poll is one link dump (`ip link show`), run
//! on tokio's blocking pool (`spawn_blocking`, as the dataplane's calls
//! off the pod path are), never on a worker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vpc_cni_netlink::route::RouteSocket;

use crate::MacAddr;

const POLL: Duration = Duration::from_millis(100);

/// Why no link was found.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkWaitError {
    /// The link dump failed (the error names the request).
    #[error(transparent)]
    Netlink(#[from] vpc_cni_netlink::Error),
    /// The runtime shut down while the dump was queued.
    #[error("link dump cancelled: the runtime is shutting down")]
    Cancelled,
    /// No link with the MAC appeared in time.
    #[error("no link with MAC {mac} after {timeout:?}")]
    Timeout {
        /// The ENI's MAC.
        mac: MacAddr,
        /// How long we waited.
        timeout: Duration,
    },
}

/// A netlink socket in the node's namespace (where it was opened).
pub(crate) struct LinkWatch {
    sock: Arc<Mutex<RouteSocket>>,
}

impl LinkWatch {
    /// Opens the socket in the calling thread's namespace.
    pub(crate) fn new() -> vpc_cni_netlink::Result<Self> {
        Ok(Self {
            sock: Arc::new(Mutex::new(RouteSocket::open()?)),
        })
    }

    async fn find(&self, mac: MacAddr) -> Result<Option<String>, LinkWaitError> {
        let sock = Arc::clone(&self.sock);
        let links = tokio::task::spawn_blocking(move || {
            sock.lock().expect("link socket poisoned").dump_links()
        })
        .await
        .map_err(|e| {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic())
            }
            LinkWaitError::Cancelled
        })??;
        Ok(links.into_iter().find(|l| l.has_mac(mac)).map(|l| l.name))
    }

    /// Polls until a link with `mac` exists; returns its name.
    pub(crate) async fn wait_for(
        &self,
        mac: MacAddr,
        timeout: Duration,
    ) -> Result<String, LinkWaitError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(name) = self.find(mac).await? {
                return Ok(name);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LinkWaitError::Timeout { mac, timeout });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
