//! The generic layer: one blocking netlink socket of a protocol family,
//! with sequence numbers, sends, receives, ack and error checks, dumps and
//! batches. The families add their verbs on top (`impl Socket<Route>` in
//! [`crate::route`], `impl Socket<Netfilter>` in [`crate::nft`]), as
//! netavark's `Socket<P: NetlinkFamily>` does.
//!
//! Blocking on purpose: the pod path sends a handful of messages per pod,
//! and one thread driving the socket lets several requests go out in one
//! `sendmsg` (the kernel handles them in order) and their acks come back
//! without a reactor round trip per message.

use std::fmt;
use std::io;
use std::marker::PhantomData;

use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_sys::SocketAddr;

use crate::error::{Error, ProtocolError, Result};

/// A netlink protocol family: its number and its message type.
pub trait Protocol {
    /// `NETLINK_ROUTE`, `NETLINK_NETFILTER`, ...
    const FAMILY: isize;
    /// Short name for logs and `Debug`.
    const NAME: &'static str;
    /// What the family's messages decode to and encode from.
    type Message: NetlinkSerializable + NetlinkDeserializable + fmt::Debug;

    /// Socket options the family needs, set once at open.
    fn configure(_sock: &mut netlink_sys::Socket) -> io::Result<()> {
        Ok(())
    }
}

/// How a request creates its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// `NLM_F_CREATE | NLM_F_EXCL`: fail with EEXIST if present.
    Excl,
    /// `NLM_F_CREATE | NLM_F_REPLACE`: idempotent.
    Replace,
    /// Neither (deletes, sets).
    No,
}

impl Create {
    /// The netlink flags.
    pub fn flags(self) -> u16 {
        match self {
            Create::Excl => NLM_F_CREATE | NLM_F_EXCL,
            Create::Replace => NLM_F_CREATE | NLM_F_REPLACE,
            Create::No => 0,
        }
    }
}

/// One request of a batch: the message, how it creates, a label for
/// errors, and the errnos that count as success.
#[derive(Debug, Clone)]
pub struct Request<M> {
    /// The message.
    pub msg: M,
    /// Create flags.
    pub create: Create,
    /// Human label for error messages (`add route 10.0.0.5/32`).
    pub op: String,
    /// Treat these errnos as success (e.g. ESRCH on delete of a gone route).
    pub ok_errnos: &'static [i32],
}

impl<M> Request<M> {
    /// A request with no tolerated errnos.
    pub fn new(msg: M, create: Create, op: impl Into<String>) -> Self {
        Self {
            msg,
            create,
            op: op.into(),
            ok_errnos: &[],
        }
    }

    /// Tolerates these errnos (for idempotent deletes and creates).
    pub fn tolerate(mut self, errnos: &'static [i32]) -> Self {
        self.ok_errnos = errnos;
        self
    }
}

/// `struct nlmsghdr`.
const HEADER_LEN: usize = 16;

/// Receive buffer per `recv`: a dump answers in datagrams of up to 32 KiB.
const RECV_BUF: usize = 64 * 1024;

/// A blocking netlink socket of family `P`, bound to the network namespace
/// it was opened in (it stays there even if the thread moves on).
pub struct Socket<P: Protocol> {
    sock: netlink_sys::Socket,
    seq: u32,
    buf: Vec<u8>,
    sndbuf: usize,
    _family: PhantomData<fn() -> P>,
}

impl<P: Protocol> fmt::Debug for Socket<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("family", &P::NAME)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl<P: Protocol> Socket<P> {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn open() -> Result<Self> {
        let mut sock = netlink_sys::Socket::new(P::FAMILY)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        P::configure(&mut sock)?;
        Ok(Self {
            sock,
            seq: 0,
            buf: vec![0u8; RECV_BUF],
            sndbuf: 0,
            _family: PhantomData,
        })
    }

    pub(crate) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Appends `msg` to `out` with a fresh sequence number; returns it.
    /// Encodes from a reference: a batch is never copied to be sent.
    pub(crate) fn encode(&mut self, msg: &P::Message, flags: u16, out: &mut Vec<u8>) -> u32 {
        let seq = self.next_seq();
        encode_into(msg, flags, seq, out);
        seq
    }

    /// Makes sure the send buffer takes `len` bytes in one `sendmsg`
    /// (`SO_SNDBUFFORCE`: past `wmem_max`, with CAP_NET_ADMIN).
    pub(crate) fn reserve_send(&mut self, len: usize) -> Result<()> {
        if len + 4096 > self.sndbuf {
            let size = (len + 4096).next_power_of_two().max(256 * 1024);
            nix::sys::socket::setsockopt(&self.sock, nix::sys::socket::sockopt::SndBufForce, &size)
                .map_err(io::Error::from)?;
            self.sndbuf = size;
        }
        Ok(())
    }

    /// One `sendmsg` of everything encoded into `out`.
    pub(crate) fn send(&self, out: &[u8]) -> Result<()> {
        self.sock.send(out, 0)?;
        Ok(())
    }

    /// Blocks for the next datagram and decodes its messages.
    pub(crate) fn recv_messages(&mut self) -> Result<Vec<NetlinkMessage<P::Message>>> {
        let n = self.sock.recv(&mut &mut self.buf[..], 0)?;
        decode(&self.buf[..n])
    }

    /// The next datagram if one is queued, without blocking.
    pub(crate) fn try_recv_messages(&mut self) -> Result<Option<Vec<NetlinkMessage<P::Message>>>> {
        match self.sock.recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT) {
            Ok(n) => decode(&self.buf[..n]).map(Some),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends every request in one `sendmsg`. Only the last asks for an
    /// ack: the kernel handles the messages in order and reports a failure
    /// whether or not an ack was asked for, so when the last ack arrives
    /// every earlier error is already in the queue — one ack to read instead
    /// of one per message. Every request is attempted; the first failure (in
    /// request order) is returned, so callers can roll back what they know
    /// they created.
    pub fn batch(&mut self, reqs: Vec<Request<P::Message>>) -> Result<()> {
        if reqs.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(256 * reqs.len());
        let mut pending: Vec<(u32, String, &'static [i32])> = Vec::with_capacity(reqs.len());
        let last = reqs.len() - 1;
        for (i, req) in reqs.into_iter().enumerate() {
            let ack = if i == last { NLM_F_ACK } else { 0 };
            let flags = NLM_F_REQUEST | ack | req.create.flags();
            let seq = self.encode(&req.msg, flags, &mut out);
            pending.push((seq, req.op, req.ok_errnos));
        }
        self.send(&out)?;
        let last_seq = pending[last].0;
        let mut first_err: Option<(usize, Error)> = None;
        loop {
            let mut done = false;
            for msg in self.recv_messages()? {
                let seq = msg.header.sequence_number;
                let Some(pos) = pending.iter().position(|(s, _, _)| *s == seq) else {
                    continue;
                };
                let NetlinkPayload::Error(e) = msg.payload else {
                    continue;
                };
                done |= seq == last_seq;
                let Some(code) = e.code else { continue };
                let errno = -code.get();
                let (_, op, ok) = &pending[pos];
                if !ok.contains(&errno) && first_err.as_ref().is_none_or(|(p, _)| pos < *p) {
                    first_err = Some((pos, Error::kernel(op.clone(), errno)));
                }
            }
            if done {
                break;
            }
        }
        match first_err {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    /// One request, one ack.
    pub fn request(&mut self, req: Request<P::Message>) -> Result<()> {
        self.batch(vec![req])
    }

    /// One request with `NLM_F_ECHO`: the kernel sends the object it created
    /// back before the ack (for links since Linux 6.3), which saves reading
    /// it back. `None` if the kernel acked without echoing.
    pub fn request_echo(&mut self, req: Request<P::Message>) -> Result<Option<P::Message>> {
        let mut out = Vec::with_capacity(256);
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_ECHO | req.create.flags();
        let seq = self.encode(&req.msg, flags, &mut out);
        self.send(&out)?;
        let mut echoed = None;
        loop {
            for m in self.recv_messages()? {
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => echoed = Some(inner),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(echoed),
                            Some(code) if req.ok_errnos.contains(&-code.get()) => Ok(echoed),
                            Some(code) => Err(Error::kernel(req.op, -code.get())),
                        };
                    }
                    _ => {}
                }
            }
        }
    }

    /// A GET that answers with exactly one message (e.g. a link by name).
    pub fn get(&mut self, msg: P::Message, op: &str) -> Result<P::Message> {
        let mut out = Vec::with_capacity(128);
        let seq = self.encode(&msg, NLM_F_REQUEST, &mut out);
        self.send(&out)?;
        loop {
            for m in self.recv_messages()? {
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => return Ok(inner),
                    NetlinkPayload::Error(e) => {
                        let errno = e.code.map(|c| -c.get()).unwrap_or(0);
                        return Err(Error::kernel(op, errno));
                    }
                    _ => {}
                }
            }
        }
    }

    /// A dump: every message until `NLMSG_DONE`.
    pub fn dump(&mut self, msg: P::Message, op: &str) -> Result<Vec<P::Message>> {
        let mut out = Vec::with_capacity(128);
        let seq = self.encode(&msg, NLM_F_REQUEST | NLM_F_DUMP, &mut out);
        self.send(&out)?;
        let mut result = Vec::new();
        loop {
            for m in self.recv_messages()? {
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => result.push(inner),
                    NetlinkPayload::Done(_) => return Ok(result),
                    NetlinkPayload::Error(e) => {
                        let errno = e.code.map(|c| -c.get()).unwrap_or(0);
                        if errno == 0 {
                            return Ok(result);
                        }
                        return Err(Error::kernel(op, errno));
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Appends one netlink message (header, then `msg`) to `out`, 4-aligned.
/// Pure, so tests check the exact bytes without a socket.
pub fn encode_into<M: NetlinkSerializable>(msg: &M, flags: u16, seq: u32, out: &mut Vec<u8>) {
    let header_len = HEADER_LEN;
    let len = header_len + msg.buffer_len();
    let mut header = NetlinkHeader::default();
    header.length = len as u32;
    header.message_type = msg.message_type();
    header.flags = flags;
    header.sequence_number = seq;
    let start = out.len();
    out.resize(start + len.next_multiple_of(4), 0);
    netlink_packet_core::Emitable::emit(&header, &mut out[start..start + header_len]);
    msg.serialize(&mut out[start + header_len..start + len]);
}

/// Decodes every message of one datagram.
pub fn decode<M: NetlinkDeserializable>(bytes: &[u8]) -> Result<Vec<NetlinkMessage<M>>> {
    let mut offset = 0;
    let mut msgs = Vec::new();
    while offset + HEADER_LEN <= bytes.len() {
        let len =
            u32::from_ne_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes")) as usize;
        if len < HEADER_LEN || offset + len > bytes.len() {
            return Err(ProtocolError::BadLength {
                len,
                offset,
                size: bytes.len(),
            }
            .into());
        }
        let msg = NetlinkMessage::<M>::deserialize(&bytes[offset..offset + len])
            .map_err(ProtocolError::Decode)?;
        msgs.push(msg);
        offset += len.next_multiple_of(4);
    }
    Ok(msgs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};
    use netlink_packet_route::RouteNetlinkMessage;

    fn link(name: &str) -> RouteNetlinkMessage {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        RouteNetlinkMessage::NewLink(m)
    }

    #[test]
    fn encoding_matches_netlink_packet_core_and_round_trips() {
        let mut out = Vec::new();
        encode_into(&link("eth0"), NLM_F_REQUEST | NLM_F_ACK, 7, &mut out);
        encode_into(&link("eni0123"), NLM_F_REQUEST, 8, &mut out);

        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK;
        header.sequence_number = 7;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(link("eth0")));
        nl.finalize();
        let mut want = vec![0; nl.buffer_len()];
        nl.serialize(&mut want);
        assert_eq!(
            &out[..want.len()],
            &want[..],
            "same bytes as NetlinkMessage"
        );

        let back: Vec<NetlinkMessage<RouteNetlinkMessage>> = decode(&out).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].header.sequence_number, 8);
        assert_eq!(
            back[1].payload,
            NetlinkPayload::InnerMessage(link("eni0123"))
        );
    }

    #[test]
    fn a_truncated_datagram_is_a_typed_error() {
        let mut out = Vec::new();
        encode_into(&link("eth0"), NLM_F_REQUEST, 1, &mut out);
        let err = decode::<RouteNetlinkMessage>(&out[..out.len() - 4]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Protocol(ProtocolError::BadLength { offset: 0, .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn create_flags() {
        assert_eq!(Create::Excl.flags(), NLM_F_CREATE | NLM_F_EXCL);
        assert_eq!(Create::Replace.flags(), NLM_F_CREATE | NLM_F_REPLACE);
        assert_eq!(Create::No.flags(), 0);
    }
}
