//! The crate's one error type: what the kernel refused (and which request),
//! what the socket failed at, and answers we could not read.

use std::io;

use netlink_packet_core::DecodeError;

/// Why a netlink call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused one request; in a batch, the first refused one in
    /// request order.
    #[error("{op}: {source}")]
    Kernel {
        /// What we asked for, e.g. `add route 10.0.0.5/32` or
        /// `add chain inet vpc_cni p1`.
        op: String,
        /// The kernel's errno.
        #[source]
        source: io::Error,
    },
    /// The kernel refused an nf_tables transaction as a whole (e.g. its
    /// commit failed); nothing of it was applied.
    #[error("nftables transaction refused: {0}")]
    Transaction(#[source] io::Error),
    /// The socket itself failed (open, send, receive).
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    /// The kernel's answer was unreadable or incomplete.
    #[error("netlink protocol: {0}")]
    Protocol(#[from] ProtocolError),
}

/// What was wrong with the kernel's answer.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A message header's length does not fit the datagram.
    #[error("bad message length {len} at offset {offset} of a {size}-byte datagram")]
    BadLength {
        /// The length the header claims.
        len: usize,
        /// Where the message starts.
        offset: usize,
        /// The datagram's size.
        size: usize,
    },
    /// A message could not be decoded.
    #[error("undecodable message")]
    Decode(#[source] DecodeError),
    /// A batch's messages were not all answered.
    #[error("no answer to `{op}` ({answered} of {total} messages answered)")]
    NoAnswer {
        /// The first unanswered message.
        op: String,
        /// How many were answered.
        answered: usize,
        /// How many were sent.
        total: usize,
    },
    /// Something else broke an expectation, named here (a test double's
    /// injected failure uses this too: `Error::Protocol("…".into())`).
    #[error("{0}")]
    Unexpected(&'static str),
}

impl From<&'static str> for ProtocolError {
    fn from(what: &'static str) -> Self {
        ProtocolError::Unexpected(what)
    }
}

impl Error {
    /// A kernel refusal of `op` with `errno`.
    pub fn kernel(op: impl Into<String>, errno: i32) -> Self {
        Error::Kernel {
            op: op.into(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// The errno behind a refusal or a socket failure, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { source, .. } | Error::Transaction(source) | Error::Io(source) => {
                source.raw_os_error()
            }
            Error::Protocol(_) => None,
        }
    }

    /// The object to create exists already (`EEXIST`).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// The object to change or delete does not exist (`ENOENT`).
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(libc::ENOENT)
    }
}

/// Result of a netlink call.
pub type Result<T> = std::result::Result<T, Error>;
