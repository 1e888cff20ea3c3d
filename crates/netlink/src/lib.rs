//! vpc-cni's one netlink layer: every way the daemon programs the kernel.
//!
//! Two layers, as in netavark:
//!
//! - [`Socket<P>`](Socket), generic over a [`Protocol`] family: send,
//!   receive, sequence numbers, ack and error checks, dumps, GETs with an
//!   echo, and batches of requests in one `sendmsg`. Blocking on purpose:
//!   a caller's thread drives it, so a pod's wiring costs a few syscalls and
//!   no reactor round trip, and nothing here needs an async runtime.
//! - the families' verbs on top: [`route`] (`NETLINK_ROUTE`: links,
//!   addresses, routes, rules, neighbours; netlink-packet-route's messages,
//!   built by [`route::msg`]) and [`nft`] (`NETLINK_NETFILTER`: nf_tables
//!   tables, chains, sets, elements and rules as one atomic transaction;
//!   netlink-packet-netfilter's messages plus the few expressions it lacks).
//!
//! [`netns`] opens a socket inside another network namespace (a pod's) and
//! returns the thread at once; the socket stays there.
//!
//! Errors are one [`Error`] enum: the kernel's refusal names the request
//! (`add route 10.0.0.5/32: File exists`), socket and protocol failures
//! are typed.
//!
//! ```no_run
//! use vpc_cni_netlink::route::{LinkId, RouteSocket};
//!
//! let mut sock = RouteSocket::open()?;
//! if let Some(link) = sock.get_link(LinkId::Name("eth0"))? {
//!     sock.set_up(link.index, None)?;
//! }
//! # Ok::<(), vpc_cni_netlink::Error>(())
//! ```

#![warn(missing_docs)]

mod error;
pub mod netns;
pub mod nft;
pub mod route;
mod socket;

pub use error::{Error, ProtocolError, Result};
pub use socket::{decode, encode_into, Create, Protocol, Request, Socket};
