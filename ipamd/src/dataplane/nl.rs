//! A small synchronous rtnetlink socket.
//!
//! The pod path sends a handful of messages per pod into two namespaces. A
//! blocking socket driven from one thread lets us batch several requests into
//! one `sendmsg` (the kernel processes them in order) and read their acks
//! without a reactor round trip per message; messages themselves are
//! netlink-packet-route's types, so nothing is hand-encoded here.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_ECHO,
    NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// A netlink error: which request failed and the kernel's errno.
#[derive(Debug, thiserror::Error)]
pub enum NlError {
    /// The kernel refused a request.
    #[error("{op}: {source}")]
    Kernel {
        /// What we asked for, e.g. `add route 10.0.0.5/32`.
        op: String,
        /// The errno as an io::Error.
        #[source]
        source: io::Error,
    },
    /// The socket itself failed.
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    /// The kernel answered something we could not parse.
    #[error("netlink decode: {0}")]
    Decode(String),
}

impl NlError {
    /// The errno behind a kernel refusal, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NlError::Kernel { source, .. } => source.raw_os_error(),
            NlError::Io(e) => e.raw_os_error(),
            NlError::Decode(_) => None,
        }
    }
}

/// Result of a netlink call.
pub type NlResult<T> = Result<T, NlError>;

/// How a request creates its object.
#[derive(Debug, Clone, Copy)]
pub enum Create {
    /// `NLM_F_CREATE | NLM_F_EXCL`: fail with EEXIST if present.
    Excl,
    /// `NLM_F_CREATE | NLM_F_REPLACE`: idempotent.
    Replace,
    /// Neither (deletes, sets).
    No,
}

impl Create {
    fn flags(self) -> u16 {
        match self {
            Create::Excl => NLM_F_CREATE | NLM_F_EXCL,
            Create::Replace => NLM_F_CREATE | NLM_F_REPLACE,
            Create::No => 0,
        }
    }
}

/// One request in a batch: the message, how it creates, and a label for errors.
pub struct Req {
    /// The message.
    pub msg: RouteNetlinkMessage,
    /// Create flags.
    pub create: Create,
    /// Human label for error messages.
    pub op: String,
    /// Treat these errnos as success (e.g. ESRCH on delete of a gone route).
    pub ok_errnos: &'static [i32],
}

impl Req {
    /// A request with no tolerated errnos.
    pub fn new(msg: RouteNetlinkMessage, create: Create, op: impl Into<String>) -> Self {
        Self {
            msg,
            create,
            op: op.into(),
            ok_errnos: &[],
        }
    }

    /// Tolerates these errnos (for idempotent deletes).
    pub fn tolerate(mut self, errnos: &'static [i32]) -> Self {
        self.ok_errnos = errnos;
        self
    }
}

/// A blocking NETLINK_ROUTE socket bound to the namespace it was opened in.
pub struct NlSocket {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl NlSocket {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn open() -> NlResult<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            sock,
            seq: 0,
            buf: vec![0u8; 64 * 1024],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn encode(&mut self, msg: RouteNetlinkMessage, flags: u16, out: &mut Vec<u8>) -> u32 {
        let seq = self.next_seq();
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let start = out.len();
        out.resize(start + nl.buffer_len(), 0);
        nl.serialize(&mut out[start..]);
        seq
    }

    /// Sends every request in one `sendmsg`. Only the last asks for an
    /// ack: the kernel handles the messages in order and reports a failure
    /// whether or not an ack was asked for, so when the last ack arrives
    /// every earlier error is already in the queue — one ack to read instead
    /// of one per message. Every request is attempted; the first failure (in
    /// request order) is returned, so callers can roll back what they know
    /// they created.
    pub fn batch(&mut self, reqs: Vec<Req>) -> NlResult<()> {
        if reqs.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(256 * reqs.len());
        let mut pending: Vec<(u32, String, &'static [i32])> = Vec::with_capacity(reqs.len());
        let last = reqs.len() - 1;
        for (i, req) in reqs.into_iter().enumerate() {
            let ack = if i == last { NLM_F_ACK } else { 0 };
            let flags = NLM_F_REQUEST | ack | req.create.flags();
            let seq = self.encode(req.msg, flags, &mut out);
            pending.push((seq, req.op, req.ok_errnos));
        }
        self.sock.send(&out, 0)?;
        let last_seq = pending[last].0;
        let mut first_err: Option<(usize, NlError)> = None;
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
                    first_err = Some((
                        pos,
                        NlError::Kernel {
                            op: op.clone(),
                            source: io::Error::from_raw_os_error(errno),
                        },
                    ));
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
    pub fn request(&mut self, req: Req) -> NlResult<()> {
        self.batch(vec![req])
    }

    /// One request with `NLM_F_ECHO`: the kernel sends the object it created
    /// back before the ack (for links since Linux 6.3), which saves reading
    /// it back. `None` if the kernel acked without echoing.
    pub fn request_echo(&mut self, req: Req) -> NlResult<Option<RouteNetlinkMessage>> {
        let mut out = Vec::with_capacity(256);
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_ECHO | req.create.flags();
        let seq = self.encode(req.msg, flags, &mut out);
        self.sock.send(&out, 0)?;
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
                            Some(code) => Err(NlError::Kernel {
                                op: req.op,
                                source: io::Error::from_raw_os_error(-code.get()),
                            }),
                        };
                    }
                    _ => {}
                }
            }
        }
    }

    /// A GET that answers with exactly one message (e.g. a link by name).
    pub fn get(&mut self, msg: RouteNetlinkMessage, op: &str) -> NlResult<RouteNetlinkMessage> {
        let mut out = Vec::with_capacity(128);
        let seq = self.encode(msg, NLM_F_REQUEST, &mut out);
        self.sock.send(&out, 0)?;
        loop {
            for m in self.recv_messages()? {
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => return Ok(inner),
                    NetlinkPayload::Error(e) => {
                        let errno = e.code.map(|c| -c.get()).unwrap_or(0);
                        return Err(NlError::Kernel {
                            op: op.to_string(),
                            source: io::Error::from_raw_os_error(errno),
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    /// A dump: every message until NLMSG_DONE.
    pub fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        op: &str,
    ) -> NlResult<Vec<RouteNetlinkMessage>> {
        let mut out = Vec::with_capacity(128);
        let seq = self.encode(msg, NLM_F_REQUEST | NLM_F_DUMP, &mut out);
        self.sock.send(&out, 0)?;
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
                        return Err(NlError::Kernel {
                            op: op.to_string(),
                            source: io::Error::from_raw_os_error(errno),
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    fn recv_messages(&mut self) -> NlResult<Vec<NetlinkMessage<RouteNetlinkMessage>>> {
        let n = self.sock.recv(&mut &mut self.buf[..], 0)?;
        let mut offset = 0;
        let mut msgs = Vec::new();
        while offset + 16 <= n {
            let len = u32::from_ne_bytes(self.buf[offset..offset + 4].try_into().expect("4 bytes"))
                as usize;
            if len < 16 || offset + len > n {
                return Err(NlError::Decode(format!(
                    "bad netlink length {len} at {offset} of {n}"
                )));
            }
            let msg =
                NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..offset + len])
                    .map_err(|e| NlError::Decode(e.to_string()))?;
            msgs.push(msg);
            offset += (len + 3) & !3;
        }
        Ok(msgs)
    }
}
