//! A blocking NETLINK_NETFILTER socket that sends a [`Batch`] as one
//! nfnetlink transaction and reads the kernel's verdict on it.
//!
//! The kernel processes a netlink message to it synchronously inside
//! `sendmsg`, so when `send` returns every answer is already queued on the
//! socket: they are drained without blocking (as `nft` itself does), and
//! nothing can wait forever on an answer that will never come.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nix::sys::socket::{setsockopt, sockopt};

use super::batch::Batch;
use super::wire::{NfMsg, MSG_BATCH_BEGIN, MSG_BATCH_END};

/// Why a transaction failed. Nothing of a failed transaction is applied.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The kernel refused one message of the batch (the first in order).
    #[error("nftables: {op}: {source}")]
    Kernel {
        /// What that message did, e.g. `add chain inet vpc_cni x`.
        op: String,
        /// The kernel's errno.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the batch as a whole (e.g. the commit failed).
    #[error("nftables: transaction refused: {0}")]
    Transaction(#[source] io::Error),
    /// The socket failed.
    #[error("nftables netlink socket: {0}")]
    Io(#[from] io::Error),
    /// The kernel's answer was unreadable or incomplete.
    #[error("nftables netlink: {0}")]
    Protocol(String),
}

impl NftError {
    /// The errno behind a refusal, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NftError::Kernel { source, .. }
            | NftError::Transaction(source)
            | NftError::Io(source) => source.raw_os_error(),
            NftError::Protocol(_) => None,
        }
    }

    /// The object to create exists already.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// The object to change or delete does not exist.
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(libc::ENOENT)
    }
}

/// Result of a transaction.
pub type NftResult<T> = Result<T, NftError>;

/// A NETLINK_NETFILTER socket bound to the namespace it was opened in.
pub struct NftSocket {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
    sndbuf: usize,
}

/// Receive buffer: room for one ack per message of a large batch.
const RCVBUF: usize = 4 << 20;

impl NftSocket {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn open() -> NftResult<Self> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Acks carry only the header of the request, not all of it back.
        sock.set_cap_ack(true)?;
        // Force past rmem_max (CAP_NET_ADMIN, which we need anyway).
        setsockopt(&sock, sockopt::RcvBufForce, &RCVBUF).map_err(io::Error::from)?;
        Ok(Self {
            sock,
            seq: 0,
            buf: vec![0u8; 64 * 1024],
            sndbuf: 0,
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn encode(&mut self, msg: NfMsg, flags: u16, out: &mut Vec<u8>) -> u32 {
        let seq = self.next_seq();
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let start = out.len();
        out.resize(start + nl.buffer_len(), 0);
        nl.serialize(&mut out[start..]);
        seq
    }

    /// Applies `batch` atomically. Every message asks for an ack; the first
    /// error in message order is returned, naming the message.
    pub fn apply(&mut self, batch: &Batch) -> NftResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(128 * batch.len() + 64);
        let begin = self.encode(NfMsg::batch(MSG_BATCH_BEGIN), 0, &mut out);
        let mut pending: Vec<(u32, Option<i32>)> = Vec::with_capacity(batch.len());
        for op in batch.ops() {
            let seq = self.encode(op.msg.clone(), op.flags | NLM_F_ACK, &mut out);
            pending.push((seq, None));
        }
        self.encode(NfMsg::batch(MSG_BATCH_END), 0, &mut out);
        if out.len() + 4096 > self.sndbuf {
            let size = (out.len() + 4096).next_power_of_two().max(256 * 1024);
            setsockopt(&self.sock, sockopt::SndBufForce, &size).map_err(io::Error::from)?;
            self.sndbuf = size;
        }
        self.sock.send(&out, 0)?;
        let first = pending[0].0;
        let mut batch_error: Option<i32> = None;
        loop {
            let n = match self.sock.recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            };
            for msg in decode(&self.buf[..n])? {
                let NetlinkPayload::Error(e) = msg.payload else {
                    continue;
                };
                let seq = msg.header.sequence_number;
                let code = e.code.map_or(0, |c| -c.get());
                if seq == begin {
                    batch_error = Some(code);
                } else if let Some(i) = seq.checked_sub(first).map(|i| i as usize) {
                    if let Some(slot) = pending.get_mut(i) {
                        slot.1 = Some(code);
                    }
                }
            }
        }
        for (i, (_, code)) in pending.iter().enumerate() {
            if let Some(errno) = code.filter(|c| *c != 0) {
                return Err(NftError::Kernel {
                    op: batch.ops()[i].label.clone(),
                    source: io::Error::from_raw_os_error(errno),
                });
            }
        }
        if let Some(errno) = batch_error.filter(|c| *c != 0) {
            return Err(NftError::Transaction(io::Error::from_raw_os_error(errno)));
        }
        if let Some(i) = pending.iter().position(|(_, c)| c.is_none()) {
            return Err(NftError::Protocol(format!(
                "no answer to `{}` ({} of {} messages answered)",
                batch.ops()[i].label,
                pending.iter().filter(|(_, c)| c.is_some()).count(),
                pending.len()
            )));
        }
        Ok(())
    }
}

fn decode(mut bytes: &[u8]) -> NftResult<Vec<NetlinkMessage<NfMsg>>> {
    let mut out = Vec::new();
    while bytes.len() >= 16 {
        let len = u32::from_ne_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
        if len < 16 || len > bytes.len() {
            return Err(NftError::Protocol(format!(
                "bad message length {len} in a {}-byte datagram",
                bytes.len()
            )));
        }
        let msg = NetlinkMessage::<NfMsg>::deserialize(&bytes[..len])
            .map_err(|e| NftError::Protocol(e.to_string()))?;
        out.push(msg);
        bytes = &bytes[(len.div_ceil(4) * 4).min(bytes.len())..];
    }
    Ok(out)
}
