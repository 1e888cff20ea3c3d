//! The `NETLINK_NETFILTER` family and its one verb: send a [`Batch`] as one
//! nfnetlink transaction and read the kernel's verdict on it.
//!
//! The kernel processes a netlink message to it synchronously inside
//! `sendmsg`, so when `send` returns every answer is already queued on the
//! socket: they are drained without blocking (as `nft` itself does), and
//! nothing can wait forever on an answer that will never come.

use std::io;

use netlink_packet_core::{NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterProtoFamily, NetfilterSubsystem,
};
use netlink_sys::protocols::NETLINK_NETFILTER;
use nix::sys::socket::{setsockopt, sockopt};

use super::batch::Batch;
use crate::error::{Error, ProtocolError, Result};
use crate::socket::{encode_into, Protocol, Socket};

/// The nfnetlink family.
#[derive(Debug, Clone, Copy)]
pub struct Netfilter;

/// Receive buffer: room for one ack per message of a large batch.
const RCVBUF: usize = 4 << 20;

impl Protocol for Netfilter {
    const FAMILY: isize = NETLINK_NETFILTER;
    const NAME: &'static str = "netfilter";
    type Message = NetfilterMessage;

    fn configure(sock: &mut netlink_sys::Socket) -> io::Result<()> {
        // Acks carry only the header of the request, not all of it back.
        sock.set_cap_ack(true)?;
        // Force past rmem_max (CAP_NET_ADMIN, which we need anyway).
        setsockopt(&*sock, sockopt::RcvBufForce, &RCVBUF).map_err(io::Error::from)
    }
}

/// A `NETLINK_NETFILTER` socket bound to the namespace it was opened in.
pub type NftSocket = Socket<Netfilter>;
/// The policy engine's name for the crate's [`Error`].
pub type NftError = Error;
/// The policy engine's name for the crate's [`Result`].
pub type NftResult<T> = Result<T>;

/// `NFNL_MSG_BATCH_BEGIN`/`END` for the nf_tables subsystem (`res_id`).
fn delimiter(msg: ControlMessage) -> NetfilterMessage {
    let res_id = u16::from(u8::from(NetfilterSubsystem::NfTables));
    NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, res_id),
        msg,
    )
}

/// One nfnetlink transaction: `BATCH_BEGIN`, every message of `batch`
/// asking for an ack, `BATCH_END`; every message a request (the kernel
/// refuses any that is not with EINVAL). Returns the sequence numbers of
/// the begin delimiter and of `batch`'s messages.
fn encode_transaction(
    batch: &Batch,
    mut next_seq: impl FnMut() -> u32,
    out: &mut Vec<u8>,
) -> (u32, Vec<u32>) {
    let begin = next_seq();
    encode_into(
        &delimiter(ControlMessage::BatchBegin),
        NLM_F_REQUEST,
        begin,
        out,
    );
    let mut seqs = Vec::with_capacity(batch.len());
    for op in batch.ops() {
        let seq = next_seq();
        encode_into(&op.msg, NLM_F_REQUEST | NLM_F_ACK | op.flags, seq, out);
        seqs.push(seq);
    }
    encode_into(
        &delimiter(ControlMessage::BatchEnd),
        NLM_F_REQUEST,
        next_seq(),
        out,
    );
    (begin, seqs)
}

impl Socket<Netfilter> {
    /// Applies `batch` atomically. Every message asks for an ack; the first
    /// error in message order is returned, naming the message.
    pub fn apply(&mut self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(128 * batch.len() + 64);
        let (begin, seqs) = encode_transaction(batch, || self.next_seq(), &mut out);
        let mut pending: Vec<(u32, Option<i32>)> = seqs.into_iter().map(|s| (s, None)).collect();
        self.reserve_send(out.len())?;
        self.send(&out)?;
        let first = pending[0].0;
        let mut batch_error: Option<i32> = None;
        while let Some(msgs) = self.try_recv_messages()? {
            for msg in msgs {
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
                return Err(Error::kernel(batch.ops()[i].label.clone(), errno));
            }
        }
        if let Some(errno) = batch_error.filter(|c| *c != 0) {
            return Err(Error::Transaction(io::Error::from_raw_os_error(errno)));
        }
        if let Some(i) = pending.iter().position(|(_, c)| c.is_none()) {
            return Err(ProtocolError::NoAnswer {
                op: batch.ops()[i].label.clone(),
                answered: pending.iter().filter(|(_, c)| c.is_some()).count(),
                total: pending.len(),
            }
            .into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::packet::NetfilterMessage as Msg;
    use crate::socket::decode;

    #[test]
    fn batch_delimiters_are_nfnetlink_control_messages() {
        let mut out = Vec::new();
        encode_into(&delimiter(ControlMessage::BatchBegin), 0, 1, &mut out);
        // nlmsghdr (16) + nfgenmsg (4): type NFNL_MSG_BATCH_BEGIN, family
        // AF_UNSPEC, version 0, res_id NFNL_SUBSYS_NFTABLES big-endian.
        assert_eq!(out.len(), 20);
        assert_eq!(u16::from_ne_bytes([out[4], out[5]]), 0x10);
        assert_eq!(&out[16..20], &[0, 0, 0, 10]);
        let mut end = Vec::new();
        encode_into(&delimiter(ControlMessage::BatchEnd), 0, 2, &mut end);
        assert_eq!(u16::from_ne_bytes([end[4], end[5]]), 0x11);
    }

    #[test]
    fn a_transaction_is_delimited_and_every_message_is_an_acked_request() {
        let mut b = Batch::new();
        b.add_table("t", true);
        b.del_table("t");
        let mut seq = 41;
        let mut out = Vec::new();
        let (begin, seqs) = encode_transaction(
            &b,
            || {
                seq += 1;
                seq
            },
            &mut out,
        );
        assert_eq!((begin, seqs), (42, vec![43, 44]));
        let msgs = decode::<Msg>(&out).unwrap();
        let types: Vec<u16> = msgs.iter().map(|m| m.header.message_type).collect();
        assert_eq!(types, [0x10, 0x0a00, 0x0a02, 0x11]);
        for m in &msgs {
            assert_ne!(m.header.flags & NLM_F_REQUEST, 0, "{m:?}");
        }
        for m in &msgs[1..3] {
            assert_ne!(m.header.flags & NLM_F_ACK, 0, "{m:?}");
        }
        assert_eq!(msgs[3].header.sequence_number, 45);
    }
}
