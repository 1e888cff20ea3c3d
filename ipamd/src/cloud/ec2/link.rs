//! Waiting for an attached ENI to appear on the node as a link with its MAC.

use std::io;
use std::time::Duration;

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::Handle;

use crate::cloud::MacAddr;

const POLL: Duration = Duration::from_millis(100);

/// A netlink connection in the node's namespace (where it was opened).
pub(crate) struct LinkWatch {
    handle: Handle,
}

impl LinkWatch {
    /// Opens the connection in the calling thread's namespace, driven by the
    /// current tokio runtime.
    pub(crate) fn new() -> io::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let (connection, handle, _) = rtnetlink::new_connection()?;
        runtime.spawn(connection);
        Ok(Self { handle })
    }

    async fn find(&self, mac: MacAddr) -> Result<Option<String>, String> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| format!("dump links: {e}"))?;
        Ok(links.iter().find_map(|l| {
            let mut name = None;
            let mut found = false;
            for a in &l.attributes {
                match a {
                    LinkAttribute::IfName(n) => name = Some(n.clone()),
                    LinkAttribute::Address(m) => found = m.as_slice() == mac.0,
                    _ => {}
                }
            }
            found.then(|| name.unwrap_or_default())
        }))
    }

    /// Polls until a link with `mac` exists; returns its name.
    pub(crate) async fn wait_for(&self, mac: MacAddr, timeout: Duration) -> Result<String, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(name) = self.find(mac).await? {
                return Ok(name);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("no link with MAC {mac} after {timeout:?}"));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
